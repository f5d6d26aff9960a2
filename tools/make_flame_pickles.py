#!/usr/bin/env python3
"""Writes the small synthetic pickles that test Visage's restricted pickle reader and its
FLAME importer (`crates/visage_core/tests/pickle.rs`).

Nothing here is FLAME data. Every fixture is a made-up octahedron head (6 vertices, 8
triangles) with deterministic pseudo-random blendshapes, stored in the *layouts* of the
official FLAME files:

  flame2020_py2.pkl       FLAME 2020 `generic_model.pkl` layout as Python 2 cPickle writes it
                          (protocol 2): chumpy `Ch` objects (rebuilt through
                          `copy_reg._reconstructor`, and one through NEWOBJ) whose state dict
                          holds the array under 'x'; numpy arrays whose raw data is a Python 2
                          `str` (BINSTRING / SHORT_BINSTRING); a `scipy.sparse.csc.csc_matrix`
                          J_regressor; Python 2 `str` keys. Python 3 cannot write this, so the
                          opcodes are emitted by hand (class `Py2Writer`).
  flame2023.pkl           FLAME 2023 layout: `pickle.dump(protocol=4)` from Python 3 of plain
                          numpy arrays (float64) and a `scipy.sparse._csc.csc_matrix`.
  flame2023_open.pkl      FLAME 2023 Open layout, as assumed: same keys and shapes as FLAME 2023
                          (shapedirs with 300 identity + 100 expression columns), float32
                          arrays and int32 faces (the dtypes of the CC-BY subset in
                          `../shared/data/flame2023_open`), written with protocol 5 and numpy 2's
                          module names (`numpy._core.numeric._frombuffer`, in-band BYTEARRAY8).
  flame_separate_expr.pkl A FLAME-like file with only 12 `shapedirs` columns and a separate
                          `expressiondirs` (4 columns): the importer's non-standard split.
  arrays_p0.pkl,          Format coverage, one dict of assorted values each: protocol 0 and 2
  arrays_p2.pkl           from Python 3 (`_codecs.encode` raw data), big-endian and
  arrays_py2_p0.pkl       Fortran-ordered arrays, every numeric dtype, numpy scalars, a CSR
                          matrix, sets, big ints, text; and a hand-written Python 2 protocol 0
                          pickle (quoted STRING raw data, INST-free `copy_reg` objects).
  malicious_*.pkl         Pickles that name `os.system`, `posix.system`, `builtins.eval` and
                          `subprocess.Popen`; the reader must refuse them. They are only
                          written here, never loaded.

Next to each pickle, `NAME.json` describes every value it holds (`arrays.json` serves both
`arrays_p0.pkl` and `arrays_p2.pkl`; `malicious.json` names the object each malicious pickle
must be refused for). Arrays are described by
dtype, shape and the 64-bit FNV-1a hash of their elements in C order, little-endian
(`fnv1a64`), plus the values themselves when there are at most 64; floats carry their exact
bit pattern. The Rust tests compare what the reader loads against these descriptions, so
every array must be equal bit for bit.

All blendshape values are multiples of 2^-16 and skinning/regressor weights multiples of
1/16, so they are exact in float32 and float64 alike.

Regenerate (from the repository root; needs numpy and scipy, e.g. `pip install numpy scipy`):

    python3 tools/make_flame_pickles.py            # writes crates/visage_core/tests/fixtures/flame
    python3 tools/make_flame_pickles.py OUT_DIR

Output is deterministic for a given numpy/scipy (the state dicts of scipy's sparse matrices
may gain keys in other versions; the reader ignores unknown keys).
"""

import io
import json
import os
import pickle
import struct
import sys
import types

import numpy as np
import scipy.sparse as sp

SEED = 20240517
N_SHAPE = 300
N_EXPR = 100
N_POSE = 36
KINTREE_ROOT = 4294967295  # FLAME marks the root's parent with 2^32 - 1


# ------------------------------------------------------------------------------------------
# The synthetic head
# ------------------------------------------------------------------------------------------


def quantise(x, step):
    return np.round(np.asarray(x) / step) * step


def synthetic_head(n_shape=N_SHAPE + N_EXPR, seed=SEED):
    """An octahedron "head" with FLAME's arrays: 6 vertices, 8 triangles, 5 joints."""
    rng = np.random.default_rng(seed)
    v = np.array(
        [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64
    )
    v_template = quantise(0.1 * v + 0.01 * rng.standard_normal(v.shape), 2.0**-16)
    f = np.array(
        [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]],
        dtype=np.uint32,
    )
    nv = v.shape[0]
    shapedirs = quantise(0.002 * rng.standard_normal((nv, 3, n_shape)), 2.0**-16)
    posedirs = quantise(0.001 * rng.standard_normal((nv, 3, N_POSE)), 2.0**-16)
    # Skinning weights: multiples of 1/16, rows summing to one.
    counts = rng.integers(1, 6, size=(nv, 5)).astype(np.float64)
    counts[:, -1] += 16 - counts.sum(axis=1)  # may go negative: fix below
    for i in range(nv):
        while counts[i, -1] < 0:
            j = int(np.argmax(counts[i, :-1]))
            counts[i, j] -= 1
            counts[i, -1] += 1
    weights = counts / 16.0
    # Joint regressor: each joint averages two or three vertices (weights k/16).
    reg = np.zeros((5, nv))
    picks = [[2, 3, 4], [3, 5], [3, 4, 5], [0, 4], [1, 4]]
    for j, vs in enumerate(picks):
        for k, vi in enumerate(vs):
            reg[j, vi] = [8, 4, 4][k] / 16.0 if len(vs) == 3 else 8 / 16.0
    J_regressor = sp.csc_matrix(reg)
    kintree_table = np.array([[KINTREE_ROOT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    J = reg @ v_template
    return {
        "v_template": v_template,
        "f": f,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "weights": weights,
        "J_regressor": J_regressor,
        "kintree_table": kintree_table,
        "J": J,
    }


# ------------------------------------------------------------------------------------------
# Reference descriptions
# ------------------------------------------------------------------------------------------


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


DTYPE_NAMES = {
    "b1": "bool", "i1": "int8", "u1": "uint8", "i2": "int16", "u2": "uint16", "i4": "int32",
    "u4": "uint32", "i8": "int64", "u8": "uint64", "f2": "float16", "f4": "float32",
    "f8": "float64",
}


def describe_array(a):
    a = np.asarray(a)
    key = ("b" if a.dtype.kind == "b" else a.dtype.kind) + str(a.dtype.itemsize)
    le = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False)
    d = {
        "dtype": DTYPE_NAMES[key],
        "shape": list(a.shape),
        "fnv1a64": fnv1a64(le.tobytes()),
    }
    if a.size <= 64:
        if a.dtype.kind == "f":
            d["values_bits"] = [
                f"{x:016x}" for x in np.ascontiguousarray(a, dtype="<f8").view("<u8").ravel()
            ]
        else:
            d["values"] = [int(x) for x in a.ravel()]
    return d


def describe(x):
    """A JSON description of a Python value as the Rust reader should load it."""
    if isinstance(x, sp.spmatrix) or (hasattr(sp, "sparray") and isinstance(x, sp.sparray)):
        return {"sparse": {
            "format": x.format,
            "shape": list(x.shape),
            "nnz": int(x.nnz),
            "dense": describe_array(x.toarray().astype(np.float64)),
        }}
    if isinstance(x, Chumpy):
        return {"array": describe_array(x.x)}
    if isinstance(x, np.ndarray):
        return {"array": describe_array(x)}
    if isinstance(x, np.generic):
        return {"array": describe_array(np.asarray(x))}
    if x is None:
        return {"none": None}
    if isinstance(x, bool):
        return {"bool": x}
    if isinstance(x, int):
        if -(2**63) <= x < 2**63:
            return {"int": x}
        n = (x.bit_length() + 8) // 8
        return {"bigint_le_hex": x.to_bytes(n, "little", signed=True).hex()}
    if isinstance(x, float):
        return {"float_bits": f"{struct.unpack('<Q', struct.pack('<d', x))[0]:016x}"}
    if isinstance(x, str):
        return {"str": x}
    if isinstance(x, (bytes, bytearray, Py2Str)):
        return {"bytes_hex": bytes(x).hex()}
    if isinstance(x, list):
        return {"list": [describe(i) for i in x]}
    if isinstance(x, tuple):
        return {"tuple": [describe(i) for i in x]}
    if isinstance(x, (set, frozenset)):
        return {"set": [describe(i) for i in sorted(x)]}
    if isinstance(x, dict):
        return {"dict": [[describe(k), describe(v)] for k, v in x.items()]}
    raise TypeError(type(x))


def write(out_dir, name, data: bytes, reference, reference_name=None):
    with open(os.path.join(out_dir, name + ".pkl"), "wb") as fh:
        fh.write(data)
    if reference is None:
        return
    with open(os.path.join(out_dir, (reference_name or name) + ".json"), "w") as fh:
        json.dump(reference, fh, separators=(",", ":"), ensure_ascii=False)
        fh.write("\n")


# ------------------------------------------------------------------------------------------
# Python 2 cPickle emulation
# ------------------------------------------------------------------------------------------


class Py2Str(bytes):
    """A Python 2 `str` (written with the BINSTRING family, loaded as bytes)."""


class Chumpy:
    """Stand-in for `chumpy.ch.Ch` when writing Python 2 pickles."""

    def __init__(self, x, via="reconstructor"):
        self.x = x
        self.via = via


class Py2Writer:
    """Emits protocol 0 or 2 opcodes the way Python 2's cPickle does for the values FLAME files
    hold: every object is memoized (PUT / BINPUT), globals and dtypes are reused with GET."""

    def __init__(self, protocol):
        self.proto = protocol
        self.out = io.BytesIO()
        self.memo = {}  # key -> memo index

    # --- primitives ---
    def w(self, b):
        self.out.write(b)

    def put(self, key=None):
        i = len(self.memo)
        self.memo[key if key is not None else ("anon", i)] = i
        if self.proto == 0:
            self.w(b"p%d\n" % i)
        elif i < 256:
            self.w(b"q" + bytes([i]))
        else:
            self.w(b"r" + struct.pack("<I", i))

    def get(self, key):
        i = self.memo[key]
        if self.proto == 0:
            self.w(b"g%d\n" % i)
        elif i < 256:
            self.w(b"h" + bytes([i]))
        else:
            self.w(b"j" + struct.pack("<I", i))

    def glob(self, module, name):
        key = ("global", module, name)
        if key in self.memo:
            self.get(key)
        else:
            self.w(b"c" + module.encode() + b"\n" + name.encode() + b"\n")
            self.put(key)

    def int_(self, v):
        if self.proto == 0:
            self.w(b"I%d\n" % v)
        elif 0 <= v < 256:
            self.w(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            self.w(b"M" + struct.pack("<H", v))
        elif -(2**31) <= v < 2**31:
            self.w(b"J" + struct.pack("<i", v))
        else:
            self.w(b"I%d\n" % v)

    def str_(self, s: bytes, memo_key=None):
        if memo_key is not None and memo_key in self.memo:
            self.get(memo_key)
            return
        if self.proto == 0:
            # Python 2's repr(str): printable ASCII kept, \t \n \r \\ \' and \xhh escaped.
            r = repr(bytes(s))[1:]
            self.w(b"S" + r.encode("ascii") + b"\n")
        elif len(s) < 256:
            self.w(b"U" + bytes([len(s)]) + s)
        else:
            self.w(b"T" + struct.pack("<i", len(s)) + s)
        self.put(memo_key)

    def tuple_(self, items):
        if self.proto == 2 and 0 < len(items) <= 3:
            for it in items:
                self.value(it)
            self.w(bytes([0x84 + len(items)]))  # TUPLE1..3
        elif len(items) == 0:
            self.w(b")" if self.proto == 2 else b"(t")
            if self.proto == 2:
                return  # cPickle does not memoize the empty tuple
        else:
            self.w(b"(")
            for it in items:
                self.value(it)
            self.w(b"t")
        self.put()

    def bool_(self, b):
        if self.proto == 2:
            self.w(b"\x88" if b else b"\x89")
        else:
            self.w(b"I01\n" if b else b"I00\n")

    def dict_(self, d):
        self.w(b"}" if self.proto == 2 else b"(d")
        self.put()
        if self.proto == 2:
            if d:
                self.w(b"(")
                for k, v in d.items():
                    self.value(k)
                    self.value(v)
                self.w(b"u")
        else:
            for k, v in d.items():
                self.value(k)
                self.value(v)
                self.w(b"s")

    def list_(self, items):
        self.w(b"]" if self.proto == 2 else b"(l")
        self.put()
        if self.proto == 2:
            if items:
                self.w(b"(")
                for it in items:
                    self.value(it)
                self.w(b"e")
        else:
            for it in items:
                self.value(it)
                self.w(b"a")

    def set_(self, items):
        # Python 2: set.__reduce__ -> (set, ([items],), None)
        self.glob("__builtin__", "set")
        self.tuple_([list(items)])
        self.w(b"R")
        self.put()

    # --- numpy ---
    def dtype(self, a):
        dt = a.dtype
        key = ("dtype", dt.str)
        if key in self.memo:
            self.get(key)
            return
        descr = ("b" if dt.kind == "b" else dt.kind) + str(dt.itemsize)
        self.glob("numpy", "dtype")
        self.tuple_([Py2Str(descr.encode()), 0, 1])
        self.w(b"R")
        self.put(key)
        order = {"<": b"<", ">": b">", "|": b"|", "=": b"<"}[dt.byteorder]
        self.w(b"(")
        self.int_(3)
        self.str_(order, memo_key=("char", order))
        self.w(b"NNN")
        self.int_(-1)
        self.int_(-1)
        self.int_(0)
        self.w(b"t")
        self.put()
        self.w(b"b")

    def ndarray(self, a):
        """Protocol 2: _reconstruct(ndarray, (0,), 'b') then BUILD (1, shape, dtype, fortran, raw)."""
        fortran = a.flags.f_contiguous and not a.flags.c_contiguous
        raw = a.tobytes(order="F" if fortran else "C")
        self.glob("numpy.core.multiarray", "_reconstruct")
        self.glob("numpy", "ndarray")
        self.tuple_([0])
        self.str_(b"b", memo_key=("char", b"b"))
        self.w(b"\x87")  # TUPLE3
        self.put()
        self.w(b"R")
        self.put()
        self.w(b"(")
        self.int_(1)
        self.tuple_(list(a.shape))
        self.dtype(a)
        self.bool_(fortran)
        self.str_(Py2Str(raw))
        self.w(b"t")
        self.put()
        self.w(b"b")

    def ndarray_p0(self, a):
        """Protocol 0: the same, with MARK … TUPLE and quoted STRING raw data."""
        fortran = a.flags.f_contiguous and not a.flags.c_contiguous
        raw = a.tobytes(order="F" if fortran else "C")
        self.glob("numpy.core.multiarray", "_reconstruct")
        self.w(b"(")
        self.glob("numpy", "ndarray")
        self.tuple_([0])
        self.str_(b"b", memo_key=("char", b"b"))
        self.w(b"t")
        self.put()
        self.w(b"R")
        self.put()
        self.w(b"(")
        self.int_(1)
        self.tuple_(list(a.shape))
        self.dtype(a)
        self.bool_(fortran)
        self.str_(Py2Str(raw))
        self.w(b"t")
        self.put()
        self.w(b"b")

    def chumpy(self, c: Chumpy):
        if c.via == "newobj":
            self.glob("chumpy.ch", "Ch")
            self.w(b")\x81")
            self.put()
        else:
            self.glob("copy_reg", "_reconstructor")
            if self.proto == 2:
                self.glob("chumpy.ch", "Ch")
                self.glob("__builtin__", "object")
                self.w(b"N\x87")
            else:
                self.w(b"(")
                self.glob("chumpy.ch", "Ch")
                self.glob("__builtin__", "object")
                self.w(b"Nt")
            self.put()
            self.w(b"R")
            self.put()
        # The state dict: 'x' plus chumpy bookkeeping that the reader ignores.
        self.dict_({
            Py2Str(b"x"): c.x,
            Py2Str(b"_dirty_vars"): set(),
            Py2Str(b"_depends_on_deps"): {},
        })
        self.w(b"b")

    def csc(self, m):
        # Protocol 2: csc_matrix.__new__ through NEWOBJ, then BUILD with the state dict.
        self.glob("scipy.sparse.csc", "csc_matrix")
        self.w(b")\x81")
        self.put()
        self.dict_({
            Py2Str(b"_shape"): tuple(m.shape),
            Py2Str(b"maxprint"): 50,
            Py2Str(b"indices"): m.indices,
            Py2Str(b"indptr"): m.indptr,
            Py2Str(b"format"): Py2Str(b"csc"),
            Py2Str(b"data"): m.data,
        })
        self.w(b"b")

    def value(self, x):
        if x is None:
            self.w(b"N")
        elif isinstance(x, bool):
            self.bool_(x)
        elif isinstance(x, int):
            self.int_(x)
        elif isinstance(x, float):
            if self.proto == 2:
                self.w(b"G" + struct.pack(">d", x))
            else:
                self.w(b"F" + repr(x).encode() + b"\n")
        elif isinstance(x, Py2Str):
            self.str_(bytes(x))
        elif isinstance(x, str):
            # Python 2 unicode
            if self.proto == 2:
                b = x.encode("utf-8")
                self.w(b"X" + struct.pack("<I", len(b)) + b)
            else:
                self.w(b"V" + x.encode("raw_unicode_escape") + b"\n")
            self.put()
        elif isinstance(x, tuple):
            self.tuple_(list(x))
        elif isinstance(x, list):
            self.list_(x)
        elif isinstance(x, (set, frozenset)):
            self.set_(sorted(x))
        elif isinstance(x, dict):
            self.dict_(x)
        elif isinstance(x, np.ndarray):
            if self.proto == 2:
                self.ndarray(x)
            else:
                self.ndarray_p0(x)
        elif isinstance(x, Chumpy):
            self.chumpy(x)
        elif isinstance(x, sp.csc_matrix):
            self.csc(x)
        else:
            raise TypeError(type(x))

    def dump(self, x):
        if self.proto == 2:
            self.w(b"\x80\x02")
        self.value(x)
        self.w(b".")
        return self.out.getvalue()


# ------------------------------------------------------------------------------------------
# Python 3 pickles with chosen module names
# ------------------------------------------------------------------------------------------


class RenamingPickler(pickle._Pickler):
    """The pure-Python pickler, writing numpy's modules under numpy 2's names (`numpy._core`)
    whatever numpy is installed, so the fixture does not depend on the local numpy."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_global(self, obj, name=None):
        module = pickle.whichmodule(obj, name or obj.__qualname__)
        name = name or obj.__qualname__
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
        if self.proto >= 4:
            self.save(module)
            self.save(name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)

    dispatch[types.FunctionType] = save_global


def dumps_numpy2(obj, protocol):
    buf = io.BytesIO()
    RenamingPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------


def flame2020(out_dir):
    h = synthetic_head()
    d = {
        Py2Str(b"f"): h["f"],
        Py2Str(b"J_regressor"): h["J_regressor"],
        Py2Str(b"kintree_table"): h["kintree_table"],
        Py2Str(b"J"): Chumpy(h["J"], via="newobj"),
        Py2Str(b"weights"): Chumpy(h["weights"]),
        Py2Str(b"posedirs"): Chumpy(h["posedirs"]),
        Py2Str(b"v_template"): Chumpy(h["v_template"]),
        Py2Str(b"shapedirs"): Chumpy(h["shapedirs"]),
        Py2Str(b"bs_style"): Py2Str(b"lbs"),
        Py2Str(b"bs_type"): Py2Str(b"lrotmin"),
    }
    data = Py2Writer(2).dump(d)
    write(out_dir, "flame2020_py2", data, describe(d))


def flame2023(out_dir):
    h = synthetic_head()
    d = {
        "f": h["f"].astype(np.int64),
        "J_regressor": h["J_regressor"],
        "kintree_table": h["kintree_table"],
        "J": h["J"],
        "weights": h["weights"],
        "posedirs": h["posedirs"],
        "v_template": h["v_template"],
        "shapedirs": h["shapedirs"],
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    data = pickle.dumps(d, protocol=4)
    write(out_dir, "flame2023", data, describe(d))


def flame2023_open(out_dir):
    h = synthetic_head()
    d = {
        "f": h["f"].astype(np.int32),
        "J_regressor": h["J_regressor"],
        "kintree_table": h["kintree_table"].astype(np.uint32),
        "J": h["J"].astype(np.float32),
        "weights": h["weights"].astype(np.float32),
        "posedirs": h["posedirs"].astype(np.float32),
        "v_template": h["v_template"].astype(np.float32),
        "shapedirs": h["shapedirs"].astype(np.float32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    data = dumps_numpy2(d, protocol=5)
    write(out_dir, "flame2023_open", data, describe(d))


def flame_separate_expr(out_dir):
    h = synthetic_head(n_shape=16, seed=SEED + 1)
    d = {
        "v_template": h["v_template"],
        "f": h["f"],
        "shapedirs": np.ascontiguousarray(h["shapedirs"][:, :, :12]),
        "expressiondirs": np.ascontiguousarray(h["shapedirs"][:, :, 12:]),
        "posedirs": h["posedirs"],
        "J_regressor": h["J_regressor"],
        "weights": h["weights"],
        "kintree_table": h["kintree_table"],
    }
    data = pickle.dumps(d, protocol=3)
    write(out_dir, "flame_separate_expr", data, describe(d))


def assorted_arrays():
    rng = np.random.default_rng(SEED + 2)

    def q(shape):
        return quantise(rng.standard_normal(shape), 2.0**-8)

    return {
        "f8_be": q((2, 3)).astype(">f8"),
        "f4_fortran": np.asfortranarray(q((3, 4)).astype("<f4")),
        "i2_be_fortran": np.asfortranarray(rng.integers(-300, 300, (2, 2, 3)).astype(">i2")),
        "f2": q((5,)).astype("<f2"),
        "i1": np.array([-128, -1, 0, 127], dtype=np.int8),
        "u1": np.array([0, 1, 255], dtype=np.uint8),
        "u2": np.array([0, 65535], dtype=np.uint16),
        "i4": np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        "u4": np.array([0, 4294967295], dtype=np.uint32),
        "i8": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        "u8_be": np.array([2**64 - 1, 1], dtype=">u8"),
        "bool": np.array([[True, False], [False, True]]),
        "zero_d": np.array(2.5),
        "empty": np.zeros((0, 3)),
        "np_scalar": np.float32(1.5),
        "csr": sp.csr_matrix(np.array([[0, 2.0, 0, 0], [1.0, 0, 0, 3.0], [0, 0, 0, 0]])),
        "int": 7,
        "neg": -123456789,
        "big": 2**70 + 5,
        "float": 0.1,
        "text": "h\u00e9llo \u2713 back\\slash",
        "bytes": b"\x00\xffab",
        "empty_bytes": b"",
        "none": None,
        "true": True,
        "list": [1, 2.5, "x"],
        "tuple": (1, (2, 3)),
        "set": {3, 4},
    }


def assorted_arrays_py2():
    # What a Python 2 program could have stored: str (bytes) keys and values, unicode text.
    a = assorted_arrays()
    keep = ["f8_be", "f4_fortran", "i2_be_fortran", "u1", "i8", "bool", "zero_d", "empty"]
    d = {Py2Str(k.encode()): a[k] for k in keep}
    d[Py2Str(b"quote's")] = Py2Str(b"tab\there \"dq\" 'sq' \\ \x00\x7f\x80\xff")
    d[Py2Str(b"unicode")] = "h\u00e9llo \u2713"
    d[Py2Str(b"float")] = 1e100
    d[Py2Str(b"list")] = [1, Py2Str(b"two"), None, True]
    return d


def arrays(out_dir):
    a = assorted_arrays()
    # Both protocols load to the same values: one reference, `arrays.json`.
    write(out_dir, "arrays_p0", pickle.dumps(a, protocol=0), describe(a), "arrays")
    write(out_dir, "arrays_p2", pickle.dumps(a, protocol=2), None)
    d = assorted_arrays_py2()
    write(out_dir, "arrays_py2_p0", Py2Writer(0).dump(d), describe(d))


class Reduce:
    """An object whose pickle asks the loader to call `func(*args)`."""

    def __init__(self, func, args):
        self.func = func
        self.args = args

    def __reduce__(self):
        return (self.func, self.args)


def malicious(out_dir):
    import builtins
    import subprocess

    cmd = "echo this pickle ran code"
    cases = {
        # The classic hand-written protocol 0 exploit.
        "malicious_os_system": (b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR.", "os", "system"),
        # What pickle.dumps writes for os.system on Linux (module `posix`), protocol 2.
        "malicious_posix_system": (
            pickle.dumps(Reduce(os.system, (cmd,)), protocol=2),
            os.system.__module__,
            "system",
        ),
        # builtins.eval through STACK_GLOBAL (protocol 4).
        "malicious_builtins_eval": (
            pickle.dumps(Reduce(builtins.eval, ("__import__('os').system('true')",)), protocol=4),
            "builtins",
            "eval",
        ),
        # A FLAME-looking file whose last entry starts a process.
        "malicious_flame_popen": (
            pickle.dumps(
                {
                    "v_template": np.zeros((2, 3)),
                    "f": np.zeros((1, 3), dtype=np.uint32),
                    "bs_style": Reduce(subprocess.Popen, (["true"],)),
                },
                protocol=4,
            ),
            "subprocess",
            "Popen",
        ),
    }
    refused = {}
    for name, (data, module, obj) in cases.items():
        write(out_dir, name, data, None)
        refused[name] = {"module": module, "name": obj}
    with open(os.path.join(out_dir, "malicious.json"), "w") as fh:
        json.dump(refused, fh, indent=1)
        fh.write("\n")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default = os.path.join(root, "crates", "visage_core", "tests", "fixtures", "flame")
    out_dir = sys.argv[1] if len(sys.argv) > 1 else default
    os.makedirs(out_dir, exist_ok=True)
    flame2020(out_dir)
    flame2023(out_dir)
    flame2023_open(out_dir)
    flame_separate_expr(out_dir)
    arrays(out_dir)
    malicious(out_dir)
    total = 0
    for name in sorted(os.listdir(out_dir)):
        size = os.path.getsize(os.path.join(out_dir, name))
        total += size
        print(f"{size:8d}  {name}")
    print(f"{total:8d}  total ({out_dir})")


if __name__ == "__main__":
    main()

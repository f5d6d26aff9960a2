#!/usr/bin/env python3
"""Convert MediaPipe TFLite networks into candle-ready safetensors files.

Usage:
    python3 tools/convert_tflite.py [--src DIR] [--dst assets/nets] [--check]

Needs: ``pip install tflite numpy`` (``tflite`` parses the flatbuffers; no TensorFlow).
``--check`` additionally runs every converted network's constant tensors through the
TFLite runtime (``pip install ai-edge-litert``) to confirm densified/dequantized weights
match what the interpreter uses.

Source: the ``mediapipe==0.10.21`` wheel (Apache-2.0), ``mediapipe/modules/**.tflite``:
    pip download --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_28_x86_64 mediapipe==0.10.21

Weight naming scheme (documented in docs/perception.md). Every parameterised operator gets
a name ``<kind>_<n>``, where ``n`` counts operators of that kind in the order they appear in
the TFLite graph (execution order):

    conv_<n>.weight    CONV_2D kernel, OHWI -> OIHW (candle's conv2d layout)
    conv_<n>.bias      [O]
    dw_<n>.weight      DEPTHWISE_CONV_2D kernel, 1HWC -> C,1,H,W (candle's grouped layout)
    dw_<n>.bias        [C]
    prelu_<n>.alpha    PRELU slope, [1,1,C] -> [C]
    fc_<n>.weight      FULLY_CONNECTED, [out, in] (unchanged)
    fc_<n>.bias        [out]
    deconv_<n>.weight  Convolution2DTransposeBias (MediaPipe custom op), OHWI -> I,O,H,W
                       (candle's conv_transpose2d layout)
    deconv_<n>.bias    [O]

Dtypes stay as the source stores them: fp16 weights (behind DEQUANTIZE edges) stay fp16,
fp32 weights stay fp32, so the Rust side reproduces the TFLite arithmetic exactly after
upcasting to f32. Sparse tensors (DENSIFY, CSR on the innermost dimension) are densified.
The safetensors ``__metadata__`` records the source file, its SHA-256, the input shape
and a JSON map from each stored name to the original TFLite tensor name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import tempfile

import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator

OPNAMES = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}

# (source tflite, output safetensors). Lite variants only: the full hand networks would
# double the size of assets/nets.
NETWORKS = [
    ("face_detection_short_range.tflite", "face_detection_short_range.safetensors"),
    ("face_detection_full_range_sparse.tflite", "face_detection_full_range.safetensors"),
    ("face_landmark.tflite", "face_landmark.safetensors"),
    ("iris_landmark.tflite", "iris_landmark.safetensors"),
    ("palm_detection_lite.tflite", "palm_detection_lite.safetensors"),
    ("hand_landmark_lite.tflite", "hand_landmark_lite.safetensors"),
    ("selfie_segmentation.tflite", "selfie_segmentation.safetensors"),
]

KIND = {
    "CONV_2D": "conv",
    "DEPTHWISE_CONV_2D": "dw",
    "PRELU": "prelu",
    "FULLY_CONNECTED": "fc",
    "CUSTOM:Convolution2DTransposeBias": "deconv",
}

NP_OF_TFLITE = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 9: np.int8}
ST_DTYPE = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.uint8): "U8",
    np.dtype(np.int32): "I32",
}


class Graph:
    """Constant folding of the weight-producing edges of one TFLite subgraph."""

    def __init__(self, path: str):
        self.buf = open(path, "rb").read()
        self.model = tflite.Model.GetRootAsModel(self.buf, 0)
        if self.model.SubgraphsLength() != 1:
            raise SystemExit(f"{path}: expected one subgraph")
        self.g = self.model.Subgraphs(0)
        self.producer = {}
        self.ops = []
        for i in range(self.g.OperatorsLength()):
            op = self.g.Operators(i)
            oc = self.model.OperatorCodes(op.OpcodeIndex())
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = OPNAMES.get(code, str(code))
            if name == "CUSTOM":
                name = "CUSTOM:" + oc.CustomCode().decode()
            self.ops.append((op, name))
            for o in op.OutputsAsNumpy():
                self.producer[int(o)] = (op, name)

    def tensor(self, i: int):
        return self.g.Tensors(i)

    def tensor_name(self, i: int) -> str:
        return self.tensor(i).Name().decode()

    def raw(self, i: int):
        """The constant buffer of tensor ``i`` (None when it has none)."""
        t = self.tensor(i)
        b = self.model.Buffers(t.Buffer())
        if b.DataLength() == 0:
            return None
        return b.DataAsNumpy().tobytes()

    def value(self, i: int) -> np.ndarray:
        """The constant value of tensor ``i`` in its stored dtype, following DENSIFY and
        DEQUANTIZE edges (DEQUANTIZE from fp16 keeps fp16: the runtime upcast is exact)."""
        t = self.tensor(i)
        shape = tuple(int(s) for s in t.ShapeAsNumpy())
        raw = self.raw(i)
        if raw is not None:
            dt = NP_OF_TFLITE[t.Type()]
            if t.Sparsity() is not None:
                return densify(t, np.frombuffer(raw, dtype=dt), shape)
            return np.frombuffer(raw, dtype=dt).reshape(shape).copy()
        if i not in self.producer:
            raise SystemExit(f"tensor {self.tensor_name(i)} is neither constant nor produced")
        op, name = self.producer[i]
        src = int(op.InputsAsNumpy()[0])
        if name == "DEQUANTIZE":
            v = self.value(src)
            if v.dtype != np.float16:
                raise SystemExit(f"DEQUANTIZE from {v.dtype} is not supported")
            return v
        if name == "DENSIFY":
            return self.value(src)
        raise SystemExit(f"tensor {self.tensor_name(i)} comes from {name}, not a constant")

    def source_name(self, i: int) -> str:
        """The name of the stored constant behind DEQUANTIZE/DENSIFY edges."""
        while self.raw(i) is None and i in self.producer:
            op, name = self.producer[i]
            if name not in ("DEQUANTIZE", "DENSIFY"):
                break
            i = int(op.InputsAsNumpy()[0])
        return self.tensor_name(i)


def densify(t, values: np.ndarray, shape: tuple) -> np.ndarray:
    """Densify a TFLite sparse tensor stored as dense outer dimensions + CSR innermost
    dimension, identity traversal order, no blocks (the layout the MediaPipe sparse models
    use). Anything else is refused rather than guessed."""
    s = t.Sparsity()
    trav = s.TraversalOrderAsNumpy()
    if s.BlockMapLength() != 0 or list(trav) != list(range(len(shape))):
        raise SystemExit(f"{t.Name().decode()}: unsupported sparsity (blocks/traversal)")
    nd = s.DimMetadataLength()
    for d in range(nd - 1):
        if s.DimMetadata(d).Format() != 0:
            raise SystemExit(f"{t.Name().decode()}: only the innermost dimension may be sparse")
    last = s.DimMetadata(nd - 1)
    if last.Format() != 1:
        return values.reshape(shape).copy()

    def vec(union_type, table):
        # SparseIndexVector union: 1 Int32Vector, 2 Uint16Vector, 3 Uint8Vector.
        from tflite.Int32Vector import Int32Vector
        from tflite.Uint16Vector import Uint16Vector
        from tflite.Uint8Vector import Uint8Vector

        cls = {1: Int32Vector, 2: Uint16Vector, 3: Uint8Vector}[union_type]
        v = cls()
        v.Init(table.Bytes, table.Pos)
        return np.array(v.ValuesAsNumpy(), dtype=np.int64)

    seg = vec(last.ArraySegmentsType(), last.ArraySegments())
    idx = vec(last.ArrayIndicesType(), last.ArrayIndices())
    rows = int(np.prod(shape[:-1]))
    if len(seg) != rows + 1 or seg[-1] != len(values) or len(idx) != len(values):
        raise SystemExit(f"{t.Name().decode()}: inconsistent CSR metadata")
    dense = np.zeros((rows, shape[-1]), dtype=values.dtype)
    for r in range(rows):
        a, b = seg[r], seg[r + 1]
        dense[r, idx[a:b]] = values[a:b]
    return dense.reshape(shape)


def convert(src: str) -> tuple[dict, dict, list]:
    """Return (tensors, tensor_map, input_shape) for one network."""
    g = Graph(src)
    counters: dict[str, int] = {}
    out: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for op, name in g.ops:
        kind = KIND.get(name)
        if kind is None:
            continue
        n = counters.get(kind, 0)
        counters[kind] = n + 1
        ins = [int(x) for x in op.InputsAsNumpy()]
        base = f"{kind}_{n}"

        def put(key, idx, arr):
            out[f"{base}.{key}"] = np.ascontiguousarray(arr)
            names[f"{base}.{key}"] = g.source_name(idx)

        if kind == "conv":
            put("weight", ins[1], g.value(ins[1]).transpose(0, 3, 1, 2))  # OHWI -> OIHW
            put("bias", ins[2], g.value(ins[2]))
        elif kind == "dw":
            w = g.value(ins[1])  # 1,H,W,C
            if w.shape[0] != 1:
                raise SystemExit("depth multiplier != 1 is not supported")
            put("weight", ins[1], w.transpose(3, 0, 1, 2))  # -> C,1,H,W
            put("bias", ins[2], g.value(ins[2]))
        elif kind == "prelu":
            a = g.value(ins[1])
            put("alpha", ins[1], a.reshape(-1))
        elif kind == "fc":
            put("weight", ins[1], g.value(ins[1]))
            put("bias", ins[2], g.value(ins[2]))
        elif kind == "deconv":
            w = g.value(ins[1])  # O,H,W,I
            put("weight", ins[1], w.transpose(3, 0, 1, 2))  # -> I,O,H,W
            put("bias", ins[2], g.value(ins[2]))
    inp = [int(s) for s in g.tensor(int(g.g.InputsAsNumpy()[0])).ShapeAsNumpy()]
    return out, names, inp


def write_safetensors(path: str, tensors: dict, metadata: dict) -> None:
    """Minimal, deterministic safetensors writer (sorted names), atomic via rename."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        arr = tensors[name]
        data = arr.tobytes()
        header[name] = {
            "dtype": ST_DTYPE[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for b in blobs:
                f.write(b)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def check(src: str, tensors: dict, names: dict) -> None:
    """Compare every stored weight with the tensor the TFLite runtime computes for it."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    warnings.filterwarnings("ignore", message=".*preserve_all_tensors.*")
    # Without the XNNPACK delegate, so DEQUANTIZE/DENSIFY run as ops and their outputs exist.
    it = Interpreter(
        model_path=src,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    try:
        it.allocate_tensors()
    except RuntimeError as e:
        print(f"  check skipped: the plain TFLite runtime cannot run this graph ({str(e).splitlines()[0]})")
        return
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=np.float32))
    it.invoke()
    g = Graph(src)
    # Map each stored name back to the f32 tensor the consuming op reads.
    by_name = {}
    for i in range(g.g.TensorsLength()):
        by_name.setdefault(g.source_name(i), []).append(i)
    worst = 0.0
    compared = 0
    for key, arr in tensors.items():
        cands = by_name[names[key]]
        ref = None
        for c in cands:
            try:
                v = it.get_tensor(c)
            except ValueError:
                continue
            if v.dtype == np.float32 and v.size == arr.size:
                ref = v
        if ref is None:
            continue
        mine = arr.astype(np.float32)
        if key.startswith(("conv_", "deconv_")) and key.endswith(".weight"):
            mine = mine.transpose(0, 2, 3, 1) if key.startswith("conv_") else mine.transpose(1, 2, 3, 0)
        elif key.startswith("dw_") and key.endswith(".weight"):
            mine = mine.transpose(1, 2, 3, 0)
        compared += 1
        err = float(np.abs(mine.reshape(-1) - ref.reshape(-1)).max())
        worst = max(worst, err)
        if err != 0.0:
            raise SystemExit(f"{src}: {key} differs from the runtime's tensor by {err}")
    print(f"  check: {compared}/{len(tensors)} stored weights equal the runtime tensors (max diff {worst})")


def sha256(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=os.path.join(repo, "..", "shared", "models", "mediapipe-0.10.21"))
    ap.add_argument("--dst", default=os.path.join(repo, "assets", "nets"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.dst, exist_ok=True)
    total = 0
    for src_name, dst_name in NETWORKS:
        src = os.path.join(args.src, src_name)
        if not os.path.exists(src):
            sys.exit(f"missing {src}: see the module docstring for how to download it")
        tensors, names, inp = convert(src)
        meta = {
            "source": f"mediapipe==0.10.21 wheel, mediapipe/modules/**/{src_name}",
            "source_sha256": sha256(src),
            "licence": "Apache-2.0",
            "changes": "converted from TFLite to safetensors by tools/convert_tflite.py; "
            "kernels transposed to candle layouts; sparse tensors densified; dtypes kept",
            "input_shape_nhwc": json.dumps(inp),
            "tensor_map": json.dumps(names, sort_keys=True),
        }
        dst = os.path.join(args.dst, dst_name)
        write_safetensors(dst, tensors, meta)
        size = os.path.getsize(dst)
        total += size
        dtypes = sorted({str(a.dtype) for a in tensors.values()})
        print(f"{dst_name}: {len(tensors)} tensors, {size} bytes, {'/'.join(dtypes)}")
        if args.check:
            check(src, tensors, names)
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()

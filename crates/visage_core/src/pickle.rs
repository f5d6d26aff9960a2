//! A restricted pickle reader that builds arrays only (for official FLAME `.pkl` files).
//!
//! Python's pickle format is a small stack machine whose `GLOBAL` opcodes name arbitrary Python
//! callables, which the Python unpickler imports and calls: loading an untrusted pickle in
//! Python runs whatever code the file asks for. This reader implements the machine in Rust and
//! never runs anything. Its `GLOBAL` resolution is an allow-list of *array builders*:
//!
//! | module(s) | names | what Visage builds |
//! |---|---|---|
//! | `numpy.core.multiarray`, `numpy._core.multiarray` | `_reconstruct`, `scalar` | a numpy array / scalar |
//! | `numpy`, `numpy.core.multiarray`, `numpy._core.multiarray` | `ndarray`, `dtype` | the array class and its dtype |
//! | `numpy.core.numeric`, `numpy._core.numeric` | `_frombuffer` | a numpy array (protocol 5) |
//! | `copy_reg`, `copyreg` | `_reconstructor` (with base `object` only) | an allow-listed object |
//! | `_codecs` | `encode` (latin-1 only) | bytes |
//! | `__builtin__`, `builtins` | `object`, `set`, `frozenset`, `bytes`, `bytearray` | plain values |
//! | `chumpy.ch` | `Ch` | its `x` array |
//! | `scipy.sparse`, `scipy.sparse.csc`/`_csc`, `scipy.sparse.csr`/`_csr` | `csc_matrix`, `csc_array`, `csr_matrix`, `csr_array` | a [`SparseMatrix`] |
//!
//! Any other global (`os.system`, `builtins.eval`, `subprocess.Popen`, …) makes [`load`] fail
//! with [`PickleError::Refused`] the moment the file names it.
//!
//! All opcodes of protocols 0 to 5 that describe data are supported. Persistent ids, the
//! `copyreg` extension registry and out-of-band buffers are refused, as they refer to objects
//! outside the file.
//!
//! Python 2 `str` values (opcodes `STRING`, `BINSTRING`, `SHORT_BINSTRING`) load as
//! [`PickleValue::Bytes`], like Python 3's `pickle.load(f, encoding="bytes")`; dictionary
//! lookups with [`PickleValue::get`] and [`PickleValue::as_text`] accept both kinds of string.
//!
//! Limits: every length in the file is checked against the bytes that remain, array data must
//! have exactly `product(shape) × itemsize` bytes, and the bytes of the loaded values (arrays,
//! strings, plus a fixed cost per container entry) may not exceed
//! [`PickleLimits::max_total_bytes`] (2 GiB by default). Nesting deeper than
//! [`PickleLimits::max_depth`] is refused. Truncated or corrupted input gives an error, never a
//! panic.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Default cap on the bytes of everything a pickle may load: 2 GiB.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 2 << 30;

/// Default cap on the nesting depth of loaded containers.
pub const DEFAULT_MAX_DEPTH: usize = 256;

/// Bytes charged per container entry when checking [`PickleLimits::max_total_bytes`].
const ENTRY_COST: u64 = 32;

/// Resource limits for [`load_with_limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickleLimits {
    /// Cap on the bytes of all loaded values (array data, strings, and 32 bytes per container
    /// entry). A pickle that asks for more fails with [`PickleError::TooLarge`].
    pub max_total_bytes: u64,
    /// Cap on how deeply containers may nest in the result.
    pub max_depth: usize,
}

impl Default for PickleLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Why a pickle could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    /// The pickle names a Python object that is not an array builder.
    #[error(
        "refused to load `{module}.{name}` from the pickle: Visage only builds arrays from \
         pickles, this file asks to run code"
    )]
    Refused {
        /// Module of the refused object, e.g. `os`.
        module: String,
        /// Name of the refused object, e.g. `system`.
        name: String,
    },
    /// The data ends in the middle of an opcode or before the final `STOP`.
    #[error("the pickle ends early (at byte {offset}): the file is truncated or is not a pickle")]
    Truncated {
        /// Byte offset where more data was needed.
        offset: usize,
    },
    /// A byte that is not a pickle opcode.
    #[error(
        "byte {offset} holds 0x{opcode:02x}, which is not a pickle opcode: the file is damaged \
         or is not a pickle"
    )]
    UnknownOpcode {
        /// Byte offset of the opcode.
        offset: usize,
        /// The byte found there.
        opcode: u8,
    },
    /// The opcodes are valid one by one but do not make sense together.
    #[error("the pickle is damaged at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset of the opcode being run.
        offset: usize,
        /// What is wrong, in words.
        reason: String,
    },
    /// The pickle asks for more memory than the limits allow.
    #[error(
        "the pickle asks for {requested} bytes, more than the limit of {limit} bytes (a damaged \
         or hostile file)"
    )]
    TooLarge {
        /// Bytes the pickle would need at this point.
        requested: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Valid pickle content that this reader deliberately does not handle.
    #[error("the pickle holds something Visage does not read (at byte {offset}): {reason}")]
    Unsupported {
        /// Byte offset of the opcode being run.
        offset: usize,
        /// What it is, in words.
        reason: String,
    },
}

/// A loaded pickle value: plain Python data plus arrays.
#[derive(Debug, Clone, PartialEq)]
pub enum PickleValue {
    /// Python `None`.
    None,
    /// Python `bool`.
    Bool(bool),
    /// Python `int` that fits in 64 bits.
    Int(i64),
    /// Python `int` wider than 64 bits: its shortest little-endian two's-complement bytes
    /// (as `int.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)` gives).
    BigInt(Vec<u8>),
    /// Python `float`.
    Float(f64),
    /// Python 3 `str` (or Python 2 `unicode`).
    Str(String),
    /// Python 3 `bytes`/`bytearray`, or a Python 2 `str`.
    Bytes(Vec<u8>),
    /// Python `list`.
    List(Vec<PickleValue>),
    /// Python `tuple`.
    Tuple(Vec<PickleValue>),
    /// Python `set` or `frozenset`, in file order.
    Set(Vec<PickleValue>),
    /// Python `dict` as key/value pairs in insertion order (a repeated key keeps its last value).
    Dict(Vec<(PickleValue, PickleValue)>),
    /// A numpy array, or a chumpy object's `x` array.
    Array(NdArray),
    /// A scipy sparse matrix.
    Sparse(SparseMatrix),
}

impl PickleValue {
    /// For a dictionary, the value under the string key `key` (a `str` or Python 2 `str` key).
    pub fn get(&self, key: &str) -> Option<&PickleValue> {
        match self {
            PickleValue::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_text() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a `Str`, or of a `Bytes` value that is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            PickleValue::Str(s) => Some(s),
            PickleValue::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The array, for an `Array` value.
    pub fn as_array(&self) -> Option<&NdArray> {
        match self {
            PickleValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The integer, for `Int` and `Bool` values.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            PickleValue::Int(i) => Some(*i),
            PickleValue::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The keys of a dictionary that are text, in order (empty for other values).
    pub fn text_keys(&self) -> Vec<&str> {
        match self {
            PickleValue::Dict(items) => items.iter().filter_map(|(k, _)| k.as_text()).collect(),
            _ => Vec::new(),
        }
    }

    /// A short description of the value's kind for messages, e.g. `"dict"` or `"float64 array"`.
    pub fn kind(&self) -> String {
        match self {
            PickleValue::None => "None".into(),
            PickleValue::Bool(_) => "bool".into(),
            PickleValue::Int(_) | PickleValue::BigInt(_) => "int".into(),
            PickleValue::Float(_) => "float".into(),
            PickleValue::Str(_) => "str".into(),
            PickleValue::Bytes(_) => "bytes".into(),
            PickleValue::List(_) => "list".into(),
            PickleValue::Tuple(_) => "tuple".into(),
            PickleValue::Set(_) => "set".into(),
            PickleValue::Dict(_) => "dict".into(),
            PickleValue::Array(a) => format!("{} array", a.data.dtype_name()),
            PickleValue::Sparse(_) => "sparse matrix".into(),
        }
    }
}

/// Element storage of an [`NdArray`], in C (row-major) order, native endianness.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    /// numpy `bool`.
    Bool(Vec<bool>),
    /// numpy `int8`.
    I8(Vec<i8>),
    /// numpy `uint8`.
    U8(Vec<u8>),
    /// numpy `int16`.
    I16(Vec<i16>),
    /// numpy `uint16`.
    U16(Vec<u16>),
    /// numpy `int32`.
    I32(Vec<i32>),
    /// numpy `uint32`.
    U32(Vec<u32>),
    /// numpy `int64`.
    I64(Vec<i64>),
    /// numpy `uint64`.
    U64(Vec<u64>),
    /// numpy `float16`.
    F16(Vec<half::f16>),
    /// numpy `float32`.
    F32(Vec<f32>),
    /// numpy `float64`.
    F64(Vec<f64>),
}

macro_rules! each_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            ArrayData::Bool($v) => $body,
            ArrayData::I8($v) => $body,
            ArrayData::U8($v) => $body,
            ArrayData::I16($v) => $body,
            ArrayData::U16($v) => $body,
            ArrayData::I32($v) => $body,
            ArrayData::U32($v) => $body,
            ArrayData::I64($v) => $body,
            ArrayData::U64($v) => $body,
            ArrayData::F16($v) => $body,
            ArrayData::F32($v) => $body,
            ArrayData::F64($v) => $body,
        }
    };
}

impl ArrayData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        each_data!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// numpy's name of the element type, e.g. `"float64"`.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            ArrayData::Bool(_) => "bool",
            ArrayData::I8(_) => "int8",
            ArrayData::U8(_) => "uint8",
            ArrayData::I16(_) => "int16",
            ArrayData::U16(_) => "uint16",
            ArrayData::I32(_) => "int32",
            ArrayData::U32(_) => "uint32",
            ArrayData::I64(_) => "int64",
            ArrayData::U64(_) => "uint64",
            ArrayData::F16(_) => "float16",
            ArrayData::F32(_) => "float32",
            ArrayData::F64(_) => "float64",
        }
    }

    /// Whether the elements are floating point.
    pub fn is_float(&self) -> bool {
        matches!(
            self,
            ArrayData::F16(_) | ArrayData::F32(_) | ArrayData::F64(_)
        )
    }

    /// Size of one element in bytes.
    pub fn itemsize(&self) -> usize {
        match self {
            ArrayData::Bool(_) | ArrayData::I8(_) | ArrayData::U8(_) => 1,
            ArrayData::I16(_) | ArrayData::U16(_) | ArrayData::F16(_) => 2,
            ArrayData::I32(_) | ArrayData::U32(_) | ArrayData::F32(_) => 4,
            ArrayData::I64(_) | ArrayData::U64(_) | ArrayData::F64(_) => 8,
        }
    }
}

/// An n-dimensional array in C (row-major) order. Fortran-ordered and big-endian numpy arrays
/// are converted on load.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Extent of each axis (empty for a 0-d array, which holds one element).
    pub shape: Vec<usize>,
    /// The elements, `product(shape)` of them.
    pub data: ArrayData,
}

impl NdArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// All elements converted to `f64` (64-bit integers above 2⁵³ lose precision).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            ArrayData::Bool(v) => v.iter().map(|&b| f64::from(u8::from(b))).collect(),
            ArrayData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            ArrayData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::U64(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            ArrayData::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            ArrayData::I16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            ArrayData::U16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            ArrayData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            ArrayData::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            ArrayData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            ArrayData::F64(v) => v.clone(),
        }
    }

    /// All elements converted to `f32` (rounded to nearest).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            ArrayData::F32(v) => v.clone(),
            ArrayData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            _ => self.to_f64().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// All elements as `i64`, for boolean and integer arrays; `None` for floating-point arrays
    /// and for `uint64` values above `i64::MAX`.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        Some(match &self.data {
            ArrayData::Bool(v) => v.iter().map(|&b| i64::from(b)).collect(),
            ArrayData::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            ArrayData::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            ArrayData::I16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            ArrayData::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            ArrayData::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            ArrayData::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            ArrayData::I64(v) => v.clone(),
            ArrayData::U64(v) => v
                .iter()
                .map(|&x| i64::try_from(x).ok())
                .collect::<Option<Vec<_>>>()?,
            ArrayData::F16(_) | ArrayData::F32(_) | ArrayData::F64(_) => return None,
        })
    }
}

/// Compression direction of a [`SparseMatrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseFormat {
    /// Compressed sparse columns (`scipy.sparse.csc_matrix`): `indptr` runs over columns and
    /// `indices` are row numbers.
    Csc,
    /// Compressed sparse rows (`scipy.sparse.csr_matrix`): `indptr` runs over rows and
    /// `indices` are column numbers.
    Csr,
}

/// A scipy compressed sparse matrix, validated on load.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseMatrix {
    /// `[rows, columns]`.
    pub shape: [usize; 2],
    /// Compression direction.
    pub format: SparseFormat,
    /// Start of each compressed line's entries in `indices`/`data`; one more than the lines.
    pub indptr: Vec<usize>,
    /// Position of each entry within its line.
    pub indices: Vec<usize>,
    /// Value of each entry.
    pub data: Vec<f64>,
}

impl SparseMatrix {
    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.data.len()
    }

    /// The dense `[rows, columns]` float64 matrix (repeated entries are summed, as scipy does).
    /// Fails with [`PickleError::TooLarge`] when it would exceed [`DEFAULT_MAX_TOTAL_BYTES`].
    pub fn to_dense(&self) -> Result<NdArray, PickleError> {
        let [rows, cols] = self.shape;
        let count = rows
            .checked_mul(cols)
            .filter(|&n| n <= (DEFAULT_MAX_TOTAL_BYTES / 8) as usize);
        let Some(count) = count else {
            return Err(PickleError::TooLarge {
                requested: (rows as u64).saturating_mul(cols as u64).saturating_mul(8),
                limit: DEFAULT_MAX_TOTAL_BYTES,
            });
        };
        let (major, minor) = match self.format {
            SparseFormat::Csc => (cols, rows),
            SparseFormat::Csr => (rows, cols),
        };
        let consistent = self.indptr.len() == major.saturating_add(1)
            && self.indptr.windows(2).all(|w| w[0] <= w[1])
            && self.indptr.last().is_some_and(|&n| n <= self.indices.len())
            && self.indices.len() == self.data.len()
            && self.indices.iter().all(|&i| i < minor);
        if !consistent {
            return Err(PickleError::Malformed {
                offset: 0,
                reason: format!("a sparse {rows}×{cols} matrix has inconsistent index arrays"),
            });
        }
        let mut dense = vec![0.0f64; count];
        for (line, w) in self.indptr.windows(2).enumerate() {
            for e in w[0]..w[1] {
                let (r, c) = match self.format {
                    SparseFormat::Csc => (self.indices[e], line),
                    SparseFormat::Csr => (line, self.indices[e]),
                };
                dense[r * cols + c] += self.data[e];
            }
        }
        Ok(NdArray {
            shape: vec![rows, cols],
            data: ArrayData::F64(dense),
        })
    }
}

/// Facts about a loaded pickle, used to tell FLAME file variants apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PickleInfo {
    /// Protocol announced by the `PROTO` opcode (`None` for protocols 0 and 1).
    pub protocol: Option<u8>,
    /// Whether the file contains Python 2 `str` opcodes (written by Python 2).
    pub python2_strings: bool,
    /// Number of chumpy objects turned into arrays.
    pub chumpy_objects: usize,
    /// Number of scipy sparse matrices.
    pub sparse_matrices: usize,
    /// The distinct globals the file named, as `module.name`, in order of first use.
    pub globals: Vec<String>,
}

/// Loads a pickle with the default [`PickleLimits`].
pub fn load(bytes: &[u8]) -> Result<PickleValue, PickleError> {
    load_with_limits(bytes, &PickleLimits::default()).map(|(v, _)| v)
}

/// Loads a pickle with explicit limits, also returning facts about the file.
pub fn load_with_limits(
    bytes: &[u8],
    limits: &PickleLimits,
) -> Result<(PickleValue, PickleInfo), PickleError> {
    let mut vm = Vm::new(bytes, *limits);
    let top = vm.run()?;
    let mut conv = Converter {
        limits: *limits,
        used: vm.used,
    };
    let value = conv.convert(&top, 0)?;
    vm.stack.push(top);
    Ok((value, std::mem::take(&mut vm.info)))
}

// ---------------------------------------------------------------------------------------------
// Internal object graph
// ---------------------------------------------------------------------------------------------

type Shared<T> = Rc<RefCell<T>>;

/// Items of a list, tuple or set. Dropping it never recurses (see [`drain_iteratively`]).
#[derive(Default)]
struct SeqCell(RefCell<Vec<Obj>>);

/// Key/value pairs of a dict, in insertion order. Dropping it never recurses.
#[derive(Default)]
struct MapCell(RefCell<Vec<(Obj, Obj)>>);

type Seq = Rc<SeqCell>;
type Map = Rc<MapCell>;

impl Drop for SeqCell {
    fn drop(&mut self) {
        drain_iteratively(std::mem::take(self.0.get_mut()), false);
    }
}

impl Drop for MapCell {
    fn drop(&mut self) {
        let pairs = std::mem::take(self.0.get_mut());
        drain_iteratively(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(), false);
    }
}

/// Drops `work` without recursion: a container about to lose its last reference is emptied
/// into the work list first, so its own drop has nothing left to do. With `break_cycles`,
/// every container met is emptied, whoever else holds it (used when the whole machine goes).
fn drain_iteratively(mut work: Vec<Obj>, break_cycles: bool) {
    while let Some(obj) = work.pop() {
        match obj {
            Obj::List(c) | Obj::Tuple(c) | Obj::Set(c) => {
                if (break_cycles || Rc::strong_count(&c) == 1)
                    && let Ok(mut items) = c.0.try_borrow_mut()
                {
                    work.append(&mut items);
                }
            }
            Obj::Dict(c) => {
                if (break_cycles || Rc::strong_count(&c) == 1)
                    && let Ok(mut items) = c.0.try_borrow_mut()
                {
                    for (k, v) in items.drain(..) {
                        work.push(k);
                        work.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

fn seq(items: Vec<Obj>) -> Seq {
    Rc::new(SeqCell(RefCell::new(items)))
}

fn map() -> Map {
    Rc::new(MapCell::default())
}

/// A value on the machine's stack or in its memo. Containers are shared and mutable, as in
/// Python, so that memo references see later `APPEND`/`SETITEM`/`BUILD` operations.
#[derive(Clone)]
enum Obj {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Rc<Vec<u8>>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<Vec<u8>>),
    List(Seq),
    Tuple(Seq),
    Set(Seq),
    Dict(Map),
    Global(Global),
    Inst(Shared<Inst>),
}

impl Obj {
    fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "bool",
            Obj::Int(_) | Obj::BigInt(_) => "int",
            Obj::Float(_) => "float",
            Obj::Str(_) => "str",
            Obj::Bytes(_) => "bytes",
            Obj::List(_) => "list",
            Obj::Tuple(_) => "tuple",
            Obj::Set(_) => "set",
            Obj::Dict(_) => "dict",
            Obj::Global(_) => "class or function",
            Obj::Inst(i) => match &*i.borrow() {
                Inst::Array(_) => "numpy array",
                Inst::Dtype(_) => "numpy dtype",
                Inst::Chumpy(_) => "chumpy object",
                Inst::Sparse(..) => "scipy sparse matrix",
            },
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Obj::Str(s) => Some(s.to_string()),
            Obj::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_string),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            Obj::Int(i) => Some(*i),
            Obj::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn tuple_items(&self) -> Option<Vec<Obj>> {
        match self {
            Obj::Tuple(t) => Some(t.0.borrow().clone()),
            _ => None,
        }
    }

    /// The array this object stands for (a built numpy array or a chumpy object).
    fn array(&self) -> Option<Rc<NdArray>> {
        match self {
            Obj::Inst(i) => match &*i.borrow() {
                Inst::Array(a) | Inst::Chumpy(a) => a.clone(),
                _ => None,
            },
            _ => None,
        }
    }

    fn dict_get(&self, key: &str) -> Option<Obj> {
        match self {
            Obj::Dict(d) => {
                d.0.borrow()
                    .iter()
                    .rev()
                    .find(|(k, _)| k.text().as_deref() == Some(key))
                    .map(|(_, v)| v.clone())
            }
            _ => None,
        }
    }
}

/// The allow-listed Python objects a `GLOBAL` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    Reconstruct,
    NdArrayClass,
    Dtype,
    FromBuffer,
    Scalar,
    CopyRegReconstructor,
    Object,
    CodecsEncode,
    Set,
    FrozenSet,
    BytesType,
    Bytearray,
    ChumpyCh,
    Sparse(SparseFormat),
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    const MULTIARRAY: [&str; 2] = ["numpy.core.multiarray", "numpy._core.multiarray"];
    const NUMERIC: [&str; 2] = ["numpy.core.numeric", "numpy._core.numeric"];
    const BUILTINS: [&str; 2] = ["__builtin__", "builtins"];
    let m = |set: &[&str]| set.contains(&module);
    Some(match name {
        "_reconstruct" if m(&MULTIARRAY) => Global::Reconstruct,
        "scalar" if m(&MULTIARRAY) => Global::Scalar,
        "ndarray" if module == "numpy" || m(&MULTIARRAY) => Global::NdArrayClass,
        "dtype" if module == "numpy" || m(&MULTIARRAY) => Global::Dtype,
        "_frombuffer" if m(&NUMERIC) => Global::FromBuffer,
        "_reconstructor" if module == "copy_reg" || module == "copyreg" => {
            Global::CopyRegReconstructor
        }
        "encode" if module == "_codecs" => Global::CodecsEncode,
        "object" if m(&BUILTINS) => Global::Object,
        "set" if m(&BUILTINS) => Global::Set,
        "frozenset" if m(&BUILTINS) => Global::FrozenSet,
        "bytes" if m(&BUILTINS) => Global::BytesType,
        "bytearray" if m(&BUILTINS) => Global::Bytearray,
        "Ch" if module == "chumpy.ch" => Global::ChumpyCh,
        "csc_matrix" | "csc_array"
            if matches!(
                module,
                "scipy.sparse" | "scipy.sparse.csc" | "scipy.sparse._csc"
            ) =>
        {
            Global::Sparse(SparseFormat::Csc)
        }
        "csr_matrix" | "csr_array"
            if matches!(
                module,
                "scipy.sparse" | "scipy.sparse.csr" | "scipy.sparse._csr"
            ) =>
        {
            Global::Sparse(SparseFormat::Csr)
        }
        _ => return None,
    })
}

/// Objects under construction or built by allow-listed callables.
enum Inst {
    /// `numpy.core.multiarray._reconstruct(ndarray, …)`; the data arrives with `BUILD`.
    Array(Option<Rc<NdArray>>),
    /// `numpy.dtype(descr, align, copy)`; the byte order may arrive with `BUILD`.
    Dtype(DtypeSpec),
    /// A `chumpy.ch.Ch`; its `x` array arrives with `BUILD`.
    Chumpy(Option<Rc<NdArray>>),
    /// A scipy sparse matrix; its arrays arrive with `BUILD`.
    Sparse(SparseFormat, Option<Rc<SparseMatrix>>),
}

#[derive(Clone, Debug)]
struct DtypeSpec {
    /// The descriptor as given, for messages.
    descr: String,
    /// numpy kind letter (`f`, `i`, `u`, `b`, …).
    kind: char,
    /// Item size in bytes.
    size: usize,
    big_endian: bool,
    /// Structured or sub-array dtype (not supported for arrays).
    compound: bool,
}

impl DtypeSpec {
    fn parse(descr: &str) -> Option<DtypeSpec> {
        let named = match descr {
            "float64" | "double" | "float" => Some("f8"),
            "float32" | "single" => Some("f4"),
            "float16" | "half" => Some("f2"),
            "int64" => Some("i8"),
            "int32" => Some("i4"),
            "int16" => Some("i2"),
            "int8" => Some("i1"),
            "uint64" => Some("u8"),
            "uint32" => Some("u4"),
            "uint16" => Some("u2"),
            "uint8" => Some("u1"),
            "bool" | "?" => Some("b1"),
            _ => None,
        };
        let text = named.unwrap_or(descr);
        let (big_endian, rest) = match text.as_bytes().first() {
            Some(b'>') | Some(b'!') => (true, &text[1..]),
            Some(b'<') | Some(b'|') | Some(b'=') => (false, &text[1..]),
            _ => (false, text),
        };
        let mut chars = rest.chars();
        let kind = chars.next()?;
        let digits = chars.as_str();
        let size = if digits.is_empty() {
            0
        } else {
            digits.parse::<usize>().ok()?
        };
        Some(DtypeSpec {
            descr: descr.to_string(),
            kind,
            size,
            big_endian,
            compound: false,
        })
    }

    fn name(&self) -> String {
        match (self.kind, self.size) {
            ('f', n) => format!("float{}", n * 8),
            ('i', n) => format!("int{}", n * 8),
            ('u', n) => format!("uint{}", n * 8),
            ('b', 1) => "bool".into(),
            _ => self.descr.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------------

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for messages.
    at: usize,
    stack: Vec<Obj>,
    metastack: Vec<Vec<Obj>>,
    memo: HashMap<u64, Obj>,
    limits: PickleLimits,
    /// Bytes charged so far against `limits.max_total_bytes`.
    used: u64,
    info: PickleInfo,
}

impl Drop for Vm<'_> {
    /// Empties every container still reachable, which also frees cyclic structures.
    fn drop(&mut self) {
        let mut work: Vec<Obj> = std::mem::take(&mut self.stack);
        for level in std::mem::take(&mut self.metastack) {
            work.extend(level);
        }
        work.extend(std::mem::take(&mut self.memo).into_values());
        drain_iteratively(work, true);
    }
}

type Res<T> = Result<T, PickleError>;

fn shared<T>(v: T) -> Shared<T> {
    Rc::new(RefCell::new(v))
}

impl<'a> Vm<'a> {
    fn new(data: &'a [u8], limits: PickleLimits) -> Self {
        Vm {
            data,
            pos: 0,
            at: 0,
            stack: Vec::new(),
            metastack: Vec::new(),
            memo: HashMap::new(),
            limits,
            used: 0,
            info: PickleInfo::default(),
        }
    }

    // ----- errors -----

    fn malformed<T>(&self, reason: impl Into<String>) -> Res<T> {
        Err(PickleError::Malformed {
            offset: self.at,
            reason: reason.into(),
        })
    }

    fn unsupported<T>(&self, reason: impl Into<String>) -> Res<T> {
        Err(PickleError::Unsupported {
            offset: self.at,
            reason: reason.into(),
        })
    }

    fn charge(&mut self, bytes: u64) -> Res<()> {
        charge(&mut self.used, self.limits.max_total_bytes, bytes)
    }

    // ----- reading -----

    fn take(&mut self, n: u64) -> Res<&'a [u8]> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return Err(PickleError::Truncated {
                offset: self.data.len(),
            });
        }
        let n = n as usize;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }

    fn fixed<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u16(&mut self) -> Res<u16> {
        Ok(u16::from_le_bytes(self.fixed()?))
    }

    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    fn i32(&mut self) -> Res<i32> {
        Ok(i32::from_le_bytes(self.fixed()?))
    }

    fn u64(&mut self) -> Res<u64> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    /// A `\n`-terminated line, without the terminator.
    fn line(&mut self) -> Res<&'a [u8]> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None => Err(PickleError::Truncated {
                offset: self.data.len(),
            }),
        }
    }

    fn text_line(&mut self) -> Res<String> {
        let line = self.line()?;
        match std::str::from_utf8(line) {
            Ok(s) => Ok(s.trim_end_matches('\r').to_string()),
            Err(_) => self.malformed("a text argument is not valid UTF-8"),
        }
    }

    fn counted_bytes(&mut self, n: u64) -> Res<Vec<u8>> {
        let bytes = self.take(n)?;
        self.charge(n)?;
        Ok(bytes.to_vec())
    }

    fn counted_str(&mut self, n: u64) -> Res<Obj> {
        let bytes = self.counted_bytes(n)?;
        match String::from_utf8(bytes) {
            Ok(s) => Ok(Obj::Str(s.into())),
            Err(_) => self.malformed("a unicode string is not valid UTF-8"),
        }
    }

    // ----- stack -----

    fn push(&mut self, o: Obj) -> Res<()> {
        self.charge(ENTRY_COST)?;
        self.stack.push(o);
        Ok(())
    }

    fn pop(&mut self) -> Res<Obj> {
        match self.stack.pop() {
            Some(o) => Ok(o),
            None => self.malformed("an opcode needs a value but the stack is empty"),
        }
    }

    fn top(&self) -> Res<Obj> {
        match self.stack.last() {
            Some(o) => Ok(o.clone()),
            None => self.malformed("an opcode needs a value but the stack is empty"),
        }
    }

    fn pop_mark(&mut self) -> Res<Vec<Obj>> {
        match self.metastack.pop() {
            Some(prev) => Ok(std::mem::replace(&mut self.stack, prev)),
            None => self.malformed("an opcode needs a MARK but there is none"),
        }
    }

    fn memo_get(&self, key: u64) -> Res<Obj> {
        match self.memo.get(&key) {
            Some(o) => Ok(o.clone()),
            None => self.malformed(format!("memo entry {key} is read before it is written")),
        }
    }

    fn memo_put(&mut self, key: u64) -> Res<()> {
        let top = self.top()?;
        self.charge(ENTRY_COST)?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn decimal_key(&mut self) -> Res<u64> {
        let line = self.text_line()?;
        match line.trim().parse::<u64>() {
            Ok(k) => Ok(k),
            Err(_) => self.malformed(format!("memo key `{line}` is not a number")),
        }
    }

    // ----- main loop -----

    fn run(&mut self) -> Res<Obj> {
        loop {
            self.at = self.pos;
            let code = self.u8()?;
            match code {
                op::PROTO => {
                    let p = self.u8()?;
                    if p > 5 {
                        return self.unsupported(format!(
                            "pickle protocol {p} is newer than the protocols 0 to 5 Visage reads"
                        ));
                    }
                    self.info.protocol.get_or_insert(p);
                }
                op::FRAME => {
                    let n = self.u64()?;
                    if n > (self.data.len() - self.pos) as u64 {
                        return Err(PickleError::Truncated {
                            offset: self.data.len(),
                        });
                    }
                }
                op::STOP => return self.pop(),
                op::MARK => {
                    let level = std::mem::take(&mut self.stack);
                    self.metastack.push(level);
                }
                op::POP => {
                    if self.stack.pop().is_none() {
                        self.pop_mark()?;
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let t = self.top()?;
                    self.push(t)?;
                }
                op::NONE => self.push(Obj::None)?,
                op::NEWTRUE => self.push(Obj::Bool(true))?,
                op::NEWFALSE => self.push(Obj::Bool(false))?,
                op::INT => {
                    let line = self.text_line()?;
                    let o = match line.as_str() {
                        "00" => Obj::Bool(false),
                        "01" => Obj::Bool(true),
                        s => self.parse_decimal_int(s)?,
                    };
                    self.push(o)?;
                }
                op::LONG => {
                    let line = self.text_line()?;
                    let o = self.parse_decimal_int(line.trim_end_matches('L'))?;
                    self.push(o)?;
                }
                op::BININT => {
                    let v = self.i32()?;
                    self.push(Obj::Int(i64::from(v)))?;
                }
                op::BININT1 => {
                    let v = self.u8()?;
                    self.push(Obj::Int(i64::from(v)))?;
                }
                op::BININT2 => {
                    let v = self.u16()?;
                    self.push(Obj::Int(i64::from(v)))?;
                }
                op::LONG1 => {
                    let n = u64::from(self.u8()?);
                    let bytes = self.counted_bytes(n)?;
                    self.push(int_from_le(bytes))?;
                }
                op::LONG4 => {
                    let n = self.i32()?;
                    if n < 0 {
                        return self.malformed("LONG4 has a negative length");
                    }
                    let bytes = self.counted_bytes(n as u64)?;
                    self.push(int_from_le(bytes))?;
                }
                op::FLOAT => {
                    let line = self.text_line()?;
                    match line.trim().parse::<f64>() {
                        Ok(v) => self.push(Obj::Float(v))?,
                        Err(_) => return self.malformed(format!("`{line}` is not a float")),
                    }
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.fixed()?);
                    self.push(Obj::Float(v))?;
                }
                op::STRING => {
                    self.info.python2_strings = true;
                    let line = self.line()?;
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let unquoted = match line {
                        [q, inner @ .., q2] if (*q == b'\'' || *q == b'"') && q == q2 => inner,
                        _ => return self.malformed("a STRING argument is not quoted"),
                    };
                    let bytes = unescape_py_bytes(unquoted);
                    self.charge(bytes.len() as u64)?;
                    self.push(Obj::Bytes(Rc::new(bytes)))?;
                }
                op::BINSTRING => {
                    self.info.python2_strings = true;
                    let n = self.i32()?;
                    if n < 0 {
                        return self.malformed("BINSTRING has a negative length");
                    }
                    let b = self.counted_bytes(n as u64)?;
                    self.push(Obj::Bytes(Rc::new(b)))?;
                }
                op::SHORT_BINSTRING => {
                    self.info.python2_strings = true;
                    let n = u64::from(self.u8()?);
                    let b = self.counted_bytes(n)?;
                    self.push(Obj::Bytes(Rc::new(b)))?;
                }
                op::BINBYTES => {
                    let n = u64::from(self.u32()?);
                    let b = self.counted_bytes(n)?;
                    self.push(Obj::Bytes(Rc::new(b)))?;
                }
                op::SHORT_BINBYTES => {
                    let n = u64::from(self.u8()?);
                    let b = self.counted_bytes(n)?;
                    self.push(Obj::Bytes(Rc::new(b)))?;
                }
                op::BINBYTES8 | op::BYTEARRAY8 => {
                    let n = self.u64()?;
                    let b = self.counted_bytes(n)?;
                    self.push(Obj::Bytes(Rc::new(b)))?;
                }
                op::UNICODE => {
                    let line = self.line()?;
                    let s = match decode_raw_unicode_escape(line) {
                        Some(s) => s,
                        None => return self.malformed("a UNICODE argument has a bad \\u escape"),
                    };
                    self.charge(s.len() as u64)?;
                    self.push(Obj::Str(s.into()))?;
                }
                op::BINUNICODE => {
                    let n = u64::from(self.u32()?);
                    let o = self.counted_str(n)?;
                    self.push(o)?;
                }
                op::SHORT_BINUNICODE => {
                    let n = u64::from(self.u8()?);
                    let o = self.counted_str(n)?;
                    self.push(o)?;
                }
                op::BINUNICODE8 => {
                    let n = self.u64()?;
                    let o = self.counted_str(n)?;
                    self.push(o)?;
                }
                op::NEXT_BUFFER => {
                    return self.unsupported(
                        "out-of-band buffers (pickle protocol 5 NEXT_BUFFER); save the file \
                         with its buffers in-band",
                    );
                }
                op::READONLY_BUFFER => {
                    self.top()?;
                }
                op::EMPTY_TUPLE => self.push(Obj::Tuple(seq(Vec::new())))?,
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Tuple(seq(items)))?;
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(code - op::TUPLE1 + 1);
                    if self.stack.len() < n {
                        return self
                            .malformed("a TUPLE opcode needs more values than the stack has");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Obj::Tuple(seq(items)))?;
                }
                op::EMPTY_LIST => self.push(Obj::List(seq(Vec::new())))?,
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.push(Obj::List(seq(items)))?;
                }
                op::APPEND => {
                    let v = self.pop()?;
                    let target = self.top()?;
                    self.extend_list(&target, vec![v])?;
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.extend_list(&target, items)?;
                }
                op::EMPTY_DICT => self.push(Obj::Dict(map()))?,
                op::DICT => {
                    let items = self.pop_mark()?;
                    let d = Obj::Dict(map());
                    self.set_items(&d, items)?;
                    self.push(d)?;
                }
                op::SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?;
                    self.set_items(&target, vec![k, v])?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.set_items(&target, items)?;
                }
                op::EMPTY_SET => self.push(Obj::Set(seq(Vec::new())))?,
                op::ADDITEMS => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Obj::Set(s) => s.0.borrow_mut().extend(items),
                        other => {
                            return self.malformed(format!("ADDITEMS to a {}", other.kind()));
                        }
                    }
                }
                op::FROZENSET => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Set(seq(items)))?;
                }
                op::GET => {
                    let k = self.decimal_key()?;
                    let o = self.memo_get(k)?;
                    self.push(o)?;
                }
                op::BINGET => {
                    let k = u64::from(self.u8()?);
                    let o = self.memo_get(k)?;
                    self.push(o)?;
                }
                op::LONG_BINGET => {
                    let k = u64::from(self.u32()?);
                    let o = self.memo_get(k)?;
                    self.push(o)?;
                }
                op::PUT => {
                    let k = self.decimal_key()?;
                    self.memo_put(k)?;
                }
                op::BINPUT => {
                    let k = u64::from(self.u8()?);
                    self.memo_put(k)?;
                }
                op::LONG_BINPUT => {
                    let k = u64::from(self.u32()?);
                    self.memo_put(k)?;
                }
                op::MEMOIZE => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                op::GLOBAL => {
                    let module = self.text_line()?;
                    let name = self.text_line()?;
                    let g = self.global(&module, &name)?;
                    self.push(Obj::Global(g))?;
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Obj::Str(module), Obj::Str(name)) = (module, name) else {
                        return self.malformed("STACK_GLOBAL needs two strings");
                    };
                    let g = self.global(&module, &name)?;
                    self.push(Obj::Global(g))?;
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let Some(args) = args.tuple_items() else {
                        return self.malformed("REDUCE needs a tuple of arguments");
                    };
                    let o = self.call(&func, args)?;
                    self.push(o)?;
                }
                op::NEWOBJ => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    if args.tuple_items().is_none() {
                        return self.malformed("NEWOBJ needs a tuple of arguments");
                    }
                    let o = self.new_object(&cls)?;
                    self.push(o)?;
                }
                op::NEWOBJ_EX => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let no_kwargs = match &kwargs {
                        Obj::Dict(d) => d.0.borrow().is_empty(),
                        _ => false,
                    };
                    if args.tuple_items().is_none() || !no_kwargs {
                        return self.malformed("NEWOBJ_EX needs a tuple and an empty dict");
                    }
                    let o = self.new_object(&cls)?;
                    self.push(o)?;
                }
                op::INST => {
                    let module = self.text_line()?;
                    let name = self.text_line()?;
                    let g = self.global(&module, &name)?;
                    let args = self.pop_mark()?;
                    let o = self.call(&Obj::Global(g), args)?;
                    self.push(o)?;
                }
                op::OBJ => {
                    let mut args = self.pop_mark()?;
                    if args.is_empty() {
                        return self.malformed("OBJ needs a class");
                    }
                    let cls = args.remove(0);
                    let o = self.call(&cls, args)?;
                    self.push(o)?;
                }
                op::BUILD => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    self.build(&target, &state)?;
                }
                op::PERSID | op::BINPERSID => {
                    return self.unsupported(
                        "persistent ids (references to objects stored outside the pickle)",
                    );
                }
                op::EXT1 | op::EXT2 | op::EXT4 => {
                    return self.unsupported(
                        "copyreg extension codes (they name Python objects registered outside \
                         the file)",
                    );
                }
                other => {
                    return Err(PickleError::UnknownOpcode {
                        offset: self.at,
                        opcode: other,
                    });
                }
            }
        }
    }

    fn parse_decimal_int(&self, s: &str) -> Res<Obj> {
        let s = s.trim();
        if let Ok(v) = s.parse::<i64>() {
            return Ok(Obj::Int(v));
        }
        match big_decimal_to_le(s) {
            Some(bytes) => Ok(int_from_le(bytes)),
            None => self.malformed(format!("`{s}` is not an integer")),
        }
    }

    fn extend_list(&mut self, target: &Obj, items: Vec<Obj>) -> Res<()> {
        match target {
            Obj::List(l) => {
                l.0.borrow_mut().extend(items);
                Ok(())
            }
            other => self.malformed(format!("APPEND to a {}", other.kind())),
        }
    }

    fn set_items(&mut self, target: &Obj, items: Vec<Obj>) -> Res<()> {
        if !items.len().is_multiple_of(2) {
            return self.malformed("a dict is given an odd number of keys and values");
        }
        let Obj::Dict(d) = target else {
            return self.malformed(format!("SETITEM on a {}", target.kind()));
        };
        let mut d = d.0.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> Res<Global> {
        let full = format!("{module}.{name}");
        if !self.info.globals.contains(&full) {
            self.info.globals.push(full);
        }
        match resolve_global(module, name) {
            Some(g) => Ok(g),
            None => Err(PickleError::Refused {
                module: module.to_string(),
                name: name.to_string(),
            }),
        }
    }

    /// `cls.__new__(cls)` for the allow-listed classes.
    fn new_object(&mut self, cls: &Obj) -> Res<Obj> {
        match cls {
            Obj::Global(Global::ChumpyCh) => {
                self.info.chumpy_objects += 1;
                Ok(Obj::Inst(shared(Inst::Chumpy(None))))
            }
            Obj::Global(Global::Sparse(f)) => {
                self.info.sparse_matrices += 1;
                Ok(Obj::Inst(shared(Inst::Sparse(*f, None))))
            }
            Obj::Global(Global::Set | Global::FrozenSet) => Ok(Obj::Set(seq(Vec::new()))),
            other => self.unsupported(format!("creating an object from a {}", other.kind())),
        }
    }

    /// `func(*args)` for the allow-listed callables.
    fn call(&mut self, func: &Obj, args: Vec<Obj>) -> Res<Obj> {
        let Obj::Global(g) = func else {
            return self.malformed(format!("REDUCE calls a {}", func.kind()));
        };
        match g {
            Global::Reconstruct => {
                if !matches!(args.first(), Some(Obj::Global(Global::NdArrayClass))) {
                    return self.unsupported("numpy _reconstruct of something other than ndarray");
                }
                Ok(Obj::Inst(shared(Inst::Array(None))))
            }
            Global::Dtype => {
                let Some(descr) = args.first().and_then(Obj::text) else {
                    return self.malformed("numpy.dtype needs a type descriptor string");
                };
                match DtypeSpec::parse(&descr) {
                    Some(spec) => Ok(Obj::Inst(shared(Inst::Dtype(spec)))),
                    None => self.unsupported(format!("numpy dtype `{descr}`")),
                }
            }
            Global::FromBuffer => {
                let (Some(buf), Some(dtype), Some(shape), order) =
                    (args.first(), args.get(1), args.get(2), args.get(3))
                else {
                    return self.malformed("numpy _frombuffer needs buffer, dtype and shape");
                };
                let Obj::Bytes(buf) = buf else {
                    return self.malformed("numpy _frombuffer needs a bytes buffer");
                };
                let dtype = self.dtype_of(dtype)?;
                let shape = self.shape_of(shape)?;
                let fortran = match order.and_then(Obj::text).as_deref() {
                    None | Some("C") => false,
                    Some("F") => true,
                    Some(o) => return self.malformed(format!("unknown array order `{o}`")),
                };
                let buf = buf.clone();
                let a = self.make_array(&dtype, &shape, fortran, &buf)?;
                Ok(Obj::Inst(shared(Inst::Array(Some(Rc::new(a))))))
            }
            Global::Scalar => {
                let (Some(dtype), Some(Obj::Bytes(raw))) = (args.first(), args.get(1)) else {
                    return self.unsupported("a numpy scalar without raw bytes");
                };
                let dtype = self.dtype_of(dtype)?;
                let raw = raw.clone();
                let a = self.make_array(&dtype, &[], false, &raw)?;
                Ok(Obj::Inst(shared(Inst::Array(Some(Rc::new(a))))))
            }
            Global::CopyRegReconstructor => {
                let (Some(cls), Some(base), Some(state)) = (args.first(), args.get(1), args.get(2))
                else {
                    return self.malformed("copy_reg._reconstructor needs three arguments");
                };
                if !matches!(base, Obj::Global(Global::Object)) || !matches!(state, Obj::None) {
                    return self.unsupported(
                        "copy_reg._reconstructor with a base class other than `object`",
                    );
                }
                self.new_object(cls)
            }
            Global::CodecsEncode => {
                let (Some(Obj::Str(s)), enc) = (args.first(), args.get(1)) else {
                    return self.malformed("_codecs.encode needs a str");
                };
                let enc = enc
                    .and_then(Obj::text)
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if !matches!(
                    enc.as_str(),
                    "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1"
                ) {
                    return self.unsupported(format!(
                        "_codecs.encode with encoding `{enc}` (only latin-1 is read)"
                    ));
                }
                match latin1_bytes(s) {
                    Some(b) => Ok(Obj::Bytes(Rc::new(b))),
                    None => self.malformed("a latin-1 string holds a character above U+00FF"),
                }
            }
            Global::Set | Global::FrozenSet => match args.as_slice() {
                [] => Ok(Obj::Set(seq(Vec::new()))),
                [Obj::List(c) | Obj::Tuple(c) | Obj::Set(c)] => {
                    let items = c.0.borrow().clone();
                    self.charge(ENTRY_COST * items.len() as u64)?;
                    Ok(Obj::Set(seq(items)))
                }
                _ => self.unsupported("set() of something other than a list"),
            },
            Global::BytesType | Global::Bytearray => match args.as_slice() {
                [] => Ok(Obj::Bytes(Rc::new(Vec::new()))),
                [Obj::Bytes(b)] => Ok(Obj::Bytes(b.clone())),
                [Obj::Str(s), enc]
                    if enc.text().is_some_and(|e| {
                        matches!(e.to_ascii_lowercase().as_str(), "latin-1" | "latin1")
                    }) =>
                {
                    match latin1_bytes(s) {
                        Some(b) => Ok(Obj::Bytes(Rc::new(b))),
                        None => self.malformed("a latin-1 string holds a character above U+00FF"),
                    }
                }
                _ => self.unsupported("bytes()/bytearray() with these arguments"),
            },
            Global::ChumpyCh | Global::Sparse(_) => self.new_object(func),
            Global::NdArrayClass | Global::Object => {
                self.unsupported(format!("calling the class {:?} directly", g))
            }
        }
    }

    fn dtype_of(&self, o: &Obj) -> Res<DtypeSpec> {
        if let Obj::Inst(i) = o
            && let Inst::Dtype(d) = &*i.borrow()
        {
            return Ok(d.clone());
        }
        self.malformed(format!("expected a numpy dtype, found a {}", o.kind()))
    }

    fn shape_of(&self, o: &Obj) -> Res<Vec<usize>> {
        let items = match o {
            Obj::Tuple(t) | Obj::List(t) => t.0.borrow().clone(),
            Obj::Int(_) => vec![o.clone()],
            _ => return self.malformed(format!("an array shape is a {}", o.kind())),
        };
        let mut shape = Vec::with_capacity(items.len().min(64));
        for it in &items {
            match it.int().and_then(|v| usize::try_from(v).ok()) {
                Some(n) => shape.push(n),
                None => return self.malformed("an array shape holds a negative or non-integer"),
            }
        }
        if shape.len() > 32 {
            return self.unsupported(format!("an array with {} dimensions", shape.len()));
        }
        Ok(shape)
    }

    /// Applies the `BUILD` state to an allow-listed object.
    fn build(&mut self, target: &Obj, state: &Obj) -> Res<()> {
        let Obj::Inst(inst) = target else {
            return self.malformed(format!("BUILD on a {}", target.kind()));
        };
        let kind = {
            let b = inst.borrow();
            match &*b {
                Inst::Array(None) => 0,
                Inst::Dtype(_) => 1,
                Inst::Chumpy(None) => 2,
                Inst::Sparse(_, None) => 3,
                _ => 4,
            }
        };
        match kind {
            0 => {
                let Some(items) = state.tuple_items() else {
                    return self.malformed("a numpy array's state is not a tuple");
                };
                // (version, shape, dtype, is_fortran, rawdata), or without the version.
                let items = match items.len() {
                    5 => &items[1..],
                    4 => &items[..],
                    n => return self.malformed(format!("a numpy array's state has {n} items")),
                };
                let shape = self.shape_of(&items[0])?;
                let dtype = self.dtype_of(&items[1])?;
                let Some(fortran) = items[2].int() else {
                    return self.malformed("a numpy array's Fortran flag is not a bool");
                };
                let raw = match &items[3] {
                    Obj::Bytes(b) => b.clone(),
                    Obj::Str(s) => match latin1_bytes(s) {
                        Some(b) => Rc::new(b),
                        None => return self.malformed("array data text is not latin-1"),
                    },
                    Obj::List(_) => {
                        return self.unsupported(
                            "a numpy array of Python objects (dtype=object); only numeric arrays \
                             are read",
                        );
                    }
                    other => {
                        return self
                            .malformed(format!("a numpy array's data is a {}", other.kind()));
                    }
                };
                let a = self.make_array(&dtype, &shape, fortran != 0, &raw)?;
                *inst.borrow_mut() = Inst::Array(Some(Rc::new(a)));
                Ok(())
            }
            1 => {
                // (version, byteorder, subarray, names, fields, elsize, alignment, flags[, meta])
                let items = state.tuple_items().unwrap_or_default();
                let Some(order) = items.get(1).and_then(Obj::text) else {
                    return self.malformed("a numpy dtype's state has no byte order");
                };
                let compound = items.get(2).is_some_and(|o| !matches!(o, Obj::None))
                    || items.get(3).is_some_and(|o| !matches!(o, Obj::None));
                let elsize = items.get(5).and_then(Obj::int);
                if let Inst::Dtype(d) = &mut *inst.borrow_mut() {
                    match order.as_str() {
                        ">" | "!" => d.big_endian = true,
                        "<" | "|" | "=" => d.big_endian = false,
                        _ => {}
                    }
                    d.compound |= compound;
                    if d.size == 0
                        && let Some(n) = elsize.and_then(|n| usize::try_from(n).ok())
                    {
                        d.size = n;
                    }
                }
                Ok(())
            }
            2 => {
                let Some(x) = state.dict_get("x") else {
                    return self.unsupported(
                        "a chumpy object without an `x` array (a chumpy expression rather than \
                         stored data)",
                    );
                };
                let array = match &x {
                    Obj::Float(v) => Rc::new(NdArray {
                        shape: vec![],
                        data: ArrayData::F64(vec![*v]),
                    }),
                    Obj::Int(v) => Rc::new(NdArray {
                        shape: vec![],
                        data: ArrayData::I64(vec![*v]),
                    }),
                    other => match other.array() {
                        Some(a) => a,
                        None => {
                            return self
                                .malformed(format!("a chumpy object's `x` is a {}", other.kind()));
                        }
                    },
                };
                *inst.borrow_mut() = Inst::Chumpy(Some(array));
                Ok(())
            }
            3 => {
                let format = match &*inst.borrow() {
                    Inst::Sparse(f, _) => *f,
                    _ => SparseFormat::Csc,
                };
                let m = self.sparse_from_state(format, state)?;
                *inst.borrow_mut() = Inst::Sparse(format, Some(Rc::new(m)));
                Ok(())
            }
            _ => self.malformed(format!(
                "BUILD on a {} that is already built",
                target.kind()
            )),
        }
    }

    fn sparse_from_state(&mut self, format: SparseFormat, state: &Obj) -> Res<SparseMatrix> {
        if let Some(f) = state.dict_get("format").and_then(|f| f.text()) {
            let expected = match format {
                SparseFormat::Csc => "csc",
                SparseFormat::Csr => "csr",
            };
            if f != expected {
                return self.malformed(format!("a {expected} matrix says its format is `{f}`"));
            }
        }
        let shape = match state.dict_get("_shape").or_else(|| state.dict_get("shape")) {
            Some(s) => self.shape_of(&s)?,
            None => return self.malformed("a sparse matrix has no shape"),
        };
        let [rows, cols] = shape[..] else {
            return self.malformed(format!("a sparse matrix has shape {shape:?}"));
        };
        let arr = |key: &str| -> Res<Rc<NdArray>> {
            match state.dict_get(key).and_then(|o| o.array()) {
                Some(a) => Ok(a),
                None => Err(PickleError::Malformed {
                    offset: self.at,
                    reason: format!("a sparse matrix has no `{key}` array"),
                }),
            }
        };
        let to_index = |a: &NdArray, key: &str| -> Res<Vec<usize>> {
            let v = a.to_i64().and_then(|v| {
                v.into_iter()
                    .map(|x| usize::try_from(x).ok())
                    .collect::<Option<Vec<_>>>()
            });
            v.ok_or_else(|| PickleError::Malformed {
                offset: self.at,
                reason: format!("a sparse matrix's `{key}` holds negative or non-integer values"),
            })
        };
        let (indptr_a, indices_a) = (arr("indptr")?, arr("indices")?);
        let indptr = to_index(&indptr_a, "indptr")?;
        let indices = to_index(&indices_a, "indices")?;
        let data = arr("data")?.to_f64();
        self.charge(8 * (indptr.len() + indices.len() + data.len()) as u64)?;
        let (major, minor) = match format {
            SparseFormat::Csc => (cols, rows),
            SparseFormat::Csr => (rows, cols),
        };
        let ok = indptr.len() == major.saturating_add(1)
            && indptr.first() == Some(&0)
            && indptr.windows(2).all(|w| w[0] <= w[1])
            && indptr.last() == Some(&indices.len())
            && indices.len() == data.len()
            && indices.iter().all(|&i| i < minor);
        if !ok {
            return self.malformed(format!(
                "a sparse {rows}×{cols} matrix has inconsistent index arrays ({} pointers, {} \
                 indices, {} values)",
                indptr.len(),
                indices.len(),
                data.len()
            ));
        }
        Ok(SparseMatrix {
            shape: [rows, cols],
            format,
            indptr,
            indices,
            data,
        })
    }

    fn make_array(
        &mut self,
        dtype: &DtypeSpec,
        shape: &[usize],
        fortran: bool,
        raw: &[u8],
    ) -> Res<NdArray> {
        let supported = !dtype.compound
            && matches!(
                (dtype.kind, dtype.size),
                ('f', 2 | 4 | 8) | ('i' | 'u', 1 | 2 | 4 | 8) | ('b', 1)
            );
        if !supported {
            return self.unsupported(format!(
                "a numpy array of dtype `{}`; Visage reads bool, integer and float arrays",
                dtype.descr
            ));
        }
        let count = shape
            .iter()
            .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64));
        let bytes = count.and_then(|c| c.checked_mul(dtype.size as u64));
        let Some(bytes) = bytes.filter(|&b| b <= self.limits.max_total_bytes) else {
            return Err(PickleError::TooLarge {
                requested: bytes.unwrap_or(u64::MAX),
                limit: self.limits.max_total_bytes,
            });
        };
        if raw.len() as u64 != bytes {
            return self.malformed(format!(
                "an array of shape {shape:?} and dtype {} needs {bytes} bytes of data but has {}",
                dtype.name(),
                raw.len()
            ));
        }
        self.charge(bytes)?;
        let be = dtype.big_endian;
        macro_rules! decode {
            ($t:ty, $n:expr, $variant:ident) => {{
                let v: Vec<$t> = raw
                    .chunks_exact($n)
                    .map(|c| {
                        let mut b = [0u8; $n];
                        b.copy_from_slice(c);
                        if be {
                            <$t>::from_be_bytes(b)
                        } else {
                            <$t>::from_le_bytes(b)
                        }
                    })
                    .collect();
                ArrayData::$variant(if fortran { fortran_to_c(v, shape) } else { v })
            }};
        }
        let data = match (dtype.kind, dtype.size) {
            ('f', 8) => decode!(f64, 8, F64),
            ('f', 4) => decode!(f32, 4, F32),
            ('f', 2) => decode!(half::f16, 2, F16),
            ('i', 8) => decode!(i64, 8, I64),
            ('i', 4) => decode!(i32, 4, I32),
            ('i', 2) => decode!(i16, 2, I16),
            ('i', 1) => decode!(i8, 1, I8),
            ('u', 8) => decode!(u64, 8, U64),
            ('u', 4) => decode!(u32, 4, U32),
            ('u', 2) => decode!(u16, 2, U16),
            ('u', 1) => decode!(u8, 1, U8),
            _ => {
                let v: Vec<bool> = raw.iter().map(|&b| b != 0).collect();
                ArrayData::Bool(if fortran { fortran_to_c(v, shape) } else { v })
            }
        };
        Ok(NdArray {
            shape: shape.to_vec(),
            data,
        })
    }
}

/// Reorders column-major (Fortran) elements into row-major (C) order.
fn fortran_to_c<T: Copy>(src: Vec<T>, shape: &[usize]) -> Vec<T> {
    if shape.len() < 2 || src.is_empty() {
        return src;
    }
    // Fortran stride of axis k is the product of the extents before it.
    let mut fstride = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        fstride[k] = fstride[k - 1] * shape[k - 1];
    }
    let mut idx = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(src.len());
    for _ in 0..src.len() {
        let off: usize = idx.iter().zip(&fstride).map(|(i, s)| i * s).sum();
        out.push(src[off]);
        // Advance the C-order multi-index (last axis fastest).
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

/// Python `int` from little-endian two's-complement bytes (`LONG1`/`LONG4`).
fn int_from_le(mut bytes: Vec<u8>) -> Obj {
    let Some(&last) = bytes.last() else {
        return Obj::Int(0);
    };
    let negative = last & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    // Drop redundant sign-extension bytes (Python writes the shortest form; be lenient).
    let mut n = bytes.len();
    while n > 1 && bytes[n - 1] == fill && (bytes[n - 2] & 0x80 != 0) == negative {
        n -= 1;
    }
    bytes.truncate(n);
    if n <= 8 {
        let mut b = [fill; 8];
        b[..n].copy_from_slice(&bytes);
        Obj::Int(i64::from_le_bytes(b))
    } else {
        Obj::BigInt(Rc::new(bytes))
    }
}

/// A decimal integer too wide for `i64`, as little-endian two's-complement bytes.
fn big_decimal_to_le(s: &str) -> Option<Vec<u8>> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Magnitude, little-endian base 256.
    let mut mag: Vec<u8> = vec![0];
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    mag.push(0); // room for the sign bit
    if negative {
        // Two's complement: invert and add one.
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    Some(mag)
}

/// Decodes Python's `string-escape` (protocol 0 `STRING` arguments) into bytes.
fn unescape_py_bytes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'\\' || i + 1 >= s.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = s[i + 1];
        i += 2;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'x' => {
                let hex = s.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 && i < s.len() && (b'0'..=b'7').contains(&s[i]) {
                    v = v * 8 + u32::from(s[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    out
}

/// Decodes Python's `raw-unicode-escape` (protocol 0 `UNICODE` arguments).
fn decode_raw_unicode_escape(s: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let digits = match (c, s.get(i + 1)) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            _ => {
                out.push(char::from(c));
                i += 1;
                continue;
            }
        };
        let hex = s.get(i + 2..i + 2 + digits)?;
        let code = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        // Lone surrogates cannot be represented; keep U+FFFD like a lossy decoder.
        out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
        i += 2 + digits;
    }
    Some(out)
}

fn latin1_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

// ---------------------------------------------------------------------------------------------
// Conversion to the public tree
// ---------------------------------------------------------------------------------------------

struct Converter {
    limits: PickleLimits,
    used: u64,
}

#[derive(Hash, PartialEq, Eq)]
enum KeyRepr {
    None,
    Int(i64),
    Text(Vec<u8>),
    Float(u64),
}

/// Adds `bytes` to the running total `used`, refusing to pass `limit`.
fn charge(used: &mut u64, limit: u64, bytes: u64) -> Res<()> {
    let total = used.saturating_add(bytes);
    if total > limit {
        return Err(PickleError::TooLarge {
            requested: total,
            limit,
        });
    }
    *used = total;
    Ok(())
}

impl Converter {
    fn charge(&mut self, bytes: u64) -> Res<()> {
        charge(&mut self.used, self.limits.max_total_bytes, bytes)
    }

    fn convert(&mut self, o: &Obj, depth: usize) -> Res<PickleValue> {
        if depth > self.limits.max_depth {
            return Err(PickleError::Unsupported {
                offset: 0,
                reason: format!(
                    "values nested more than {} levels deep (or a value that contains itself)",
                    self.limits.max_depth
                ),
            });
        }
        self.charge(ENTRY_COST)?;
        let seq = |this: &mut Self, items: &Seq| -> Res<Vec<PickleValue>> {
            let items = items.0.borrow().clone();
            items.iter().map(|it| this.convert(it, depth + 1)).collect()
        };
        Ok(match o {
            Obj::None => PickleValue::None,
            Obj::Bool(b) => PickleValue::Bool(*b),
            Obj::Int(i) => PickleValue::Int(*i),
            Obj::BigInt(b) => {
                self.charge(b.len() as u64)?;
                PickleValue::BigInt(b.to_vec())
            }
            Obj::Float(f) => PickleValue::Float(*f),
            Obj::Str(s) => {
                self.charge(s.len() as u64)?;
                PickleValue::Str(s.to_string())
            }
            Obj::Bytes(b) => {
                self.charge(b.len() as u64)?;
                PickleValue::Bytes(b.to_vec())
            }
            Obj::List(l) => PickleValue::List(seq(self, l)?),
            Obj::Tuple(t) => PickleValue::Tuple(seq(self, t)?),
            Obj::Set(s) => PickleValue::Set(seq(self, s)?),
            Obj::Dict(d) => {
                let pairs = d.0.borrow().clone();
                let mut out: Vec<(PickleValue, PickleValue)> = Vec::with_capacity(pairs.len());
                let mut index: HashMap<KeyRepr, usize> = HashMap::new();
                for (k, v) in &pairs {
                    let key = self.convert(k, depth + 1)?;
                    let val = self.convert(v, depth + 1)?;
                    let repr = match &key {
                        PickleValue::None => Some(KeyRepr::None),
                        PickleValue::Bool(b) => Some(KeyRepr::Int(i64::from(*b))),
                        PickleValue::Int(i) => Some(KeyRepr::Int(*i)),
                        PickleValue::Str(s) => Some(KeyRepr::Text(s.as_bytes().to_vec())),
                        PickleValue::Bytes(b) => Some(KeyRepr::Text(b.clone())),
                        PickleValue::Float(f) => Some(KeyRepr::Float(f.to_bits())),
                        _ => None,
                    };
                    match repr {
                        Some(r) => match index.get(&r) {
                            Some(&i) => out[i].1 = val,
                            None => {
                                index.insert(r, out.len());
                                out.push((key, val));
                            }
                        },
                        None => out.push((key, val)),
                    }
                }
                PickleValue::Dict(out)
            }
            Obj::Global(g) => {
                return Err(PickleError::Unsupported {
                    offset: 0,
                    reason: format!("a Python class or function ({g:?}) stored as a value"),
                });
            }
            Obj::Inst(inst) => match &*inst.borrow() {
                Inst::Array(Some(a)) | Inst::Chumpy(Some(a)) => {
                    self.charge((a.len() * a.data.itemsize()) as u64)?;
                    PickleValue::Array((**a).clone())
                }
                Inst::Sparse(_, Some(m)) => {
                    self.charge(8 * (m.indptr.len() + 2 * m.indices.len()) as u64)?;
                    PickleValue::Sparse((**m).clone())
                }
                Inst::Dtype(d) => PickleValue::Str(d.name()),
                Inst::Array(None) | Inst::Chumpy(None) | Inst::Sparse(_, None) => {
                    return Err(PickleError::Malformed {
                        offset: 0,
                        reason: format!("a {} is never given its data", o.kind()),
                    });
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_from_le_matches_python() {
        // pickle.dumps(2**63, 2) → LONG1 9 bytes; -1 → b'\xff'; 255 → b'\xff\x00'.
        assert!(matches!(int_from_le(vec![0xff]), Obj::Int(-1)));
        assert!(matches!(int_from_le(vec![0xff, 0x00]), Obj::Int(255)));
        assert!(matches!(int_from_le(vec![0x00, 0x80]), Obj::Int(-32768)));
        let big = int_from_le(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0]);
        assert!(matches!(big, Obj::BigInt(ref b) if b.len() == 9));
    }

    #[test]
    fn big_decimal_is_twos_complement() {
        // 2**64 = 0x1_0000_0000_0000_0000.
        let b = big_decimal_to_le("18446744073709551616").unwrap();
        assert_eq!(&b[..9], &[0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(b[9..].iter().all(|&x| x == 0));
        let n = big_decimal_to_le("-18446744073709551616").unwrap();
        assert_eq!(&n[..9], &[0, 0, 0, 0, 0, 0, 0, 0, 0xff]);
        assert!(big_decimal_to_le("12a").is_none());
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            unescape_py_bytes(br"a\x00\n\\\'\101"),
            b"a\x00\n\\'A".to_vec()
        );
        assert_eq!(
            decode_raw_unicode_escape(b"\\u005c\xe9\\U0001F600").unwrap(),
            "\\\u{e9}\u{1F600}"
        );
    }

    #[test]
    fn fortran_reorder() {
        // [[1,2,3],[4,5,6]] in Fortran order is 1,4,2,5,3,6.
        assert_eq!(
            fortran_to_c(vec![1, 4, 2, 5, 3, 6], &[2, 3]),
            vec![1, 2, 3, 4, 5, 6]
        );
        // 2x2x2: element (i,j,k) holds 100i+10j+k; Fortran offset i + 2j + 4k.
        let mut f = vec![0; 8];
        for i in 0..2 {
            for j in 0..2 {
                for k in 0..2 {
                    f[i + 2 * j + 4 * k] = 100 * i + 10 * j + k;
                }
            }
        }
        assert_eq!(
            fortran_to_c(f, &[2, 2, 2]),
            vec![0, 1, 10, 11, 100, 101, 110, 111]
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing() {
        // 200 000 nested lists: `]` then (`]` `a`)… would recurse on drop if not dismantled.
        let mut p = vec![0x80, 2, b']'];
        p.extend(std::iter::repeat_n(b']', 200_000));
        p.extend(std::iter::repeat_n(b'a', 200_000));
        p.push(b'.');
        let err = load(&p).unwrap_err();
        assert!(matches!(err, PickleError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn self_referencing_list_is_an_error() {
        // l = []; l.append(l)
        let p = b"\x80\x02]q\x00h\x00a.";
        let err = load(p).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
    }

    #[test]
    fn exponential_sharing_hits_the_byte_cap() {
        // x = []; repeat 64×: x = [x, x, x, x] — a DAG whose tree has 4^64 nodes.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for i in 0..64u8 {
            p.extend_from_slice(&[b'(', b'h', i, b'h', i, b'h', i, b'h', i, b'l', b'q', i + 1]);
        }
        p.push(b'.');
        let limits = PickleLimits {
            max_total_bytes: 1 << 20,
            max_depth: 1000,
        };
        let err = load_with_limits(&p, &limits).unwrap_err();
        assert!(matches!(err, PickleError::TooLarge { .. }), "{err}");
    }
}

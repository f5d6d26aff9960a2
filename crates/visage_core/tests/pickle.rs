//! The restricted pickle reader and the FLAME importer, on the synthetic fixtures written by
//! `tools/make_flame_pickles.py` (see that script for what each file holds). Every loaded value
//! is compared with the script's JSON description: arrays bit for bit (FNV-1a hash of their
//! little-endian elements, plus the values of small ones).

use std::path::{Path, PathBuf};

use serde_json::Value;
use visage_core::model::import::{
    self, FlameVariant, ImportError, ImportOptions, convert_flame_file, import_flame_dict,
    import_flame_pickle, import_flame_pickle_bytes,
};
use visage_core::model::{FlameModel, FlameParams};
use visage_core::pickle::{
    self, ArrayData, NdArray, PickleError, PickleInfo, PickleLimits, PickleValue, SparseFormat,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flame")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn reference(name: &str) -> Value {
    serde_json::from_slice(&read(name)).unwrap()
}

fn load_info(name: &str) -> (PickleValue, PickleInfo) {
    pickle::load_with_limits(&read(name), &PickleLimits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

// ------------------------------------------------------------------------------------------
// Comparison with the JSON descriptions
// ------------------------------------------------------------------------------------------

fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn le_bytes(d: &ArrayData) -> Vec<u8> {
    match d {
        ArrayData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        ArrayData::I8(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::U8(v) => v.clone(),
        ArrayData::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::U64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ArrayData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_array(a: &NdArray, j: &Value, at: &str) {
    assert_eq!(
        a.data.dtype_name(),
        j["dtype"].as_str().unwrap(),
        "{at}: dtype"
    );
    let shape: Vec<usize> = j["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(a.shape, shape, "{at}: shape");
    assert_eq!(
        a.len(),
        shape.iter().product::<usize>(),
        "{at}: element count"
    );
    assert_eq!(
        fnv1a64(le_bytes(&a.data)),
        j["fnv1a64"].as_str().unwrap(),
        "{at}: data hash"
    );
    if let Some(bits) = j.get("values_bits") {
        let got: Vec<String> = a
            .to_f64()
            .iter()
            .map(|x| format!("{:016x}", x.to_bits()))
            .collect();
        let want: Vec<String> = bits
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "{at}: values");
    }
    if let Some(values) = j.get("values") {
        let want: Vec<i128> = values
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v.as_i64()
                    .map(i128::from)
                    .unwrap_or_else(|| v.as_u64().unwrap() as i128)
            })
            .collect();
        let got: Vec<i128> = match &a.data {
            ArrayData::U64(v) => v.iter().map(|&x| x as i128).collect(),
            _ => a.to_i64().unwrap().into_iter().map(i128::from).collect(),
        };
        assert_eq!(got, want, "{at}: values");
    }
}

/// Asserts that `v` is what the JSON description `j` says.
fn check(v: &PickleValue, j: &Value, at: &str) {
    let (kind, inner) = j.as_object().unwrap().iter().next().unwrap();
    match (kind.as_str(), v) {
        ("none", PickleValue::None) => {}
        ("bool", PickleValue::Bool(b)) => assert_eq!(Some(*b), inner.as_bool(), "{at}"),
        ("int", PickleValue::Int(i)) => assert_eq!(Some(*i), inner.as_i64(), "{at}"),
        ("bigint_le_hex", PickleValue::BigInt(b)) => assert_eq!(hex(b), inner.as_str().unwrap()),
        ("float_bits", PickleValue::Float(f)) => {
            assert_eq!(
                format!("{:016x}", f.to_bits()),
                inner.as_str().unwrap(),
                "{at}"
            )
        }
        ("str", PickleValue::Str(s)) => assert_eq!(Some(s.as_str()), inner.as_str(), "{at}"),
        ("bytes_hex", PickleValue::Bytes(b)) => assert_eq!(hex(b), inner.as_str().unwrap(), "{at}"),
        ("list", PickleValue::List(items)) | ("tuple", PickleValue::Tuple(items)) => {
            let want = inner.as_array().unwrap();
            assert_eq!(items.len(), want.len(), "{at}: length");
            for (i, (x, w)) in items.iter().zip(want).enumerate() {
                check(x, w, &format!("{at}[{i}]"));
            }
        }
        ("set", PickleValue::Set(items)) => {
            // Sets compare as multisets: the file's order is Python's iteration order.
            let want = inner.as_array().unwrap();
            assert_eq!(items.len(), want.len(), "{at}: size");
            for w in want {
                let found = items.iter().any(|x| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(x, w, at)))
                        .is_ok()
                });
                assert!(found, "{at}: {w} missing from the set");
            }
        }
        ("dict", PickleValue::Dict(pairs)) => {
            let want = inner.as_array().unwrap();
            assert_eq!(pairs.len(), want.len(), "{at}: number of keys");
            for ((k, x), w) in pairs.iter().zip(want) {
                let label = format!("{at}.{}", k.as_text().unwrap_or("?"));
                check(k, &w[0], &label);
                check(x, &w[1], &label);
            }
        }
        ("array", PickleValue::Array(a)) => check_array(a, inner, at),
        ("sparse", PickleValue::Sparse(m)) => {
            let format = match m.format {
                SparseFormat::Csc => "csc",
                SparseFormat::Csr => "csr",
            };
            assert_eq!(format, inner["format"].as_str().unwrap(), "{at}: format");
            assert_eq!(m.nnz() as u64, inner["nnz"].as_u64().unwrap(), "{at}: nnz");
            let shape: Vec<usize> = m.shape.to_vec();
            assert_eq!(serde_json::json!(shape), inner["shape"], "{at}: shape");
            check_array(
                &m.to_dense().unwrap(),
                &inner["dense"],
                &format!("{at} (dense)"),
            );
        }
        _ => panic!("{at}: expected {kind}, loaded {}", v.kind()),
    }
}

fn round_trip(pickle_name: &str, json_name: &str) -> PickleInfo {
    let (value, info) = load_info(pickle_name);
    check(&value, &reference(json_name), pickle_name);
    info
}

// ------------------------------------------------------------------------------------------
// Reader
// ------------------------------------------------------------------------------------------

#[test]
fn flame2020_python2_chumpy_pickle_round_trips() {
    let info = round_trip("flame2020_py2.pkl", "flame2020_py2.json");
    assert_eq!(info.protocol, Some(2));
    assert!(info.python2_strings);
    // J (through NEWOBJ), weights, posedirs, v_template, shapedirs (through copy_reg).
    assert_eq!(info.chumpy_objects, 5);
    assert_eq!(info.sparse_matrices, 1);
    assert!(
        info.globals
            .contains(&"copy_reg._reconstructor".to_string())
    );
    assert!(
        info.globals
            .contains(&"scipy.sparse.csc.csc_matrix".to_string())
    );
}

#[test]
fn flame2023_python3_pickle_round_trips() {
    let info = round_trip("flame2023.pkl", "flame2023.json");
    assert_eq!(info.protocol, Some(4));
    assert!(!info.python2_strings);
    assert_eq!(info.chumpy_objects, 0);
    assert!(
        info.globals
            .contains(&"scipy.sparse._csc.csc_matrix".to_string())
    );
}

#[test]
fn flame2023_open_protocol5_numpy2_pickle_round_trips() {
    let info = round_trip("flame2023_open.pkl", "flame2023_open.json");
    assert_eq!(info.protocol, Some(5));
    assert!(
        info.globals
            .contains(&"numpy._core.numeric._frombuffer".to_string())
    );
}

#[test]
fn separate_expressiondirs_pickle_round_trips() {
    let info = round_trip("flame_separate_expr.pkl", "flame_separate_expr.json");
    assert_eq!(info.protocol, Some(3));
}

#[test]
fn protocol0_and_protocol2_python3_pickles_round_trip() {
    let info = round_trip("arrays_p0.pkl", "arrays.json");
    assert_eq!(info.protocol, None);
    assert!(info.globals.contains(&"_codecs.encode".to_string()));
    let info = round_trip("arrays_p2.pkl", "arrays.json");
    assert_eq!(info.protocol, Some(2));
    assert!(
        info.globals
            .contains(&"numpy.core.multiarray.scalar".to_string())
    );
}

#[test]
fn python2_protocol0_pickle_round_trips() {
    let info = round_trip("arrays_py2_p0.pkl", "arrays_py2_p0.json");
    assert_eq!(info.protocol, None);
    assert!(info.python2_strings);
}

#[test]
fn byte_order_and_fortran_layout_are_normalised() {
    let (v, _) = load_info("arrays_p2.pkl");
    // `f4_fortran` is stored column by column; the reader returns rows.
    let a = v.get("f4_fortran").and_then(PickleValue::as_array).unwrap();
    assert_eq!(a.shape, vec![3, 4]);
    let (v0, _) = load_info("arrays_p0.pkl");
    assert_eq!(v0.get("f4_fortran"), v.get("f4_fortran"));
    // Big-endian uint64: 2^64 - 1 then 1.
    let u = v.get("u8_be").and_then(PickleValue::as_array).unwrap();
    assert_eq!(u.data, ArrayData::U64(vec![u64::MAX, 1]));
    let i = v.get("i8").and_then(PickleValue::as_array).unwrap();
    assert_eq!(i.data, ArrayData::I64(vec![i64::MIN, i64::MAX]));
    assert_eq!(
        v.get("text").and_then(PickleValue::as_text),
        Some("h\u{e9}llo \u{2713} back\\slash")
    );
    assert_eq!(v.get("empty_bytes"), Some(&PickleValue::Bytes(vec![])));
}

#[test]
fn sparse_regressor_is_densified() {
    let (v, _) = load_info("flame2020_py2.pkl");
    let Some(PickleValue::Sparse(m)) = v.get("J_regressor") else {
        panic!("J_regressor is not sparse");
    };
    assert_eq!(m.format, SparseFormat::Csc);
    assert_eq!(m.shape, [5, 6]);
    let d = m.to_dense().unwrap();
    assert_eq!(d.shape, vec![5, 6]);
    // Written by the script: joint 0 = ½ v2 + ¼ v3 + ¼ v4, joint 1 = ½ v3 + ½ v5, …
    let ArrayData::F64(x) = &d.data else { panic!() };
    assert_eq!(&x[0..6], &[0.0, 0.0, 0.5, 0.25, 0.25, 0.0]);
    assert_eq!(&x[6..12], &[0.0, 0.0, 0.0, 0.5, 0.0, 0.5]);
    for row in x.chunks(6) {
        assert_eq!(row.iter().sum::<f64>(), 1.0);
    }
    // The CSR matrix of the format fixture densifies the other way round.
    let (v, _) = load_info("arrays_p2.pkl");
    let Some(PickleValue::Sparse(m)) = v.get("csr") else {
        panic!()
    };
    assert_eq!(m.format, SparseFormat::Csr);
    let ArrayData::F64(x) = m.to_dense().unwrap().data else {
        panic!()
    };
    assert_eq!(
        x,
        vec![0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn malicious_pickles_are_refused_by_name() {
    let refs = reference("malicious.json");
    let cases = refs.as_object().unwrap();
    assert_eq!(cases.len(), 4);
    for (name, want) in cases {
        let bytes = read(&format!("{name}.pkl"));
        let err = pickle::load(&bytes).unwrap_err();
        let (module, obj) = (
            want["module"].as_str().unwrap(),
            want["name"].as_str().unwrap(),
        );
        assert_eq!(
            err,
            PickleError::Refused {
                module: module.into(),
                name: obj.into()
            },
            "{name}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("`{module}.{obj}`")), "{msg}");
        assert!(msg.contains("asks to run code"), "{msg}");
    }
}

#[test]
fn malicious_flame_file_is_refused_by_the_importer() {
    let path = fixtures().join("malicious_flame_popen.pkl");
    let err = import_flame_pickle(&path, &ImportOptions::default()).unwrap_err();
    let ImportError::Pickle { source, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        matches!(source, PickleError::Refused { module, name } if module == "subprocess" && name == "Popen")
    );
    assert!(
        err.to_string()
            .contains("refused to load `subprocess.Popen`"),
        "{err}"
    );
}

const ALL_PICKLES: [&str; 11] = [
    "flame2020_py2.pkl",
    "flame2023.pkl",
    "flame2023_open.pkl",
    "flame_separate_expr.pkl",
    "arrays_p0.pkl",
    "arrays_p2.pkl",
    "arrays_py2_p0.pkl",
    "malicious_os_system.pkl",
    "malicious_posix_system.pkl",
    "malicious_builtins_eval.pkl",
    "malicious_flame_popen.pkl",
];

#[test]
fn truncated_pickles_are_errors() {
    for name in ALL_PICKLES {
        let bytes = read(name);
        // Every prefix of the small files; for the large ones the first and last 2 KiB and
        // every 61st length in between.
        let n = bytes.len();
        let lengths: Vec<usize> = if n <= 8192 {
            (0..n).collect()
        } else {
            (0..2048)
                .chain((2048..n - 2048).step_by(61))
                .chain(n - 2048..n)
                .collect()
        };
        for len in lengths {
            match pickle::load(&bytes[..len]) {
                Err(PickleError::Refused { .. }) if name.starts_with("malicious") => {}
                Err(PickleError::Truncated { .. }) => {}
                Err(e) if len > 0 => {
                    // A cut inside a length-prefixed argument can also leave the opcodes
                    // inconsistent (e.g. the stack is missing a value) — still an error.
                    assert!(
                        matches!(
                            e,
                            PickleError::Malformed { .. } | PickleError::Truncated { .. }
                        ),
                        "{name}[..{len}]: {e}"
                    );
                }
                Err(e) => panic!("{name}[..0]: {e}"),
                Ok(_) => panic!("{name} cut to {len} of {n} bytes loaded"),
            }
        }
    }
}

/// Deterministic pseudo-random numbers.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn corrupted_and_random_bytes_never_panic() {
    let mut rng = Lcg(1234);
    let mut outcomes = [0usize; 2];
    for name in ALL_PICKLES {
        let original = read(name);
        let rounds = if original.len() > 8192 { 150 } else { 1500 };
        for round in 0..rounds {
            let mut bytes = original.clone();
            let flips = 1 + rng.next() as usize % 4;
            for _ in 0..flips {
                let at = rng.next() as usize % bytes.len();
                bytes[at] = match rng.next() % 3 {
                    0 => rng.next() as u8,
                    1 => bytes[at] ^ (1 << (rng.next() % 8)),
                    _ => [0u8, 0xff, b'(', b'.', b'h', b'R', b'b', 0x81][rng.next() as usize % 8],
                };
            }
            let result = std::panic::catch_unwind(|| pickle::load(&bytes).is_ok());
            match result {
                Ok(ok) => outcomes[usize::from(ok)] += 1,
                Err(_) => panic!("{name}, corruption round {round}: the reader panicked"),
            }
        }
    }
    for len in [0usize, 1, 2, 7, 100, 1000, 10_000] {
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let result = std::panic::catch_unwind(|| pickle::load(&bytes).is_ok());
            assert!(
                result.is_ok(),
                "random input of {len} bytes made the reader panic"
            );
        }
    }
    // Most corruptions are caught; some (inside array data) legitimately still load.
    assert!(
        outcomes[0] > outcomes[1],
        "errors {} vs loads {}",
        outcomes[0],
        outcomes[1]
    );
}

/// A protocol-2 pickle of one float64 ndarray with the given shape and raw data.
fn ndarray_pickle(shape: &[u32], descr: &str, raw: &[u8]) -> Vec<u8> {
    let mut p = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R(K\x01(".to_vec();
    for &d in shape {
        p.push(b'J');
        p.extend_from_slice(&(d as i32).to_le_bytes());
    }
    p.extend_from_slice(b"tcnumpy\ndtype\n");
    p.push(b'X');
    p.extend_from_slice(&(descr.len() as u32).to_le_bytes());
    p.extend_from_slice(descr.as_bytes());
    p.extend_from_slice(
        b"K\x00K\x01\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89",
    );
    p.push(b'B');
    p.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    p.extend_from_slice(raw);
    p.extend_from_slice(b"tb.");
    p
}

#[test]
fn array_sizes_are_checked() {
    // Well-formed: 2×3 float64.
    let raw: Vec<u8> = (0..6).flat_map(|i| f64::from(i).to_le_bytes()).collect();
    let v = pickle::load(&ndarray_pickle(&[2, 3], "f8", &raw)).unwrap();
    assert_eq!(
        v,
        PickleValue::Array(NdArray {
            shape: vec![2, 3],
            data: ArrayData::F64(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
        })
    );
    // Data one element short.
    let err = pickle::load(&ndarray_pickle(&[2, 3], "f8", &raw[..40])).unwrap_err();
    assert!(
        err.to_string()
            .contains("needs 48 bytes of data but has 40"),
        "{err}"
    );
    // An absurd shape: (2^31 - 1)^3 elements.
    let huge = i32::MAX as u32;
    let err = pickle::load(&ndarray_pickle(&[huge, huge, huge], "f8", &raw)).unwrap_err();
    assert!(matches!(err, PickleError::TooLarge { .. }), "{err}");
    // Object arrays are not read.
    let err = pickle::load(&ndarray_pickle(&[1], "O8", &raw[..8])).unwrap_err();
    assert!(matches!(err, PickleError::Unsupported { .. }), "{err}");
    // A length prefix far beyond the data is a truncation, not an allocation.
    let err = pickle::load(b"\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x10.").unwrap_err();
    assert!(matches!(err, PickleError::Truncated { .. }), "{err}");
    // The total cap applies to whole files.
    let limits = PickleLimits {
        max_total_bytes: 16 * 1024,
        ..PickleLimits::default()
    };
    let err = pickle::load_with_limits(&read("flame2023.pkl"), &limits).unwrap_err();
    assert!(
        matches!(err, PickleError::TooLarge { limit: 16384, .. }),
        "{err}"
    );
}

#[test]
fn unsupported_opcodes_are_errors() {
    // Persistent id, extension code, out-of-band buffer, unknown opcode, protocol 6.
    for (bytes, want) in [
        (&b"\x80\x02X\x01\x00\x00\x00aQ."[..], "persistent"),
        (b"\x80\x02\x82\x01.", "extension"),
        (b"\x80\x05\x97.", "out-of-band"),
        (b"\x80\x02\xff.", "not a pickle opcode"),
        (b"\x80\x06N.", "protocol 6"),
    ] {
        let err = pickle::load(bytes).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
}

// ------------------------------------------------------------------------------------------
// FLAME import
// ------------------------------------------------------------------------------------------

fn floats(v: &PickleValue, key: &str) -> (Vec<usize>, Vec<f64>) {
    let a = v.get(key).and_then(PickleValue::as_array).unwrap();
    (a.shape.clone(), a.to_f64())
}

/// Checks every part of an imported model against the arrays of the pickle it came from.
fn check_import(file: &str, variant: FlameVariant, n_id: usize, n_ex: usize) -> FlameModel {
    let named = file.contains("20");
    let path = fixtures().join(file);
    let (model, report) = import_flame_pickle(&path, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let (raw, _) = load_info(file);
    assert_eq!(report.variant, variant, "{file}");
    assert_eq!(
        report.variant_evidence == "from the file name",
        named,
        "{file}"
    );
    let nv = 6;
    assert_eq!((report.vertices, report.triangles), (nv, 8));
    assert_eq!(
        (model.num_identity(), model.num_expression()),
        (n_id, n_ex),
        "{file}"
    );
    assert_eq!(
        (report.identity_components, report.expression_components),
        (n_id, n_ex)
    );
    assert_eq!(report.pose_correctives, 36);
    assert_eq!(report.joints, 5);

    let (_, vt) = floats(&raw, "v_template");
    for (v, p) in model.template.iter().enumerate() {
        for c in 0..3 {
            assert_eq!(p[c], vt[v * 3 + c] as f32, "{file}: template");
        }
    }
    let f = raw
        .get("f")
        .and_then(PickleValue::as_array)
        .unwrap()
        .to_i64()
        .unwrap();
    let tris: Vec<i64> = model
        .triangles
        .iter()
        .flatten()
        .map(|&i| i64::from(i))
        .collect();
    assert_eq!(tris, f);

    // Basis component k, vertex v, axis c = shapedirs[v][c][column].
    let (sd_shape, sd) = floats(&raw, "shapedirs");
    let k_all = sd_shape[2];
    let (ed_k, ed) = match raw.get("expressiondirs") {
        Some(_) => {
            let (s, d) = floats(&raw, "expressiondirs");
            (s[2], Some(d))
        }
        None => (0, None),
    };
    for v in 0..nv {
        for c in 0..3 {
            for k in 0..n_id {
                let got = model.identity.deltas[(k * nv + v) * 3 + c];
                assert_eq!(
                    got,
                    sd[(v * 3 + c) * k_all + k] as f32,
                    "{file}: identity {k}"
                );
            }
            for k in 0..n_ex {
                let want = match &ed {
                    Some(ed) => ed[(v * 3 + c) * ed_k + k],
                    None => sd[(v * 3 + c) * k_all + n_id + k],
                };
                let got = model.expression.deltas[(k * nv + v) * 3 + c];
                assert_eq!(got, want as f32, "{file}: expression {k}");
            }
        }
    }
    assert_eq!(
        model.expression.names.first().map(String::as_str),
        Some("exp000")
    );
    let (_, pd) = floats(&raw, "posedirs");
    let pc = model.pose_correctives.as_ref().unwrap();
    for v in 0..nv {
        for c in 0..3 {
            for k in 0..36 {
                assert_eq!(
                    pc.deltas[(k * nv + v) * 3 + c],
                    pd[(v * 3 + c) * 36 + k] as f32
                );
            }
        }
    }

    let sk = model.skeleton.as_ref().unwrap();
    assert_eq!(sk.names, ["root", "neck", "jaw", "eye_left", "eye_right"]);
    assert_eq!(sk.parents, [-1, 0, 1, 1, 1]);
    let Some(PickleValue::Sparse(reg)) = raw.get("J_regressor") else {
        panic!()
    };
    let dense: Vec<f32> = reg.to_dense().unwrap().to_f32();
    assert_eq!(sk.regressor, dense);
    let (_, w) = floats(&raw, "weights");
    assert_eq!(sk.weights, w.iter().map(|&x| x as f32).collect::<Vec<_>>());

    // Zero parameters: the template, and joints where the regressor puts them.
    let posed = model.forward(&FlameParams::zeros(&model));
    for (p, t) in posed.vertices.iter().zip(&model.template) {
        for c in 0..3 {
            assert!(
                (p[c] - t[c]).abs() <= 1e-7,
                "{file}: vertex {p:?} vs template {t:?}"
            );
        }
    }
    for (j, pj) in posed.joints.iter().enumerate() {
        for c in 0..3 {
            let want: f64 = (0..nv)
                .map(|v| f64::from(sk.regressor[j * nv + v]) * vt[v * 3 + c])
                .sum();
            assert!((f64::from(pj[c]) - want).abs() < 1e-6, "{file}: joint {j}");
        }
    }
    assert_eq!(model.meta.units, "metres");
    assert_eq!(model.meta.licence, import::FLAME_LICENCE);
    assert!(model.meta.source.starts_with(file), "{}", model.meta.source);
    model
}

#[test]
fn flame2020_imports() {
    let m = check_import("flame2020_py2.pkl", FlameVariant::Flame2020, 300, 100);
    assert_eq!(
        m.meta.extra.get("flame_variant").map(String::as_str),
        Some("FLAME 2020")
    );
    let (_, report) = import_flame_pickle(
        &fixtures().join("flame2020_py2.pkl"),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(report.ignored_keys, ["J", "bs_style", "bs_type"]);
    assert!(report.python2);
    assert_eq!(report.chumpy_objects, 5);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[test]
fn flame2023_imports() {
    check_import("flame2023.pkl", FlameVariant::Flame2023, 300, 100);
}

#[test]
fn flame2023_open_imports() {
    check_import("flame2023_open.pkl", FlameVariant::Flame2023Open, 300, 100);
}

#[test]
fn separate_expressiondirs_import() {
    let m = check_import("flame_separate_expr.pkl", FlameVariant::Flame2023, 12, 4);
    assert_eq!(m.expression.names, ["exp000", "exp001", "exp002", "exp003"]);
}

#[test]
fn variant_is_detected_from_content_without_a_telling_name() {
    for (file, variant) in [
        ("flame2020_py2.pkl", FlameVariant::Flame2020),
        ("flame2023.pkl", FlameVariant::Flame2023),
        ("flame2023_open.pkl", FlameVariant::Flame2023),
    ] {
        let (_, report) =
            import_flame_pickle_bytes(&read(file), "model.pkl", &ImportOptions::default()).unwrap();
        assert_eq!(report.variant, variant, "{file}");
        assert_ne!(report.variant_evidence, "from the file name");
    }
    let options = ImportOptions {
        variant: Some(FlameVariant::Flame2023Open),
        name: Some("my head".into()),
        ..ImportOptions::default()
    };
    let (m, report) = import_flame_pickle_bytes(&read("flame2023.pkl"), "x.pkl", &options).unwrap();
    assert_eq!(report.variant, FlameVariant::Flame2023Open);
    assert_eq!(m.meta.name, "my head");
}

#[test]
fn split_and_truncation_options() {
    let bytes = read("flame2023.pkl");
    let split = |options: ImportOptions| {
        let (m, r) = import_flame_pickle_bytes(&bytes, "flame2023.pkl", &options)?;
        assert_eq!(
            (m.num_identity(), m.num_expression()),
            (r.identity_components, r.expression_components)
        );
        Ok::<_, ImportError>((m.num_identity(), m.num_expression(), r.notes))
    };
    let (i, e, _) = split(ImportOptions {
        identity_components: Some(350),
        ..Default::default()
    })
    .unwrap();
    assert_eq!((i, e), (350, 50));
    let (i, e, notes) = split(ImportOptions {
        max_identity: Some(10),
        max_expression: Some(5),
        ..Default::default()
    })
    .unwrap();
    assert_eq!((i, e), (10, 5));
    assert!(
        notes
            .iter()
            .any(|n| n.contains("kept 10 of 300 identity and 5 of 100")),
        "{notes:?}"
    );
    let (i, e, _) = split(ImportOptions {
        identity_components: Some(400),
        ..Default::default()
    })
    .unwrap();
    assert_eq!((i, e), (400, 0));
    let err = split(ImportOptions {
        identity_components: Some(401),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("401 identity components were asked for but `shapedirs` has 400"),
        "{err}"
    );
}

fn set(root: &mut PickleValue, key: &str, value: Option<PickleValue>) {
    let PickleValue::Dict(pairs) = root else {
        panic!()
    };
    pairs.retain(|(k, _)| k.as_text() != Some(key));
    if let Some(v) = value {
        pairs.push((PickleValue::Str(key.into()), v));
    }
}

fn f64_array(shape: &[usize], fill: f64) -> PickleValue {
    PickleValue::Array(NdArray {
        shape: shape.to_vec(),
        data: ArrayData::F64(vec![fill; shape.iter().product()]),
    })
}

#[test]
fn inconsistent_files_are_explained() {
    let (base, info) = load_info("flame2023.pkl");
    let import = |root: &PickleValue| {
        import_flame_dict(root, &info, "flame2023.pkl", &ImportOptions::default())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let cases: Vec<(&str, Option<PickleValue>, &str)> = vec![
        (
            "v_template",
            Some(f64_array(&[7, 3], 0.0)),
            "`shapedirs` has shape [6, 3, 400] but `v_template` has 7 vertices",
        ),
        (
            "v_template",
            Some(f64_array(&[6, 2], 0.0)),
            "`v_template` has shape [6, 2]; FLAME's is [V, 3]",
        ),
        (
            "v_template",
            Some(f64_array(&[6, 3], f64::NAN)),
            "`v_template` contains NaN",
        ),
        ("v_template", None, "it has no `v_template` array"),
        (
            "v_template",
            Some(PickleValue::Str("x".into())),
            "`v_template` is a str, not an array",
        ),
        ("shapedirs", None, "it has no `shapedirs` array"),
        (
            "shapedirs",
            Some(f64_array(&[6, 3], 0.0)),
            "`shapedirs` has shape [6, 3]; FLAME's is [V, 3, K]",
        ),
        (
            "posedirs",
            Some(f64_array(&[6, 3, 12], 0.0)),
            "`posedirs` has shape [6, 3, 12]; FLAME's has 36",
        ),
        (
            "posedirs",
            Some(f64_array(&[5, 3, 36], 0.0)),
            "`posedirs` has shape [5, 3, 36] but `v_template` has 6 vertices",
        ),
        (
            "J_regressor",
            Some(f64_array(&[5, 7], 0.0)),
            "`J_regressor` has shape [5, 7] but `v_template` has 6 vertices",
        ),
        (
            "J_regressor",
            Some(f64_array(&[4, 6], 0.0)),
            "`J_regressor` has shape [4, 6]; FLAME's is [5, V]",
        ),
        (
            "J_regressor",
            None,
            "it has `weights` and `kintree_table` but a FLAME skeleton needs",
        ),
        (
            "weights",
            Some(f64_array(&[6, 4], 0.0)),
            "`weights` has shape [6, 4]",
        ),
        ("f", None, "it has no `f` (triangle) array"),
        (
            "f",
            Some(PickleValue::Array(NdArray {
                shape: vec![1, 3],
                data: ArrayData::U32(vec![0, 1, 9]),
            })),
            "`f` refers to vertex 9 but `v_template` has 6 vertices",
        ),
        (
            "kintree_table",
            Some(PickleValue::Array(NdArray {
                shape: vec![2, 5],
                data: ArrayData::I64(vec![-1, 0, 1, 4, 1, 0, 1, 2, 3, 4]),
            })),
            "gives joint 3 (eye_left) the parent 4",
        ),
        (
            "kintree_table",
            Some(PickleValue::Array(NdArray {
                shape: vec![2, 5],
                data: ArrayData::I64(vec![-1, 0, 1, 1, 1, 0, 2, 1, 3, 4]),
            })),
            "`kintree_table` lists joints [0, 2, 1, 3, 4]",
        ),
    ];
    for (key, value, want) in cases {
        let mut root = base.clone();
        set(&mut root, key, value);
        let msg = import(&root);
        assert!(msg.contains(want), "{key}: {msg}");
        assert!(msg.contains("flame2023.pkl"), "{msg}");
    }
    let npz = import_flame_pickle_bytes(b"PK\x03\x04rest", "m.npz", &ImportOptions::default());
    let msg = npz.map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("zip archive"), "{msg}");
    let msg = import(&PickleValue::List(vec![]));
    assert!(
        msg.contains("the pickle holds a list, not a dictionary"),
        "{msg}"
    );
    // Without any skeleton the model is shape-only and `posedirs` is dropped with a note.
    let mut root = base.clone();
    for k in ["J_regressor", "weights", "kintree_table"] {
        set(&mut root, k, None);
    }
    let (m, report) = import_flame_dict(&root, &info, "x.pkl", &ImportOptions::default()).unwrap();
    assert!(m.skeleton.is_none() && m.pose_correctives.is_none());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("`posedirs` is ignored"))
    );
    // Few columns and no expressiondirs: identity only, explained.
    let mut root = base;
    set(&mut root, "shapedirs", Some(f64_array(&[6, 3, 20], 0.001)));
    let (m, report) = import_flame_dict(&root, &info, "x.pkl", &ImportOptions::default()).unwrap();
    assert_eq!((m.num_identity(), m.num_expression()), (20, 0));
    assert!(
        report.notes[0].contains("all are read as identity"),
        "{:?}",
        report.notes
    );
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("visage-pickle-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn convert_writes_a_loadable_model_atomically() {
    let dir = temp_dir("convert");
    let out = dir.join("flame2020.safetensors");
    let input = fixtures().join("flame2020_py2.pkl");
    let report = convert_flame_file(&input, &out).unwrap();
    assert_eq!(report.output.as_deref(), Some(out.as_path()));
    assert_eq!(
        report.output_bytes,
        Some(std::fs::metadata(&out).unwrap().len())
    );
    let loaded = FlameModel::load(&out).unwrap();
    let (imported, _) = import_flame_pickle(&input, &ImportOptions::default()).unwrap();
    assert_eq!(loaded, imported);
    let text = report.to_string();
    assert!(text.contains("FLAME 2020 (from the file name)"), "{text}");
    assert!(text.contains("300 identity + 100 expression"), "{text}");

    // Failures leave nothing behind.
    let bad_out = dir.join("evil.safetensors");
    let err =
        convert_flame_file(&fixtures().join("malicious_flame_popen.pkl"), &bad_out).unwrap_err();
    assert!(matches!(err, ImportError::Pickle { .. }), "{err}");
    assert!(!bad_out.exists());
    let err =
        convert_flame_file(Path::new("/nonexistent/generic_model.pkl"), &bad_out).unwrap_err();
    assert!(
        err.to_string()
            .contains("could not read `/nonexistent/generic_model.pkl`"),
        "{err}"
    );
    let err = convert_flame_file(&input, &dir.join("missing-dir/out.safetensors")).unwrap_err();
    assert!(matches!(err, ImportError::Model(_)), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("flame2020.safetensors")]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

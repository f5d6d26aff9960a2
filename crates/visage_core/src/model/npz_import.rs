//! Import of FLAME models stored as NumPy `.npz` archives (e.g. the FLAME 2023 Open subset, or a
//! full model re-saved with `numpy.savez`).
//!
//! The archive's arrays are read with candle's `.npz` reader and handed to the same mapping as
//! official `.pkl` files ([`super::import::import_flame_dict`]), so key names, the
//! identity/expression split, the skeleton and every check are shared: `v_template`, `f` or
//! `faces`, `shapedirs`, optional `expressiondirs`, `posedirs`, `J_regressor` (dense here),
//! `weights` and `kintree_table`.

use std::path::Path;

use candle_core::{DType, Tensor};

use super::FlameModel;
use super::import::{ImportError, ImportOptions, ImportReport, import_flame_dict};
use crate::pickle::{ArrayData, NdArray, PickleInfo, PickleValue};

/// FLAME's joint names, in FLAME's order.
pub const FLAME_JOINT_NAMES: [&str; 5] = ["root", "neck", "jaw", "eye_left", "eye_right"];

/// Reads a FLAME `.npz` archive into a model, with the same options and report as `.pkl`
/// import.
pub fn import_flame_npz(
    path: &Path,
    options: &ImportOptions,
) -> Result<(FlameModel, ImportReport), ImportError> {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let not_flame = |detail: String| ImportError::NotFlame {
        path: name.clone(),
        detail,
    };
    if !path.is_file() {
        return Err(ImportError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the file does not exist"),
        });
    }
    let arrays = Tensor::read_npz(path)
        .map_err(|e| not_flame(format!("it is not a readable NumPy .npz archive ({e})")))?;
    let mut items = Vec::with_capacity(arrays.len());
    for (key, tensor) in arrays {
        let shape = tensor.dims().to_vec();
        let flat = tensor.flatten_all();
        let data = match tensor.dtype() {
            DType::F16 | DType::BF16 | DType::F32 => flat
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_vec1::<f32>())
                .map(ArrayData::F32),
            DType::F64 => flat.and_then(|t| t.to_vec1::<f64>()).map(ArrayData::F64),
            _ => flat
                .and_then(|t| t.to_dtype(DType::I64))
                .and_then(|t| t.to_vec1::<i64>())
                .map(ArrayData::I64),
        }
        .map_err(|e| not_flame(format!("array `{key}` cannot be read ({e})")))?;
        items.push((
            PickleValue::Str(key),
            PickleValue::Array(NdArray { shape, data }),
        ));
    }
    let (model, mut report) = import_flame_dict(
        &PickleValue::Dict(items),
        &PickleInfo::default(),
        &name,
        options,
    )?;
    report.from_npz = true;
    Ok((model, report))
}

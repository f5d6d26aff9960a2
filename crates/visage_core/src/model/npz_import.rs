//! Import of FLAME models stored as NumPy `.npz` archives (e.g. the FLAME 2023 Open subset
//! this project ships, or a full model re-saved with `numpy.savez`).
//!
//! Recognised arrays (FLAME key names): `v_template` [V, 3], `faces` or `f` [F, 3],
//! `shapedirs` [V, 3, K] (identity, or identity + expression when `num_identity` splits it),
//! optional `expressiondirs` [V, 3, K], `posedirs` [V, 3, 36], `J_regressor` [5, V] (dense),
//! `weights` [V, 5], `kintree_table` [2, 5].

use std::path::Path;

use candle_core::{DType, Tensor};

use super::{Basis, FlameModel, ModelError, ModelMeta, Skeleton};

/// FLAME's joint names, in FLAME's order.
pub const FLAME_JOINT_NAMES: [&str; 5] = ["root", "neck", "jaw", "eye_left", "eye_right"];

fn err(path: &Path, detail: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

/// Reads a FLAME `.npz` archive. `num_identity` splits `shapedirs` into identity and expression
/// components (FLAME 2020/2023 use 300 identity + 100 expression); `None` keeps every
/// `shapedirs` column as identity.
pub fn import_flame_npz(
    path: &Path,
    num_identity: Option<usize>,
    meta: ModelMeta,
) -> Result<FlameModel, ModelError> {
    if !path.exists() {
        return Err(ModelError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the file does not exist"),
        });
    }
    let arrays = Tensor::read_npz(path).map_err(|e| ModelError::NotSafetensors {
        path: path.display().to_string(),
        detail: format!("not a readable .npz archive: {e}"),
    })?;
    let get = |names: &[&str]| -> Option<&Tensor> {
        arrays
            .iter()
            .find(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, t)| t)
    };
    let floats = |t: &Tensor, name: &str| -> Result<Vec<f32>, ModelError> {
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| {
                err(
                    path,
                    format!("array `{name}` cannot be read as numbers: {e}"),
                )
            })
    };
    let ints = |t: &Tensor, name: &str| -> Result<Vec<i64>, ModelError> {
        t.to_dtype(DType::I64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<i64>())
            .map_err(|e| {
                err(
                    path,
                    format!("array `{name}` cannot be read as integers: {e}"),
                )
            })
    };

    let vt = get(&["v_template"]).ok_or_else(|| err(path, "it has no `v_template` array"))?;
    let dims = vt.dims().to_vec();
    if dims.len() != 2 || dims[1] != 3 {
        return Err(err(
            path,
            format!("`v_template` has shape {dims:?}, expected [V, 3]"),
        ));
    }
    let nv = dims[0];
    let template: Vec<[f32; 3]> = floats(vt, "v_template")?
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    let ft = get(&["faces", "f"]).ok_or_else(|| err(path, "it has no `faces` (or `f`) array"))?;
    if ft.dims().len() != 2 || ft.dims()[1] != 3 {
        return Err(err(
            path,
            format!("`faces` has shape {:?}, expected [F, 3]", ft.dims()),
        ));
    }
    let faces = ints(ft, "faces")?;
    if faces.iter().any(|&i| i < 0 || i as usize >= nv) {
        return Err(err(
            path,
            format!("`faces` refers to vertices outside 0..{nv}"),
        ));
    }
    let triangles = faces
        .chunks_exact(3)
        .map(|t| [t[0] as u32, t[1] as u32, t[2] as u32])
        .collect();

    // [V, 3, K] → component-major [K][V][3].
    let basis =
        |name: &str, t: &Tensor, from: usize, to: Option<usize>| -> Result<Basis, ModelError> {
            let d = t.dims();
            if d.len() != 3 || d[0] != nv || d[1] != 3 {
                return Err(err(
                    path,
                    format!("`{name}` has shape {d:?}, expected [{nv}, 3, K]"),
                ));
            }
            let k_all = d[2];
            let to = to.unwrap_or(k_all).min(k_all);
            let src = floats(t, name)?;
            let k = to.saturating_sub(from);
            let mut deltas = vec![0.0f32; k * nv * 3];
            for v in 0..nv {
                for c in 0..3 {
                    let row = &src[(v * 3 + c) * k_all..(v * 3 + c + 1) * k_all];
                    for (kk, &x) in row[from..to].iter().enumerate() {
                        deltas[(kk * nv + v) * 3 + c] = x;
                    }
                }
            }
            Ok(Basis {
                names: Vec::new(),
                deltas,
            })
        };

    let (identity, mut expression) = match get(&["shapedirs"]) {
        None => (Basis::default(), Basis::default()),
        Some(sd) => match num_identity {
            None => (basis("shapedirs", sd, 0, None)?, Basis::default()),
            Some(n) => (
                basis("shapedirs", sd, 0, Some(n))?,
                basis("shapedirs", sd, n, None)?,
            ),
        },
    };
    if let Some(ed) = get(&["expressiondirs"]) {
        expression = basis("expressiondirs", ed, 0, None)?;
    }
    let ne = expression.count(nv);
    expression.names = (0..ne).map(|i| format!("exp{i:03}")).collect();
    let pose_correctives = match get(&["posedirs"]) {
        Some(p) => Some(basis("posedirs", p, 0, None)?),
        None => None,
    };
    let skeleton = match (get(&["J_regressor"]), get(&["weights"])) {
        (Some(j), Some(w)) => {
            if j.dims() != [5, nv] || w.dims() != [nv, 5] {
                return Err(err(
                    path,
                    format!(
                        "`J_regressor` {:?} / `weights` {:?} do not match [5, {nv}] / [{nv}, 5]",
                        j.dims(),
                        w.dims()
                    ),
                ));
            }
            let parents = match get(&["kintree_table"]) {
                Some(k) => {
                    let k = ints(k, "kintree_table")?;
                    k[..5]
                        .iter()
                        .enumerate()
                        .map(|(i, &p)| if i == 0 { -1 } else { p as i32 })
                        .collect()
                }
                None => vec![-1, 0, 1, 1, 1],
            };
            Some(Skeleton {
                names: FLAME_JOINT_NAMES.iter().map(|s| s.to_string()).collect(),
                parents,
                regressor: floats(j, "J_regressor")?,
                weights: floats(w, "weights")?,
            })
        }
        _ => None,
    };
    let model = FlameModel {
        meta,
        template,
        triangles,
        identity,
        expression,
        pose_correctives,
        skeleton,
        ..FlameModel::default()
    };
    model.validate(&path.display().to_string())?;
    Ok(model)
}

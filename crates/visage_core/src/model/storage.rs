//! Visage's head-model file format: a [safetensors] file with a JSON metadata header.
//!
//! Format version 1. All floating-point tensors are little-endian `F32`, all index tensors
//! `U32` (except `joint_parents`, `I32`). `V` = vertices, `F` = triangles, `J` = joints (5).
//!
//! | tensor | dtype | shape | content |
//! |---|---|---|---|
//! | `template` | F32 | `[V, 3]` | mean head, metres |
//! | `triangles` | U32 | `[F, 3]` | vertex indices, counter-clockwise from outside |
//! | `identity` | F32 | `[K, V, 3]` | identity basis, unit-σ (absent when K = 0) |
//! | `expression` | F32 | `[K, V, 3]` | expression basis (absent when K = 0) |
//! | `detail` | F32 | `[K, V, 3]` | optional detail identity basis |
//! | `pose_correctives` | F32 | `[36, V, 3]` | optional FLAME pose correctives |
//! | `joint_regressor` | F32 | `[J, V]` | optional skeleton: joints from vertices |
//! | `joint_parents` | I32 | `[J]` | kinematic tree, −1 for the root |
//! | `skinning_weights` | F32 | `[V, J]` | linear-blend-skinning weights |
//! | `lmk68_static_faces` / `_bary` | U32 / F32 | `[51]` / `[51, 3]` | iBUG points 17–67 |
//! | `lmk68_dynamic_faces` / `_bary` | U32 / F32 | `[B, 17]` / `[B, 17, 3]` | jaw contour per yaw bin |
//! | `lmk_mp_faces` / `lmk_mp_bary` | U32 / F32 | `[N]` / `[N, 3]` | MediaPipe 468-point embedding |
//! | `uv_coords` / `uv_faces` | F32 / U32 | `[T, 2]` / `[F, 3]` | UV layout with per-corner indices |
//! | `region.<name>` | U32 | `[n]` | vertices of a named region |
//! | `symmetry` | U32 | `[V]` | mirror vertex of each vertex |
//!
//! Metadata (all values strings): `format` = `visage-flame`, `format_version` = `1`, `name`,
//! `units` (= `metres`), `licence`, `source`, `changes`, `extra` (JSON object of strings),
//! and JSON lists `identity_names`, `expression_names`, `detail_names`, `joint_names`,
//! `regions` (region names in order).
//!
//! Files are read through a memory map and written atomically (temporary file, then rename),
//! so a failed save never leaves a half-written model behind.
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{
    BaryLandmarks, Basis, FlameModel, Landmarks68, ModelError, ModelMeta, Region, Skeleton,
    UvLayout,
};

/// The `format` metadata value of a Visage head model.
pub const FORMAT_NAME: &str = "visage-flame";
/// The storage format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

impl FlameModel {
    /// Loads a model from a Visage safetensors file (memory-mapped) and validates it.
    pub fn load(path: impl AsRef<Path>) -> Result<FlameModel, ModelError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io = |source| ModelError::Io {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and only lives for this call; the data is copied out.
        // A file truncated concurrently by another process could fault, as with any mmap reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_bytes_named(&map, &shown)
    }

    /// Parses a model from the bytes of a Visage safetensors file and validates it.
    pub fn from_bytes(bytes: &[u8]) -> Result<FlameModel, ModelError> {
        Self::from_bytes_named(bytes, "<memory>")
    }

    fn from_bytes_named(bytes: &[u8], origin: &str) -> Result<FlameModel, ModelError> {
        let not_st = |e: safetensors::SafeTensorError| ModelError::NotSafetensors {
            path: origin.to_string(),
            detail: e.to_string(),
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_st)?;
        let st = SafeTensors::deserialize(bytes).map_err(not_st)?;
        let empty = HashMap::new();
        let md = header.metadata().as_ref().unwrap_or(&empty);
        let wrong = |detail: String| ModelError::WrongFormat {
            path: origin.to_string(),
            detail,
        };
        match md.get("format").map(String::as_str) {
            Some(FORMAT_NAME) => {}
            Some(other) => {
                return Err(wrong(format!(
                    "its metadata says format `{other}`, expected `{FORMAT_NAME}`"
                )));
            }
            None => {
                return Err(wrong(
                    "it has no `format` metadata (official FLAME `.pkl` files must first be \
                     converted with `visage convert-flame`)"
                        .into(),
                ));
            }
        }
        let version: u32 = md
            .get("format_version")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                wrong("its `format_version` metadata is missing or not a number".into())
            })?;
        if version > FORMAT_VERSION {
            return Err(wrong(format!(
                "it was written in format version {version}; this build of Visage reads up to \
                 version {FORMAT_VERSION} — update Visage"
            )));
        }
        let r = Reader { st: &st, origin };
        let list = |key: &str| -> Result<Vec<String>, ModelError> {
            match md.get(key) {
                None => Ok(Vec::new()),
                Some(s) => serde_json::from_str(s).map_err(|e| {
                    r.invalid(format!(
                        "metadata `{key}` is not a JSON list of strings: {e}"
                    ))
                }),
            }
        };
        let extra: BTreeMap<String, String> = match md.get("extra") {
            None => BTreeMap::new(),
            Some(s) => serde_json::from_str(s).map_err(|e| {
                r.invalid(format!(
                    "metadata `extra` is not a JSON object of strings: {e}"
                ))
            })?,
        };
        let meta = ModelMeta {
            name: md.get("name").cloned().unwrap_or_default(),
            format_version: version,
            units: md.get("units").cloned().unwrap_or_else(|| "metres".into()),
            licence: md.get("licence").cloned().unwrap_or_default(),
            source: md.get("source").cloned().unwrap_or_default(),
            changes: md.get("changes").cloned().unwrap_or_default(),
            extra,
        };
        if meta.units != "metres" {
            return Err(r.invalid(format!(
                "units are `{}`; Visage models are in metres",
                meta.units
            )));
        }

        let template = r.vec3("template", None)?;
        let nv = template.len();
        let triangles = r.idx3("triangles", None)?;
        let basis = |key: &str, names: Vec<String>| -> Result<Option<Basis>, ModelError> {
            Ok(r.floats_opt(key, 3, &[None, Some(nv), Some(3)])?
                .map(|deltas| Basis { names, deltas }))
        };
        let identity = basis("identity", list("identity_names")?)?.unwrap_or_default();
        let expression = basis("expression", list("expression_names")?)?.unwrap_or_default();
        let detail = basis("detail", list("detail_names")?)?;
        let pose_correctives = basis("pose_correctives", Vec::new())?;

        let skeleton = match r.floats_opt("joint_regressor", 2, &[None, Some(nv)])? {
            None => None,
            Some(regressor) => {
                let nj = regressor.len() / nv.max(1);
                let parents = r.ints("joint_parents", &[Some(nj)])?;
                let weights = r.floats("skinning_weights", &[Some(nv), Some(nj)])?;
                let names = list("joint_names")?;
                Some(Skeleton {
                    names,
                    parents,
                    regressor,
                    weights,
                })
            }
        };

        let landmarks68 = match r.idx_opt("lmk68_static_faces", &[None])? {
            None => None,
            Some(sf) => {
                let n = sf.len();
                let sb = r.floats("lmk68_static_bary", &[Some(n), Some(3)])?;
                let df = r.idx("lmk68_dynamic_faces", &[None, Some(17)])?;
                let db = r.floats(
                    "lmk68_dynamic_bary",
                    &[Some(df.len() / 17), Some(17), Some(3)],
                )?;
                Some(Landmarks68 {
                    static_points: BaryLandmarks {
                        faces: sf,
                        bary: to3(&sb),
                    },
                    dynamic: BaryLandmarks {
                        faces: df,
                        bary: to3(&db),
                    },
                })
            }
        };
        let landmarks_mp = match r.idx_opt("lmk_mp_faces", &[None])? {
            None => None,
            Some(faces) => {
                let b = r.floats("lmk_mp_bary", &[Some(faces.len()), Some(3)])?;
                Some(BaryLandmarks {
                    faces,
                    bary: to3(&b),
                })
            }
        };
        let uv = match r.floats_opt("uv_coords", 2, &[None, Some(2)])? {
            None => None,
            Some(c) => Some(UvLayout {
                coords: c.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
                faces: r.idx3("uv_faces", Some(triangles.len()))?,
            }),
        };
        let mut regions = Vec::new();
        for name in list("regions")? {
            let vertices = r.idx(&format!("region.{name}"), &[None])?;
            regions.push(Region { name, vertices });
        }
        let symmetry = r.idx_opt("symmetry", &[Some(nv)])?;

        let model = FlameModel {
            meta,
            template,
            triangles,
            identity,
            expression,
            detail,
            pose_correctives,
            skeleton,
            landmarks68,
            landmarks_mp,
            uv,
            regions,
            symmetry,
        };
        model.validate(origin)?;
        Ok(model)
    }

    /// Serialises the model into the bytes of a Visage safetensors file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        self.validate("<memory>")?;
        let nv = self.num_vertices();
        let mut w = Writer::default();
        w.f32(
            "template",
            vec![nv, 3],
            self.template.iter().flatten().copied(),
        );
        w.u32(
            "triangles",
            vec![self.num_triangles(), 3],
            self.triangles.iter().flatten().copied(),
        );
        let mut md: HashMap<String, String> = HashMap::new();
        let json = |v: &Vec<String>| serde_json::to_string(v).expect("strings serialise");
        for (key, basis) in [
            ("identity", Some(&self.identity)),
            ("expression", Some(&self.expression)),
            ("detail", self.detail.as_ref()),
            ("pose_correctives", self.pose_correctives.as_ref()),
        ] {
            let Some(b) = basis else { continue };
            let k = b.count(nv);
            if k > 0 {
                w.f32(key, vec![k, nv, 3], b.deltas.iter().copied());
            }
            if !b.names.is_empty() {
                md.insert(format!("{key}_names"), json(&b.names));
            }
        }
        if let Some(s) = &self.skeleton {
            let nj = s.num_joints();
            w.f32("joint_regressor", vec![nj, nv], s.regressor.iter().copied());
            w.i32("joint_parents", vec![nj], s.parents.iter().copied());
            w.f32("skinning_weights", vec![nv, nj], s.weights.iter().copied());
            md.insert("joint_names".into(), json(&s.names));
        }
        if let Some(l) = &self.landmarks68 {
            let n = l.static_points.len();
            w.u32(
                "lmk68_static_faces",
                vec![n],
                l.static_points.faces.iter().copied(),
            );
            w.f32(
                "lmk68_static_bary",
                vec![n, 3],
                l.static_points.bary.iter().flatten().copied(),
            );
            let b = l.num_bins();
            w.u32(
                "lmk68_dynamic_faces",
                vec![b, 17],
                l.dynamic.faces.iter().copied(),
            );
            w.f32(
                "lmk68_dynamic_bary",
                vec![b, 17, 3],
                l.dynamic.bary.iter().flatten().copied(),
            );
        }
        if let Some(l) = &self.landmarks_mp {
            w.u32("lmk_mp_faces", vec![l.len()], l.faces.iter().copied());
            w.f32(
                "lmk_mp_bary",
                vec![l.len(), 3],
                l.bary.iter().flatten().copied(),
            );
        }
        if let Some(uv) = &self.uv {
            w.f32(
                "uv_coords",
                vec![uv.coords.len(), 2],
                uv.coords.iter().flatten().copied(),
            );
            w.u32(
                "uv_faces",
                vec![uv.faces.len(), 3],
                uv.faces.iter().flatten().copied(),
            );
        }
        for r in &self.regions {
            w.u32(
                &format!("region.{}", r.name),
                vec![r.vertices.len()],
                r.vertices.iter().copied(),
            );
        }
        if !self.regions.is_empty() {
            md.insert(
                "regions".into(),
                json(&self.regions.iter().map(|r| r.name.clone()).collect()),
            );
        }
        if let Some(s) = &self.symmetry {
            w.u32("symmetry", vec![nv], s.iter().copied());
        }
        md.insert("format".into(), FORMAT_NAME.into());
        md.insert("format_version".into(), FORMAT_VERSION.to_string());
        md.insert("name".into(), self.meta.name.clone());
        md.insert("units".into(), "metres".into());
        md.insert("licence".into(), self.meta.licence.clone());
        md.insert("source".into(), self.meta.source.clone());
        md.insert("changes".into(), self.meta.changes.clone());
        md.insert(
            "extra".into(),
            serde_json::to_string(&self.meta.extra).expect("strings serialise"),
        );
        let views = w
            .tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                (
                    name.clone(),
                    TensorView::new(*dtype, shape.clone(), data).expect("sizes match"),
                )
            })
            .collect::<Vec<_>>();
        let bytes = safetensors::serialize(views, Some(md)).map_err(|e| ModelError::Invalid {
            path: "<memory>".into(),
            detail: format!("could not serialise: {e}"),
        })?;
        Ok(canonical_header(bytes))
    }

    /// Writes the model atomically: a temporary file next to `path`, flushed, then renamed.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        write_atomically(path, &bytes).map_err(|source| ModelError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so
/// readers never see a partial file and a failure leaves no file behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Rewrites the JSON header with its keys sorted (padded with spaces to the same length), so
/// that saving the same model twice gives identical bytes whatever order the metadata map
/// iterated in.
fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length prefix")) as usize;
    // serde_json's map type is ordered, so a parse and re-encode sorts every object's keys.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n]) else {
        return bytes;
    };
    let Ok(mut text) = serde_json::to_vec(&value) else {
        return bytes;
    };
    if text.len() > n {
        return bytes;
    }
    text.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&text);
    bytes
}

fn to3(v: &[f32]) -> Vec<[f32; 3]> {
    v.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect()
}

#[derive(Default)]
struct Writer {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
}

impl Writer {
    fn f32(&mut self, name: &str, shape: Vec<usize>, data: impl Iterator<Item = f32>) {
        let bytes = data.flat_map(f32::to_le_bytes).collect();
        self.tensors.push((name.into(), Dtype::F32, shape, bytes));
    }
    fn u32(&mut self, name: &str, shape: Vec<usize>, data: impl Iterator<Item = u32>) {
        let bytes = data.flat_map(u32::to_le_bytes).collect();
        self.tensors.push((name.into(), Dtype::U32, shape, bytes));
    }
    fn i32(&mut self, name: &str, shape: Vec<usize>, data: impl Iterator<Item = i32>) {
        let bytes = data.flat_map(i32::to_le_bytes).collect();
        self.tensors.push((name.into(), Dtype::I32, shape, bytes));
    }
}

struct Reader<'a, 'b> {
    st: &'a SafeTensors<'b>,
    origin: &'a str,
}

impl Reader<'_, '_> {
    fn invalid(&self, detail: String) -> ModelError {
        ModelError::Invalid {
            path: self.origin.to_string(),
            detail,
        }
    }

    fn view(
        &self,
        name: &str,
        dtypes: &[Dtype],
        shape: &[Option<usize>],
    ) -> Result<Option<TensorView<'_>>, ModelError> {
        let Ok(v) = self.st.tensor(name) else {
            return Ok(None);
        };
        if !dtypes.contains(&v.dtype()) {
            return Err(self.invalid(format!(
                "tensor `{name}` has dtype {:?}, expected {:?}",
                v.dtype(),
                dtypes[0]
            )));
        }
        let ok = v.shape().len() == shape.len()
            && v.shape()
                .iter()
                .zip(shape)
                .all(|(&a, e)| e.is_none_or(|e| e == a));
        if !ok {
            let want: Vec<String> = shape
                .iter()
                .map(|e| e.map_or("any".to_string(), |e| e.to_string()))
                .collect();
            return Err(self.invalid(format!(
                "tensor `{name}` has shape {:?}, expected [{}]",
                v.shape(),
                want.join(", ")
            )));
        }
        Ok(Some(v))
    }

    fn floats_opt(
        &self,
        name: &str,
        _rank: usize,
        shape: &[Option<usize>],
    ) -> Result<Option<Vec<f32>>, ModelError> {
        Ok(self.view(name, &[Dtype::F32], shape)?.map(|v| {
            v.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }))
    }

    fn floats(&self, name: &str, shape: &[Option<usize>]) -> Result<Vec<f32>, ModelError> {
        self.floats_opt(name, shape.len(), shape)?
            .ok_or_else(|| self.invalid(format!("tensor `{name}` is missing")))
    }

    fn idx_opt(&self, name: &str, shape: &[Option<usize>]) -> Result<Option<Vec<u32>>, ModelError> {
        Ok(self.view(name, &[Dtype::U32, Dtype::I32], shape)?.map(|v| {
            v.data()
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }))
    }

    fn idx(&self, name: &str, shape: &[Option<usize>]) -> Result<Vec<u32>, ModelError> {
        self.idx_opt(name, shape)?
            .ok_or_else(|| self.invalid(format!("tensor `{name}` is missing")))
    }

    fn ints(&self, name: &str, shape: &[Option<usize>]) -> Result<Vec<i32>, ModelError> {
        let v = self
            .view(name, &[Dtype::I32], shape)?
            .ok_or_else(|| self.invalid(format!("tensor `{name}` is missing")))?;
        Ok(v.data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn vec3(&self, name: &str, n: Option<usize>) -> Result<Vec<[f32; 3]>, ModelError> {
        Ok(to3(&self.floats(name, &[n, Some(3)])?))
    }

    fn idx3(&self, name: &str, n: Option<usize>) -> Result<Vec<[u32; 3]>, ModelError> {
        Ok(self
            .idx(name, &[n, Some(3)])?
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]])
            .collect())
    }
}

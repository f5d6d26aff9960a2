//! Readers for the third-party inputs of the open head model (see `docs/model.md`):
//! FLAME 2023 Open, ICT-FaceKit, the RingNet 68-point embedding and MediaPipe's canonical face.

use std::path::Path;

use super::BuildError;
use super::mesh::{V3, dist};
use super::npy::Npz;

/// FLAME 2023 Open: template, triangles, identity basis.
#[derive(Debug, Clone)]
pub struct FlameSource {
    /// Template vertices in metres.
    pub template: Vec<V3>,
    /// Triangles.
    pub triangles: Vec<[u32; 3]>,
    /// Identity components, `[K][V][3]`, metres per unit σ.
    pub identity: Vec<f32>,
    /// Number of identity components.
    pub num_identity: usize,
}

/// The ICT-FaceKit head (converted to metres).
#[derive(Debug, Clone)]
pub struct IctSource {
    /// Neutral vertices in metres.
    pub neutral: Vec<V3>,
    /// Triangles (quads split along their shorter diagonal).
    pub triangles: Vec<[u32; 3]>,
    /// Expression names (ICT's ARKit-style names).
    pub expression_names: Vec<String>,
    /// Expression deltas, `[K][V]`, metres per unit weight.
    pub expressions: Vec<Vec<V3>>,
    /// Identity deltas, `[K][V]`, metres per unit σ.
    pub identity: Vec<Vec<V3>>,
    /// The 68 Multi-PIE landmark vertices.
    pub landmarks68: Vec<u32>,
    /// Number of quads that were split.
    pub quads_split: usize,
}

/// The RingNet FLAME 68-point embedding.
#[derive(Debug, Clone)]
pub struct RingnetEmbedding {
    /// Triangles of iBUG points 17–67.
    pub static_faces: Vec<u32>,
    /// Barycentric coordinates of iBUG points 17–67.
    pub static_bary: Vec<V3>,
    /// Contour triangles, `[bins][17]`, as stored in the file.
    pub dynamic_faces: Vec<[u32; 17]>,
    /// Contour barycentric coordinates, `[bins][17]`, as stored in the file.
    pub dynamic_bary: Vec<[V3; 17]>,
}

/// MediaPipe's canonical face mesh (468 vertices, centimetres as stored).
#[derive(Debug, Clone)]
pub struct MediapipeCanonical {
    /// Vertex positions as stored (centimetres).
    pub vertices: Vec<V3>,
    /// Triangles.
    pub triangles: Vec<[u32; 3]>,
}

fn bad(path: &Path, detail: impl Into<String>) -> BuildError {
    BuildError::BadInput {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

fn expect_shape(
    path: &Path,
    name: &str,
    shape: &[usize],
    want: &[Option<usize>],
) -> Result<(), BuildError> {
    let ok = shape.len() == want.len()
        && shape
            .iter()
            .zip(want)
            .all(|(s, w)| w.is_none_or(|w| w == *s));
    if ok {
        Ok(())
    } else {
        Err(bad(
            path,
            format!("array `{name}` has shape {shape:?}, expected {want:?}"),
        ))
    }
}

fn to_v3(data: &[f64], scale: f64) -> Vec<V3> {
    data.chunks_exact(3)
        .map(|c| [c[0] * scale, c[1] * scale, c[2] * scale])
        .collect()
}

fn to_tris(path: &Path, data: &[i64], nv: usize) -> Result<Vec<[u32; 3]>, BuildError> {
    let mut out = Vec::with_capacity(data.len() / 3);
    for c in data.chunks_exact(3) {
        if c.iter().any(|&i| i < 0 || i as usize >= nv) {
            return Err(bad(
                path,
                format!("a triangle refers to vertex {c:?} outside 0..{nv}"),
            ));
        }
        out.push([c[0] as u32, c[1] as u32, c[2] as u32]);
    }
    Ok(out)
}

/// Reads `flame2023_open/flame2023_open_subset.npz`.
pub fn read_flame(path: &Path) -> Result<FlameSource, BuildError> {
    let mut z = Npz::open(path)?;
    let v = z.f64("v_template")?;
    expect_shape(path, "v_template", &v.shape, &[None, Some(3)])?;
    let nv = v.shape[0];
    let f = z.i64("faces")?;
    expect_shape(path, "faces", &f.shape, &[None, Some(3)])?;
    let sd = z.f64("shapedirs")?;
    expect_shape(path, "shapedirs", &sd.shape, &[Some(nv), Some(3), None])?;
    let k = sd.shape[2];
    // (V, 3, K) → (K, V, 3).
    let mut identity = vec![0f32; k * nv * 3];
    for vi in 0..nv {
        for c in 0..3 {
            for ki in 0..k {
                identity[(ki * nv + vi) * 3 + c] = sd.data[(vi * 3 + c) * k + ki] as f32;
            }
        }
    }
    let template = to_v3(&v.data, 1.0);
    if template.iter().flatten().any(|x| !x.is_finite()) {
        return Err(bad(path, "the template has non-finite coordinates"));
    }
    Ok(FlameSource {
        triangles: to_tris(path, &f.data, nv)?,
        template,
        identity,
        num_identity: k,
    })
}

/// Reads `ict_facekit/ict_facekit_subset.npz` and `expression_names.json` (converting
/// centimetres to metres).
pub fn read_ict(path: &Path, names_path: &Path) -> Result<IctSource, BuildError> {
    const CM: f64 = 0.01;
    let mut z = Npz::open(path)?;
    let n = z.f64("neutral")?;
    expect_shape(path, "neutral", &n.shape, &[None, Some(3)])?;
    let nv = n.shape[0];
    let neutral = to_v3(&n.data, CM);
    let e = z.f64("expression_deltas")?;
    expect_shape(
        path,
        "expression_deltas",
        &e.shape,
        &[None, Some(nv), Some(3)],
    )?;
    let expressions: Vec<Vec<V3>> = e.data.chunks_exact(nv * 3).map(|c| to_v3(c, CM)).collect();
    let id = z.f64("identity_deltas")?;
    expect_shape(
        path,
        "identity_deltas",
        &id.shape,
        &[None, Some(nv), Some(3)],
    )?;
    let identity: Vec<Vec<V3>> = id.data.chunks_exact(nv * 3).map(|c| to_v3(c, CM)).collect();
    let sizes = z.i64("poly_sizes")?;
    let idx = z.i64("poly_indices")?;
    let total: i64 = sizes.data.iter().sum();
    if total as usize != idx.data.len() {
        return Err(bad(
            path,
            "poly_sizes do not add up to the length of poly_indices",
        ));
    }
    if idx.data.iter().any(|&i| i < 0 || i as usize >= nv) {
        return Err(bad(path, "a polygon refers to a vertex outside the mesh"));
    }
    let mut triangles = Vec::new();
    let mut quads_split = 0;
    let mut o = 0usize;
    for &s in &sizes.data {
        let p: Vec<u32> = idx.data[o..o + s as usize]
            .iter()
            .map(|&i| i as u32)
            .collect();
        o += s as usize;
        match p.len() {
            3 => triangles.push([p[0], p[1], p[2]]),
            4 => {
                // Split along the shorter diagonal (ties: 0–2).
                let d02 = dist(neutral[p[0] as usize], neutral[p[2] as usize]);
                let d13 = dist(neutral[p[1] as usize], neutral[p[3] as usize]);
                if d13 < d02 {
                    triangles.push([p[0], p[1], p[3]]);
                    triangles.push([p[1], p[2], p[3]]);
                } else {
                    triangles.push([p[0], p[1], p[2]]);
                    triangles.push([p[0], p[2], p[3]]);
                }
                quads_split += 1;
            }
            k => {
                return Err(bad(
                    path,
                    format!("a polygon has {k} corners; only triangles and quads are supported"),
                ));
            }
        }
    }
    let lm = z.i64("landmarks68")?;
    if lm.data.len() != 68 || lm.data.iter().any(|&i| i < 0 || i as usize >= nv) {
        return Err(bad(path, "`landmarks68` must hold 68 vertex indices"));
    }
    let text = std::fs::read_to_string(names_path).map_err(|e| BuildError::Io {
        path: names_path.display().to_string(),
        source: e,
    })?;
    let expression_names: Vec<String> = serde_json::from_str(&text)
        .map_err(|e| bad(names_path, format!("not a JSON list of names: {e}")))?;
    if expression_names.len() != expressions.len() {
        return Err(bad(
            names_path,
            format!(
                "{} names for {} expression deltas",
                expression_names.len(),
                expressions.len()
            ),
        ));
    }
    Ok(IctSource {
        neutral,
        triangles,
        expression_names,
        expressions,
        identity,
        landmarks68: lm.data.iter().map(|&i| i as u32).collect(),
        quads_split,
    })
}

/// Reads `flame_landmarks_ringnet/flame_landmarks_68.npz`.
pub fn read_ringnet(path: &Path, num_triangles: usize) -> Result<RingnetEmbedding, BuildError> {
    let mut z = Npz::open(path)?;
    let sf = z.i64("static_lmk_faces_idx")?;
    expect_shape(path, "static_lmk_faces_idx", &sf.shape, &[Some(51)])?;
    let sb = z.f64("static_lmk_b_coords")?;
    expect_shape(path, "static_lmk_b_coords", &sb.shape, &[Some(51), Some(3)])?;
    let df = z.i64("dynamic_lmk_faces_idx")?;
    expect_shape(path, "dynamic_lmk_faces_idx", &df.shape, &[None, Some(17)])?;
    let bins = df.shape[0];
    if bins == 0 || bins % 2 == 0 {
        return Err(bad(
            path,
            format!("{bins} contour rows; expected an odd number (one per integer yaw, 0 first)"),
        ));
    }
    let db = z.f64("dynamic_lmk_b_coords")?;
    expect_shape(
        path,
        "dynamic_lmk_b_coords",
        &db.shape,
        &[Some(bins), Some(17), Some(3)],
    )?;
    if sf
        .data
        .iter()
        .chain(&df.data)
        .any(|&f| f < 0 || f as usize >= num_triangles)
    {
        return Err(bad(
            path,
            "a landmark refers to a triangle outside the FLAME mesh",
        ));
    }
    let dynamic_faces = df
        .data
        .chunks_exact(17)
        .map(|c| std::array::from_fn(|i| c[i] as u32))
        .collect();
    let dynamic_bary = db
        .data
        .chunks_exact(51)
        .map(|c| std::array::from_fn(|i| [c[3 * i], c[3 * i + 1], c[3 * i + 2]]))
        .collect();
    Ok(RingnetEmbedding {
        static_faces: sf.data.iter().map(|&f| f as u32).collect(),
        static_bary: to_v3(&sb.data, 1.0),
        dynamic_faces,
        dynamic_bary,
    })
}

/// Reads MediaPipe's `canonical_face_model.obj` (`v` and `f` records; `f` as `v/vt`).
pub fn read_mediapipe(path: &Path) -> Result<MediapipeCanonical, BuildError> {
    let text = std::fs::read_to_string(path).map_err(|e| BuildError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let mut vertices = Vec::new();
    let mut triangles = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("v") => {
                let c: Vec<f64> = it.take(3).filter_map(|s| s.parse().ok()).collect();
                if c.len() != 3 {
                    return Err(bad(
                        path,
                        format!("line {}: a vertex needs three numbers", ln + 1),
                    ));
                }
                vertices.push([c[0], c[1], c[2]]);
            }
            Some("f") => {
                let idx: Vec<u32> = it
                    .filter_map(|s| s.split('/').next()?.parse::<u32>().ok())
                    .collect();
                if idx.len() != 3 || idx.contains(&0) {
                    return Err(bad(
                        path,
                        format!(
                            "line {}: only triangles with 1-based indices are supported",
                            ln + 1
                        ),
                    ));
                }
                triangles.push([idx[0] - 1, idx[1] - 1, idx[2] - 1]);
            }
            _ => {}
        }
    }
    if vertices.len() != 468 {
        return Err(bad(
            path,
            format!("{} vertices; the canonical face has 468", vertices.len()),
        ));
    }
    if triangles
        .iter()
        .flatten()
        .any(|&i| i as usize >= vertices.len())
    {
        return Err(bad(path, "a face refers to a missing vertex"));
    }
    Ok(MediapipeCanonical {
        vertices,
        triangles,
    })
}

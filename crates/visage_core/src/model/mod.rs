//! The FLAME-topology head model: storage, forward pass and landmarks.
//!
//! A [`FlameModel`] holds everything the FLAME formulation needs — template, triangles, identity
//! and expression blendshapes, pose correctives, a five-joint skeleton with skinning weights —
//! plus what Visage adds for games and fitting: landmark embeddings (the FLAME 68-point one and a
//! 468-point MediaPipe one), a UV layout, named vertex regions and a left/right symmetry map.
//!
//! Units are metres. Axes follow FLAME: +y up, +z towards the viewer (out of the face), +x to
//! the subject's left.
//!
//! The on-disk format is described in [`storage`]; the forward pass (blendshapes → joint
//! regression → pose correctives → linear blend skinning) in [`forward`].

use std::collections::BTreeMap;

pub mod forward;
pub mod geometry;
pub mod import;
pub mod landmarks;
pub mod npz_import;
pub mod storage;

pub use forward::{BatchEvaluator, Evaluator, PosedHead};
pub use geometry::{face_areas, vertex_normals};
pub use landmarks::{BaryLandmarks, Landmarks68};

/// Number of joints of a FLAME skeleton: root (global), neck, jaw, left eye, right eye.
pub const NUM_JOINTS: usize = 5;

/// Number of pose-corrective components in FLAME: 4 non-root joints × 9 rotation-matrix entries.
pub const NUM_POSE_CORRECTIVES: usize = 36;

/// Errors from loading, saving or validating a head model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file could not be opened or read.
    #[error("could not read the head model `{path}`: {source}")]
    Io {
        /// Path of the file.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The model file could not be written.
    #[error("could not write the head model to `{path}`: {source}")]
    Write {
        /// Path of the file.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not a safetensors file, or is damaged.
    #[error("`{path}` is not a Visage head model (not a readable safetensors file: {detail})")]
    NotSafetensors {
        /// Path of the file (or `<memory>`).
        path: String,
        /// What the safetensors parser said.
        detail: String,
    },
    /// The file is a safetensors file but not in Visage's head-model format.
    #[error("`{path}` is not a Visage head model: {detail}")]
    WrongFormat {
        /// Path of the file (or `<memory>`).
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A tensor is missing, has the wrong dtype, or a shape inconsistent with the rest.
    #[error("the head model `{path}` is inconsistent: {detail}")]
    Invalid {
        /// Path of the file (or `<memory>`).
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// Provenance and format information stored in the model file's metadata header.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelMeta {
    /// Human-readable model name, e.g. "Visage open head" or "FLAME 2020".
    pub name: String,
    /// Version of Visage's storage format the model was written with.
    pub format_version: u32,
    /// Length unit of all positions; always "metres" for Visage models.
    pub units: String,
    /// Licence of the model data (with use restrictions where they apply).
    pub licence: String,
    /// Where the data comes from (datasets, files, versions).
    pub source: String,
    /// What was changed relative to the sources.
    pub changes: String,
    /// Further key/value information (e.g. registration residuals).
    pub extra: BTreeMap<String, String>,
}

/// A linear blendshape basis over all vertices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Basis {
    /// Component names (empty when the source has none, e.g. FLAME's identity PCA).
    pub names: Vec<String>,
    /// Vertex offsets, component-major: `deltas[(k * V + v) * 3 + c]`, in metres per unit weight.
    pub deltas: Vec<f32>,
}

impl Basis {
    /// Number of components, given the model's vertex count.
    pub fn count(&self, num_vertices: usize) -> usize {
        if num_vertices == 0 {
            0
        } else {
            self.deltas.len() / (num_vertices * 3)
        }
    }

    /// The offsets of component `k` as a `[V * 3]` slice.
    pub fn component(&self, k: usize, num_vertices: usize) -> &[f32] {
        &self.deltas[k * num_vertices * 3..(k + 1) * num_vertices * 3]
    }
}

/// The kinematic skeleton: joints regressed from the shaped mesh, and skinning weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Skeleton {
    /// Joint names, e.g. `root`, `neck`, `jaw`, `eye_left`, `eye_right`.
    pub names: Vec<String>,
    /// Parent of each joint (`-1` for the root); parents precede their children.
    pub parents: Vec<i32>,
    /// Joint regressor, row-major `[J][V]`: joint `j` = Σ_v `regressor[j * V + v]` · vertex `v`.
    pub regressor: Vec<f32>,
    /// Linear-blend-skinning weights, row-major `[V][J]`, each row summing to one.
    pub weights: Vec<f32>,
}

impl Skeleton {
    /// Number of joints.
    pub fn num_joints(&self) -> usize {
        self.parents.len()
    }
}

/// A UV layout with per-corner (wedge) indices, so seams can split vertices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UvLayout {
    /// Texture coordinates in `[0, 1]²`, origin at the image's top-left (`v` grows downwards).
    pub coords: Vec<[f32; 2]>,
    /// For each triangle, the index into `coords` of each of its three corners.
    pub faces: Vec<[u32; 3]>,
}

/// A named set of vertices (e.g. `nose`, `left_eyeball`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Region {
    /// Region name.
    pub name: String,
    /// Vertex indices, sorted ascending.
    pub vertices: Vec<u32>,
}

/// A FLAME-topology head model. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlameModel {
    /// Provenance and format information.
    pub meta: ModelMeta,
    /// Mean head, one position per vertex, in metres.
    pub template: Vec<[f32; 3]>,
    /// Triangles as vertex-index triples (counter-clockwise seen from outside).
    pub triangles: Vec<[u32; 3]>,
    /// Identity (shape) basis, unit-σ components.
    pub identity: Basis,
    /// Expression basis (ARKit-named for the open model; `exp000`… for official FLAME files).
    pub expression: Basis,
    /// FLAME pose correctives: 36 components driven by `R_j − I` of the four non-root joints.
    pub pose_correctives: Option<Basis>,
    /// An optional second identity basis of local detail (e.g. ICT-FaceKit's identity modes
    /// transferred onto FLAME topology), unit-σ components.
    pub detail: Option<Basis>,
    /// Skeleton; `None` for a shape-only model (then only the root rotation applies).
    pub skeleton: Option<Skeleton>,
    /// The FLAME 68-point landmark embedding.
    pub landmarks68: Option<Landmarks68>,
    /// The 468-point MediaPipe FaceMesh embedding (landmark `i` ↔ FaceMesh point `i`).
    pub landmarks_mp: Option<BaryLandmarks>,
    /// UV layout.
    pub uv: Option<UvLayout>,
    /// Named vertex regions.
    pub regions: Vec<Region>,
    /// Mirror vertex of each vertex (left ↔ right).
    pub symmetry: Option<Vec<u32>>,
}

impl FlameModel {
    /// Number of vertices.
    pub fn num_vertices(&self) -> usize {
        self.template.len()
    }

    /// Number of triangles.
    pub fn num_triangles(&self) -> usize {
        self.triangles.len()
    }

    /// Number of identity components.
    pub fn num_identity(&self) -> usize {
        self.identity.count(self.num_vertices())
    }

    /// Number of expression components.
    pub fn num_expression(&self) -> usize {
        self.expression.count(self.num_vertices())
    }

    /// Number of joints (0 for a shape-only model).
    pub fn num_joints(&self) -> usize {
        self.skeleton.as_ref().map_or(0, Skeleton::num_joints)
    }

    /// Looks up a region by name.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Index of the expression component called `name`.
    pub fn expression_index(&self, name: &str) -> Option<usize> {
        self.expression.names.iter().position(|n| n == name)
    }

    /// Checks that every part of the model is consistent with the template and triangles.
    /// `origin` names the model in error messages (a path, or `<memory>`).
    pub fn validate(&self, origin: &str) -> Result<(), ModelError> {
        let bad = |detail: String| ModelError::Invalid {
            path: origin.to_string(),
            detail,
        };
        let nv = self.num_vertices();
        if nv == 0 {
            return Err(bad("the template has no vertices".into()));
        }
        if self.triangles.is_empty() {
            return Err(bad("the model has no triangles".into()));
        }
        if let Some(t) = self
            .triangles
            .iter()
            .find(|t| t.iter().any(|&i| i as usize >= nv))
        {
            return Err(bad(format!(
                "triangle {t:?} refers to a vertex beyond the template's {nv} vertices"
            )));
        }
        if self.template.iter().flatten().any(|x| !x.is_finite()) {
            return Err(bad("the template contains non-finite coordinates".into()));
        }
        for (label, basis) in [
            ("identity", &self.identity),
            ("expression", &self.expression),
        ] {
            check_basis(label, basis, nv).map_err(bad)?;
        }
        if let Some(d) = &self.detail {
            check_basis("detail", d, nv).map_err(bad)?;
        }
        if let Some(p) = &self.pose_correctives {
            check_basis("pose-corrective", p, nv).map_err(bad)?;
            if p.count(nv) != NUM_POSE_CORRECTIVES {
                return Err(bad(format!(
                    "the pose-corrective basis has {} components; FLAME's has {NUM_POSE_CORRECTIVES}",
                    p.count(nv)
                )));
            }
            if self.skeleton.is_none() {
                return Err(bad(
                    "pose correctives are present but the skeleton is not".into()
                ));
            }
        }
        if let Some(s) = &self.skeleton {
            let j = s.num_joints();
            if j != NUM_JOINTS {
                return Err(bad(format!(
                    "the skeleton has {j} joints; FLAME's has {NUM_JOINTS} (root, neck, jaw, eyes)"
                )));
            }
            if s.names.len() != j {
                return Err(bad(format!("{} joint names for {j} joints", s.names.len())));
            }
            for (i, &p) in s.parents.iter().enumerate() {
                if (i == 0 && p != -1) || (i > 0 && (p < 0 || p as usize >= i)) {
                    return Err(bad(format!(
                        "joint {i} has parent {p}; the root must have parent -1 and every other \
                         joint a parent listed before it"
                    )));
                }
            }
            if s.regressor.len() != j * nv {
                return Err(bad(format!(
                    "the joint regressor has {} entries, expected {j} × {nv}",
                    s.regressor.len()
                )));
            }
            if s.weights.len() != j * nv {
                return Err(bad(format!(
                    "the skinning weights have {} entries, expected {nv} × {j}",
                    s.weights.len()
                )));
            }
        }
        if let Some(l) = &self.landmarks68 {
            l.validate(self.num_triangles()).map_err(bad)?;
        }
        if let Some(l) = &self.landmarks_mp {
            l.validate("MediaPipe", self.num_triangles()).map_err(bad)?;
        }
        if let Some(uv) = &self.uv {
            if uv.faces.len() != self.num_triangles() {
                return Err(bad(format!(
                    "the UV layout has {} faces for {} triangles",
                    uv.faces.len(),
                    self.num_triangles()
                )));
            }
            if uv
                .faces
                .iter()
                .flatten()
                .any(|&i| i as usize >= uv.coords.len())
            {
                return Err(bad("a UV face refers to a missing UV coordinate".into()));
            }
        }
        for r in &self.regions {
            if r.vertices.iter().any(|&v| v as usize >= nv) {
                return Err(bad(format!(
                    "region `{}` lists a vertex beyond the template",
                    r.name
                )));
            }
        }
        if let Some(s) = &self.symmetry
            && (s.len() != nv || s.iter().any(|&v| v as usize >= nv))
        {
            return Err(bad(
                "the symmetry map does not map each vertex to a vertex".into()
            ));
        }
        Ok(())
    }
}

fn check_basis(label: &str, basis: &Basis, nv: usize) -> Result<(), String> {
    if !basis.deltas.len().is_multiple_of(nv * 3) {
        return Err(format!(
            "the {label} basis has {} values, not a multiple of {nv} vertices × 3",
            basis.deltas.len()
        ));
    }
    let k = basis.count(nv);
    if !basis.names.is_empty() && basis.names.len() != k {
        return Err(format!(
            "the {label} basis has {k} components but {} names",
            basis.names.len()
        ));
    }
    Ok(())
}

/// Parameters of one head: FLAME coefficients, joint rotations and a similarity transform.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlameParams {
    /// Identity coefficients (unit-σ); may be shorter than the basis (missing ones are zero).
    pub identity: Vec<f32>,
    /// Expression coefficients; may be shorter than the basis.
    pub expression: Vec<f32>,
    /// Axis-angle rotation (radians) of each joint: root, neck, jaw, left eye, right eye.
    pub pose: [[f32; 3]; NUM_JOINTS],
    /// Translation applied after skinning and scaling, in metres.
    pub translation: [f32; 3],
    /// Uniform scale applied after skinning (1 = metres).
    pub scale: f32,
}

impl Default for FlameParams {
    fn default() -> Self {
        Self {
            identity: Vec::new(),
            expression: Vec::new(),
            pose: [[0.0; 3]; NUM_JOINTS],
            translation: [0.0; 3],
            scale: 1.0,
        }
    }
}

impl FlameParams {
    /// Zero coefficients sized for `model`, identity pose, unit scale: the mean head.
    pub fn zeros(model: &FlameModel) -> Self {
        Self {
            identity: vec![0.0; model.num_identity()],
            expression: vec![0.0; model.num_expression()],
            ..Self::default()
        }
    }
}

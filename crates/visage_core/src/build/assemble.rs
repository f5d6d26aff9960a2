//! Assembly of the open head model from the [`Workbench`]: blendshape
//! transfer, metadata, and the [`FlameModel`] itself.

use std::collections::BTreeMap;

use super::mesh::V3;
use super::transfer::{self, EyeMotion};
use super::{BuildError, Workbench};
use crate::model::{Basis, FlameModel, ModelMeta, Region, storage::FORMAT_VERSION};

/// Measurements of the expression transfer.
#[derive(Debug, Clone, Default)]
pub struct TransferReport {
    /// Largest vertex displacement of each expression (metres), in expression order.
    pub max_delta: Vec<(String, f64)>,
    /// Eyeball motion per expression that moves an eye: name, left and right rotation
    /// (degrees) and the RMS of ICT's own deviation from a rigid motion (metres).
    pub eye_motion: Vec<(String, EyeMotion, EyeMotion)>,
    /// Largest ICT deviation from rigid eyeball motion over all expressions (metres).
    pub eye_fit_rms_max: f64,
}

fn to_f32(deltas: &[V3], out: &mut Vec<f32>) {
    for d in deltas {
        out.extend(d.iter().map(|&x| x as f32));
    }
}

/// Transfers the 53 ICT expressions: `[K][V][3]` deltas and a report.
pub fn transfer_expressions(wb: &Workbench, mask: &[f64]) -> (Vec<f32>, TransferReport) {
    let nv = wb.flame.template.len();
    let eyes = transfer::eye_pairs(
        &wb.ict.neutral,
        &wb.ict_is_head,
        &wb.flame.template,
        &wb.topo,
    );
    let mut out = Vec::with_capacity(wb.ict.expressions.len() * nv * 3);
    let mut report = TransferReport::default();
    for (k, name) in wb.ict.expression_names.iter().enumerate() {
        let delta = &wb.ict.expressions[k];
        let mut d = transfer::sample_deltas(
            delta,
            &wb.ict.triangles,
            &wb.samples,
            &wb.similarity,
            Some(mask),
        );
        let motions: Vec<EyeMotion> = eyes
            .iter()
            .map(|e| {
                transfer::transfer_eyeball(
                    e,
                    &wb.ict.neutral,
                    delta,
                    &wb.flame.template,
                    &wb.similarity,
                    false,
                    &mut d,
                )
            })
            .collect();
        if motions.iter().any(|m| m.angle_deg > 0.01) {
            report.eye_fit_rms_max = motions
                .iter()
                .fold(report.eye_fit_rms_max, |a, m| a.max(m.fit_rms));
            report
                .eye_motion
                .push((name.clone(), motions[0], motions[1]));
        }
        let max = d.iter().map(|&x| super::mesh::norm(x)).fold(0.0, f64::max);
        report.max_delta.push((name.clone(), max));
        to_f32(&d, &mut out);
    }
    (out, report)
}

/// Transfers ICT's 100 identity modes (σ-scaled) as the detail basis: `[K][V][3]`, unmasked.
pub fn transfer_detail(wb: &Workbench) -> Vec<f32> {
    let nv = wb.flame.template.len();
    let eyes = transfer::eye_pairs(
        &wb.ict.neutral,
        &wb.ict_is_head,
        &wb.flame.template,
        &wb.topo,
    );
    let mut out = Vec::with_capacity(wb.ict.identity.len() * nv * 3);
    for delta in &wb.ict.identity {
        let mut d =
            transfer::sample_deltas(delta, &wb.ict.triangles, &wb.samples, &wb.similarity, None);
        for e in &eyes {
            transfer::transfer_eyeball(
                e,
                &wb.ict.neutral,
                delta,
                &wb.flame.template,
                &wb.similarity,
                true,
                &mut d,
            );
        }
        to_f32(&d, &mut out);
    }
    out
}

/// Licence line stored in the model.
pub const LICENCE: &str = "CC-BY-4.0 (derived from FLAME 2023 Open, Max Planck Institute for \
Intelligent Systems; the FLAME licence forbids pornographic use and fake, libellous, misleading or \
defamatory content), with parts derived from ICT-FaceKit (MIT, © 2020 USC Institute for Creative \
Technologies), the RingNet FLAME landmark embedding (MIT) and MediaPipe's canonical face \
(Apache-2.0, © The MediaPipe Authors)";

/// Source line stored in the model.
pub const SOURCE: &str = "FLAME 2023 Open (Li, Bolkart, Black, Li, Romero: Learning a model of \
facial shape and expression from 4D scans, SIGGRAPH Asia 2017; flame.is.tue.mpg.de), subset \
flame2023_open_subset.npz; ICT-FaceKit (github.com/ICT-VGL/ICT-FaceKit, FaceXModel); RingNet \
flame_static_embedding.pkl / flame_dynamic_embedding.npy (github.com/soubhiksanyal/RingNet); \
MediaPipe canonical_face_model.obj (github.com/google/mediapipe)";

/// Change summary stored in the model.
pub const CHANGES: &str = "FLAME template, triangles and 60 identity components unchanged \
(float32). Expressions: ICT-FaceKit's 53 blendshapes transferred onto FLAME topology by \
registering the FLAME template onto the ICT neutral head (landmark similarity, then \
Laplacian-regularised closest-point registration) and sampling ICT's deltas barycentrically, \
centimetres converted to metres, masked to zero on scalp, ears and back of the neck; eyeball \
motion transferred as rigid rotations. Detail basis: ICT's 100 identity modes transferred the \
same way. 68-point embedding: RingNet's, contour rows reordered to Visage's yaw convention. \
468-point MediaPipe embedding, joints, skinning weights, regions, UV layout and symmetry map: \
computed by Visage from the geometry (tools: `visage build-model`).";

/// Builds the model's metadata.
pub fn metadata(extra: BTreeMap<String, String>) -> ModelMeta {
    ModelMeta {
        name: "Visage open head (FLAME topology, ARKit expressions)".into(),
        format_version: FORMAT_VERSION,
        units: "metres".into(),
        licence: LICENCE.into(),
        source: SOURCE.into(),
        changes: CHANGES.into(),
        extra,
    }
}

/// Puts the parts together and validates the result.
pub fn assemble(
    wb: &Workbench,
    expression: Vec<f32>,
    detail: Option<Vec<f32>>,
    extra: BTreeMap<String, String>,
) -> Result<FlameModel, BuildError> {
    let model = FlameModel {
        meta: metadata(extra),
        template: wb
            .flame
            .template
            .iter()
            .map(|p| p.map(|x| x as f32))
            .collect(),
        triangles: wb.flame.triangles.clone(),
        identity: Basis {
            names: Vec::new(),
            deltas: wb.flame.identity.clone(),
        },
        expression: Basis {
            names: wb.ict.expression_names.clone(),
            deltas: expression,
        },
        pose_correctives: None,
        detail: detail.map(|deltas| Basis {
            names: (0..wb.ict.identity.len())
                .map(|k| format!("ict_id{k:03}"))
                .collect(),
            deltas,
        }),
        skeleton: None,
        landmarks68: None,
        landmarks_mp: None,
        uv: None,
        regions: wb
            .regions
            .named
            .iter()
            .map(|(name, v)| Region {
                name: name.clone(),
                vertices: v.clone(),
            })
            .collect(),
        symmetry: None,
    };
    model
        .validate("<built model>")
        .map_err(|e| BuildError::Numerical(format!("the assembled model is inconsistent: {e}")))?;
    Ok(model)
}

//! Builds Visage's open head model from third-party sources (see `docs/model.md`).
//!
//! [`build_open_model`] reads the inputs in a data directory (FLAME 2023 Open, ICT-FaceKit,
//! the RingNet 68-point embedding and MediaPipe's canonical face), registers the FLAME template
//! onto the ICT head, transfers ICT's 53 ARKit-named expressions onto FLAME topology, adds
//! joints and skinning, regions, a UV layout, landmark embeddings and a symmetry map, and
//! writes the model file. The build is deterministic: fixed iteration counts, sequential
//! reductions, no hash-map iteration.

pub mod assemble;
pub mod bvh;
pub mod landmarks;
pub mod mesh;
pub mod npy;
pub mod regions;
pub mod register;
pub mod similarity;
pub mod skeleton;
pub mod sources;
pub mod sparse;
pub mod symmetry;
pub mod topology;
pub mod transfer;
pub mod uv;

use std::path::{Path, PathBuf};

use mesh::{V3, bary_point, centroid};
use register::{EmbeddedLandmark, Target};
use topology::{FlameTopology, LipSide, label_opening_sides};

/// Surface distance from the mouth opening within which vertices are labelled upper or lower
/// lip (metres).
pub const LIP_RADIUS: f64 = 0.015;

/// Errors from building the open head model.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An input file is missing.
    #[error(
        "the head-model input `{path}` is missing ({what}); pass the directory that holds \
         flame2023_open/, ict_facekit/, flame_landmarks_ringnet/ and mediapipe/"
    )]
    Missing {
        /// Expected path.
        path: String,
        /// What the file is.
        what: String,
    },
    /// An input file could not be read.
    #[error("could not read `{path}`: {source}")]
    Io {
        /// Path of the file.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// An input file has unexpected content.
    #[error("`{path}` cannot be used to build the head model: {detail}")]
    BadInput {
        /// Path of the file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A mesh does not have the structure the builder relies on.
    #[error("unexpected mesh structure: {0}")]
    Topology(String),
    /// A numerical step failed.
    #[error("the head-model build failed: {0}")]
    Numerical(String),
    /// The model could not be written.
    #[error("could not write the head model: {0}")]
    Save(#[from] crate::model::ModelError),
}

/// Paths of the inputs inside a data directory.
#[derive(Debug, Clone)]
pub struct SourcePaths {
    /// `flame2023_open/flame2023_open_subset.npz`.
    pub flame: PathBuf,
    /// `ict_facekit/ict_facekit_subset.npz`.
    pub ict: PathBuf,
    /// `ict_facekit/expression_names.json`.
    pub ict_names: PathBuf,
    /// `flame_landmarks_ringnet/flame_landmarks_68.npz`.
    pub ringnet: PathBuf,
    /// `mediapipe/canonical_face_model.obj`.
    pub mediapipe: PathBuf,
}

impl SourcePaths {
    /// The standard layout under `data_dir`; checks that every file exists.
    pub fn in_dir(data_dir: &Path) -> Result<Self, BuildError> {
        let p = Self {
            flame: data_dir.join("flame2023_open/flame2023_open_subset.npz"),
            ict: data_dir.join("ict_facekit/ict_facekit_subset.npz"),
            ict_names: data_dir.join("ict_facekit/expression_names.json"),
            ringnet: data_dir.join("flame_landmarks_ringnet/flame_landmarks_68.npz"),
            mediapipe: data_dir.join("mediapipe/canonical_face_model.obj"),
        };
        for (path, what) in [
            (&p.flame, "FLAME 2023 Open template and identity basis"),
            (&p.ict, "ICT-FaceKit head and blendshapes"),
            (&p.ict_names, "ICT-FaceKit expression names"),
            (&p.ringnet, "FLAME 68-point landmark embedding"),
            (&p.mediapipe, "MediaPipe canonical face"),
        ] {
            if !path.is_file() {
                return Err(BuildError::Missing {
                    path: path.display().to_string(),
                    what: what.into(),
                });
            }
        }
        Ok(p)
    }
}

/// Summary statistics of a set of distances (metres).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DistanceStats {
    /// Number of samples.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
    /// Maximum.
    pub max: f64,
}

impl DistanceStats {
    /// Statistics of `d`.
    pub fn of(d: &[f64]) -> Self {
        if d.is_empty() {
            return Self::default();
        }
        let mut s = d.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = ((0.95 * s.len() as f64).ceil() as usize).clamp(1, s.len());
        Self {
            count: s.len(),
            mean: s.iter().sum::<f64>() / s.len() as f64,
            p95: s[rank - 1],
            max: s[s.len() - 1],
        }
    }

    /// `mean / p95 / max` in millimetres.
    pub fn mm(&self) -> String {
        format!(
            "mean {:.2} mm, p95 {:.2} mm, max {:.2} mm (n = {})",
            self.mean * 1e3,
            self.p95 * 1e3,
            self.max * 1e3,
            self.count
        )
    }
}

/// Measured quality of the registration.
#[derive(Debug, Clone, Default)]
pub struct RegistrationReport {
    /// Scale of the ICT → FLAME similarity (after centimetres → metres).
    pub similarity_scale: f64,
    /// Rotation angle of the similarity, degrees.
    pub similarity_rotation_deg: f64,
    /// Landmark residuals after the similarity (68 pairs).
    pub landmarks_similarity: DistanceStats,
    /// Landmark residuals after the non-rigid registration (68 pairs).
    pub landmarks_registered: DistanceStats,
    /// Each landmark's residual after the similarity (iBUG order, metres).
    pub landmarks_similarity_each: Vec<f64>,
    /// Each landmark's residual after the registration (iBUG order, metres).
    pub landmarks_registered_each: Vec<f64>,
    /// Landmark residuals after registration, iBUG 17–67 (no jaw contour).
    pub landmarks_registered_inner: DistanceStats,
    /// Distance from every registered face-region vertex to the ICT surface.
    pub face_all: DistanceStats,
    /// The same, over face vertices whose closest ICT point is not on an ICT opening's rim
    /// (vertices inside the mouth and eye sockets have no counterpart on ICT's surface).
    pub face_matched: DistanceStats,
    /// Distance from ICT face vertices to the registered FLAME surface.
    pub ict_to_flame_face: DistanceStats,
    /// Stage log of the non-rigid iterations.
    pub stages: Vec<register::StageLog>,
}

/// Everything the build computes, kept for reports and pictures.
pub struct Workbench {
    /// FLAME source.
    pub flame: sources::FlameSource,
    /// ICT source (metres, ICT frame).
    pub ict: sources::IctSource,
    /// RingNet embedding.
    pub ringnet: sources::RingnetEmbedding,
    /// MediaPipe canonical face.
    pub mediapipe: sources::MediapipeCanonical,
    /// FLAME topology facts.
    pub topo: FlameTopology,
    /// The 68 landmarks on the FLAME template (frontal contour).
    pub flame_landmarks: [V3; 68],
    /// Regions on the template.
    pub regions: regions::Regions,
    /// ICT → FLAME-frame similarity.
    pub similarity: similarity::Similarity,
    /// ICT neutral in FLAME's frame.
    pub ict_in_flame: Vec<V3>,
    /// ICT head-surface triangles (eyeballs excluded).
    pub ict_head_triangles: Vec<[u32; 3]>,
    /// Whether each ICT vertex is on the head surface (not an eyeball).
    pub ict_is_head: Vec<bool>,
    /// Registered FLAME positions (head deformed; eyeballs moved rigidly to ICT's eye centres).
    pub registered: Vec<V3>,
    /// For each FLAME head vertex, its sample point on the ICT surface (eyeball vertices: `None`).
    pub samples: Vec<Option<bvh::SurfaceHit>>,
    /// Upper/lower lip labels on FLAME.
    pub flame_lips: Vec<LipSide>,
    /// Registration quality.
    pub registration: RegistrationReport,
}

/// The 68 FLAME landmarks (iBUG order; contour from row 0, the frontal one) as embedded points.
fn flame_landmark_embedding(
    ringnet: &sources::RingnetEmbedding,
    triangles: &[[u32; 3]],
) -> Vec<(u32, [u32; 3], V3)> {
    let mut out = Vec::with_capacity(68);
    for i in 0..17 {
        let f = ringnet.dynamic_faces[0][i];
        out.push((f, triangles[f as usize], ringnet.dynamic_bary[0][i]));
    }
    for (k, &f) in ringnet.static_faces.iter().enumerate() {
        out.push((f, triangles[f as usize], ringnet.static_bary[k]));
    }
    out
}

/// Loads the sources and registers FLAME onto ICT.
pub fn prepare(data_dir: &Path) -> Result<Workbench, BuildError> {
    let paths = SourcePaths::in_dir(data_dir)?;
    let flame = sources::read_flame(&paths.flame)?;
    let ict = sources::read_ict(&paths.ict, &paths.ict_names)?;
    let ringnet = sources::read_ringnet(&paths.ringnet, flame.triangles.len())?;
    let mediapipe = sources::read_mediapipe(&paths.mediapipe)?;

    let emb = flame_landmark_embedding(&ringnet, &flame.triangles);
    let flame_landmarks: [V3; 68] =
        std::array::from_fn(|i| bary_point(&flame.template, emb[i].1, emb[i].2));
    let mouth_hint = centroid(&flame_landmarks[60..68], &[0, 1, 2, 3, 4, 5, 6, 7]);
    let topo = FlameTopology::new(&flame.template, &flame.triangles, mouth_hint)?;
    let regions = regions::define_regions(&flame.template, &topo, &flame_landmarks);

    // Similarity ICT → FLAME from the 68 landmark pairs.
    let ict_lm: Vec<V3> = ict
        .landmarks68
        .iter()
        .map(|&i| ict.neutral[i as usize])
        .collect();
    let (similarity, lm_res) = register::landmark_similarity(&ict_lm, &flame_landmarks)
        .ok_or_else(|| {
            BuildError::Numerical("the 68 landmark pairs do not define a similarity".into())
        })?;
    let ict_in_flame: Vec<V3> = ict.neutral.iter().map(|&p| similarity.point(p)).collect();

    // ICT structure: head surface (largest component) and its mouth loop.
    let nv_ict = ict.neutral.len();
    let comp = mesh::connected_components(nv_ict, &ict.triangles);
    let mut sizes = vec![0usize; comp.iter().copied().max().map_or(0, |m| m as usize + 1)];
    for &c in &comp {
        sizes[c as usize] += 1;
    }
    let head_comp = (0..sizes.len())
        .max_by_key(|&c| (sizes[c], usize::MAX - c))
        .unwrap_or(0) as u32;
    let ict_is_head: Vec<bool> = comp.iter().map(|&c| c == head_comp).collect();
    let ict_head_triangles: Vec<[u32; 3]> = ict
        .triangles
        .iter()
        .filter(|t| ict_is_head[t[0] as usize])
        .copied()
        .collect();
    let ict_mouth_hint = centroid(&ict_in_flame, &ict.landmarks68[60..68]);
    let ict_loops = mesh::boundary_loops(&ict_head_triangles);
    let ict_mouth = ict_loops
        .iter()
        .min_by(|a, b| {
            mesh::dist(centroid(&ict_in_flame, a), ict_mouth_hint)
                .total_cmp(&mesh::dist(centroid(&ict_in_flame, b), ict_mouth_hint))
        })
        .ok_or_else(|| BuildError::Topology("the ICT head surface has no mouth opening".into()))?;
    let ict_adj = mesh::adjacency(nv_ict, &ict_head_triangles);
    let ict_lips = label_opening_sides(
        &ict_in_flame,
        &ict_adj,
        ict_mouth,
        LIP_RADIUS,
        Some(&ict_is_head),
    );
    let flame_lips = label_opening_sides(
        &flame.template,
        &topo.adjacency,
        &topo.mouth_loop,
        LIP_RADIUS,
        Some(&topo.is_head),
    );

    let target = Target::new(&ict_in_flame, &ict_head_triangles, &ict_lips);
    let ict_lm_f: Vec<V3> = ict_lm.iter().map(|&p| similarity.point(p)).collect();
    let landmarks: Vec<EmbeddedLandmark> = (0..68)
        .map(|i| EmbeddedLandmark {
            triangle: emb[i].1,
            bary: emb[i].2,
            target: ict_lm_f[i],
            // The jaw contour and the outer brow ends are defined differently in the two
            // landmark sets; they guide the start but weigh less.
            weight: if i <= 17 || i == 26 { 0.3 } else { 1.0 },
        })
        .collect();
    let (mut registered, stages) = register::register_nonrigid(
        &flame.template,
        &topo.head,
        &topo.head_triangles,
        &flame_lips,
        &landmarks,
        &target,
        &register::ICT_REGISTRATION,
    );

    // Final sample points (every head vertex gets one; lip sides respected).
    let samples: Vec<Option<bvh::SurfaceHit>> = (0..flame.template.len())
        .map(|v| {
            if topo.is_head[v] {
                target.closest(registered[v], flame_lips[v], f64::INFINITY)
            } else {
                None
            }
        })
        .collect();
    if samples
        .iter()
        .enumerate()
        .any(|(v, s)| topo.is_head[v] && s.is_none())
    {
        return Err(BuildError::Numerical(
            "a FLAME vertex found no point on the ICT surface".into(),
        ));
    }

    // Eyeballs: rigid, centred on ICT's eyeball centres.
    let ict_eye_centres = ict_eye_centres(&ict, &comp, head_comp, &similarity);
    for (eye, centre) in [
        (&topo.left_eyeball, ict_eye_centres.0),
        (&topo.right_eyeball, ict_eye_centres.1),
    ] {
        let pts: Vec<V3> = eye.iter().map(|&v| flame.template[v as usize]).collect();
        let (c, _) = mesh::fit_sphere(&pts);
        let shift = mesh::sub(centre, c);
        for &v in eye.iter() {
            registered[v as usize] = mesh::add(flame.template[v as usize], shift);
        }
    }

    // Residuals.
    let face = regions.mask("face");
    let mut all = Vec::new();
    let mut matched = Vec::new();
    for v in 0..flame.template.len() {
        if !face[v] {
            continue;
        }
        if let Some(h) = &samples[v] {
            let d = mesh::dist(registered[v], h.point);
            all.push(d);
            if !target.on_boundary(h) {
                matched.push(d);
            }
        }
    }
    let lm_reg: Vec<f64> = landmarks
        .iter()
        .map(|l| mesh::dist(bary_point(&registered, l.triangle, l.bary), l.target))
        .collect();
    // Reverse: ICT head vertices whose closest registered-FLAME point lies on a face triangle.
    let face_tris: Vec<[u32; 3]> = topo
        .head_triangles
        .iter()
        .filter(|t| t.iter().all(|&v| face[v as usize]))
        .copied()
        .collect();
    let flame_bvh = bvh::TriangleBvh::new(&registered, &topo.head_triangles);
    let face_tri_set: Vec<bool> = topo
        .head_triangles
        .iter()
        .map(|t| t.iter().all(|&v| face[v as usize]))
        .collect();
    let reverse: Vec<f64> = (0..nv_ict)
        .filter(|&i| ict_is_head[i] && !target.boundary[i])
        .filter_map(|i| {
            let h = flame_bvh.closest(ict_in_flame[i], 0.05, &|_| true)?;
            face_tri_set[h.triangle as usize].then(|| h.dist2.sqrt())
        })
        .collect();
    let _ = face_tris;
    let registration = RegistrationReport {
        similarity_scale: similarity.scale,
        similarity_rotation_deg: similarity::rotation_angle(&similarity.rotation).to_degrees(),
        landmarks_similarity: DistanceStats::of(&lm_res),
        landmarks_registered: DistanceStats::of(&lm_reg),
        landmarks_registered_inner: DistanceStats::of(&lm_reg[17..]),
        landmarks_similarity_each: lm_res.clone(),
        landmarks_registered_each: lm_reg.clone(),
        face_all: DistanceStats::of(&all),
        face_matched: DistanceStats::of(&matched),
        ict_to_flame_face: DistanceStats::of(&reverse),
        stages,
    };

    Ok(Workbench {
        flame,
        ict,
        ringnet,
        mediapipe,
        topo,
        flame_landmarks,
        regions,
        similarity,
        ict_in_flame,
        ict_head_triangles,
        ict_is_head,
        registered,
        samples,
        flame_lips,
        registration,
    })
}

/// Centres of ICT's left (+x) and right eyeballs in FLAME's frame: sphere fits over all
/// non-head components on each side.
fn ict_eye_centres(
    ict: &sources::IctSource,
    comp: &[u32],
    head_comp: u32,
    sim: &similarity::Similarity,
) -> (V3, V3) {
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for (i, &c) in comp.iter().enumerate() {
        if c != head_comp {
            let p = sim.point(ict.neutral[i]);
            if p[0] > 0.0 { l.push(p) } else { r.push(p) }
        }
    }
    (mesh::fit_sphere(&l).0, mesh::fit_sphere(&r).0)
}

/// Everything measured during a build.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    /// Registration quality.
    pub registration: RegistrationReport,
    /// Expression-transfer measurements.
    pub transfer: assemble::TransferReport,
    /// How the 68-point contour rows were matched to yaw angles.
    pub contour: Option<landmarks::ContourCheck>,
    /// MediaPipe embedding measurements.
    pub mediapipe: landmarks::MediapipeReport,
    /// Symmetry-map measurements.
    pub symmetry: symmetry::SymmetryReport,
    /// Joint positions on the template.
    pub skeleton: skeleton::SkeletonReport,
    /// UV-layout measurements.
    pub uv: uv::UvReport,
    /// Where the model was written (empty when not written).
    pub output: String,
}

impl BuildReport {
    /// Key/value pairs stored in the model's metadata (`extra`).
    pub fn metadata(&self) -> std::collections::BTreeMap<String, String> {
        let r = &self.registration;
        let mm = |x: f64| format!("{:.3}", x * 1e3);
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            "builder".into(),
            "visage_core::build (visage build-model)".into(),
        );
        m.insert(
            "registration.similarity_scale".into(),
            format!("{:.5}", r.similarity_scale),
        );
        m.insert(
            "registration.landmarks_similarity_mean_mm".into(),
            mm(r.landmarks_similarity.mean),
        );
        m.insert(
            "registration.landmarks_registered_mean_mm".into(),
            mm(r.landmarks_registered.mean),
        );
        m.insert(
            "registration.landmarks_registered_inner_mean_mm".into(),
            mm(r.landmarks_registered_inner.mean),
        );
        m.insert("registration.face_mean_mm".into(), mm(r.face_all.mean));
        m.insert("registration.face_p95_mm".into(), mm(r.face_all.p95));
        m.insert(
            "registration.face_matched_mean_mm".into(),
            mm(r.face_matched.mean),
        );
        m.insert(
            "registration.face_matched_p95_mm".into(),
            mm(r.face_matched.p95),
        );
        m.insert(
            "registration.ict_to_flame_face_mean_mm".into(),
            mm(r.ict_to_flame_face.mean),
        );
        m.insert(
            "registration.ict_to_flame_face_p95_mm".into(),
            mm(r.ict_to_flame_face.p95),
        );
        m.insert(
            "expression.names".into(),
            "ICT-FaceKit's ARKit-style names; _L/_R = the subject's left/right (ARKit's \
             ...Left/...Right); browInnerUp and cheekPuff are split into _L/_R halves"
                .into(),
        );
        m.insert(
            "expression.mask".into(),
            "deltas are exactly zero on regions scalp, neck_back, left_ear, right_ear, boundary"
                .into(),
        );
        m.insert(
            "regions.partition".into(),
            regions::ATOMIC_REGIONS.join(","),
        );
        m.insert(
            "regions.composite".into(),
            "face = forehead+nose+lips+left/right_eye_region+left/right_cheek+chin; \
             eye_region = left+right_eye_region; neck = neck_front+neck_back; \
             boundary = vertices within 1.5 cm of the neck rim"
                .into(),
        );
        m.insert(
            "landmarks68.yaw".into(),
            "contour row by Landmarks68::yaw_bin(yaw), yaw = head rotation about +y in degrees, \
             positive turning the face towards +x (the subject's left); checked against the \
             silhouette of the turned template"
                .into(),
        );
        if let Some(c) = &self.contour {
            m.insert(
                "landmarks68.silhouette_gap_mm".into(),
                format!("{} (other row order {})", mm(c.gap_chosen), mm(c.gap_other)),
            );
        }
        let mp = &self.mediapipe;
        m.insert(
            "landmarks_mp.pair_residual_mm".into(),
            format!(
                "mean {} max {}",
                mm(mp.pair_embedded_mean),
                mm(mp.pair_embedded_max)
            ),
        );
        let s = &self.symmetry;
        m.insert(
            "symmetry.involutive".into(),
            format!("{}/{}", s.involutive, s.vertices),
        );
        m.insert(
            "symmetry.mirror_distance_mm".into(),
            format!("mean {} max {}", mm(s.mean_distance), mm(s.max_distance)),
        );
        m.insert(
            "uv.face_share".into(),
            format!(
                "{:.3} of the charts' area, {:.3} of the texture",
                self.uv.face_share_of_charts, self.uv.face_share_of_square
            ),
        );
        m.insert(
            "skeleton".into(),
            "FLAME tree root>neck>{jaw,eye_left,eye_right}; root = neck rim, neck = ring below \
             the chin, jaw = hinges in front of the ears, eyes = eyeball centres; eyeballs \
             rigidly skinned to their eye joints"
                .into(),
        );
        m
    }
}

/// Builds the model in memory: the model, the intermediate workbench and the report.
pub fn build_model(
    data_dir: &Path,
) -> Result<(crate::model::FlameModel, Workbench, BuildReport), BuildError> {
    let wb = prepare(data_dir)?;
    let v = &wb.flame.template;
    let mask = transfer::expression_mask(v, &wb.topo, &wb.regions);
    let (expression, transfer_report) = assemble::transfer_expressions(&wb, &mask);
    let detail = assemble::transfer_detail(&wb);
    let (lm68, contour) = landmarks::landmarks68(&wb.ringnet, v, &wb.topo, &wb.flame.triangles);
    let (lm_mp, mp_report, _) = landmarks::mediapipe_embedding(
        &wb.mediapipe,
        v,
        &wb.topo,
        &wb.flame_lips,
        &wb.flame_landmarks,
    )
    .ok_or_else(|| {
        BuildError::Numerical("the MediaPipe canonical face could not be placed on FLAME".into())
    })?;
    let (sym, sym_report) = symmetry::symmetry_map(&wb.registered, &wb.topo);
    let (skel, skel_report) = skeleton::build_skeleton(
        v,
        &wb.topo,
        &wb.regions,
        &wb.flame_lips,
        &wb.flame_landmarks,
    );
    let face = wb.regions.mask("face");
    let (uv, uv_report) = uv::build_uv(v, &wb.flame.triangles, &wb.topo, &face)
        .map_err(|e| BuildError::Numerical(format!("UV layout: {e}")))?;
    let report = BuildReport {
        registration: wb.registration.clone(),
        transfer: transfer_report,
        contour: Some(contour),
        mediapipe: mp_report,
        symmetry: sym_report,
        skeleton: skel_report,
        uv: uv_report,
        output: String::new(),
    };
    let mut model = assemble::assemble(&wb, expression, Some(detail), report.metadata())?;
    model.landmarks68 = Some(lm68);
    model.landmarks_mp = Some(lm_mp);
    model.symmetry = Some(sym);
    model.skeleton = Some(skel);
    model.uv = Some(uv);
    model
        .validate("<built model>")
        .map_err(|e| BuildError::Numerical(format!("the assembled model is inconsistent: {e}")))?;
    Ok((model, wb, report))
}

/// Builds the open head model from the inputs in `data_dir` and writes it to `out_path`
/// (atomically: a failed build leaves no file behind). See the module documentation.
pub fn build_open_model(data_dir: &Path, out_path: &Path) -> Result<BuildReport, BuildError> {
    let (model, _, mut report) = build_model(data_dir)?;
    if let Some(dir) = out_path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| BuildError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
    }
    model.save(out_path)?;
    report.output = out_path.display().to_string();
    Ok(report)
}

impl std::fmt::Display for BuildReport {
    /// A multi-line human-readable report: registration stages and residuals, landmark and
    /// symmetry checks, joints, UV statistics and expression-transfer magnitudes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.registration;
        writeln!(
            f,
            "similarity scale {:.4}, rotation {:.2}°",
            r.similarity_scale, r.similarity_rotation_deg
        )?;
        for s in &r.stages {
            writeln!(
                f,
                "  alpha {:>6.1}: valid {:.3}, mean corr {:.3} mm, landmarks {:.2} mm, cg ≤ {}",
                s.alpha,
                s.valid_fraction,
                s.mean_distance * 1e3,
                s.landmark_mean * 1e3,
                s.cg_iterations
            )?;
        }
        writeln!(
            f,
            "landmarks after similarity: {}",
            r.landmarks_similarity.mm()
        )?;
        writeln!(
            f,
            "landmarks after registration: {}",
            r.landmarks_registered.mm()
        )?;
        writeln!(f, "  inner (17-67): {}", r.landmarks_registered_inner.mm())?;
        for (group, range) in [
            ("jaw contour 0-16", 0..17),
            ("brows 17-26", 17..27),
            ("nose 27-35", 27..36),
            ("eyes 36-47", 36..48),
            ("mouth 48-67", 48..68),
        ] {
            let mean = |v: &[f64]| v[range.clone()].iter().sum::<f64>() / range.len() as f64 * 1e3;
            writeln!(
                f,
                "  {group}: similarity {:.2} mm, registered {:.2} mm",
                mean(&r.landmarks_similarity_each),
                mean(&r.landmarks_registered_each)
            )?;
        }
        writeln!(f, "face, all vertices: {}", r.face_all.mm())?;
        writeln!(f, "face, matched: {}", r.face_matched.mm())?;
        writeln!(f, "ICT face -> FLAME: {}", r.ict_to_flame_face.mm())?;
        if let Some(c) = &self.contour {
            writeln!(
                f,
                "68-pt contour rows: swapped {}, silhouette gap {:.2} mm (other order {:.2} mm)",
                c.swapped,
                c.gap_chosen * 1e3,
                c.gap_other * 1e3
            )?;
        }
        let m = &self.mediapipe;
        writeln!(
            f,
            "mediapipe: scale {:.5}, pairs mean {:.2} max {:.2} mm (embedded {:.2} / {:.2}), projection mean {:.2} max {:.2} mm",
            m.scale,
            m.pair_mean * 1e3,
            m.pair_max * 1e3,
            m.pair_embedded_mean * 1e3,
            m.pair_embedded_max * 1e3,
            m.projection_mean * 1e3,
            m.projection_max * 1e3
        )?;
        let s = &self.symmetry;
        writeln!(
            f,
            "symmetry: involutive {}/{}, mirror distance mean {:.2} max {:.2} mm",
            s.involutive,
            s.vertices,
            s.mean_distance * 1e3,
            s.max_distance * 1e3
        )?;
        for (name, j) in skeleton::JOINT_NAMES.iter().zip(&self.skeleton.joints) {
            writeln!(f, "joint {name}: ({:.4}, {:.4}, {:.4})", j[0], j[1], j[2])?;
        }
        let u = &self.uv;
        writeln!(
            f,
            "uv: {} coords, flipped {}, min area ratio {:.2e}, face share {:.3} of charts, {:.3} of square",
            u.coords, u.flipped, u.min_area_ratio, u.face_share_of_charts, u.face_share_of_square
        )?;
        let t = &self.transfer;
        for (name, d) in &t.max_delta {
            write!(f, "{name} {:.1}mm  ", d * 1e3)?;
        }
        writeln!(f)?;
        for (name, l, r) in &t.eye_motion {
            writeln!(
                f,
                "eyes {name}: left {:.2}° right {:.2}° (ICT rigid-fit rms {:.4} / {:.4} mm)",
                l.angle_deg,
                r.angle_deg,
                l.fit_rms * 1e3,
                r.fit_rms * 1e3
            )?;
        }
        Ok(())
    }
}

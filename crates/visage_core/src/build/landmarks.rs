//! Landmark embeddings: the FLAME 68-point embedding (RingNet, with its contour rows checked
//! against the geometry) and Visage's own 468-point MediaPipe embedding.

use super::mesh::{V3, bary_point, dist};
use super::register::{EmbeddedLandmark, RegistrationParams, Target, register_nonrigid};
use super::similarity::{Similarity, fit_similarity};
use super::sources::{MediapipeCanonical, RingnetEmbedding};
use super::topology::{FlameTopology, LipSide, label_opening_sides};
use crate::model::{BaryLandmarks, Landmarks68};

/// Rotates `p` by `deg` degrees about +y (right-handed: +z turns towards +x).
fn rot_y(p: V3, deg: f64) -> V3 {
    let (s, c) = deg.to_radians().sin_cos();
    [c * p[0] + s * p[2], p[1], -s * p[0] + c * p[2]]
}

/// Mean gap (metres) between the contour points on the side turning away from the camera and
/// the silhouette of the head turned by `yaw` degrees about +y, for one contour row.
pub fn silhouette_gap(
    v: &[V3],
    head: &[u32],
    triangles: &[[u32; 3]],
    faces: &[u32; 17],
    bary: &[V3; 17],
    yaw: f64,
) -> f64 {
    let turned: Vec<V3> = v.iter().map(|&p| rot_y(p, yaw)).collect();
    // Turning by +yaw moves the +x side away from a camera on +z: its silhouette is the
    // maximum x; contour points 9..16 lie on that side (0..7 for negative yaw).
    let (range, sign) = if yaw > 0.0 {
        (9..17, 1.0)
    } else {
        (0..8, -1.0)
    };
    let mut total = 0.0;
    for i in range.clone() {
        let p = bary_point(&turned, triangles[faces[i] as usize], bary[i]);
        let extreme = head
            .iter()
            .map(|&k| turned[k as usize])
            .filter(|q| (q[1] - p[1]).abs() < 0.003)
            .map(|q| sign * q[0])
            .fold(f64::MIN, f64::max);
        total += (extreme - sign * p[0]).abs();
    }
    total / range.len() as f64
}

/// How the RingNet contour rows were matched to yaw angles.
#[derive(Debug, Clone, Copy)]
pub struct ContourCheck {
    /// Whether the file's rows 1..=39 belong to positive rotations about +y (face turning
    /// towards +x), so the halves had to be swapped for Visage's convention.
    pub swapped: bool,
    /// Mean silhouette gap (metres) at ±10°, ±20°, ±30° with the chosen ordering.
    pub gap_chosen: f64,
    /// The same with the other ordering.
    pub gap_other: f64,
}

/// The 68-point embedding in Visage's convention: contour row `round(-yaw)` for yaw ≤ 0 and
/// `39 + round(yaw)` for yaw > 0, where yaw is the head's rotation about +y in degrees
/// (positive turns the face towards +x, the subject's left) — the rule of
/// [`Landmarks68::yaw_bin`]. The file's row order is checked against the silhouette of the
/// turned template and the halves swapped when needed.
pub fn landmarks68(
    ringnet: &RingnetEmbedding,
    v: &[V3],
    topo: &FlameTopology,
    triangles: &[[u32; 3]],
) -> (Landmarks68, ContourCheck) {
    let bins = ringnet.dynamic_faces.len();
    let half = (bins - 1) / 2;
    // Hypothesis A: file row r (1..=half) ↔ yaw +r. Hypothesis B: row r ↔ yaw −r.
    let mut gap_a = 0.0;
    let mut gap_b = 0.0;
    for r in [10usize, 20, 30] {
        if r > half {
            continue;
        }
        let (f, b) = (&ringnet.dynamic_faces[r], &ringnet.dynamic_bary[r]);
        let (fo, bo) = (
            &ringnet.dynamic_faces[half + r],
            &ringnet.dynamic_bary[half + r],
        );
        let y = r as f64;
        gap_a += silhouette_gap(v, &topo.head, triangles, f, b, y)
            + silhouette_gap(v, &topo.head, triangles, fo, bo, -y);
        gap_b += silhouette_gap(v, &topo.head, triangles, f, b, -y)
            + silhouette_gap(v, &topo.head, triangles, fo, bo, y);
    }
    let swapped = gap_a < gap_b;
    // Visage's rule wants row r (1..=half) ↔ yaw −r, i.e. hypothesis B.
    let order: Vec<usize> = (0..bins)
        .map(|r| {
            if !swapped || r == 0 {
                r
            } else if r <= half {
                half + r
            } else {
                r - half
            }
        })
        .collect();
    let mut dyn_faces = Vec::with_capacity(bins * 17);
    let mut dyn_bary = Vec::with_capacity(bins * 17);
    for &r in &order {
        for i in 0..17 {
            dyn_faces.push(ringnet.dynamic_faces[r][i]);
            dyn_bary.push(ringnet.dynamic_bary[r][i].map(|x| x as f32));
        }
    }
    let count = 6.0;
    (
        Landmarks68 {
            static_points: BaryLandmarks {
                faces: ringnet.static_faces.clone(),
                bary: ringnet
                    .static_bary
                    .iter()
                    .map(|b| b.map(|x| x as f32))
                    .collect(),
            },
            dynamic: BaryLandmarks {
                faces: dyn_faces,
                bary: dyn_bary,
            },
        },
        ContourCheck {
            swapped,
            gap_chosen: gap_a.min(gap_b) / count,
            gap_other: gap_a.max(gap_b) / count,
        },
    )
}

/// Pairs (MediaPipe FaceMesh index, iBUG 68 index) of points with the same anatomical
/// definition, used for the similarity and held during the fit: eye corners, nasion,
/// subnasale, mouth corners, lip midpoints. (The nose tip is left out: FaceMesh's point 1 sits
/// lower on the tip than iBUG 30.)
pub const MEDIAPIPE_IBUG_PAIRS: [(usize, usize); 11] = [
    (33, 36),
    (133, 39),
    (362, 42),
    (263, 45),
    (168, 27),
    (2, 33),
    (61, 48),
    (291, 54),
    (0, 51),
    (17, 57),
    (13, 62),
];

/// Settings of the canonical face's fit onto FLAME: stiff (α from 100 to 3), landmark pairs
/// held with a constant weight.
pub const MEDIAPIPE_REGISTRATION: RegistrationParams<'static> = RegistrationParams {
    schedule: &[(100.0, 3), (30.0, 3), (10.0, 3), (3.0, 3)],
    landmark_weight: 10.0,
    landmark_decay: false,
    max_distance: 0.02,
    min_normal_dot: 0.3,
};

/// The vertices of model triangle `t` (a head triangle index in the full list).
fn topo_triangle(topo: &FlameTopology, t: u32) -> [u32; 3] {
    let k = topo.head_triangle_index.partition_point(|&x| x < t);
    topo.head_triangles[k]
}

/// Measurements of the MediaPipe embedding.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediapipeReport {
    /// Scale of the similarity (canonical centimetres → FLAME metres).
    pub scale: f64,
    /// Mean residual of the landmark pairs after the similarity (metres).
    pub pair_mean: f64,
    /// Largest residual of the landmark pairs after the similarity (metres).
    pub pair_max: f64,
    /// Mean residual of the landmark pairs on the final embedding (metres).
    pub pair_embedded_mean: f64,
    /// Largest residual of the landmark pairs on the final embedding (metres).
    pub pair_embedded_max: f64,
    /// Mean distance of the 468 fitted points to the FLAME surface before projection (metres).
    pub projection_mean: f64,
    /// Largest such distance (metres).
    pub projection_max: f64,
}

/// The 468-point MediaPipe embedding: the canonical face mapped onto the FLAME template by a
/// similarity from [`MEDIAPIPE_IBUG_PAIRS`], fitted to the FLAME surface non-rigidly with those
/// pairs held ([`MEDIAPIPE_REGISTRATION`]), then every point projected to the closest point of
/// the FLAME head surface (upper-lip points onto the upper lip, lower onto the lower).
pub fn mediapipe_embedding(
    mp: &MediapipeCanonical,
    v: &[V3],
    topo: &FlameTopology,
    flame_lips: &[LipSide],
    flame_landmarks: &[V3; 68],
) -> Option<(BaryLandmarks, MediapipeReport, Similarity)> {
    let src: Vec<V3> = MEDIAPIPE_IBUG_PAIRS
        .iter()
        .map(|&(m, _)| mp.vertices[m])
        .collect();
    let dst: Vec<V3> = MEDIAPIPE_IBUG_PAIRS
        .iter()
        .map(|&(_, i)| flame_landmarks[i])
        .collect();
    let sim = fit_similarity(&src, &dst, None, true)?;
    let res: Vec<f64> = src
        .iter()
        .zip(&dst)
        .map(|(&a, &b)| dist(sim.point(a), b))
        .collect();
    let placed: Vec<V3> = mp.vertices.iter().map(|&p| sim.point(p)).collect();
    // The canonical face's triangles, facing outwards (+z on average) like FLAME's.
    let facing: f64 = mp
        .triangles
        .iter()
        .map(|t| {
            let [a, b, c] = t.map(|i| placed[i as usize]);
            super::mesh::cross(super::mesh::sub(b, a), super::mesh::sub(c, a))[2]
        })
        .sum();
    let mp_tris: Vec<[u32; 3]> = if facing >= 0.0 {
        mp.triangles.clone()
    } else {
        mp.triangles.iter().map(|t| [t[0], t[2], t[1]]).collect()
    };
    // Lip sides of the canonical face, from its mouth opening.
    let mp_adj = super::mesh::adjacency(placed.len(), &mp_tris);
    let loops = super::mesh::boundary_loops(&mp_tris);
    let mouth_hint = flame_landmarks[62];
    let mp_lips = loops
        .iter()
        .min_by(|a, b| {
            dist(super::mesh::centroid(&placed, a), mouth_hint)
                .total_cmp(&dist(super::mesh::centroid(&placed, b), mouth_hint))
        })
        .map(|lp| label_opening_sides(&placed, &mp_adj, lp, 0.012, None))
        .unwrap_or_else(|| vec![LipSide::None; placed.len()]);
    // Non-rigid fit of the canonical face onto the FLAME head surface, holding the paired
    // landmarks on FLAME's.
    let target = Target::new(v, &topo.head_triangles, flame_lips);
    let pairs: Vec<EmbeddedLandmark> = MEDIAPIPE_IBUG_PAIRS
        .iter()
        .map(|&(m, i)| EmbeddedLandmark {
            triangle: [m as u32; 3],
            bary: [1.0, 0.0, 0.0],
            target: flame_landmarks[i],
            weight: 1.0,
        })
        .collect();
    let all: Vec<u32> = (0..placed.len() as u32).collect();
    let (pts, _) = register_nonrigid(
        &placed,
        &all,
        &mp_tris,
        &mp_lips,
        &pairs,
        &target,
        &MEDIAPIPE_REGISTRATION,
    );
    let bvh = &target.bvh;
    let tri_side: Vec<(bool, bool)> = topo
        .head_triangles
        .iter()
        .map(|t| {
            (
                t.iter().any(|&k| flame_lips[k as usize] == LipSide::Upper),
                t.iter().any(|&k| flame_lips[k as usize] == LipSide::Lower),
            )
        })
        .collect();
    let mut faces = Vec::with_capacity(pts.len());
    let mut bary = Vec::with_capacity(pts.len());
    let mut d = Vec::with_capacity(pts.len());
    for (i, &p) in pts.iter().enumerate() {
        let side = mp_lips[i];
        let accept = |t: u32| match side {
            LipSide::Upper => !tri_side[t as usize].1,
            LipSide::Lower => !tri_side[t as usize].0,
            LipSide::None => true,
        };
        let hit = bvh.closest(p, f64::INFINITY, &accept)?;
        faces.push(topo.head_triangle_index[hit.triangle as usize]);
        bary.push(hit.bary.map(|x| x as f32));
        d.push(hit.dist2.sqrt());
    }
    let embedded = |m: usize| bary_point(v, topo_triangle(topo, faces[m]), bary[m].map(f64::from));
    let after: Vec<f64> = MEDIAPIPE_IBUG_PAIRS
        .iter()
        .map(|&(m, i)| dist(embedded(m), flame_landmarks[i]))
        .collect();
    let report = MediapipeReport {
        scale: sim.scale,
        pair_mean: res.iter().sum::<f64>() / res.len() as f64,
        pair_max: res.iter().copied().fold(0.0, f64::max),
        pair_embedded_mean: after.iter().sum::<f64>() / after.len() as f64,
        pair_embedded_max: after.iter().copied().fold(0.0, f64::max),
        projection_mean: d.iter().sum::<f64>() / d.len() as f64,
        projection_max: d.iter().copied().fold(0.0, f64::max),
    };
    Some((BaryLandmarks { faces, bary }, report, sim))
}

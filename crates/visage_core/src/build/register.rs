//! Registration of the FLAME template onto the ICT-FaceKit neutral head.
//!
//! 1. A similarity (scale, rotation, translation) from the 68 landmark pairs maps the ICT head
//!    (converted to metres) into FLAME's frame.
//! 2. Non-rigid registration of the FLAME head surface: Laplacian-regularised closest-point
//!    iterations with a stiffness schedule. Each iteration finds, for every FLAME vertex, the
//!    closest point on the ICT surface (on the same lip, compatible normal, within 2 cm, not
//!    on the ICT mesh boundary) and solves
//!    `min Σ w_i |x_i − c_i|² + α |L (x − x₀)|² + β Σ λ_k |B_k x − l_k|²`
//!    for all vertices at once (L: graph Laplacian of the FLAME head, B: the landmark
//!    embedding, l: ICT landmarks), by conjugate gradients. α and β fall from stiff to soft.
//! 3. The eyeballs are not deformed: they are rigid spheres, handled in the transfer.

use rayon::prelude::*;

use super::bvh::{SurfaceHit, TriangleBvh};
use super::mesh::{V3, dist, dot, triangle_normals, vertex_normals};
use super::similarity::{Similarity, fit_similarity};
use super::sparse::{CsrMatrix, conjugate_gradient};
use super::topology::LipSide;

/// Settings of a non-rigid registration.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationParams<'a> {
    /// Stiffness schedule: `(α, iterations)` per stage.
    pub schedule: &'a [(f64, usize)],
    /// Landmark weight β at the first stage.
    pub landmark_weight: f64,
    /// Whether β falls with α (`β = landmark_weight · α / α₀`) or stays constant.
    pub landmark_decay: bool,
    /// Correspondences farther than this are ignored (metres).
    pub max_distance: f64,
    /// Correspondences whose normals' dot product is below this are ignored.
    pub min_normal_dot: f64,
}

/// The settings used to register FLAME onto ICT: α from 100 to 0.3 (three closest-point
/// iterations each), β = 10 falling with α, 2 cm reach, normals within 60°.
pub const ICT_REGISTRATION: RegistrationParams<'static> = RegistrationParams {
    schedule: &[
        (100.0, 3),
        (30.0, 3),
        (10.0, 3),
        (3.0, 3),
        (1.0, 3),
        (0.3, 3),
    ],
    landmark_weight: 10.0,
    landmark_decay: true,
    max_distance: 0.02,
    min_normal_dot: 0.5,
};

/// The target surface of the registration: the ICT head in FLAME's frame.
pub struct Target {
    /// Closest-point structure over the ICT head surface (eyeballs excluded).
    pub bvh: TriangleBvh,
    /// Whether each ICT vertex is on the surface's boundary (mouth, eyes, neck openings).
    pub boundary: Vec<bool>,
    /// Whether each ICT triangle touches an upper-lip / lower-lip vertex.
    pub tri_upper: Vec<bool>,
    /// See `tri_upper`.
    pub tri_lower: Vec<bool>,
    /// Unit normal of each ICT triangle.
    pub tri_normals: Vec<V3>,
}

impl Target {
    /// Builds the target from ICT vertices (FLAME frame), head triangles and lip labels.
    pub fn new(vertices: &[V3], triangles: &[[u32; 3]], lip: &[LipSide]) -> Self {
        let mut boundary = vec![false; vertices.len()];
        for lp in super::mesh::boundary_loops(triangles) {
            for v in lp {
                boundary[v as usize] = true;
            }
        }
        let tri_upper = triangles
            .iter()
            .map(|t| t.iter().any(|&v| lip[v as usize] == LipSide::Upper))
            .collect();
        let tri_lower = triangles
            .iter()
            .map(|t| t.iter().any(|&v| lip[v as usize] == LipSide::Lower))
            .collect();
        Self {
            bvh: TriangleBvh::new(vertices, triangles),
            boundary,
            tri_upper,
            tri_lower,
            tri_normals: triangle_normals(vertices, triangles),
        }
    }

    /// Closest point to `p` on triangles compatible with lip side `side`.
    pub fn closest(&self, p: V3, side: LipSide, max_dist: f64) -> Option<SurfaceHit> {
        let accept = |t: u32| match side {
            LipSide::Upper => !self.tri_lower[t as usize],
            LipSide::Lower => !self.tri_upper[t as usize],
            LipSide::None => true,
        };
        self.bvh.closest(p, max_dist, &accept)
    }

    /// Whether a hit lies on the boundary of the target (every vertex with non-zero weight
    /// is a boundary vertex), i.e. the query has no counterpart on the surface.
    pub fn on_boundary(&self, hit: &SurfaceHit) -> bool {
        let t = self.bvh.triangles()[hit.triangle as usize];
        (0..3).all(|k| hit.bary[k] <= 1e-9 || self.boundary[t[k] as usize])
    }
}

/// A landmark embedded in a triangle of the source mesh.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedLandmark {
    /// Triangle (global vertex indices).
    pub triangle: [u32; 3],
    /// Barycentric coordinates.
    pub bary: V3,
    /// Target position.
    pub target: V3,
    /// Relative weight.
    pub weight: f64,
}

/// Per-stage progress of the registration.
#[derive(Debug, Clone, Copy)]
pub struct StageLog {
    /// Stiffness α of the stage.
    pub alpha: f64,
    /// Fraction of head vertices with an accepted correspondence in the stage's last iteration.
    pub valid_fraction: f64,
    /// Mean distance of accepted correspondences (metres).
    pub mean_distance: f64,
    /// Mean landmark residual (metres).
    pub landmark_mean: f64,
    /// Largest number of CG iterations of the stage's solves.
    pub cg_iterations: usize,
}

/// Runs the non-rigid registration of the `head` vertices of `source` (FLAME template)
/// onto `target`. Returns the registered positions of all source vertices (vertices outside
/// `head` are returned unchanged) and the per-stage log.
pub fn register_nonrigid(
    source: &[V3],
    head: &[u32],
    head_triangles: &[[u32; 3]],
    lip: &[LipSide],
    landmarks: &[EmbeddedLandmark],
    target: &Target,
    params: &RegistrationParams,
) -> (Vec<V3>, Vec<StageLog>) {
    let n = source.len();
    let mut local = vec![usize::MAX; n];
    for (k, &v) in head.iter().enumerate() {
        local[v as usize] = k;
    }
    let m = head.len();
    let tri_local: Vec<[u32; 3]> = head_triangles
        .iter()
        .map(|t| t.map(|v| local[v as usize] as u32))
        .collect();
    let adj = super::mesh::adjacency(m, &tri_local);
    let lap = super::mesh::graph_laplacian(&adj);
    let ltl = lap.transpose().matmul(&lap);
    let x0: Vec<V3> = head.iter().map(|&v| source[v as usize]).collect();
    // Landmark normal equations: Bᵀ Λ B and Bᵀ Λ l.
    let mut btb_trip = Vec::new();
    let mut btl = vec![[0.0; 3]; m];
    for l in landmarks {
        for a in 0..3 {
            let ia = local[l.triangle[a] as usize];
            if ia == usize::MAX {
                continue;
            }
            for b in 0..3 {
                let ib = local[l.triangle[b] as usize];
                if ib != usize::MAX {
                    btb_trip.push((ia, ib, l.weight * l.bary[a] * l.bary[b]));
                }
            }
            for (acc, t) in btl[ia].iter_mut().zip(l.target) {
                *acc += l.weight * l.bary[a] * t;
            }
        }
    }
    let btb = CsrMatrix::from_triplets(m, m, btb_trip);
    let ltl_x0: Vec<Vec<f64>> = (0..3)
        .map(|c| ltl.apply(&x0.iter().map(|p| p[c]).collect::<Vec<_>>()))
        .collect();
    let lip_local: Vec<LipSide> = head.iter().map(|&v| lip[v as usize]).collect();

    let mut x = x0.clone();
    let mut log = Vec::new();
    let alpha0 = params.schedule.first().map_or(1.0, |s| s.0);
    for &(alpha, iters) in params.schedule {
        let beta = if params.landmark_decay {
            params.landmark_weight * alpha / alpha0
        } else {
            params.landmark_weight
        };
        let mut stage = StageLog {
            alpha,
            valid_fraction: 0.0,
            mean_distance: 0.0,
            landmark_mean: 0.0,
            cg_iterations: 0,
        };
        for _ in 0..iters {
            let normals = vertex_normals(&x, &tri_local);
            let corr: Vec<Option<V3>> = (0..m)
                .into_par_iter()
                .map(|i| {
                    let hit = target.closest(x[i], lip_local[i], params.max_distance)?;
                    if target.on_boundary(&hit)
                        || dot(normals[i], target.tri_normals[hit.triangle as usize])
                            < params.min_normal_dot
                    {
                        return None;
                    }
                    Some(hit.point)
                })
                .collect();
            let w: Vec<f64> = corr
                .iter()
                .map(|c| if c.is_some() { 1.0 } else { 0.0 })
                .collect();
            let a = CsrMatrix::diagonal(&w)
                .add_scaled(1.0, &ltl, alpha)
                .add_scaled(1.0, &btb, beta);
            let mut max_it = 0;
            for c in 0..3 {
                let rhs: Vec<f64> = (0..m)
                    .map(|i| {
                        corr[i].map_or(0.0, |p| p[c]) + alpha * ltl_x0[c][i] + beta * btl[i][c]
                    })
                    .collect();
                let mut xc: Vec<f64> = x.iter().map(|p| p[c]).collect();
                let info = conjugate_gradient(&a, &rhs, &mut xc, 4000, 1e-10);
                max_it = max_it.max(info.iterations);
                for i in 0..m {
                    x[i][c] = xc[i];
                }
            }
            let valid: Vec<(usize, V3)> = corr
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.map(|p| (i, p)))
                .collect();
            stage.valid_fraction = valid.len() as f64 / m as f64;
            stage.mean_distance =
                valid.iter().map(|&(i, p)| dist(x[i], p)).sum::<f64>() / valid.len().max(1) as f64;
            stage.cg_iterations = stage.cg_iterations.max(max_it);
        }
        let mut out = source.to_vec();
        for (k, &v) in head.iter().enumerate() {
            out[v as usize] = x[k];
        }
        stage.landmark_mean = landmarks
            .iter()
            .map(|l| dist(super::mesh::bary_point(&out, l.triangle, l.bary), l.target))
            .sum::<f64>()
            / landmarks.len().max(1) as f64;
        log.push(stage);
    }
    let mut out = source.to_vec();
    for (k, &v) in head.iter().enumerate() {
        out[v as usize] = x[k];
    }
    (out, log)
}

/// The similarity mapping `from` landmarks onto `to` landmarks, and the residual of each pair.
pub fn landmark_similarity(from: &[V3], to: &[V3]) -> Option<(Similarity, Vec<f64>)> {
    let s = fit_similarity(from, to, None, true)?;
    let res = from
        .iter()
        .zip(to)
        .map(|(&a, &b)| dist(s.point(a), b))
        .collect();
    Some((s, res))
}

/// Distance from each point to its hit.
pub fn hit_distances(points: &[V3], hits: &[SurfaceHit]) -> Vec<f64> {
    points
        .iter()
        .zip(hits)
        .map(|(&p, h)| dist(p, h.point))
        .collect()
}

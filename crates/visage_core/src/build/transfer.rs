//! Transfer of ICT-FaceKit blendshapes onto FLAME topology.
//!
//! Skin: each FLAME head vertex has a sample point on the ICT surface (triangle + barycentric
//! coordinates, from the registration); a blendshape's delta at the vertex is the barycentric
//! blend of the ICT deltas at that triangle's corners, mapped into FLAME's frame by the
//! similarity's rotation and scale. Expression deltas are then multiplied by a mask that is 1
//! on the face, 0 on the scalp, ears, back of the neck and the neck boundary, and harmonic
//! (smooth) in between, so nothing moves where an expression should not reach.
//!
//! Eyeballs: FLAME's eyeballs stay rigid spheres. For every blendshape, the motion of each ICT
//! eyeball (both of its shells) is fitted by a rigid transform (a similarity for identity
//! modes); its rotation is applied about FLAME's eyeball centre and its centre displacement
//! added, so `eyeLook*` turn FLAME's eyeballs exactly as they turn ICT's, at weight one.

use nalgebra::Vector3;

use super::bvh::SurfaceHit;
use super::mesh::{V3, add, bary_point, geodesic_distances, sub};
use super::regions::Regions;
use super::similarity::{Similarity, fit_similarity};
use super::sparse::harmonic_interpolation;
use super::topology::FlameTopology;

/// Geodesic width of the band at the face's rim over which the expression mask falls to zero.
pub const MASK_FALLOFF: f64 = 0.015;

/// The expression mask: 1 on the face interior, 0 on scalp, ears, back of the neck and the
/// neck boundary band, harmonic elsewhere on the head; 0 on the eyeballs (handled rigidly).
pub fn expression_mask(v: &[V3], topo: &FlameTopology, regions: &Regions) -> Vec<f64> {
    let n = v.len();
    let zero = {
        let mut z = vec![false; n];
        for name in ["scalp", "neck_back", "left_ear", "right_ear", "boundary"] {
            for &i in regions.get(name) {
                z[i as usize] = true;
            }
        }
        z
    };
    let seeds: Vec<(u32, f64)> = (0..n as u32)
        .filter(|&i| zero[i as usize])
        .map(|i| (i, 0.0))
        .collect();
    let d = geodesic_distances(v, &topo.adjacency, &seeds, Some(&topo.is_head));
    let face = regions.mask("face");
    let fixed: Vec<Option<f64>> = (0..n)
        .map(|i| {
            if !topo.is_head[i] || zero[i] {
                Some(0.0)
            } else if face[i] && d[i] >= MASK_FALLOFF {
                Some(1.0)
            } else {
                None
            }
        })
        .collect();
    let lap = super::mesh::graph_laplacian(&topo.adjacency);
    harmonic_interpolation(&lap, &fixed, 5000)
        .into_iter()
        .map(|x| x.clamp(0.0, 1.0))
        .collect()
}

/// Samples one ICT delta field at the FLAME sample points, maps it into FLAME's frame and
/// multiplies by `mask` (when given). Eyeball vertices (no sample) get zero.
pub fn sample_deltas(
    delta: &[V3],
    ict_triangles: &[[u32; 3]],
    samples: &[Option<SurfaceHit>],
    sim: &Similarity,
    mask: Option<&[f64]>,
) -> Vec<V3> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            None => [0.0; 3],
            Some(h) => {
                let d = sim.vector(bary_point(
                    delta,
                    ict_triangles[h.triangle as usize],
                    h.bary,
                ));
                let m = mask.map_or(1.0, |m| m[i]);
                [d[0] * m, d[1] * m, d[2] * m]
            }
        })
        .collect()
}

/// An eyeball of each mesh: ICT vertices (ICT frame), FLAME vertices and FLAME's centre.
pub struct EyePair {
    /// ICT vertices of the eyeball (all shells).
    pub ict_vertices: Vec<u32>,
    /// ICT eyeball centre (ICT frame).
    pub ict_centre: V3,
    /// FLAME vertices of the eyeball.
    pub flame_vertices: Vec<u32>,
    /// FLAME eyeball centre (template).
    pub flame_centre: V3,
}

/// Result of fitting an eyeball's motion.
#[derive(Debug, Clone, Copy)]
pub struct EyeMotion {
    /// RMS distance between the ICT eyeball moved by the fitted transform and the ICT delta
    /// (metres): how rigid ICT's own motion is.
    pub fit_rms: f64,
    /// Rotation angle of the motion, degrees.
    pub angle_deg: f64,
}

/// Moves FLAME's eyeball like ICT's: fits `ict_neutral[i] + delta[i]` over the eyeball by a
/// rigid (or, with `allow_scale`, similarity) transform, and writes the corresponding deltas of
/// FLAME's eyeball vertices into `out`.
pub fn transfer_eyeball(
    eye: &EyePair,
    ict_neutral: &[V3],
    delta: &[V3],
    flame_template: &[V3],
    sim: &Similarity,
    allow_scale: bool,
    out: &mut [V3],
) -> EyeMotion {
    let src: Vec<V3> = eye
        .ict_vertices
        .iter()
        .map(|&i| ict_neutral[i as usize])
        .collect();
    let dst: Vec<V3> = eye
        .ict_vertices
        .iter()
        .map(|&i| add(ict_neutral[i as usize], delta[i as usize]))
        .collect();
    let moved = src
        .iter()
        .zip(&dst)
        .any(|(a, b)| super::mesh::dist(*a, *b) > 1e-9);
    let m = if moved {
        fit_similarity(&src, &dst, None, allow_scale).unwrap_or_else(Similarity::identity)
    } else {
        Similarity::identity()
    };
    let fit_rms = (src
        .iter()
        .zip(&dst)
        .map(|(&a, &b)| {
            let d = sub(m.point(a), b);
            super::mesh::dot(d, d)
        })
        .sum::<f64>()
        / src.len().max(1) as f64)
        .sqrt();
    // In FLAME's frame: rotation R_s R R_sᵀ, scale unchanged, and the displacement of ICT's
    // eyeball centre mapped by the similarity.
    let r = sim.rotation * m.rotation * sim.rotation.transpose();
    let c_ict = eye.ict_centre;
    let tau = sim.vector(sub(m.point(c_ict), c_ict));
    for &v in &eye.flame_vertices {
        let p = flame_template[v as usize];
        let rel = Vector3::from(sub(p, eye.flame_centre));
        let q = r * rel * m.scale;
        let new = add(add(eye.flame_centre, [q[0], q[1], q[2]]), tau);
        out[v as usize] = sub(new, p);
    }
    EyeMotion {
        fit_rms,
        angle_deg: super::similarity::rotation_angle(&m.rotation).to_degrees(),
    }
}

/// Finds each side's eyeball on both meshes and their centres (sphere fits).
pub fn eye_pairs(
    ict_neutral: &[V3],
    ict_is_head: &[bool],
    flame_template: &[V3],
    topo: &FlameTopology,
) -> [EyePair; 2] {
    let side = |left: bool| {
        let ict_vertices: Vec<u32> = (0..ict_neutral.len() as u32)
            .filter(|&i| !ict_is_head[i as usize] && ((ict_neutral[i as usize][0] > 0.0) == left))
            .collect();
        let pts: Vec<V3> = ict_vertices
            .iter()
            .map(|&i| ict_neutral[i as usize])
            .collect();
        let flame_vertices = if left {
            topo.left_eyeball.clone()
        } else {
            topo.right_eyeball.clone()
        };
        let fpts: Vec<V3> = flame_vertices
            .iter()
            .map(|&i| flame_template[i as usize])
            .collect();
        EyePair {
            ict_centre: super::mesh::fit_sphere(&pts).0,
            ict_vertices,
            flame_centre: super::mesh::fit_sphere(&fpts).0,
            flame_vertices,
        }
    };
    [side(true), side(false)]
}

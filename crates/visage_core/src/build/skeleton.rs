//! Joints and skinning weights of the open head model (FLAME's five joints and tree:
//! root → neck → {jaw, left eye, right eye}).
//!
//! Joint regressor (each row sums to one, so joints follow identity and expression changes):
//! - `root`: mean of the neck's boundary loop (bottom of the neck);
//! - `neck`: midpoint of the front and back of a horizontal ring of neck vertices just below
//!   the chin;
//! - `jaw`: midpoint of the two jaw hinges, each the mean of the cheek vertices in front of the
//!   ear at tragus height;
//! - `eye_left` / `eye_right`: the eyeball's centre, as the minimum-norm weights over the
//!   eyeball's vertices that reproduce its fitted sphere centre on the template.
//!
//! Skinning weights come from two harmonic (smooth) fields on the mesh: `h` is 0 at the neck's
//! bottom band and 1 on the head above the neck; `j` is 1 on the lower lip, chin and jaw line
//! and 0 on the upper lip, nose, eyes, forehead, scalp, ears and lower neck. Then
//! `root = 1 − h`, `neck = h (1 − j)`, `jaw = h j`, and every eyeball vertex belongs wholly to
//! its eye joint.

use nalgebra::{DMatrix, DVector};

use super::mesh::{V3, dist, fit_sphere, geodesic_distances, graph_laplacian};
use super::regions::Regions;
use super::sparse::harmonic_interpolation;
use super::topology::{FlameTopology, LipSide};
use crate::model::Skeleton;

/// Joint names, FLAME's order.
pub const JOINT_NAMES: [&str; 5] = ["root", "neck", "jaw", "eye_left", "eye_right"];
/// FLAME's kinematic tree.
pub const JOINT_PARENTS: [i32; 5] = [-1, 0, 1, 1, 1];

/// Joint positions on the template and regressor sizes, for the report.
#[derive(Debug, Clone, Default)]
pub struct SkeletonReport {
    /// Joint positions regressed from the template.
    pub joints: Vec<V3>,
    /// Number of vertices with a non-zero regressor weight, per joint.
    pub support: Vec<usize>,
}

fn uniform_row(n: usize, groups: &[(&[u32], f64)]) -> Vec<f64> {
    let mut row = vec![0.0; n];
    for &(g, share) in groups {
        for &v in g {
            row[v as usize] += share / g.len().max(1) as f64;
        }
    }
    row
}

/// Minimum-norm weights over `idx` (summing to one) that reproduce `centre` from `v`.
fn centre_weights(v: &[V3], idx: &[u32], centre: V3) -> Vec<(u32, f64)> {
    let m = idx.len();
    let a = DMatrix::from_fn(4, m, |r, c| if r < 3 { v[idx[c] as usize][r] } else { 1.0 });
    let u = DVector::from_element(m, 1.0 / m as f64);
    let b = DVector::from_vec(vec![centre[0], centre[1], centre[2], 1.0]);
    let resid = &b - &a * &u;
    let aat = &a * a.transpose();
    let corr = aat.lu().solve(&resid).map(|y| a.transpose() * y);
    let w = match corr {
        Some(c) => u + c,
        None => u,
    };
    idx.iter().zip(w.iter()).map(|(&i, &x)| (i, x)).collect()
}

/// Builds the skeleton from the template.
pub fn build_skeleton(
    v: &[V3],
    topo: &FlameTopology,
    regions: &Regions,
    lips: &[LipSide],
    landmarks: &[V3; 68],
) -> (Skeleton, SkeletonReport) {
    let n = v.len();
    let is = |name: &str| regions.mask(name);
    let neck_mask: Vec<bool> = {
        let (a, b) = (is("neck_front"), is("neck_back"));
        (0..n).map(|i| a[i] || b[i]).collect()
    };

    // Root: the neck's boundary loop.
    let root = uniform_row(n, &[(&topo.neck_loop, 1.0)]);

    // Neck: a ring of neck vertices 8 mm below the chin, front half and back half equally.
    let y_ring = landmarks[8][1] - 0.008;
    let ring: Vec<u32> = (0..n as u32)
        .filter(|&i| neck_mask[i as usize] && (v[i as usize][1] - y_ring).abs() < 0.006)
        .collect();
    let z_mid = {
        let (lo, hi) = ring.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &i| {
            (lo.min(v[i as usize][2]), hi.max(v[i as usize][2]))
        });
        0.5 * (lo + hi)
    };
    let front: Vec<u32> = ring
        .iter()
        .copied()
        .filter(|&i| v[i as usize][2] >= z_mid)
        .collect();
    let back: Vec<u32> = ring
        .iter()
        .copied()
        .filter(|&i| v[i as usize][2] < z_mid)
        .collect();
    let neck = uniform_row(n, &[(&front, 0.5), (&back, 0.5)]);

    // Jaw: the two hinges in front of the ears at tragus height.
    let hinge = |ear: &[u32]| -> Vec<u32> {
        let (ylo, yhi) = ear.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &i| {
            (lo.min(v[i as usize][1]), hi.max(v[i as usize][1]))
        });
        let (mlo, mhi) = (ylo + (yhi - ylo) / 3.0, yhi - (yhi - ylo) / 3.0);
        let front_most = ear
            .iter()
            .copied()
            .filter(|&i| (mlo..=mhi).contains(&v[i as usize][1]))
            .max_by(|&a, &b| {
                v[a as usize][2]
                    .total_cmp(&v[b as usize][2])
                    .then(b.cmp(&a))
            });
        let Some(t) = front_most else {
            return Vec::new();
        };
        let p = v[t as usize];
        let centre = [p[0], p[1], p[2] + 0.012];
        let in_ear = regions.mask("left_ear");
        let in_ear_r = regions.mask("right_ear");
        (0..n as u32)
            .filter(|&i| {
                let i = i as usize;
                topo.is_head[i] && !in_ear[i] && !in_ear_r[i] && dist(v[i], centre) < 0.012
            })
            .collect()
    };
    let hinge_l = hinge(regions.get("left_ear"));
    let hinge_r = hinge(regions.get("right_ear"));
    let jaw = uniform_row(n, &[(&hinge_l, 0.5), (&hinge_r, 0.5)]);

    // Eyes.
    let eye_row = |eye: &[u32]| {
        let pts: Vec<V3> = eye.iter().map(|&i| v[i as usize]).collect();
        let (c, _) = fit_sphere(&pts);
        let mut row = vec![0.0; n];
        for (i, w) in centre_weights(v, eye, c) {
            row[i as usize] = w;
        }
        row
    };
    let eye_l = eye_row(&topo.left_eyeball);
    let eye_r = eye_row(&topo.right_eyeball);

    let rows = [root, neck, jaw, eye_l, eye_r];
    let joints: Vec<V3> = rows
        .iter()
        .map(|r| {
            let mut p = [0.0; 3];
            for (i, &w) in r.iter().enumerate() {
                for c in 0..3 {
                    p[c] += w * v[i][c];
                }
            }
            p
        })
        .collect();

    // Skinning: harmonic fields over the head surface.
    let lap = graph_laplacian(&topo.adjacency);
    let seeds: Vec<(u32, f64)> = topo.neck_loop.iter().map(|&i| (i, 0.0)).collect();
    let d_bottom = geodesic_distances(v, &topo.adjacency, &seeds, Some(&topo.is_head));
    let fixed_h: Vec<Option<f64>> = (0..n)
        .map(|i| {
            if !topo.is_head[i] {
                Some(1.0)
            } else if d_bottom[i] <= 0.015 {
                Some(0.0)
            } else if !neck_mask[i] {
                Some(1.0)
            } else {
                None
            }
        })
        .collect();
    let h = harmonic_interpolation(&lap, &fixed_h, 5000);

    let one_names = ["chin"];
    let zero_names = [
        "nose",
        "left_eye_region",
        "right_eye_region",
        "forehead",
        "scalp",
        "left_ear",
        "right_ear",
    ];
    let one: Vec<bool> = {
        let mut m = vec![false; n];
        for name in one_names {
            for &i in regions.get(name) {
                m[i as usize] = true;
            }
        }
        // The mandible: within 1 cm of the lower jaw-contour landmarks.
        for lm in &landmarks[4..13] {
            for (i, mi) in m.iter_mut().enumerate() {
                if topo.is_head[i] && dist(v[i], *lm) < 0.01 {
                    *mi = true;
                }
            }
        }
        m
    };
    let zero: Vec<bool> = {
        let mut m = vec![false; n];
        for name in zero_names {
            for &i in regions.get(name) {
                m[i as usize] = true;
            }
        }
        for &i in &hinge_l {
            m[i as usize] = true;
        }
        for &i in &hinge_r {
            m[i as usize] = true;
        }
        m
    };
    // Lips: the lower lip follows the jaw, the upper lip does not; the outer quarter of the
    // mouth on each side is left free so the corners stretch smoothly.
    let in_lips = regions.mask("lips");
    let corner_x = 0.75 * 0.5 * (landmarks[54][0] - landmarks[48][0]);
    let lip_core = |i: usize| in_lips[i] && v[i][0].abs() < corner_x;
    let fixed_j: Vec<Option<f64>> = (0..n)
        .map(|i| {
            if !topo.is_head[i] || d_bottom[i] <= 0.015 {
                Some(0.0)
            } else if lip_core(i) && lips[i] == LipSide::Lower {
                Some(1.0)
            } else if (lip_core(i) && lips[i] == LipSide::Upper) || (zero[i] && !in_lips[i]) {
                Some(0.0)
            } else if one[i] {
                Some(1.0)
            } else {
                None
            }
        })
        .collect();
    let j = harmonic_interpolation(&lap, &fixed_j, 5000);

    let mut weights = vec![0f32; n * 5];
    let mut eye_of = vec![0usize; n];
    for &i in &topo.left_eyeball {
        eye_of[i as usize] = 3;
    }
    for &i in &topo.right_eyeball {
        eye_of[i as usize] = 4;
    }
    for i in 0..n {
        let w = &mut weights[i * 5..i * 5 + 5];
        if eye_of[i] != 0 {
            w[eye_of[i]] = 1.0;
            continue;
        }
        let (hi, ji) = (h[i].clamp(0.0, 1.0), j[i].clamp(0.0, 1.0));
        w[0] = (1.0 - hi) as f32;
        w[1] = (hi * (1.0 - ji)) as f32;
        w[2] = (hi * ji) as f32;
    }
    let regressor: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&x| x as f32))
        .collect();
    let report = SkeletonReport {
        joints,
        support: rows
            .iter()
            .map(|r| r.iter().filter(|&&x| x != 0.0).count())
            .collect(),
    };
    (
        Skeleton {
            names: JOINT_NAMES.iter().map(|s| s.to_string()).collect(),
            parents: JOINT_PARENTS.to_vec(),
            regressor,
            weights,
        },
        report,
    )
}

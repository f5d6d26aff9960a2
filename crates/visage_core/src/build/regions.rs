//! Vertex regions of the open head model, defined from the template's geometry, topology and
//! 68 landmarks (see `docs/model.md` for pictures).
//!
//! The *atomic* regions ([`ATOMIC_REGIONS`]) partition all vertices: every vertex is in exactly
//! one of them. The *composite* regions ([`COMPOSITE_REGIONS`]) are unions or bands and overlap
//! the atomic ones: `face`, `eye_region`, `neck`, `boundary`.

use super::mesh::{V3, geodesic_distances};
use super::topology::FlameTopology;

/// Names of the regions that partition the vertices, in storage order.
pub const ATOMIC_REGIONS: [&str; 15] = [
    "forehead",
    "nose",
    "lips",
    "left_eye_region",
    "right_eye_region",
    "left_cheek",
    "right_cheek",
    "chin",
    "left_ear",
    "right_ear",
    "scalp",
    "neck_front",
    "neck_back",
    "left_eyeball",
    "right_eyeball",
];

/// Names of the overlapping composite regions, in storage order.
pub const COMPOSITE_REGIONS: [&str; 4] = ["face", "eye_region", "neck", "boundary"];

/// Atomic regions that make up `face`.
pub const FACE_PARTS: [&str; 8] = [
    "forehead",
    "nose",
    "lips",
    "left_eye_region",
    "right_eye_region",
    "left_cheek",
    "right_cheek",
    "chin",
];

/// Depth of the vertical axis the azimuth is measured around (metres, template frame).
const AXIS_Z: f64 = -0.03;

/// All regions: atomic label per vertex, and the named lists.
#[derive(Debug, Clone)]
pub struct Regions {
    /// Index into [`ATOMIC_REGIONS`] of each vertex.
    pub label: Vec<u8>,
    /// Every region (atomic first, then composite) with its ascending vertex list.
    pub named: Vec<(String, Vec<u32>)>,
}

impl Regions {
    /// The vertex list of region `name`.
    pub fn get(&self, name: &str) -> &[u32] {
        self.named
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// A per-vertex membership mask of region `name`.
    pub fn mask(&self, name: &str) -> Vec<bool> {
        let mut m = vec![false; self.label.len()];
        for &v in self.get(name) {
            m[v as usize] = true;
        }
        m
    }
}

fn idx(name: &str) -> u8 {
    ATOMIC_REGIONS.iter().position(|&n| n == name).unwrap_or(0) as u8
}

/// Azimuth (degrees) around the head's vertical axis: 0 at the nose, ±180 at the back,
/// positive towards the subject's left (+x).
pub fn azimuth(p: V3) -> f64 {
    p[0].atan2(p[2] - AXIS_Z).to_degrees()
}

fn point_in_polygon(p: [f64; 2], poly: &[[f64; 2]]) -> bool {
    let mut inside = false;
    let n = poly.len();
    let mut j = n - 1;
    for i in 0..n {
        let (a, b) = (poly[i], poly[j]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// Piecewise-linear interpolation of `ys` over ascending `xs`, clamped at the ends.
fn interp(x: f64, xs: &[f64], ys: &[f64]) -> f64 {
    if x <= xs[0] {
        return ys[0];
    }
    for i in 1..xs.len() {
        if x <= xs[i] {
            let t = (x - xs[i - 1]) / (xs[i] - xs[i - 1]).max(1e-12);
            return ys[i - 1] + t * (ys[i] - ys[i - 1]);
        }
    }
    ys[ys.len() - 1]
}

/// Mean incident edge length of every vertex.
fn mean_edge_length(v: &[V3], adj: &[Vec<u32>]) -> Vec<f64> {
    adj.iter()
        .enumerate()
        .map(|(i, nb)| {
            if nb.is_empty() {
                0.0
            } else {
                nb.iter()
                    .map(|&j| super::mesh::dist(v[i], v[j as usize]))
                    .sum::<f64>()
                    / nb.len() as f64
            }
        })
        .collect()
}

/// Defines the regions on the template `v` with landmarks `lm` (iBUG order, frontal contour).
pub fn define_regions(v: &[V3], topo: &FlameTopology, lm: &[V3; 68]) -> Regions {
    let n = v.len();
    let unset = u8::MAX;
    let mut label = vec![unset; n];
    for &i in &topo.left_eyeball {
        label[i as usize] = idx("left_eyeball");
    }
    for &i in &topo.right_eyeball {
        label[i as usize] = idx("right_eyeball");
    }
    let adj = &topo.adjacency;

    // Ears: the densely meshed island around the most lateral point at ear height. FLAME's
    // ears are meshed far more finely than the skull around them, so a flood fill over
    // vertices with short edges, inside a generous box, stops at the ear root.
    let edge = mean_edge_length(v, adj);
    for (side, name) in [(1.0, "left_ear"), (-1.0, "right_ear")] {
        let zone: Vec<bool> = (0..n)
            .map(|i| {
                let p = v[i];
                topo.is_head[i]
                    && side * p[0] > 0.05
                    && p[1] > -0.05
                    && p[1] < 0.045
                    && p[2] < -0.015
                    && p[2] > -0.1
            })
            .collect();
        let seed = (0..n).filter(|&i| zone[i]).max_by(|&a, &b| {
            (side * v[a][0])
                .total_cmp(&(side * v[b][0]))
                .then(b.cmp(&a))
        });
        if let Some(seed) = seed {
            let allowed: Vec<bool> = (0..n).map(|i| zone[i] && edge[i] < 0.006).collect();
            let d = geodesic_distances(v, adj, &[(seed as u32, 0.0)], Some(&allowed));
            for i in 0..n {
                if d[i].is_finite() && label[i] == unset {
                    label[i] = idx(name);
                }
            }
        }
    }

    // The face: in front of the ears (azimuth), above the jaw line given by the contour
    // landmarks, below a forehead line 4.5 cm above the brows.
    let contour: Vec<(f64, f64)> = {
        let mut c: Vec<(f64, f64)> = lm[..17].iter().map(|&p| (azimuth(p), p[1])).collect();
        c.sort_by(|a, b| a.0.total_cmp(&b.0));
        c
    };
    let cphi: Vec<f64> = contour.iter().map(|c| c.0).collect();
    let cy: Vec<f64> = contour.iter().map(|c| c.1).collect();
    let side_limit = azimuth(lm[0]).abs().min(azimuth(lm[16]).abs()) - 4.0;
    let brow_y = lm[17..27].iter().map(|p| p[1]).sum::<f64>() / 10.0;
    let top_y = brow_y + 0.045;
    let jaw_y = |p: V3| interp(azimuth(p), &cphi, &cy);
    let face: Vec<bool> = (0..n)
        .map(|i| {
            let p = v[i];
            label[i] == unset
                && topo.is_head[i]
                && azimuth(p).abs() < side_limit
                && p[1] > jaw_y(p) - 0.004
                && p[1] < top_y
        })
        .collect();

    // Face parts, decided in the frontal (x, y) projection.
    let xy = |i: usize| [v[i][0], v[i][1]];
    let lip_poly: Vec<[f64; 2]> = {
        let c = lm[48..60]
            .iter()
            .fold([0.0, 0.0], |a, p| [a[0] + p[0] / 12.0, a[1] + p[1] / 12.0]);
        lm[48..60]
            .iter()
            .map(|p| {
                let d = [p[0] - c[0], p[1] - c[1]];
                let l = (d[0] * d[0] + d[1] * d[1]).sqrt().max(1e-9);
                [p[0] + d[0] / l * 0.003, p[1] + d[1] / l * 0.003]
            })
            .collect()
    };
    // Lips: inside the outer lip contour (widened by 3 mm) in the frontal projection, plus
    // the inner-lip surface that folds back into the mouth: vertices reachable from the mouth
    // opening over backward-facing vertices (normal z < 0.2) within 2 cm.
    let normals = super::mesh::vertex_normals(v, &topo.head_triangles);
    let inward: Vec<bool> = (0..n)
        .map(|i| topo.is_head[i] && normals[i][2] < 0.2)
        .collect();
    let seeds: Vec<(u32, f64)> = topo.mouth_loop.iter().map(|&i| (i, 0.0)).collect();
    let d_mouth = geodesic_distances(v, adj, &seeds, Some(&inward));
    let lips: Vec<bool> = (0..n)
        .map(|i| face[i] && (point_in_polygon(xy(i), &lip_poly) || d_mouth[i] <= 0.02))
        .collect();
    let nose_x = lm[27..36].iter().map(|p| p[0]).sum::<f64>() / 9.0;
    let (y27, y33) = (lm[27][1], lm[33][1]);
    let (w_top, w_bottom) = (0.008, (lm[35][0] - lm[31][0]) / 2.0 + 0.008);
    let nose: Vec<bool> = (0..n)
        .map(|i| {
            let p = v[i];
            let t = ((y27 - p[1]) / (y27 - (y33 - 0.004))).clamp(0.0, 1.0);
            let w = w_top + (w_bottom - w_top) * t.powf(1.5);
            face[i]
                && !lips[i]
                && p[1] <= y27 + 0.004
                && p[1] >= y33 - 0.006
                && (p[0] - nose_x).abs() < w
        })
        .collect();
    let eye = |corners: std::ops::Range<usize>, brows: std::ops::Range<usize>| -> Vec<bool> {
        let pts = &lm[corners];
        let c = pts
            .iter()
            .fold([0.0; 2], |a, p| [a[0] + p[0] / 6.0, a[1] + p[1] / 6.0]);
        let (xmin, xmax) = pts.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p[0]), hi.max(p[0]))
        });
        let hw = (xmax - xmin) / 2.0 + 0.013;
        let brow = lm[brows].iter().map(|p| p[1]).sum::<f64>() / 5.0;
        let (up, down) = (brow - 0.002 - c[1], 0.017);
        (0..n)
            .map(|i| {
                let p = v[i];
                let dy = if p[1] > c[1] {
                    (p[1] - c[1]) / up
                } else {
                    (c[1] - p[1]) / down
                };
                let dx = (p[0] - c[0]) / hw;
                face[i] && !lips[i] && !nose[i] && dx * dx + dy * dy < 1.0
            })
            .collect()
    };
    let right_eye = eye(36..42, 17..22);
    let left_eye = eye(42..48, 22..27);
    let brow_x: Vec<f64> = lm[17..27].iter().map(|p| p[0]).collect();
    let brow_ys: Vec<f64> = lm[17..27].iter().map(|p| p[1]).collect();
    let eye_line = (lm[36][1] + lm[45][1]) / 2.0;
    let mouth_half = (lm[54][0] - lm[48][0]) / 2.0 + 0.004;
    for i in 0..n {
        if !face[i] {
            continue;
        }
        let p = v[i];
        let name = if lips[i] {
            "lips"
        } else if nose[i] {
            "nose"
        } else if left_eye[i] {
            "left_eye_region"
        } else if right_eye[i] {
            "right_eye_region"
        } else if p[1] > interp(p[0], &brow_x, &brow_ys) - 0.002 || p[1] > eye_line {
            // Above the brows, and the temples beside the eyes.
            "forehead"
        } else if p[1] < lm[57][1] && p[0].abs() < mouth_half + 0.2 * (lm[57][1] - p[1]).max(0.0) {
            "chin"
        } else if p[0] > 0.0 {
            "left_cheek"
        } else {
            "right_cheek"
        };
        label[i] = idx(name);
    }

    // Neck below a cut running from the jaw line, under the ears (3 cm below the eye line's
    // origin) to the nape; the rest of the head is scalp.
    let (y_side, y_nape) = (-0.03, -0.06);
    for i in 0..n {
        if label[i] != unset {
            continue;
        }
        let p = v[i];
        let phi = azimuth(p).abs();
        let cut = if phi < side_limit {
            jaw_y(p) - 0.004
        } else {
            y_side + (y_nape - y_side) * (phi - side_limit) / (180.0 - side_limit)
        };
        label[i] = if p[1] < cut {
            if phi < 90.0 {
                idx("neck_front")
            } else {
                idx("neck_back")
            }
        } else {
            idx("scalp")
        };
    }

    let mut named: Vec<(String, Vec<u32>)> = ATOMIC_REGIONS
        .iter()
        .enumerate()
        .map(|(k, &name)| {
            (
                name.to_string(),
                (0..n as u32)
                    .filter(|&i| label[i as usize] == k as u8)
                    .collect(),
            )
        })
        .collect();
    let union = |names: &[&str]| -> Vec<u32> {
        let ks: Vec<u8> = names.iter().map(|s| idx(s)).collect();
        (0..n as u32)
            .filter(|&i| ks.contains(&label[i as usize]))
            .collect()
    };
    named.push(("face".into(), union(&FACE_PARTS)));
    named.push((
        "eye_region".into(),
        union(&["left_eye_region", "right_eye_region"]),
    ));
    named.push(("neck".into(), union(&["neck_front", "neck_back"])));
    let seeds: Vec<(u32, f64)> = topo.neck_loop.iter().map(|&i| (i, 0.0)).collect();
    let d = geodesic_distances(v, adj, &seeds, None);
    named.push((
        "boundary".into(),
        (0..n as u32).filter(|&i| d[i as usize] <= 0.015).collect(),
    ));
    Regions { label, named }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygon_and_interp_helpers() {
        let sq = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
        assert!(point_in_polygon([0.5, 0.5], &sq));
        assert!(!point_in_polygon([1.5, 0.5], &sq));
        assert_eq!(interp(0.5, &[0.0, 1.0], &[2.0, 4.0]), 3.0);
        assert_eq!(interp(-1.0, &[0.0, 1.0], &[2.0, 4.0]), 2.0);
        assert!((azimuth([0.0, 0.0, 1.0])).abs() < 1e-12);
        assert!(azimuth([1.0, 0.0, AXIS_Z]) > 89.0);
    }
}

//! The left/right symmetry map: the mirror vertex of every vertex, found by reflecting the
//! template through the plane `x = 0` and taking the nearest vertex of the same part (head
//! surface ↔ head surface, left eyeball ↔ right eyeball).

use rayon::prelude::*;

use super::mesh::{V3, dist, mirror_x};
use super::topology::FlameTopology;

/// Measurements of the symmetry map.
#[derive(Debug, Clone, Copy, Default)]
pub struct SymmetryReport {
    /// Vertices whose mirror's mirror is themselves.
    pub involutive: usize,
    /// Number of vertices.
    pub vertices: usize,
    /// Mean distance between a reflected vertex and its mirror vertex (metres).
    pub mean_distance: f64,
    /// Largest such distance (metres).
    pub max_distance: f64,
}

/// Computes the mirror vertex of every vertex.
pub fn symmetry_map(v: &[V3], topo: &FlameTopology) -> (Vec<u32>, SymmetryReport) {
    let n = v.len();
    // Part of each vertex: 0 head, 1 left eyeball, 2 right eyeball; mirrors swap 1 and 2.
    let mut part = vec![0u8; n];
    for &i in &topo.left_eyeball {
        part[i as usize] = 1;
    }
    for &i in &topo.right_eyeball {
        part[i as usize] = 2;
    }
    let map: Vec<(u32, f64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let want = match part[i] {
                1 => 2,
                2 => 1,
                p => p,
            };
            let m = mirror_x(v[i]);
            let mut best = (i as u32, f64::INFINITY);
            for (j, &q) in v.iter().enumerate() {
                if part[j] != want {
                    continue;
                }
                let d = dist(m, q);
                if d < best.1 {
                    best = (j as u32, d);
                }
            }
            best
        })
        .collect();
    let sym: Vec<u32> = map.iter().map(|m| m.0).collect();
    let involutive = (0..n)
        .filter(|&i| sym[sym[i] as usize] as usize == i)
        .count();
    let report = SymmetryReport {
        involutive,
        vertices: n,
        mean_distance: map.iter().map(|m| m.1).sum::<f64>() / n as f64,
        max_distance: map.iter().map(|m| m.1).fold(0.0, f64::max),
    };
    (sym, report)
}

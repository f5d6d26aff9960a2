//! Facts about the FLAME mesh derived from its geometry and topology: the head surface and
//! the two eyeballs (connected components), the mouth and neck boundary loops, the 68
//! landmarks on the template, and the upper/lower-lip split.

use super::BuildError;
use super::mesh::{self, V3, centroid, dist, geodesic_distances};

/// Which lip a vertex near the mouth belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LipSide {
    /// Not near the mouth opening.
    None,
    /// Upper lip (above the mouth corners along the surface).
    Upper,
    /// Lower lip.
    Lower,
}

/// Topological facts about a FLAME-topology mesh.
#[derive(Debug, Clone)]
pub struct FlameTopology {
    /// Vertices of the head surface (the largest connected component), ascending.
    pub head: Vec<u32>,
    /// Whether each vertex is on the head surface.
    pub is_head: Vec<bool>,
    /// Triangles of the head surface.
    pub head_triangles: Vec<[u32; 3]>,
    /// Index in the full triangle list of each entry of `head_triangles`.
    pub head_triangle_index: Vec<u32>,
    /// Vertices of the subject's left eyeball (+x side), ascending.
    pub left_eyeball: Vec<u32>,
    /// Vertices of the subject's right eyeball (−x side), ascending.
    pub right_eyeball: Vec<u32>,
    /// The mouth-opening boundary loop of the head surface.
    pub mouth_loop: Vec<u32>,
    /// The neck boundary loop of the head surface.
    pub neck_loop: Vec<u32>,
    /// Sorted neighbour lists.
    pub adjacency: Vec<Vec<u32>>,
}

impl FlameTopology {
    /// Analyses `vertices`/`triangles`; `mouth_hint` is a point near the mouth (the mean of the
    /// inner-lip landmarks) used to tell the mouth loop from the neck loop.
    pub fn new(
        vertices: &[V3],
        triangles: &[[u32; 3]],
        mouth_hint: V3,
    ) -> Result<Self, BuildError> {
        let n = vertices.len();
        let labels = mesh::connected_components(n, triangles);
        let ncomp = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); ncomp];
        for (v, &l) in labels.iter().enumerate() {
            members[l as usize].push(v as u32);
        }
        if ncomp != 3 {
            return Err(BuildError::Topology(format!(
                "the FLAME mesh has {ncomp} connected components; expected three (head and two eyeballs)"
            )));
        }
        members.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
        let head = members[0].clone();
        let (mut left, mut right) = (members[1].clone(), members[2].clone());
        if centroid(vertices, &left)[0] < centroid(vertices, &right)[0] {
            std::mem::swap(&mut left, &mut right);
        }
        let mut is_head = vec![false; n];
        for &v in &head {
            is_head[v as usize] = true;
        }
        let head_triangle_index: Vec<u32> = (0..triangles.len() as u32)
            .filter(|&t| is_head[triangles[t as usize][0] as usize])
            .collect();
        let head_triangles: Vec<[u32; 3]> = head_triangle_index
            .iter()
            .map(|&t| triangles[t as usize])
            .collect();
        let loops = mesh::boundary_loops(&head_triangles);
        if loops.len() != 2 {
            return Err(BuildError::Topology(format!(
                "the FLAME head surface has {} boundary loops; expected two (mouth and neck)",
                loops.len()
            )));
        }
        let d0 = dist(centroid(vertices, &loops[0]), mouth_hint);
        let d1 = dist(centroid(vertices, &loops[1]), mouth_hint);
        let (mouth_loop, neck_loop) = if d0 < d1 {
            (loops[0].clone(), loops[1].clone())
        } else {
            (loops[1].clone(), loops[0].clone())
        };
        Ok(Self {
            head,
            is_head,
            head_triangles,
            head_triangle_index,
            left_eyeball: left,
            right_eyeball: right,
            mouth_loop,
            neck_loop,
            adjacency: mesh::adjacency(n, triangles),
        })
    }
}

/// Splits a closed loop around an opening (mouth or eye) at its two extreme-x vertices into an
/// upper and a lower chain (the chain with the larger mean height is the upper one). Both
/// chains contain the two corner vertices.
pub fn split_loop(vertices: &[V3], lp: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let n = lp.len();
    let xs = |i: usize| vertices[lp[i] as usize][0];
    let (mut imin, mut imax) = (0, 0);
    for i in 0..n {
        if xs(i) < xs(imin) {
            imin = i;
        }
        if xs(i) > xs(imax) {
            imax = i;
        }
    }
    let walk = |from: usize, to: usize| {
        let mut c = vec![lp[from]];
        let mut i = from;
        while i != to {
            i = (i + 1) % n;
            c.push(lp[i]);
        }
        c
    };
    let a = walk(imin, imax);
    let b = walk(imax, imin);
    let mean_y =
        |c: &[u32]| c.iter().map(|&v| vertices[v as usize][1]).sum::<f64>() / c.len() as f64;
    if mean_y(&a) >= mean_y(&b) {
        (a, b)
    } else {
        (b, a)
    }
}

/// Labels vertices within `radius` (along the surface) of an opening as upper or lower, by
/// which chain of the opening's loop is nearer along the surface; `allowed` restricts the
/// walk (e.g. to one connected component).
pub fn label_opening_sides(
    vertices: &[V3],
    adjacency: &[Vec<u32>],
    lp: &[u32],
    radius: f64,
    allowed: Option<&[bool]>,
) -> Vec<LipSide> {
    let (upper, lower) = split_loop(vertices, lp);
    // Corners belong to both chains; leave them to neither side's seeds.
    let seeds =
        |c: &[u32]| -> Vec<(u32, f64)> { c[1..c.len() - 1].iter().map(|&v| (v, 0.0)).collect() };
    let du = geodesic_distances(vertices, adjacency, &seeds(&upper), allowed);
    let dl = geodesic_distances(vertices, adjacency, &seeds(&lower), allowed);
    (0..vertices.len())
        .map(|v| {
            let (a, b) = (du[v], dl[v]);
            if a.min(b) > radius {
                LipSide::None
            } else if a < b {
                LipSide::Upper
            } else if b < a {
                LipSide::Lower
            } else {
                LipSide::None
            }
        })
        .collect()
}

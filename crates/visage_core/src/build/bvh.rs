//! Closest-point queries on a triangle mesh through a bounding-volume hierarchy.

use super::mesh::{V3, add, dot, scale, sub};

/// The closest point of a triangle to a query point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceHit {
    /// Triangle index.
    pub triangle: u32,
    /// Barycentric coordinates of the closest point in that triangle.
    pub bary: V3,
    /// The closest point.
    pub point: V3,
    /// Squared distance from the query to `point`.
    pub dist2: f64,
}

/// Closest point of triangle `(a, b, c)` to `p`: barycentric coordinates and the point
/// (Ericson, *Real-Time Collision Detection*, 5.1.5).
pub fn closest_point_on_triangle(p: V3, a: V3, b: V3, c: V3) -> (V3, V3) {
    let ab = sub(b, a);
    let ac = sub(c, a);
    let ap = sub(p, a);
    let d1 = dot(ab, ap);
    let d2 = dot(ac, ap);
    if d1 <= 0.0 && d2 <= 0.0 {
        return ([1.0, 0.0, 0.0], a);
    }
    let bp = sub(p, b);
    let d3 = dot(ab, bp);
    let d4 = dot(ac, bp);
    if d3 >= 0.0 && d4 <= d3 {
        return ([0.0, 1.0, 0.0], b);
    }
    let vc = d1 * d4 - d3 * d2;
    if vc <= 0.0 && d1 >= 0.0 && d3 <= 0.0 {
        let v = d1 / (d1 - d3);
        return ([1.0 - v, v, 0.0], add(a, scale(ab, v)));
    }
    let cp = sub(p, c);
    let d5 = dot(ab, cp);
    let d6 = dot(ac, cp);
    if d6 >= 0.0 && d5 <= d6 {
        return ([0.0, 0.0, 1.0], c);
    }
    let vb = d5 * d2 - d1 * d6;
    if vb <= 0.0 && d2 >= 0.0 && d6 <= 0.0 {
        let w = d2 / (d2 - d6);
        return ([1.0 - w, 0.0, w], add(a, scale(ac, w)));
    }
    let va = d3 * d6 - d5 * d4;
    if va <= 0.0 && (d4 - d3) >= 0.0 && (d5 - d6) >= 0.0 {
        let w = (d4 - d3) / ((d4 - d3) + (d5 - d6));
        return ([0.0, 1.0 - w, w], add(b, scale(sub(c, b), w)));
    }
    let denom = va + vb + vc;
    if denom.abs() < 1e-300 {
        return ([1.0, 0.0, 0.0], a);
    }
    let v = vb / denom;
    let w = vc / denom;
    ([1.0 - v - w, v, w], add(a, add(scale(ab, v), scale(ac, w))))
}

#[derive(Debug, Clone)]
struct Node {
    lo: V3,
    hi: V3,
    /// Leaf: `start..start+count` into `order`; inner: children `left`, `left + 1`… stored as
    /// explicit indices.
    start: u32,
    count: u32,
    left: u32,
    right: u32,
}

/// A bounding-volume hierarchy over the triangles of a mesh.
#[derive(Debug, Clone)]
pub struct TriangleBvh {
    vertices: Vec<V3>,
    triangles: Vec<[u32; 3]>,
    nodes: Vec<Node>,
    order: Vec<u32>,
}

const LEAF: usize = 4;

impl TriangleBvh {
    /// Builds the hierarchy (deterministic median splits along the longest axis).
    pub fn new(vertices: &[V3], triangles: &[[u32; 3]]) -> Self {
        let centroids: Vec<V3> = triangles
            .iter()
            .map(|t| {
                let [a, b, c] = t.map(|i| vertices[i as usize]);
                scale(add(add(a, b), c), 1.0 / 3.0)
            })
            .collect();
        let mut bvh = Self {
            vertices: vertices.to_vec(),
            triangles: triangles.to_vec(),
            nodes: Vec::new(),
            order: (0..triangles.len() as u32).collect(),
        };
        if !triangles.is_empty() {
            bvh.build(0, triangles.len(), &centroids);
        }
        bvh
    }

    fn bounds(&self, start: usize, end: usize) -> (V3, V3) {
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for &t in &self.order[start..end] {
            for &i in &self.triangles[t as usize] {
                let p = self.vertices[i as usize];
                for c in 0..3 {
                    lo[c] = lo[c].min(p[c]);
                    hi[c] = hi[c].max(p[c]);
                }
            }
        }
        (lo, hi)
    }

    fn build(&mut self, start: usize, end: usize, centroids: &[V3]) -> u32 {
        let (lo, hi) = self.bounds(start, end);
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            lo,
            hi,
            start: start as u32,
            count: (end - start) as u32,
            left: 0,
            right: 0,
        });
        if end - start <= LEAF {
            return id;
        }
        let ext = sub(hi, lo);
        let axis = if ext[0] >= ext[1] && ext[0] >= ext[2] {
            0
        } else if ext[1] >= ext[2] {
            1
        } else {
            2
        };
        self.order[start..end].sort_by(|&a, &b| {
            centroids[a as usize][axis]
                .total_cmp(&centroids[b as usize][axis])
                .then(a.cmp(&b))
        });
        let mid = (start + end) / 2;
        let l = self.build(start, mid, centroids);
        let r = self.build(mid, end, centroids);
        let n = &mut self.nodes[id as usize];
        n.count = 0;
        n.left = l;
        n.right = r;
        id
    }

    /// The triangles the hierarchy was built over.
    pub fn triangles(&self) -> &[[u32; 3]] {
        &self.triangles
    }

    /// The vertices the hierarchy was built over.
    pub fn vertices(&self) -> &[V3] {
        &self.vertices
    }

    fn box_dist2(n: &Node, p: V3) -> f64 {
        (0..3)
            .map(|c| {
                let v = (n.lo[c] - p[c]).max(p[c] - n.hi[c]).max(0.0);
                v * v
            })
            .sum()
    }

    /// The closest point to `p` over the triangles accepted by `accept`, within `max_dist`.
    /// Ties are broken towards the lower triangle index.
    pub fn closest(
        &self,
        p: V3,
        max_dist: f64,
        accept: &dyn Fn(u32) -> bool,
    ) -> Option<SurfaceHit> {
        if self.nodes.is_empty() {
            return None;
        }
        let mut best: Option<SurfaceHit> = None;
        let mut best_d2 = max_dist * max_dist;
        let mut stack: Vec<u32> = Vec::with_capacity(64);
        stack.push(0);
        while let Some(id) = stack.pop() {
            let n = &self.nodes[id as usize];
            if Self::box_dist2(n, p) > best_d2 {
                continue;
            }
            if n.count > 0 {
                for &t in &self.order[n.start as usize..(n.start + n.count) as usize] {
                    if !accept(t) {
                        continue;
                    }
                    let [a, b, c] = self.triangles[t as usize].map(|i| self.vertices[i as usize]);
                    let (bary, q) = closest_point_on_triangle(p, a, b, c);
                    let d = sub(q, p);
                    let d2 = dot(d, d);
                    let better = match &best {
                        None => d2 <= best_d2,
                        Some(h) => d2 < h.dist2 || (d2 == h.dist2 && t < h.triangle),
                    };
                    if better {
                        best_d2 = d2;
                        best = Some(SurfaceHit {
                            triangle: t,
                            bary,
                            point: q,
                            dist2: d2,
                        });
                    }
                }
            } else {
                let (l, r) = (n.left, n.right);
                let dl = Self::box_dist2(&self.nodes[l as usize], p);
                let dr = Self::box_dist2(&self.nodes[r as usize], p);
                // Visit the nearer child first (pushed last).
                if dl <= dr {
                    stack.push(r);
                    stack.push(l);
                } else {
                    stack.push(l);
                    stack.push(r);
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_point_regions() {
        let (a, b, c) = ([0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);
        let (bary, q) = closest_point_on_triangle([0.2, 0.2, 1.0], a, b, c);
        assert!((q[0] - 0.2).abs() < 1e-12 && (q[1] - 0.2).abs() < 1e-12 && q[2] == 0.0);
        assert!((bary[0] - 0.6).abs() < 1e-12);
        let (_, q) = closest_point_on_triangle([-1.0, -1.0, 0.0], a, b, c);
        assert_eq!(q, a);
        let (bary, q) = closest_point_on_triangle([1.0, 1.0, 0.0], a, b, c);
        assert!((q[0] - 0.5).abs() < 1e-12 && (q[1] - 0.5).abs() < 1e-12);
        assert!(bary[0].abs() < 1e-12);
    }

    #[test]
    fn bvh_agrees_with_brute_force() {
        // A bumpy grid.
        let n = 12;
        let mut v = Vec::new();
        for j in 0..n {
            for i in 0..n {
                let (x, y) = (i as f64 / n as f64, j as f64 / n as f64);
                v.push([x, y, 0.1 * (7.0 * x).sin() * (5.0 * y).cos()]);
            }
        }
        let mut t = Vec::new();
        for j in 0..n - 1 {
            for i in 0..n - 1 {
                let a = (j * n + i) as u32;
                t.push([a, a + 1, a + n as u32 + 1]);
                t.push([a, a + n as u32 + 1, a + n as u32]);
            }
        }
        let bvh = TriangleBvh::new(&v, &t);
        for k in 0..40 {
            let p = [
                (k as f64 * 0.137) % 1.2 - 0.1,
                (k as f64 * 0.311) % 1.2 - 0.1,
                (k as f64 * 0.071) % 0.4 - 0.2,
            ];
            let hit = bvh.closest(p, f64::INFINITY, &|_| true).unwrap();
            let brute = t
                .iter()
                .map(|tr| {
                    let (_, q) = closest_point_on_triangle(
                        p,
                        v[tr[0] as usize],
                        v[tr[1] as usize],
                        v[tr[2] as usize],
                    );
                    dot(sub(q, p), sub(q, p))
                })
                .fold(f64::INFINITY, f64::min);
            assert!((hit.dist2 - brute).abs() < 1e-12);
        }
    }
}

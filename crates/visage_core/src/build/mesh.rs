//! Triangle-mesh utilities used by the model builder: adjacency, components, boundary loops,
//! normals, geodesic (Dijkstra) distances and the graph Laplacian. Everything is `f64` and
//! deterministic (no hash-map iteration, ties broken by index).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::sparse::CsrMatrix;

/// A 3-vector.
pub type V3 = [f64; 3];

/// `a + b`.
#[inline]
pub fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
/// `a - b`.
#[inline]
pub fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
/// `a * s`.
#[inline]
pub fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
/// Dot product.
#[inline]
pub fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
/// Cross product.
#[inline]
pub fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
/// Euclidean length.
#[inline]
pub fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}
/// Distance between two points.
#[inline]
pub fn dist(a: V3, b: V3) -> f64 {
    norm(sub(a, b))
}
/// `a / |a|` (zero stays zero).
#[inline]
pub fn normalize(a: V3) -> V3 {
    let n = norm(a);
    if n > 0.0 { scale(a, 1.0 / n) } else { a }
}
/// Mirror image through the plane `x = 0`.
#[inline]
pub fn mirror_x(a: V3) -> V3 {
    [-a[0], a[1], a[2]]
}
/// The point with barycentric coordinates `b` in triangle `t` of `v`.
#[inline]
pub fn bary_point(v: &[V3], t: [u32; 3], b: V3) -> V3 {
    let mut p = [0.0; 3];
    for k in 0..3 {
        let q = v[t[k] as usize];
        for c in 0..3 {
            p[c] += b[k] * q[c];
        }
    }
    p
}
/// Mean of the points `idx` of `v`.
pub fn centroid(v: &[V3], idx: &[u32]) -> V3 {
    let mut c = [0.0; 3];
    for &i in idx {
        c = add(c, v[i as usize]);
    }
    scale(c, 1.0 / idx.len().max(1) as f64)
}

/// A triangle mesh in `f64`.
#[derive(Debug, Clone)]
pub struct TriMesh {
    /// Vertex positions.
    pub vertices: Vec<V3>,
    /// Triangles (counter-clockwise seen from outside).
    pub triangles: Vec<[u32; 3]>,
}

impl TriMesh {
    /// Number of vertices.
    pub fn num_vertices(&self) -> usize {
        self.vertices.len()
    }

    /// Sorted neighbour list of every vertex.
    pub fn adjacency(&self) -> Vec<Vec<u32>> {
        adjacency(self.vertices.len(), &self.triangles)
    }

    /// Unit normal of every triangle (zero for degenerate ones).
    pub fn triangle_normals(&self) -> Vec<V3> {
        triangle_normals(&self.vertices, &self.triangles)
    }

    /// Area-weighted unit vertex normals.
    pub fn vertex_normals(&self) -> Vec<V3> {
        vertex_normals(&self.vertices, &self.triangles)
    }
}

/// Sorted neighbour lists of a triangle mesh with `n` vertices.
pub fn adjacency(n: usize, triangles: &[[u32; 3]]) -> Vec<Vec<u32>> {
    let mut adj = vec![Vec::new(); n];
    for t in triangles {
        for k in 0..3 {
            let (a, b) = (t[k], t[(k + 1) % 3]);
            adj[a as usize].push(b);
            adj[b as usize].push(a);
        }
    }
    for a in &mut adj {
        a.sort_unstable();
        a.dedup();
    }
    adj
}

/// Unit normal of every triangle (zero for degenerate ones).
pub fn triangle_normals(v: &[V3], triangles: &[[u32; 3]]) -> Vec<V3> {
    triangles
        .iter()
        .map(|t| {
            let [a, b, c] = t.map(|i| v[i as usize]);
            normalize(cross(sub(b, a), sub(c, a)))
        })
        .collect()
}

/// Area-weighted unit vertex normals.
pub fn vertex_normals(v: &[V3], triangles: &[[u32; 3]]) -> Vec<V3> {
    let mut n = vec![[0.0; 3]; v.len()];
    for t in triangles {
        let [a, b, c] = t.map(|i| v[i as usize]);
        let f = cross(sub(b, a), sub(c, a));
        for &i in t {
            n[i as usize] = add(n[i as usize], f);
        }
    }
    n.into_iter().map(normalize).collect()
}

/// Connected components: a label per vertex, labels numbered by their smallest vertex.
pub fn connected_components(n: usize, triangles: &[[u32; 3]]) -> Vec<u32> {
    let adj = adjacency(n, triangles);
    let mut label = vec![u32::MAX; n];
    let mut next = 0;
    let mut stack = Vec::new();
    for s in 0..n {
        if label[s] != u32::MAX {
            continue;
        }
        label[s] = next;
        stack.push(s);
        while let Some(v) = stack.pop() {
            for &w in &adj[v] {
                if label[w as usize] == u32::MAX {
                    label[w as usize] = next;
                    stack.push(w as usize);
                }
            }
        }
        next += 1;
    }
    label
}

/// Closed boundary loops, each in the triangles' winding order, starting at its smallest
/// vertex; loops sorted by their first vertex.
pub fn boundary_loops(triangles: &[[u32; 3]]) -> Vec<Vec<u32>> {
    let mut edges: Vec<(u32, u32)> = triangles
        .iter()
        .flat_map(|t| (0..3).map(move |k| (t[k], t[(k + 1) % 3])))
        .collect();
    edges.sort_unstable();
    let has = |a: u32, b: u32| edges.binary_search(&(a, b)).is_ok();
    let mut next: Vec<(u32, u32)> = edges
        .iter()
        .filter(|&&(a, b)| !has(b, a))
        .copied()
        .collect();
    next.sort_unstable();
    let mut used = vec![false; next.len()];
    let mut loops = Vec::new();
    for s in 0..next.len() {
        if used[s] {
            continue;
        }
        let start = next[s].0;
        let mut lp = vec![start];
        used[s] = true;
        let mut cur = next[s].1;
        let mut guard = 0;
        while cur != start && guard <= next.len() {
            lp.push(cur);
            match next.binary_search_by(|e| e.0.cmp(&cur).then(Ordering::Equal)) {
                Ok(i) => {
                    // Pick the first unused outgoing boundary edge of `cur`.
                    let mut j = i;
                    while j > 0 && next[j - 1].0 == cur {
                        j -= 1;
                    }
                    let mut found = None;
                    while j < next.len() && next[j].0 == cur {
                        if !used[j] {
                            found = Some(j);
                            break;
                        }
                        j += 1;
                    }
                    match found {
                        Some(j) => {
                            used[j] = true;
                            cur = next[j].1;
                        }
                        None => break,
                    }
                }
                Err(_) => break,
            }
            guard += 1;
        }
        loops.push(lp);
    }
    loops
}

#[derive(PartialEq)]
struct HeapItem(f64, u32);
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on distance, ties by vertex index.
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// Shortest-path distances along mesh edges from a set of seeds (each with a start distance),
/// optionally limited to vertices where `allowed` is true. Unreached vertices get `f64::INFINITY`.
pub fn geodesic_distances(
    v: &[V3],
    adj: &[Vec<u32>],
    seeds: &[(u32, f64)],
    allowed: Option<&[bool]>,
) -> Vec<f64> {
    let mut d = vec![f64::INFINITY; v.len()];
    let mut heap = BinaryHeap::new();
    for &(s, d0) in seeds {
        if d0 < d[s as usize] {
            d[s as usize] = d0;
            heap.push(HeapItem(d0, s));
        }
    }
    while let Some(HeapItem(dv, u)) = heap.pop() {
        if dv > d[u as usize] {
            continue;
        }
        for &w in &adj[u as usize] {
            if let Some(a) = allowed
                && !a[w as usize]
            {
                continue;
            }
            let nd = dv + dist(v[u as usize], v[w as usize]);
            if nd < d[w as usize] {
                d[w as usize] = nd;
                heap.push(HeapItem(nd, w));
            }
        }
    }
    d
}

/// The uniform graph Laplacian `L = D - A` of a mesh with `n` vertices.
pub fn graph_laplacian(adj: &[Vec<u32>]) -> CsrMatrix {
    let mut trip = Vec::new();
    for (i, nb) in adj.iter().enumerate() {
        trip.push((i, i, nb.len() as f64));
        for &j in nb {
            trip.push((i, j as usize, -1.0));
        }
    }
    CsrMatrix::from_triplets(adj.len(), adj.len(), trip)
}

/// Area of a triangle.
pub fn triangle_area(a: V3, b: V3, c: V3) -> f64 {
    0.5 * norm(cross(sub(b, a), sub(c, a)))
}

/// Least-squares sphere through points: centre and radius.
pub fn fit_sphere(points: &[V3]) -> (V3, f64) {
    // |p|² = 2 p·c + (r² - |c|²): linear in (c, k).
    let mut ata = nalgebra::Matrix4::<f64>::zeros();
    let mut atb = nalgebra::Vector4::<f64>::zeros();
    for p in points {
        let row = nalgebra::Vector4::new(2.0 * p[0], 2.0 * p[1], 2.0 * p[2], 1.0);
        ata += row * row.transpose();
        atb += row * dot(*p, *p);
    }
    let x = ata
        .lu()
        .solve(&atb)
        .unwrap_or_else(nalgebra::Vector4::zeros);
    let c = [x[0], x[1], x[2]];
    let r = (x[3] + dot(c, c)).max(0.0).sqrt();
    (c, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> TriMesh {
        TriMesh {
            vertices: vec![
                [0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [1.0, 1.0, 0.0],
                [0.0, 1.0, 0.0],
            ],
            triangles: vec![[0, 1, 2], [0, 2, 3]],
        }
    }

    #[test]
    fn square_has_one_boundary_loop_and_component() {
        let m = square();
        let loops = boundary_loops(&m.triangles);
        assert_eq!(loops, vec![vec![0, 1, 2, 3]]);
        assert_eq!(connected_components(4, &m.triangles), vec![0, 0, 0, 0]);
        let n = m.vertex_normals();
        assert!((n[0][2] - 1.0).abs() < 1e-12);
        let adj = m.adjacency();
        let d = geodesic_distances(&m.vertices, &adj, &[(0, 0.0)], None);
        assert!((d[2] - 2f64.sqrt()).abs() < 1e-12);
        assert!((d[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn sphere_fit_recovers_centre_and_radius() {
        let c = [0.1, -0.2, 0.3];
        let pts: Vec<V3> = (0..50)
            .map(|i| {
                let t = i as f64 * 0.7;
                let u = i as f64 * 0.31;
                add(
                    c,
                    scale([t.cos() * u.sin(), t.sin() * u.sin(), u.cos()], 0.5),
                )
            })
            .collect();
        let (cc, r) = fit_sphere(&pts);
        assert!(dist(cc, c) < 1e-9 && (r - 0.5).abs() < 1e-9);
    }
}

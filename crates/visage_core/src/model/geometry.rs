//! Small mesh-geometry helpers shared by the model, the renderer and the plugin.

/// `a - b`.
#[inline]
pub fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// Cross product `a × b`.
#[inline]
pub fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Dot product.
#[inline]
pub fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Euclidean length.
#[inline]
pub fn norm(a: [f32; 3]) -> f32 {
    dot(a, a).sqrt()
}

/// Area-weighted vertex normals (unit length; zero for vertices on no non-degenerate triangle).
pub fn vertex_normals(vertices: &[[f32; 3]], triangles: &[[u32; 3]]) -> Vec<[f32; 3]> {
    let mut normals = vec![[0.0f32; 3]; vertices.len()];
    vertex_normals_into(vertices, triangles, &mut normals);
    normals
}

/// [`vertex_normals`] into a caller-owned buffer (no allocation); `out.len()` must equal
/// `vertices.len()`.
pub fn vertex_normals_into(vertices: &[[f32; 3]], triangles: &[[u32; 3]], out: &mut [[f32; 3]]) {
    assert_eq!(out.len(), vertices.len(), "normal buffer size");
    out.fill([0.0; 3]);
    for t in triangles {
        let [a, b, c] = t.map(|i| vertices[i as usize]);
        // The cross product's length is twice the area: area weighting for free.
        let n = cross(sub(b, a), sub(c, a));
        for &i in t {
            let o = &mut out[i as usize];
            o[0] += n[0];
            o[1] += n[1];
            o[2] += n[2];
        }
    }
    for n in out.iter_mut() {
        let l = norm(*n);
        if l > 0.0 {
            *n = [n[0] / l, n[1] / l, n[2] / l];
        }
    }
}

/// Area of each triangle.
pub fn face_areas(vertices: &[[f32; 3]], triangles: &[[u32; 3]]) -> Vec<f32> {
    triangles
        .iter()
        .map(|t| {
            let [a, b, c] = t.map(|i| vertices[i as usize]);
            0.5 * norm(cross(sub(b, a), sub(c, a)))
        })
        .collect()
}

/// The point with barycentric coordinates `bary` on triangle `tri`.
#[inline]
pub fn barycentric_point(vertices: &[[f32; 3]], tri: [u32; 3], bary: [f32; 3]) -> [f32; 3] {
    let mut p = [0.0; 3];
    for (k, &vi) in tri.iter().enumerate() {
        let v = vertices[vi as usize];
        for c in 0..3 {
            p[c] += bary[k] * v[c];
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_of_a_square_point_up() {
        let v = [
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
        ];
        let t = [[0, 1, 2], [0, 2, 3]];
        let n = vertex_normals(&v, &t);
        for n in n {
            assert!((n[2] - 1.0).abs() < 1e-6 && n[0].abs() < 1e-6 && n[1].abs() < 1e-6);
        }
        let a = face_areas(&v, &t);
        assert!((a[0] - 0.5).abs() < 1e-6 && (a[1] - 0.5).abs() < 1e-6);
        let p = barycentric_point(&v, [0, 1, 2], [0.2, 0.3, 0.5]);
        assert!((p[0] - 0.8).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6);
    }
}

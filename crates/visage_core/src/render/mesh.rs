//! Procedural meshes for tests, benchmarks and pictures (no external data).
//!
//! Triangles are counter-clockwise seen from outside, like FLAME's.

use std::collections::HashMap;

/// An icosphere of radius 1 centred at the origin: 12 vertices at `subdivisions = 0`, then
/// `10·4ⁿ + 2`. Returns `(vertices, triangles)`.
pub fn icosphere(subdivisions: u32) -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
    let t = (1.0 + 5.0f64.sqrt()) / 2.0;
    let raw = [
        [-1.0, t, 0.0],
        [1.0, t, 0.0],
        [-1.0, -t, 0.0],
        [1.0, -t, 0.0],
        [0.0, -1.0, t],
        [0.0, 1.0, t],
        [0.0, -1.0, -t],
        [0.0, 1.0, -t],
        [t, 0.0, -1.0],
        [t, 0.0, 1.0],
        [-t, 0.0, -1.0],
        [-t, 0.0, 1.0],
    ];
    let mut verts: Vec<[f64; 3]> = raw.iter().map(|p| normalise(*p)).collect();
    let mut tris: Vec<[u32; 3]> = vec![
        [0, 11, 5],
        [0, 5, 1],
        [0, 1, 7],
        [0, 7, 10],
        [0, 10, 11],
        [1, 5, 9],
        [5, 11, 4],
        [11, 10, 2],
        [10, 7, 6],
        [7, 1, 8],
        [3, 9, 4],
        [3, 4, 2],
        [3, 2, 6],
        [3, 6, 8],
        [3, 8, 9],
        [4, 9, 5],
        [2, 4, 11],
        [6, 2, 10],
        [8, 6, 7],
        [9, 8, 1],
    ];
    for _ in 0..subdivisions {
        let mut cache: HashMap<(u32, u32), u32> = HashMap::new();
        let mut mid = |a: u32, b: u32, verts: &mut Vec<[f64; 3]>| -> u32 {
            let key = (a.min(b), a.max(b));
            *cache.entry(key).or_insert_with(|| {
                let (p, q) = (verts[a as usize], verts[b as usize]);
                verts.push(normalise([p[0] + q[0], p[1] + q[1], p[2] + q[2]]));
                (verts.len() - 1) as u32
            })
        };
        let mut next = Vec::with_capacity(tris.len() * 4);
        for &[a, b, c] in &tris {
            let ab = mid(a, b, &mut verts);
            let bc = mid(b, c, &mut verts);
            let ca = mid(c, a, &mut verts);
            next.extend_from_slice(&[[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]);
        }
        tris = next;
    }
    let verts = verts
        .iter()
        .map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
        .collect();
    (verts, tris)
}

fn normalise(p: [f64; 3]) -> [f64; 3] {
    let l = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
    [p[0] / l, p[1] / l, p[2] / l]
}

/// Rings of [`procedural_head`].
pub const HEAD_RINGS: usize = 81;
/// Vertices per ring of [`procedural_head`].
pub const HEAD_SEGMENTS: usize = 62;

/// A head-sized closed-top, open-neck ellipsoid with a nose bump and the vertex count of FLAME:
/// one crown vertex plus 81 rings of 62 vertices = 5023 vertices, 9982 triangles (FLAME: 9976).
/// Metres, `y` up, face towards `+z`, centred near the origin. For benchmarks and pictures where
/// the shipped model is not wanted.
pub fn procedural_head() -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
    let (a, b, c) = (0.078f64, 0.115f64, 0.095f64);
    let theta_max = 0.82 * std::f64::consts::PI;
    let mut verts = Vec::with_capacity(1 + HEAD_RINGS * HEAD_SEGMENTS);
    verts.push([0.0f32, b as f32, 0.0]);
    for i in 1..=HEAD_RINGS {
        let th = theta_max * i as f64 / HEAD_RINGS as f64;
        for j in 0..HEAD_SEGMENTS {
            let ph = std::f64::consts::TAU * j as f64 / HEAD_SEGMENTS as f64;
            let (x, y, mut z) = (
                a * th.sin() * ph.sin(),
                b * th.cos(),
                c * th.sin() * ph.cos(),
            );
            // Nose: a bump on the front, slightly below the equator.
            let dth = (th - 0.55 * std::f64::consts::PI) / 0.09;
            let dph = ph.sin() / 0.12;
            if ph.cos() > 0.0 {
                z += 0.022 * (-(dth * dth + dph * dph)).exp();
            }
            verts.push([x as f32, y as f32, z as f32]);
        }
    }
    let s = HEAD_SEGMENTS as u32;
    let ring = |i: u32, j: u32| 1 + (i - 1) * s + (j % s);
    let mut tris = Vec::with_capacity(HEAD_SEGMENTS * (2 * HEAD_RINGS - 1));
    for j in 0..s {
        tris.push([0, ring(1, j), ring(1, j + 1)]);
    }
    for i in 1..HEAD_RINGS as u32 {
        for j in 0..s {
            let (u0, u1, l0, l1) = (
                ring(i, j),
                ring(i, j + 1),
                ring(i + 1, j),
                ring(i + 1, j + 1),
            );
            tris.push([u0, l0, l1]);
            tris.push([u0, l1, u1]);
        }
    }
    (verts, tris)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outward(verts: &[[f32; 3]], tris: &[[u32; 3]], centre: [f32; 3]) {
        for t in tris {
            let p: Vec<[f32; 3]> = t.iter().map(|&i| verts[i as usize]).collect();
            let a = [p[1][0] - p[0][0], p[1][1] - p[0][1], p[1][2] - p[0][2]];
            let b = [p[2][0] - p[0][0], p[2][1] - p[0][1], p[2][2] - p[0][2]];
            let n = [
                a[1] * b[2] - a[2] * b[1],
                a[2] * b[0] - a[0] * b[2],
                a[0] * b[1] - a[1] * b[0],
            ];
            let c = [
                (p[0][0] + p[1][0] + p[2][0]) / 3.0 - centre[0],
                (p[0][1] + p[1][1] + p[2][1]) / 3.0 - centre[1],
                (p[0][2] + p[1][2] + p[2][2]) / 3.0 - centre[2],
            ];
            assert!(
                n[0] * c[0] + n[1] * c[1] + n[2] * c[2] > 0.0,
                "inward triangle {t:?}"
            );
        }
    }

    #[test]
    fn icosphere_counts_and_winding() {
        let (v, t) = icosphere(2);
        assert_eq!((v.len(), t.len()), (162, 320));
        outward(&v, &t, [0.0; 3]);
    }

    #[test]
    fn head_counts_and_winding() {
        let (v, t) = procedural_head();
        assert_eq!((v.len(), t.len()), (5023, 9982));
        outward(&v, &t, [0.0; 3]);
    }
}

//! Visage's UV layout: one chart for the whole head surface with a single seam running up the
//! back of the head (from the neck's rim at the nape to the crown), and one chart per eyeball
//! (seam at the back of the eye).
//!
//! Each chart is cut into a disk and embedded with Tutte's method: the disk's boundary is
//! placed on a circle by arc length and every interior vertex is a positive-weight average of
//! its neighbours (clamped cotangent weights). With positive weights and a convex boundary the
//! embedding has no flipped or overlapping triangles (Tutte 1963; Floater 1997). The mouth
//! opening is closed by a temporary fan around a virtual centre vertex while embedding, so the
//! lips stay inside the face chart.
//!
//! Layout in `[0, 1]²` (v grows downwards): the head chart is a disk of radius 0.48 centred in
//! the square, face upright and seen from the front; the eyeball charts are small disks in the
//! two top corners (subject's right eye top-left, left eye top-right).

use super::mesh::{V3, add, cross, dist, dot, geodesic_distances, norm, scale, sub};
use super::sparse::{CsrMatrix, conjugate_gradient};
use super::topology::FlameTopology;
use crate::model::UvLayout;

/// Radius of the head chart in UV units.
pub const HEAD_RADIUS: f64 = 0.48;
/// Radius of each eyeball chart in UV units.
pub const EYE_RADIUS: f64 = 0.085;
/// Face triangles count this many times their size when distributing texels.
pub const FACE_IMPORTANCE: f64 = 8.0;
/// Stretch-equalising reweighting iterations.
pub const STRETCH_ITERATIONS: usize = 12;

/// A triangle mesh cut open into a disk: new vertex list (`origin[k]` is the original vertex of
/// chart vertex `k`) and triangles over chart vertices.
struct Chart {
    origin: Vec<u32>,
    positions: Vec<V3>,
    triangles: Vec<[u32; 3]>,
    /// For each triangle, its index in the model's triangle list (`u32::MAX` for fill fans).
    source: Vec<u32>,
    /// Embedding on the unit disk.
    uv: Vec<[f64; 2]>,
    /// Placement of the disk in the UV square: centre and radius.
    centre: [f64; 2],
    radius: f64,
}

/// Shortest path along edges from `from` to `to`, restricted to `allowed` vertices.
fn shortest_path(v: &[V3], adj: &[Vec<u32>], from: u32, to: u32, allowed: &[bool]) -> Vec<u32> {
    let d = geodesic_distances(v, adj, &[(to, 0.0)], Some(allowed));
    let mut path = vec![from];
    let mut cur = from;
    let mut guard = 0;
    while cur != to && guard < v.len() {
        let next = adj[cur as usize]
            .iter()
            .copied()
            .filter(|&w| d[w as usize].is_finite())
            .min_by(|&a, &b| {
                (d[a as usize] + dist(v[cur as usize], v[a as usize]))
                    .total_cmp(&(d[b as usize] + dist(v[cur as usize], v[b as usize])))
                    .then(a.cmp(&b))
            });
        match next {
            Some(w) => {
                path.push(w);
                cur = w;
            }
            None => break,
        }
        guard += 1;
    }
    path
}

/// Cuts `triangles` open along `path` (a simple edge path). Every path vertex except the last
/// gets a copy; triangles on the side where `side(triangle centroid) > 0` use the copies.
fn cut_along_path(
    positions: &[V3],
    triangles: &[[u32; 3]],
    path: &[u32],
    side: &dyn Fn(V3) -> f64,
) -> (Vec<V3>, Vec<u32>, Vec<[u32; 3]>) {
    let mut pos = positions.to_vec();
    let mut origin: Vec<u32> = (0..positions.len() as u32).collect();
    let mut tris = triangles.to_vec();
    for &s in &path[..path.len() - 1] {
        let copy = pos.len() as u32;
        pos.push(positions[s as usize]);
        origin.push(s);
        for t in tris.iter_mut() {
            if let Some(k) = t.iter().position(|&x| x == s) {
                let c = scale(
                    add(
                        add(pos[t[0] as usize], pos[t[1] as usize]),
                        pos[t[2] as usize],
                    ),
                    1.0 / 3.0,
                );
                if side(c) > 0.0 {
                    t[k] = copy;
                }
            }
        }
    }
    (pos, origin, tris)
}

/// Sander's L2 stretch of a triangle mapped from 3D `q` to 2D `p`.
fn l2_stretch(q: [V3; 3], p: [[f64; 2]; 3]) -> f64 {
    let area2 =
        (p[1][0] - p[0][0]) * (p[2][1] - p[0][1]) - (p[2][0] - p[0][0]) * (p[1][1] - p[0][1]);
    if area2 <= 1e-300 {
        return 1e6;
    }
    let (s, t) = (p.map(|x| x[0]), p.map(|x| x[1]));
    let ss = scale(
        add(
            add(scale(q[0], t[1] - t[2]), scale(q[1], t[2] - t[0])),
            scale(q[2], t[0] - t[1]),
        ),
        1.0 / area2,
    );
    let st = scale(
        add(
            add(scale(q[0], s[2] - s[1]), scale(q[1], s[0] - s[2])),
            scale(q[2], s[1] - s[0]),
        ),
        1.0 / area2,
    );
    (0.5 * (dot(ss, ss) + dot(st, st))).sqrt()
}

/// Embedding of a disk-topology chart: boundary on the unit circle by arc length, starting at
/// `start` at angle `start_angle` and running in the loop's order; interior vertices are
/// positive-weight averages of their neighbours (Tutte), starting from clamped cotangent
/// weights and reweighted `iterations` times to even out stretch (Yoshizawa, Belyaev &
/// Seidel 2004, symmetrised), with each triangle's 3D size scaled by `importance` so the
/// important parts get more room. Weights stay positive, so no triangle flips.
fn embed_disk(
    pos: &[V3],
    tris: &[[u32; 3]],
    start: u32,
    start_angle: f64,
    importance: &[f64],
    iterations: usize,
) -> Result<Vec<[f64; 2]>, String> {
    let n = pos.len();
    let loops = super::mesh::boundary_loops(tris);
    if loops.len() != 1 {
        return Err(format!(
            "a UV chart has {} boundary loops; expected one",
            loops.len()
        ));
    }
    let mut lp = loops[0].clone();
    let k = lp
        .iter()
        .position(|&x| x == start)
        .ok_or("the chart's start vertex is not on its boundary")?;
    lp.rotate_left(k);
    let total: f64 = (0..lp.len())
        .map(|i| dist(pos[lp[i] as usize], pos[lp[(i + 1) % lp.len()] as usize]))
        .sum();
    let mut uv = vec![[0.0; 2]; n];
    let mut on_boundary = vec![false; n];
    let mut acc = 0.0;
    for i in 0..lp.len() {
        // Boundary loops follow the triangles' (counter-clockwise) winding, so increasing
        // angles keep the chart's triangles counter-clockwise in (u, y-up).
        let a = start_angle + 2.0 * std::f64::consts::PI * acc / total;
        uv[lp[i] as usize] = [a.cos(), a.sin()];
        on_boundary[lp[i] as usize] = true;
        acc += dist(pos[lp[i] as usize], pos[lp[(i + 1) % lp.len()] as usize]);
    }
    // Undirected edges with clamped cotangent weights (summed over both adjacent triangles).
    let mut edges: Vec<(u32, u32, f64)> = Vec::new();
    for t in tris {
        for c in 0..3 {
            let (i, j, o) = (t[c], t[(c + 1) % 3], t[(c + 2) % 3]);
            let (a, b) = (
                sub(pos[i as usize], pos[o as usize]),
                sub(pos[j as usize], pos[o as usize]),
            );
            let cot = dot(a, b) / norm(cross(a, b)).max(1e-18);
            edges.push((i.min(j), i.max(j), 0.5 * cot));
        }
    }
    edges.sort_by_key(|e| (e.0, e.1));
    let mut merged: Vec<(u32, u32, f64)> = Vec::new();
    for e in edges {
        match merged.last_mut() {
            Some(m) if m.0 == e.0 && m.1 == e.1 => m.2 += e.2,
            _ => merged.push(e),
        }
    }
    let mut weights: Vec<f64> = merged.iter().map(|e| e.2.max(0.0) + 0.02).collect();
    let mut free_index = vec![usize::MAX; n];
    let mut free = Vec::new();
    for i in 0..n {
        if !on_boundary[i] {
            free_index[i] = free.len();
            free.push(i);
        }
    }
    for iteration in 0..=iterations {
        let mut trip = Vec::new();
        let mut rhs = vec![[0.0; 2]; free.len()];
        for (e, &w) in merged.iter().zip(&weights) {
            let (i, j) = (e.0 as usize, e.1 as usize);
            for (a, b) in [(i, j), (j, i)] {
                if on_boundary[a] {
                    continue;
                }
                let fa = free_index[a];
                trip.push((fa, fa, w));
                if on_boundary[b] {
                    rhs[fa][0] += w * uv[b][0];
                    rhs[fa][1] += w * uv[b][1];
                } else {
                    trip.push((fa, free_index[b], -w));
                }
            }
        }
        let a = CsrMatrix::from_triplets(free.len(), free.len(), trip);
        for c in 0..2 {
            let b: Vec<f64> = rhs.iter().map(|r| r[c]).collect();
            let mut x: Vec<f64> = free.iter().map(|&i| uv[i][c]).collect();
            let info = conjugate_gradient(&a, &b, &mut x, 50000, 1e-13);
            if info.relative_residual > 1e-9 {
                return Err(format!(
                    "the UV solve did not converge (residual {:.2e})",
                    info.relative_residual
                ));
            }
            for (k, &i) in free.iter().enumerate() {
                uv[i][c] = x[k];
            }
        }
        if iteration == iterations {
            break;
        }
        // Per-vertex stretch (area-weighted RMS over incident triangles, importance-scaled).
        let mut num = vec![0.0; n];
        let mut den = vec![0.0; n];
        for (t, tri) in tris.iter().enumerate() {
            let q = tri.map(|i| scale(pos[i as usize], importance[t]));
            let p = tri.map(|i| uv[i as usize]);
            let s = l2_stretch(q, p);
            let area = super::mesh::triangle_area(q[0], q[1], q[2]);
            for &i in tri {
                num[i as usize] += area * s * s;
                den[i as usize] += area;
            }
        }
        let sigma: Vec<f64> = (0..n)
            .map(|i| (num[i] / den[i].max(1e-300)).sqrt())
            .collect();
        for (e, w) in merged.iter().zip(weights.iter_mut()) {
            *w /= (sigma[e.0 as usize] * sigma[e.1 as usize])
                .sqrt()
                .max(1e-12);
        }
        // Keep the weights' scale near one.
        let mean = weights.iter().sum::<f64>() / weights.len() as f64;
        for w in weights.iter_mut() {
            *w /= mean;
        }
    }
    Ok(uv)
}

/// Measurements of the UV layout.
#[derive(Debug, Clone, Copy, Default)]
pub struct UvReport {
    /// Triangles whose UV orientation disagrees with the rest (must be zero).
    pub flipped: usize,
    /// Smallest UV triangle area relative to the mean.
    pub min_area_ratio: f64,
    /// Share of the used UV area that belongs to face-region triangles.
    pub face_share_of_charts: f64,
    /// Share of the whole `[0, 1]²` square covered by face-region triangles.
    pub face_share_of_square: f64,
    /// Number of UV coordinates (vertices plus seam copies).
    pub coords: usize,
}

/// Signed area of a UV triangle in (u, y-up) coordinates (positive = counter-clockwise).
pub fn uv_signed_area(a: [f32; 2], b: [f32; 2], c: [f32; 2]) -> f64 {
    let (a, b, c) = (a.map(f64::from), b.map(f64::from), c.map(f64::from));
    // v grows downwards, so y = −v.
    0.5 * ((b[0] - a[0]) * (a[1] - c[1]) - (a[1] - b[1]) * (c[0] - a[0]))
}

/// Builds the UV layout. `face` marks face-region vertices (for the texel-share measure).
pub fn build_uv(
    v: &[V3],
    triangles: &[[u32; 3]],
    topo: &FlameTopology,
    face: &[bool],
) -> Result<(UvLayout, UvReport), String> {
    let mut charts: Vec<Chart> = Vec::new();

    // Head chart.
    {
        let head = &topo.head;
        let mut local = vec![u32::MAX; v.len()];
        for (k, &g) in head.iter().enumerate() {
            local[g as usize] = k as u32;
        }
        let mut pos: Vec<V3> = head.iter().map(|&g| v[g as usize]).collect();
        let mut tris: Vec<[u32; 3]> = topo
            .head_triangles
            .iter()
            .map(|t| t.map(|g| local[g as usize]))
            .collect();
        let mut source: Vec<u32> = topo.head_triangle_index.clone();
        // Close the mouth with a fan around its centroid; each fan triangle runs along its rim
        // edge opposite to the lip triangle that owns the edge.
        let centre = pos.len() as u32;
        let mloop: Vec<u32> = topo.mouth_loop.iter().map(|&g| local[g as usize]).collect();
        let c = scale(
            mloop.iter().fold([0.0; 3], |a, &i| add(a, pos[i as usize])),
            1.0 / mloop.len() as f64,
        );
        pos.push(c);
        for i in 0..mloop.len() {
            let (a, b) = (mloop[i], mloop[(i + 1) % mloop.len()]);
            tris.push([b, a, centre]);
            source.push(u32::MAX);
        }
        // Seam: from the rearmost vertex of the neck rim up the back midline to the crown.
        let adj = super::mesh::adjacency(pos.len(), &tris);
        let start = topo
            .neck_loop
            .iter()
            .map(|&g| local[g as usize])
            .min_by(|&a, &b| {
                let (p, q) = (pos[a as usize], pos[b as usize]);
                (p[2] + 2.0 * p[0].abs())
                    .total_cmp(&(q[2] + 2.0 * q[0].abs()))
                    .then(a.cmp(&b))
            })
            .ok_or("the neck rim is empty")?;
        let crown = (0..centre)
            .filter(|&i| pos[i as usize][0].abs() < 0.01)
            .max_by(|&a, &b| {
                pos[a as usize][1]
                    .total_cmp(&pos[b as usize][1])
                    .then(b.cmp(&a))
            })
            .ok_or("no crown vertex")?;
        let band: Vec<bool> = (0..pos.len())
            .map(|i| i as u32 != centre && pos[i][0].abs() < 0.012 && pos[i][2] < 0.0)
            .collect();
        let mut allowed = band;
        allowed[start as usize] = true;
        allowed[crown as usize] = true;
        let path = shortest_path(&pos, &adj, start, crown, &allowed);
        if path.last() != Some(&crown) {
            return Err("no seam path up the back of the head".into());
        }
        let (cpos, origin, ctris) = cut_along_path(&pos, &tris, &path, &|p| p[0]);
        let importance: Vec<f64> = ctris
            .iter()
            .map(|t| {
                let all_face = t.iter().all(|&c| {
                    let o = origin[c as usize];
                    o != centre && face[head[o as usize] as usize]
                });
                if all_face { FACE_IMPORTANCE } else { 1.0 }
            })
            .collect();
        let uv = embed_disk(
            &cpos,
            &ctris,
            crown,
            std::f64::consts::FRAC_PI_2,
            &importance,
            STRETCH_ITERATIONS,
        )?;
        let origin: Vec<u32> = origin
            .iter()
            .map(|&l| {
                if l == centre {
                    u32::MAX
                } else {
                    head[l as usize]
                }
            })
            .collect();
        charts.push(Chart {
            origin,
            positions: cpos,
            triangles: ctris,
            source,
            uv,
            centre: [0.5, 0.5],
            radius: HEAD_RADIUS,
        });
    }

    // Eyeball charts: seam from the rearmost vertex 70° towards the top.
    for (eye, centre_uv) in [
        (&topo.right_eyeball, [EYE_RADIUS + 0.01, EYE_RADIUS + 0.01]),
        (
            &topo.left_eyeball,
            [1.0 - EYE_RADIUS - 0.01, EYE_RADIUS + 0.01],
        ),
    ] {
        let mut local = vec![u32::MAX; v.len()];
        for (k, &g) in eye.iter().enumerate() {
            local[g as usize] = k as u32;
        }
        let pos: Vec<V3> = eye.iter().map(|&g| v[g as usize]).collect();
        let mut tris = Vec::new();
        let mut source = Vec::new();
        for (t, tri) in triangles.iter().enumerate() {
            if local[tri[0] as usize] != u32::MAX {
                tris.push(tri.map(|g| local[g as usize]));
                source.push(t as u32);
            }
        }
        let (c, r) = super::mesh::fit_sphere(&pos);
        let adj = super::mesh::adjacency(pos.len(), &tris);
        let back = (0..pos.len() as u32)
            .min_by(|&a, &b| {
                pos[a as usize][2]
                    .total_cmp(&pos[b as usize][2])
                    .then(a.cmp(&b))
            })
            .ok_or("empty eyeball")?;
        let target = add(
            c,
            [
                0.0,
                r * 70f64.to_radians().sin(),
                -r * 70f64.to_radians().cos(),
            ],
        );
        let top = (0..pos.len() as u32)
            .min_by(|&a, &b| {
                dist(pos[a as usize], target)
                    .total_cmp(&dist(pos[b as usize], target))
                    .then(a.cmp(&b))
            })
            .ok_or("empty eyeball")?;
        let allowed: Vec<bool> = pos
            .iter()
            .map(|p| (p[0] - c[0]).abs() < 0.3 * r || p[2] < c[2])
            .collect();
        let path = shortest_path(&pos, &adj, back, top, &allowed);
        if path.last() != Some(&top) || path.len() < 2 {
            return Err("no seam path on an eyeball".into());
        }
        let cx = c[0];
        let (cpos, origin, ctris) = cut_along_path(&pos, &tris, &path, &|p| p[0] - cx);
        let uv = embed_disk(
            &cpos,
            &ctris,
            top,
            std::f64::consts::FRAC_PI_2,
            &vec![1.0; ctris.len()],
            STRETCH_ITERATIONS,
        )?;
        let origin: Vec<u32> = origin.iter().map(|&l| eye[l as usize]).collect();
        charts.push(Chart {
            origin,
            positions: cpos,
            triangles: ctris,
            source,
            uv,
            centre: centre_uv,
            radius: EYE_RADIUS,
        });
    }

    // Pack: coordinates per chart vertex, per-corner indices per model triangle.
    let mut coords: Vec<[f32; 2]> = Vec::new();
    let mut faces = vec![[u32::MAX; 3]; triangles.len()];
    for chart in &charts {
        let (uv, centre, radius) = (&chart.uv, chart.centre, chart.radius);
        // Only vertices used by real triangles get coordinates; map chart vertex → coord.
        let mut index = vec![u32::MAX; chart.positions.len()];
        for (t, tri) in chart.triangles.iter().enumerate() {
            let src = chart.source[t];
            if src == u32::MAX {
                continue;
            }
            let mut f = [0u32; 3];
            for k in 0..3 {
                let cv = tri[k] as usize;
                if index[cv] == u32::MAX {
                    index[cv] = coords.len() as u32;
                    let p = uv[cv];
                    coords.push([
                        (centre[0] + radius * p[0]) as f32,
                        (centre[1] - radius * p[1]) as f32,
                    ]);
                }
                f[k] = index[cv];
            }
            // The chart triangle may be a rotation of the model triangle's corner order.
            let model = triangles[src as usize];
            let rot = (0..3)
                .find(|&r| chart.origin[tri[r] as usize] == model[0])
                .ok_or("a chart triangle lost its corners")?;
            faces[src as usize] = [f[rot], f[(rot + 1) % 3], f[(rot + 2) % 3]];
        }
    }
    if faces.iter().any(|f| f[0] == u32::MAX) {
        return Err("some triangles are in no UV chart".into());
    }
    let areas: Vec<f64> = faces
        .iter()
        .map(|f| {
            uv_signed_area(
                coords[f[0] as usize],
                coords[f[1] as usize],
                coords[f[2] as usize],
            )
        })
        .collect();
    let flipped = areas.iter().filter(|&&a| a <= 0.0).count();
    let total: f64 = areas.iter().map(|a| a.abs()).sum();
    let mean = total / areas.len() as f64;
    let face_area: f64 = faces
        .iter()
        .enumerate()
        .filter(|(t, _)| triangles[*t].iter().all(|&i| face[i as usize]))
        .map(|(t, _)| areas[t].abs())
        .sum();
    let report = UvReport {
        flipped,
        min_area_ratio: areas.iter().copied().fold(f64::MAX, f64::min) / mean,
        face_share_of_charts: face_area / total,
        face_share_of_square: face_area,
        coords: coords.len(),
    };
    Ok((UvLayout { coords, faces }, report))
}

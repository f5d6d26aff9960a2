//! Tests of the CPU photometric pass: finite-difference gradient checks for every parameter
//! group, z-buffer order, masking, and recovery of known parameters with Adam.

use visage_core::render::mesh::icosphere;
use visage_core::render::sh::ambient;
use visage_core::render::{
    Camera, FitProblem, FitStage, FitVariables, Fitter, GroupSchedule, LossConfig, NO_TRIANGLE,
    ParamGroup, PassConfig, PhotometricPass, RenderError, RobustLoss, Scene, Target, VertexModel,
    VertexOffsets,
};

const W: u32 = 64;
const H: u32 = 64;
const NPIX: usize = (W * H) as usize;

/// Deterministic generator (SplitMix64) so every test is reproducible.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Icosphere of radius 0.1 m around the origin (the camera translation moves it in front).
fn sphere(subdivisions: u32) -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
    let (v, t) = icosphere(subdivisions);
    let v = v
        .iter()
        .map(|p| [0.1 * p[0], 0.1 * p[1], 0.1 * p[2]])
        .collect();
    (v, t)
}

fn albedo_pattern(verts: &[[f32; 3]]) -> Vec<[f32; 3]> {
    verts
        .iter()
        .map(|p| {
            [
                0.5 + 0.3 * (40.0 * p[0]).sin(),
                0.45 + 0.25 * (35.0 * p[1] + 1.0).sin(),
                0.4 + 0.3 * (30.0 * (p[0] + p[2])).cos(),
            ]
        })
        .collect()
}

fn test_sh() -> [[f32; 3]; 9] {
    let mut l = ambient([0.7, 0.65, 0.6]);
    let extra = [
        [0.3, 0.25, 0.2],
        [0.9, 0.8, 0.85],
        [-0.25, -0.2, -0.3],
        [0.15, 0.1, 0.12],
        [-0.1, -0.12, -0.08],
        [0.2, 0.25, 0.15],
        [0.12, 0.1, 0.14],
        [-0.18, -0.15, -0.2],
    ];
    l[1..].copy_from_slice(&extra);
    l
}

fn perspective() -> Camera {
    Camera::Perspective {
        fx: 120.0,
        fy: 125.0,
        cx: 31.3,
        cy: 32.6,
        translation: [0.0043, -0.0031, -0.5],
    }
}

fn weak() -> Camera {
    Camera::WeakPerspective {
        scale: 241.3,
        offset: [31.73, 32.21],
    }
}

fn noise_image(seed: u64) -> Vec<[f32; 3]> {
    let mut rng = Rng(seed);
    (0..NPIX)
        .map(|_| [rng.uniform(), rng.uniform(), rng.uniform()])
        .collect()
}

/// The photo of the gradient checks: the render itself plus a random offset of magnitude 0.1 to
/// 0.3 and random sign per channel, so that no residual sits near the kink of the L1 penalty at
/// zero (finite differences across a kink do not measure the derivative).
fn offset_image(rendered: &[[f32; 3]], seed: u64) -> Vec<[f32; 3]> {
    let mut rng = Rng(seed);
    rendered
        .iter()
        .map(|c| {
            std::array::from_fn(|k| {
                let m = 0.1 + 0.2 * rng.uniform();
                if rng.uniform() < 0.5 {
                    c[k] - m
                } else {
                    c[k] + m
                }
            })
        })
        .collect()
}

/// Six separate, differently tilted triangles (no shared edges): inside each triangle the
/// rendered colour is a smooth function of every parameter, so finite differences converge
/// cleanly for global parameters such as the camera.
fn shards() -> (Vec<[f32; 3]>, Vec<[u32; 3]>) {
    let mut verts = Vec::new();
    let mut tris = Vec::new();
    let mut rng = Rng(5);
    for (i, &(cx, cy)) in [
        (-0.075f32, -0.05f32),
        (0.0, -0.05),
        (0.075, -0.05),
        (-0.075, 0.05),
        (0.0, 0.05),
        (0.075, 0.05),
    ]
    .iter()
    .enumerate()
    {
        let base = verts.len() as u32;
        for k in 0..3 {
            let a = 0.4 + i as f32 + k as f32 * std::f32::consts::TAU / 3.0;
            verts.push([
                cx + 0.034 * a.cos(),
                cy + 0.034 * a.sin(),
                0.03 * (rng.uniform() - 0.5),
            ]);
        }
        tris.push([base, base + 1, base + 2]);
    }
    (verts, tris)
}

/// A face mask that is 0 on pixels within one pixel of the silhouette (where finite differences
/// see coverage changes the analytic gradient ignores by definition) and varies in `[0.5, 1]` on
/// covered pixels (and on uncovered ones too when `outside`).
fn interior_mask(pass: &PhotometricPass, seed: u64, outside: bool) -> Vec<f32> {
    let px = pass.pixels();
    let covered = |x: i32, y: i32| {
        x >= 0
            && y >= 0
            && x < W as i32
            && y < H as i32
            && px[(y * W as i32 + x) as usize].triangle != NO_TRIANGLE
    };
    let mut rng = Rng(seed);
    let mut m = vec![0.0; NPIX];
    for y in 0..H as i32 {
        for x in 0..W as i32 {
            let inner = (-1..=1).all(|dy| (-1..=1).all(|dx| covered(x + dx, y + dy)));
            let outer = (-1..=1).all(|dy| (-1..=1).all(|dx| !covered(x + dx, y + dy)));
            let r = 0.5 + 0.5 * rng.uniform();
            if inner || (outside && outer) {
                m[(y * W as i32 + x) as usize] = r;
            }
        }
    }
    m
}

/// A disc-shaped occlusion mask (1 inside) that covers part of the sphere.
fn occlusion_disc(cx: f32, cy: f32, r: f32) -> Vec<f32> {
    let mut m = vec![0.0; NPIX];
    for y in 0..H {
        for x in 0..W {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            if dx * dx + dy * dy < r * r {
                m[(y * W + x) as usize] = 1.0;
            }
        }
    }
    m
}

/// Everything a gradient check needs.
struct Problem {
    verts: Vec<[f32; 3]>,
    albedo: Vec<[f32; 3]>,
    sh: [[f32; 3]; 9],
    camera: Camera,
    image: Vec<[f32; 3]>,
    face: Vec<f32>,
    occ: Vec<f32>,
    loss: LossConfig,
    pass: PhotometricPass,
}

impl Problem {
    fn new(camera: Camera, loss: LossConfig, cull: bool) -> Self {
        Self::with_mesh(sphere(2), camera, loss, cull)
    }

    fn with_mesh(
        (verts, tris): (Vec<[f32; 3]>, Vec<[u32; 3]>),
        camera: Camera,
        loss: LossConfig,
        cull: bool,
    ) -> Self {
        let config = PassConfig {
            cull_backfaces: cull,
            band_rows: 7,
            ..PassConfig::default()
        };
        let mut pass = PhotometricPass::new(W, H, &tris, verts.len(), config).unwrap();
        let albedo = albedo_pattern(&verts);
        let sh = test_sh();
        let scene = Scene {
            vertices: &verts,
            albedo: &albedo,
            sh: &sh,
            camera,
        };
        let rendered = pass
            .render(&scene, loss.background.unwrap_or([0.0; 3]))
            .unwrap()
            .to_vec();
        let face = interior_mask(&pass, 7, loss.background.is_some());
        Problem {
            verts,
            albedo,
            sh,
            camera,
            image: offset_image(&rendered, 11),
            face,
            occ: occlusion_disc(40.0, 26.0, 6.0),
            loss,
            pass,
        }
    }

    fn eval(&mut self) -> f64 {
        let scene = Scene {
            vertices: &self.verts,
            albedo: &self.albedo,
            sh: &self.sh,
            camera: self.camera,
        };
        let target = Target {
            image: &self.image,
            face_mask: Some(&self.face),
            occlusion_mask: Some(&self.occ),
        };
        self.pass.forward(&scene, &target, &self.loss).unwrap();
        self.pass.loss_f64()
    }

    fn grads(&mut self) -> (Vec<f32>, Vec<f32>, Vec<f32>, [f32; 7]) {
        let scene = Scene {
            vertices: &self.verts,
            albedo: &self.albedo,
            sh: &self.sh,
            camera: self.camera,
        };
        let target = Target {
            image: &self.image,
            face_mask: Some(&self.face),
            occlusion_mask: Some(&self.occ),
        };
        let (_, g) = self
            .pass
            .loss_and_grad(&scene, &target, &self.loss)
            .unwrap();
        (
            g.vertices.as_flattened().to_vec(),
            g.albedo.as_flattened().to_vec(),
            g.sh.as_flattened().to_vec(),
            g.camera.params(),
        )
    }
}

/// Central differences of `p.eval()` over the parameters selected by `get`, compared with
/// `analytic`. Returns the relative L2 error `‖g − g_fd‖ / ‖g_fd‖`.
fn fd_check(
    p: &mut Problem,
    what: &str,
    analytic: &[f32],
    h: f32,
    get: fn(&mut Problem) -> &mut [f32],
) -> f64 {
    let n = get(p).len();
    assert_eq!(n, analytic.len());
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    let mut worst = (0usize, 0.0f64, 0.0f64);
    for i in 0..n {
        let x0 = get(p)[i];
        get(p)[i] = x0 + h;
        let lp = p.eval();
        get(p)[i] = x0 - h;
        let lm = p.eval();
        get(p)[i] = x0;
        let fd = (lp - lm) / (2.0 * h as f64);
        let d = analytic[i] as f64 - fd;
        num += d * d;
        den += fd * fd;
        if d.abs() > (worst.1 - worst.2).abs() {
            worst = (i, analytic[i] as f64, fd);
        }
    }
    let rel = (num / den).sqrt();
    println!(
        "{what}: relative L2 error {rel:.2e} over {n} parameters (|g_fd| = {:.3e}); worst #{} analytic {:.4e} fd {:.4e}",
        den.sqrt(),
        worst.0,
        worst.1,
        worst.2
    );
    assert!(den > 0.0, "{what}: the finite-difference gradient is zero");
    rel
}

fn verts_of(p: &mut Problem) -> &mut [f32] {
    p.verts.as_flattened_mut()
}
fn albedo_of(p: &mut Problem) -> &mut [f32] {
    p.albedo.as_flattened_mut()
}
fn sh_of(p: &mut Problem) -> &mut [f32] {
    p.sh.as_flattened_mut()
}

/// Checks one camera parameter slot by central differences; returns the relative error.
fn fd_camera(p: &mut Problem, slot: usize, h: f32, analytic: f32) -> f64 {
    let base = p.camera;
    let mut q = base.params();
    q[slot] += h;
    p.camera.set_params(&q);
    let lp = p.eval();
    q[slot] -= 2.0 * h;
    p.camera.set_params(&q);
    let lm = p.eval();
    p.camera = base;
    let fd = (lp - lm) / (2.0 * h as f64);
    let rel = (analytic as f64 - fd).abs() / fd.abs().max(1e-12);
    println!("camera slot {slot}: analytic {analytic:.5e} fd {fd:.5e} rel {rel:.2e}");
    rel
}

fn l1() -> LossConfig {
    LossConfig::default()
}

fn huber() -> LossConfig {
    LossConfig {
        penalty: RobustLoss::Huber { delta: 0.2 },
        background: None,
    }
}

fn geman_mcclure() -> LossConfig {
    LossConfig {
        penalty: RobustLoss::GemanMcClure { sigma: 0.3 },
        background: None,
    }
}

/// Finite-difference steps: vertices (m), linear appearance parameters (albedo, SH),
/// focal/principal point (px; scale px/m), translation (m; weak-perspective offset px).
const H_VERT: f32 = 2e-4;
const H_FOCAL: f32 = 0.1;
const H_TRANS: f32 = 1e-3;

/// Full check on the separate-triangle scene: every group, every camera slot. Inside one
/// triangle the colour is smooth in all parameters, so the tolerances are tight.
fn check_shards(camera: Camera, loss: LossConfig) {
    // Albedo and SH enter the L1 loss linearly (no residual crosses zero at these steps), so a
    // large step is exact; the robust penalties are curved and get a smaller step and a looser
    // tolerance.
    let (h_app, tol_app) = if loss.penalty == RobustLoss::L1 {
        (1e-2, 1e-4)
    } else {
        (1e-3, 1e-3)
    };
    let mut p = Problem::with_mesh(shards(), camera, loss, true);
    let (gv, ga, gs, gc) = p.grads();
    assert!(fd_check(&mut p, "vertices", &gv, H_VERT, verts_of) < 1e-3);
    assert!(fd_check(&mut p, "albedo", &ga, h_app, albedo_of) < tol_app);
    assert!(fd_check(&mut p, "sh", &gs, h_app, sh_of) < tol_app);
    let steps = if camera.is_perspective() {
        vec![
            H_FOCAL, H_FOCAL, H_FOCAL, H_FOCAL, H_TRANS, H_TRANS, H_TRANS,
        ]
    } else {
        vec![H_FOCAL, H_FOCAL, H_FOCAL]
    };
    for (slot, h) in steps.iter().enumerate() {
        assert!(
            fd_camera(&mut p, slot, *h, gc[slot]) < 2e-3,
            "camera slot {slot}"
        );
    }
    assert!(gc[steps.len()..].iter().all(|&g| g == 0.0));
}

#[test]
fn gradients_perspective_l1() {
    check_shards(perspective(), l1());
}

#[test]
fn gradients_weak_perspective_l1() {
    check_shards(weak(), l1());
}

#[test]
fn gradients_huber() {
    check_shards(perspective(), huber());
}

#[test]
fn gradients_geman_mcclure() {
    check_shards(perspective(), geman_mcclure());
}

/// The icosphere: shared vertices, normals averaged over neighbouring triangles, back faces
/// culled. Moving a vertex makes some pixel centres change triangle across interior edges,
/// where the interpolated colour is continuous but its derivative jumps; finite differences
/// average the two sides there, so the vertex tolerance is looser (measured about 5e-3).
fn check_sphere(camera: Camera, loss: LossConfig, cull: bool) {
    let (h_app, tol_app) = if loss.penalty == RobustLoss::L1 {
        (1e-2, 1e-4)
    } else {
        (1e-3, 1e-3)
    };
    let mut p = Problem::new(camera, loss, cull);
    let (gv, ga, gs, gc) = p.grads();
    assert!(fd_check(&mut p, "vertices", &gv, 2e-5, verts_of) < 2e-2);
    assert!(fd_check(&mut p, "albedo", &ga, h_app, albedo_of) < tol_app);
    assert!(fd_check(&mut p, "sh", &gs, h_app, sh_of) < tol_app);
    // A translation moves every vertex alike and leaves the normals unchanged, so its gradient
    // is exactly the sum of the vertex gradients (the normal terms cancel).
    if camera.is_perspective() {
        let mut sum = [0.0f64; 3];
        for g in gv.chunks_exact(3) {
            for k in 0..3 {
                sum[k] += g[k] as f64;
            }
        }
        for k in 0..3 {
            let d = (sum[k] - gc[4 + k] as f64).abs();
            println!(
                "translation {k}: {} vs sum of vertex gradients {}",
                gc[4 + k],
                sum[k]
            );
            assert!(
                d < 1e-4 * (gc[4 + k].abs() as f64 + 1e-2),
                "translation {k}"
            );
        }
    }
}

#[test]
fn gradients_sphere_perspective_l1() {
    check_sphere(perspective(), l1(), true);
}

#[test]
fn gradients_sphere_weak_perspective_geman_mcclure() {
    check_sphere(weak(), geman_mcclure(), true);
}

#[test]
fn gradients_sphere_with_background_and_no_culling() {
    let loss = LossConfig {
        penalty: RobustLoss::L1,
        background: Some([0.2, 0.3, 0.4]),
    };
    check_sphere(perspective(), loss, false);
}

/// Vertices, triangles and albedo of a test mesh.
type ColouredMesh = (Vec<[f32; 3]>, Vec<[u32; 3]>, Vec<[f32; 3]>);

/// Two front-facing triangles overlapping at the image centre, red in front, green behind.
fn two_triangles(front_first: bool) -> ColouredMesh {
    // Counter-clockwise seen from +z (the camera side).
    let near = [[-0.05, -0.05, 0.0], [0.05, -0.05, 0.0], [0.0, 0.05, 0.0]];
    let far = [[-0.2, -0.02, -0.1], [0.02, -0.2, -0.1], [0.1, 0.1, -0.1]];
    let (a, b) = if front_first {
        (near, far)
    } else {
        (far, near)
    };
    let verts: Vec<[f32; 3]> = a.iter().chain(b.iter()).copied().collect();
    let red = [1.0, 0.0, 0.0];
    let green = [0.0, 1.0, 0.0];
    let (ca, cb) = if front_first {
        (red, green)
    } else {
        (green, red)
    };
    let albedo = vec![ca, ca, ca, cb, cb, cb];
    (verts, vec![[0, 1, 2], [3, 4, 5]], albedo)
}

#[test]
fn zbuffer_front_triangle_wins() {
    let sh = ambient([1.0, 1.0, 1.0]);
    for camera in [perspective(), weak()] {
        for front_first in [true, false] {
            let (verts, tris, albedo) = two_triangles(front_first);
            let mut pass =
                PhotometricPass::new(W, H, &tris, verts.len(), PassConfig::default()).unwrap();
            let scene = Scene {
                vertices: &verts,
                albedo: &albedo,
                sh: &sh,
                camera,
            };
            let img = pass.render(&scene, [0.0, 0.0, 1.0]).unwrap().to_vec();
            let front = if front_first { 0 } else { 1 };
            // Pixel at the centre of the near triangle: the near triangle, red.
            let [u, v, _, _] = project(&camera, [0.0, -0.01, 0.0]);
            let i = (v as usize) * W as usize + u as usize;
            assert_eq!(pass.pixels()[i].triangle, front, "{camera:?} {front_first}");
            assert!((img[i][0] - 1.0).abs() < 1e-5 && img[i][1].abs() < 1e-5);
            // A pixel only the far triangle covers: green.
            let [u, v, _, _] = project(&camera, [-0.1, 0.0, -0.1]);
            let i = (v as usize) * W as usize + u as usize;
            assert_eq!(pass.pixels()[i].triangle, 1 - front);
            assert!((img[i][1] - 1.0).abs() < 1e-5 && img[i][0].abs() < 1e-5);
            // The corner: background.
            assert_eq!(pass.pixels()[0].triangle, NO_TRIANGLE);
            assert_eq!(img[0], [0.0, 0.0, 1.0]);
            // Barycentrics of covered pixels sum to one.
            for px in pass.pixels().iter().filter(|p| p.triangle != NO_TRIANGLE) {
                let s: f32 = px.bary.iter().sum();
                assert!((s - 1.0).abs() < 1e-5);
            }
        }
    }
}

/// Projection used by tests to find pixels (same formulas as the documentation).
fn project(camera: &Camera, p: [f32; 3]) -> [f32; 4] {
    match *camera {
        Camera::Perspective {
            fx,
            fy,
            cx,
            cy,
            translation: t,
        } => {
            let z = -(p[2] + t[2]);
            [
                cx + fx * (p[0] + t[0]) / z,
                cy - fy * (p[1] + t[1]) / z,
                z,
                1.0 / z,
            ]
        }
        Camera::WeakPerspective { scale, offset } => [
            scale * p[0] + offset[0],
            -scale * p[1] + offset[1],
            p[2],
            1.0,
        ],
    }
}

#[test]
fn perspective_correct_barycentrics_interpolate_depth_exactly() {
    // A triangle strongly slanted in depth: the interpolated camera-frame point at each pixel
    // (barycentrics applied to the 3-D corners) must project back onto the pixel centre.
    let verts = vec![[-0.1, -0.1, 0.2], [0.1, -0.1, -0.3], [0.0, 0.12, 0.0]];
    let tris = vec![[0u32, 1, 2]];
    let albedo = vec![[0.5; 3]; 3];
    let sh = ambient([1.0; 3]);
    let camera = perspective();
    let mut pass = PhotometricPass::new(W, H, &tris, 3, PassConfig::default()).unwrap();
    let scene = Scene {
        vertices: &verts,
        albedo: &albedo,
        sh: &sh,
        camera,
    };
    pass.render(&scene, [0.0; 3]).unwrap();
    let mut n = 0;
    for (i, px) in pass.pixels().iter().enumerate() {
        if px.triangle == NO_TRIANGLE {
            continue;
        }
        let b = px.bary;
        let p: [f32; 3] =
            std::array::from_fn(|c| b[0] * verts[0][c] + b[1] * verts[1][c] + b[2] * verts[2][c]);
        let [u, v, _, _] = project(&camera, p);
        let (x, y) = ((i % W as usize) as f32 + 0.5, (i / W as usize) as f32 + 0.5);
        assert!(
            (u - x).abs() < 2e-3 && (v - y).abs() < 2e-3,
            "{u},{v} vs {x},{y}"
        );
        n += 1;
    }
    assert!(n > 200, "only {n} pixels covered");
}

#[test]
fn masked_loss_ignores_occluded_and_uncovered_pixels() {
    let mut p = Problem::new(perspective(), l1(), true);
    let scene_loss = |p: &mut Problem| {
        let scene = Scene {
            vertices: &p.verts,
            albedo: &p.albedo,
            sh: &p.sh,
            camera: p.camera,
        };
        let target = Target {
            image: &p.image,
            face_mask: None,
            occlusion_mask: Some(&p.occ),
        };
        let (l, g) = p.pass.loss_and_grad(&scene, &target, &l1()).unwrap();
        (l, g.vertices.clone(), g.albedo.clone())
    };
    let (l0, gv0, ga0) = scene_loss(&mut p);
    let covered: Vec<bool> = p
        .pass
        .pixels()
        .iter()
        .map(|x| x.triangle != NO_TRIANGLE)
        .collect();
    let occluded_covered = (0..NPIX).filter(|&i| p.occ[i] == 1.0 && covered[i]).count();
    assert!(
        occluded_covered > 50,
        "the occluder must hide part of the sphere"
    );
    // Change the photo under the occluder and outside the sphere: nothing changes.
    let mut rng = Rng(99);
    for i in 0..NPIX {
        if p.occ[i] == 1.0 || !covered[i] {
            p.image[i] = [rng.uniform(), rng.uniform(), rng.uniform()];
        }
    }
    let (l1_, gv1, ga1) = scene_loss(&mut p);
    assert_eq!(l0, l1_);
    assert_eq!(gv0, gv1);
    assert_eq!(ga0, ga1);
    // Changing one visible covered pixel does change the loss.
    let i = (0..NPIX).find(|&i| p.occ[i] == 0.0 && covered[i]).unwrap();
    p.image[i][0] += 0.5;
    let (l2, _, _) = scene_loss(&mut p);
    assert!((l2 - l0).abs() > 1e-6, "{l2} vs {l0}");
    // The residual map and per-pixel penalties reproduce the loss.
    let res = p.pass.residuals();
    let col = p.pass.colour();
    let mut num = 0.0f64;
    for j in 0..NPIX {
        if covered[j] {
            for c in 0..3 {
                assert!((res[j][c] - (col[j][c] - p.image[j][c])).abs() < 1e-6);
            }
        } else {
            assert_eq!(res[j], [0.0; 3]);
        }
        num += (p.pass.weights()[j] * p.pass.pixel_loss()[j]) as f64;
    }
    assert!((num / p.pass.weight_sum() - l2 as f64).abs() < 1e-6);
}

#[test]
fn background_enters_the_loss_when_set() {
    let mut p = Problem::new(perspective(), l1(), true);
    let with_bg = LossConfig {
        penalty: RobustLoss::L1,
        background: Some([0.1, 0.1, 0.1]),
    };
    let scene = Scene {
        vertices: &p.verts,
        albedo: &p.albedo,
        sh: &p.sh,
        camera: p.camera,
    };
    let target = Target {
        image: &p.image,
        face_mask: None,
        occlusion_mask: None,
    };
    p.pass.forward(&scene, &target, &with_bg).unwrap();
    assert!((p.pass.weight_sum() - NPIX as f64).abs() < 1e-9);
    p.pass.forward(&scene, &target, &l1()).unwrap();
    let covered = p
        .pass
        .pixels()
        .iter()
        .filter(|x| x.triangle != NO_TRIANGLE)
        .count();
    assert!((p.pass.weight_sum() - covered as f64).abs() < 1e-9);
    assert!(covered > 1000 && covered < NPIX / 2 + 1000);
}

#[test]
fn bad_inputs_are_errors() {
    let (verts, tris) = sphere(1);
    assert!(matches!(
        PhotometricPass::new(0, 10, &tris, verts.len(), PassConfig::default()),
        Err(RenderError::ImageSize { .. })
    ));
    let bad = vec![[0u32, 1, 9999]];
    let err = PhotometricPass::new(8, 8, &bad, verts.len(), PassConfig::default()).unwrap_err();
    assert!(err.to_string().contains("vertex 9999"), "{err}");
    let mut pass = PhotometricPass::new(W, H, &tris, verts.len(), PassConfig::default()).unwrap();
    let albedo = albedo_pattern(&verts);
    let sh = test_sh();
    let image = noise_image(1);
    let target = Target {
        image: &image,
        face_mask: None,
        occlusion_mask: None,
    };
    let short = &verts[1..];
    let scene = Scene {
        vertices: short,
        albedo: &albedo,
        sh: &sh,
        camera: perspective(),
    };
    let err = pass.forward(&scene, &target, &l1()).unwrap_err();
    assert!(err.to_string().contains("vertex array"), "{err}");
    let mut nan = verts.clone();
    nan[3][1] = f32::NAN;
    let scene = Scene {
        vertices: &nan,
        albedo: &albedo,
        sh: &sh,
        camera: perspective(),
    };
    assert!(pass.forward(&scene, &target, &l1()).is_err());
    let scene = Scene {
        vertices: &verts,
        albedo: &albedo,
        sh: &sh,
        camera: Camera::perspective_centered(-5.0, W, H),
    };
    let err = pass.render(&scene, [0.0; 3]).unwrap_err();
    assert!(err.to_string().contains("focal"), "{err}");
    let small = &image[..10];
    let target = Target {
        image: small,
        face_mask: None,
        occlusion_mask: None,
    };
    let scene = Scene {
        vertices: &verts,
        albedo: &albedo,
        sh: &sh,
        camera: perspective(),
    };
    assert!(matches!(
        pass.forward(&scene, &target, &l1()),
        Err(RenderError::Length { .. })
    ));
    let huber0 = LossConfig {
        penalty: RobustLoss::Huber { delta: 0.0 },
        background: None,
    };
    let target = Target {
        image: &image,
        face_mask: None,
        occlusion_mask: None,
    };
    assert!(pass.forward(&scene, &target, &huber0).is_err());
}

/// Renders the target image of a recovery test.
fn render_target(
    pass: &mut PhotometricPass,
    verts: &[[f32; 3]],
    albedo: &[[f32; 3]],
    sh: &[[f32; 3]; 9],
    camera: Camera,
) -> Vec<[f32; 3]> {
    let scene = Scene {
        vertices: verts,
        albedo,
        sh,
        camera,
    };
    pass.render(&scene, [0.0; 3]).unwrap().to_vec()
}

fn stage(steps: u32, groups: Vec<GroupSchedule>) -> FitStage {
    FitStage {
        name: "test".into(),
        steps,
        groups,
    }
}

fn run_fit(
    problem: &FitProblem,
    verts: &[[f32; 3]],
    tris: &[[u32; 3]],
    vars: &mut FitVariables,
    image: &[[f32; 3]],
) -> (f32, PhotometricPass) {
    let mut pass = PhotometricPass::new(W, H, tris, verts.len(), PassConfig::default()).unwrap();
    let mut model = VertexOffsets {
        base: verts.to_vec(),
    };
    let mut fitter = Fitter::new(&model, vars, problem.adam).unwrap();
    let target = Target {
        image,
        face_mask: None,
        occlusion_mask: None,
    };
    let mut first = None;
    let last = fitter
        .run(problem, &mut pass, &mut model, vars, &target, |r| {
            first.get_or_insert(r.photometric);
        })
        .unwrap();
    println!("photometric loss {:.5} -> {last:.6}", first.unwrap());
    (last, pass)
}

/// Per-vertex coverage: the sum over pixels of the vertex's barycentric weight.
fn vertex_coverage(pass: &PhotometricPass, n: usize) -> Vec<f32> {
    let mut cov = vec![0.0; n];
    for px in pass.pixels() {
        if px.triangle != NO_TRIANGLE {
            let t = pass.triangles()[px.triangle as usize];
            for k in 0..3 {
                cov[t[k] as usize] += px.bary[k];
            }
        }
    }
    cov
}

#[test]
fn adam_recovers_albedo() {
    let (verts, tris) = sphere(2);
    let sh = test_sh();
    let camera = perspective();
    let truth = albedo_pattern(&verts);
    let mut pass = PhotometricPass::new(W, H, &tris, verts.len(), PassConfig::default()).unwrap();
    let image = render_target(&mut pass, &verts, &truth, &sh, camera);
    let mut vars = FitVariables {
        shape: vec![0.0; verts.len() * 3],
        albedo: vec![[0.5; 3]; verts.len()],
        sh,
        camera,
    };
    let problem = FitProblem {
        loss: LossConfig::default(),
        photometric_weight: 1.0,
        adam: Default::default(),
        stages: vec![
            stage(
                250,
                vec![GroupSchedule {
                    group: ParamGroup::Albedo,
                    lr: 0.02,
                    l2: 0.0,
                }],
            ),
            stage(
                100,
                vec![GroupSchedule {
                    group: ParamGroup::Albedo,
                    lr: 0.003,
                    l2: 0.0,
                }],
            ),
        ],
    };
    let (last, pass) = run_fit(&problem, &verts, &tris, &mut vars, &image);
    let cov = vertex_coverage(&pass, verts.len());
    let mut err = 0.0f32;
    let mut n = 0;
    for v in 0..verts.len() {
        if cov[v] >= 2.0 {
            for c in 0..3 {
                err = err.max((vars.albedo[v][c] - truth[v][c]).abs());
            }
            n += 1;
        }
    }
    println!("albedo: max abs error {err:.4} over {n} well-covered vertices");
    assert!(n > 40);
    assert!(err < 0.02, "albedo error {err}");
    assert!(last < 2e-3, "final loss {last}");
}

#[test]
fn adam_recovers_lighting() {
    let (verts, tris) = sphere(3);
    let truth = test_sh();
    let camera = perspective();
    let albedo = albedo_pattern(&verts);
    let mut pass = PhotometricPass::new(W, H, &tris, verts.len(), PassConfig::default()).unwrap();
    let image = render_target(&mut pass, &verts, &albedo, &truth, camera);
    let mut vars = FitVariables {
        shape: vec![0.0; verts.len() * 3],
        albedo,
        sh: ambient([0.5, 0.5, 0.5]),
        camera,
    };
    let problem = FitProblem {
        loss: LossConfig::default(),
        photometric_weight: 1.0,
        adam: Default::default(),
        stages: vec![
            stage(
                1200,
                vec![GroupSchedule {
                    group: ParamGroup::Lighting,
                    lr: 0.02,
                    l2: 0.0,
                }],
            ),
            stage(
                300,
                vec![GroupSchedule {
                    group: ParamGroup::Lighting,
                    lr: 0.002,
                    l2: 0.0,
                }],
            ),
        ],
    };
    let (last, _) = run_fit(&problem, &verts, &tris, &mut vars, &image);
    let mut err = 0.0f32;
    for k in 0..9 {
        for c in 0..3 {
            err = err.max((vars.sh[k][c] - truth[k][c]).abs());
        }
    }
    println!(
        "lighting: max abs coefficient error {err:.4} (largest coefficient {:.3})",
        truth[0][0]
    );
    assert!(err < 0.015, "SH error {err}");
    assert!(last < 5e-4, "final loss {last}");
}

#[test]
fn adam_recovers_translation() {
    let (verts, tris) = sphere(3);
    let sh = test_sh();
    let truth = perspective();
    let albedo = albedo_pattern(&verts);
    let mut pass = PhotometricPass::new(W, H, &tris, verts.len(), PassConfig::default()).unwrap();
    let image = render_target(&mut pass, &verts, &albedo, &sh, truth);
    let mut start = truth;
    if let Camera::Perspective { translation, .. } = &mut start {
        translation[0] += 0.01;
        translation[1] -= 0.008;
        translation[2] += 0.02;
    }
    let mut vars = FitVariables {
        shape: vec![0.0; verts.len() * 3],
        albedo,
        sh,
        camera: start,
    };
    let cam = |lr| GroupSchedule {
        group: ParamGroup::Camera {
            focal: false,
            principal_point: false,
            translation: true,
        },
        lr,
        l2: 0.0,
    };
    let problem = FitProblem {
        loss: LossConfig::default(),
        photometric_weight: 1.0,
        adam: Default::default(),
        stages: vec![stage(200, vec![cam(1e-3)]), stage(100, vec![cam(1e-4)])],
    };
    let (last, _) = run_fit(&problem, &verts, &tris, &mut vars, &image);
    let (t, t0) = (vars.camera.params(), truth.params());
    let err = (4..7).map(|k| (t[k] - t0[k]).abs()).fold(0.0f32, f32::max);
    println!(
        "translation: max abs error {err:.2e} m, from {:?}",
        &start.params()[4..]
    );
    assert!(err < 5e-4, "translation error {err}");
    assert_eq!(
        &t[..4],
        &t0[..4],
        "focal and principal point must stay fixed"
    );
    assert!(last < 5e-3, "final loss {last}");
}

#[test]
fn fit_problem_round_trips_through_json() {
    let problem = FitProblem {
        loss: LossConfig {
            penalty: RobustLoss::GemanMcClure { sigma: 0.1 },
            background: Some([0.0, 0.1, 0.2]),
        },
        photometric_weight: 2.0,
        adam: Default::default(),
        stages: vec![
            stage(
                200,
                vec![GroupSchedule {
                    group: ParamGroup::Camera {
                        focal: true,
                        principal_point: false,
                        translation: true,
                    },
                    lr: 1e-3,
                    l2: 0.0,
                }],
            ),
            stage(
                800,
                vec![
                    GroupSchedule {
                        group: ParamGroup::Shape,
                        lr: 1e-3,
                        l2: 1e-4,
                    },
                    GroupSchedule {
                        group: ParamGroup::Albedo,
                        lr: 1e-2,
                        l2: 0.0,
                    },
                ],
            ),
        ],
    };
    let json = serde_json::to_string(&problem).unwrap();
    let back: FitProblem = serde_json::from_str(&json).unwrap();
    assert_eq!(problem, back);
    problem.validate().unwrap();
    let mut dup = problem.clone();
    let first = dup.stages[1].groups[0];
    dup.stages[1].groups.push(first);
    assert!(dup.validate().unwrap_err().to_string().contains("twice"));
}

/// A three-parameter [`VertexModel`]: the base mesh moved by a translation. Its pullback is the
/// sum of the vertex gradients — the chain-rule hook a FLAME model implements the same way.
struct Shift {
    base: Vec<[f32; 3]>,
}

impl VertexModel for Shift {
    fn num_params(&self) -> usize {
        3
    }

    fn num_vertices(&self) -> usize {
        self.base.len()
    }

    fn vertices(&mut self, params: &[f32], out: &mut [[f32; 3]]) {
        for (o, b) in out.iter_mut().zip(&self.base) {
            *o = [b[0] + params[0], b[1] + params[1], b[2] + params[2]];
        }
    }

    fn pullback(&mut self, _params: &[f32], grad_vertices: &[[f32; 3]], grad_params: &mut [f32]) {
        grad_params.fill(0.0);
        for g in grad_vertices {
            for k in 0..3 {
                grad_params[k] += g[k];
            }
        }
    }
}

#[test]
fn adam_recovers_shape_parameters_through_the_chain_rule() {
    let (verts, tris) = sphere(3);
    let sh = test_sh();
    let camera = perspective();
    let albedo = albedo_pattern(&verts);
    let truth = [0.006f32, -0.004, 0.01];
    let mut model = Shift {
        base: verts.clone(),
    };
    let mut moved = verts.clone();
    model.vertices(&truth, &mut moved);
    let mut pass = PhotometricPass::new(W, H, &tris, verts.len(), PassConfig::default()).unwrap();
    let image = render_target(&mut pass, &moved, &albedo, &sh, camera);
    let mut vars = FitVariables {
        shape: vec![0.0; 3],
        albedo,
        sh,
        camera,
    };
    let shape = |lr| GroupSchedule {
        group: ParamGroup::Shape,
        lr,
        l2: 0.0,
    };
    let problem = FitProblem {
        loss: LossConfig::default(),
        photometric_weight: 1.0,
        adam: Default::default(),
        stages: vec![stage(200, vec![shape(1e-3)]), stage(100, vec![shape(1e-4)])],
    };
    let mut fitter = Fitter::new(&model, &vars, problem.adam).unwrap();
    let target = Target {
        image: &image,
        face_mask: None,
        occlusion_mask: None,
    };
    let mut steps = 0;
    let last = fitter
        .run(&problem, &mut pass, &mut model, &mut vars, &target, |_| {
            steps += 1
        })
        .unwrap();
    let err = (0..3)
        .map(|k| (vars.shape[k] - truth[k]).abs())
        .fold(0.0f32, f32::max);
    println!("shape shift: max abs error {err:.2e} m, final loss {last:.5}");
    assert_eq!(steps, 300);
    assert!(err < 5e-4, "shift error {err}");
    assert_eq!(
        vars.camera, camera,
        "the camera is not in the schedule and must not move"
    );
}

/// Writes the pictures of `docs/photometric.md` (run on demand:
/// `cargo test -p visage_core --test render -- --ignored doc_pictures`). Skips when the shipped
/// model is absent.
#[test]
#[ignore]
fn doc_pictures() {
    use visage_core::model::FlameModel;
    use visage_core::render::{composite_over, write_png};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = match FlameModel::load(root.join("assets/models/visage_head.safetensors")) {
        Ok(m) => m,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    let size = 224u32;
    let n = (size * size) as usize;
    let mut verts = model.template.clone();
    let (mut lo, mut hi) = ([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]);
    for v in &verts {
        for k in 0..3 {
            lo[k] = lo[k].min(v[k]);
            hi[k] = hi[k].max(v[k]);
        }
    }
    for v in &mut verts {
        v[0] -= 0.5 * (lo[0] + hi[0]);
        v[1] -= 0.5 * (lo[1] + hi[1]);
        v[2] -= 0.5 * (lo[2] + hi[2]) + 0.6;
    }
    let camera = Camera::perspective_centered(
        0.95 * size as f32 * (0.6 - 0.5 * (hi[2] - lo[2])) / (hi[1] - lo[1]),
        size,
        size,
    );
    let albedo = vec![[0.62, 0.42, 0.33]; verts.len()];
    let mut sh = ambient([0.55, 0.55, 0.55]);
    sh[1] = [0.35, 0.35, 0.35];
    sh[2] = [0.9, 0.9, 0.9];
    sh[3] = [0.45, 0.45, 0.45];
    let scene = Scene {
        vertices: &verts,
        albedo: &albedo,
        sh: &sh,
        camera,
    };
    let mut pass = PhotometricPass::new(
        size,
        size,
        &model.triangles,
        verts.len(),
        PassConfig::default(),
    )
    .unwrap();
    let clean = pass.render(&scene, [0.08, 0.1, 0.14]).unwrap().to_vec();
    // An occluder layer: a soft-edged grey-green bar across the lower face.
    let mut layer = vec![[0.0f32; 4]; n];
    for y in 0..size {
        for x in 0..size {
            let d = ((y as f32 - 150.0).abs() - 16.0).max(0.0);
            let a = (1.0 - d / 3.0).clamp(0.0, 1.0) * (x > 40 && x < 190) as u32 as f32;
            layer[(y * size + x) as usize] = [0.25, 0.35, 0.25, a];
        }
    }
    let mut photo = clean.clone();
    composite_over(&mut photo, &layer).unwrap();
    // Residual of the clean render against the occluded "photo": the occluder lights up.
    let target = Target {
        image: &photo,
        face_mask: None,
        occlusion_mask: None,
    };
    pass.forward(&scene, &target, &LossConfig::default())
        .unwrap();
    let residual: Vec<[f32; 3]> = pass
        .pixel_loss()
        .iter()
        .map(|&r| {
            let v = (r / 1.5).min(1.0);
            [v, v, v]
        })
        .collect();
    let mut panel = vec![[0.0f32; 3]; 3 * n];
    for y in 0..size as usize {
        for x in 0..size as usize {
            let i = y * size as usize + x;
            let o = y * 3 * size as usize;
            panel[o + x] = clean[i];
            panel[o + size as usize + x] = photo[i];
            panel[o + 2 * size as usize + x] = residual[i];
        }
    }
    let out = root.join("docs/img/photometric_example.png");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    write_png(&out, 3 * size, size, &panel).unwrap();
    println!("wrote {}", out.display());
}

//! The GPU photometric pass against the CPU reference of `visage_core`, in a headless Bevy app
//! under Vulkan (Mesa's lavapipe in CI). Run with
//! `cargo test --features gpu_tests --test gpu -- --nocapture` (prints the agreement numbers).
//!
//! Tolerances (justified in `docs/photometric_gpu.md`):
//! - one evaluation: the loss within 1e-4 relative, at most 2 pixels of different visibility,
//!   every gradient group (vertices, albedo, SH, camera) with cosine similarity above 0.9999
//!   and relative error below 1e-3. The fixed-point accumulation is exact to 2^-32 per
//!   addition; what remains is f32 rounding in another summation order (measured: ~1e-7).
//! - 24 Adam steps on the icosphere: per-step objectives and the final loss within 1e-3
//!   relative; per group, the change of the parameters with cosine above 0.999, relative error
//!   below 2e-2, no parameter more than one Adam step (its learning rate) apart, and at most 1%
//!   of them more than 1% of the group's largest change apart. Adam amplifies f32-level
//!   differences wherever visibility or the L1 sign flips, so fits cannot agree to rounding.
//! - 24 Adam steps on the FLAME-sized head, a trajectory that is itself chaotic at the f32
//!   level: the GPU no further from the CPU than twice the CPU is from itself after a 1e-6
//!   relative perturbation of the initial albedo.
#![cfg(feature = "gpu_tests")]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bevy::app::PluginsState;
use bevy::prelude::*;
use bevy::render::RenderPlugin;
use bevy::window::ExitCondition;
use bevy_visage::gpu::{
    Evaluation, FitBackend, FitOutcome, JobKind, JobOutput, PhotometricFit, PhotometricFitDone,
    PhotometricFitPlugin, PhotometricFitProgress, PhotometricJob, PhotometricJobError, UsedBackend,
    check_gpu_limits, run_cpu,
};
use visage_core::render::mesh::{icosphere, procedural_head};
use visage_core::render::{
    AdamSettings, Camera, FitProblem, FitStage, FitVariables, GroupSchedule, LossConfig,
    ParamGroup, PassConfig, PhotometricPass, RobustLoss, Scene, sh,
};

const SIZE: u32 = 64;

/// Deterministic values in [0, 1).
fn hash01(i: u32, salt: u32) -> f32 {
    let mut x = i.wrapping_mul(0x9E37_79B9) ^ salt.wrapping_mul(0x85EB_CA6B);
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^= x >> 16;
    (x >> 8) as f32 / (1u32 << 24) as f32
}

fn lighting(strength: f32) -> [[f32; 3]; 9] {
    let mut l = sh::ambient([0.8, 0.75, 0.7]);
    l[1] = [0.3 * strength, 0.25 * strength, 0.2 * strength];
    l[2] = [0.6 * strength, 0.55 * strength, 0.5 * strength];
    l[3] = [-0.2 * strength, -0.15 * strength, -0.1 * strength];
    l[4] = [0.1 * strength, 0.05, 0.0];
    l[6] = [0.15, 0.1 * strength, 0.05];
    l
}

fn perspective(tz: f32) -> Camera {
    Camera::Perspective {
        fx: 80.0,
        fy: 82.0,
        cx: 31.5,
        cy: 32.7,
        translation: [0.05, -0.03, tz],
    }
}

fn weak_perspective() -> Camera {
    Camera::WeakPerspective {
        scale: 24.0,
        offset: [32.4, 31.6],
    }
}

/// Geometry, image size and cameras of a test scene.
struct Spec {
    base: Vec<[f32; 3]>,
    triangles: Vec<[u32; 3]>,
    size: u32,
    camera: Camera,
    /// The camera that rendered the photo.
    true_camera: Camera,
    /// Scale of the initial random vertex offsets, metres.
    offset_scale: f32,
    /// Learning rates of the camera (stage 1, stage 2) and of the offsets.
    lr_camera: [f32; 2],
    lr_shape: f32,
}

/// An icosphere (642 vertices, 1280 triangles) at 64×64.
fn sphere(camera: Camera) -> Spec {
    let (base, triangles) = icosphere(3);
    let true_camera = match camera {
        Camera::Perspective { translation: t, .. } => Camera::Perspective {
            fx: 84.0,
            fy: 85.0,
            cx: 32.5,
            cy: 31.9,
            translation: [t[0] - 0.04, t[1] + 0.06, t[2] + 0.1],
        },
        Camera::WeakPerspective { .. } => Camera::WeakPerspective {
            scale: 25.5,
            offset: [31.2, 32.8],
        },
    };
    Spec {
        base,
        triangles,
        size: SIZE,
        camera,
        true_camera,
        offset_scale: 0.01,
        lr_camera: [0.02, 0.005],
        lr_shape: 0.002,
    }
}

/// The procedural head with FLAME's vertex count (5023 vertices, 9982 triangles) at
/// `size × size` (at 192, many triangles are smaller than a pixel).
fn head(size: u32) -> Spec {
    let (base, triangles) = procedural_head();
    let k = size as f32 / 192.0;
    let camera = Camera::Perspective {
        fx: 480.0 * k,
        fy: 480.0 * k,
        cx: 96.0 * k,
        cy: 97.0 * k,
        translation: [0.0, 0.0, -0.6],
    };
    let true_camera = Camera::Perspective {
        fx: 490.0 * k,
        fy: 488.0 * k,
        cx: 95.0 * k,
        cy: 96.5 * k,
        translation: [0.004, -0.003, -0.61],
    };
    Spec {
        base,
        triangles,
        size,
        camera,
        true_camera,
        offset_scale: 0.002,
        lr_camera: [0.002, 0.0005],
        lr_shape: 0.0002,
    }
}

/// A job on `spec` against a photo rendered from perturbed shape, albedo, light and camera
/// plus noise, with a soft face mask and an occluding bar.
fn job(
    spec: Spec,
    penalty: RobustLoss,
    background: Option<[f32; 3]>,
    kind: JobKind,
) -> PhotometricJob {
    let Spec {
        base,
        triangles,
        size,
        camera,
        true_camera,
        offset_scale,
        lr_camera,
        lr_shape,
    } = spec;
    let nv = base.len();
    let albedo: Vec<[f32; 3]> = (0..nv as u32)
        .map(|i| {
            [
                0.5 + 0.3 * hash01(i, 1),
                0.4 + 0.3 * hash01(i, 2),
                0.3 + 0.3 * hash01(i, 3),
            ]
        })
        .collect();
    // The photo: a slightly different shape, albedo, light and camera.
    let true_vertices: Vec<[f32; 3]> = base
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = 1.0 + 0.06 * (hash01(i as u32, 4) - 0.5) + 0.05 * p[1];
            [p[0] * s, p[1] * s * 1.1, p[2] * s]
        })
        .collect();
    let true_albedo: Vec<[f32; 3]> = albedo
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let d = 0.1 * (hash01(i as u32, 5) - 0.5);
            [a[0] + d, a[1] - d, a[2] + 0.5 * d]
        })
        .collect();
    let mut pass = PhotometricPass::new(size, size, &triangles, nv, PassConfig::default()).unwrap();
    let sh_true = lighting(1.2);
    let rendered = pass
        .render(
            &Scene {
                vertices: &true_vertices,
                albedo: &true_albedo,
                sh: &sh_true,
                camera: true_camera,
            },
            [0.2, 0.25, 0.3],
        )
        .unwrap()
        .to_vec();
    let image: Vec<[f32; 3]> = rendered
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let n = 0.04 * (hash01(i as u32, 6) - 0.5);
            [c[0] + n, c[1] - n, c[2] + 0.5 * n]
        })
        .collect();
    // Mask geometry in units of the 64-pixel scene.
    let u = size as f32 / 64.0;
    let face_mask: Vec<f32> = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f32 / u - 32.0, (i / size) as f32 / u - 30.0);
            (1.2 - (x * x + y * y).sqrt() / 30.0).clamp(0.0, 1.0)
        })
        .collect();
    let occlusion_mask: Vec<f32> = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f32 / u, (i / size) as f32 / u);
            if (38.0..46.0).contains(&y) && x > 20.0 {
                if x < 24.0 { 0.5 } else { 1.0 }
            } else {
                0.0
            }
        })
        .collect();
    let shape: Vec<f32> = (0..3 * nv as u32)
        .map(|i| offset_scale * (hash01(i, 7) - 0.5))
        .collect();
    let camera_group = ParamGroup::Camera {
        focal: true,
        principal_point: true,
        translation: true,
    };
    let g = |group, lr, l2| GroupSchedule { group, lr, l2 };
    PhotometricJob {
        width: size,
        height: size,
        triangles,
        base_vertices: base,
        image,
        face_mask: Some(face_mask),
        occlusion_mask: Some(occlusion_mask),
        initial: FitVariables {
            shape,
            albedo,
            sh: lighting(1.0),
            camera,
        },
        problem: FitProblem {
            loss: LossConfig {
                penalty,
                background,
            },
            photometric_weight: 1.0,
            adam: AdamSettings::default(),
            stages: vec![
                FitStage {
                    name: "rigid".into(),
                    steps: 12,
                    groups: vec![
                        g(camera_group, lr_camera[0], 0.0),
                        g(ParamGroup::Lighting, 0.02, 0.01),
                    ],
                },
                FitStage {
                    name: "appearance and shape".into(),
                    steps: 12,
                    groups: vec![
                        g(ParamGroup::Albedo, 0.01, 0.1),
                        g(ParamGroup::Shape, lr_shape, 1.0),
                        g(ParamGroup::Lighting, 0.01, 0.0),
                        g(
                            ParamGroup::Camera {
                                focal: false,
                                principal_point: false,
                                translation: true,
                            },
                            lr_camera[1],
                            0.0,
                        ),
                    ],
                },
            ],
        },
        pass: PassConfig::default(),
        kind,
    }
}

/// A headless app with Bevy's renderer (no window, no winit) and the plugin; without a
/// Vulkan adapter, a failure that says what to install.
fn gpu_app() -> App {
    std::panic::catch_unwind(build_gpu_app).unwrap_or_else(|e| {
        let why = e
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| e.downcast_ref::<&str>().copied())
            .unwrap_or("the renderer panicked");
        panic!(
            "the GPU tests could not start Bevy's renderer ({why}). They need a Vulkan driver: \
             on Debian `sudo apt-get install mesa-vulkan-drivers libvulkan1` (software Vulkan is \
             enough). Without one, run the suite without `--features bevy_visage/gpu_tests`."
        )
    })
}

fn build_gpu_app() -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        WindowPlugin {
            primary_window: None,
            exit_condition: ExitCondition::DontExit,
            ..default()
        },
        AssetPlugin::default(),
        bevy::log::LogPlugin {
            level: bevy::log::Level::WARN,
            ..default()
        },
        bevy::image::ImagePlugin::default(),
        bevy::mesh::MeshPlugin,
        RenderPlugin {
            synchronous_pipeline_compilation: true,
            ..default()
        },
        PhotometricFitPlugin::default(),
    ))
    .init_resource::<ClearColor>();
    while app.plugins_state() == PluginsState::Adding {
        bevy::tasks::tick_global_task_pools_on_main_thread();
    }
    app.finish();
    app.cleanup();
    app
}

#[derive(Resource, Default)]
struct Finished(Vec<PhotometricFitDone>);

fn collect(mut reader: MessageReader<PhotometricFitDone>, mut finished: ResMut<Finished>) {
    finished.0.extend(reader.read().cloned());
}

/// Runs `jobs` in `app` until all are done (at most `timeout`); results in spawn order,
/// with the number of frames it took.
fn run_jobs(
    app: &mut App,
    jobs: Vec<PhotometricFit>,
    timeout: Duration,
) -> (Vec<PhotometricFitDone>, u32) {
    if !app.world().contains_resource::<Finished>() {
        app.init_resource::<Finished>();
        app.add_systems(Last, collect);
    }
    let before = app.world().resource::<Finished>().0.len();
    let entities: Vec<Entity> = jobs
        .into_iter()
        .map(|j| app.world_mut().spawn(j).id())
        .collect();
    let start = Instant::now();
    let mut frames = 0;
    while app.world().resource::<Finished>().0.len() < before + entities.len() {
        assert!(
            start.elapsed() < timeout,
            "jobs did not finish within {timeout:?} ({frames} frames)"
        );
        app.update();
        frames += 1;
    }
    let finished = &app.world().resource::<Finished>().0;
    let results = entities
        .iter()
        .map(|e| finished.iter().find(|d| d.entity == *e).unwrap().clone())
        .collect();
    (results, frames)
}

/// The GPU jobs of this file, run once in one app and shared by the tests.
struct GpuResults {
    jobs: Vec<PhotometricJob>,
    done: Vec<PhotometricFitDone>,
    /// Final progress component of each job.
    progress: Vec<Option<PhotometricFitProgress>>,
    /// The restarted entity: every completion message it received, and the second job.
    restarted: (Vec<PhotometricFitDone>, PhotometricJob),
}

const EVAL_PERSPECTIVE_L1: usize = 0;
const EVAL_PERSPECTIVE_HUBER_BG: usize = 1;
const EVAL_WEAK_GM: usize = 2;
const FIT_PERSPECTIVE: usize = 3;
const FIT_WEAK: usize = 4;
const EVAL_HEAD: usize = 5;
const FIT_HEAD: usize = 6;
const EVAL_PERSPECTIVE_L1_AGAIN: usize = 7;

fn gpu_results() -> &'static GpuResults {
    static RESULTS: OnceLock<GpuResults> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let jobs = vec![
            job(sphere(perspective(-3.0)), RobustLoss::L1, None, JobKind::Evaluate),
            job(
                sphere(perspective(-3.0)),
                RobustLoss::Huber { delta: 0.05 },
                Some([0.2, 0.25, 0.3]),
                JobKind::Evaluate,
            ),
            // Back faces drawn too: the depth test alone decides.
            PhotometricJob {
                pass: PassConfig {
                    cull_backfaces: false,
                    ..PassConfig::default()
                },
                ..job(
                    sphere(weak_perspective()),
                    RobustLoss::GemanMcClure { sigma: 0.1 },
                    None,
                    JobKind::Evaluate,
                )
            },
            job(sphere(perspective(-3.0)), RobustLoss::Huber { delta: 0.05 }, None, JobKind::Fit),
            job(sphere(weak_perspective()), RobustLoss::L1, None, JobKind::Fit),
            job(head(192), RobustLoss::L1, None, JobKind::Evaluate),
            job(head(192), RobustLoss::Huber { delta: 0.05 }, None, JobKind::Fit),
            job(sphere(perspective(-3.0)), RobustLoss::L1, None, JobKind::Evaluate),
        ];
        let start = Instant::now();
        let mut app = gpu_app();
        let setup = start.elapsed();
        let fits = jobs
            .iter()
            .map(|j| {
                PhotometricFit::new(j.clone())
                    .with_backend(FitBackend::Gpu)
                    .with_steps_per_frame(8)
            })
            .collect();
        let device = app.world().resource::<bevy::render::renderer::RenderDevice>();
        let int64_min_max = device
            .features()
            .contains(bevy::render::render_resource::WgpuFeatures::SHADER_INT64_ATOMIC_MIN_MAX);
        let adapter = app
            .world()
            .resource::<bevy::render::renderer::RenderAdapterInfo>()
            .name
            .clone();
        let (done, frames) = run_jobs(&mut app, fits, Duration::from_secs(120));
        eprintln!(
            "GPU app on {adapter} (SHADER_INT64_ATOMIC_MIN_MAX: {int64_min_max}): set-up {:.2} s, {} jobs in {frames} frames, {:.2} s in total",
            setup.as_secs_f64(),
            done.len(),
            start.elapsed().as_secs_f64()
        );
        let progress = done
            .iter()
            .map(|d| app.world().get::<PhotometricFitProgress>(d.entity).cloned())
            .collect();
        // A job replaced while it runs: the first job's read-backs (another tag) must be ignored
        // and exactly one completion, the second job's, must arrive.
        let first = job(sphere(perspective(-3.0)), RobustLoss::L1, None, JobKind::Fit);
        let second = job(sphere(weak_perspective()), RobustLoss::L1, None, JobKind::Evaluate);
        let entity = app
            .world_mut()
            .spawn(
                PhotometricFit::new(first)
                    .with_backend(FitBackend::Gpu)
                    .with_steps_per_frame(1),
            )
            .id();
        for _ in 0..4 {
            app.update();
        }
        app.world_mut().entity_mut(entity).insert(
            PhotometricFit::new(second.clone()).with_backend(FitBackend::Gpu),
        );
        for _ in 0..40 {
            app.update();
        }
        let restarted = app
            .world()
            .resource::<Finished>()
            .0
            .iter()
            .filter(|d| d.entity == entity)
            .cloned()
            .collect();
        GpuResults {
            jobs,
            done,
            progress,
            restarted: (restarted, second),
        }
    })
}

fn gpu_output(i: usize) -> &'static JobOutput {
    let r = gpu_results();
    let d = &r.done[i];
    assert_eq!(d.backend, UsedBackend::Gpu);
    match &d.result {
        Ok(o) => o,
        Err(e) => panic!("GPU job {i} failed: {e}"),
    }
}

fn flat3(v: &[[f32; 3]]) -> Vec<f64> {
    v.iter().flatten().map(|&x| x as f64).collect()
}

/// (cosine similarity, relative error ‖a − b‖ / ‖b‖).
fn agreement(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let cos = if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na * nb)
    };
    (cos, if nb == 0.0 { diff } else { diff / nb })
}

fn compare_evaluation(name: &str, gpu: &Evaluation, cpu: &Evaluation) {
    let loss_rel = ((gpu.loss - cpu.loss) / cpu.loss).abs();
    let vis_diff = gpu
        .visibility
        .iter()
        .zip(&cpu.visibility)
        .filter(|(a, b)| a != b)
        .count();
    eprintln!(
        "{name}: loss GPU {:.7} CPU {:.7} (rel {loss_rel:.2e}); Σw GPU {:.3} CPU {:.3}; covered {} / {}, visibility differs at {vis_diff} px, holes {}",
        gpu.loss, cpu.loss, gpu.weight_sum, cpu.weight_sum, gpu.covered, cpu.covered, gpu.holes
    );
    assert!(
        cpu.covered > 500,
        "{name}: the scene covers only {} pixels",
        cpu.covered
    );
    assert_eq!(gpu.holes, 0, "{name}: pixels with a depth but no triangle");
    assert!(
        vis_diff <= 2,
        "{name}: visibility differs at {vis_diff} pixels"
    );
    assert!(loss_rel < 1e-4, "{name}: loss {} vs {}", gpu.loss, cpu.loss);
    let (g, c) = (&gpu.gradients, &cpu.gradients);
    let groups: [(&str, Vec<f64>, Vec<f64>); 4] = [
        ("vertices", flat3(&g.vertices), flat3(&c.vertices)),
        ("albedo", flat3(&g.albedo), flat3(&c.albedo)),
        ("sh", flat3(&g.sh), flat3(&c.sh)),
        (
            "camera",
            g.camera.params().iter().map(|&x| x as f64).collect(),
            c.camera.params().iter().map(|&x| x as f64).collect(),
        ),
    ];
    for (group, a, b) in &groups {
        let (cos, rel) = agreement(a, b);
        eprintln!("{name}: d/d{group}: cosine {cos:.8}, relative error {rel:.2e}");
        assert!(
            b.iter().any(|&x| x != 0.0),
            "{name}: zero CPU gradient for {group}"
        );
        assert!(
            cos > 0.9999 && rel < 1e-3,
            "{name}: {group} gradients disagree (cosine {cos}, relative error {rel})"
        );
    }
}

fn eval_test(i: usize, name: &str) {
    let r = gpu_results();
    let gpu = gpu_output(i).evaluation().expect("an evaluation");
    let cpu = run_cpu(&r.jobs[i]).unwrap();
    compare_evaluation(name, gpu, cpu.evaluation().unwrap());
}

#[test]
fn gpu_loss_and_gradients_match_cpu_perspective_l1() {
    eval_test(EVAL_PERSPECTIVE_L1, "perspective, L1");
}

#[test]
fn gpu_loss_and_gradients_match_cpu_perspective_huber_background() {
    eval_test(EVAL_PERSPECTIVE_HUBER_BG, "perspective, Huber, background");
}

#[test]
fn gpu_loss_and_gradients_match_cpu_weak_perspective_geman_mcclure_no_culling() {
    eval_test(EVAL_WEAK_GM, "weak perspective, Geman-McClure, no culling");
}

/// How far apart two fits of the same job are.
struct FitDistance {
    /// Worst relative difference of the per-step objectives.
    objective: f64,
    /// Relative difference of the final losses.
    final_loss: f64,
    /// Per group (offsets, albedo, SH, camera) of the change θ − θ₀: cosine similarity,
    /// relative error, largest absolute difference in units of the group's largest learning
    /// rate (one Adam step moves a parameter by about that much), and the fraction of
    /// parameters that differ by more than 1% of the group's largest change.
    groups: [(f64, f64, f64, f64); 4],
}

const GROUPS: [&str; 4] = ["offsets", "albedo", "sh", "camera"];

fn fit_distance(job: &PhotometricJob, a: &FitOutcome, b: &FitOutcome) -> FitDistance {
    assert_eq!(a.history.len(), b.history.len());
    let mut objective = 0.0f64;
    for (x, y) in a.history.iter().zip(&b.history) {
        assert_eq!((x.stage, x.step), (y.stage, y.step));
        objective = objective.max(((x.objective - y.objective) / y.objective).abs() as f64);
    }
    let final_loss =
        ((a.final_photometric - b.final_photometric) / b.final_photometric).abs() as f64;
    let init = &job.initial;
    let delta = |v: &FitVariables| -> [Vec<f64>; 4] {
        let d = |x: Vec<f64>, y: Vec<f64>| x.iter().zip(&y).map(|(p, q)| p - q).collect();
        [
            d(
                v.shape.iter().map(|&x| x as f64).collect(),
                init.shape.iter().map(|&x| x as f64).collect(),
            ),
            d(flat3(&v.albedo), flat3(&init.albedo)),
            d(flat3(&v.sh), flat3(&init.sh)),
            d(
                v.camera.params().iter().map(|&x| x as f64).collect(),
                init.camera.params().iter().map(|&x| x as f64).collect(),
            ),
        ]
    };
    let (da, db) = (delta(&a.variables), delta(&b.variables));
    let mut lr = [0.0f64; 4];
    for stage in &job.problem.stages {
        for gs in &stage.groups {
            let k = match gs.group {
                ParamGroup::Shape => 0,
                ParamGroup::Albedo => 1,
                ParamGroup::Lighting => 2,
                ParamGroup::Camera { .. } => 3,
            };
            lr[k] = lr[k].max(gs.lr as f64);
        }
    }
    let groups = std::array::from_fn(|k| {
        let (cos, rel) = agreement(&da[k], &db[k]);
        let max_diff = da[k]
            .iter()
            .zip(&db[k])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        let largest = db[k].iter().map(|x| x.abs()).fold(0.0, f64::max);
        let outliers = da[k]
            .iter()
            .zip(&db[k])
            .filter(|(x, y)| (*x - *y).abs() > 1e-2 * largest)
            .count();
        (
            cos,
            rel,
            max_diff / lr[k],
            outliers as f64 / db[k].len() as f64,
        )
    });
    FitDistance {
        objective,
        final_loss,
        groups,
    }
}

fn print_distance(name: &str, what: &str, d: &FitDistance) {
    eprintln!(
        "{name}, {what}: per-step objective within {:.2e}, final loss within {:.2e}",
        d.objective, d.final_loss
    );
    for (g, (cos, rel, steps, outliers)) in GROUPS.iter().zip(&d.groups) {
        eprintln!(
            "{name}, {what}: change of {g}: cosine {cos:.8}, relative error {rel:.2e}, largest difference {steps:.3} Adam steps, {:.2}% differ by > 1% of the largest change",
            100.0 * outliers
        );
    }
}

/// The largest of several distances, group by group (cosine: the smallest).
fn widest(ds: &[FitDistance]) -> FitDistance {
    let mut w = FitDistance {
        objective: 0.0,
        final_loss: 0.0,
        groups: [(1.0, 0.0, 0.0, 0.0); 4],
    };
    for d in ds {
        w.objective = w.objective.max(d.objective);
        w.final_loss = w.final_loss.max(d.final_loss);
        for (a, b) in w.groups.iter_mut().zip(&d.groups) {
            *a = (a.0.min(b.0), a.1.max(b.1), a.2.max(b.2), a.3.max(b.3));
        }
    }
    w
}

/// The GPU fit against the CPU fit. It also measures how far the CPU fit moves when its
/// initial albedo or lighting is perturbed by one part in 10^6 (about 8 ulp; three
/// perturbations, the widest distance kept), the sensitivity that visibility changes and
/// Adam's sign-like steps give any two implementations.
fn fit_test(i: usize, name: &str, tol: FitTolerance) {
    let r = gpu_results();
    let job = &r.jobs[i];
    let gpu = gpu_output(i).fit().expect("a fit");
    let cpu_out = run_cpu(job).unwrap();
    let cpu = cpu_out.fit().unwrap();
    assert_eq!(gpu.history.len(), 24);
    let progress = r.progress[i].as_ref().expect("a progress component");
    assert!(progress.finished);
    assert_eq!(progress.backend, UsedBackend::Gpu);
    assert_eq!((progress.steps_done, progress.total_steps), (24, 24));
    assert_eq!(progress.last.as_ref(), gpu.history.last());
    let first = cpu.history[0].objective;
    let last = cpu.history.last().unwrap().objective;
    eprintln!("{name}: CPU objective {first:.6} -> {last:.6}");
    assert!(
        last < 0.9 * first,
        "{name}: the fit did not reduce the objective"
    );
    let perturbations: [(&str, f32, bool); 3] = [
        ("albedo × (1 + 1e-6)", 1.0 + 1e-6, true),
        ("albedo × (1 − 1e-6)", 1.0 - 1e-6, true),
        ("lighting × (1 + 1e-6)", 1.0 + 1e-6, false),
    ];
    let baselines: Vec<FitDistance> = perturbations
        .iter()
        .map(|&(what, k, albedo)| {
            let mut perturbed = job.clone();
            let values = if albedo {
                perturbed.initial.albedo.iter_mut().flatten()
            } else {
                perturbed.initial.sh.iter_mut().flatten()
            };
            for a in values {
                *a *= k;
            }
            let out = run_cpu(&perturbed).unwrap();
            let d = fit_distance(job, out.fit().unwrap(), cpu);
            print_distance(name, &format!("CPU vs CPU with {what}"), &d);
            d
        })
        .collect();
    let baseline = widest(&baselines);
    let d = fit_distance(job, gpu, cpu);
    print_distance(name, "GPU vs CPU", &d);
    eprintln!(
        "{name}: final photometric loss GPU {:.6}, CPU {:.6}",
        gpu.final_photometric, cpu.final_photometric
    );
    let absolute = |objective: f64, relative: f64, max_outliers: f64| {
        let mut failures = Vec::new();
        if !(d.objective < objective && d.final_loss < objective) {
            failures.push(format!(
                "objectives differ by {:.2e} / {:.2e}",
                d.objective, d.final_loss
            ));
        }
        for (g, &(cos, rel, steps, outliers)) in GROUPS.iter().zip(&d.groups) {
            if !(cos > 0.999 && rel < relative && steps < 1.0 && outliers < max_outliers) {
                failures.push(format!(
                    "{g}: cosine {cos}, relative error {rel}, {steps} Adam steps, {outliers} outliers"
                ));
            }
        }
        failures
    };
    let relative_to_baseline = |factor: f64| {
        let mut failures = Vec::new();
        let within = |x: f64, base: f64, floor: f64| x <= factor * base + floor;
        if !(within(d.objective, baseline.objective, 1e-4)
            && within(d.final_loss, baseline.final_loss, 1e-4))
        {
            failures.push(format!(
                "objectives differ by {:.2e} / {:.2e} (perturbed CPU: {:.2e} / {:.2e})",
                d.objective, d.final_loss, baseline.objective, baseline.final_loss
            ));
        }
        for ((g, &(cos, rel, steps, _)), &(bcos, brel, bsteps, _)) in
            GROUPS.iter().zip(&d.groups).zip(&baseline.groups)
        {
            if !(within(1.0 - cos, 1.0 - bcos, 1e-5)
                && within(rel, brel, 1e-3)
                && within(steps, bsteps, 0.1))
            {
                failures.push(format!(
                    "{g}: cosine {cos}, relative error {rel}, {steps} Adam steps (perturbed CPU: {bcos}, {brel}, {bsteps})"
                ));
            }
        }
        failures
    };
    let failures = match tol {
        FitTolerance::Absolute {
            objective,
            relative,
            outliers,
        } => {
            let f = absolute(objective, relative, outliers);
            // Where the trajectory itself is more sensitive than the fixed bounds (a driver
            // rounding differently from the CPU), the baseline decides.
            if f.is_empty() || relative_to_baseline(2.0).is_empty() {
                Vec::new()
            } else {
                f
            }
        }
        FitTolerance::Quality {
            factor,
            objective,
            cosine,
        } => {
            let f = relative_to_baseline(factor);
            if f.is_empty() {
                f
            } else {
                // The trajectories part further than the perturbed CPU's: the fit must still
                // be as good, step by step, and move every group the same way.
                let mut q = Vec::new();
                let worse = (gpu.final_photometric - cpu.final_photometric) as f64
                    / cpu.final_photometric as f64;
                if !(d.objective < objective && worse < objective) {
                    q.push(format!(
                        "objectives differ by {:.2e} per step, final loss {:+.2e} relative",
                        d.objective, worse
                    ));
                }
                for (g, &(cos, ..)) in GROUPS.iter().zip(&d.groups) {
                    if cos.is_nan() || cos <= cosine {
                        q.push(format!("{g}: cosine {cos}"));
                    }
                }
                if !q.is_empty() {
                    q.extend(f);
                }
                q
            }
        }
    };
    assert!(failures.is_empty(), "{name}: the fits differ: {failures:?}");
}

/// Acceptance of a GPU fit (see `docs/photometric_gpu.md`).
enum FitTolerance {
    /// Fixed bounds, every group also within cosine 0.999 and one Adam step — or, where the
    /// CPU trajectory itself moves further than that under a 1e-6 perturbation, no further
    /// from the CPU than twice the perturbed CPU.
    Absolute {
        /// Relative difference of per-step objectives and of the final loss.
        objective: f64,
        /// Relative error of each group's change.
        relative: f64,
        /// Fraction of parameters differing by more than 1% of their group's largest change.
        outliers: f64,
    },
    /// For an ill-conditioned fit, where a driver's rounding of every gradient (about 1e-5
    /// relative on the H100) moves the trajectory further than a one-off 1e-6 perturbation of
    /// the start: the baseline test, or else a fit as good as the CPU's (per-step objectives
    /// and the final loss within `objective` relative) that moves every parameter group the
    /// same way (cosine of the changes above `cosine`). The baseline test: no further from
    /// the CPU than `factor` times the perturbed CPU is (plus small floors).
    Quality {
        factor: f64,
        objective: f64,
        cosine: f64,
    },
}

const SPHERE_FIT: FitTolerance = FitTolerance::Absolute {
    objective: 1e-3,
    relative: 2e-2,
    outliers: 0.01,
};

#[test]
fn gpu_adam_fit_matches_cpu_perspective_huber() {
    fit_test(FIT_PERSPECTIVE, "fit, perspective, Huber", SPHERE_FIT);
}

#[test]
fn gpu_adam_fit_matches_cpu_weak_perspective_l1() {
    fit_test(FIT_WEAK, "fit, weak perspective, L1", SPHERE_FIT);
}

#[test]
fn gpu_job_replaced_while_running_reports_only_the_new_job() {
    let r = gpu_results();
    let (done, second) = &r.restarted;
    assert_eq!(done.len(), 1, "expected one completion, got {}", done.len());
    let gpu = match &done[0].result {
        Ok(JobOutput::Evaluate(e)) => e,
        other => panic!("expected the second job's evaluation, got {other:?}"),
    };
    let cpu = run_cpu(second).unwrap();
    compare_evaluation("replaced job", gpu, cpu.evaluation().unwrap());
}

/// Integer atomics commute and every float reduction has a fixed order: two runs of the same
/// job give bit-identical results.
#[test]
fn gpu_results_are_deterministic() {
    let a = gpu_output(EVAL_PERSPECTIVE_L1).evaluation().unwrap();
    let b = gpu_output(EVAL_PERSPECTIVE_L1_AGAIN).evaluation().unwrap();
    let bits = |e: &Evaluation| -> Vec<u32> {
        let g = &e.gradients;
        let mut v = vec![e.loss.to_bits()];
        v.extend(g.vertices.iter().flatten().map(|x| x.to_bits()));
        v.extend(g.albedo.iter().flatten().map(|x| x.to_bits()));
        v.extend(g.sh.iter().flatten().map(|x| x.to_bits()));
        v.extend(g.camera.params().iter().map(|x| x.to_bits()));
        v.extend(e.residuals.iter().flatten().map(|x| x.to_bits()));
        v.extend(&e.visibility);
        v
    };
    assert_eq!(bits(a), bits(b));
}

#[test]
fn gpu_loss_and_gradients_match_cpu_flame_sized_head() {
    eval_test(EVAL_HEAD, "head 192x192, perspective, L1");
}

#[test]
fn gpu_adam_fit_matches_cpu_flame_sized_head() {
    fit_test(
        FIT_HEAD,
        "fit, head 192x192, perspective, Huber",
        FitTolerance::Quality {
            factor: 2.0,
            objective: 0.02,
            cosine: 0.85,
        },
    );
}

/// The GPU path refuses jobs the device cannot hold, with the reason.
#[test]
fn gpu_limits_are_checked() {
    let j = job(
        sphere(perspective(-3.0)),
        RobustLoss::L1,
        None,
        JobKind::Fit,
    );
    let limits = bevy::render::render_resource::WgpuLimits::default();
    assert!(check_gpu_limits(&j, &limits).is_ok());
    let small = bevy::render::render_resource::WgpuLimits {
        max_storage_buffer_binding_size: 64 * 1024,
        ..limits.clone()
    };
    let err = check_gpu_limits(&j, &small).unwrap_err().to_string();
    assert!(
        err.contains("131072 bytes is needed, but the device allows 65536"),
        "{err}"
    );
    let weak = bevy::render::render_resource::WgpuLimits {
        max_storage_buffers_per_shader_stage: 4,
        ..limits
    };
    assert!(matches!(
        check_gpu_limits(&j, &weak),
        Err(PhotometricJobError::GpuUnsupported(_))
    ));
}

/// Without a renderer, `Auto` runs the CPU reference and gives exactly `run_cpu`'s answer;
/// `Gpu` fails with a clear error; an invalid job fails with its reason.
#[test]
fn plugin_cpu_path_and_errors_without_renderer() {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, PhotometricFitPlugin::default()));
    let fit = job(
        sphere(perspective(-3.0)),
        RobustLoss::L1,
        None,
        JobKind::Fit,
    );
    let expected = run_cpu(&fit).unwrap();
    let mut bad = job(
        sphere(weak_perspective()),
        RobustLoss::L1,
        None,
        JobKind::Evaluate,
    );
    bad.image.pop();
    let jobs = vec![
        PhotometricFit::new(fit.clone()),
        PhotometricFit::new(fit).with_backend(FitBackend::Gpu),
        PhotometricFit::new(bad),
    ];
    let (done, _) = run_jobs(&mut app, jobs, Duration::from_secs(60));
    assert_eq!(done[0].backend, UsedBackend::Cpu);
    let got = done[0].result.as_ref().unwrap().fit().unwrap();
    assert_eq!(got, expected.fit().unwrap());
    assert!(matches!(
        done[1].result,
        Err(PhotometricJobError::NoRenderDevice)
    ));
    let msg = done[2].result.as_ref().unwrap_err().to_string();
    assert!(
        msg.contains("the photo has 4095 entries, but 4096"),
        "{msg}"
    );
    let progress = app
        .world_mut()
        .query::<&PhotometricFitProgress>()
        .iter(app.world())
        .find(|p| p.backend == UsedBackend::Cpu && p.finished)
        .cloned()
        .unwrap();
    assert_eq!((progress.steps_done, progress.total_steps), (24, 24));
}

/// Wall-clock time of GPU fits on whatever Vulkan adapter the tests get (the first line
/// names it; lavapipe on a machine without a GPU), against the CPU reference on the same
/// machine; prints only. For timings, build optimised:
/// `cargo test --release --features gpu_tests --test gpu -- --ignored --nocapture`
#[test]
#[ignore = "timing, run on demand"]
fn gpu_timing_head() {
    let mut app = gpu_app();
    // Warm-up: pipelines compiled, buffers allocated once.
    let warm = job(head(64), RobustLoss::L1, None, JobKind::Evaluate);
    run_jobs(
        &mut app,
        vec![PhotometricFit::new(warm).with_backend(FitBackend::Gpu)],
        Duration::from_secs(120),
    );
    for (size, steps) in [(224u32, 64u32), (512, 32)] {
        let mut fit = job(
            head(size),
            RobustLoss::Huber { delta: 0.05 },
            None,
            JobKind::Fit,
        );
        for stage in &mut fit.problem.stages {
            stage.steps = steps / 2;
        }
        let eval = PhotometricJob {
            kind: JobKind::Evaluate,
            ..fit.clone()
        };
        let t = Instant::now();
        run_cpu(&eval).unwrap();
        let cpu_eval = t.elapsed().as_secs_f64();
        let t = Instant::now();
        run_cpu(&fit).unwrap();
        let cpu_fit = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (_, eval_frames) = run_jobs(
            &mut app,
            vec![PhotometricFit::new(eval).with_backend(FitBackend::Gpu)],
            Duration::from_secs(300),
        );
        let gpu_eval = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (done, frames) = run_jobs(
            &mut app,
            vec![
                PhotometricFit::new(fit)
                    .with_backend(FitBackend::Gpu)
                    .with_steps_per_frame(16),
            ],
            Duration::from_secs(300),
        );
        let gpu_fit = t.elapsed().as_secs_f64();
        assert!(done[0].result.is_ok());
        eprintln!(
            "head {size}x{size}, {steps} Adam steps: CPU {:.1} ms per step ({:.1} ms per evaluation); GPU {:.1} ms per step over {frames} frames ({:.1} ms per evaluation incl. {eval_frames} frames of read-back latency)",
            1e3 * cpu_fit / (steps + 1) as f64,
            1e3 * cpu_eval,
            1e3 * gpu_fit / (steps + 1) as f64,
            1e3 * gpu_eval,
        );
    }
}

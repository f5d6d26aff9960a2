//! The GPU photometric pass against the CPU reference of `visage_core`, in a headless Bevy app
//! under Vulkan (Mesa's lavapipe in CI). Run with
//! `cargo test --features gpu_tests --test gpu -- --nocapture` (prints the agreement numbers).
//!
//! Tolerances (justified in `docs/photometric_gpu.md`): the loss within 1e-4 relative; every
//! gradient group with cosine similarity above 0.9999 and relative error below 1e-3 (the
//! fixed-point accumulation itself is exact to 2^-32 per addition; what remains is f32 rounding
//! in a different summation order); Adam fits within 1e-3 relative per parameter group.
#![cfg(feature = "gpu_tests")]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bevy::app::PluginsState;
use bevy::prelude::*;
use bevy::render::RenderPlugin;
use bevy::window::ExitCondition;
use bevy_visage::gpu::{
    Evaluation, FitBackend, JobKind, JobOutput, PhotometricFit, PhotometricFitDone,
    PhotometricFitPlugin, PhotometricFitProgress, PhotometricJob, PhotometricJobError, UsedBackend,
    run_cpu,
};
use visage_core::render::mesh::icosphere;
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

/// An icosphere (642 vertices, 1280 triangles) against a photo rendered from perturbed
/// parameters plus noise, with a soft face mask and an occluding bar.
fn job(
    camera: Camera,
    penalty: RobustLoss,
    background: Option<[f32; 3]>,
    kind: JobKind,
) -> PhotometricJob {
    let (base, triangles) = icosphere(3);
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
    let mut pass = PhotometricPass::new(SIZE, SIZE, &triangles, nv, PassConfig::default()).unwrap();
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
    let face_mask: Vec<f32> = (0..SIZE * SIZE)
        .map(|i| {
            let (x, y) = ((i % SIZE) as f32 - 32.0, (i / SIZE) as f32 - 30.0);
            (1.2 - (x * x + y * y).sqrt() / 30.0).clamp(0.0, 1.0)
        })
        .collect();
    let occlusion_mask: Vec<f32> = (0..SIZE * SIZE)
        .map(|i| {
            let (x, y) = (i % SIZE, i / SIZE);
            if (38..46).contains(&y) && x > 20 {
                if x < 24 { 0.5 } else { 1.0 }
            } else {
                0.0
            }
        })
        .collect();
    let shape: Vec<f32> = (0..3 * nv as u32)
        .map(|i| 0.01 * (hash01(i, 7) - 0.5))
        .collect();
    let camera_group = ParamGroup::Camera {
        focal: true,
        principal_point: true,
        translation: true,
    };
    let g = |group, lr, l2| GroupSchedule { group, lr, l2 };
    PhotometricJob {
        width: SIZE,
        height: SIZE,
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
                        g(camera_group, 0.02, 0.0),
                        g(ParamGroup::Lighting, 0.02, 0.01),
                    ],
                },
                FitStage {
                    name: "appearance and shape".into(),
                    steps: 12,
                    groups: vec![
                        g(ParamGroup::Albedo, 0.01, 0.1),
                        g(ParamGroup::Shape, 0.002, 1.0),
                        g(ParamGroup::Lighting, 0.01, 0.0),
                        g(
                            ParamGroup::Camera {
                                focal: false,
                                principal_point: false,
                                translation: true,
                            },
                            0.005,
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

/// A headless app with Bevy's renderer (no window, no winit) and the plugin.
fn gpu_app() -> App {
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
    app.init_resource::<Finished>();
    app.add_systems(Last, collect);
    let entities: Vec<Entity> = jobs
        .into_iter()
        .map(|j| app.world_mut().spawn(j).id())
        .collect();
    let start = Instant::now();
    let mut frames = 0;
    while app.world().resource::<Finished>().0.len() < entities.len() {
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

fn gpu_results() -> &'static GpuResults {
    static RESULTS: OnceLock<GpuResults> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let jobs = vec![
            job(perspective(-3.0), RobustLoss::L1, None, JobKind::Evaluate),
            job(
                perspective(-3.0),
                RobustLoss::Huber { delta: 0.05 },
                Some([0.2, 0.25, 0.3]),
                JobKind::Evaluate,
            ),
            job(
                weak_perspective(),
                RobustLoss::GemanMcClure { sigma: 0.1 },
                None,
                JobKind::Evaluate,
            ),
            job(perspective(-3.0), RobustLoss::Huber { delta: 0.05 }, None, JobKind::Fit),
            job(weak_perspective(), RobustLoss::L1, None, JobKind::Fit),
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
        let first = job(perspective(-3.0), RobustLoss::L1, None, JobKind::Fit);
        let second = job(weak_perspective(), RobustLoss::L1, None, JobKind::Evaluate);
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
fn gpu_loss_and_gradients_match_cpu_weak_perspective_geman_mcclure() {
    eval_test(EVAL_WEAK_GM, "weak perspective, Geman-McClure");
}

fn fit_test(i: usize, name: &str) {
    let r = gpu_results();
    let gpu = gpu_output(i).fit().expect("a fit");
    let cpu_out = run_cpu(&r.jobs[i]).unwrap();
    let cpu = cpu_out.fit().unwrap();
    let init = &r.jobs[i].initial;
    assert_eq!(gpu.history.len(), cpu.history.len());
    assert_eq!(gpu.history.len(), 24);
    let progress = r.progress[i].as_ref().expect("a progress component");
    assert!(progress.finished);
    assert_eq!(progress.backend, UsedBackend::Gpu);
    assert_eq!((progress.steps_done, progress.total_steps), (24, 24));
    assert_eq!(progress.last.as_ref(), gpu.history.last());
    let mut worst_obj = 0.0f64;
    for (a, b) in gpu.history.iter().zip(&cpu.history) {
        assert_eq!((a.stage, a.step), (b.stage, b.step));
        worst_obj = worst_obj.max(((a.objective - b.objective) / b.objective).abs() as f64);
    }
    let first = cpu.history[0].objective;
    let last = cpu.history.last().unwrap().objective;
    eprintln!(
        "{name}: objective {first:.6} -> {last:.6} (CPU); worst per-step relative objective difference {worst_obj:.2e}; final loss GPU {:.7} CPU {:.7}",
        gpu.final_photometric, cpu.final_photometric
    );
    assert!(
        last < 0.9 * first,
        "{name}: the fit did not reduce the objective"
    );
    assert!(worst_obj < 1e-3, "{name}: objectives differ by {worst_obj}");
    let final_rel = ((gpu.final_photometric - cpu.final_photometric) / cpu.final_photometric).abs();
    assert!(
        final_rel < 1e-3,
        "{name}: final loss differs by {final_rel}"
    );
    // Parameter changes (θ − θ₀) per group.
    let delta = |v: &FitVariables| -> [Vec<f64>; 4] {
        [
            v.shape
                .iter()
                .zip(&init.shape)
                .map(|(a, b)| (a - b) as f64)
                .collect(),
            flat3(&v.albedo)
                .iter()
                .zip(flat3(&init.albedo))
                .map(|(a, b)| a - b)
                .collect(),
            flat3(&v.sh)
                .iter()
                .zip(flat3(&init.sh))
                .map(|(a, b)| a - b)
                .collect(),
            v.camera
                .params()
                .iter()
                .zip(init.camera.params())
                .map(|(a, b)| (a - b) as f64)
                .collect(),
        ]
    };
    let (dg, dc) = (delta(&gpu.variables), delta(&cpu.variables));
    // Largest learning rate of each group over the stages (the scale of one Adam step).
    let groups = ["offsets", "albedo", "sh", "camera"];
    let mut lr = [0.0f64; 4];
    for stage in &r.jobs[i].problem.stages {
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
    let mut failures = Vec::new();
    for (k, group) in groups.iter().enumerate() {
        let (cos, rel) = agreement(&dg[k], &dc[k]);
        let max_diff = dg[k]
            .iter()
            .zip(&dc[k])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let largest = dc[k].iter().map(|a| a.abs()).fold(0.0, f64::max);
        let outliers = dg[k]
            .iter()
            .zip(&dc[k])
            .filter(|(a, b)| (*a - *b).abs() > 1e-2 * largest)
            .count();
        eprintln!(
            "{name}: change of {group} after 24 steps: cosine {cos:.8}, relative error {rel:.2e}, max |difference| {max_diff:.2e} = {:.3} Adam steps (largest change {largest:.2e}); {outliers} of {} differ by more than 1% of the largest change",
            max_diff / lr[k],
            dc[k].len()
        );
        if !(cos > 0.999 && rel < 2e-2 && max_diff < lr[k] && outliers * 100 <= dc[k].len()) {
            failures.push(format!("{group}: cosine {cos}, relative error {rel}, max difference {max_diff}, {outliers} outliers"));
        }
    }
    assert!(failures.is_empty(), "{name}: the fits differ: {failures:?}");
}

#[test]
fn gpu_adam_fit_matches_cpu_perspective_huber() {
    fit_test(FIT_PERSPECTIVE, "fit, perspective, Huber");
}

#[test]
fn gpu_adam_fit_matches_cpu_weak_perspective_l1() {
    fit_test(FIT_WEAK, "fit, weak perspective, L1");
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

/// Without a renderer, `Auto` runs the CPU reference and gives exactly `run_cpu`'s answer;
/// `Gpu` fails with a clear error; an invalid job fails with its reason.
#[test]
fn plugin_cpu_path_and_errors_without_renderer() {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, PhotometricFitPlugin::default()));
    let fit = job(perspective(-3.0), RobustLoss::L1, None, JobKind::Fit);
    let expected = run_cpu(&fit).unwrap();
    let mut bad = job(weak_perspective(), RobustLoss::L1, None, JobKind::Evaluate);
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

//! Main-world side: settings, the job component, backend choice, the CPU worker, read-back
//! decoding and the completion message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bevy::asset::{Assets, RenderAssetUsages};
use bevy::prelude::*;
use bevy::render::gpu_readback::{Readback, ReadbackComplete};
use bevy::render::render_resource::WgpuLimits;
use bevy::render::renderer::{RenderDevice, RenderGraph, RenderGraphSystems};
use bevy::render::storage::ShaderBuffer;
use bevy::render::{ExtractSchedule, Render, RenderApp, RenderStartup, RenderSystems};
use bevy::shader::Shader;
use bevy::tasks::futures::check_ready;
use bevy::tasks::{AsyncComputeTaskPool, Task};
use visage_core::render::StepReport;

use super::job::{
    Evaluation, FitOutcome, JobKind, JobOutput, PhotometricJob, PhotometricJobError,
    run_cpu_with_progress,
};
use super::layout::{self, Sizes};
use super::node::{self, GpuErrors, GpuRun};

/// Which implementation runs a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FitBackend {
    /// The GPU when the app has a render device, otherwise the CPU.
    #[default]
    Auto,
    /// The GPU; a job fails with [`PhotometricJobError::NoRenderDevice`] without one.
    Gpu,
    /// The CPU reference of `visage_core`, on Bevy's async compute pool.
    Cpu,
}

/// The implementation that ran (or runs) a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedBackend {
    /// The CPU reference.
    Cpu,
    /// The GPU compute passes.
    Gpu,
}

/// Settings of [`PhotometricFitPlugin`], also a resource that can be changed at run time (it
/// applies to jobs started afterwards).
#[derive(Resource, Clone, Debug, PartialEq)]
pub struct PhotometricFitSettings {
    /// Default backend of jobs that do not choose one.
    pub backend: FitBackend,
    /// Optimiser steps encoded per frame on the GPU (each step is about a dozen dispatches).
    pub steps_per_frame: u32,
}

impl Default for PhotometricFitSettings {
    fn default() -> Self {
        PhotometricFitSettings {
            backend: FitBackend::Auto,
            steps_per_frame: 8,
        }
    }
}

/// A photometric job. Insert it on an entity to start it; the plugin adds
/// [`PhotometricFitProgress`] and sends [`PhotometricFitDone`] when it ends. Inserting a new
/// value restarts the entity's job.
#[derive(Component, Clone, Debug)]
pub struct PhotometricFit {
    /// The job.
    pub job: Arc<PhotometricJob>,
    /// Backend for this job; `None` uses [`PhotometricFitSettings::backend`].
    pub backend: Option<FitBackend>,
    /// GPU steps per frame for this job; `None` uses the settings.
    pub steps_per_frame: Option<u32>,
}

impl PhotometricFit {
    /// A job with the default backend and pace.
    pub fn new(job: PhotometricJob) -> Self {
        PhotometricFit {
            job: Arc::new(job),
            backend: None,
            steps_per_frame: None,
        }
    }

    /// The same job on a chosen backend.
    pub fn with_backend(mut self, backend: FitBackend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The same job with `steps` GPU optimiser steps per frame.
    pub fn with_steps_per_frame(mut self, steps: u32) -> Self {
        self.steps_per_frame = Some(steps);
        self
    }
}

/// Progress of a running job, readable on the CPU side.
#[derive(Component, Clone, Debug, PartialEq)]
pub struct PhotometricFitProgress {
    /// Where the job runs.
    pub backend: UsedBackend,
    /// Optimiser steps completed (GPU: as of the last read-back, a frame or two behind).
    pub steps_done: u32,
    /// Optimiser steps in the job.
    pub total_steps: u32,
    /// The last completed step's record, when known.
    pub last: Option<StepReport>,
    /// Whether the job has ended (see [`PhotometricFitDone`]).
    pub finished: bool,
}

/// Sent once when a job ends, successfully or not.
#[derive(Message, Clone, Debug)]
pub struct PhotometricFitDone {
    /// The entity holding the [`PhotometricFit`].
    pub entity: Entity,
    /// Where it ran.
    pub backend: UsedBackend,
    /// The results, or why there are none.
    pub result: Result<JobOutput, PhotometricJobError>,
}

/// Runs [`PhotometricFit`] jobs on the GPU (a compute node in Bevy's render graph) or on the
/// CPU (`visage_core`'s reference), and reports them. Add it after Bevy's `RenderPlugin` (e.g.
/// after `DefaultPlugins`) for the GPU path; without a render app only the CPU path exists.
#[derive(Default)]
pub struct PhotometricFitPlugin {
    /// Initial settings.
    pub settings: PhotometricFitSettings,
}

/// Marks an app where the GPU path was set up (render app and shader assets present).
#[derive(Resource)]
struct GpuPathBuilt;

/// Source of job tags (the generation number the GPU writes back); never 0.
#[derive(Resource)]
struct TagCounter(u32);

/// A job running on the CPU.
#[derive(Component)]
struct CpuRun {
    task: Task<Result<JobOutput, PhotometricJobError>>,
    steps: Arc<AtomicU32>,
}

impl Plugin for PhotometricFitPlugin {
    fn build(&self, app: &mut App) {
        let errors = GpuErrors::default();
        app.insert_resource(self.settings.clone())
            .insert_resource(errors.clone())
            .insert_resource(TagCounter(1))
            .add_message::<PhotometricFitDone>()
            .add_systems(
                Update,
                (start_jobs, poll_cpu_jobs, collect_gpu_errors).chain(),
            )
            .add_observer(on_readback);
        if app.get_sub_app(RenderApp).is_none()
            || !app.world().contains_resource::<Assets<Shader>>()
            || !app.world().contains_resource::<Assets<ShaderBuffer>>()
        {
            return;
        }
        let shader = app
            .world_mut()
            .resource_mut::<Assets<Shader>>()
            .add(Shader::from_wgsl(
                include_str!("../../shaders/photometric.wgsl"),
                "bevy_visage/shaders/photometric.wgsl",
            ));
        app.insert_resource(GpuPathBuilt);
        app.sub_app_mut(RenderApp)
            .insert_resource(node::PhotometricShader(shader))
            .insert_resource(errors)
            .init_resource::<node::ExtractedRuns>()
            .init_resource::<node::GpuJobs>()
            .add_systems(RenderStartup, node::queue_pipelines)
            .add_systems(ExtractSchedule, node::extract_runs)
            .add_systems(
                Render,
                (
                    node::prepare_jobs.in_set(RenderSystems::PrepareResources),
                    node::prepare_bind_groups.in_set(RenderSystems::PrepareBindGroups),
                ),
            )
            .add_systems(
                RenderGraph,
                (node::photometric_node, node::photometric_flush)
                    .chain()
                    .in_set(RenderGraphSystems::Render),
            );
    }
}

/// Checks that the device can hold and dispatch `job` on the GPU path.
pub fn check_gpu_limits(
    job: &PhotometricJob,
    limits: &WgpuLimits,
) -> Result<(), PhotometricJobError> {
    let sizes = Sizes::of(job);
    let unsupported = |s: String| Err(PhotometricJobError::GpuUnsupported(s));
    if sizes.num_pixels as u64 * 8 >= u32::MAX as u64
        || sizes.acc_words() as u64 >= u32::MAX as u64
        || sizes.state_words() as u64 >= u32::MAX as u64
        || sizes.mesh_words() as u64 >= u32::MAX as u64
    {
        return unsupported("the image, mesh or schedule is too large for 32-bit indices".into());
    }
    if limits.max_storage_buffers_per_shader_stage < 8
        || limits.max_compute_workgroup_size_x < layout::WORKGROUP
        || limits.max_compute_invocations_per_workgroup < layout::WORKGROUP
        || limits.max_compute_workgroup_storage_size < 2176 * 4
        || limits.max_compute_workgroups_per_dimension < layout::MAX_GROUPS_PER_DIM
    {
        return unsupported(
            "the render device is below WebGPU's default compute limits (8 storage buffers per stage, 64 threads and 8.5 KiB shared memory per workgroup, 65535 workgroups per dimension)"
                .into(),
        );
    }
    let max_binding = limits.max_storage_buffer_binding_size;
    let largest = sizes.buffer_bytes().into_iter().skip(1).max().unwrap_or(0);
    if largest > max_binding || largest > limits.max_buffer_size {
        return unsupported(format!(
            "a buffer of {largest} bytes is needed, but the device allows {} per storage binding; use a smaller image",
            max_binding.min(limits.max_buffer_size)
        ));
    }
    if sizes.output().total as u64 > limits.max_buffer_size {
        return unsupported("the read-back buffer exceeds the device's largest buffer".into());
    }
    Ok(())
}

fn start_jobs(
    mut commands: Commands,
    jobs: Query<(Entity, &PhotometricFit), Changed<PhotometricFit>>,
    settings: Res<PhotometricFitSettings>,
    device: Option<Res<RenderDevice>>,
    gpu_path: Option<Res<GpuPathBuilt>>,
    mut buffers: Option<ResMut<Assets<ShaderBuffer>>>,
    mut tags: ResMut<TagCounter>,
    mut done: MessageWriter<PhotometricFitDone>,
) {
    for (entity, fit) in &jobs {
        let job = &fit.job;
        let backend = fit.backend.unwrap_or(settings.backend);
        let gpu_device = device.as_ref().filter(|_| gpu_path.is_some());
        let use_gpu = match backend {
            FitBackend::Cpu => false,
            FitBackend::Gpu => true,
            FitBackend::Auto => gpu_device.is_some(),
        };
        let used = if use_gpu {
            UsedBackend::Gpu
        } else {
            UsedBackend::Cpu
        };
        let mut entity_cmds = commands.entity(entity);
        entity_cmds.remove::<(CpuRun, GpuRun, Readback)>();
        let fail = |e: PhotometricJobError, done: &mut MessageWriter<PhotometricFitDone>| {
            done.write(PhotometricFitDone {
                entity,
                backend: used,
                result: Err(e),
            });
        };
        if let Err(e) = job.validate() {
            fail(e, &mut done);
            continue;
        }
        let progress = PhotometricFitProgress {
            backend: used,
            steps_done: 0,
            total_steps: job.total_steps().min(u32::MAX as u64) as u32,
            last: None,
            finished: false,
        };
        if use_gpu {
            let (Some(device), Some(buffers)) = (gpu_device, buffers.as_mut()) else {
                fail(PhotometricJobError::NoRenderDevice, &mut done);
                continue;
            };
            if let Err(e) = check_gpu_limits(job, &device.limits()) {
                fail(e, &mut done);
                continue;
            }
            let size = Sizes::of(job).output().total;
            let output = buffers.add(ShaderBuffer::with_size(
                size,
                RenderAssetUsages::RENDER_WORLD,
            ));
            let tag = tags.0;
            tags.0 = tags.0.wrapping_add(1).max(1);
            entity_cmds.insert((
                GpuRun {
                    job: job.clone(),
                    tag,
                    output: output.clone(),
                    steps_per_frame: fit.steps_per_frame.unwrap_or(settings.steps_per_frame),
                },
                Readback::buffer(output),
                progress,
            ));
        } else {
            let steps = Arc::new(AtomicU32::new(0));
            let counter = steps.clone();
            let job = job.clone();
            let task = AsyncComputeTaskPool::get().spawn(async move {
                run_cpu_with_progress(&job, |_| {
                    counter.fetch_add(1, Ordering::Relaxed);
                })
            });
            entity_cmds.insert((CpuRun { task, steps }, progress));
        }
    }
}

fn poll_cpu_jobs(
    mut commands: Commands,
    mut runs: Query<(Entity, &mut CpuRun, &mut PhotometricFitProgress)>,
    mut done: MessageWriter<PhotometricFitDone>,
) {
    for (entity, mut run, mut progress) in &mut runs {
        progress.steps_done = run.steps.load(Ordering::Relaxed);
        let Some(result) = check_ready(&mut run.task) else {
            continue;
        };
        if let Ok(JobOutput::Fit(f)) = &result {
            progress.last = f.history.last().copied();
            progress.steps_done = f.history.len() as u32;
        }
        progress.finished = true;
        commands.entity(entity).remove::<CpuRun>();
        done.write(PhotometricFitDone {
            entity,
            backend: UsedBackend::Cpu,
            result,
        });
    }
}

fn collect_gpu_errors(
    mut commands: Commands,
    errors: Res<GpuErrors>,
    mut progress: Query<&mut PhotometricFitProgress>,
    runs: Query<&GpuRun>,
    mut done: MessageWriter<PhotometricFitDone>,
) {
    let drained: Vec<_> = match errors.0.lock() {
        Ok(mut v) => v.drain(..).collect(),
        Err(_) => return,
    };
    for (entity, error) in drained {
        if runs.get(entity).is_err() {
            continue;
        }
        if let Ok(mut p) = progress.get_mut(entity) {
            p.finished = true;
        }
        commands.entity(entity).remove::<(GpuRun, Readback)>();
        done.write(PhotometricFitDone {
            entity,
            backend: UsedBackend::Gpu,
            result: Err(error),
        });
    }
}

/// Decodes the read-back output of a GPU job. Stale buffers (another job's tag, or data from
/// before the shader ran) are ignored; progress is updated; on completion the results are
/// sent and the job's GPU components removed.
fn on_readback(
    event: On<ReadbackComplete>,
    mut commands: Commands,
    mut runs: Query<(&GpuRun, &mut PhotometricFitProgress)>,
    mut done: MessageWriter<PhotometricFitDone>,
) {
    let entity = event.entity;
    let Ok((run, mut progress)) = runs.get_mut(entity) else {
        return;
    };
    let Some((tag, steps, final_done)) = layout::peek(&event.data) else {
        return;
    };
    if tag != run.tag || steps < progress.steps_done {
        return;
    }
    progress.steps_done = steps;
    if steps > 0 {
        progress.last = layout::history_entry(&run.job, &event.data, steps as usize - 1);
    }
    if !final_done {
        return;
    }
    let result = match layout::decode(&run.job, &event.data) {
        None => Err(PhotometricJobError::GpuUnsupported(
            "the read-back buffer has the wrong size".into(),
        )),
        Some(d) if d.errors & layout::ERR_NONFINITE_INPUT != 0 => {
            Err(PhotometricJobError::NonFinite)
        }
        Some(d) if d.errors & layout::ERR_FIXED_OVERFLOW != 0 => {
            Err(PhotometricJobError::FixedPointOverflow)
        }
        Some(d) => Ok(match run.job.kind {
            JobKind::Fit => JobOutput::Fit(FitOutcome {
                variables: d.variables,
                history: d.history,
                final_photometric: d.photometric,
            }),
            JobKind::Evaluate => JobOutput::Evaluate(Evaluation {
                loss: d.photometric,
                weight_sum: d.weight_sum as f64,
                gradients: d.gradients,
                visibility: d.visibility,
                residuals: d.residuals,
                covered: d.covered,
                holes: d.holes,
            }),
        }),
    };
    progress.finished = true;
    commands.entity(entity).remove::<(GpuRun, Readback)>();
    done.write(PhotometricFitDone {
        entity,
        backend: UsedBackend::Gpu,
        result,
    });
}

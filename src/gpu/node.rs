//! Render-world side: compute pipelines, per-job GPU buffers and the render-graph system that
//! encodes the passes.

use std::sync::{Arc, Mutex};

use bevy::asset::Handle;
use bevy::ecs::entity::EntityHashMap;
use bevy::prelude::*;
use bevy::render::Extract;
use bevy::render::render_asset::RenderAssets;
use bevy::render::render_resource::{
    BindGroup, BindGroupEntry, BindGroupLayoutDescriptor, BindGroupLayoutEntry, BindingType,
    Buffer, BufferBindingType, BufferDescriptor, BufferInitDescriptor, BufferUsages,
    CachedComputePipelineId, CachedPipelineState, CommandEncoder, ComputePassDescriptor,
    ComputePipeline, ComputePipelineDescriptor, PipelineCache, ShaderStages,
};
use bevy::render::renderer::{FlushCommands, RenderContext, RenderDevice};
use bevy::render::storage::{GpuShaderBuffer, ShaderBuffer};
use bevy::shader::{Shader, ShaderCacheError};

use super::job::{PhotometricJob, PhotometricJobError};
use super::layout::{self, NUM_BINDINGS, PARTIALS, Sizes, binding as b};

/// The compute entry points, in the order a step runs them, with the bindings each one uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Clear,
    TriCross,
    VertexForward,
    TriSetup,
    RasterDepth,
    RasterId,
    Shade,
    ReduceLoss,
    BackwardPixels,
    BackwardVertices,
    BackwardNormals,
    ReduceGrads,
    Adam,
    FinishStep,
}

const PASSES: [Pass; 14] = [
    Pass::Clear,
    Pass::TriCross,
    Pass::VertexForward,
    Pass::TriSetup,
    Pass::RasterDepth,
    Pass::RasterId,
    Pass::Shade,
    Pass::ReduceLoss,
    Pass::BackwardPixels,
    Pass::BackwardVertices,
    Pass::BackwardNormals,
    Pass::ReduceGrads,
    Pass::Adam,
    Pass::FinishStep,
];

impl Pass {
    fn index(self) -> usize {
        self as usize
    }

    fn entry_point(self) -> &'static str {
        match self {
            Pass::Clear => "clear",
            Pass::TriCross => "tri_cross",
            Pass::VertexForward => "vertex_forward",
            Pass::TriSetup => "tri_setup",
            Pass::RasterDepth => "raster_depth",
            Pass::RasterId => "raster_id",
            Pass::Shade => "shade",
            Pass::ReduceLoss => "reduce_loss",
            Pass::BackwardPixels => "backward_pixels",
            Pass::BackwardVertices => "backward_vertices",
            Pass::BackwardNormals => "backward_normals",
            Pass::ReduceGrads => "reduce_grads",
            Pass::Adam => "adam",
            Pass::FinishStep => "finish_step",
        }
    }

    /// Bindings of group 0 the entry point uses (at most 8 storage buffers each, WebGPU's
    /// guaranteed minimum per stage).
    fn bindings(self) -> &'static [u32] {
        match self {
            Pass::Clear => &[b::PARAMS, b::VIS, b::ACC],
            Pass::TriCross => &[b::PARAMS, b::MESH, b::BASE, b::THETA, b::TRIS],
            Pass::VertexForward => &[
                b::PARAMS,
                b::MESH,
                b::BASE,
                b::THETA,
                b::VSTATE,
                b::TRIS,
                b::ACC,
            ],
            Pass::TriSetup => &[b::PARAMS, b::MESH, b::VSTATE, b::TRIS],
            Pass::RasterDepth | Pass::RasterId => &[b::PARAMS, b::TRIS, b::VIS],
            Pass::Shade => &[
                b::PARAMS,
                b::MESH,
                b::VSTATE,
                b::TRIS,
                b::VIS,
                b::PIX,
                b::TARGET,
                b::ACC,
                b::PARTIALS,
            ],
            Pass::ReduceLoss => &[b::PARAMS, b::STATE, b::PARTIALS],
            Pass::BackwardPixels => &[b::PARAMS, b::MESH, b::VSTATE, b::VIS, b::PIX, b::ACC],
            Pass::BackwardVertices => &[
                b::PARAMS,
                b::STATE,
                b::BASE,
                b::THETA,
                b::GRADS,
                b::VSTATE,
                b::ACC,
                b::VGRAD,
                b::PARTIALS,
            ],
            Pass::BackwardNormals => &[b::PARAMS, b::MESH, b::BASE, b::THETA, b::GRADS, b::VGRAD],
            Pass::ReduceGrads => &[b::PARAMS, b::GRADS, b::PARTIALS],
            Pass::Adam => &[
                b::PARAMS,
                b::STATE,
                b::STEPS,
                b::THETA,
                b::GRADS,
                b::OPT,
                b::PARTIALS,
            ],
            Pass::FinishStep => &[b::PARAMS, b::STATE, b::PARTIALS],
        }
    }

    /// Workgroups `(x, y)` of one dispatch.
    fn dispatch(self, s: &Sizes) -> (u32, u32) {
        let linear = |threads: usize| layout::dispatch_dims(layout::groups(threads));
        match self {
            Pass::Clear => linear(s.num_pixels.max(12 * s.num_vertices)),
            Pass::TriCross | Pass::TriSetup | Pass::RasterDepth | Pass::RasterId => {
                linear(s.num_triangles)
            }
            Pass::VertexForward | Pass::BackwardVertices | Pass::BackwardNormals => {
                linear(s.num_vertices)
            }
            Pass::Shade | Pass::BackwardPixels => linear(s.num_pixels),
            Pass::Adam => linear(s.num_params),
            Pass::ReduceLoss | Pass::FinishStep => (1, 1),
            Pass::ReduceGrads => (PARTIALS as u32, 1),
        }
    }
}

/// Render-world handle of the shader.
#[derive(Resource, Clone)]
pub(crate) struct PhotometricShader(pub Handle<Shader>);

/// The queued pipelines and their bind-group layouts, one per [`Pass`].
#[derive(Resource)]
pub(crate) struct PhotometricPipelines {
    layouts: Vec<BindGroupLayoutDescriptor>,
    ids: Vec<CachedComputePipelineId>,
}

/// Errors raised in the render world, drained by the main world (shared between both).
#[derive(Resource, Clone, Default)]
pub(crate) struct GpuErrors(pub Arc<Mutex<Vec<(Entity, PhotometricJobError)>>>);

impl GpuErrors {
    fn push(&self, entity: Entity, error: PhotometricJobError) {
        if let Ok(mut v) = self.0.lock() {
            v.push((entity, error));
        }
    }
}

/// Main-world component of a job running on the GPU (inserted by the plugin).
#[derive(Component, Clone)]
pub(crate) struct GpuRun {
    pub job: Arc<PhotometricJob>,
    pub tag: u32,
    pub output: Handle<ShaderBuffer>,
    pub steps_per_frame: u32,
}

/// The GPU runs seen in the last extraction, by main-world entity.
#[derive(Resource, Default)]
pub(crate) struct ExtractedRuns(Vec<(Entity, GpuRun)>);

/// GPU resources and progress of one job.
struct GpuJob {
    tag: u32,
    sizes: Sizes,
    buffers: Vec<Buffer>,
    bind_groups: Option<Vec<BindGroup>>,
    output: Handle<ShaderBuffer>,
    steps_per_frame: u32,
    encoded_steps: usize,
    final_encoded: bool,
    failed: bool,
}

/// Live jobs in the render world.
#[derive(Resource, Default)]
pub(crate) struct GpuJobs(EntityHashMap<GpuJob>);

fn layout_descriptor(pass: Pass) -> BindGroupLayoutDescriptor {
    let entries: Vec<BindGroupLayoutEntry> = pass
        .bindings()
        .iter()
        .map(|&binding| BindGroupLayoutEntry {
            binding,
            visibility: ShaderStages::COMPUTE,
            ty: BindingType::Buffer {
                ty: if binding == b::PARAMS {
                    BufferBindingType::Uniform
                } else {
                    BufferBindingType::Storage {
                        read_only: b::read_only(binding),
                    }
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    BindGroupLayoutDescriptor::new(
        format!("visage_photometric_{}", pass.entry_point()),
        &entries,
    )
}

/// `RenderStartup`: queues one compute pipeline per entry point.
pub(crate) fn queue_pipelines(
    mut commands: Commands,
    shader: Res<PhotometricShader>,
    cache: Res<PipelineCache>,
) {
    let mut layouts = Vec::with_capacity(PASSES.len());
    let mut ids = Vec::with_capacity(PASSES.len());
    for pass in PASSES {
        let layout = layout_descriptor(pass);
        ids.push(cache.queue_compute_pipeline(ComputePipelineDescriptor {
            label: Some(format!("visage_photometric_{}", pass.entry_point()).into()),
            layout: vec![layout.clone()],
            shader: shader.0.clone(),
            entry_point: Some(pass.entry_point().into()),
            zero_initialize_workgroup_memory: true,
            ..default()
        }));
        layouts.push(layout);
    }
    commands.insert_resource(PhotometricPipelines { layouts, ids });
}

/// `ExtractSchedule`: copies the running GPU jobs (cheap: `Arc` and handles).
pub(crate) fn extract_runs(
    mut extracted: ResMut<ExtractedRuns>,
    runs: Extract<Query<(Entity, &GpuRun)>>,
) {
    extracted.0.clear();
    extracted.0.extend(runs.iter().map(|(e, r)| (e, r.clone())));
}

/// `Render` / `PrepareResources`: creates the buffers of new jobs and drops finished ones.
pub(crate) fn prepare_jobs(
    extracted: Res<ExtractedRuns>,
    mut jobs: ResMut<GpuJobs>,
    device: Res<RenderDevice>,
) {
    jobs.0
        .retain(|e, job| extracted.0.iter().any(|(x, r)| x == e && r.tag == job.tag));
    for (entity, run) in &extracted.0 {
        if jobs.0.contains_key(entity) {
            continue;
        }
        jobs.0.insert(*entity, create_job(&device, run));
    }
}

fn create_job(device: &RenderDevice, run: &GpuRun) -> GpuJob {
    let job = &run.job;
    let sizes = Sizes::of(job);
    let bytes = sizes.buffer_bytes();
    let (theta, opt) = layout::pack_theta_opt(job);
    let storage = BufferUsages::STORAGE | BufferUsages::COPY_SRC | BufferUsages::COPY_DST;
    let with_data = |label: &str, contents: &[u8], usage: BufferUsages| {
        device.create_buffer_with_data(&BufferInitDescriptor {
            label: Some(label),
            contents,
            usage,
        })
    };
    let empty = |label: &str, size: u64| {
        device.create_buffer(&BufferDescriptor {
            label: Some(label),
            size,
            usage: storage,
            mapped_at_creation: false,
        })
    };
    let mut buffers = Vec::with_capacity(NUM_BINDINGS);
    for binding in 0..NUM_BINDINGS as u32 {
        let size = bytes[binding as usize];
        let buffer = match binding {
            b::PARAMS => with_data(
                "visage_photometric_params",
                &layout::pack_uniform(job, &sizes, run.tag),
                BufferUsages::UNIFORM | BufferUsages::COPY_DST,
            ),
            b::STEPS => with_data(
                "visage_photometric_steps",
                &layout::pack_steps(job),
                storage,
            ),
            b::MESH => with_data("visage_photometric_mesh", &layout::pack_mesh(job), storage),
            b::BASE => with_data("visage_photometric_base", &layout::pack_base(job), storage),
            b::THETA => with_data("visage_photometric_theta", &theta, storage),
            b::OPT => with_data("visage_photometric_opt", &opt, storage),
            b::TARGET => with_data(
                "visage_photometric_target",
                &layout::pack_target(job),
                storage,
            ),
            _ => empty("visage_photometric_scratch", size),
        };
        buffers.push(buffer);
    }
    GpuJob {
        tag: run.tag,
        sizes,
        buffers,
        bind_groups: None,
        output: run.output.clone(),
        steps_per_frame: run.steps_per_frame.max(1),
        encoded_steps: 0,
        final_encoded: false,
        failed: false,
    }
}

/// `Render` / `PrepareBindGroups`: one bind group per pass for jobs that have none yet.
pub(crate) fn prepare_bind_groups(
    mut jobs: ResMut<GpuJobs>,
    pipelines: Option<Res<PhotometricPipelines>>,
    cache: Res<PipelineCache>,
    device: Res<RenderDevice>,
) {
    let Some(pipelines) = pipelines else {
        return;
    };
    for job in jobs.0.values_mut() {
        if job.bind_groups.is_some() {
            continue;
        }
        let groups = PASSES
            .iter()
            .map(|&pass| {
                let layout = cache.get_bind_group_layout(&pipelines.layouts[pass.index()]);
                let entries: Vec<BindGroupEntry> = pass
                    .bindings()
                    .iter()
                    .map(|&binding| BindGroupEntry {
                        binding,
                        resource: job.buffers[binding as usize].as_entire_binding(),
                    })
                    .collect();
                device.create_bind_group(pass.entry_point(), &layout, &entries)
            })
            .collect();
        job.bind_groups = Some(groups);
    }
}

/// The pipelines when all are ready; `Err` with the first failure.
fn ready_pipelines<'a>(
    cache: &'a PipelineCache,
    pipelines: &PhotometricPipelines,
) -> Result<Option<Vec<&'a ComputePipeline>>, String> {
    let mut out = Vec::with_capacity(pipelines.ids.len());
    for (pass, &id) in PASSES.iter().zip(&pipelines.ids) {
        match cache.get_compute_pipeline_state(id) {
            CachedPipelineState::Ok(_) => match cache.get_compute_pipeline(id) {
                Some(p) => out.push(p),
                None => return Ok(None),
            },
            CachedPipelineState::Err(ShaderCacheError::ShaderNotLoaded(_)) => return Ok(None),
            CachedPipelineState::Err(e) => {
                return Err(format!("entry point `{}`: {e}", pass.entry_point()));
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// The render-graph system: for every job, up to `steps_per_frame` optimiser steps (each a
/// sequence of compute dispatches), then the final evaluation, then a copy of the results into
/// the job's read-back buffer.
pub(crate) fn photometric_node(
    mut ctx: RenderContext,
    mut jobs: ResMut<GpuJobs>,
    pipelines: Option<Res<PhotometricPipelines>>,
    cache: Res<PipelineCache>,
    ssbos: Res<RenderAssets<GpuShaderBuffer>>,
    errors: Res<GpuErrors>,
) {
    if jobs.0.is_empty() {
        return;
    }
    let Some(pipelines) = pipelines else {
        return;
    };
    let ready = match ready_pipelines(&cache, &pipelines) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            for (entity, job) in jobs.0.iter_mut() {
                if !job.failed {
                    job.failed = true;
                    errors.push(*entity, PhotometricJobError::Pipeline(e.clone()));
                }
            }
            return;
        }
    };
    for job in jobs.0.values_mut() {
        if job.failed || job.final_encoded {
            continue;
        }
        let (Some(groups), Some(output)) = (&job.bind_groups, ssbos.get(&job.output)) else {
            continue;
        };
        let encoder = ctx.command_encoder();
        let n = (job.sizes.total_steps - job.encoded_steps).min(job.steps_per_frame as usize);
        for _ in 0..n {
            encode(encoder, &ready, groups, &job.sizes, true, true);
        }
        job.encoded_steps += n;
        if job.encoded_steps == job.sizes.total_steps {
            // Final forward pass (an evaluation job also runs its backward pass here).
            encode(
                encoder,
                &ready,
                groups,
                &job.sizes,
                job.sizes.evaluate,
                false,
            );
            job.final_encoded = true;
        }
        copy_output(encoder, &job.buffers, &job.sizes, &output.buffer);
    }
}

/// Runs after [`photometric_node`]: submits the command buffers queued so far (in order), so
/// the passes run in apps without Bevy's core pipeline (which otherwise submits them in
/// `RenderGraphSystems::Submit`) and before this frame's read-back copies.
pub(crate) fn photometric_flush(jobs: Res<GpuJobs>, mut flush: FlushCommands) {
    if !jobs.0.is_empty() {
        flush.flush();
    }
}

fn encode(
    encoder: &mut CommandEncoder,
    pipelines: &[&ComputePipeline],
    groups: &[BindGroup],
    sizes: &Sizes,
    backward: bool,
    adam: bool,
) {
    let mut pass = encoder.begin_compute_pass(&ComputePassDescriptor {
        label: Some("visage_photometric_step"),
        timestamp_writes: None,
    });
    for p in PASSES {
        let run = match p {
            Pass::BackwardPixels
            | Pass::BackwardVertices
            | Pass::BackwardNormals
            | Pass::ReduceGrads => backward,
            Pass::Adam | Pass::FinishStep => adam,
            _ => true,
        };
        if !run {
            continue;
        }
        let (x, y) = p.dispatch(sizes);
        pass.set_pipeline(pipelines[p.index()]);
        pass.set_bind_group(0, &groups[p.index()], &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}

fn copy_output(encoder: &mut CommandEncoder, buffers: &[Buffer], sizes: &Sizes, output: &Buffer) {
    let out = sizes.output();
    let mut copy = |src: u32, src_off: usize, dst_off: usize, len: usize| {
        if len > 0 {
            encoder.copy_buffer_to_buffer(
                &buffers[src as usize],
                src_off as u64,
                output,
                dst_off as u64,
                len as u64,
            );
        }
    };
    copy(b::STATE, 0, out.state, sizes.state_words() * 4);
    copy(
        b::ACC,
        12 * sizes.num_vertices * 4,
        out.flags,
        layout::FLAG_WORDS * 4,
    );
    copy(b::THETA, 0, out.theta, sizes.num_params * 4);
    copy(b::GRADS, 0, out.grads, sizes.num_params * 4);
    if sizes.evaluate {
        copy(b::VIS, 0, out.vis, 2 * sizes.num_pixels * 4);
        copy(b::PIX, 0, out.pix, 8 * sizes.num_pixels * 4);
    }
}

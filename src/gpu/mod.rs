//! The photometric pass on the GPU, and the plugin that runs photometric jobs on the GPU or the
//! CPU.
//!
//! The GPU implementation computes what `visage_core::render` defines — same camera, SH
//! lighting, per-vertex shading with perspective-correct interpolation, masked loss, gradient
//! conventions and Adam — as WGSL compute passes run by a system in Bevy's `RenderGraph`
//! schedule (`shaders/photometric.wgsl`, embedded in the binary):
//!
//! 1. clear; edge cross products; per-vertex normals, SH irradiance, shading and projection;
//!    per-triangle set-up;
//! 2. visibility buffer in two atomic passes: nearest depth key per pixel (`atomicMax` over
//!    order-preserving `u32` bits), then the lowest triangle index at that key;
//! 3. shading, residual and penalty per pixel, loss reduced in workgroups;
//! 4. backward: per pixel, gradients scattered to the three corners with 64-bit fixed-point
//!    atomics (two 32-bit words with carry, 32 fractional bits), then per vertex the albedo, SH,
//!    camera and normal chain rules, reduced deterministically;
//! 5. Adam over the flat parameter vector with its moments on the GPU, several steps per frame;
//! 6. the results copied into a [`ShaderBuffer`](bevy::render::storage::ShaderBuffer) read back
//!    with Bevy's `Readback`, stamped with the job's tag and step count (stale read-backs are
//!    ignored).
//!
//! Usage: add [`PhotometricFitPlugin`], insert a [`PhotometricFit`] holding a
//! [`PhotometricJob`] on an entity, watch [`PhotometricFitProgress`] and read
//! [`PhotometricFitDone`]. [`run_cpu`] runs the same job with the CPU reference. Layouts, the
//! fixed-point error bound and measured agreement are in `docs/photometric_gpu.md`.
#![deny(missing_docs)]

mod job;
mod layout;
mod node;
mod plugin;

pub use job::{
    Evaluation, FitOutcome, JobKind, JobOutput, PhotometricJob, PhotometricJobError, run_cpu,
    run_cpu_with_progress,
};
pub use plugin::{
    FitBackend, PhotometricFit, PhotometricFitDone, PhotometricFitPlugin, PhotometricFitProgress,
    PhotometricFitSettings, UsedBackend, check_gpu_limits,
};

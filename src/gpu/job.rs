//! The job description shared by both backends, its results, its errors and the CPU path.

use visage_core::render::{
    FitProblem, FitVariables, Fitter, Gradients, NO_TRIANGLE, PassConfig, PhotometricPass,
    RenderError, Scene, StepReport, Target, VertexOffsets,
};

/// What a [`PhotometricJob`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Run every stage of the job's [`FitProblem`] with Adam and return the fitted variables.
    Fit,
    /// One loss-and-gradient evaluation at the initial variables (no optimisation); the
    /// problem's loss definition is used, its stages are ignored.
    Evaluate,
}

/// A photometric fit (or a single evaluation) of a mesh against a photo, described as data so
/// that the CPU reference and the GPU node run the same thing.
///
/// The geometry is `base_vertices + offsets`, with the offsets being the shape parameters
/// ([`FitVariables::shape`], `3·V` values laid out `[v][xyz]`, the core's [`VertexOffsets`]
/// model). The GPU path has no other shape model: a fit of FLAME coefficients runs the FLAME
/// forward pass on the CPU and uses the CPU path, or fits offsets on the GPU.
#[derive(Clone, Debug)]
pub struct PhotometricJob {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Mesh triangles (counter-clockwise seen from outside).
    pub triangles: Vec<[u32; 3]>,
    /// Base vertex positions in the camera frame, metres.
    pub base_vertices: Vec<[f32; 3]>,
    /// The photo, linear RGB, row-major `height × width`.
    pub image: Vec<[f32; 3]>,
    /// `M_face` in `[0, 1]`, row-major; `None` means 1 everywhere.
    pub face_mask: Option<Vec<f32>>,
    /// `M_occ` in `[0, 1]` (1 = occluded), row-major; `None` means 0 everywhere.
    pub occlusion_mask: Option<Vec<f32>>,
    /// Initial variables: `shape` holds per-vertex offsets (`3·V`), `albedo` one colour per
    /// vertex, the lighting and the camera.
    pub initial: FitVariables,
    /// Loss, weights and the stage schedule.
    pub problem: FitProblem,
    /// Rasteriser settings (`band_rows` only tunes the CPU path).
    pub pass: PassConfig,
    /// Fit or single evaluation.
    pub kind: JobKind,
}

/// Result of a [`JobKind::Fit`] job.
#[derive(Clone, Debug, PartialEq)]
pub struct FitOutcome {
    /// The fitted variables.
    pub variables: FitVariables,
    /// One record per optimiser step, in order: the objective and the photometric loss before
    /// the step.
    pub history: Vec<StepReport>,
    /// Photometric loss of the fitted variables.
    pub final_photometric: f32,
}

/// Result of a [`JobKind::Evaluate`] job.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The photometric loss.
    pub loss: f32,
    /// The loss normaliser `Σ w`.
    pub weight_sum: f64,
    /// Gradients of the loss. `vertices` is also the gradient with respect to the offsets.
    pub gradients: Gradients,
    /// Front triangle per pixel (row-major), [`NO_TRIANGLE`] where uncovered.
    pub visibility: Vec<u32>,
    /// Signed residual `I_ren − I` per pixel, 0 outside the loss.
    pub residuals: Vec<[f32; 3]>,
    /// Number of covered pixels.
    pub covered: u32,
    /// GPU only: pixels that received a depth but no triangle in the second visibility pass
    /// (0 unless the two passes disagree on a depth key; always 0 on the CPU).
    pub holes: u32,
}

/// What a finished job produced.
#[derive(Clone, Debug)]
pub enum JobOutput {
    /// From a [`JobKind::Fit`] job.
    Fit(FitOutcome),
    /// From a [`JobKind::Evaluate`] job.
    Evaluate(Evaluation),
}

impl JobOutput {
    /// The fit outcome, if this is one.
    pub fn fit(&self) -> Option<&FitOutcome> {
        match self {
            JobOutput::Fit(f) => Some(f),
            JobOutput::Evaluate(_) => None,
        }
    }

    /// The evaluation, if this is one.
    pub fn evaluation(&self) -> Option<&Evaluation> {
        match self {
            JobOutput::Evaluate(e) => Some(e),
            JobOutput::Fit(_) => None,
        }
    }
}

/// Why a photometric job failed, as a sentence a user can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PhotometricJobError {
    /// The job description is invalid (sizes, values, schedule).
    #[error("{0}")]
    Invalid(String),
    /// The GPU backend was requested but there is no render device.
    #[error(
        "the GPU backend was requested, but this app has no render device (add Bevy's RenderPlugin with a working graphics driver, or choose the CPU backend)"
    )]
    NoRenderDevice,
    /// The job exceeds what the GPU path or the device supports.
    #[error("the GPU path cannot run this job: {0}")]
    GpuUnsupported(String),
    /// A compute pipeline of the photometric pass failed to build.
    #[error("the GPU photometric pipeline could not be built: {0}")]
    Pipeline(String),
    /// Vertex positions or albedo became NaN or infinite during the GPU run.
    #[error(
        "the vertex positions or albedo contain NaN or infinity (the fit diverged; lower the learning rates)"
    )]
    NonFinite,
    /// A gradient accumulator of the GPU backward pass went out of range.
    #[error(
        "a per-vertex gradient of the GPU backward pass exceeded the fixed-point range (±2^30 per pixel contribution); the gradients would be wrong"
    )]
    FixedPointOverflow,
    /// The CPU worker stopped without a result.
    #[error("the CPU photometric task ended without a result")]
    TaskLost,
}

impl From<RenderError> for PhotometricJobError {
    fn from(e: RenderError) -> Self {
        PhotometricJobError::Invalid(e.to_string())
    }
}

fn length(what: &str, expected: usize, got: usize) -> PhotometricJobError {
    PhotometricJobError::Invalid(format!(
        "{what} has {got} entries, but {expected} were expected"
    ))
}

impl PhotometricJob {
    /// Number of vertices.
    pub fn num_vertices(&self) -> usize {
        self.base_vertices.len()
    }

    /// Number of pixels.
    pub fn num_pixels(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// Total number of optimiser steps ([`JobKind::Evaluate`]: 0).
    pub fn total_steps(&self) -> u64 {
        match self.kind {
            JobKind::Fit => self.problem.stages.iter().map(|s| s.steps as u64).sum(),
            JobKind::Evaluate => 0,
        }
    }

    /// Checks sizes and values the same way for both backends: array lengths, triangle
    /// indices, finite photo and masks, a valid problem and a usable camera and lighting.
    pub fn validate(&self) -> Result<(), PhotometricJobError> {
        // Topology, image size and pass settings.
        PhotometricPass::new(
            self.width,
            self.height,
            &self.triangles,
            self.num_vertices(),
            self.pass,
        )?;
        let nv = self.num_vertices();
        let np = self.num_pixels();
        if self.initial.shape.len() != 3 * nv {
            return Err(length(
                "the vertex offsets (shape parameters, 3 per vertex)",
                3 * nv,
                self.initial.shape.len(),
            ));
        }
        if self.initial.albedo.len() != nv {
            return Err(length("the albedo array", nv, self.initial.albedo.len()));
        }
        if self.image.len() != np {
            return Err(length("the photo", np, self.image.len()));
        }
        for (what, m) in [
            ("the face mask", &self.face_mask),
            ("the occlusion mask", &self.occlusion_mask),
        ] {
            if let Some(m) = m {
                if m.len() != np {
                    return Err(length(what, np, m.len()));
                }
                if m.iter().any(|x| !x.is_finite()) {
                    return Err(PhotometricJobError::Invalid(format!(
                        "{what} contains NaN or infinity"
                    )));
                }
            }
        }
        if self.image.iter().flatten().any(|x| !x.is_finite()) {
            return Err(PhotometricJobError::Invalid(
                "the photo contains NaN or infinity".into(),
            ));
        }
        let finite3 = |v: &[[f32; 3]]| v.iter().flatten().all(|x| x.is_finite());
        if !finite3(&self.base_vertices)
            || !finite3(&self.initial.albedo)
            || self.initial.shape.iter().any(|x| !x.is_finite())
        {
            return Err(PhotometricJobError::Invalid(
                "the vertex positions, offsets or albedo contain NaN or infinity".into(),
            ));
        }
        if self.initial.sh.iter().flatten().any(|x| !x.is_finite()) {
            return Err(PhotometricJobError::Invalid(
                "the lighting coefficients contain NaN or infinity".into(),
            ));
        }
        let cam = self.initial.camera.params();
        if cam.iter().any(|x| !x.is_finite()) || cam[0] <= 0.0 {
            return Err(PhotometricJobError::Invalid(
                "the camera parameters must be finite with a positive focal length (scale)".into(),
            ));
        }
        if self.initial.camera.is_perspective() && cam[1] <= 0.0 {
            return Err(PhotometricJobError::Invalid(
                "the focal length must be positive".into(),
            ));
        }
        if let Some(bg) = self.problem.loss.background
            && bg.iter().any(|x| !x.is_finite())
        {
            return Err(PhotometricJobError::Invalid(
                "the background colour contains NaN or infinity".into(),
            ));
        }
        self.problem.validate()?;
        Ok(())
    }

    /// The posed vertices `base + offsets` of the initial variables.
    pub fn initial_vertices(&self) -> Vec<[f32; 3]> {
        self.base_vertices
            .iter()
            .zip(self.initial.shape.chunks_exact(3))
            .map(|(b, d)| [b[0] + d[0], b[1] + d[1], b[2] + d[2]])
            .collect()
    }
}

/// Runs a job on the CPU with the core's reference implementation ([`PhotometricPass`],
/// [`Fitter`] with [`VertexOffsets`]). This is what the plugin runs when the CPU backend is
/// chosen; the GPU path computes the same thing.
pub fn run_cpu(job: &PhotometricJob) -> Result<JobOutput, PhotometricJobError> {
    run_cpu_with_progress(job, |_| {})
}

/// [`run_cpu`] with a callback that sees every optimiser step.
pub fn run_cpu_with_progress(
    job: &PhotometricJob,
    mut on_step: impl FnMut(&StepReport),
) -> Result<JobOutput, PhotometricJobError> {
    job.validate()?;
    let mut pass = PhotometricPass::new(
        job.width,
        job.height,
        &job.triangles,
        job.num_vertices(),
        job.pass,
    )?;
    let target = Target {
        image: &job.image,
        face_mask: job.face_mask.as_deref(),
        occlusion_mask: job.occlusion_mask.as_deref(),
    };
    match job.kind {
        JobKind::Evaluate => {
            let vertices = job.initial_vertices();
            let scene = Scene {
                vertices: &vertices,
                albedo: &job.initial.albedo,
                sh: &job.initial.sh,
                camera: job.initial.camera,
            };
            let (loss, grads) = pass.loss_and_grad(&scene, &target, &job.problem.loss)?;
            let gradients = grads.clone();
            let visibility: Vec<u32> = pass.pixels().iter().map(|p| p.triangle).collect();
            let covered = visibility.iter().filter(|&&t| t != NO_TRIANGLE).count() as u32;
            Ok(JobOutput::Evaluate(Evaluation {
                loss,
                weight_sum: pass.weight_sum(),
                gradients,
                visibility,
                residuals: pass.residuals().to_vec(),
                covered,
                holes: 0,
            }))
        }
        JobKind::Fit => {
            let mut model = VertexOffsets {
                base: job.base_vertices.clone(),
            };
            let mut vars = job.initial.clone();
            let mut fitter = Fitter::new(&model, &vars, job.problem.adam)?;
            let mut history = Vec::with_capacity(job.total_steps() as usize);
            let final_photometric = fitter.run(
                &job.problem,
                &mut pass,
                &mut model,
                &mut vars,
                &target,
                |r| {
                    history.push(*r);
                    on_step(r);
                },
            )?;
            Ok(JobOutput::Fit(FitOutcome {
                variables: vars,
                history,
                final_photometric,
            }))
        }
    }
}

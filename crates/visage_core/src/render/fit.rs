//! A data-only description of a photometric fit and the CPU loop that runs it with Adam.
//!
//! [`FitProblem`] says which parameter groups are optimised in which stage, with which learning
//! rates and L2 weights, for how many steps. It is plain serde data, so a GPU implementation can
//! run the same description. The geometry enters through a [`VertexModel`]: a map from shape
//! parameters to vertex positions with its vector–Jacobian product (the chain-rule callback), for
//! example free per-vertex offsets ([`VertexOffsets`]) or the FLAME forward pass.

use serde::{Deserialize, Serialize};

use super::RenderError;
use super::adam::{Adam, AdamSettings};
use super::camera::{CAMERA_PARAMS, Camera};
use super::loss::LossConfig;
use super::pass::{PhotometricPass, Scene, Target};

/// Geometry as a differentiable function of shape parameters.
pub trait VertexModel {
    /// Number of shape parameters.
    fn num_params(&self) -> usize;
    /// Number of vertices produced.
    fn num_vertices(&self) -> usize;
    /// Writes the posed vertices (camera frame, metres) for `params` into `out`.
    fn vertices(&mut self, params: &[f32], out: &mut [[f32; 3]]);
    /// Chain rule: writes `grad_params = (∂vertices/∂params)ᵀ · grad_vertices` (overwrites).
    fn pullback(&mut self, params: &[f32], grad_vertices: &[[f32; 3]], grad_params: &mut [f32]);
}

/// Free per-vertex offsets added to a base mesh: `vertices = base + params` (`3·V` parameters,
/// laid out `[v][xyz]`).
#[derive(Clone, Debug)]
pub struct VertexOffsets {
    /// The base mesh.
    pub base: Vec<[f32; 3]>,
}

impl VertexModel for VertexOffsets {
    fn num_params(&self) -> usize {
        self.base.len() * 3
    }

    fn num_vertices(&self) -> usize {
        self.base.len()
    }

    fn vertices(&mut self, params: &[f32], out: &mut [[f32; 3]]) {
        for ((o, b), d) in out.iter_mut().zip(&self.base).zip(params.chunks_exact(3)) {
            *o = [b[0] + d[0], b[1] + d[1], b[2] + d[2]];
        }
    }

    fn pullback(&mut self, _params: &[f32], grad_vertices: &[[f32; 3]], grad_params: &mut [f32]) {
        grad_params.copy_from_slice(grad_vertices.as_flattened());
    }
}

/// A group of optimised parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamGroup {
    /// The [`VertexModel`]'s parameters (vertex offsets, FLAME coefficients, …).
    Shape,
    /// Per-vertex albedo.
    Albedo,
    /// The 27 SH lighting coefficients.
    Lighting,
    /// Camera parameters. For a weak-perspective camera `focal` selects the scale, `translation`
    /// the 2-D offset, and `principal_point` selects nothing.
    Camera {
        /// Focal lengths (or scale).
        focal: bool,
        /// Principal point.
        principal_point: bool,
        /// Translation (or offset).
        translation: bool,
    },
}

impl ParamGroup {
    fn slot(&self) -> usize {
        match self {
            ParamGroup::Shape => 0,
            ParamGroup::Albedo => 1,
            ParamGroup::Lighting => 2,
            ParamGroup::Camera { .. } => 3,
        }
    }
}

/// How one group is optimised during a stage.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupSchedule {
    /// The group.
    pub group: ParamGroup,
    /// Adam learning rate.
    pub lr: f32,
    /// Weight `λ` of the regulariser `λ·‖θ − θ₀‖²`, `θ₀` the group's value when the fit started.
    pub l2: f32,
}

/// A run of steps with a fixed set of optimised groups. Adam's moments restart at each stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitStage {
    /// Name shown in progress reports (e.g. "rigid", "non-rigid").
    pub name: String,
    /// Number of Adam steps.
    pub steps: u32,
    /// Optimised groups; each at most once. Groups not listed stay fixed.
    pub groups: Vec<GroupSchedule>,
}

/// A complete photometric fitting problem: loss, weights and schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitProblem {
    /// Photometric loss definition.
    pub loss: LossConfig,
    /// Weight of the photometric loss in the objective.
    pub photometric_weight: f32,
    /// Adam constants.
    pub adam: AdamSettings,
    /// Stages, run in order.
    pub stages: Vec<FitStage>,
}

impl FitProblem {
    /// Checks weights, learning rates and that no group appears twice in a stage.
    pub fn validate(&self) -> Result<(), RenderError> {
        if !(self.photometric_weight.is_finite() && self.photometric_weight >= 0.0) {
            return Err(RenderError::Fit(
                "the photometric weight must be a non-negative number".into(),
            ));
        }
        self.loss.penalty.validate().map_err(RenderError::Invalid)?;
        for s in &self.stages {
            let mut seen = [false; 4];
            for g in &s.groups {
                if std::mem::replace(&mut seen[g.group.slot()], true) {
                    return Err(RenderError::Fit(format!(
                        "stage \"{}\" lists the parameter group {:?} twice",
                        s.name, g.group
                    )));
                }
                if !(g.lr.is_finite() && g.lr >= 0.0 && g.l2.is_finite() && g.l2 >= 0.0) {
                    return Err(RenderError::Fit(format!(
                        "stage \"{}\": learning rate and L2 weight must be non-negative numbers",
                        s.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The variables of a fit (read as the initial guess, written with the result).
#[derive(Clone, Debug, PartialEq)]
pub struct FitVariables {
    /// Shape parameters of the [`VertexModel`].
    pub shape: Vec<f32>,
    /// Per-vertex albedo, linear RGB.
    pub albedo: Vec<[f32; 3]>,
    /// SH lighting, `sh[k][channel]`.
    pub sh: [[f32; 3]; 9],
    /// The camera.
    pub camera: Camera,
}

/// Progress of one step, passed to the callback of [`Fitter::run`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Index of the stage.
    pub stage: usize,
    /// Step within the stage (0-based).
    pub step: u32,
    /// Objective before the step: weighted photometric loss plus regularisers.
    pub objective: f32,
    /// Photometric loss before the step (unweighted).
    pub photometric: f32,
}

/// Runs a [`FitProblem`] on the CPU. Holds Adam states and scratch; steps do not allocate.
pub struct Fitter {
    vertices: Vec<[f32; 3]>,
    grad_shape: Vec<f32>,
    grad_albedo: Vec<f32>,
    init: FitVariables,
    adam: [Adam; 4],
}

impl Fitter {
    /// Prepares a fit of `vars` (taken as `θ₀` for the L2 regularisers).
    pub fn new(
        model: &dyn VertexModel,
        vars: &FitVariables,
        settings: AdamSettings,
    ) -> Result<Self, RenderError> {
        if vars.shape.len() != model.num_params() {
            return Err(RenderError::Length {
                what: "the shape parameters",
                expected: model.num_params(),
                got: vars.shape.len(),
            });
        }
        if vars.albedo.len() != model.num_vertices() {
            return Err(RenderError::Length {
                what: "the albedo array",
                expected: model.num_vertices(),
                got: vars.albedo.len(),
            });
        }
        let nv = model.num_vertices();
        Ok(Fitter {
            vertices: vec![[0.0; 3]; nv],
            grad_shape: vec![0.0; vars.shape.len()],
            grad_albedo: vec![0.0; nv * 3],
            init: vars.clone(),
            adam: [
                Adam::new(vars.shape.len(), settings),
                Adam::new(nv * 3, settings),
                Adam::new(27, settings),
                Adam::new(CAMERA_PARAMS, settings),
            ],
        })
    }

    /// The vertices of the last evaluated step.
    pub fn vertices(&self) -> &[[f32; 3]] {
        &self.vertices
    }

    /// Runs every stage of `problem`, updating `vars` in place; `on_step` sees each step's
    /// objective. Returns the final photometric loss (evaluated after the last step).
    pub fn run<M: VertexModel, F: FnMut(&StepReport)>(
        &mut self,
        problem: &FitProblem,
        pass: &mut PhotometricPass,
        model: &mut M,
        vars: &mut FitVariables,
        target: &Target,
        mut on_step: F,
    ) -> Result<f32, RenderError> {
        problem.validate()?;
        if model.num_vertices() != pass.num_vertices() || self.vertices.len() != pass.num_vertices()
        {
            return Err(RenderError::Length {
                what: "the fitted mesh",
                expected: pass.num_vertices(),
                got: model.num_vertices(),
            });
        }
        for (si, stage) in problem.stages.iter().enumerate() {
            for a in &mut self.adam {
                a.reset();
            }
            for step in 0..stage.steps {
                let (objective, photometric) =
                    self.step(problem, stage, pass, model, vars, target)?;
                on_step(&StepReport {
                    stage: si,
                    step,
                    objective,
                    photometric,
                });
            }
        }
        model.vertices(&vars.shape, &mut self.vertices);
        let scene = Scene {
            vertices: &self.vertices,
            albedo: &vars.albedo,
            sh: &vars.sh,
            camera: vars.camera,
        };
        pass.forward(&scene, target, &problem.loss)
    }

    /// One Adam step of `stage`. Returns `(objective, photometric loss)` before the step.
    pub fn step<M: VertexModel>(
        &mut self,
        problem: &FitProblem,
        stage: &FitStage,
        pass: &mut PhotometricPass,
        model: &mut M,
        vars: &mut FitVariables,
        target: &Target,
    ) -> Result<(f32, f32), RenderError> {
        if vars.shape.len() != self.grad_shape.len()
            || vars.albedo.len() * 3 != self.grad_albedo.len()
        {
            return Err(RenderError::Fit(
                "the variables do not have the sizes the fitter was created for".into(),
            ));
        }
        if vars.camera.is_perspective() != self.init.camera.is_perspective() {
            return Err(RenderError::Fit(
                "the camera model changed since the fitter was created".into(),
            ));
        }
        model.vertices(&vars.shape, &mut self.vertices);
        let scene = Scene {
            vertices: &self.vertices,
            albedo: &vars.albedo,
            sh: &vars.sh,
            camera: vars.camera,
        };
        let (photometric, grads) = pass.loss_and_grad(&scene, target, &problem.loss)?;
        let pw = problem.photometric_weight;
        let mut objective = pw as f64 * photometric as f64;
        for gs in &stage.groups {
            let l2 = gs.l2;
            match gs.group {
                ParamGroup::Shape => {
                    model.pullback(&vars.shape, &grads.vertices, &mut self.grad_shape);
                    objective +=
                        reg_grad(&mut self.grad_shape, &vars.shape, &self.init.shape, pw, l2);
                    self.adam[0].step(&mut vars.shape, &self.grad_shape, gs.lr);
                }
                ParamGroup::Albedo => {
                    self.grad_albedo
                        .copy_from_slice(grads.albedo.as_flattened());
                    objective += reg_grad(
                        &mut self.grad_albedo,
                        vars.albedo.as_flattened(),
                        self.init.albedo.as_flattened(),
                        pw,
                        l2,
                    );
                    self.adam[1].step(vars.albedo.as_flattened_mut(), &self.grad_albedo, gs.lr);
                }
                ParamGroup::Lighting => {
                    let mut g = [0.0f32; 27];
                    g.copy_from_slice(grads.sh.as_flattened());
                    objective += reg_grad(
                        &mut g,
                        vars.sh.as_flattened(),
                        self.init.sh.as_flattened(),
                        pw,
                        l2,
                    );
                    self.adam[2].step(vars.sh.as_flattened_mut(), &g, gs.lr);
                }
                ParamGroup::Camera {
                    focal,
                    principal_point,
                    translation,
                } => {
                    let mask = vars.camera.slot_mask(focal, principal_point, translation);
                    let mut p = vars.camera.params();
                    let p0 = self.init.camera.params();
                    let mut g = grads.camera.params();
                    let mut reg = 0.0f64;
                    for k in 0..CAMERA_PARAMS {
                        if mask[k] {
                            let d = p[k] - p0[k];
                            g[k] = pw * g[k] + 2.0 * l2 * d;
                            reg += (l2 * d * d) as f64;
                        } else {
                            g[k] = 0.0;
                        }
                    }
                    objective += reg;
                    self.adam[3].step(&mut p, &g, gs.lr);
                    vars.camera.set_params(&p);
                }
            }
        }
        Ok((objective as f32, photometric))
    }
}

/// `g ← pw·g + 2·l2·(θ − θ₀)`; returns `l2·‖θ − θ₀‖²`.
fn reg_grad(g: &mut [f32], theta: &[f32], theta0: &[f32], pw: f32, l2: f32) -> f64 {
    let mut reg = 0.0f64;
    for ((g, &t), &t0) in g.iter_mut().zip(theta).zip(theta0) {
        let d = t - t0;
        *g = pw * *g + 2.0 * l2 * d;
        reg += (d * d) as f64;
    }
    l2 as f64 * reg
}

//! Buffer layouts of the GPU photometric pass: packing a [`PhotometricJob`] into the bytes the
//! shader (`shaders/photometric.wgsl`) reads, and decoding the read-back output buffer.
//!
//! Everything here is plain data; the render-world code only creates buffers from it. The
//! constants must match the shader's (documented in `docs/photometric_gpu.md`).

use visage_core::render::{
    AdamSettings, CAMERA_PARAMS, Camera, FitVariables, Gradients, ParamGroup, RobustLoss,
    StepReport,
};

use super::job::{JobKind, PhotometricJob};

/// Threads per workgroup of every entry point.
pub(crate) const WORKGROUP: u32 = 64;
/// Offset of the camera slots in the flat parameter vector (SH first, 27 values).
pub(crate) const CAM_OFF: usize = 27;
/// Offset of the per-vertex offsets in the flat parameter vector.
pub(crate) const VERT_OFF: usize = 34;
/// Scalars reduced per vertex workgroup: 27 SH + 7 camera.
pub(crate) const PARTIALS: usize = 34;
/// Words of the state buffer before the per-step history.
pub(crate) const STATE_HEADER: usize = 8;
/// Flag words after the `12·V` accumulator words.
pub(crate) const FLAG_WORDS: usize = 4;
/// Bytes of one schedule entry (`Step` in the shader).
pub(crate) const STEP_BYTES: usize = 48;
/// Bytes of the uniform block (`Params` in the shader).
pub(crate) const UNIFORM_BYTES: usize = 112;
/// Bytes per vertex of `vstate`.
pub(crate) const VSTATE_BYTES: usize = 64;
/// Bytes per triangle of `tris`.
pub(crate) const TRI_BYTES: usize = 80;
/// Most workgroups per dispatch dimension (WebGPU's guaranteed minimum).
pub(crate) const MAX_GROUPS_PER_DIM: u32 = 65535;

/// Error bits of the first flag word.
pub(crate) const ERR_NONFINITE_INPUT: u32 = 1;
/// Error bits of the first flag word.
pub(crate) const ERR_FIXED_OVERFLOW: u32 = 2;

/// Number of flat parameters: 27 SH + 7 camera + 3·V offsets + 3·V albedo.
pub(crate) fn num_params(num_vertices: usize) -> usize {
    VERT_OFF + 6 * num_vertices
}

/// Workgroups for `threads` threads (at least one).
pub(crate) fn groups(threads: usize) -> u32 {
    threads.div_ceil(WORKGROUP as usize).max(1) as u32
}

/// Dispatch size `(x, y)` covering `groups` workgroups, split over two dimensions when needed.
pub(crate) fn dispatch_dims(groups: u32) -> (u32, u32) {
    if groups <= MAX_GROUPS_PER_DIM {
        (groups, 1)
    } else {
        (MAX_GROUPS_PER_DIM, groups.div_ceil(MAX_GROUPS_PER_DIM))
    }
}

/// Sizes derived from a job.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub num_vertices: usize,
    pub num_triangles: usize,
    pub num_pixels: usize,
    pub num_params: usize,
    pub total_steps: usize,
    pub pixel_groups: u32,
    pub vertex_groups: u32,
    pub param_groups: u32,
    pub evaluate: bool,
}

impl Sizes {
    pub fn of(job: &PhotometricJob) -> Self {
        let nv = job.num_vertices();
        let np = job.num_pixels();
        let n = num_params(nv);
        Sizes {
            num_vertices: nv,
            num_triangles: job.triangles.len(),
            num_pixels: np,
            num_params: n,
            total_steps: job.total_steps() as usize,
            pixel_groups: groups(np),
            vertex_groups: groups(nv),
            param_groups: groups(n),
            evaluate: job.kind == JobKind::Evaluate,
        }
    }

    /// Words of the state buffer.
    pub fn state_words(&self) -> usize {
        STATE_HEADER + 2 * self.total_steps
    }

    /// Words of the accumulator buffer (6 values × 2 words per vertex, then the flags).
    pub fn acc_words(&self) -> usize {
        12 * self.num_vertices + FLAG_WORDS
    }

    /// Words of the shared scratch buffer for workgroup partial sums.
    pub fn partial_words(&self) -> usize {
        (2 * self.pixel_groups as usize)
            .max(PARTIALS * self.vertex_groups as usize)
            .max(self.param_groups as usize)
    }

    /// Words of the mesh buffer: triangles, CSR starts, CSR entries.
    pub fn mesh_words(&self) -> usize {
        6 * self.num_triangles + self.num_vertices + 1
    }

    /// Byte size of every buffer, by binding number (binding 0 is the uniform block).
    pub fn buffer_bytes(&self) -> [u64; NUM_BINDINGS] {
        let w = |n: usize| (n.max(1) * 4) as u64;
        [
            UNIFORM_BYTES as u64,
            w(self.state_words()),
            (self.total_steps.max(1) * STEP_BYTES) as u64,
            w(self.mesh_words()),
            w(3 * self.num_vertices),
            w(self.num_params),
            w(self.num_params),
            w(3 * self.num_params),
            (self.num_vertices.max(1) * VSTATE_BYTES) as u64,
            (self.num_triangles.max(1) * TRI_BYTES) as u64,
            w(2 * self.num_pixels),
            w(8 * self.num_pixels),
            w(4 * self.num_pixels),
            w(self.acc_words()),
            w(4 * self.num_vertices),
            w(self.partial_words()),
        ]
    }

    /// The read-back output: state, flags, parameters, gradients and (evaluation only) the
    /// visibility and pixel buffers, each a byte range.
    pub fn output(&self) -> OutputLayout {
        let state = 0;
        let flags = state + self.state_words() * 4;
        let theta = flags + FLAG_WORDS * 4;
        let grads = theta + self.num_params * 4;
        let vis = grads + self.num_params * 4;
        let (pix, end) = if self.evaluate {
            let pix = vis + 2 * self.num_pixels * 4;
            (pix, pix + 8 * self.num_pixels * 4)
        } else {
            (vis, vis)
        };
        OutputLayout {
            state,
            flags,
            theta,
            grads,
            vis,
            pix,
            total: end,
        }
    }
}

/// Number of bindings of the shader's group 0.
pub(crate) const NUM_BINDINGS: usize = 16;

/// Binding numbers (the shader's `@binding`).
pub(crate) mod binding {
    pub const PARAMS: u32 = 0;
    pub const STATE: u32 = 1;
    pub const STEPS: u32 = 2;
    pub const MESH: u32 = 3;
    pub const BASE: u32 = 4;
    pub const THETA: u32 = 5;
    pub const GRADS: u32 = 6;
    pub const OPT: u32 = 7;
    pub const VSTATE: u32 = 8;
    pub const TRIS: u32 = 9;
    pub const VIS: u32 = 10;
    pub const PIX: u32 = 11;
    pub const TARGET: u32 = 12;
    pub const ACC: u32 = 13;
    pub const VGRAD: u32 = 14;
    pub const PARTIALS: u32 = 15;

    /// Bindings the shader only reads.
    pub fn read_only(b: u32) -> bool {
        matches!(b, STEPS | MESH | BASE | TARGET)
    }
}

/// Byte offsets of the parts of the output buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutputLayout {
    pub state: usize,
    pub flags: usize,
    pub theta: usize,
    pub grads: usize,
    pub vis: usize,
    pub pix: usize,
    pub total: usize,
}

/// A little-endian byte writer.
#[derive(Default)]
pub(crate) struct Bytes(pub Vec<u8>);

impl Bytes {
    fn with_capacity(n: usize) -> Self {
        Bytes(Vec::with_capacity(n))
    }
    fn f(&mut self, x: f32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn u(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
}

/// Camera slots each `ParamGroup::Camera` flag selects, in the flat layout of
/// [`Camera::params`] (the convention of `visage_core::render::fit`).
pub(crate) fn camera_slot_mask(
    camera: &Camera,
    focal: bool,
    principal_point: bool,
    translation: bool,
) -> u32 {
    let slots = camera.slot_mask(focal, principal_point, translation);
    slots
        .iter()
        .enumerate()
        .fold(0, |m, (k, &on)| if on { m | (1 << k) } else { m })
}

/// Index of a group in the shader (`group_of`): shape 0, albedo 1, lighting 2, camera 3.
fn group_bit(g: &ParamGroup) -> usize {
    match g {
        ParamGroup::Shape => 0,
        ParamGroup::Albedo => 1,
        ParamGroup::Lighting => 2,
        ParamGroup::Camera { .. } => 3,
    }
}

/// The uniform block.
pub(crate) fn pack_uniform(job: &PhotometricJob, sizes: &Sizes, tag: u32) -> Vec<u8> {
    let (penalty, param) = match job.problem.loss.penalty {
        RobustLoss::L1 => (0, 0.0),
        RobustLoss::Huber { delta } => (1, delta),
        RobustLoss::GemanMcClure { sigma } => (2, sigma),
    };
    let bg = job.problem.loss.background;
    let AdamSettings { beta1, beta2, eps } = job.problem.adam;
    let mut b = Bytes::with_capacity(UNIFORM_BYTES);
    b.u(job.width);
    b.u(job.height);
    b.u(sizes.num_vertices as u32);
    b.u(sizes.num_triangles as u32);
    b.u(sizes.num_pixels as u32);
    b.u(sizes.num_params as u32);
    b.u(job.initial.camera.is_perspective() as u32);
    b.u(job.pass.cull_backfaces as u32);
    b.f(job.pass.near);
    b.u(penalty);
    b.f(param);
    b.u(bg.is_some() as u32);
    let bg = bg.unwrap_or([0.0; 3]);
    b.f(bg[0]);
    b.f(bg[1]);
    b.f(bg[2]);
    b.f(job.problem.photometric_weight);
    b.f(beta1);
    b.f(beta2);
    b.f(eps);
    b.u(sizes.total_steps as u32);
    b.u(tag);
    b.u(sizes.pixel_groups);
    b.u(sizes.vertex_groups);
    b.u(sizes.param_groups);
    b.u(3 * sizes.num_triangles as u32);
    b.u(3 * sizes.num_triangles as u32 + sizes.num_vertices as u32 + 1);
    b.u(0);
    b.u(0);
    debug_assert_eq!(b.0.len(), UNIFORM_BYTES);
    b.0
}

/// The schedule: one entry per optimiser step, with the bias corrections computed exactly as
/// `visage_core::render::Adam::step` computes them.
pub(crate) fn pack_steps(job: &PhotometricJob) -> Vec<u8> {
    let AdamSettings { beta1, beta2, .. } = job.problem.adam;
    let total = job.total_steps() as usize;
    let mut b = Bytes::with_capacity(total.max(1) * STEP_BYTES);
    if job.kind == JobKind::Fit {
        for stage in &job.problem.stages {
            for step in 0..stage.steps {
                let t = step.saturating_add(1);
                let bc1 = 1.0 - beta1.powi(t as i32);
                let bc2 = 1.0 - beta2.powi(t as i32);
                let mut lr_step = [0.0f32; 4];
                let mut l2 = [0.0f32; 4];
                let mut active = 0u32;
                let mut camera_mask = 0u32;
                for gs in &stage.groups {
                    let g = group_bit(&gs.group);
                    lr_step[g] = gs.lr / bc1;
                    l2[g] = gs.l2;
                    active |= 1 << g;
                    if let ParamGroup::Camera {
                        focal,
                        principal_point,
                        translation,
                    } = gs.group
                    {
                        camera_mask = camera_slot_mask(
                            &job.initial.camera,
                            focal,
                            principal_point,
                            translation,
                        );
                    }
                }
                for x in lr_step.iter().chain(&l2) {
                    b.f(*x);
                }
                b.f(1.0 / bc2);
                b.u(active);
                b.u(camera_mask);
                b.u((step == 0) as u32);
            }
        }
    }
    if b.0.is_empty() {
        b.0.resize(STEP_BYTES, 0);
    }
    b.0
}

/// Triangles, then the vertex → incident-corner CSR (`start[V+1]`, `entries[3F]` holding
/// `triangle·3 + corner`), in the core's order.
pub(crate) fn pack_mesh(job: &PhotometricJob) -> Vec<u8> {
    let nv = job.num_vertices();
    let mut counts = vec![0u32; nv + 1];
    for t in &job.triangles {
        for &i in t {
            counts[i as usize + 1] += 1;
        }
    }
    for v in 0..nv {
        counts[v + 1] += counts[v];
    }
    let mut fill = counts.clone();
    let mut adj = vec![0u32; job.triangles.len() * 3];
    for (t, tri) in job.triangles.iter().enumerate() {
        for (c, &i) in tri.iter().enumerate() {
            adj[fill[i as usize] as usize] = (t * 3 + c) as u32;
            fill[i as usize] += 1;
        }
    }
    let mut b = Bytes::with_capacity((6 * job.triangles.len() + nv + 1) * 4);
    for t in &job.triangles {
        for &i in t {
            b.u(i);
        }
    }
    for &c in &counts {
        b.u(c);
    }
    for &a in &adj {
        b.u(a);
    }
    b.0
}

/// Base vertex positions.
pub(crate) fn pack_base(job: &PhotometricJob) -> Vec<u8> {
    let mut b = Bytes::with_capacity(job.num_vertices().max(1) * 12);
    for x in job.base_vertices.iter().flatten() {
        b.f(*x);
    }
    if b.0.is_empty() {
        b.0.resize(4, 0);
    }
    b.0
}

/// The flat parameter vector of `vars`: SH `[k][c]`, camera (flat), offsets, albedo.
pub(crate) fn flat_params(vars: &FitVariables) -> Vec<f32> {
    let mut p = Vec::with_capacity(num_params(vars.albedo.len()));
    p.extend_from_slice(vars.sh.as_flattened());
    p.extend_from_slice(&vars.camera.params());
    p.extend_from_slice(&vars.shape);
    p.extend_from_slice(vars.albedo.as_flattened());
    p
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut b = Bytes::with_capacity(v.len() * 4);
    for &x in v {
        b.f(x);
    }
    b.0
}

/// `theta` (the parameters) and `opt` (`m`, `v` zero, then `θ₀`).
pub(crate) fn pack_theta_opt(job: &PhotometricJob) -> (Vec<u8>, Vec<u8>) {
    let p = flat_params(&job.initial);
    let mut opt = vec![0.0f32; 2 * p.len()];
    opt.extend_from_slice(&p);
    (f32_bytes(&p), f32_bytes(&opt))
}

/// The photo with the per-pixel weight `w = M_face · (1 − M_occ)` (computed in the core's
/// order of operations) in the fourth component.
pub(crate) fn pack_target(job: &PhotometricJob) -> Vec<u8> {
    let mut b = Bytes::with_capacity(job.num_pixels() * 16);
    for (i, c) in job.image.iter().enumerate() {
        let mut w = 1.0f32;
        if let Some(m) = &job.face_mask {
            w *= m[i];
        }
        if let Some(m) = &job.occlusion_mask {
            w *= 1.0 - m[i];
        }
        b.f(c[0]);
        b.f(c[1]);
        b.f(c[2]);
        b.f(w);
    }
    b.0
}

/// The decoded output buffer.
#[derive(Clone, Debug)]
pub(crate) struct Decoded {
    pub photometric: f32,
    pub weight_sum: f32,
    pub errors: u32,
    pub holes: u32,
    pub covered: u32,
    pub history: Vec<StepReport>,
    pub variables: FitVariables,
    pub gradients: Gradients,
    pub visibility: Vec<u32>,
    pub residuals: Vec<[f32; 3]>,
}

fn word(bytes: &[u8], byte_offset: usize, i: usize) -> u32 {
    let o = byte_offset + 4 * i;
    u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]])
}

fn float(bytes: &[u8], byte_offset: usize, i: usize) -> f32 {
    f32::from_bits(word(bytes, byte_offset, i))
}

/// Reads the header of an output buffer: `(tag, steps_done, final_done)`; `None` when the
/// buffer is too short.
pub(crate) fn peek(bytes: &[u8]) -> Option<(u32, u32, bool)> {
    (bytes.len() >= STATE_HEADER * 4)
        .then(|| (word(bytes, 0, 0), word(bytes, 0, 1), word(bytes, 0, 2) != 0))
}

/// The history record of optimiser step `k` (0-based, over all stages) in an output buffer.
pub(crate) fn history_entry(job: &PhotometricJob, bytes: &[u8], k: usize) -> Option<StepReport> {
    let sizes = Sizes::of(job);
    if job.kind != JobKind::Fit || k >= sizes.total_steps || bytes.len() < sizes.state_words() * 4 {
        return None;
    }
    let mut first = 0usize;
    for (si, stage) in job.problem.stages.iter().enumerate() {
        let n = stage.steps as usize;
        if k < first + n {
            return Some(StepReport {
                stage: si,
                step: (k - first) as u32,
                objective: float(bytes, 0, STATE_HEADER + 2 * k),
                photometric: float(bytes, 0, STATE_HEADER + 2 * k + 1),
            });
        }
        first += n;
    }
    None
}

/// Decodes a complete output buffer of `job`. `None` when its size does not match.
pub(crate) fn decode(job: &PhotometricJob, bytes: &[u8]) -> Option<Decoded> {
    let sizes = Sizes::of(job);
    let out = sizes.output();
    if bytes.len() < out.total {
        return None;
    }
    let nv = sizes.num_vertices;
    let steps_done = word(bytes, out.state, 1);
    // Stage and step of each history entry, from the schedule.
    let mut history = Vec::with_capacity(sizes.total_steps);
    let mut k = 0usize;
    for (si, stage) in job.problem.stages.iter().enumerate() {
        if job.kind != JobKind::Fit {
            break;
        }
        for step in 0..stage.steps {
            if k >= steps_done as usize {
                break;
            }
            history.push(StepReport {
                stage: si,
                step,
                objective: float(bytes, out.state, STATE_HEADER + 2 * k),
                photometric: float(bytes, out.state, STATE_HEADER + 2 * k + 1),
            });
            k += 1;
        }
    }
    let theta: Vec<f32> = (0..sizes.num_params)
        .map(|i| float(bytes, out.theta, i))
        .collect();
    let grads: Vec<f32> = (0..sizes.num_params)
        .map(|i| float(bytes, out.grads, i))
        .collect();
    let mut sh = [[0.0f32; 3]; 9];
    sh.as_flattened_mut().copy_from_slice(&theta[..27]);
    let mut camera = job.initial.camera;
    let mut cam = [0.0f32; CAMERA_PARAMS];
    cam.copy_from_slice(&theta[CAM_OFF..VERT_OFF]);
    camera.set_params(&cam);
    let shape = theta[VERT_OFF..VERT_OFF + 3 * nv].to_vec();
    let triples =
        |v: &[f32]| -> Vec<[f32; 3]> { v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect() };
    let albedo = triples(&theta[VERT_OFF + 3 * nv..]);
    let mut gsh = [[0.0f32; 3]; 9];
    gsh.as_flattened_mut().copy_from_slice(&grads[..27]);
    let mut gcam = job.initial.camera.zeroed();
    cam.copy_from_slice(&grads[CAM_OFF..VERT_OFF]);
    gcam.set_params(&cam);
    let (visibility, residuals) = if sizes.evaluate {
        (
            (0..sizes.num_pixels)
                .map(|i| word(bytes, out.vis, 2 * i + 1))
                .collect(),
            (0..sizes.num_pixels)
                .map(|i| {
                    [
                        float(bytes, out.pix, 8 * i + 4),
                        float(bytes, out.pix, 8 * i + 5),
                        float(bytes, out.pix, 8 * i + 6),
                    ]
                })
                .collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Some(Decoded {
        photometric: float(bytes, out.state, 3),
        weight_sum: float(bytes, out.state, 4),
        errors: word(bytes, out.flags, 0),
        holes: word(bytes, out.flags, 1),
        covered: word(bytes, out.flags, 2),
        history,
        variables: FitVariables {
            shape,
            albedo,
            sh,
            camera,
        },
        gradients: Gradients {
            vertices: triples(&grads[VERT_OFF..VERT_OFF + 3 * nv]),
            albedo: triples(&grads[VERT_OFF + 3 * nv..]),
            sh: gsh,
            camera: gcam,
        },
        visibility,
        residuals,
    })
}

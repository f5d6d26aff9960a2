//! The rasteriser, the shaded render, the masked photometric loss and its analytic gradients.

use rayon::prelude::*;

use super::camera::{CAMERA_PARAMS, Camera};
use super::loss::{LossConfig, RobustLoss};
use super::sh::{sh_basis, sh_basis_vjp, shade_factor};
use super::{RenderError, validate_image_size};

/// Marks a pixel that no triangle covers in [`PixelSample::triangle`].
pub const NO_TRIANGLE: u32 = u32::MAX;

/// Vertices per chunk in the per-vertex stages (fixed, so reductions are deterministic).
const VERTEX_CHUNK: usize = 256;
/// Floats per vertex in a band's gradient accumulator: `dL/dc` (3), `dL/du`, `dL/dv`, `dL/dz`.
const ACC: usize = 6;
/// Reduced scalars per vertex chunk: 27 SH + 7 camera.
const PARTIALS: usize = 27 + CAMERA_PARAMS;
/// Inside test tolerance on screen-space barycentrics (closes hairline cracks between
/// neighbouring triangles caused by rounding).
const INSIDE_EPS: f32 = -1e-6;

/// Tuning of a [`PhotometricPass`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PassConfig {
    /// Image rows per band. Bands are the unit of parallel work and each owns one gradient
    /// accumulator (`num_vertices × 6` floats). The result does not depend on the thread count.
    pub band_rows: u32,
    /// Skip triangles that face away from the camera (counter-clockwise triangles, seen from
    /// outside, are front faces — FLAME's winding).
    pub cull_backfaces: bool,
    /// Perspective only: triangles with a vertex at view depth `≤ near` (metres) are not drawn.
    pub near: f32,
}

impl Default for PassConfig {
    fn default() -> Self {
        PassConfig {
            band_rows: 32,
            cull_backfaces: true,
            near: 1e-3,
        }
    }
}

/// The differentiable inputs of one render.
#[derive(Clone, Copy, Debug)]
pub struct Scene<'a> {
    /// Vertex positions in the camera frame, metres (`num_vertices`).
    pub vertices: &'a [[f32; 3]],
    /// Per-vertex albedo, linear RGB (`num_vertices`).
    pub albedo: &'a [[f32; 3]],
    /// Lighting: nine SH radiance coefficients per channel, `sh[k][channel]` (see [`super::sh`]).
    pub sh: &'a [[f32; 3]; 9],
    /// The camera.
    pub camera: Camera,
}

/// The photo and its masks, all row-major `height × width`.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The photo, linear RGB.
    pub image: &'a [[f32; 3]],
    /// `M_face` in `[0, 1]`; `None` means 1 everywhere.
    pub face_mask: Option<&'a [f32]>,
    /// `M_occ` in `[0, 1]` (1 = occluded); `None` means 0 everywhere.
    pub occlusion_mask: Option<&'a [f32]>,
}

/// What the rasteriser stores per pixel (the visibility buffer).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct PixelSample {
    /// Index of the front triangle, or [`NO_TRIANGLE`].
    pub triangle: u32,
    /// Depth-test key of the front surface, larger is nearer (perspective: `1/z`; weak
    /// perspective: the camera-frame `z`).
    pub depth_key: f32,
    /// Perspective-correct barycentrics of the pixel centre in the front triangle.
    pub bary: [f32; 3],
}

const EMPTY_PIXEL: PixelSample = PixelSample {
    triangle: NO_TRIANGLE,
    depth_key: f32::NEG_INFINITY,
    bary: [0.0; 3],
};

/// Gradients of the loss with respect to every input of a [`Scene`].
#[derive(Clone, Debug)]
pub struct Gradients {
    /// `dL/d vertices` (through projection, barycentrics and normals).
    pub vertices: Vec<[f32; 3]>,
    /// `dL/d albedo`.
    pub albedo: Vec<[f32; 3]>,
    /// `dL/d sh`, same layout as [`Scene::sh`].
    pub sh: [[f32; 3]; 9],
    /// `dL/d camera`: the same model as the input camera, each field the partial derivative.
    pub camera: Camera,
}

/// Per-vertex results of the forward pass.
#[derive(Clone, Copy, Debug, Default)]
struct VertexState {
    /// Unit normal (0 for a vertex in no non-degenerate triangle).
    normal: [f32; 3],
    /// `1 / |m|` of the area-weighted normal sum `m` (0 when degenerate).
    inv_len: f32,
    /// SH irradiance factor per channel.
    irradiance: [f32; 3],
    /// Shaded colour `albedo ⊙ irradiance`.
    shade: [f32; 3],
    /// `[u, v, z, w]` from [`Camera::project`]; `u` is NaN when the vertex cannot be projected.
    proj: [f32; 4],
}

/// Per-triangle rasteriser set-up.
#[derive(Clone, Copy, Debug, Default)]
struct TriSetup {
    /// Inclusive pixel bounding box `x0, y0, x1, y1`; empty (`x0 > x1`) when not drawn.
    bbox: [i32; 4],
    /// Screen position of corner 0.
    p0: [f32; 2],
    /// `λ1 = dx·k0 − dy·k1`, `λ2 = dy·k2 − dx·k3` with `d = p − p0`.
    k: [f32; 4],
    /// Per-corner depth quantity: `w = 1/z` (perspective) or camera `z` (weak perspective).
    q: [f32; 3],
}

/// The CPU photometric pass. Owns every scratch buffer, so repeated calls with the same mesh
/// topology and image size do not allocate.
pub struct PhotometricPass {
    width: usize,
    height: usize,
    num_vertices: usize,
    config: PassConfig,
    triangles: Vec<[u32; 3]>,
    /// CSR vertex → incident `(triangle · 3 + corner)`.
    adj_start: Vec<u32>,
    adj: Vec<u32>,
    verts: Vec<VertexState>,
    setup: Vec<TriSetup>,
    tri_cross: Vec<[f32; 3]>,
    /// Triangles with a non-empty pixel box in the current render, in index order.
    active: Vec<u32>,
    pixels: Vec<PixelSample>,
    colour: Vec<[f32; 3]>,
    residual: Vec<[f32; 3]>,
    pixel_loss: Vec<f32>,
    weight: Vec<f32>,
    band_sums: Vec<[f64; 2]>,
    band_bad: Vec<bool>,
    band_acc: Vec<f32>,
    grad_m: Vec<[f32; 3]>,
    chunk_partials: Vec<[f64; PARTIALS]>,
    chunk_bad: Vec<bool>,
    grads: Gradients,
    weight_sum: f64,
    loss: f64,
}

impl std::fmt::Debug for PhotometricPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhotometricPass")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("num_vertices", &self.num_vertices)
            .field("num_triangles", &self.triangles.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PhotometricPass {
    /// Creates a pass for a fixed mesh topology and image size.
    ///
    /// Fails when the image size is zero or above 16384 per side, when a triangle refers to a
    /// vertex `≥ num_vertices`, or when `config.band_rows` is zero.
    pub fn new(
        width: u32,
        height: u32,
        triangles: &[[u32; 3]],
        num_vertices: usize,
        config: PassConfig,
    ) -> Result<Self, RenderError> {
        validate_image_size(width, height)?;
        if config.band_rows == 0 {
            return Err(RenderError::Invalid(
                "the band height must be at least one row",
            ));
        }
        if !(config.near.is_finite() && config.near >= 0.0) {
            return Err(RenderError::Invalid(
                "the near plane must be a non-negative number",
            ));
        }
        if num_vertices >= u32::MAX as usize || triangles.len() >= (u32::MAX / 3) as usize {
            return Err(RenderError::Invalid(
                "the mesh is too large for 32-bit indices",
            ));
        }
        let mut counts = vec![0u32; num_vertices + 1];
        for (t, tri) in triangles.iter().enumerate() {
            for &i in tri {
                if i as usize >= num_vertices {
                    return Err(RenderError::TriangleIndex {
                        triangle: t,
                        index: i,
                        num_vertices,
                    });
                }
                counts[i as usize + 1] += 1;
            }
        }
        for v in 0..num_vertices {
            counts[v + 1] += counts[v];
        }
        let adj_start = counts;
        let mut fill = adj_start.clone();
        let mut adj = vec![0u32; triangles.len() * 3];
        for (t, tri) in triangles.iter().enumerate() {
            for (c, &i) in tri.iter().enumerate() {
                adj[fill[i as usize] as usize] = (t * 3 + c) as u32;
                fill[i as usize] += 1;
            }
        }
        let (w, h) = (width as usize, height as usize);
        let bands = h.div_ceil(config.band_rows as usize);
        let chunks = num_vertices.div_ceil(VERTEX_CHUNK).max(1);
        Ok(PhotometricPass {
            width: w,
            height: h,
            num_vertices,
            config,
            triangles: triangles.to_vec(),
            adj_start,
            adj,
            verts: vec![VertexState::default(); num_vertices],
            setup: vec![TriSetup::default(); triangles.len()],
            tri_cross: vec![[0.0; 3]; triangles.len()],
            active: Vec::with_capacity(triangles.len()),
            pixels: vec![EMPTY_PIXEL; w * h],
            colour: vec![[0.0; 3]; w * h],
            residual: vec![[0.0; 3]; w * h],
            pixel_loss: vec![0.0; w * h],
            weight: vec![0.0; w * h],
            band_sums: vec![[0.0; 2]; bands],
            band_bad: vec![false; bands],
            band_acc: vec![0.0; bands * (num_vertices * ACC).max(1)],
            grad_m: vec![[0.0; 3]; num_vertices],
            chunk_partials: vec![[0.0; PARTIALS]; chunks],
            chunk_bad: vec![false; chunks],
            grads: Gradients {
                vertices: vec![[0.0; 3]; num_vertices],
                albedo: vec![[0.0; 3]; num_vertices],
                sh: [[0.0; 3]; 9],
                camera: Camera::WeakPerspective {
                    scale: 0.0,
                    offset: [0.0; 2],
                },
            },
            weight_sum: 0.0,
            loss: 0.0,
        })
    }

    /// Image width in pixels.
    pub fn width(&self) -> u32 {
        self.width as u32
    }

    /// Image height in pixels.
    pub fn height(&self) -> u32 {
        self.height as u32
    }

    /// Number of vertices the topology was built for.
    pub fn num_vertices(&self) -> usize {
        self.num_vertices
    }

    /// The triangles (copied at construction).
    pub fn triangles(&self) -> &[[u32; 3]] {
        &self.triangles
    }

    /// The visibility buffer of the last render (row-major).
    pub fn pixels(&self) -> &[PixelSample] {
        &self.pixels
    }

    /// Rendered colour of the last call (row-major, linear RGB). Uncovered pixels hold the
    /// background (black in [`PhotometricPass::forward`] without a background).
    pub fn colour(&self) -> &[[f32; 3]] {
        &self.colour
    }

    /// Signed residual `I_ren − I` per pixel from the last [`PhotometricPass::forward`]; 0 at
    /// pixels outside the loss (uncovered without a background).
    pub fn residuals(&self) -> &[[f32; 3]] {
        &self.residual
    }

    /// Unweighted per-pixel penalty `Σ_c ρ(r_c)` from the last forward; 0 outside the loss.
    /// Weighted by [`PhotometricPass::weights`] and divided by
    /// [`PhotometricPass::weight_sum`] it sums to the loss.
    pub fn pixel_loss(&self) -> &[f32] {
        &self.pixel_loss
    }

    /// Per-pixel weight `M_face ⊙ (1 − M_occ)` of the last forward, 0 outside the loss.
    pub fn weights(&self) -> &[f32] {
        &self.weight
    }

    /// The loss normaliser `Σ w` over the pixels in the loss, from the last forward.
    pub fn weight_sum(&self) -> f64 {
        self.weight_sum
    }

    /// The loss of the last forward in double precision (the reduction over pixels runs in
    /// `f64`; [`PhotometricPass::forward`] returns it rounded to `f32`).
    pub fn loss_f64(&self) -> f64 {
        self.loss
    }

    /// The gradients of the last [`PhotometricPass::loss_and_grad`].
    pub fn gradients(&self) -> &Gradients {
        &self.grads
    }

    /// Unit vertex normals of the last render (area-weighted).
    pub fn normal(&self, vertex: usize) -> [f32; 3] {
        self.verts[vertex].normal
    }

    fn check_scene(&self, scene: &Scene) -> Result<(), RenderError> {
        if scene.vertices.len() != self.num_vertices {
            return Err(RenderError::Length {
                what: "the vertex array",
                expected: self.num_vertices,
                got: scene.vertices.len(),
            });
        }
        if scene.albedo.len() != self.num_vertices {
            return Err(RenderError::Length {
                what: "the albedo array",
                expected: self.num_vertices,
                got: scene.albedo.len(),
            });
        }
        if scene.sh.iter().flatten().any(|x| !x.is_finite()) {
            return Err(RenderError::Invalid(
                "the lighting coefficients contain NaN or infinity",
            ));
        }
        scene.camera.validate().map_err(RenderError::Invalid)
    }

    fn check_target(&self, target: &Target, loss: &LossConfig) -> Result<(), RenderError> {
        let n = self.width * self.height;
        if target.image.len() != n {
            return Err(RenderError::Length {
                what: "the photo",
                expected: n,
                got: target.image.len(),
            });
        }
        for (what, m) in [
            ("the face mask", target.face_mask),
            ("the occlusion mask", target.occlusion_mask),
        ] {
            if let Some(m) = m
                && m.len() != n
            {
                return Err(RenderError::Length {
                    what,
                    expected: n,
                    got: m.len(),
                });
            }
        }
        if let Some(bg) = loss.background
            && bg.iter().any(|x| !x.is_finite())
        {
            return Err(RenderError::Invalid(
                "the background colour contains NaN or infinity",
            ));
        }
        loss.penalty.validate().map_err(RenderError::Invalid)
    }

    /// Per-vertex state (normals, shading, projection), triangle set-up and the list of
    /// triangles to draw.
    fn prepare(&mut self, scene: &Scene) -> Result<(), RenderError> {
        self.check_scene(scene)?;
        let vertices = scene.vertices;
        let triangles = &self.triangles;
        let camera = scene.camera;
        let near = self.config.near;
        let albedo = scene.albedo;
        // 1. Per vertex: projection (and input check).
        self.verts
            .par_chunks_mut(VERTEX_CHUNK)
            .zip(self.chunk_bad.par_iter_mut())
            .enumerate()
            .for_each(|(ci, (chunk, bad))| {
                *bad = false;
                for (j, vs) in chunk.iter_mut().enumerate() {
                    let v = ci * VERTEX_CHUNK + j;
                    let p = vertices[v];
                    let a = albedo[v];
                    if !(p.iter().all(|x| x.is_finite()) && a.iter().all(|x| x.is_finite())) {
                        *bad = true;
                    }
                    vs.proj = camera
                        .project(p, near)
                        .unwrap_or([f32::NAN, f32::NAN, 0.0, 0.0]);
                }
            });
        if self.chunk_bad.iter().any(|&b| b) {
            return Err(RenderError::Invalid(
                "the vertex positions or albedo contain NaN or infinity",
            ));
        }
        // 2. Per triangle: face cross product (for the normals) and rasteriser set-up.
        let verts = &self.verts;
        let (wf, hf) = (self.width as f32, self.height as f32);
        let cull = self.config.cull_backfaces;
        let persp = camera.is_perspective();
        self.setup
            .par_iter_mut()
            .zip(self.tri_cross.par_iter_mut())
            .zip(triangles.par_iter())
            .for_each(|((s, cr), t)| {
                // Area-weighted normals: the cross product has length twice the area.
                let p0 = vertices[t[0] as usize];
                *cr = cross(
                    sub(vertices[t[1] as usize], p0),
                    sub(vertices[t[2] as usize], p0),
                );
                s.bbox = [1, 0, 0, 0];
                let p = [
                    verts[t[0] as usize].proj,
                    verts[t[1] as usize].proj,
                    verts[t[2] as usize].proj,
                ];
                if p.iter().any(|q| q[0].is_nan()) {
                    return;
                }
                let e1 = [p[1][0] - p[0][0], p[1][1] - p[0][1]];
                let e2 = [p[2][0] - p[0][0], p[2][1] - p[0][1]];
                let area = e1[0] * e2[1] - e1[1] * e2[0];
                // Front faces have negative signed area in pixel coordinates (v points down).
                if area == 0.0 || !area.is_finite() || (cull && area > 0.0) {
                    return;
                }
                let umin = p[0][0].min(p[1][0]).min(p[2][0]);
                let umax = p[0][0].max(p[1][0]).max(p[2][0]);
                let vmin = p[0][1].min(p[1][1]).min(p[2][1]);
                let vmax = p[0][1].max(p[1][1]).max(p[2][1]);
                if umax < 0.0 || vmax < 0.0 || umin > wf || vmin > hf {
                    return;
                }
                // Pixel x is inside the box when its centre x + 0.5 lies in [umin, umax].
                let x0 = ceil_nonneg((umin - 0.5).max(0.0));
                let y0 = ceil_nonneg((vmin - 0.5).max(0.0));
                let (xe, ye) = ((umax - 0.5).min(wf - 1.0), (vmax - 0.5).min(hf - 1.0));
                if xe < 0.0 || ye < 0.0 {
                    return;
                }
                let (x1, y1) = (xe as i32, ye as i32);
                let ia = 1.0 / area;
                s.bbox = [x0, y0, x1, y1];
                s.p0 = [p[0][0], p[0][1]];
                s.k = [e2[1] * ia, e2[0] * ia, e1[0] * ia, e1[1] * ia];
                s.q = if persp {
                    [p[0][3], p[1][3], p[2][3]]
                } else {
                    [p[0][2], p[1][2], p[2][2]]
                };
            });
        // 3. Per vertex: normal (gather over incident faces) and SH shading.
        let tri_cross = &self.tri_cross;
        let adj_start = &self.adj_start;
        let adj = &self.adj;
        let sh = scene.sh;
        self.verts
            .par_chunks_mut(VERTEX_CHUNK)
            .enumerate()
            .for_each(|(ci, chunk)| {
                for (j, vs) in chunk.iter_mut().enumerate() {
                    let v = ci * VERTEX_CHUNK + j;
                    let mut m = [0.0f32; 3];
                    for &e in &adj[adj_start[v] as usize..adj_start[v + 1] as usize] {
                        m = add(m, tri_cross[(e / 3) as usize]);
                    }
                    let len = dot(m, m).sqrt();
                    let (n, inv_len) = if len > 1e-30 {
                        let il = 1.0 / len;
                        (scale(m, il), il)
                    } else {
                        ([0.0; 3], 0.0)
                    };
                    let a = albedo[v];
                    let e = shade_factor(sh, &sh_basis(n));
                    vs.normal = n;
                    vs.inv_len = inv_len;
                    vs.irradiance = e;
                    vs.shade = [a[0] * e[0], a[1] * e[1], a[2] * e[2]];
                }
            });
        self.active.clear();
        for (ti, s) in self.setup.iter().enumerate() {
            if s.bbox[0] <= s.bbox[2] && s.bbox[1] <= s.bbox[3] {
                self.active.push(ti as u32);
            }
        }
        Ok(())
    }

    /// One parallel sweep over the image bands: rasterise each band, then shade it, evaluate the
    /// loss and (in [`Mode::Loss`] with `grad`) scatter the unnormalised pixel gradients
    /// `w·ρ'(r)` into the band's accumulator. Returns `(Σ w ρ, Σ w)` and whether a non-finite
    /// value met the loss.
    fn sweep(&mut self, persp: bool, mode: Mode) -> ((f64, f64), bool) {
        let width = self.width;
        let band_rows = self.config.band_rows as usize;
        let n = band_rows * width;
        let acc_len = (self.num_vertices * ACC).max(1);
        let ctx = BandContext {
            width,
            band_rows,
            persp,
            setup: &self.setup,
            active: &self.active,
            verts: &self.verts,
            triangles: &self.triangles,
        };
        self.pixels
            .par_chunks_mut(n)
            .zip(self.colour.par_chunks_mut(n))
            .zip(self.residual.par_chunks_mut(n))
            .zip(self.pixel_loss.par_chunks_mut(n))
            .zip(self.weight.par_chunks_mut(n))
            .zip(self.band_acc.par_chunks_mut(acc_len))
            .zip(self.band_sums.par_iter_mut())
            .zip(self.band_bad.par_iter_mut())
            .enumerate()
            .for_each(
                |(bi, (((((((pix, col), res), pl), wt), acc), sums), bad))| {
                    ctx.rasterise_band(bi, pix);
                    let out = BandOut {
                        pix,
                        col,
                        res,
                        pl,
                        wt,
                        acc,
                    };
                    let (s, b) = ctx.shade_band(bi, out, &mode);
                    *sums = s;
                    *bad = b;
                },
            );
        let bad = self.band_bad.iter().any(|&b| b);
        let sums = self
            .band_sums
            .iter()
            .fold((0.0f64, 0.0f64), |a, s| (a.0 + s[0], a.1 + s[1]));
        (sums, bad)
    }

    /// Renders the shaded mesh (no loss, no gradients). Uncovered pixels get `background`.
    /// Returns the image (row-major, linear RGB), also available as
    /// [`PhotometricPass::colour`].
    pub fn render(
        &mut self,
        scene: &Scene,
        background: [f32; 3],
    ) -> Result<&[[f32; 3]], RenderError> {
        if background.iter().any(|x| !x.is_finite()) {
            return Err(RenderError::Invalid(
                "the background colour contains NaN or infinity",
            ));
        }
        self.prepare(scene)?;
        self.sweep(scene.camera.is_perspective(), Mode::Render { background });
        Ok(&self.colour)
    }

    /// Renders and evaluates the photometric loss
    /// `L = Σ_i w_i Σ_c ρ(I_ren(i)_c − I(i)_c) / Σ_i w_i` over the pixels in the loss, with
    /// `w = M_face ⊙ (1 − M_occ)`. Pixels in the loss: covered pixels, plus all others when
    /// `loss.background` is set. Returns 0 when `Σ w = 0` (nothing to compare).
    pub fn forward(
        &mut self,
        scene: &Scene,
        target: &Target,
        loss: &LossConfig,
    ) -> Result<f32, RenderError> {
        self.evaluate(scene, target, loss, false)
    }

    /// [`PhotometricPass::forward`] followed by the backward pass. The gradients are also kept
    /// in [`PhotometricPass::gradients`]. Changes of visibility (which triangle covers a pixel,
    /// coverage at silhouettes) are not differentiated; the normaliser `Σ w` is piecewise
    /// constant and treated as such.
    pub fn loss_and_grad(
        &mut self,
        scene: &Scene,
        target: &Target,
        loss: &LossConfig,
    ) -> Result<(f32, &Gradients), RenderError> {
        let l = self.evaluate(scene, target, loss, true)?;
        self.backward(scene);
        Ok((l, &self.grads))
    }

    fn evaluate(
        &mut self,
        scene: &Scene,
        target: &Target,
        loss: &LossConfig,
        grad: bool,
    ) -> Result<f32, RenderError> {
        self.check_target(target, loss)?;
        self.prepare(scene)?;
        let mode = Mode::Loss {
            image: target.image,
            face: target.face_mask,
            occ: target.occlusion_mask,
            penalty: loss.penalty,
            background: loss.background,
            grad,
        };
        let ((num, den), bad) = self.sweep(scene.camera.is_perspective(), mode);
        if bad {
            return Err(RenderError::Invalid(
                "the photo or the masks contain NaN or infinity",
            ));
        }
        self.weight_sum = den;
        self.loss = if den > 0.0 { num / den } else { 0.0 };
        Ok(self.loss as f32)
    }

    /// Backward pass after a gradient `sweep` with the same scene.
    fn backward(&mut self, scene: &Scene) {
        let nv = self.num_vertices;
        let inv_w = if self.weight_sum > 0.0 {
            (1.0 / self.weight_sum) as f32
        } else {
            0.0
        };
        let verts = &self.verts;
        let triangles = &self.triangles;
        // 1. Per vertex: reduce the bands (and normalise by Σ w); albedo, SH, normal and
        //    projection gradients.
        let bands = self.band_sums.len();
        let band_acc = &self.band_acc;
        let vertices = scene.vertices;
        let albedo = scene.albedo;
        let sh = scene.sh;
        let camera = scene.camera;
        self.grads
            .vertices
            .par_chunks_mut(VERTEX_CHUNK)
            .zip(self.grads.albedo.par_chunks_mut(VERTEX_CHUNK))
            .zip(self.grad_m.par_chunks_mut(VERTEX_CHUNK))
            .zip(self.chunk_partials.par_iter_mut())
            .enumerate()
            .for_each(|(ci, (((gv, ga), gm), part))| {
                *part = [0.0; PARTIALS];
                let mut gcam = [0.0f32; CAMERA_PARAMS];
                let mut gsh = [0.0f32; 27];
                for j in 0..gv.len() {
                    let v = ci * VERTEX_CHUNK + j;
                    let mut g = [0.0f32; ACC];
                    for b in 0..bands {
                        let src = &band_acc[(b * nv + v) * ACC..][..ACC];
                        for k in 0..ACC {
                            g[k] += src[k];
                        }
                    }
                    for x in &mut g {
                        *x *= inv_w;
                    }
                    let vs = &verts[v];
                    let a = albedo[v];
                    ga[j] = [
                        g[0] * vs.irradiance[0],
                        g[1] * vs.irradiance[1],
                        g[2] * vs.irradiance[2],
                    ];
                    if g.iter().all(|&x| x == 0.0) {
                        gv[j] = [0.0; 3];
                        gm[j] = [0.0; 3];
                        continue;
                    }
                    let gca = [g[0] * a[0], g[1] * a[1], g[2] * a[2]];
                    let basis = sh_basis(vs.normal);
                    let mut q = [0.0f32; 9];
                    for k in 0..9 {
                        for c in 0..3 {
                            gsh[k * 3 + c] += gca[c] * basis[k];
                            q[k] += gca[c] * sh[k][c];
                        }
                    }
                    let gn = sh_basis_vjp(vs.normal, &q);
                    let nn = vs.normal;
                    let d = dot(gn, nn);
                    gm[j] = scale(sub(gn, scale(nn, d)), vs.inv_len);
                    gv[j] = camera.project_backward(vertices[v], [g[3], g[4], g[5]], &mut gcam);
                }
                for k in 0..27 {
                    part[k] = gsh[k] as f64;
                }
                for k in 0..CAMERA_PARAMS {
                    part[27 + k] = gcam[k] as f64;
                }
            });
        // 2. Per vertex: gradient through the area-weighted normals (gather over incident
        //    triangles).
        let grad_m = &self.grad_m;
        let adj_start = &self.adj_start;
        let adj = &self.adj;
        self.grads
            .vertices
            .par_chunks_mut(VERTEX_CHUNK)
            .enumerate()
            .for_each(|(ci, gv)| {
                for (j, out) in gv.iter_mut().enumerate() {
                    let v = ci * VERTEX_CHUNK + j;
                    let mut acc = [0.0f32; 3];
                    for &e in &adj[adj_start[v] as usize..adj_start[v + 1] as usize] {
                        let t = triangles[(e / 3) as usize];
                        let gt = add(
                            add(grad_m[t[0] as usize], grad_m[t[1] as usize]),
                            grad_m[t[2] as usize],
                        );
                        if gt == [0.0; 3] {
                            continue;
                        }
                        let p0 = vertices[t[0] as usize];
                        let a = sub(vertices[t[1] as usize], p0);
                        let b = sub(vertices[t[2] as usize], p0);
                        let ga = cross(b, gt);
                        let gb = cross(gt, a);
                        acc = add(
                            acc,
                            match e % 3 {
                                0 => scale(add(ga, gb), -1.0),
                                1 => ga,
                                _ => gb,
                            },
                        );
                    }
                    *out = add(*out, acc);
                }
            });
        // 3. Reduce the per-chunk SH and camera partials.
        let mut tot = [0.0f64; PARTIALS];
        for part in &self.chunk_partials {
            for k in 0..PARTIALS {
                tot[k] += part[k];
            }
        }
        for k in 0..9 {
            for c in 0..3 {
                self.grads.sh[k][c] = tot[k * 3 + c] as f32;
            }
        }
        let mut cam = camera.zeroed();
        let mut flat = [0.0f32; CAMERA_PARAMS];
        for k in 0..CAMERA_PARAMS {
            flat[k] = tot[27 + k] as f32;
        }
        cam.set_params(&flat);
        self.grads.camera = cam;
    }
}

/// What a band sweep computes after rasterising.
enum Mode<'a> {
    /// Colour only; uncovered pixels get the background.
    Render { background: [f32; 3] },
    /// Colour, residual, penalty and weight; with `grad`, also the pixel gradients.
    Loss {
        image: &'a [[f32; 3]],
        face: Option<&'a [f32]>,
        occ: Option<&'a [f32]>,
        penalty: RobustLoss,
        background: Option<[f32; 3]>,
        grad: bool,
    },
}

/// Read-only inputs of a band.
struct BandContext<'a> {
    width: usize,
    band_rows: usize,
    persp: bool,
    setup: &'a [TriSetup],
    active: &'a [u32],
    verts: &'a [VertexState],
    triangles: &'a [[u32; 3]],
}

/// The per-pixel outputs of one band and its gradient accumulator.
struct BandOut<'b> {
    pix: &'b mut [PixelSample],
    col: &'b mut [[f32; 3]],
    res: &'b mut [[f32; 3]],
    pl: &'b mut [f32],
    wt: &'b mut [f32],
    acc: &'b mut [f32],
}

impl BandContext<'_> {
    /// Z-buffer rasterisation of the active triangles (in index order) into the rows of band
    /// `bi`.
    fn rasterise_band(&self, bi: usize, band: &mut [PixelSample]) {
        let width = self.width;
        band.fill(EMPTY_PIXEL);
        let r0 = (bi * self.band_rows) as i32;
        let r1 = r0 + (band.len() / width) as i32 - 1;
        for &ti in self.active {
            let s = &self.setup[ti as usize];
            let [x0, y0, x1, y1] = s.bbox;
            if y1 < r0 || y0 > r1 {
                continue;
            }
            for y in y0.max(r0)..y1.min(r1) + 1 {
                let dy = y as f32 + 0.5 - s.p0[1];
                let row = &mut band[(y - r0) as usize * width..][..width];
                for x in x0..x1 + 1 {
                    let dx = x as f32 + 0.5 - s.p0[0];
                    let l1 = dx * s.k[0] - dy * s.k[1];
                    let l2 = dy * s.k[2] - dx * s.k[3];
                    let l0 = 1.0 - l1 - l2;
                    if l0 < INSIDE_EPS || l1 < INSIDE_EPS || l2 < INSIDE_EPS {
                        continue;
                    }
                    let key = l0 * s.q[0] + l1 * s.q[1] + l2 * s.q[2];
                    let px = &mut row[x as usize];
                    if key > px.depth_key {
                        let bary = if self.persp {
                            let ik = 1.0 / key;
                            [l0 * s.q[0] * ik, l1 * s.q[1] * ik, l2 * s.q[2] * ik]
                        } else {
                            [l0, l1, l2]
                        };
                        *px = PixelSample {
                            triangle: ti,
                            depth_key: key,
                            bary,
                        };
                    }
                }
            }
        }
    }

    /// Shading, loss and pixel gradients of band `bi`. Returns `[Σ w ρ, Σ w]` and whether a
    /// non-finite value met the loss.
    fn shade_band(&self, bi: usize, out: BandOut, mode: &Mode) -> ([f64; 2], bool) {
        let BandOut {
            pix,
            col,
            res,
            pl,
            wt,
            acc,
        } = out;
        let row0 = bi * self.band_rows;
        let base = row0 * self.width;
        match *mode {
            Mode::Render { background } => {
                for (c, px) in col.iter_mut().zip(pix.iter()) {
                    *c = if px.triangle == NO_TRIANGLE {
                        background
                    } else {
                        interpolate(self.verts, &self.triangles[px.triangle as usize], &px.bary)
                    };
                }
                ([0.0; 2], false)
            }
            Mode::Loss {
                image,
                face,
                occ,
                penalty,
                background,
                grad,
            } => {
                if grad {
                    acc.fill(0.0);
                }
                let mut sums = [0.0f64; 2];
                let mut bad = false;
                let rows = pix.len() / self.width;
                for yy in 0..rows {
                    for xx in 0..self.width {
                        let j = yy * self.width + xx;
                        let px = &pix[j];
                        let covered = px.triangle != NO_TRIANGLE;
                        let c = if covered {
                            interpolate(self.verts, &self.triangles[px.triangle as usize], &px.bary)
                        } else if let Some(bg) = background {
                            bg
                        } else {
                            col[j] = [0.0; 3];
                            res[j] = [0.0; 3];
                            pl[j] = 0.0;
                            wt[j] = 0.0;
                            continue;
                        };
                        col[j] = c;
                        let i = base + j;
                        let mut w = 1.0f32;
                        if let Some(m) = face {
                            w *= m[i];
                        }
                        if let Some(m) = occ {
                            w *= 1.0 - m[i];
                        }
                        let photo = image[i];
                        let r = [c[0] - photo[0], c[1] - photo[1], c[2] - photo[2]];
                        let (e0, d0) = penalty.eval(r[0]);
                        let (e1, d1) = penalty.eval(r[1]);
                        let (e2, d2) = penalty.eval(r[2]);
                        let rho = e0 + e1 + e2;
                        if !(rho.is_finite() && w.is_finite()) {
                            bad = true;
                        }
                        res[j] = r;
                        pl[j] = rho;
                        wt[j] = w;
                        sums[0] += (w * rho) as f64;
                        sums[1] += w as f64;
                        if grad && covered && w != 0.0 {
                            let g = [w * d0, w * d1, w * d2];
                            let p = [xx as f32 + 0.5, (row0 + yy) as f32 + 0.5];
                            let tri = self.triangles[px.triangle as usize];
                            pixel_backward(self.verts, &tri, &px.bary, g, p, self.persp, acc);
                        }
                    }
                }
                (sums, bad)
            }
        }
    }
}

/// Interpolated shaded colour at barycentrics `b`.
#[inline(always)]
fn interpolate(verts: &[VertexState], t: &[u32; 3], b: &[f32; 3]) -> [f32; 3] {
    let c0 = verts[t[0] as usize].shade;
    let c1 = verts[t[1] as usize].shade;
    let c2 = verts[t[2] as usize].shade;
    [
        b[0] * c0[0] + b[1] * c1[0] + b[2] * c2[0],
        b[0] * c0[1] + b[1] * c1[1] + b[2] * c2[1],
        b[0] * c0[2] + b[1] * c1[2] + b[2] * c2[2],
    ]
}

/// Back-propagates `g = dL/dC` at one pixel centre `p` to the corners of its triangle:
/// colour (3), screen position (2) and view depth (1) per corner, accumulated into `acc`.
#[inline(always)]
fn pixel_backward(
    verts: &[VertexState],
    t: &[u32; 3],
    b: &[f32; 3],
    g: [f32; 3],
    p: [f32; 2],
    persp: bool,
    acc: &mut [f32],
) {
    let vs = [
        &verts[t[0] as usize],
        &verts[t[1] as usize],
        &verts[t[2] as usize],
    ];
    // dL/db_k and colour gradients.
    let mut gb = [0.0f32; 3];
    for k in 0..3 {
        let c = vs[k].shade;
        gb[k] = g[0] * c[0] + g[1] * c[1] + g[2] * c[2];
        let o = t[k] as usize * ACC;
        acc[o] += b[k] * g[0];
        acc[o + 1] += b[k] * g[1];
        acc[o + 2] += b[k] * g[2];
    }
    // Through the perspective correction b_k = λ_k w_k / Σ_j λ_j w_j.
    let (lam, glam, gz) = if persp {
        let z = [vs[0].proj[2], vs[1].proj[2], vs[2].proj[2]];
        let bz = b[0] * z[0] + b[1] * z[1] + b[2] * z[2];
        let gbar = gb[0] * b[0] + gb[1] * b[1] + gb[2] * b[2];
        let ibz = 1.0 / bz;
        let mut lam = [0.0f32; 3];
        let mut glam = [0.0f32; 3];
        let mut gz = [0.0f32; 3];
        for k in 0..3 {
            let tk = gb[k] - gbar;
            lam[k] = b[k] * z[k] * ibz;
            glam[k] = tk * bz / z[k];
            gz[k] = -b[k] * tk / z[k];
        }
        (lam, glam, gz)
    } else {
        (*b, gb, [0.0; 3])
    };
    // Through the screen-space barycentrics λ_k = E_k(p) / A.
    let gl_bar = glam[0] * lam[0] + glam[1] * lam[1] + glam[2] * lam[2];
    let h = [glam[0] - gl_bar, glam[1] - gl_bar, glam[2] - gl_bar];
    let a = [
        [vs[0].proj[0] - p[0], vs[0].proj[1] - p[1]],
        [vs[1].proj[0] - p[0], vs[1].proj[1] - p[1]],
        [vs[2].proj[0] - p[0], vs[2].proj[1] - p[1]],
    ];
    let area =
        (a[1][0] - a[0][0]) * (a[2][1] - a[0][1]) - (a[1][1] - a[0][1]) * (a[2][0] - a[0][0]);
    let ia = 1.0 / area;
    for j in 0..3 {
        let j1 = (j + 1) % 3;
        let j2 = (j + 2) % 3;
        let gx = (-h[j1] * a[j2][1] + h[j2] * a[j1][1]) * ia;
        let gy = (h[j1] * a[j2][0] - h[j2] * a[j1][0]) * ia;
        let o = t[j] as usize * ACC;
        acc[o + 3] += gx;
        acc[o + 4] += gy;
        acc[o + 5] += gz[j];
    }
}

/// `ceil` of a non-negative finite float, without a libm call.
#[inline(always)]
fn ceil_nonneg(x: f32) -> i32 {
    let i = x as i32;
    i + ((i as f32) < x) as i32
}

#[inline(always)]
fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

#[inline(always)]
fn add(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

#[inline(always)]
fn scale(a: [f32; 3], s: f32) -> [f32; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

#[inline(always)]
fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[inline(always)]
fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

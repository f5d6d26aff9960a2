//! Layers shared by the perception networks, with TFLite semantics.
//!
//! All activations are NCHW `f32` candle tensors on the CPU. TFLite runs NHWC; the converter
//! (`tools/convert_tflite.py`) stores kernels in candle's OIHW / `C,1,H,W` layouts, so the
//! arithmetic is the same, only the memory order differs.
//!
//! What needs care to match TFLite exactly:
//! - `SAME` padding is asymmetric: for an even input and a stride-2 3×3 kernel TFLite pads
//!   0 rows on top and 1 at the bottom (`before = total / 2`, `after = total - before`).
//!   [`Padding::pads`] reproduces that; candle's symmetric padding argument is never used.
//! - PReLU is `x` for `x >= 0`, `alpha[c] * x` otherwise, per channel.
//! - Bilinear resizes use TensorFlow's half-pixel centres (`align_corners = false`).
//!
//! Speed. The layers are candle custom ops over contiguous `f32` slices:
//! - [`DepthwiseConv2d`]: direct loops over each padded plane, every tap one contiguous axpy,
//!   planes in parallel with rayon. candle's grouped `conv2d` runs one convolution per
//!   channel, 10–50× slower here (`benches/perception.rs`, group `depthwise`).
//! - [`Conv2d`]: im2col (skipped for 1×1) and one `gemm` whose destination starts as bias
//!   (+ residual), then the activation (ReLU, ReLU6 or PReLU) in place: one op per layer
//!   instead of conv, bias add, residual add and activation.
//! - [`add`], [`scale_channels`], [`max_pool2`]: single-pass kernels. candle runs
//!   elementwise ops above 64K elements on a spinning thread pool, which costs more than
//!   it saves for tensors this size, especially on a busy machine.
//!
//! Inner loops are compiled twice (baseline and AVX2+FMA) and chosen at run time.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Result, Shape, Tensor, bail,
};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// Whether the CPU has AVX2 and FMA (checked once, cached by the standard library).
#[inline(always)]
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines a function whose body is compiled twice, for the baseline target and with AVX2
/// and FMA enabled, choosing at run time (the default target is x86-64 v1, SSE2 only).
macro_rules! simd_dispatch {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if has_avx2_fma() {
                    // SAFETY: the CPU supports the enabled features.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// TFLite padding mode of a convolution or pooling operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Output size `ceil(in / stride)`, zero padding split as TFLite does
    /// (the extra row/column goes after: bottom/right).
    Same,
    /// No padding: output size `floor((in - k) / stride) + 1`.
    Valid,
    /// An explicit `PAD` of this many zeros on every side, then `VALID` (the full-range
    /// detector's layers; differs from `Same` for stride 2).
    Symmetric(usize),
}

/// Explicit zero padding of the two spatial dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pad2d {
    /// Rows added above.
    pub top: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding {
    /// Padding and output size for an `h × w` input, a `k × k` kernel and `stride`.
    pub fn pads(self, h: usize, w: usize, k: usize, stride: usize) -> (Pad2d, usize, usize) {
        match self {
            Padding::Valid => {
                let oh = (h.saturating_sub(k)) / stride + 1;
                let ow = (w.saturating_sub(k)) / stride + 1;
                (Pad2d::default(), oh, ow)
            }
            Padding::Symmetric(p) => {
                let oh = (h + 2 * p).saturating_sub(k) / stride + 1;
                let ow = (w + 2 * p).saturating_sub(k) / stride + 1;
                let pad = Pad2d {
                    top: p,
                    bottom: p,
                    left: p,
                    right: p,
                };
                (pad, oh, ow)
            }
            Padding::Same => {
                let oh = h.div_ceil(stride);
                let ow = w.div_ceil(stride);
                let th = ((oh - 1) * stride + k).saturating_sub(h);
                let tw = ((ow - 1) * stride + k).saturating_sub(w);
                let pad = Pad2d {
                    top: th / 2,
                    bottom: th - th / 2,
                    left: tw / 2,
                    right: tw - tw / 2,
                };
                (pad, oh, ow)
            }
        }
    }
}

/// An activation fused into a layer (TFLite's `fused_activation_function`, or a separate
/// `RELU` / `PRELU` operator right after it).
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// Identity.
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` for `x >= 0`, `alpha[c] * x` otherwise (TFLite `PRELU`, one slope per channel).
    PRelu(Vec<f32>),
}

impl Activation {
    /// Applies the activation to one channel's values in place.
    #[inline]
    fn apply_channel(&self, c: usize, v: &mut [f32]) {
        match self {
            Activation::Linear => {}
            Activation::Relu => activate(v, 0.0, f32::INFINITY),
            Activation::Relu6 => activate(v, 0.0, 6.0),
            Activation::PRelu(alpha) => activate(v, alpha[c], f32::INFINITY),
        }
    }

    fn check_channels(&self, channels: usize) -> Result<()> {
        if let Activation::PRelu(a) = self
            && a.len() != channels
        {
            bail!("prelu has {} slopes for {channels} channels", a.len());
        }
        Ok(())
    }
}

/// Zero-pads the spatial dimensions of an NCHW tensor (no copy when there is nothing to pad).
pub fn pad_spatial(x: &Tensor, p: Pad2d) -> Result<Tensor> {
    let mut x = x.clone();
    if p.top > 0 || p.bottom > 0 {
        x = x.pad_with_zeros(2, p.top, p.bottom)?;
    }
    if p.left > 0 || p.right > 0 {
        x = x.pad_with_zeros(3, p.left, p.right)?;
    }
    Ok(x)
}

/// Zero-pads the channel dimension up to `channels` (TFLite `PAD` on the last NHWC axis, used
/// by BlazeBlocks whose residual path has fewer channels than the main path).
pub fn pad_channels(x: &Tensor, channels: usize) -> Result<Tensor> {
    let c = x.dim(1)?;
    if c == channels {
        return Ok(x.clone());
    }
    if c > channels {
        bail!("pad_channels: {c} channels cannot be padded down to {channels}");
    }
    x.pad_with_zeros(1, 0, channels - c)
}

/// 2×2 max pooling with stride 2 (TFLite `MAX_POOL_2D`; `SAME` and `VALID` agree for the even
/// sizes these networks use).
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Elementwise::MaxPool2)
}

/// `a + b` for two tensors of the same shape, without candle's thread pool (see the module
/// notes on threading).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?
        .apply_op2_no_bwd(&b.contiguous()?, &ScaleAdd { scaled: false })
}

/// `x * g + y`: `x` and `y` `[N, C, H, W]`, `g` `[N, C, 1, 1]` (a per-channel gate, as in
/// squeeze-and-excitation). Pass `y = None` for `x * g`.
pub fn scale_channels(x: &Tensor, g: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    let g = g.reshape((n, c))?.contiguous()?;
    let gated = x
        .contiguous()?
        .apply_op2_no_bwd(&g, &ScaleAdd { scaled: true })?;
    match y {
        Some(y) => add(&gated, y),
        None => Ok(gated),
    }
}

/// Global average over the spatial dimensions, keeping them as 1×1 (TFLite `AVERAGE_POOL_2D`
/// with a full-size window, or `MEAN` over H and W).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean_keepdim(3)?.mean_keepdim(2)
}

/// Bilinear resize with TensorFlow's half-pixel centres (`align_corners = false`,
/// `half_pixel_centers = true`), as TFLite `RESIZE_BILINEAR` in these graphs.
pub fn resize_bilinear(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&ResizeBilinear { oh, ow })
}

/// TFLite `DEPTH_TO_SPACE` (DCR order) on NCHW: input channel `(i * b + j) * C + c` moves to
/// output channel `c` at spatial offset `(i, j)` inside each `b × b` block.
pub fn depth_to_space(x: &Tensor, block: usize) -> Result<Tensor> {
    let (n, cb, h, w) = x.dims4()?;
    if cb % (block * block) != 0 {
        bail!("depth_to_space: {cb} channels not divisible by {block}x{block}");
    }
    let c = cb / (block * block);
    x.reshape((n, block, block, c, h, w))?
        .permute([0, 3, 4, 1, 5, 2])?
        .contiguous()?
        .reshape((n, c, h * block, w * block))
}

/// TFLite `HARD_SWISH`: `x * relu6(x + 3) / 6`.
pub fn hard_swish(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&Elementwise::HardSwish)
}

/// Logistic sigmoid on every element.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&Elementwise::Sigmoid)
}

/// Numerically safe logistic function on one value.
pub fn sigmoid_f32(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// A convolution (TFLite `CONV_2D`) as one candle `CustomOp`: im2col (skipped for 1×1,
/// stride 1) and a single `gemm` call whose destination starts as bias (+ residual), then the
/// fused activation. One pass instead of the conv / bias-add / residual-add / activation
/// chain of separate candle ops.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `[cout, cin * k * k]`, row-major (OIHW flattened).
    weight: Vec<f32>,
    bias: Vec<f32>,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
    activation: Activation,
}

impl Conv2d {
    /// Loads `weight` `[cout, cin, k, k]` and `bias` `[cout]` from `vb`.
    pub fn load(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
        activation: Activation,
    ) -> Result<Self> {
        activation.check_channels(cout)?;
        let weight = vb
            .get((cout, cin, kernel, kernel), "weight")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = vb.get(cout, "bias")?.to_vec1::<f32>()?;
        Ok(Self {
            weight,
            bias,
            cin,
            cout,
            kernel,
            stride,
            padding,
            activation,
        })
    }

    /// Replaces the fused activation (e.g. with the `PRELU` that follows in the graph).
    pub fn with_activation(mut self, activation: Activation) -> Result<Self> {
        activation.check_channels(self.cout)?;
        self.activation = activation;
        Ok(self)
    }

    /// Number of output channels.
    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// `act(conv(x) + bias + residual)`: the residual has the output's spatial size and at
    /// most `cout` channels; missing channels count as zeros (TFLite's channel `PAD` before
    /// the `ADD` in BlazeBlocks).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        x.contiguous()?
            .apply_op2_no_bwd(&residual.contiguous()?, &ConvResidual(self))
    }

    fn run(
        &self,
        input: &[f32],
        dims: (usize, usize, usize, usize),
        residual: Option<(&[f32], usize)>,
    ) -> Result<(Vec<f32>, Shape)> {
        let (n, c, h, w) = dims;
        if c != self.cin {
            bail!("conv: input has {c} channels, layer expects {}", self.cin);
        }
        let k = self.kernel;
        let s = self.stride;
        let (pad, oh, ow) = self.padding.pads(h, w, k, s);
        let hw = oh * ow;
        let kk = self.cin * k * k;
        let direct = k == 1 && s == 1 && pad == Pad2d::default();
        let mut out = vec![0f32; n * self.cout * hw];
        let mut col = if direct {
            Vec::new()
        } else {
            vec![0f32; kk * hw]
        };
        let flops = self.cout * hw * kk;
        // Splitting smaller products across threads costs more than it saves.
        let parallelism = if flops >= MIN_PARALLEL_GEMM {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        for b in 0..n {
            let src = &input[b * c * h * w..(b + 1) * c * h * w];
            let dst = &mut out[b * self.cout * hw..(b + 1) * self.cout * hw];
            let r: &[f32] = match residual {
                Some((r, rc)) => &r[b * rc * hw..(b + 1) * rc * hw],
                None => &[],
            };
            conv_prologue(dst, &self.bias, hw, r);
            let rhs: &[f32] = if direct {
                src
            } else {
                im2col(src, c, h, w, k, s, pad, oh, ow, &mut col);
                &col
            };
            // SAFETY: dst is cout x hw, lhs cout x kk, rhs kk x hw, all row-major and in
            // bounds; dst does not alias the inputs.
            unsafe {
                gemm::gemm(
                    self.cout,
                    hw,
                    kk,
                    dst.as_mut_ptr(),
                    1,
                    hw as isize,
                    true,
                    self.weight.as_ptr(),
                    1,
                    kk as isize,
                    rhs.as_ptr(),
                    1,
                    hw as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
            if self.activation != Activation::Linear {
                for (co, row) in dst.chunks_mut(hw).enumerate() {
                    self.activation.apply_channel(co, row);
                }
            }
        }
        Ok((out, Shape::from((n, self.cout, oh, ow))))
    }
}

/// Unfolds `src` (`c × h × w`) into `col` (`c·k·k × oh·ow`), zeros where the window reaches
/// into the padding.
#[allow(clippy::too_many_arguments)]
fn im2col(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    pad: Pad2d,
    oh: usize,
    ow: usize,
    col: &mut [f32],
) {
    let hw = oh * ow;
    for ci in 0..c {
        let plane = &src[ci * h * w..(ci + 1) * h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ci * k + ky) * k + kx) * hw..][..hw];
                for oy in 0..oh {
                    let iy = (oy * s + ky) as isize - pad.top as isize;
                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                    if iy < 0 || iy >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let line = &plane[iy as usize * w..(iy as usize + 1) * w];
                    for (ox, d) in dst.iter_mut().enumerate() {
                        let ix = (ox * s + kx) as isize - pad.left as isize;
                        *d = if ix < 0 || ix >= w as isize {
                            0.0
                        } else {
                            line[ix as usize]
                        };
                    }
                }
            }
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d-fused"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims4()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("conv: input must be contiguous");
        };
        let (out, shape) = self.run(&storage.as_slice::<f32>()?[start..end], dims, None)?;
        Ok((CpuStorage::F32(out), shape))
    }
}

/// [`Conv2d`] with a residual input (see [`Conv2d::forward_residual`]).
struct ConvResidual<'a>(&'a Conv2d);

impl CustomOp2 for ConvResidual<'_> {
    fn name(&self) -> &'static str {
        "conv2d-fused-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let conv = self.0;
        let dims = l1.shape().dims4()?;
        let (rn, rc, rh, rw) = l2.shape().dims4()?;
        let (pad_, oh, ow) = conv.padding.pads(dims.2, dims.3, conv.kernel, conv.stride);
        let _ = pad_;
        if rn != dims.0 || rh != oh || rw != ow || rc > conv.cout {
            bail!(
                "conv residual {:?} does not fit the output ({}, {}, {oh}, {ow})",
                l2.shape().dims(),
                dims.0,
                conv.cout
            );
        }
        let (Some((a, b)), Some((c, d))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            bail!("conv: inputs must be contiguous");
        };
        let r = &s2.as_slice::<f32>()?[c..d];
        let (out, shape) = conv.run(&s1.as_slice::<f32>()?[a..b], dims, Some((r, rc)))?;
        Ok((CpuStorage::F32(out), shape))
    }
}

/// A depthwise convolution (TFLite `DEPTHWISE_CONV_2D`, depth multiplier 1) as a candle
/// `CustomOp1`: direct loops over each contiguous `H × W` plane, bias and fused activation
/// included, planes in parallel.
#[derive(Debug, Clone)]
pub struct DepthwiseConv2d {
    weight: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
    activation: Activation,
    /// The kernel as a `[C, 1, k, k]` tensor, kept for the grouped-conv reference path.
    weight_tensor: Tensor,
}

impl DepthwiseConv2d {
    /// Loads `weight` `[c, 1, k, k]` and `bias` `[c]` from `vb`.
    pub fn load(
        vb: VarBuilder,
        channels: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
        activation: Activation,
    ) -> Result<Self> {
        activation.check_channels(channels)?;
        let weight_tensor = vb.get((channels, 1, kernel, kernel), "weight")?;
        let weight = weight_tensor.flatten_all()?.to_vec1::<f32>()?;
        let bias = vb.get(channels, "bias")?.to_vec1::<f32>()?;
        Ok(Self {
            weight,
            bias,
            channels,
            kernel,
            stride,
            padding,
            activation,
            weight_tensor,
        })
    }

    /// The same layer through candle's grouped `conv2d` (one group per channel). Used as the
    /// reference in tests and as the baseline in the benchmark.
    pub fn forward_grouped(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (pad, _, _) = self.padding.pads(h, w, self.kernel, self.stride);
        let x = pad_spatial(x, pad)?;
        let bias = Tensor::from_slice(&self.bias, (1, self.channels, 1, 1), x.device())?;
        let y = x
            .conv2d(&self.weight_tensor, 0, self.stride, 1, self.channels)?
            .broadcast_add(&bias)?;
        match &self.activation {
            Activation::Linear => Ok(y),
            Activation::Relu => y.relu(),
            Activation::Relu6 => y.clamp(0f32, 6f32),
            Activation::PRelu(a) => {
                let a = Tensor::from_slice(a, (1, a.len(), 1, 1), y.device())?;
                y.relu()? + y.minimum(0f32)?.broadcast_mul(&a)?
            }
        }
    }
}

impl Module for DepthwiseConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

/// Depthwise planes are grouped so one rayon task does at least this many multiply-adds.
const MIN_PARALLEL_MACS: usize = 1 << 18;

/// Multiply-adds below which a convolution's gemm runs on one thread.
const MIN_PARALLEL_GEMM: usize = 1 << 22;

impl CustomOp1 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        if c != self.channels {
            bail!(
                "depthwise conv: input has {c} channels, layer has {}",
                self.channels
            );
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("depthwise conv: input must be contiguous");
        };
        let input = &storage.as_slice::<f32>()?[start..end];
        let k = self.kernel;
        let s = self.stride;
        let (pad, oh, ow) = self.padding.pads(h, w, k, s);
        let plane_in = h * w;
        let plane_out = oh * ow;
        let mut out = vec![0f32; n * c * plane_out];
        // At least MIN_PARALLEL_MACS multiply-adds per rayon task.
        let min_len = MIN_PARALLEL_MACS
            .div_ceil((plane_out * k * k).max(1))
            .max(1);
        out.par_chunks_mut(plane_out)
            .with_min_len(min_len)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (plane, dst)| {
                let ch = plane % c;
                let src = &input[plane * plane_in..(plane + 1) * plane_in];
                let wk = &self.weight[ch * k * k..(ch + 1) * k * k];
                let geom = DwGeometry {
                    h,
                    w,
                    oh,
                    ow,
                    k,
                    s,
                    pad,
                };
                depthwise_plane(src, dst, wk, self.bias[ch], geom, scratch);
                self.activation.apply_channel(ch, dst);
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

simd_dispatch! {
/// `x = min(max(x, 0), hi) + slope * min(x, 0)`, branch-free so it vectorises: ReLU is
/// `(slope 0, hi inf)`, ReLU6 `(0, 6)`, PReLU `(alpha, inf)`. Exact: for `x >= 0` the second
/// term is `±0`, for `x < 0` the first is `0`.
fn activate(v: &mut [f32], slope: f32, hi: f32) {
    for x in v.iter_mut() {
        let t = *x;
        *x = t.max(0.0).min(hi) + slope * t.min(0.0);
    }
}
}

simd_dispatch! {
/// Starts a convolution's output: every channel row set to its bias, plus the residual's
/// rows (the first `residual.len() / hw` channels).
fn conv_prologue(dst: &mut [f32], bias: &[f32], hw: usize, residual: &[f32]) {
    for (row, &b) in dst.chunks_mut(hw).zip(bias) {
        row.fill(b);
    }
    for (d, r) in dst.iter_mut().zip(residual) {
        *d += r;
    }
}
}

/// Sizes of one depthwise plane.
#[derive(Debug, Clone, Copy)]
struct DwGeometry {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    k: usize,
    s: usize,
    pad: Pad2d,
}

simd_dispatch! {
/// One channel of a depthwise convolution: `dst = bias + sum_k w[k] * src[shifted]`.
///
/// The plane is first copied into `scratch` with its zero padding (and, for stride 2, with
/// even and odd columns split into two halves), so every tap is one contiguous slice and the
/// accumulation is a vectorisable axpy without border cases.
fn depthwise_plane(
    src: &[f32],
    dst: &mut [f32],
    wk: &[f32],
    bias: f32,
    g: DwGeometry,
    scratch: &mut Vec<f32>,
) {
    let DwGeometry {
        h,
        w,
        oh,
        ow,
        k,
        s,
        pad,
    } = g;
    let ph = (oh - 1) * s + k;
    let pw = (ow - 1) * s + k;
    // Row layout: stride 1 -> the padded row; stride 2 -> [even columns | odd columns].
    let even = pw.div_ceil(2);
    // Stride 1 accumulates over the flattened plane: output (oy, x) lives at oy * pw + x of
    // an "extended" plane whose columns ow..pw are discarded, so each tap is one long axpy.
    let n_ext = if s == 1 { (oh - 1) * pw + ow } else { 0 };
    scratch.clear();
    scratch.resize(ph * pw + n_ext, 0.0);
    let (padded, ext) = scratch.split_at_mut(ph * pw);
    for r in 0..ph {
        let iy = r as isize - pad.top as isize;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        let line = &src[iy as usize * w..(iy as usize + 1) * w];
        let out = &mut padded[r * pw..(r + 1) * pw];
        let n = w.min(pw - pad.left);
        if s == 2 {
            for (c, &v) in line[..n].iter().enumerate() {
                let pc = c + pad.left;
                out[if pc % 2 == 0 { pc / 2 } else { even + pc / 2 }] = v;
            }
        } else {
            out[pad.left..pad.left + n].copy_from_slice(&line[..n]);
        }
    }
    // Start of every tap of output row 0 (stride 1: in the flattened plane; stride 2: in the
    // row's [even | odd] layout, relative to the row).
    let tap_start = |ky: usize, kx: usize| -> usize {
        match s {
            1 => ky * pw + kx,
            _ if kx.is_multiple_of(2) => kx / 2,
            _ => even + kx / 2,
        }
    };
    if s == 1 {
        match k {
            3 => sum_taps::<9>(ext, padded, |t| tap_start(t / 3, t % 3), wk, bias),
            5 => sum_taps::<25>(ext, padded, |t| tap_start(t / 5, t % 5), wk, bias),
            _ => {
                ext.fill(bias);
                for ky in 0..k {
                    for kx in 0..k {
                        let wv = wk[ky * k + kx];
                        let off = tap_start(ky, kx);
                        for (d, v) in ext.iter_mut().zip(&padded[off..off + n_ext]) {
                            *d += wv * v;
                        }
                    }
                }
            }
        }
        for (oy, row) in dst.chunks_mut(ow).enumerate() {
            row.copy_from_slice(&ext[oy * pw..oy * pw + ow]);
        }
        return;
    }
    for oy in 0..oh {
        let row = &mut dst[oy * ow..(oy + 1) * ow];
        let base = oy * s * pw;
        if s == 2 && k == 3 {
            sum_taps::<9>(row, padded, |t| base + (t / 3) * pw + tap_start(t / 3, t % 3), wk, bias);
        } else if s == 2 && k == 5 {
            sum_taps::<25>(row, padded, |t| base + (t / 5) * pw + tap_start(t / 5, t % 5), wk, bias);
        } else {
            row.fill(bias);
            for ky in 0..k {
                let prow = &padded[(oy * s + ky) * pw..(oy * s + ky + 1) * pw];
                for kx in 0..k {
                    let wv = wk[ky * k + kx];
                    for (ox, d) in row.iter_mut().enumerate() {
                        *d += wv * prow[ox * s + kx];
                    }
                }
            }
        }
    }
}
}

/// `dst[i] = bias + sum_t w[t] * src[start(t) + i]` for `T` taps, one pass over `dst` with
/// the taps unrolled (each output written once; loads at constant offsets vectorise).
#[inline(always)]
fn sum_taps<const T: usize>(
    dst: &mut [f32],
    src: &[f32],
    start: impl Fn(usize) -> usize,
    w: &[f32],
    bias: f32,
) {
    let n = dst.len();
    let w: [f32; T] = std::array::from_fn(|t| w[t]);
    let taps: [&[f32]; T] = std::array::from_fn(|t| &src[start(t)..start(t) + n]);
    for (i, d) in dst.iter_mut().enumerate() {
        let mut acc = bias;
        for t in 0..T {
            // SAFETY: every tap slice has length n (checked when slicing above) and i < n.
            acc += w[t] * unsafe { *taps[t].get_unchecked(i) };
        }
        *d = acc;
    }
}

/// Elementwise functions without a candle equivalent of the exact TFLite form, and 2×2 max
/// pooling (single pass, no thread pool).
#[derive(Debug, Clone, Copy)]
enum Elementwise {
    HardSwish,
    Sigmoid,
    MaxPool2,
}

impl CustomOp1 for Elementwise {
    fn name(&self) -> &'static str {
        match self {
            Elementwise::HardSwish => "hard-swish",
            Elementwise::Sigmoid => "sigmoid",
            Elementwise::MaxPool2 => "max-pool-2x2",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("{}: input must be contiguous", self.name());
        };
        let input = &storage.as_slice::<f32>()?[start..end];
        let out: Vec<f32> = match self {
            Elementwise::HardSwish => input
                .iter()
                .map(|&x| x * (x + 3.0).clamp(0.0, 6.0) / 6.0)
                .collect(),
            Elementwise::Sigmoid => input.iter().map(|&x| sigmoid_f32(x)).collect(),
            Elementwise::MaxPool2 => {
                let (n, c, h, w) = layout.shape().dims4()?;
                if h % 2 != 0 || w % 2 != 0 {
                    bail!("max_pool2: odd spatial size {h}x{w}");
                }
                let (oh, ow) = (h / 2, w / 2);
                let mut out = Vec::with_capacity(n * c * oh * ow);
                for plane in input.chunks(h * w) {
                    for oy in 0..oh {
                        let r0 = &plane[2 * oy * w..(2 * oy + 1) * w];
                        let r1 = &plane[(2 * oy + 1) * w..(2 * oy + 2) * w];
                        for ox in 0..ow {
                            let a = r0[2 * ox].max(r0[2 * ox + 1]);
                            let b = r1[2 * ox].max(r1[2 * ox + 1]);
                            out.push(a.max(b));
                        }
                    }
                }
                return Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))));
            }
        };
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `a + b` (same shape) or `a * g` (per-channel gate `[N, C]`), single pass.
struct ScaleAdd {
    scaled: bool,
}

impl CustomOp2 for ScaleAdd {
    fn name(&self) -> &'static str {
        if self.scaled { "scale-channels" } else { "add" }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            bail!("{}: inputs must be contiguous", self.name());
        };
        let a = &s1.as_slice::<f32>()?[a0..a1];
        let b = &s2.as_slice::<f32>()?[b0..b1];
        let out: Vec<f32> = if self.scaled {
            let (n, c, h, w) = l1.shape().dims4()?;
            if b.len() != n * c {
                bail!(
                    "scale_channels: gate has {} values for {n}x{c} channels",
                    b.len()
                );
            }
            a.chunks(h * w)
                .zip(b)
                .flat_map(|(plane, &g)| plane.iter().map(move |v| v * g))
                .collect()
        } else {
            if l1.shape() != l2.shape() {
                bail!("add: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
            }
            a.iter().zip(b).map(|(x, y)| x + y).collect()
        };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Half-pixel bilinear resize (see [`resize_bilinear`]).
struct ResizeBilinear {
    oh: usize,
    ow: usize,
}

/// Source index pair and weight of the upper one for one output coordinate, TensorFlow's
/// `half_pixel_centers` convention with edge clamping.
fn half_pixel_taps(out: usize, in_size: usize, out_size: usize) -> (usize, usize, f32) {
    let scale = in_size as f32 / out_size as f32;
    let src = (out as f32 + 0.5) * scale - 0.5;
    let lo = src.floor();
    let frac = src - lo;
    let lo_i = (lo.max(0.0) as usize).min(in_size - 1);
    let hi_i = ((lo + 1.0).max(0.0) as usize).min(in_size - 1);
    (lo_i, hi_i, frac)
}

impl CustomOp1 for ResizeBilinear {
    fn name(&self) -> &'static str {
        "resize-bilinear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("resize: input must be contiguous");
        };
        let input = &storage.as_slice::<f32>()?[start..end];
        let (oh, ow) = (self.oh, self.ow);
        let ys: Vec<_> = (0..oh).map(|y| half_pixel_taps(y, h, oh)).collect();
        let xs: Vec<_> = (0..ow).map(|x| half_pixel_taps(x, w, ow)).collect();
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .with_min_len(MIN_PARALLEL_MACS.div_ceil(4 * oh * ow))
            .enumerate()
            .for_each(|(p, dst)| {
                let src = &input[p * h * w..(p + 1) * h * w];
                for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
                    let r0 = &src[y0 * w..(y0 + 1) * w];
                    let r1 = &src[y1 * w..(y1 + 1) * w];
                    for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
                        let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
                        let bot = r1[x0] + (r1[x1] - r1[x0]) * fx;
                        dst[oy * ow + ox] = top + (bot - top) * fy;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// A fully connected layer (TFLite `FULLY_CONNECTED`): `y = x W^T + b`, `W` `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Loads `weight` `[out, in]` and `bias` `[out]` from `vb`.
    pub fn load(vb: VarBuilder, input: usize, output: usize) -> Result<Self> {
        let weight_t = vb.get((output, input), "weight")?.t()?.contiguous()?;
        let bias = vb.get(output, "bias")?.reshape((1, output))?;
        Ok(Self { weight_t, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

/// MediaPipe's `Convolution2DTransposeBias` custom operator with a 2×2 kernel and stride 2
/// (the only configuration the selfie segmentation network uses): every input pixel writes
/// one 2×2 output block, no overlap.
#[derive(Debug, Clone)]
pub struct TransposeConv2x2 {
    weight: Tensor,
    bias: Tensor,
}

impl TransposeConv2x2 {
    /// Loads `weight` `[cin, cout, 2, 2]` and `bias` `[cout]` from `vb`.
    pub fn load(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let weight = vb.get((cin, cout, 2, 2), "weight")?;
        let bias = vb.get(cout, "bias")?.reshape((1, cout, 1, 1))?;
        Ok(Self { weight, bias })
    }
}

impl Module for TransposeConv2x2 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv_transpose2d(&self.weight, 0, 0, 2, 1)?
            .broadcast_add(&self.bias)
    }
}

/// Converts a batch of `size × size` RGB images into an NCHW `f32` tensor with values
/// `pixel / 255 * (max - min) + min` (MediaPipe's `output_tensor_float_range`).
pub fn images_to_tensor(
    images: &[&image::RgbImage],
    range: (f32, f32),
    device: &candle_core::Device,
) -> Result<Tensor> {
    let Some(first) = images.first() else {
        bail!("images_to_tensor: empty batch");
    };
    let (w, h) = first.dimensions();
    let (w, h) = (w as usize, h as usize);
    let scale = (range.1 - range.0) / 255.0;
    let mut data = vec![0f32; images.len() * 3 * h * w];
    for (b, img) in images.iter().enumerate() {
        if img.dimensions() != first.dimensions() {
            bail!("images_to_tensor: images of different sizes in one batch");
        }
        let base = b * 3 * h * w;
        for (i, px) in img.pixels().enumerate() {
            for ch in 0..3 {
                data[base + ch * h * w + i] = px.0[ch] as f32 * scale + range.0;
            }
        }
    }
    Tensor::from_vec(data, (images.len(), 3, h, w), device)?.to_dtype(DType::F32)
}

/// Loads `conv_<idx>` (see `tools/convert_tflite.py` for the naming scheme).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    vb: &VarBuilder,
    idx: usize,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
    activation: Activation,
) -> Result<Conv2d> {
    Conv2d::load(
        vb.pp(format!("conv_{idx}")),
        cin,
        cout,
        kernel,
        stride,
        padding,
        activation,
    )
}

/// Loads a 1×1, stride-1 `conv_<idx>`.
pub(crate) fn pointwise(
    vb: &VarBuilder,
    idx: usize,
    cin: usize,
    cout: usize,
    activation: Activation,
) -> Result<Conv2d> {
    conv(vb, idx, cin, cout, 1, 1, Padding::Valid, activation)
}

/// Loads `dw_<idx>`.
pub(crate) fn depthwise(
    vb: &VarBuilder,
    idx: usize,
    channels: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
    activation: Activation,
) -> Result<DepthwiseConv2d> {
    DepthwiseConv2d::load(
        vb.pp(format!("dw_{idx}")),
        channels,
        kernel,
        stride,
        padding,
        activation,
    )
}

/// Loads `prelu_<idx>` as an activation to fuse into the preceding layer.
pub(crate) fn prelu(vb: &VarBuilder, idx: usize, channels: usize) -> Result<Activation> {
    Ok(Activation::PRelu(
        vb.pp(format!("prelu_{idx}"))
            .get(channels, "alpha")?
            .to_vec1::<f32>()?,
    ))
}

/// Flattens a detector head `[N, A*k, H, W]` into TFLite's `[N, H*W*A, k]` order (NHWC
/// reshape: anchors of one cell are consecutive).
pub(crate) fn head_to_anchors(x: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.permute([0, 2, 3, 1])?
        .contiguous()?
        .reshape((n, h * w * c / k, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_padding_is_asymmetric_like_tflite() {
        let (p, oh, ow) = Padding::Same.pads(64, 64, 3, 2);
        assert_eq!((oh, ow), (32, 32));
        assert_eq!(
            p,
            Pad2d {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1
            }
        );
        let (p, oh, _) = Padding::Same.pads(192, 192, 5, 2);
        assert_eq!(oh, 96);
        assert_eq!((p.top, p.bottom), (1, 2));
        let (p, oh, _) = Padding::Same.pads(16, 16, 3, 1);
        assert_eq!(oh, 16);
        assert_eq!((p.top, p.bottom), (1, 1));
        let (_, oh, ow) = Padding::Valid.pads(98, 98, 3, 2);
        assert_eq!((oh, ow), (48, 48));
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn depthwise_matches_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        for (c, h, w, k, s, pad, act) in [
            (
                8usize,
                13usize,
                17usize,
                3usize,
                1usize,
                Padding::Same,
                Activation::Linear,
            ),
            (
                3,
                7,
                8,
                3,
                1,
                Padding::Same,
                Activation::PRelu(vec![0.1, -0.5, 2.0]),
            ),
            (8, 16, 16, 3, 2, Padding::Same, Activation::Relu),
            (5, 12, 12, 5, 2, Padding::Same, Activation::Relu6),
            (4, 11, 9, 5, 1, Padding::Same, Activation::Linear),
            (6, 10, 10, 3, 2, Padding::Valid, Activation::Linear),
        ] {
            let mut map = std::collections::HashMap::new();
            map.insert(
                "weight".to_string(),
                Tensor::from_vec(pseudo_random(c * k * k, 7), (c, 1, k, k), &dev)?,
            );
            map.insert(
                "bias".to_string(),
                Tensor::from_vec(pseudo_random(c, 9), c, &dev)?,
            );
            let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
            let layer = DepthwiseConv2d::load(vb, c, k, s, pad, act)?;
            let x = Tensor::from_vec(pseudo_random(2 * c * h * w, 3), (2, c, h, w), &dev)?;
            let fast = layer.forward(&x)?;
            let slow = layer.forward_grouped(&x)?;
            assert_eq!(fast.dims(), slow.dims());
            let diff = (fast - slow)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-5, "k={k} s={s}: max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn fused_conv_matches_candle_conv() -> Result<()> {
        let dev = Device::Cpu;
        for &(cin, cout, h, w, k, s, pad) in &[
            (
                3usize,
                8usize,
                17usize,
                16usize,
                5usize,
                2usize,
                Padding::Same,
            ),
            (6, 5, 9, 9, 1, 1, Padding::Valid),
            (4, 7, 8, 8, 2, 2, Padding::Valid),
            (4, 3, 10, 12, 3, 2, Padding::Symmetric(1)),
            (5, 2, 6, 6, 3, 3, Padding::Valid),
            // Large enough for the multi-threaded gemm path.
            (32, 64, 48, 48, 1, 1, Padding::Valid),
            (48, 4, 48, 48, 1, 1, Padding::Same),
            (3, 32, 192, 192, 3, 2, Padding::Symmetric(1)),
        ] {
            let mut map = std::collections::HashMap::new();
            let wt = Tensor::from_vec(
                pseudo_random(cout * cin * k * k, 5),
                (cout, cin, k, k),
                &dev,
            )?;
            let bias = Tensor::from_vec(pseudo_random(cout, 6), cout, &dev)?;
            map.insert("weight".to_string(), wt.clone());
            map.insert("bias".to_string(), bias.clone());
            let alpha = pseudo_random(cout, 8);
            let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
            let layer = Conv2d::load(vb, cin, cout, k, s, pad, Activation::PRelu(alpha.clone()))?;
            let x = Tensor::from_vec(pseudo_random(2 * cin * h * w, 4), (2, cin, h, w), &dev)?;
            let (p, oh, ow) = pad.pads(h, w, k, s);
            let res = Tensor::from_vec(
                pseudo_random(2 * (cout - 1) * oh * ow, 11),
                (2, cout - 1, oh, ow),
                &dev,
            )?;
            let fast = layer.forward_residual(&x, &res)?;
            let y = pad_spatial(&x, p)?
                .conv2d(&wt, 0, s, 1, 1)?
                .broadcast_add(&bias.reshape((1, cout, 1, 1))?)?;
            let y = (y + pad_channels(&res, cout)?)?;
            let a = Tensor::from_vec(alpha, (1, cout, 1, 1), &dev)?;
            let slow = (y.relu()? + y.minimum(0f32)?.broadcast_mul(&a)?)?;
            assert_eq!(fast.dims(), slow.dims());
            let diff = (fast - slow)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-5, "k={k} s={s}: max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn half_pixel_resize_matches_tensorflow() -> Result<()> {
        // tf.compat.v1.image.resize_bilinear([[0, 1], [2, 3]] -> 4x4, half_pixel_centers=True)
        let x = Tensor::from_vec(vec![0f32, 1.0, 2.0, 3.0], (1, 1, 2, 2), &Device::Cpu)?;
        let y = resize_bilinear(&x, 4, 4)?.flatten_all()?.to_vec1::<f32>()?;
        let row0 = [0.0, 0.25, 0.75, 1.0];
        let expect: Vec<f32> = (0..4)
            .flat_map(|r| {
                let dy = [0.0, 0.5, 1.5, 2.0][r];
                row0.iter().map(move |v| v + dy).collect::<Vec<_>>()
            })
            .collect();
        for (a, b) in y.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        Ok(())
    }

    #[test]
    fn small_ops_match_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(pseudo_random(2 * 3 * 6 * 8, 21), (2, 3, 6, 8), &dev)?;
        let y = Tensor::from_vec(pseudo_random(2 * 3 * 6 * 8, 22), (2, 3, 6, 8), &dev)?;
        let g = Tensor::from_vec(pseudo_random(6, 23), (2, 3, 1, 1), &dev)?;
        let max_diff = |a: Tensor, b: Tensor| -> Result<f32> {
            (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
        };
        assert_eq!(max_diff(max_pool2(&x)?, x.max_pool2d(2)?)?, 0.0);
        assert_eq!(max_diff(add(&x, &y)?, (&x + &y)?)?, 0.0);
        let expect = (x.broadcast_mul(&g)? + &y)?;
        assert_eq!(max_diff(scale_channels(&x, &g, Some(&y))?, expect)?, 0.0);
        assert!(add(&x, &g).is_err(), "shape mismatch is an error");
        Ok(())
    }

    #[test]
    fn depth_to_space_uses_dcr_order() -> Result<()> {
        // NHWC input [1,1,1,4] with values 0..4 -> output [[0,1],[2,3]] (block 2, C=1).
        let x = Tensor::from_vec(vec![0f32, 1.0, 2.0, 3.0], (1, 4, 1, 1), &Device::Cpu)?;
        let y = depth_to_space(&x, 2)?;
        assert_eq!(y.dims(), &[1, 1, 2, 2]);
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![0.0, 1.0, 2.0, 3.0]);
        Ok(())
    }
}

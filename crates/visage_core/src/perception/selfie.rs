//! Selfie segmentation (MediaPipe `selfie_segmentation.tflite`, the general 256×256 model):
//! the whole photo resized to 256×256 (aspect ratio not kept, values in `[0, 1]`) → a
//! 256×256 person-probability mask.
//!
//! Architecture: a MobileNetV3-style encoder (hard-swish, squeeze-and-excitation) to
//! 16×16, a decoder of three 2× bilinear upsampling stages, each merging an encoder skip
//! through a channel attention gate, and MediaPipe's `Convolution2DTransposeBias` (2×2,
//! stride 2) to full resolution, then a sigmoid.

use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::{GrayImage, Luma, RgbImage};

use super::ops::{
    Activation, Conv2d, DepthwiseConv2d, Padding, TransposeConv2x2, add, conv, depthwise,
    global_avg_pool, hard_swish, images_to_tensor, pointwise, resize_bilinear, scale_channels,
    sigmoid,
};
use super::roi::{Border, RotatedRect, crop};
use super::{Result, build, check_image};

/// Configuration of the selfie segmentation network.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Side of the square input (256).
    pub input_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { input_size: 256 }
    }
}

impl Config {
    /// File name of the converted weights in `assets/nets`.
    pub fn weights_file(&self) -> &'static str {
        "selfie_segmentation.safetensors"
    }
}

/// A person mask at the network's resolution, covering the whole photo.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonMask {
    /// Mask width (256).
    pub width: usize,
    /// Mask height (256).
    pub height: usize,
    /// Row-major person probabilities in `[0, 1]`.
    pub values: Vec<f32>,
    /// Size of the photo the mask covers, pixels.
    pub photo_size: (u32, u32),
}

impl PersonMask {
    /// Person probability at a photo pixel position (bilinear, clamped at the border).
    /// Mask pixel `(i, j)` covers the photo at `(j * W / 256, i * H / 256)`, MediaPipe's
    /// corner-aligned crop convention.
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let (pw, ph) = (self.photo_size.0 as f32, self.photo_size.1 as f32);
        super::bilinear(
            &self.values,
            self.width,
            self.height,
            x / pw * self.width as f32,
            y / ph * self.height as f32,
        )
    }

    /// The mask resampled to the photo's size as an 8-bit image (255 = person).
    pub fn to_photo_size(&self) -> GrayImage {
        let (w, h) = self.photo_size;
        GrayImage::from_fn(w, h, |x, y| {
            let v = self.sample(x as f32, y as f32);
            Luma([(v * 255.0).round().clamp(0.0, 255.0) as u8])
        })
    }
}

/// Squeeze-and-excitation gate: `x * sigmoid(b(relu(a(mean(x)))))`.
#[derive(Debug, Clone)]
struct SqueezeExcite {
    a: Conv2d,
    b: Conv2d,
}

impl SqueezeExcite {
    fn load(vb: &VarBuilder, a: usize, c: usize, squeeze: usize) -> candle_core::Result<Self> {
        Ok(Self {
            a: pointwise(vb, a, c, squeeze, Activation::Relu)?,
            b: pointwise(vb, a + 1, squeeze, c, Activation::Linear)?,
        })
    }

    fn gate(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        sigmoid(&self.b.forward(&self.a.forward(&global_avg_pool(x)?)?)?)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        scale_channels(x, &self.gate(x)?, None)
    }
}

/// Encoder block: expand (1×1), depthwise, optional squeeze-excite, project (1×1), optional
/// residual. `hswish` selects hard-swish instead of ReLU after expand and depthwise.
#[derive(Debug, Clone)]
struct EncoderBlock {
    expand: Conv2d,
    dw: DepthwiseConv2d,
    se: Option<SqueezeExcite>,
    project: Conv2d,
    hswish: bool,
    residual: bool,
}

impl EncoderBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // ReLU is fused into expand/dw; hard-swish runs as its own op.
        let act = |t: Tensor| -> candle_core::Result<Tensor> {
            if self.hswish { hard_swish(&t) } else { Ok(t) }
        };
        let y = act(self.expand.forward(x)?)?;
        let mut y = act(self.dw.forward(&y)?)?;
        if let Some(se) = &self.se {
            y = se.forward(&y)?;
        }
        if self.residual {
            self.project.forward_residual(&y, x)
        } else {
            self.project.forward(&y)
        }
    }
}

/// Decoder stage: upsample 2×, 1×1 conv, merge with the skip through a channel gate, then a
/// residual depthwise refinement.
#[derive(Debug, Clone)]
struct DecoderStage {
    up: Conv2d,
    gate: SqueezeExcite,
    refine: Conv2d,
    dw: DepthwiseConv2d,
}

impl DecoderStage {
    /// Loads `conv_{c}` (up), `conv_{c+1}`/`conv_{c+2}` (gate), `conv_{c+3}` and `dw_{d}`.
    fn load(
        vb: &VarBuilder,
        c: usize,
        d: usize,
        cin: usize,
        cout: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            up: pointwise(vb, c, cin, cout, Activation::Linear)?,
            gate: SqueezeExcite::load(vb, c + 1, cout, cout)?,
            refine: pointwise(vb, c + 3, cout, cout, Activation::Relu)?,
            dw: depthwise(vb, d, cout, 3, 1, Padding::Same, Activation::Relu)?,
        })
    }

    fn forward(&self, x: &Tensor, skip: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let up = self.up.forward(&resize_bilinear(x, 2 * h, 2 * w)?)?;
        let g = self.gate.gate(&add(skip, &up)?)?;
        let m = scale_channels(skip, &g, Some(&up))?;
        let r = self.refine.forward(&m)?;
        add(&r, &self.dw.forward(&r)?)
    }
}

/// The selfie segmentation network.
#[derive(Debug, Clone)]
pub struct Model {
    stem: Conv2d,
    encoder: Vec<EncoderBlock>,
    context: Conv2d,
    context_gate: Conv2d,
    decoder: [DecoderStage; 3],
    out: TransposeConv2x2,
    cfg: Config,
}

impl Model {
    /// Builds the network from converted weights (see `tools/convert_tflite.py`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let vb = &vb;
        // (expand, dw, kernel, stride, in, mid, out, squeeze-excite (conv, width), hswish, residual)
        type Spec = (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            Option<(usize, usize)>,
            bool,
            bool,
        );
        let spec: [Spec; 8] = [
            (1, 0, 3, 2, 16, 16, 16, Some((2, 8)), false, false),
            (5, 1, 3, 2, 16, 72, 24, None, false, false),
            (7, 2, 3, 1, 24, 88, 24, None, false, true),
            (9, 3, 5, 2, 24, 96, 32, Some((10, 24)), true, false),
            (13, 4, 5, 1, 32, 128, 32, Some((14, 32)), true, true),
            (17, 5, 5, 1, 32, 128, 32, Some((18, 32)), true, true),
            (21, 6, 5, 1, 32, 96, 32, Some((22, 24)), true, true),
            (25, 7, 5, 1, 32, 96, 32, Some((26, 24)), true, true),
        ];
        let encoder = spec
            .iter()
            .map(|&(e, d, k, s, cin, mid, cout, se, hswish, residual)| {
                let project = if se.is_some() { e + 3 } else { e + 1 };
                let act = if hswish {
                    Activation::Linear
                } else {
                    Activation::Relu
                };
                Ok(EncoderBlock {
                    expand: pointwise(vb, e, cin, mid, act.clone())?,
                    dw: depthwise(vb, d, mid, k, s, Padding::Same, act)?,
                    se: se
                        .map(|(a, w)| SqueezeExcite::load(vb, a, mid, w))
                        .transpose()?,
                    project: pointwise(vb, project, mid, cout, Activation::Linear)?,
                    hswish,
                    residual,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            stem: conv(vb, 0, 3, 16, 3, 2, Padding::Same, Activation::Linear)?,
            encoder,
            context: pointwise(vb, 29, 32, 128, Activation::Relu)?,
            context_gate: pointwise(vb, 30, 32, 128, Activation::Linear)?,
            decoder: [
                DecoderStage::load(vb, 31, 8, 128, 24)?,
                DecoderStage::load(vb, 35, 9, 24, 16)?,
                DecoderStage::load(vb, 39, 10, 16, 16)?,
            ],
            out: TransposeConv2x2::load(vb.pp("deconv_0"), 16, 1)?,
            cfg: cfg.clone(),
        })
    }

    /// Loads `<dir>/selfie_segmentation.safetensors`.
    pub fn from_dir(dir: &Path, cfg: &Config) -> Result<Self> {
        build(&dir.join(cfg.weights_file()), |vb| Self::load(vb, cfg))
    }

    /// Person probabilities `[N, 1, 256, 256]` for inputs `[N, 3, 256, 256]` in `[0, 1]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let s0 = hard_swish(&self.stem.forward(x)?)?;
        let mut x = s0.clone();
        let mut skips = Vec::new();
        for (i, b) in self.encoder.iter().enumerate() {
            x = b.forward(&x)?;
            if i == 0 || i == 2 {
                skips.push(x.clone());
            }
        }
        let g = sigmoid(&self.context_gate.forward(&global_avg_pool(&x)?)?)?;
        let mut y = scale_channels(&self.context.forward(&x)?, &g, None)?;
        y = self.decoder[0].forward(&y, &skips[1])?;
        y = self.decoder[1].forward(&y, &skips[0])?;
        y = self.decoder[2].forward(&y, &s0)?;
        sigmoid(&self.out.forward(&y)?)
    }

    /// The person mask of a photo.
    pub fn segment(&self, photo: &RgbImage) -> Result<PersonMask> {
        check_image(photo)?;
        let s = self.cfg.input_size;
        let (w, h) = photo.dimensions();
        let rect = RotatedRect {
            cx: 0.5 * w as f32,
            cy: 0.5 * h as f32,
            width: w as f32,
            height: h as f32,
            rotation: 0.0,
        };
        let input = crop(photo, &rect, s as u32, s as u32, Border::Zero, false);
        let x = images_to_tensor(&[&input.image], (0.0, 1.0), &Device::Cpu)?;
        let values = self.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(PersonMask {
            width: s,
            height: s,
            values,
            photo_size: (w, h),
        })
    }
}

//! BlazeFace face detectors (MediaPipe `face_detection_short_range` and
//! `face_detection_full_range_sparse`).
//!
//! Both take the whole photo letterboxed into a square (zero border), values in `[-1, 1]`,
//! and regress, per SSD anchor, a box and six keypoints:
//! 0 right eye, 1 left eye (the subject's; so 0 is on the left of a frontal photo),
//! 2 nose tip, 3 mouth centre, 4 right ear tragion, 5 left ear tragion.
//!
//! - Short range (128×128, faces within ~2 m): a BlazeBlock backbone (depthwise 3×3 +
//!   pointwise, residual with max-pool and channel padding when the stride is 2, ReLU);
//!   heads on the 16×16 (2 anchors per cell) and 8×8 (6 per cell) feature maps, 896 anchors.
//! - Full range (192×192, faces up to ~5 m): bottleneck residual blocks with an FPN-like
//!   top-down path; one 48×48 head (via a stride-2 depthwise conv and depth-to-space),
//!   2304 anchors.
//!
//! Post-processing follows MediaPipe's `face_detection.pbtxt`: sigmoid scores clipped at
//! ±100, threshold 0.5 (short) / 0.6 (full), weighted NMS at IoU 0.3, projection from the
//! letterboxed input back to photo pixels.

use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::detection::{
    AnchorOptions, DecodeOptions, RawDetection, decode, generate_anchors, weighted_nms,
};
use super::ops::{
    Activation, Conv2d, DepthwiseConv2d, Padding, add, conv, depth_to_space, depthwise,
    head_to_anchors, images_to_tensor, max_pool2, pointwise,
};
use super::roi::{Border, RotatedRect, crop};
use super::{Result, build, check_image};

/// Which BlazeFace model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `face_detection_short_range` (128×128 input, 896 anchors).
    ShortRange,
    /// `face_detection_full_range_sparse` (192×192 input, 2304 anchors).
    FullRange,
}

/// Configuration of a BlazeFace detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Which model.
    pub variant: Variant,
    /// Detections below this score are dropped (MediaPipe: 0.5 short, 0.6 full range).
    pub min_score: f32,
    /// IoU above which detections are merged by weighted NMS (MediaPipe: 0.3).
    pub nms_iou: f32,
}

impl Config {
    /// MediaPipe's settings for the short-range model.
    pub fn short_range() -> Self {
        Self {
            variant: Variant::ShortRange,
            min_score: 0.5,
            nms_iou: 0.3,
        }
    }

    /// MediaPipe's settings for the full-range model.
    pub fn full_range() -> Self {
        Self {
            variant: Variant::FullRange,
            min_score: 0.6,
            nms_iou: 0.3,
        }
    }

    /// Side of the square network input, pixels.
    pub fn input_size(&self) -> usize {
        match self.variant {
            Variant::ShortRange => 128,
            Variant::FullRange => 192,
        }
    }

    /// File name of the converted weights in `assets/nets`.
    pub fn weights_file(&self) -> &'static str {
        match self.variant {
            Variant::ShortRange => "face_detection_short_range.safetensors",
            Variant::FullRange => "face_detection_full_range.safetensors",
        }
    }

    /// MediaPipe's SSD anchor options for this model.
    pub fn anchor_options(&self) -> AnchorOptions {
        let size = self.input_size();
        let (strides, interpolated) = match self.variant {
            Variant::ShortRange => (vec![8, 16, 16, 16], 1.0),
            Variant::FullRange => (vec![4], 0.0),
        };
        AnchorOptions {
            input_size_width: size,
            input_size_height: size,
            min_scale: 0.1484375,
            max_scale: 0.75,
            anchor_offset_x: 0.5,
            anchor_offset_y: 0.5,
            strides,
            aspect_ratios: vec![1.0],
            interpolated_scale_aspect_ratio: interpolated,
            fixed_anchor_size: true,
        }
    }

    fn decode_options(&self) -> DecodeOptions {
        DecodeOptions::square(self.input_size(), 6, self.min_score)
    }
}

/// One detected face in photo pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceDetection {
    /// `[xmin, ymin, xmax, ymax]`, pixels.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, mouth centre, right ear, left ear (the subject's sides),
    /// pixels.
    pub keypoints: [[f32; 2]; 6],
    /// Detection score in `[0, 1]`.
    pub score: f32,
}

impl FaceDetection {
    /// Box area in square pixels.
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// A BlazeBlock of the short-range backbone.
#[derive(Debug, Clone)]
struct BlazeBlock {
    dw: DepthwiseConv2d,
    /// Pointwise conv with the residual add and ReLU fused.
    pw: Conv2d,
    stride: usize,
}

impl BlazeBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let r = if self.stride == 2 {
            max_pool2(x)?
        } else {
            x.clone()
        };
        self.pw.forward_residual(&self.dw.forward(x)?, &r)
    }
}

/// A block of the full-range backbone: two depthwise/pointwise pairs with a bottleneck,
/// ReLU after each pointwise conv. With `residual` the input is added before the final ReLU
/// (the stride-2 blocks have none).
#[derive(Debug, Clone)]
struct Bottleneck {
    dw1: DepthwiseConv2d,
    pw1: Conv2d,
    dw2: DepthwiseConv2d,
    pw2: Conv2d,
    residual: bool,
}

impl Bottleneck {
    /// Loads `dw_{dw}`, `conv_{pw}`, `dw_{dw+1}`, `conv_{pw+1}`.
    fn load(
        vb: &VarBuilder,
        dw: usize,
        pw: usize,
        cin: usize,
        mid: usize,
        cout: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        let pad = Padding::Symmetric(1);
        Ok(Self {
            dw1: depthwise(vb, dw, cin, 3, stride, pad, Activation::Linear)?,
            pw1: pointwise(vb, pw, cin, mid, Activation::Relu)?,
            dw2: depthwise(vb, dw + 1, mid, 3, 1, pad, Activation::Linear)?,
            pw2: pointwise(vb, pw + 1, mid, cout, Activation::Relu)?,
            residual: stride == 1,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.pw1.forward(&self.dw1.forward(x)?)?;
        let y = self.dw2.forward(&y)?;
        if self.residual {
            self.pw2.forward_residual(&y, x)
        } else {
            self.pw2.forward(&y)
        }
    }
}

#[derive(Debug, Clone)]
struct ShortRange {
    stem: Conv2d,
    blocks: Vec<BlazeBlock>,
    cls8: Conv2d,
    cls16: Conv2d,
    reg8: Conv2d,
    reg16: Conv2d,
}

impl ShortRange {
    fn load(vb: &VarBuilder) -> candle_core::Result<Self> {
        let stem = conv(vb, 0, 3, 24, 5, 2, Padding::Same, Activation::Relu)?;
        let spec: [(usize, usize, usize); 16] = [
            (24, 24, 1),
            (24, 28, 1),
            (28, 32, 2),
            (32, 36, 1),
            (36, 42, 1),
            (42, 48, 2),
            (48, 56, 1),
            (56, 64, 1),
            (64, 72, 1),
            (72, 80, 1),
            (80, 88, 1),
            (88, 96, 2),
            (96, 96, 1),
            (96, 96, 1),
            (96, 96, 1),
            (96, 96, 1),
        ];
        let blocks = spec
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, stride))| {
                Ok(BlazeBlock {
                    dw: depthwise(vb, i, cin, 3, stride, Padding::Same, Activation::Linear)?,
                    pw: pointwise(vb, i + 1, cin, cout, Activation::Relu)?,
                    stride,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            stem,
            blocks,
            cls8: pointwise(vb, 17, 88, 2, Activation::Linear)?,
            cls16: pointwise(vb, 18, 96, 6, Activation::Linear)?,
            reg8: pointwise(vb, 19, 88, 32, Activation::Linear)?,
            reg16: pointwise(vb, 20, 96, 96, Activation::Linear)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = self.stem.forward(x)?;
        let mut f16 = None;
        for (i, b) in self.blocks.iter().enumerate() {
            x = b.forward(&x)?;
            if i == 10 {
                f16 = Some(x.clone());
            }
        }
        let f16 = f16.expect("the backbone has more than 11 blocks");
        let cls = Tensor::cat(
            &[
                head_to_anchors(&self.cls8.forward(&f16)?, 1)?,
                head_to_anchors(&self.cls16.forward(&x)?, 1)?,
            ],
            1,
        )?;
        let reg = Tensor::cat(
            &[
                head_to_anchors(&self.reg8.forward(&f16)?, 16)?,
                head_to_anchors(&self.reg16.forward(&x)?, 16)?,
            ],
            1,
        )?;
        Ok((reg, cls.squeeze(2)?))
    }
}

#[derive(Debug, Clone)]
struct FullRange {
    stem: Conv2d,
    /// Backbone stages at 96, 48, 24, 12 and 6 pixels.
    stages: Vec<Vec<Bottleneck>>,
    /// Lateral 1×1 convs taken at the 48, 24 and 12 pixel stages.
    lateral: [Conv2d; 3],
    /// Top-down path: 1×1 conv before each 2× upsampling, at 6, 12 and 24 pixels.
    up: [Conv2d; 3],
    /// Blocks after each merge, at 12, 24 and 48 pixels.
    merged: [Vec<Bottleneck>; 3],
    cls: (Conv2d, DepthwiseConv2d),
    reg: (Conv2d, DepthwiseConv2d),
}

impl FullRange {
    fn load(vb: &VarBuilder) -> candle_core::Result<Self> {
        let stem = conv(vb, 0, 3, 32, 3, 2, Padding::Symmetric(1), Activation::Relu)?;
        let b = |dw, pw, cin, mid, cout, s| Bottleneck::load(vb, dw, pw, cin, mid, cout, s);
        let stages = vec![
            vec![b(0, 1, 32, 8, 32, 1)?, b(2, 3, 32, 8, 32, 1)?],
            vec![
                b(4, 5, 32, 16, 64, 2)?,
                b(6, 7, 64, 16, 64, 1)?,
                b(8, 9, 64, 16, 64, 1)?,
            ],
            vec![
                b(10, 12, 64, 32, 128, 2)?,
                b(12, 14, 128, 32, 128, 1)?,
                b(14, 16, 128, 32, 128, 1)?,
            ],
            vec![
                b(16, 19, 128, 48, 192, 2)?,
                b(18, 21, 192, 48, 192, 1)?,
                b(20, 23, 192, 48, 192, 1)?,
            ],
            vec![
                b(22, 26, 192, 96, 384, 2)?,
                b(24, 28, 384, 96, 384, 1)?,
                b(26, 30, 384, 96, 384, 1)?,
                b(28, 32, 384, 96, 384, 1)?,
            ],
        ];
        let lateral = [
            pointwise(vb, 11, 64, 48, Activation::Relu)?,
            pointwise(vb, 18, 128, 64, Activation::Relu)?,
            pointwise(vb, 25, 192, 96, Activation::Relu)?,
        ];
        let up = [
            pointwise(vb, 34, 384, 96, Activation::Relu)?,
            pointwise(vb, 39, 96, 64, Activation::Relu)?,
            pointwise(vb, 44, 64, 48, Activation::Relu)?,
        ];
        let merged = [
            vec![b(30, 35, 96, 48, 96, 1)?, b(32, 37, 96, 48, 96, 1)?],
            vec![b(34, 40, 64, 32, 64, 1)?, b(36, 42, 64, 32, 64, 1)?],
            vec![b(38, 45, 48, 24, 48, 1)?],
        ];
        let head = |pw, dw, cout| -> candle_core::Result<(Conv2d, DepthwiseConv2d)> {
            Ok((
                conv(vb, pw, 48, cout, 1, 1, Padding::Same, Activation::Linear)?,
                depthwise(
                    vb,
                    dw,
                    cout,
                    3,
                    2,
                    Padding::Symmetric(1),
                    Activation::Linear,
                )?,
            ))
        };
        Ok(Self {
            stem,
            stages,
            lateral,
            up,
            merged,
            cls: head(47, 40, 4)?,
            reg: head(48, 41, 64)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = self.stem.forward(x)?;
        let mut skips = Vec::new();
        for (i, stage) in self.stages.iter().enumerate() {
            for b in stage {
                x = b.forward(&x)?;
            }
            if (1..=3).contains(&i) {
                skips.push(self.lateral[i - 1].forward(&x)?);
            }
        }
        for (k, blocks) in self.merged.iter().enumerate() {
            let y = self.up[k].forward(&x)?;
            let (_, _, h, w) = y.dims4()?;
            let y = super::ops::resize_bilinear(&y, 2 * h, 2 * w)?;
            x = add(&y, &skips[2 - k])?;
            for b in blocks {
                x = b.forward(&x)?;
            }
        }
        let head = |(pw, dw): &(Conv2d, DepthwiseConv2d), k| -> candle_core::Result<Tensor> {
            let y = dw.forward(&pw.forward(&x)?)?;
            head_to_anchors(&depth_to_space(&y, 2)?, k)
        };
        let cls = head(&self.cls, 1)?;
        let reg = head(&self.reg, 16)?;
        Ok((reg, cls.squeeze(2)?))
    }
}

#[derive(Debug, Clone)]
enum Net {
    Short(Box<ShortRange>),
    Full(Box<FullRange>),
}

/// A BlazeFace network with its anchors and post-processing.
#[derive(Debug, Clone)]
pub struct Model {
    net: Net,
    cfg: Config,
    anchors: Vec<super::detection::Anchor>,
}

impl Model {
    /// Builds the network from converted weights (`conv_*`, `dw_*` names; see
    /// `tools/convert_tflite.py`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let net = match cfg.variant {
            Variant::ShortRange => Net::Short(Box::new(ShortRange::load(&vb)?)),
            Variant::FullRange => Net::Full(Box::new(FullRange::load(&vb)?)),
        };
        Ok(Self {
            net,
            cfg: cfg.clone(),
            anchors: generate_anchors(&cfg.anchor_options()),
        })
    }

    /// Loads `<dir>/<cfg.weights_file()>`.
    pub fn from_dir(dir: &Path, cfg: &Config) -> Result<Self> {
        build(&dir.join(cfg.weights_file()), |vb| Self::load(vb, cfg))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Raw network outputs for a batch `[N, 3, S, S]` of inputs in `[-1, 1]`:
    /// regressors `[N, anchors, 16]` and score logits `[N, anchors]`, in TFLite's anchor order.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        match &self.net {
            Net::Short(n) => n.forward(x),
            Net::Full(n) => n.forward(x),
        }
    }

    /// Decodes raw outputs of one image into detections normalised to the network input,
    /// after score threshold and weighted NMS.
    pub fn postprocess(&self, regressors: &[f32], logits: &[f32]) -> Vec<RawDetection> {
        let dets = decode(
            regressors,
            logits,
            &self.anchors,
            &self.cfg.decode_options(),
        );
        weighted_nms(dets, self.cfg.nms_iou)
    }

    /// Detects faces in a photo: letterbox into the square input, run, decode, NMS, and map
    /// back to photo pixels. Sorted by score, best first.
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<FaceDetection>> {
        check_image(photo)?;
        let size = self.cfg.input_size();
        let rect = RotatedRect::letterbox(photo.width(), photo.height(), size, size);
        let input = crop(photo, &rect, size as u32, size as u32, Border::Zero, false);
        let x = images_to_tensor(&[&input.image], (-1.0, 1.0), &Device::Cpu)?;
        let (reg, cls) = self.forward(&x)?;
        let reg = reg.flatten_all()?.to_vec1::<f32>()?;
        let cls = cls.flatten_all()?.to_vec1::<f32>()?;
        let dets = self.postprocess(&reg, &cls);
        Ok(dets
            .into_iter()
            .map(|d| {
                let (bbox, keypoints) = d.to_photo(&rect);
                FaceDetection {
                    bbox,
                    keypoints,
                    score: d.score,
                }
            })
            .collect())
    }
}

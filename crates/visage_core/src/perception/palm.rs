//! Palm detection (MediaPipe `palm_detection_lite.tflite`): the whole photo letterboxed into
//! 192×192 (zero border, values in `[0, 1]`) → palm boxes with 7 keypoints:
//! 0 wrist centre, 1 index-finger MCP, 2 middle-finger MCP, 3 ring-finger MCP,
//! 4 pinky MCP, 5 thumb CMC, 6 thumb MCP.
//!
//! Architecture: BlazeBlocks with 5×5 depthwise convolutions and PReLU down to 6×6, then a
//! two-level top-down path (bilinear 2× upsampling, 1×1 conv, PReLU, skip addition) with SSD
//! heads at 12×12 (6 anchors per cell) and 24×24 (2 per cell), 2016 anchors in all.
//! Post-processing as MediaPipe's `palm_detection_cpu.pbtxt`: score threshold 0.5, weighted
//! NMS at IoU 0.3.

use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::detection::{
    Anchor, AnchorOptions, DecodeOptions, RawDetection, decode, generate_anchors, weighted_nms,
};
use super::face_mesh::PReluBlock;
use super::ops::{
    Activation, Conv2d, Padding, add, conv, head_to_anchors, images_to_tensor, pointwise, prelu,
    resize_bilinear,
};
use super::roi::{Border, RotatedRect, crop};
use super::{Result, build, check_image};

/// Configuration of the palm detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Side of the square input (192).
    pub input_size: usize,
    /// Detections below this score are dropped (MediaPipe: 0.5).
    pub min_score: f32,
    /// IoU above which detections are merged (MediaPipe: 0.3).
    pub nms_iou: f32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            input_size: 192,
            min_score: 0.5,
            nms_iou: 0.3,
        }
    }
}

impl Config {
    /// File name of the converted weights in `assets/nets`.
    pub fn weights_file(&self) -> &'static str {
        "palm_detection_lite.safetensors"
    }

    /// MediaPipe's anchor options for the palm model.
    pub fn anchor_options(&self) -> AnchorOptions {
        AnchorOptions {
            input_size_width: self.input_size,
            input_size_height: self.input_size,
            min_scale: 0.1484375,
            max_scale: 0.75,
            anchor_offset_x: 0.5,
            anchor_offset_y: 0.5,
            strides: vec![8, 16, 16, 16],
            aspect_ratios: vec![1.0],
            interpolated_scale_aspect_ratio: 1.0,
            fixed_anchor_size: true,
        }
    }

    fn decode_options(&self) -> DecodeOptions {
        DecodeOptions::square(self.input_size, 7, self.min_score)
    }
}

/// One detected palm in photo pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct PalmDetection {
    /// `[xmin, ymin, xmax, ymax]`, pixels.
    pub bbox: [f32; 4],
    /// Wrist, index/middle/ring/pinky MCPs, thumb CMC, thumb MCP; pixels.
    pub keypoints: [[f32; 2]; 7],
    /// Detection score in `[0, 1]`.
    pub score: f32,
}

/// The hand-landmark crop MediaPipe derives from a palm (`PalmDetectionDetectionToRoi`):
/// rotation so the wrist → middle-MCP vector points up, shifted half a box towards the
/// fingers, square on the long side, scale 2.6.
pub fn hand_roi(palm: &PalmDetection) -> RotatedRect {
    RotatedRect::from_box_and_keypoints(
        palm.bbox,
        palm.keypoints[0],
        palm.keypoints[2],
        std::f32::consts::FRAC_PI_2,
        2.6,
        [0.0, -0.5],
    )
}

/// The palm detection network with its anchors.
#[derive(Debug, Clone)]
pub struct Model {
    stem: Conv2d,
    backbone: Vec<PReluBlock>,
    /// 1×1 conv + PReLU after the upsampling (the skip is added after the PReLU).
    up12: Conv2d,
    blocks12: Vec<PReluBlock>,
    up24: Conv2d,
    blocks24: Vec<PReluBlock>,
    cls12: Conv2d,
    reg12: Conv2d,
    cls24: Conv2d,
    reg24: Conv2d,
    anchors: Vec<Anchor>,
    cfg: Config,
}

impl Model {
    /// Builds the network from converted weights (see `tools/convert_tflite.py`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let vb = &vb;
        // (in, out, stride) of dw_i / conv_{i+1} / prelu_{i+1}.
        let spec: [(usize, usize, usize); 19] = [
            (32, 32, 1),
            (32, 32, 1),
            (32, 32, 1),
            (32, 64, 2),
            (64, 64, 1),
            (64, 64, 1),
            (64, 64, 1),
            (64, 128, 2),
            (128, 128, 1),
            (128, 128, 1),
            (128, 128, 1),
            (128, 256, 2),
            (256, 256, 1),
            (256, 256, 1),
            (256, 256, 1),
            (256, 256, 2),
            (256, 256, 1),
            (256, 256, 1),
            (256, 256, 1),
        ];
        let backbone = spec
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, s))| PReluBlock::load(vb, i, i + 1, i + 1, cin, cout, 5, s))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let same =
            |idx, cin, cout| conv(vb, idx, cin, cout, 1, 1, Padding::Same, Activation::Linear);
        Ok(Self {
            stem: conv(vb, 0, 3, 32, 5, 2, Padding::Same, prelu(vb, 0, 32)?)?,
            backbone,
            up12: pointwise(vb, 20, 256, 256, prelu(vb, 20, 256)?)?,
            blocks12: vec![
                PReluBlock::load(vb, 19, 21, 21, 256, 256, 5, 1)?,
                PReluBlock::load(vb, 20, 22, 22, 256, 256, 5, 1)?,
            ],
            up24: pointwise(vb, 25, 256, 128, prelu(vb, 23, 128)?)?,
            blocks24: vec![
                PReluBlock::load(vb, 21, 26, 24, 128, 128, 5, 1)?,
                PReluBlock::load(vb, 22, 27, 25, 128, 128, 5, 1)?,
            ],
            cls12: same(23, 256, 6)?,
            reg12: same(24, 256, 108)?,
            cls24: same(28, 128, 2)?,
            reg24: same(29, 128, 36)?,
            anchors: generate_anchors(&cfg.anchor_options()),
            cfg: cfg.clone(),
        })
    }

    /// Loads `<dir>/palm_detection_lite.safetensors`.
    pub fn from_dir(dir: &Path, cfg: &Config) -> Result<Self> {
        build(&dir.join(cfg.weights_file()), |vb| Self::load(vb, cfg))
    }

    /// Raw outputs for `[N, 3, 192, 192]` in `[0, 1]`: regressors `[N, 2016, 18]` and score
    /// logits `[N, 2016]`, TFLite's anchor order (24×24 grid first).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = self.stem.forward(x)?;
        let mut skip24 = None;
        let mut skip12 = None;
        for (i, b) in self.backbone.iter().enumerate() {
            x = b.forward(&x)?;
            match i {
                10 => skip24 = Some(x.clone()),
                14 => skip12 = Some(x.clone()),
                _ => {}
            }
        }
        let (skip24, skip12) = (
            skip24.expect("backbone has 19 blocks"),
            skip12.expect("backbone has 19 blocks"),
        );
        let up = resize_bilinear(&x, 12, 12)?;
        let mut y = add(&self.up12.forward(&up)?, &skip12)?;
        for b in &self.blocks12 {
            y = b.forward(&y)?;
        }
        let up = resize_bilinear(&y, 24, 24)?;
        let mut z = add(&self.up24.forward(&up)?, &skip24)?;
        for b in &self.blocks24 {
            z = b.forward(&z)?;
        }
        let cls = Tensor::cat(
            &[
                head_to_anchors(&self.cls24.forward(&z)?, 1)?,
                head_to_anchors(&self.cls12.forward(&y)?, 1)?,
            ],
            1,
        )?;
        let reg = Tensor::cat(
            &[
                head_to_anchors(&self.reg24.forward(&z)?, 18)?,
                head_to_anchors(&self.reg12.forward(&y)?, 18)?,
            ],
            1,
        )?;
        Ok((reg, cls.squeeze(2)?))
    }

    /// Decodes raw outputs of one image (coordinates normalised to the input), score
    /// threshold and weighted NMS.
    pub fn postprocess(&self, regressors: &[f32], logits: &[f32]) -> Vec<RawDetection> {
        self.postprocess_with(regressors, logits, self.cfg.min_score)
    }

    fn postprocess_with(
        &self,
        regressors: &[f32],
        logits: &[f32],
        min_score: f32,
    ) -> Vec<RawDetection> {
        let mut options = self.cfg.decode_options();
        options.min_score_thresh = min_score;
        let dets = decode(regressors, logits, &self.anchors, &options);
        weighted_nms(dets, self.cfg.nms_iou)
    }

    /// Detects palms in a photo, best first, in photo pixels.
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<PalmDetection>> {
        self.detect_with(photo, self.cfg.min_score)
    }

    /// [`Model::detect`] with another score threshold than the configuration's.
    ///
    /// A lower threshold also changes the boxes of strong palms (weighted NMS averages in the
    /// weaker overlapping detections); [`Model::detect_extra`] keeps them as they are.
    pub fn detect_with(&self, photo: &RgbImage, min_score: f32) -> Result<Vec<PalmDetection>> {
        Ok(self.detect_thresholds(photo, &[min_score])?.remove(0))
    }

    /// The palms at the configuration's threshold, best first, followed by the weaker palms
    /// (score ≥ `extra_min_score`) that do not overlap them (IoU < the NMS threshold): one
    /// network run.
    pub fn detect_extra(
        &self,
        photo: &RgbImage,
        extra_min_score: f32,
    ) -> Result<Vec<PalmDetection>> {
        let mut sets = self.detect_thresholds(photo, &[self.cfg.min_score, extra_min_score])?;
        let weak = sets.pop().unwrap_or_default();
        let mut palms = sets.pop().unwrap_or_default();
        for w in weak {
            if palms
                .iter()
                .all(|p| super::detection::iou(&p.bbox, &w.bbox) < self.cfg.nms_iou)
            {
                palms.push(w);
            }
        }
        Ok(palms)
    }

    /// Detections at each threshold from one network run.
    fn detect_thresholds(
        &self,
        photo: &RgbImage,
        thresholds: &[f32],
    ) -> Result<Vec<Vec<PalmDetection>>> {
        check_image(photo)?;
        let s = self.cfg.input_size;
        let rect = RotatedRect::letterbox(photo.width(), photo.height(), s, s);
        let input = crop(photo, &rect, s as u32, s as u32, Border::Zero, false);
        let x = images_to_tensor(&[&input.image], (0.0, 1.0), &Device::Cpu)?;
        let (reg, cls) = self.forward(&x)?;
        let reg = reg.flatten_all()?.to_vec1::<f32>()?;
        let cls = cls.flatten_all()?.to_vec1::<f32>()?;
        Ok(thresholds
            .iter()
            .map(|&t| {
                self.postprocess_with(&reg, &cls, t)
                    .into_iter()
                    .map(|d| {
                        let (bbox, keypoints) = d.to_photo(&rect);
                        PalmDetection {
                            bbox,
                            keypoints,
                            score: d.score,
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

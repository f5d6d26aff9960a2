//! FaceMesh (MediaPipe `face_landmark.tflite`): 468 3-D landmarks and a face-presence score
//! from a 192×192 face crop with values in `[0, 1]`.
//!
//! The crop is the rotated square MediaPipe derives from a BlazeFace detection
//! ([`roi_from_detection`]): centred on the detection box, rotated so the eye keypoints are
//! level, side 1.5 × the box's long side, replicated border. Landmark x/y come out in crop
//! pixels (0..192) and z in the same units (relative depth, smaller is closer to the camera).
//!
//! Architecture: a BlazeBlock backbone with PReLU activations down to 6×6×128, then two
//! branches to 3×3: one ends in a 3×3 convolution to 1404 values (468 × xyz), the other in a
//! 3×3 convolution to the face logit.

use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::blazeface::FaceDetection;
use super::ops::{
    Activation, Conv2d, DepthwiseConv2d, Padding, conv, depthwise, max_pool2, pointwise, prelu,
    sigmoid_f32,
};
use super::roi::{Crop, RotatedRect, crop_batch};
use super::{Result, build, check_image};

/// Number of landmarks.
pub const NUM_LANDMARKS: usize = 468;

/// Configuration of the FaceMesh network.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Side of the square input, pixels (192).
    pub input_size: usize,
    /// Scale of the crop relative to the detection box's long side (MediaPipe: 1.5).
    pub roi_scale: f32,
    /// Faces whose presence score is below this are reported as absent (MediaPipe: 0.5).
    pub min_presence: f32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            input_size: 192,
            roi_scale: 1.5,
            min_presence: 0.5,
        }
    }
}

impl Config {
    /// File name of the converted weights in `assets/nets`.
    pub fn weights_file(&self) -> &'static str {
        "face_landmark.safetensors"
    }
}

/// The landmark crop MediaPipe derives from a face detection: rotation from the right-eye →
/// left-eye keypoints (target angle 0), square on the box's long side, scaled by `scale`.
pub fn roi_from_detection(det: &FaceDetection, scale: f32) -> RotatedRect {
    RotatedRect::from_box_and_keypoints(
        det.bbox,
        det.keypoints[0],
        det.keypoints[1],
        0.0,
        scale,
        [0.0, 0.0],
    )
}

/// The crop for the next frame, from landmarks (MediaPipe's `FaceLandmarkLandmarksToRoi`):
/// box of all landmarks, rotation from landmark 33 to 263, scale 1.5. Useful for video or to
/// refine a crop.
pub fn roi_from_landmarks(points: &[[f32; 3]], scale: f32) -> RotatedRect {
    let mut bbox = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
    for p in points {
        bbox[0] = bbox[0].min(p[0]);
        bbox[1] = bbox[1].min(p[1]);
        bbox[2] = bbox[2].max(p[0]);
        bbox[3] = bbox[3].max(p[1]);
    }
    let a = [points[33][0], points[33][1]];
    let b = [points[263][0], points[263][1]];
    RotatedRect::from_box_and_keypoints(bbox, a, b, 0.0, scale, [0.0, 0.0])
}

/// Landmarks of one face.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceLandmarks {
    /// 468 points `[x, y, z]` in photo pixels (z: relative depth in the same scale as x,
    /// negative towards the camera).
    pub points: Vec<[f32; 3]>,
    /// Face presence probability in `[0, 1]`.
    pub presence: f32,
    /// The crop the network saw.
    pub crop: Crop,
}

/// A BlazeBlock with PReLU: `prelu(pw(dw(x)) + residual)`, the residual max-pooled when the
/// stride is 2 and zero-padded to the output channels.
#[derive(Debug, Clone)]
pub(crate) struct PReluBlock {
    dw: DepthwiseConv2d,
    /// Pointwise conv with the residual add and PReLU fused.
    pw: Conv2d,
    stride: usize,
}

impl PReluBlock {
    /// Loads `dw_{dw}`, `conv_{pw}`, `prelu_{pr}`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        vb: &VarBuilder,
        dw: usize,
        pw: usize,
        pr: usize,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            dw: depthwise(
                vb,
                dw,
                cin,
                kernel,
                stride,
                Padding::Same,
                Activation::Linear,
            )?,
            pw: pointwise(vb, pw, cin, cout, prelu(vb, pr, cout)?)?,
            stride,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let r = if self.stride == 2 {
            max_pool2(x)?
        } else {
            x.clone()
        };
        self.pw.forward_residual(&self.dw.forward(x)?, &r)
    }
}

/// The FaceMesh network.
#[derive(Debug, Clone)]
pub struct Model {
    stem: Conv2d,
    backbone: Vec<PReluBlock>,
    mesh: Vec<PReluBlock>,
    mesh_reduce: Conv2d,
    mesh_tail: PReluBlock,
    mesh_out: Conv2d,
    flag: PReluBlock,
    flag_reduce: Conv2d,
    flag_tail: PReluBlock,
    flag_out: Conv2d,
    cfg: Config,
}

impl Model {
    /// Builds the network from converted weights (see `tools/convert_tflite.py`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let vb = &vb;
        let spec: [(usize, usize, usize); 14] = [
            (16, 16, 1),
            (16, 16, 1),
            (16, 32, 2),
            (32, 32, 1),
            (32, 32, 1),
            (32, 64, 2),
            (64, 64, 1),
            (64, 64, 1),
            (64, 128, 2),
            (128, 128, 1),
            (128, 128, 1),
            (128, 128, 2),
            (128, 128, 1),
            (128, 128, 1),
        ];
        let backbone = spec
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, s))| PReluBlock::load(vb, i, i + 1, i + 1, cin, cout, 3, s))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            stem: conv(vb, 0, 3, 16, 3, 2, Padding::Same, prelu(vb, 0, 16)?)?,
            backbone,
            // Landmark branch (6x6 -> 3x3).
            mesh: vec![
                PReluBlock::load(vb, 14, 15, 15, 128, 128, 3, 2)?,
                PReluBlock::load(vb, 15, 16, 16, 128, 128, 3, 1)?,
                PReluBlock::load(vb, 17, 18, 18, 128, 128, 3, 1)?,
            ],
            mesh_reduce: pointwise(vb, 20, 128, 32, prelu(vb, 20, 32)?)?,
            mesh_tail: PReluBlock::load(vb, 19, 22, 22, 32, 32, 3, 1)?,
            mesh_out: conv(vb, 24, 32, 1404, 3, 3, Padding::Valid, Activation::Linear)?,
            // Face-presence branch.
            flag: PReluBlock::load(vb, 16, 17, 17, 128, 128, 3, 2)?,
            flag_reduce: pointwise(vb, 19, 128, 32, prelu(vb, 19, 32)?)?,
            flag_tail: PReluBlock::load(vb, 18, 21, 21, 32, 32, 3, 1)?,
            flag_out: conv(vb, 23, 32, 1, 3, 3, Padding::Valid, Activation::Linear)?,
            cfg: cfg.clone(),
        })
    }

    /// Loads `<dir>/face_landmark.safetensors`.
    pub fn from_dir(dir: &Path, cfg: &Config) -> Result<Self> {
        build(&dir.join(cfg.weights_file()), |vb| Self::load(vb, cfg))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Raw outputs for a batch `[N, 3, 192, 192]` in `[0, 1]`: landmarks `[N, 468, 3]` in
    /// crop pixels and face logits `[N]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = self.stem.forward(x)?;
        for b in &self.backbone {
            x = b.forward(&x)?;
        }
        let mut m = x.clone();
        for b in &self.mesh {
            m = b.forward(&m)?;
        }
        let m = self.mesh_reduce.forward(&m)?;
        let m = self.mesh_out.forward(&self.mesh_tail.forward(&m)?)?;
        let f = self.flag.forward(&x)?;
        let f = self.flag_reduce.forward(&f)?;
        let f = self.flag_out.forward(&self.flag_tail.forward(&f)?)?;
        let n = m.dim(0)?;
        Ok((m.reshape((n, NUM_LANDMARKS, 3))?, f.reshape(n)?))
    }

    /// Runs the network on crops of `photo` for each rect (one batch) and maps the landmarks
    /// back to photo pixels.
    pub fn landmarks(&self, photo: &RgbImage, rects: &[RotatedRect]) -> Result<Vec<FaceLandmarks>> {
        check_image(photo)?;
        if rects.is_empty() {
            return Ok(Vec::new());
        }
        let (crops, x) = crop_batch(photo, rects, self.cfg.input_size as u32)?;
        let (lm, logit) = self.forward(&x)?;
        let lm = lm.flatten_all()?.to_vec1::<f32>()?;
        let logit = logit.to_vec1::<f32>()?;
        Ok(crops
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let z_scale = c.scale_to_photo();
                let points = lm[i * NUM_LANDMARKS * 3..(i + 1) * NUM_LANDMARKS * 3]
                    .chunks(3)
                    .map(|p| {
                        let [x, y] = c.to_photo(p[0], p[1]);
                        [x, y, p[2] * z_scale]
                    })
                    .collect();
                FaceLandmarks {
                    points,
                    presence: sigmoid_f32(logit[i]),
                    crop: c,
                }
            })
            .collect())
    }
}

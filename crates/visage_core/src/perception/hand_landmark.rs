//! Hand landmarks (MediaPipe `hand_landmark_lite.tflite`): from a 224×224 hand crop in
//! `[0, 1]`, 21 landmarks (wrist, then four points per finger from thumb to pinky), a
//! hand-presence score, a handedness score and 21 "world" landmarks in metres.
//!
//! The crop comes from a palm detection ([`super::palm::hand_roi`]) or from a hand's own
//! landmarks ([`roi_from_landmarks`], MediaPipe's crop for the next frame). Architecture: a
//! MobileNetV2-style network (inverted residual blocks, ReLU6, 3×3 and 5×5 depthwise
//! convolutions) to 7×7×672, global average, four fully connected heads.

use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::ops::{
    Activation, Conv2d, DepthwiseConv2d, Linear, Padding, conv, depthwise, max_pool2, sigmoid,
};
use super::roi::{Crop, RotatedRect, crop_batch, normalize_radians};
use super::{Result, build, check_image};

/// Number of hand landmarks.
pub const NUM_LANDMARKS: usize = 21;

/// Configuration of the hand landmark network.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Side of the square input (224).
    pub input_size: usize,
    /// Hands whose presence score is below this are dropped (MediaPipe: 0.5).
    pub min_presence: f32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            input_size: 224,
            min_presence: 0.5,
        }
    }
}

impl Config {
    /// File name of the converted weights in `assets/nets`.
    pub fn weights_file(&self) -> &'static str {
        "hand_landmark_lite.safetensors"
    }
}

/// The landmarks MediaPipe's `HandLandmarkLandmarksToRoi` keeps for the crop: the wrist, the
/// thumb's first three joints and the first two of each finger (the fingertips move too much).
const ROI_LANDMARKS: [usize; 12] = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18];

/// The hand crop MediaPipe derives from a hand's landmarks (`HandLandmarksToRectCalculator`,
/// then `RectTransformationCalculator`): rotation so that the wrist → (middle MCP + mean of
/// the index and ring MCPs) / 2 vector points up, the box of 12 landmarks (wrist, thumb
/// joints 1–3, the first two joints of each finger) in that rotated frame, shifted a tenth
/// of its height towards the fingers, square on the long side, × 2. This is how a hand is tracked from frame to frame; re-cropping a rough crop
/// this way also centres and straightens a hand the network has only half seen.
///
/// `points` are the 21 landmarks in photo pixels (only x and y are used).
pub fn roi_from_landmarks(points: &[[f32; 3]]) -> RotatedRect {
    let p = |i: usize| [points[i][0], points[i][1]];
    let (wrist, index, middle, ring) = (p(0), p(5), p(9), p(13));
    let mid = [
        0.5 * (0.5 * (index[0] + ring[0]) + middle[0]),
        0.5 * (0.5 * (index[1] + ring[1]) + middle[1]),
    ];
    let rotation = normalize_radians(
        std::f32::consts::FRAC_PI_2 - (-(mid[1] - wrist[1])).atan2(mid[0] - wrist[0]),
    );
    // Axis-aligned box centre, then the box in the rotated frame around it.
    let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for &i in &ROI_LANDMARKS {
        let q = p(i);
        for k in 0..2 {
            lo[k] = lo[k].min(q[k]);
            hi[k] = hi[k].max(q[k]);
        }
    }
    let centre = [0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1])];
    let (s, c) = rotation.sin_cos();
    let (mut ulo, mut uhi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for &i in &ROI_LANDMARKS {
        let q = p(i);
        let (dx, dy) = (q[0] - centre[0], q[1] - centre[1]);
        // Rotate by -rotation into the rect's frame.
        let r = [c * dx + s * dy, -s * dx + c * dy];
        for k in 0..2 {
            ulo[k] = ulo[k].min(r[k]);
            uhi[k] = uhi[k].max(r[k]);
        }
    }
    let pc = [0.5 * (ulo[0] + uhi[0]), 0.5 * (ulo[1] + uhi[1])];
    let (w, h) = (uhi[0] - ulo[0], uhi[1] - ulo[1]);
    // Back to the photo; then the shift of -0.1 × height along the rect's own y axis.
    let shift_y = -0.1 * h;
    let cx = centre[0] + c * pc[0] - s * pc[1] - s * shift_y;
    let cy = centre[1] + s * pc[0] + c * pc[1] + c * shift_y;
    let side = 2.0 * w.max(h);
    RotatedRect {
        cx,
        cy,
        width: side,
        height: side,
        rotation,
    }
}

/// Landmarks of one hand.
#[derive(Debug, Clone, PartialEq)]
pub struct HandLandmarks {
    /// 21 points `[x, y, z]` in photo pixels (z relative to the wrist, scaled like x, as
    /// MediaPipe reports it: network units / 0.4).
    pub points: Vec<[f32; 3]>,
    /// 21 points in metres, origin at the hand's centre, rotated into the photo's axes.
    pub world: Vec<[f32; 3]>,
    /// Hand presence probability.
    pub presence: f32,
    /// Probability that this is the subject's right hand, for an unmirrored photo
    /// (MediaPipe's score for the label "Left", which assumes a mirrored selfie image).
    pub right_hand: f32,
    /// The crop the network saw.
    pub crop: Crop,
}

/// What the residual path of an inverted residual block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    None,
    Identity,
    MaxPool,
}

/// Inverted residual: `project(dw(expand(x)))` (+ residual), ReLU6 inside, linear output.
#[derive(Debug, Clone)]
struct InvertedResidual {
    expand: Conv2d,
    dw: DepthwiseConv2d,
    project: Conv2d,
    skip: Skip,
}

impl InvertedResidual {
    /// Loads `conv_{e}` (expand), `dw_{d}`, `conv_{e+1}` (project).
    #[allow(clippy::too_many_arguments)]
    fn load(
        vb: &VarBuilder,
        e: usize,
        d: usize,
        k: usize,
        s: usize,
        cin: usize,
        mid: usize,
        cout: usize,
        skip: Skip,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            expand: conv(vb, e, cin, mid, 1, 1, Padding::Same, Activation::Relu6)?,
            dw: depthwise(vb, d, mid, k, s, Padding::Same, Activation::Relu6)?,
            project: conv(
                vb,
                e + 1,
                mid,
                cout,
                1,
                1,
                Padding::Same,
                Activation::Linear,
            )?,
            skip,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.dw.forward(&self.expand.forward(x)?)?;
        match self.skip {
            Skip::None => self.project.forward(&y),
            Skip::Identity => self.project.forward_residual(&y, x),
            Skip::MaxPool => self.project.forward_residual(&y, &max_pool2(x)?),
        }
    }
}

/// The hand landmark network.
#[derive(Debug, Clone)]
pub struct Model {
    stem: Conv2d,
    stem_dw: DepthwiseConv2d,
    stem_project: Conv2d,
    blocks: Vec<InvertedResidual>,
    head_expand: Conv2d,
    head_dw: DepthwiseConv2d,
    handedness: Linear,
    presence: Linear,
    landmarks: Linear,
    world: Linear,
    cfg: Config,
}

impl Model {
    /// Builds the network from converted weights (see `tools/convert_tflite.py`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let vb = &vb;
        use Skip::{Identity as I, MaxPool as M, None as N};
        // (expand conv, dw, kernel, stride, in, mid, out, residual)
        let spec = [
            (2, 1, 3, 2, 16, 64, 16, M),
            (4, 2, 3, 1, 16, 96, 16, I),
            (6, 3, 5, 2, 16, 96, 24, N),
            (8, 4, 5, 1, 24, 144, 24, I),
            (10, 5, 3, 2, 24, 144, 48, N),
            (12, 6, 3, 1, 48, 288, 48, I),
            (14, 7, 3, 1, 48, 288, 48, I),
            (16, 8, 5, 1, 48, 288, 64, N),
            (18, 9, 5, 1, 64, 384, 64, I),
            (20, 10, 5, 1, 64, 384, 64, I),
            (22, 11, 5, 2, 64, 384, 112, N),
            (24, 12, 5, 1, 112, 672, 112, I),
            (26, 13, 5, 1, 112, 672, 112, I),
            (28, 14, 5, 1, 112, 672, 112, I),
        ];
        let blocks = spec
            .iter()
            .map(|&(e, d, k, s, cin, mid, cout, skip)| {
                InvertedResidual::load(vb, e, d, k, s, cin, mid, cout, skip)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let fc = |i, out| Linear::load(vb.pp(format!("fc_{i}")), 672, out);
        Ok(Self {
            stem: conv(vb, 0, 3, 24, 3, 2, Padding::Same, Activation::Relu6)?,
            stem_dw: depthwise(vb, 0, 24, 3, 1, Padding::Same, Activation::Relu6)?,
            stem_project: conv(vb, 1, 24, 16, 1, 1, Padding::Same, Activation::Linear)?,
            blocks,
            head_expand: conv(vb, 30, 112, 672, 1, 1, Padding::Same, Activation::Relu6)?,
            head_dw: depthwise(vb, 15, 672, 3, 1, Padding::Same, Activation::Relu6)?,
            handedness: fc(0, 1)?,
            presence: fc(1, 1)?,
            landmarks: fc(2, NUM_LANDMARKS * 3)?,
            world: fc(3, NUM_LANDMARKS * 3)?,
            cfg: cfg.clone(),
        })
    }

    /// Loads `<dir>/hand_landmark_lite.safetensors`.
    pub fn from_dir(dir: &Path, cfg: &Config) -> Result<Self> {
        build(&dir.join(cfg.weights_file()), |vb| Self::load(vb, cfg))
    }

    /// Raw outputs for `[N, 3, 224, 224]` in `[0, 1]`: landmarks `[N, 21, 3]` (crop pixels),
    /// presence `[N]` and handedness `[N]` (after sigmoid), world landmarks `[N, 21, 3]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor, Tensor)> {
        let x = self.stem.forward(x)?;
        let mut x = self.stem_project.forward(&self.stem_dw.forward(&x)?)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        let x = self.head_dw.forward(&self.head_expand.forward(&x)?)?;
        let n = x.dim(0)?;
        let f = x.mean((2, 3))?;
        Ok((
            self.landmarks.forward(&f)?.reshape((n, NUM_LANDMARKS, 3))?,
            sigmoid(&self.presence.forward(&f)?)?.reshape(n)?,
            sigmoid(&self.handedness.forward(&f)?)?.reshape(n)?,
            self.world.forward(&f)?.reshape((n, NUM_LANDMARKS, 3))?,
        ))
    }

    /// Runs the network on the crops of `rects` (one batch) and maps results to the photo.
    pub fn landmarks(&self, photo: &RgbImage, rects: &[RotatedRect]) -> Result<Vec<HandLandmarks>> {
        check_image(photo)?;
        if rects.is_empty() {
            return Ok(Vec::new());
        }
        let (crops, x) = crop_batch(photo, rects, self.cfg.input_size as u32)?;
        let (lm, presence, handed, world) = self.forward(&x)?;
        let lm = lm.flatten_all()?.to_vec1::<f32>()?;
        let world = world.flatten_all()?.to_vec1::<f32>()?;
        let presence = presence.to_vec1::<f32>()?;
        let handed = handed.to_vec1::<f32>()?;
        let n3 = NUM_LANDMARKS * 3;
        Ok(crops
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let z = c.scale_to_photo() / 0.4;
                let points = lm[i * n3..(i + 1) * n3]
                    .chunks(3)
                    .map(|p| {
                        let [x, y] = c.to_photo(p[0], p[1]);
                        [x, y, p[2] * z]
                    })
                    .collect();
                let (sn, cs) = c.rect.rotation.sin_cos();
                let world = world[i * n3..(i + 1) * n3]
                    .chunks(3)
                    .map(|p| [cs * p[0] - sn * p[1], sn * p[0] + cs * p[1], p[2]])
                    .collect();
                HandLandmarks {
                    points,
                    world,
                    presence: presence[i],
                    right_hand: handed[i],
                    crop: c,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upright right hand (wrist at the bottom, fingers up), photo pixels.
    fn upright() -> Vec<[f32; 3]> {
        let mut p = vec![[0.0f32; 3]; NUM_LANDMARKS];
        p[0] = [100.0, 200.0, 0.0];
        for (j, q) in [[72.0, 188.0], [60.0, 168.0], [54.0, 150.0], [50.0, 135.0]]
            .iter()
            .enumerate()
        {
            p[1 + j] = [q[0], q[1], 0.0];
        }
        // Index, middle, ring, pinky: MCP, PIP, DIP, tip.
        for (f, x) in [80.0f32, 100.0, 120.0, 138.0].iter().enumerate() {
            for j in 0..4 {
                p[5 + 4 * f + j] = [*x, 120.0 - 25.0 * j as f32, 0.0];
            }
        }
        p
    }

    #[test]
    fn roi_of_an_upright_hand() {
        let r = roi_from_landmarks(&upright());
        assert!(r.rotation.abs() < 1e-6, "rotation {}", r.rotation);
        // Box of the 12 ROI landmarks (no fingertips, no thumb tip): x 54..138, y 95..200.
        let (w, h) = (84.0f32, 105.0f32);
        assert!((r.width - 2.0 * h).abs() < 1e-3 && (r.height - r.width).abs() < 1e-6);
        assert!((r.cx - 96.0).abs() < 1e-3, "cx {}", r.cx);
        // Centre 147.5, shifted a tenth of the height towards the fingers (up).
        assert!((r.cy - (147.5 - 0.1 * h)).abs() < 1e-3, "cy {}", r.cy);
        assert!(w < h);
    }

    #[test]
    fn roi_turns_with_the_hand() {
        let base = roi_from_landmarks(&upright());
        let (o, a) = ([30.0f32, -10.0f32], 0.7f32);
        let (s, c) = a.sin_cos();
        let turn = |p: [f32; 2]| {
            let (dx, dy) = (p[0] - o[0], p[1] - o[1]);
            [o[0] + c * dx - s * dy, o[1] + s * dx + c * dy]
        };
        let turned: Vec<[f32; 3]> = upright()
            .iter()
            .map(|p| {
                let q = turn([p[0], p[1]]);
                [q[0], q[1], p[2]]
            })
            .collect();
        let r = roi_from_landmarks(&turned);
        assert!(
            (r.rotation - a).abs() < 1e-5,
            "rotation {} vs {a}",
            r.rotation
        );
        let centre = turn([base.cx, base.cy]);
        assert!((r.cx - centre[0]).abs() < 1e-3 && (r.cy - centre[1]).abs() < 1e-3);
        assert!((r.width - base.width).abs() < 1e-3);
        // The wrist lies in the lower half of the crop, the fingertips in the upper half.
        let pts = &turned;
        assert!(r.from_photo([pts[0][0], pts[0][1]])[1] > 0.5);
        assert!(r.from_photo([pts[12][0], pts[12][1]])[1] < 0.5);
    }
}

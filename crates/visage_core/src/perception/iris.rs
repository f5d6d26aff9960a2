//! Iris landmarks (MediaPipe `iris_landmark.tflite`): from a 64×64 eye crop in `[0, 1]`,
//! 71 eye-contour/eyebrow points and 5 iris points (centre, then four on the iris boundary),
//! each `[x, y, z]` in crop pixels.
//!
//! The network expects the eye on the image's left (the subject's right eye; MediaPipe's iris
//! graph calls it the "left eye"); the other eye is fed mirrored and its outputs mirrored back.
//! The eye crop follows MediaPipe's `IrisLandmarkLandmarksToRoi`: box of the two eye-corner
//! landmarks (33/133 for the right eye, 362/263 for the left), rotation from the first to the
//! second corner, square on the long side, scale 2.3. MediaPipe's legacy iris graph crops at
//! native resolution and then resizes to 64×64; here the rotated crop is sampled directly at
//! 64×64 with the same bilinear sampler as the other networks.
//!
//! Architecture: residual bottleneck blocks with PReLU (1×1 reduce, depthwise 3×3, 1×1
//! expand), stride-2 stages through 2×2 convolutions with max-pooled residuals, then two
//! branches (contours, iris) ending in 2×2 convolutions.

use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::ops::{
    Activation, Conv2d, DepthwiseConv2d, Padding, conv, depthwise, images_to_tensor, max_pool2,
    pointwise, prelu,
};
use super::roi::{Border, Crop, RotatedRect, crop};
use super::{Result, build, check_image};

/// Eye-contour points per eye.
pub const NUM_CONTOUR: usize = 71;
/// Iris points per eye.
pub const NUM_IRIS: usize = 5;

/// FaceMesh landmark indices of the right eye's corners (outer, inner), as MediaPipe's iris
/// graph uses them.
pub const RIGHT_EYE_CORNERS: [usize; 2] = [33, 133];
/// FaceMesh landmark indices of the left eye's corners (inner, outer).
pub const LEFT_EYE_CORNERS: [usize; 2] = [362, 263];

/// Configuration of the iris network.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Side of the square input (64).
    pub input_size: usize,
    /// Eye crop size relative to the corner-to-corner box (MediaPipe: 2.3).
    pub roi_scale: f32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            input_size: 64,
            roi_scale: 2.3,
        }
    }
}

impl Config {
    /// File name of the converted weights in `assets/nets`.
    pub fn weights_file(&self) -> &'static str {
        "iris_landmark.safetensors"
    }
}

/// The eye crop from two eye-corner points (photo pixels), as MediaPipe builds it.
pub fn eye_roi(corner_a: [f32; 2], corner_b: [f32; 2], scale: f32) -> RotatedRect {
    let bbox = [
        corner_a[0].min(corner_b[0]),
        corner_a[1].min(corner_b[1]),
        corner_a[0].max(corner_b[0]),
        corner_a[1].max(corner_b[1]),
    ];
    RotatedRect::from_box_and_keypoints(bbox, corner_a, corner_b, 0.0, scale, [0.0, 0.0])
}

/// One eye's landmarks in photo pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct EyeLandmarks {
    /// 71 eye-contour and eyebrow points `[x, y, z]` (z in pixels, relative).
    pub contour: Vec<[f32; 3]>,
    /// 5 iris points: centre, then four on the boundary.
    pub iris: Vec<[f32; 3]>,
    /// The crop the network saw (mirrored for right eyes).
    pub crop: Crop,
}

/// Residual bottleneck: `prelu(x' + expand(dw(prelu(reduce(x)))))` where, for the stride-2
/// variant, `reduce` is a 2×2 stride-2 convolution and `x'` is `x` max-pooled (and padded).
#[derive(Debug, Clone)]
struct Bottleneck {
    /// 1×1 (or 2×2 stride 2) reduction with PReLU fused.
    reduce: Conv2d,
    dw: DepthwiseConv2d,
    /// 1×1 expansion with the residual add and PReLU fused.
    expand: Conv2d,
    down: bool,
}

impl Bottleneck {
    /// Loads `conv_{a}`/`prelu_{a}`, `dw_{d}`, `conv_{b}`/`prelu_{b}`.
    #[allow(clippy::too_many_arguments)]
    fn load(
        vb: &VarBuilder,
        a: usize,
        d: usize,
        b: usize,
        cin: usize,
        mid: usize,
        cout: usize,
        down: bool,
    ) -> candle_core::Result<Self> {
        let act = prelu(vb, a, mid)?;
        let reduce = if down {
            conv(vb, a, cin, mid, 2, 2, Padding::Valid, act)?
        } else {
            pointwise(vb, a, cin, mid, act)?
        };
        Ok(Self {
            reduce,
            dw: depthwise(vb, d, mid, 3, 1, Padding::Same, Activation::Linear)?,
            expand: pointwise(vb, b, mid, cout, prelu(vb, b, cout)?)?,
            down,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.dw.forward(&self.reduce.forward(x)?)?;
        let r = if self.down { max_pool2(x)? } else { x.clone() };
        self.expand.forward_residual(&y, &r)
    }
}

/// The iris network.
#[derive(Debug, Clone)]
pub struct Model {
    stem: Conv2d,
    trunk: Vec<Bottleneck>,
    contour: Vec<Bottleneck>,
    iris: Vec<Bottleneck>,
    contour_out: Conv2d,
    iris_out: Conv2d,
    cfg: Config,
}

impl Model {
    /// Builds the network from converted weights (see `tools/convert_tflite.py`).
    pub fn load(vb: VarBuilder, cfg: &Config) -> candle_core::Result<Self> {
        let vb = &vb;
        let mut trunk = Vec::new();
        // 32x32x64: four blocks (conv 1+2k / dw k / conv 2+2k).
        for k in 0..4 {
            trunk.push(Bottleneck::load(
                vb,
                1 + 2 * k,
                k,
                2 + 2 * k,
                64,
                32,
                64,
                false,
            )?);
        }
        // Down to 16x16x128.
        trunk.push(Bottleneck::load(vb, 9, 4, 10, 64, 64, 128, true)?);
        for k in 0..4 {
            trunk.push(Bottleneck::load(
                vb,
                11 + 2 * k,
                5 + k,
                12 + 2 * k,
                128,
                64,
                128,
                false,
            )?);
        }
        // Down to 8x8x128.
        trunk.push(Bottleneck::load(vb, 19, 9, 20, 128, 64, 128, true)?);
        // Two interleaved branches: contour uses even offsets, iris odd ones.
        let branch = |o: usize| -> candle_core::Result<Vec<Bottleneck>> {
            (0..8)
                .map(|j| {
                    let down = j == 2 || j == 5;
                    Bottleneck::load(
                        vb,
                        21 + 4 * j + o,
                        10 + 2 * j + o,
                        23 + 4 * j + o,
                        128,
                        64,
                        128,
                        down,
                    )
                })
                .collect()
        };
        Ok(Self {
            stem: conv(vb, 0, 3, 64, 3, 2, Padding::Same, prelu(vb, 0, 64)?)?,
            trunk,
            contour: branch(0)?,
            iris: branch(1)?,
            contour_out: conv(
                vb,
                53,
                128,
                NUM_CONTOUR * 3,
                2,
                1,
                Padding::Valid,
                Activation::Linear,
            )?,
            iris_out: conv(
                vb,
                54,
                128,
                NUM_IRIS * 3,
                2,
                1,
                Padding::Valid,
                Activation::Linear,
            )?,
            cfg: cfg.clone(),
        })
    }

    /// Loads `<dir>/iris_landmark.safetensors`.
    pub fn from_dir(dir: &Path, cfg: &Config) -> Result<Self> {
        build(&dir.join(cfg.weights_file()), |vb| Self::load(vb, cfg))
    }

    /// Raw outputs for a batch `[N, 3, 64, 64]` in `[0, 1]`: contours `[N, 71, 3]` and iris
    /// `[N, 5, 3]`, crop pixels.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let mut x = self.stem.forward(x)?;
        for b in &self.trunk {
            x = b.forward(&x)?;
        }
        let mut c = x.clone();
        for b in &self.contour {
            c = b.forward(&c)?;
        }
        let mut i = x;
        for b in &self.iris {
            i = b.forward(&i)?;
        }
        let n = c.dim(0)?;
        Ok((
            self.contour_out.forward(&c)?.reshape((n, NUM_CONTOUR, 3))?,
            self.iris_out.forward(&i)?.reshape((n, NUM_IRIS, 3))?,
        ))
    }

    /// Runs both eyes of a face. `right_corners` / `left_corners` are the eye-corner points
    /// in photo pixels (FaceMesh landmarks [`RIGHT_EYE_CORNERS`] and [`LEFT_EYE_CORNERS`]).
    /// Returns `[right eye, left eye]`.
    pub fn eyes(
        &self,
        photo: &RgbImage,
        right_corners: [[f32; 2]; 2],
        left_corners: [[f32; 2]; 2],
    ) -> Result<[EyeLandmarks; 2]> {
        check_image(photo)?;
        let s = self.cfg.input_size as u32;
        let right = eye_roi(right_corners[0], right_corners[1], self.cfg.roi_scale);
        let left = eye_roi(left_corners[0], left_corners[1], self.cfg.roi_scale);
        let crops = [
            crop(photo, &right, s, s, Border::Replicate, false),
            crop(photo, &left, s, s, Border::Replicate, true),
        ];
        let x = images_to_tensor(
            &[&crops[0].image, &crops[1].image],
            (0.0, 1.0),
            &Device::Cpu,
        )?;
        let (c, i) = self.forward(&x)?;
        let c = c.flatten_all()?.to_vec1::<f32>()?;
        let i = i.flatten_all()?.to_vec1::<f32>()?;
        let eye = |k: usize, crop: Crop| {
            let z = crop.scale_to_photo();
            let map = |v: &[f32], n: usize| -> Vec<[f32; 3]> {
                v[k * n * 3..(k + 1) * n * 3]
                    .chunks(3)
                    .map(|p| {
                        let [x, y] = crop.to_photo(p[0], p[1]);
                        [x, y, p[2] * z]
                    })
                    .collect()
            };
            EyeLandmarks {
                contour: map(&c, NUM_CONTOUR),
                iris: map(&i, NUM_IRIS),
                crop: crop.clone(),
            }
        };
        let [a, b] = crops;
        Ok([eye(0, a), eye(1, b)])
    }
}

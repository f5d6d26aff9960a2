//! Identity embedding: dlib face-recognition ResNet (150×150 chip → 128-D).
//!
//! The network is dlib's `dlib_face_recognition_resnet_model_v1` (Davis King, CC0), the model
//! behind the `face_recognition` Python package: a 29-convolution ResNet that maps an aligned
//! 150×150 RGB face chip to a 128-D descriptor. Two photos show the same person when the
//! Euclidean distance of their descriptors is below about [`SAME_PERSON_THRESHOLD`] (0.6). The
//! descriptor is *not* L2-normalised (dlib's `loss_metric` works on raw distances; typical norms
//! are 1.3–1.5).
//!
//! * [`IdentityNet::from_dlib_dat`] reads dlib's own `.dat` file (parser in `dlib_format.rs`,
//!   checked layer by layer against the architecture; no dlib code is used).
//! * [`IdentityNet::load`] / [`IdentityNet::from_safetensors`] read the converted weights that
//!   Visage ships (`assets/nets/dlib_face_recognition_resnet_v1.safetensors`, written by
//!   [`convert_dlib_dat`]). Names mirror the dlib layers: `stem.conv.{weight,bias}`,
//!   `stem.affine.{gamma,beta}`, `blocks.{i}.conv{1,2}.{weight,bias}`,
//!   `blocks.{i}.affine{1,2}.{gamma,beta}`, `fc.weight` (`[128, 256]`, out × in) and
//!   `input.mean_rgb`.
//! * [`extract_chip`] cuts the aligned chip out of a [`Photo`] from five landmarks, with dlib's
//!   `get_face_chip_details(…, 150, 0.25)` geometry, so descriptors match dlib's.
//!
//! # Network
//!
//! Input: chip pixels `p` (sRGB, 0–255), `(p − mean) / 256` per channel with mean
//! (122.782, 117.001, 104.298) for R, G, B. Stem: 7×7 convolution, 32 filters, stride 2, no
//! padding → affine → ReLU → 3×3 max-pool stride 2 (150 → 72 → 35). Then 14 residual blocks
//! (3 × 32, 4 × 64, 3 × 128, 4 × 256 channels; the first block of each of the last four stages
//! down-samples). A block is `relu(x' + affine(conv3×3(relu(affine(conv3×3/s(x))))))` where
//! `x' = x` or, when down-sampling, a 2×2 stride-2 average pool of `x`; a stride-2 convolution
//! has no padding, a stride-1 one pads by 1. When the two branches differ in channels or size
//! (35 → 17 → 8 → 3 vs 4 → 1 vs 2), dlib's `add_prev` adds them aligned at the top-left corner of
//! a zero-padded tensor of the larger size — reproduced exactly here. Finally a global average
//! pool and a 256 → 128 fully-connected layer without bias.
//!
//! The `affine` layers (frozen batch normalisation) are folded into the preceding convolutions at
//! load time: `γ·(W∗x + b) + β = (γW)∗x + (γb + β)`.

mod dlib_format;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::photo::{Photo, linear_to_srgb};

/// Side of the aligned face chip, in pixels.
pub const CHIP_SIZE: usize = 150;
/// Length of the identity descriptor.
pub const EMBEDDING_DIM: usize = 128;
/// Padding around the landmark template used for the chip (dlib's default for this network).
pub const CHIP_PADDING: f64 = 0.25;
/// Euclidean descriptor distance under which dlib / `face_recognition` call two faces the same
/// person.
pub const SAME_PERSON_THRESHOLD: f32 = 0.6;

/// dlib's 5-point template (`get_face_chip_details`), in units of the unpadded face square:
/// image-right eye outer and inner corners, image-left eye outer and inner corners, nose base.
const TEMPLATE_5: [[f64; 2]; 5] = [
    [0.859_567_459_599_2, 0.213_498_153_801_4],
    [0.646_060_476_410_4, 0.228_967_438_767_7],
    [0.120_575_062_078_9, 0.213_727_452_684_8],
    [0.334_085_061_371_2, 0.229_064_240_324_2],
    [0.490_112_313_567_9, 0.627_797_531_647_5],
];

/// Why the identity network could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The weights file could not be read.
    #[error("could not read the identity network {path}: {error}")]
    Io {
        /// File.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The `.dat` file is not the expected dlib network.
    #[error("{path} is not dlib's face-recognition ResNet file: {detail}")]
    Format {
        /// File.
        path: PathBuf,
        /// Where and what went wrong.
        detail: String,
    },
    /// A safetensors file is missing a tensor or has a wrong shape.
    #[error("the identity network weights in {path} are incomplete or mis-shaped: {detail}")]
    Weights {
        /// File.
        path: PathBuf,
        /// The tensor problem.
        detail: String,
    },
    /// A tensor operation failed.
    #[error("identity network computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// Bad input to the network.
    #[error("{0}")]
    Input(String),
}

/// Architecture of the network: the residual blocks' `(channels, downsample)` from the input side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Filters of the 7×7 stem convolution.
    pub stem_channels: usize,
    /// `(channels, downsample)` of every residual block, input side first.
    pub blocks: Vec<(usize, bool)>,
    /// Output dimension.
    pub embedding_dim: usize,
}

impl Config {
    /// dlib's `dlib_face_recognition_resnet_model_v1`.
    pub fn dlib_resnet_v1() -> Self {
        Config {
            stem_channels: 32,
            blocks: dlib_format::BLOCKS.to_vec(),
            embedding_dim: EMBEDDING_DIM,
        }
    }

    /// Number of learned parameters (convolution weights and biases, affine scales and shifts,
    /// fully-connected weights): 5 614 592 for dlib's network.
    pub fn parameter_count(&self) -> usize {
        let conv = |i: usize, o: usize, k: usize| o * i * k * k + o + 2 * o;
        let mut n = conv(3, self.stem_channels, 7);
        let mut c = self.stem_channels;
        for &(o, _) in &self.blocks {
            n += conv(c, o, 3) + conv(o, o, 3);
            c = o;
        }
        n + c * self.embedding_dim
    }
}

/// A convolution with its affine layer folded in.
#[derive(Debug, Clone)]
struct FoldedConv {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl FoldedConv {
    fn load(
        vb: &VarBuilder,
        conv: &str,
        affine: &str,
        shape: (usize, usize, usize),
        stride: usize,
    ) -> candle_core::Result<Self> {
        let (cin, cout, k) = shape;
        let w = vb.get((cout, cin, k, k), &format!("{conv}.weight"))?;
        let b = vb.get(cout, &format!("{conv}.bias"))?;
        let g = vb.get(cout, &format!("{affine}.gamma"))?;
        let beta = vb.get(cout, &format!("{affine}.beta"))?;
        let weight = w.broadcast_mul(&g.reshape((cout, 1, 1, 1))?)?;
        let bias = b.mul(&g)?.add(&beta)?.reshape((1, cout, 1, 1))?;
        Ok(FoldedConv {
            weight,
            bias,
            stride,
            padding: if stride == 1 { k / 2 } else { 0 },
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

#[derive(Debug, Clone)]
struct Block {
    conv1: FoldedConv,
    conv2: FoldedConv,
    down: bool,
}

/// `a + b` the way dlib's `add_prev` does it: the result has the larger size in every dimension
/// and each input contributes where it exists (top-left aligned, zeros elsewhere).
fn add_prev(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (_, ca, ha, wa) = a.dims4()?;
    let (_, cb, hb, wb) = b.dims4()?;
    let (c, h, w) = (ca.max(cb), ha.max(hb), wa.max(wb));
    let pad = |t: &Tensor, tc: usize, th: usize, tw: usize| -> candle_core::Result<Tensor> {
        let mut t = t.clone();
        if tc < c {
            t = t.pad_with_zeros(1, 0, c - tc)?;
        }
        if th < h {
            t = t.pad_with_zeros(2, 0, h - th)?;
        }
        if tw < w {
            t = t.pad_with_zeros(3, 0, w - tw)?;
        }
        Ok(t)
    };
    pad(a, ca, ha, wa)?.add(&pad(b, cb, hb, wb)?)
}

impl Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.conv1.forward(x)?.relu()?;
        let y = self.conv2.forward(&y)?;
        let shortcut = if self.down {
            x.avg_pool2d_with_stride(2, 2)?
        } else {
            x.clone()
        };
        add_prev(&y, &shortcut)?.relu()
    }
}

/// The identity network, ready for inference.
#[derive(Debug, Clone)]
pub struct IdentityNet {
    config: Config,
    stem: FoldedConv,
    blocks: Vec<Block>,
    /// `[256, 128]` (in × out) so that `features.matmul(fc)` gives the descriptor.
    fc: Tensor,
    mean_rgb: [f32; 3],
    device: Device,
}

impl IdentityNet {
    /// Builds the network from tensors named as described in the module documentation.
    pub fn load(vb: VarBuilder, config: &Config) -> candle_core::Result<Self> {
        let device = vb.device().clone();
        let stem = FoldedConv::load(
            &vb,
            "stem.conv",
            "stem.affine",
            (3, config.stem_channels, 7),
            2,
        )?;
        let mut blocks = Vec::with_capacity(config.blocks.len());
        let mut c = config.stem_channels;
        for (i, &(o, down)) in config.blocks.iter().enumerate() {
            let p = format!("blocks.{i}");
            blocks.push(Block {
                conv1: FoldedConv::load(
                    &vb,
                    &format!("{p}.conv1"),
                    &format!("{p}.affine1"),
                    (c, o, 3),
                    if down { 2 } else { 1 },
                )?,
                conv2: FoldedConv::load(
                    &vb,
                    &format!("{p}.conv2"),
                    &format!("{p}.affine2"),
                    (o, o, 3),
                    1,
                )?,
                down,
            });
            c = o;
        }
        let fc = vb
            .get((config.embedding_dim, c), "fc.weight")?
            .t()?
            .contiguous()?;
        let mean = vb.get(3, "input.mean_rgb")?.to_vec1::<f32>()?;
        Ok(IdentityNet {
            config: config.clone(),
            stem,
            blocks,
            fc,
            mean_rgb: [mean[0], mean[1], mean[2]],
            device,
        })
    }

    /// Reads dlib's `dlib_face_recognition_resnet_model_v1.dat` directly.
    pub fn from_dlib_dat(path: impl AsRef<Path>, device: &Device) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let tensors = dlib_tensors(path, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        IdentityNet::load(vb, &Config::dlib_resnet_v1()).map_err(|e| IdentityError::Weights {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// Reads converted weights (f32 or f16) from a safetensors file.
    pub fn from_safetensors(
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| IdentityError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let weights = |e: candle_core::Error| IdentityError::Weights {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let vb =
            VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(weights)?;
        IdentityNet::load(vb, &Config::dlib_resnet_v1()).map_err(weights)
    }

    /// The architecture.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Per-channel mean subtracted from 0–255 chip values before dividing by 256.
    pub fn mean_rgb(&self) -> [f32; 3] {
        self.mean_rgb
    }

    /// Runs the network on a normalised batch `[N, 3, 150, 150]` and returns `[N, 128]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.stem.forward(x)?.relu()?.max_pool2d_with_stride(3, 2)?;
        let mut x = x;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        x.mean((2, 3))?.matmul(&self.fc)
    }

    /// Turns chips into the normalised input batch `[N, 3, 150, 150]`.
    pub fn chips_to_tensor(&self, chips: &[&FaceChip]) -> Result<Tensor, IdentityError> {
        let plane = CHIP_SIZE * CHIP_SIZE;
        let mut data = vec![0.0f32; chips.len() * 3 * plane];
        for (n, chip) in chips.iter().enumerate() {
            if chip.pixels.len() != 3 * plane {
                return Err(IdentityError::Input(format!(
                    "a face chip must hold 150×150 RGB pixels ({} values), this one holds {}",
                    3 * plane,
                    chip.pixels.len()
                )));
            }
            let base = n * 3 * plane;
            for (i, px) in chip.pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    data[base + c * plane + i] = (px[c] as f32 - self.mean_rgb[c]) / 256.0;
                }
            }
        }
        Ok(Tensor::from_vec(
            data,
            (chips.len(), 3, CHIP_SIZE, CHIP_SIZE),
            &self.device,
        )?)
    }

    /// Descriptors of a batch of chips.
    pub fn embed_batch(
        &self,
        chips: &[&FaceChip],
    ) -> Result<Vec<[f32; EMBEDDING_DIM]>, IdentityError> {
        if chips.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.chips_to_tensor(chips)?;
        let out = self.forward(&x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(out
            .into_iter()
            .map(|row| {
                let mut e = [0.0f32; EMBEDDING_DIM];
                e.copy_from_slice(&row[..EMBEDDING_DIM]);
                e
            })
            .collect())
    }

    /// Descriptor of one chip.
    pub fn embed(&self, chip: &FaceChip) -> Result<[f32; EMBEDDING_DIM], IdentityError> {
        Ok(self.embed_batch(&[chip])?[0])
    }
}

/// Euclidean distance between two descriptors (compare with [`SAME_PERSON_THRESHOLD`]).
pub fn distance(a: &[f32; EMBEDDING_DIM], b: &[f32; EMBEDDING_DIM]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Parses a dlib `.dat` file into tensors named as in the shipped safetensors (f32, unfolded).
pub fn dlib_tensors(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<HashMap<String, Tensor>, IdentityError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|error| IdentityError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let net = dlib_format::parse(&bytes).map_err(|e| IdentityError::Format {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut map = HashMap::new();
    let mut put_conv = |prefix: &str, affine: &str, c: &dlib_format::ConvAffine| {
        let out = c.shape[0];
        map.insert(
            format!("{prefix}.weight"),
            Tensor::from_vec(c.weight.clone(), c.shape.to_vec(), device),
        );
        map.insert(
            format!("{prefix}.bias"),
            Tensor::from_vec(c.bias.clone(), out, device),
        );
        map.insert(
            format!("{affine}.gamma"),
            Tensor::from_vec(c.gamma.clone(), out, device),
        );
        map.insert(
            format!("{affine}.beta"),
            Tensor::from_vec(c.beta.clone(), out, device),
        );
    };
    put_conv("stem.conv", "stem.affine", &net.stem);
    for (i, (_, a, b)) in net.blocks.iter().enumerate() {
        put_conv(
            &format!("blocks.{i}.conv1"),
            &format!("blocks.{i}.affine1"),
            a,
        );
        put_conv(
            &format!("blocks.{i}.conv2"),
            &format!("blocks.{i}.affine2"),
            b,
        );
    }
    // dlib stores [in][out]; the shipped layout is [out][in] like every candle Linear.
    let fc = Tensor::from_vec(net.fc.clone(), (net.fc_in, net.fc_out), device)
        .and_then(|t| t.t()?.contiguous());
    map.insert("fc.weight".into(), fc);
    map.insert(
        "input.mean_rgb".into(),
        Tensor::from_vec(net.input_mean.to_vec(), 3, device),
    );
    let mut out = HashMap::with_capacity(map.len());
    for (k, v) in map {
        out.insert(k, v?);
    }
    Ok(out)
}

/// Converts dlib's `.dat` to safetensors in `dtype` (`F32` or `F16`), writing atomically
/// (temporary file + rename).
pub fn convert_dlib_dat(
    dat: impl AsRef<Path>,
    out: impl AsRef<Path>,
    dtype: DType,
) -> Result<(), IdentityError> {
    let out = out.as_ref();
    let tensors = dlib_tensors(dat, &Device::Cpu)?;
    let mut converted = HashMap::with_capacity(tensors.len());
    for (k, v) in tensors {
        // The input mean stays f32: it is three numbers and f16 would round 122.782 to 122.75.
        let v = if k == "input.mean_rgb" {
            v
        } else {
            v.to_dtype(dtype)?
        };
        converted.insert(k, v);
    }
    let tmp = out.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&converted, &tmp)?;
    std::fs::rename(&tmp, out).map_err(|error| IdentityError::Io {
        path: out.to_path_buf(),
        error,
    })
}

/// Five landmarks that place the chip, in the [`Photo`]'s continuous pixel coordinates (pixel
/// `(i, j)` covers `[i, i+1) × [j, j+1)`). "Left" and "right" are as seen in the image: the
/// image-left eye is the subject's right eye.
///
/// These are the points of dlib's 5-point landmark model. From MediaPipe FaceMesh (468 points):
/// image-left eye outer/inner corners 33 / 133, image-right eye inner/outer corners 362 / 263,
/// nose base 2 — see [`ChipLandmarks::from_face_mesh`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChipLandmarks {
    /// Outer corner of the eye on the image's left (subject's right eye).
    pub left_eye_outer: [f64; 2],
    /// Inner corner of the eye on the image's left.
    pub left_eye_inner: [f64; 2],
    /// Inner corner of the eye on the image's right (subject's left eye).
    pub right_eye_inner: [f64; 2],
    /// Outer corner of the eye on the image's right.
    pub right_eye_outer: [f64; 2],
    /// Base of the nose (subnasale, where the nose meets the upper lip).
    pub nose_base: [f64; 2],
}

impl ChipLandmarks {
    /// Picks the five points from MediaPipe FaceMesh landmarks (at least 468 `[x, y]` in pixel
    /// coordinates of the photo).
    pub fn from_face_mesh(mesh: &[[f32; 2]]) -> Option<Self> {
        if mesh.len() < 468 {
            return None;
        }
        let p = |i: usize| [mesh[i][0] as f64, mesh[i][1] as f64];
        Some(ChipLandmarks {
            left_eye_outer: p(33),
            left_eye_inner: p(133),
            right_eye_inner: p(362),
            right_eye_outer: p(263),
            nose_base: p(2),
        })
    }

    /// The same face mirrored left–right in an image of the given width.
    pub fn mirrored(&self, width: f64) -> Self {
        let m = |p: [f64; 2]| [width - p[0], p[1]];
        ChipLandmarks {
            left_eye_outer: m(self.right_eye_outer),
            left_eye_inner: m(self.right_eye_inner),
            right_eye_inner: m(self.left_eye_inner),
            right_eye_outer: m(self.left_eye_outer),
            nose_base: m(self.nose_base),
        }
    }

    /// All points moved by `d` and scaled by `s` about the origin (`p · s + d`).
    pub fn transformed(&self, s: f64, d: [f64; 2]) -> Self {
        let t = |p: [f64; 2]| [p[0] * s + d[0], p[1] * s + d[1]];
        ChipLandmarks {
            left_eye_outer: t(self.left_eye_outer),
            left_eye_inner: t(self.left_eye_inner),
            right_eye_inner: t(self.right_eye_inner),
            right_eye_outer: t(self.right_eye_outer),
            nose_base: t(self.nose_base),
        }
    }

    /// In dlib's part order.
    fn dlib_order(&self) -> [[f64; 2]; 5] {
        [
            self.right_eye_outer,
            self.right_eye_inner,
            self.left_eye_outer,
            self.left_eye_inner,
            self.nose_base,
        ]
    }
}

/// Where a chip lies in its photo: chip pixel centre `(u, v)` (0-based) maps to the photo point
/// `centre + R(angle) · step · (u − 74.5, v − 74.5)` in continuous photo coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChipTransform {
    /// Photo point under the chip's centre.
    pub centre: [f64; 2],
    /// Rotation of the chip's x axis in the photo (radians, y down).
    pub angle: f64,
    /// Photo pixels per chip pixel.
    pub step: f64,
}

impl ChipTransform {
    /// Photo coordinates of chip coordinates (both continuous, chip pixel centres at `u + 0.5`).
    pub fn chip_to_photo(&self, chip: [f64; 2]) -> [f64; 2] {
        let half = CHIP_SIZE as f64 / 2.0;
        let (s, c) = self.angle.sin_cos();
        let du = (chip[0] - half) * self.step;
        let dv = (chip[1] - half) * self.step;
        [
            self.centre[0] + c * du - s * dv,
            self.centre[1] + s * du + c * dv,
        ]
    }

    /// Chip coordinates of photo coordinates (inverse of [`ChipTransform::chip_to_photo`]).
    pub fn photo_to_chip(&self, p: [f64; 2]) -> [f64; 2] {
        let half = CHIP_SIZE as f64 / 2.0;
        let (s, c) = self.angle.sin_cos();
        let dx = p[0] - self.centre[0];
        let dy = p[1] - self.centre[1];
        [
            (c * dx + s * dy) / self.step + half,
            (-s * dx + c * dy) / self.step + half,
        ]
    }

    /// dlib's chip placement for five landmarks with padding [`CHIP_PADDING`].
    pub fn from_landmarks(points: &ChipLandmarks) -> Self {
        let size = CHIP_SIZE as f64;
        let pad = CHIP_PADDING;
        // Template in chip pixels (dlib's convention: pixel centres at integers).
        let from: Vec<[f64; 2]> = TEMPLATE_5
            .iter()
            .map(|t| {
                [
                    (pad + t[0]) / (2.0 * pad + 1.0) * size,
                    (pad + t[1]) / (2.0 * pad + 1.0) * size,
                ]
            })
            .collect();
        // Photo points in dlib's convention (pixel centres at integers).
        let to: Vec<[f64; 2]> = points
            .dlib_order()
            .iter()
            .map(|p| [p[0] - 0.5, p[1] - 0.5])
            .collect();
        // Least-squares similarity from → to (Umeyama in 2-D, no reflection).
        let n = from.len() as f64;
        let mf = from
            .iter()
            .fold([0.0, 0.0], |a, p| [a[0] + p[0] / n, a[1] + p[1] / n]);
        let mt = to
            .iter()
            .fold([0.0, 0.0], |a, p| [a[0] + p[0] / n, a[1] + p[1] / n]);
        let (mut a, mut b, mut var) = (0.0, 0.0, 0.0);
        for (f, t) in from.iter().zip(&to) {
            let (fx, fy) = (f[0] - mf[0], f[1] - mf[1]);
            let (tx, ty) = (t[0] - mt[0], t[1] - mt[1]);
            a += fx * tx + fy * ty;
            b += fx * ty - fy * tx;
            var += fx * fx + fy * fy;
        }
        let (sc, ss) = (a / var, b / var); // scale·cos, scale·sin
        let scale = (sc * sc + ss * ss).sqrt();
        let angle = ss.atan2(sc);
        // dlib: rect = centered_drect(tform(size/2, size/2), size·scale, size·scale); the chip's
        // corner pixels map to the rectangle's corners, so the step is (size·scale − 1)/(size − 1).
        let c = [size / 2.0 - mf[0], size / 2.0 - mf[1]];
        let centre = [
            sc * c[0] - ss * c[1] + mt[0] + 0.5,
            ss * c[0] + sc * c[1] + mt[1] + 0.5,
        ];
        // Landmarks that collapse to (nearly) one point give no usable chip: step NaN.
        let step = if size * scale > 1.0 {
            (size * scale - 1.0) / (size - 1.0)
        } else {
            f64::NAN
        };
        ChipTransform {
            centre,
            angle,
            step,
        }
    }
}

/// An aligned 150×150 face chip: 8-bit sRGB, row-major interleaved RGB.
#[derive(Clone, Debug, PartialEq)]
pub struct FaceChip {
    /// `150 · 150 · 3` bytes.
    pub pixels: Vec<u8>,
    /// Where the chip came from.
    pub transform: ChipTransform,
}

impl FaceChip {
    /// Wraps an already aligned 150×150 RGB image (for example one written by dlib).
    pub fn from_rgb8(pixels: Vec<u8>) -> Result<Self, IdentityError> {
        if pixels.len() != CHIP_SIZE * CHIP_SIZE * 3 {
            return Err(IdentityError::Input(format!(
                "a face chip must be 150×150 RGB ({} bytes), got {} bytes",
                CHIP_SIZE * CHIP_SIZE * 3,
                pixels.len()
            )));
        }
        Ok(FaceChip {
            pixels,
            transform: ChipTransform {
                centre: [75.0, 75.0],
                angle: 0.0,
                step: 1.0,
            },
        })
    }

    /// The chip as an image (for inspection or saving).
    pub fn to_rgb_image(&self) -> image::RgbImage {
        image::RgbImage::from_raw(CHIP_SIZE as u32, CHIP_SIZE as u32, self.pixels.clone())
            .expect("chip buffer is 150·150·3 by construction")
    }
}

/// Cuts the aligned chip for `points` out of `photo` the way dlib's `extract_image_chip` does:
/// bilinear interpolation of the sRGB values, black where the chip reaches outside the photo.
/// When the chip shrinks the face by more than 2× (where dlib switches to an image pyramid),
/// each chip pixel instead averages `n × n` bilinear samples, `n = min(⌈step⌉, 16)`.
/// Degenerate landmarks (all in one place, or not finite) give a black chip.
pub fn extract_chip(photo: &Photo, points: &ChipLandmarks) -> FaceChip {
    extract_chip_with(photo, ChipTransform::from_landmarks(points))
}

/// [`extract_chip`] for an explicit placement.
pub fn extract_chip_with(photo: &Photo, transform: ChipTransform) -> FaceChip {
    let mut pixels = vec![0u8; CHIP_SIZE * CHIP_SIZE * 3];
    let usable = transform.step.is_finite()
        && transform.step > 0.0
        && transform.angle.is_finite()
        && transform.centre.iter().all(|c| c.is_finite());
    if !usable {
        return FaceChip { pixels, transform };
    }
    let w = photo.width() as i64;
    let h = photo.height() as i64;
    let lin = photo.linear_rgb();
    let srgb = |x: i64, y: i64, c: usize| -> f64 {
        linear_to_srgb(lin[3 * (y * w + x) as usize + c]) as f64 * 255.0
    };
    // Capped so that absurd landmarks cannot make the loop explode (16² samples per pixel).
    let n = if transform.step > 2.0 {
        (transform.step.ceil() as usize).min(16)
    } else {
        1
    };
    let (s, c) = transform.angle.sin_cos();
    let half = (CHIP_SIZE as f64 - 1.0) / 2.0;
    for v in 0..CHIP_SIZE {
        for u in 0..CHIP_SIZE {
            let mut acc = [0.0f64; 3];
            for sj in 0..n {
                for si in 0..n {
                    let du =
                        (u as f64 + (si as f64 + 0.5) / n as f64 - 0.5 - half) * transform.step;
                    let dv =
                        (v as f64 + (sj as f64 + 0.5) / n as f64 - 0.5 - half) * transform.step;
                    // Sample position with pixel centres at integers.
                    let x = transform.centre[0] - 0.5 + c * du - s * dv;
                    let y = transform.centre[1] - 0.5 + s * du + c * dv;
                    let (x0, y0) = (x.floor(), y.floor());
                    let (xi, yi) = (x0 as i64, y0 as i64);
                    if !(x.is_finite() && y.is_finite())
                        || xi < 0
                        || yi < 0
                        || xi + 1 >= w
                        || yi + 1 >= h
                    {
                        continue; // black, as dlib leaves it
                    }
                    let (fx, fy) = (x - x0, y - y0);
                    for (ch, a) in acc.iter_mut().enumerate() {
                        let top = srgb(xi, yi, ch) * (1.0 - fx) + srgb(xi + 1, yi, ch) * fx;
                        let bottom =
                            srgb(xi, yi + 1, ch) * (1.0 - fx) + srgb(xi + 1, yi + 1, ch) * fx;
                        *a += top * (1.0 - fy) + bottom * fy;
                    }
                }
            }
            let o = 3 * (v * CHIP_SIZE + u);
            for ch in 0..3 {
                pixels[o + ch] = (acc[ch] / (n * n) as f64).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    FaceChip { pixels, transform }
}

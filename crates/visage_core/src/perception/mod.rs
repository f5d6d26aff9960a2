//! Perception networks (face detection, landmarks, hands, segmentation, identity) in candle.
//!
//! The face, iris, hand and segmentation networks are MediaPipe 0.10.21's TFLite models
//! (Apache-2.0), converted to safetensors by `tools/convert_tflite.py` and re-implemented
//! layer by layer here, one file per network:
//!
//! | file | network | input | output |
//! |---|---|---|---|
//! | [`blazeface`] | BlazeFace short / full range | 128² / 192² letterboxed photo | boxes, 6 keypoints |
//! | [`face_mesh`] | FaceMesh | 192² face crop | 468 landmarks + face score |
//! | [`iris`] | Iris | 64² eye crop | 71 eye-contour + 5 iris points |
//! | [`palm`] | palm detection (lite) | 192² letterboxed photo | palm boxes, 7 keypoints |
//! | [`hand_landmark`] | hand landmarks (lite) | 224² hand crop | 21 landmarks, presence, handedness |
//! | [`selfie`] | selfie segmentation (general) | 256² photo | person mask |
//!
//! [`occlusion`] turns the landmarks, hands and person mask into an occlusion mask and
//! per-landmark visibility; [`Perception::observe`] returns an [`Observation`], the input of
//! fitting.
//!
//! [`Perception`] chains them the way MediaPipe's graphs do (detection → rotated ROI →
//! landmarks → eye ROIs → iris; palms → hand ROIs → hand landmarks; person mask), adds a hand
//! search around each face ([`HandSearchOptions`]) for hands the palm detector misses, and
//! returns everything in photo pixel coordinates, with per-network timings.
//!
//! Inputs are 8-bit sRGB images ([`image::RgbImage`]); the networks were trained on sRGB
//! values scaled to `[0, 1]` or `[-1, 1]`, not on linear light.
//! Layout is NCHW throughout; see [`ops`] for the TFLite semantics that matter (asymmetric
//! `SAME` padding, PReLU, half-pixel resize) and the fast depthwise convolution.

pub mod blazeface;
pub mod detection;
pub mod face_mesh;
pub mod hand_landmark;
pub mod identity;
pub mod iris;
pub mod occlusion;
pub mod ops;
pub mod palm;
pub mod pipeline;
pub mod roi;
pub mod selfie;
pub mod synthetic;

pub use occlusion::{Occlusion, OcclusionOptions, PixelMap, face_region};
pub use pipeline::{
    FaceDetectorMode, FaceResult, HandResult, HandSearchOptions, KeypointCheck, LandmarkCheck,
    Observation, Perception, PerceptionOptions, PerceptionResult, Timings,
};

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// Errors of the perception networks.
#[derive(Debug, thiserror::Error)]
pub enum PerceptionError {
    /// A weight file is missing or unreadable.
    #[error("could not read network weights {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A weight file does not hold the tensors the network needs.
    #[error("network weights {path} do not match the network: {source}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What did not match.
        source: candle_core::Error,
    },
    /// The photo cannot be processed.
    #[error("the photo cannot be used: {0}")]
    InvalidImage(String),
    /// The photo shows no face the landmark network accepts.
    #[error(
        "no face was found in the photo ({detections} face detections, none with landmarks); use a photo where one face is clearly visible, at least about 64 pixels wide"
    )]
    NoFace {
        /// How many detections there were (faces too small, too turned or too occluded for
        /// the landmark network).
        detections: usize,
    },
    /// The chosen face does not exist or has no landmarks.
    #[error(
        "face {index} cannot be chosen: it does not exist or has no landmarks (only the largest faces get landmarks; raise `max_faces`)"
    )]
    FaceWithoutLandmarks {
        /// The index asked for.
        index: usize,
    },
    /// A tensor operation failed while running a network.
    #[error("a perception network failed while running: {0}")]
    Compute(#[from] candle_core::Error),
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, PerceptionError>;

/// The directory holding the converted networks in a checkout of this repository
/// (`assets/nets`).
pub fn default_nets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/nets")
}

/// Opens a converted network file as a [`VarBuilder`] producing `f32` tensors on the CPU.
pub fn load_weights(path: &Path) -> Result<VarBuilder<'static>> {
    let data = std::fs::read(path).map_err(|source| PerceptionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    VarBuilder::from_buffered_safetensors(data, DType::F32, &Device::Cpu).map_err(|source| {
        PerceptionError::Weights {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Builds a network from a weight file, turning shape/name mismatches into
/// [`PerceptionError::Weights`].
pub(crate) fn build<T>(
    path: &Path,
    f: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
) -> Result<T> {
    let vb = load_weights(path)?;
    f(vb).map_err(|source| PerceptionError::Weights {
        path: path.to_path_buf(),
        source,
    })
}

/// Bilinear interpolation in a row-major `width × height` grid at grid coordinates
/// `(x, y)` (sample `(i, j)` at `(i, j)`), clamped to the grid.
pub(crate) fn bilinear(values: &[f32], width: usize, height: usize, x: f32, y: f32) -> f32 {
    let x = x.clamp(0.0, (width - 1) as f32);
    let y = y.clamp(0.0, (height - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let v = |xx: usize, yy: usize| values[yy * width + xx];
    let top = v(x0, y0) + (v(x1, y0) - v(x0, y0)) * fx;
    let bot = v(x0, y1) + (v(x1, y1) - v(x0, y1)) * fx;
    top + (bot - top) * fy
}

/// Rejects images a network cannot use.
pub(crate) fn check_image(img: &image::RgbImage) -> Result<()> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(PerceptionError::InvalidImage(format!(
            "it is empty ({w}×{h} pixels)"
        )));
    }
    Ok(())
}

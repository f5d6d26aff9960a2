//! The CPU reference of the differentiable photometric pass.
//!
//! One definition (documented in `docs/photometric.md`), written so that a GPU implementation can
//! follow it buffer for buffer: flat `f32` arrays, `u32` indices, no trait objects in the hot path.
//!
//! - [`Camera`]: perspective (focal lengths, principal point, translation) or weak perspective
//!   (scale, 2-D offset). Camera frame `x` right, `y` up, looking down `−Z`; pixels OpenCV-style
//!   (origin top-left, `v` down, pixel centres at `+0.5`).
//! - Appearance: per-vertex albedo lit by second-order SH ([`sh`]) evaluated on area-weighted
//!   vertex normals; shaded per vertex and interpolated with perspective-correct barycentrics.
//! - [`PhotometricPass`]: z-buffer rasteriser, [`PhotometricPass::render`] (plain image),
//!   [`PhotometricPass::forward`] (masked L1 or robust loss, residual map) and
//!   [`PhotometricPass::loss_and_grad`] (analytic gradients for vertices — through projection,
//!   barycentrics and normals — albedo, SH and camera). Allocation-free after construction,
//!   parallel over image bands with rayon.
//! - [`Adam`], [`FitProblem`] (serde data: groups, learning rates, weights, stages) and
//!   [`Fitter`], the CPU loop, with [`VertexModel`] as the chain-rule hook to shape parameters.
//! - [`composite_over`], [`write_png`]: occluder layers and image output.

pub mod adam;
pub mod camera;
pub mod fit;
pub mod image_out;
pub mod loss;
pub mod mesh;
pub mod pass;
pub mod sh;

use std::path::PathBuf;

pub use adam::{Adam, AdamSettings};
pub use camera::{CAMERA_PARAMS, Camera};
pub use fit::{
    FitProblem, FitStage, FitVariables, Fitter, GroupSchedule, ParamGroup, StepReport, VertexModel,
    VertexOffsets,
};
pub use image_out::{composite_over, linear_to_srgb, to_rgb8, write_png};
pub use loss::{LossConfig, RobustLoss};
pub use pass::{Gradients, NO_TRIANGLE, PassConfig, PhotometricPass, PixelSample, Scene, Target};

/// Largest accepted image side, pixels.
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// Errors of the photometric pass, with a sentence a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The image is empty or too large.
    #[error(
        "the image size {width}×{height} is not usable: both sides must be between 1 and 16384 pixels"
    )]
    ImageSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// An input array has the wrong length.
    #[error("{what} has {got} entries, but {expected} were expected")]
    Length {
        /// Which input.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// A triangle refers to a vertex that does not exist.
    #[error(
        "triangle {triangle} refers to vertex {index}, but the mesh has only {num_vertices} vertices"
    )]
    TriangleIndex {
        /// Triangle index.
        triangle: usize,
        /// Offending vertex index.
        index: u32,
        /// Number of vertices.
        num_vertices: usize,
    },
    /// An input value is out of its domain.
    #[error("invalid input: {0}")]
    Invalid(&'static str),
    /// The fitting description is inconsistent.
    #[error("invalid fitting problem: {0}")]
    Fit(String),
    /// Writing a file failed.
    #[error("could not write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Encoding an image failed.
    #[error("could not encode the image {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: image::ImageError,
    },
}

pub(crate) fn validate_image_size(width: u32, height: u32) -> Result<(), RenderError> {
    if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(RenderError::ImageSize { width, height });
    }
    Ok(())
}

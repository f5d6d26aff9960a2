//! Why an avatar request failed, as values with sentences a user understands.

use std::path::PathBuf;

use visage_core::model::ModelError;

/// Why an avatar request failed. Its `Display` is the sentence sent in
/// [`AvatarFailed::reason`](crate::AvatarFailed::reason).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AvatarError {
    /// The photo file does not exist.
    #[error("could not read the photo `{}`: the file does not exist", path.display())]
    PhotoMissing {
        /// Path of the photo.
        path: PathBuf,
    },
    /// The photo file exists but could not be read.
    #[error("could not read the photo `{}`: {detail}", path.display())]
    PhotoUnreadable {
        /// Path of the photo.
        path: PathBuf,
        /// What went wrong (an operating-system message).
        detail: String,
    },
    /// The photo file was read but is not a supported, intact image.
    #[error("the photo `{}` is not an image Visage can decode ({detail})", path.display())]
    PhotoUndecodable {
        /// Path of the photo.
        path: PathBuf,
        /// What the decoder said.
        detail: String,
    },
    /// The photo file was read but Visage's photo ingest refused it: not an image, damaged,
    /// too large, too small, or an unsupported feature. The sentence comes from
    /// [`visage_core::photo::PhotoError`].
    #[error("{0}")]
    PhotoRejected(visage_core::photo::PhotoError),
    /// An image asset given as a handle failed to load.
    #[error("the image asset `{name}` could not be loaded: {detail}")]
    ImageAssetFailed {
        /// Asset path, or the asset id for images without a path.
        name: String,
        /// What the asset server said.
        detail: String,
    },
    /// An image asset is loaded but its pixels cannot be used.
    #[error("the image asset `{name}` cannot be used as a photo: {detail}")]
    ImageAssetUnusable {
        /// Asset path, or the asset id for images without a path.
        name: String,
        /// Why not.
        detail: String,
    },
    /// The head model file does not exist.
    #[error(
        "the head model `{}` is missing: there is no file at that path (set \
         `VisageSettings::model_path`; relative paths are looked up under the asset root \
         `{}` and under the bevy_visage crate folder)",
        path.display(),
        asset_root.display()
    )]
    ModelMissing {
        /// The path that was tried first.
        path: PathBuf,
        /// The folder relative model paths are resolved against first.
        asset_root: PathBuf,
    },
    /// The head model file exists but could not be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The background task ended without a result (it panicked or was cancelled).
    #[error("the avatar task stopped unexpectedly during {stage}: {detail}")]
    TaskAborted {
        /// Which stage was running.
        stage: String,
        /// What is known about the failure.
        detail: String,
    },
}

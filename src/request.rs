//! The public request component, the status and output components, and the messages.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bevy::prelude::*;

use crate::mesh::HeadMeshLayout;

/// Asks Visage to build a head from a photo. Spawn it on an entity (or insert it on an existing
/// one); the results arrive on the same entity.
///
/// Inserting a new request on an entity that already has one (or mutating the request) cancels
/// the running work, removes the previous results and starts again. Removing the request, or
/// despawning the entity, cancels the work.
#[derive(Component, Debug, Clone, PartialEq)]
#[require(AvatarStatus, Transform, Visibility)]
pub enum AvatarRequest {
    /// A photo file on disk (JPEG, PNG, WebP, BMP, TIFF or GIF). A relative path is relative to
    /// the current working directory.
    Path(PathBuf),
    /// An image asset. The request waits until the asset is loaded (or fails to load).
    /// Its pixels must be readable on the CPU (the image's `RenderAssetUsages` must include
    /// `MAIN_WORLD`, which is the case for images loaded by the asset server by default).
    Image(Handle<Image>),
}

impl AvatarRequest {
    /// A request for a photo file.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Self::Path(path.into())
    }

    /// A request for an image asset.
    pub fn image(handle: Handle<Image>) -> Self {
        Self::Image(handle)
    }
}

/// A stage of the avatar pipeline, in the order they run.
///
/// More stages will be added (detection, landmarks, fitting, diversification, texture baking);
/// match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Reflect)]
#[non_exhaustive]
pub enum AvatarStage {
    /// Waiting for an image asset, decoding and orienting the photo.
    #[default]
    DecodingPhoto,
    /// Loading the head model (once per model file), evaluating it and building the mesh.
    BuildingMesh,
    /// The avatar is complete.
    Ready,
}

impl AvatarStage {
    /// The part of the whole request's progress this stage covers, as `(start, end)` in
    /// `[0, 1]`: overall progress = `start + (end - start) × progress within the stage`.
    pub fn span(self) -> (f32, f32) {
        match self {
            AvatarStage::DecodingPhoto => (0.0, 0.3),
            AvatarStage::BuildingMesh => (0.3, 1.0),
            AvatarStage::Ready => (1.0, 1.0),
        }
    }

    /// Overall progress of the request when this stage is `within` (in `[0, 1]`) done.
    pub fn overall(self, within: f32) -> f32 {
        let (start, end) = self.span();
        start + (end - start) * within.clamp(0.0, 1.0)
    }

    /// A short human-readable label, e.g. for a progress bar.
    pub fn label(self) -> &'static str {
        match self {
            AvatarStage::DecodingPhoto => "decoding the photo",
            AvatarStage::BuildingMesh => "building the mesh",
            AvatarStage::Ready => "ready",
        }
    }
}

impl fmt::Display for AvatarStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where an avatar request stands. Added with the [`AvatarRequest`] and kept up to date.
#[derive(Component, Debug, Clone, PartialEq, Default)]
pub struct AvatarStatus {
    /// The stage running now; when [`error`](Self::error) is set, the stage that failed.
    pub stage: AvatarStage,
    /// Overall progress of the request in `[0, 1]` (see [`AvatarStage::span`]).
    pub fraction: f32,
    /// Why the request failed, if it did (the same sentence as [`AvatarFailed::reason`]).
    pub error: Option<String>,
}

impl AvatarStatus {
    /// The request finished successfully.
    pub fn is_ready(&self) -> bool {
        self.stage == AvatarStage::Ready && self.error.is_none()
    }

    /// The request failed.
    pub fn is_failed(&self) -> bool {
        self.error.is_some()
    }

    /// The request is still running.
    pub fn is_running(&self) -> bool {
        !self.is_ready() && !self.is_failed()
    }
}

/// The photo as the pipeline sees it (decoded, oriented upright, scaled down to
/// [`VisageSettings::max_photo_side`](crate::VisageSettings::max_photo_side)), as an sRGB image
/// asset, e.g. for display in a UI.
#[derive(Component, Debug, Clone, PartialEq)]
pub struct AvatarPhoto(pub Handle<Image>);

/// How the avatar's mesh vertices relate to the head model's vertices (UV seams split a model
/// vertex into several mesh vertices). Use it to write model-vertex data (positions of a
/// variant, per-vertex colours) into the mesh.
#[derive(Component, Debug, Clone)]
pub struct AvatarMeshLayout(pub Arc<HeadMeshLayout>);

/// Progress of an avatar request: sent when a stage starts and as it advances.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct AvatarProgress {
    /// The entity carrying the [`AvatarRequest`].
    pub entity: Entity,
    /// The stage now running.
    pub stage: AvatarStage,
    /// Overall progress of the request in `[0, 1]`.
    pub fraction: f32,
}

/// An avatar is complete: its entity now has the mesh, material and outputs.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct AvatarReady {
    /// The entity carrying the [`AvatarRequest`].
    pub entity: Entity,
}

/// An avatar request failed.
#[derive(Message, Debug, Clone, PartialEq)]
pub struct AvatarFailed {
    /// The entity carrying the [`AvatarRequest`].
    pub entity: Entity,
    /// What went wrong, as a sentence for the user.
    pub reason: String,
}

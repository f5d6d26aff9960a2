//! # bevy_visage
//!
//! A Bevy plugin that turns one photo of a face into a FLAME-topology head mesh entity.
//!
//! Add [`VisagePlugin`], spawn an entity with an [`AvatarRequest`], and read the
//! [`AvatarProgress`], [`AvatarReady`] and [`AvatarFailed`] messages. When the request is done
//! the same entity carries a [`Mesh3d`](bevy::prelude::Mesh3d) and a
//! [`MeshMaterial3d<StandardMaterial>`](bevy::prelude::MeshMaterial3d), the decoded photo as an
//! [`AvatarPhoto`], and the [`AvatarMeshLayout`] that maps mesh vertices to model vertices.
//!
//! ```ignore
//! use bevy::prelude::*;
//! use bevy_visage::prelude::*;
//!
//! App::new()
//!     .add_plugins((DefaultPlugins, VisagePlugin::default()))
//!     .add_systems(Startup, |mut commands: Commands| {
//!         commands.spawn(AvatarRequest::path("assets/photos/astronaut.png"));
//!     })
//!     .add_systems(Update, |mut ready: MessageReader<AvatarReady>| {
//!         for r in ready.read() {
//!             info!("avatar {} is ready", r.entity);
//!         }
//!     })
//!     .run();
//! ```
//!
//! All heavy work (decoding, model loading, evaluation, mesh building) runs on Bevy's
//! [`AsyncComputeTaskPool`](bevy::tasks::AsyncComputeTaskPool); the frame never waits for it.
//! The math lives in `visage_core`; this crate only schedules it and converts its results into
//! Bevy types.

#![deny(missing_docs)]

mod error;
pub mod gpu;
mod mesh;
mod model;
mod photo;
mod pipeline;
mod request;
mod settings;

use bevy::prelude::*;

pub use error::AvatarError;
pub use mesh::HeadMeshLayout;
pub use model::{LoadedModel, VisageModel};
pub use photo::{decode_photo, image_to_rgb};
pub use request::{
    AvatarFailed, AvatarMeshLayout, AvatarPhoto, AvatarProgress, AvatarReady, AvatarRequest,
    AvatarStage, AvatarStatus,
};
pub use settings::VisageSettings;

/// The commonly used items: `use bevy_visage::prelude::*;`.
pub mod prelude {
    pub use crate::{
        AvatarFailed, AvatarPhoto, AvatarProgress, AvatarReady, AvatarRequest, AvatarStage,
        AvatarStatus, VisageModel, VisagePlugin, VisageSettings, VisageSystems,
    };
}

/// The Visage plugin. Its fields become the [`VisageSettings`] resource, which may also be
/// changed at run time (a change applies to requests started afterwards).
#[derive(Debug, Clone, Default)]
pub struct VisagePlugin {
    /// Settings inserted as the [`VisageSettings`] resource.
    pub settings: VisageSettings,
}

/// The stages of the avatar pipeline as system sets, run in this order in [`Update`].
///
/// Order your own systems relative to them, e.g. `.after(VisageSystems::Spawn)` to see an
/// avatar's mesh in the frame it appears.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VisageSystems {
    /// Starts requests, waits for image assets and decodes photos.
    Ingest,
    /// Runs the perception networks (face detection, landmarks, occlusion masks).
    Infer,
    /// Fits the head model to what is visible in the photo.
    Fit,
    /// Samples plausible variants of the occluded parts.
    Diversify,
    /// Builds the Bevy mesh and material and attaches them to the request entity.
    Spawn,
}

impl Plugin for VisagePlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(self.settings.clone())
            .init_resource::<VisageModel>()
            .add_message::<AvatarProgress>()
            .add_message::<AvatarReady>()
            .add_message::<AvatarFailed>()
            .configure_sets(
                Update,
                (
                    VisageSystems::Ingest,
                    VisageSystems::Infer,
                    VisageSystems::Fit,
                    VisageSystems::Diversify,
                    VisageSystems::Spawn,
                )
                    .chain(),
            );
        pipeline::add_systems(app);
    }
}

//! The head model, loaded once and shared by all requests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bevy::prelude::*;
use visage_core::model::FlameModel;

use crate::error::AvatarError;
use crate::mesh::HeadMeshLayout;
use crate::settings::VisageSettings;

/// A loaded head model with the mesh layout derived from it.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The model.
    pub model: Arc<FlameModel>,
    /// How avatar meshes of this model are laid out.
    pub layout: Arc<HeadMeshLayout>,
}

/// The shared head model. The first request loads it (on a background thread) and every later
/// request reuses it; it is loaded again only when
/// [`VisageSettings::model_path`](crate::VisageSettings::model_path) changes.
///
/// Cloning the resource gives another handle to the same cache.
#[derive(Resource, Debug, Clone, Default)]
pub struct VisageModel {
    /// Held while a model is being loaded, so that concurrent requests load it once.
    loading: Arc<Mutex<()>>,
    /// The current model; locked only to read or replace the `Option`.
    loaded: Arc<RwLock<Option<LoadedModel>>>,
}

impl VisageModel {
    /// The model loaded so far, if any. Does not wait for a load in progress.
    pub fn get(&self) -> Option<LoadedModel> {
        self.loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The model stored at `path`, loading it if it is not the one held. Blocks while loading;
    /// call it from a background task, not from a system.
    pub fn get_or_load(&self, path: &Path) -> Result<LoadedModel, AvatarError> {
        // A panic during a load leaves the previous model (or none): both are usable.
        let _loading = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(loaded) = self.get().filter(|l| l.path == path) {
            return Ok(loaded);
        }
        if !path.is_file() {
            return Err(AvatarError::ModelMissing {
                path: path.to_path_buf(),
                asset_root: VisageSettings::asset_root(),
            });
        }
        let model = FlameModel::load(path)?;
        let layout = HeadMeshLayout::new(&model);
        let loaded = LoadedModel {
            path: path.to_path_buf(),
            model: Arc::new(model),
            layout: Arc::new(layout),
        };
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = Some(loaded.clone());
        Ok(loaded)
    }
}

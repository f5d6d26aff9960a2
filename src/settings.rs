//! Plugin settings.

use std::path::{Path, PathBuf};

use bevy::asset::io::file::FileAssetReader;
use bevy::prelude::*;

/// Where the shipped head model lives, relative to the folder holding `assets/`.
pub const DEFAULT_MODEL_PATH: &str = "assets/models/visage_head.safetensors";

/// Settings of the Visage plugin, as a resource. Changes apply to requests started afterwards.
#[derive(Resource, Debug, Clone, PartialEq)]
pub struct VisageSettings {
    /// The head model file (Visage safetensors format).
    ///
    /// A relative path is looked up first under the asset root (the folder holding `assets/`:
    /// `BEVY_ASSET_ROOT`, else `CARGO_MANIFEST_DIR` at run time, else the executable's folder,
    /// exactly as Bevy's file asset reader does), then under the folder of the `bevy_visage`
    /// crate itself, which ships the default model. Default:
    /// `assets/models/visage_head.safetensors`.
    pub model_path: PathBuf,
    /// Photos whose longer side exceeds this many pixels are scaled down (keeping the aspect
    /// ratio) right after decoding. Default: 2048.
    pub max_photo_side: u32,
    /// Base colour of the head's material until a texture is baked. Default: a neutral skin
    /// tone.
    pub skin_color: Color,
}

impl Default for VisageSettings {
    fn default() -> Self {
        Self {
            model_path: PathBuf::from(DEFAULT_MODEL_PATH),
            max_photo_side: 2048,
            skin_color: Color::srgb(0.80, 0.63, 0.54),
        }
    }
}

impl VisageSettings {
    /// The asset root relative paths are resolved against first (see
    /// [`model_path`](Self::model_path)).
    pub fn asset_root() -> PathBuf {
        FileAssetReader::get_base_path()
    }

    /// The model file that will be loaded: [`model_path`](Self::model_path) if absolute,
    /// else the first existing of `<asset root>/<model_path>` and
    /// `<bevy_visage crate folder>/<model_path>`; if neither exists, the first (so that an
    /// error names the place a user would put the file).
    pub fn resolved_model_path(&self) -> PathBuf {
        resolve(&self.model_path)
    }
}

fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let under_root = VisageSettings::asset_root().join(path);
    if under_root.exists() {
        return under_root;
    }
    let under_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if under_crate.exists() {
        return under_crate;
    }
    under_root
}

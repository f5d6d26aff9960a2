//! Photo ingest for the plugin: files and Bevy images to upright 8-bit sRGB RGB images.

use std::path::Path;

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use image::{DynamicImage, RgbImage};
use visage_core::photo::{IngestOptions, Photo};

use crate::error::AvatarError;

/// Reads a photo file with Visage's photo ingest ([`visage_core::photo`]): detects the format
/// from the content, refuses decompression bombs before decoding, applies the EXIF orientation,
/// composites alpha over white, and reduces the photo (area averaging in linear light) so that
/// its longer side is at most `max_side` pixels. Returns 8-bit sRGB.
pub fn decode_photo(path: &Path, max_side: u32) -> Result<RgbImage, AvatarError> {
    if !path.exists() {
        return Err(AvatarError::PhotoMissing {
            path: path.to_path_buf(),
        });
    }
    if path.is_dir() {
        return Err(AvatarError::PhotoUnreadable {
            path: path.to_path_buf(),
            detail: "it is a folder, not a file".into(),
        });
    }
    let options = IngestOptions {
        max_side: max_side.max(1),
        ..IngestOptions::default()
    };
    let photo = Photo::open(path, &options).map_err(AvatarError::PhotoRejected)?;
    Ok(photo.to_rgb_image())
}

/// Converts a Bevy image (any format the `image` crate can represent: 8/16-bit and float
/// RGB(A) or grey, values taken as sRGB-encoded) to an 8-bit RGB image through Visage's photo
/// ingest ([`Photo::from_srgb8`]), exactly as a photo file is treated after decoding: the same
/// size limits, alpha composited over white, and the reduction in linear light so that its
/// longer side is at most `max_side` pixels. `name` names the image in error messages.
pub fn image_to_rgb(image: &Image, name: &str, max_side: u32) -> Result<RgbImage, AvatarError> {
    let unusable = |detail: String| AvatarError::ImageAssetUnusable {
        name: name.to_string(),
        detail: one_line(&detail),
    };
    if image.data.is_none() {
        return Err(unusable(
            "its pixels are not available on the CPU (its RenderAssetUsages must include \
             MAIN_WORLD)"
                .into(),
        ));
    }
    if image.width() == 0 || image.height() == 0 {
        return Err(unusable("it has no pixels".into()));
    }
    let rgba = image
        .clone()
        .try_into_dynamic()
        .map_err(|e| unusable(e.to_string()))?
        .into_rgba8();
    let options = IngestOptions {
        max_side: max_side.max(1),
        ..IngestOptions::default()
    };
    let photo = Photo::from_srgb8(
        rgba.width(),
        rgba.height(),
        4,
        rgba.as_raw(),
        name,
        &options,
    )
    .map_err(AvatarError::PhotoRejected)?;
    Ok(photo.to_rgb_image())
}

/// The photo as an sRGB Bevy image (RGBA8, opaque), usable as a texture or in a UI.
pub(crate) fn rgb_to_bevy_image(rgb: &RgbImage) -> Image {
    Image::from_dynamic(
        DynamicImage::ImageRgb8(rgb.clone()),
        true,
        RenderAssetUsages::default(),
    )
}

/// Decoder messages sometimes span lines; a failure reason is one sentence.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

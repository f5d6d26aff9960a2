//! Photo ingest for the plugin: files and Bevy images to upright 8-bit sRGB RGB images.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use crate::error::AvatarError;

/// Reads a photo file: detects the format from its content (falling back to the extension),
/// decodes it with the decoder's default memory limit (512 MiB), applies the EXIF orientation,
/// and scales it down so that its longer side is at most `max_side` pixels.
pub fn decode_photo(path: &Path, max_side: u32) -> Result<RgbImage, AvatarError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AvatarError::PhotoMissing {
            path: path.to_path_buf(),
        },
        _ => AvatarError::PhotoUnreadable {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    })?;
    let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
    if is_dir {
        return Err(AvatarError::PhotoUnreadable {
            path: path.to_path_buf(),
            detail: "it is a folder, not a file".into(),
        });
    }
    let undecodable = |detail: String| AvatarError::PhotoUndecodable {
        path: path.to_path_buf(),
        detail: one_line(&detail),
    };
    let mut reader = ImageReader::new(BufReader::new(file));
    if let Ok(format) = image::ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| AvatarError::PhotoUnreadable {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if reader.format().is_none() {
        return Err(undecodable(
            "its content is in none of the formats JPEG, PNG, WebP, BMP, TIFF or GIF".into(),
        ));
    }
    reader.limits(Limits::default());
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| undecodable(e.to_string()))?;
    // A broken orientation tag is not worth rejecting the photo for: keep it as stored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| undecodable(e.to_string()))?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(undecodable("it has no pixels".into()));
    }
    Ok(limit_size(img, max_side).into_rgb8())
}

/// Converts a Bevy image (any format the `image` crate can represent: 8/16-bit and float
/// RGB(A) or grey) to an 8-bit RGB image, dropping alpha, and scales it down so that its longer
/// side is at most `max_side` pixels. `name` names the image in error messages.
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
    let dynamic = image
        .clone()
        .try_into_dynamic()
        .map_err(|e| unusable(e.to_string()))?;
    Ok(limit_size(dynamic, max_side).into_rgb8())
}

/// The photo as an sRGB Bevy image (RGBA8, opaque), usable as a texture or in a UI.
pub(crate) fn rgb_to_bevy_image(rgb: &RgbImage) -> Image {
    Image::from_dynamic(
        DynamicImage::ImageRgb8(rgb.clone()),
        true,
        RenderAssetUsages::default(),
    )
}

fn limit_size(img: DynamicImage, max_side: u32) -> DynamicImage {
    let max_side = max_side.max(1);
    let (w, h) = (img.width(), img.height());
    if w.max(h) <= max_side {
        return img;
    }
    let scale = max_side as f64 / w.max(h) as f64;
    let nw = ((w as f64 * scale).round() as u32).clamp(1, max_side);
    let nh = ((h as f64 * scale).round() as u32).clamp(1, max_side);
    img.resize_exact(nw, nh, FilterType::Triangle)
}

/// Decoder messages sometimes span lines; a failure reason is one sentence.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

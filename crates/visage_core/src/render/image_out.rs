//! Occluder compositing, sRGB encoding and PNG output of rendered images.

use std::io::Write;
use std::path::Path;

use image::RgbImage;

use super::RenderError;

/// Draws an occluder layer over a linear-RGB image (row-major, same size): each pixel becomes
/// `α·rgb + (1 − α)·below` with the layer's straight (not premultiplied) alpha, clamped to
/// `[0, 1]`. Call once per layer, bottom to top.
pub fn composite_over(image: &mut [[f32; 3]], layer: &[[f32; 4]]) -> Result<(), RenderError> {
    if image.len() != layer.len() {
        return Err(RenderError::Length {
            what: "the occluder layer",
            expected: image.len(),
            got: layer.len(),
        });
    }
    for (px, l) in image.iter_mut().zip(layer) {
        let a = l[3].clamp(0.0, 1.0);
        if a > 0.0 {
            for c in 0..3 {
                px[c] = a * l[c] + (1.0 - a) * px[c];
            }
        }
    }
    Ok(())
}

/// The sRGB transfer function (linear → encoded), input clamped to `[0, 1]`.
pub fn linear_to_srgb(x: f32) -> f32 {
    let x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
    if x <= 0.003_130_8 {
        12.92 * x
    } else {
        1.055 * x.powf(1.0 / 2.4) - 0.055
    }
}

/// Encodes a linear-RGB image (row-major `height × width`) as 8-bit sRGB.
pub fn to_rgb8(width: u32, height: u32, image: &[[f32; 3]]) -> Result<RgbImage, RenderError> {
    super::validate_image_size(width, height)?;
    let n = width as usize * height as usize;
    if image.len() != n {
        return Err(RenderError::Length {
            what: "the image",
            expected: n,
            got: image.len(),
        });
    }
    let mut out = RgbImage::new(width, height);
    for (dst, src) in out.pixels_mut().zip(image) {
        for c in 0..3 {
            dst.0[c] = (linear_to_srgb(src[c]) * 255.0 + 0.5) as u8;
        }
    }
    Ok(out)
}

/// Writes a linear-RGB image as an 8-bit sRGB PNG. The file appears complete or not at all
/// (written to a temporary file in the same folder, then renamed).
pub fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    image: &[[f32; 3]],
) -> Result<(), RenderError> {
    let rgb = to_rgb8(width, height, image)?;
    let mut bytes = Vec::new();
    rgb.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|source| RenderError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    let io = |source| RenderError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| RenderError::Invalid("the output path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compositing_follows_alpha() {
        let mut img = vec![[0.2, 0.4, 0.6]; 2];
        let layer = [[1.0, 0.0, 0.0, 0.25], [0.0, 1.0, 0.0, 0.0]];
        composite_over(&mut img, &layer).unwrap();
        assert!((img[0][0] - 0.4).abs() < 1e-6 && (img[0][1] - 0.3).abs() < 1e-6);
        assert_eq!(img[1], [0.2, 0.4, 0.6]);
        assert!(composite_over(&mut img, &layer[..1]).is_err());
    }

    #[test]
    fn srgb_endpoints() {
        assert_eq!(linear_to_srgb(0.0), 0.0);
        assert!((linear_to_srgb(1.0) - 1.0).abs() < 1e-6);
        assert!((linear_to_srgb(0.2140) - 0.5).abs() < 1e-3);
    }

    #[test]
    fn png_round_trip() {
        let dir = std::env::temp_dir().join(format!("visage_png_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.png");
        let img = vec![[1.0, 0.0, 0.2140]; 6];
        write_png(&path, 3, 2, &img).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (3, 2));
        assert_eq!(back.get_pixel(2, 1).0, [255, 0, 127]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

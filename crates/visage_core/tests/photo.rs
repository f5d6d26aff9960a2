//! Photo ingest: every format, EXIF orientation, bit depths, alpha, limits and damaged input.
//!
//! Fixtures are generated here with the `image` encoders, except `fixtures/photo/cmyk.jpg`
//! (a 64×48 CMYK JPEG made for this test, see `docs/ingest.md`).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};
use visage_core::photo::{
    AlphaMode, IngestOptions, Photo, PhotoError, SourceFormat, linear_to_srgb8, srgb_to_linear,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A 64×48 test card: four flat quadrants (red, green, blue, grey) so that lossy codecs keep the
/// colours recognisable and orientation is unambiguous.
fn quadrants(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| match (x < w / 2, y < h / 2) {
        (true, true) => image::Rgb([230, 20, 20]),
        (false, true) => image::Rgb([20, 210, 30]),
        (true, false) => image::Rgb([25, 30, 220]),
        (false, false) => image::Rgb([128, 128, 128]),
    })
}

/// A 64×48 image with a fine pattern that exercises every pixel (lossless round trips).
fn pattern() -> image::RgbImage {
    image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * 7 + y * 3) % 256) as u8])
    })
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

fn srgb8_of(photo: &Photo, x: u32, y: u32) -> [u8; 3] {
    photo.pixel(x, y).unwrap().map(linear_to_srgb8)
}

/// The sRGB decoding of an 8-bit code, computed in f64 and rounded once to f32.
fn exact8(v: u8) -> f32 {
    let c = v as f64 / 255.0;
    (if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }) as f32
}

fn opts() -> IngestOptions {
    IngestOptions::default()
}

#[test]
fn lossless_formats_round_trip_exactly() {
    let img = DynamicImage::ImageRgb8(pattern());
    for (format, source) in [
        (ImageFormat::Png, SourceFormat::Png),
        (ImageFormat::Bmp, SourceFormat::Bmp),
        (ImageFormat::Tiff, SourceFormat::Tiff),
        (ImageFormat::WebP, SourceFormat::WebP),
    ] {
        let bytes = encode(&img, format);
        let photo = Photo::decode(&bytes, &opts()).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!((photo.width(), photo.height()), (64, 48));
        assert_eq!(photo.meta().format, source);
        assert_eq!(photo.meta().orientation, 1);
        assert_eq!(
            photo.to_srgb8(),
            *pattern().as_raw(),
            "{format:?} did not round-trip"
        );
        // The linear values are the exact sRGB decoding of the stored bytes.
        let p = photo.pixel(10, 20).unwrap();
        assert_eq!(p, [exact8(40), exact8(100), exact8(130)]);
    }
}

#[test]
fn jpeg_and_gif_round_trip() {
    let img = DynamicImage::ImageRgb8(quadrants(64, 48));
    let jpeg = encode(&img, ImageFormat::Jpeg);
    let photo = Photo::decode(&jpeg, &opts()).unwrap();
    assert_eq!(photo.meta().format, SourceFormat::Jpeg);
    assert_eq!((photo.width(), photo.height()), (64, 48));
    for (x, y, want) in [
        (8, 8, [230u8, 20, 20]),
        (56, 8, [20, 210, 30]),
        (8, 40, [25, 30, 220]),
        (56, 40, [128, 128, 128]),
    ] {
        let got = srgb8_of(&photo, x, y);
        for c in 0..3 {
            assert!(
                (got[c] as i32 - want[c] as i32).abs() <= 6,
                "JPEG ({x},{y}) {got:?} vs {want:?}"
            );
        }
    }
    // GIF: four colours fit a palette exactly.
    let gif = encode(&img, ImageFormat::Gif);
    let photo = Photo::decode(&gif, &opts()).unwrap();
    assert_eq!(photo.meta().format, SourceFormat::Gif);
    assert_eq!(photo.to_srgb8(), *quadrants(64, 48).as_raw());
}

#[test]
fn gif_animation_gives_first_frame() {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame};
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut bytes);
        for colour in [[200u8, 40, 40, 255], [40, 40, 200, 255]] {
            let buf = image::RgbaImage::from_pixel(40, 40, image::Rgba(colour));
            enc.encode_frame(Frame::from_parts(
                buf,
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            ))
            .unwrap();
        }
    }
    let photo = Photo::decode(&bytes, &opts()).unwrap();
    assert_eq!(srgb8_of(&photo, 20, 20), [200, 40, 40]);
}

/// Inserts an EXIF APP1 segment (big-endian TIFF, one IFD entry: Orientation) right after SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2A"); // big-endian TIFF header
    tiff.extend_from_slice(&8u32.to_be_bytes()); // offset of IFD0
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // tag: Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // type: SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    let red = [230u8, 20, 20];
    let green = [20u8, 210, 30];
    let blue = [25u8, 30, 220];
    let grey = [128u8, 128, 128];
    let jpeg = encode(
        &DynamicImage::ImageRgb8(quadrants(64, 48)),
        ImageFormat::Jpeg,
    );
    // (code, expected size, expected colours at top-left, top-right, bottom-left, bottom-right)
    let cases = [
        (1u16, (64, 48), [red, green, blue, grey]),
        (2, (64, 48), [green, red, grey, blue]),
        (3, (64, 48), [grey, blue, green, red]),
        (4, (64, 48), [blue, grey, red, green]),
        (5, (48, 64), [red, blue, green, grey]),
        (6, (48, 64), [blue, red, grey, green]),
        (7, (48, 64), [grey, green, blue, red]),
        (8, (48, 64), [green, grey, red, blue]),
    ];
    for (code, size, corners) in cases {
        let bytes = with_exif_orientation(&jpeg, code);
        let photo = Photo::decode(&bytes, &opts()).unwrap();
        assert_eq!(photo.meta().orientation, code as u8);
        assert_eq!((photo.width(), photo.height()), size, "orientation {code}");
        assert_eq!(photo.meta().original_size, [size.0, size.1]);
        assert_eq!(photo.meta().stored_size, [64, 48]);
        let (w, h) = size;
        let probes = [(6, 6), (w - 7, 6), (6, h - 7), (w - 7, h - 7)];
        for ((x, y), want) in probes.into_iter().zip(corners) {
            let got = srgb8_of(&photo, x, y);
            for c in 0..3 {
                assert!(
                    (got[c] as i32 - want[c] as i32).abs() <= 6,
                    "orientation {code} at ({x},{y}): {got:?} vs {want:?}"
                );
            }
        }
        // Switched off: stored layout.
        let raw = Photo::decode(
            &bytes,
            &IngestOptions {
                apply_orientation: false,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!((raw.width(), raw.height()), (64, 48));
        assert_eq!(raw.meta().orientation, 1);
    }
}

#[test]
fn sixteen_bit_png_uses_exact_curve() {
    let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(40, 40, |x, y| {
        image::Rgb([
            (x * 1600) as u16,
            (y * 1600 + 1) as u16,
            if (x + y) % 2 == 0 { 0x8000 } else { 65535 },
        ])
    });
    let bytes = encode(&DynamicImage::ImageRgb16(img), ImageFormat::Png);
    let photo = Photo::decode(&bytes, &opts()).unwrap();
    assert_eq!(photo.meta().bits_per_sample, 16);
    assert_eq!(photo.meta().channels, 3);
    let exact = |v: u16| {
        let c = v as f64 / 65535.0;
        (if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }) as f32
    };
    let p = photo.pixel(3, 5).unwrap();
    assert_eq!(p, [exact(4800), exact(8001), exact(0x8000)]);
    let p = photo.pixel(3, 4).unwrap();
    assert_eq!(p[2], 1.0);
    let p = photo.pixel(2, 2).unwrap();
    assert_eq!(p[2], exact(0x8000));
    assert!((p[2] - 0.214_04).abs() < 1e-4);
}

#[test]
fn grey_and_grey_alpha() {
    let grey = image::GrayImage::from_fn(40, 36, |x, _| image::Luma([(x * 6) as u8]));
    let bytes = encode(&DynamicImage::ImageLuma8(grey), ImageFormat::Png);
    let photo = Photo::decode(&bytes, &opts()).unwrap();
    assert_eq!(photo.meta().channels, 1);
    let p = photo.pixel(20, 3).unwrap();
    assert_eq!(p, [exact8(120); 3]);

    // Grey + alpha over the default white background, composited in linear light.
    let ga = image::GrayAlphaImage::from_fn(40, 36, |x, _| {
        image::LumaA([0, if x < 20 { 0 } else { 128 }])
    });
    let bytes = encode(&DynamicImage::ImageLumaA8(ga), ImageFormat::Png);
    let photo = Photo::decode(&bytes, &opts()).unwrap();
    assert!(photo.meta().had_alpha);
    assert_eq!(photo.pixel(5, 5).unwrap(), [1.0; 3]);
    let half = photo.pixel(30, 5).unwrap()[0];
    assert!((half - (1.0 - 128.0 / 255.0)).abs() < 1e-6, "{half}");
}

#[test]
fn rgba_alpha_modes() {
    let rgba = image::RgbaImage::from_fn(40, 40, |x, _| {
        if x < 20 {
            image::Rgba([200, 10, 10, 0])
        } else {
            image::Rgba([200, 10, 10, 255])
        }
    });
    let bytes = encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
    // Default: composite over white.
    let photo = Photo::decode(&bytes, &opts()).unwrap();
    assert_eq!(srgb8_of(&photo, 5, 5), [255, 255, 255]);
    assert_eq!(srgb8_of(&photo, 30, 5), [200, 10, 10]);
    // A chosen background.
    let photo = Photo::decode(
        &bytes,
        &IngestOptions {
            alpha: AlphaMode::Composite {
                background: [0, 64, 0],
            },
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(srgb8_of(&photo, 5, 5), [0, 64, 0]);
    // Ignore: the stored colour of transparent pixels shows.
    let photo = Photo::decode(
        &bytes,
        &IngestOptions {
            alpha: AlphaMode::Ignore,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(srgb8_of(&photo, 5, 5), [200, 10, 10]);
}

#[test]
fn cmyk_jpeg_becomes_rgb() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photo/cmyk.jpg");
    let photo = Photo::open(&path, &opts()).unwrap();
    assert_eq!((photo.width(), photo.height()), (64, 48));
    for (x, y, want) in [
        (8, 8, [255u8, 0, 0]),
        (48, 8, [0, 255, 0]),
        (8, 40, [0, 0, 255]),
        (48, 40, [127, 127, 127]),
    ] {
        let got = srgb8_of(&photo, x, y);
        for c in 0..3 {
            assert!(
                (got[c] as i32 - want[c] as i32).abs() <= 8,
                "CMYK ({x},{y}) {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn large_photo_is_area_reduced() {
    // 4100×1030 stripes: a 2×2 checker of black and white averages to linear 0.5 everywhere.
    let img = image::GrayImage::from_fn(4100, 1030, |x, y| {
        image::Luma([if (x + y) % 2 == 0 { 255 } else { 0 }])
    });
    let bytes = encode(&DynamicImage::ImageLuma8(img), ImageFormat::Png);
    let photo = Photo::decode(&bytes, &opts()).unwrap();
    assert_eq!(photo.width(), 2048);
    assert_eq!(photo.height(), 514); // 1030 · 2048/4100 = 514.497…
    let m = photo.meta();
    assert_eq!(m.original_size, [4100, 1030]);
    assert!((m.scale_x - 2048.0 / 4100.0).abs() < 1e-12);
    // Linear-light averaging: the mean of black and white is linear 0.5, sRGB code 188 (not 128).
    for &(x, y) in &[(0u32, 0u32), (1000, 200), (2047, 513)] {
        let p = photo.pixel(x, y).unwrap();
        assert!((p[0] - 0.5).abs() < 0.02, "({x},{y}) {p:?}");
    }
    // Coordinate mapping round trip.
    let q = photo.to_original([1024.0, 257.0]);
    assert!((q[0] - 2050.0).abs() < 1e-9);
    let back = photo.from_original(q);
    assert!((back[0] - 1024.0).abs() < 1e-9 && (back[1] - 257.0).abs() < 1e-9);
}

#[test]
fn area_reduction_is_exact_block_mean() {
    // 4096×64 → 2048×32: each working pixel is exactly the mean of a 2×2 block in linear light.
    let img = image::RgbImage::from_fn(4096, 64, |x, y| {
        image::Rgb([(x % 251) as u8, (y * 3) as u8, ((x / 7) % 256) as u8])
    });
    let bytes = encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png);
    let photo = Photo::decode(&bytes, &opts()).unwrap();
    assert_eq!((photo.width(), photo.height()), (2048, 32));
    for &(x, y) in &[(0u32, 0u32), (700, 13), (2047, 31)] {
        let got = photo.pixel(x, y).unwrap();
        for (c, &g) in got.iter().enumerate() {
            let mut sum = 0.0f64;
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let v = img.get_pixel(2 * x + dx, 2 * y + dy)[c];
                sum += srgb_to_linear(v as f32 / 255.0) as f64;
            }
            assert!((g as f64 - sum / 4.0).abs() < 1e-5, "({x},{y}) c{c}");
        }
    }
}

#[test]
fn decompression_bomb_is_refused_before_decoding() {
    // A PNG whose IHDR claims 100000×100000 RGB pixels, followed by a few bytes of IDAT.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    png.extend_from_slice(&8u32.to_be_bytes());
    png.extend_from_slice(idat);
    png.extend_from_slice(&crc32(idat).to_be_bytes());
    let err = Photo::decode_named(&png, "bomb.png", &opts()).unwrap_err();
    match &err {
        PhotoError::TooLarge {
            width,
            height,
            limit,
            ..
        } => {
            assert_eq!((*width, *height), (100_000, 100_000));
            assert_eq!(*limit, 100_000_000);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "the photo bomb.png is 100000×100000 pixels (10000 megapixels), more than the 100 megapixel limit Visage accepts"
    );
    // A lower configured cap applies to ordinary photos too.
    let bytes = encode(&DynamicImage::ImageRgb8(pattern()), ImageFormat::Png);
    let err = Photo::decode(
        &bytes,
        &IngestOptions {
            max_pixels: 1000,
            ..opts()
        },
    )
    .unwrap_err();
    assert!(matches!(err, PhotoError::TooLarge { .. }), "{err}");
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn tiny_photo_is_refused() {
    let img = DynamicImage::ImageRgb8(image::RgbImage::new(16, 40));
    let bytes = encode(&img, ImageFormat::Png);
    let err = Photo::decode_named(&bytes, "tiny.png", &opts()).unwrap_err();
    assert!(
        matches!(err, PhotoError::TooSmall { width: 16, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the photo tiny.png is only 16×40 pixels; Visage needs at least 32 pixels on each side to find a face"
    );
}

#[test]
fn truncated_files_are_refused() {
    let jpeg = encode(
        &DynamicImage::ImageRgb8(quadrants(64, 48)),
        ImageFormat::Jpeg,
    );
    for cut in [jpeg.len() / 2, jpeg.len() - 2, 200] {
        let err = Photo::decode_named(&jpeg[..cut], "cut.jpg", &opts()).unwrap_err();
        assert!(
            matches!(
                err,
                PhotoError::Corrupt {
                    format: SourceFormat::Jpeg,
                    ..
                }
            ),
            "cut at {cut}: {err:?}"
        );
        assert!(err.to_string().contains("cut.jpg"));
    }
    let png = encode(&DynamicImage::ImageRgb8(pattern()), ImageFormat::Png);
    for cut in [png.len() / 2, 40, 20] {
        let err = Photo::decode_named(&png[..cut], "cut.png", &opts()).unwrap_err();
        assert!(
            matches!(
                err,
                PhotoError::Corrupt {
                    format: SourceFormat::Png,
                    ..
                }
            ),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn garbage_and_empty_input() {
    // Deterministic pseudo-random bytes (xorshift).
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect();
    let err = Photo::decode_named(&noise, "noise.bin", &opts()).unwrap_err();
    assert!(matches!(err, PhotoError::UnknownFormat { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "noise.bin is not a photo Visage can read: its first bytes match none of JPEG, PNG, WebP, BMP, TIFF or GIF"
    );
    // Valid magic, garbage after it.
    for magic in [
        &b"\x89PNG\r\n\x1a\n"[..],
        b"\xFF\xD8\xFF",
        b"GIF89a",
        b"II*\0",
        b"BM",
    ] {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&noise);
        let err = Photo::decode_named(&bytes, "fake", &opts()).unwrap_err();
        assert!(
            matches!(
                err,
                PhotoError::Corrupt { .. }
                    | PhotoError::Unsupported { .. }
                    | PhotoError::TooLarge { .. }
                    | PhotoError::TooSmall { .. }
            ),
            "{magic:?}: {err:?}"
        );
    }
    // Zero-length file on disk.
    let dir = std::env::temp_dir().join(format!("visage-photo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let err = Photo::open(&empty, &opts()).unwrap_err();
    assert!(matches!(err, PhotoError::Empty { .. }), "{err:?}");
    assert!(err.to_string().contains("empty.jpg"), "{err}");
    // Missing file.
    let err = Photo::open(dir.join("missing.png"), &opts()).unwrap_err();
    assert!(matches!(err, PhotoError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.png"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn astronaut_decodes_with_exact_linear_values() {
    let path = repo_root().join("assets/photos/astronaut.png");
    let photo = Photo::open(&path, &opts()).unwrap();
    assert_eq!((photo.width(), photo.height()), (512, 512));
    assert_eq!(photo.meta().format, SourceFormat::Png);
    assert_eq!(photo.meta().bits_per_sample, 8);
    assert!(!photo.meta().had_alpha);
    // sRGB bytes read independently (Pillow) from the file.
    for ((x, y), srgb) in [
        ((0u32, 0u32), [154u8, 147, 151]),
        ((511, 511), [0, 0, 0]),
        ((220, 120), [219, 182, 152]),
        ((256, 256), [19, 14, 7]),
        ((100, 400), [198, 78, 42]),
    ] {
        let p = photo.pixel(x, y).unwrap();
        for c in 0..3 {
            let v = srgb[c] as f64 / 255.0;
            let exact = if v <= 0.04045 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            };
            assert!(
                (p[c] as f64 - exact).abs() < 1e-7,
                "({x},{y}) c{c}: {} vs {exact}",
                p[c]
            );
        }
        assert_eq!(srgb8_of(&photo, x, y), srgb);
    }
    // Absolute anchor: sRGB 219 decodes to 0.7083757...
    assert!((photo.pixel(220, 120).unwrap()[0] - 0.708_376).abs() < 1e-6);
}

#[test]
fn in_memory_pixels() {
    let rgba: Vec<u8> = (0..40 * 40).flat_map(|_| [10u8, 20, 30, 255]).collect();
    let photo = Photo::from_srgb8(40, 40, 4, &rgba, "frame", &opts()).unwrap();
    assert_eq!(photo.meta().format, SourceFormat::Pixels);
    assert_eq!(srgb8_of(&photo, 39, 39), [10, 20, 30]);
    let err = Photo::from_srgb8(40, 40, 4, &rgba[..100], "frame", &opts()).unwrap_err();
    assert!(matches!(err, PhotoError::PixelCount { .. }), "{err}");
    let err = Photo::from_linear(2, 2, vec![0.0; 5], "lin").unwrap_err();
    assert!(matches!(err, PhotoError::PixelCount { .. }), "{err}");
}

#[test]
fn seeded_mutations_never_panic() {
    // Robustness check on stable Rust: thousands of bit-flipped, truncated and spliced variants
    // of valid files of every format must give Ok or a PhotoError, never a panic or abort.
    let base = DynamicImage::ImageRgb8(quadrants(48, 40));
    let mut seeds: Vec<Vec<u8>> = [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Gif,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ]
    .iter()
    .map(|&f| encode(&base, f))
    .collect();
    seeds.push(with_exif_orientation(&seeds[1], 6));
    let mut s = 0x0DDB_1A5E_5BAD_5EEDu64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let small = IngestOptions {
        max_pixels: 4_000_000,
        ..opts()
    };
    let mut ok = 0;
    let cases = 3000;
    for i in 0..cases {
        let mut data = seeds[i % seeds.len()].clone();
        let n = 1 + (next() % 8) as usize;
        for _ in 0..n {
            let pos = (next() as usize) % data.len().max(1);
            match next() % 4 {
                0 => data[pos] ^= 1 << (next() % 8),
                1 => data[pos] = next() as u8,
                2 => data.truncate(pos.max(1)),
                _ => {
                    let b = next() as u8;
                    data.insert(pos, b)
                }
            }
        }
        if Photo::decode(&data, &small).is_ok() {
            ok += 1;
        }
    }
    // Some mutations are harmless (a flipped bit in pixel data), most are not.
    assert!(ok > 0 && ok < cases, "{ok} of {cases} decoded");
}

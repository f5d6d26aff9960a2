//! Photo ingest: decoding, orientation, colour conversion and size limits.
//!
//! [`Photo::open`] and [`Photo::decode`] turn a JPEG, PNG, WebP, BMP, TIFF or GIF file (the first
//! frame of an animation) into a [`Photo`]: linear-light RGB `f32` pixels, upright (the EXIF
//! orientation tag is applied), no larger than [`IngestOptions::max_side`] on its longest side,
//! with [`PhotoMeta`] recording what was done so that coordinates can be mapped back to the file.
//!
//! # Colour
//!
//! Every source is taken to be sRGB (embedded ICC profiles are not applied). Samples are decoded
//! with the exact piecewise sRGB transfer function ([`srgb_to_linear`]): 8-bit and 16-bit samples
//! go through exact look-up tables, 32-bit float samples (TIFF) are read as sRGB-encoded values in
//! `[0, 1]`, as the `image` crate reads them. Grey images are replicated to three equal channels.
//! CMYK JPEGs are converted to RGB by the JPEG decoder (`zune-jpeg`, naive complement
//! conversion, no colour management).
//!
//! # Alpha
//!
//! Transparent pixels are composited over [`AlphaMode::Composite`]'s background (white by
//! default) in linear light: `c = a·c_src + (1 − a)·c_bg`, with straight (non-premultiplied)
//! alpha as PNG, WebP, TIFF and GIF store it. [`AlphaMode::Ignore`] drops the alpha channel.
//! [`PhotoMeta::had_alpha`] says whether the source carried one.
//!
//! # Size
//!
//! The pixel count is read from the header *before* any pixel is decoded: a photo with more than
//! [`IngestOptions::max_pixels`] pixels is refused with [`PhotoError::TooLarge`] (decompression
//! bombs never allocate), one with a side shorter than [`IngestOptions::min_side`] with
//! [`PhotoError::TooSmall`]. A photo whose longest side exceeds [`IngestOptions::max_side`] is
//! reduced by exact area averaging in linear light (each working pixel is the mean of the source
//! area it covers, partial pixels weighted by coverage), which neither aliases nor darkens edges.
//!
//! # Coordinates
//!
//! Pixel coordinates are continuous: pixel `(i, j)` covers `[i, i+1) × [j, j+1)`, so its centre is
//! `(i + 0.5, j + 0.5)`. [`Photo::to_original`] maps a working-image point to the upright
//! full-resolution photo (`x / scale_x`, `y / scale_y`), [`Photo::from_original`] the other way.

use std::fmt;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

/// Default for [`IngestOptions::max_side`]: the working image's longest side, in pixels.
pub const DEFAULT_MAX_SIDE: u32 = 2048;
/// Default for [`IngestOptions::max_pixels`]: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
/// Default for [`IngestOptions::min_side`], in pixels.
pub const DEFAULT_MIN_SIDE: u32 = 32;
/// Default for [`IngestOptions::max_file_bytes`]: 256 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// What to do with an alpha channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlphaMode {
    /// Composite over an opaque background given as sRGB 8-bit values, in linear light.
    Composite {
        /// Background colour, sRGB-encoded `[r, g, b]`.
        background: [u8; 3],
    },
    /// Drop the alpha channel and keep the stored colour of every pixel, transparent or not.
    Ignore,
}

impl Default for AlphaMode {
    fn default() -> Self {
        AlphaMode::Composite {
            background: [255, 255, 255],
        }
    }
}

/// Limits and choices for photo ingest. [`Default`] gives the values Visage uses.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestOptions {
    /// Longest side of the working image in pixels (default [`DEFAULT_MAX_SIDE`]); larger photos are
    /// reduced by area averaging. Must be at least `min_side`.
    pub max_side: u32,
    /// Largest pixel count (width × height as stored) accepted (default [`DEFAULT_MAX_PIXELS`]).
    /// Checked from the header, before decoding.
    pub max_pixels: u64,
    /// Shortest accepted side in pixels (default [`DEFAULT_MIN_SIDE`]).
    pub min_side: u32,
    /// Largest file accepted by [`Photo::open`], in bytes (default [`DEFAULT_MAX_FILE_BYTES`]).
    pub max_file_bytes: u64,
    /// Apply the EXIF orientation tag (default `true`).
    pub apply_orientation: bool,
    /// Alpha handling (default: composite over white).
    pub alpha: AlphaMode,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_side: DEFAULT_MAX_SIDE,
            max_pixels: DEFAULT_MAX_PIXELS,
            min_side: DEFAULT_MIN_SIDE,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            apply_orientation: true,
            alpha: AlphaMode::default(),
        }
    }
}

/// The container format a photo came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// JPEG (JFIF / EXIF).
    Jpeg,
    /// PNG.
    Png,
    /// WebP (lossy or lossless).
    WebP,
    /// Windows bitmap.
    Bmp,
    /// TIFF.
    Tiff,
    /// GIF (first frame).
    Gif,
    /// Pixels handed over in memory ([`Photo::from_srgb8`], [`Photo::from_linear`]).
    Pixels,
}

impl SourceFormat {
    fn from_image(format: ImageFormat) -> Option<Self> {
        match format {
            ImageFormat::Jpeg => Some(SourceFormat::Jpeg),
            ImageFormat::Png => Some(SourceFormat::Png),
            ImageFormat::WebP => Some(SourceFormat::WebP),
            ImageFormat::Bmp => Some(SourceFormat::Bmp),
            ImageFormat::Tiff => Some(SourceFormat::Tiff),
            ImageFormat::Gif => Some(SourceFormat::Gif),
            _ => None,
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceFormat::Jpeg => "JPEG",
            SourceFormat::Png => "PNG",
            SourceFormat::WebP => "WebP",
            SourceFormat::Bmp => "BMP",
            SourceFormat::Tiff => "TIFF",
            SourceFormat::Gif => "GIF",
            SourceFormat::Pixels => "raw pixels",
        })
    }
}

/// Everything ingest knows about where a [`Photo`]'s pixels came from.
#[derive(Clone, Debug, PartialEq)]
pub struct PhotoMeta {
    /// File name (or a caller-given label) used in messages.
    pub source: String,
    /// Container format.
    pub format: SourceFormat,
    /// Width × height as stored in the file, before orientation.
    pub stored_size: [u32; 2],
    /// Width × height of the upright full-resolution photo (after orientation, before reduction).
    pub original_size: [u32; 2],
    /// EXIF orientation code (1–8) that was applied; 1 when none was present or applying it was
    /// switched off.
    pub orientation: u8,
    /// Channels in the source: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.
    pub channels: u8,
    /// Bits per sample in the source (8, 16 or 32).
    pub bits_per_sample: u8,
    /// Whether the source had an alpha channel.
    pub had_alpha: bool,
    /// Working width / original width (1 when not reduced).
    pub scale_x: f64,
    /// Working height / original height (1 when not reduced).
    pub scale_y: f64,
}

/// A decoded photo: upright, linear-light RGB, at most `max_side` on its longest side.
#[derive(Clone, Debug, PartialEq)]
pub struct Photo {
    width: u32,
    height: u32,
    /// Row-major interleaved linear RGB, `3 · width · height` values in `[0, 1]`.
    linear: Vec<f32>,
    meta: PhotoMeta,
}

/// Why a photo could not be ingested. Every message is a sentence naming the photo.
#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    /// The file could not be read.
    #[error("could not read the photo {source_name}: {error}")]
    Io {
        /// File name.
        source_name: String,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The file holds no bytes.
    #[error("the photo {source_name} is empty (0 bytes)")]
    Empty {
        /// File name.
        source_name: String,
    },
    /// The file is bigger than [`IngestOptions::max_file_bytes`].
    #[error(
        "the photo {source_name} is a {bytes}-byte file, more than the {limit}-byte limit Visage accepts"
    )]
    FileTooLarge {
        /// File name.
        source_name: String,
        /// File size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not one of the supported formats.
    #[error(
        "{source_name} is not a photo Visage can read: its first bytes match none of JPEG, PNG, WebP, BMP, TIFF or GIF"
    )]
    UnknownFormat {
        /// File name.
        source_name: String,
    },
    /// More pixels than [`IngestOptions::max_pixels`].
    #[error(
        "the photo {source_name} is {width}×{height} pixels ({megapixels} megapixels), more than the {limit_megapixels} megapixel limit Visage accepts",
        megapixels = fmt_megapixels(*width as u64 * *height as u64),
        limit_megapixels = fmt_megapixels(*limit)
    )]
    TooLarge {
        /// File name.
        source_name: String,
        /// Stored width.
        width: u32,
        /// Stored height.
        height: u32,
        /// Pixel limit.
        limit: u64,
    },
    /// A side shorter than [`IngestOptions::min_side`].
    #[error(
        "the photo {source_name} is only {width}×{height} pixels; Visage needs at least {min_side} pixels on each side to find a face"
    )]
    TooSmall {
        /// File name.
        source_name: String,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// The minimum.
        min_side: u32,
    },
    /// The file is damaged or cut short.
    #[error(
        "the photo {source_name} could not be decoded as {format}: the file is damaged or truncated ({detail})"
    )]
    Corrupt {
        /// File name.
        source_name: String,
        /// Format the header announced.
        format: SourceFormat,
        /// The decoder's explanation.
        detail: String,
    },
    /// A format feature the decoder lacks.
    #[error("the photo {source_name} uses a {format} feature Visage cannot decode ({detail})")]
    Unsupported {
        /// File name.
        source_name: String,
        /// Format.
        format: SourceFormat,
        /// The decoder's explanation.
        detail: String,
    },
    /// Pixels handed over in memory do not match the stated size.
    #[error(
        "the pixels for {source_name} do not match its size: {width}×{height} needs {expected} values, {actual} were given"
    )]
    PixelCount {
        /// Label.
        source_name: String,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Expected number of values.
        expected: usize,
        /// Given number of values.
        actual: usize,
    },
    /// The options contradict each other.
    #[error("the ingest options are inconsistent: {0}")]
    InvalidOptions(String),
}

fn fmt_megapixels(pixels: u64) -> String {
    let mp = pixels as f64 / 1e6;
    if mp >= 10.0 || (mp - mp.round()).abs() < 1e-9 {
        format!("{}", mp.round() as u64)
    } else {
        format!("{mp:.1}")
    }
}

/// Exact sRGB decoding of one value in `[0, 1]` (IEC 61966-2-1 piecewise curve).
#[inline]
pub fn srgb_to_linear(c: f32) -> f32 {
    srgb_to_linear_f64(c as f64) as f32
}

#[inline]
fn srgb_to_linear_f64(c: f64) -> f64 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// Exact sRGB encoding of one linear value (clamped to `[0, 1]`), the inverse of
/// [`srgb_to_linear`].
#[inline]
pub fn linear_to_srgb(l: f32) -> f32 {
    let l = if l.is_nan() { 0.0 } else { l.clamp(0.0, 1.0) } as f64;
    let s = if l <= 0.003_130_8 {
        12.92 * l
    } else {
        1.055 * l.powf(1.0 / 2.4) - 0.055
    };
    s as f32
}

/// Linear value → nearest 8-bit sRGB code.
#[inline]
pub fn linear_to_srgb8(l: f32) -> u8 {
    (linear_to_srgb(l) * 255.0).round() as u8
}

fn lut8() -> [f32; 256] {
    let mut t = [0.0f32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = srgb_to_linear_f64(i as f64 / 255.0) as f32;
    }
    t
}

fn lut16() -> Vec<f32> {
    (0..=u16::MAX)
        .map(|i| srgb_to_linear_f64(i as f64 / 65535.0) as f32)
        .collect()
}

impl Photo {
    /// Reads and decodes the photo file at `path` (format detected from the content, not the
    /// extension).
    pub fn open(path: impl AsRef<Path>, options: &IngestOptions) -> Result<Photo, PhotoError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let len = std::fs::metadata(path)
            .map_err(|error| PhotoError::Io {
                source_name: name.clone(),
                error,
            })?
            .len();
        if len > options.max_file_bytes {
            return Err(PhotoError::FileTooLarge {
                source_name: name,
                bytes: len,
                limit: options.max_file_bytes,
            });
        }
        let bytes = std::fs::read(path).map_err(|error| PhotoError::Io {
            source_name: name.clone(),
            error,
        })?;
        Self::decode_named(&bytes, &name, options)
    }

    /// Decodes a photo held in memory. Messages call it "the photo (in memory)"; use
    /// [`Photo::decode_named`] to give it a name.
    pub fn decode(bytes: &[u8], options: &IngestOptions) -> Result<Photo, PhotoError> {
        Self::decode_named(bytes, "(in memory)", options)
    }

    /// Decodes a photo held in memory; `name` is used in error messages and [`PhotoMeta::source`].
    pub fn decode_named(
        bytes: &[u8],
        name: &str,
        options: &IngestOptions,
    ) -> Result<Photo, PhotoError> {
        check_options(options)?;
        let source_name = name.to_string();
        if bytes.is_empty() {
            return Err(PhotoError::Empty { source_name });
        }
        let format = image::guess_format(bytes)
            .ok()
            .and_then(SourceFormat::from_image)
            .ok_or_else(|| PhotoError::UnknownFormat {
                source_name: source_name.clone(),
            })?;
        // Decoders are third-party code fed untrusted bytes: a panic inside one becomes an error.
        match catch_unwind(AssertUnwindSafe(|| {
            decode_inner(bytes, &source_name, format, options)
        })) {
            Ok(result) => result,
            Err(_) => Err(PhotoError::Corrupt {
                source_name,
                format,
                detail: "the decoder failed on malformed data".into(),
            }),
        }
    }

    /// Builds a photo from 8-bit sRGB pixels (`channels` = 3 for RGB, 4 for RGBA; row-major,
    /// interleaved), applying the same size limits, reduction and alpha handling as decoding.
    pub fn from_srgb8(
        width: u32,
        height: u32,
        channels: u8,
        pixels: &[u8],
        name: &str,
        options: &IngestOptions,
    ) -> Result<Photo, PhotoError> {
        check_options(options)?;
        let source_name = name.to_string();
        if channels != 3 && channels != 4 {
            return Err(PhotoError::InvalidOptions(format!(
                "pixels for {source_name} must have 3 or 4 channels, not {channels}"
            )));
        }
        let expected = width as usize * height as usize * channels as usize;
        if pixels.len() != expected {
            return Err(PhotoError::PixelCount {
                source_name,
                width,
                height,
                expected,
                actual: pixels.len(),
            });
        }
        check_dimensions(width, height, &source_name, options)?;
        let img = if channels == 3 {
            image::RgbImage::from_raw(width, height, pixels.to_vec()).map(DynamicImage::ImageRgb8)
        } else {
            image::RgbaImage::from_raw(width, height, pixels.to_vec()).map(DynamicImage::ImageRgba8)
        };
        let Some(img) = img else {
            return Err(PhotoError::PixelCount {
                source_name,
                width,
                height,
                expected,
                actual: pixels.len(),
            });
        };
        Ok(from_dynamic(
            &img,
            source_name,
            SourceFormat::Pixels,
            1,
            options,
        ))
    }

    /// Wraps linear RGB pixels that are already at working size (row-major, interleaved,
    /// `3 · width · height` values). No limits or reduction are applied; the metadata says the
    /// photo is its own original.
    pub fn from_linear(
        width: u32,
        height: u32,
        linear: Vec<f32>,
        name: &str,
    ) -> Result<Photo, PhotoError> {
        let expected = width as usize * height as usize * 3;
        if linear.len() != expected || width == 0 || height == 0 {
            return Err(PhotoError::PixelCount {
                source_name: name.to_string(),
                width,
                height,
                expected,
                actual: linear.len(),
            });
        }
        Ok(Photo {
            width,
            height,
            linear,
            meta: PhotoMeta {
                source: name.to_string(),
                format: SourceFormat::Pixels,
                stored_size: [width, height],
                original_size: [width, height],
                orientation: 1,
                channels: 3,
                bits_per_sample: 32,
                had_alpha: false,
                scale_x: 1.0,
                scale_y: 1.0,
            },
        })
    }

    /// Working width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Working height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// What ingest did to produce this photo.
    pub fn meta(&self) -> &PhotoMeta {
        &self.meta
    }

    /// Row-major interleaved linear RGB, `3 · width · height` values.
    pub fn linear_rgb(&self) -> &[f32] {
        &self.linear
    }

    /// Linear RGB of pixel `(x, y)`, or `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[f32; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = 3 * (y as usize * self.width as usize + x as usize);
        Some([self.linear[i], self.linear[i + 1], self.linear[i + 2]])
    }

    /// sRGB-encoded values in `[0, 1]`, row-major interleaved RGB (what most networks expect
    /// after dividing 8-bit input by 255).
    pub fn to_srgb_f32(&self) -> Vec<f32> {
        self.linear.iter().map(|&l| linear_to_srgb(l)).collect()
    }

    /// 8-bit sRGB, row-major interleaved RGB.
    pub fn to_srgb8(&self) -> Vec<u8> {
        self.linear.iter().map(|&l| linear_to_srgb8(l)).collect()
    }

    /// 8-bit sRGB as an [`image::RgbImage`] (for saving or for code that wants `image` types).
    pub fn to_rgb_image(&self) -> image::RgbImage {
        image::RgbImage::from_raw(self.width, self.height, self.to_srgb8())
            .expect("buffer length is 3 · width · height by construction")
    }

    /// Maps a point in working-image pixel coordinates to the upright full-resolution photo.
    pub fn to_original(&self, p: [f64; 2]) -> [f64; 2] {
        [p[0] / self.meta.scale_x, p[1] / self.meta.scale_y]
    }

    /// Maps a point in the upright full-resolution photo to working-image pixel coordinates.
    pub fn from_original(&self, p: [f64; 2]) -> [f64; 2] {
        [p[0] * self.meta.scale_x, p[1] * self.meta.scale_y]
    }
}

fn check_options(options: &IngestOptions) -> Result<(), PhotoError> {
    if options.min_side == 0 {
        return Err(PhotoError::InvalidOptions(
            "min_side must be at least 1 pixel".into(),
        ));
    }
    if options.max_side < options.min_side {
        return Err(PhotoError::InvalidOptions(format!(
            "max_side ({}) is smaller than min_side ({})",
            options.max_side, options.min_side
        )));
    }
    Ok(())
}

fn check_dimensions(
    width: u32,
    height: u32,
    source_name: &str,
    options: &IngestOptions,
) -> Result<(), PhotoError> {
    if width as u64 * height as u64 > options.max_pixels {
        return Err(PhotoError::TooLarge {
            source_name: source_name.to_string(),
            width,
            height,
            limit: options.max_pixels,
        });
    }
    if width < options.min_side || height < options.min_side {
        return Err(PhotoError::TooSmall {
            source_name: source_name.to_string(),
            width,
            height,
            min_side: options.min_side,
        });
    }
    Ok(())
}

fn map_image_error(err: ImageError, source_name: &str, format: SourceFormat) -> PhotoError {
    let source_name = source_name.to_string();
    match err {
        ImageError::Unsupported(e) => PhotoError::Unsupported {
            source_name,
            format,
            detail: e.to_string(),
        },
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            PhotoError::Corrupt {
                source_name,
                format,
                detail: "the data ends early".into(),
            }
        }
        other => PhotoError::Corrupt {
            source_name,
            format,
            detail: other.to_string(),
        },
    }
}

/// A JPEG whose entropy-coded data is cut short still decodes (the rest is filled in grey) with
/// the lenient decoder; refuse it: the end-of-image marker must follow the last start-of-scan.
/// Entropy-coded data cannot contain either marker (0xFF is byte-stuffed), so this is exact.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(sos) => bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

fn decode_inner(
    bytes: &[u8],
    source_name: &str,
    format: SourceFormat,
    options: &IngestOptions,
) -> Result<Photo, PhotoError> {
    let image_format = match format {
        SourceFormat::Jpeg => ImageFormat::Jpeg,
        SourceFormat::Png => ImageFormat::Png,
        SourceFormat::WebP => ImageFormat::WebP,
        SourceFormat::Bmp => ImageFormat::Bmp,
        SourceFormat::Tiff => ImageFormat::Tiff,
        SourceFormat::Gif => ImageFormat::Gif,
        SourceFormat::Pixels => unreachable!("decode_inner is only called for file formats"),
    };
    if format == SourceFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(PhotoError::Corrupt {
            source_name: source_name.to_string(),
            format,
            detail: "the JPEG data ends before its end-of-image marker".into(),
        });
    }
    let err = |e| map_image_error(e, source_name, format);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    // Header only: read the dimensions with no allocation limit, check ours, then decode under a
    // limit sized for exactly this image.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(err)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, source_name, options)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(
        decoder
            .total_bytes()
            .saturating_mul(2)
            .saturating_add(64 << 20),
    );
    decoder.set_limits(limits).map_err(err)?;
    let orientation = if options.apply_orientation {
        decoder
            .orientation()
            .map(|o| o.to_exif())
            .unwrap_or(1)
            .clamp(1, 8)
    } else {
        1
    };
    let img = DynamicImage::from_decoder(decoder).map_err(err)?;
    if img.width() != width || img.height() != height {
        return Err(PhotoError::Corrupt {
            source_name: source_name.to_string(),
            format,
            detail: format!(
                "the header says {width}×{height} but {}×{} pixels were decoded",
                img.width(),
                img.height()
            ),
        });
    }
    Ok(from_dynamic(
        &img,
        source_name.to_string(),
        format,
        orientation,
        options,
    ))
}

/// Per-axis area-averaging weights: for every source index, up to two `(dest index, weight)`
/// pairs. For every destination index the weights of its sources sum to 1.
fn area_weights(src: u32, dst: u32) -> Vec<[(u32, f32); 2]> {
    let ratio = dst as f64 / src as f64;
    (0..src)
        .map(|i| {
            let lo = i as f64 * ratio;
            let hi = (i + 1) as f64 * ratio;
            let j0 = (lo.floor() as u32).min(dst - 1);
            let split = (j0 + 1) as f64;
            if hi > split && j0 + 1 < dst {
                [
                    (j0, (split - lo) as f32),
                    (j0 + 1, (hi - split).min(1.0) as f32),
                ]
            } else {
                [(j0, (hi.min(split) - lo) as f32), (j0, 0.0)]
            }
        })
        .collect()
}

/// Converts one row of the decoded image to linear RGB (alpha composited or dropped).
struct RowReader<'a> {
    img: &'a DynamicImage,
    lut8: [f32; 256],
    lut16: Option<Vec<f32>>,
    background: Option<[f32; 3]>,
}

impl RowReader<'_> {
    fn read(&self, y: u32, out: &mut [f32]) {
        let w = self.img.width() as usize;
        let y = y as usize;
        let l8 = &self.lut8;
        let bg = self.background;
        let blend = |rgb: [f32; 3], a: f32, o: &mut [f32]| match bg {
            Some(b) => {
                for c in 0..3 {
                    o[c] = a * rgb[c] + (1.0 - a) * b[c];
                }
            }
            None => o.copy_from_slice(&rgb),
        };
        match self.img {
            DynamicImage::ImageLuma8(im) => {
                let row = &im.as_raw()[y * w..(y + 1) * w];
                for (o, &v) in out.chunks_exact_mut(3).zip(row) {
                    o.fill(l8[v as usize]);
                }
            }
            DynamicImage::ImageLumaA8(im) => {
                let row = &im.as_raw()[y * w * 2..(y + 1) * w * 2];
                for (o, p) in out.chunks_exact_mut(3).zip(row.chunks_exact(2)) {
                    let g = l8[p[0] as usize];
                    blend([g, g, g], p[1] as f32 / 255.0, o);
                }
            }
            DynamicImage::ImageRgb8(im) => {
                let row = &im.as_raw()[y * w * 3..(y + 1) * w * 3];
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = l8[v as usize];
                }
            }
            DynamicImage::ImageRgba8(im) => {
                let row = &im.as_raw()[y * w * 4..(y + 1) * w * 4];
                for (o, p) in out.chunks_exact_mut(3).zip(row.chunks_exact(4)) {
                    let rgb = [l8[p[0] as usize], l8[p[1] as usize], l8[p[2] as usize]];
                    blend(rgb, p[3] as f32 / 255.0, o);
                }
            }
            DynamicImage::ImageLuma16(im) => {
                let l16 = self.lut16.as_deref().unwrap_or(&[]);
                let row = &im.as_raw()[y * w..(y + 1) * w];
                for (o, &v) in out.chunks_exact_mut(3).zip(row) {
                    o.fill(l16[v as usize]);
                }
            }
            DynamicImage::ImageLumaA16(im) => {
                let l16 = self.lut16.as_deref().unwrap_or(&[]);
                let row = &im.as_raw()[y * w * 2..(y + 1) * w * 2];
                for (o, p) in out.chunks_exact_mut(3).zip(row.chunks_exact(2)) {
                    let g = l16[p[0] as usize];
                    blend([g, g, g], p[1] as f32 / 65535.0, o);
                }
            }
            DynamicImage::ImageRgb16(im) => {
                let l16 = self.lut16.as_deref().unwrap_or(&[]);
                let row = &im.as_raw()[y * w * 3..(y + 1) * w * 3];
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = l16[v as usize];
                }
            }
            DynamicImage::ImageRgba16(im) => {
                let l16 = self.lut16.as_deref().unwrap_or(&[]);
                let row = &im.as_raw()[y * w * 4..(y + 1) * w * 4];
                for (o, p) in out.chunks_exact_mut(3).zip(row.chunks_exact(4)) {
                    let rgb = [l16[p[0] as usize], l16[p[1] as usize], l16[p[2] as usize]];
                    blend(rgb, p[3] as f32 / 65535.0, o);
                }
            }
            DynamicImage::ImageRgb32F(im) => {
                let row = &im.as_raw()[y * w * 3..(y + 1) * w * 3];
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = srgb_to_linear(finite01(v));
                }
            }
            DynamicImage::ImageRgba32F(im) => {
                let row = &im.as_raw()[y * w * 4..(y + 1) * w * 4];
                for (o, p) in out.chunks_exact_mut(3).zip(row.chunks_exact(4)) {
                    let rgb = [
                        srgb_to_linear(finite01(p[0])),
                        srgb_to_linear(finite01(p[1])),
                        srgb_to_linear(finite01(p[2])),
                    ];
                    blend(rgb, finite01(p[3]), o);
                }
            }
            other => {
                // Any layout added to `image` later: go through its own RGBA f32 conversion.
                let row = other.crop_imm(0, y as u32, w as u32, 1).to_rgba32f();
                for (o, p) in out.chunks_exact_mut(3).zip(row.as_raw().chunks_exact(4)) {
                    let rgb = [
                        srgb_to_linear(finite01(p[0])),
                        srgb_to_linear(finite01(p[1])),
                        srgb_to_linear(finite01(p[2])),
                    ];
                    blend(rgb, finite01(p[3]), o);
                }
            }
        }
    }
}

fn finite01(v: f32) -> f32 {
    if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
}

/// Linearises, composites, reduces and orients a decoded image.
fn from_dynamic(
    img: &DynamicImage,
    source: String,
    format: SourceFormat,
    orientation: u8,
    options: &IngestOptions,
) -> Photo {
    let (sw, sh) = (img.width(), img.height());
    let color = img.color();
    let channels = color.channel_count();
    let bits_per_sample = (color.bits_per_pixel() / channels as u16) as u8;
    let had_alpha = color.has_alpha();
    let needs16 = bits_per_sample == 16;
    let background = match options.alpha {
        AlphaMode::Composite { background } if had_alpha => Some(background.map(|c| {
            let lut = lut8();
            lut[c as usize]
        })),
        _ => None,
    };
    let reader = RowReader {
        img,
        lut8: lut8(),
        lut16: needs16.then(lut16),
        background,
    };

    let longest = sw.max(sh);
    let (dw, dh) = if longest > options.max_side {
        let s = options.max_side as f64 / longest as f64;
        (
            ((sw as f64 * s).round() as u32).clamp(1, options.max_side),
            ((sh as f64 * s).round() as u32).clamp(1, options.max_side),
        )
    } else {
        (sw, sh)
    };

    let mut row = vec![0.0f32; sw as usize * 3];
    let mut stored = vec![0.0f32; dw as usize * dh as usize * 3];
    if (dw, dh) == (sw, sh) {
        for (y, out) in stored.chunks_exact_mut(sw as usize * 3).enumerate() {
            reader.read(y as u32, out);
        }
    } else {
        let wx = area_weights(sw, dw);
        let wy = area_weights(sh, dh);
        let mut hrow = vec![0.0f32; dw as usize * 3];
        for (y, ywts) in wy.iter().enumerate() {
            reader.read(y as u32, &mut row);
            hrow.fill(0.0);
            for (x, xwts) in wx.iter().enumerate() {
                let p = &row[3 * x..3 * x + 3];
                for &(j, w) in xwts {
                    if w > 0.0 {
                        let h = &mut hrow[3 * j as usize..3 * j as usize + 3];
                        h[0] += w * p[0];
                        h[1] += w * p[1];
                        h[2] += w * p[2];
                    }
                }
            }
            for &(j, w) in ywts {
                if w > 0.0 {
                    let dst = &mut stored
                        [j as usize * dw as usize * 3..(j as usize + 1) * dw as usize * 3];
                    for (d, &h) in dst.iter_mut().zip(&hrow) {
                        *d += w * h;
                    }
                }
            }
        }
    }

    // Area weights sum to 1 only up to rounding: keep values inside [0, 1].
    for v in &mut stored {
        *v = v.clamp(0.0, 1.0);
    }
    let (linear, ow, oh) = orient(&stored, dw, dh, orientation);
    let (orig_w, orig_h) = if orientation >= 5 { (sh, sw) } else { (sw, sh) };
    Photo {
        width: ow,
        height: oh,
        linear,
        meta: PhotoMeta {
            source,
            format,
            stored_size: [sw, sh],
            original_size: [orig_w, orig_h],
            orientation,
            channels,
            bits_per_sample,
            had_alpha,
            scale_x: ow as f64 / orig_w as f64,
            scale_y: oh as f64 / orig_h as f64,
        },
    }
}

/// Applies an EXIF orientation (1–8) to an interleaved RGB buffer; returns the buffer and its new
/// width and height. Codes 5–8 swap width and height.
fn orient(src: &[f32], w: u32, h: u32, code: u8) -> (Vec<f32>, u32, u32) {
    if code <= 1 || code > 8 {
        return (src.to_vec(), w, h);
    }
    let (w, h) = (w as usize, h as usize);
    let (ow, oh) = if code >= 5 { (h, w) } else { (w, h) };
    let mut out = vec![0.0f32; src.len()];
    for yo in 0..oh {
        for xo in 0..ow {
            // Source pixel that lands at (xo, yo).
            let (xs, ys) = match code {
                2 => (w - 1 - xo, yo),
                3 => (w - 1 - xo, h - 1 - yo),
                4 => (xo, h - 1 - yo),
                5 => (yo, xo),
                6 => (yo, h - 1 - xo),
                7 => (w - 1 - yo, h - 1 - xo),
                _ => (w - 1 - yo, xo),
            };
            let s = 3 * (ys * w + xs);
            let d = 3 * (yo * ow + xo);
            out[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
    (out, ow as u32, oh as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_weights_partition_unity() {
        for (src, dst) in [(10u32, 3u32), (4096, 2048), (7, 7), (1000, 999), (33, 1)] {
            let w = area_weights(src, dst);
            let mut sums = vec![0.0f64; dst as usize];
            for pair in &w {
                for &(j, v) in pair {
                    sums[j as usize] += v as f64;
                }
            }
            for s in sums {
                assert!((s - 1.0).abs() < 1e-5, "{src}->{dst}: {s}");
            }
        }
    }

    #[test]
    fn orient_matches_image_crate() {
        let mut img = image::RgbImage::new(5, 3);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 40) as u8, (y * 80) as u8, 7]);
        }
        let lin: Vec<f32> = img.as_raw().iter().map(|&v| v as f32).collect();
        for code in 1..=8u8 {
            let (out, ow, oh) = orient(&lin, 5, 3, code);
            let mut expected = DynamicImage::ImageRgb8(img.clone());
            expected.apply_orientation(image::metadata::Orientation::from_exif(code).unwrap());
            assert_eq!(
                (ow, oh),
                (expected.width(), expected.height()),
                "code {code}"
            );
            let exp: Vec<f32> = expected
                .to_rgb8()
                .as_raw()
                .iter()
                .map(|&v| v as f32)
                .collect();
            assert_eq!(out, exp, "code {code}");
        }
    }

    #[test]
    fn srgb_round_trip() {
        for i in 0..=255u8 {
            let l = srgb_to_linear(i as f32 / 255.0);
            assert_eq!(linear_to_srgb8(l), i);
        }
        assert_eq!(srgb_to_linear(0.04045), 0.04045 / 12.92);
        assert!((srgb_to_linear(0.5) - 0.214_041_14).abs() < 1e-7);
    }

    #[test]
    fn megapixel_formatting() {
        assert_eq!(fmt_megapixels(900_000_000), "900");
        assert_eq!(fmt_megapixels(100_000_000), "100");
        assert_eq!(fmt_megapixels(2_500_000), "2.5");
    }
}

//! Regions of interest: rotated rectangles in photo pixels, the crop that turns one into a
//! network input, and the transform that maps network outputs back to photo pixels.
//!
//! This mirrors MediaPipe's CPU path: `DetectionsToRectsCalculator` (rotation from two
//! keypoints), `RectTransformationCalculator` (scale, shift, `square_long`),
//! `ImageToTensorCalculator` (OpenCV `warpPerspective` with bilinear interpolation, the rect's
//! corners mapped onto the output's corners, 8-bit result) and
//! `LandmarkProjectionCalculator`.
//!
//! The bilinear sampler reproduces OpenCV's fixed-point arithmetic (source positions rounded
//! to 1/32 pixel, 15-bit weights, rounding to 8 bits), so crops of the same rect are the
//! bytes MediaPipe feeds its networks up to float rounding of the rect itself.

use image::RgbImage;

/// A rotated rectangle in photo pixel coordinates (x right, y down).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotatedRect {
    /// Centre x, pixels.
    pub cx: f32,
    /// Centre y, pixels.
    pub cy: f32,
    /// Width before rotation, pixels.
    pub width: f32,
    /// Height before rotation, pixels.
    pub height: f32,
    /// Rotation in radians; positive turns the rect's x axis towards +y (clockwise on screen).
    pub rotation: f32,
}

/// How pixels outside the photo are filled when a crop reaches past its border.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    /// Black (MediaPipe `BORDER_ZERO`, used for the letterboxed detector inputs).
    Zero,
    /// Nearest edge pixel (MediaPipe `BORDER_REPLICATE`, the default for landmark crops).
    Replicate,
}

/// Wraps an angle into `[-pi, pi)` as MediaPipe's `NormalizeRadians` does.
pub fn normalize_radians(angle: f32) -> f32 {
    let two_pi = 2.0 * std::f32::consts::PI;
    angle - two_pi * ((angle + std::f32::consts::PI) / two_pi).floor()
}

impl RotatedRect {
    /// The axis-aligned rect covering the whole `width × height` photo, padded to the aspect
    /// ratio of a `tensor_w × tensor_h` input (MediaPipe's `keep_aspect_ratio` letterbox).
    pub fn letterbox(width: u32, height: u32, tensor_w: usize, tensor_h: usize) -> Self {
        let (w, h) = (width as f32, height as f32);
        let tensor_aspect = tensor_h as f32 / tensor_w as f32;
        let roi_aspect = h / w;
        let (nw, nh) = if tensor_aspect > roi_aspect {
            (w, w * tensor_aspect)
        } else {
            (h / tensor_aspect, h)
        };
        RotatedRect {
            cx: 0.5 * w,
            cy: 0.5 * h,
            width: nw,
            height: nh,
            rotation: 0.0,
        }
    }

    /// The rect MediaPipe derives from two keypoints and a box: centre and size from the box,
    /// rotation so that the vector `start -> end` points at `target_angle` (radians,
    /// counter-clockwise on screen from +x), then scaled by `scale`, shifted by `shift`
    /// (fractions of the rect size along its own axes) and made square on its long side.
    pub fn from_box_and_keypoints(
        bbox: [f32; 4],
        start: [f32; 2],
        end: [f32; 2],
        target_angle: f32,
        scale: f32,
        shift: [f32; 2],
    ) -> Self {
        let [xmin, ymin, xmax, ymax] = bbox;
        let rotation =
            normalize_radians(target_angle - (-(end[1] - start[1])).atan2(end[0] - start[0]));
        let (w, h) = (xmax - xmin, ymax - ymin);
        let (mut cx, mut cy) = (0.5 * (xmin + xmax), 0.5 * (ymin + ymax));
        if rotation == 0.0 {
            cx += w * shift[0];
            cy += h * shift[1];
        } else {
            let (s, c) = rotation.sin_cos();
            cx += w * shift[0] * c - h * shift[1] * s;
            cy += w * shift[0] * s + h * shift[1] * c;
        }
        let side = w.max(h);
        RotatedRect {
            cx,
            cy,
            width: side * scale,
            height: side * scale,
            rotation,
        }
    }

    /// Photo position of the normalised crop coordinate `(u, v)` (`(0,0)` is the crop's
    /// top-left corner, `(1,1)` its bottom-right).
    #[inline]
    pub fn to_photo(&self, u: f32, v: f32) -> [f32; 2] {
        let (s, c) = self.rotation.sin_cos();
        let x = (u - 0.5) * self.width;
        let y = (v - 0.5) * self.height;
        [self.cx + c * x - s * y, self.cy + s * x + c * y]
    }

    /// Inverse of [`RotatedRect::to_photo`].
    #[inline]
    pub fn from_photo(&self, p: [f32; 2]) -> [f32; 2] {
        let (s, c) = self.rotation.sin_cos();
        let (dx, dy) = (p[0] - self.cx, p[1] - self.cy);
        let x = c * dx + s * dy;
        let y = -s * dx + c * dy;
        [x / self.width + 0.5, y / self.height + 0.5]
    }

    /// The four corners in photo pixels: top-left, top-right, bottom-right, bottom-left.
    pub fn corners(&self) -> [[f32; 2]; 4] {
        [
            self.to_photo(0.0, 0.0),
            self.to_photo(1.0, 0.0),
            self.to_photo(1.0, 1.0),
            self.to_photo(0.0, 1.0),
        ]
    }
}

/// A crop of a photo prepared for a network, with the transform back to the photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Crop {
    /// The crop, `size × size` (or the network's input size), 8-bit sRGB.
    pub image: RgbImage,
    /// The photo region the crop shows.
    pub rect: RotatedRect,
    /// Whether the crop is mirrored left-right (the iris network sees right eyes mirrored).
    pub flipped: bool,
}

impl Crop {
    /// Maps a point in crop pixel units (`0..width`, `0..height`, as the networks output them)
    /// back to photo pixels.
    pub fn to_photo(&self, x: f32, y: f32) -> [f32; 2] {
        let (w, h) = self.image.dimensions();
        let mut u = x / w as f32;
        if self.flipped {
            u = 1.0 - u;
        }
        self.rect.to_photo(u, y / h as f32)
    }

    /// The affine map from crop pixels to photo pixels as a 2×3 matrix `M`:
    /// `photo = M · [x, y, 1]` (the same map as [`Crop::to_photo`]).
    pub fn affine(&self) -> [[f32; 3]; 2] {
        let o = self.to_photo(0.0, 0.0);
        let ex = self.to_photo(1.0, 0.0);
        let ey = self.to_photo(0.0, 1.0);
        [
            [ex[0] - o[0], ey[0] - o[0], o[0]],
            [ex[1] - o[1], ey[1] - o[1], o[1]],
        ]
    }

    /// Scale from crop pixels to photo pixels (for depth values expressed in crop pixels).
    pub fn scale_to_photo(&self) -> f32 {
        self.rect.width / self.image.width() as f32
    }
}

const INTER_BITS: u32 = 5;
const INTER_TAB_SIZE: i32 = 1 << INTER_BITS;
const COEF_BITS: u32 = 15;
const COEF_SCALE: i32 = 1 << COEF_BITS;

/// OpenCV's fixed-point bilinear weights for a sub-pixel offset `(fx, fy)` in 1/32 units
/// (`initInterTab2D`): the float products times `2^15` are exact integers here, so they
/// always sum to `2^15` and need no correction.
fn bilinear_weights(fx: i32, fy: i32) -> [i32; 4] {
    let unit = COEF_SCALE / (INTER_TAB_SIZE * INTER_TAB_SIZE);
    let (ax, ay) = (fx, fy);
    let (bx, by) = (INTER_TAB_SIZE - fx, INTER_TAB_SIZE - fy);
    [
        by * bx * unit,
        by * ax * unit,
        ay * bx * unit,
        ay * ax * unit,
    ]
}

/// Crops `rect` out of `photo` into a `out_w × out_h` image, as MediaPipe's
/// `ImageToTensorCalculator` does on the CPU: output pixel `(x, y)` samples the photo at the
/// rect position `(x / out_w, y / out_h)` (optionally mirrored), bilinear, fixed point.
pub fn crop(
    photo: &RgbImage,
    rect: &RotatedRect,
    out_w: u32,
    out_h: u32,
    border: Border,
    flip: bool,
) -> Crop {
    let (pw, ph) = (photo.width() as i64, photo.height() as i64);
    let mut out = RgbImage::new(out_w, out_h);
    let raw = photo.as_raw();
    let (s, c) = rect.rotation.sin_cos();
    // Affine map from output pixel to photo pixel: p = origin + x * ex + y * ey.
    let sx = if flip { -1.0 } else { 1.0 };
    let ex = [
        c * rect.width / out_w as f32 * sx,
        s * rect.width / out_w as f32 * sx,
    ];
    let ey = [
        -s * rect.height / out_h as f32,
        c * rect.height / out_h as f32,
    ];
    let origin = rect.to_photo(if flip { 1.0 } else { 0.0 }, 0.0);
    let fetch = |x: i64, y: i64| -> Option<[u8; 3]> {
        let (x, y) = match border {
            Border::Zero => {
                if x < 0 || y < 0 || x >= pw || y >= ph {
                    return None;
                }
                (x, y)
            }
            Border::Replicate => (x.clamp(0, pw - 1), y.clamp(0, ph - 1)),
        };
        let i = ((y * pw + x) * 3) as usize;
        Some([raw[i], raw[i + 1], raw[i + 2]])
    };
    let row_bytes = (pw * 3) as usize;
    let dst = out.as_mut();
    for y in 0..out_h {
        for x in 0..out_w {
            let (xf, yf) = (x as f64, y as f64);
            let px = origin[0] as f64 + xf * ex[0] as f64 + yf * ey[0] as f64;
            let py = origin[1] as f64 + xf * ex[1] as f64 + yf * ey[1] as f64;
            let xi = (px * INTER_TAB_SIZE as f64).round_ties_even() as i64;
            let yi = (py * INTER_TAB_SIZE as f64).round_ties_even() as i64;
            let (x0, y0) = (xi >> INTER_BITS, yi >> INTER_BITS);
            let w = bilinear_weights(
                (xi & (INTER_TAB_SIZE as i64 - 1)) as i32,
                (yi & (INTER_TAB_SIZE as i64 - 1)) as i32,
            );
            let mut acc = [0i32; 3];
            if x0 >= 0 && y0 >= 0 && x0 + 1 < pw && y0 + 1 < ph {
                // All four taps inside the photo.
                let i = (y0 as usize) * row_bytes + (x0 as usize) * 3;
                let (r0, r1) = (&raw[i..i + 6], &raw[i + row_bytes..i + row_bytes + 6]);
                for ch in 0..3 {
                    acc[ch] = r0[ch] as i32 * w[0]
                        + r0[3 + ch] as i32 * w[1]
                        + r1[ch] as i32 * w[2]
                        + r1[3 + ch] as i32 * w[3];
                }
            } else {
                let taps = [
                    fetch(x0, y0),
                    fetch(x0 + 1, y0),
                    fetch(x0, y0 + 1),
                    fetch(x0 + 1, y0 + 1),
                ];
                for (tap, wt) in taps.iter().zip(w) {
                    if let Some(p) = tap {
                        for ch in 0..3 {
                            acc[ch] += p[ch] as i32 * wt;
                        }
                    }
                }
            }
            let o = ((y * out_w + x) * 3) as usize;
            for ch in 0..3 {
                dst[o + ch] = ((acc[ch] + (1 << (COEF_BITS - 1))) >> COEF_BITS).clamp(0, 255) as u8;
            }
        }
    }
    Crop {
        image: out,
        rect: *rect,
        flipped: flip,
    }
}

/// Crops `photo` to each rect at `size × size` (replicated border, as MediaPipe's landmark
/// graphs do) and stacks the crops into one NCHW batch scaled to `[0, 1]`.
pub(crate) fn crop_batch(
    photo: &RgbImage,
    rects: &[RotatedRect],
    size: u32,
) -> candle_core::Result<(Vec<Crop>, candle_core::Tensor)> {
    let crops: Vec<Crop> = rects
        .iter()
        .map(|r| crop(photo, r, size, size, Border::Replicate, false))
        .collect();
    let images: Vec<&RgbImage> = crops.iter().map(|c| &c.image).collect();
    let x = super::ops::images_to_tensor(&images, (0.0, 1.0), &candle_core::Device::Cpu)?;
    Ok((crops, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_weights_sum_to_one() {
        for fy in 0..32 {
            for fx in 0..32 {
                let w = bilinear_weights(fx, fy);
                assert_eq!(w.iter().sum::<i32>(), COEF_SCALE);
                assert!(w.iter().all(|&v| v >= 0));
            }
        }
        assert_eq!(bilinear_weights(0, 0), [COEF_SCALE, 0, 0, 0]);
    }

    #[test]
    fn identity_crop_copies_the_photo() {
        let mut photo = RgbImage::new(8, 6);
        for (x, y, p) in photo.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 30) as u8, (y * 40) as u8, (x * y) as u8]);
        }
        let rect = RotatedRect {
            cx: 4.0,
            cy: 3.0,
            width: 8.0,
            height: 6.0,
            rotation: 0.0,
        };
        let c = crop(&photo, &rect, 8, 6, Border::Zero, false);
        assert_eq!(c.image, photo);
        let flipped = crop(&photo, &rect, 8, 6, Border::Replicate, true);
        // Mirrored sampling maps output x to photo x = 8 - x; x = 0 samples past the edge.
        assert_eq!(flipped.image.get_pixel(1, 2), photo.get_pixel(7, 2));
        assert_eq!(flipped.image.get_pixel(0, 2), photo.get_pixel(7, 2));
    }

    #[test]
    fn rotation_and_projection_round_trip() {
        let rect = RotatedRect::from_box_and_keypoints(
            [10.0, 20.0, 50.0, 80.0],
            [20.0, 40.0],
            [40.0, 30.0],
            0.0,
            1.5,
            [0.0, 0.0],
        );
        // The eye vector rises to the right, so the crop is rotated counter-clockwise.
        assert!(rect.rotation < 0.0);
        assert!((rect.width - 90.0).abs() < 1e-4);
        let p = rect.to_photo(0.3, 0.8);
        let uv = rect.from_photo(p);
        assert!((uv[0] - 0.3).abs() < 1e-5 && (uv[1] - 0.8).abs() < 1e-5);
        // In the crop, the two keypoints end up level.
        let a = rect.from_photo([20.0, 40.0]);
        let b = rect.from_photo([40.0, 30.0]);
        assert!((a[1] - b[1]).abs() < 1e-5);
    }

    #[test]
    fn letterbox_pads_the_short_side() {
        let r = RotatedRect::letterbox(400, 300, 128, 128);
        assert_eq!((r.width, r.height), (400.0, 400.0));
        assert_eq!((r.cx, r.cy), (200.0, 150.0));
    }
}

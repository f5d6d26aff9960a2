//! SSD post-processing shared by the BlazeFace and palm detectors: anchor generation
//! (MediaPipe's `SsdAnchorsCalculator`), box/keypoint decoding
//! (`TensorsToDetectionsCalculator`) and weighted non-maximum suppression
//! (`NonMaxSuppressionCalculator` with `algorithm: WEIGHTED`).

use super::ops::sigmoid_f32;
use super::roi::RotatedRect;

/// Options of MediaPipe's SSD anchor generator, as its calculator options name them.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorOptions {
    /// Network input width, pixels.
    pub input_size_width: usize,
    /// Network input height, pixels.
    pub input_size_height: usize,
    /// Smallest anchor scale.
    pub min_scale: f32,
    /// Largest anchor scale.
    pub max_scale: f32,
    /// Anchor centre offset inside a cell, x (usually 0.5).
    pub anchor_offset_x: f32,
    /// Anchor centre offset inside a cell, y.
    pub anchor_offset_y: f32,
    /// Feature-map strides, one per layer; consecutive equal strides share one grid.
    pub strides: Vec<usize>,
    /// Aspect ratios per location.
    pub aspect_ratios: Vec<f32>,
    /// Extra anchor with this aspect ratio between two scales (0 disables it).
    pub interpolated_scale_aspect_ratio: f32,
    /// All anchors have width = height = 1 (the BlazeFace / palm models regress sizes directly).
    pub fixed_anchor_size: bool,
}

/// One SSD anchor, normalised to the network input (`[0, 1]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    /// Centre x.
    pub x_center: f32,
    /// Centre y.
    pub y_center: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

fn calculate_scale(min_scale: f32, max_scale: f32, index: usize, count: usize) -> f32 {
    if count == 1 {
        (min_scale + max_scale) * 0.5
    } else {
        min_scale + (max_scale - min_scale) * index as f32 / (count as f32 - 1.0)
    }
}

/// Generates anchors exactly as MediaPipe's `SsdAnchorsCalculator` (non-multiscale mode).
pub fn generate_anchors(o: &AnchorOptions) -> Vec<Anchor> {
    let mut anchors = Vec::new();
    let n = o.strides.len();
    let mut layer = 0;
    while layer < n {
        let mut heights = Vec::new();
        let mut widths = Vec::new();
        let mut ratios = Vec::new();
        let mut scales = Vec::new();
        let mut last = layer;
        while last < n && o.strides[last] == o.strides[layer] {
            let scale = calculate_scale(o.min_scale, o.max_scale, last, n);
            for &ar in &o.aspect_ratios {
                ratios.push(ar);
                scales.push(scale);
            }
            if o.interpolated_scale_aspect_ratio > 0.0 {
                let next = if last == n - 1 {
                    1.0
                } else {
                    calculate_scale(o.min_scale, o.max_scale, last + 1, n)
                };
                scales.push((scale * next).sqrt());
                ratios.push(o.interpolated_scale_aspect_ratio);
            }
            last += 1;
        }
        for (&r, &s) in ratios.iter().zip(&scales) {
            let sq = r.sqrt();
            heights.push(s / sq);
            widths.push(s * sq);
        }
        let stride = o.strides[layer];
        let fh = o.input_size_height.div_ceil(stride);
        let fw = o.input_size_width.div_ceil(stride);
        for y in 0..fh {
            for x in 0..fw {
                for k in 0..heights.len() {
                    let x_center = (x as f32 + o.anchor_offset_x) / fw as f32;
                    let y_center = (y as f32 + o.anchor_offset_y) / fh as f32;
                    let (w, h) = if o.fixed_anchor_size {
                        (1.0, 1.0)
                    } else {
                        (widths[k], heights[k])
                    };
                    anchors.push(Anchor {
                        x_center,
                        y_center,
                        w,
                        h,
                    });
                }
            }
        }
        layer = last;
    }
    anchors
}

/// Decoding options of MediaPipe's `TensorsToDetectionsCalculator` for the
/// `reverse_output_order: true` (x, y, w, h) layout these models use.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Values per box in the regressor tensor (4 box + 2 per keypoint).
    pub num_coords: usize,
    /// Keypoints per box.
    pub num_keypoints: usize,
    /// Scale of x offsets and keypoints (the input width).
    pub x_scale: f32,
    /// Scale of y offsets and keypoints (the input height).
    pub y_scale: f32,
    /// Scale of box widths.
    pub w_scale: f32,
    /// Scale of box heights.
    pub h_scale: f32,
    /// Raw scores are clipped to `±score_clipping_thresh` before the sigmoid.
    pub score_clipping_thresh: f32,
    /// Detections below this score are dropped.
    pub min_score_thresh: f32,
}

impl DecodeOptions {
    /// Options for a detector with a square `input_size` input whose boxes carry
    /// `num_keypoints` keypoints, as MediaPipe configures BlazeFace and palm detection
    /// (all scales = the input size, raw scores clipped at ±100).
    pub fn square(input_size: usize, num_keypoints: usize, min_score_thresh: f32) -> Self {
        let s = input_size as f32;
        Self {
            num_coords: 4 + 2 * num_keypoints,
            num_keypoints,
            x_scale: s,
            y_scale: s,
            w_scale: s,
            h_scale: s,
            score_clipping_thresh: 100.0,
            min_score_thresh,
        }
    }
}

/// A detection in coordinates normalised to some image (`[0, 1]` over its width/height):
/// a box and keypoints. The detectors return them in photo pixels instead.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDetection {
    /// Box `[xmin, ymin, xmax, ymax]`.
    pub bbox: [f32; 4],
    /// Keypoints `[x, y]`.
    pub keypoints: Vec<[f32; 2]>,
    /// Sigmoid score.
    pub score: f32,
}

impl RawDetection {
    /// The box `[xmin, ymin, xmax, ymax]` and the first `K` keypoints mapped from the network
    /// input (normalised to the crop `rect`) to photo pixels.
    pub fn to_photo<const K: usize>(&self, rect: &RotatedRect) -> ([f32; 4], [[f32; 2]; K]) {
        let a = rect.to_photo(self.bbox[0], self.bbox[1]);
        let b = rect.to_photo(self.bbox[2], self.bbox[3]);
        let mut keypoints = [[0f32; 2]; K];
        for (k, kp) in keypoints.iter_mut().zip(&self.keypoints) {
            *k = rect.to_photo(kp[0], kp[1]);
        }
        ([a[0], a[1], b[0], b[1]], keypoints)
    }
}

/// Decodes every box whose score passes `min_score_thresh` (coordinates normalised to the
/// network input), in anchor order. `raw_boxes` is `[num_anchors * num_coords]`,
/// `raw_scores` `[num_anchors]` (logits).
pub fn decode(
    raw_boxes: &[f32],
    raw_scores: &[f32],
    anchors: &[Anchor],
    o: &DecodeOptions,
) -> Vec<RawDetection> {
    let mut out = Vec::new();
    for (i, a) in anchors.iter().enumerate() {
        let logit = raw_scores[i].clamp(-o.score_clipping_thresh, o.score_clipping_thresh);
        let score = sigmoid_f32(logit);
        if score < o.min_score_thresh {
            continue;
        }
        let r = &raw_boxes[i * o.num_coords..(i + 1) * o.num_coords];
        let xc = r[0] / o.x_scale * a.w + a.x_center;
        let yc = r[1] / o.y_scale * a.h + a.y_center;
        let w = r[2] / o.w_scale * a.w;
        let h = r[3] / o.h_scale * a.h;
        if !(w >= 0.0 && h >= 0.0) {
            continue;
        }
        let keypoints = (0..o.num_keypoints)
            .map(|k| {
                [
                    r[4 + 2 * k] / o.x_scale * a.w + a.x_center,
                    r[4 + 2 * k + 1] / o.y_scale * a.h + a.y_center,
                ]
            })
            .collect();
        out.push(RawDetection {
            bbox: [xc - w / 2.0, yc - h / 2.0, xc + w / 2.0, yc + h / 2.0],
            keypoints,
            score,
        });
    }
    out
}

/// Intersection over union of two `[x0, y0, x1, y1]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix0 = a[0].max(b[0]);
    let iy0 = a[1].max(b[1]);
    let ix1 = a[2].min(b[2]);
    let iy1 = a[3].min(b[3]);
    if ix1 < ix0 || iy1 < iy0 {
        return 0.0;
    }
    let inter = (ix1 - ix0) * (iy1 - iy0);
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// MediaPipe's weighted non-maximum suppression: take the best remaining detection, gather
/// every remaining detection overlapping it by IoU above `threshold` (itself included),
/// and output the score-weighted average of their boxes and keypoints with the best score.
pub fn weighted_nms(mut dets: Vec<RawDetection>, threshold: f32) -> Vec<RawDetection> {
    // Stable sort, descending score (ties keep anchor order).
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    let mut remaining: Vec<usize> = (0..dets.len()).collect();
    while let Some(&best) = remaining.first() {
        let top = &dets[best];
        let (cand, rest): (Vec<usize>, Vec<usize>) = remaining
            .iter()
            .partition(|&&i| iou(&dets[i].bbox, &top.bbox) > threshold);
        let mut merged = top.clone();
        if !cand.is_empty() {
            let total: f32 = cand.iter().map(|&i| dets[i].score).sum();
            let mut bbox = [0f32; 4];
            let mut kps = vec![[0f32; 2]; top.keypoints.len()];
            for &i in &cand {
                let d = &dets[i];
                for (acc, v) in bbox.iter_mut().zip(d.bbox) {
                    *acc += v * d.score;
                }
                for (acc, kp) in kps.iter_mut().zip(&d.keypoints) {
                    acc[0] += kp[0] * d.score;
                    acc[1] += kp[1] * d.score;
                }
            }
            merged.bbox = bbox.map(|v| v / total);
            merged.keypoints = kps.iter().map(|k| [k[0] / total, k[1] / total]).collect();
        }
        out.push(merged);
        if rest.len() == remaining.len() {
            break;
        }
        remaining = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_range() -> AnchorOptions {
        AnchorOptions {
            input_size_width: 128,
            input_size_height: 128,
            min_scale: 0.1484375,
            max_scale: 0.75,
            anchor_offset_x: 0.5,
            anchor_offset_y: 0.5,
            strides: vec![8, 16, 16, 16],
            aspect_ratios: vec![1.0],
            interpolated_scale_aspect_ratio: 1.0,
            fixed_anchor_size: true,
        }
    }

    #[test]
    fn anchor_counts_match_the_models() {
        let a = generate_anchors(&short_range());
        assert_eq!(a.len(), 896);
        assert_eq!(
            a[0],
            Anchor {
                x_center: 0.5 / 16.0,
                y_center: 0.5 / 16.0,
                w: 1.0,
                h: 1.0
            }
        );
        // Two anchors per cell on the 16x16 grid, six on the 8x8 grid.
        assert_eq!(a[1].x_center, a[0].x_center);
        assert_eq!(a[512].x_center, 0.5 / 8.0);
        assert_eq!(a[517].x_center, 0.5 / 8.0);
        assert_eq!(a[518].x_center, 1.5 / 8.0);
        let full = AnchorOptions {
            input_size_width: 192,
            input_size_height: 192,
            strides: vec![4],
            interpolated_scale_aspect_ratio: 0.0,
            ..short_range()
        };
        assert_eq!(generate_anchors(&full).len(), 2304);
        // The palm model: same options as short range at 192 (2 + 6 anchors per cell).
        let palm = AnchorOptions {
            input_size_width: 192,
            input_size_height: 192,
            ..short_range()
        };
        assert_eq!(generate_anchors(&palm).len(), 2016);
    }

    #[test]
    fn weighted_nms_blends_overlapping_boxes() {
        let d = |x: f32, s: f32| RawDetection {
            bbox: [x, 0.0, x + 1.0, 1.0],
            keypoints: vec![[x + 0.5, 0.5]],
            score: s,
        };
        let out = weighted_nms(vec![d(0.0, 0.6), d(0.1, 0.9), d(5.0, 0.7)], 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        let x = (0.0 * 0.6 + 0.1 * 0.9) / 1.5;
        assert!((out[0].bbox[0] - x).abs() < 1e-6);
        assert!((out[0].keypoints[0][0] - (x + 0.5)).abs() < 1e-6);
        assert_eq!(out[1].bbox[0], 5.0);
    }
}

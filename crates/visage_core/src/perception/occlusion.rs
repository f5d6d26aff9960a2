//! The occlusion mask: which pixels of the face region do not show the face.
//!
//! No shippable face-parsing network exists, and FaceMesh reports no per-landmark
//! visibility (it draws plausible eyes under an opaque bar), so the mask is built from
//! evidence, as in occlusion-aware 3DMM fitting:
//!
//! - **Hands**: each detected hand's 21 landmarks become a filled silhouette (palm polygon
//!   and one capsule per finger bone). A hand over the face region is in front of it.
//! - **Person mask**: face-region pixels the selfie segmentation calls background are not
//!   face (the face oval overshoots the head, or an object is in front of it).
//! - **Appearance**: a robust model of the visible skin — a chromaticity that varies
//!   linearly over the face (coloured side light) and with the shading (skin is more
//!   saturated in its shadows) with a Gaussian spread, times a smooth
//!   shading field (a quadratic in face coordinates for log-luminance, flat from deep shadow
//!   to highlight), plus partly desaturated specular highlights — competes against a colour
//!   model of the occluder (a Gaussian mixture fitted to the cells currently believed
//!   occluded; a component is dropped when it is a colour the visible skin shows and the
//!   skin model explains; a component found mostly under a detected hand is the hand's
//!   colour and counts only near that hand, since elsewhere the same colour is the face's
//!   own skin in light or shadow) and a uniform outlier density. The skin model starts from the
//!   chromaticity mode that covers most skin anchors (forehead, under the eyes, nose,
//!   cheeks, chin: the skin is the one colour found all over the face, an occluder covers a
//!   few of them) and is refitted with rejection tightening from 4 to 3 standard deviations;
//!   when the runner-up mode scored close, EM also runs from it and the converged skin model
//!   that leaves more anchors visible wins (a large occluder taken for the skin leaves the
//!   face "occluded"); when every such model leaves most of the face occluded, EM also runs
//!   from the other candidate colours. Eyes, brows, lips and the mouth are expected *not* to
//!   look like skin: there the face hypothesis is a broad density, and only an occluder model
//!   that explains the pixels better marks them occluded (sunglasses over an eye, a mask over
//!   the lips).
//!
//! The evidence is summed as per-cell log-odds and regularised by mean-field inference on a
//! Potts model (neighbouring cells agree), alternating with re-fitting the skin and occluder
//! models (EM); small visible islands enclosed by occluded cells are then closed. FaceMesh
//! draws a smaller chin under a mask, a scarf or a hand, so where an occluder covers most of
//! the oval's lower rim the mask follows it past the oval, up to
//! [`OcclusionOptions::extension`] of the face width, through cells that look like the
//! occluder (or that a hand covers) and connect to it. Around the rest of the oval (forehead,
//! temples, cheeks) the mask follows, up to [`OcclusionOptions::ring`] of the face width,
//! cells that the skin model explains worse than the occluder or an outlier and that connect
//! to occluded face cells: hair over the temples goes on past FaceMesh's oval, which itself
//! moves by a few per cent of the face width from photo to photo.
//! [`Occlusion::refine_with_residuals`] adds the fitting stage's photometric residuals as one
//! more log-odds term and solves again (occlusion-aware fitting).
//!
//! Everything runs on a grid over the face's bounding box (at most
//! [`OcclusionOptions::max_grid`] cells on the long side of the box, whole photo pixels per
//! cell; the grid reaches past the box by the extension and the ring), so
//! the cost does not grow with the photo size. [`PixelMap::sample`] maps back to photo
//! pixels.
//!
//! Landmark indices below are FaceMesh's (MediaPipe's `face_mesh_connections`, Apache-2.0).

use image::{GrayImage, Luma, RgbImage};
use nalgebra::{Matrix2, Matrix3, SMatrix, SVector, Vector2, Vector3};
use rayon::prelude::*;

use super::face_mesh::FaceLandmarks;
use super::ops::sigmoid_f32 as sigmoid;
use super::pipeline::HandResult;
use super::selfie::PersonMask;
use crate::photo::srgb_to_linear;

/// The face oval, clockwise in the image starting at the top of the forehead.
pub const FACE_OVAL: [usize; 36] = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
    148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
];
/// The subject's right eye contour (image left in a frontal photo).
pub const RIGHT_EYE: [usize; 16] = [
    33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
];
/// The subject's left eye contour.
pub const LEFT_EYE: [usize; 16] = [
    263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466,
];
/// The subject's right eyebrow (lower edge, then upper edge back).
pub const RIGHT_BROW: [usize; 10] = [46, 53, 52, 65, 55, 107, 66, 105, 63, 70];
/// The subject's left eyebrow (lower edge, then upper edge back).
pub const LEFT_BROW: [usize; 10] = [276, 283, 282, 295, 285, 336, 296, 334, 293, 300];
/// The outer lip contour.
pub const LIPS_OUTER: [usize; 20] = [
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
];
/// The inner lip contour (the mouth opening).
pub const LIPS_INNER: [usize; 20] = [
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191,
];

/// Skin anchors: groups of landmarks on skin spread over the face, with weights. The skin is
/// the one colour present in most of them; an occluder covers a few at most. The upper face
/// (forehead, nose bridge) weighs more: masks, scarves, food and hands at the mouth cover the
/// lower face more often, and hair over the forehead is dark.
const SKIN_ANCHORS: [(&[usize], f32); 10] = [
    (&[151, 9], 1.5),
    (&[104, 69], 1.5),
    (&[333, 299], 1.5),
    (&[168, 6], 1.5),
    (&[117, 118, 119, 101, 50], 1.0),
    (&[346, 347, 348, 330, 280], 1.0),
    (&[197, 195, 5, 4], 1.0),
    (&[205, 207, 187], 1.0),
    (&[425, 427, 411], 1.0),
    (&[152, 175, 199, 200], 1.0),
];

/// Settings of [`Occlusion::estimate`]. The defaults are what `docs/perception.md` measures.
#[derive(Debug, Clone, PartialEq)]
pub struct OcclusionOptions {
    /// Longest side of the working grid, cells (the face box is divided into whole-pixel
    /// cells so that it has at most this many along its longer side).
    pub max_grid: usize,
    /// Prior log-odds of a face pixel being occluded.
    pub prior_log_odds: f32,
    /// Log-odds added at full hand-silhouette coverage.
    pub hand_weight: f32,
    /// Weight of the person-mask evidence (log-odds per unit of `log((1-p)/p)`, applied where
    /// the person probability is below one half).
    pub person_weight: f32,
    /// Use the appearance model (skin versus occluder colours).
    pub appearance: bool,
    /// Strength of the neighbour agreement in the mean-field smoothing (log-odds).
    pub smoothness: f32,
    /// Radius of the smoothing neighbourhood as a fraction of the face width.
    pub smoothing_radius: f32,
    /// EM rounds (re-fit the colour models, then smooth).
    pub rounds: usize,
    /// How far below the face oval's lower half the mask may follow an occluder, as a
    /// fraction of the face width; 0 keeps the mask inside the oval. FaceMesh's jaw line is
    /// its least reliable part under a mask, a scarf or a hand (it draws a smaller chin), so
    /// the face there can reach past the oval, under the occluder.
    pub extension: f32,
    /// How far past the rest of the oval (forehead, temples, cheeks) the mask may follow
    /// what hides the face, as a fraction of the face width; 0 keeps it inside the oval
    /// there. FaceMesh's oval moves by a few per cent of the face width between photos of
    /// the same face, and hair over the temples or the forehead goes on past it.
    pub ring: f32,
}

impl Default for OcclusionOptions {
    fn default() -> Self {
        Self {
            max_grid: 192,
            prior_log_odds: -1.0,
            hand_weight: 8.0,
            person_weight: 1.0,
            appearance: true,
            smoothness: 3.0,
            smoothing_radius: 0.025,
            rounds: 5,
            extension: 0.12,
            ring: 0.06,
        }
    }
}

/// A scalar map over an axis-aligned window of the photo, one value per square cell of
/// `cell` × `cell` photo pixels; zero outside the window.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelMap {
    /// Photo pixel column of the window's left edge.
    pub x0: u32,
    /// Photo pixel row of the window's top edge.
    pub y0: u32,
    /// Photo pixels per cell side.
    pub cell: u32,
    /// Cells across.
    pub width: usize,
    /// Cells down.
    pub height: usize,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl PixelMap {
    /// The value at a photo position (pixel centres at `x + 0.5`), bilinear between cell
    /// centres, zero outside the window.
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let c = self.cell as f32;
        let gx = (x - self.x0 as f32) / c;
        let gy = (y - self.y0 as f32) / c;
        if !(gx >= 0.0 && gy >= 0.0 && gx <= self.width as f32 && gy <= self.height as f32) {
            return 0.0;
        }
        super::bilinear(&self.values, self.width, self.height, gx - 0.5, gy - 0.5)
    }

    /// The map at the photo's size as an 8-bit image (255 = 1.0).
    pub fn to_photo_size(&self, width: u32, height: u32) -> GrayImage {
        GrayImage::from_fn(width, height, |x, y| {
            let v = self.sample(x as f32 + 0.5, y as f32 + 0.5);
            Luma([(v * 255.0).round().clamp(0.0, 255.0) as u8])
        })
    }

    /// Cell `(i, j)` (column, row) value.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.values[j * self.width + i]
    }

    /// The photo position of cell `(i, j)`'s centre.
    pub fn cell_center(&self, i: usize, j: usize) -> [f32; 2] {
        let c = self.cell as f32;
        [
            self.x0 as f32 + (i as f32 + 0.5) * c,
            self.y0 as f32 + (j as f32 + 0.5) * c,
        ]
    }
}

/// What a grid cell is expected to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    Outside,
    Skin,
    /// Eyes, brows, lips, mouth: expected not to look like skin.
    Feature,
}

/// The per-cell log-odds contributions, kept so that more evidence can be added later.
#[derive(Debug, Clone, PartialEq)]
struct Evidence {
    hands: Vec<f32>,
    person: Vec<f32>,
    residual: Vec<f32>,
    /// Whether a cell has residual evidence (then the fitted face, a better model of the
    /// face's appearance than the skin model, outweighs the appearance term).
    has_residual: Vec<bool>,
    /// Person-mask evidence in the extension band (background there is not an occluder of
    /// the face but the world beside it: negative).
    band_person: Vec<f32>,
}

/// The occlusion mask of one face, with the face region it covers and the evidence behind
/// it. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Occlusion {
    face: PixelMap,
    occluded: PixelMap,
    hands: PixelMap,
    zones: Vec<Zone>,
    /// Cells outside the face oval where the mask may follow an occluder (see
    /// [`OcclusionOptions::extension`]).
    band: Vec<bool>,
    /// Face cells along the stretch of the oval the band borders.
    rim: Vec<bool>,
    /// How near each cell is to a detected hand's silhouette (1 inside, 0 beyond
    /// `HAND_NEAR` face widths).
    hand_near: Vec<f32>,
    /// Cells just outside the rest of the oval (forehead, temples, cheeks), within
    /// [`OcclusionOptions::ring`] of it.
    ring: Vec<bool>,
    /// Skin anchor group per cell (0: none; see `SKIN_ANCHORS`).
    anchors: Vec<u8>,
    /// Linear-light colour features per cell (log-chromaticity ×2, log-luminance).
    features: Vec<[f32; 3]>,
    /// Face coordinates per cell (eye line horizontal, face width 1).
    coords: Vec<[f32; 2]>,
    evidence: Evidence,
    options: OcclusionOptions,
    face_width_cells: f32,
}

impl Occlusion {
    /// Estimates the occlusion mask of one face from its 468 landmarks (photo pixels), the
    /// hands found in the same photo and the person mask, on the 8-bit sRGB photo the
    /// landmarks were computed on.
    pub fn estimate(
        photo: &RgbImage,
        face: &FaceLandmarks,
        hands: &[HandResult],
        person: Option<&PersonMask>,
        options: &OcclusionOptions,
    ) -> Occlusion {
        let pts: Vec<[f32; 2]> = face.points.iter().map(|p| [p[0], p[1]]).collect();
        let face_width = dist(pts[234], pts[454]).max(1.0);
        let extension = options.extension.max(0.0) * face_width;
        let oval = polygon(&pts, &FACE_OVAL);

        // Face coordinates: origin at the oval's centroid, x along the eye line, unit = face
        // width.
        let (ex, ey) = {
            let (a, b) = (pts[33], pts[263]);
            let l = dist(a, b).max(1e-3);
            (
                [(b[0] - a[0]) / l, (b[1] - a[1]) / l],
                [-(b[1] - a[1]) / l, (b[0] - a[0]) / l],
            )
        };
        let origin = centroid(&oval);
        let to_face = |p: [f32; 2]| {
            let d = [p[0] - origin[0], p[1] - origin[1]];
            [
                (d[0] * ex[0] + d[1] * ex[1]) / face_width,
                (d[0] * ey[0] + d[1] * ey[1]) / face_width,
            ]
        };
        // The grid also covers the extension band: the oval's lower points widened by the
        // extension.
        let band_box = (extension > 0.0)
            .then(|| {
                let lower = oval.iter().filter(|p| {
                    let [u, v] = to_face(**p);
                    v > BAND_SLOPE * u.abs()
                });
                widened_box(lower, extension)
            })
            .flatten();
        // And the ring around the rest of the oval.
        let ring_width = options.ring.max(0.0) * face_width;
        let ring_box = (ring_width > 0.0)
            .then(|| widened_box(oval.iter(), ring_width))
            .flatten();
        let extra = match (band_box, ring_box) {
            (Some(a), Some(b)) => Some([
                a[0].min(b[0]),
                a[1].min(b[1]),
                a[2].max(b[2]),
                a[3].max(b[3]),
            ]),
            (a, b) => a.or(b),
        };
        let grid = Grid::new(photo, &pts, options.max_grid, extra);
        let n = grid.width * grid.height;

        // Zones.
        let features: Vec<Vec<[f32; 2]>> = [
            &RIGHT_EYE[..],
            &LEFT_EYE[..],
            &RIGHT_BROW[..],
            &LEFT_BROW[..],
            &LIPS_OUTER[..],
        ]
        .iter()
        .map(|idx| polygon(&pts, idx))
        .collect();
        // Eyelashes, eyeliner and brow hair reach past the contours.
        let feature_margin = 0.04 * face_width;
        let feature_boxes: Vec<[f32; 4]> = features
            .iter()
            .map(|poly| widened_box(poly.iter(), feature_margin).unwrap_or([0.0; 4]))
            .collect();
        let mut zones = vec![Zone::Outside; n];
        let mut face_values = vec![0.0f32; n];
        for j in 0..grid.height {
            for i in 0..grid.width {
                let p = grid.center(i, j);
                if !inside(&oval, p) {
                    continue;
                }
                let k = j * grid.width + i;
                face_values[k] = 1.0;
                zones[k] = if features.iter().zip(&feature_boxes).any(|(poly, b)| {
                    // Cells outside a contour's box widened by the margin are farther than
                    // the margin from it: skip the exact tests there.
                    p[0] >= b[0]
                        && p[1] >= b[1]
                        && p[0] <= b[2]
                        && p[1] <= b[3]
                        && (inside(poly, p) || edge_distance(poly, p) < feature_margin)
                }) {
                    Zone::Feature
                } else {
                    Zone::Skin
                };
            }
        }

        // Anchor group of each skin cell (0: none), within 7 % of the face width of a group's
        // landmarks.
        let anchor_radius = 0.07 * face_width;
        let mut anchors = vec![0u8; n];
        for j in 0..grid.height {
            for i in 0..grid.width {
                let k = j * grid.width + i;
                if zones[k] != Zone::Skin {
                    continue;
                }
                let p = grid.center(i, j);
                for (g, (idx, _)) in SKIN_ANCHORS.iter().enumerate() {
                    if idx.iter().any(|&l| dist(pts[l], p) < anchor_radius) {
                        anchors[k] = g as u8 + 1;
                        break;
                    }
                }
            }
        }

        let coords: Vec<[f32; 2]> = (0..n)
            .map(|k| to_face(grid.center(k % grid.width, k / grid.width)))
            .collect();

        // The extension band below the oval's lower part, within `extension` of it, and the
        // rim of face cells on the inner side of the same stretch of the oval.
        let (band, rim): (Vec<bool>, Vec<bool>) = (0..n)
            .map(|k| {
                let [u, v] = coords[k];
                if v <= BAND_SLOPE * u.abs() || extension <= 0.0 {
                    return (false, false);
                }
                let near =
                    edge_distance(&oval, grid.center(k % grid.width, k / grid.width)) < extension;
                let outside = zones[k] == Zone::Outside;
                (near && outside, near && !outside)
            })
            .unzip();

        // The ring just outside the oval's upper part and sides.
        let ring: Vec<bool> = (0..n)
            .map(|k| {
                let [u, v] = coords[k];
                ring_width > 0.0
                    && zones[k] == Zone::Outside
                    && !band[k]
                    && v <= BAND_SLOPE * u.abs()
                    && edge_distance(&oval, grid.center(k % grid.width, k / grid.width))
                        < ring_width
            })
            .collect();

        // Hands.
        let mut hand_cov = vec![0.0f32; n];
        let mut hand_near = vec![0.0f32; n];
        for hand in hands {
            let s = HandShape::new(&hand.landmarks.points);
            for j in 0..grid.height {
                for i in 0..grid.width {
                    let k = j * grid.width + i;
                    if zones[k] == Zone::Outside && !band[k] && !ring[k] {
                        continue;
                    }
                    let d = s.depth(grid.center(i, j));
                    hand_cov[k] = hand_cov[k].max(HandShape::coverage(d, grid.cell as f32));
                    hand_near[k] = hand_near[k].max(HandShape::nearness(d, HAND_NEAR * face_width));
                }
            }
        }
        let hands_lo: Vec<f32> = hand_cov.iter().map(|c| c * options.hand_weight).collect();

        // Person mask: background inside the oval is something in front of the face; in the
        // band it is the world beside the face.
        let person_lo: Vec<f32> = (0..n)
            .map(|k| {
                let Some(m) = person else { return 0.0 };
                if zones[k] == Zone::Outside && !band[k] && !ring[k] {
                    return 0.0;
                }
                let p = grid.center(k % grid.width, k / grid.width);
                let v = m.sample(p[0], p[1]).clamp(0.02, 0.98);
                if v < 0.5 {
                    options.person_weight * ((1.0 - v) / v).ln()
                } else {
                    0.0
                }
            })
            .collect();
        let (person_lo, band_person): (Vec<f32>, Vec<f32>) = person_lo
            .iter()
            .zip(band.iter().zip(&ring))
            .map(|(&l, (&b, &r))| if b || r { (0.0, -l) } else { (l, 0.0) })
            .unzip();

        let mut occ = Occlusion {
            face: grid.map(face_values.clone()),
            occluded: grid.map(vec![0.0; n]),
            hands: grid.map(hand_cov),
            zones,
            band,
            rim,
            hand_near,
            ring,
            anchors,
            features: grid.features,
            coords,
            evidence: Evidence {
                hands: hands_lo,
                person: person_lo,
                residual: vec![0.0; n],
                has_residual: vec![false; n],
                band_person,
            },
            options: options.clone(),
            face_width_cells: face_width / grid.cell as f32,
        };
        occ.solve();
        occ
    }

    /// Adds the photometric residuals of a fitted face as evidence and solves again: cells
    /// whose mean residual the face explains (a Gaussian of standard deviation `sigma`) lean
    /// visible, cells it does not (a uniform outlier density on `[0, outlier_range]`) lean
    /// occluded. `residual(x, y)` gives the absolute residual (any consistent unit, e.g.
    /// linear RGB averaged over channels) at a photo pixel, or `None` where the fit rendered
    /// nothing; it replaces earlier residual evidence. Where residuals exist they outweigh
    /// the skin-colour evidence (its log-odds are scaled by a quarter); hand evidence stays.
    pub fn refine_with_residuals(
        &mut self,
        residual: impl Fn(u32, u32) -> Option<f32>,
        sigma: f32,
        outlier_range: f32,
    ) {
        let sigma = sigma.max(1e-6);
        let log_uniform = -(outlier_range.max(sigma)).ln();
        let log_gauss0 = -(sigma * (std::f32::consts::TAU).sqrt()).ln();
        let (w, cell) = (self.face.width, self.face.cell);
        for k in 0..self.zones.len() {
            self.evidence.residual[k] = 0.0;
            self.evidence.has_residual[k] = false;
            if self.zones[k] == Zone::Outside && !self.band[k] && !self.ring[k] {
                continue;
            }
            let (i, j) = ((k % w) as u32, (k / w) as u32);
            let (mut sum, mut count) = (0.0f32, 0u32);
            for y in 0..cell {
                for x in 0..cell {
                    let px = self.face.x0 + i * cell + x;
                    let py = self.face.y0 + j * cell + y;
                    if let Some(r) = residual(px, py) {
                        sum += r.abs();
                        count += 1;
                    }
                }
            }
            if count > 0 {
                let r = sum / count as f32;
                let log_face = log_gauss0 - 0.5 * (r / sigma).powi(2);
                self.evidence.residual[k] = (log_uniform - log_face).clamp(-6.0, 6.0);
                self.evidence.has_residual[k] = true;
            }
        }
        self.solve();
    }

    /// Probability that each cell is occluded: over the face region, and below its lower
    /// half where an occluder found on the face continues past the oval (up to
    /// [`OcclusionOptions::extension`]); zero elsewhere.
    pub fn occluded(&self) -> &PixelMap {
        &self.occluded
    }

    /// The face region (1 inside the FaceMesh face oval, 0 outside).
    pub fn face_mask(&self) -> &PixelMap {
        &self.face
    }

    /// Coverage of the cells by detected hands' silhouettes, in `[0, 1]`.
    pub fn hand_coverage(&self) -> &PixelMap {
        &self.hands
    }

    /// The options the mask was estimated with.
    pub fn options(&self) -> &OcclusionOptions {
        &self.options
    }

    /// The occluded share of the face region's area, in `[0, 1]`.
    pub fn occluded_fraction(&self) -> f32 {
        let (mut occ, mut face) = (0.0f32, 0.0f32);
        for (k, z) in self.zones.iter().enumerate() {
            if *z != Zone::Outside {
                face += 1.0;
                occ += (self.occluded.values[k] > 0.5) as u8 as f32;
            }
        }
        if face > 0.0 { occ / face } else { 0.0 }
    }

    /// Visibility in `[0, 1]` of points given in photo pixels (e.g. the 468 landmarks):
    /// one minus the occlusion probability around the point (the mean over the face-region
    /// part of the 3 × 3 cells centred on it, so that points on the face's outline are
    /// judged by the face side), 1 for points away from the face region, and 0 for points
    /// outside the photo (`photo_size`).
    pub fn visibility(&self, points: &[[f32; 3]], photo_size: (u32, u32)) -> Vec<f32> {
        let c = self.occluded.cell as f32;
        points
            .iter()
            .map(|p| {
                if !(p[0] >= 0.0
                    && p[1] >= 0.0
                    && p[0] < photo_size.0 as f32
                    && p[1] < photo_size.1 as f32)
                {
                    return 0.0;
                }
                // The 3 × 3 cells around the point; for points just outside the face region
                // (FaceMesh puts far-side points of a turned face there), 7 × 7.
                let (mut occ, mut face) = (0.0, 0.0);
                for r in [1i32, 3] {
                    for dy in -r..=r {
                        for dx in -r..=r {
                            let (x, y) = (p[0] + dx as f32 * c, p[1] + dy as f32 * c);
                            let f = self.face.sample(x, y);
                            occ += self.occluded.sample(x, y) * f;
                            face += f;
                        }
                    }
                    if face > 0.0 {
                        break;
                    }
                }
                if face > 0.0 {
                    (1.0 - occ / face).clamp(0.0, 1.0)
                } else {
                    1.0
                }
            })
            .collect()
    }

    /// Runs the EM rounds: colour models from the current mask, evidence, mean-field.
    fn solve(&mut self) {
        let n = self.zones.len();
        let o = self.options.clone();
        let fixed: Vec<f32> = (0..n)
            .map(|k| {
                o.prior_log_odds
                    + self.evidence.hands[k]
                    + self.evidence.person[k]
                    + self.evidence.residual[k]
            })
            .collect();
        let mut q: Vec<f32> = fixed.iter().map(|&a| sigmoid(a)).collect();
        for (k, z) in self.zones.iter().enumerate() {
            if *z == Zone::Outside {
                q[k] = 0.0;
            }
        }
        let face: Vec<bool> = self.zones.iter().map(|z| *z != Zone::Outside).collect();
        let radius = (o.smoothing_radius * self.face_width_cells)
            .round()
            .max(1.0) as usize;
        // Appearance: run EM from the best start for the skin model, and from the runner-up
        // when it scored close; keep the solution whose converged skin model covers the most
        // skin anchors (an occluder taken for the skin leaves the rest of the face
        // "occluded", and its colour is farther from the skin locus).
        let (cells, modes) = if o.appearance {
            let cells: Vec<usize> = (0..n).filter(|&k| self.zones[k] == Zone::Skin).collect();
            let modes = SkinModel::modes(&self.features, &cells, &self.anchors, &q);
            (cells, modes)
        } else {
            (Vec::new(), Vec::new())
        };
        let start = |m: [f64; 2]| {
            Some(SkinModel::start_at(
                &self.features,
                &self.coords,
                &cells,
                &q,
                m,
            ))
        };
        let (first, rest): (Vec<_>, Vec<_>) = modes.into_iter().partition(|m| m.0);
        let first: Vec<Option<SkinModel>> = if first.is_empty() {
            vec![None]
        } else {
            first.iter().map(|m| start(m.1)).collect()
        };
        let run_all = |starts: Vec<Option<SkinModel>>| -> Vec<(f32, EmRun)> {
            starts
                .into_par_iter()
                .map(|start| {
                    let run = self.em(&fixed, q.clone(), start, &face, radius);
                    let score = run
                        .skin
                        .as_ref()
                        .map_or(0.0, |s| self.anchor_coverage(s, &run.q));
                    (score, run)
                })
                .collect()
        };
        // The starts run in parallel; the first of equal scores wins.
        let mut runs = run_all(first);
        // A skin model that leaves most of the face occluded has likely taken an occluder
        // for the skin: try the other candidate colours too.
        let visible_share = |r: &EmRun| {
            let (v, all) = face
                .iter()
                .zip(&r.q)
                .filter(|(f, _)| **f)
                .fold((0, 0), |(v, a), (_, q)| (v + (*q < 0.5) as usize, a + 1));
            v as f32 / all.max(1) as f32
        };
        let best_visible = runs
            .iter()
            .map(|r| visible_share(&r.1))
            .fold(0.0f32, f32::max);
        if best_visible < FALLBACK_VISIBLE && !rest.is_empty() {
            runs.extend(run_all(rest.iter().map(|m| start(m.1)).collect()));
        }
        let mut best = 0;
        for (i, r) in runs.iter().enumerate() {
            if r.0 > runs[best].0 {
                best = i;
            }
        }
        let Some((_, mut run)) = runs.into_iter().nth(best) else {
            return;
        };
        self.extend(&mut run.q, run.skin.as_ref(), run.occluder.as_ref(), radius);
        self.extend_ring(&mut run.q, run.skin.as_ref(), run.occluder.as_ref(), radius);
        fill_holes(
            &mut run.q,
            &face,
            self.face.width,
            self.face.height,
            HOLE_SHARE,
        );
        self.occluded.values = run.q;
    }

    /// Skin-anchor groups the face shows (weighted mean visible share of each group's
    /// cells), times the skin locus at the skin model's chromaticity at the face centre.
    fn anchor_coverage(&self, skin: &SkinModel, q: &[f32]) -> f32 {
        let mut groups = [(0.0f32, 0.0f32); SKIN_ANCHORS.len()];
        for (k, &g) in self.anchors.iter().enumerate() {
            if g > 0 {
                groups[g as usize - 1].0 += 1.0 - q[k];
                groups[g as usize - 1].1 += 1.0;
            }
        }
        let covered: f32 = groups
            .iter()
            .zip(SKIN_ANCHORS.iter())
            .filter(|(g, _)| g.1 > 0.0)
            .map(|(g, (_, w))| w * g.0 / g.1)
            .sum();
        covered * skin_locus(skin.chroma[0][0] as f32, skin.chroma[1][0] as f32)
    }

    /// Whether an occluder colour component `c` (normalised, see [`norm`]) is a colour of
    /// this face's skin: the skin model explains its mean at some skin cell, and at least
    /// [`SKIN_SUPPORT`] of the skin cells are visible (`q` < 0.5) and lie within three
    /// standard deviations of it (the penumbra of a shadow whose core came out occluded).
    fn skin_explains(
        &self,
        skin: &SkinModel,
        c: &(f64, Vector3<f64>, Matrix3<f64>, f64),
        q: &[f32],
        skin_cells: usize,
    ) -> bool {
        let m = [c.1[0] as f32, c.1[1] as f32, c.1[2] as f32];
        let cov = skin.chroma_cov(m);
        let modelled = self
            .coords
            .iter()
            .zip(&self.zones)
            .filter(|(_, z)| **z == Zone::Skin)
            .any(|(cc, _)| skin.log_density_diffuse(m, *cc, &cov) >= LOG_UNIFORM + 3.0);
        if !modelled {
            return false;
        }
        // Counting stops once enough cells show it.
        let needed = (SKIN_SUPPORT * skin_cells as f32).ceil() as usize;
        let shown = (0..q.len())
            .filter(|&k| self.zones[k] == Zone::Skin && q[k] < 0.5)
            .filter(|&k| {
                let f = self.features[k];
                let r = Vector3::new(f[0] as f64, f[1] as f64, f[2] as f64) - c.1;
                (r.transpose() * c.2 * r)[0] < 9.0
            })
            .take(needed)
            .count();
        shown >= needed
    }

    /// EM rounds from a start for the skin model (`None`: no appearance model): fit the
    /// colour models to the current mask, add the evidence, smooth. Returns the mask and
    /// the final colour models.
    fn em(
        &self,
        fixed: &[f32],
        mut q: Vec<f32>,
        start: Option<SkinModel>,
        face: &[bool],
        radius: usize,
    ) -> EmRun {
        let n = q.len();
        let o = &self.options;
        let rounds = if start.is_some() { o.rounds.max(1) } else { 1 };
        let mut first = true;
        let mut skin = start;
        let mut occluder: Option<Gmm> = None;
        let skin_cells = self.zones.iter().filter(|z| **z == Zone::Skin).count();
        for _ in 0..rounds {
            let appearance: Vec<f32> = if let Some(previous) = &skin {
                let s = SkinModel::fit(
                    &self.features,
                    &self.coords,
                    &self.zones,
                    &q,
                    previous,
                    first,
                );
                first = false;
                // Occluder colours the skin takes somewhere on the face are not appearance
                // evidence (a skin-coloured occluder is the hand detector's job, and a colour
                // the skin takes somewhere, in shadow or in a highlight, is not an occluder
                // elsewhere): drop components that the skin model explains at some skin cell
                // and that visible skin cells show. The model alone is not enough: its
                // shading field, extrapolated to the oval's rim, calls even black a shadow.
                occluder =
                    Gmm::fit(&self.features, &self.zones, &q, MAX_COMPONENTS).and_then(|mut g| {
                        g.components
                            .retain(|c| !self.skin_explains(&s, c, &q, skin_cells));
                        (!g.components.is_empty()).then(|| {
                            g.mark_hand_colours(
                                &self.features,
                                &self.zones,
                                &q,
                                &self.hands.values,
                            );
                            g
                        })
                    });
                let a = (0..n)
                    .map(|k| {
                        if self.zones[k] == Zone::Outside {
                            return 0.0;
                        }
                        let f = self.features[k];
                        let log_skin = s.log_density(f, self.coords[k]);
                        let log_face = match self.zones[k] {
                            Zone::Feature => log_add(log_skin, LOG_FEATURE_DENSITY) - LN_2,
                            _ => log_skin,
                        };
                        let log_occ = match &occluder {
                            Some(g) => {
                                log_add(g.log_density_near(f, self.hand_near[k]), LOG_UNIFORM)
                                    - LN_2
                            }
                            None => LOG_UNIFORM,
                        };
                        (log_occ - log_face).clamp(-8.0, 8.0)
                    })
                    .collect();
                skin = Some(s);
                a
            } else {
                vec![0.0; n]
            };
            let unary: Vec<f32> = (0..n)
                .map(|k| {
                    let w = if self.evidence.has_residual[k] {
                        RESIDUAL_APPEARANCE_WEIGHT
                    } else {
                        1.0
                    };
                    // A detected hand is in front of the face even where it looks like skin:
                    // appearance may confirm it, never cancel it.
                    let a = if self.hands.values[k] > 0.5 {
                        appearance[k].max(0.0)
                    } else {
                        appearance[k]
                    };
                    fixed[k] + w * a
                })
                .collect();
            mean_field(
                &mut q,
                &unary,
                face,
                face,
                self.face.width,
                self.face.height,
                radius,
                o.smoothness,
                8,
            );
        }
        EmRun { q, skin, occluder }
    }

    /// Follows what hides the face past the oval's upper part and sides, into the ring: a
    /// ring cell is occluded when the skin model explains it worse than the occluder or an
    /// outlier (hair over the temples, the frame of a pair of glasses), its neighbours agree,
    /// and it connects to occluded face cells. Background (person mask) counts against.
    fn extend_ring(
        &self,
        q: &mut [f32],
        skin: Option<&SkinModel>,
        occluder: Option<&Gmm>,
        radius: usize,
    ) {
        let n = q.len();
        let o = &self.options;
        if !self.ring.iter().any(|r| *r) {
            return;
        }
        let unary: Vec<f32> = (0..n)
            .map(|k| {
                if !self.ring[k] {
                    return 0.0;
                }
                let f = self.features[k];
                let appearance = match skin {
                    Some(s) if o.appearance => {
                        let log_occ = match occluder {
                            Some(g) => {
                                log_add(g.log_density_near(f, self.hand_near[k]), LOG_UNIFORM)
                                    - LN_2
                            }
                            None => LOG_UNIFORM,
                        };
                        (log_occ - s.log_density(f, self.coords[k])).clamp(-8.0, 8.0)
                    }
                    _ => 0.0,
                };
                self.outside_log_odds(k, appearance)
            })
            .collect();
        self.follow(q, &unary, &self.ring, radius);
    }

    /// Follows occluders past the oval into the extension band: a band cell is occluded
    /// when it looks like the occluder found on the face (or a hand covers it) more than
    /// like skin or anything else, its neighbours agree (mean-field with the face cells
    /// held), and it connects to occluded face cells.
    fn extend(
        &self,
        q: &mut [f32],
        skin: Option<&SkinModel>,
        occluder: Option<&Gmm>,
        radius: usize,
    ) {
        let n = q.len();
        // Only an occluder that covers most of the rim continues past it (a shadow under the
        // chin or a strand of hair does not).
        let (rim_occluded, rim_cells) = (0..n)
            .filter(|&k| self.rim[k])
            .fold((0usize, 0usize), |(o, c), k| {
                (o + (q[k] > 0.5) as usize, c + 1)
            });
        if rim_cells == 0 || (rim_occluded as f32) < RIM_SHARE * rim_cells as f32 {
            return;
        }
        let o = &self.options;
        let unary: Vec<f32> = (0..n)
            .map(|k| {
                if !self.band[k] {
                    return 0.0;
                }
                let f = self.features[k];
                let appearance = match (skin, occluder) {
                    (Some(s), Some(g)) if o.appearance => {
                        // The face, the neck or the world beside them: skin or a broad
                        // density.
                        let log_other =
                            log_add(s.log_density(f, self.coords[k]), LOG_UNIFORM + 1.0) - LN_2;
                        (g.log_density_near(f, self.hand_near[k]) - log_other).clamp(-8.0, 8.0)
                    }
                    _ => 0.0,
                };
                self.outside_log_odds(k, appearance)
            })
            .collect();
        self.follow(q, &unary, &self.band, radius);
    }

    /// The log-odds of a cell outside the oval (band or ring) with appearance log-odds
    /// `appearance`: the prior, hands, background (against), residuals, and the appearance
    /// (scaled down where residuals exist).
    fn outside_log_odds(&self, k: usize, appearance: f32) -> f32 {
        let w = if self.evidence.has_residual[k] {
            RESIDUAL_APPEARANCE_WEIGHT
        } else {
            1.0
        };
        self.options.prior_log_odds
            + self.evidence.hands[k]
            + self.evidence.band_person[k]
            + self.evidence.residual[k]
            + w * appearance
    }

    /// Solves the cells `outside` the oval (the band or the ring) from their log-odds
    /// `unary` by mean-field with the face cells held, and keeps only those connected
    /// (4-neighbours, through occluded outside cells) to occluded face cells.
    fn follow(&self, q: &mut [f32], unary: &[f32], outside: &[bool], radius: usize) {
        let n = q.len();
        for k in 0..n {
            if outside[k] {
                q[k] = sigmoid(unary[k]);
            }
        }
        let member: Vec<bool> = (0..n)
            .map(|k| outside[k] || self.zones[k] != Zone::Outside)
            .collect();
        mean_field(
            q,
            unary,
            &member,
            outside,
            self.face.width,
            self.face.height,
            radius,
            self.options.smoothness,
            8,
        );
        let (w, h) = (self.face.width, self.face.height);
        let mut keep = vec![false; n];
        let mut stack: Vec<usize> = (0..n)
            .filter(|&k| self.zones[k] != Zone::Outside && q[k] > 0.5)
            .collect();
        while let Some(k) = stack.pop() {
            for m in neighbours4(k, w, h).into_iter().flatten() {
                if outside[m] && !keep[m] && q[m] > 0.5 {
                    keep[m] = true;
                    stack.push(m);
                }
            }
        }
        for k in 0..n {
            if outside[k] && !keep[k] {
                q[k] = 0.0;
            }
        }
    }
}

/// The outcome of one EM run: the mask and the final colour models.
struct EmRun {
    q: Vec<f32>,
    skin: Option<SkinModel>,
    occluder: Option<Gmm>,
}

/// Log density of the uniform outlier model over the feature box
/// (log-chromaticity in `[-3, 3]²`, log-luminance in `[-5, 0]`).
const LOG_UNIFORM: f32 = -5.19;
/// Log density of "anything an eye, brow or lip may look like": twenty times the uniform.
const LOG_FEATURE_DENSITY: f32 = LOG_UNIFORM + 3.0;
const LN_2: f32 = std::f32::consts::LN_2;
/// The extension band lies below lines of this slope through the oval's centre (the chin
/// and the lower jaw, not the cheeks, where hair hangs).
const BAND_SLOPE: f32 = 0.8;
/// A runner-up start for the skin model is tried when its score is at least this share of
/// the best one's.
const RUNNER_UP: f32 = 0.5;
/// When no skin model from the first starts leaves at least this share of the face
/// visible, EM also runs from the other candidate skin colours.
const FALLBACK_VISIBLE: f32 = 0.35;
/// Share of the skin cells that must show an occluder colour component (visible, within three
/// standard deviations) for [`Occlusion::skin_explains`] to call it a skin colour.
const SKIN_SUPPORT: f32 = 0.01;
/// Largest enclosed visible island that [`fill_holes`] closes, share of the face
/// cells.
const HOLE_SHARE: f32 = 0.03;
/// The share of the rim that must be occluded for the mask to extend past it.
const RIM_SHARE: f32 = 0.4;
/// Weight of the appearance evidence where photometric residuals exist.
const RESIDUAL_APPEARANCE_WEIGHT: f32 = 0.25;
/// Ridge of the chromaticity's dependence on the shading residual (share of the total
/// weight).
const LUMA_CHROMA_RIDGE: f64 = 0.1;
/// Linear-light offset that keeps dark pixels' chromaticity finite (and near grey).
const DARK: f32 = 0.002;

fn log_add(a: f32, b: f32) -> f32 {
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// The 4-neighbours of cell `k` on a `w` × `h` grid (`None` past the grid's edge).
fn neighbours4(k: usize, w: usize, h: usize) -> [Option<usize>; 4] {
    let (i, j) = (k % w, k / w);
    [
        (i > 0).then(|| k - 1),
        (i + 1 < w).then(|| k + 1),
        (j > 0).then(|| k - w),
        (j + 1 < h).then(|| k + w),
    ]
}

/// Small visible islands enclosed by occluded cells become occluded: connected visible
/// `face` cells (4-neighbours; visible: `q` ≤ 0.5) that reach neither a non-face cell nor
/// the grid's edge and number less than `share` of the face cells get `q ← 1 − q`. The face
/// is one surface seen from the camera; a speck of it seen through an occluder is rarer
/// than an occluder's own skin-coloured patch (a pattern, a print, a highlight on a hand).
fn fill_holes(q: &mut [f32], face: &[bool], w: usize, h: usize, share: f32) {
    let n = q.len();
    let limit = (share * face.iter().filter(|f| **f).count() as f32) as usize;
    let visible = |q: &[f32], k: usize| face[k] && q[k] <= 0.5;
    let mut seen = vec![false; n];
    let mut stack = Vec::new();
    let mut component = Vec::new();
    for start in 0..n {
        if seen[start] || !visible(q, start) {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        component.clear();
        let mut open = false;
        while let Some(k) = stack.pop() {
            component.push(k);
            let next = neighbours4(k, w, h);
            if next.iter().any(Option::is_none) {
                open = true;
            }
            for m in next.into_iter().flatten() {
                if !face[m] {
                    open = true;
                } else if !seen[m] && visible(q, m) {
                    seen[m] = true;
                    stack.push(m);
                }
            }
        }
        if !open && component.len() < limit {
            for &k in &component {
                q[k] = 1.0 - q[k];
            }
        }
    }
}

/// Mean-field updates of a Potts model: `q = σ(unary + β·mean(2q − 1 over the box))`, the
/// mean taken over face cells of a (2r+1)² box (via a summed-area table).
#[allow(clippy::too_many_arguments)]
fn mean_field(
    q: &mut [f32],
    unary: &[f32],
    member: &[bool],
    update: &[bool],
    w: usize,
    h: usize,
    r: usize,
    beta: f32,
    iterations: usize,
) {
    let mut sat_v = vec![0.0f64; (w + 1) * (h + 1)];
    let mut sat_c = vec![0.0f64; (w + 1) * (h + 1)];
    for _ in 0..iterations {
        for j in 0..h {
            let (mut rv, mut rc) = (0.0f64, 0.0f64);
            for i in 0..w {
                let k = j * w + i;
                if member[k] {
                    rv += (2.0 * q[k] - 1.0) as f64;
                    rc += 1.0;
                }
                sat_v[(j + 1) * (w + 1) + i + 1] = sat_v[j * (w + 1) + i + 1] + rv;
                sat_c[(j + 1) * (w + 1) + i + 1] = sat_c[j * (w + 1) + i + 1] + rc;
            }
        }
        let rect = |s: &[f64], i0: usize, j0: usize, i1: usize, j1: usize| {
            s[j1 * (w + 1) + i1] - s[j0 * (w + 1) + i1] - s[j1 * (w + 1) + i0]
                + s[j0 * (w + 1) + i0]
        };
        for j in 0..h {
            for i in 0..w {
                let k = j * w + i;
                if !update[k] {
                    continue;
                }
                let (i0, j0) = (i.saturating_sub(r), j.saturating_sub(r));
                let (i1, j1) = ((i + r + 1).min(w), (j + r + 1).min(h));
                let c = rect(&sat_c, i0, j0, i1, j1);
                let v = rect(&sat_v, i0, j0, i1, j1);
                let m = if c > 0.0 { (v / c) as f32 } else { 0.0 };
                q[k] = sigmoid(unary[k] + beta * m);
            }
        }
    }
}

/// The working grid over the face box and each cell's colour features.
struct Grid {
    x0: u32,
    y0: u32,
    cell: u32,
    width: usize,
    height: usize,
    features: Vec<[f32; 3]>,
}

impl Grid {
    /// The grid over the face oval's box widened by 5 % of its longer side, and over
    /// `extra` (photo pixels, `[x0, y0, x1, y1]`).
    fn new(photo: &RgbImage, pts: &[[f32; 2]], max_grid: usize, extra: Option<[f32; 4]>) -> Grid {
        let (pw, ph) = photo.dimensions();
        let mut b = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
        for &i in FACE_OVAL.iter() {
            let p = pts[i];
            b = [
                b[0].min(p[0]),
                b[1].min(p[1]),
                b[2].max(p[0]),
                b[3].max(p[1]),
            ];
        }
        let m = 0.05 * (b[2] - b[0]).max(b[3] - b[1]);
        let clampx = |v: f32| v.clamp(0.0, pw as f32) as u32;
        let clampy = |v: f32| v.clamp(0.0, ph as f32) as u32;
        // The cell size from the face box alone, so that the extension does not coarsen it.
        let cell = {
            let (x0, y0) = (clampx((b[0] - m).floor()), clampy((b[1] - m).floor()));
            let (x1, y1) = (clampx((b[2] + m).ceil()), clampy((b[3] + m).ceil()));
            let (bw, bh) = (x1.saturating_sub(x0).max(1), y1.saturating_sub(y0).max(1));
            bw.max(bh).div_ceil(max_grid.max(8) as u32).max(1)
        };
        let mut b = [b[0] - m, b[1] - m, b[2] + m, b[3] + m];
        if let Some(e) = extra {
            b = [
                b[0].min(e[0]),
                b[1].min(e[1]),
                b[2].max(e[2]),
                b[3].max(e[3]),
            ];
        }
        let (x0, y0) = (clampx(b[0].floor()), clampy(b[1].floor()));
        let (x1, y1) = (clampx(b[2].ceil()), clampy(b[3].ceil()));
        let (bw, bh) = (x1.saturating_sub(x0).max(1), y1.saturating_sub(y0).max(1));
        let width = bw.div_ceil(cell) as usize;
        let height = bh.div_ceil(cell) as usize;
        let lut: Vec<f32> = (0..256).map(|v| srgb_to_linear(v as f32 / 255.0)).collect();
        let mut features = vec![[0.0f32; 3]; width * height];
        for j in 0..height {
            for i in 0..width {
                let mut s = [0.0f32; 3];
                let mut c = 0u32;
                for y in (y0 + j as u32 * cell)..(y0 + (j as u32 + 1) * cell).min(ph) {
                    for x in (x0 + i as u32 * cell)..(x0 + (i as u32 + 1) * cell).min(pw) {
                        let p = photo.get_pixel(x, y).0;
                        for ch in 0..3 {
                            s[ch] += lut[p[ch] as usize];
                        }
                        c += 1;
                    }
                }
                let c = c.max(1) as f32;
                let (r, g, bl) = (s[0] / c + DARK, s[1] / c + DARK, s[2] / c + DARK);
                let y = 0.2126 * r + 0.7152 * g + 0.0722 * bl;
                features[j * width + i] = [(r / g).ln(), (bl / g).ln(), y.ln()];
            }
        }
        Grid {
            x0,
            y0,
            cell,
            width,
            height,
            features,
        }
    }

    fn center(&self, i: usize, j: usize) -> [f32; 2] {
        let c = self.cell as f32;
        [
            self.x0 as f32 + (i as f32 + 0.5) * c,
            self.y0 as f32 + (j as f32 + 0.5) * c,
        ]
    }

    fn map(&self, values: Vec<f32>) -> PixelMap {
        PixelMap {
            x0: self.x0,
            y0: self.y0,
            cell: self.cell,
            width: self.width,
            height: self.height,
            values,
        }
    }
}

/// Skin appearance: chromaticity varying linearly over the face (mixed light tints one side)
/// with a Gaussian spread (inflated in dark cells, where chromaticity is noise), and a
/// log-luminance band around a quadratic shading field (flat from cast shadows to highlights,
/// Gaussian tails beyond), plus partly desaturated specular highlights.
#[derive(Debug, Clone)]
struct SkinModel {
    /// `log(R/G)` and `log(B/G)` as `a + b·u + c·v + d·s` over face coordinates and the
    /// shading residual `s` (log-luminance minus the shading field, clamped to the band):
    /// skin is more saturated in its shadows than in its light.
    chroma: [SVector<f64, 4>; 2],
    cov: Matrix2<f64>,
    shading: SVector<f64, 6>,
}

/// Spread of the skin locus along the direction in which the light's colour temperature moves
/// chromaticity (see [`skin_locus`]), and across it.
const LOCUS_SD_ALONG: f32 = 0.55;
const LOCUS_SD_ACROSS: f32 = 0.35;
/// The log-luminance band around the shading field the skin may take without penalty:
/// shadows down to `SHADOW` (×0.37 in linear light), highlights up to `HIGHLIGHT` (×1.6).
const SHADOW: f64 = -1.0;
const HIGHLIGHT: f64 = 0.45;
const BAND_TAIL: f64 = 0.15;

fn basis(c: [f32; 2]) -> SVector<f64, 6> {
    let (u, v) = (c[0] as f64, c[1] as f64);
    SVector::<f64, 6>::from([1.0, u, v, u * u, u * v, v * v])
}

fn linear(c: [f32; 2], rl: f64) -> SVector<f64, 4> {
    SVector::<f64, 4>::from([1.0, c[0] as f64, c[1] as f64, rl.clamp(SHADOW, HIGHLIGHT)])
}

/// The skin locus: log(R/G) and log(B/G) of human skin in linear light, broad enough for
/// light to dark skin under warm to cool light. A prior for choosing the skin's mode, not a
/// classifier. Centre from the skin found on eight development photos (light to dark skin,
/// daylight, flash and tungsten), not from the measurement's test faces. The light's colour
/// temperature moves every colour along one direction in this plane — warmer light raises
/// log(R/G) and lowers log(B/G), about (0.5, −0.87) per unit (a black body from 6500 K to
/// 3000 K moves white by about (0.33, −0.54)) — so the locus is long along that direction
/// (standard deviation [`LOCUS_SD_ALONG`]) and narrower across it ([`LOCUS_SD_ACROSS`]):
/// tungsten-lit skin is still skin, a grey mask is not.
fn skin_locus(c1: f32, c2: f32) -> f32 {
    let (a, b) = (c1 - 0.8, c2 + 0.5);
    let along = (0.5 * a - 0.866 * b) / LOCUS_SD_ALONG;
    let across = (0.866 * a + 0.5 * b) / LOCUS_SD_ACROSS;
    (-0.5 * (along * along + across * across)).exp()
}

/// Variance of a 2-D standard Gaussian truncated to radius `t`, per dimension (what a
/// covariance estimated with rejection at `t` standard deviations must be divided by).
fn truncated_variance(t: f64) -> f64 {
    let e = (-0.5 * t * t).exp();
    (2.0 - (t * t + 2.0) * e) / (2.0 * (1.0 - e))
}

impl SkinModel {
    /// Fits the model to the skin-zone cells, weighted by `1 - q`, rejecting cells beyond a
    /// threshold that tightens from 4 to 3 standard deviations (so the fit can spread from
    /// its start over smoothly varying light, then settles; `first`: the fit from a start of
    /// [`SkinModel::initial`], else a refit of the previous round's model, at 3).
    fn fit(
        features: &[[f32; 3]],
        coords: &[[f32; 2]],
        zones: &[Zone],
        q: &[f32],
        previous: &SkinModel,
        first: bool,
    ) -> SkinModel {
        let cells: Vec<usize> = (0..zones.len())
            .filter(|&k| zones[k] == Zone::Skin)
            .collect();
        let thresholds: &[f64] = if first {
            &[4.0, 3.5, 3.0, 3.0]
        } else {
            &[3.0, 3.0]
        };
        let mut model = previous.clone();
        for &t in thresholds {
            let w: Vec<f64> = cells
                .iter()
                .map(|&k| {
                    let (d2, band) = model.distances(features[k], coords[k]);
                    if d2 + band * band < t * t {
                        1.0 - q[k] as f64
                    } else {
                        0.0
                    }
                })
                .collect();
            match Self::weighted(features, coords, &cells, &w, &model, truncated_variance(t)) {
                Some(m) => model = m,
                None => break,
            }
        }
        model
    }

    /// Candidate skin chromaticities for [`SkinModel::start_at`], one per chromaticity
    /// histogram mode (at most four), best first, each flagged when it is one of the first
    /// starts: the mode that covers the most skin anchors, and the runner-up when it scored
    /// at least [`RUNNER_UP`] of the best. The others are tried only when the first ones
    /// leave most of the face occluded.
    fn modes(
        features: &[[f32; 3]],
        cells: &[usize],
        anchors: &[u8],
        q: &[f32],
    ) -> Vec<(bool, [f64; 2])> {
        // Chromaticity histogram, 0.025 wide bins over [-1.5, 1.5]², weighted by the locus
        // prior and by brightness (dark pixels have unreliable chromaticity).
        const B: usize = 120;
        let bin = |v: f32| (((v + 1.5) / 3.0) * B as f32).clamp(0.0, (B - 1) as f32) as usize;
        // Brightness relative to the face's median (dim photos have dim skin): cells 7×
        // darker than the median count nothing, 2× darker or brighter fully.
        let median_l = {
            let mut l: Vec<f32> = cells.iter().map(|&k| features[k][2]).collect();
            l.sort_by(f32::total_cmp);
            l.get(l.len() / 2).copied().unwrap_or(-2.0)
        };
        let bright = |f: [f32; 3]| ((f[2] - median_l + 2.0) / 1.3).clamp(0.0, 1.0);
        let mut hist = vec![0.0f32; B * B];
        for &k in cells {
            let f = features[k];
            hist[bin(f[1]) * B + bin(f[0])] +=
                skin_locus(f[0], f[1]) * bright(f) * (1.0 - q[k]).max(0.05);
        }
        // Smooth with a 5 × 5 box; the local maxima are the candidate modes.
        let mut smooth = vec![0.0f32; B * B];
        for b2 in 0..B {
            for b1 in 0..B {
                let mut s = 0.0;
                for d2 in b2.saturating_sub(2)..(b2 + 3).min(B) {
                    for d1 in b1.saturating_sub(2)..(b1 + 3).min(B) {
                        s += hist[d2 * B + d1];
                    }
                }
                smooth[b2 * B + b1] = s;
            }
        }
        let mut peaks: Vec<(usize, usize, f32)> = Vec::new();
        let mut order: Vec<usize> = (0..B * B).filter(|&i| smooth[i] > 0.0).collect();
        order.sort_by(|&a, &b| smooth[b].total_cmp(&smooth[a]));
        for i in order {
            let (b1, b2) = (i % B, i / B);
            // Non-maximum suppression within 0.15 (6 bins).
            if peaks
                .iter()
                .all(|p| p.0.abs_diff(b1).max(p.1.abs_diff(b2)) > 6)
            {
                peaks.push((b1, b2, smooth[i]));
                if peaks.len() == 4 {
                    break;
                }
            }
        }
        // The skin is the colour present all over the face: score each candidate by how
        // many anchor groups it covers (support ≥ 40 % of a group's cells counts fully),
        // plus a little for its histogram mass, times the skin-locus prior.
        let top = peaks.first().map(|p| p.2).unwrap_or(1.0).max(1e-6);
        let centre_of = |b: usize| (b as f32 + 0.5) / B as f32 * 3.0 - 1.5;
        let score = |p: &(usize, usize, f32)| {
            let m = [centre_of(p.0), centre_of(p.1)];
            let mut support = [(0.0f32, 0.0f32); SKIN_ANCHORS.len()];
            for &k in cells {
                let g = anchors[k] as usize;
                if g == 0 {
                    continue;
                }
                let f = features[k];
                // Within 0.1, widened by the chromaticity noise of dark cells.
                let noise = chroma_noise_sd(f) as f32;
                let r2 = 0.01 + 9.0 * noise * noise;
                let near = (f[0] - m[0]).powi(2) + (f[1] - m[1]).powi(2) < r2 && bright(f) > 0.25;
                support[g - 1].0 += near as u8 as f32;
                support[g - 1].1 += 1.0;
            }
            let covered: f32 = support
                .iter()
                .zip(SKIN_ANCHORS.iter())
                .filter(|(s, _)| s.1 > 0.0)
                .map(|(s, (_, w))| w * (s.0 / s.1 / 0.4).min(1.0))
                .sum();
            // Grey and off-locus candidates (white or black masks, paper) need far more
            // coverage to win than skin-coloured ones.
            (covered + 0.5 * p.2 / top) * skin_locus(m[0], m[1])
        };
        let mut scored: Vec<(f32, (usize, usize, f32))> =
            peaks.iter().map(|p| (score(p), *p)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        if scored.is_empty() {
            scored.push((0.0, (B / 2, B / 2, 0.0)));
        }
        let top_score = scored[0].0;
        scored
            .iter()
            .enumerate()
            .map(|(i, (sc, p))| {
                (
                    i < 2 && *sc >= RUNNER_UP * top_score,
                    [centre_of(p.0) as f64, centre_of(p.1) as f64],
                )
            })
            .collect()
    }

    /// A start for the skin model at a chromaticity (a histogram peak).
    fn start_at(
        features: &[[f32; 3]],
        coords: &[[f32; 2]],
        cells: &[usize],
        q: &[f32],
        chroma: [f64; 2],
    ) -> SkinModel {
        let constant = |v: f64| SVector::<f64, 4>::from([v, 0.0, 0.0, 0.0]);
        let mut start = SkinModel {
            chroma: [constant(chroma[0]), constant(chroma[1])],
            cov: Matrix2::from_diagonal_element(0.05 * 0.05),
            shading: SVector::<f64, 6>::zeros(),
        };
        // The shading is unknown at first: fit it to the cells near the mode's chromaticity,
        // then let `fit` take over.
        let w: Vec<f64> = cells
            .iter()
            .map(|&k| {
                let f = features[k];
                let r = Vector2::new(
                    f[0] as f64 - start.chroma[0][0],
                    f[1] as f64 - start.chroma[1][0],
                );
                if r.norm_squared() < 9.0 * 0.05 * 0.05 {
                    1.0 - q[k] as f64
                } else {
                    0.0
                }
            })
            .collect();
        if let Some(m) =
            Self::weighted(features, coords, cells, &w, &start, truncated_variance(3.0))
        {
            // Keep the mode's chromaticity as a constant for the first round.
            start.shading = m.shading;
            start.cov = m.cov;
        }
        start
    }

    /// Weighted least squares for the chromaticity and shading fields (ridges: the shading's
    /// terms towards the previous model's, the chromaticity's slopes towards zero), weighted
    /// covariance of the chromaticity residuals (divided
    /// by `truncation`, floored). `None` when the weights vanish.
    fn weighted(
        features: &[[f32; 3]],
        coords: &[[f32; 2]],
        cells: &[usize],
        w: &[f64],
        previous: &SkinModel,
        truncation: f64,
    ) -> Option<SkinModel> {
        let total: f64 = w.iter().sum();
        if total < 8.0 {
            return None;
        }
        let mut ata = SMatrix::<f64, 6, 6>::zeros();
        let mut atb = SVector::<f64, 6>::zeros();
        let mut ltl = SMatrix::<f64, 4, 4>::zeros();
        let mut ltc = [SVector::<f64, 4>::zeros(); 2];
        for (&k, &wk) in cells.iter().zip(w) {
            if wk <= 0.0 {
                continue;
            }
            let f = features[k];
            let a = basis(coords[k]);
            ata += wk * a * a.transpose();
            atb += wk * f[2] as f64 * a;
            let l = linear(coords[k], f[2] as f64 - previous.shading.dot(&a));
            ltl += wk * l * l.transpose();
            ltc[0] += wk * f[0] as f64 * l;
            ltc[1] += wk * f[1] as f64 * l;
        }
        // Ridges keep the fields tame where the skin is only partly visible: the shading's
        // curvature and slopes towards the previous fit's, the chromaticity's slopes more
        // strongly towards zero (towards the previous slopes, repeated fits let a gradient
        // grow from the skin into a large occluder's colour).
        for d in 1..6 {
            ata[(d, d)] += 0.05 * total;
            atb[d] += 0.05 * total * previous.shading[d];
        }
        for d in 1..3 {
            ltl[(d, d)] += total;
        }
        ltl[(3, 3)] += LUMA_CHROMA_RIDGE * total;
        let shading = ata.cholesky()?.solve(&atb);
        let chol = ltl.cholesky()?;
        let chroma = [chol.solve(&ltc[0]), chol.solve(&ltc[1])];
        let mut cov = Matrix2::<f64>::zeros();
        for (&k, &wk) in cells.iter().zip(w) {
            if wk <= 0.0 {
                continue;
            }
            let f = features[k];
            let l = linear(coords[k], f[2] as f64 - shading.dot(&basis(coords[k])));
            let r = Vector2::new(
                f[0] as f64 - chroma[0].dot(&l),
                f[1] as f64 - chroma[1].dot(&l),
            );
            cov += wk * r * r.transpose();
        }
        cov /= total * truncation;
        cov[(0, 0)] = cov[(0, 0)].max(0.025 * 0.025);
        cov[(1, 1)] = cov[(1, 1)].max(0.025 * 0.025);
        Some(SkinModel {
            chroma,
            cov,
            shading,
        })
    }

    fn chroma_at(&self, c: [f32; 2], rl: f64) -> Vector2<f64> {
        let l = linear(c, rl);
        Vector2::new(self.chroma[0].dot(&l), self.chroma[1].dot(&l))
    }

    /// Squared chromaticity Mahalanobis distance (noise-inflated in dark cells) and the
    /// log-luminance distance outside the band, in units of the band's tail.
    fn distances(&self, f: [f32; 3], c: [f32; 2]) -> (f64, f64) {
        let (d2, band, _) = self.distances_with(f, c, &self.chroma_cov(f));
        (d2, band)
    }

    /// [`SkinModel::distances`] with the cell's covariance given, and the log-luminance
    /// residual from the shading field.
    fn distances_with(&self, f: [f32; 3], c: [f32; 2], cov: &ChromaCov) -> (f64, f64, f64) {
        let rl = f[2] as f64 - self.shading.dot(&basis(c));
        let r = Vector2::new(f[0] as f64, f[1] as f64) - self.chroma_at(c, rl);
        let d2 = (r.transpose() * cov.inv * r)[0];
        let band = if rl < SHADOW {
            (SHADOW - rl) / BAND_TAIL
        } else if rl > HIGHLIGHT {
            (rl - HIGHLIGHT) / BAND_TAIL
        } else {
            0.0
        };
        (d2, band, rl)
    }

    /// The chromaticity covariance of a cell with features `f` (the skin's spread plus the
    /// cell's noise), inverted once for every density term that needs it.
    fn chroma_cov(&self, f: [f32; 3]) -> ChromaCov {
        let cov = self.cov + Matrix2::from_diagonal_element(chroma_noise_sd(f).powi(2));
        ChromaCov {
            inv: cov.try_inverse().unwrap_or_default(),
            log_det: cov.determinant().max(1e-300).ln(),
        }
    }

    /// Log density of the diffuse skin alone (no highlights), `cov` being
    /// [`SkinModel::chroma_cov`] of `f`.
    fn log_density_diffuse(&self, f: [f32; 3], c: [f32; 2], cov: &ChromaCov) -> f32 {
        let (d2, band, _) = self.distances_with(f, c, cov);
        Self::diffuse_from(d2, band, cov) as f32
    }

    fn diffuse_from(d2: f64, band: f64, cov: &ChromaCov) -> f64 {
        let band_width = HIGHLIGHT - SHADOW + BAND_TAIL * (std::f64::consts::TAU).sqrt();
        -0.5 * d2
            - 0.5 * cov.log_det
            - (std::f64::consts::TAU).ln()
            - band_width.ln()
            - 0.5 * band * band
    }

    fn log_density(&self, f: [f32; 3], c: [f32; 2]) -> f32 {
        let cov = self.chroma_cov(f);
        let (d2, band, rl) = self.distances_with(f, c, &cov);
        let diffuse = Self::diffuse_from(d2, band, &cov) as f32 as f64;
        // Specular highlights add white light: brighter than the shading, chromaticity moved
        // part of the way towards grey. The position along that line is free (uniform), the
        // distance across it Gaussian.
        let mu = self.chroma_at(c, 0.0);
        let len = mu.norm();
        let specular = if len > 1e-3 && rl > 0.0 {
            let x = Vector2::new(f[0] as f64, f[1] as f64);
            let dir = mu / len;
            // At most half-way to grey: a highlight on skin keeps some of its colour, a white
            // mask or paper does not.
            let t = x.dot(&dir).clamp(0.5 * len, len);
            let r = x - dir * t;
            let d2 = (r.transpose() * cov.inv * r)[0];
            let lum_width: f64 = 0.8;
            -0.5 * d2
                - 0.5 * cov.log_det
                - 0.5 * (std::f64::consts::TAU).ln()
                - (0.5 * len).ln()
                - lum_width.ln()
                - 0.5 * ((rl - lum_width).max(0.0) / BAND_TAIL).powi(2)
                + 0.2f64.ln()
        } else {
            f64::MIN
        };
        diffuse.max(specular) as f32
    }
}

/// A cell's chromaticity covariance, inverted, with its log-determinant.
struct ChromaCov {
    inv: Matrix2<f64>,
    log_det: f64,
}

/// Standard deviation of a cell's chromaticity noise: sensor and compression noise of about
/// 0.004 in linear light, relative to the cell's luminance (large in dark cells).
fn chroma_noise_sd(f: [f32; 3]) -> f64 {
    0.004 / (f[2] as f64).exp()
}

/// Most components of the occluder colour model.
const MAX_COMPONENTS: usize = 3;

/// How far from a detected hand's silhouette its colour still counts as the hand, face widths.
const HAND_NEAR: f32 = 0.05;
/// Log-density penalty of a hand's colour away from the hand.
const HAND_AWAY: f64 = 8.0;

/// A small Gaussian mixture in feature space (the occluder's colours).
#[derive(Debug, Clone)]
struct Gmm {
    components: Vec<(f64, Vector3<f64>, Matrix3<f64>, f64)>,
    /// Whether each component's cells lie mostly under a detected hand's silhouette.
    hand_colour: Vec<bool>,
}

impl Gmm {
    /// Fits up to `k` components to the face cells weighted by `q` (weighted EM from
    /// farthest-point seeds). `None` when the occluded mass is negligible.
    fn fit(features: &[[f32; 3]], zones: &[Zone], q: &[f32], k: usize) -> Option<Gmm> {
        let data: Vec<(Vector3<f64>, f64)> = (0..zones.len())
            .filter(|&i| zones[i] != Zone::Outside && q[i] > 0.05)
            .map(|i| {
                let f = features[i];
                (
                    Vector3::new(f[0] as f64, f[1] as f64, f[2] as f64),
                    q[i] as f64,
                )
            })
            .collect();
        let mass: f64 = data.iter().map(|d| d.1).sum();
        let face = zones.iter().filter(|z| **z != Zone::Outside).count() as f64;
        if mass < (0.005 * face).max(4.0) {
            return None;
        }
        // Seeds: the heaviest point, then farthest points (in scaled units).
        let scale = Vector3::new(1.0 / 0.05, 1.0 / 0.05, 1.0 / 0.2);
        let scaled = |v: &Vector3<f64>| v.component_mul(&scale);
        let mut means: Vec<Vector3<f64>> = vec![
            data.iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|d| d.0)
                .unwrap_or_default(),
        ];
        while means.len() < k {
            let far = data
                .iter()
                .map(|d| {
                    let m = means
                        .iter()
                        .map(|m| (scaled(&d.0) - scaled(m)).norm_squared())
                        .fold(f64::MAX, f64::min);
                    (d.0, m * d.1)
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match far {
                Some((p, s)) if s > 4.0 => means.push(p),
                _ => break,
            }
        }
        let floor = Matrix3::from_diagonal(&Vector3::new(0.03 * 0.03, 0.03 * 0.03, 0.1 * 0.1));
        let mut comps: Vec<(f64, Vector3<f64>, Matrix3<f64>, f64)> = means
            .iter()
            .map(|m| (1.0 / means.len() as f64, *m, floor * 4.0, 0.0))
            .collect();
        let mut resp = vec![0.0f64; data.len() * comps.len()];
        for _ in 0..8 {
            let g = Gmm {
                components: comps.iter().map(|c| norm(*c)).collect(),
                hand_colour: Vec::new(),
            };
            for (i, d) in data.iter().enumerate() {
                let ls: Vec<f64> = g.components.iter().map(|c| log_gauss(c, &d.0)).collect();
                let m = ls.iter().cloned().fold(f64::MIN, f64::max);
                let s: f64 = ls.iter().map(|l| (l - m).exp()).sum();
                for (c, l) in ls.iter().enumerate() {
                    resp[i * comps.len() + c] = (l - m).exp() / s * d.1;
                }
            }
            let nc = comps.len();
            for (c, comp) in comps.iter_mut().enumerate() {
                let nk: f64 = (0..data.len()).map(|i| resp[i * nc + c]).sum();
                if nk < 1e-6 {
                    comp.0 = 0.0;
                    continue;
                }
                let mean = data
                    .iter()
                    .enumerate()
                    .fold(Vector3::zeros(), |a, (i, d)| a + resp[i * nc + c] * d.0)
                    / nk;
                let cov = data.iter().enumerate().fold(Matrix3::zeros(), |a, (i, d)| {
                    let r = d.0 - mean;
                    a + resp[i * nc + c] * r * r.transpose()
                }) / nk
                    + floor;
                *comp = (nk / mass, mean, cov, 0.0);
            }
        }
        let components: Vec<_> = comps.into_iter().filter(|c| c.0 > 0.0).map(norm).collect();
        if components.is_empty() {
            None
        } else {
            Some(Gmm {
                components,
                hand_colour: Vec::new(),
            })
        }
    }

    /// Marks the components whose cells (responsibility times `q`) lie mostly where a
    /// detected hand covers the face (`hands` above one half).
    fn mark_hand_colours(
        &mut self,
        features: &[[f32; 3]],
        zones: &[Zone],
        q: &[f32],
        hands: &[f32],
    ) {
        // Without a hand, no colour is a hand's (and `hand_colour` stays empty).
        if !hands.iter().any(|h| *h > 0.5) {
            return;
        }
        let nc = self.components.len();
        let mut acc = vec![(0.0f64, 0.0f64); nc];
        for k in 0..zones.len() {
            if zones[k] == Zone::Outside || q[k] <= 0.05 {
                continue;
            }
            let f = features[k];
            let x = Vector3::new(f[0] as f64, f[1] as f64, f[2] as f64);
            let (ls, n) = self.log_components(&x);
            let m = ls[..n].iter().cloned().fold(f64::MIN, f64::max);
            let total: f64 = ls[..n].iter().map(|l| (l - m).exp()).sum();
            for (a, l) in acc.iter_mut().zip(&ls[..n]) {
                let r = (l - m).exp() / total * q[k] as f64;
                a.0 += r;
                if hands[k] > 0.5 {
                    a.1 += r;
                }
            }
        }
        self.hand_colour = acc
            .iter()
            .map(|(w, h)| *w > 1e-6 && *h >= 0.5 * w)
            .collect();
    }

    /// The mixture's log density at colour `f` in a cell `near` a detected hand (see
    /// `Occlusion::hand_near`): a hand's colour away from the hand is the face's own skin in
    /// light or shadow, so its components are lowered there.
    fn log_density_near(&self, f: [f32; 3], near: f32) -> f32 {
        let x = Vector3::new(f[0] as f64, f[1] as f64, f[2] as f64);
        let (mut ls, n) = self.log_components(&x);
        for (l, h) in ls[..n].iter_mut().zip(&self.hand_colour) {
            if *h {
                *l -= HAND_AWAY * (1.0 - near as f64);
            }
        }
        let m = ls[..n].iter().cloned().fold(f64::MIN, f64::max);
        (m + ls[..n].iter().map(|l| (l - m).exp()).sum::<f64>().ln()) as f32
    }

    /// The mixture's log density at colour `f`, hand colours counted as near their hand.
    #[cfg(test)]
    fn log_density(&self, f: [f32; 3]) -> f32 {
        self.log_density_near(f, 1.0)
    }

    /// Each component's weighted log density at `x` (at most `MAX_COMPONENTS`, on the
    /// stack: this runs for every cell in every EM round).
    fn log_components(&self, x: &Vector3<f64>) -> ([f64; MAX_COMPONENTS], usize) {
        let mut ls = [f64::MIN; MAX_COMPONENTS];
        let n = self.components.len().min(MAX_COMPONENTS);
        for (l, c) in ls.iter_mut().zip(&self.components) {
            *l = log_gauss(c, x);
        }
        (ls, n)
    }
}

/// Turns `(weight, mean, covariance, _)` into `(log weight + log normaliser, mean, inverse
/// covariance, _)`.
fn norm(c: (f64, Vector3<f64>, Matrix3<f64>, f64)) -> (f64, Vector3<f64>, Matrix3<f64>, f64) {
    let inv = c.2.try_inverse().unwrap_or_else(Matrix3::identity);
    let det = c.2.determinant().max(1e-300);
    let ln = c.0.max(1e-300).ln() - 0.5 * det.ln() - 1.5 * (std::f64::consts::TAU).ln();
    (ln, c.1, inv, 0.0)
}

fn log_gauss(c: &(f64, Vector3<f64>, Matrix3<f64>, f64), x: &Vector3<f64>) -> f64 {
    let r = x - c.1;
    c.0 - 0.5 * (r.transpose() * c.2 * r)[0]
}

/// A hand's silhouette from its 21 landmarks: the palm polygon and capsules along the
/// finger bones, sized from the palm's width.
struct HandShape {
    palm: Vec<[f32; 2]>,
    bones: Vec<([f32; 2], [f32; 2], f32)>,
}

impl HandShape {
    fn new(points: &[[f32; 3]]) -> HandShape {
        let p = |i: usize| [points[i][0], points[i][1]];
        let palm_width = dist(p(5), p(17)).max(dist(p(0), p(9)) * 0.5).max(1.0);
        let finger = 0.17 * palm_width;
        let palm = vec![p(0), p(1), p(2), p(5), p(9), p(13), p(17)];
        let mut bones = Vec::new();
        for (chain, r) in [
            ([1usize, 2, 3, 4], finger * 1.15),
            ([5, 6, 7, 8], finger),
            ([9, 10, 11, 12], finger),
            ([13, 14, 15, 16], finger * 0.95),
            ([17, 18, 19, 20], finger * 0.85),
        ] {
            for w in chain.windows(2) {
                bones.push((p(w[0]), p(w[1]), r));
            }
        }
        // The palm's edges are fleshy: capsules along them too.
        for w in [(0usize, 1usize), (0, 17), (5, 9), (9, 13), (13, 17), (2, 5)] {
            bones.push((p(w.0), p(w.1), finger));
        }
        HandShape { palm, bones }
    }

    /// How far `c` lies inside the silhouette (photo pixels; negative outside, infinite
    /// inside the palm polygon).
    fn depth(&self, c: [f32; 2]) -> f32 {
        if inside(&self.palm, c) {
            return f32::INFINITY;
        }
        self.bones
            .iter()
            .map(|&(a, b, r)| r - segment_distance(a, b, c))
            .fold(f32::MIN, f32::max)
    }

    /// Coverage of a cell of side `cell` at silhouette `depth` (linear ramp over one cell).
    fn coverage(depth: f32, cell: f32) -> f32 {
        (depth / cell + 0.5).clamp(0.0, 1.0)
    }

    /// 1 inside the silhouette, falling linearly to 0 at `margin` outside it, at `depth`.
    fn nearness(depth: f32, margin: f32) -> f32 {
        (1.0 + depth / margin.max(1e-3)).clamp(0.0, 1.0)
    }
}

/// The polygon through the given landmark indices.
fn polygon(pts: &[[f32; 2]], idx: &[usize]) -> Vec<[f32; 2]> {
    idx.iter().map(|&i| pts[i]).collect()
}

/// The bounding box `[x0, y0, x1, y1]` of points widened by `margin` on every side; `None`
/// without points.
fn widened_box<'a>(points: impl Iterator<Item = &'a [f32; 2]>, margin: f32) -> Option<[f32; 4]> {
    points
        .fold(None, |b: Option<[f32; 4]>, p| {
            let b = b.unwrap_or([p[0], p[1], p[0], p[1]]);
            Some([
                b[0].min(p[0]),
                b[1].min(p[1]),
                b[2].max(p[0]),
                b[3].max(p[1]),
            ])
        })
        .map(|b| [b[0] - margin, b[1] - margin, b[2] + margin, b[3] + margin])
}

fn centroid(poly: &[[f32; 2]]) -> [f32; 2] {
    let n = poly.len().max(1) as f32;
    let s = poly
        .iter()
        .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
    [s[0] / n, s[1] / n]
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// Even-odd point-in-polygon test.
fn inside(poly: &[[f32; 2]], p: [f32; 2]) -> bool {
    let mut c = false;
    let n = poly.len();
    let mut j = n.wrapping_sub(1);
    for i in 0..n {
        let (a, b) = (poly[i], poly[j]);
        if (a[1] > p[1]) != (b[1] > p[1])
            && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0]
        {
            c = !c;
        }
        j = i;
    }
    c
}

fn segment_distance(a: [f32; 2], b: [f32; 2], p: [f32; 2]) -> f32 {
    let ab = [b[0] - a[0], b[1] - a[1]];
    let ap = [p[0] - a[0], p[1] - a[1]];
    let l2 = ab[0] * ab[0] + ab[1] * ab[1];
    let t = if l2 > 0.0 {
        ((ap[0] * ab[0] + ap[1] * ab[1]) / l2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    dist([a[0] + t * ab[0], a[1] + t * ab[1]], p)
}

/// Distance from `p` to the polygon's boundary.
fn edge_distance(poly: &[[f32; 2]], p: [f32; 2]) -> f32 {
    let n = poly.len();
    (0..n)
        .map(|i| segment_distance(poly[i], poly[(i + 1) % n], p))
        .fold(f32::MAX, f32::min)
}

/// The face region of 468 FaceMesh landmarks (photo pixels) at the photo's size: 255 inside
/// the face oval, 0 outside (pixel centres tested).
pub fn face_region(points: &[[f32; 3]], width: u32, height: u32) -> GrayImage {
    let pts: Vec<[f32; 2]> = points.iter().map(|p| [p[0], p[1]]).collect();
    let oval = polygon(&pts, &FACE_OVAL);
    GrayImage::from_fn(width, height, |x, y| {
        Luma([if inside(&oval, [x as f32 + 0.5, y as f32 + 0.5]) {
            255
        } else {
            0
        }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landmarks(points: Vec<[f32; 3]>) -> FaceLandmarks {
        FaceLandmarks {
            points,
            presence: 1.0,
            crop: super::super::roi::Crop {
                image: RgbImage::new(1, 1),
                rect: super::super::roi::RotatedRect {
                    cx: 0.0,
                    cy: 0.0,
                    width: 1.0,
                    height: 1.0,
                    rotation: 0.0,
                },
                flipped: false,
            },
        }
    }

    #[test]
    fn degenerate_landmarks_give_a_mask_not_a_panic() {
        let photo = RgbImage::from_pixel(40, 30, image::Rgb([180, 120, 100]));
        let cases = [
            vec![[0.0f32; 3]; 468],
            vec![[-500.0, -500.0, 0.0]; 468],
            vec![[1e9, 1e9, 0.0]; 468],
            vec![[f32::NAN; 3]; 468],
            (0..468)
                .map(|i| [(i % 40) as f32, (i / 40) as f32 * 2.5, 0.0])
                .collect(),
        ];
        for pts in cases {
            let lm = landmarks(pts);
            let occ = Occlusion::estimate(&photo, &lm, &[], None, &OcclusionOptions::default());
            let f = occ.occluded_fraction();
            assert!((0.0..=1.0).contains(&f), "{f}");
            assert!(occ.occluded().values.iter().all(|v| v.is_finite()));
            let vis = occ.visibility(&lm.points, photo.dimensions());
            assert_eq!(vis.len(), 468);
            assert!(vis.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn polygon_inside_and_distance() {
        let sq = [[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]];
        assert!(inside(&sq, [1.0, 1.0]));
        assert!(!inside(&sq, [3.0, 1.0]));
        assert!((edge_distance(&sq, [1.0, 0.5]) - 0.5).abs() < 1e-6);
        assert!((segment_distance([0.0, 0.0], [2.0, 0.0], [3.0, 0.0]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn pixel_map_samples_bilinear_and_zero_outside() {
        let m = PixelMap {
            x0: 10,
            y0: 20,
            cell: 2,
            width: 2,
            height: 1,
            values: vec![0.0, 1.0],
        };
        assert_eq!(m.sample(5.0, 21.0), 0.0);
        assert!((m.sample(11.0, 21.0) - 0.0).abs() < 1e-6);
        assert!((m.sample(13.0, 21.0) - 1.0).abs() < 1e-6);
        assert!((m.sample(12.0, 21.0) - 0.5).abs() < 1e-6);
        assert_eq!(m.sample(15.0, 21.0), 0.0);
    }

    #[test]
    fn mean_field_fills_a_gap_and_keeps_isolated_cells_visible() {
        // A 20 × 20 face; a 10 × 20 band with strong evidence except one column, plus one
        // isolated weak cell far away.
        let (w, h) = (20, 20);
        let face = vec![true; w * h];
        let mut unary = vec![-2.0f32; w * h];
        for j in 0..h {
            for i in 0..10 {
                unary[j * w + i] = if i == 5 { -0.5 } else { 4.0 };
            }
        }
        unary[15 * w + 17] = 0.5;
        let mut q: Vec<f32> = unary.iter().map(|&a| sigmoid(a)).collect();
        mean_field(&mut q, &unary, &face, &face, w, h, 1, 3.0, 10);
        assert!(q[10 * w + 5] > 0.5, "gap not filled: {}", q[10 * w + 5]);
        assert!(
            q[15 * w + 17] < 0.5,
            "isolated cell kept: {}",
            q[15 * w + 17]
        );
        assert!(q[10 * w + 15] < 0.1);
    }

    #[test]
    fn fill_holes_closes_small_enclosed_islands_only() {
        // 12 × 12 grid, all face; an occluded ring around a 2 × 2 visible island, and a
        // visible gap at the grid's edge.
        let (w, h) = (12, 12);
        let face = vec![true; w * h];
        let mut q = vec![0.1f32; w * h];
        for j in 2..8 {
            for i in 2..8 {
                q[j * w + i] = 0.9;
            }
        }
        for j in 4..6 {
            for i in 4..6 {
                q[j * w + i] = 0.2;
            }
        }
        for j in 0..3 {
            q[j * w + 11] = 0.9;
        }
        q[w + 11] = 0.3; // open: touches the grid's edge
        let before = q.clone();
        fill_holes(&mut q, &face, w, h, 0.05);
        for j in 4..6 {
            for i in 4..6 {
                assert!((q[j * w + i] - 0.8).abs() < 1e-6, "island not closed");
            }
        }
        assert_eq!(q[w + 11], 0.3, "an island at the edge was closed");
        // The outer visible face is not an island; nothing else changes.
        let changed = q.iter().zip(&before).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 4);
        // Too large an island stays visible.
        let mut q2 = before.clone();
        fill_holes(&mut q2, &face, w, h, 0.02);
        assert_eq!(q2, before);
        // A non-face cell next to the island opens it.
        let mut face3 = face.clone();
        face3[4 * w + 3] = false;
        let mut q3 = before.clone();
        fill_holes(&mut q3, &face3, w, h, 0.05);
        assert_eq!(q3, before);
    }

    #[test]
    fn skin_chroma_follows_the_shading_residual() {
        // Skin whose chromaticity moves with its shading residual (more saturated in shadow)
        // over a flat shading field at log-luminance -1.
        let mut features = Vec::new();
        let mut coords = Vec::new();
        for j in 0..30 {
            for i in 0..30 {
                let rl = -0.8 + 1.1 * ((i * 7 + j * 13) % 30) as f32 / 29.0;
                features.push([0.8 - 0.3 * rl, -0.5 + 0.2 * rl, -1.0 + rl]);
                coords.push([i as f32 / 30.0 - 0.5, j as f32 / 30.0 - 0.5]);
            }
        }
        let zones = vec![Zone::Skin; features.len()];
        let q = vec![0.0f32; features.len()];
        let mut start = SkinModel {
            chroma: [
                SVector::<f64, 4>::from([0.8, 0.0, 0.0, 0.0]),
                SVector::<f64, 4>::from([-0.5, 0.0, 0.0, 0.0]),
            ],
            cov: Matrix2::from_diagonal_element(0.05 * 0.05),
            shading: SVector::<f64, 6>::zeros(),
        };
        start.shading[0] = -1.0;
        let mut model = SkinModel::fit(&features, &coords, &zones, &q, &start, true);
        for _ in 0..4 {
            model = SkinModel::fit(&features, &coords, &zones, &q, &model, false);
        }
        // The ridge shrinks the slopes (here by about half); their signs and sizes follow.
        let (d1, d2) = (model.chroma[0][3], model.chroma[1][3]);
        assert!(d1 < -0.1 && d2 > 0.06, "slopes {d1} {d2}");
        // The spread left to the covariance is below the chromaticity's own spread.
        let var1: f64 = {
            let m = features.iter().map(|f| f[0] as f64).sum::<f64>() / features.len() as f64;
            features
                .iter()
                .map(|f| (f[0] as f64 - m).powi(2))
                .sum::<f64>()
                / features.len() as f64
        };
        assert!(
            model.cov[(0, 0)] < 0.5 * var1,
            "{} vs {var1}",
            model.cov[(0, 0)]
        );
        // The deepest shadow is well inside the model.
        let (d2, band) = model.distances(features[0], coords[0]);
        assert!(d2 < 4.0 && band == 0.0, "{d2} {band}");
    }

    /// A colour found mostly under a detected hand is the hand's: away from the hand its
    /// density is lowered by `HAND_AWAY`; a colour found elsewhere is not.
    #[test]
    fn hand_colours_count_only_near_the_hand() {
        let mut feats = Vec::new();
        let mut hands = Vec::new();
        for i in 0..200 {
            let t = (i as f32 * 0.37).sin() * 0.01;
            let on_hand = i % 2 == 0;
            feats.push(if on_hand {
                [0.4 + t, -0.35 - t, -1.2 + t]
            } else {
                [0.0 - t, 0.1 + t, -3.0 - t]
            });
            // Nine in ten cells of the first colour lie under the hand, none of the second.
            hands.push(if on_hand && i % 20 != 0 { 1.0f32 } else { 0.0 });
        }
        let zones = vec![Zone::Skin; feats.len()];
        let q = vec![1.0f32; feats.len()];
        let mut g = Gmm::fit(&feats, &zones, &q, 3).expect("fitted");
        g.mark_hand_colours(&feats, &zones, &q, &hands);
        assert_eq!(g.hand_colour.iter().filter(|h| **h).count(), 1);
        let (hand, other) = ([0.4, -0.35, -1.2], [0.0, 0.1, -3.0]);
        let near = g.log_density_near(hand, 1.0);
        assert!((near - g.log_density(hand)).abs() < 1e-4);
        assert!(near - g.log_density_near(hand, 0.0) > HAND_AWAY as f32 - 0.5);
        assert!((g.log_density_near(other, 0.0) - g.log_density(other)).abs() < 1e-4);
    }

    #[test]
    fn gmm_recovers_two_clusters() {
        let mut feats = Vec::new();
        for i in 0..200 {
            let t = (i as f32 * 0.37).sin() * 0.01;
            feats.push(if i % 2 == 0 {
                [0.5 + t, -0.3 - t, -1.0 + t]
            } else {
                [0.0 - t, 0.1 + t, -3.0 - t]
            });
        }
        let zones = vec![Zone::Skin; feats.len()];
        let q = vec![1.0f32; feats.len()];
        let g = Gmm::fit(&feats, &zones, &q, 3).expect("fitted");
        assert!(g.log_density([0.5, -0.3, -1.0]) > g.log_density([0.25, -0.1, -2.0]) + 5.0);
        assert!(g.log_density([0.0, 0.1, -3.0]) > LOG_UNIFORM + 5.0);
    }

    #[test]
    fn hand_shape_covers_fingers_not_far_points() {
        // A flat hand pointing up: wrist at the bottom.
        let mut pts = vec![[0.0f32; 3]; 21];
        pts[0] = [50.0, 100.0, 0.0];
        for (f, x) in [
            (1usize, 30.0f32),
            (5, 38.0),
            (9, 50.0),
            (13, 60.0),
            (17, 70.0),
        ] {
            for s in 0..4 {
                pts[f + s] = [x, 80.0 - 12.0 * s as f32, 0.0];
            }
        }
        let h = HandShape::new(&pts);
        assert_eq!(HandShape::coverage(h.depth([50.0, 90.0]), 1.0), 1.0);
        assert_eq!(HandShape::coverage(h.depth([50.0, 50.0]), 1.0), 1.0);
        assert_eq!(HandShape::coverage(h.depth([150.0, 50.0]), 1.0), 0.0);
    }
}

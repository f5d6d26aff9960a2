//! The high-level perception API: one photo in, faces (detections, 468 landmarks, irises),
//! hands and a person mask out, all in photo pixel coordinates, with per-network timings.
//!
//! The chaining follows MediaPipe's graphs for a single image (`static_image_mode`):
//! face detection → rotated ROI (eyes level, scale 1.5) → FaceMesh → eye ROIs from
//! landmarks 33/133 and 362/263 → Iris; palm detection → hand ROI (scale 2.6, shifted
//! towards the fingers) → hand landmarks, kept when the presence score passes 0.5; selfie
//! segmentation on the whole photo. Beyond MediaPipe, a hand search around each face
//! ([`HandSearchOptions`]) finds hands over the face that the palm detector misses.

use std::path::Path;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::blazeface::{self, FaceDetection};
use super::face_mesh::{self, FaceLandmarks};
use super::hand_landmark::{self, HandLandmarks};
use super::iris::{self, EyeLandmarks, LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS};
use super::occlusion::{Occlusion, OcclusionOptions};
use super::palm::{self, PalmDetection};
use super::roi::RotatedRect;
use super::selfie::{self, PersonMask};
use super::{PerceptionError, Result, check_image, default_nets_dir};

/// Which face detector [`Perception`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaceDetectorMode {
    /// The short-range model (faces within ~2 m; what MediaPipe's FaceMesh uses).
    ShortRange,
    /// The full-range model (small and profile faces too; slower).
    FullRange,
    /// Short range first; full range only when short range finds no face.
    #[default]
    Auto,
}

/// What [`Perception::run`] computes.
#[derive(Debug, Clone, PartialEq)]
pub struct PerceptionOptions {
    /// Face detector(s) to use.
    pub detector: FaceDetectorMode,
    /// Landmarks (and irises) are computed for at most this many faces, the largest first.
    pub max_faces: usize,
    /// A face whose landmarks FaceMesh rejects (presence below 0.5) from the detector's crop
    /// is cropped again from those landmarks (MediaPipe's next-frame crop,
    /// [`face_mesh::roi_from_landmarks`]), at most this many times, and kept when the
    /// presence then passes. An occluder often shifts the detector's box; cropping from the
    /// landmarks centres the face again (`docs/perception.md`). 0 is MediaPipe's single-image
    /// behaviour.
    pub landmark_recrops: usize,
    /// Landmarks FaceMesh still rejects after the re-crops are kept when the face detector
    /// confirms them (`None`: only FaceMesh's presence decides, as in MediaPipe). See
    /// [`KeypointCheck`].
    pub keypoint_check: Option<KeypointCheck>,
    /// Run the iris network on each face with landmarks.
    pub iris: bool,
    /// Detect hands (palm detection + hand landmarks).
    pub hands: bool,
    /// At most this many hands (the best palm scores first; MediaPipe's default is 2).
    pub max_hands: usize,
    /// Palm detections below this score are dropped before the hand landmark network,
    /// whose presence score (≥ 0.5) then confirms each hand. The default, 0.3, is below
    /// MediaPipe's 0.5: a hand over a face is often partly hidden or blurred, and the
    /// presence check keeps false palms out (measured in `docs/perception.md`). Palms that
    /// pass 0.5 come first and are exactly MediaPipe's; weaker ones are added only where
    /// they do not overlap them.
    pub min_palm_score: f32,
    /// Look for a hand over each face with landmarks that the palm detector missed (with
    /// `hands` on; `None` skips it). See [`HandSearchOptions`].
    pub hand_search: Option<HandSearchOptions>,
    /// Compute the person mask.
    pub segmentation: bool,
    /// Estimate each face's occlusion mask and landmark visibility (`None` skips it).
    pub occlusion: Option<OcclusionOptions>,
}

impl Default for PerceptionOptions {
    fn default() -> Self {
        Self {
            detector: FaceDetectorMode::Auto,
            max_faces: 4,
            landmark_recrops: 2,
            keypoint_check: Some(KeypointCheck::default()),
            iris: true,
            hands: true,
            max_hands: 2,
            min_palm_score: 0.3,
            hand_search: Some(HandSearchOptions::default()),
            segmentation: true,
            occlusion: Some(OcclusionOptions::default()),
        }
    }
}

/// Landmarks confirmed by the face detector.
///
/// FaceMesh's presence score falls under a large occluder: a surgical mask over a face the
/// detector finds with a score of 0.76 can score 0.22, and MediaPipe then discards the
/// landmarks, although they lie where the unoccluded face's do. The detector's own four
/// central keypoints (eyes, nose tip, mouth centre) are an independent check: landmarks
/// whose presence reaches `min_presence` are kept when the detection scores at least
/// `min_score` and the same four points of the landmarks (eye-contour centres, nose tip
/// 1, mouth centre 13/14) lie on average within `max_distance` detection-box widths of the
/// keypoints. On the synthetic-occluder composites (`docs/perception.md`), faces that
/// FaceMesh accepts agree to 0.035 box widths (median; 99th percentile 0.086).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeypointCheck {
    /// Lowest FaceMesh presence the check can rescue (0.1).
    pub min_presence: f32,
    /// Lowest detection score (0.7).
    pub min_score: f32,
    /// Largest mean keypoint distance, detection-box widths (0.1).
    pub max_distance: f32,
}

impl Default for KeypointCheck {
    fn default() -> Self {
        Self {
            min_presence: 0.1,
            min_score: 0.7,
            max_distance: 0.1,
        }
    }
}

impl KeypointCheck {
    /// Mean distance, in detection-box widths, between the detection's eye, nose-tip and
    /// mouth keypoints and the same points of 468 landmarks (infinite when either is
    /// degenerate).
    pub fn distance(detection: &FaceDetection, points: &[[f32; 3]]) -> f32 {
        if points.len() < 468 {
            return f32::INFINITY;
        }
        let mean = |idx: &[usize]| {
            let n = idx.len() as f32;
            let s = idx.iter().fold([0.0f32; 2], |a, &i| {
                [a[0] + points[i][0], a[1] + points[i][1]]
            });
            [s[0] / n, s[1] / n]
        };
        let ours = [
            mean(&[33, 133, 159, 145]),
            mean(&[263, 362, 386, 374]),
            mean(&[1]),
            mean(&[13, 14]),
        ];
        let width = detection.bbox[2] - detection.bbox[0];
        let d: f32 = ours
            .iter()
            .zip(&detection.keypoints)
            .map(|(a, k)| (a[0] - k[0]).hypot(a[1] - k[1]))
            .sum::<f32>()
            / 4.0;
        let d = d / width;
        if d.is_finite() && width > 0.0 {
            d
        } else {
            f32::INFINITY
        }
    }

    /// Whether the detection confirms landmarks of this presence.
    pub fn confirms(&self, detection: &FaceDetection, landmarks: &FaceLandmarks) -> bool {
        landmarks.presence >= self.min_presence
            && detection.score >= self.min_score
            && Self::distance(detection, &landmarks.points) <= self.max_distance
    }
}

/// Why a face's landmarks are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandmarkCheck {
    /// FaceMesh's presence score passes its threshold (0.5), as in MediaPipe.
    Presence,
    /// The presence is lower, and the face detector's keypoints confirm the landmarks
    /// ([`KeypointCheck`]).
    DetectorKeypoints,
    /// Neither: the landmarks (if any) are not to be used.
    Failed,
}

/// The hand search around each face.
///
/// A hand over a face is the commonest occluder, and the palm detector, which looks at the
/// whole photo at 192², often misses one: seen at that size against a face, a palm is a
/// patch of skin. The hand landmark network, shown a crop of the face itself, recognises a
/// hand there far more reliably. For each face with landmarks, the search crops eight
/// squares, one batch: a hand reaching over the face from below, from each side, from above
/// and from the four diagonals — each crop `size` face widths wide (the width of the
/// landmarks' box), centred `offset` face widths out from the box's centre in that
/// direction, and turned so that the fingers point at the centre. It keeps the best
/// `candidates` whose presence reaches `min_proposal`. Each is re-cropped `refinements`
/// times from its own landmarks ([`hand_landmark::roi_from_landmarks`], MediaPipe's
/// tracking crop), and kept when its presence then reaches `min_presence` and it is not a
/// hand already found. A face seen this way has not the consistent hand geometry a real hand
/// gives after re-cropping: on the synthetic occluders and the development photos,
/// non-hands stay below 0.7 after refinement, hands reach 0.92 or more
/// (`docs/perception.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct HandSearchOptions {
    /// Side of each proposal crop, in face widths (1.5).
    pub size: f32,
    /// Distance of each proposal crop's centre from the face centre, in face widths (0.5).
    pub offset: f32,
    /// Proposals whose presence reaches this are refined (0.5).
    pub min_proposal: f32,
    /// At most this many proposals per face are refined, the best first (2).
    pub candidates: usize,
    /// Re-crops from the hand's own landmarks before the verdict (2).
    pub refinements: usize,
    /// A refined hand is kept when its presence reaches this (0.85).
    pub min_presence: f32,
}

impl Default for HandSearchOptions {
    fn default() -> Self {
        Self {
            size: 1.5,
            offset: 0.5,
            min_proposal: 0.5,
            candidates: 2,
            refinements: 2,
            min_presence: 0.85,
        }
    }
}

/// Wall-clock time spent in each stage of one [`Perception::run`] (crop, network and
/// post-processing together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timings {
    /// Face detection (both detectors in `Auto` mode when the first finds nothing).
    pub face_detection: Duration,
    /// FaceMesh on all faces.
    pub face_mesh: Duration,
    /// Iris on all faces.
    pub iris: Duration,
    /// Palm detection.
    pub palm_detection: Duration,
    /// Hand landmarks on all palms.
    pub hand_landmarks: Duration,
    /// The hand search around the faces.
    pub hand_search: Duration,
    /// Selfie segmentation.
    pub segmentation: Duration,
    /// Occlusion masks of all faces.
    pub occlusion: Duration,
    /// The whole run.
    pub total: Duration,
}

/// One face.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceResult {
    /// The detection (box, 6 keypoints, score), photo pixels.
    pub detection: FaceDetection,
    /// The rotated crop FaceMesh saw (eyes level): from the detection, or from the first
    /// landmarks when they were cropped again ([`PerceptionOptions::landmark_recrops`]).
    pub roi: RotatedRect,
    /// 468 landmarks, when this face is among the `max_faces` largest. Use them only when
    /// [`FaceResult::has_landmarks`] (MediaPipe discards landmarks whose face presence is
    /// below 0.5; [`FaceResult::landmark_check`] may confirm some of those).
    pub landmarks: Option<FaceLandmarks>,
    /// Whether the landmarks are trusted, and why ([`FaceResult::has_landmarks`]).
    pub landmark_check: LandmarkCheck,
    /// `[right eye, left eye]` (the subject's), when iris is enabled and
    /// [`FaceResult::has_landmarks`].
    pub eyes: Option<[EyeLandmarks; 2]>,
    /// The occlusion mask, when enabled and [`FaceResult::has_landmarks`].
    pub occlusion: Option<Occlusion>,
    /// Visibility in `[0, 1]` of each of the 468 landmarks (the occlusion mask sampled
    /// there; 0 outside the photo), when the occlusion mask exists.
    pub visibility: Option<Vec<f32>>,
}

impl FaceResult {
    /// Whether this face has landmarks to use: FaceMesh's presence passes its threshold, or
    /// the face detector confirms them (see [`FaceResult::landmark_check`]).
    pub fn has_landmarks(&self) -> bool {
        self.landmarks.is_some() && self.landmark_check != LandmarkCheck::Failed
    }

    /// Estimates this face's occlusion mask and landmark visibility (nothing unless
    /// [`FaceResult::has_landmarks`]).
    fn estimate_occlusion(
        &mut self,
        photo: &RgbImage,
        hands: &[HandResult],
        person: Option<&PersonMask>,
        options: &OcclusionOptions,
    ) {
        if !self.has_landmarks() {
            return;
        }
        let Some(lm) = self.landmarks.as_ref() else {
            return;
        };
        let occ = Occlusion::estimate(photo, lm, hands, person, options);
        self.visibility = Some(occ.visibility(&lm.points, photo.dimensions()));
        self.occlusion = Some(occ);
    }

    /// Visibility `[right, left]` of the iris centres (the occlusion mask sampled there),
    /// when both exist.
    pub fn iris_visibility(&self, photo_size: (u32, u32)) -> Option<[f32; 2]> {
        let (c, o) = (self.iris_centers()?, self.occlusion.as_ref()?);
        let v = o.visibility(
            &[[c[0][0], c[0][1], 0.0], [c[1][0], c[1][1], 0.0]],
            photo_size,
        );
        Some([v[0], v[1]])
    }

    /// Iris centres `[right, left]` (the subject's) in photo pixels, when computed.
    pub fn iris_centers(&self) -> Option<[[f32; 2]; 2]> {
        self.eyes.as_ref().map(|e| {
            [
                [e[0].iris[0][0], e[0].iris[0][1]],
                [e[1].iris[0][0], e[1].iris[0][1]],
            ]
        })
    }
}

/// One hand.
#[derive(Debug, Clone, PartialEq)]
pub struct HandResult {
    /// The palm detection, photo pixels; `None` for a hand found by the hand search around
    /// a face ([`HandSearchOptions`]).
    pub palm: Option<PalmDetection>,
    /// The rotated crop the landmark network saw.
    pub roi: RotatedRect,
    /// 21 landmarks and scores.
    pub landmarks: HandLandmarks,
}

/// Everything [`Perception::run`] found in a photo.
#[derive(Debug, Clone, PartialEq)]
pub struct PerceptionResult {
    /// Faces, largest box first. All detections are listed; landmarks exist for the first
    /// `max_faces`.
    pub faces: Vec<FaceResult>,
    /// Hands whose presence score passed the threshold, best palm score first.
    pub hands: Vec<HandResult>,
    /// The person mask, when segmentation is enabled.
    pub person_mask: Option<PersonMask>,
    /// Time per stage.
    pub timings: Timings,
}

/// All perception networks, loaded once.
#[derive(Debug, Clone)]
pub struct Perception {
    short_range: blazeface::Model,
    full_range: blazeface::Model,
    mesh: face_mesh::Model,
    iris: iris::Model,
    palm: palm::Model,
    hand: hand_landmark::Model,
    selfie: selfie::Model,
    options: PerceptionOptions,
}

impl Perception {
    /// Loads every network from `nets_dir` (the converted files of `assets/nets`).
    pub fn load(nets_dir: &Path, options: PerceptionOptions) -> Result<Self> {
        Ok(Self {
            short_range: blazeface::Model::from_dir(nets_dir, &blazeface::Config::short_range())?,
            full_range: blazeface::Model::from_dir(nets_dir, &blazeface::Config::full_range())?,
            mesh: face_mesh::Model::from_dir(nets_dir, &face_mesh::Config::default())?,
            iris: iris::Model::from_dir(nets_dir, &iris::Config::default())?,
            palm: palm::Model::from_dir(nets_dir, &palm::Config::default())?,
            hand: hand_landmark::Model::from_dir(nets_dir, &hand_landmark::Config::default())?,
            selfie: selfie::Model::from_dir(nets_dir, &selfie::Config::default())?,
            options,
        })
    }

    /// Loads from this repository's `assets/nets` with default options.
    pub fn load_default() -> Result<Self> {
        Self::load(&default_nets_dir(), PerceptionOptions::default())
    }

    /// The options.
    pub fn options(&self) -> &PerceptionOptions {
        &self.options
    }

    /// Replaces the options (no reload needed).
    pub fn set_options(&mut self, options: PerceptionOptions) {
        self.options = options;
    }

    /// Face detections, largest box first.
    pub fn detect_faces(&self, photo: &RgbImage) -> Result<Vec<FaceDetection>> {
        let mut faces = match self.options.detector {
            FaceDetectorMode::ShortRange => self.short_range.detect(photo)?,
            FaceDetectorMode::FullRange => self.full_range.detect(photo)?,
            FaceDetectorMode::Auto => {
                let f = self.short_range.detect(photo)?;
                if f.is_empty() {
                    self.full_range.detect(photo)?
                } else {
                    f
                }
            }
        };
        faces.sort_by(|a, b| b.area().total_cmp(&a.area()));
        Ok(faces)
    }

    /// [`Perception::run`] on an ingested [`Photo`](crate::photo::Photo) (its sRGB 8-bit
    /// pixels; coordinates are in the ingested photo's pixels, see
    /// [`Photo::to_original`](crate::photo::Photo::to_original)).
    pub fn run_photo(&self, photo: &crate::photo::Photo) -> Result<PerceptionResult> {
        self.run(&photo.to_rgb_image())
    }

    /// Runs everything the options ask for on one photo (8-bit sRGB).
    pub fn run(&self, photo: &RgbImage) -> Result<PerceptionResult> {
        let o = &self.options;
        check_image(photo)?;
        let start = Instant::now();
        let mut timings = Timings::default();

        let t = Instant::now();
        let detections = self.detect_faces(photo)?;
        timings.face_detection = t.elapsed();

        let t = Instant::now();
        let scale = self.mesh.config().roi_scale;
        let mut rois: Vec<RotatedRect> = detections
            .iter()
            .map(|d| face_mesh::roi_from_detection(d, scale))
            .collect();
        let n_mesh = o.max_faces.min(detections.len());
        let mut meshes = self.mesh.landmarks(photo, &rois[..n_mesh])?;
        let min_presence = self.mesh.config().min_presence;
        for (mesh, roi) in meshes.iter_mut().zip(rois.iter_mut()) {
            for _ in 0..o.landmark_recrops {
                let finite = mesh.points.iter().flatten().all(|v| v.is_finite());
                if mesh.presence >= min_presence || !finite {
                    break;
                }
                let next_roi = face_mesh::roi_from_landmarks(&mesh.points, scale);
                // Landmarks collapsed to a point or a line give no crop.
                if !(next_roi.width >= 1.0 && next_roi.width.is_finite()) {
                    break;
                }
                let Some(next) = self.mesh.landmarks(photo, &[next_roi])?.into_iter().next() else {
                    break;
                };
                if next.presence <= mesh.presence {
                    break;
                }
                *mesh = next;
                *roi = next_roi;
            }
        }
        let mut meshes = meshes.into_iter();
        timings.face_mesh = t.elapsed();

        let t = Instant::now();
        let mut faces = Vec::with_capacity(detections.len());
        for (detection, roi) in detections.into_iter().zip(rois) {
            let landmarks = meshes.next();
            let landmark_check = match &landmarks {
                Some(lm) if lm.presence >= min_presence => LandmarkCheck::Presence,
                Some(lm) if o.keypoint_check.is_some_and(|c| c.confirms(&detection, lm)) => {
                    LandmarkCheck::DetectorKeypoints
                }
                _ => LandmarkCheck::Failed,
            };
            // Rejected landmarks get no irises: the eye corners they place are not the
            // eyes'.
            let eyes = match (&landmarks, o.iris) {
                (Some(lm), true) if landmark_check != LandmarkCheck::Failed => {
                    let p = |i: usize| [lm.points[i][0], lm.points[i][1]];
                    Some(self.iris.eyes(
                        photo,
                        [p(RIGHT_EYE_CORNERS[0]), p(RIGHT_EYE_CORNERS[1])],
                        [p(LEFT_EYE_CORNERS[0]), p(LEFT_EYE_CORNERS[1])],
                    )?)
                }
                _ => None,
            };
            faces.push(FaceResult {
                detection,
                roi,
                landmarks,
                landmark_check,
                eyes,
                occlusion: None,
                visibility: None,
            });
        }
        timings.iris = t.elapsed();

        let mut hands = Vec::new();
        if o.hands {
            let t = Instant::now();
            // MediaPipe's palms as they are, then weaker ones that do not overlap them.
            let mut palms = if o.min_palm_score < palm::Config::default().min_score {
                self.palm.detect_extra(photo, o.min_palm_score)?
            } else {
                self.palm.detect_with(photo, o.min_palm_score)?
            };
            palms.truncate(o.max_hands);
            timings.palm_detection = t.elapsed();

            let t = Instant::now();
            let rois: Vec<RotatedRect> = palms.iter().map(palm::hand_roi).collect();
            let lms = self.hand.landmarks(photo, &rois)?;
            let min_presence = hand_landmark::Config::default().min_presence;
            for ((palm, roi), landmarks) in palms.into_iter().zip(rois).zip(lms) {
                if landmarks.presence >= min_presence {
                    hands.push(HandResult {
                        palm: Some(palm),
                        roi,
                        landmarks,
                    });
                }
            }
            timings.hand_landmarks = t.elapsed();

            if let Some(search) = &o.hand_search {
                let t = Instant::now();
                for face in faces.iter().filter(|f| f.has_landmarks()) {
                    let lm = face.landmarks.as_ref().expect("has_landmarks");
                    for found in self.search_hand(photo, &lm.points, search)? {
                        if !hands
                            .iter()
                            .any(|h| same_hand(&h.landmarks, &found.landmarks))
                        {
                            hands.push(found);
                        }
                    }
                }
                timings.hand_search = t.elapsed();
            }
        }

        let person_mask = if o.segmentation {
            let t = Instant::now();
            let m = self.selfie.segment(photo)?;
            timings.segmentation = t.elapsed();
            Some(m)
        } else {
            None
        };
        if let Some(options) = &o.occlusion {
            let t = Instant::now();
            for face in &mut faces {
                face.estimate_occlusion(photo, &hands, person_mask.as_ref(), options);
            }
            timings.occlusion = t.elapsed();
        }
        timings.total = start.elapsed();
        Ok(PerceptionResult {
            faces,
            hands,
            person_mask,
            timings,
        })
    }
}

impl Perception {
    /// The hand search of [`HandSearchOptions`] around one face (its 468 landmarks): the
    /// hands found, not yet checked against hands found otherwise.
    pub fn search_hand(
        &self,
        photo: &RgbImage,
        face: &[[f32; 3]],
        o: &HandSearchOptions,
    ) -> Result<Vec<HandResult>> {
        check_image(photo)?;
        let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
        for p in face {
            for k in 0..2 {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
        let width = hi[0] - lo[0];
        if !(width.is_finite() && width >= 1.0 && hi[1] > lo[1]) {
            return Ok(Vec::new());
        }
        let centre = [0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1])];
        // A hand reaching over the face from each of eight directions (below first): the
        // crop lies half a face width out that way, fingers pointing at the face centre.
        let proposals: Vec<RotatedRect> = (0..8)
            .map(|k| {
                let from = std::f32::consts::FRAC_PI_2 + k as f32 * std::f32::consts::FRAC_PI_4;
                let (dy, dx) = from.sin_cos();
                RotatedRect {
                    cx: centre[0] + o.offset * width * dx,
                    cy: centre[1] + o.offset * width * dy,
                    width: o.size * width,
                    height: o.size * width,
                    // The crop's y axis (wrist → fingers is its -y) along (dx, dy).
                    rotation: (-dx).atan2(dy),
                }
            })
            .collect();
        let mut found = self.hand.landmarks(photo, &proposals)?;
        found.sort_by(|a, b| b.presence.total_cmp(&a.presence));
        found.truncate(o.candidates);
        found.retain(|h| h.presence >= o.min_proposal);
        for _ in 0..o.refinements {
            if found.is_empty() {
                break;
            }
            let rois: Vec<RotatedRect> = found
                .iter()
                .map(|h| hand_landmark::roi_from_landmarks(&h.points))
                .collect();
            found = self.hand.landmarks(photo, &rois)?;
        }
        let mut hands: Vec<HandResult> = Vec::new();
        for landmarks in found {
            if landmarks.presence >= o.min_presence
                && !hands.iter().any(|h| same_hand(&h.landmarks, &landmarks))
            {
                hands.push(HandResult {
                    palm: None,
                    roi: landmarks.crop.rect,
                    landmarks,
                });
            }
        }
        Ok(hands)
    }
}

/// Whether two sets of hand landmarks are the same hand: their landmarks lie, on average,
/// within half a palm length (wrist to middle-finger MCP) of each other.
fn same_hand(a: &HandLandmarks, b: &HandLandmarks) -> bool {
    let palm = |h: &HandLandmarks| {
        let (w, m) = (h.points[0], h.points[9]);
        (w[0] - m[0]).hypot(w[1] - m[1])
    };
    let n = a.points.len().min(b.points.len()).max(1);
    let mean = a
        .points
        .iter()
        .zip(&b.points)
        .map(|(p, q)| (p[0] - q[0]).hypot(p[1] - q[1]))
        .sum::<f32>()
        / n as f32;
    mean < 0.5 * palm(a).max(palm(b))
}

/// One photo prepared for fitting: the photo, everything perception found in it, and the
/// face chosen for reconstruction (its landmarks, their visibility, the face region and
/// the occlusion mask).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The 8-bit sRGB photo the networks saw (coordinates are its pixels).
    pub image: RgbImage,
    /// Everything found in the photo (all faces, hands, the person mask, timings).
    pub perception: PerceptionResult,
    /// Index of the chosen face in `perception.faces`.
    pub face_index: usize,
}

impl Observation {
    /// Chooses the largest face with landmarks; [`PerceptionError::NoFace`] when there is
    /// none. The chosen face's occlusion mask is estimated here (default
    /// [`OcclusionOptions`]) when `perception` was run without it.
    pub fn new(image: RgbImage, perception: PerceptionResult) -> Result<Self> {
        let index = perception
            .faces
            .iter()
            .position(|f| f.has_landmarks())
            .ok_or(PerceptionError::NoFace {
                detections: perception.faces.len(),
            })?;
        let mut obs = Self {
            image,
            perception,
            face_index: index,
        };
        obs.ensure_occlusion();
        Ok(obs)
    }

    /// Chooses another face (an index into `perception.faces`); an error when it does not
    /// exist or has no landmarks (raise [`PerceptionOptions::max_faces`] to get landmarks
    /// for more faces).
    pub fn choose_face(&mut self, index: usize) -> Result<()> {
        match self.perception.faces.get(index) {
            Some(f) if f.has_landmarks() => {
                self.face_index = index;
                self.ensure_occlusion();
                Ok(())
            }
            _ => Err(PerceptionError::FaceWithoutLandmarks { index }),
        }
    }

    /// Estimates the chosen face's occlusion mask and visibility when they are missing.
    fn ensure_occlusion(&mut self) {
        let face = &mut self.perception.faces[self.face_index];
        if face.occlusion.is_none() || face.visibility.is_none() {
            face.estimate_occlusion(
                &self.image,
                &self.perception.hands,
                self.perception.person_mask.as_ref(),
                &OcclusionOptions::default(),
            );
        }
    }

    /// The chosen face.
    pub fn face(&self) -> &FaceResult {
        &self.perception.faces[self.face_index]
    }

    /// The chosen face's 468 landmarks (photo pixels).
    pub fn landmarks(&self) -> &FaceLandmarks {
        self.face()
            .landmarks
            .as_ref()
            .expect("an observation's face has landmarks")
    }

    /// The chosen face's occlusion mask and face region.
    pub fn occlusion(&self) -> &Occlusion {
        self.face()
            .occlusion
            .as_ref()
            .expect("an observation's face has an occlusion mask")
    }

    /// Visibility in `[0, 1]` of each of the 468 landmarks.
    pub fn visibility(&self) -> &[f32] {
        self.face()
            .visibility
            .as_deref()
            .expect("an observation's face has landmark visibility")
    }

    /// Mutable access to the chosen face's occlusion mask (to refine it from photometric
    /// residuals); call [`Observation::update_visibility`] afterwards.
    pub fn occlusion_mut(&mut self) -> &mut Occlusion {
        self.perception.faces[self.face_index]
            .occlusion
            .as_mut()
            .expect("an observation's face has an occlusion mask")
    }

    /// Recomputes the landmark visibility from the (refined) occlusion mask.
    pub fn update_visibility(&mut self) {
        let size = self.image.dimensions();
        let v = self.occlusion().visibility(&self.landmarks().points, size);
        self.perception.faces[self.face_index].visibility = Some(v);
    }
}

impl Perception {
    /// Runs perception on a photo and chooses the face to reconstruct (the largest with
    /// landmarks), with its occlusion mask and landmark visibility. The occlusion mask is
    /// computed with the options' [`OcclusionOptions`], or for the chosen face only with the
    /// defaults when they are off.
    pub fn observe(&self, photo: &RgbImage) -> Result<Observation> {
        Observation::new(photo.clone(), self.run(photo)?)
    }

    /// [`Perception::observe`] on an ingested [`Photo`](crate::photo::Photo).
    pub fn observe_photo(&self, photo: &crate::photo::Photo) -> Result<Observation> {
        self.observe(&photo.to_rgb_image())
    }
}

//! The high-level perception API: one photo in, faces (detections, 468 landmarks, irises),
//! hands and a person mask out, all in photo pixel coordinates, with per-network timings.
//!
//! The chaining follows MediaPipe's graphs for a single image (`static_image_mode`):
//! face detection → rotated ROI (eyes level, scale 1.5) → FaceMesh → eye ROIs from
//! landmarks 33/133 and 362/263 → Iris; palm detection → hand ROI (scale 2.6, shifted
//! towards the fingers) → hand landmarks, kept when the presence score passes 0.5; selfie
//! segmentation on the whole photo.

use std::path::Path;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::blazeface::{self, FaceDetection};
use super::face_mesh::{self, FaceLandmarks};
use super::hand_landmark::{self, HandLandmarks};
use super::iris::{self, EyeLandmarks, LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS};
use super::palm::{self, PalmDetection};
use super::roi::RotatedRect;
use super::selfie::{self, PersonMask};
use super::{Result, check_image, default_nets_dir};

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
    /// Run the iris network on each face with landmarks.
    pub iris: bool,
    /// Detect hands (palm detection + hand landmarks).
    pub hands: bool,
    /// At most this many hands (the best palm scores first; MediaPipe's default is 2).
    pub max_hands: usize,
    /// Compute the person mask.
    pub segmentation: bool,
}

impl Default for PerceptionOptions {
    fn default() -> Self {
        Self {
            detector: FaceDetectorMode::Auto,
            max_faces: 4,
            iris: true,
            hands: true,
            max_hands: 2,
            segmentation: true,
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
    /// Selfie segmentation.
    pub segmentation: Duration,
    /// The whole run.
    pub total: Duration,
}

/// One face.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceResult {
    /// The detection (box, 6 keypoints, score), photo pixels.
    pub detection: FaceDetection,
    /// The rotated crop FaceMesh saw (eyes level).
    pub roi: RotatedRect,
    /// 468 landmarks, when this face is among the `max_faces` largest.
    pub landmarks: Option<FaceLandmarks>,
    /// `[right eye, left eye]` (the subject's), when iris is enabled and landmarks exist.
    pub eyes: Option<[EyeLandmarks; 2]>,
}

impl FaceResult {
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
    /// The palm detection, photo pixels.
    pub palm: PalmDetection,
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
        check_image(photo)?;
        let start = Instant::now();
        let mut timings = Timings::default();
        let o = &self.options;

        let t = Instant::now();
        let detections = self.detect_faces(photo)?;
        timings.face_detection = t.elapsed();

        let t = Instant::now();
        let scale = self.mesh.config().roi_scale;
        let rois: Vec<RotatedRect> = detections
            .iter()
            .map(|d| face_mesh::roi_from_detection(d, scale))
            .collect();
        let n_mesh = o.max_faces.min(detections.len());
        let mut meshes = self.mesh.landmarks(photo, &rois[..n_mesh])?.into_iter();
        timings.face_mesh = t.elapsed();

        let t = Instant::now();
        let mut faces = Vec::with_capacity(detections.len());
        for (detection, roi) in detections.into_iter().zip(rois) {
            let landmarks = meshes.next();
            let eyes = match (&landmarks, o.iris) {
                (Some(lm), true) => {
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
                eyes,
            });
        }
        timings.iris = t.elapsed();

        let mut hands = Vec::new();
        if o.hands {
            let t = Instant::now();
            let mut palms = self.palm.detect(photo)?;
            palms.truncate(o.max_hands);
            timings.palm_detection = t.elapsed();

            let t = Instant::now();
            let rois: Vec<RotatedRect> = palms.iter().map(palm::hand_roi).collect();
            let lms = self.hand.landmarks(photo, &rois)?;
            let min_presence = hand_landmark::Config::default().min_presence;
            for ((palm, roi), landmarks) in palms.into_iter().zip(rois).zip(lms) {
                if landmarks.presence >= min_presence {
                    hands.push(HandResult {
                        palm,
                        roi,
                        landmarks,
                    });
                }
            }
            timings.hand_landmarks = t.elapsed();
        }

        let person_mask = if o.segmentation {
            let t = Instant::now();
            let m = self.selfie.segment(photo)?;
            timings.segmentation = t.elapsed();
            Some(m)
        } else {
            None
        };
        timings.total = start.elapsed();
        Ok(PerceptionResult {
            faces,
            hands,
            person_mask,
            timings,
        })
    }
}

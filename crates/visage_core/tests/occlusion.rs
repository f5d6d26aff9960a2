//! The occlusion mask against synthetic occluders with known masks: every face of
//! `tests/fixtures/occlusion/` × every occluder kind × 2 seeds, measured as
//! `examples/occlusion_eval.rs` does (that example is compiled in here as a module).

#[path = "../examples/occlusion_eval.rs"]
#[allow(dead_code)]
mod occlusion_eval;

use occlusion_eval::{
    Fixture, fixture_paths, iou_stats, load_fixture, perception, report, run_case, seed_for,
};
use visage_core::perception::synthetic::{self, OccluderKind};
use visage_core::perception::{Occlusion, OcclusionOptions, Perception, PerceptionOptions};
use visage_core::photo::{IngestOptions, Photo};

const SEEDS: u64 = 2;

/// Lowest accepted mean IoU per occluder kind on seeds 0 and 1 (the truth: the occluder and
/// the labelled hair over the face oval; IoU inside the clean face region): regression guards
/// about 0.05 below what the estimator measures there (2026-12-04: sunglasses 0.808, mask
/// 0.874, hand 0.737, blobs 0.685; `docs/perception.md`). The goal is 0.75 for every kind;
/// hands and blobs are not there on the held-out seeds.
fn min_mean_iou(kind: OccluderKind) -> f32 {
    // threshold: measured − 0.05.
    match kind {
        OccluderKind::Sunglasses => 0.75,
        OccluderKind::SurgicalMask => 0.82,
        OccluderKind::Hand => 0.68,
        OccluderKind::Blobs => 0.63,
    }
}

/// Highest accepted false-positive area (share of the face region, outside the labelled
/// hair) on each clean photo: measured at most 0.057.
// threshold: measured + 0.05.
const MAX_CLEAN_FP: f32 = 0.11;

#[test]
fn occlusion_mask_matches_synthetic_occluders() {
    let p = perception();
    let fixtures: Vec<Fixture> = fixture_paths()
        .iter()
        .enumerate()
        .map(|(i, path)| load_fixture(&p, i, path, None))
        .collect();
    assert!(fixtures.len() >= 6, "{} fixture faces", fixtures.len());
    let mut cases = Vec::new();
    for fx in &fixtures {
        for kind in OccluderKind::ALL {
            for s in 0..SEEDS {
                cases.push(run_case(&p, fx, kind, s, None));
            }
        }
    }
    println!("{}", report(&fixtures, &cases, SEEDS));

    let mut failures = Vec::new();
    for kind in OccluderKind::ALL {
        let (mean, _, _) = iou_stats(&cases, kind);
        if mean.is_nan() || mean < min_mean_iou(kind) {
            failures.push(format!(
                "{kind}: mean IoU {mean:.3} < {}",
                min_mean_iou(kind)
            ));
        }
    }
    for f in &fixtures {
        // No hands are in the clean photos: the hand search must not see one in a face.
        if f.clean_hands > 0 {
            failures.push(format!(
                "{}: {} hands on the clean photo",
                f.name, f.clean_hands
            ));
        }
        if f.clean_fp > MAX_CLEAN_FP {
            failures.push(format!(
                "{}: clean false-positive area {:.3} > {MAX_CLEAN_FP}",
                f.name, f.clean_fp
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A synthetic hand that the palm detector misses (over the eye of the second fixture face,
/// seed 1000) is found by the hand search around the face, and its landmarks lie on it.
#[test]
fn hand_search_finds_a_hand_the_palm_detector_misses() {
    let p = perception();
    let (_, comp) = fixture_with_occluder(&p, 1, OccluderKind::Hand, 0);
    let without = Perception::load(
        &visage_core::perception::default_nets_dir(),
        PerceptionOptions {
            hand_search: None,
            occlusion: None,
            ..PerceptionOptions::default()
        },
    )
    .expect("perception networks");
    let palms_only = without.run(&comp.image).expect("perception");
    assert!(
        palms_only.hands.is_empty(),
        "the palm detector found this hand"
    );

    let found = p.run(&comp.image).expect("perception");
    assert_eq!(found.hands.len(), 1, "the hand search found no hand");
    let hand = &found.hands[0];
    assert!(hand.palm.is_none());
    assert!(hand.landmarks.presence >= 0.85);
    let on_hand = hand
        .landmarks
        .points
        .iter()
        .filter(|q| {
            let (x, y) = (q[0].round() as i64, q[1].round() as i64);
            (0..comp.mask.width() as i64).contains(&x)
                && (0..comp.mask.height() as i64).contains(&y)
                && comp.mask.get_pixel(x as u32, y as u32).0[0] > 0
        })
        .count();
    assert!(
        on_hand >= 17,
        "{on_hand} of 21 hand landmarks on the synthetic hand"
    );
}

/// A grey mask over `sample5_c`'s lower face (seed 3): the skin model explains its colour at
/// some skin cell, but no visible skin shows it, so the occluder model keeps it. (When any
/// colour the skin model explained was dropped, the mask came out visible: IoU 0.000.)
#[test]
fn an_occluder_colour_no_visible_skin_shows_stays_an_occluder() {
    let p = perception();
    let fx = load_fixture(&p, 5, &fixture_paths()[5], None);
    assert_eq!(fx.name, "sample5_c");
    let case = run_case(&p, &fx, OccluderKind::SurgicalMask, 3, None);
    println!("IoU {:.3}", case.iou);
    // threshold: measured 0.899 inside the face region (0.873 counted anywhere) − 0.2.
    assert!(case.iou > 0.7, "IoU {:.3}", case.iou);
}

/// A blob striped in magenta and a skin-like brown over `sample5_c`'s eye (seed 2): the
/// first skin start takes the brown for the skin and leaves three quarters of the face
/// "occluded"; the other candidate colours are then tried, and the real skin wins. (Without
/// the fallback: IoU 0.224.)
#[test]
fn a_skin_model_that_hides_most_of_the_face_is_retried() {
    let p = perception();
    let fx = load_fixture(&p, 5, &fixture_paths()[5], None);
    let case = run_case(&p, &fx, OccluderKind::Blobs, 2, None);
    println!("IoU {:.3}", case.iou);
    // threshold: measured 0.983 inside the face region (0.823 counted anywhere) − 0.33.
    assert!(case.iou > 0.65, "IoU {:.3}", case.iou);
}

/// Fixture face `index` and the composite of its `s`-th occluder of `kind` (as the
/// measurement draws it).
fn fixture_with_occluder(
    p: &Perception,
    index: usize,
    kind: OccluderKind,
    s: u64,
) -> (Fixture, synthetic::Composite) {
    let fx = load_fixture(p, index, &fixture_paths()[index], None);
    let comp = synthetic::composite(&fx.image, &fx.landmarks, kind, seed_for(index, s));
    (fx, comp)
}

/// The face networks only (no hands, person mask or occlusion), with `edit` applied to the
/// options.
fn face_networks(edit: impl FnOnce(&mut PerceptionOptions)) -> Perception {
    let mut options = PerceptionOptions {
        occlusion: None,
        hands: false,
        segmentation: false,
        ..PerceptionOptions::default()
    };
    edit(&mut options);
    Perception::load(&visage_core::perception::default_nets_dir(), options)
        .expect("perception networks")
}

/// Blobs over the astronaut's face (seed 1) make FaceMesh reject the landmarks it finds from
/// the detector's crop (presence 0.48; no irises or occlusion mask are computed for it);
/// cropped again from those landmarks, the face passes, and the landmarks lie where the
/// clean photo's are.
#[test]
fn rejected_landmarks_are_cropped_again() {
    let p = perception();
    let (fx, comp) = fixture_with_occluder(&p, 0, OccluderKind::Blobs, 1);
    let recrops = |n| {
        face_networks(|o| {
            o.landmark_recrops = n;
            o.keypoint_check = None;
            o.occlusion = Some(OcclusionOptions::default());
        })
    };
    let once = recrops(0);
    let first = once.run(&comp.image).expect("perception");
    assert!(!first.faces.is_empty(), "the detector finds the face");
    assert!(
        !first.faces[0].has_landmarks(),
        "FaceMesh accepts this face from the detector's crop (presence {:?})",
        first.faces[0].landmarks.as_ref().map(|l| l.presence)
    );
    // Rejected landmarks get no irises and no occlusion mask.
    assert!(first.faces[0].eyes.is_none() && first.faces[0].occlusion.is_none());
    let again = recrops(2);
    let found = again.run(&comp.image).expect("perception");
    let face = &found.faces[0];
    assert!(face.has_landmarks(), "still rejected after cropping again");
    assert!(face.eyes.is_some() && face.occlusion.is_some());
    let lm = face.landmarks.as_ref().unwrap();
    let err = landmark_error(&lm.points, &fx.landmarks);
    // Measured 0.030 face widths (the median over all synthetic composites is 0.027).
    assert!(err < 0.05, "mean landmark error {err} face widths");
    assert_ne!(
        face.roi, first.faces[0].roi,
        "the crop is the landmarks' crop"
    );
}

/// Mean distance of two sets of landmarks, in face widths of the second.
fn landmark_error(a: &[[f32; 3]], clean: &[[f32; 3]]) -> f32 {
    let width = (clean[454][0] - clean[234][0]).abs();
    a.iter()
        .zip(clean)
        .map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1]))
        .sum::<f32>()
        / a.len() as f32
        / width
}

/// A patterned mask over the second fixture face (seed 1003): FaceMesh rejects the face
/// even after cropping again (presence 0.22), while the detector finds it (score 0.76) with
/// keypoints where the landmarks' eyes, nose and mouth are. The keypoint check keeps the
/// landmarks, and they lie near the clean photo's.
#[test]
fn detector_keypoints_confirm_landmarks_under_a_mask() {
    use visage_core::perception::{KeypointCheck, LandmarkCheck};
    let p = perception();
    let (fx, comp) = fixture_with_occluder(&p, 1, OccluderKind::SurgicalMask, 3);
    let presence_only = face_networks(|o| o.keypoint_check = None);
    let first = presence_only.run(&comp.image).expect("perception");
    assert_eq!(first.faces.len(), 1, "the detector finds the face");
    let face = &first.faces[0];
    let presence = face.landmarks.as_ref().map(|l| l.presence);
    assert!(
        !face.has_landmarks() && face.landmark_check == LandmarkCheck::Failed,
        "FaceMesh accepts this face (presence {presence:?})"
    );

    let checked = face_networks(|o| o.keypoint_check = Some(KeypointCheck::default()));
    let found = checked.run(&comp.image).expect("perception");
    let face = &found.faces[0];
    assert!(face.has_landmarks(), "the keypoint check rejects the face");
    assert_eq!(face.landmark_check, LandmarkCheck::DetectorKeypoints);
    let lm = face.landmarks.as_ref().unwrap();
    let d = KeypointCheck::distance(&face.detection, &lm.points);
    // Measured 0.070 box widths; landmark error 0.055 face widths.
    assert!(d <= KeypointCheck::default().max_distance, "{d}");
    let err = landmark_error(&lm.points, &fx.landmarks);
    assert!(err < 0.08, "mean landmark error {err} face widths");

    // The same landmarks moved by a fifth of the box fail the check.
    let mut moved = lm.clone();
    let shift = 0.2 * (face.detection.bbox[2] - face.detection.bbox[0]);
    for q in &mut moved.points {
        q[0] += shift;
    }
    assert!(!KeypointCheck::default().confirms(&face.detection, &moved));
    // Degenerate landmarks never pass.
    let mut nan = lm.clone();
    nan.points[1] = [f32::NAN; 3];
    assert!(!KeypointCheck::default().confirms(&face.detection, &nan));
    assert!(KeypointCheck::distance(&face.detection, &lm.points[..10]).is_infinite());
}

/// Pixels predicted occluded outside the face oval, and how many of them the occluder's
/// true mask covers (`truth` = `None`: no occluder).
fn occluded_outside_oval(
    p: &Perception,
    image: &image::RgbImage,
    truth: Option<&image::GrayImage>,
    options: &OcclusionOptions,
) -> (usize, usize, usize) {
    let result = p.run(image).expect("perception");
    let face = result
        .faces
        .iter()
        .find(|f| f.has_landmarks())
        .expect("a face with landmarks");
    let occ = Occlusion::estimate(
        image,
        face.landmarks.as_ref().unwrap(),
        &result.hands,
        result.person_mask.as_ref(),
        options,
    );
    let (mut outside, mut outside_true, mut face_area) = (0, 0, 0);
    for (x, y, _) in image.enumerate_pixels() {
        let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
        if occ.face_mask().sample(px, py) >= 0.5 {
            face_area += 1;
        } else if occ.occluded().sample(px, py) > 0.5 {
            outside += 1;
            outside_true += truth.is_some_and(|t| t.get_pixel(x, y).0[0] > 0) as usize;
        }
    }
    (outside, outside_true, face_area)
}

/// FaceMesh draws a smaller chin under a mask: the occlusion mask follows the mask past the
/// oval (onto the mask, not elsewhere), not without the extension, and not on the clean face.
/// (The ring past the upper oval is off here: it follows the astronaut's hair.)
#[test]
fn mask_is_followed_past_the_jaw_line() {
    let p = perception();
    let (fx, comp) = fixture_with_occluder(&p, 0, OccluderKind::SurgicalMask, 0);
    assert_eq!(fx.name, "astronaut");
    let options = OcclusionOptions {
        ring: 0.0,
        ..OcclusionOptions::default()
    };
    let (outside, on_mask, face) =
        occluded_outside_oval(&p, &comp.image, Some(&comp.mask), &options);
    println!(
        "masked: {outside} px occluded outside the oval, {on_mask} on the mask; face {face} px"
    );
    assert!(outside as f32 > 0.02 * face as f32, "{outside} of {face}");
    assert!(
        on_mask as f32 > 0.9 * outside as f32,
        "{on_mask} of {outside}"
    );

    let without = OcclusionOptions {
        extension: 0.0,
        ..options.clone()
    };
    let (outside, _, _) = occluded_outside_oval(&p, &comp.image, Some(&comp.mask), &without);
    assert_eq!(outside, 0, "without the extension");

    let (outside, _, _) = occluded_outside_oval(&p, &fx.image, None, &options);
    assert_eq!(outside, 0, "clean face");
}

/// The development photos (`../shared/photos`, real occluders; present only in the
/// development checkout, not redistributable, so not a fixture): the occluded share of the
/// largest face stays low on unoccluded faces and high on masks and sunglasses. Measured
/// 2026-11-23 (`visage detect --json`): frontal 0.016–0.094, three-quarter with a beard 0.21,
/// masks 0.42–0.53, dark sunglasses 0.58, hand over an eye 0.19.
#[test]
fn development_photos_occluded_share() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/photos");
    if !dir.exists() {
        eprintln!(
            "skipping: {} is absent (it lives beside the development checkout)",
            dir.display()
        );
        return;
    }
    let p = Perception::load(
        &visage_core::perception::default_nets_dir(),
        PerceptionOptions::default(),
    )
    .expect("perception networks");
    // (photo, lowest accepted share, highest accepted share, whether a hand is there);
    // thresholds: measured ± about 0.07 (the unoccluded ones: at most 0.12, the beard counts
    // as occluded). No hand may be found where there is none (the hand search looks at
    // every face).
    let cases: [(&str, f32, f32, bool); 9] = [
        ("frontal_01.jpg", 0.0, 0.12, false),
        ("frontal_02.jpg", 0.0, 0.12, false),
        ("frontal_03.jpg", 0.0, 0.12, false),
        ("frontal_04.jpg", 0.0, 0.12, false),
        ("three_quarter_unoccluded_01.png", 0.0, 0.28, false),
        ("face_mask_01.jpg", 0.35, 0.7, false),
        ("face_mask_02.jpg", 0.35, 0.7, false),
        ("sunglasses_01.jpg", 0.45, 0.75, false),
        ("hand_over_eye_01.jpg", 0.12, 0.4, true),
    ];
    let mut failures = Vec::new();
    for (name, lo, hi, hand) in cases {
        let photo = Photo::open(dir.join(name), &IngestOptions::default()).expect(name);
        let found = p.run_photo(&photo).expect(name);
        let share = found
            .faces
            .iter()
            .find_map(|f| f.occlusion.as_ref())
            .map(|o| o.occluded_fraction());
        println!(
            "{name}: occluded share {share:?}, {} hands",
            found.hands.len()
        );
        match share {
            Some(s) if (lo..=hi).contains(&s) => {}
            other => failures.push(format!("{name}: {other:?} not in [{lo}, {hi}]")),
        }
        if found.hands.is_empty() == hand {
            failures.push(format!("{name}: {} hands found", found.hands.len()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A dark fringe painted across the astronaut's forehead and on past the face oval: the mask
/// follows it into the ring outside the oval's upper part, and not without the ring. What
/// the ring adds off the fringe lies above the nose tip (the astronaut's own hair at the
/// temples), not beside the cheeks or the jaw.
#[test]
fn fringe_is_followed_past_the_upper_oval() {
    let p = perception();
    let fx = load_fixture(&p, 0, &fixture_paths()[0], None);
    assert_eq!(fx.name, "astronaut");
    // The fringe: from above the oval's top (landmark 10) down to 45 % of the way to the
    // brows (landmark 9), across the whole photo; dark brown strands.
    let (top, brow) = (fx.landmarks[10][1], fx.landmarks[9][1]);
    let face_width = (fx.landmarks[454][0] - fx.landmarks[234][0]).abs();
    let (y0, y1) = (top - 0.2 * face_width, top + 0.45 * (brow - top));
    let nose_tip = fx.landmarks[1][1];
    let mut image = fx.image.clone();
    let mut fringe = image::GrayImage::new(image.width(), image.height());
    let mut upper = image::GrayImage::new(image.width(), image.height());
    for (x, y, px) in image.enumerate_pixels_mut() {
        let yc = y as f32 + 0.5;
        if yc >= y0 && yc < y1 {
            let v = if (x / 3) % 2 == 0 { 0 } else { 12 };
            *px = image::Rgb([58 + v, 38 + v, 24 + v]);
            fringe.put_pixel(x, y, image::Luma([255]));
        }
        if yc < nose_tip {
            upper.put_pixel(x, y, image::Luma([255]));
        }
    }
    let options = OcclusionOptions::default();
    let (outside, on_fringe, face) = occluded_outside_oval(&p, &image, Some(&fringe), &options);
    let (_, above_nose, _) = occluded_outside_oval(&p, &image, Some(&upper), &options);
    println!(
        "fringe: {outside} px occluded outside the oval, {on_fringe} on the fringe, \
         {above_nose} above the nose tip; face {face} px"
    );
    // threshold: measured 0 without the ring.
    assert!(
        on_fringe as f32 > 0.03 * face as f32,
        "{on_fringe} of {face}"
    );
    assert!(
        above_nose as f32 > 0.95 * outside as f32,
        "{above_nose} of {outside}"
    );
    let without = OcclusionOptions {
        ring: 0.0,
        ..options
    };
    let (outside, _, _) = occluded_outside_oval(&p, &image, Some(&fringe), &without);
    assert_eq!(outside, 0, "without the ring");
}

//! `Perception::observe`: the chosen face, its occlusion mask and landmark visibility, the
//! no-face error, and refining the mask from photometric residuals.

use std::path::Path;

use image::{Rgb, RgbImage};
use visage_core::perception::occlusion::{FACE_OVAL, LEFT_EYE, LIPS_OUTER, RIGHT_EYE};
use visage_core::perception::{
    FaceDetectorMode, Perception, PerceptionError, PerceptionOptions, face_region,
};

fn astronaut() -> RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/photos/astronaut.png");
    image::open(path).unwrap().to_rgb8()
}

fn group_photo() -> RgbImage {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perception/sample2_720.webp");
    image::open(path).unwrap().to_rgb8()
}

fn mean(v: impl Iterator<Item = f32>) -> f32 {
    let (s, n) = v.fold((0.0, 0), |(s, n), x| (s + x, n + 1));
    s / n as f32
}

#[test]
fn astronaut_is_observed_mostly_visible() {
    let p = Perception::load_default().unwrap();
    let img = astronaut();
    let obs = p.observe(&img).unwrap();
    assert_eq!(obs.face_index, 0);
    let vis = obs.visibility();
    assert_eq!(vis.len(), 468);
    assert!(vis.iter().all(|v| (0.0..=1.0).contains(v)));
    let visible = vis.iter().filter(|&&v| v >= 0.5).count();
    let occ = obs.occlusion();
    println!(
        "astronaut: {visible} of 468 landmarks visible, occluded fraction {:.3}",
        occ.occluded_fraction()
    );
    // Nothing covers her face; hair at the top of the face oval is the only occluder.
    assert!(visible >= 360, "only {visible} landmarks visible");
    assert!(occ.occluded_fraction() < 0.2);
    for idx in [&RIGHT_EYE[..], &LEFT_EYE[..], &LIPS_OUTER[..]] {
        let m = mean(idx.iter().map(|&i| vis[i]));
        assert!(m > 0.8, "eyes and lips are visible: {m}");
    }
    let iris = obs.face().iris_visibility(img.dimensions()).unwrap();
    assert!(iris[0] > 0.5 && iris[1] > 0.5);
    // The face region agrees with the standalone rasteriser.
    let region = face_region(&obs.landmarks().points, img.width(), img.height());
    let (mut agree, mut total) = (0usize, 0usize);
    for (x, y, px) in region.enumerate_pixels() {
        let inside = px.0[0] > 0;
        let m = occ.face_mask().sample(x as f32 + 0.5, y as f32 + 0.5) > 0.5;
        if inside || m {
            total += 1;
            agree += (inside == m) as usize;
        }
    }
    let iou = agree as f32 / total as f32;
    assert!(iou > 0.9, "face mask vs face_region IoU {iou}");
    // Oval landmarks lie on the region's edge; nose tip (1) inside.
    assert!(
        occ.face_mask()
            .sample(obs.landmarks().points[1][0], obs.landmarks().points[1][1])
            > 0.99
    );
    assert!(FACE_OVAL.contains(&10));
}

#[test]
fn a_hand_at_the_mouth_hides_mouth_landmarks() {
    let options = PerceptionOptions {
        detector: FaceDetectorMode::FullRange,
        ..PerceptionOptions::default()
    };
    let p = Perception::load(&visage_core::perception::default_nets_dir(), options).unwrap();
    let img = group_photo();
    let mut obs = p.observe(&img).unwrap();
    // The leftmost face has a finger at her lips.
    let leftmost = obs
        .perception
        .faces
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.detection.bbox[0].total_cmp(&b.1.detection.bbox[0]))
        .map(|(i, _)| i)
        .unwrap();
    obs.choose_face(leftmost).unwrap();
    let occ = obs.occlusion();
    let hand_cells = occ
        .hand_coverage()
        .values
        .iter()
        .zip(&occ.face_mask().values)
        .filter(|(h, f)| **h > 0.5 && **f > 0.5)
        .count();
    let vis = obs.visibility();
    let hidden_lips = LIPS_OUTER.iter().filter(|&&i| vis[i] < 0.5).count();
    let eyes = mean(RIGHT_EYE.iter().chain(&LEFT_EYE).map(|&i| vis[i]));
    println!(
        "leftmost face: {hand_cells} face cells under a hand, {hidden_lips} of 20 outer-lip landmarks hidden, eye visibility {eyes:.2}"
    );
    assert!(hand_cells > 0, "the hand over the face is part of the mask");
    assert!(
        hidden_lips >= 1,
        "the finger at the lips hides lip landmarks"
    );
    assert!(eyes > 0.6, "her eyes are visible: {eyes}");
    // Out of range and landmark-less faces cannot be chosen.
    assert!(matches!(
        obs.choose_face(99),
        Err(PerceptionError::FaceWithoutLandmarks { index: 99 })
    ));
}

#[test]
fn an_observation_estimates_the_mask_when_perception_skipped_it() {
    let options = PerceptionOptions {
        occlusion: None,
        ..PerceptionOptions::default()
    };
    let p = Perception::load(&visage_core::perception::default_nets_dir(), options).unwrap();
    let img = astronaut();
    let result = p.run(&img).unwrap();
    assert!(result.faces.iter().all(|f| f.occlusion.is_none()));
    let obs = visage_core::perception::Observation::new(img.clone(), result).unwrap();
    assert_eq!(obs.visibility().len(), 468);
    // The same mask as with the default options.
    let full = Perception::load_default().unwrap().observe(&img).unwrap();
    assert_eq!(obs.occlusion(), full.occlusion());
}

#[test]
fn a_photo_without_a_face_is_a_clear_error() {
    let p = Perception::load_default().unwrap();
    let img = RgbImage::from_fn(320, 240, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    match p.observe(&img) {
        Err(e @ PerceptionError::NoFace { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("no face was found"), "{msg}");
        }
        other => panic!("expected NoFace, got {other:?}"),
    }
}

#[test]
fn photometric_residuals_refine_the_mask() {
    let p = Perception::load_default().unwrap();
    let img = astronaut();
    let mut obs = p.observe(&img).unwrap();
    let before = obs.occlusion().occluded_fraction();
    // A fit that explains every pixel (residual 0.01 with sigma 0.05) except a square over
    // the left cheek (residual 0.5): the square becomes occluded, the rest visible.
    let lm = obs.landmarks().points.clone();
    let cheek = lm[425];
    let half = 0.12 * (lm[454][0] - lm[234][0]).abs();
    let inside = |x: u32, y: u32| {
        (x as f32 + 0.5 - cheek[0]).abs() < half && (y as f32 + 0.5 - cheek[1]).abs() < half
    };
    obs.occlusion_mut().refine_with_residuals(
        |x, y| Some(if inside(x, y) { 0.5 } else { 0.01 }),
        0.05,
        1.0,
    );
    obs.update_visibility();
    let occ = obs.occlusion();
    let m = occ.occluded();
    assert!(m.sample(cheek[0], cheek[1]) > 0.9, "square occluded");
    assert!(obs.visibility()[425] < 0.5);
    let after = occ.occluded_fraction();
    println!("occluded fraction {before:.3} -> {after:.3}");
    assert!(after > 0.02 && after < before + 0.1);
    // Outside the square, the residual evidence wins over weak appearance evidence.
    let nose = lm[4];
    assert!(m.sample(nose[0], nose[1]) < 0.1);
    // Residuals that explain everything clear the mask except where hands are (none here).
    obs.occlusion_mut()
        .refine_with_residuals(|_, _| Some(0.0), 0.05, 1.0);
    assert!(obs.occlusion().occluded_fraction() < 0.01);
    // No residuals at all: back to the appearance-only mask.
    obs.occlusion_mut()
        .refine_with_residuals(|_, _| None, 0.05, 1.0);
    assert!((obs.occlusion().occluded_fraction() - before).abs() < 1e-6);
}

/// The hand search on degenerate face landmarks (collapsed to a point, NaN, a line) finds
/// nothing and does not panic; on an empty photo it is an error value.
#[test]
fn hand_search_on_degenerate_landmarks_finds_nothing() {
    let p = Perception::load_default().unwrap();
    let img = astronaut();
    let options = visage_core::perception::HandSearchOptions::default();
    let point = vec![[100.0f32, 100.0, 0.0]; 468];
    let nan = vec![[f32::NAN; 3]; 468];
    let line: Vec<[f32; 3]> = (0..468).map(|i| [i as f32, 50.0, 0.0]).collect();
    for face in [&point, &nan, &line] {
        assert!(p.search_hand(&img, face, &options).unwrap().is_empty());
    }
    assert!(
        p.search_hand(&RgbImage::new(0, 0), &line, &options)
            .is_err()
    );
}

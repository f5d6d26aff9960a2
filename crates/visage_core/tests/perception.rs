//! Golden tests of the perception networks against MediaPipe's TFLite runtime.
//!
//! Fixtures (`tests/fixtures/perception/*.safetensors`) come from
//! `tools/reference_mediapipe.py`: the exact 8-bit network inputs MediaPipe's preprocessing
//! produces, the TFLite runtime's raw outputs for them, and MediaPipe's end-to-end results.
//! Each test feeds the stored input to the Rust network and compares.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use visage_core::perception::ops::images_to_tensor;
use visage_core::perception::roi::{Border, RotatedRect, crop};
use visage_core::perception::{
    FaceDetectorMode, Perception, PerceptionError, PerceptionOptions, blazeface, face_mesh,
    hand_landmark, iris, palm, selfie,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perception")
}

fn nets() -> PathBuf {
    visage_core::perception::default_nets_dir()
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(format!("{name}.safetensors")), &Device::Cpu)
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn floats(t: &HashMap<String, Tensor>, key: &str) -> Vec<f32> {
    t[key]
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// The `index`-th image of a `[.., H, W, 3]` u8 tensor.
fn image_of(t: &Tensor, index: usize) -> RgbImage {
    let dims = t.dims();
    let (h, w) = (dims[dims.len() - 3], dims[dims.len() - 2]);
    let all = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let n = h * w * 3;
    RgbImage::from_raw(w as u32, h as u32, all[index * n..(index + 1) * n].to_vec()).unwrap()
}

fn rect_of(v: &[f32]) -> RotatedRect {
    RotatedRect {
        cx: v[0],
        cy: v[1],
        width: v[2],
        height: v[3],
        rotation: v[4],
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Number of differing bytes and the largest difference between two images.
fn byte_diff(a: &RgbImage, b: &RgbImage) -> (usize, i32) {
    assert_eq!(a.dimensions(), b.dimensions());
    let d: Vec<i32> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as i32 - y as i32).abs())
        .collect();
    (
        d.iter().filter(|&&v| v > 0).count(),
        d.into_iter().max().unwrap_or(0),
    )
}

fn group_photo() -> RgbImage {
    image::open(fixtures().join("sample2_720.webp"))
        .unwrap()
        .to_rgb8()
}

fn astronaut() -> RgbImage {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/photos/astronaut.png");
    image::open(p).unwrap().to_rgb8()
}

#[test]
fn crop_matches_opencv_warp() {
    let f = load("crops");
    let rect = rect_of(&floats(&f, "rect"));
    let photo = astronaut();
    for (key, border, flip) in [
        ("zero", Border::Zero, false),
        ("replicate", Border::Replicate, false),
        ("replicate_flipped", Border::Replicate, true),
    ] {
        let mine = crop(&photo, &rect, 96, 64, border, flip);
        let reference = image_of(&f[key], 0);
        let diffs: Vec<i32> = mine
            .image
            .as_raw()
            .iter()
            .zip(reference.as_raw())
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .collect();
        let max = diffs.iter().copied().max().unwrap();
        let off = diffs.iter().filter(|&&d| d > 0).count();
        println!(
            "crop {key}: max diff {max}, {off} of {} values differ",
            diffs.len()
        );
        // The sampler is OpenCV's fixed-point one; a source position that rounds to the other
        // 1/32-pixel step (float error in the rect -> matrix computation) changes a value by
        // a fraction of the local contrast, so a handful of values may differ slightly.
        assert!(max <= 8, "crop {key}: max diff {max}");
        assert!(off * 1000 < diffs.len(), "crop {key}: {off} values differ");
    }
}

fn check_detector(cfg: blazeface::Config, fixture: &str) {
    let f = load(fixture);
    let model = blazeface::Model::from_dir(&nets(), &cfg).unwrap();
    let input = image_of(&f["input"], 0);
    let x = images_to_tensor(&[&input], (-1.0, 1.0), &Device::Cpu).unwrap();
    let (reg, cls) = model.forward(&x).unwrap();
    let reg = reg.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let cls = cls.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let reg_err = max_abs_diff(&reg, &floats(&f, "regressors"));
    let cls_err = max_abs_diff(&cls, &floats(&f, "logits"));
    println!("{fixture}: max |regressor diff| {reg_err} (input px), max |logit diff| {cls_err}");
    assert!(reg_err < 5e-3, "regressors differ by {reg_err}");
    assert!(cls_err < 5e-3, "logits differ by {cls_err}");

    // End to end on the photo: crop, run, decode, NMS, project; against MediaPipe's graph.
    let dets = model.detect(&astronaut()).unwrap();
    let mp = floats(&f, "mp_detections");
    assert_eq!(dets.len() * 17, mp.len(), "number of faces");
    for (d, m) in dets.iter().zip(mp.chunks(17)) {
        let mut mine: Vec<f32> = d.bbox.to_vec();
        mine.extend(d.keypoints.iter().flatten());
        let px_err = max_abs_diff(&mine, &m[..16]);
        println!(
            "{fixture}: detection vs MediaPipe: {px_err} px, score {} vs {}",
            d.score, m[16]
        );
        assert!(
            px_err < 0.05,
            "detection differs from MediaPipe by {px_err} px"
        );
        assert!((d.score - m[16]).abs() < 1e-3);
    }
}

#[test]
fn blazeface_short_range_matches_tflite() {
    check_detector(
        blazeface::Config::short_range(),
        "face_detection_short_range",
    );
}

#[test]
fn blazeface_full_range_matches_tflite() {
    check_detector(blazeface::Config::full_range(), "face_detection_full_range");
}

fn check_face_mesh(fixture: &str) -> f32 {
    let f = load(fixture);
    let model = face_mesh::Model::from_dir(&nets(), &face_mesh::Config::default()).unwrap();
    let input = image_of(&f["input"], 0);
    let x = images_to_tensor(&[&input], (0.0, 1.0), &Device::Cpu).unwrap();
    let (lm, logit) = model.forward(&x).unwrap();
    let lm = lm.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let logit = logit.to_vec1::<f32>().unwrap()[0];
    let reference = floats(&f, "landmarks");
    let xy_err = lm
        .chunks(3)
        .zip(reference.chunks(3))
        .map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1]))
        .fold(0.0, f32::max);
    let z_err = lm
        .chunks(3)
        .zip(reference.chunks(3))
        .map(|(a, b)| (a[2] - b[2]).abs())
        .fold(0.0, f32::max);
    let flag = floats(&f, "face_flag")[0];
    println!(
        "{fixture}: max landmark error {xy_err} px (192 px crop), z {z_err}, logit {logit} vs {flag}"
    );
    assert!(xy_err < 0.01, "landmarks differ by {xy_err} px");
    assert!(z_err < 0.01, "depths differ by {z_err}");
    assert!((logit - flag).abs() < 1e-2);
    assert!(logit > 0.0, "the face is present");
    xy_err
}

#[test]
fn face_mesh_matches_tflite() {
    check_face_mesh("face_landmark");
    check_face_mesh("group_face_landmark");
}

#[test]
fn face_mesh_end_to_end_matches_mediapipe() {
    // Crop the photo ourselves from the stored rect; compare with MediaPipe's FaceMesh graph.
    let f = load("face_landmark");
    let rect = rect_of(&floats(&f, "rect"));
    let model = face_mesh::Model::from_dir(&nets(), &face_mesh::Config::default()).unwrap();
    let faces = model.landmarks(&astronaut(), &[rect]).unwrap();
    let mp = floats(&f, "mp_landmarks");
    let err = faces[0]
        .points
        .iter()
        .zip(mp.chunks(3))
        .map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1]))
        .fold(0.0, f32::max);
    println!("face mesh end to end: max error vs MediaPipe {err} px (photo)");
    assert!(err < 0.05, "landmarks differ from MediaPipe by {err} px");
    assert!(faces[0].presence > 0.99);
    // The crop is the one MediaPipe fed its network (up to a few 1/32-pixel rounding flips).
    let (off, max) = byte_diff(&faces[0].crop.image, &image_of(&f["input"], 0));
    println!("face mesh crop vs MediaPipe's: {off} values differ, by at most {max}");
    assert!(off < 50 && max <= 8);
}

#[test]
fn iris_matches_tflite() {
    let f = load("iris_landmark");
    let model = iris::Model::from_dir(&nets(), &iris::Config::default()).unwrap();
    let eyes = [image_of(&f["input"], 0), image_of(&f["input"], 1)];
    let x = images_to_tensor(&[&eyes[0], &eyes[1]], (0.0, 1.0), &Device::Cpu).unwrap();
    let (c, i) = model.forward(&x).unwrap();
    let c = c.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let i = i.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let c_err = max_abs_diff(&c, &floats(&f, "contours"));
    let i_err = max_abs_diff(&i, &floats(&f, "iris"));
    println!("iris: max contour error {c_err}, max iris error {i_err} (64 px crop)");
    assert!(c_err < 0.01 && i_err < 0.01);
}

#[test]
fn palm_detection_matches_tflite() {
    let f = load("palm_detection_lite");
    let model = palm::Model::from_dir(&nets(), &palm::Config::default()).unwrap();
    let input = image_of(&f["input"], 0);
    let x = images_to_tensor(&[&input], (0.0, 1.0), &Device::Cpu).unwrap();
    let (reg, cls) = model.forward(&x).unwrap();
    let reg = reg.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let cls = cls.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let reg_err = max_abs_diff(&reg, &floats(&f, "regressors"));
    let cls_err = max_abs_diff(&cls, &floats(&f, "logits"));
    println!("palm: max |regressor diff| {reg_err} (input px), max |logit diff| {cls_err}");
    assert!(reg_err < 5e-3 && cls_err < 5e-3);

    // End to end on the photo (our crop, decode, NMS, projection) against the reference
    // decode of the runtime outputs.
    let group = group_photo();
    let palms = model.detect(&group).unwrap();
    let reference = floats(&f, "detections");
    assert_eq!(palms.len() * 19, reference.len(), "number of palms");
    for (p, r) in palms.iter().zip(reference.chunks(19)) {
        let mut mine: Vec<f32> = p.bbox.to_vec();
        mine.extend(p.keypoints.iter().flatten());
        let err = max_abs_diff(&mine, &r[..18]);
        println!(
            "palm at {:?}: {err} px from the reference, score {}",
            p.bbox, p.score
        );
        assert!(err < 0.01, "palm differs by {err} px");
    }
}

#[test]
fn hand_landmarks_match_tflite_and_mediapipe() {
    let f = load("hand_landmark_lite");
    let model = hand_landmark::Model::from_dir(&nets(), &hand_landmark::Config::default()).unwrap();
    let input = image_of(&f["input"], 0);
    let x = images_to_tensor(&[&input], (0.0, 1.0), &Device::Cpu).unwrap();
    let (lm, presence, handed, world) = model.forward(&x).unwrap();
    let lm_err = max_abs_diff(
        &lm.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &floats(&f, "landmarks"),
    );
    let world_err = max_abs_diff(
        &world.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &floats(&f, "world"),
    );
    let p = presence.to_vec1::<f32>().unwrap()[0];
    let h = handed.to_vec1::<f32>().unwrap()[0];
    println!(
        "hand: max landmark error {lm_err} (224 px crop), world {world_err} m, presence {p} vs {}, handedness {h} vs {}",
        floats(&f, "presence")[0],
        floats(&f, "handedness")[0]
    );
    assert!(lm_err < 0.01 && world_err < 1e-4);
    assert!((p - floats(&f, "presence")[0]).abs() < 1e-3);
    assert!((h - floats(&f, "handedness")[0]).abs() < 1e-3);

    // End to end: the palm's crop on the photo against MediaPipe's Hands graph.
    let hands = model
        .landmarks(&group_photo(), &[rect_of(&floats(&f, "rect"))])
        .unwrap();
    let mp = floats(&load("palm_detection_lite"), "mp_landmarks");
    let mp_left = floats(&load("palm_detection_lite"), "mp_left_score");
    let best = mp
        .chunks(63)
        .enumerate()
        .map(|(i, m)| {
            let err = hands[0]
                .points
                .iter()
                .zip(m.chunks(3))
                .map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1]))
                .fold(0.0, f32::max);
            (err, i)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    println!(
        "hand end to end: max error vs MediaPipe {} px (photo)",
        best.0
    );
    assert!(
        best.0 < 0.05,
        "hand landmarks differ from MediaPipe by {} px",
        best.0
    );
    assert!((hands[0].right_hand - mp_left[best.1]).abs() < 1e-3);
}

#[test]
fn selfie_segmentation_matches_mediapipe() {
    let f = load("selfie_segmentation");
    let model = selfie::Model::from_dir(&nets(), &selfie::Config::default()).unwrap();
    let input = image_of(&f["input"], 0);
    let x = images_to_tensor(&[&input], (0.0, 1.0), &Device::Cpu).unwrap();
    let mask = model.forward(&x).unwrap();
    assert_eq!(mask.dims(), &[1, 1, 256, 256]);
    let mask = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let reference = floats(&f, "mask");
    let err = max_abs_diff(&mask, &reference);
    let mean = reference.iter().sum::<f32>() / reference.len() as f32;
    println!("selfie: max mask error {err} (reference stored as fp16), mean {mean}");
    assert!(err < 2e-3, "mask differs by {err}");
    // The photo path resizes the astronaut photo the same way.
    let m = model.segment(&astronaut()).unwrap();
    let err = max_abs_diff(&m.values, &reference);
    assert!(err < 2e-3, "segment() differs by {err}");
    assert!(
        m.sample(230.0, 140.0) > 0.9,
        "the face is part of the person"
    );
    assert!(
        m.sample(470.0, 40.0) < 0.1,
        "the top-right corner is background"
    );
}

#[test]
fn perception_on_the_astronaut() {
    let p = Perception::load_default().unwrap();
    let photo = astronaut();
    let r = p.run(&photo).unwrap();
    assert_eq!(r.faces.len(), 1);
    let face = &r.faces[0];
    let lm = face.landmarks.as_ref().unwrap();
    assert_eq!(lm.points.len(), 468);
    assert!(lm.presence > 0.99);
    // Same landmarks as MediaPipe's FaceMesh graph.
    let mp = floats(&load("face_landmark"), "mp_landmarks");
    let err = lm
        .points
        .iter()
        .zip(mp.chunks(3))
        .map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1]))
        .fold(0.0, f32::max);
    assert!(
        err < 0.05,
        "pipeline landmarks differ from MediaPipe by {err} px"
    );

    // Irises: the runtime's outputs for the same eye crops, projected (mirrored back for the
    // second eye), and roughly where the attention FaceMesh puts them.
    let f = load("iris_landmark");
    let eyes = face.eyes.as_ref().unwrap();
    let rects = floats(&f, "rect");
    let iris_ref = floats(&f, "iris");
    let mut worst = 0f32;
    for (k, eye) in eyes.iter().enumerate() {
        let rect = rect_of(&rects[k * 5..k * 5 + 5]);
        for (j, p) in eye.iris.iter().enumerate() {
            let r = &iris_ref[k * 15 + j * 3..k * 15 + j * 3 + 3];
            let u = r[0] / 64.0;
            let q = rect.to_photo(if k == 1 { 1.0 - u } else { u }, r[1] / 64.0);
            let e = (p[0] - q[0]).hypot(p[1] - q[1]);
            worst = worst.max(e);
            assert!(e < 0.02, "eye {k} iris point {j} off by {e} px");
        }
    }
    println!("iris through the pipeline: max {worst} px from the projected runtime outputs");
    let centers = face.iris_centers().unwrap();
    let att = floats(&f, "mp_attention_iris_centers");
    for c in centers {
        let d = att
            .chunks(2)
            .map(|a| (a[0] - c[0]).hypot(a[1] - c[1]))
            .fold(f32::MAX, f32::min);
        println!("iris centre {c:?}: {d} px from the attention model's");
        assert!(d < 1.5, "iris centre {d} px from the attention model's");
    }
    assert!(
        centers[0][0] < centers[1][0],
        "the subject's right eye is on the image left"
    );

    let mask = r.person_mask.as_ref().unwrap();
    assert!(mask.sample(lm.points[1][0], lm.points[1][1]) > 0.9);
    assert!(r.hands.is_empty(), "no hands in the astronaut photo");

    // Through the photo-ingest module: same pixels (sRGB -> linear -> sRGB round trip), same
    // landmarks.
    let ingested = visage_core::photo::Photo::open(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/photos/astronaut.png"),
        &visage_core::photo::IngestOptions::default(),
    )
    .unwrap();
    let r2 = p.run_photo(&ingested).unwrap();
    assert_eq!(r2.faces.len(), 1);
    assert_eq!(r2.faces[0].landmarks.as_ref().unwrap().points, lm.points);
    println!("timings: {:?}", r.timings);
    assert!(r.timings.total >= r.timings.face_mesh);
}

#[test]
fn perception_on_the_group_photo() {
    let options = PerceptionOptions {
        detector: FaceDetectorMode::FullRange,
        segmentation: false,
        // MediaPipe's Hands graph threshold and no hand search, for the comparison with
        // its landmarks.
        min_palm_score: 0.5,
        hand_search: None,
        ..PerceptionOptions::default()
    };
    let p = Perception::load(&nets(), options).unwrap();
    let r = p.run(&group_photo()).unwrap();
    assert_eq!(r.faces.len(), 3);
    let areas: Vec<f32> = r.faces.iter().map(|f| f.detection.area()).collect();
    assert!(areas.windows(2).all(|w| w[0] >= w[1]), "largest first");
    assert!(
        r.faces
            .iter()
            .all(|f| f.landmarks.is_some() && f.eyes.is_some())
    );
    // The face with a hand at the mouth (leftmost) against the TFLite runtime's landmarks.
    let f = load("group_face_landmark");
    let rect = rect_of(&floats(&f, "rect"));
    let leftmost = r
        .faces
        .iter()
        .min_by(|a, b| a.detection.bbox[0].total_cmp(&b.detection.bbox[0]))
        .unwrap();
    let reference = floats(&f, "landmarks");
    let err = leftmost
        .landmarks
        .as_ref()
        .unwrap()
        .points
        .iter()
        .zip(reference.chunks(3))
        .map(|(a, b)| {
            let q = rect.to_photo(b[0] / 192.0, b[1] / 192.0);
            (a[0] - q[0]).hypot(a[1] - q[1])
        })
        .fold(0.0, f32::max);
    assert!(err < 0.05, "group face landmarks off by {err} px");
    // Both hands MediaPipe's Hands graph finds.
    assert_eq!(r.hands.len(), 2);
    let mp = floats(&load("palm_detection_lite"), "mp_landmarks");
    for h in &r.hands {
        let best = mp
            .chunks(63)
            .map(|m| {
                h.landmarks
                    .points
                    .iter()
                    .zip(m.chunks(3))
                    .map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1]))
                    .fold(0.0, f32::max)
            })
            .fold(f32::MAX, f32::min);
        println!("hand at {:?}: {best} px from MediaPipe", h.roi);
        assert!(
            best < 0.05,
            "hand landmarks differ from MediaPipe by {best} px"
        );
    }
    assert!(r.person_mask.is_none());
}

#[test]
fn bad_inputs_are_errors() {
    let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/no-such-dir");
    match Perception::load(&missing, PerceptionOptions::default()) {
        Err(PerceptionError::Io { path, .. }) => assert!(path.starts_with(&missing)),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    // The fixture directory has a `face_landmark.safetensors` too: a valid safetensors file
    // without the network's tensors.
    match face_mesh::Model::from_dir(&fixtures(), &face_mesh::Config::default()) {
        Err(e @ PerceptionError::Weights { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("face_landmark.safetensors"), "{msg}");
        }
        other => panic!("expected a weights error, got {other:?}"),
    }
    let p = Perception::load_default().unwrap();
    let empty = RgbImage::new(0, 0);
    match p.run(&empty) {
        Err(PerceptionError::InvalidImage(msg)) => assert!(msg.contains("empty")),
        other => panic!("expected InvalidImage, got {other:?}"),
    }
    // A tiny photo is fine (no faces).
    let r = p.run(&RgbImage::new(3, 2)).unwrap();
    assert!(r.faces.is_empty());
}

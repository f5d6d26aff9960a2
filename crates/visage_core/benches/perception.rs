//! Perception benchmarks: each network's forward pass on its fixture input, the face chain
//! (detection + FaceMesh + iris on the astronaut photo, everything, the occlusion mask, the
//! hand search with and without a synthetic hand), and the depthwise convolution
//! kernel against candle's grouped convolution.
//!
//! `cargo bench -p visage_core --bench perception`. Inputs are the committed fixtures
//! (deterministic); the synthetic depthwise inputs use a fixed LCG seed (printed).
//! Compare with `tools/time_mediapipe.py` (MediaPipe's TFLite runtime, same inputs).

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use criterion::{Criterion, criterion_group, criterion_main};
use image::RgbImage;
use visage_core::perception::ops::{Activation, DepthwiseConv2d, Padding, images_to_tensor};
use visage_core::perception::synthetic::{self, OccluderKind};
use visage_core::perception::{
    FaceDetectorMode, HandSearchOptions, Occlusion, OcclusionOptions, Perception,
    PerceptionOptions, blazeface, face_mesh, hand_landmark, iris, palm, selfie,
};

const SEED: u32 = 7;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/perception")
}

fn fixture_input(name: &str, range: (f32, f32)) -> Tensor {
    let t: HashMap<String, Tensor> = candle_core::safetensors::load(
        fixtures().join(format!("{name}.safetensors")),
        &Device::Cpu,
    )
    .expect("fixture");
    let input = &t["input"];
    let dims = input.dims().to_vec();
    let (h, w) = (dims[dims.len() - 3], dims[dims.len() - 2]);
    let n = if dims.len() == 4 { dims[0] } else { 1 };
    let raw = input.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let images: Vec<RgbImage> = raw
        .chunks(h * w * 3)
        .take(n)
        .map(|c| RgbImage::from_raw(w as u32, h as u32, c.to_vec()).unwrap())
        .collect();
    let refs: Vec<&RgbImage> = images.iter().collect();
    images_to_tensor(&refs, range, &Device::Cpu).unwrap()
}

fn networks(c: &mut Criterion) {
    println!(
        "machine: {}; depthwise seed {SEED}",
        visage_core::machine::description()
    );
    let nets = visage_core::perception::default_nets_dir();
    let mut g = c.benchmark_group("network");
    g.sample_size(20);

    let short = blazeface::Model::from_dir(&nets, &blazeface::Config::short_range()).unwrap();
    let x = fixture_input("face_detection_short_range", (-1.0, 1.0));
    g.bench_function("blazeface_short_128", |b| {
        b.iter(|| black_box(short.forward(&x).unwrap()))
    });
    let full = blazeface::Model::from_dir(&nets, &blazeface::Config::full_range()).unwrap();
    let x = fixture_input("face_detection_full_range", (-1.0, 1.0));
    g.bench_function("blazeface_full_192", |b| {
        b.iter(|| black_box(full.forward(&x).unwrap()))
    });
    let mesh = face_mesh::Model::from_dir(&nets, &face_mesh::Config::default()).unwrap();
    let x = fixture_input("face_landmark", (0.0, 1.0));
    g.bench_function("face_mesh_192", |b| {
        b.iter(|| black_box(mesh.forward(&x).unwrap()))
    });
    let iris = iris::Model::from_dir(&nets, &iris::Config::default()).unwrap();
    let x = fixture_input("iris_landmark", (0.0, 1.0));
    g.bench_function("iris_64_x2", |b| {
        b.iter(|| black_box(iris.forward(&x).unwrap()))
    });
    let palm = palm::Model::from_dir(&nets, &palm::Config::default()).unwrap();
    let x = fixture_input("palm_detection_lite", (0.0, 1.0));
    g.bench_function("palm_lite_192", |b| {
        b.iter(|| black_box(palm.forward(&x).unwrap()))
    });
    let hand = hand_landmark::Model::from_dir(&nets, &hand_landmark::Config::default()).unwrap();
    let x = fixture_input("hand_landmark_lite", (0.0, 1.0));
    g.bench_function("hand_lite_224", |b| {
        b.iter(|| black_box(hand.forward(&x).unwrap()))
    });
    let seg = selfie::Model::from_dir(&nets, &selfie::Config::default()).unwrap();
    let x = fixture_input("selfie_segmentation", (0.0, 1.0));
    g.bench_function("selfie_256", |b| {
        b.iter(|| black_box(seg.forward(&x).unwrap()))
    });
    g.finish();
}

fn face_chain(c: &mut Criterion) {
    let photo = image::open(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/photos/astronaut.png"),
    )
    .unwrap()
    .to_rgb8();
    let options = PerceptionOptions {
        detector: FaceDetectorMode::ShortRange,
        hands: false,
        segmentation: false,
        occlusion: None,
        ..PerceptionOptions::default()
    };
    let p = Perception::load(&visage_core::perception::default_nets_dir(), options).unwrap();
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(20);
    g.bench_function("astronaut_detect_mesh_iris", |b| {
        b.iter(|| black_box(p.run(&photo).unwrap()))
    });
    let mut all = p.clone();
    all.set_options(PerceptionOptions::default());
    g.bench_function("astronaut_everything", |b| {
        b.iter(|| black_box(all.run(&photo).unwrap()))
    });
    let mut no_search = p.clone();
    no_search.set_options(PerceptionOptions {
        hand_search: None,
        ..PerceptionOptions::default()
    });
    g.bench_function("astronaut_everything_without_hand_search", |b| {
        b.iter(|| black_box(no_search.run(&photo).unwrap()))
    });
    // The occlusion mask alone, from the networks' results.
    let found = all.run(&photo).unwrap();
    let landmarks = found.faces[0].landmarks.clone().unwrap();
    // The hand search around the face: eight proposals on the clean photo (no hand, so no
    // refinement), and on the photo with a synthetic hand (seed 0), where two candidates
    // are re-cropped twice.
    let search = HandSearchOptions::default();
    g.bench_function("astronaut_hand_search_no_hand", |b| {
        b.iter(|| black_box(all.search_hand(&photo, &landmarks.points, &search).unwrap()))
    });
    let hand = synthetic::composite(&photo, &landmarks.points, OccluderKind::Hand, 0).image;
    let hand_landmarks = all.run(&hand).unwrap().faces[0].landmarks.clone().unwrap();
    assert_eq!(
        all.search_hand(&hand, &hand_landmarks.points, &search)
            .unwrap()
            .len(),
        1
    );
    g.bench_function("astronaut_hand_search_synthetic_hand", |b| {
        b.iter(|| {
            black_box(
                all.search_hand(&hand, &hand_landmarks.points, &search)
                    .unwrap(),
            )
        })
    });
    let options = OcclusionOptions::default();
    g.bench_function("astronaut_occlusion_mask", |b| {
        b.iter(|| {
            black_box(Occlusion::estimate(
                &photo,
                &landmarks,
                &found.hands,
                found.person_mask.as_ref(),
                &options,
            ))
        })
    });
    g.finish();
}

fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn depthwise(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut g = c.benchmark_group("depthwise");
    g.sample_size(20);
    // Shapes from the networks: FaceMesh 96x96x16 3x3, palm 96x96x32 5x5, hand 56x56x96 3x3,
    // palm 12x12x256 5x5 (stride 1), BlazeFace 64x64x28 3x3 stride 2.
    for &(c_, h, k, s) in &[
        (16usize, 96usize, 3usize, 1usize),
        (32, 96, 5, 1),
        (96, 56, 3, 1),
        (256, 12, 5, 1),
        (28, 64, 3, 2),
    ] {
        let mut map = HashMap::new();
        map.insert(
            "weight".to_string(),
            Tensor::from_vec(pseudo_random(c_ * k * k, SEED), (c_, 1, k, k), &dev).unwrap(),
        );
        map.insert(
            "bias".to_string(),
            Tensor::from_vec(pseudo_random(c_, SEED + 1), c_, &dev).unwrap(),
        );
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        let layer = DepthwiseConv2d::load(vb, c_, k, s, Padding::Same, Activation::Linear).unwrap();
        let x = Tensor::from_vec(pseudo_random(c_ * h * h, SEED + 2), (1, c_, h, h), &dev).unwrap();
        let name = format!("{c_}ch_{h}x{h}_k{k}_s{s}");
        g.bench_function(format!("custom_op/{name}"), |b| {
            b.iter(|| black_box(layer.forward(&x).unwrap()))
        });
        g.bench_function(format!("candle_grouped_conv2d/{name}"), |b| {
            b.iter(|| black_box(layer.forward_grouped(&x).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, networks, face_chain, depthwise);
criterion_main!(benches);

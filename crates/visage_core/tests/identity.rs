//! Identity network: dlib `.dat` parsing, agreement with dlib's own descriptors (reference values
//! from `tools/reference_dlib.py`, dlib 20.0.1), chip geometry, and invariance properties.
//!
//! Fixtures: `assets/photos/astronaut.png` (public domain) and
//! `tests/fixtures/photo/grace_hopper.jpg` (public domain, U.S. Navy photo, as shipped in
//! matplotlib's sample data), with hand-placed landmarks (see `docs/ingest.md`).

use std::path::{Path, PathBuf};

use candle_core::Device;
use visage_core::perception::identity::{
    ChipLandmarks, Config, EMBEDDING_DIM, FaceChip, IdentityNet, SAME_PERSON_THRESHOLD, distance,
    dlib_tensors, extract_chip,
};
use visage_core::photo::{IngestOptions, Photo};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photo")
}

fn shipped_net() -> IdentityNet {
    IdentityNet::from_safetensors(
        root().join("assets/nets/dlib_face_recognition_resnet_v1.safetensors"),
        &Device::Cpu,
    )
    .expect("shipped identity network")
}

/// dlib's original file, present only in the development checkout's `../shared`.
fn dat_path() -> Option<PathBuf> {
    let p = root().join(
        "../shared/models/face_recognition_models-0.3.0/dlib_face_recognition_resnet_model_v1.dat",
    );
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is absent (it lives in the development checkout's shared folder)",
            p.display()
        );
        None
    }
}

struct Reference {
    json: serde_json::Value,
}

impl Reference {
    fn load() -> Self {
        let text = std::fs::read_to_string(fixtures().join("dlib_reference.json")).unwrap();
        Reference {
            json: serde_json::from_str(&text).unwrap(),
        }
    }

    fn face(&self, name: &str) -> &serde_json::Value {
        &self.json["faces"][name]
    }

    fn vector(&self, name: &str, key: &str) -> [f32; EMBEDDING_DIM] {
        let v: Vec<f32> = self.face(name)[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        v.try_into().unwrap()
    }

    /// dlib's integer landmarks → Visage's continuous coordinates (+0.5).
    fn landmarks(&self, name: &str) -> ChipLandmarks {
        let p: Vec<[f64; 2]> = self.face(name)["landmarks_dlib"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| [q[0].as_f64().unwrap() + 0.5, q[1].as_f64().unwrap() + 0.5])
            .collect();
        ChipLandmarks {
            right_eye_outer: p[0],
            right_eye_inner: p[1],
            left_eye_outer: p[2],
            left_eye_inner: p[3],
            nose_base: p[4],
        }
    }
}

fn photo(name: &str) -> Photo {
    let path = match name {
        "astronaut" => root().join("assets/photos/astronaut.png"),
        _ => fixtures().join("grace_hopper.jpg"),
    };
    Photo::open(path, &IngestOptions::default()).unwrap()
}

fn mirror(p: &Photo) -> Photo {
    let (w, h) = (p.width() as usize, p.height() as usize);
    let src = p.linear_rgb();
    let mut out = vec![0.0f32; src.len()];
    for y in 0..h {
        for x in 0..w {
            let s = 3 * (y * w + (w - 1 - x));
            let d = 3 * (y * w + x);
            out[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
    Photo::from_linear(w as u32, h as u32, out, "mirrored").unwrap()
}

fn max_abs(a: &[f32; EMBEDDING_DIM], b: &[f32; EMBEDDING_DIM]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn chip_from_png(path: &Path) -> FaceChip {
    let img = image::open(path).unwrap().to_rgb8();
    FaceChip::from_rgb8(img.into_raw()).unwrap()
}

#[test]
fn dlib_file_parses_to_the_known_architecture() {
    let Some(dat) = dat_path() else { return };
    let tensors = dlib_tensors(&dat, &Device::Cpu).unwrap();
    // 29 convolutions (weight, bias) + 29 affine layers (gamma, beta) + fc + input mean.
    assert_eq!(tensors.len(), 29 * 4 + 2);
    let learned: usize = tensors
        .iter()
        .filter(|(k, _)| k.as_str() != "input.mean_rgb")
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(learned, 5_614_592);
    assert_eq!(Config::dlib_resnet_v1().parameter_count(), 5_614_592);
    assert_eq!(tensors["stem.conv.weight"].dims(), &[32, 3, 7, 7]);
    assert_eq!(tensors["blocks.3.conv1.weight"].dims(), &[64, 32, 3, 3]);
    assert_eq!(tensors["blocks.13.conv2.weight"].dims(), &[256, 256, 3, 3]);
    assert_eq!(tensors["fc.weight"].dims(), &[128, 256]);
    let mean = tensors["input.mean_rgb"].to_vec1::<f32>().unwrap();
    assert_eq!(mean, vec![122.782, 117.001, 104.298]);

    // A damaged file is refused with the byte offset of the problem, not a panic.
    let bytes = std::fs::read(&dat).unwrap();
    let dir = std::env::temp_dir().join(format!("visage-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.dat");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = IdentityNet::from_dlib_dat(&cut, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("the file ends early"), "{err}");
    let mut bad = bytes.clone();
    bad[4] = b'X'; // first letter of "loss_metric_2"
    std::fs::write(&cut, &bad).unwrap();
    let err = IdentityNet::from_dlib_dat(&cut, &Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("at byte 2") && err.to_string().contains("Xoss_metric_2"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn network_matches_dlib_on_identical_chips() {
    // The same 150×150 chip (cut by dlib, saved losslessly) through dlib and through candle.
    let reference = Reference::load();
    let shipped = shipped_net();
    let dat = dat_path().map(|p| IdentityNet::from_dlib_dat(p, &Device::Cpu).unwrap());
    for name in ["astronaut", "grace_hopper"] {
        let chip = chip_from_png(&fixtures().join(format!("dlib_chip_{name}.png")));
        let want = reference.vector(name, "chip_descriptor");
        if let Some(net) = &dat {
            let got = net.embed(&chip).unwrap();
            let (m, d) = (max_abs(&got, &want), distance(&got, &want));
            println!("{name}: f32 weights vs dlib: max |Δ| {m:.2e}, distance {d:.2e}");
            assert!(m < 1e-4, "{name}: max abs difference {m}");
        }
        let got = shipped.embed(&chip).unwrap();
        let (m, d) = (max_abs(&got, &want), distance(&got, &want));
        println!("{name}: shipped f16 weights vs dlib: max |Δ| {m:.2e}, distance {d:.2e}");
        assert!(m < 2e-3, "{name}: max abs difference {m}");
        assert!(d < 5e-3, "{name}: distance {d}");
    }
}

#[test]
fn chip_extraction_matches_dlib() {
    let reference = Reference::load();
    for (name, mean_tol, max_tol) in [("astronaut", 0.6, 3), ("grace_hopper", 1.5, 12)] {
        let photo = photo(name);
        let chip = extract_chip(&photo, &reference.landmarks(name));
        let dlib = image::open(fixtures().join(format!("dlib_chip_{name}.png")))
            .unwrap()
            .to_rgb8();
        let diffs: Vec<i32> = chip
            .pixels
            .iter()
            .zip(dlib.as_raw())
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .collect();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        let max = *diffs.iter().max().unwrap();
        println!("{name}: chip vs dlib: mean |Δ| {mean:.3} levels, max {max}");
        assert!(
            mean < mean_tol && max <= max_tol,
            "{name}: mean {mean}, max {max}"
        );
        // The transform maps the template back onto the landmarks it was fitted to.
        let t = chip.transform;
        let p = t.chip_to_photo(t.photo_to_chip([123.4, 87.6]));
        assert!((p[0] - 123.4).abs() < 1e-9 && (p[1] - 87.6).abs() < 1e-9);
    }
}

#[test]
fn descriptors_match_dlib_end_to_end() {
    let reference = Reference::load();
    let net = shipped_net();
    for name in ["astronaut", "grace_hopper"] {
        let p = photo(name);
        for (variant, img) in [
            (name.to_string(), p.clone()),
            (format!("{name}_mirrored"), mirror(&p)),
        ] {
            let chip = extract_chip(&img, &reference.landmarks(&variant));
            let got = net.embed(&chip).unwrap();
            let want = reference.vector(&variant, "descriptor");
            let d = distance(&got, &want);
            println!("{variant}: photo + landmarks vs dlib: distance {d:.4}");
            // JPEG decoders differ by a level here and there (zune-jpeg vs libjpeg): allow a
            // little more than the network alone.
            assert!(d < 0.03, "{variant}: distance {d}");
        }
    }
}

#[test]
fn same_person_is_closer_than_a_different_person() {
    let reference = Reference::load();
    let net = shipped_net();
    let astronaut = photo("astronaut");
    let hopper = photo("grace_hopper");
    let la = reference.landmarks("astronaut");
    let lh = reference.landmarks("grace_hopper");
    let ea = net.embed(&extract_chip(&astronaut, &la)).unwrap();
    let eh = net.embed(&extract_chip(&hopper, &lh)).unwrap();
    let norm = ea.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(
        (1.0..2.0).contains(&norm),
        "descriptor norm {norm} (not normalised)"
    );
    let different = distance(&ea, &eh);
    println!("astronaut ~ grace_hopper: {different:.4}");
    assert!(different > SAME_PERSON_THRESHOLD, "{different}");

    for (name, photo, lm, e) in [
        ("astronaut", &astronaut, la, ea),
        ("grace_hopper", &hopper, lh, eh),
    ] {
        // Mirrored photo with mirrored landmarks.
        let mirrored = mirror(photo);
        let em = net
            .embed(&extract_chip(&mirrored, &lm.mirrored(photo.width() as f64)))
            .unwrap();
        // Landmarks off by a few pixels (a shifted crop).
        let es = net
            .embed(&extract_chip(photo, &lm.transformed(1.0, [3.0, -2.0])))
            .unwrap();
        // The photo reduced to 70 % (area averaging), landmarks scaled with it.
        let side = (photo.width().max(photo.height()) as f64 * 0.7).round() as u32;
        let small = Photo::open(
            match name {
                "astronaut" => root().join("assets/photos/astronaut.png"),
                _ => fixtures().join("grace_hopper.jpg"),
            },
            &IngestOptions {
                max_side: side,
                ..IngestOptions::default()
            },
        )
        .unwrap();
        let s = small.meta().scale_x;
        let ez = net
            .embed(&extract_chip(&small, &lm.transformed(s, [0.0, 0.0])))
            .unwrap();
        for (what, other) in [("mirrored", em), ("shifted", es), ("scaled 0.7", ez)] {
            let d = distance(&e, &other);
            println!("{name} ~ {name} {what}: {d:.4}");
            assert!(d < 0.5 * SAME_PERSON_THRESHOLD, "{name} {what}: {d}");
            assert!(d < 0.5 * different, "{name} {what}: {d} vs {different}");
        }
    }
}

#[test]
fn bad_chip_input_is_an_error() {
    let err = FaceChip::from_rgb8(vec![0; 100]).unwrap_err();
    assert!(err.to_string().contains("150×150"), "{err}");
    let err = IdentityNet::from_safetensors(root().join("no/such/file.safetensors"), &Device::Cpu)
        .unwrap_err();
    assert!(err.to_string().contains("could not read"), "{err}");
}

#[test]
fn large_faces_and_degenerate_landmarks() {
    // The astronaut enlarged 3× (nearest neighbour): the chip now shrinks the face by about 3×,
    // so the supersampled path runs; the descriptor must stay that of the same person.
    let reference = Reference::load();
    let net = shipped_net();
    let p = photo("astronaut");
    let (w, h) = (p.width() as usize, p.height() as usize);
    let src = p.linear_rgb();
    let mut big = vec![0.0f32; 9 * src.len()];
    for y in 0..3 * h {
        for x in 0..3 * w {
            let s = 3 * ((y / 3) * w + x / 3);
            let d = 3 * (y * 3 * w + x);
            big[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
    let big = Photo::from_linear(3 * w as u32, 3 * h as u32, big, "astronaut ×3").unwrap();
    let lm = reference.landmarks("astronaut");
    let chip = extract_chip(&big, &lm.transformed(3.0, [0.0, 0.0]));
    assert!(chip.transform.step > 2.0, "step {}", chip.transform.step);
    let e_big = net.embed(&chip).unwrap();
    let e = net.embed(&extract_chip(&p, &lm)).unwrap();
    let d = distance(&e, &e_big);
    println!("astronaut ~ astronaut enlarged 3×: {d:.4}");
    assert!(d < 0.1, "{d}");

    // All five points in one place, or not finite: a black chip, no panic.
    for q in [[100.0, 100.0], [f64::NAN, 3.0]] {
        let degenerate = ChipLandmarks {
            left_eye_outer: q,
            left_eye_inner: q,
            right_eye_inner: q,
            right_eye_outer: q,
            nose_base: q,
        };
        let chip = extract_chip(&p, &degenerate);
        assert!(chip.pixels.iter().all(|&v| v == 0));
    }
}

//! The `visage` binary end to end: output, exit status and error sentences.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn visage(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_visage"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("the visage binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn model_info_describes_the_shipped_model() {
    let (ok, out, err) = visage(&["model-info"]);
    assert!(ok, "{err}");
    assert!(out.contains("vertices    5023"), "{out}");
    assert!(out.contains("triangles   9976"), "{out}");
    assert!(out.contains("CC-BY-4.0"), "{out}");
    let (ok, out, _) = visage(&["model-info", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["vertices"], 5023);
    assert_eq!(v["triangles"], 9976);
    assert!(v["identity_components"].as_u64().unwrap() >= 60);
}

#[test]
fn convert_flame_reads_a_flame_2020_pickle() {
    let dir = std::env::temp_dir().join(format!("visage-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_path = dir.join("flame.safetensors");
    let fixture = repo().join("crates/visage_core/tests/fixtures/flame/flame2020_py2.pkl");
    let (ok, out, err) = visage(&[
        "convert-flame",
        fixture.to_str().unwrap(),
        out_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("FLAME 2020"), "{out}");
    let (ok, info, _) = visage(&[
        "model-info",
        "--model",
        out_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["identity_components"], 300);
    assert_eq!(v["expression_components"], 100);
    assert_eq!(v["pose_correctives"], 36);
    assert_eq!(v["joints"].as_array().unwrap().len(), 5);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn errors_exit_non_zero_with_one_sentence() {
    let (ok, _, err) = visage(&["model-info", "--model", "no/such/model.safetensors"]);
    assert!(!ok);
    assert!(
        err.starts_with("visage: could not read the head model `no/such/model.safetensors`"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let evil = repo().join("crates/visage_core/tests/fixtures/flame/malicious_os_system.pkl");
    let target = std::env::temp_dir().join(format!(
        "visage-cli-evil-{}.safetensors",
        std::process::id()
    ));
    let (ok, _, err) = visage(&[
        "convert-flame",
        evil.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("refused to load `os.system`"), "{err}");
    assert!(
        !target.exists(),
        "no output may be written for a refused file"
    );

    let (ok, _, err) = visage(&["convert-flame", "README.md", target.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("expected a FLAME `.pkl` or `.npz` file"),
        "{err}"
    );
}

#[test]
fn detect_finds_the_astronaut_and_draws_an_overlay() {
    let overlay = std::env::temp_dir().join(format!("visage-detect-{}.png", std::process::id()));
    let (ok, out, err) = visage(&[
        "detect",
        "assets/photos/astronaut.png",
        "--json",
        "--overlay",
        overlay.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let faces = v["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{out}");
    assert_eq!(faces[0]["landmarks"].as_array().unwrap().len(), 468);
    // Per-landmark visibility and the occluded share of the face (hair at the top of her
    // face oval only).
    let vis = faces[0]["visibility"].as_array().unwrap();
    assert_eq!(vis.len(), 468);
    let visible = vis.iter().filter(|v| v.as_f64().unwrap() >= 0.5).count();
    assert!(visible > 360, "{visible} visible landmarks");
    let occluded = faces[0]["occluded_fraction"].as_f64().unwrap();
    assert!((0.0..0.25).contains(&occluded), "{occluded}");
    assert!(v["timings"]["occlusion_ms"].as_f64().unwrap() > 0.0);
    // The face box lies around the astronaut's face (upper middle of the 512×512 portrait).
    let b = &faces[0]["box"];
    let (x0, y0) = (b[0][0].as_f64().unwrap(), b[0][1].as_f64().unwrap());
    let (x1, y1) = (b[1][0].as_f64().unwrap(), b[1][1].as_f64().unwrap());
    assert!(
        (150.0..210.0).contains(&x0) && (240.0..300.0).contains(&x1),
        "{b}"
    );
    assert!(
        (50.0..120.0).contains(&y0) && (150.0..210.0).contains(&y1),
        "{b}"
    );
    let png = std::fs::read(&overlay).expect("overlay written");
    assert_eq!(&png[1..4], b"PNG");
    std::fs::remove_file(overlay).unwrap();

    let (ok, _, err) = visage(&["detect", "README.md"]);
    assert!(!ok);
    assert!(err.contains("is not a photo Visage can read"), "{err}");
}

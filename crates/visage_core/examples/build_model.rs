//! Builds the open head model and prints the build report.
//!
//! `cargo run -p visage_core --example build_model -- [DATA_DIR] [OUT]`
//! (defaults: `../shared/data`, `assets/models/visage_head.safetensors`).

use std::path::Path;

fn main() {
    let mut args = std::env::args().skip(1);
    let data = args.next().unwrap_or_else(|| "../shared/data".to_string());
    let out = args
        .next()
        .unwrap_or_else(|| "assets/models/visage_head.safetensors".to_string());
    let t = std::time::Instant::now();
    match visage_core::build::build_open_model(Path::new(&data), Path::new(&out)) {
        Ok(report) => {
            print_report(&report);
            println!(
                "wrote {} in {:.1} s",
                report.output,
                t.elapsed().as_secs_f64()
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn print_report(report: &visage_core::build::BuildReport) {
    let r = &report.registration;
    println!(
        "similarity scale {:.4}, rotation {:.2}°",
        r.similarity_scale, r.similarity_rotation_deg
    );
    for s in &r.stages {
        println!(
            "  alpha {:>6.1}: valid {:.3}, mean corr {:.3} mm, landmarks {:.2} mm, cg ≤ {}",
            s.alpha,
            s.valid_fraction,
            s.mean_distance * 1e3,
            s.landmark_mean * 1e3,
            s.cg_iterations
        );
    }
    println!(
        "landmarks after similarity: {}",
        r.landmarks_similarity.mm()
    );
    println!(
        "landmarks after registration: {}",
        r.landmarks_registered.mm()
    );
    println!("  inner (17-67): {}", r.landmarks_registered_inner.mm());
    for (group, range) in [
        ("jaw contour 0-16", 0..17),
        ("brows 17-26", 17..27),
        ("nose 27-35", 27..36),
        ("eyes 36-47", 36..48),
        ("mouth 48-67", 48..68),
    ] {
        let mean = |v: &[f64]| v[range.clone()].iter().sum::<f64>() / range.len() as f64 * 1e3;
        println!(
            "  {group}: similarity {:.2} mm, registered {:.2} mm",
            mean(&r.landmarks_similarity_each),
            mean(&r.landmarks_registered_each)
        );
    }
    println!("face, all vertices: {}", r.face_all.mm());
    println!("face, matched: {}", r.face_matched.mm());
    println!("ICT face -> FLAME: {}", r.ict_to_flame_face.mm());
    if let Some(c) = &report.contour {
        println!(
            "68-pt contour rows: swapped {}, silhouette gap {:.2} mm (other order {:.2} mm)",
            c.swapped,
            c.gap_chosen * 1e3,
            c.gap_other * 1e3
        );
    }
    let m = &report.mediapipe;
    println!(
        "mediapipe: scale {:.5}, pairs mean {:.2} max {:.2} mm (embedded {:.2} / {:.2}), projection mean {:.2} max {:.2} mm",
        m.scale,
        m.pair_mean * 1e3,
        m.pair_max * 1e3,
        m.pair_embedded_mean * 1e3,
        m.pair_embedded_max * 1e3,
        m.projection_mean * 1e3,
        m.projection_max * 1e3
    );
    let s = &report.symmetry;
    println!(
        "symmetry: involutive {}/{}, mirror distance mean {:.2} max {:.2} mm",
        s.involutive,
        s.vertices,
        s.mean_distance * 1e3,
        s.max_distance * 1e3
    );
    for (name, j) in visage_core::build::skeleton::JOINT_NAMES
        .iter()
        .zip(&report.skeleton.joints)
    {
        println!("joint {name}: ({:.4}, {:.4}, {:.4})", j[0], j[1], j[2]);
    }
    let u = &report.uv;
    println!(
        "uv: {} coords, flipped {}, min area ratio {:.2e}, face share {:.3} of charts, {:.3} of square",
        u.coords, u.flipped, u.min_area_ratio, u.face_share_of_charts, u.face_share_of_square
    );
    let t = &report.transfer;
    for (name, d) in &t.max_delta {
        print!("{name} {:.1}mm  ", d * 1e3);
    }
    println!();
    for (name, l, r) in &t.eye_motion {
        println!(
            "eyes {name}: left {:.2}° right {:.2}° (ICT rigid-fit rms {:.4} / {:.4} mm)",
            l.angle_deg,
            r.angle_deg,
            l.fit_rms * 1e3,
            r.fit_rms * 1e3
        );
    }
}

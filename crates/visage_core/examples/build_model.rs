//! Builds the open head model and prints the build report.
//!
//! `cargo run -p visage_core --example build_model -- [DATA_DIR]`

fn main() {
    let data = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data".to_string());
    let t = std::time::Instant::now();
    match visage_core::build::prepare(std::path::Path::new(&data)) {
        Ok(wb) => {
            let r = &wb.registration;
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
            println!("face, all vertices: {}", r.face_all.mm());
            println!("face, matched: {}", r.face_matched.mm());
            println!("ICT face -> FLAME: {}", r.ict_to_flame_face.mm());
            for (n, v) in &wb.regions.named {
                println!("region {n}: {}", v.len());
            }
            if let Ok(dir) = std::env::var("VISAGE_BUILD_DUMP") {
                let mut bytes = Vec::new();
                for p in &wb.registered {
                    for c in p {
                        bytes.extend_from_slice(&c.to_le_bytes());
                    }
                }
                std::fs::write(format!("{dir}/registered.f64"), bytes).ok();
            }
            println!("took {:.1} s", t.elapsed().as_secs_f64());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

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
            print!("{report}");
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

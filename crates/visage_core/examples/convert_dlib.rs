//! Converts dlib's face-recognition network (`dlib_face_recognition_resnet_model_v1.dat`, CC0,
//! from `pip download --no-deps face-recognition-models==0.3.0`) to the safetensors file Visage
//! ships.
//!
//! ```text
//! cargo run -p visage_core --example convert_dlib -- DAT OUT.safetensors [f16|f32]
//! ```

use candle_core::DType;
use visage_core::perception::identity::convert_dlib_dat;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 3 {
        eprintln!("usage: convert_dlib DAT OUT.safetensors [f16|f32]");
        std::process::exit(2);
    }
    let dtype = match args.get(2).map(String::as_str).unwrap_or("f16") {
        "f16" => DType::F16,
        "f32" => DType::F32,
        other => {
            eprintln!("unknown dtype {other:?}: use f16 or f32");
            std::process::exit(2);
        }
    };
    if let Err(e) = convert_dlib_dat(&args[0], &args[1], dtype) {
        eprintln!("{e}");
        std::process::exit(1);
    }
    println!("wrote {} ({dtype:?})", args[1]);
}

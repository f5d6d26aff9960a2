//! `visage`: the Visage command line.
//!
//! Subcommands: `model-info` (what a head model holds and where it comes from), `detect`
//! (faces, landmarks, irises and hands in a photo),
//! `build-model` (the open head model from its sources) and `convert-flame` (official FLAME
//! files into Visage's model format). Errors exit with status 1
//! and one sentence on standard error.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod detect;
use serde_json::json;
use visage_core::model::FlameModel;

/// Default location of the shipped head model, relative to the repository root.
const DEFAULT_MODEL: &str = "assets/models/visage_head.safetensors";

#[derive(Parser)]
#[command(
    name = "visage",
    version,
    about = "Visage: one photo of a face to a FLAME-topology head"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print what a head model holds: counts, names, landmarks, regions, UVs and provenance.
    ModelInfo {
        /// Model file (Visage safetensors). Defaults to the shipped model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Find faces, 468 landmarks, irises and hands in a photo, with timings per network.
    Detect {
        /// The photo (JPEG, PNG, WebP, BMP, TIFF or GIF).
        photo: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Write the photo with boxes, landmarks, irises and hands drawn on it (PNG).
        #[arg(long)]
        overlay: Option<PathBuf>,
        /// Use the full-range face detector (small or distant faces, group photos).
        #[arg(long)]
        full_range: bool,
    },
    /// Build Visage's open head model from its third-party sources (FLAME 2023 Open subset,
    /// ICT-FaceKit, RingNet landmarks, MediaPipe canonical face), deterministically.
    BuildModel {
        /// Folder with the source data (`flame2023_open/`, `ict_facekit/`,
        /// `flame_landmarks_ringnet/`, `mediapipe/`).
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        /// Output model file; written atomically.
        #[arg(long, default_value = DEFAULT_MODEL)]
        out: PathBuf,
    },
    /// Convert an official FLAME model (`.pkl` of FLAME 2020 / 2023 / 2023 Open, or a FLAME
    /// `.npz`) into Visage's safetensors model format.
    ConvertFlame {
        /// Input file: `generic_model.pkl`, `flame2023.pkl`, `flame2023_no_jaw.pkl`, or `.npz`.
        input: PathBuf,
        /// Output file (`.safetensors`); written atomically.
        output: PathBuf,
        /// Number of `shapedirs` columns that are identity (the rest are expression). FLAME
        /// 2020 and 2023 use 300. For an `.npz` without expressions, leave it out.
        #[arg(long)]
        num_identity: Option<usize>,
        /// Model name to record in the output's metadata.
        #[arg(long)]
        name: Option<String>,
        /// Licence to record in the output's metadata (default: the FLAME licence of the file's
        /// owner).
        #[arg(long)]
        licence: Option<String>,
        /// Source to record in the output's metadata (default: the input's file name).
        #[arg(long)]
        source: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ModelInfo { model, json } => model_info(model, json),
        Command::BuildModel { data, out } => build_model(&data, &out),
        Command::Detect {
            photo,
            json,
            overlay,
            full_range,
        } => detect::run(&photo, json, overlay.as_deref(), full_range),
        Command::ConvertFlame {
            input,
            output,
            num_identity,
            name,
            licence,
            source,
        } => convert_flame(&input, &output, num_identity, name, licence, source),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("visage: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to standard output; a closed pipe (e.g. `visage model-info | head`) is not an
/// error.
pub(crate) fn emit(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Finds the shipped model: next to the working directory, or next to the binary's crate.
fn default_model_path() -> PathBuf {
    let here = PathBuf::from(DEFAULT_MODEL);
    if here.exists() {
        return here;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(DEFAULT_MODEL);
    if repo.exists() { repo } else { here }
}

fn model_info(path: Option<PathBuf>, as_json: bool) -> Result<(), String> {
    let path = path.unwrap_or_else(default_model_path);
    let m = FlameModel::load(&path).map_err(|e| e.to_string())?;
    let joints: Vec<String> = m
        .skeleton
        .as_ref()
        .map(|s| s.names.clone())
        .unwrap_or_default();
    let regions: Vec<_> = m
        .regions
        .iter()
        .map(|r| json!({"name": r.name, "vertices": r.vertices.len()}))
        .collect();
    let info = json!({
        "file": path.display().to_string(),
        "name": m.meta.name,
        "format_version": m.meta.format_version,
        "units": m.meta.units,
        "vertices": m.num_vertices(),
        "triangles": m.num_triangles(),
        "identity_components": m.num_identity(),
        "expression_components": m.num_expression(),
        "expression_names": m.expression.names,
        "detail_components": m.detail.as_ref().map_or(0, |d| d.count(m.num_vertices())),
        "pose_correctives": m.pose_correctives.as_ref().map_or(0, |p| p.count(m.num_vertices())),
        "joints": joints,
        "landmarks_68": m.landmarks68.as_ref().map_or(0, |_| 68),
        "landmarks_68_yaw_bins": m.landmarks68.as_ref().map_or(0, |l| l.num_bins()),
        "landmarks_mediapipe": m.landmarks_mp.as_ref().map_or(0, |l| l.len()),
        "regions": regions,
        "uv": m.uv.as_ref().map(|u| json!({"coords": u.coords.len()})),
        "symmetry": m.symmetry.is_some(),
        "licence": m.meta.licence,
        "source": m.meta.source,
        "changes": m.meta.changes,
        "extra": m.meta.extra,
    });
    let mut o = String::new();
    if as_json {
        emit(&serde_json::to_string_pretty(&info).expect("JSON values serialise"));
        emit("\n");
        return Ok(());
    }
    writeln!(o, "model       {} ({})", m.meta.name, path.display()).ok();
    writeln!(
        o,
        "format      visage-flame v{}, {}",
        m.meta.format_version, m.meta.units
    )
    .ok();
    writeln!(o, "vertices    {}", m.num_vertices()).ok();
    writeln!(o, "triangles   {}", m.num_triangles()).ok();
    writeln!(o, "identity    {} components", m.num_identity()).ok();
    if let Some(d) = &m.detail {
        writeln!(o, "detail      {} components", d.count(m.num_vertices())).ok();
    }
    writeln!(o, "expression  {} components", m.num_expression()).ok();
    if !m.expression.names.is_empty() {
        writeln!(o, "            {}", m.expression.names.join(", ")).ok();
    }
    let _ = match &m.skeleton {
        Some(s) => writeln!(o, "joints      {} ({})", s.num_joints(), s.names.join(", ")),
        None => writeln!(o, "joints      0 (shape-only model)"),
    };
    writeln!(
        o,
        "pose corr.  {}",
        m.pose_correctives
            .as_ref()
            .map_or(0, |p| p.count(m.num_vertices()))
    )
    .ok();
    let _ = match &m.landmarks68 {
        Some(l) => writeln!(
            o,
            "landmarks   68 (51 static + 17 contour × {} yaw bins)",
            l.num_bins()
        ),
        None => writeln!(o, "landmarks   no 68-point embedding"),
    };
    let _ = match &m.landmarks_mp {
        Some(l) => writeln!(o, "            {} MediaPipe points", l.len()),
        None => writeln!(o, "            no MediaPipe embedding"),
    };
    if m.regions.is_empty() {
        writeln!(o, "regions     none").ok();
    } else {
        let list: Vec<String> = m
            .regions
            .iter()
            .map(|r| format!("{} ({})", r.name, r.vertices.len()))
            .collect();
        writeln!(o, "regions     {}: {}", m.regions.len(), list.join(", ")).ok();
    }
    writeln!(
        o,
        "uv          {}",
        m.uv.as_ref().map_or("absent".to_string(), |u| format!(
            "present ({} coordinates)",
            u.coords.len()
        ))
    )
    .ok();
    writeln!(
        o,
        "symmetry    {}",
        if m.symmetry.is_some() {
            "present"
        } else {
            "absent"
        }
    )
    .ok();
    writeln!(o, "licence     {}", m.meta.licence).ok();
    writeln!(o, "source      {}", m.meta.source).ok();
    if !m.meta.changes.is_empty() {
        writeln!(o, "changes     {}", m.meta.changes).ok();
    }
    for (k, v) in &m.meta.extra {
        writeln!(o, "{k:<11} {v}").ok();
    }
    emit(&o);
    Ok(())
}

fn build_model(data: &Path, out: &Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    let report = visage_core::build::build_open_model(data, out).map_err(|e| e.to_string())?;
    emit(&format!(
        "{report}wrote {} in {:.1} s\n",
        out.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn convert_flame(
    input: &Path,
    output: &Path,
    num_identity: Option<usize>,
    name: Option<String>,
    licence: Option<String>,
    source: Option<String>,
) -> Result<(), String> {
    let ext = input
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let options = visage_core::model::import::ImportOptions {
        identity_components: num_identity,
        name,
        ..Default::default()
    };
    let imported = match ext.as_str() {
        "pkl" => visage_core::model::import::import_flame_pickle(input, &options),
        "npz" => visage_core::model::npz_import::import_flame_npz(input, &options),
        _ => {
            return Err(format!(
                "cannot convert `{}`: expected a FLAME `.pkl` or `.npz` file",
                input.display()
            ));
        }
    };
    let (mut model, mut report) = imported.map_err(|e| e.to_string())?;
    if let Some(licence) = licence {
        model.meta.licence = licence;
    }
    if let Some(source) = source {
        model.meta.source = source;
    }
    model.save(output).map_err(|e| e.to_string())?;
    report.output = Some(output.to_path_buf());
    report.output_bytes = std::fs::metadata(output).ok().map(|m| m.len());
    emit(&format!("{report}\n"));
    Ok(())
}

//! The occlusion mask against synthetic occluders with known masks: every face of
//! `tests/fixtures/occlusion/` × every occluder kind × 2 seeds, measured as
//! `examples/occlusion_eval.rs` does (that example is compiled in here as a module).

#[path = "../examples/occlusion_eval.rs"]
#[allow(dead_code)]
mod occlusion_eval;

use occlusion_eval::{
    Fixture, fixture_paths, iou_stats, load_fixture, perception, report, run_case,
};
use visage_core::perception::synthetic::OccluderKind;

const SEEDS: u64 = 2;

/// Lowest accepted mean IoU per occluder kind on seeds 0 and 1: regression guards about
/// 0.05 below what the estimator measures there (sunglasses 0.66, mask 0.60, hand 0.32,
/// blobs 0.49; `docs/perception.md`). The goal is 0.75; these are not it.
fn min_mean_iou(kind: OccluderKind) -> f32 {
    // threshold: measured − 0.05.
    match kind {
        OccluderKind::Sunglasses => 0.60,
        OccluderKind::SurgicalMask => 0.55,
        OccluderKind::Hand => 0.27,
        OccluderKind::Blobs => 0.43,
    }
}

/// Highest accepted false-positive area (share of the face region) on each clean photo:
/// measured at most 0.22 (hair over the face oval counts as a false positive here).
// threshold: measured + 0.05.
const MAX_CLEAN_FP: f32 = 0.27;

#[test]
fn occlusion_mask_matches_synthetic_occluders() {
    let p = perception();
    let fixtures: Vec<Fixture> = fixture_paths()
        .iter()
        .enumerate()
        .map(|(i, path)| load_fixture(&p, i, path, None))
        .collect();
    assert!(fixtures.len() >= 6, "{} fixture faces", fixtures.len());
    let mut cases = Vec::new();
    for fx in &fixtures {
        for kind in OccluderKind::ALL {
            for s in 0..SEEDS {
                cases.push(run_case(&p, fx, kind, s, None));
            }
        }
    }
    println!("{}", report(&fixtures, &cases, SEEDS));

    let mut failures = Vec::new();
    for kind in OccluderKind::ALL {
        let (mean, _, _) = iou_stats(&cases, kind);
        if mean.is_nan() || mean < min_mean_iou(kind) {
            failures.push(format!(
                "{kind}: mean IoU {mean:.3} < {}",
                min_mean_iou(kind)
            ));
        }
    }
    for f in &fixtures {
        if f.clean_fp > MAX_CLEAN_FP {
            failures.push(format!(
                "{}: clean false-positive area {:.3} > {MAX_CLEAN_FP}",
                f.name, f.clean_fp
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! Checks of the shipped open head model (`assets/models/visage_head.safetensors`), built by
//! `visage build-model` from FLAME 2023 Open, ICT-FaceKit, the RingNet embedding and
//! MediaPipe's canonical face. They read only the committed asset (fast); the last test
//! rebuilds the model from `../shared/data` when that directory exists and checks the asset is
//! what the sources produce.

use std::path::PathBuf;

use visage_core::model::{FlameModel, FlameParams};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model() -> FlameModel {
    FlameModel::load(repo_root().join("assets/models/visage_head.safetensors"))
        .expect("the shipped model loads")
}

fn region<'a>(m: &'a FlameModel, name: &str) -> &'a [u32] {
    &m.region(name)
        .unwrap_or_else(|| panic!("region `{name}` exists"))
        .vertices
}

fn delta(m: &FlameModel, name: &str, v: usize) -> [f32; 3] {
    let k = m
        .expression_index(name)
        .unwrap_or_else(|| panic!("expression `{name}` exists"));
    let c = m.expression.component(k, m.num_vertices());
    [c[3 * v], c[3 * v + 1], c[3 * v + 2]]
}

fn norm(a: [f32; 3]) -> f32 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

#[test]
fn holds_everything_the_issue_lists() {
    let m = model();
    assert_eq!(m.num_vertices(), 5023);
    assert_eq!(m.num_triangles(), 9976);
    assert_eq!(m.num_identity(), 60);
    assert_eq!(m.num_expression(), 53);
    assert_eq!(m.expression.names.len(), 53);
    for name in [
        "jawOpen",
        "mouthSmile_L",
        "eyeBlink_L",
        "browInnerUp_L",
        "mouthPucker",
        "cheekPuff_R",
    ] {
        assert!(m.expression_index(name).is_some(), "{name}");
    }
    assert_eq!(m.num_joints(), 5);
    let s = m.skeleton.as_ref().unwrap();
    assert_eq!(s.names, ["root", "neck", "jaw", "eye_left", "eye_right"]);
    assert_eq!(s.parents, [-1, 0, 1, 1, 1]);
    let l68 = m.landmarks68.as_ref().unwrap();
    assert_eq!(l68.static_points.len(), 51);
    assert_eq!(l68.num_bins(), 79);
    assert_eq!(m.landmarks_mp.as_ref().unwrap().len(), 468);
    assert!(m.uv.is_some());
    assert_eq!(m.symmetry.as_ref().unwrap().len(), 5023);
    assert_eq!(m.detail.as_ref().map(|d| d.count(5023)), Some(100));
    assert!(m.meta.licence.contains("CC-BY-4.0") && m.meta.licence.contains("pornographic"));
    assert!(m.meta.licence.contains("ICT-FaceKit") && m.meta.licence.contains("MediaPipe"));
    // With the skeleton, zero parameters reproduce the template up to float rounding in the
    // skinning (weights sum to one only to f32 precision).
    let rest = m.forward(&FlameParams::zeros(&m)).vertices;
    let worst = rest
        .iter()
        .zip(&m.template)
        .map(|(a, b)| norm(sub(*a, *b)))
        .fold(0.0f32, f32::max);
    eprintln!("rest pose deviates from the template by at most {worst:e} m");
    assert!(worst < 1e-6);
}

#[test]
fn expression_deltas_vanish_on_scalp_ears_and_back_of_neck() {
    let m = model();
    let nv = m.num_vertices();
    let mut still = Vec::new();
    for name in ["scalp", "neck_back", "left_ear", "right_ear", "boundary"] {
        still.extend_from_slice(region(&m, name));
    }
    assert!(still.len() > 1000);
    for k in 0..m.num_expression() {
        let c = m.expression.component(k, nv);
        let max = still
            .iter()
            .map(|&v| {
                norm([
                    c[3 * v as usize],
                    c[3 * v as usize + 1],
                    c[3 * v as usize + 2],
                ])
            })
            .fold(0.0f32, f32::max);
        assert_eq!(max, 0.0, "{} moves a still vertex", m.expression.names[k]);
    }
    // …while every expression does move the face.
    let face = region(&m, "face");
    for k in 0..m.num_expression() {
        let c = m.expression.component(k, nv);
        let max = face
            .iter()
            .map(|&v| {
                norm([
                    c[3 * v as usize],
                    c[3 * v as usize + 1],
                    c[3 * v as usize + 2],
                ])
            })
            .fold(0.0f32, f32::max);
        assert!(
            max > 0.002,
            "{} barely moves the face: {max} m",
            m.expression.names[k]
        );
    }
}

/// Relative RMS difference over the face between `a`'s deltas and `b`'s deltas mirrored
/// through the symmetry map.
fn mirror_error(m: &FlameModel, a: &str, b: &str) -> f32 {
    let sym = m.symmetry.as_ref().unwrap();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for &v in region(m, "face") {
        let da = delta(m, a, v as usize);
        let db = delta(m, b, sym[v as usize] as usize);
        let mirrored = [-db[0], db[1], db[2]];
        num += f64::from(norm(sub(da, mirrored))).powi(2);
        den += f64::from(norm(da)).powi(2);
    }
    (num / den).sqrt() as f32
}

#[test]
fn left_and_right_expressions_mirror_each_other() {
    let m = model();
    let mut worst = (String::new(), 0.0f32);
    for name in m.expression.names.iter().filter(|n| n.ends_with("_L")) {
        let right = format!("{}_R", &name[..name.len() - 2]);
        let e = mirror_error(&m, name, &right);
        eprintln!("{name} vs mirrored {right}: relative RMS difference {e:.3}");
        if e > worst.1 {
            worst = (name.clone(), e);
        }
        // A one-sided expression is far from its own mirror image: the check can fail.
        let own = mirror_error(&m, name, name);
        assert!(own > 0.5, "{name} is nearly symmetric by itself ({own:.3})");
    }
    assert!(
        worst.1 < 0.12,
        "{} differs from its mirrored partner by {:.3}",
        worst.0,
        worst.1
    );
}

#[test]
fn jaw_open_lowers_the_chin_and_opens_the_lips() {
    let m = model();
    let lm = m.landmarks68.as_ref().unwrap();
    let k = m.expression_index("jawOpen").unwrap();
    let mut p = FlameParams::zeros(&m);
    let rest = lm.evaluate(&m.forward(&p).vertices, &m.triangles, 0.0);
    p.expression[k] = 1.0;
    let open = lm.evaluate(&m.forward(&p).vertices, &m.triangles, 0.0);
    // iBUG 8: chin; 62 / 66: inner upper / lower lip midpoints; 51: upper lip top.
    let chin_drop = rest[8][1] - open[8][1];
    let gap_rest = rest[62][1] - rest[66][1];
    let gap_open = open[62][1] - open[66][1];
    let upper_lip_move = norm(sub(open[51], rest[51]));
    eprintln!(
        "chin drop {:.1} mm, lip gap {:.1} → {:.1} mm, upper lip moved {:.1} mm",
        chin_drop * 1e3,
        gap_rest * 1e3,
        gap_open * 1e3,
        upper_lip_move * 1e3
    );
    assert!(chin_drop > 0.02, "the chin drops {chin_drop} m");
    assert!(
        gap_open - gap_rest > 0.02,
        "the lips open by {} m",
        gap_open - gap_rest
    );
    assert!(upper_lip_move < 0.6 * chin_drop);
    // The forehead stays put.
    let brow_move = norm(sub(open[27], rest[27]));
    assert!(brow_move < 0.001, "the nasion moves {brow_move} m");
}

/// Rotation matrix (row-major) of an axis-angle vector.
fn rotation(r: [f32; 3]) -> [[f32; 3]; 3] {
    visage_core::model::forward::rodrigues(r)
}

#[test]
fn eyeballs_move_rigidly_with_their_eye_joints() {
    let m = model();
    let s = m.skeleton.as_ref().unwrap();
    let nv = m.num_vertices();
    let mut p = FlameParams::zeros(&m);
    // Some identity and expression so the check is not only about the template.
    for (i, x) in p.identity.iter_mut().enumerate().take(10) {
        *x = 0.8 * ((i as f32 * 1.7).sin());
    }
    p.expression[m.expression_index("eyeBlink_R").unwrap()] = 0.5;
    let base = m.forward(&p);
    let angles = [[0.25f32, -0.3, 0.0], [-0.2, 0.35, 0.05]];
    p.pose[3] = angles[0];
    p.pose[4] = angles[1];
    let posed = m.forward(&p);
    for (j, eye) in [(3usize, "left_eyeball"), (4, "right_eyeball")] {
        let r = rotation(angles[j - 3]);
        let c = base.joints[j];
        let mut worst = 0.0f32;
        for &v in region(&m, eye) {
            let v = v as usize;
            assert_eq!(
                s.weights[v * 5 + j],
                1.0,
                "eyeball vertex {v} is fully skinned to joint {j}"
            );
            let d = sub(base.vertices[v], c);
            let want = [
                c[0] + r[0][0] * d[0] + r[0][1] * d[1] + r[0][2] * d[2],
                c[1] + r[1][0] * d[0] + r[1][1] * d[1] + r[1][2] * d[2],
                c[2] + r[2][0] * d[0] + r[2][1] * d[1] + r[2][2] * d[2],
            ];
            worst = worst.max(norm(sub(posed.vertices[v], want)));
        }
        assert!(
            worst < 1e-6,
            "{eye} deviates from a rigid rotation by {worst} m"
        );
        // The joint sits at the eyeball's centre: all its vertices are equally far.
        let radii: Vec<f32> = region(&m, eye)
            .iter()
            .map(|&v| norm(sub(base.vertices[v as usize], c)))
            .collect();
        let (lo, hi) = radii
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &r| (a.min(r), b.max(r)));
        assert!(
            hi - lo < 0.0012,
            "{eye} radius spread {} mm",
            (hi - lo) * 1e3
        );
    }
    // Nothing else moves.
    let eyes: Vec<u32> = [region(&m, "left_eyeball"), region(&m, "right_eyeball")].concat();
    let mut is_eye = vec![false; nv];
    for v in eyes {
        is_eye[v as usize] = true;
    }
    for v in 0..nv {
        if !is_eye[v] {
            assert_eq!(
                posed.vertices[v], base.vertices[v],
                "vertex {v} moved with the eyes"
            );
        }
    }
}

#[test]
fn skinning_weights_and_regressor_are_normalised_and_sensible() {
    let m = model();
    let s = m.skeleton.as_ref().unwrap();
    let nv = m.num_vertices();
    for v in 0..nv {
        let w = &s.weights[v * 5..v * 5 + 5];
        let sum: f32 = w.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-5 && w.iter().all(|&x| x >= 0.0),
            "vertex {v}: {w:?}"
        );
    }
    for j in 0..5 {
        let sum: f32 = s.regressor[j * nv..(j + 1) * nv].iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "regressor row {j} sums to {sum}");
    }
    let mean_weight = |name: &str, j: usize| {
        let r = region(&m, name);
        r.iter()
            .map(|&v| s.weights[v as usize * 5 + j])
            .sum::<f32>()
            / r.len() as f32
    };
    assert!(mean_weight("chin", 2) > 0.9, "chin follows the jaw");
    assert!(
        mean_weight("forehead", 2) < 0.01,
        "forehead ignores the jaw"
    );
    assert!(mean_weight("nose", 2) < 0.01, "nose ignores the jaw");
    assert!(
        mean_weight("scalp", 1) > 0.99,
        "scalp follows the neck joint"
    );
    assert!(
        mean_weight("boundary", 0) > 0.99,
        "the neck rim stays with the root"
    );
    // Joint order top to bottom: eyes above jaw above neck above root.
    let j = m.forward(&FlameParams::zeros(&m)).joints;
    assert!(
        j[3][1] > j[2][1] && j[2][1] > j[1][1] && j[1][1] > j[0][1],
        "{j:?}"
    );
    assert!(
        j[3][0] > 0.02 && j[4][0] < -0.02,
        "left eye at +x, right eye at −x"
    );
}

fn signed_area(a: [f32; 2], b: [f32; 2], c: [f32; 2]) -> f32 {
    // v grows downwards: counter-clockwise in (u, −v) is positive.
    0.5 * ((b[0] - a[0]) * (a[1] - c[1]) - (a[1] - b[1]) * (c[0] - a[0]))
}

#[test]
fn uvs_have_no_flipped_or_overlapping_triangles() {
    let m = model();
    let uv = m.uv.as_ref().unwrap();
    assert!(
        uv.coords
            .iter()
            .all(|c| (0.0..=1.0).contains(&c[0]) && (0.0..=1.0).contains(&c[1]))
    );
    let tris: Vec<[[f32; 2]; 3]> = uv
        .faces
        .iter()
        .map(|f| f.map(|i| uv.coords[i as usize]))
        .collect();
    let flipped = tris
        .iter()
        .filter(|t| signed_area(t[0], t[1], t[2]) <= 0.0)
        .count();
    assert_eq!(
        flipped, 0,
        "{flipped} UV triangles are flipped or degenerate"
    );
    // Overlap: count texel centres of a 2048² grid covered by more than one triangle (strictly
    // inside, so shared edges do not count).
    let n = 2048usize;
    let mut cover = vec![0u8; n * n];
    for t in &tris {
        let (x0, x1) = (
            t.iter().map(|p| p[0]).fold(1.0, f32::min),
            t.iter().map(|p| p[0]).fold(0.0, f32::max),
        );
        let (y0, y1) = (
            t.iter().map(|p| p[1]).fold(1.0, f32::min),
            t.iter().map(|p| p[1]).fold(0.0, f32::max),
        );
        let area = signed_area(t[0], t[1], t[2]);
        for yi in ((y0 * n as f32) as usize)..=((y1 * n as f32) as usize).min(n - 1) {
            for xi in ((x0 * n as f32) as usize)..=((x1 * n as f32) as usize).min(n - 1) {
                let p = [(xi as f32 + 0.5) / n as f32, (yi as f32 + 0.5) / n as f32];
                let w0 = signed_area(p, t[1], t[2]) / area;
                let w1 = signed_area(t[0], p, t[2]) / area;
                let w2 = 1.0 - w0 - w1;
                if w0 > 1e-4 && w1 > 1e-4 && w2 > 1e-4 {
                    cover[yi * n + xi] += 1;
                }
            }
        }
    }
    let overlapping = cover.iter().filter(|&&c| c > 1).count();
    let covered = cover.iter().filter(|&&c| c > 0).count();
    assert_eq!(overlapping, 0, "{overlapping} texels are covered twice");
    assert!(
        covered as f32 > 0.5 * (n * n) as f32,
        "the charts cover {covered} texels"
    );
    // Most of the charts' area belongs to the face.
    let face = {
        let mut f = vec![false; m.num_vertices()];
        for &v in region(&m, "face") {
            f[v as usize] = true;
        }
        f
    };
    let total: f32 = tris.iter().map(|t| signed_area(t[0], t[1], t[2])).sum();
    let face_area: f32 = tris
        .iter()
        .zip(&m.triangles)
        .filter(|(_, tri)| tri.iter().all(|&v| face[v as usize]))
        .map(|(t, _)| signed_area(t[0], t[1], t[2]))
        .sum();
    eprintln!("face share of the UV charts: {:.3}", face_area / total);
    assert!(face_area / total > 0.45);
}

#[test]
fn regions_are_non_empty_and_partition_the_vertices() {
    let m = model();
    let nv = m.num_vertices();
    for r in &m.regions {
        assert!(!r.vertices.is_empty(), "region {} is empty", r.name);
        assert!(
            r.vertices.windows(2).all(|w| w[0] < w[1]),
            "region {} is sorted",
            r.name
        );
    }
    let partition: Vec<&str> = m.meta.extra["regions.partition"].split(',').collect();
    assert_eq!(partition.len(), 15);
    let mut count = vec![0u32; nv];
    for name in &partition {
        for &v in region(&m, name) {
            count[v as usize] += 1;
        }
    }
    let bad: Vec<usize> = (0..nv).filter(|&v| count[v] != 1).collect();
    assert!(
        bad.is_empty(),
        "{} vertices are not in exactly one region, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    // Composite regions are the unions they claim to be.
    let union = |names: &[&str]| {
        let mut u: Vec<u32> = names
            .iter()
            .flat_map(|n| region(&m, n).iter().copied())
            .collect();
        u.sort_unstable();
        u
    };
    assert_eq!(
        region(&m, "face"),
        union(&[
            "forehead",
            "nose",
            "lips",
            "left_eye_region",
            "right_eye_region",
            "left_cheek",
            "right_cheek",
            "chin"
        ])
        .as_slice()
    );
    assert_eq!(
        region(&m, "eye_region"),
        union(&["left_eye_region", "right_eye_region"]).as_slice()
    );
    assert_eq!(
        region(&m, "neck"),
        union(&["neck_front", "neck_back"]).as_slice()
    );
    // Sides: left regions lie at +x, right ones at −x.
    let mean_x = |name: &str| {
        let r = region(&m, name);
        r.iter().map(|&v| m.template[v as usize][0]).sum::<f32>() / r.len() as f32
    };
    for side in ["eye_region", "cheek", "ear", "eyeball"] {
        assert!(mean_x(&format!("left_{side}")) > 0.02, "left_{side}");
        assert!(mean_x(&format!("right_{side}")) < -0.02, "right_{side}");
    }
}

#[test]
fn symmetry_map_mirrors_the_head() {
    let m = model();
    let sym = m.symmetry.as_ref().unwrap();
    let nv = m.num_vertices();
    let involutive = (0..nv)
        .filter(|&v| sym[sym[v] as usize] as usize == v)
        .count();
    assert!(
        involutive as f32 > 0.85 * nv as f32,
        "{involutive} of {nv} vertices map back"
    );
    let mut worst = 0.0f32;
    let mut total = 0.0f32;
    for v in 0..nv {
        let p = m.template[v];
        let q = m.template[sym[v] as usize];
        let d = norm(sub([-p[0], p[1], p[2]], q));
        worst = worst.max(d);
        total += d;
    }
    eprintln!(
        "mirror distance mean {:.2} mm, max {:.2} mm",
        total / nv as f32 * 1e3,
        worst * 1e3
    );
    assert!(total / (nv as f32) < 0.002 && worst < 0.006);
    let into = |a: &str, b: &str| {
        let rb = region(&m, b);
        let r = region(&m, a);
        r.iter()
            .filter(|&&v| rb.binary_search(&sym[v as usize]).is_ok())
            .count() as f32
            / r.len() as f32
    };
    assert_eq!(into("left_eyeball", "right_eyeball"), 1.0);
    assert_eq!(into("right_eyeball", "left_eyeball"), 1.0);
    assert!(into("left_ear", "right_ear") > 0.95);
    assert!(into("left_eye_region", "right_eye_region") > 0.9);
}

#[test]
fn contour_landmarks_follow_the_silhouette_of_a_turned_head() {
    let m = model();
    let lm = m.landmarks68.as_ref().unwrap();
    let head: Vec<usize> = {
        let mut eye = vec![false; m.num_vertices()];
        for name in ["left_eyeball", "right_eyeball"] {
            for &v in region(&m, name) {
                eye[v as usize] = true;
            }
        }
        (0..m.num_vertices()).filter(|&v| !eye[v]).collect()
    };
    for yaw in [-30.0f32, -20.0, 20.0, 30.0] {
        let mut p = FlameParams::zeros(&m);
        p.pose[0] = [0.0, yaw.to_radians(), 0.0];
        let posed = m.forward(&p).vertices;
        let gap = |bin_yaw: f32| {
            let pts = lm.evaluate(&posed, &m.triangles, bin_yaw);
            // The side turning away: +x for positive yaw (points 9..16), −x otherwise.
            let (range, sign) = if yaw > 0.0 {
                (9..17, 1.0)
            } else {
                (0..8, -1.0)
            };
            range
                .clone()
                .map(|i| {
                    let q = pts[i];
                    let extreme = head
                        .iter()
                        .map(|&v| posed[v])
                        .filter(|r| (r[1] - q[1]).abs() < 0.003)
                        .map(|r| sign * r[0])
                        .fold(f32::MIN, f32::max);
                    extreme - sign * q[0]
                })
                .sum::<f32>()
                / range.len() as f32
        };
        let right = gap(yaw);
        let wrong = gap(-yaw);
        eprintln!(
            "yaw {yaw}: silhouette gap {:.1} mm (opposite row {:.1} mm)",
            right * 1e3,
            wrong * 1e3
        );
        assert!(
            right < 0.006 && right < 0.7 * wrong,
            "yaw {yaw}: {right} vs {wrong}"
        );
    }
}

#[test]
fn mediapipe_points_land_on_their_anatomical_places() {
    let m = model();
    let mp = m
        .landmarks_mp
        .as_ref()
        .unwrap()
        .evaluate(&m.template, &m.triangles);
    let l68 = m
        .landmarks68
        .as_ref()
        .unwrap()
        .evaluate(&m.template, &m.triangles, 0.0);
    // (FaceMesh index, iBUG index): eye corners, nose tip, mouth corners, lip midpoints.
    for (a, b, tol) in [
        (33, 36, 0.004),
        (263, 45, 0.004),
        (133, 39, 0.004),
        (362, 42, 0.004),
        (4, 30, 0.004),
        (61, 48, 0.004),
        (291, 54, 0.004),
        (0, 51, 0.004),
        (17, 57, 0.005),
        (152, 8, 0.012),
    ] {
        let d = norm(sub(mp[a], l68[b]));
        assert!(d < tol, "FaceMesh {a} is {:.1} mm from iBUG {b}", d * 1e3);
    }
    // Mirror pairs of FaceMesh are mirror images on the model.
    for (a, b) in [(33, 263), (61, 291), (234, 454), (70, 300)] {
        let (p, q) = (mp[a], mp[b]);
        let d = norm(sub([-p[0], p[1], p[2]], q));
        assert!(
            d < 0.004,
            "FaceMesh {a}/{b} are {:.1} mm from mirror images",
            d * 1e3
        );
    }
}

#[test]
fn a_missing_data_directory_is_an_error_and_writes_nothing() {
    let out = std::env::temp_dir().join(format!("visage-build-{}.safetensors", std::process::id()));
    let err =
        visage_core::build::build_open_model(std::path::Path::new("/no/such/visage/data"), &out)
            .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("missing") && msg.contains("flame2023_open"),
        "{msg}"
    );
    assert!(!out.exists());
}

#[test]
fn the_asset_is_what_the_sources_build() {
    let data = repo_root().join("../shared/data");
    if !data.join("ict_facekit/ict_facekit_subset.npz").exists() {
        eprintln!(
            "skipped: {} is absent (only CI and developers have ../shared)",
            data.display()
        );
        return;
    }
    let (built, _, report) = visage_core::build::build_model(&data).expect("the model builds");
    eprintln!(
        "registration: face {} ; landmarks {}",
        report.registration.face_all.mm(),
        report.registration.landmarks_registered.mm()
    );
    assert!(report.registration.face_all.mean < 0.0015);
    let shipped = model();
    assert_eq!(built.template, shipped.template);
    assert_eq!(built.expression, shipped.expression);
    assert_eq!(built.detail, shipped.detail);
    assert_eq!(built.skeleton, shipped.skeleton);
    assert_eq!(built.landmarks68, shipped.landmarks68);
    assert_eq!(built.landmarks_mp, shipped.landmarks_mp);
    assert_eq!(built.uv, shipped.uv);
    assert_eq!(built.regions, shipped.regions);
    assert_eq!(built.symmetry, shipped.symmetry);
    assert_eq!(built.meta, shipped.meta);
}

#[test]
fn most_texels_belong_to_the_face() {
    let m = model();
    let uv = m.uv.as_ref().unwrap();
    let face: std::collections::HashSet<u32> =
        m.region("face").unwrap().vertices.iter().copied().collect();
    let area = |f: &[u32; 3]| {
        let [a, b, c] = f.map(|i| uv.coords[i as usize]);
        0.5 * ((b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])).abs() as f64
    };
    let face_area: f64 = m
        .triangles
        .iter()
        .zip(&uv.faces)
        .filter(|(t, _)| t.iter().all(|v| face.contains(v)))
        .map(|(_, f)| area(f))
        .sum();
    // The texture is the unit square: the face's share of it is its UV area.
    assert!(
        face_area > 0.5,
        "the face covers {face_area:.3} of the texture"
    );
}

//! FLAME core: forward pass, landmarks and storage, on a small synthetic model with every part
//! present, and on the shipped model.

use std::path::PathBuf;

use visage_core::model::forward::rodrigues;
use visage_core::model::{
    BaryLandmarks, Basis, BatchEvaluator, Evaluator, FlameModel, FlameParams, Landmarks68,
    ModelError, ModelMeta, PosedHead, Region, Skeleton, UvLayout, geometry,
};

/// Deterministic pseudo-random numbers in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A latitude-longitude sphere of radius 0.1 m with a FLAME-like skeleton: vertices below
/// y = -0.03 on the front half follow the jaw.
fn synthetic_model(with_correctives: bool) -> FlameModel {
    let (rings, segs) = (10usize, 16usize);
    let mut template = Vec::new();
    for i in 0..=rings {
        let th = std::f32::consts::PI * i as f32 / rings as f32;
        for j in 0..segs {
            let ph = 2.0 * std::f32::consts::PI * j as f32 / segs as f32;
            template.push([
                0.1 * th.sin() * ph.sin(),
                0.1 * th.cos(),
                0.1 * th.sin() * ph.cos(),
            ]);
        }
    }
    let nv = template.len();
    let mut triangles = Vec::new();
    for i in 0..rings {
        for j in 0..segs {
            let a = (i * segs + j) as u32;
            let b = (i * segs + (j + 1) % segs) as u32;
            let c = a + segs as u32;
            let d = b + segs as u32;
            triangles.push([a, c, b]);
            triangles.push([b, c, d]);
        }
    }
    let mut rng = Lcg(7);
    let mut basis = |k: usize, s: f32| Basis {
        names: Vec::new(),
        deltas: (0..k * nv * 3).map(|_| s * rng.next()).collect(),
    };
    let identity = basis(4, 0.005);
    let mut expression = basis(3, 0.003);
    expression.names = vec!["jawOpen".into(), "eyeBlink_L".into(), "eyeBlink_R".into()];
    let pose_correctives = with_correctives.then(|| basis(36, 0.002));

    let jaw = |p: [f32; 3]| p[1] < -0.03 && p[2] > 0.0;
    let mut weights = vec![0.0f32; nv * 5];
    for (v, p) in template.iter().enumerate() {
        if jaw(*p) {
            weights[v * 5 + 2] = 1.0;
        } else if p[1] < -0.06 {
            weights[v * 5 + 1] = 1.0;
        } else {
            weights[v * 5] = 1.0;
        }
    }
    // Joints: root = centroid, neck = bottom ring, jaw = mean of jaw vertices, eyes = two
    // single vertices.
    let mut regressor = vec![0.0f32; 5 * nv];
    for v in 0..nv {
        regressor[v] = 1.0 / nv as f32;
    }
    let bottom: Vec<usize> = (0..nv).filter(|&v| template[v][1] < -0.08).collect();
    for &v in &bottom {
        regressor[nv + v] = 1.0 / bottom.len() as f32;
    }
    let jaws: Vec<usize> = (0..nv).filter(|&v| jaw(template[v])).collect();
    for &v in &jaws {
        regressor[2 * nv + v] = 1.0 / jaws.len() as f32;
    }
    regressor[3 * nv + 3 * segs + 1] = 1.0;
    regressor[4 * nv + 3 * segs + segs - 1] = 1.0;

    let skeleton = Skeleton {
        names: ["root", "neck", "jaw", "eye_left", "eye_right"]
            .map(String::from)
            .to_vec(),
        parents: vec![-1, 0, 1, 1, 1],
        regressor,
        weights,
    };
    let nf = triangles.len() as u32;
    let bary = |i: u32| {
        let a = 0.1 + 0.05 * (i % 5) as f32;
        let b = 0.2 + 0.03 * (i % 7) as f32;
        [a, b, 1.0 - a - b]
    };
    let lm = |n: u32, off: u32| BaryLandmarks {
        faces: (0..n).map(|i| (i * 7 + off) % nf).collect(),
        bary: (0..n).map(bary).collect(),
    };
    FlameModel {
        meta: ModelMeta {
            name: "synthetic".into(),
            format_version: 1,
            units: "metres".into(),
            licence: "test data".into(),
            source: "generated".into(),
            changes: String::new(),
            extra: [("residual_mm".to_string(), "0.0".to_string())].into(),
        },
        template,
        triangles,
        identity,
        expression,
        detail: Some(basis(2, 0.001)),
        pose_correctives,
        skeleton: Some(skeleton),
        landmarks68: Some(Landmarks68 {
            static_points: lm(51, 0),
            dynamic: lm(17 * 79, 3),
        }),
        landmarks_mp: Some(lm(468, 5)),
        uv: Some(UvLayout {
            coords: (0..nv).map(|v| [v as f32 / nv as f32, 0.5]).collect(),
            faces: (0..nf as usize).map(|f| [0, 1, (f % nv) as u32]).collect(),
        }),
        regions: vec![Region {
            name: "jaw".into(),
            vertices: jaws.iter().map(|&v| v as u32).collect(),
        }],
        symmetry: Some((0..nv as u32).collect()),
    }
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    geometry::norm(geometry::sub(a, b))
}

fn max_diff(a: &[[f32; 3]], b: &[[f32; 3]]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| dist(*x, *y))
        .fold(0.0, f32::max)
}

fn random_params(m: &FlameModel, seed: u64) -> FlameParams {
    let mut rng = Lcg(seed);
    let mut p = FlameParams::zeros(m);
    p.identity.iter_mut().for_each(|x| *x = 2.0 * rng.next());
    p.expression.iter_mut().for_each(|x| *x = rng.next());
    p
}

#[test]
fn zero_parameters_give_the_template() {
    let m = synthetic_model(true);
    let out = m.forward(&FlameParams::zeros(&m));
    assert_eq!(
        out.vertices, m.template,
        "mean head must equal the template exactly"
    );
}

#[test]
fn blendshapes_are_linear() {
    let m = synthetic_model(true);
    let a = random_params(&m, 1);
    let b = random_params(&m, 2);
    let mut ab = a.clone();
    for (x, y) in ab.identity.iter_mut().zip(&b.identity) {
        *x += y;
    }
    for (x, y) in ab.expression.iter_mut().zip(&b.expression) {
        *x += y;
    }
    let (fa, fb, fab) = (m.forward(&a), m.forward(&b), m.forward(&ab));
    for v in 0..m.num_vertices() {
        for c in 0..3 {
            let lhs = fab.vertices[v][c] - m.template[v][c];
            let rhs =
                (fa.vertices[v][c] - m.template[v][c]) + (fb.vertices[v][c] - m.template[v][c]);
            assert!((lhs - rhs).abs() < 1e-6, "vertex {v}: {lhs} vs {rhs}");
        }
    }
    // And each component moves the mesh by exactly its delta.
    let mut one = FlameParams::zeros(&m);
    one.expression[1] = 1.0;
    let f = m.forward(&one);
    let nv = m.num_vertices();
    let delta = m.expression.component(1, nv);
    for v in 0..nv {
        for c in 0..3 {
            assert!((f.vertices[v][c] - m.template[v][c] - delta[v * 3 + c]).abs() < 1e-7);
        }
    }
}

#[test]
fn root_rotation_is_rigid() {
    let m = synthetic_model(true);
    let shaped = m.forward(&random_params(&m, 3));
    let mut p = random_params(&m, 3);
    p.pose[0] = [0.3, -0.7, 0.2];
    p.translation = [0.01, -0.02, 0.5];
    let posed = m.forward(&p);
    let n = m.num_vertices();
    let mut worst = 0.0f32;
    for i in (0..n).step_by(3) {
        for j in (1..n).step_by(7) {
            let d0 = dist(shaped.vertices[i], shaped.vertices[j]);
            let d1 = dist(posed.vertices[i], posed.vertices[j]);
            worst = worst.max((d0 - d1).abs());
        }
    }
    assert!(
        worst < 1e-6,
        "pairwise distances changed by up to {worst} m"
    );
    // Scale multiplies every distance.
    p.scale = 2.0;
    let scaled = m.forward(&p);
    let (d1, d2) = (
        dist(posed.vertices[0], posed.vertices[n - 1]),
        dist(scaled.vertices[0], scaled.vertices[n - 1]),
    );
    assert!((d2 - 2.0 * d1).abs() < 1e-6);
    // The mesh actually moved.
    assert!(max_diff(&posed.vertices, &shaped.vertices) > 0.05);
}

#[test]
fn jaw_rotation_moves_only_jaw_skinned_vertices() {
    let m = synthetic_model(false);
    let skel = m.skeleton.as_ref().unwrap();
    let base = random_params(&m, 4);
    let mut open = base.clone();
    open.pose[2] = [0.35, 0.0, 0.0];
    let (a, b) = (m.forward(&base), m.forward(&open));
    let mut moved_jaw = 0;
    for v in 0..m.num_vertices() {
        let w = skel.weights[v * 5 + 2];
        let d = dist(a.vertices[v], b.vertices[v]);
        if w == 0.0 {
            assert!(d < 1e-7, "vertex {v} has no jaw weight but moved {d} m");
        } else if d > 1e-3 {
            moved_jaw += 1;
        }
    }
    let jaw_count = (0..m.num_vertices())
        .filter(|&v| skel.weights[v * 5 + 2] > 0.0)
        .count();
    assert!(
        jaw_count > 5 && moved_jaw == jaw_count,
        "{moved_jaw} of {jaw_count} jaw vertices moved"
    );
    // The jaw joint itself stays put; the jaw vertices turn about it.
    assert!(dist(a.joints[2], b.joints[2]) < 1e-6);
}

#[test]
fn pose_correctives_follow_rotation_minus_identity() {
    let m = synthetic_model(true);
    let without = {
        let mut m2 = m.clone();
        m2.pose_correctives = None;
        m2
    };
    let mut p = FlameParams::zeros(&m);
    p.pose[1] = [0.0, 0.2, 0.0];
    let (with_pc, no_pc) = (m.forward(&p), without.forward(&p));
    // Neck-only rotation: the neck's skinning is rigid, so the difference between the two is the
    // corrective offset transformed by each vertex's skinning rotation: check its magnitude.
    let r = rodrigues(p.pose[1]);
    let nv = m.num_vertices();
    let pc = m.pose_correctives.as_ref().unwrap();
    for v in [0usize, 40, 100, nv - 1] {
        let mut off = [0.0f32; 3];
        for a in 0..3 {
            for b in 0..3 {
                let id = if a == b { 1.0 } else { 0.0 };
                let w = r[a][b] - id;
                for (c, o) in off.iter_mut().enumerate() {
                    *o += w * pc.component(a * 3 + b, nv)[v * 3 + c];
                }
            }
        }
        let got = dist(with_pc.vertices[v], no_pc.vertices[v]);
        let want = geometry::norm(off);
        assert!(
            (got - want).abs() < 1e-6,
            "vertex {v}: corrective {got} vs {want}"
        );
    }
}

#[test]
fn rodrigues_matches_nalgebra() {
    for r in [
        [0.0, 0.0, 0.0],
        [1e-5, -2e-5, 3e-6],
        [0.3, -1.2, 0.7],
        [3.0, 0.1, -0.2],
    ] {
        let ours = rodrigues(r);
        let na = nalgebra::Rotation3::from_scaled_axis(nalgebra::Vector3::new(r[0], r[1], r[2]));
        for a in 0..3 {
            for b in 0..3 {
                assert!((ours[a][b] - na[(a, b)]).abs() < 1e-6, "{r:?} [{a},{b}]");
            }
        }
    }
}

#[test]
fn batched_and_allocation_free_forms_agree_with_forward() {
    let m = synthetic_model(true);
    let params: Vec<FlameParams> = (0..9)
        .map(|i| {
            let mut p = random_params(&m, 10 + i);
            p.pose[2] = [0.1 * i as f32, 0.0, 0.0];
            p.pose[0] = [0.0, 0.05 * i as f32, 0.0];
            p
        })
        .collect();
    let mut outs = vec![PosedHead::for_model(&m); params.len()];
    let mut batch = BatchEvaluator::new(&m);
    batch.forward(&m, &params, &mut outs);
    let mut ev = Evaluator::new(&m);
    let mut one = PosedHead::for_model(&m);
    for (p, o) in params.iter().zip(&outs) {
        ev.forward(&m, p, &mut one);
        assert_eq!(&one, o);
        assert_eq!(&m.forward(p), o);
    }
}

#[test]
fn landmarks_on_the_template_equal_their_barycentric_definition() {
    let m = synthetic_model(true);
    let l68 = m.landmarks68.as_ref().unwrap();
    for yaw in [0.0f32, -12.0, 20.0] {
        let pts = l68.evaluate(&m.template, &m.triangles, yaw);
        let bin = l68.yaw_bin(yaw);
        for i in 0..68 {
            let (f, b) = if i < 17 {
                let k = bin * 17 + i;
                (l68.dynamic.faces[k], l68.dynamic.bary[k])
            } else {
                (
                    l68.static_points.faces[i - 17],
                    l68.static_points.bary[i - 17],
                )
            };
            let t = m.triangles[f as usize];
            for c in 0..3 {
                let want = b[0] * m.template[t[0] as usize][c]
                    + b[1] * m.template[t[1] as usize][c]
                    + b[2] * m.template[t[2] as usize][c];
                assert!((pts[i][c] - want).abs() < 1e-7, "landmark {i} at yaw {yaw}");
            }
        }
    }
    let mp = m
        .landmarks_mp
        .as_ref()
        .unwrap()
        .evaluate(&m.template, &m.triangles);
    assert_eq!(mp.len(), 468);
    // A landmark lies in the plane of its triangle, inside it.
    let f = m.landmarks_mp.as_ref().unwrap().faces[10] as usize;
    let t = m.triangles[f].map(|i| m.template[i as usize]);
    let n = geometry::cross(geometry::sub(t[1], t[0]), geometry::sub(t[2], t[0]));
    assert!(geometry::dot(n, geometry::sub(mp[10], t[0])).abs() < 1e-9);
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("visage-model-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn storage_round_trips_every_part() {
    let m = synthetic_model(true);
    let dir = temp_dir("roundtrip");
    let path = dir.join("m.safetensors");
    m.save(&path).unwrap();
    let back = FlameModel::load(&path).unwrap();
    assert_eq!(back, m);
    // Saving is deterministic: the same model gives the same bytes.
    assert_eq!(m.to_bytes().unwrap(), std::fs::read(&path).unwrap());
    assert_eq!(m.to_bytes().unwrap(), back.to_bytes().unwrap());
    // No temporary file is left next to it.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_model_files_are_errors_with_sentences() {
    let dir = temp_dir("bad");
    let missing = FlameModel::load(dir.join("nope.safetensors")).unwrap_err();
    assert!(matches!(missing, ModelError::Io { .. }), "{missing}");
    assert!(missing.to_string().contains("nope.safetensors"));

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a model").unwrap();
    let e = FlameModel::load(&garbage).unwrap_err();
    assert!(matches!(e, ModelError::NotSafetensors { .. }), "{e}");

    // A valid model, truncated.
    let bytes = synthetic_model(false).to_bytes().unwrap();
    let e = FlameModel::from_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(e, ModelError::NotSafetensors { .. }), "{e}");

    // A safetensors file that is not a head model.
    let other = safetensors::serialize(
        [(
            "x",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0u8; 4])
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    let e = FlameModel::from_bytes(&other).unwrap_err();
    assert!(matches!(e, ModelError::WrongFormat { .. }), "{e}");
    assert!(e.to_string().contains("convert-flame"));

    // Inconsistent content is refused when saving and when loading.
    let mut m = synthetic_model(false);
    m.triangles[0][1] = 99_999;
    let e = m.save(dir.join("x.safetensors")).unwrap_err();
    assert!(e.to_string().contains("99999"), "{e}");
    assert!(!dir.join("x.safetensors").exists());

    // Writing into a folder that does not exist fails cleanly.
    let e = synthetic_model(false)
        .save(dir.join("no/such/dir/m.safetensors"))
        .unwrap_err();
    assert!(matches!(e, ModelError::Write { .. }), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn shipped_model_loads_and_rests_at_its_template() {
    let path = repo_root().join("assets/models/visage_head.safetensors");
    let m = FlameModel::load(&path).unwrap();
    assert_eq!(m.num_vertices(), 5023);
    assert_eq!(m.num_triangles(), 9976);
    assert!(m.num_identity() >= 60);
    // With a skeleton, skinning by the identity transforms rounds at the 1e-8 m level.
    let rest = m.forward(&FlameParams::zeros(&m));
    assert!(max_diff(&rest.vertices, &m.template) < 1e-6);
    // Metres: a head is about 0.15–0.35 m across.
    let xs: Vec<f32> = m.template.iter().map(|p| p[0]).collect();
    let width =
        xs.iter().cloned().fold(f32::MIN, f32::max) - xs.iter().cloned().fold(f32::MAX, f32::min);
    assert!((0.1..0.4).contains(&width), "head width {width} m");
    assert!(
        m.meta.licence.contains("CC-BY-4.0"),
        "licence recorded: {}",
        m.meta.licence
    );
}

#[test]
fn flame2023_open_subset_converts_to_the_shipped_model() {
    let npz = repo_root().join("../shared/data/flame2023_open/flame2023_open_subset.npz");
    if !npz.exists() {
        eprintln!(
            "skipped: {} is absent (only CI and developers have ../shared)",
            npz.display()
        );
        return;
    }
    let (m, report) =
        visage_core::model::npz_import::import_flame_npz(&npz, &Default::default()).unwrap();
    assert!(report.to_string().contains("FLAME 2023 Open"), "{report}");
    assert_eq!((m.num_identity(), m.num_expression()), (60, 0));
    let shipped =
        FlameModel::load(repo_root().join("assets/models/visage_head.safetensors")).unwrap();
    assert_eq!(m.template, shipped.template);
    assert_eq!(m.triangles, shipped.triangles);
    assert_eq!(
        m.identity.deltas[..m.identity.deltas.len()],
        shipped.identity.deltas[..m.identity.deltas.len()]
    );
}

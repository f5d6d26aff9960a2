//! Photometric pass at 224×224 on a 5023-vertex head: forward + backward, forward only, and the
//! plain render. `cargo bench -p visage_core --bench render`.
//!
//! The head is the template of the shipped model `assets/models/visage_head.safetensors` when it
//! loads, else the procedural 5023-vertex head of `visage_core::render::mesh`; the output says
//! which. Deterministic (seed printed), machine printed.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use visage_core::model::FlameModel;
use visage_core::render::mesh::procedural_head;
use visage_core::render::{
    Camera, LossConfig, NO_TRIANGLE, PassConfig, PhotometricPass, RobustLoss, Scene, Target,
};

const SIZE: u32 = 224;
const SEED: u64 = 20_240_531;

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn head() -> (Vec<[f32; 3]>, Vec<[u32; 3]>, String) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/visage_head.safetensors");
    match FlameModel::load(&path) {
        Ok(m) => (
            m.template.clone(),
            m.triangles.clone(),
            format!("template of {}", path.display()),
        ),
        Err(e) => {
            let (v, t) = procedural_head();
            (
                v,
                t,
                format!("procedural head (shipped model not loaded: {e})"),
            )
        }
    }
}

fn bench(c: &mut Criterion) {
    let (mut verts, tris, source) = head();
    // Centre the head at 0.6 m in front of the camera and frame it like a face crop: the focal
    // length makes the head's height 1.2 × the image height (crown and neck leave the picture).
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for v in &verts {
        for k in 0..3 {
            lo[k] = lo[k].min(v[k]);
            hi[k] = hi[k].max(v[k]);
        }
    }
    let centre: [f32; 3] = std::array::from_fn(|k| 0.5 * (lo[k] + hi[k]));
    for v in &mut verts {
        v[0] -= centre[0];
        v[1] -= centre[1];
        v[2] -= centre[2] + 0.6;
    }
    let focal = 1.2 * SIZE as f32 * (0.6 - 0.5 * (hi[2] - lo[2])) / (hi[1] - lo[1]);
    let camera = Camera::perspective_centered(focal, SIZE, SIZE);
    let mut rng = Rng(SEED);
    let albedo: Vec<[f32; 3]> = verts
        .iter()
        .map(|_| {
            let s = 0.1 * rng.uniform();
            [0.6 + s, 0.45 + s, 0.35 + s]
        })
        .collect();
    let mut sh = visage_core::render::sh::ambient([0.9, 0.85, 0.8]);
    sh[1] = [0.3, 0.3, 0.3];
    sh[2] = [0.8, 0.8, 0.8];
    sh[3] = [-0.2, -0.2, -0.2];
    let n = (SIZE * SIZE) as usize;
    let photo: Vec<[f32; 3]> = (0..n)
        .map(|_| [rng.uniform(), rng.uniform(), rng.uniform()])
        .collect();
    // A "hand" over the lower right of the face.
    let occ: Vec<f32> = (0..n)
        .map(|i| {
            let (x, y) = (i as u32 % SIZE, i as u32 / SIZE);
            (x > SIZE / 2 && y > SIZE / 2 && x < SIZE * 3 / 4) as u32 as f32
        })
        .collect();
    let target = Target {
        image: &photo,
        face_mask: None,
        occlusion_mask: Some(&occ),
    };
    let loss = LossConfig {
        penalty: RobustLoss::L1,
        background: None,
    };
    let mut pass =
        PhotometricPass::new(SIZE, SIZE, &tris, verts.len(), PassConfig::default()).unwrap();
    let scene = Scene {
        vertices: &verts,
        albedo: &albedo,
        sh: &sh,
        camera,
    };
    let l = pass.forward(&scene, &target, &loss).unwrap();
    let covered = pass
        .pixels()
        .iter()
        .filter(|p| p.triangle != NO_TRIANGLE)
        .count();
    println!(
        "photometric pass bench: {SIZE}x{SIZE}, mesh = {source}: {} vertices, {} triangles; \
         {covered} covered pixels ({:.0} %), loss {l:.4}; seed {SEED}; machine: {}",
        verts.len(),
        tris.len(),
        100.0 * covered as f64 / n as f64,
        visage_core::machine::description()
    );

    let mut g = c.benchmark_group("photometric_224");
    g.sample_size(60).measurement_time(Duration::from_secs(6));
    g.bench_function("loss_and_grad", |b| {
        b.iter(|| {
            let (l, grads) = pass.loss_and_grad(&scene, &target, &loss).unwrap();
            black_box((l, grads.sh[0][0]));
        })
    });
    g.bench_function("forward", |b| {
        b.iter(|| black_box(pass.forward(&scene, &target, &loss).unwrap()))
    });
    g.bench_function("render", |b| {
        b.iter(|| black_box(pass.render(&scene, [0.0; 3]).unwrap()[0]))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

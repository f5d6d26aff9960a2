//! The photometric pass and the Adam fitting step do not allocate once constructed.
//!
//! A counting global allocator sees every allocation of the process. The calls run inside a
//! rayon pool (`install`), so the calling thread is a pool worker and rayon schedules the
//! parallel loops on its own deques, which stop growing after the warm-up. (Called from a
//! thread outside any pool, rayon's global injector allocates one queue block per 63 injected
//! jobs; that is rayon's and is not counted here.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use visage_core::render::mesh::procedural_head;
use visage_core::render::sh::ambient;
use visage_core::render::{
    Camera, FitProblem, FitStage, FitVariables, Fitter, GroupSchedule, LossConfig, ParamGroup,
    PassConfig, PhotometricPass, RobustLoss, Scene, Target, VertexOffsets,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count<F: FnMut()>(mut f: F) -> usize {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

#[test]
fn repeated_calls_do_not_allocate() {
    let (w, h) = (96u32, 96u32);
    let (mut verts, tris) = procedural_head();
    for v in &mut verts {
        v[2] -= 0.6;
    }
    let albedo: Vec<[f32; 3]> = verts
        .iter()
        .map(|p| [0.6 + p[0], 0.5 + p[1], 0.4 + p[2] * 0.1])
        .collect();
    let mut sh = ambient([0.8, 0.8, 0.8]);
    sh[2] = [0.6, 0.6, 0.6];
    let camera = Camera::perspective_centered(300.0, w, h);
    let image = vec![[0.3f32, 0.4, 0.5]; (w * h) as usize];
    let occ: Vec<f32> = (0..w * h).map(|i| ((i % w) > 60) as u32 as f32).collect();
    let target = Target {
        image: &image,
        face_mask: None,
        occlusion_mask: Some(&occ),
    };
    let loss = LossConfig {
        penalty: RobustLoss::GemanMcClure { sigma: 0.1 },
        background: Some([0.0; 3]),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // The counter itself works.
    assert!(count(|| drop(std::hint::black_box(vec![1u8; 16]))) >= 1);
    pool.install(|| {
        let mut pass =
            PhotometricPass::new(w, h, &tris, verts.len(), PassConfig::default()).unwrap();
        let scene = Scene {
            vertices: &verts,
            albedo: &albedo,
            sh: &sh,
            camera,
        };
        for _ in 0..5 {
            pass.loss_and_grad(&scene, &target, &loss).unwrap();
            pass.render(&scene, [0.0; 3]).unwrap();
        }
        let n = count(|| {
            for _ in 0..20 {
                let (l, g) = pass.loss_and_grad(&scene, &target, &loss).unwrap();
                assert!(l > 0.0 && g.vertices.len() == verts.len());
                pass.render(&scene, [0.0; 3]).unwrap();
            }
        });
        assert_eq!(n, 0, "{n} allocations in 20 forward+backward+render calls");

        // The fitting step (Adam over every group) does not allocate either.
        let mut model = VertexOffsets {
            base: verts.clone(),
        };
        let mut vars = FitVariables {
            shape: vec![0.0; verts.len() * 3],
            albedo: albedo.clone(),
            sh,
            camera,
        };
        let g = |group| GroupSchedule {
            group,
            lr: 1e-4,
            l2: 1e-3,
        };
        let stage = FitStage {
            name: "all".into(),
            steps: 1,
            groups: vec![
                g(ParamGroup::Shape),
                g(ParamGroup::Albedo),
                g(ParamGroup::Lighting),
                g(ParamGroup::Camera {
                    focal: true,
                    principal_point: true,
                    translation: true,
                }),
            ],
        };
        let problem = FitProblem {
            loss,
            photometric_weight: 1.0,
            adam: Default::default(),
            stages: vec![stage.clone()],
        };
        let mut fitter = Fitter::new(&model, &vars, problem.adam).unwrap();
        for _ in 0..3 {
            fitter
                .step(&problem, &stage, &mut pass, &mut model, &mut vars, &target)
                .unwrap();
        }
        let n = count(|| {
            for _ in 0..10 {
                fitter
                    .step(&problem, &stage, &mut pass, &mut model, &mut vars, &target)
                    .unwrap();
            }
        });
        assert_eq!(n, 0, "{n} allocations in 10 fitting steps");
    });
}

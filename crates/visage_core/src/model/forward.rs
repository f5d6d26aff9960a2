//! The FLAME forward pass: blendshapes → joint regression → pose correctives → linear blend
//! skinning → scale and translation.
//!
//! [`Evaluator`] owns every scratch buffer, so evaluating a head allocates nothing after
//! construction; [`BatchEvaluator`] evaluates many parameter sets in parallel, one evaluator per
//! worker.

use super::{FlameModel, FlameParams, NUM_JOINTS};

/// A posed head: the output of the forward pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PosedHead {
    /// Posed vertex positions (metres, after scale and translation).
    pub vertices: Vec<[f32; 3]>,
    /// Posed joint positions (empty for a shape-only model).
    pub joints: Vec<[f32; 3]>,
}

impl PosedHead {
    /// A head sized for `model`, ready to be filled by an [`Evaluator`].
    pub fn for_model(model: &FlameModel) -> Self {
        Self {
            vertices: vec![[0.0; 3]; model.num_vertices()],
            joints: vec![[0.0; 3]; model.num_joints()],
        }
    }
}

/// A 3×3 rotation matrix, row-major.
pub type Mat3 = [[f32; 3]; 3];

/// Rotation matrix of an axis-angle vector (Rodrigues' formula), stable near zero.
pub fn rodrigues(r: [f32; 3]) -> Mat3 {
    let theta2 = r[0] * r[0] + r[1] * r[1] + r[2] * r[2];
    // sin(θ)/θ and (1 − cos θ)/θ², by their Taylor series for tiny angles.
    let (a, b) = if theta2 < 1e-12 {
        (1.0 - theta2 / 6.0, 0.5 - theta2 / 24.0)
    } else {
        let theta = theta2.sqrt();
        (theta.sin() / theta, (1.0 - theta.cos()) / theta2)
    };
    let [x, y, z] = r;
    [
        [
            1.0 - b * (y * y + z * z),
            b * x * y - a * z,
            b * x * z + a * y,
        ],
        [
            b * x * y + a * z,
            1.0 - b * (x * x + z * z),
            b * y * z - a * x,
        ],
        [
            b * x * z - a * y,
            b * y * z + a * x,
            1.0 - b * (x * x + y * y),
        ],
    ]
}

#[inline]
fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
        }
    }
    m
}

#[inline]
fn mat_vec(a: &Mat3, v: [f32; 3]) -> [f32; 3] {
    [
        a[0][0] * v[0] + a[0][1] * v[1] + a[0][2] * v[2],
        a[1][0] * v[0] + a[1][1] * v[1] + a[1][2] * v[2],
        a[2][0] * v[0] + a[2][1] * v[1] + a[2][2] * v[2],
    ]
}

/// A rigid transform `x ↦ R x + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rigid {
    /// Rotation.
    pub r: Mat3,
    /// Translation.
    pub t: [f32; 3],
}

impl Rigid {
    const IDENTITY: Rigid = Rigid {
        r: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        t: [0.0; 3],
    };

    fn compose(&self, other: &Rigid) -> Rigid {
        let t = mat_vec(&self.r, other.t);
        Rigid {
            r: mat_mul(&self.r, &other.r),
            t: [t[0] + self.t[0], t[1] + self.t[1], t[2] + self.t[2]],
        }
    }

    /// Applies the transform to a point.
    pub fn apply(&self, p: [f32; 3]) -> [f32; 3] {
        let q = mat_vec(&self.r, p);
        [q[0] + self.t[0], q[1] + self.t[1], q[2] + self.t[2]]
    }
}

/// Evaluates the forward pass for one parameter set at a time without allocating.
#[derive(Debug, Clone)]
pub struct Evaluator {
    shaped: Vec<f32>,
    joints_rest: [[f32; 3]; NUM_JOINTS],
    skin: [Rigid; NUM_JOINTS],
    global: [Rigid; NUM_JOINTS],
    pose_feature: [f32; 36],
}

impl Evaluator {
    /// Scratch buffers sized for `model`.
    pub fn new(model: &FlameModel) -> Self {
        Self {
            shaped: vec![0.0; model.num_vertices() * 3],
            joints_rest: [[0.0; 3]; NUM_JOINTS],
            skin: [Rigid::IDENTITY; NUM_JOINTS],
            global: [Rigid::IDENTITY; NUM_JOINTS],
            pose_feature: [0.0; 36],
        }
    }

    /// The shaped (identity + expression), unposed mesh of the last evaluation, `[V * 3]`.
    pub fn shaped(&self) -> &[f32] {
        &self.shaped
    }

    /// The world transform of each joint in the last evaluation (before scale/translation).
    pub fn joint_transforms(&self) -> &[Rigid; NUM_JOINTS] {
        &self.global
    }

    /// Poses the model with `params` into `out` (sized with [`PosedHead::for_model`]).
    ///
    /// Coefficient vectors longer than the model's bases are an error of the caller and are
    /// truncated; shorter ones are zero-extended.
    pub fn forward(&mut self, model: &FlameModel, params: &FlameParams, out: &mut PosedHead) {
        let nv = model.num_vertices();
        assert_eq!(
            self.shaped.len(),
            nv * 3,
            "evaluator built for another model"
        );
        assert_eq!(out.vertices.len(), nv, "output built for another model");

        // 1. Blendshapes.
        for (s, t) in self.shaped.chunks_exact_mut(3).zip(&model.template) {
            s.copy_from_slice(t);
        }
        for (basis, coeffs) in [
            (&model.identity, &params.identity),
            (&model.expression, &params.expression),
        ] {
            let k = basis.count(nv).min(coeffs.len());
            for (c, &w) in coeffs[..k].iter().enumerate() {
                if w != 0.0 {
                    axpy(w, basis.component(c, nv), &mut self.shaped);
                }
            }
        }

        let scale = params.scale;
        let trans = params.translation;
        let finish = |p: [f32; 3]| {
            [
                scale * p[0] + trans[0],
                scale * p[1] + trans[1],
                scale * p[2] + trans[2],
            ]
        };

        let Some(skel) = &model.skeleton else {
            // Shape-only model: the root rotation turns the head about the origin.
            let r = rodrigues(params.pose[0]);
            for (o, s) in out.vertices.iter_mut().zip(self.shaped.chunks_exact(3)) {
                *o = finish(mat_vec(&r, [s[0], s[1], s[2]]));
            }
            return;
        };

        // 2. Joint regression on the shaped mesh.
        for (j, jr) in self.joints_rest.iter_mut().enumerate() {
            let row = &skel.regressor[j * nv..(j + 1) * nv];
            let mut acc = [0.0f64; 3];
            for (&w, s) in row.iter().zip(self.shaped.chunks_exact(3)) {
                if w != 0.0 {
                    for c in 0..3 {
                        acc[c] += w as f64 * s[c] as f64;
                    }
                }
            }
            *jr = acc.map(|x| x as f32);
        }

        // 3. Pose correctives, driven by R_j − I of the non-root joints.
        let mut rots = [[[0.0; 3]; 3]; NUM_JOINTS];
        for (r, p) in rots.iter_mut().zip(&params.pose) {
            *r = rodrigues(*p);
        }
        if let Some(pc) = &model.pose_correctives {
            for (feature, rot) in self.pose_feature.chunks_exact_mut(9).zip(&rots[1..]) {
                for (k, f) in feature.iter_mut().enumerate() {
                    let (a, b) = (k / 3, k % 3);
                    let id = if a == b { 1.0 } else { 0.0 };
                    *f = rot[a][b] - id;
                }
            }
            for (c, &w) in self.pose_feature.iter().enumerate() {
                if w != 0.0 {
                    axpy(w, pc.component(c, nv), &mut self.shaped);
                }
            }
        }

        // 4. Kinematic chain and skinning transforms (rest pose removed).
        for (j, &rot) in rots.iter().enumerate() {
            let parent = skel.parents[j];
            let local_t = if parent < 0 {
                self.joints_rest[j]
            } else {
                let p = self.joints_rest[parent as usize];
                let c = self.joints_rest[j];
                [c[0] - p[0], c[1] - p[1], c[2] - p[2]]
            };
            let local = Rigid { r: rot, t: local_t };
            self.global[j] = if parent < 0 {
                local
            } else {
                self.global[parent as usize].compose(&local)
            };
            let g = &self.global[j];
            let rj = mat_vec(&g.r, self.joints_rest[j]);
            self.skin[j] = Rigid {
                r: g.r,
                t: [g.t[0] - rj[0], g.t[1] - rj[1], g.t[2] - rj[2]],
            };
        }
        for (o, j) in out.joints.iter_mut().zip(&self.global) {
            *o = finish(j.t);
        }

        // 5. Linear blend skinning.
        let skin = &self.skin;
        for ((o, s), w) in out
            .vertices
            .iter_mut()
            .zip(self.shaped.chunks_exact(3))
            .zip(skel.weights.chunks_exact(NUM_JOINTS))
        {
            let mut m = [[0.0f32; 4]; 3];
            for (j, &wj) in w.iter().enumerate() {
                if wj != 0.0 {
                    let sk = &skin[j];
                    for (a, row) in m.iter_mut().enumerate() {
                        row[0] += wj * sk.r[a][0];
                        row[1] += wj * sk.r[a][1];
                        row[2] += wj * sk.r[a][2];
                        row[3] += wj * sk.t[a];
                    }
                }
            }
            let p = [s[0], s[1], s[2]];
            let q = [
                m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2] + m[0][3],
                m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2] + m[1][3],
                m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2] + m[2][3],
            ];
            *o = finish(q);
        }
    }
}

#[inline]
fn axpy(w: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += w * x;
    }
}

impl FlameModel {
    /// Poses the model with `params` (allocates the output; use an [`Evaluator`] in loops).
    pub fn forward(&self, params: &FlameParams) -> PosedHead {
        let mut out = PosedHead::for_model(self);
        Evaluator::new(self).forward(self, params, &mut out);
        out
    }
}

/// Evaluates many parameter sets in parallel; owns one [`Evaluator`] per worker, so repeated
/// calls allocate nothing.
#[derive(Debug, Clone)]
pub struct BatchEvaluator {
    workers: Vec<Evaluator>,
}

impl BatchEvaluator {
    /// One evaluator per thread of rayon's current pool.
    pub fn new(model: &FlameModel) -> Self {
        let n = rayon::current_num_threads().max(1);
        Self {
            workers: (0..n).map(|_| Evaluator::new(model)).collect(),
        }
    }

    /// Poses `params[i]` into `out[i]` for every `i`. Panics if the lengths differ.
    pub fn forward(&mut self, model: &FlameModel, params: &[FlameParams], out: &mut [PosedHead]) {
        assert_eq!(params.len(), out.len(), "one output per parameter set");
        if params.is_empty() {
            return;
        }
        let chunk = params.len().div_ceil(self.workers.len());
        rayon::scope(|s| {
            for ((w, p), o) in self
                .workers
                .iter_mut()
                .zip(params.chunks(chunk))
                .zip(out.chunks_mut(chunk))
            {
                s.spawn(move |_| {
                    for (p, o) in p.iter().zip(o.iter_mut()) {
                        w.forward(model, p, o);
                    }
                });
            }
        });
    }
}

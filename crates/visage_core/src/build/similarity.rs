//! Similarity transforms (scale, rotation, translation) and their least-squares estimation
//! from point pairs (Umeyama 1991), plus the rigid fit used for eyeball motion.

use nalgebra::{Matrix3, Vector3};

use super::mesh::V3;

/// `x ↦ s R x + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Uniform scale.
    pub scale: f64,
    /// Rotation (proper, det = +1).
    pub rotation: Matrix3<f64>,
    /// Translation.
    pub translation: Vector3<f64>,
}

impl Similarity {
    /// The identity transform.
    pub fn identity() -> Self {
        Self {
            scale: 1.0,
            rotation: Matrix3::identity(),
            translation: Vector3::zeros(),
        }
    }

    /// Transforms a point.
    pub fn point(&self, p: V3) -> V3 {
        let q = self.rotation * Vector3::from(p) * self.scale + self.translation;
        [q[0], q[1], q[2]]
    }

    /// Transforms a vector (no translation).
    pub fn vector(&self, v: V3) -> V3 {
        let q = self.rotation * Vector3::from(v) * self.scale;
        [q[0], q[1], q[2]]
    }
}

/// Weighted least-squares similarity mapping `src[i]` onto `dst[i]` (Umeyama). With
/// `allow_scale = false` the scale is fixed at one (a rigid fit). Returns `None` for fewer than
/// three pairs or a degenerate configuration.
pub fn fit_similarity(
    src: &[V3],
    dst: &[V3],
    weights: Option<&[f64]>,
    allow_scale: bool,
) -> Option<Similarity> {
    let n = src.len();
    if n < 3 || dst.len() != n {
        return None;
    }
    let w = |i: usize| weights.map_or(1.0, |w| w[i]);
    let wsum: f64 = (0..n).map(w).sum();
    if wsum <= 0.0 {
        return None;
    }
    let mut ms = Vector3::zeros();
    let mut md = Vector3::zeros();
    for i in 0..n {
        ms += Vector3::from(src[i]) * w(i);
        md += Vector3::from(dst[i]) * w(i);
    }
    ms /= wsum;
    md /= wsum;
    let mut cov = Matrix3::zeros();
    let mut var_s = 0.0;
    for i in 0..n {
        let a = Vector3::from(src[i]) - ms;
        let b = Vector3::from(dst[i]) - md;
        cov += b * a.transpose() * w(i);
        var_s += a.norm_squared() * w(i);
    }
    cov /= wsum;
    var_s /= wsum;
    if var_s <= 0.0 {
        return None;
    }
    let svd = cov.svd(true, true);
    let (u, vt) = (svd.u?, svd.v_t?);
    let mut d = Matrix3::identity();
    if (u * vt).determinant() < 0.0 {
        d[(2, 2)] = -1.0;
    }
    let rotation = u * d * vt;
    let scale = if allow_scale {
        (svd.singular_values.component_mul(&d.diagonal())).sum() / var_s
    } else {
        1.0
    };
    let translation = md - rotation * ms * scale;
    Some(Similarity {
        scale,
        rotation,
        translation,
    })
}

/// Rotation angle (radians) of a rotation matrix.
pub fn rotation_angle(r: &Matrix3<f64>) -> f64 {
    ((r.trace() - 1.0) * 0.5).clamp(-1.0, 1.0).acos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Rotation3;

    #[test]
    fn recovers_a_known_similarity() {
        let r = Rotation3::from_euler_angles(0.1, -0.3, 0.2).into_inner();
        let truth = Similarity {
            scale: 1.7,
            rotation: r,
            translation: Vector3::new(0.3, -0.1, 2.0),
        };
        let src: Vec<V3> = (0..10)
            .map(|i| {
                let t = i as f64;
                [t.sin(), (1.3 * t).cos(), 0.1 * t]
            })
            .collect();
        let dst: Vec<V3> = src.iter().map(|&p| truth.point(p)).collect();
        let est = fit_similarity(&src, &dst, None, true).unwrap();
        assert!((est.scale - 1.7).abs() < 1e-10);
        assert!((est.rotation - r).norm() < 1e-10);
        assert!((est.translation - truth.translation).norm() < 1e-10);
        let rigid = fit_similarity(&src, &dst, None, false).unwrap();
        assert_eq!(rigid.scale, 1.0);
        assert!((rigid.rotation - r).norm() < 1e-10);
        assert!((rotation_angle(&r) - rotation_angle(&rigid.rotation)).abs() < 1e-10);
    }
}

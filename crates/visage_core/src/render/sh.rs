//! Second-order spherical-harmonics lighting of a Lambertian surface.
//!
//! The lighting is nine radiance coefficients per colour channel, `l[k][c]`, in the real SH basis
//! `Y_k` (order of Ramamoorthi & Hanrahan 2001: `Y00, Y1−1, Y10, Y11, Y2−2, Y2−1, Y20, Y21, Y22`),
//! in the camera frame (`x` right, `y` up, `z` towards the camera). The shaded colour of a surface
//! point with unit normal `n` and albedo `a` is its outgoing Lambertian radiance
//!
//! `c = a ⊙ (1/π) Σ_k Â_k · l[k] · Y_k(n) = a ⊙ Σ_k l[k] · B_k(n)`,
//!
//! with the clamped-cosine convolution constants `Â = (π, 2π/3, π/4)` per band. The functions
//! `B_k = Â_k Y_k / π` are [`sh_basis`]. A uniform white environment of radiance 1 is
//! `l[0] = (2√π, 2√π, 2√π)` and all other coefficients zero ([`ambient`]); it shades every point
//! with its albedo.

/// `B_0 = Â_0 Y_00 / π = 1 / (2√π)`.
pub const SH_C0: f32 = 0.282_094_8;
/// `B_1..B_3 = (2/3) · √(3 / 4π) · (y, z, x)`.
pub const SH_C1: f32 = 0.325_735_03;
/// `B_4, B_5, B_7 = (1/4) · (1/2)√(15/π) · (xy, yz, xz)`.
pub const SH_C2: f32 = 0.273_137_1;
/// `B_6 = (1/4) · (1/4)√(5/π) · (3z² − 1)`.
pub const SH_C3: f32 = 0.078_847_89;
/// `B_8 = (1/4) · (1/4)√(15/π) · (x² − y²)`.
pub const SH_C4: f32 = 0.136_568_55;

/// The nine lighting basis functions `B_k(n)` (irradiance / π per unit radiance coefficient).
#[inline(always)]
pub fn sh_basis(n: [f32; 3]) -> [f32; 9] {
    let [x, y, z] = n;
    [
        SH_C0,
        SH_C1 * y,
        SH_C1 * z,
        SH_C1 * x,
        SH_C2 * x * y,
        SH_C2 * y * z,
        SH_C3 * (3.0 * z * z - 1.0),
        SH_C2 * x * z,
        SH_C4 * (x * x - y * y),
    ]
}

/// `Σ_k q_k ∇B_k(n)`: the gradient with respect to `n` of `Σ_k q_k B_k(n)`.
#[inline(always)]
pub fn sh_basis_vjp(n: [f32; 3], q: &[f32; 9]) -> [f32; 3] {
    let [x, y, z] = n;
    let gx = SH_C1 * q[3] + SH_C2 * (q[4] * y + q[7] * z) + SH_C4 * 2.0 * x * q[8];
    let gy = SH_C1 * q[1] + SH_C2 * (q[4] * x + q[5] * z) - SH_C4 * 2.0 * y * q[8];
    let gz = SH_C1 * q[2] + SH_C2 * (q[5] * y + q[7] * x) + SH_C3 * 6.0 * z * q[6];
    [gx, gy, gz]
}

/// Lighting coefficients of a uniform environment of radiance `rgb`: shades every point with
/// `albedo ⊙ rgb`.
pub fn ambient(rgb: [f32; 3]) -> [[f32; 3]; 9] {
    let mut l = [[0.0; 3]; 9];
    for c in 0..3 {
        l[0][c] = rgb[c] / SH_C0;
    }
    l
}

/// Irradiance factor per channel, `Σ_k l[k][c] B_k`, for precomputed basis values.
#[inline(always)]
pub(crate) fn shade_factor(sh: &[[f32; 3]; 9], b: &[f32; 9]) -> [f32; 3] {
    let mut e = [0.0f32; 3];
    for k in 0..9 {
        for c in 0..3 {
            e[c] += sh[k][c] * b[k];
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    #[test]
    fn constants_match_their_formulas() {
        let c0 = 1.0 / (2.0 * PI.sqrt());
        let c1 = (2.0 / 3.0) * (3.0 / (4.0 * PI)).sqrt();
        let c2 = 0.25 * 0.5 * (15.0 / PI).sqrt();
        let c3 = 0.25 * 0.25 * (5.0 / PI).sqrt();
        let c4 = 0.25 * 0.25 * (15.0 / PI).sqrt();
        for (a, b) in [
            (SH_C0, c0),
            (SH_C1, c1),
            (SH_C2, c2),
            (SH_C3, c3),
            (SH_C4, c4),
        ] {
            assert!((a as f64 - b).abs() < 1e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn vjp_matches_finite_differences() {
        let n = [0.3f32, -0.5, 0.81];
        let q = [0.2f32, -1.0, 0.5, 0.7, -0.3, 0.9, 1.1, -0.6, 0.4];
        let g = sh_basis_vjp(n, &q);
        let f = |n: [f32; 3]| -> f64 {
            let b = sh_basis(n);
            (0..9).map(|k| q[k] as f64 * b[k] as f64).sum()
        };
        for i in 0..3 {
            let h = 1e-3;
            let mut a = n;
            let mut b = n;
            a[i] += h;
            b[i] -= h;
            let fd = (f(a) - f(b)) / (2.0 * h as f64);
            assert!((fd - g[i] as f64).abs() < 1e-4, "{i}: fd {fd} vs {}", g[i]);
        }
    }

    #[test]
    fn ambient_shades_with_albedo() {
        let l = ambient([0.5, 1.0, 2.0]);
        let e = shade_factor(&l, &sh_basis([0.0, 0.6, 0.8]));
        for (a, b) in e.iter().zip([0.5, 1.0, 2.0]) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}

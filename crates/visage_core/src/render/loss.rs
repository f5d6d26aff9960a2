//! Per-channel penalties of the photometric loss.

use serde::{Deserialize, Serialize};

/// Penalty `ρ(r)` applied to each colour channel of the residual `r = I_ren − I`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum RobustLoss {
    /// `ρ(r) = |r|`; derivative `sign(r)` (0 at 0).
    L1,
    /// Huber with threshold `delta`, scaled to match L1 in the tails:
    /// `ρ(r) = r² / (2δ)` for `|r| ≤ δ`, `|r| − δ/2` otherwise. Smooth at 0.
    Huber {
        /// Threshold `δ > 0` between the quadratic and the linear part (linear-RGB units).
        delta: f32,
    },
    /// Geman–McClure with scale `sigma`: `ρ(r) = r² / (r² + σ²)`, bounded by 1. Residuals much
    /// larger than `σ` (occluders the model cannot explain) stop pulling on the fit.
    GemanMcClure {
        /// Scale `σ > 0` (linear-RGB units).
        sigma: f32,
    },
}

impl RobustLoss {
    /// `(ρ(r), ρ'(r))`.
    #[inline(always)]
    pub fn eval(&self, r: f32) -> (f32, f32) {
        match *self {
            RobustLoss::L1 => {
                let s = if r > 0.0 {
                    1.0
                } else if r < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                (r.abs(), s)
            }
            RobustLoss::Huber { delta } => {
                let a = r.abs();
                if a <= delta {
                    (r * r / (2.0 * delta), r / delta)
                } else {
                    (a - 0.5 * delta, r.signum())
                }
            }
            RobustLoss::GemanMcClure { sigma } => {
                let s2 = sigma * sigma;
                let d = r * r + s2;
                (r * r / d, 2.0 * r * s2 / (d * d))
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        match *self {
            RobustLoss::L1 => Ok(()),
            RobustLoss::Huber { delta } if !(delta > 0.0 && delta.is_finite()) => {
                Err("the Huber threshold must be a positive number")
            }
            RobustLoss::GemanMcClure { sigma } if !(sigma > 0.0 && sigma.is_finite()) => {
                Err("the Geman-McClure scale must be a positive number")
            }
            _ => Ok(()),
        }
    }
}

/// How the photometric loss is formed from the per-pixel residuals.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Per-channel penalty.
    pub penalty: RobustLoss,
    /// Colour (linear RGB) of pixels no triangle covers. `None`: uncovered pixels are left out of
    /// the loss (and of its normaliser). `Some`: they are compared with the photo as well; they
    /// carry no gradient (the background is a constant and silhouette motion is not
    /// differentiated).
    pub background: Option<[f32; 3]>,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            penalty: RobustLoss::L1,
            background: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        for loss in [
            RobustLoss::L1,
            RobustLoss::Huber { delta: 0.1 },
            RobustLoss::GemanMcClure { sigma: 0.2 },
        ] {
            for r in [-0.7f32, -0.15, -0.05, 0.03, 0.12, 0.9] {
                let h = 1e-3f32;
                let fd = (loss.eval(r + h).0 as f64 - loss.eval(r - h).0 as f64) / (2.0 * h as f64);
                let d = loss.eval(r).1 as f64;
                assert!(
                    (fd - d).abs() < 2e-3 * (1.0 + d.abs()),
                    "{loss:?} at {r}: {fd} vs {d}"
                );
            }
        }
    }

    #[test]
    fn huber_is_continuous_at_threshold() {
        let l = RobustLoss::Huber { delta: 0.1 };
        assert!((l.eval(0.1).0 - 0.05).abs() < 1e-7);
        assert!((l.eval(0.100_001).0 - 0.05).abs() < 1e-5);
    }
}

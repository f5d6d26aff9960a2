//! Adam (Kingma & Ba 2015) over a flat parameter vector, with an allocation-free step.

use serde::{Deserialize, Serialize};

/// Adam's constants (the learning rate is given per step, from the fitting schedule).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    /// Decay of the first-moment estimate.
    pub beta1: f32,
    /// Decay of the second-moment estimate.
    pub beta2: f32,
    /// Added to `√v̂` in the denominator.
    pub eps: f32,
}

impl Default for AdamSettings {
    fn default() -> Self {
        AdamSettings {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam state for one parameter group.
#[derive(Clone, Debug)]
pub struct Adam {
    settings: AdamSettings,
    m: Vec<f32>,
    v: Vec<f32>,
    t: u32,
}

impl Adam {
    /// State for `len` parameters, moments zero.
    pub fn new(len: usize, settings: AdamSettings) -> Self {
        Adam {
            settings,
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
        }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// Whether the group is empty.
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// Steps taken since the last reset.
    pub fn steps(&self) -> u32 {
        self.t
    }

    /// Forgets the moments (start of a new fitting stage).
    pub fn reset(&mut self) {
        self.m.fill(0.0);
        self.v.fill(0.0);
        self.t = 0;
    }

    /// One update `θ ← θ − lr · m̂ / (√v̂ + ε)` with bias-corrected moments. `params` and `grad`
    /// should have [`Adam::len`] entries; only the first [`Adam::len`] are read or changed.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32], lr: f32) {
        debug_assert_eq!(params.len(), self.m.len());
        debug_assert_eq!(grad.len(), self.m.len());
        self.t = self.t.saturating_add(1);
        let AdamSettings { beta1, beta2, eps } = self.settings;
        let bc1 = 1.0 - beta1.powi(self.t as i32);
        let bc2 = 1.0 - beta2.powi(self.t as i32);
        let step = lr / bc1;
        let ibc2 = 1.0 / bc2;
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            *p -= step * *m / ((*v * ibc2).sqrt() + eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_against_the_gradient_sign() {
        let mut adam = Adam::new(3, AdamSettings::default());
        let mut p = [1.0f32, 2.0, 3.0];
        adam.step(&mut p, &[0.5, -4.0, 0.0], 0.1);
        assert!((p[0] - 0.9).abs() < 1e-5);
        assert!((p[1] - 2.1).abs() < 1e-5);
        assert_eq!(p[2], 3.0);
    }

    #[test]
    fn minimises_a_quadratic() {
        let mut adam = Adam::new(2, AdamSettings::default());
        let mut p = [3.0f32, -2.0];
        let target = [0.5f32, 1.5];
        for _ in 0..2000 {
            let g = [2.0 * (p[0] - target[0]), 8.0 * (p[1] - target[1])];
            adam.step(&mut p, &g, 0.01);
        }
        assert!(
            (p[0] - 0.5).abs() < 1e-2 && (p[1] - 1.5).abs() < 1e-2,
            "{p:?}"
        );
    }
}

//! Gaussian leaves: parameters mean and standard deviation (never below the distribution's
//! `min_sigma`), statistics the moments (Σ F·x, Σ F·x², Σ F), leaf table
//! `(μ, σ, log σ + ½ log 2π)`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Constants, Dist, Family, FamilyInfo, ShapeParam, ShapeValue};
use crate::ParamsError;
use crate::outputs::Conditional;
use crate::plan::Domain;

/// ½ log 2π.
const HALF_LN_2PI: f32 = 0.918_938_5;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Gaussian {
    pub min_sigma: f32,
}

pub(crate) const INFO: FamilyInfo = FamilyInfo {
    kind: super::DistKind::Gaussian,
    name: "gaussian",
    shape: Some(ShapeParam::Real { key: "min_sigma", placeholder: "MIN_SIGMA", default: 0.01 }),
    tensor_field: "mean_std",
    constants: Constants::Table,
    em_lanes: 1,
    with_shape: |v| match v {
        Some(ShapeValue::Real(min_sigma)) => Some(Dist::Gaussian { min_sigma }),
        _ => None,
    },
};

impl Gaussian {
    /// Standard deviation actually used: the stored value, floored at the distribution's minimum.
    #[inline]
    fn sigma(&self, stored: f32) -> f32 {
        stored.max(self.min_sigma)
    }
}

impl Family for Gaussian {
    const INFO: FamilyInfo = INFO;

    fn num_params(&self) -> u32 {
        2
    }
    fn num_stats(&self) -> u32 {
        3
    }
    fn domain(&self) -> Domain {
        Domain::Continuous
    }
    fn check(&self) -> Result<(), String> {
        let m = self.min_sigma;
        if m > 0.0 && m.is_finite() { Ok(()) } else { Err(format!("the Gaussian's minimum standard deviation must be positive and finite, got {m}")) }
    }
    fn shape(&self) -> Option<ShapeValue> {
        Some(ShapeValue::Real(self.min_sigma))
    }
    fn kernel_constant(&self) -> f32 {
        self.min_sigma
    }
    /// `μ ~ U(-1, 1)`, `σ = 1` (or the floor, if above).
    fn init(&self, prm: &mut [f32], rng: &mut ChaCha8Rng, _perturbation: f32) {
        prm[0] = rng.random_range(-1.0..1.0);
        prm[1] = 1.0f32.max(self.min_sigma);
    }
    fn validate(&self, name: &str, values: &[f32]) -> Result<(), ParamsError> {
        match values.chunks_exact(2).position(|r| r[1] <= 0.0) {
            Some(row) => Err(ParamsError::InvalidSigma { name: name.to_string(), row, value: values[row * 2 + 1] }),
            None => Ok(()),
        }
    }
    fn table(&self, prm: &[f32], tab: &mut [f32]) {
        let s = self.sigma(prm[1]);
        tab.copy_from_slice(&[prm[0], s, s.ln() + HALF_LN_2PI]);
    }
    #[inline]
    fn log_prob_table(&self, tab: &[f32], _local: u32, x: f32) -> f32 {
        let z = (x - tab[0]) / tab[1];
        -0.5 * z * z - tab[2]
    }
    fn log_prob(&self, prm: &[f32], _local: u32, x: f32) -> f32 {
        let s = self.sigma(prm[1]);
        let z = (x - prm[0]) / s;
        -0.5 * z * z - s.ln() - HALF_LN_2PI
    }
    fn mode(&self, prm: &[f32], _local: u32) -> (f32, f32) {
        (-self.sigma(prm[1]).ln() - HALF_LN_2PI, prm[0])
    }
    #[inline]
    fn add_observed(&self, stats: &mut [f64], x: f32, f: f64) {
        let x = x as f64;
        stats[0] += f * x;
        stats[1] += f * x * x;
        stats[2] += f;
    }
    #[inline]
    fn add_missing(&self, stats: &mut [f64], prm: &[f32], f: f64) {
        let (mu, s) = (prm[0] as f64, self.sigma(prm[1]) as f64);
        stats[0] += f * mu;
        stats[1] += f * (s * s + mu * mu);
        stats[2] += f;
    }
    /// Moment matching with step η: `μ ← (1−η) μ + η Σx/Σ1`, the second moment likewise, σ from
    /// both (floored).
    fn em_update(&self, prm: &mut [f32], stats: &[f64], eta: f64, _alpha: f64) {
        if stats[2] <= 0.0 {
            return;
        }
        let (mu, s) = (prm[0] as f64, self.sigma(prm[1]) as f64);
        let new_mu = (1.0 - eta) * mu + eta * stats[0] / stats[2];
        let new_q = (1.0 - eta) * (s * s + mu * mu) + eta * stats[1] / stats[2];
        prm[0] = new_mu as f32;
        prm[1] = ((new_q - new_mu * new_mu).max(0.0).sqrt() as f32).max(self.min_sigma);
    }
    /// Box–Muller.
    fn sample(&self, prm: &[f32], _local: u32, rng: &mut ChaCha8Rng) -> f32 {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        (prm[0] as f64 + self.sigma(prm[1]) as f64 * z) as f32
    }
    /// Raw moments (Σ F μ, Σ F (σ² + μ²)); the engine turns them into mean and variance.
    fn add_conditional(&self, out: &mut Conditional, prm: &[f32], _local: u32, f: f32) {
        if let Conditional::Continuous { mean, var } = out {
            let sd = self.sigma(prm[1]);
            *mean += f * prm[0];
            *var += f * (sd * sd + prm[0] * prm[0]);
        }
    }
    fn conditional_slots(&self, _local: u32, domain: Domain) -> Option<u32> {
        match domain {
            Domain::Continuous => Some(2),
            Domain::Discrete { .. } => None,
        }
    }
}

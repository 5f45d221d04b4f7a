//! Bernoulli leaves over `{0, 1}`: the parameter is P(x = 1), the statistics the expected counts
//! of 0 and of 1, the leaf table `(log(1−p), log p)`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Constants, Dist, Family, FamilyInfo, ShapeValue, check_probabilities};
use crate::ParamsError;
use crate::outputs::Conditional;
use crate::plan::Domain;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Bernoulli;

pub(crate) const INFO: FamilyInfo = FamilyInfo {
    kind: super::DistKind::Bernoulli,
    name: "bernoulli",
    shape: None,
    tensor_field: "probs",
    constants: Constants::Table,
    em_lanes: 1,
    with_shape: |v| match v {
        None => Some(Dist::Bernoulli),
        _ => None,
    },
};

impl Family for Bernoulli {
    const INFO: FamilyInfo = INFO;

    fn num_params(&self) -> u32 {
        1
    }
    fn num_stats(&self) -> u32 {
        2
    }
    fn domain(&self) -> Domain {
        Domain::Discrete { num_cats: 2 }
    }
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn shape(&self) -> Option<ShapeValue> {
        None
    }
    /// `p ~ U(0.2, 0.8)`.
    fn init(&self, prm: &mut [f32], rng: &mut ChaCha8Rng, _perturbation: f32) {
        prm[0] = rng.random_range(0.2..0.8);
    }
    fn validate(&self, name: &str, values: &[f32]) -> Result<(), ParamsError> {
        check_probabilities(name, values)
    }
    fn table(&self, prm: &[f32], tab: &mut [f32]) {
        tab[0] = (1.0 - prm[0]).ln();
        tab[1] = prm[0].ln();
    }
    #[inline]
    fn log_prob_table(&self, tab: &[f32], _local: u32, x: f32) -> f32 {
        tab[(x >= 0.5) as usize]
    }
    fn log_prob(&self, prm: &[f32], _local: u32, x: f32) -> f32 {
        if x >= 0.5 { prm[0].ln() } else { (1.0 - prm[0]).ln() }
    }
    fn mode(&self, prm: &[f32], _local: u32) -> (f32, f32) {
        if prm[0] > 1.0 - prm[0] { (prm[0].ln(), 1.0) } else { ((1.0 - prm[0]).ln(), 0.0) }
    }
    #[inline]
    fn add_observed(&self, stats: &mut [f64], x: f32, f: f64) {
        stats[(x >= 0.5) as usize] += f;
    }
    #[inline]
    fn add_missing(&self, stats: &mut [f64], prm: &[f32], f: f64) {
        stats[1] += f * prm[0] as f64;
        stats[0] += f * (1.0 - prm[0] as f64);
    }
    /// `p ← (1−η) p + η (s₁ + α/2) / (s₀ + s₁ + α)`.
    fn em_update(&self, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64) {
        let total = stats[0] + stats[1] + alpha;
        if total <= 0.0 {
            return;
        }
        prm[0] = ((1.0 - eta) * prm[0] as f64 + eta * (stats[1] + alpha / 2.0) / total) as f32;
    }
    /// The regularized estimate over (count of 0, count of 1), each plus `α/2`.
    fn em_update_entropy(&self, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64, b: f64) {
        let a = [stats[0] + alpha / 2.0, stats[1] + alpha / 2.0];
        if a[0] + a[1] <= 0.0 {
            return;
        }
        let mut t = [0.0; 2];
        crate::entropy::regularized_weights(&a, b, &mut t);
        prm[0] = ((1.0 - eta) * prm[0] as f64 + eta * t[1]) as f32;
    }
    fn sample(&self, prm: &[f32], _local: u32, rng: &mut ChaCha8Rng) -> f32 {
        (rng.random::<f32>() < prm[0]) as u32 as f32
    }
    fn add_conditional(&self, out: &mut Conditional, prm: &[f32], _local: u32, f: f32) {
        if let Conditional::Discrete(p) = out {
            p[0] += f * (1.0 - prm[0]);
            p[1] += f * prm[0];
        }
    }
    fn conditional_slots(&self, _local: u32, domain: Domain) -> Option<u32> {
        match domain {
            Domain::Discrete { num_cats } if num_cats >= 2 => Some(2),
            _ => None,
        }
    }
}

//! Categorical leaves over `0..num_cats`: parameters are the probabilities, statistics the
//! expected category counts. On the GPU they read their probabilities and take the logarithm
//! themselves (a table of log-probabilities would be as large as the parameters: 0.77 GiB on
//! hclt1024), and their EM kernel runs a warp per leaf (rows of MNIST's 256 categories).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Constants, Dist, Family, FamilyInfo, ShapeParam, ShapeValue, check_nonneg, check_rows};
use crate::ParamsError;
use crate::outputs::Conditional;
use crate::plan::Domain;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Categorical {
    pub num_cats: u32,
}

pub(crate) const INFO: FamilyInfo = FamilyInfo {
    kind: super::DistKind::Categorical,
    name: "categorical",
    shape: Some(ShapeParam::Count { key: "states", placeholder: "N" }),
    tensor_field: "probs",
    constants: Constants::Params,
    em_lanes: 32,
    with_shape: |v| match v {
        Some(ShapeValue::Count(num_cats)) => Some(Dist::Categorical { num_cats }),
        _ => None,
    },
};

impl Family for Categorical {
    const INFO: FamilyInfo = INFO;

    fn num_params(&self) -> u32 {
        self.num_cats
    }
    fn num_stats(&self) -> u32 {
        self.num_cats
    }
    fn domain(&self) -> Domain {
        Domain::Discrete { num_cats: self.num_cats }
    }
    fn check(&self) -> Result<(), String> {
        if self.num_cats < 1 { Err("a categorical needs at least one category".into()) } else { Ok(()) }
    }
    fn shape(&self) -> Option<ShapeValue> {
        Some(ShapeValue::Count(self.num_cats))
    }
    /// `exp(-U(0,1) * perturbation)`, normalized (as sum weights).
    fn init(&self, prm: &mut [f32], rng: &mut ChaCha8Rng, perturbation: f32) {
        let mut total = 0.0f64;
        for v in prm.iter_mut() {
            *v = (-rng.random::<f32>() * perturbation).exp();
            total += *v as f64;
        }
        prm.iter_mut().for_each(|v| *v = (*v as f64 / total) as f32);
    }
    fn validate(&self, name: &str, values: &[f32]) -> Result<(), ParamsError> {
        check_nonneg(name, values)?;
        let np = self.num_cats as usize;
        let sums: Vec<f64> = values.chunks_exact(np).map(|r| r.iter().map(|&v| v as f64).sum()).collect();
        check_rows(name, &sums)
    }
    /// `log θ_k` (the CPU engine's table; the GPU takes the logarithm in its kernels).
    fn table(&self, prm: &[f32], tab: &mut [f32]) {
        tab.iter_mut().zip(prm).for_each(|(o, p)| *o = p.ln());
    }
    #[inline]
    fn log_prob_table(&self, tab: &[f32], _local: u32, x: f32) -> f32 {
        tab[x as usize]
    }
    fn log_prob(&self, prm: &[f32], _local: u32, x: f32) -> f32 {
        prm[x as usize].ln()
    }
    fn mode(&self, prm: &[f32], _local: u32) -> (f32, f32) {
        let (mut best, mut arg) = (f32::NEG_INFINITY, 0usize);
        for (k, &p) in prm.iter().enumerate() {
            if p > best {
                best = p;
                arg = k;
            }
        }
        (best.ln(), arg as f32)
    }
    #[inline]
    fn add_observed(&self, stats: &mut [f64], x: f32, f: f64) {
        stats[x as usize] += f;
    }
    #[inline]
    fn add_missing(&self, stats: &mut [f64], prm: &[f32], f: f64) {
        stats.iter_mut().zip(prm).for_each(|(s, &p)| *s += f * p as f64);
    }
    /// `θ_k ← (1−η) θ_k + η (s_k + α/K) / (Σ s + α)`.
    fn em_update(&self, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64) {
        let total: f64 = stats.iter().sum::<f64>() + alpha;
        if total <= 0.0 {
            return;
        }
        let k = self.num_cats as f64;
        for (p, s) in prm.iter_mut().zip(stats) {
            *p = ((1.0 - eta) * *p as f64 + eta * (s + alpha / k) / total) as f32;
        }
    }
    /// The regularized estimate of the counts plus `α/k` each ([`crate::entropy::regularized_weights`]).
    fn em_update_entropy(&self, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64, b: f64) {
        let k = self.num_cats as f64;
        let a: Vec<f64> = stats.iter().map(|s| s + alpha / k).collect();
        if a.iter().sum::<f64>() <= 0.0 {
            return;
        }
        let mut t = vec![0.0; a.len()];
        crate::entropy::regularized_weights(&a, b, &mut t);
        for (p, t) in prm.iter_mut().zip(&t) {
            *p = ((1.0 - eta) * *p as f64 + eta * t) as f32;
        }
    }
    /// Inverse CDF in f64; rounding past the end takes the last positive category.
    fn sample(&self, prm: &[f32], _local: u32, rng: &mut ChaCha8Rng) -> f32 {
        let mut u = rng.random::<f64>();
        for (k, &p) in prm.iter().enumerate() {
            if u < p as f64 {
                return k as f32;
            }
            u -= p as f64;
        }
        prm.iter().rposition(|&p| p > 0.0).unwrap_or(0) as f32
    }
    fn add_conditional(&self, out: &mut Conditional, prm: &[f32], _local: u32, f: f32) {
        if let Conditional::Discrete(p) = out {
            p.iter_mut().zip(prm).for_each(|(q, &t)| *q += f * t);
        }
    }
    fn conditional_slots(&self, _local: u32, domain: Domain) -> Option<u32> {
        match domain {
            Domain::Discrete { num_cats } => Some(self.num_cats.min(num_cats)),
            Domain::Continuous => None,
        }
    }
}

//! Binomial leaves: successes in `n` trials, over `0..=n`, with parameter the success probability
//! p. Statistics are the expected failures, successes and observations
//! `(Σ F·(n−x), Σ F·x, Σ F)`, so the EM update is Bernoulli's on pooled trials,
//! `p = (Σ F·x + α/2) / (n Σ F + α)`, and a binomial of one trial is a Bernoulli. The leaf table is
//! `(log(1−p), log p, n)`: the number of trials rides along because the GPU's forward kernels
//! receive nothing else per leaf.
//!
//! `templates/dist/binomial.cu.tera` computes the same functions on the device: [`log_pmf`] (with
//! `log C(n, k)` summed in f64), [`mode_count`] and [`draw_count`].

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::bernoulli::Bernoulli;
use super::{Constants, Dist, Family, FamilyInfo, ShapeParam, ShapeValue};
use crate::ParamsError;
use crate::outputs::Conditional;
use crate::plan::Domain;

/// Most trials a binomial leaf may have: every count up to it is exact in f32 (the data readers'
/// limit, 2^24), as the kernels compute with counts in f32.
pub const MAX_TRIALS: u32 = 1 << 24;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Binomial {
    pub num_trials: u32,
}

pub(crate) const INFO: FamilyInfo = FamilyInfo {
    kind: super::DistKind::Binomial,
    name: "binomial",
    shape: Some(ShapeParam::Count { key: "trials", placeholder: "N" }),
    tensor_field: "probs",
    constants: Constants::Table,
    em_lanes: 1,
    with_shape: |v| match v {
        Some(ShapeValue::Count(num_trials)) => Some(Dist::Binomial { num_trials }),
        _ => None,
    },
};

/// `log C(n, k)` as `Σ_{j=1..m} log((n − m + j) / j)`, `m = min(k, n − k)`, in f64 (`k ≤ n`).
fn log_choose(n: u32, k: u32) -> f64 {
    let m = k.min(n - k);
    let mut lc = 0.0f64;
    for j in 1..=m {
        lc += ((n - m + j) as f64 / j as f64).ln();
    }
    lc
}

/// `log P(x)` from `log p` and `log(1 − p)`; a term whose count is 0 is left out (so p = 0 or 1
/// gives log 1 at its certain value, not 0·(−∞)), and a value above `n` has probability 0.
pub(crate) fn log_pmf(n: u32, lp: f32, lq: f32, x: f32) -> f32 {
    let k = x as u32;
    if k > n {
        return f32::NEG_INFINITY;
    }
    let mut out = log_choose(n, k) as f32;
    if k > 0 {
        out += k as f32 * lp;
    }
    if k < n {
        out += (n - k) as f32 * lq;
    }
    out
}

/// The first most probable count: the pmf rises while `P(k+1)/P(k) = (n−k) p / ((k+1)(1−p)) > 1`.
/// In f64, where both products of the f32 parameter are exact, so the GPU finds the same count.
pub(crate) fn mode_count(n: u32, p: f32) -> u32 {
    let (p, q) = (p as f64, 1.0 - p as f64);
    let mut k = 0;
    while k < n && (n - k) as f64 * p > (k + 1) as f64 * q {
        k += 1;
    }
    k
}

/// `P(x = k)` for `k = 0..=n` in f64, from `log C(n, k)` accumulated term by term.
fn pmf(n: u32, p: f32) -> impl Iterator<Item = f64> {
    let p = p as f64;
    let (lp, lq) = (p.ln(), (-p).ln_1p());
    let mut lc = 0.0f64;
    (0..=n).map(move |k| {
        if k > 0 {
            lc += ((n - k + 1) as f64 / k as f64).ln();
        }
        let mut l = lc;
        if k > 0 {
            l += k as f64 * lp;
        }
        if k < n {
            l += (n - k) as f64 * lq;
        }
        l.exp()
    })
}

/// Inverse CDF at `u ∈ [0, 1)`; rounding past the end takes the last count of positive
/// probability.
pub(crate) fn draw_count(n: u32, p: f32, mut u: f64) -> u32 {
    let mut last = 0;
    for (k, pk) in pmf(n, p).enumerate() {
        if pk > 0.0 {
            last = k as u32;
        }
        if u < pk {
            return k as u32;
        }
        u -= pk;
    }
    last
}

impl Family for Binomial {
    const INFO: FamilyInfo = INFO;

    fn num_params(&self) -> u32 {
        1
    }
    fn num_stats(&self) -> u32 {
        3
    }
    fn domain(&self) -> Domain {
        // Saturating: `check` rejects such counts, but the domain may be asked for first.
        Domain::Discrete { num_cats: self.num_trials.saturating_add(1) }
    }
    fn check(&self) -> Result<(), String> {
        match self.num_trials {
            0 => Err("a binomial needs at least one trial".into()),
            n if n > MAX_TRIALS => Err(format!("a binomial has at most {MAX_TRIALS} trials, got {n}")),
            _ => Ok(()),
        }
    }
    fn shape(&self) -> Option<ShapeValue> {
        Some(ShapeValue::Count(self.num_trials))
    }
    fn kernel_constant(&self) -> f32 {
        self.num_trials as f32
    }
    /// As Bernoulli leaves: `p ~ U(0.2, 0.8)`.
    fn init(&self, prm: &mut [f32], rng: &mut ChaCha8Rng, perturbation: f32) {
        Bernoulli.init(prm, rng, perturbation);
    }
    fn validate(&self, name: &str, values: &[f32]) -> Result<(), ParamsError> {
        Bernoulli.validate(name, values)
    }
    /// Bernoulli's `(log(1−p), log p)`, then the number of trials.
    fn table(&self, prm: &[f32], tab: &mut [f32]) {
        Bernoulli.table(prm, &mut tab[..2]);
        tab[2] = self.num_trials as f32;
    }
    #[inline]
    fn log_prob_table(&self, tab: &[f32], _local: u32, x: f32) -> f32 {
        log_pmf(self.num_trials, tab[1], tab[0], x)
    }
    fn log_prob(&self, prm: &[f32], _local: u32, x: f32) -> f32 {
        log_pmf(self.num_trials, prm[0].ln(), (1.0 - prm[0]).ln(), x)
    }
    fn mode(&self, prm: &[f32], local: u32) -> (f32, f32) {
        let k = mode_count(self.num_trials, prm[0]) as f32;
        (self.log_prob(prm, local, k), k)
    }
    #[inline]
    fn add_observed(&self, stats: &mut [f64], x: f32, f: f64) {
        let (x, n) = (x as f64, self.num_trials as f64);
        stats[0] += f * (n - x);
        stats[1] += f * x;
        stats[2] += f;
    }
    #[inline]
    fn add_missing(&self, stats: &mut [f64], prm: &[f32], f: f64) {
        let (p, n) = (prm[0] as f64, self.num_trials as f64);
        stats[0] += f * n * (1.0 - p);
        stats[1] += f * n * p;
        stats[2] += f;
    }
    /// `p ← (1−η) p + η (s₁ + α/2) / (s₀ + s₁ + α)`: Bernoulli's update on the pooled trials (the
    /// pseudocount α counts trials, half of them successes).
    fn em_update(&self, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64) {
        let total = stats[0] + stats[1] + alpha;
        if total <= 0.0 {
            return;
        }
        prm[0] = ((1.0 - eta) * prm[0] as f64 + eta * (stats[1] + alpha / 2.0) / total) as f32;
    }
    fn sample(&self, prm: &[f32], _local: u32, rng: &mut ChaCha8Rng) -> f32 {
        draw_count(self.num_trials, prm[0], rng.random::<f64>()) as f32
    }
    fn add_conditional(&self, out: &mut Conditional, prm: &[f32], _local: u32, f: f32) {
        if let Conditional::Discrete(p) = out {
            p.iter_mut().zip(pmf(self.num_trials, prm[0])).for_each(|(q, pk)| *q += f * pk as f32);
        }
    }
    fn conditional_slots(&self, _local: u32, domain: Domain) -> Option<u32> {
        match domain {
            Domain::Discrete { num_cats } => Some(self.num_trials.saturating_add(1).min(num_cats)),
            Domain::Continuous => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact binomial probabilities by Pascal's triangle (f64).
    fn exact(n: u32, p: f64) -> Vec<f64> {
        let mut c = vec![1.0f64];
        for _ in 0..n {
            c = (0..=c.len()).map(|k| if k == 0 || k == c.len() { 1.0 } else { c[k - 1] + c[k] }).collect();
        }
        c.iter().enumerate().map(|(k, c)| c * p.powi(k as i32) * (1.0 - p).powi((n as usize - k) as i32)).collect()
    }

    #[test]
    fn log_pmf_and_pmf_match_pascals_triangle() {
        for n in [1u32, 2, 5, 12, 40] {
            for p in [0.0f32, 0.1, 0.5, 0.73, 1.0] {
                let want = exact(n, p as f64);
                let (lp, lq) = (p.ln(), (1.0 - p).ln());
                for (k, (w, got)) in want.iter().zip(pmf(n, p)).enumerate() {
                    let l = log_pmf(n, lp, lq, k as f32) as f64;
                    assert!((l.exp() - w).abs() < 1e-5 * w.max(1e-30) + 1e-12, "n={n} p={p} k={k}: exp(log pmf) {} vs {w}", l.exp());
                    assert!((got - w).abs() < 1e-9, "n={n} p={p} k={k}: pmf {got} vs {w}");
                }
                assert_eq!(log_pmf(n, lp, lq, (n + 1) as f32), f32::NEG_INFINITY);
            }
        }
    }

    #[test]
    fn mode_is_the_first_argmax() {
        for n in [1u32, 2, 3, 9, 30] {
            for p in [0.0f32, 0.05, 0.25, 0.5, 0.6, 0.95, 1.0] {
                let want = exact(n, p as f64);
                let best = want.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                // First k within rounding of the maximum.
                let first = want.iter().position(|&w| w >= best * (1.0 - 1e-12)).unwrap() as u32;
                assert_eq!(mode_count(n, p), first, "n={n} p={p}");
            }
        }
    }

    #[test]
    fn draws_follow_the_cdf() {
        let (n, p) = (6u32, 0.35f32);
        let cdf: Vec<f64> = exact(n, p as f64)
            .iter()
            .scan(0.0, |s, w| {
                *s += w;
                Some(*s)
            })
            .collect();
        for (k, &c) in cdf.iter().enumerate() {
            assert_eq!(draw_count(n, p, c - 1e-9), k as u32, "just below P(x ≤ {k})");
        }
        assert_eq!(draw_count(n, 0.0, 0.999), 0);
        assert_eq!(draw_count(n, 1.0, 0.0), n);
        assert_eq!(draw_count(n, 1.0, 0.999_999_999), n);
    }
}

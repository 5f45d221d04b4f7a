//! Leaf distributions on the CPU: log-densities, their maxima (for MPE), expected statistics and
//! the EM update. One place per distribution so the engine's passes stay generic.

use crate::plan::Dist;

pub(crate) const HALF_LN_2PI: f32 = 0.918_938_5;

/// Standard deviation actually used: the stored value, floored at the distribution's minimum.
#[inline]
pub(crate) fn sigma(dist: &Dist, stored: f32) -> f32 {
    match dist {
        Dist::Gaussian { min_sigma } => stored.max(*min_sigma),
        _ => stored,
    }
}

/// `log p(x)` from a node's slice of [`Params::leaf_table`](crate::Params::leaf_table).
#[inline]
pub(crate) fn log_prob_table(dist: &Dist, tab: &[f32], local: u32, x: f32) -> f32 {
    match dist {
        Dist::Categorical { .. } => tab[x as usize],
        Dist::Bernoulli => tab[(x >= 0.5) as usize],
        Dist::Gaussian { .. } => {
            let z = (x - tab[0]) / tab[1];
            -0.5 * z * z - tab[2]
        }
        Dist::Indicator { num_states } => {
            if x as u32 == local % num_states {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        }
    }
}

/// `log p(x)` of node `local` (index within its segment) with parameters `prm`.
#[cfg(test)]
#[inline]
pub(crate) fn log_prob(dist: &Dist, prm: &[f32], local: u32, x: f32) -> f32 {
    match dist {
        Dist::Categorical { .. } => prm[x as usize].ln(),
        Dist::Bernoulli => {
            if x >= 0.5 {
                prm[0].ln()
            } else {
                (1.0 - prm[0]).ln()
            }
        }
        Dist::Gaussian { .. } => {
            let s = sigma(dist, prm[1]);
            let z = (x - prm[0]) / s;
            -0.5 * z * z - s.ln() - HALF_LN_2PI
        }
        Dist::Indicator { num_states } => {
            if x as u32 == local % num_states {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        }
    }
}

/// `max_x log p(x)` and the maximizing value (first one on ties).
#[inline]
pub(crate) fn mode(dist: &Dist, prm: &[f32], local: u32) -> (f32, f32) {
    match dist {
        Dist::Categorical { .. } => {
            let (mut best, mut arg) = (f32::NEG_INFINITY, 0usize);
            for (k, &p) in prm.iter().enumerate() {
                if p > best {
                    best = p;
                    arg = k;
                }
            }
            (best.ln(), arg as f32)
        }
        Dist::Bernoulli => {
            if prm[0] > 1.0 - prm[0] {
                (prm[0].ln(), 1.0)
            } else {
                ((1.0 - prm[0]).ln(), 0.0)
            }
        }
        Dist::Gaussian { .. } => (-sigma(dist, prm[1]).ln() - HALF_LN_2PI, prm[0]),
        Dist::Indicator { num_states } => (0.0, (local % num_states) as f32),
    }
}

/// Add flow `f` of an observed value `x` to the node's statistics.
#[inline]
pub(crate) fn add_observed(dist: &Dist, stats: &mut [f64], x: f32, f: f64) {
    match dist {
        Dist::Categorical { .. } => stats[x as usize] += f,
        Dist::Bernoulli => stats[(x >= 0.5) as usize] += f,
        Dist::Gaussian { .. } => {
            let x = x as f64;
            stats[0] += f * x;
            stats[1] += f * x * x;
            stats[2] += f;
        }
        Dist::Indicator { .. } => {}
    }
}

/// Credit flow `f` of a missing value: the expected statistics under the node's own distribution.
#[inline]
pub(crate) fn add_missing(dist: &Dist, stats: &mut [f64], prm: &[f32], f: f64) {
    match dist {
        Dist::Categorical { .. } => stats.iter_mut().zip(prm).for_each(|(s, &p)| *s += f * p as f64),
        Dist::Bernoulli => {
            stats[1] += f * prm[0] as f64;
            stats[0] += f * (1.0 - prm[0] as f64);
        }
        Dist::Gaussian { .. } => {
            let (mu, s) = (prm[0] as f64, sigma(dist, prm[1]) as f64);
            stats[0] += f * mu;
            stats[1] += f * (s * s + mu * mu);
            stats[2] += f;
        }
        Dist::Indicator { .. } => {}
    }
}

/// One EM update of a node's parameters from its statistics (step `eta`, pseudocount `alpha`).
/// A node that received no flow and no pseudocount keeps its parameters.
pub(crate) fn em_update(dist: &Dist, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64) {
    match dist {
        Dist::Categorical { num_cats } => {
            let total: f64 = stats.iter().sum::<f64>() + alpha;
            if total <= 0.0 {
                return;
            }
            let k = *num_cats as f64;
            for (p, s) in prm.iter_mut().zip(stats) {
                *p = ((1.0 - eta) * *p as f64 + eta * (s + alpha / k) / total) as f32;
            }
        }
        Dist::Bernoulli => {
            let total = stats[0] + stats[1] + alpha;
            if total <= 0.0 {
                return;
            }
            prm[0] = ((1.0 - eta) * prm[0] as f64 + eta * (stats[1] + alpha / 2.0) / total) as f32;
        }
        Dist::Gaussian { min_sigma } => {
            if stats[2] <= 0.0 {
                return;
            }
            let (mu, s) = (prm[0] as f64, sigma(dist, prm[1]) as f64);
            let new_mu = (1.0 - eta) * mu + eta * stats[0] / stats[2];
            let new_q = (1.0 - eta) * (s * s + mu * mu) + eta * stats[1] / stats[2];
            prm[0] = new_mu as f32;
            prm[1] = ((new_q - new_mu * new_mu).max(0.0).sqrt() as f32).max(*min_sigma);
        }
        Dist::Indicator { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lookup_equals_direct_log_density() {
        let cases: [(Dist, &[f32], &[f32]); 4] = [
            (Dist::Categorical { num_cats: 3 }, &[0.2, 0.5, 0.3], &[0.0, 1.0, 2.0]),
            (Dist::Bernoulli, &[0.3], &[0.0, 1.0]),
            (Dist::Gaussian { min_sigma: 0.1 }, &[0.5, 0.05], &[-1.0, 0.5, 2.0]),
            (Dist::Indicator { num_states: 2 }, &[], &[0.0, 1.0]),
        ];
        for (dist, prm, xs) in cases {
            let mut tab = vec![0.0; dist.num_stats() as usize];
            match dist {
                Dist::Categorical { .. } => tab.iter_mut().zip(prm).for_each(|(t, p)| *t = p.ln()),
                Dist::Bernoulli => tab.copy_from_slice(&[(1.0 - prm[0]).ln(), prm[0].ln()]),
                Dist::Gaussian { .. } => {
                    let s = sigma(&dist, prm[1]);
                    tab.copy_from_slice(&[prm[0], s, s.ln() + HALF_LN_2PI]);
                }
                Dist::Indicator { .. } => {}
            }
            for &x in xs {
                let (a, b) = (log_prob_table(&dist, &tab, 1, x), log_prob(&dist, prm, 1, x));
                assert!(a == b || (a - b).abs() < 1e-6, "{dist:?} at {x}: {a} vs {b}");
            }
        }
    }
}

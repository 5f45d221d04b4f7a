//! Entropy regularization of EM (Liu & Van den Broeck, "Tractable Regularization of Probabilistic
//! Circuits", NeurIPS 2021, §4).
//!
//! The entropy of a non-deterministic circuit is hard, but every circuit is the marginal of a
//! deterministic one with a latent variable per sum node (the paper's Figure 2: sum node `n`
//! chooses child `c` with probability `θ_nc`). The entropy of that joint `p(x, z)` is tractable:
//!
//! `H = Σ_{sum n} ctx(n) · H(θ_n) + Σ_{leaf l} ctx(l) · H(p_l)`,
//!
//! where `ctx(n)` is the probability that `n` is in the sampled induced tree (the *context* or
//! top-down probability: `ctx(root) = 1`, a sum passes `ctx(n) θ_nc` to child `c`, a product passes
//! its own to every child). These are exactly the flows of one sample whose variables are all
//! missing (every node value is one), which is how [`context_flows`] computes them: with them,
//! `ctx(n) θ_nc` is the parameter flow of edge `n → c`.
//!
//! The regularized objective is `mean LL + τ H`. Its M-step (the paper's regularized parameter
//! update) decouples per node: with expected counts `a_c` (flows plus the pseudocount share) and
//! `b = τ · ctx(n) · N` over `N` samples, maximize `Σ_c a_c log θ_c − b Σ_c θ_c log θ_c` subject to
//! `Σ_c θ_c = 1`. Stationarity gives `a_c / θ_c − b log θ_c = λ` for one `λ` per node, which
//! [`regularized_weights`] solves by Newton's method — on `log θ_c` for each child, nested in a
//! safeguarded Newton iteration on `λ` for the normalization (each `θ_c(λ)` is decreasing in `λ`).
//! `ctx` comes from the parameters before the step (the paper's code propagates updated
//! ancestors top-down; both are fixed points of the same regularized EM).

use crate::RuntimeError;
use crate::cpu::CpuEngine;
use crate::data::Evidence;
use crate::em::check_em_hyper_parameters;
use crate::outputs::Flows;
use crate::params::Params;
use crate::plan::{Domain, Plan};

/// The context probabilities of every node as flows: sum parameter flows `ctx(n) θ_nc`, input
/// statistics of the leaves under their own distribution weighted by `ctx(l)`.
pub fn context_flows(plan: &Plan, params: &Params) -> Result<(Flows, Vec<f32>), RuntimeError> {
    let engine = CpuEngine::new(plan.clone(), params.clone())?;
    let trace = engine.trace(&Evidence::all_missing(plan.num_vars as usize, 1), None)?;
    Ok((trace.flows, trace.node_flows))
}

/// `H(p(x, z))` of the circuit's latent-variable view (module documentation), in nats. Every leaf
/// must be discrete (differential entropies of continuous leaves are not part of the paper's
/// regularizer).
pub fn latent_entropy(plan: &Plan, params: &Params) -> Result<f64, RuntimeError> {
    check_discrete(plan)?;
    let (ctx, node_flows) = context_flows(plan, params)?;
    let mut h: f64 = ctx.sum.iter().zip(&params.sum).filter(|(f, t)| **f > 0.0 && **t > 0.0).map(|(f, &t)| -f * (t as f64).ln()).sum();
    let table = params.leaf_table(plan);
    for seg in plan.inputs.iter().flat_map(|l| &l.segments) {
        let Domain::Discrete { num_cats } = seg.dist.domain() else { unreachable!("checked above") };
        let ns = seg.dist.num_stats() as usize;
        for i in 0..seg.num_nodes {
            let c = node_flows[(seg.node_start + i) as usize] as f64;
            let tab = &table[seg.flow_start as usize + i as usize * ns..][..ns];
            let hl: f64 = (0..num_cats).map(|k| seg.dist.log_prob_table(tab, i, k as f32) as f64).filter(|lp| lp.is_finite()).map(|lp| -lp.exp() * lp).sum();
            h += c * hl;
        }
    }
    Ok(h)
}

fn check_discrete(plan: &Plan) -> Result<(), RuntimeError> {
    match plan.domains.iter().position(|d| *d == Domain::Continuous) {
        Some(var) => Err(RuntimeError::InvalidHyperParameter(format!(
            "entropy regularization needs discrete variables; variable {var} is continuous (train without --entropy)"
        ))),
        None => Ok(()),
    }
}

/// The maximizer of `Σ_c a_c log θ_c − b Σ_c θ_c log θ_c` on the simplex (`a_c ≥ 0`, `Σ a > 0`,
/// `b ≥ 0`), written to `out`. `b = 0` is the plain EM estimate `a_c / Σ a`.
pub fn regularized_weights(a: &[f64], b: f64, out: &mut [f64]) {
    let total: f64 = a.iter().sum();
    if b <= 0.0 || a.len() < 2 {
        out.iter_mut().zip(a).for_each(|(o, a)| *o = a / total);
        return;
    }
    // u_c = log θ_c solves a_c e^{−u} − b u = λ; start from the unregularized estimate, whose λ is
    // the θ-weighted mean of the left side.
    let mut u: Vec<f64> = a.iter().map(|&a| if a > 0.0 { (a / total).ln() } else { -30.0 }).collect();
    let mut lambda: f64 = a.iter().zip(&u).map(|(&a, &u)| a - b * u * (a / total)).sum();
    let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY); // Σθ(lo) ≥ 1 ≥ Σθ(hi)
    for _ in 0..100 {
        let (mut s, mut ds) = (0.0, 0.0);
        for (uc, &ac) in u.iter_mut().zip(a) {
            *uc = solve_child(ac, b, lambda, *uc);
            let t = uc.exp();
            s += t;
            ds -= t / (ac * (-*uc).exp() + b); // dθ/dλ = θ · du/dλ = −θ / (a e^{−u} + b)
        }
        if (s - 1.0).abs() < 1e-12 {
            break;
        }
        if s > 1.0 {
            lo = lo.max(lambda)
        } else {
            hi = hi.min(lambda)
        }
        let mut next = lambda - (s - 1.0) / ds;
        if !(next > lo && next < hi && next.is_finite()) {
            next = match (lo.is_finite(), hi.is_finite()) {
                (true, true) => 0.5 * (lo + hi),
                (true, false) => lambda + (lambda - lo).abs().max(b),
                _ => lambda - (hi - lambda).abs().max(b),
            };
        }
        lambda = next;
    }
    let norm: f64 = u.iter().map(|u| u.exp()).sum();
    out.iter_mut().zip(&u).for_each(|(o, u)| *o = u.exp() / norm);
}

/// The root `u` of `a e^{−u} − b u = λ` (decreasing and convex in `u`, so Newton converges from any
/// start after one step), from `u0`.
fn solve_child(a: f64, b: f64, lambda: f64, u0: f64) -> f64 {
    if a <= 0.0 {
        return -lambda / b;
    }
    let mut u = u0.clamp(-700.0, 700.0);
    for _ in 0..60 {
        let e = a * (-u).exp();
        let step = (e - b * u - lambda) / (e + b);
        u = (u + step).clamp(-700.0, 700.0);
        if step.abs() < 1e-13 * (1.0 + u.abs()) {
            break;
        }
    }
    u
}

/// One entropy-regularized EM step (module documentation): like [`crate::cpu::em_update`] with
/// every untied sum node's and every Categorical/Bernoulli leaf's estimate replaced by the
/// regularized one, `b = τ · ctx · N` with `N = flows.total` samples. Other leaves take the plain
/// update.
pub fn em_update_entropy(plan: &Plan, params: &mut Params, flows: &Flows, step_size: f32, pseudocount: f32, tau: f32) -> Result<(), RuntimeError> {
    check_em_hyper_parameters(step_size, pseudocount)?;
    check_tau(tau)?;
    check_discrete(plan)?;
    let (ctx, node_flows) = context_flows(plan, params)?;
    let (eta, alpha, scale) = (step_size as f64, pseudocount as f64, tau as f64 * flows.total);
    let (mut a, mut t) = (Vec::new(), Vec::new());
    for blk in &plan.em_blocks {
        for m in 0..blk.block_size {
            let idx = |w: u32| (blk.base + w * blk.block_size + m) as usize;
            let share = alpha / blk.width as f64;
            a.clear();
            a.extend((0..blk.width).map(|w| flows.sum[idx(w)] + share));
            if a.iter().sum::<f64>() <= 0.0 {
                continue;
            }
            let b = scale * (0..blk.width).map(|w| ctx.sum[idx(w)]).sum::<f64>();
            t.resize(a.len(), 0.0);
            regularized_weights(&a, b, &mut t);
            for (w, &tw) in t.iter().enumerate() {
                let i = idx(w as u32);
                params.sum[i] = ((1.0 - eta) * params.sum[i] as f64 + eta * tw) as f32;
            }
        }
    }
    for seg in plan.inputs.iter().flat_map(|l| l.segments.iter()).filter(|s| !s.tied) {
        let (np, ns) = (seg.dist.num_params() as usize, seg.dist.num_stats() as usize);
        for i in 0..seg.num_nodes as usize {
            let prm = &mut params.input[seg.param_start as usize + i * np..][..np];
            let stats = &flows.input[seg.flow_start as usize + i * ns..][..ns];
            let b = scale * node_flows[seg.node_start as usize + i] as f64;
            seg.dist.em_update_entropy(prm, stats, eta, alpha, b);
        }
    }
    Ok(())
}

/// Flows from which a plain EM step with step size 1 and no pseudocount gives `params` back:
/// every sum parameter its own weight (rows sum to one), every leaf the expected statistics of
/// its distribution at flow 1 (moment matching). How the GPU engine installs parameters computed
/// on the host with its own EM kernels.
pub fn flows_installing(plan: &Plan, params: &Params) -> Flows {
    let mut f = Flows::zeros(plan);
    f.sum.iter_mut().zip(&params.sum).for_each(|(f, &t)| *f = t as f64);
    for seg in plan.inputs.iter().flat_map(|l| l.segments.iter()) {
        let (np, ns) = (seg.dist.num_params() as usize, seg.dist.num_stats() as usize);
        for i in 0..seg.num_nodes as usize {
            let prm = &params.input[seg.param_start as usize + i * np..][..np];
            seg.dist.add_missing(&mut f.input[seg.flow_start as usize + i * ns..][..ns], prm, 1.0);
        }
    }
    f.total = 1.0;
    f
}

/// The regularization strength τ: finite and non-negative.
pub fn check_tau(tau: f32) -> Result<(), RuntimeError> {
    if !(tau >= 0.0 && tau.is_finite()) {
        return Err(RuntimeError::InvalidHyperParameter(format!("entropy regularization τ must be finite and ≥ 0, got {tau}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The objective the update maximizes.
    fn objective(a: &[f64], b: f64, t: &[f64]) -> f64 {
        a.iter().zip(t).map(|(a, t)| a * t.ln() - b * t * t.ln()).sum()
    }

    #[test]
    fn regularized_weights_are_the_constrained_maximum() {
        let cases: [(&[f64], f64); 6] =
            [(&[3.0, 1.0], 0.5), (&[10.0, 0.1, 5.0], 4.0), (&[0.0, 2.0, 1.0, 0.5], 1.0), (&[1e-6, 1e3], 100.0), (&[5.0, 5.0], 3.0), (&[2.0, 1.0, 1.0], 0.0)];
        for (a, b) in cases {
            let mut t = vec![0.0; a.len()];
            regularized_weights(a, b, &mut t);
            assert!((t.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{a:?}, b={b}: Σθ = {}", t.iter().sum::<f64>());
            // Stationarity: a_c/θ_c − b log θ_c equal for every c.
            let lam: Vec<f64> = a.iter().zip(&t).map(|(a, t)| a / t - b * t.ln()).collect();
            assert!(lam.iter().all(|l| (l - lam[0]).abs() < 1e-6 * (1.0 + lam[0].abs())), "{a:?}, b={b}: λ per child {lam:?}");
            // No random point of the simplex does better.
            let best = objective(a, b, &t);
            let mut seed = 1u64;
            for _ in 0..2000 {
                let mut q: Vec<f64> = (0..a.len())
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        (seed >> 11) as f64 / (1u64 << 53) as f64 + 1e-9
                    })
                    .collect();
                let s: f64 = q.iter().sum();
                q.iter_mut().for_each(|x| *x /= s);
                assert!(objective(a, b, &q) <= best + 1e-9, "{a:?}, b={b}: {q:?} beats {t:?}");
            }
        }
    }

    #[test]
    fn installing_flows_give_the_parameters_back() {
        use crate::dist::Dist;
        // Every discrete family: a plain EM step (η = 1, α = 0) from `flows_installing` is the
        // identity on normalized parameters.
        for (dist, prm) in
            [(Dist::Categorical { num_cats: 3 }, vec![0.2f32, 0.5, 0.3]), (Dist::Bernoulli, vec![0.3]), (Dist::Binomial { num_trials: 4 }, vec![0.35])]
        {
            let mut stats = vec![0.0; dist.num_stats() as usize];
            dist.add_missing(&mut stats, &prm, 1.0);
            let mut back = vec![0.9f32; prm.len()];
            dist.em_update(&mut back, &stats, 1.0, 0.0);
            for (b, p) in back.iter().zip(&prm) {
                assert!((b - p).abs() < 1e-6, "{dist:?}: {back:?} from {prm:?}");
            }
        }
    }

    #[test]
    fn stronger_regularization_moves_towards_uniform() {
        let a = [8.0, 1.0, 1.0];
        let mut prev = 0.0;
        for b in [0.0, 1.0, 10.0, 100.0, 1e4] {
            let mut t = [0.0; 3];
            regularized_weights(&a, b, &mut t);
            let h: f64 = t.iter().map(|t| -t * t.ln()).sum();
            assert!(h > prev, "b={b}: entropy {h} not above {prev}");
            prev = h;
        }
        assert!((prev - 3f64.ln()).abs() < 1e-3, "b → ∞ gives the uniform weights");
    }
}

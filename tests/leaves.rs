//! Gaussian and Indicator leaves against closed forms: densities, marginals, EM moment updates
//! (with the credit for missing values and the σ floor), conditionals and sampling moments.

use pcc::codegen::{CircuitBuilder, Dist, Model, SumEdges};
use pcc::runtime::{Conditional, Evidence};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MIN_SIGMA: f32 = 0.05;
const W: [f64; 3] = [0.5, 0.3, 0.2];
const MU: [[f64; 3]; 2] = [[-1.0, 0.5, 2.0], [1.0, -0.5, 0.0]];
const SD: [[f64; 3]; 2] = [[0.5, 1.0, 0.7], [0.3, 0.8, 1.5]];

/// A mixture of three products of two Gaussians: root = Σ_i w_i N(x0; μ0i, σ0i) N(x1; μ1i, σ1i).
fn gaussian_mixture() -> Model {
    let mut b = CircuitBuilder::new(2);
    let g0 = b.inputs(0, 3, 1, Dist::Gaussian { min_sigma: MIN_SIGMA });
    let g1 = b.inputs(1, 3, 1, Dist::Gaussian { min_sigma: MIN_SIGMA });
    let p = b.multiply(&[g0, g1]);
    let root = b.summate(&[p], 1, 1, SumEdges::Dense);
    let c = b.finish(root).unwrap();
    let mut m = Model::random(c, 1).unwrap();
    let plan = m.plan.clone();
    for (node, v) in [(0u32, 0usize), (1, 1)] {
        let t: Vec<f32> = (0..3).flat_map(|i| [MU[v][i] as f32, SD[v][i] as f32]).collect();
        m.params.set_node(&plan, node, &t).unwrap();
    }
    m.params.set_node(&plan, 3, &W.map(|w| w as f32)).unwrap();
    m
}

fn normal(x: f64, mu: f64, sd: f64) -> f64 {
    (-0.5 * ((x - mu) / sd).powi(2)).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt())
}

/// Per-component joint densities of one sample (a missing variable contributes 1).
fn components(x: &[f32], miss: &[bool]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (i, o) in out.iter_mut().enumerate() {
        *o = W[i];
        for v in 0..2 {
            if !miss[v] {
                *o *= normal(x[v] as f64, MU[v][i], SD[v][i]);
            }
        }
    }
    out
}

fn data(n: usize, p_missing: f64, seed: u64) -> Evidence {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::new();
    let mut missing = Vec::new();
    for _ in 0..n {
        for _ in 0..2 {
            values.push(rng.random_range(-3.0..3.0f32));
        }
        let m0 = rng.random_bool(p_missing);
        missing.extend([m0, !m0 && rng.random_bool(p_missing)]);
    }
    Evidence::with_missing(2, values, Some(missing)).unwrap()
}

#[test]
fn gaussian_density_and_marginals_match_closed_form() {
    let m = gaussian_mixture();
    let ev = data(50, 0.3, 3);
    let lls = m.cpu_engine().unwrap().log_likelihood(&ev).unwrap();
    for (s, &ll) in lls.iter().enumerate() {
        let x = &ev.values[s * 2..][..2];
        let miss = [ev.is_missing(s, 0), ev.is_missing(s, 1)];
        let want: f64 = components(x, &miss).iter().sum::<f64>().ln();
        assert!((ll as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "sample {s}: {ll} vs {want}");
    }
}

#[test]
fn gaussian_em_matches_closed_form_moments() {
    let m = gaussian_mixture();
    let ev = data(200, 0.2, 5);
    for eta in [1.0f64, 0.5] {
        // Closed form: responsibilities, then weighted moments (missing values credited with the
        // component's own moments μ and σ² + μ²).
        let mut nk = [0.0f64; 3];
        let mut s1 = [[0.0f64; 3]; 2];
        let mut s2 = [[0.0f64; 3]; 2];
        for s in 0..ev.num_samples() {
            let x = &ev.values[s * 2..][..2];
            let miss = [ev.is_missing(s, 0), ev.is_missing(s, 1)];
            let comp = components(x, &miss);
            let z: f64 = comp.iter().sum();
            for i in 0..3 {
                let r = comp[i] / z;
                nk[i] += r;
                for v in 0..2 {
                    let (a, b) = if miss[v] { (MU[v][i], SD[v][i].powi(2) + MU[v][i].powi(2)) } else { (x[v] as f64, (x[v] as f64).powi(2)) };
                    s1[v][i] += r * a;
                    s2[v][i] += r * b;
                }
            }
        }
        let mut e = m.cpu_engine().unwrap();
        e.accumulate_flows(&ev, None).unwrap();
        e.em_step(eta as f32, 0.0).unwrap();
        let spec = |node: u32| m.plan.tensors.iter().find(|t| t.ir_node == node).unwrap();
        let weights = e.params().extract(spec(3));
        let n: f64 = nk.iter().sum();
        for i in 0..3 {
            let want = (1.0 - eta) * W[i] + eta * nk[i] / n;
            assert!((weights[i] as f64 - want).abs() < 1e-5, "η={eta}: weight {i}: {} vs {want}", weights[i]);
        }
        for v in 0..2 {
            let t = e.params().extract(spec(v as u32));
            for i in 0..3 {
                let mu = (1.0 - eta) * MU[v][i] + eta * s1[v][i] / nk[i];
                let q = (1.0 - eta) * (SD[v][i].powi(2) + MU[v][i].powi(2)) + eta * s2[v][i] / nk[i];
                let sd = (q - mu * mu).sqrt().max(MIN_SIGMA as f64);
                assert!((t[i * 2] as f64 - mu).abs() < 1e-4, "η={eta}: μ[{v}][{i}] {} vs {mu}", t[i * 2]);
                assert!((t[i * 2 + 1] as f64 - sd).abs() < 1e-4, "η={eta}: σ[{v}][{i}] {} vs {sd}", t[i * 2 + 1]);
            }
        }
    }
}

#[test]
fn gaussian_sigma_never_drops_below_its_floor() {
    let m = gaussian_mixture();
    let ev = Evidence::new(2, [0.25f32, -0.5].repeat(30)).unwrap();
    let mut e = m.cpu_engine().unwrap();
    for _ in 0..3 {
        e.accumulate_flows(&ev, None).unwrap();
        e.em_step(1.0, 0.0).unwrap();
    }
    for v in 0..2u32 {
        let spec = m.plan.tensors.iter().find(|t| t.ir_node == v).unwrap();
        let t = e.params().extract(spec);
        for i in 0..3 {
            assert!(t[i * 2 + 1] >= MIN_SIGMA, "σ[{v}][{i}] = {}", t[i * 2 + 1]);
        }
    }
    let ll = e.log_likelihood(&ev).unwrap();
    assert!(ll.iter().all(|l| l.is_finite()));
}

#[test]
fn gaussian_conditional_is_the_posterior_mixture() {
    let m = gaussian_mixture();
    let ev = Evidence::with_missing(2, vec![0.7, 0.0, 0.0, -1.2], Some(vec![false, true, true, false])).unwrap();
    let conds = m.cpu_engine().unwrap().conditionals(&ev).unwrap();
    for (s, (obs_var, free_var)) in [(0usize, 1usize), (1, 0)].into_iter().enumerate() {
        let x = &ev.values[s * 2..][..2];
        let miss: Vec<bool> = (0..2).map(|v| v == free_var).collect();
        let comp = components(x, &miss);
        let z: f64 = comp.iter().sum();
        let mean: f64 = (0..3).map(|i| comp[i] / z * MU[free_var][i]).sum();
        let second: f64 = (0..3).map(|i| comp[i] / z * (SD[free_var][i].powi(2) + MU[free_var][i].powi(2))).sum();
        assert_eq!(conds[s][obs_var], Conditional::Observed);
        let Conditional::Continuous { mean: gm, var: gv } = conds[s][free_var] else { panic!("{:?}", conds[s]) };
        assert!((gm as f64 - mean).abs() < 1e-4, "sample {s}: mean {gm} vs {mean}");
        assert!((gv as f64 - (second - mean * mean)).abs() < 1e-4, "sample {s}: var {gv}");
    }
}

#[test]
fn gaussian_samples_have_the_mixture_moments() {
    let m = gaussian_mixture();
    let n = 40_000;
    let s = m.cpu_engine().unwrap().sample(n, 11).unwrap();
    for v in 0..2 {
        let mean: f64 = (0..3).map(|i| W[i] * MU[v][i]).sum();
        let second: f64 = (0..3).map(|i| W[i] * (SD[v][i].powi(2) + MU[v][i].powi(2))).sum();
        let var = second - mean * mean;
        let xs: Vec<f64> = s.chunks(2).map(|r| r[v] as f64).collect();
        let m1 = xs.iter().sum::<f64>() / n as f64;
        let m2 = xs.iter().map(|x| (x - m1).powi(2)).sum::<f64>() / n as f64;
        let se = (var / n as f64).sqrt();
        assert!((m1 - mean).abs() < 4.0 * se, "var {v}: sample mean {m1} vs {mean}");
        assert!((m2 - var).abs() < 0.05 * var, "var {v}: sample variance {m2} vs {var}");
    }
}

/// A classic sum-product network over indicator leaves: `[x == k]` leaves, weights on sums.
#[test]
fn indicator_leaves_normalize_and_train() {
    let mut b = CircuitBuilder::new(3);
    let ind: Vec<_> = (0..3).map(|v| b.inputs(v, 1, 4, Dist::Indicator { num_states: 4 })).collect();
    // Each variable: a sum over its four indicators → a 2-node categorical-like mixture.
    let leaves: Vec<_> = ind.iter().map(|&i| b.summate(&[i], 1, 2, SumEdges::Dense)).collect();
    let p = b.multiply(&leaves);
    let root = b.summate(&[p], 1, 1, SumEdges::Dense);
    let m = Model::random(b.finish(root).unwrap(), 3).unwrap();
    let all: Vec<f32> = (0..64).flat_map(|i| [(i % 4) as f32, (i / 4 % 4) as f32, (i / 16) as f32]).collect();
    let ev = Evidence::new(3, all).unwrap();
    let mut e = m.cpu_engine().unwrap();
    let total: f64 = e.log_likelihood(&ev).unwrap().iter().map(|&l| (l as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-5, "Σ p = {total}");
    let train = Evidence::new(3, [1.0f32, 2.0, 3.0].repeat(10)).unwrap();
    let before: f32 = e.log_likelihood(&train).unwrap().iter().sum();
    for _ in 0..5 {
        e.accumulate_flows(&train, None).unwrap();
        e.em_step(1.0, 0.0).unwrap();
    }
    let after: f32 = e.log_likelihood(&train).unwrap().iter().sum();
    assert!(after > before && after > -1e-3, "EM on one repeated point: {before} -> {after}");
    let mpe = e.mpe(&Evidence::all_missing(3, 1)).unwrap();
    assert_eq!(mpe.assignments, vec![1.0, 2.0, 3.0]);
}

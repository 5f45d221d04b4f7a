//! Gaussian and Indicator leaves against closed forms: densities, marginals, EM moment updates
//! (with the credit for missing values and the σ floor), conditionals and sampling moments.
//! Binomial leaves against brute force (every joint state of small circuits enumerated with an
//! independent f64 reference): probabilities, marginals, conditionals, MPE, statistics, EM,
//! sampling frequencies; and a binomial of one trial is a Bernoulli.

use pcc_testkit as common;

use common::{BINOMIAL_TRIALS, Reference, binomial_circuit, categories, close, completions, row};
use pcc::codegen::{CircuitBuilder, Dist, Model, Node, SumEdges};
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

const BINOMIAL_CIRCUITS: u64 = 6;

/// [`binomial_circuit`] `seed` with random parameters, and `n` samples of it.
fn binomial_model(seed: u64, n: usize, p_missing: f64) -> (Model, Evidence) {
    let (c, ev) = binomial_circuit(seed, n, p_missing);
    (Model::random(c, 100 + seed).unwrap(), ev)
}

#[test]
fn binomial_probabilities_and_marginals_match_enumeration() {
    for seed in 0..BINOMIAL_CIRCUITS {
        let (m, ev) = binomial_model(seed, 30, 0.4);
        let cats = categories(&m);
        assert_eq!(cats, vec![BINOMIAL_TRIALS[0] + 1, BINOMIAL_TRIALS[1] + 1, 2, BINOMIAL_TRIALS[0] + 1, 3]);
        let e = m.cpu_engine().unwrap();
        let r = Reference::new(&m);
        let all = completions(&cats, &vec![0.0; cats.len()], &vec![true; cats.len()]);
        let lls = e.log_likelihood(&Evidence::new(cats.len(), all.concat()).unwrap()).unwrap();
        let total: f64 = lls.iter().map(|&l| (l as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "circuit {seed}: Σ p(x) = {total}");
        for (x, &ll) in all.iter().zip(&lls) {
            let p = r.prob(x, &vec![false; x.len()]);
            assert!(close(ll as f64, p.ln(), 1e-5), "circuit {seed}, x = {x:?}: engine {ll}, reference {}", p.ln());
        }
        for (s, &ll) in e.log_likelihood(&ev).unwrap().iter().enumerate() {
            let (x, miss) = row(&ev, s);
            let p: f64 = completions(&cats, &x, &miss).iter().map(|c| r.prob(c, &vec![false; c.len()])).sum();
            assert!(close(ll as f64, p.ln(), 1e-5), "circuit {seed}, sample {s}: engine {ll}, enumeration {}", p.ln());
        }
    }
}

#[test]
fn binomial_conditionals_and_mpe_match_enumeration() {
    for seed in 0..BINOMIAL_CIRCUITS {
        let (m, ev) = binomial_model(seed, 12, 0.5);
        let cats = categories(&m);
        let e = m.cpu_engine().unwrap();
        let r = Reference::new(&m);
        let conds = e.conditionals(&ev).unwrap();
        let mpe = e.mpe(&ev).unwrap();
        let nv = cats.len();
        for (s, cond) in conds.iter().enumerate() {
            let (x, miss) = row(&ev, s);
            let comps = completions(&cats, &x, &miss);
            let probs: Vec<f64> = comps.iter().map(|c| r.prob(c, &vec![false; c.len()])).collect();
            let z: f64 = probs.iter().sum();
            for (v, c) in cond.iter().enumerate() {
                match c {
                    Conditional::Observed => assert!(!miss[v]),
                    Conditional::Discrete(p) => {
                        assert!(miss[v] && p.len() == cats[v] as usize);
                        for (k, &pk) in p.iter().enumerate() {
                            let want: f64 = comps.iter().zip(&probs).filter(|(c, _)| c[v] == k as f32).map(|(_, p)| p).sum::<f64>() / z;
                            assert!((pk as f64 - want).abs() < 1e-5, "circuit {seed}, sample {s}, P(x{v}={k}|e): engine {pk}, enumeration {want}");
                        }
                    }
                    Conditional::Continuous { .. } => panic!("no continuous variables here"),
                }
            }
            let best = comps.iter().map(|c| r.max_product(c)).fold(0.0, f64::max);
            let got = mpe.log_values[s] as f64;
            assert!(close(got, best.ln(), 1e-5), "circuit {seed}, sample {s}: MPE value {got}, enumeration {}", best.ln());
            let a = &mpe.assignments[s * nv..][..nv];
            assert!((0..nv).all(|v| miss[v] || a[v] == x[v]), "circuit {seed}: MPE keeps the evidence");
            let va = r.max_product(a).ln();
            assert!(close(va, best.ln(), 1e-5), "circuit {seed}, sample {s}: MPE assignment {a:?} scores {va}, best {}", best.ln());
        }
    }
}

/// Statistics `(Σ F·(n−x), Σ F·x, Σ F)` from the reference's expected counts of each value, and
/// one EM step against `p ← (1−η) p + η (Σ F·x + α/2) / (n Σ F + α)`.
#[test]
fn binomial_statistics_and_em_match_the_closed_form() {
    for seed in 0..BINOMIAL_CIRCUITS {
        let (m, ev) = binomial_model(seed, 40, 0.25);
        let r = Reference::new(&m);
        let mut counts: Vec<Option<Vec<f64>>> = vec![None; m.circuit.nodes.len()];
        for s in 0..ev.num_samples() {
            let (x, miss) = row(&ev, s);
            for (i, cnt) in r.grad(&x, &miss).counts.into_iter().enumerate() {
                if let Some(cnt) = cnt {
                    let acc = counts[i].get_or_insert_with(|| vec![0.0; cnt.len()]);
                    acc.iter_mut().zip(&cnt).for_each(|(a, c)| *a += c);
                }
            }
        }
        let trace = m.cpu_engine().unwrap().trace(&ev, None).unwrap();
        for (eta, alpha) in [(1.0f64, 0.0f64), (0.5, 0.3)] {
            let mut e = m.cpu_engine().unwrap();
            e.accumulate_flows(&ev.slice(0, 17), None).unwrap();
            e.accumulate_flows(&ev.slice(17, 40), None).unwrap();
            e.em_step(eta as f32, alpha as f32).unwrap();
            let mut checked = 0;
            for (i, node) in m.circuit.nodes.iter().enumerate() {
                let Node::Input { dist: Dist::Binomial { num_trials }, tied_to: None, .. } = node else { continue };
                let n = *num_trials as usize;
                let cnt = counts[i].as_ref().unwrap();
                let seg = m.plan.inputs.iter().flat_map(|l| &l.segments).find(|s| s.ir_node as usize == i).unwrap();
                let spec = m.plan.tensors.iter().find(|t| t.ir_node as usize == i).unwrap();
                let (old, new) = (m.params.extract(spec), e.params().extract(spec));
                for (k, c) in cnt.chunks(n + 1).enumerate() {
                    let want = [
                        c.iter().enumerate().map(|(x, c)| c * (n - x) as f64).sum::<f64>(),
                        c.iter().enumerate().map(|(x, c)| c * x as f64).sum::<f64>(),
                        c.iter().sum::<f64>(),
                    ];
                    let got = &trace.flows.input[seg.flow_start as usize + k * 3..][..3];
                    for j in 0..3 {
                        assert!(close(got[j], want[j], 1e-4), "circuit {seed}, node {i}.{k}: statistic {j} engine {}, reference {}", got[j], want[j]);
                    }
                    let p = (1.0 - eta) * old[k] as f64 + eta * (want[1] + alpha / 2.0) / (n as f64 * want[2] + alpha);
                    assert!((new[k] as f64 - p).abs() < 2e-5, "circuit {seed}, η={eta}, α={alpha}, node {i}.{k}: engine p {}, closed form {p}", new[k]);
                    checked += 1;
                }
            }
            assert!(checked >= 2, "circuit {seed}: both binomial vectors checked");
        }
    }
}

#[test]
fn binomial_samples_have_the_marginal_frequencies() {
    const N: usize = 20_000;
    for seed in 0..3 {
        let (m, _) = binomial_model(seed, 1, 0.0);
        let cats = categories(&m);
        let nv = cats.len();
        let r = Reference::new(&m);
        let e = m.cpu_engine().unwrap();
        // Unconditional, and conditional on variable 4 (so the binomials' posteriors shift).
        let mut evidence = vec![0.0f32; nv];
        evidence[4] = (seed % 3) as f32;
        let mut mask = vec![true; nv];
        mask[4] = false;
        for (label, x, miss) in [("unconditional", vec![0.0; nv], vec![true; nv]), ("given x4", evidence, mask)] {
            let rows = Evidence::with_missing(nv, x.repeat(N), Some(miss.repeat(N))).unwrap();
            let samples = e.sample_conditional(&rows, 7 + seed).unwrap();
            let pe = r.prob(&x, &miss);
            for v in (0..nv).filter(|&v| miss[v]) {
                for k in 0..cats[v] {
                    let (mut xk, mut mk) = (x.clone(), miss.clone());
                    xk[v] = k as f32;
                    mk[v] = false;
                    let pk = r.prob(&xk, &mk) / pe;
                    let count = samples.chunks(nv).filter(|s| s[v] == k as f32).count() as f64;
                    // Bernstein bound at δ = 1e-9.
                    let l = (2e9f64).ln();
                    let t = l / 3.0 + (l * l / 9.0 + 2.0 * N as f64 * pk * (1.0 - pk) * l).sqrt();
                    assert!((count - N as f64 * pk).abs() <= t, "circuit {seed}, {label}: x{v} = {k} drawn {count} times of {N}, P = {pk}");
                }
            }
        }
    }
}

/// The same circuit over binary variables with Bernoulli leaves and with binomial leaves of one
/// trial: equal likelihoods, MPE and EM updates (bit for bit: every binomial term reduces to the
/// Bernoulli's), and conditionals up to rounding.
#[test]
fn a_binomial_of_one_trial_is_a_bernoulli() {
    let build = |dist: Dist| {
        let mut b = CircuitBuilder::new(3);
        let xs: Vec<_> = (0..3).map(|v| b.inputs(v, 2, 2, dist)).collect();
        let p = b.multiply(&xs);
        let s = b.summate(&[p], 1, 2, SumEdges::Dense);
        let root = b.summate(&[s], 1, 1, SumEdges::Dense);
        Model::random(b.finish(root).unwrap(), 9).unwrap()
    };
    let (bern, bin) = (build(Dist::Bernoulli), build(Dist::Binomial { num_trials: 1 }));
    assert_eq!(bern.params.input, bin.params.input, "the same random parameters");
    let values: Vec<f32> = (0..24 * 3).map(|i| ((i * 7 + i / 5) % 2) as f32).collect();
    let missing: Vec<bool> = (0..24 * 3).map(|i| i % 4 == 1).collect();
    let ev = Evidence::with_missing(3, values, Some(missing)).unwrap();
    let (mut a, mut b) = (bern.cpu_engine().unwrap(), bin.cpu_engine().unwrap());
    for step in 0..3 {
        let (la, lb) = (a.accumulate_flows(&ev, None).unwrap(), b.accumulate_flows(&ev, None).unwrap());
        assert_eq!(la, lb, "step {step}: log-likelihoods");
        a.em_step(0.7, 0.2).unwrap();
        b.em_step(0.7, 0.2).unwrap();
        assert_eq!(a.params(), b.params(), "step {step}: parameters after EM");
    }
    assert_eq!(a.mpe(&ev).unwrap(), b.mpe(&ev).unwrap());
    for (ca, cb) in a.conditionals(&ev).unwrap().iter().flatten().zip(b.conditionals(&ev).unwrap().iter().flatten()) {
        match (ca, cb) {
            (Conditional::Discrete(p), Conditional::Discrete(q)) => assert!(p.iter().zip(q).all(|(p, q)| (p - q).abs() < 1e-6), "{p:?} vs {q:?}"),
            _ => assert_eq!(ca, cb),
        }
    }
}

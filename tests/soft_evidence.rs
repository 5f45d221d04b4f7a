//! Soft evidence and data softening on the CPU engine against f64 brute force on random small
//! circuits: the likelihood of soft evidence is the mixture over completions
//! `Σ_x p(x) Π_v s_v(x_v)`, its flows and statistics are the posterior mixture of the hard ones
//! (`Σ_x w(x) counts(x) / Σ_x w(x)`), one-hot soft evidence is hard evidence, and softening is the
//! dense soft evidence it stands for.

use pcc_testkit as common;

use common::{Gen, Reference, categories, close, completions, random_evidence, row, sum_tensor_from_flat};
use pcc::codegen::{Model, Node};
use pcc::runtime::{Evidence, RuntimeError, Soft};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CIRCUITS: u64 = 30;

fn model(seed: u64) -> Model {
    Model::random(Gen::circuit(seed), 5000 + seed).expect("compiles")
}

/// Random dense soft evidence: per sample and variable a probability vector (some entries zero,
/// now and then all ones as for a missing value).
fn random_soft(cats: &[u32], n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for _ in 0..n {
        for &k in cats {
            let missing = rng.random_bool(0.15);
            let mut q: Vec<f32> = (0..k)
                .map(|_| {
                    if missing {
                        1.0
                    } else if rng.random_bool(0.2) {
                        0.0
                    } else {
                        rng.random_range(0.01..1.0)
                    }
                })
                .collect();
            if q.iter().all(|&p| p == 0.0) {
                q[0] = 0.5;
            }
            out.extend(q);
        }
    }
    out
}

/// The soft probability vector of sample `s`, variable `v`, from a dense row-major buffer.
fn soft_of(cats: &[u32], probs: &[f32], s: usize, v: usize) -> Vec<f64> {
    let row: usize = cats.iter().map(|&k| k as usize).sum();
    let off: usize = cats[..v].iter().map(|&k| k as usize).sum();
    probs[s * row + off..][..cats[v] as usize].iter().map(|&p| p as f64).collect()
}

/// Brute force for sample `s`: the soft likelihood and, per IR node, the expected counts.
fn brute(m: &Model, cats: &[u32], probs: &[f32], s: usize) -> (f64, Vec<Option<Vec<f64>>>) {
    let r = Reference::new(m);
    let all = completions(cats, &vec![0.0; cats.len()], &vec![true; cats.len()]);
    let mut z = 0.0;
    let mut counts: Vec<Option<Vec<f64>>> = vec![None; m.circuit.nodes.len()];
    for x in &all {
        let w: f64 = (0..cats.len()).map(|v| soft_of(cats, probs, s, v)[x[v] as usize]).product();
        if w == 0.0 {
            continue;
        }
        let g = r.grad(x, &vec![false; x.len()]);
        let wx = w * g.p;
        z += wx;
        for (i, c) in g.counts.iter().enumerate() {
            if let Some(c) = c {
                let acc = counts[i].get_or_insert_with(|| vec![0.0; c.len()]);
                acc.iter_mut().zip(c).for_each(|(a, c)| *a += wx * c);
            }
        }
    }
    for c in counts.iter_mut().flatten() {
        c.iter_mut().for_each(|a| *a /= z);
    }
    (z, counts)
}

/// The engine's statistics of IR node `i` in the reference's count shape.
fn engine_counts(m: &Model, flows: &pcc::runtime::Flows, i: usize, len: usize) -> Vec<f64> {
    match &m.circuit.nodes[i] {
        Node::Sum { .. } => sum_tensor_from_flat(m, i, &flows.sum),
        Node::Input { .. } => {
            let seg = m.plan.inputs.iter().flat_map(|l| &l.segments).find(|s| s.ir_node as usize == i).unwrap();
            flows.input[seg.flow_start as usize..][..len].to_vec()
        }
        Node::Product { .. } => unreachable!(),
    }
}

#[test]
fn soft_likelihood_and_flows_are_the_mixture_over_completions() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let cats = categories(&m);
        let n = 6;
        let probs = random_soft(&cats, n, 17 + seed);
        let ev = Evidence::new(cats.len(), vec![0.0; n * cats.len()]).unwrap().with_soft(Soft::dense(&m.plan.domains, probs.clone()).unwrap());
        let trace = m.cpu_engine().unwrap().trace(&ev, None).unwrap();
        let mut want: Vec<Option<Vec<f64>>> = vec![None; m.circuit.nodes.len()];
        for s in 0..n {
            let (z, counts) = brute(&m, &cats, &probs, s);
            let ll = trace.log_likelihoods[s] as f64;
            assert!(close(ll, z.ln(), 1e-5), "circuit {seed}, sample {s}: engine {ll}, mixture over completions {}", z.ln());
            for (i, c) in counts.into_iter().enumerate() {
                if let Some(c) = c {
                    let acc = want[i].get_or_insert_with(|| vec![0.0; c.len()]);
                    acc.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
                }
            }
        }
        for (i, want) in want.iter().enumerate() {
            let Some(want) = want else { continue };
            let got = engine_counts(&m, &trace.flows, i, want.len());
            for (j, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(close(*g, *w, 1e-4), "circuit {seed}, IR node {i}: expected count [{j}] engine {g}, brute force {w}");
            }
        }
    }
}

#[test]
fn one_hot_soft_evidence_is_hard_evidence() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let hard = random_evidence(&m, 10, 0.3, 300 + seed);
        let soft = Soft::one_hot(&m.plan, &hard.values, hard.missing.as_deref()).unwrap();
        let e = m.cpu_engine().unwrap();
        let a = e.trace(&hard, None).unwrap();
        let b = e.trace(&hard.clone().with_soft(soft), None).unwrap();
        for (x, y) in a.log_likelihoods.iter().zip(&b.log_likelihoods) {
            assert!(close(*x as f64, *y as f64, 1e-6), "circuit {seed}: hard {x}, one-hot soft {y}");
        }
        for (x, y) in a.flows.input.iter().chain(&a.flows.sum).zip(b.flows.input.iter().chain(&b.flows.sum)) {
            assert!(close(*x, *y, 1e-5), "circuit {seed}: hard flow {x}, one-hot soft flow {y}");
        }
    }
}

#[test]
fn softening_is_the_dense_soft_evidence_it_stands_for() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let cats = categories(&m);
        let hard = random_evidence(&m, 8, 0.2, 700 + seed);
        for beta in [0.9f32, 0.6, 1.0] {
            // s(k) = β at the observed value, (1 − β)/(K − 1) elsewhere; all ones where missing.
            let mut probs = Vec::new();
            for s in 0..hard.num_samples() {
                let (x, miss) = row(&hard, s);
                for (v, &k) in cats.iter().enumerate() {
                    let rest = (1.0 - beta) / (k - 1) as f32;
                    probs.extend((0..k).map(|c| {
                        if miss[v] {
                            1.0
                        } else if c as f32 == x[v] {
                            beta
                        } else {
                            rest
                        }
                    }));
                }
            }
            let e = m.cpu_engine().unwrap();
            let softened = e.trace(&hard.clone().with_soft(Soft::softened(beta).unwrap()), None).unwrap();
            let dense = e.trace(&hard.clone().with_soft(Soft::dense(&m.plan.domains, probs.clone()).unwrap()), None).unwrap();
            for s in 0..hard.num_samples() {
                let (x, y) = (softened.log_likelihoods[s] as f64, dense.log_likelihoods[s] as f64);
                assert!(close(x, y, 1e-5), "circuit {seed}, β={beta}, sample {s}: softened {x}, dense {y}");
                let (x, miss) = row(&hard, s);
                if !miss.iter().any(|&m| m) {
                    let z = brute(&m, &cats, &probs, s).0;
                    assert!(close(y, z.ln(), 1e-5), "circuit {seed}, β={beta}: dense {y}, brute {} ({x:?})", z.ln());
                }
            }
            for (a, b) in softened.flows.input.iter().chain(&softened.flows.sum).zip(dense.flows.input.iter().chain(&dense.flows.sum)) {
                assert!(close(*a, *b, 1e-4), "circuit {seed}, β={beta}: softened flow {a}, dense {b}");
            }
        }
    }
}

#[test]
fn softened_distribution_still_sums_to_one() {
    // Σ_x Σ_k s_x(k) p(k) = Σ_k p(k) (β + (K − 1)·(1 − β)/(K − 1)) = 1.
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let cats = categories(&m);
        let all = completions(&cats, &vec![0.0; cats.len()], &vec![true; cats.len()]);
        let ev = Evidence::new(cats.len(), all.concat()).unwrap().with_soft(Soft::softened(0.8).unwrap());
        let total: f64 = m.cpu_engine().unwrap().log_likelihood(&ev).unwrap().iter().map(|&l| (l as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "circuit {seed}: Σ softened p = {total}");
    }
}

#[test]
fn bad_soft_evidence_is_a_clear_error() {
    let m = model(0);
    let cats = categories(&m);
    let row: usize = cats.iter().map(|&k| k as usize).sum();
    let ev = |probs: Vec<f32>| Evidence::new(cats.len(), vec![0.0; cats.len()]).unwrap().with_soft(Soft::dense(&m.plan.domains, probs).unwrap());
    let e = m.cpu_engine().unwrap();
    let mut p = vec![0.5; row];
    p[0] = 1.5;
    assert!(matches!(e.log_likelihood(&ev(p)), Err(RuntimeError::SoftValue { sample: 0, var: 0, .. })));
    let mut p = vec![0.5; row];
    p[..cats[0] as usize].fill(0.0);
    assert!(matches!(e.log_likelihood(&ev(p)), Err(RuntimeError::SoftAllZero { sample: 0, var: 0 })));
    assert!(Soft::dense(&m.plan.domains, vec![0.5; row + 1]).is_err(), "ragged soft rows");
    assert!(matches!(Soft::softened(0.0), Err(RuntimeError::InvalidHyperParameter(_))));
    assert!(matches!(Soft::softened(f32::NAN), Err(RuntimeError::InvalidHyperParameter(_))));
    let soft = ev(vec![0.5; row]);
    assert!(matches!(e.mpe(&soft), Err(RuntimeError::SoftUnsupported { .. })));
    assert!(matches!(e.conditionals(&soft), Err(RuntimeError::SoftUnsupported { .. })));
}

//! The CPU engine against f64 brute force on 50 random small circuits (mixed block sizes,
//! block-sparse sums, several child vectors per sum, tying, Categorical and Bernoulli leaves, up
//! to 12 binary-equivalent variables).

use pcc_testkit as common;

use common::{Gen, Reference, categories, chi2_critical, close, completions, random_evidence, row, sum_tensor_from_flat};
use pcc::codegen::{Model, Node};
use pcc::runtime::plan::IrLocation;
use pcc::runtime::{Conditional, Evidence};

const CIRCUITS: u64 = 50;

fn model(seed: u64) -> Model {
    Model::random(Gen::circuit(seed), 1000 + seed).expect("compiles")
}

#[test]
fn probabilities_sum_to_one_and_match_reference() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let cats = categories(&m);
        let all = completions(&cats, &vec![0.0; cats.len()], &vec![true; cats.len()]);
        let ev = Evidence::new(cats.len(), all.concat()).unwrap();
        let lls = m.cpu_engine().unwrap().log_likelihood(&ev).unwrap();
        let r = Reference::new(&m);
        let total: f64 = lls.iter().map(|&l| (l as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "circuit {seed}: Σ p(x) = {total}");
        for (x, &ll) in all.iter().zip(&lls) {
            let p = r.prob(x, &vec![false; x.len()]);
            assert!(close(ll as f64, p.ln(), 1e-5), "circuit {seed}, x = {x:?}: engine {ll}, reference {}", p.ln());
        }
    }
}

#[test]
fn marginals_match_enumeration() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let cats = categories(&m);
        let ev = random_evidence(&m, 12, 0.4, seed);
        let lls = m.cpu_engine().unwrap().log_likelihood(&ev).unwrap();
        let r = Reference::new(&m);
        for (s, &ll) in lls.iter().enumerate() {
            let (x, miss) = row(&ev, s);
            let p: f64 = completions(&cats, &x, &miss).iter().map(|c| r.prob(c, &vec![false; c.len()])).sum();
            assert!(close(ll as f64, p.ln(), 1e-5), "circuit {seed}, sample {s}: engine {ll}, enumeration {}", p.ln());
        }
    }
}

#[test]
fn conditionals_match_enumeration() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let cats = categories(&m);
        let ev = random_evidence(&m, 8, 0.5, 77 + seed);
        let conds = m.cpu_engine().unwrap().conditionals(&ev).unwrap();
        let r = Reference::new(&m);
        for (s, cond) in conds.iter().enumerate() {
            let (x, miss) = row(&ev, s);
            let comps = completions(&cats, &x, &miss);
            let probs: Vec<f64> = comps.iter().map(|c| r.prob(c, &vec![false; c.len()])).collect();
            let z: f64 = probs.iter().sum();
            for (v, c) in cond.iter().enumerate() {
                match c {
                    Conditional::Observed => assert!(!miss[v]),
                    Conditional::Discrete(p) => {
                        assert!(miss[v]);
                        for (k, &pk) in p.iter().enumerate() {
                            let want: f64 = comps.iter().zip(&probs).filter(|(c, _)| c[v] == k as f32).map(|(_, p)| p).sum::<f64>() / z;
                            assert!((pk as f64 - want).abs() < 1e-4, "circuit {seed}, sample {s}, P(x{v}={k}|e): engine {pk}, enumeration {want}");
                        }
                    }
                    Conditional::Continuous { .. } => panic!("no continuous variables here"),
                }
            }
        }
    }
}

#[test]
fn mpe_matches_enumeration() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let cats = categories(&m);
        let ev = random_evidence(&m, 6, 0.5, 555 + seed);
        let res = m.cpu_engine().unwrap().mpe(&ev).unwrap();
        let r = Reference::new(&m);
        let nv = cats.len();
        for s in 0..ev.num_samples() {
            let (x, miss) = row(&ev, s);
            let best = completions(&cats, &x, &miss).iter().map(|c| r.max_product(c)).fold(0.0, f64::max);
            let got = res.log_values[s] as f64;
            assert!(close(got, best.ln(), 1e-5), "circuit {seed}, sample {s}: MPE value {got}, enumeration {}", best.ln());
            let a = &res.assignments[s * nv..][..nv];
            for v in 0..nv {
                if !miss[v] {
                    assert_eq!(a[v], x[v], "circuit {seed}: MPE changed observed variable {v}");
                }
            }
            let va = r.max_product(a).ln();
            assert!(close(va, best.ln(), 1e-5), "circuit {seed}, sample {s}: MPE assignment {a:?} scores {va}, best {}", best.ln());
        }
    }
}

#[test]
fn flows_equal_expected_counts() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let ev = random_evidence(&m, 16, 0.3, 99 + seed);
        let n = ev.num_samples();
        let weights: Vec<f32> = (0..n).map(|b| 0.5 + b as f32 / n as f32).collect();
        let trace = m.cpu_engine().unwrap().trace(&ev, Some(&weights)).unwrap();
        let r = Reference::new(&m);
        let c = &m.circuit;
        let mut in_product: Vec<bool> = vec![false; c.nodes.len()];
        for node in &c.nodes {
            if let Node::Product { children, .. } = node {
                children.iter().for_each(|ch| in_product[ch.index()] = true);
            }
        }
        let mut counts: Vec<Option<Vec<f64>>> = vec![None; c.nodes.len()];
        for (b, &w) in weights.iter().enumerate() {
            let (x, miss) = row(&ev, b);
            let g = r.grad(&x, &miss);
            let w = w as f64;
            assert!(close(trace.log_likelihoods[b] as f64, g.p.ln(), 1e-5));
            for (i, loc) in m.plan.ir_nodes.iter().enumerate() {
                let engine_flow = |k: usize| -> f64 {
                    match loc {
                        IrLocation::Input { node_start, .. } | IrLocation::Sum { node_start, .. } => {
                            trace.node_flows[(*node_start as usize + k) * n + b] as f64
                        }
                        IrLocation::Product { instances, .. } => {
                            instances.iter().map(|inst| trace.element_flows[inst.depth as usize][(inst.element_start as usize + k) * n + b] as f64).sum()
                        }
                        IrLocation::Unused => 0.0,
                    }
                };
                if matches!(loc, IrLocation::Product { .. }) && in_product[i] {
                    continue; // inlined into its parent product: no buffer of its own
                }
                for (k, &f) in g.flows[i].iter().enumerate() {
                    let got = engine_flow(k);
                    assert!(
                        close(got, w * f, 1e-4),
                        "circuit {seed}, sample {b}, IR node {i} ({}) node {k}: flow {got}, reference {}",
                        c.nodes[i].kind_name(),
                        w * f
                    );
                }
            }
            for (i, cnt) in g.counts.iter().enumerate() {
                if let Some(cnt) = cnt {
                    let acc = counts[i].get_or_insert_with(|| vec![0.0; cnt.len()]);
                    acc.iter_mut().zip(cnt).for_each(|(a, c)| *a += w * c);
                }
            }
        }
        for (i, want) in counts.iter().enumerate() {
            let Some(want) = want else { continue };
            let got: Vec<f64> = match &c.nodes[i] {
                Node::Sum { .. } => sum_tensor_from_flat(&m, i, &trace.flows.sum),
                Node::Input { .. } => {
                    let seg = m.plan.inputs.iter().flat_map(|l| &l.segments).find(|s| s.ir_node as usize == i).unwrap();
                    trace.flows.input[seg.flow_start as usize..][..want.len()].to_vec()
                }
                Node::Product { .. } => unreachable!(),
            };
            for (j, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(close(*g, *w, 1e-4), "circuit {seed}, IR node {i}: expected count [{j}] engine {g}, reference {w}");
            }
        }
    }
}

/// Closed-form EM update of every parameter tensor from summed expected counts.
fn closed_form_em(m: &Model, ev: &Evidence, eta: f64, alpha: f64) -> Vec<(String, Vec<f64>)> {
    let r = Reference::new(m);
    let c = &m.circuit;
    let mut counts: Vec<Option<Vec<f64>>> = vec![None; c.nodes.len()];
    for b in 0..ev.num_samples() {
        let (x, miss) = row(ev, b);
        for (i, cnt) in r.grad(&x, &miss).counts.into_iter().enumerate() {
            if let Some(cnt) = cnt {
                let acc = counts[i].get_or_insert_with(|| vec![0.0; cnt.len()]);
                acc.iter_mut().zip(&cnt).for_each(|(a, c)| *a += c);
            }
        }
    }
    let mut out = Vec::new();
    for spec in &m.plan.tensors {
        let i = spec.ir_node as usize;
        let old: Vec<f64> = m.params.extract(spec).iter().map(|&v| v as f64).collect();
        let cnt = counts[i].as_ref().unwrap();
        let new: Vec<f64> = match &c.nodes[i] {
            Node::Sum { edges, block_size, .. } => {
                let (bs, cbs) = (spec.shape[1], spec.shape[2]);
                let nb = edges.iter().map(|e| e[0] as usize + 1).max().unwrap();
                let mut total = vec![0.0; nb * *block_size as usize];
                let mut width = vec![0usize; nb * *block_size as usize];
                for (e, &[blk, _]) in edges.iter().enumerate() {
                    for mm in 0..bs {
                        total[blk as usize * bs + mm] += cnt[(e * bs + mm) * cbs..][..cbs].iter().sum::<f64>();
                        width[blk as usize * bs + mm] += cbs;
                    }
                }
                let mut new = vec![0.0; old.len()];
                for (e, &[blk, _]) in edges.iter().enumerate() {
                    for mm in 0..bs {
                        let row = blk as usize * bs + mm;
                        for k in 0..cbs {
                            let t = (e * bs + mm) * cbs + k;
                            new[t] = (cnt[t] + alpha / width[row] as f64) / (total[row] + alpha);
                        }
                    }
                }
                new
            }
            Node::Input { dist: pcc::codegen::Dist::Bernoulli, .. } => cnt.chunks(2).map(|s| (s[1] + alpha / 2.0) / (s[0] + s[1] + alpha)).collect(),
            Node::Input { .. } => {
                let k = spec.shape[1];
                cnt.chunks(k)
                    .flat_map(|s| {
                        let t: f64 = s.iter().sum::<f64>() + alpha;
                        s.iter().map(move |c| (c + alpha / k as f64) / t).collect::<Vec<_>>()
                    })
                    .collect()
            }
            Node::Product { .. } => unreachable!(),
        };
        out.push((spec.name.clone(), old.iter().zip(&new).map(|(o, n)| (1.0 - eta) * o + eta * n).collect()));
    }
    out
}

#[test]
fn em_step_equals_closed_form_update() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let ev = random_evidence(&m, 40, 0.2, 4242 + seed);
        for (eta, alpha) in [(1.0, 0.1), (0.3, 0.5)] {
            let want = closed_form_em(&m, &ev, eta, alpha);
            let mut e = m.cpu_engine().unwrap();
            e.accumulate_flows(&ev.slice(0, 25), None).unwrap();
            e.accumulate_flows(&ev.slice(25, 40), None).unwrap();
            e.em_step(eta as f32, alpha as f32).unwrap();
            assert!(e.flows().sum.iter().all(|&f| f == 0.0), "flows are consumed by the EM step");
            for ((name, w), spec) in want.iter().zip(&m.plan.tensors) {
                let got = e.params().extract(spec);
                for (j, (g, w)) in got.iter().zip(w).enumerate() {
                    assert!((*g as f64 - w).abs() < 2e-5, "circuit {seed}, η={eta}, α={alpha}, {name}[{j}]: engine {g}, closed form {w}");
                }
            }
        }
    }
}

#[test]
fn full_batch_em_never_decreases_likelihood() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let ev = random_evidence(&m, 60, 0.1, 31337 + seed);
        let mut e = m.cpu_engine().unwrap();
        let mut prev = f64::NEG_INFINITY;
        for step in 0..20 {
            let ll: f64 = e.accumulate_flows(&ev, None).unwrap().iter().map(|&l| l as f64).sum();
            assert!(ll >= prev - 1e-5 * prev.abs(), "circuit {seed}, step {step}: LL fell from {prev} to {ll}");
            prev = ll;
            e.em_step(1.0, 0.0).unwrap();
        }
    }
}

/// χ² goodness of fit of sampled frequencies on (up to) the first three variables.
fn chi_square(samples: &[f32], nv: usize, expected: &dyn Fn(&[f32]) -> f64, cats: &[u32]) -> (f64, usize) {
    let vars: Vec<usize> = (0..nv.min(3)).collect();
    let n = samples.len() / nv;
    let cells = completions(&vars.iter().map(|&v| cats[v]).collect::<Vec<_>>(), &[0.0; 3][..vars.len()], &[true; 3][..vars.len()]);
    let mut stat = 0.0;
    let (mut pooled_obs, mut pooled_exp, mut df) = (0.0, 0.0, 0usize);
    for cell in &cells {
        let obs = samples.chunks(nv).filter(|s| vars.iter().zip(cell).all(|(&v, &c)| s[v] == c)).count() as f64;
        let exp = expected(cell) * n as f64;
        if exp < 5.0 {
            pooled_obs += obs;
            pooled_exp += exp;
        } else {
            stat += (obs - exp).powi(2) / exp;
            df += 1;
        }
    }
    if pooled_exp > 0.0 {
        stat += (pooled_obs - pooled_exp).powi(2) / pooled_exp.max(1e-9);
        df += 1;
    }
    (stat, df.saturating_sub(1).max(1))
}

#[test]
fn sample_frequencies_pass_chi_square() {
    const N: usize = 4000;
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let cats = categories(&m);
        let nv = cats.len();
        let e = m.cpu_engine().unwrap();
        let r = Reference::new(&m);
        let marginal = |cell: &[f32], x: &[f32], miss: &[bool]| {
            let mut x = x.to_vec();
            let mut miss = miss.to_vec();
            for (v, &c) in cell.iter().enumerate() {
                x[v] = c;
                miss[v] = false;
            }
            r.prob(&x, &miss)
        };
        // Unconditional.
        let samples = e.sample(N, 2024 + seed).unwrap();
        assert_eq!(samples, e.sample(N, 2024 + seed).unwrap(), "sampling is deterministic for a seed");
        let free = vec![true; nv];
        let (stat, df) = chi_square(&samples, nv, &|cell| marginal(cell, &vec![0.0; nv], &free), &cats);
        assert!(stat < chi2_critical(df), "circuit {seed}: unconditional χ² = {stat:.1} with {df} df (critical {:.1})", chi2_critical(df));
        // Conditional on the last variable.
        let last = nv - 1;
        let mut x = vec![0.0; nv];
        x[last] = (seed % cats[last] as u64) as f32;
        let mut miss = vec![true; nv];
        miss[last] = false;
        let ev = Evidence::with_missing(nv, x.repeat(N), Some(miss.repeat(N))).unwrap();
        let cs = e.sample_conditional(&ev, 7 + seed).unwrap();
        assert!(cs.chunks(nv).all(|s| s[last] == x[last]), "evidence is kept");
        let pe = r.prob(&x, &miss);
        let cond = |cell: &[f32]| {
            if cell.len() > last && cell[last] != x[last] {
                return 0.0; // contradicts the evidence
            }
            marginal(&cell[..cell.len().min(last)], &x, &miss) / pe
        };
        let (stat, df) = chi_square(&cs, nv, &cond, &cats);
        assert!(stat < chi2_critical(df), "circuit {seed}: conditional χ² = {stat:.1} with {df} df (critical {:.1})", chi2_critical(df));
    }
}

//! HCLT: mutual information, the Chow–Liu tree against brute force, the centre root, closed-form
//! sizes and determinism.

use pcc::codegen::structures::hclt::{self, HcltOptions, MiOptions};
use pcc::codegen::{Node, compile};
use pcc::runtime::Evidence;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Binary data with a chain of noisy copies (so MI differs between pairs), plus noise variables.
fn chain_data(v: usize, n: usize, seed: u64) -> Evidence {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let flip: Vec<f64> = (0..v).map(|_| rng.random_range(0.05..0.45)).collect();
    let mut values = Vec::with_capacity(n * v);
    for _ in 0..n {
        let mut prev = rng.random_bool(0.5);
        for f in &flip {
            let x = if rng.random_bool(*f) { !prev } else { prev };
            values.push(x as u8 as f32);
            prev = x;
        }
    }
    Evidence::new(v, values).unwrap()
}

fn mi_by_counting(ev: &Evidence, i: usize, j: usize, k: usize) -> f64 {
    let n = ev.num_samples();
    let mut joint = vec![0.0; k * k];
    for s in 0..n {
        joint[ev.value(s, i) as usize * k + ev.value(s, j) as usize] += 1.0 / n as f64;
    }
    let pi: Vec<f64> = (0..k).map(|a| (0..k).map(|c| joint[a * k + c]).sum()).collect();
    let pj: Vec<f64> = (0..k).map(|c| (0..k).map(|a| joint[a * k + c]).sum()).collect();
    let mut mi = 0.0;
    for a in 0..k {
        for c in 0..k {
            let p = joint[a * k + c];
            if p > 0.0 {
                mi += p * (p / (pi[a] * pj[c])).ln();
            }
        }
    }
    mi
}

#[test]
fn exact_mutual_information_matches_counting() {
    let ev = chain_data(5, 3000, 1);
    let mi = hclt::mutual_information(&ev, &MiOptions::default()).unwrap();
    for i in 0..5 {
        assert_eq!(mi[i * 5 + i], 0.0);
        for j in 0..5 {
            if i != j {
                let want = mi_by_counting(&ev, i, j, 2);
                assert!((mi[i * 5 + j] - want).abs() < 1e-5, "MI({i},{j}) = {} vs {want}", mi[i * 5 + j]);
            }
        }
    }
}

/// All labelled trees on `v` vertices via Prüfer sequences.
fn all_trees(v: usize) -> Vec<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    let total = v.pow(v as u32 - 2);
    for code in 0..total {
        let mut seq: Vec<usize> = (0..v - 2).map(|i| code / v.pow(i as u32) % v).collect();
        let mut degree = vec![1usize; v];
        seq.iter().for_each(|&s| degree[s] += 1);
        let mut edges = Vec::new();
        for s in seq.drain(..) {
            let leaf = (0..v).find(|&u| degree[u] == 1).unwrap();
            edges.push((leaf.min(s) as u32, leaf.max(s) as u32));
            degree[leaf] -= 1;
            degree[s] -= 1;
        }
        let rest: Vec<usize> = (0..v).filter(|&u| degree[u] == 1).collect();
        edges.push((rest[0] as u32, rest[1] as u32));
        edges.sort_unstable();
        out.push(edges);
    }
    out
}

#[test]
fn chow_liu_tree_is_the_brute_force_maximum_spanning_tree() {
    for seed in 0..6 {
        let v = 4 + seed as usize % 3;
        // Random (not chain-ordered) dependencies: permute the chain's columns.
        let base = chain_data(v, 2000, 10 + seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut perm: Vec<usize> = (0..v).collect();
        for i in (1..v).rev() {
            perm.swap(i, rng.random_range(0..=i));
        }
        let values = (0..base.num_samples()).flat_map(|s| perm.iter().map(move |&p| (s, p))).map(|(s, p)| base.value(s, p)).collect();
        let ev = Evidence::new(v, values).unwrap();
        let mi = hclt::mutual_information(&ev, &MiOptions::default()).unwrap();
        let weight = |t: &[(u32, u32)]| t.iter().map(|&(a, b)| mi[a as usize * v + b as usize]).sum::<f64>();
        let best = all_trees(v).into_iter().max_by(|a, b| weight(a).total_cmp(&weight(b))).unwrap();
        let tree = hclt::chow_liu(&ev, &MiOptions::default()).unwrap();
        assert_eq!(tree.edges, best, "seed {seed}: Prim's tree has weight {}, brute force {}", weight(&tree.edges), weight(&best));
    }
}

#[test]
fn root_is_the_tree_centre() {
    // A path 0-1-2-3-4: the centre is 2.
    assert_eq!(hclt::tree_center(5, &[(0, 1), (1, 2), (2, 3), (3, 4)]), 2);
    // A path of even length has two centres; the first is taken.
    assert_eq!(hclt::tree_center(4, &[(0, 1), (1, 2), (2, 3)]), 1);
    // A star: the hub.
    assert_eq!(hclt::tree_center(5, &[(0, 3), (1, 3), (2, 3), (3, 4)]), 3);
}

#[test]
fn sizes_match_closed_form() {
    for (v, l, tie) in [(6usize, 4u32, false), (9, 8, false), (7, 16, true), (5, 3, false)] {
        let ev = chain_data(v, 500, v as u64);
        let opts = HcltOptions { latents: l, tie_inputs: tie, ..HcltOptions::default() };
        let c = hclt::learn(&ev, &opts).unwrap();
        let tree = hclt::chow_liu(&ev, &opts.mi).unwrap();
        let inner = tree.children.iter().enumerate().filter(|(u, ch)| !ch.is_empty() && *u as u32 != tree.root).count() as u64;
        let nonleaf = inner + 1;
        let (l64, v64) = (l as u64, v as u64);
        assert_eq!(c.nodes.len() as u64, v64 + 2 * nonleaf, "V={v}, L={l}: node vectors");
        let edges = inner * l64 * l64 + l64;
        assert_eq!(c.num_sum_edges(), edges, "V={v}, L={l}: sum edges");
        let plan = compile(&c).unwrap();
        assert_eq!(plan.num_sum_edges(), edges);
        let leaf_params = if tie { l64 } else { v64 * l64 }; // Bernoulli: one parameter per leaf
        assert_eq!(plan.num_learnable_params(), edges + leaf_params, "V={v}, L={l}: parameters");
        let bs = c.nodes.iter().find(|n| matches!(n, Node::Input { .. })).unwrap().block_size();
        assert_eq!(bs, 1 << l.trailing_zeros(), "block size is the largest power of two dividing L");
    }
}

#[test]
fn learning_is_deterministic() {
    let ev = chain_data(8, 800, 3);
    let opts = HcltOptions { latents: 4, ..HcltOptions::default() };
    assert_eq!(hclt::learn(&ev, &opts).unwrap(), hclt::learn(&ev, &opts).unwrap());
}

#[test]
fn soft_binning_ranks_dependent_pairs_above_independent_ones() {
    // 256-level data: x1 = x0 + small noise, x2 independent.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut values = Vec::new();
    for _ in 0..2000 {
        let a: f32 = rng.random_range(0..256) as f32;
        let b = (a + rng.random_range(-8..=8) as f32).clamp(0.0, 255.0);
        values.extend([a, b, rng.random_range(0..256) as f32]);
    }
    let ev = Evidence::new(3, values).unwrap();
    let mi = hclt::mutual_information(&ev, &MiOptions::default()).unwrap();
    assert!(mi.iter().all(|&m| m >= 0.0));
    assert!(mi[1] > 10.0 * mi[2], "MI(0,1) = {}, MI(0,2) = {}", mi[1], mi[2]);
    assert_eq!(mi[1], mi[3]);
    let c = hclt::learn(&ev, &HcltOptions { latents: 2, ..HcltOptions::default() }).unwrap();
    let Node::Input { dist, .. } = &c.nodes[0] else { panic!() };
    assert_eq!(*dist, pcc::codegen::Dist::Categorical { num_cats: 256 });
}

#[test]
fn learning_rejects_bad_data() {
    let ev = Evidence::with_missing(2, vec![0.0, 1.0], Some(vec![false, true])).unwrap();
    let err = hclt::learn(&ev, &HcltOptions::default()).unwrap_err();
    assert!(matches!(err, hclt::LearnError::MissingValue { sample: 0, var: 1 }), "{err}");
    let ev = Evidence::new(2, vec![0.5, 1.0]).unwrap();
    assert!(matches!(hclt::learn(&ev, &HcltOptions::default()).unwrap_err(), hclt::LearnError::NotDiscrete { .. }));
    let ev = Evidence::new(2, vec![0.0, 1.0]).unwrap();
    let err = hclt::learn(&ev, &HcltOptions { latents: 6, block_size: Some(4), ..HcltOptions::default() }).unwrap_err();
    assert!(matches!(err, hclt::LearnError::BadBlockSize { .. }), "{err}");
}

#[test]
fn a_mixture_of_trees_is_k_hclts_under_one_root() {
    let ev = chain_data(7, 600, 11);
    let (l, k) = (4u32, 3u32);
    let one = hclt::learn(&ev, &HcltOptions { latents: l, ..HcltOptions::default() }).unwrap();
    let mix = hclt::learn(&ev, &HcltOptions { latents: l, trees: k, ..HcltOptions::default() }).unwrap();
    // Each tree's sums below the root, plus one root over all K·L root products.
    let below = one.num_sum_edges() - l as u64;
    assert!(mix.num_sum_edges() <= k as u64 * below + (k * l) as u64, "{} edges", mix.num_sum_edges());
    assert!(mix.num_sum_edges() > below + (k * l) as u64, "the bootstrap trees add their own sums");
    let Node::Sum { children, .. } = &mix.nodes[mix.root.index()] else { panic!("the root is a sum") };
    assert_eq!(children.len(), k as usize, "one root product vector per tree");
    // Normalized with random parameters: a valid distribution over the 2^7 states.
    let m = pcc::codegen::Model::random(mix.clone(), 1).unwrap();
    let all: Vec<f32> = (0..128u32).flat_map(|x| (0..7).map(move |v| ((x >> v) & 1) as f32)).collect();
    let total: f64 = m.cpu_engine().unwrap().log_likelihood(&Evidence::new(7, all).unwrap()).unwrap().iter().map(|&l| (l as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-5, "Σ p = {total}");
    assert_eq!(mix, hclt::learn(&ev, &HcltOptions { latents: l, trees: k, ..HcltOptions::default() }).unwrap(), "deterministic");
    // One tree is the plain HCLT.
    assert_eq!(one, hclt::learn(&ev, &HcltOptions { latents: l, trees: 1, ..HcltOptions::default() }).unwrap());
}

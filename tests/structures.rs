//! Structure generators (PD, RAT-SPN, HMM): node-vector, edge and parameter counts against closed
//! forms; validity, normalization and agreement with the independent IR evaluator on tiny
//! instances; the HMM against the textbook forward algorithm; determinism in the seed.

use pcc_testkit as common;

use common::{Reference, categories, completions};
use pcc::codegen::structures::{hmm, pd, rat_spn};
use pcc::codegen::{Circuit, CircuitError, Dist, Model, Node, NodeId, compile};
use pcc::runtime::Evidence;
use pcc::runtime::plan::IrLocation;

/// Expected (node vectors, scalar sum edges, learnable parameters) of a circuit.
#[derive(Debug, PartialEq)]
struct Counts {
    vectors: usize,
    edges: u64,
    params: u64,
}

/// Checks the counts on the IR and on the compiled plan, and that every vector is used.
fn check_counts(what: &str, c: &Circuit, want: Counts) {
    let plan = compile(c).unwrap();
    let got = Counts { vectors: c.nodes.len(), edges: c.num_sum_edges(), params: plan.num_learnable_params() };
    assert_eq!(got, want, "{what}");
    assert_eq!(plan.num_sum_edges(), want.edges, "{what}: plan sum edges");
    assert!(plan.ir_nodes.iter().all(|l| !matches!(l, IrLocation::Unused)), "{what}: unreachable node vectors");
}

/// Σ_x p(x) by enumeration with the CPU engine, and every p(x) against the f64 IR evaluator.
fn check_normalized(what: &str, c: Circuit, seed: u64) {
    let m = Model::random(c, seed).unwrap();
    let cats = categories(&m);
    let n = cats.len();
    let all = completions(&cats, &vec![0.0; n], &vec![true; n]);
    let values: Vec<f32> = all.concat();
    let lls = m.cpu_engine().unwrap().log_likelihood(&Evidence::new(n, values).unwrap()).unwrap();
    let total: f64 = lls.iter().map(|&l| (l as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-4, "{what}: Σ p = {total}");
    let reference = Reference::new(&m);
    for (x, &ll) in all.iter().zip(&lls) {
        let want = reference.prob(x, &vec![false; n]).ln();
        assert!((ll as f64 - want).abs() < 1e-4, "{what}: x = {x:?}: {ll} vs {want}");
    }
}

// ------------------------------------------------------------------------------------------ PD

/// PD over an `(a·s) x (b·s)` image cut every `s` pixels on both axes, without a depth limit.
/// Every sub-rectangle of the `a x b` grid of `s x s` cells is a region; a `p x q`-cell region
/// has `(p-1) + (q-1)` cuts and `(a-p+1)(b-q+1)` placements.
/// * one input vector per pixel;
/// * a one-cell region: a product of its pixels and a block-diagonal sum (`L·bs` edges);
/// * another non-root region with `P` cuts: `P` products and a sum with
///   `c = max(nb·min(P, k), P)` (sum block, cut) pairs, each `nb` blocks of `bs x bs`: `c·L·bs`;
/// * the root: `P` products and a 1-node sum over them (`P·L` edges) — or, for a single cell,
///   the pixels' product and a 1-node sum over it (`L` edges).
///
/// Parameters: every sum edge (nothing is tied) plus `H·W·L·K` leaf parameters.
fn pd_counts(a: u64, b: u64, s: u64, l: u64, bs: u64, k: u64, leaf_params: u64) -> Counts {
    let nb = l / bs;
    let pixels = a * s * b * s;
    let (mut vectors, mut edges) = (pixels, 0);
    for p in 1..=a {
        for q in 1..=b {
            let n = (a - p + 1) * (b - q + 1);
            let cuts = (p - 1) + (q - 1);
            if p == a && q == b {
                vectors += cuts.max(1) + 1;
                edges += cuts.max(1) * l;
            } else if cuts == 0 {
                vectors += 2 * n;
                edges += n * l * bs;
            } else {
                vectors += n * (cuts + 1);
                edges += n * (nb * cuts.min(k)).max(cuts) * l * bs;
            }
        }
    }
    Counts { vectors: vectors as usize, edges, params: edges + pixels * l * leaf_params }
}

fn pd_opts(h: u32, w: u32, s: u32, latents: u32, input: Dist) -> pd::PdOptions {
    pd::PdOptions { height: h, width: w, split_intervals: (s, s), latents, input, ..Default::default() }
}

#[test]
fn pd_closed_form_4x4_by_hand() {
    // 4 cells of 2x2 pixels: 16 inputs; 4 cells x (product + diagonal sum) = 8; four 1x2/2x1
    // regions x (one product + sum) = 8; root: 2 products + sum = 3. Edges with L = bs = 4:
    // cells 4·4·4 = 64, half-images 4·4² = 64, root 2·4 = 8.
    let c = pd::build(&pd_opts(4, 4, 2, 4, Dist::Bernoulli)).unwrap();
    let want = Counts { vectors: 35, edges: 136, params: 136 + 16 * 4 };
    assert_eq!(pd_counts(2, 2, 2, 4, 4, 4, 1), want);
    check_counts("PD 4x4 / 2", &c, want);
}

#[test]
fn pd_counts_match_closed_form() {
    let cat = |k| Dist::Categorical { num_cats: k };
    // (a, b, s, L, block size override, k, dist)
    type Case = (u32, u32, u32, u32, Option<u32>, u32, Dist);
    let cases: &[Case] = &[
        (2, 2, 2, 4, None, 4, Dist::Bernoulli),
        (3, 2, 2, 8, None, 4, cat(3)),
        (4, 4, 2, 8, Some(2), 4, Dist::Bernoulli), // nb = 4: 5-cut regions are sparse, 4 cuts/block
        (4, 4, 2, 8, Some(4), 1, Dist::Bernoulli), // nb = 2 < cuts/k: coverage forces c = P
        (4, 3, 1, 6, None, 2, cat(4)),             // L = 6: bs 2, nb 3
        (5, 4, 1, 48, None, 4, cat(2)),            // L = 48: bs 16, nb 3
        (3, 3, 3, 4, Some(1), 3, Dist::Bernoulli),
        (1, 1, 3, 4, None, 4, Dist::Bernoulli), // a single cell: the whole image is atomic
    ];
    for &(a, b, s, l, bs, k, dist) in cases {
        let opts = pd::PdOptions { block_size: bs, max_prod_block_conns: k, seed: 5, ..pd_opts(a * s, b * s, s, l, dist) };
        let bs = opts.effective_block_size();
        let want = pd_counts(a as u64, b as u64, s as u64, l as u64, bs as u64, k as u64, dist.num_params() as u64);
        check_counts(&format!("PD {opts:?}"), &pd::build(&opts).unwrap(), want);
    }
}

#[test]
fn pd_block_size_rule_follows_pyjuice() {
    for (l, bs) in [(1, 1), (6, 2), (16, 16), (32, 16), (48, 16), (64, 32), (256, 32), (96, 32)] {
        assert_eq!(pd_opts(2, 2, 1, l, Dist::Bernoulli).effective_block_size(), bs, "L = {l}");
    }
    let c = pd::build(&pd_opts(4, 4, 2, 64, Dist::Bernoulli)).unwrap();
    assert!(c.nodes.iter().all(|n| n.block_size() == 32 || n.num_nodes() == 1), "every vector in blocks of 32 but the root");
    assert!(c.nodes.iter().filter(|n| n.num_nodes() == 64).all(|n| n.num_blocks() == 2));
}

#[test]
fn pd_max_split_depth() {
    // Depth 1 on a 4x4 image cut every pixel: the image is cut 6 ways into 12 distinct strips
    // (3 top, 3 bottom, 3 left, 3 right), each atomic with its own inputs (6 cuts x 16 pixels).
    let l = 4u64;
    for (depth, want) in [
        (0, Counts { vectors: 16 + 2, edges: l, params: l + 16 * l }),
        (1, Counts { vectors: 96 + 12 * 2 + 6 + 1, edges: 12 * l * l + 6 * l, params: 12 * l * l + 6 * l + 96 * l }),
    ] {
        let opts = pd::PdOptions { max_split_depth: Some(depth), ..pd_opts(4, 4, 1, l as u32, Dist::Bernoulli) };
        check_counts(&format!("PD depth {depth}"), &pd::build(&opts).unwrap(), want);
    }
    // Depth 2, by 1-D intervals of [0, 4) with i inner ends: i = 0: 1 interval, total length 4;
    // i = 1: 6 intervals, length 12; i = 2: 3 intervals, length 4. A rectangle's depth is
    // i_rows + i_cols; those of depth 2 are atomic (inputs = area): (0,2): 3 of area 16 in all,
    // (1,1): 36 of area 144, (2,0): 3 of area 16 -> 42 regions, 176 inputs. Depth 1: (0,1) and
    // (1,0), 12 regions with (len_r - 1) + (len_c - 1) cuts: 6·3 + 1·6 = 24 each way, 48 in all
    // (nb = 1, so every cut is used once). Root: 6 cuts. With L = bs = 2 (Bernoulli):
    // vectors 176 + 42·2 + 12 + 48 + 6 + 1 = 327; edges 42·L·bs + 48·L·bs + 6·L = 372.
    let opts = pd::PdOptions { max_split_depth: Some(2), ..pd_opts(4, 4, 1, 2, Dist::Bernoulli) };
    check_counts("PD depth 2", &pd::build(&opts).unwrap(), Counts { vectors: 327, edges: 372, params: 372 + 176 * 2 });
    // No limit from depth 5 on (a rectangle has at most 4 inner sides); at depth 4 the inner
    // rectangles with cut points (e.g. rows 1..2 x columns 1..3) stay atomic.
    let inputs = |d: Option<u32>| {
        let c = pd::build(&pd::PdOptions { max_split_depth: d, ..pd_opts(4, 4, 1, 2, Dist::Bernoulli) }).unwrap();
        c.nodes.iter().filter(|n| matches!(n, Node::Input { .. })).count()
    };
    assert!(inputs(Some(4)) > 16);
    assert_eq!(inputs(Some(5)), 16);
    assert_eq!(inputs(None), 16);
    let c5 = pd::build(&pd::PdOptions { max_split_depth: Some(5), ..pd_opts(4, 4, 1, 2, Dist::Bernoulli) }).unwrap();
    assert_eq!(c5, pd::build(&pd_opts(4, 4, 1, 2, Dist::Bernoulli)).unwrap());
}

#[test]
fn pd_uneven_images_and_intervals_are_valid() {
    for (h, w, si, l) in [(5, 3, (2, 2), 4), (7, 1, (3, 1), 2), (1, 6, (1, 4), 8), (3, 3, (0, 1), 2), (2, 5, (0, 0), 2)] {
        let opts = pd::PdOptions { height: h, width: w, split_intervals: si, latents: l, input: Dist::Bernoulli, ..Default::default() };
        let c = pd::build(&opts).unwrap();
        assert_eq!(c.num_vars, h * w);
        compile(&c).unwrap();
    }
}

#[test]
fn pd_normalizes() {
    check_normalized("PD 2x2", pd::build(&pd_opts(2, 2, 1, 2, Dist::Bernoulli)).unwrap(), 1);
    // 2x3 with one cut per sum block and 4 blocks of 1: sparse sums everywhere with >1 cut.
    let sparse = pd::PdOptions { max_prod_block_conns: 1, block_size: Some(1), ..pd_opts(2, 3, 1, 4, Dist::Bernoulli) };
    let c = pd::build(&sparse).unwrap();
    let dense_edges = pd::build(&pd::PdOptions { max_prod_block_conns: 4, ..sparse.clone() }).unwrap().num_sum_edges();
    assert!(c.num_sum_edges() < dense_edges);
    check_normalized("PD 2x3 sparse", c, 2);
    check_normalized("PD 2x2 categorical", pd::build(&pd_opts(2, 2, 1, 3, Dist::Categorical { num_cats: 3 })).unwrap(), 3);
    check_normalized("PD 3x1 / depth 1", pd::build(&pd::PdOptions { max_split_depth: Some(1), ..pd_opts(3, 1, 1, 2, Dist::Bernoulli) }).unwrap(), 4);
}

#[test]
fn pd_is_deterministic_in_the_seed() {
    let opts = pd::PdOptions { block_size: Some(2), seed: 11, ..pd_opts(8, 8, 2, 8, Dist::Bernoulli) };
    let c = pd::build(&opts).unwrap();
    assert_eq!(c, pd::build(&opts).unwrap());
    let other = pd::build(&pd::PdOptions { seed: 12, ..opts.clone() }).unwrap();
    assert_ne!(c, other, "the sparse sums' connections depend on the seed");
    assert_eq!(c.num_sum_edges(), other.num_sum_edges());
    // Without sparse sums there is no randomness.
    let dense = pd::PdOptions { max_prod_block_conns: 100, ..opts.clone() };
    assert_eq!(pd::build(&dense).unwrap(), pd::build(&pd::PdOptions { seed: 99, ..dense }).unwrap());
}

// ------------------------------------------------------------------------------------- RAT-SPN

/// RAT-SPN over `N = m·p^D` variables (`p` pieces, `D` effective levels, `R` repetitions):
/// `(p^D − 1)/(p − 1)` inner regions per repetition, each a product; all but the top one also an
/// `L x L` sum; `p^D` leaf regions of `m` variables, each a product and an `L x L` sum when
/// `m > 1` (a single variable is its input vector); one shared input vector per variable; the
/// root mixes the `R` top products (`R·L` edges).
fn rat_counts(n: u64, p: u64, d: u32, r: u64, l: u64, leaf_params: u64) -> Counts {
    let leaves = p.pow(d);
    let m = n / leaves;
    assert_eq!(m * leaves, n);
    let inner = (leaves - 1) / (p - 1);
    let leaf_vectors = if m > 1 { 2 * leaves } else { 0 };
    let (vectors, edges) = if d == 0 {
        (n + r + 1, r * l)
    } else {
        let sums = (inner - 1) + if m > 1 { leaves } else { 0 };
        (n + r * (inner + (inner - 1) + leaf_vectors) + 1, r * sums * l * l + r * l)
    };
    Counts { vectors: vectors as usize, edges, params: edges + n * l * leaf_params }
}

#[test]
fn rat_spn_counts_match_closed_form() {
    let cat = |k| Dist::Categorical { num_cats: k };
    // (N, pieces, depth option, effective depth, R, L, dist)
    let cases: &[(u32, u32, u32, u32, u32, u32, Dist)] = &[
        (4, 2, 2, 2, 3, 4, Dist::Bernoulli),
        (4, 2, 7, 2, 2, 4, Dist::Bernoulli), // depth beyond single variables
        (8, 2, 1, 1, 2, 8, cat(3)),          // leaves of 4 variables
        (16, 2, 2, 2, 4, 32, cat(5)),
        (12, 2, 2, 2, 1, 6, Dist::Bernoulli), // L = 6: 3 blocks of 2
        (9, 3, 2, 2, 2, 4, Dist::Bernoulli),
        (18, 3, 1, 1, 3, 4, cat(2)),
        (5, 2, 0, 0, 3, 4, Dist::Bernoulli), // no split: R products of all inputs
    ];
    for &(n, p, depth, eff, r, l, dist) in cases {
        let opts = rat_spn::RatSpnOptions { num_vars: n, latents: l, depth, num_repetitions: r, num_pieces: p, input: dist, block_size: None, seed: 3 };
        let want = rat_counts(n as u64, p as u64, eff, r as u64, l as u64, dist.num_params() as u64);
        check_counts(&format!("RAT-SPN {opts:?}"), &rat_spn::build(&opts).unwrap(), want);
    }
}

#[test]
fn rat_spn_uneven_splits_are_valid_and_balanced() {
    for (n, p, depth) in [(7, 2, 2), (10, 3, 2), (5, 4, 3), (3, 5, 2), (1, 2, 3)] {
        let opts = rat_spn::RatSpnOptions { num_vars: n, depth, num_pieces: p, latents: 4, input: Dist::Bernoulli, ..Default::default() };
        let c = rat_spn::build(&opts).unwrap();
        compile(&c).unwrap();
        // Products split their scope into pieces whose sizes differ by at most one.
        let mut size = vec![0usize; c.nodes.len()];
        for (i, node) in c.nodes.iter().enumerate() {
            size[i] = match node {
                Node::Input { .. } => 1,
                Node::Sum { children, .. } => size[children[0].index()],
                Node::Product { children, .. } => {
                    let s: Vec<usize> = children.iter().map(|ch| size[ch.index()]).collect();
                    let all_inputs = children.iter().all(|ch| matches!(c.node(*ch), Node::Input { .. }));
                    assert!(all_inputs || s.iter().max().unwrap() - s.iter().min().unwrap() <= 1, "{opts:?}: {s:?}");
                    s.iter().sum()
                }
            };
        }
        assert_eq!(size[c.root.index()], n as usize);
    }
    assert_eq!(rat_spn::RatSpnOptions { latents: 768, ..Default::default() }.effective_block_size(), 256);
    assert_eq!(rat_spn::RatSpnOptions { latents: 24, ..Default::default() }.effective_block_size(), 8);
}

#[test]
fn rat_spn_normalizes() {
    let opts = rat_spn::RatSpnOptions { num_vars: 4, latents: 2, depth: 2, num_repetitions: 3, input: Dist::Bernoulli, ..Default::default() };
    check_normalized("RAT-SPN 4 binary", rat_spn::build(&opts).unwrap(), 1);
    let opts = rat_spn::RatSpnOptions {
        num_vars: 5,
        latents: 4,
        depth: 1,
        num_repetitions: 2,
        input: Dist::Categorical { num_cats: 3 },
        block_size: Some(2),
        seed: 9,
        ..Default::default()
    };
    check_normalized("RAT-SPN 5 ternary", rat_spn::build(&opts).unwrap(), 2);
    let opts = rat_spn::RatSpnOptions { num_vars: 6, latents: 2, depth: 1, num_pieces: 3, num_repetitions: 2, input: Dist::Bernoulli, ..Default::default() };
    check_normalized("RAT-SPN 6 binary, 3 pieces", rat_spn::build(&opts).unwrap(), 3);
}

#[test]
fn rat_spn_is_deterministic_in_the_seed() {
    let opts = rat_spn::RatSpnOptions { num_vars: 16, latents: 4, depth: 3, num_repetitions: 3, input: Dist::Bernoulli, seed: 21, ..Default::default() };
    let c = rat_spn::build(&opts).unwrap();
    assert_eq!(c, rat_spn::build(&opts).unwrap());
    let other = rat_spn::build(&rat_spn::RatSpnOptions { seed: 22, ..opts.clone() }).unwrap();
    assert_ne!(c, other, "the partitions depend on the seed");
    assert_eq!(c.nodes.len(), other.nodes.len());
    // Repetitions draw different partitions.
    let Node::Sum { children, .. } = c.node(c.root) else { panic!() };
    let tops: Vec<&Node> = children.iter().map(|&ch| c.node(ch)).collect();
    let scope_of_first_child = |n: &Node| {
        let mut vars = Vec::new();
        let mut stack = vec![n.children()[0]];
        while let Some(id) = stack.pop() {
            match c.node(id) {
                Node::Input { var, .. } => vars.push(*var),
                other => stack.extend_from_slice(other.children()),
            }
        }
        vars.sort_unstable();
        vars
    };
    assert!(tops.windows(2).any(|w| scope_of_first_child(w[0]) != scope_of_first_child(w[1])));
}

// ----------------------------------------------------------------------------------------- HMM

/// HMM with `T` steps, `L` states, `V` emissions: `T` emission input vectors, `T − 1` transition
/// sums and `T − 1` products, one root: `3T − 1` vectors; `(T − 1)·L² + L` scalar sum edges
/// (tied copies included); parameters `L² + L + L·V` when homogeneous (for `T ≥ 2`), else
/// `(T − 1)·L² + L + T·L·V`.
fn hmm_counts(t: u64, l: u64, v: u64, homogeneous: bool) -> Counts {
    let edges = (t - 1) * l * l + l;
    let params = if homogeneous { (t - 1).min(1) * l * l + l + l * v } else { edges + t * l * v };
    Counts { vectors: (3 * t - 1) as usize, edges, params }
}

fn hmm_opts(t: u32, l: u32, v: u32, homogeneous: bool) -> hmm::HmmOptions {
    hmm::HmmOptions { seq_length: t, hidden: l, num_emits: v, homogeneous, block_size: None }
}

#[test]
fn hmm_counts_match_closed_form() {
    for (t, l, v) in [(1, 4, 3), (2, 4, 3), (5, 8, 7), (16, 32, 50), (3, 6, 2), (2, 2048, 2)] {
        for homogeneous in [false, true] {
            let c = hmm::build(&hmm_opts(t, l, v, homogeneous)).unwrap();
            check_counts(&format!("HMM T={t} L={l} V={v} homogeneous={homogeneous}"), &c, hmm_counts(t as u64, l as u64, v as u64, homogeneous));
        }
    }
    let c = hmm::build(&hmm_opts(2, 2048, 2, true)).unwrap();
    assert!(c.nodes.iter().filter(|n| n.num_nodes() > 1).all(|n| n.block_size() == 1024 && n.num_blocks() == 2));
    let c = hmm::build(&hmm::HmmOptions { block_size: Some(2), ..hmm_opts(3, 8, 2, false) }).unwrap();
    assert!(c.nodes.iter().filter(|n| n.num_nodes() > 1).all(|n| n.block_size() == 2 && n.num_blocks() == 4));
    assert_eq!(hmm::build(&hmm_opts(6, 4, 3, true)).unwrap(), hmm::build(&hmm_opts(6, 4, 3, true)).unwrap());
}

#[test]
fn hmm_normalizes() {
    for homogeneous in [false, true] {
        check_normalized(&format!("HMM homogeneous={homogeneous}"), hmm::build(&hmm_opts(3, 2, 3, homogeneous)).unwrap(), 4);
    }
    check_normalized("HMM T=1", hmm::build(&hmm_opts(1, 4, 5, true)).unwrap(), 5);
}

/// The model's parameters as an HMM: initial γ[h], transitions A_t[h][h'] (t = 1..T−1, from
/// step t to t+1) and emissions B_t[h][v], read by walking the circuit from the root.
struct HmmParams {
    gamma: Vec<f64>,
    trans: Vec<Vec<Vec<f64>>>,
    emit: Vec<Vec<Vec<f64>>>,
}

fn hmm_params(m: &Model, l: usize, v: usize) -> HmmParams {
    let c = &m.circuit;
    let tensor = |id: NodeId| -> Vec<f64> {
        let src = c.node(id).tied_to().unwrap_or(id);
        let spec = m.plan.tensors.iter().find(|t| t.ir_node == src.0).expect("a parameter tensor");
        m.params.extract(spec).into_iter().map(f64::from).collect()
    };
    // Dense sum weights [edges, bs, cbs] as a matrix [sum node][child node].
    let matrix = |id: NodeId, rows: usize| -> Vec<Vec<f64>> {
        let Node::Sum { children, edges, block_size, .. } = c.node(id) else { panic!("{id} is not a sum") };
        let (bs, cbs) = (*block_size as usize, c.node(children[0]).block_size() as usize);
        let w = tensor(id);
        let mut a = vec![vec![0.0; l]; rows];
        for (e, &[i, j]) in edges.iter().enumerate() {
            for mm in 0..bs {
                for k in 0..cbs {
                    a[i as usize * bs + mm][j as usize * cbs + k] = w[(e * bs + mm) * cbs + k];
                }
            }
        }
        a
    };
    let emission = |id: NodeId| -> Vec<Vec<f64>> { tensor(id).chunks(v).map(|r| r.to_vec()).collect() };
    let Node::Sum { children, .. } = c.node(c.root) else { panic!("the root is a sum") };
    let gamma = matrix(c.root, 1).remove(0);
    let (mut trans, mut emit) = (Vec::new(), Vec::new());
    let mut z = children[0];
    loop {
        match c.node(z) {
            Node::Product { children, .. } => {
                emit.push(emission(children[0]));
                trans.push(matrix(children[1], l));
                z = c.node(children[1]).children()[0];
            }
            Node::Input { .. } => {
                emit.push(emission(z));
                break;
            }
            Node::Sum { .. } => panic!("unexpected sum {z}"),
        }
    }
    HmmParams { gamma, trans, emit }
}

/// Textbook forward algorithm in f64: log p(x).
fn forward_log_prob(p: &HmmParams, x: &[usize]) -> f64 {
    let l = p.gamma.len();
    let mut alpha: Vec<f64> = (0..l).map(|h| p.gamma[h] * p.emit[0][h][x[0]]).collect();
    for (t, &xt) in x.iter().enumerate().skip(1) {
        alpha = (0..l).map(|h2| (0..l).map(|h| alpha[h] * p.trans[t - 1][h][h2]).sum::<f64>() * p.emit[t][h2][xt]).collect();
    }
    alpha.iter().sum::<f64>().ln()
}

#[test]
fn hmm_matches_the_forward_algorithm() {
    for (t, l, v, bs, homogeneous, seed) in [
        (6usize, 4usize, 5usize, None, false, 1u64),
        (6, 4, 5, Some(2), false, 2),
        (6, 4, 5, Some(1), true, 3),
        (9, 8, 3, None, true, 4),
        (1, 3, 4, None, false, 5),
    ] {
        let opts = hmm::HmmOptions { block_size: bs, ..hmm_opts(t as u32, l as u32, v as u32, homogeneous) };
        let m = Model::random(hmm::build(&opts).unwrap(), seed).unwrap();
        let p = hmm_params(&m, l, v);
        assert_eq!((p.trans.len(), p.emit.len()), (t - 1, t));
        if homogeneous {
            assert!(p.trans.windows(2).all(|w| w[0] == w[1]) && p.emit.windows(2).all(|w| w[0] == w[1]));
        } else if t > 2 {
            assert_ne!(p.trans[0], p.trans[1]);
        }
        // Sequences: a deterministic pseudo-random walk through the emission values.
        let xs: Vec<Vec<usize>> = (0..20).map(|s| (0..t).map(|i| (s * 7 + i * i * 3 + i * s) % v).collect()).collect();
        let values: Vec<f32> = xs.iter().flatten().map(|&x| x as f32).collect();
        let lls = m.cpu_engine().unwrap().log_likelihood(&Evidence::new(t, values).unwrap()).unwrap();
        for (x, &ll) in xs.iter().zip(&lls) {
            let want = forward_log_prob(&p, x);
            assert!((ll as f64 - want).abs() < 1e-5, "{opts:?}: x = {x:?}: {ll} vs {want}");
        }
    }
}

// ------------------------------------------------------------------------------- bad options

#[test]
fn degenerate_options_give_typed_errors() {
    assert_eq!(pd::build(&pd::PdOptions { height: 0, ..Default::default() }), Err(CircuitError::Empty));
    assert!(matches!(pd::build(&pd::PdOptions { latents: 0, ..Default::default() }), Err(CircuitError::EmptyNode { .. })));
    assert!(matches!(pd::build(&pd::PdOptions { block_size: Some(3), ..Default::default() }), Err(CircuitError::BadBlockSize { .. })));
    assert_eq!(rat_spn::build(&rat_spn::RatSpnOptions { num_vars: 0, ..Default::default() }), Err(CircuitError::Empty));
    assert!(matches!(rat_spn::build(&rat_spn::RatSpnOptions { num_repetitions: 0, ..Default::default() }), Err(CircuitError::NoChildren { .. })));
    assert_eq!(hmm::build(&hmm::HmmOptions { seq_length: 0, ..Default::default() }), Err(CircuitError::Empty));
    assert!(matches!(hmm::build(&hmm::HmmOptions { num_emits: 0, ..Default::default() }), Err(CircuitError::InvalidDistribution { .. })));
    // Defaults build.
    compile(&pd::build(&pd::PdOptions::default()).unwrap()).unwrap();
    compile(&rat_spn::build(&rat_spn::RatSpnOptions::default()).unwrap()).unwrap();
    compile(&hmm::build(&hmm::HmmOptions::default()).unwrap()).unwrap();
}

/// Generator options that would overflow or nest without bound are errors naming the option
/// (issue 15): an image of 2 x 2147484040 pixels (its u32 product wraps to 784), a RAT-SPN of a
/// million levels (a stack overflow), a PD with thousands of cut points (as deep a recursion),
/// and latents whose sum edges would be materialized past every limit.
#[test]
fn generator_options_past_their_limits_are_errors() {
    let err = pd::build(&pd::PdOptions { height: 2, width: 2_147_484_040, ..Default::default() }).unwrap_err();
    assert!(matches!(err, CircuitError::BadOption { option: "image shape", .. }), "{err}");
    let err = pd::build(&pd::PdOptions { height: 1, width: 5000, split_intervals: (1, 1), ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("4999 cut points"), "{err}");
    let atomic =
        pd::PdOptions { height: 1, width: 5000, split_intervals: (1, 1), max_split_depth: Some(0), latents: 1, input: Dist::Bernoulli, ..Default::default() };
    pd::build(&atomic).unwrap();
    for num_pieces in [0, 1, 2] {
        let err = rat_spn::build(&rat_spn::RatSpnOptions { depth: 1_000_000, num_pieces, ..Default::default() }).unwrap_err();
        assert!(matches!(err, CircuitError::BadOption { option: "depth", .. }), "{err}");
    }
    rat_spn::build(&rat_spn::RatSpnOptions { depth: rat_spn::MAX_DEPTH, num_pieces: 1, num_vars: 2, latents: 2, ..Default::default() }).unwrap();
    for latents in [1 << 20, u32::MAX] {
        let opts = hmm::HmmOptions { hidden: latents, block_size: Some(1), ..Default::default() };
        assert!(matches!(hmm::build(&opts).unwrap_err(), CircuitError::TooLarge { .. }));
        let opts = rat_spn::RatSpnOptions { latents, block_size: Some(1), ..Default::default() };
        assert!(matches!(rat_spn::build(&opts).unwrap_err(), CircuitError::TooLarge { .. }));
        let opts = pd::PdOptions { height: 4, width: 4, split_intervals: (1, 1), latents, block_size: Some(1), ..Default::default() };
        assert!(matches!(pd::build(&opts).unwrap_err(), CircuitError::TooLarge { .. }));
    }
}

//! HCLT (hidden Chow–Liu tree) learned from data.
//!
//! 1. Pairwise mutual information: exact counts when every variable has few values (binary and
//!    few-valued data), otherwise PyJuice-style soft binning (values min–max normalized, Gaussian
//!    soft assignment to `soft_bins` centres). Both are one Gram matrix `WᵀW` of per-sample,
//!    per-variable bin weights, computed as a block matrix product.
//! 2. Maximum spanning tree of the MI graph (Prim, ties to the lowest index).
//! 3. The tree's centre (first minimum-eccentricity vertex) becomes the root.
//! 4. Latent structure: a leaf variable is `L` input nodes; an inner variable multiplies its
//!    children's regions with its own `L` input nodes elementwise and mixes the products with a
//!    dense `L x L` sum; the root mixes its `L` products into one node.
//! 5. With `trees = K > 1`, a mixture of `K` such HCLTs: tree 0 from the data, tree `k` from a
//!    bootstrap resample of it (seeded by `k`), one root sum over all `K · L` root products (the
//!    published HCLT results use a mixture of four trees).
//!
//! Everything is deterministic for given data and options.

use pc_runtime::Evidence;
use rayon::prelude::*;

use super::common::pow2_block_size;
use crate::builder::{CircuitBuilder, SumEdges};
use crate::error::CircuitError;
use crate::ir::{Circuit, Dist, NodeId};
use crate::validate::MAX_BUFFER_ENTRIES;

/// How mutual information is estimated.
#[derive(Clone, Debug, PartialEq)]
pub struct MiOptions {
    /// Use exact co-occurrence counts when every value is below this (e.g. binary data: 2).
    pub max_exact_values: u32,
    /// Soft bins for many-valued data (PyJuice uses 32; 8 keeps the CPU Gram matrix cheap).
    pub soft_bins: u32,
    /// Estimate MI from at most this many (leading) samples.
    pub max_samples: Option<usize>,
}

impl Default for MiOptions {
    fn default() -> Self {
        MiOptions { max_exact_values: 16, soft_bins: 8, max_samples: None }
    }
}

/// HCLT options.
#[derive(Clone, Debug, PartialEq)]
pub struct HcltOptions {
    /// Latent states per variable (`L`).
    pub latents: u32,
    /// Block size; default `min(1024, largest power of two dividing L)`.
    pub block_size: Option<u32>,
    /// Leaf distribution; default Bernoulli for binary data, else Categorical over `0..=max`.
    pub input: Option<Dist>,
    /// Tie every variable's leaves to one parameter set.
    pub tie_inputs: bool,
    pub mi: MiOptions,
    /// HCLTs in the mixture (1: a single HCLT).
    pub trees: u32,
}

impl Default for HcltOptions {
    fn default() -> Self {
        HcltOptions { latents: 32, block_size: None, input: None, tie_inputs: false, mi: MiOptions::default(), trees: 1 }
    }
}

/// Errors of learning a structure from data.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("the data set is empty")]
    NoData,
    #[error("structure learning needs complete data: sample {sample}, variable {var} is missing")]
    MissingValue { sample: usize, var: usize },
    #[error("sample {sample}, variable {var}: {value} is not a non-negative whole number")]
    NotDiscrete { sample: usize, var: usize, value: f32 },
    #[error("latents must be at least 1")]
    NoLatents,
    #[error("block size {block_size} must be a power of two dividing the latent count {latents}")]
    BadBlockSize { block_size: u32, latents: u32 },
    #[error("mutual information of {num_vars} variables with {bins} bins each needs a {what} of {entries} entries, more than the limit of {limit} ({hint})")]
    MiTooLarge { num_vars: usize, bins: usize, what: &'static str, entries: u64, limit: u64, hint: &'static str },
    #[error(transparent)]
    Circuit(#[from] CircuitError),
}

/// A rooted spanning tree over the variables.
#[derive(Clone, Debug, PartialEq)]
pub struct ChowLiuTree {
    pub root: u32,
    /// Undirected tree edges `(a, b)` with `a < b`, sorted.
    pub edges: Vec<(u32, u32)>,
    pub children: Vec<Vec<u32>>,
}

/// Pairwise mutual information `[V x V]` (nats), zero on the diagonal.
pub fn mutual_information(data: &Evidence, opts: &MiOptions) -> Result<Vec<f64>, LearnError> {
    let v = data.num_vars;
    let n = data.num_samples().min(opts.max_samples.unwrap_or(usize::MAX));
    if n == 0 {
        return Err(LearnError::NoData);
    }
    let mut max = 0f32;
    let mut min = f32::INFINITY;
    for s in 0..n {
        for var in 0..v {
            if data.is_missing(s, var) {
                return Err(LearnError::MissingValue { sample: s, var });
            }
            let x = data.value(s, var);
            max = max.max(x);
            min = min.min(x);
        }
    }
    let exact = max < opts.max_exact_values as f32;
    let bins = if exact { (max as usize + 1).max(2) } else { opts.soft_bins.max(2) as usize };
    // The bin weights are n·v·bins and their Gram matrix (v·bins)², both checked before anything
    // of that size is allocated.
    let vb64 = (v as u64).saturating_mul(bins as u64);
    for (what, entries, hint) in [
        ("Gram matrix", vb64.saturating_mul(vb64), "fewer variables or fewer soft bins"),
        ("bin-weight table", vb64.saturating_mul(n as u64), "fewer samples for it (--mi-samples) or fewer soft bins"),
    ] {
        if entries > MAX_BUFFER_ENTRIES {
            return Err(LearnError::MiTooLarge { num_vars: v, bins, what, entries, limit: MAX_BUFFER_ENTRIES, hint });
        }
    }
    // Per-sample, per-variable bin weights, each variable's weights summing to one.
    let vb = v * bins;
    let mut w = vec![0f32; n * vb];
    let sigma = 0.5 / bins as f32;
    let span = (max - min).max(f32::MIN_POSITIVE);
    w.par_chunks_mut(vb).enumerate().for_each(|(s, row)| {
        for var in 0..v {
            let x = data.value(s, var);
            let cell = &mut row[var * bins..][..bins];
            if exact {
                cell[x as usize] = 1.0;
            } else {
                let u = (x - min) / span;
                let mut total = 0.0;
                for (a, c) in cell.iter_mut().enumerate() {
                    let d = (u - a as f32 / (bins - 1) as f32) / sigma;
                    *c = (-0.5 * d * d).exp();
                    total += *c;
                }
                cell.iter_mut().for_each(|c| *c /= total);
            }
        }
    });
    // Gram matrix G = WᵀW, split by row blocks over threads.
    let mut g = vec![0f32; vb * vb];
    let rows = vb.div_ceil(rayon::current_num_threads() * 4).max(1);
    g.par_chunks_mut(rows * vb).enumerate().for_each(|(ci, out)| {
        let r0 = ci * rows;
        let m = out.len() / vb;
        // SAFETY: A = Wᵀ rows [r0, r0+m) read from W [n x vb] with row stride 1, column stride vb;
        // B = W [n x vb] row-major; C = out [m x vb] row-major; all within their slices.
        unsafe {
            matrixmultiply::sgemm(m, n, vb, 1.0, w.as_ptr().add(r0), 1, vb as isize, w.as_ptr(), vb as isize, 1, 0.0, out.as_mut_ptr(), vb as isize, 1);
        }
    });
    let nf = n as f64;
    let xlogx = |p: f64| if p > 0.0 { p * p.ln() } else { 0.0 };
    let entropy: Vec<f64> =
        (0..v).map(|i| -(0..bins).map(|a| xlogx((0..bins).map(|c| g[(i * bins + a) * vb + i * bins + c] as f64).sum::<f64>() / nf)).sum::<f64>()).collect();
    let mut mi = vec![0f64; v * v];
    mi.par_chunks_mut(v).enumerate().for_each(|(i, row)| {
        for j in (i + 1)..v {
            let mut h = 0.0;
            for a in 0..bins {
                for c in 0..bins {
                    h -= xlogx(g[(i * bins + a) * vb + j * bins + c] as f64 / nf);
                }
            }
            row[j] = (entropy[i] + entropy[j] - h).max(0.0);
        }
    });
    for i in 0..v {
        for j in 0..i {
            mi[i * v + j] = mi[j * v + i];
        }
    }
    Ok(mi)
}

/// Maximum spanning tree of a dense symmetric weight matrix (Prim; ties go to the lowest index).
pub fn max_spanning_tree(weights: &[f64], v: usize) -> Vec<(u32, u32)> {
    let mut in_tree = vec![false; v];
    let mut best = vec![f64::NEG_INFINITY; v];
    let mut link = vec![0usize; v];
    let mut edges = Vec::with_capacity(v.saturating_sub(1));
    if v == 0 {
        return edges;
    }
    in_tree[0] = true;
    best[1..v].copy_from_slice(&weights[1..v]);
    for _ in 1..v {
        let mut pick = usize::MAX;
        for u in 0..v {
            if !in_tree[u] && (pick == usize::MAX || best[u] > best[pick]) {
                pick = u;
            }
        }
        in_tree[pick] = true;
        let (a, b) = (link[pick].min(pick), link[pick].max(pick));
        edges.push((a as u32, b as u32));
        for u in 0..v {
            let wt = weights[pick * v + u];
            if !in_tree[u] && wt > best[u] {
                best[u] = wt;
                link[u] = pick;
            }
        }
    }
    edges.sort_unstable();
    edges
}

fn adjacency(v: usize, edges: &[(u32, u32)]) -> Vec<Vec<u32>> {
    let mut adj = vec![Vec::new(); v];
    for &(a, b) in edges {
        adj[a as usize].push(b);
        adj[b as usize].push(a);
    }
    adj.iter_mut().for_each(|a| a.sort_unstable());
    adj
}

/// BFS order and parents from `root`.
fn bfs(adj: &[Vec<u32>], root: u32) -> (Vec<u32>, Vec<Option<u32>>, Vec<u32>) {
    let v = adj.len();
    let mut parent = vec![None; v];
    let mut dist = vec![u32::MAX; v];
    let mut order = vec![root];
    dist[root as usize] = 0;
    let mut head = 0;
    while head < order.len() {
        let u = order[head];
        head += 1;
        for &w in &adj[u as usize] {
            if dist[w as usize] == u32::MAX {
                dist[w as usize] = dist[u as usize] + 1;
                parent[w as usize] = Some(u);
                order.push(w);
            }
        }
    }
    (order, parent, dist)
}

/// First vertex of minimum eccentricity.
pub fn tree_center(v: usize, edges: &[(u32, u32)]) -> u32 {
    let adj = adjacency(v, edges);
    (0..v as u32).map(|r| (bfs(&adj, r).2.into_iter().max().unwrap_or(0), r)).min().map_or(0, |(_, r)| r)
}

/// The Chow–Liu tree of `data`, rooted at its centre.
pub fn chow_liu(data: &Evidence, opts: &MiOptions) -> Result<ChowLiuTree, LearnError> {
    let v = data.num_vars;
    let mi = mutual_information(data, opts)?;
    let edges = max_spanning_tree(&mi, v);
    let root = tree_center(v, &edges);
    let adj = adjacency(v, &edges);
    let (_, parent, _) = bfs(&adj, root);
    let mut children = vec![Vec::new(); v];
    for (u, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            children[*p as usize].push(u as u32);
        }
    }
    Ok(ChowLiuTree { root, edges, children })
}

/// The HCLT circuit over a rooted tree.
pub fn build(tree: &ChowLiuTree, num_vars: u32, dist: Dist, opts: &HcltOptions) -> Result<Circuit, LearnError> {
    build_mixture(std::slice::from_ref(tree), num_vars, dist, opts)
}

/// A mixture of HCLTs, one per rooted tree, under one root sum over all their root products.
pub fn build_mixture(trees: &[ChowLiuTree], num_vars: u32, dist: Dist, opts: &HcltOptions) -> Result<Circuit, LearnError> {
    let l = opts.latents;
    if l == 0 {
        return Err(LearnError::NoLatents);
    }
    let bs = opts.block_size.unwrap_or_else(|| pow2_block_size(l, 1024));
    if !bs.is_power_of_two() || !l.is_multiple_of(bs) {
        return Err(LearnError::BadBlockSize { block_size: bs, latents: l });
    }
    let nb = l / bs;
    let mut b = CircuitBuilder::new(num_vars);
    let mut source: Option<NodeId> = None;
    let mut tops = Vec::with_capacity(trees.len());
    for tree in trees {
        match tree_products(&mut b, tree, num_vars, dist, opts.tie_inputs, &mut source, (nb, bs)) {
            Some(top) => tops.push(top),
            None => return Err(b.finish(NodeId(0)).expect_err("too large").into()), // stop building
        }
    }
    let root = b.summate(&tops, 1, 1, SumEdges::Dense);
    Ok(b.finish(root)?)
}

/// One HCLT's nodes below its root sum: returns the root variable's `L` products (`None` once the
/// circuit is too large). `source` is the first input vector (the one tied leaves share).
fn tree_products(
    b: &mut CircuitBuilder,
    tree: &ChowLiuTree,
    num_vars: u32,
    dist: Dist,
    tie_inputs: bool,
    source: &mut Option<NodeId>,
    (nb, bs): (u32, u32),
) -> Option<NodeId> {
    // Post-order: reverse BFS order from the root.
    let adj = adjacency(num_vars as usize, &tree.edges);
    let (order, _, _) = bfs(&adj, tree.root);
    let mut region: Vec<Option<NodeId>> = vec![None; num_vars as usize];
    let mut root = None;
    for &u in order.iter().rev() {
        if b.is_too_large() {
            return None;
        }
        let leaf = match (tie_inputs, *source) {
            (true, Some(src)) => b.tied_inputs(src, u),
            _ => {
                let n = b.inputs(u, nb, bs, dist);
                *source = Some(n);
                n
            }
        };
        let kids = &tree.children[u as usize];
        if kids.is_empty() && u != tree.root {
            region[u as usize] = Some(leaf);
            continue;
        }
        let mut parts: Vec<NodeId> = kids.iter().map(|&k| region[k as usize].expect("children first")).collect();
        parts.push(leaf);
        let p = b.multiply(&parts);
        if u == tree.root {
            root = Some(p);
        } else {
            region[u as usize] = Some(b.summate(&[p], nb, bs, SumEdges::Dense));
        }
    }
    Some(root.expect("the root is visited"))
}

/// Learn an HCLT from complete discrete data.
pub fn learn(data: &Evidence, opts: &HcltOptions) -> Result<Circuit, LearnError> {
    let n = data.num_samples();
    if n == 0 {
        return Err(LearnError::NoData);
    }
    let mut max = 0f32;
    for s in 0..n {
        for v in 0..data.num_vars {
            if data.is_missing(s, v) {
                return Err(LearnError::MissingValue { sample: s, var: v });
            }
            let x = data.value(s, v);
            if !(x >= 0.0 && x.fract() == 0.0) {
                return Err(LearnError::NotDiscrete { sample: s, var: v, value: x });
            }
            max = max.max(x);
        }
    }
    let dist = opts.input.unwrap_or(if max <= 1.0 { Dist::Bernoulli } else { Dist::Categorical { num_cats: max as u32 + 1 } });
    let mut trees = vec![chow_liu(data, &opts.mi)?];
    for k in 1..opts.trees.max(1) {
        trees.push(chow_liu(&bootstrap(data, k as u64), &opts.mi)?);
    }
    build_mixture(&trees, data.num_vars as u32, dist, opts)
}

/// `n` rows of `data` drawn with replacement (seeded): the data of a mixture's `k`-th tree.
fn bootstrap(data: &Evidence, seed: u64) -> Evidence {
    let n = data.num_samples();
    let mut rng = super::common::SplitMix64::new(seed);
    let rows: Vec<usize> = (0..n).map(|_| (rng.next_u64() % n as u64) as usize).collect();
    data.select(&rows)
}

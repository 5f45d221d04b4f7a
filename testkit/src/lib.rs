//! Shared test support: a seeded random-circuit generator and an independent f64 reference
//! evaluator that works on the IR directly (node by node, linear space), so it shares no code
//! with the compiler or the engine it checks. One crate, so that the integration tests
//! (`use pcc_testkit as common;`) and `examples/gpu_selftest` share it without `#[path]`.

pub mod host_cuda;
pub mod host_mma;

use std::collections::HashMap;

use pcc::codegen::{Circuit, CircuitBuilder, Dist, Model, Node, NodeId, SumEdges};
use pcc::runtime::Evidence;
use pcc::runtime::plan::TensorLayout;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random circuits with mixed block sizes, block-sparse sums, several child vectors per sum,
/// sums over inputs and over sums, products of products, shared sub-circuits, tied inputs and
/// tied sums, Categorical and Bernoulli leaves.
pub struct Gen {
    rng: ChaCha8Rng,
    b: CircuitBuilder,
    cats: Vec<u32>,
    bern: Vec<bool>,
    cache: HashMap<(Vec<u32>, u32), NodeId>,
    inputs: Vec<NodeId>,
}

impl Gen {
    /// A random circuit whose joint state space has at most 2^12 states.
    pub fn circuit(seed: u64) -> Circuit {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let num_vars = rng.random_range(2..=6u32);
        let mut cats = Vec::new();
        let mut bern = Vec::new();
        let mut states = 1u32;
        for _ in 0..num_vars {
            let (k, is_bern) = match rng.random_range(0..4) {
                0 => (2, true),
                1 => (2, false),
                2 => (3, false),
                _ => (4, false),
            };
            let k = if states * k > 4096 { 2 } else { k };
            states *= k;
            cats.push(k);
            bern.push(is_bern && k == 2);
        }
        let mut g = Gen { rng, b: CircuitBuilder::new(num_vars), cats, bern, cache: HashMap::new(), inputs: Vec::new() };
        let vars: Vec<u32> = (0..num_vars).collect();
        let bs = g.pick_bs();
        let top = g.region(&vars, bs);
        let root = g.b.summate(&[top], 1, 1, SumEdges::Dense);
        g.b.finish(root).expect("generated circuits are valid")
    }

    fn pick_bs(&mut self) -> u32 {
        [1, 2, 4][self.rng.random_range(0..3)]
    }

    fn region(&mut self, vars: &[u32], bs: u32) -> NodeId {
        let key = (vars.to_vec(), bs);
        if let Some(&n) = self.cache.get(&key)
            && self.rng.random_bool(0.4)
        {
            return n;
        }
        let n = if vars.len() == 1 { self.leaf_region(vars[0], bs) } else { self.inner_region(vars, bs) };
        self.cache.insert(key, n);
        n
    }

    fn input(&mut self, var: u32, nb: u32, bs: u32) -> NodeId {
        let dist = if self.bern[var as usize] { Dist::Bernoulli } else { Dist::Categorical { num_cats: self.cats[var as usize] } };
        let same: Vec<NodeId> = self
            .inputs
            .iter()
            .copied()
            .filter(|&i| {
                matches!(self.b.node(i), Node::Input { dist: d, num_blocks, block_size, tied_to: None, .. }
                    if *d == dist && *num_blocks == nb && *block_size == bs)
            })
            .collect();
        if !same.is_empty() && self.rng.random_bool(0.4) {
            let src = same[self.rng.random_range(0..same.len())];
            return self.b.tied_inputs(src, var);
        }
        let n = self.b.inputs(var, nb, bs, dist);
        self.inputs.push(n);
        n
    }

    fn leaf_region(&mut self, var: u32, bs: u32) -> NodeId {
        match self.rng.random_range(0..3) {
            0 => {
                let nb = self.rng.random_range(1..=2);
                self.input(var, nb, bs)
            }
            _ => {
                // A sum directly over inputs (compiled through a one-child product wrapper).
                let ibs = self.pick_bs();
                let nbi = self.rng.random_range(1..=3);
                let inp = self.input(var, nbi, ibs);
                let nb = self.rng.random_range(1..=2);
                let edges = self.sparse_edges(nb, nbi);
                self.b.summate(&[inp], nb, bs, edges)
            }
        }
    }

    fn split(&mut self, vars: &[u32]) -> Vec<Vec<u32>> {
        let mut v = vars.to_vec();
        for i in (1..v.len()).rev() {
            let j = self.rng.random_range(0..=i);
            v.swap(i, j);
        }
        let parts = if v.len() >= 3 && self.rng.random_bool(0.4) { 3 } else { 2 };
        let mut cuts: Vec<usize> = (1..v.len()).collect();
        for i in (1..cuts.len()).rev() {
            let j = self.rng.random_range(0..=i);
            cuts.swap(i, j);
        }
        let mut cuts: Vec<usize> = cuts[..parts - 1].to_vec();
        cuts.sort();
        let mut out = Vec::new();
        let mut start = 0;
        for c in cuts.into_iter().chain([v.len()]) {
            let mut p = v[start..c].to_vec();
            p.sort();
            out.push(p);
            start = c;
        }
        out
    }

    fn product(&mut self, vars: &[u32], pbs: u32, nbp: u32) -> NodeId {
        let parts = self.split(vars);
        let children: Vec<NodeId> = parts.iter().map(|p| self.region(p, pbs)).collect();
        if children.len() == 3 && self.rng.random_bool(0.4) {
            // A product of a product: exercises flattening.
            let nbi = self.rng.random_range(1..=2);
            let inner_edges = self.prod_edges(nbi, &children[..2]);
            let inner = self.b.multiply_with_edges(&children[..2], inner_edges);
            let outer = [inner, children[2]];
            let edges = self.prod_edges(nbp, &outer);
            return self.b.multiply_with_edges(&outer, edges);
        }
        let edges = self.prod_edges(nbp, &children);
        self.b.multiply_with_edges(&children, edges)
    }

    fn prod_edges(&mut self, nbp: u32, children: &[NodeId]) -> Vec<Vec<u32>> {
        (0..nbp).map(|_| children.iter().map(|&c| self.rng.random_range(0..self.b.node(c).num_blocks())).collect()).collect()
    }

    fn sparse_edges(&mut self, nb: u32, child_blocks: u32) -> SumEdges {
        if self.rng.random_bool(0.3) {
            return SumEdges::Dense;
        }
        let mut e = Vec::new();
        for i in 0..nb {
            let before = e.len();
            for j in 0..child_blocks {
                if self.rng.random_bool(0.5) {
                    e.push([i, j]);
                }
            }
            if e.len() == before {
                e.push([i, self.rng.random_range(0..child_blocks)]);
            }
        }
        SumEdges::List(e)
    }

    fn inner_region(&mut self, vars: &[u32], bs: u32) -> NodeId {
        let pbs = self.pick_bs();
        let nvec = self.rng.random_range(1..=2);
        let shapes: Vec<u32> = (0..nvec).map(|_| self.rng.random_range(1..=3)).collect();
        let prods: Vec<NodeId> = shapes.iter().map(|&nbp| self.product(vars, pbs, nbp)).collect();
        let child_blocks: u32 = shapes.iter().sum();
        let nb = self.rng.random_range(1..=3);
        let edges = self.sparse_edges(nb, child_blocks);
        let s = self.b.summate(&prods, nb, bs, edges);
        if nvec == 2 && self.rng.random_bool(0.4) {
            // The first product vector also feeds a second sum: when the other vector is deeper,
            // the shared product is evaluated at two depths.
            let nba = self.rng.random_range(1..=2);
            let edges = self.sparse_edges(nba, shapes[0]);
            let sa = self.b.summate(&prods[..1], nba, bs, edges);
            let nbf = self.rng.random_range(1..=2);
            let edges = self.sparse_edges(nbf, nba + nb);
            return self.b.summate(&[sa, s], nbf, bs, edges);
        }
        if self.rng.random_bool(0.3) {
            // A tied copy over differently split products of the same shapes, mixed by a sum of sums.
            let prods2: Vec<NodeId> = shapes.iter().map(|&nbp| self.product(vars, pbs, nbp)).collect();
            let s2 = self.b.tied_summate(s, &prods2);
            let nbf = self.rng.random_range(1..=2);
            let edges = self.sparse_edges(nbf, 2 * nb);
            return self.b.summate(&[s, s2], nbf, bs, edges);
        }
        s
    }
}

/// Sum or max semiring for the reference.
#[derive(Clone, Copy, PartialEq)]
pub enum Semi {
    Sum,
    Max,
}

/// Independent f64 evaluator over the IR.
pub struct Reference<'a> {
    pub c: &'a Circuit,
    /// Per IR node: its own parameter tensor in file shape (None if tied or parameter-free).
    theta: Vec<Option<Vec<f64>>>,
}

/// Reference results for one sample.
pub struct RefGrad {
    pub p: f64,
    pub values: Vec<Vec<f64>>,
    /// Node flows `F_n = v_n · ∂p/∂v_n / p` for every node of every IR vector.
    pub flows: Vec<Vec<f64>>,
    /// Expected counts per parameter-owning IR node, in its tensor's shape (sum weights), or
    /// `[num_nodes, categories]` for inputs (category counts; Bernoulli (count 0, count 1); for
    /// binomials of `n` trials the counts of 0..=n, not the engine's statistics).
    pub counts: Vec<Option<Vec<f64>>>,
}

impl<'a> Reference<'a> {
    pub fn new(model: &'a Model) -> Self {
        let mut theta = vec![None; model.circuit.nodes.len()];
        for spec in &model.plan.tensors {
            theta[spec.ir_node as usize] = Some(model.params.extract(spec).iter().map(|&v| v as f64).collect());
        }
        Reference { c: &model.circuit, theta }
    }

    fn source(&self, i: usize) -> usize {
        self.c.nodes[i].tied_to().map_or(i, |s| s.index())
    }

    /// Leaf "parameter" vector of input node `k` of vector `i`: categorical probabilities,
    /// (1-p, p) for Bernoulli, the binomial probabilities of 0..=n (Pascal's triangle).
    fn leaf_theta(&self, i: usize, k: usize) -> Vec<f64> {
        let Node::Input { dist, .. } = &self.c.nodes[i] else { unreachable!() };
        let t = self.theta[self.source(i)].as_ref().unwrap();
        match dist {
            Dist::Categorical { num_cats } => t[k * *num_cats as usize..][..*num_cats as usize].to_vec(),
            Dist::Bernoulli => vec![1.0 - t[k], t[k]],
            Dist::Binomial { num_trials } => binomial_pmf(*num_trials, t[k]),
            _ => unimplemented!("reference covers discrete leaves"),
        }
    }

    /// Child node value of virtual child index `v` (block-major over the concatenated children).
    fn virtual_child(&self, children: &[NodeId], cbs: usize, vb: u32, k: usize) -> (usize, usize) {
        let mut jb = vb;
        for &ch in children {
            let nb = self.c.node(ch).num_blocks();
            if jb < nb {
                return (ch.index(), jb as usize * cbs + k);
            }
            jb -= nb;
        }
        unreachable!()
    }

    /// Node values of every IR vector for one sample (`missing` leaves evaluate to Σθ).
    pub fn eval(&self, x: &[f32], missing: &[bool], semi: Semi) -> Vec<Vec<f64>> {
        let mut val: Vec<Vec<f64>> = Vec::with_capacity(self.c.nodes.len());
        for (i, node) in self.c.nodes.iter().enumerate() {
            let n = node.num_nodes() as usize;
            let mut v = vec![0.0; n];
            match node {
                Node::Input { var, .. } => {
                    for (k, o) in v.iter_mut().enumerate() {
                        let t = self.leaf_theta(i, k);
                        *o = if missing[*var as usize] {
                            match semi {
                                Semi::Sum => t.iter().sum(),
                                Semi::Max => t.iter().copied().fold(0.0, f64::max),
                            }
                        } else {
                            t[x[*var as usize] as usize]
                        };
                    }
                }
                Node::Product { children, block_size, edges, .. } => {
                    let bs = *block_size as usize;
                    for (r, row) in edges.iter().enumerate() {
                        for k in 0..bs {
                            v[r * bs + k] = children.iter().zip(row).map(|(ch, &b)| val[ch.index()][b as usize * bs + k]).product();
                        }
                    }
                }
                Node::Sum { children, block_size, edges, .. } => {
                    let bs = *block_size as usize;
                    let cbs = self.c.node(children[0]).block_size() as usize;
                    let t = self.theta[self.source(i)].as_ref().unwrap();
                    for (e, &[blk, vb]) in edges.iter().enumerate() {
                        for m in 0..bs {
                            for k in 0..cbs {
                                let (ci, cn) = self.virtual_child(children, cbs, vb, k);
                                let term = t[(e * bs + m) * cbs + k] * val[ci][cn];
                                let o = &mut v[blk as usize * bs + m];
                                match semi {
                                    Semi::Sum => *o += term,
                                    Semi::Max => *o = o.max(term),
                                }
                            }
                        }
                    }
                }
            }
            val.push(v);
        }
        val
    }

    /// The distribution over induced trees below node `k` of IR vector `i` (each sum node picks
    /// one child): per tree its probability and the summed entropies of its leaves; `None` past
    /// `cap` trees.
    fn trees(&self, i: usize, k: usize, cap: usize) -> Option<Vec<(f64, f64)>> {
        match &self.c.nodes[i] {
            Node::Input { .. } => {
                let t = self.leaf_theta(i, k);
                Some(vec![(1.0, t.iter().filter(|&&p| p > 0.0).map(|p| -p * p.ln()).sum())])
            }
            Node::Product { children, block_size, edges, .. } => {
                let bs = *block_size as usize;
                let (r, kk) = (k / bs, k % bs);
                let mut out = vec![(1.0, 0.0)];
                for (ch, &b) in children.iter().zip(&edges[r]) {
                    let sub = self.trees(ch.index(), b as usize * bs + kk, cap)?;
                    if out.len() * sub.len() > cap {
                        return None;
                    }
                    out = out.iter().flat_map(|&(p, h)| sub.iter().map(move |&(q, g)| (p * q, h + g))).collect();
                }
                Some(out)
            }
            Node::Sum { children, block_size, edges, .. } => {
                let bs = *block_size as usize;
                let cbs = self.c.node(children[0]).block_size() as usize;
                let t = self.theta[self.source(i)].as_ref().unwrap();
                let (blk, m) = (k / bs, k % bs);
                let mut out = Vec::new();
                for (e, &[b, vb]) in edges.iter().enumerate() {
                    if b as usize != blk {
                        continue;
                    }
                    for kc in 0..cbs {
                        let w = t[(e * bs + m) * cbs + kc];
                        if w == 0.0 {
                            continue;
                        }
                        let (ci, cn) = self.virtual_child(children, cbs, vb, kc);
                        out.extend(self.trees(ci, cn, cap)?.into_iter().map(|(p, h)| (p * w, h)));
                        if out.len() > cap {
                            return None;
                        }
                    }
                }
                Some(out)
            }
        }
    }

    /// The entropy of the latent-variable view `p(x, z)` (every sum node's choice a latent
    /// variable) by enumerating induced trees: `Σ_T p(T) (−log p(T) + Σ_{leaves of T} H(leaf))`.
    /// `None` when the circuit has more than `cap` induced trees.
    pub fn latent_entropy_by_trees(&self, cap: usize) -> Option<f64> {
        let trees = self.trees(self.c.root.index(), 0, cap)?;
        Some(trees.iter().filter(|(p, _)| *p > 0.0).map(|(p, h)| p * (-p.ln() + h)).sum())
    }

    pub fn prob(&self, x: &[f32], missing: &[bool]) -> f64 {
        self.eval(x, missing, Semi::Sum)[self.c.root.index()][0]
    }

    pub fn max_product(&self, x: &[f32]) -> f64 {
        self.eval(x, &vec![false; x.len()], Semi::Max)[self.c.root.index()][0]
    }

    /// Reverse-mode derivatives in f64: node flows and expected counts for one sample.
    pub fn grad(&self, x: &[f32], missing: &[bool]) -> RefGrad {
        let val = self.eval(x, missing, Semi::Sum);
        let root = self.c.root.index();
        let p = val[root][0];
        let mut adj: Vec<Vec<f64>> = val.iter().map(|v| vec![0.0; v.len()]).collect();
        adj[root][0] = 1.0;
        let mut counts: Vec<Option<Vec<f64>>> = self.theta.iter().map(|t| t.as_ref().map(|t| vec![0.0; t.len()])).collect();
        // Input statistics have their own shape: [nodes, stats].
        for (i, node) in self.c.nodes.iter().enumerate() {
            if let Node::Input { dist, tied_to: None, .. } = node {
                let s = match dist {
                    Dist::Categorical { num_cats } => *num_cats as usize,
                    Dist::Binomial { num_trials } => *num_trials as usize + 1,
                    _ => 2,
                };
                counts[i] = Some(vec![0.0; node.num_nodes() as usize * s]);
            }
        }
        for (i, node) in self.c.nodes.iter().enumerate().rev() {
            match node {
                Node::Input { var, .. } => {
                    let src = self.source(i);
                    for k in 0..val[i].len() {
                        let t = self.leaf_theta(i, k);
                        let s = t.len();
                        let cnt = counts[src].as_mut().unwrap();
                        if missing[*var as usize] {
                            for (q, tq) in t.iter().enumerate() {
                                cnt[k * s + q] += tq * adj[i][k] / p;
                            }
                        } else {
                            cnt[k * s + x[*var as usize] as usize] += val[i][k] * adj[i][k] / p;
                        }
                    }
                }
                Node::Product { children, block_size, edges, .. } => {
                    let bs = *block_size as usize;
                    for (r, row) in edges.iter().enumerate() {
                        for k in 0..bs {
                            let a = adj[i][r * bs + k];
                            for (j, (ch, &b)) in children.iter().zip(row).enumerate() {
                                let others: f64 = children
                                    .iter()
                                    .zip(row)
                                    .enumerate()
                                    .filter(|(jj, _)| *jj != j)
                                    .map(|(_, (c2, &b2))| val[c2.index()][b2 as usize * bs + k])
                                    .product();
                                adj[ch.index()][b as usize * bs + k] += a * others;
                            }
                        }
                    }
                }
                Node::Sum { children, block_size, edges, .. } => {
                    let bs = *block_size as usize;
                    let cbs = self.c.node(children[0]).block_size() as usize;
                    let src = self.source(i);
                    let t = self.theta[src].as_ref().unwrap().clone();
                    for (e, &[blk, vb]) in edges.iter().enumerate() {
                        for m in 0..bs {
                            let a = adj[i][blk as usize * bs + m];
                            for k in 0..cbs {
                                let (ci, cn) = self.virtual_child(children, cbs, vb, k);
                                let ti = (e * bs + m) * cbs + k;
                                adj[ci][cn] += a * t[ti];
                                counts[src].as_mut().unwrap()[ti] += t[ti] * a * val[ci][cn] / p;
                            }
                        }
                    }
                }
            }
        }
        let flows = val.iter().zip(&adj).map(|(v, a)| v.iter().zip(a).map(|(v, a)| v * a / p).collect()).collect();
        RefGrad { p, values: val, flows, counts }
    }
}

/// Every complete assignment of the circuit's (discrete) variables, consistent with `evidence`
/// where `missing` is false.
pub fn completions(cats: &[u32], evidence: &[f32], missing: &[bool]) -> Vec<Vec<f32>> {
    let mut out = vec![Vec::new()];
    for (v, &k) in cats.iter().enumerate() {
        let choices: Vec<f32> = if missing[v] { (0..k).map(|c| c as f32).collect() } else { vec![evidence[v]] };
        out = out.into_iter().flat_map(|pre| choices.iter().map(move |&c| [pre.clone(), vec![c]].concat())).collect();
    }
    out
}

/// Number of categories of every variable, from the plan's domains.
pub fn categories(model: &Model) -> Vec<u32> {
    model
        .plan
        .domains
        .iter()
        .map(|d| match d {
            pcc::runtime::Domain::Discrete { num_cats } => *num_cats,
            pcc::runtime::Domain::Continuous => panic!("discrete only"),
        })
        .collect()
}

/// Tensor in file shape, read from a flat vector with the sum-parameter layout (flows).
pub fn sum_tensor_from_flat(model: &Model, ir_node: usize, flat: &[f64]) -> Vec<f64> {
    let spec = model.plan.tensors.iter().find(|t| t.ir_node as usize == ir_node).unwrap();
    let TensorLayout::SumWeights { block_size, child_block_size, edge_bases, .. } = &spec.layout else { panic!() };
    let (bs, cbs) = (*block_size as usize, *child_block_size as usize);
    let mut out = vec![0.0; edge_bases.len() * bs * cbs];
    for (e, &base) in edge_bases.iter().enumerate() {
        for m in 0..bs {
            for k in 0..cbs {
                out[(e * bs + m) * cbs + k] = flat[base as usize + k * bs + m];
            }
        }
    }
    out
}

/// Upper critical value of χ²(df) at tail probability ~1e-4 (Wilson–Hilferty).
pub fn chi2_critical(df: usize) -> f64 {
    let df = df as f64;
    let z = 3.719;
    df * (1.0 - 2.0 / (9.0 * df) + z * (2.0 / (9.0 * df)).sqrt()).powi(3)
}

/// Correlated binary data as CSV at `path`: `n` rows of `vars` variables, each a noisy copy
/// (flipped with probability 0.15) of the previous one.
pub fn write_binary_chain_csv(path: &std::path::Path, n: usize, vars: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut text = String::new();
    for _ in 0..n {
        let mut prev = rng.random_bool(0.5);
        let row: Vec<&str> = (0..vars)
            .map(|_| {
                prev = if rng.random_bool(0.15) { !prev } else { prev };
                if prev { "1" } else { "0" }
            })
            .collect();
        text += &row.join(",");
        text += "\n";
    }
    std::fs::write(path, text).unwrap();
}

/// `ev` with random dense soft observations (about 20% of the category weights 0, never all of a
/// variable's; missing values stay missing) for a model whose variables are all discrete.
pub fn random_dense_soft(model: &Model, ev: &Evidence, seed: u64) -> Evidence {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let offsets = pcc::runtime::Soft::offsets(&model.plan.domains).unwrap();
    let row = *offsets.last().unwrap();
    let mut probs: Vec<f32> = (0..ev.num_samples() * row).map(|_| if rng.random_bool(0.2) { 0.0 } else { rng.random::<f32>() }).collect();
    // Every observation keeps some category possible (all zeros is an error).
    for s in 0..ev.num_samples() {
        for v in 0..offsets.len() - 1 {
            let q = &mut probs[s * row + offsets[v]..s * row + offsets[v + 1]];
            if q.iter().all(|&x| x == 0.0) {
                q[rng.random_range(0..q.len())] = 0.5;
            }
        }
    }
    ev.clone().with_soft(pcc::runtime::Soft::dense(&model.plan.domains, probs).unwrap())
}

/// `n` random samples; each value missing with probability `p_missing`.
pub fn random_evidence(model: &Model, n: usize, p_missing: f64, seed: u64) -> Evidence {
    let cats = categories(model);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::new();
    let mut missing = Vec::new();
    for _ in 0..n {
        for &k in &cats {
            values.push(rng.random_range(0..k) as f32);
            missing.push(rng.random_bool(p_missing));
        }
    }
    Evidence::with_missing(cats.len(), values, Some(missing)).unwrap()
}

/// A random mixed circuit over 6 variables — Gaussian, Categorical, Bernoulli and Indicator leaves,
/// a tied input vector, a tied sum, block sizes 1–4, dense and block-diagonal sums — and `n` random
/// samples for it, each value missing with probability `p_missing`.
pub fn mixed_circuit(seed: u64, n: usize, p_missing: f64) -> (Circuit, Evidence) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bs = [1u32, 2, 4][rng.random_range(0..3)];
    let nb = rng.random_range(1..=3u32);
    let k = rng.random_range(2..=4u32);
    let mut b = CircuitBuilder::new(6);
    let g0 = b.inputs(0, nb, bs, Dist::Gaussian { min_sigma: 0.05 });
    let c1 = b.inputs(1, nb, bs, Dist::Categorical { num_cats: k });
    let be2 = b.inputs(2, nb, bs, Dist::Bernoulli);
    let g3 = b.tied_inputs(g0, 3);
    let ind4 = b.inputs(4, 1, 4, Dist::Indicator { num_states: 4 });
    let c5 = b.inputs(5, nb, bs, Dist::Categorical { num_cats: k });
    let p01 = b.multiply(&[g0, c1]);
    let s01 = b.summate(&[p01], nb, bs, SumEdges::Dense);
    let p23 = b.multiply(&[be2, g3]);
    let s23 = b.summate(&[p23], nb, bs, SumEdges::BlockDiagonal);
    let s4 = b.summate(&[ind4], nb, bs, SumEdges::Dense);
    let p45 = b.multiply(&[s4, c5]);
    let s45 = b.summate(&[p45], nb, bs, SumEdges::Dense);
    let top = b.multiply(&[s01, s23, s45]);
    let s_top = b.summate(&[top], 2, 2, SumEdges::Dense);
    // A second mixture over the same regions, its weights tied to the first.
    let top2 = b.multiply(&[s23, s01, s45]);
    let s_top2 = b.tied_summate(s_top, &[top2]);
    let root = b.summate(&[s_top, s_top2], 1, 1, SumEdges::Dense);
    let mut values = Vec::with_capacity(n * 6);
    for _ in 0..n {
        values.extend([
            rng.random_range(-2.0..2.0f32),
            rng.random_range(0..k) as f32,
            rng.random_range(0..2) as f32,
            rng.random_range(-2.0..2.0f32),
            rng.random_range(0..4) as f32,
            rng.random_range(0..k) as f32,
        ]);
    }
    let missing = (p_missing > 0.0).then(|| (0..values.len()).map(|_| rng.random_bool(p_missing)).collect());
    (b.finish(root).expect("the mixed circuit is valid"), Evidence::with_missing(6, values, missing).expect("values match the circuit"))
}

/// `P(x = k)`, `k = 0..=n`, of a binomial in f64 with exact coefficients (Pascal's triangle).
pub fn binomial_pmf(n: u32, p: f64) -> Vec<f64> {
    let mut c = vec![1.0f64];
    for _ in 0..n {
        c = (0..=c.len()).map(|k| if k == 0 || k == c.len() { 1.0 } else { c[k - 1] + c[k] }).collect();
    }
    c.iter().enumerate().map(|(k, c)| c * p.powi(k as i32) * (1.0 - p).powi(n as i32 - k as i32)).collect()
}

/// Trials of the binomial leaves of [`binomial_circuit`]'s variables 0, 1 and 3.
pub const BINOMIAL_TRIALS: [u32; 2] = [3, 5];

/// A random circuit over 5 variables with Binomial leaves — 3 trials (variable 0, and variable 3
/// tied to it) and 5 trials (variable 1) — next to Bernoulli (variable 2) and 3-category
/// Categorical (variable 4) leaves, block sizes 1–4, dense and block-diagonal sums: 576 joint
/// states, few enough to enumerate. With `n` random samples for it, each value missing with
/// probability `p_missing`.
pub fn binomial_circuit(seed: u64, n: usize, p_missing: f64) -> (Circuit, Evidence) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bs = [1u32, 2, 4][rng.random_range(0..3)];
    let nb = rng.random_range(1..=3u32);
    let [t0, t1] = BINOMIAL_TRIALS;
    let mut b = CircuitBuilder::new(5);
    let x0 = b.inputs(0, nb, bs, Dist::Binomial { num_trials: t0 });
    let x1 = b.inputs(1, nb, bs, Dist::Binomial { num_trials: t1 });
    let x2 = b.inputs(2, nb, bs, Dist::Bernoulli);
    let x3 = b.tied_inputs(x0, 3);
    let x4 = b.inputs(4, nb, bs, Dist::Categorical { num_cats: 3 });
    let p01 = b.multiply(&[x0, x1]);
    let s01 = b.summate(&[p01], nb, bs, SumEdges::Dense);
    let p234 = b.multiply(&[x2, x3, x4]);
    let s234 = b.summate(&[p234], nb, bs, SumEdges::BlockDiagonal);
    let top = b.multiply(&[s01, s234]);
    let root = b.summate(&[top], 1, 1, SumEdges::Dense);
    let mut values = Vec::with_capacity(n * 5);
    for _ in 0..n {
        values.extend([
            rng.random_range(0..=t0) as f32,
            rng.random_range(0..=t1) as f32,
            rng.random_range(0..2) as f32,
            rng.random_range(0..=t0) as f32,
            rng.random_range(0..3) as f32,
        ]);
    }
    let missing = (p_missing > 0.0).then(|| (0..values.len()).map(|_| rng.random_bool(p_missing)).collect());
    (b.finish(root).expect("the binomial circuit is valid"), Evidence::with_missing(5, values, missing).expect("values match the circuit"))
}

/// Sample `s` of `ev`: its values and which are missing.
pub fn row(ev: &Evidence, s: usize) -> (Vec<f32>, Vec<bool>) {
    let nv = ev.num_vars;
    (ev.values[s * nv..][..nv].to_vec(), (0..nv).map(|v| ev.is_missing(s, v)).collect())
}

/// `a` within `tol` of `b`, relative to `1 + |b|`.
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

/// The lines of a ptxas `-v` report (NVRTC's log with `--ptxas-options=-v`), each with the kernel
/// it is about (from the last "Compiling entry function 'k'" line; empty before the first).
pub fn ptxas_lines(log: &str) -> Vec<(&str, &str)> {
    let mut kernel = "";
    log.lines()
        .map(|line| {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                kernel = rest.split('\'').next().unwrap_or("");
            }
            (kernel, line)
        })
        .collect()
}

/// Whether a ptxas line reports spills (a line without spill counts does not).
pub fn spills(line: &str) -> bool {
    line.contains("spill") && !line.contains(" 0 bytes spill stores, 0 bytes spill loads")
}

/// Sum blocks whose widths are not a multiple of the tensor-core K chunk: 20 (tf32 chunk 24, bf16
/// 32) and 12 (16) over child blocks of 4, and one block of two node tiles (256 = 2 x 128).
pub fn odd_widths_circuit() -> Circuit {
    let mut b = CircuitBuilder::new(2);
    let (x, y) = (b.inputs(0, 5, 4, Dist::Bernoulli), b.inputs(1, 5, 4, Dist::Bernoulli));
    let p5 = b.multiply(&[x, y]);
    let (x3, y3) = (b.inputs(0, 3, 4, Dist::Bernoulli), b.inputs(1, 3, 4, Dist::Bernoulli));
    let p3 = b.multiply(&[x3, y3]);
    let (s20, s12) = (b.summate(&[p5], 2, 16, SumEdges::Dense), b.summate(&[p3], 1, 256, SumEdges::Dense));
    let (r20, r12) = (b.summate(&[s20], 1, 1, SumEdges::Dense), b.summate(&[s12], 1, 1, SumEdges::Dense));
    let root = b.summate(&[r20, r12], 1, 1, SumEdges::Dense);
    b.finish(root).unwrap()
}

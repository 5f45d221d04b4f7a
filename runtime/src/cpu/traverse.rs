//! Top-down traversal of one sample's induced tree: ancestral sampling (unconditional and
//! conditional) and MPE backtracking. Both walk the plan from the root using the node values of a
//! finished forward pass on the sample's chunk.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::workspace::Workspace;
use crate::data::Evidence;
use crate::params::Params;
use crate::plan::{InputSegment, Plan};

#[derive(Clone, Copy)]
enum NodeRef {
    Dummy,
    Input { layer: u32, seg: u32, local: u32 },
    Sum { depth: u32, part: u32, row: u32, m: u32 },
}

/// Reverse index from buffer ids to the plan entries that produce them.
pub(crate) struct PlanIndex {
    nodes: Vec<NodeRef>,
    /// `elems[depth][element] = (partition, row)` of the product producing that element.
    elems: Vec<Vec<(u32, u32)>>,
}

impl PlanIndex {
    pub fn new(plan: &Plan) -> PlanIndex {
        let mut nodes = vec![NodeRef::Dummy; plan.num_nodes as usize];
        for (li, layer) in plan.inputs.iter().enumerate() {
            for (si, seg) in layer.segments.iter().enumerate() {
                for local in 0..seg.num_nodes {
                    nodes[(seg.node_start + local) as usize] = NodeRef::Input { layer: li as u32, seg: si as u32, local };
                }
            }
        }
        let mut elems = Vec::with_capacity(plan.depths.len());
        for (d, depth) in plan.depths.iter().enumerate() {
            for (pi, part) in depth.sums.iter().enumerate() {
                for (row, &nid) in part.nids.iter().enumerate() {
                    for m in 0..part.block_size {
                        nodes[(nid + m) as usize] = NodeRef::Sum { depth: d as u32, part: pi as u32, row: row as u32, m };
                    }
                }
            }
            let mut owner = vec![(u32::MAX, u32::MAX); plan.num_elements as usize];
            for (pi, part) in depth.prods.iter().enumerate() {
                for (row, &nid) in part.nids.iter().enumerate() {
                    for k in 0..part.block_size {
                        owner[(nid + k) as usize] = (pi as u32, row as u32);
                    }
                }
            }
            elems.push(owner);
        }
        PlanIndex { nodes, elems }
    }
}

/// What to do at sum nodes and at leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Draw a child ∝ θ_c exp(e_c - m_n); draw missing variables from their leaf.
    Sample,
    /// Take the first child maximizing log θ_c + e_c (node values from a max-product pass); set
    /// missing variables to the leaf's mode.
    Mpe,
}

/// Children of element `c` at depth `d`: the child node ids of its product (offset by `k`).
fn product_children<'a>(plan: &'a Plan, index: &PlanIndex, d: usize, c: u32) -> (impl Iterator<Item = u32> + 'a, u32) {
    let (pi, row) = index.elems[d][c as usize];
    let part = &plan.depths[d].prods[pi as usize];
    let k = c - part.nids[row as usize];
    let w = part.width as usize;
    (part.cids[row as usize * w..][..w].iter().copied().filter(|&x| x != 0), k)
}

/// Walk sample `b` of the chunk (global sample `s`), writing its values into `out[num_vars]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn walk(
    plan: &Plan,
    index: &PlanIndex,
    params: &Params,
    ev: &Evidence,
    s: usize,
    b: usize,
    ws: &Workspace,
    mode: Walk,
    rng: &mut ChaCha8Rng,
    out: &mut [f32],
) {
    let bc = ws.bc;
    let node_val = |n: u32| ws.node[n as usize * bc + b];
    let mut stack = vec![plan.root];
    let mut scores: Vec<f32> = Vec::new();
    while let Some(n) = stack.pop() {
        match index.nodes[n as usize] {
            NodeRef::Dummy => {}
            NodeRef::Input { layer, seg, local } => {
                let seg: &InputSegment = &plan.inputs[layer as usize].segments[seg as usize];
                let var = seg.var as usize;
                if !ev.is_missing(s, var) {
                    out[var] = ev.value(s, var);
                    continue;
                }
                let np = seg.dist.num_params() as usize;
                let prm = &params.input[seg.param_start as usize + local as usize * np..][..np];
                out[var] = match mode {
                    Walk::Mpe => seg.dist.mode(prm, local).1,
                    Walk::Sample => seg.dist.sample(prm, local, rng),
                };
            }
            NodeRef::Sum { depth, part, row, m } => {
                let d = depth as usize;
                let p = &plan.depths[d].sums[part as usize];
                let (bs, w) = (p.block_size as usize, p.width as usize);
                let count = p.counts[row as usize] as usize;
                let cids = &p.cids[row as usize * w..][..count];
                let base = p.pids[row as usize * w] as usize;
                // Element values from their product's children (the element buffer is reused).
                scores.clear();
                for (i, &c) in cids.iter().enumerate() {
                    let (ch, k) = product_children(plan, index, d, c);
                    let e: f32 = ch.map(|x| node_val(x + k)).sum();
                    scores.push(params.sum[base + i * bs + m as usize].ln() + e);
                }
                let pick = match mode {
                    Walk::Mpe => first_argmax(&scores),
                    Walk::Sample => sample_log_weights(&scores, rng),
                };
                let (ch, k) = product_children(plan, index, d, cids[pick]);
                stack.extend(ch.map(|x| x + k));
            }
        }
    }
}

fn first_argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Draw an index with probability ∝ exp(v_i) (inverse CDF after a max shift).
fn sample_log_weights(v: &[f32], rng: &mut ChaCha8Rng) -> usize {
    let mx = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = v.iter().map(|&x| if x == f32::NEG_INFINITY { 0.0 } else { ((x - mx) as f64).exp() }).collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, &x) in w.iter().enumerate() {
        if u < x {
            return i;
        }
        u -= x;
    }
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0)
}

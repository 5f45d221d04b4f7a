//! Forward passes on one chunk: input layers, product layers and sum layers (log-likelihood as a
//! dense block matrix product over max-shifted exponentials; max-product for MPE).

use super::workspace::Workspace;
use crate::data::Evidence;
use crate::params::Params;
use crate::plan::{Plan, ProdPartition, SumPartition};
use crate::soft::{LeafInput, Observation};

/// Which semiring a forward pass uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Semiring {
    /// log-sum-exp: likelihoods and marginals.
    LogSum,
    /// max-product: MPE.
    Max,
}

/// Evaluate every input node of the chunk `[s0, s0 + bc)`; a missing value gives log 1 (LogSum) or
/// the leaf's maximum (Max), a soft one its weighted likelihood ([`crate::soft`]).
pub(crate) fn inputs(plan: &Plan, params: &Params, table: &[f32], ev: &Evidence, s0: usize, ws: &mut Workspace, sr: Semiring) {
    let bc = ws.bc;
    ws.node[..plan.num_dummy_nodes as usize * bc].fill(0.0);
    for seg in plan.inputs.iter().flat_map(|l| l.segments.iter()) {
        let (np, ns) = (seg.dist.num_params() as usize, seg.dist.num_stats() as usize);
        let var = seg.var as usize;
        for i in 0..seg.num_nodes {
            let prm = &params.input[seg.param_start as usize + i as usize * np..][..np];
            let leaf = LeafInput { dist: seg.dist, tab: &table[seg.flow_start as usize + i as usize * ns..][..ns], local: i };
            let out = Workspace::row_mut(&mut ws.node, seg.node_start + i, bc);
            if sr == Semiring::Max {
                let mode = seg.dist.mode(prm, i).0;
                for (b, o) in out.iter_mut().enumerate() {
                    let s = s0 + b;
                    *o = if ev.is_missing(s, var) { mode } else { seg.dist.log_prob_table(leaf.tab, i, ev.value(s, var)) };
                }
                continue;
            }
            for (b, o) in out.iter_mut().enumerate() {
                *o = leaf.log_lik(&Observation::of(ev, s0 + b, var));
            }
        }
    }
}

/// Products: `e_p = Σ_j m_{c_j}` elementwise inside each block.
pub(crate) fn prods(part: &ProdPartition, ws: &mut Workspace) {
    let (bc, bs, width) = (ws.bc, part.block_size as usize, part.width as usize);
    for (r, &nid) in part.nids.iter().enumerate() {
        let cids = &part.cids[r * width..][..width];
        for k in 0..bs {
            let out = &mut ws.elem[(nid as usize + k) * bc..][..bc];
            out.copy_from_slice(&ws.node[(cids[0] as usize + k) * bc..][..bc]);
            for &c in &cids[1..] {
                if c == 0 {
                    break;
                }
                let src = &ws.node[(c as usize + k) * bc..][..bc];
                out.iter_mut().zip(src).for_each(|(o, s)| *o += s);
            }
        }
    }
}

/// Gather the block's children `[W][bc]` into `ws.x`, shift each sample by its maximum (kept in
/// `ws.max`) and exponentiate.
fn gather_shifted(ws: &mut Workspace, cids: &[u32]) {
    let bc = ws.bc;
    ws.x.resize(cids.len() * bc, 0.0);
    ws.max.fill(f32::NEG_INFINITY);
    for (w, &c) in cids.iter().enumerate() {
        let src = &ws.elem[c as usize * bc..][..bc];
        ws.x[w * bc..][..bc].copy_from_slice(src);
        ws.max.iter_mut().zip(src).for_each(|(m, &v)| *m = m.max(v));
    }
    for w in 0..cids.len() {
        for (x, &m) in ws.x[w * bc..][..bc].iter_mut().zip(&ws.max) {
            *x = if m == f32::NEG_INFINITY { 0.0 } else { (*x - m).exp() };
        }
    }
}

/// Sums: `m_n = M + log Σ_c θ_nc exp(e_c - M)` per block as one `[bs x W] · [W x bc]` product.
pub(crate) fn sums(part: &SumPartition, weights: &[f32], ws: &mut Workspace) {
    let (bc, bs, width) = (ws.bc, part.block_size as usize, part.width as usize);
    for (r, &nid) in part.nids.iter().enumerate() {
        let w_count = part.counts[r] as usize;
        let cids = &part.cids[r * width..][..w_count];
        let base = part.pids[r * width] as usize;
        gather_shifted(ws, cids);
        ws.y.resize(bs * bc, 0.0);
        let theta = &weights[base..base + w_count * bs];
        // SAFETY: theta is [bs x W] with row stride 1 and column stride bs (w_count*bs elements),
        // x is [W x bc] row-major, y is [bs x bc] row-major; all slices have exactly these sizes.
        unsafe {
            matrixmultiply::sgemm(bs, w_count, bc, 1.0, theta.as_ptr(), 1, bs as isize, ws.x.as_ptr(), bc as isize, 1, 0.0, ws.y.as_mut_ptr(), bc as isize, 1);
        }
        for m in 0..bs {
            let out = &mut ws.node[(nid as usize + m) * bc..][..bc];
            for ((o, &y), &mx) in out.iter_mut().zip(&ws.y[m * bc..][..bc]).zip(&ws.max) {
                *o = if y > 0.0 { y.ln() + mx } else { f32::NEG_INFINITY };
            }
        }
    }
}

/// Max-product sums: `m_n = max_c (log θ_nc + e_c)`.
pub(crate) fn sums_max(part: &SumPartition, weights: &[f32], ws: &mut Workspace) {
    let (bc, bs, width) = (ws.bc, part.block_size as usize, part.width as usize);
    for (r, &nid) in part.nids.iter().enumerate() {
        let w_count = part.counts[r] as usize;
        let cids = &part.cids[r * width..][..w_count];
        let base = part.pids[r * width] as usize;
        for m in 0..bs {
            ws.y.clear();
            ws.y.resize(bc, f32::NEG_INFINITY);
            for (w, &c) in cids.iter().enumerate() {
                let lt = weights[base + w * bs + m].ln();
                if lt == f32::NEG_INFINITY {
                    continue;
                }
                let src = &ws.elem[c as usize * bc..][..bc];
                ws.y.iter_mut().zip(src).for_each(|(o, &e)| *o = o.max(lt + e));
            }
            ws.node[(nid as usize + m) * bc..][..bc].copy_from_slice(&ws.y[..bc]);
        }
    }
}

/// The whole forward pass of one chunk.
pub(crate) fn forward(plan: &Plan, params: &Params, table: &[f32], ev: &Evidence, s0: usize, ws: &mut Workspace, sr: Semiring) {
    inputs(plan, params, table, ev, s0, ws, sr);
    for depth in &plan.depths {
        for p in &depth.prods {
            prods(p, ws);
        }
        for s in &depth.sums {
            match sr {
                Semiring::LogSum => sums(s, &params.sum, ws),
                Semiring::Max => sums_max(s, &params.sum, ws),
            }
        }
    }
}

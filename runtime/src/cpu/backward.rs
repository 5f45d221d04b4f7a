//! Backward pass on one chunk: node and element flows top-down, sum-parameter flows and input
//! expected statistics (with the credit for missing values).
//!
//! Flows are linear (`F_n` = expected number of times node `n` is in the induced tree of a sample,
//! scaled by the sample's weight). Per sum block, with `g_m = log F_m - m_m`, `G = max_m g_m`,
//! `Y = exp(g - G)` and `Z_w = exp(e_w + G)`:
//! element flows `F_w += Z_w ⊙ (Θᵀ Y)_w` and parameter flows `PF += Θ ⊙ (Y Zᵀ)`, two dense products.

use super::forward;
use super::workspace::Workspace;
use crate::data::Evidence;
use crate::params::Params;
use crate::plan::{Plan, ProdPartition, SumPartition};
use crate::soft::{LeafInput, Observation};

/// Where the backward pass puts parameter flows and statistics (absent for queries).
pub(crate) struct FlowSink<'a> {
    pub sum: &'a mut [f64],
    pub input: &'a mut [f64],
}

fn sum_backward(part: &SumPartition, weights: &[f32], ws: &mut Workspace, mut sink: Option<&mut FlowSink>) {
    let (bc, bs, width) = (ws.bc, part.block_size as usize, part.width as usize);
    for (r, &nid) in part.nids.iter().enumerate() {
        let w_count = part.counts[r] as usize;
        let cids = &part.cids[r * width..][..w_count];
        let base = part.pids[r * width] as usize;
        // Y [bs x bc] and its per-sample shift G (ws.max).
        ws.y.resize(bs * bc, 0.0);
        ws.max.fill(f32::NEG_INFINITY);
        let mut any = false;
        for m in 0..bs {
            let n = nid as usize + m;
            let (f, v) = (&ws.nflow[n * bc..][..bc], &ws.node[n * bc..][..bc]);
            for b in 0..bc {
                let g = if f[b] > 0.0 && v[b] > f32::NEG_INFINITY { f[b].ln() - v[b] } else { f32::NEG_INFINITY };
                ws.y[m * bc + b] = g;
                if g > ws.max[b] {
                    ws.max[b] = g;
                    any = true;
                }
            }
        }
        if !any {
            continue;
        }
        for m in 0..bs {
            for (y, &g) in ws.y[m * bc..][..bc].iter_mut().zip(&ws.max) {
                *y = if g == f32::NEG_INFINITY { 0.0 } else { (*y - g).exp() };
            }
        }
        // Z [W x bc].
        ws.x.resize(w_count * bc, 0.0);
        for (w, &c) in cids.iter().enumerate() {
            let e = &ws.elem[c as usize * bc..][..bc];
            for ((z, &e), &g) in ws.x[w * bc..][..bc].iter_mut().zip(e).zip(&ws.max) {
                let t = e + g;
                *z = if t > f32::NEG_INFINITY { t.exp() } else { 0.0 };
            }
        }
        let theta = &weights[base..base + w_count * bs];
        // P = Θᵀ Y  [W x bc].
        ws.p.resize(w_count * bc, 0.0);
        // SAFETY: Θᵀ is [W x bs] with row stride bs and column stride 1 inside `theta`; Y is
        // [bs x bc] row-major; P is [W x bc] row-major; sizes match the slices.
        unsafe {
            matrixmultiply::sgemm(w_count, bs, bc, 1.0, theta.as_ptr(), bs as isize, 1, ws.y.as_ptr(), bc as isize, 1, 0.0, ws.p.as_mut_ptr(), bc as isize, 1);
        }
        for (w, &c) in cids.iter().enumerate() {
            let ef = &mut ws.eflow[c as usize * bc..][..bc];
            for ((f, &z), &p) in ef.iter_mut().zip(&ws.x[w * bc..][..bc]).zip(&ws.p[w * bc..][..bc]) {
                *f += z * p;
            }
        }
        if let Some(sink) = sink.as_deref_mut() {
            // Q = Y Zᵀ  [bs x W]; PF[w][m] += θ[m][w] Q[m][w].
            ws.q.resize(bs * w_count, 0.0);
            // SAFETY: Y is [bs x bc] row-major; Zᵀ is [bc x W] read with row stride 1 and column
            // stride bc from Z [W x bc]; Q is [bs x W] row-major.
            unsafe {
                matrixmultiply::sgemm(
                    bs,
                    bc,
                    w_count,
                    1.0,
                    ws.y.as_ptr(),
                    bc as isize,
                    1,
                    ws.x.as_ptr(),
                    1,
                    bc as isize,
                    0.0,
                    ws.q.as_mut_ptr(),
                    w_count as isize,
                    1,
                );
            }
            for w in 0..w_count {
                for m in 0..bs {
                    let i = w * bs + m;
                    sink.sum[base + i] += theta[i] as f64 * ws.q[m * w_count + w] as f64;
                }
            }
        }
    }
}

fn prod_backward(part: &ProdPartition, ws: &mut Workspace) {
    let (bc, bs, width) = (ws.bc, part.block_size as usize, part.width as usize);
    for (r, &nid) in part.nids.iter().enumerate() {
        for &c in &part.cids[r * width..][..width] {
            if c == 0 {
                break;
            }
            for k in 0..bs {
                let src = &ws.eflow[(nid as usize + k) * bc..][..bc];
                let dst = &mut ws.nflow[(c as usize + k) * bc..][..bc];
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // one chunk's inputs: plan, parameters, table, evidence, buffers
fn inputs_backward(plan: &Plan, params: &Params, table: &[f32], ev: &Evidence, s0: usize, ws: &Workspace, sink: &mut FlowSink) {
    let bc = ws.bc;
    for seg in plan.inputs.iter().flat_map(|l| l.segments.iter()) {
        let (np, ns) = (seg.dist.num_params() as usize, seg.dist.num_stats() as usize);
        if ns == 0 {
            continue;
        }
        let var = seg.var as usize;
        for i in 0..seg.num_nodes as usize {
            let slot = seg.flow_start as usize + i * ns;
            let prm = &params.input[seg.param_start as usize + i * np..][..np];
            let leaf = LeafInput { dist: seg.dist, tab: &table[slot..][..ns], local: i as u32 };
            let stats = &mut sink.input[slot..][..ns];
            let flows = &ws.nflow[(seg.node_start as usize + i) * bc..][..bc];
            let mut owed = 0.0;
            for (b, &f) in flows.iter().enumerate() {
                if f != 0.0 {
                    owed += leaf.add_stats(stats, &Observation::of(ev, s0 + b, var), f as f64);
                }
            }
            // The missing-value credit once per leaf and chunk (linear in the flow).
            if owed != 0.0 {
                seg.dist.add_missing(stats, prm, owed);
            }
        }
    }
}

/// Optional per-depth record of element values and flows (diagnostics and tests).
pub(crate) type ElementRecorder<'a> = Option<&'a mut dyn FnMut(usize, &[f32], &[f32])>;

/// Full backward pass of one chunk; the forward pass (log-sum semiring) must have run on `ws`.
/// `root_flow[b]` is the weight of sample `s0 + b`.
#[allow(clippy::too_many_arguments)] // the pass reads everything a chunk owns
pub(crate) fn backward(
    plan: &Plan,
    params: &Params,
    table: &[f32],
    ev: &Evidence,
    s0: usize,
    ws: &mut Workspace,
    root_flow: &[f32],
    mut sink: Option<&mut FlowSink>,
    mut recorder: ElementRecorder,
) {
    let bc = ws.bc;
    ws.nflow.fill(0.0);
    ws.nflow[plan.root as usize * bc..][..bc].copy_from_slice(root_flow);
    for (d, depth) in plan.depths.iter().enumerate().rev() {
        for p in &depth.prods {
            forward::prods(p, ws);
        }
        ws.eflow.fill(0.0);
        for s in &depth.sums {
            sum_backward(s, &params.sum, ws, sink.as_deref_mut());
        }
        if let Some(rec) = recorder.as_deref_mut() {
            rec(d, &ws.elem, &ws.eflow);
        }
        for p in &depth.prods {
            prod_backward(p, ws);
        }
    }
    if let Some(sink) = sink {
        inputs_backward(plan, params, table, ev, s0, ws, sink);
    }
}

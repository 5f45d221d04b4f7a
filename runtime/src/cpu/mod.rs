//! The CPU engine: interprets a [`Plan`] with rayon over chunks of samples.
//!
//! It is the fallback where no GPU is present and the oracle for the GPU engine. Values are f32 in
//! log space; parameter flows and statistics accumulate in f64. Work is split into at most
//! [`MAX_GROUPS`] groups of consecutive samples whatever the thread count, so results are
//! bit-identical from run to run and from machine to machine.

mod backward;
mod forward;
mod memory;
mod traverse;
mod workspace;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::RuntimeError;
use crate::data::Evidence;
use crate::em::check_em_hyper_parameters;
use crate::outputs::{Conditional, Flows, MpeResult};
use crate::params::Params;
use crate::plan::{Domain, Plan};
use backward::FlowSink;
use forward::Semiring;
use traverse::{PlanIndex, Walk};
use workspace::Workspace;

/// Samples per chunk: large enough for efficient block products, small enough for the cache.
pub const CHUNK: usize = 128;
/// Upper bound on the number of independent flow accumulators (and on parallelism).
pub const MAX_GROUPS: usize = 4;

/// Every intermediate buffer of one forward/backward pass, for diagnostics and tests.
/// Buffers are node-major with samples innermost (`node_values[n * num_samples + b]`).
#[derive(Clone, Debug)]
pub struct Trace {
    pub num_samples: usize,
    pub log_likelihoods: Vec<f32>,
    pub node_values: Vec<f32>,
    pub node_flows: Vec<f32>,
    /// Per depth: the element buffer's values and flows after that depth's sum backward.
    pub element_values: Vec<Vec<f32>>,
    pub element_flows: Vec<Vec<f32>>,
    /// Parameter flows and statistics of this pass alone.
    pub flows: Flows,
}

/// The CPU engine: a plan, its parameters and the flows accumulated since the last EM step.
pub struct CpuEngine {
    plan: Plan,
    params: Params,
    flows: Flows,
    index: PlanIndex,
    /// Leaf log-densities' constants ([`Params::leaf_table`]); rebuilt whenever parameters change.
    table: Vec<f32>,
}

fn groups(n: usize) -> Vec<(usize, usize)> {
    let g = n.div_ceil(CHUNK).clamp(1, MAX_GROUPS);
    let per = n.div_ceil(g);
    (0..g).map(|i| (i * per, ((i + 1) * per).min(n))).filter(|(a, b)| a < b).collect()
}

impl CpuEngine {
    /// Build an engine; the parameters are validated against the plan.
    pub fn new(plan: Plan, params: Params) -> Result<CpuEngine, RuntimeError> {
        params.validate(&plan)?;
        let own = memory::flows_bytes(&plan) + 4 * plan.num_input_flows as u64;
        if !memory::fits(own) {
            return Err(memory::too_large("the CPU engine's flow accumulators and leaf table", own));
        }
        let index = PlanIndex::new(&plan);
        let flows = Flows::zeros(&plan);
        let table = params.leaf_table(&plan);
        Ok(CpuEngine { plan, params, flows, index, table })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Replace the parameters (validated).
    pub fn set_params(&mut self, params: Params) -> Result<(), RuntimeError> {
        params.validate(&self.plan)?;
        self.table = params.leaf_table(&self.plan);
        self.params = params;
        Ok(())
    }

    pub fn flows(&self) -> &Flows {
        &self.flows
    }

    /// The accumulated flows, to be replaced by their sum over data-parallel ranks
    /// ([`crate::parallel::Rank::reduce_flows`]) before the EM step.
    pub fn flows_mut(&mut self) -> &mut Flows {
        &mut self.flows
    }

    pub fn zero_flows(&mut self) {
        self.flows = Flows::zeros(&self.plan);
    }

    /// Run `f` on every chunk (in parallel) with a workspace, returning results in sample order.
    /// As many chunks run at once as workspaces fit in the host's available memory (results do
    /// not depend on it); an error when not even one does.
    fn map_chunks<R: Send>(&self, n: usize, with_flows: bool, f: impl Fn(usize, &mut Workspace) -> R + Sync) -> Result<Vec<R>, RuntimeError> {
        let starts: Vec<usize> = (0..n).step_by(CHUNK).collect();
        let per = memory::workspace_bytes(&self.plan, CHUNK.min(n), with_flows);
        let threads = rayon::current_num_threads().min(starts.len()).max(1);
        let Some(k) = (1..=threads).rev().find(|&k| memory::fits(per * k as u64)) else {
            return Err(memory::too_large(format!("the node and element buffers of {} samples", CHUNK.min(n)), per));
        };
        let run = |starts: &[usize]| -> Vec<R> {
            starts
                .par_iter()
                .map_init(
                    || None::<Workspace>,
                    |ws, &s0| {
                        let bc = CHUNK.min(n - s0);
                        let ws = ws.get_or_insert_with(|| Workspace::new(&self.plan, bc, with_flows));
                        ws.set_bc(&self.plan, bc);
                        f(s0, ws)
                    },
                )
                .collect()
        };
        if k == threads {
            return Ok(run(&starts));
        }
        // At most k workspaces alive: k chunks at a time.
        Ok(starts.chunks(k).flat_map(run).collect())
    }

    /// Log-likelihood of every sample; missing values (per sample) are marginalized out, so this
    /// is also the marginal query.
    pub fn log_likelihood(&self, ev: &Evidence) -> Result<Vec<f32>, RuntimeError> {
        ev.validate(&self.plan)?;
        let root = self.plan.root;
        let chunks = self.map_chunks(ev.num_samples(), false, |s0, ws| {
            forward::forward(&self.plan, &self.params, &self.table, ev, s0, ws, Semiring::LogSum);
            Workspace::row(&ws.node, root, ws.bc).to_vec()
        })?;
        Ok(chunks.concat())
    }

    /// Forward and backward on a batch, adding its parameter flows and input statistics to the
    /// engine's accumulators. `weights` (default 1) scale each sample's root flow. Returns the
    /// samples' log-likelihoods.
    pub fn accumulate_flows(&mut self, ev: &Evidence, weights: Option<&[f32]>) -> Result<Vec<f32>, RuntimeError> {
        ev.validate(&self.plan)?;
        let n = ev.num_samples();
        if let Some(w) = weights
            && w.len() != n
        {
            return Err(RuntimeError::WeightsShape { expected: n, found: w.len() });
        }
        let (plan, params, table) = (&self.plan, &self.params, &self.table);
        // Each group holds its own f64 accumulators and a workspace: all groups at once when
        // they fit in the host's memory, else one after another (the same groups in the same
        // order, so the same sums to the bit).
        let per = memory::flows_bytes(plan) + memory::workspace_bytes(plan, CHUNK.min(n), true);
        let groups = groups(n);
        if !memory::fits(per) {
            return Err(memory::too_large("one group's flow accumulators and buffers", per));
        }
        let parallel = memory::fits(per * groups.len() as u64);
        let group = |(a, b): (usize, usize)| {
            let mut acc = Flows::zeros(plan);
            let mut lls = Vec::with_capacity(b - a);
            let mut ws = Workspace::new(plan, CHUNK.min(b - a), true);
            for s0 in (a..b).step_by(CHUNK) {
                let bc = CHUNK.min(b - s0);
                ws.set_bc(plan, bc);
                let root_flow: Vec<f32> = weights.map_or_else(|| vec![1.0; bc], |w| w[s0..s0 + bc].to_vec());
                acc.total += root_flow.iter().map(|&x| x as f64).sum::<f64>();
                forward::forward(plan, params, table, ev, s0, &mut ws, Semiring::LogSum);
                lls.extend_from_slice(Workspace::row(&ws.node, plan.root, bc));
                let mut sink = FlowSink { sum: &mut acc.sum, input: &mut acc.input };
                backward::backward(plan, params, table, ev, s0, &mut ws, &root_flow, Some(&mut sink), None);
            }
            (acc, lls)
        };
        let mut lls = Vec::with_capacity(n);
        if parallel {
            let parts: Vec<(Flows, Vec<f32>)> = groups.into_par_iter().map(group).collect();
            for (f, l) in parts {
                self.flows.add(&f);
                lls.extend(l);
            }
        } else {
            // One group's accumulators alive at a time.
            for g in groups {
                let (f, l) = group(g);
                self.flows.add(&f);
                lls.extend(l);
            }
        }
        Ok(lls)
    }

    /// One EM step from the accumulated flows, which are then cleared:
    /// `θ ← (1−η)θ + η (PF + α/|ch|) / (Σ PF + α)` for sums, and the matching update for every
    /// input distribution. Full-batch EM is `accumulate_flows` over the whole data set, then
    /// `em_step(1.0, α)`.
    pub fn em_step(&mut self, step_size: f32, pseudocount: f32) -> Result<(), RuntimeError> {
        em_update(&self.plan, &mut self.params, &self.flows, step_size, pseudocount)?;
        self.table = self.params.leaf_table(&self.plan);
        self.zero_flows();
        Ok(())
    }

    /// One entropy-regularized EM step ([`crate::entropy`], strength `tau`) from the accumulated
    /// flows, which are then cleared; `tau = 0` is [`CpuEngine::em_step`].
    pub fn em_step_entropy(&mut self, step_size: f32, pseudocount: f32, tau: f32) -> Result<(), RuntimeError> {
        crate::entropy::em_update_entropy(&self.plan, &mut self.params, &self.flows, step_size, pseudocount, tau)?;
        self.table = self.params.leaf_table(&self.plan);
        self.zero_flows();
        Ok(())
    }

    /// `P(x_v | e)` for every variable `v` unobserved in each sample, from linear flows:
    /// `P(x_v = k | e) = Σ_{leaves n of v} F_n p_n(k)`. Returns `[sample][var]`.
    pub fn conditionals(&self, ev: &Evidence) -> Result<Vec<Vec<Conditional>>, RuntimeError> {
        ev.require_hard("conditionals")?;
        ev.validate(&self.plan)?;
        let (plan, params, table) = (&self.plan, &self.params, &self.table);
        let chunks = self.map_chunks(ev.num_samples(), true, |s0, ws| {
            let bc = ws.bc;
            forward::forward(plan, params, table, ev, s0, ws, Semiring::LogSum);
            backward::backward(plan, params, table, ev, s0, ws, &vec![1.0; bc], None, None);
            (0..bc).map(|b| conditionals_of(plan, params, ev, s0 + b, b, ws)).collect::<Vec<_>>()
        })?;
        Ok(chunks.into_iter().flatten().collect())
    }

    /// MPE under evidence: the best induced tree (max-product) and the completion it implies.
    pub fn mpe(&self, ev: &Evidence) -> Result<MpeResult, RuntimeError> {
        ev.require_hard("MPE")?;
        ev.validate(&self.plan)?;
        let (plan, params, index, table) = (&self.plan, &self.params, &self.index, &self.table);
        let nv = plan.num_vars as usize;
        let chunks = self.map_chunks(ev.num_samples(), false, |s0, ws| {
            forward::forward(plan, params, table, ev, s0, ws, Semiring::Max);
            let vals = Workspace::row(&ws.node, plan.root, ws.bc).to_vec();
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let mut out = vec![0.0; ws.bc * nv];
            for b in 0..ws.bc {
                traverse::walk(plan, index, params, ev, s0 + b, b, ws, Walk::Mpe, &mut rng, &mut out[b * nv..][..nv]);
            }
            (vals, out)
        })?;
        let (log_values, assignments): (Vec<_>, Vec<_>) = chunks.into_iter().unzip();
        Ok(MpeResult { log_values: log_values.concat(), assignments: assignments.concat() })
    }

    /// `n` unconditional samples, row-major `[n, num_vars]`; deterministic for a seed.
    pub fn sample(&self, n: usize, seed: u64) -> Result<Vec<f32>, RuntimeError> {
        self.sample_conditional(&Evidence::all_missing(self.plan.num_vars as usize, n), seed)
    }

    /// One sample per evidence row from `P(x_missing | x_observed)`; observed values are kept.
    /// Sample `i` uses its own random stream, so results do not depend on the thread count.
    pub fn sample_conditional(&self, ev: &Evidence, seed: u64) -> Result<Vec<f32>, RuntimeError> {
        ev.require_hard("conditional sampling")?;
        ev.validate(&self.plan)?;
        let (plan, params, index, table) = (&self.plan, &self.params, &self.index, &self.table);
        let nv = plan.num_vars as usize;
        let chunks = self.map_chunks(ev.num_samples(), false, |s0, ws| {
            forward::forward(plan, params, table, ev, s0, ws, Semiring::LogSum);
            let mut out = vec![0.0; ws.bc * nv];
            for b in 0..ws.bc {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream((s0 + b) as u64);
                traverse::walk(plan, index, params, ev, s0 + b, b, ws, Walk::Sample, &mut rng, &mut out[b * nv..][..nv]);
            }
            out
        })?;
        Ok(chunks.concat())
    }

    /// One forward/backward pass over the whole batch as a single chunk, keeping every buffer.
    /// Meant for tests and debugging; flows are returned, not accumulated.
    pub fn trace(&self, ev: &Evidence, weights: Option<&[f32]>) -> Result<Trace, RuntimeError> {
        ev.validate(&self.plan)?;
        let n = ev.num_samples();
        let plan = &self.plan;
        let mut ws = Workspace::new(plan, n.max(1), true);
        let root_flow = weights.map_or_else(|| vec![1.0; n], |w| w.to_vec());
        if root_flow.len() != n {
            return Err(RuntimeError::WeightsShape { expected: n, found: root_flow.len() });
        }
        let mut flows = Flows::zeros(plan);
        flows.total = root_flow.iter().map(|&x| x as f64).sum();
        forward::forward(plan, &self.params, &self.table, ev, 0, &mut ws, Semiring::LogSum);
        let node_values = ws.node.clone();
        let mut element_values = vec![Vec::new(); plan.depths.len()];
        let mut element_flows = vec![Vec::new(); plan.depths.len()];
        let mut rec = |d: usize, e: &[f32], f: &[f32]| {
            element_values[d] = e.to_vec();
            element_flows[d] = f.to_vec();
        };
        let mut sink = FlowSink { sum: &mut flows.sum, input: &mut flows.input };
        backward::backward(plan, &self.params, &self.table, ev, 0, &mut ws, &root_flow, Some(&mut sink), Some(&mut rec));
        Ok(Trace {
            num_samples: n,
            log_likelihoods: Workspace::row(&node_values, plan.root, n).to_vec(),
            node_values,
            node_flows: ws.nflow.clone(),
            element_values,
            element_flows,
            flows,
        })
    }
}

fn conditionals_of(plan: &Plan, params: &Params, ev: &Evidence, s: usize, b: usize, ws: &Workspace) -> Vec<Conditional> {
    let bc = ws.bc;
    let mut out: Vec<Conditional> = plan
        .domains
        .iter()
        .enumerate()
        .map(|(v, d)| match (ev.is_missing(s, v), d) {
            (false, _) => Conditional::Observed,
            (true, Domain::Discrete { num_cats }) => Conditional::Discrete(vec![0.0; *num_cats as usize]),
            (true, Domain::Continuous) => Conditional::Continuous { mean: 0.0, var: 0.0 },
        })
        .collect();
    for seg in plan.inputs.iter().flat_map(|l| l.segments.iter()) {
        let np = seg.dist.num_params() as usize;
        for i in 0..seg.num_nodes {
            let f = ws.nflow[(seg.node_start + i) as usize * bc + b];
            if f == 0.0 {
                continue;
            }
            let prm = &params.input[seg.param_start as usize + i as usize * np..][..np];
            // Continuous variables accumulate raw moments, turned into mean and variance below.
            seg.dist.add_conditional(&mut out[seg.var as usize], prm, i, f);
        }
    }
    for c in out.iter_mut() {
        match c {
            Conditional::Discrete(p) => {
                // Flows sum to one up to rounding; renormalize to remove it.
                let t: f32 = p.iter().sum();
                if t > 0.0 {
                    p.iter_mut().for_each(|q| *q /= t);
                }
            }
            Conditional::Continuous { mean, var } => *var = (*var - *mean * *mean).max(0.0),
            Conditional::Observed => {}
        }
    }
    out
}

/// The EM update shared by every engine: `θ ← (1−η)θ + η (PF + α/|ch|) / (Σ PF + α)` for each
/// untied sum node, the matching update for every input distribution. Rows that received no flow
/// and no pseudocount keep their parameters.
pub fn em_update(plan: &Plan, params: &mut Params, flows: &Flows, step_size: f32, pseudocount: f32) -> Result<(), RuntimeError> {
    check_em_hyper_parameters(step_size, pseudocount)?;
    let (eta, alpha) = (step_size as f64, pseudocount as f64);
    for blk in &plan.em_blocks {
        for m in 0..blk.block_size {
            let idx = |w: u32| (blk.base + w * blk.block_size + m) as usize;
            let total: f64 = (0..blk.width).map(|w| flows.sum[idx(w)]).sum::<f64>() + alpha;
            if total <= 0.0 {
                continue;
            }
            let share = alpha / blk.width as f64;
            for w in 0..blk.width {
                let i = idx(w);
                let old = params.sum[i] as f64;
                params.sum[i] = ((1.0 - eta) * old + eta * (flows.sum[i] + share) / total) as f32;
            }
        }
    }
    for seg in plan.inputs.iter().flat_map(|l| l.segments.iter()).filter(|s| !s.tied) {
        let (np, ns) = (seg.dist.num_params() as usize, seg.dist.num_stats() as usize);
        for i in 0..seg.num_nodes as usize {
            let prm = &mut params.input[seg.param_start as usize + i * np..][..np];
            let stats = &flows.input[seg.flow_start as usize + i * ns..][..ns];
            seg.dist.em_update(prm, stats, eta, alpha);
        }
    }
    Ok(())
}

//! Query kernels: conditionals, MPE (max-product forward and backtracking) and sampling.
//!
//! Everything here is generated from `templates/query_*.cu.tera`, never per edge: leaf kernels per
//! input family (conditional gathers also per largest category count), and one kernel per pass for
//! sums of every partition shape (block size and width are launch arguments, [`KernelArg::Int`]:
//! the queries are off the training path, and this keeps NVRTC time flat). Index tables are shared with the other passes: a table whose
//! contents already exist in the manifest is reused, not uploaded twice. The walks reuse the
//! product kernels of the forward and backward passes (`prod_fwd_*`, `prod_bwd_*`, emitted by the
//! parent module for every product partition shape).

use std::collections::{BTreeSet, HashMap};

use pc_runtime::cuda::{KernelArg, KernelSpec, Manifest, QueryManifest, Step, conditional_slots};
use pc_runtime::dist::{Constants, DistKind};
use pc_runtime::plan::{DepthPlan, InputLayer, Plan, SumPartition};

use super::{BLOCK, EmitError, family_functions, leaf_constants, render};

/// Index tables of the manifest, deduplicated by contents.
struct Tables<'a> {
    m: &'a mut Vec<Vec<u32>>,
    index: HashMap<Vec<u32>, u32>,
}

impl<'a> Tables<'a> {
    fn new(m: &'a mut Vec<Vec<u32>>) -> Self {
        let mut index = HashMap::new();
        for (i, t) in m.iter().enumerate() {
            index.entry(t.clone()).or_insert(i as u32);
        }
        Tables { m, index }
    }
    fn get(&mut self, data: Vec<u32>) -> KernelArg {
        if let Some(&i) = self.index.get(&data) {
            return KernelArg::Table(i);
        }
        let i = self.m.len() as u32;
        self.index.insert(data.clone(), i);
        self.m.push(data);
        KernelArg::Table(i)
    }
}

/// Per-leaf columns of one input layer (or of the leaves of it that a query uses).
#[derive(Default)]
struct Leaves {
    ids: Vec<u32>,
    vars: Vec<u32>,
    /// Leaf-table offset (node `i` of a segment: `flow_start + i * num_stats`), or `i % num_states`
    /// for indicators — the forward pass's `aux`.
    aux: Vec<u32>,
    pstart: Vec<u32>,
    nstats: Vec<u32>,
}

/// One leaf that adds to a conditional: its variable, and how many of the variable's categories it
/// covers (categorical leaves: `min(leaf categories, variable categories)`).
struct CondLeaf {
    var: u32,
    id: u32,
    aux: u32,
    pstart: u32,
    ncat: u32,
}

impl Leaves {
    fn push(&mut self, seg: &pc_runtime::plan::InputSegment, i: u32) {
        self.ids.push(seg.node_start + i);
        self.vars.push(seg.var);
        self.aux.push(seg.dist.kernel_aux(seg.flow_start + i * seg.dist.num_stats(), i));
        self.pstart.push(seg.param_start + i * seg.dist.num_params());
        self.nstats.push(seg.dist.num_stats());
    }
}

/// Emit the query kernels of `plan` and fill `m.queries`. Must run after the parent emitter has
/// rendered the product kernels of every partition shape (the walks launch them).
pub(super) fn emit_queries(t: &tera::Tera, plan: &Plan, source: &mut String, m: &mut Manifest) -> Result<(), EmitError> {
    *source += &render(t, "query_prelude", &tera::Context::new())?;
    for layer in &plan.inputs {
        *source += &family_functions(t, layer.kind, "query")?;
    }
    let mut e = QueryEmitter {
        t,
        source,
        tables: Tables::new(&mut m.tables),
        emitted: BTreeSet::new(),
        q: QueryManifest::default(),
        mpe_leaves: Vec::new(),
        sample_leaves: Vec::new(),
    };
    let (offsets, slots) = conditional_slots(plan);
    for layer in &plan.inputs {
        e.input_layer(plan, layer, &offsets, slots)?;
    }
    // Depths: max-product forward (products as in the forward pass), then the walks top-down.
    let (mut mpe_depths, mut sample_depths) = (Vec::new(), Vec::new());
    for (d, depth) in plan.depths.iter().enumerate() {
        let (mpe, sample) = e.depth(d, depth)?;
        mpe_depths.push(mpe);
        sample_depths.push(sample);
    }
    let mut q = e.q;
    q.mpe_backward = mpe_depths.into_iter().rev().flatten().chain(e.mpe_leaves).collect();
    q.sample_backward = sample_depths.into_iter().rev().flatten().chain(e.sample_leaves).collect();
    m.queries = q;
    Ok(())
}

/// The state of the query passes: the source, the manifest's tables, the kernels rendered, the
/// query manifest so far and the leaf end of both walks (the walks' last steps).
struct QueryEmitter<'a> {
    t: &'a tera::Tera,
    source: &'a mut String,
    tables: Tables<'a>,
    emitted: BTreeSet<String>,
    q: QueryManifest,
    mpe_leaves: Vec<Step>,
    sample_leaves: Vec<Step>,
}

/// A launch over `count` items (leaves or gather entries), one thread per item and sample.
fn leaf_spec(name: String, layer: String, count: u32, args: Vec<KernelArg>) -> KernelSpec {
    KernelSpec { scales_with_batch: true, batch_group: 1, name, layer, count, threads_per_sample: count as u64, block: BLOCK, args, small: None }
}

impl QueryEmitter<'_> {
    /// Render `template` as kernel `name` once.
    fn kernel(&mut self, template: &'static str, name: &str, ctx: &mut tera::Context) -> Result<(), EmitError> {
        if self.emitted.insert(name.to_string()) {
            ctx.insert("name", name);
            *self.source += &render(self.t, template, ctx)?;
        }
        Ok(())
    }

    /// One input layer: max forward, the leaf end of both walks, conditionals.
    fn input_layer(&mut self, plan: &Plan, layer: &InputLayer, offsets: &[u32], slots: u32) -> Result<(), EmitError> {
        let kind = layer.kind.name();
        let mut all = Leaves::default();
        let mut cond: Vec<CondLeaf> = Vec::new();
        for seg in &layer.segments {
            let domain = plan.domains.get(seg.var as usize).copied();
            for i in 0..seg.num_nodes {
                all.push(seg, i);
                // The CPU engine's conditionals_of adds a leaf only where its family matches the
                // variable's domain, and only the categories that exist; leaves it would skip are
                // left out here, so every slot written is inside its variable's range.
                let Some(ncat) = domain.and_then(|d| seg.dist.conditional_slots(i, d)) else { continue };
                let l = all.ids.len() - 1;
                cond.push(CondLeaf { var: seg.var, id: all.ids[l], aux: all.aux[l], pstart: all.pstart[l], ncat });
            }
        }
        let n = all.ids.len() as u32;
        let t = &mut self.tables;
        let (ids, vars, aux, pstart, nstats) = (t.get(all.ids), t.get(all.vars), t.get(all.aux), t.get(all.pstart), t.get(all.nstats));
        let mut ctx = tera::Context::new();
        ctx.insert("kind", kind);
        ctx.insert("pass", "max_fwd");
        // Observed values read the constants as the forward pass does: at the parameter slots, or
        // at the per-leaf index (statistics slots, an indicator's state).
        let (consts, cslot) = if layer.kind.info().constants == Constants::Params { ("prm", "pstart") } else { ("table", "aux") };
        ctx.insert("consts", consts);
        ctx.insert("cslot", cslot);
        let name = format!("input_{kind}_max_fwd");
        self.kernel("query_input", &name, &mut ctx)?;
        use KernelArg as A;
        let args = vec![A::Nodes, A::Data, A::Missing, leaf_constants(layer.kind), A::InputParams, ids, vars, aux, pstart, nstats, A::Count, A::Batch];
        self.q.mpe_forward.push(leaf_spec(name, format!("{kind} inputs"), n, args));
        for pass in ["mpe", "sample"] {
            let mut ctx = tera::Context::new();
            ctx.insert("kind", kind);
            ctx.insert("pass", pass);
            ctx.insert("nv", &plan.num_vars);
            let name = format!("input_{kind}_{pass}");
            self.kernel("query_input", &name, &mut ctx)?;
            let args = vec![
                A::Output,
                A::NodeFlows,
                A::Data,
                A::Missing,
                leaf_constants(layer.kind),
                A::InputParams,
                ids,
                vars,
                aux,
                pstart,
                nstats,
                A::Count,
                A::Batch,
                A::Seed,
                A::SampleOffset,
            ];
            let s = Step::Launch(leaf_spec(name, format!("{kind} inputs"), n, args));
            if pass == "mpe" { self.mpe_leaves.push(s) } else { self.sample_leaves.push(s) }
        }
        if !cond.is_empty() {
            self.conditionals(layer.kind, cond, offsets, slots)?;
        }
        Ok(())
    }

    /// The conditional gather of one input layer: no atomics, one thread per (variable,
    /// category, sample) sums over the variable's leaves of this layer (CSR by variable, leaves
    /// in plan order as the CPU engine adds them). Layers run one after another and each adds to
    /// its own slots.
    fn conditionals(&mut self, dist: DistKind, mut cond: Vec<CondLeaf>, offsets: &[u32], slots: u32) -> Result<(), EmitError> {
        let kind = dist.name();
        cond.sort_by_key(|l| l.var); // stable: plan order within a variable
        let (mut evar, mut eslot, mut encat, mut estart) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut lid, mut laux, mut lpstart, mut lncat) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (j, l) in cond.iter().enumerate() {
            if evar.last() != Some(&l.var) {
                evar.push(l.var);
                eslot.push(offsets[l.var as usize]);
                encat.push(0u32);
                estart.push(j as u32);
            }
            let last = encat.len() - 1;
            encat[last] = encat[last].max(l.ncat);
            lid.push(l.id);
            laux.push(l.aux);
            lpstart.push(l.pstart);
            lncat.push(l.ncat);
        }
        estart.push(cond.len() as u32);
        let kmax = encat.iter().copied().max().unwrap_or(1).max(1);
        let entries = evar.len() as u32;
        let mut ctx = tera::Context::new();
        ctx.insert("kind", kind);
        ctx.insert("pass", "cond");
        ctx.insert("slots", &slots);
        ctx.insert("kmax", &kmax);
        let name = format!("input_{kind}_cond_k{kmax}");
        self.kernel("query_input", &name, &mut ctx)?;
        use KernelArg as A;
        let t = &mut self.tables;
        let (evar, eslot, encat, estart) = (t.get(evar), t.get(eslot), t.get(encat), t.get(estart));
        let (lid, laux, lpstart, lncat) = (t.get(lid), t.get(laux), t.get(lpstart), t.get(lncat));
        let args = vec![
            A::Output,
            A::NodeFlows,
            A::Missing,
            leaf_constants(dist),
            A::InputParams,
            evar,
            eslot,
            encat,
            estart,
            lid,
            laux,
            lpstart,
            lncat,
            A::Count,
            A::Batch,
        ];
        let spec = KernelSpec { threads_per_sample: entries as u64 * kmax as u64, ..leaf_spec(name, format!("{kind} inputs"), entries, args) };
        self.q.conditionals.push(spec);
        Ok(())
    }

    /// Depth `d`: max-product forward launches, and its steps of the MPE and sampling walks.
    fn depth(&mut self, d: usize, depth: &DepthPlan) -> Result<(Vec<Step>, Vec<Step>), EmitError> {
        let (recompute, down) = self.products(d, depth);
        let (mut mpe_sums, mut sample_sums) = (Vec::new(), Vec::new());
        for (p, part) in depth.sums.iter().enumerate() {
            let [mpe, sample] = self.sums(d, p, part)?;
            mpe_sums.push(mpe);
            sample_sums.push(sample);
        }
        let walk = |sums: Vec<Step>| {
            let mut steps = recompute.clone();
            steps.push(Step::ZeroElementFlows);
            steps.extend(sums);
            steps.extend(down.iter().cloned());
            steps
        };
        Ok((walk(mpe_sums), walk(sample_sums)))
    }

    /// Depth `d`'s products: the forward pass's kernels (max forward and recomputed in the
    /// walks) and their flows (the walks' way down).
    fn products(&mut self, d: usize, depth: &DepthPlan) -> (Vec<Step>, Vec<Step>) {
        let (mut recompute, mut down) = (Vec::new(), Vec::new());
        for (p, part) in depth.prods.iter().enumerate() {
            let (nids, cids) = (self.tables.get(part.nids.clone()), self.tables.get(part.cids.clone()));
            let fwd = super::layers::prod_fwd_spec(d, p, part, nids, cids);
            let (count, threads_per_sample, layer) = (fwd.count, fwd.threads_per_sample, fwd.layer.clone());
            self.q.mpe_forward.push(fwd.clone());
            recompute.push(Step::Launch(fwd));
            let args = vec![KernelArg::NodeFlows, KernelArg::ElementFlows, nids, cids, KernelArg::Count, KernelArg::Batch];
            let name = super::layers::prod_bwd_kernel(part).0;
            down.push(Step::Launch(KernelSpec {
                scales_with_batch: true,
                batch_group: 1,
                name,
                layer,
                count,
                threads_per_sample,
                block: BLOCK,
                args,
                small: None,
            }));
        }
        (recompute, down)
    }

    /// One sum partition: its max forward launch, and its MPE and sampling walk steps. One
    /// kernel per pass for every partition shape (block size and width are launch arguments):
    /// the walks are off the training path, and this keeps NVRTC time flat.
    fn sums(&mut self, d: usize, p: usize, part: &SumPartition) -> Result<[Step; 2], EmitError> {
        let t = &mut self.tables;
        let (nids, cids, pids, counts) = (t.get(part.nids.clone()), t.get(part.cids.clone()), t.get(part.pids.clone()), t.get(part.counts.clone()));
        let count = part.nids.len() as u32;
        let threads_per_sample = count as u64 * part.block_size as u64;
        let layer = format!("sums d{d} p{p}");
        let (bs, w) = (KernelArg::Int(part.block_size as i32), KernelArg::Int(part.width as i32));
        let mut walks = Vec::new();
        for pass in ["max_fwd", "mpe", "sample"] {
            let name = format!("sum_{pass}");
            let mut ctx = tera::Context::new();
            ctx.insert("pass", pass);
            self.kernel("query_sum", &name, &mut ctx)?;
            use KernelArg as A;
            let args = match pass {
                "max_fwd" => vec![A::Nodes, A::Elements, A::SumParams, nids, cids, pids, counts, A::Count, A::Batch, bs, w],
                _ => vec![
                    A::ElementFlows,
                    A::NodeFlows,
                    A::Elements,
                    A::SumParams,
                    nids,
                    cids,
                    pids,
                    counts,
                    A::Count,
                    A::Batch,
                    bs,
                    w,
                    A::Seed,
                    A::SampleOffset,
                ],
            };
            let spec =
                KernelSpec { scales_with_batch: true, batch_group: 1, name, layer: layer.clone(), count, threads_per_sample, block: BLOCK, args, small: None };
            match pass {
                "max_fwd" => self.q.mpe_forward.push(spec),
                _ => walks.push(Step::Launch(spec)),
            }
        }
        let sample = walks.pop().expect("three passes");
        let mpe = walks.pop().expect("three passes");
        Ok([mpe, sample])
    }
}

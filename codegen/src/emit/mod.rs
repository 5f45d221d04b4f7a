//! The CUDA emitter: plan → one `.cu` translation unit plus a [`Manifest`].
//!
//! Templates (`templates/*.cu.tera`, embedded at compile time) hold kernel skeletons; the emitter
//! fills in each partition shape's constants (block size, width). Index tables go to device memory
//! through the manifest, so source size grows with the number of distinct shapes, never with the
//! number of edges. This first version emits the forward pass (scalar path).

use pc_runtime::cuda::{KernelArg, KernelSpec, Manifest};
use pc_runtime::plan::{Dist, DistKind, Plan};

const PRELUDE: &str = include_str!("../../../templates/prelude.cu.tera");
const INPUT_FWD: &str = include_str!("../../../templates/input_fwd.cu.tera");
const PROD_FWD: &str = include_str!("../../../templates/prod_fwd.cu.tera");
const SUM_FWD: &str = include_str!("../../../templates/sum_fwd.cu.tera");

/// Threads per CUDA block of every generated kernel.
pub const BLOCK: u32 = 256;

/// Generated source and its manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted {
    pub source: String,
    pub manifest: Manifest,
}

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("template `{template}`: {detail}")]
    Template { template: &'static str, detail: String },
}

fn engine() -> Result<tera::Tera, EmitError> {
    let mut t = tera::Tera::new();
    t.autoescape_on(Vec::<&str>::new());
    for (name, src) in [("prelude", PRELUDE), ("input_fwd", INPUT_FWD), ("prod_fwd", PROD_FWD), ("sum_fwd", SUM_FWD)] {
        t.add_raw_template(name, src).map_err(|e| EmitError::Template { template: name_of(name), detail: format!("{e:?}") })?;
    }
    Ok(t)
}

fn name_of(n: &str) -> &'static str {
    match n {
        "prelude" => "prelude.cu.tera",
        "input_fwd" => "input_fwd.cu.tera",
        "prod_fwd" => "prod_fwd.cu.tera",
        _ => "sum_fwd.cu.tera",
    }
}

fn render(t: &tera::Tera, name: &'static str, ctx: &tera::Context) -> Result<String, EmitError> {
    t.render(name, ctx).map_err(|e| EmitError::Template { template: name_of(name), detail: format!("{e:?}") })
}

/// Emit the forward pass of `plan`.
pub fn emit(plan: &Plan) -> Result<Emitted, EmitError> {
    let t = engine()?;
    let mut source = render(&t, "prelude", &tera::Context::new())?;
    let mut m = Manifest::default();
    // Partitions of the same shape share one kernel: the block count is a launch argument, block
    // size and width stay compile-time constants. This keeps NVRTC time proportional to the
    // number of distinct shapes, not of partitions.
    let mut emitted = std::collections::BTreeSet::new();
    let table = |m: &mut Manifest, data: Vec<u32>| {
        m.tables.push(data);
        KernelArg::Table(m.tables.len() as u32 - 1)
    };
    for layer in &plan.inputs {
        let kind = match layer.kind {
            DistKind::Categorical => "categorical",
            DistKind::Bernoulli => "bernoulli",
            DistKind::Gaussian => "gaussian",
            DistKind::Indicator => "indicator",
        };
        let (mut ids, mut vars, mut aux) = (Vec::new(), Vec::new(), Vec::new());
        for seg in &layer.segments {
            for i in 0..seg.num_nodes {
                ids.push(seg.node_start + i);
                vars.push(seg.var);
                aux.push(match seg.dist {
                    Dist::Indicator { num_states } => i % num_states,
                    d => seg.flow_start + i * d.num_stats(),
                });
            }
        }
        let name = format!("input_{kind}_fwd");
        let mut ctx = tera::Context::new();
        ctx.insert("name", &name);
        ctx.insert("kind", kind);
        source += &render(&t, "input_fwd", &ctx)?;
        let n = ids.len() as u64;
        let args = vec![
            KernelArg::Nodes,
            KernelArg::Data,
            KernelArg::Missing,
            KernelArg::LeafTable,
            table(&mut m, ids),
            table(&mut m, vars),
            table(&mut m, aux),
            KernelArg::Count,
            KernelArg::Batch,
        ];
        m.forward.push(KernelSpec { name, layer: format!("{kind} inputs"), count: n as u32, threads_per_sample: n, block: BLOCK, args });
    }
    for (d, depth) in plan.depths.iter().enumerate() {
        for (p, part) in depth.prods.iter().enumerate() {
            let name = format!("prod_fwd_bs{}_w{}", part.block_size, part.width);
            if emitted.insert(name.clone()) {
                let mut ctx = tera::Context::new();
                ctx.insert("name", &name);
                ctx.insert("bs", &part.block_size);
                ctx.insert("width", &part.width);
                source += &render(&t, "prod_fwd", &ctx)?;
            }
            let args = vec![KernelArg::Elements, KernelArg::Nodes, table(&mut m, part.nids.clone()), table(&mut m, part.cids.clone()), KernelArg::Count, KernelArg::Batch];
            let threads_per_sample = part.nids.len() as u64 * part.block_size as u64;
            m.forward.push(KernelSpec { name, layer: format!("products d{d} p{p}"), count: part.nids.len() as u32, threads_per_sample, block: BLOCK, args });
        }
        for (p, part) in depth.sums.iter().enumerate() {
            let name = format!("sum_fwd_bs{}_w{}", part.block_size, part.width);
            if emitted.insert(name.clone()) {
                let mut ctx = tera::Context::new();
                ctx.insert("name", &name);
                ctx.insert("bs", &part.block_size);
                ctx.insert("cbs", &part.child_block_size);
                ctx.insert("width", &part.width);
                source += &render(&t, "sum_fwd", &ctx)?;
            }
            let args = vec![
                KernelArg::Nodes,
                KernelArg::Elements,
                KernelArg::SumParams,
                table(&mut m, part.nids.clone()),
                table(&mut m, part.cids.clone()),
                table(&mut m, part.pids.clone()),
                KernelArg::Count,
                KernelArg::Batch,
            ];
            let threads_per_sample = part.nids.len() as u64 * part.block_size as u64;
            m.forward.push(KernelSpec { name, layer: format!("sums d{d} p{p}"), count: part.nids.len() as u32, threads_per_sample, block: BLOCK, args });
        }
    }
    Ok(Emitted { source, manifest: m })
}

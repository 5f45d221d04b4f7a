//! The CUDA emitter: plan → one `.cu` translation unit plus a [`Manifest`].
//!
//! Templates (`templates/*.cu.tera`, embedded at compile time) hold kernel skeletons; the emitter
//! fills in each partition shape's constants (block size, width). Index tables go to device memory
//! through the manifest, so source size grows with the number of distinct shapes, never with the
//! number of edges. This first version emits the forward pass (scalar path).

mod fuse;
pub mod mma;
pub mod mma_bwd;
pub mod persistent;

pub use mma::{EmitOptions, Precision};
mod queries;

use pc_runtime::cuda::{KernelArg, KernelSpec, Manifest, Step};
use pc_runtime::plan::{Dist, DistKind, Plan};

const PRELUDE: &str = include_str!("../../../templates/prelude.cu.tera");
const INPUT_FWD: &str = include_str!("../../../templates/input_fwd.cu.tera");
const PROD_FWD: &str = include_str!("../../../templates/prod_fwd.cu.tera");
const SUM_FWD: &str = include_str!("../../../templates/sum_fwd.cu.tera");
const SUM_FWD_SMALL: &str = include_str!("../../../templates/sum_fwd_small.cu.tera");
const SUM_BWD: &str = include_str!("../../../templates/sum_bwd.cu.tera");
const PROD_BWD: &str = include_str!("../../../templates/prod_bwd.cu.tera");
const INPUT_BWD: &str = include_str!("../../../templates/input_bwd.cu.tera");
const EM: &str = include_str!("../../../templates/em.cu.tera");
const FWD_PERSISTENT: &str = include_str!("../../../templates/fwd_persistent.cu.tera");

/// Threads per CUDA block of every generated kernel.
pub const BLOCK: u32 = 256;

/// Widest sum partition with a small-batch variant: its child values are staged in shared memory
/// (4 bytes each, 16 KiB at most); wider partitions run their batch kernel at every batch size.
pub const SMALL_MAX_WIDTH: u32 = 4096;

/// Nodes per CUDA block of a small-batch sum kernel: one per warp of a [`BLOCK`]-thread block.
const SMALL_NODES_PER_BLOCK: u32 = BLOCK / 32;

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
    for (name, src) in [
        ("prelude", PRELUDE),
        ("input_fwd", INPUT_FWD),
        ("prod_fwd", PROD_FWD),
        ("sum_fwd", SUM_FWD),
        ("sum_fwd_small", SUM_FWD_SMALL),
        ("sum_bwd", SUM_BWD),
        ("prod_bwd", PROD_BWD),
        ("input_bwd", INPUT_BWD),
        ("em", EM),
        ("fwd_persistent", FWD_PERSISTENT),
    ] {
        t.add_raw_template(name, src).map_err(|e| EmitError::Template { template: name_of(name), detail: format!("{e:?}") })?;
    }
    Ok(t)
}

fn name_of(n: &str) -> &'static str {
    match n {
        "prelude" => "prelude.cu.tera",
        "input_fwd" => "input_fwd.cu.tera",
        "prod_fwd" => "prod_fwd.cu.tera",
        "sum_fwd" => "sum_fwd.cu.tera",
        "sum_fwd_small" => "sum_fwd_small.cu.tera",
        "sum_bwd" => "sum_bwd.cu.tera",
        "prod_bwd" => "prod_bwd.cu.tera",
        "em" => "em.cu.tera",
        "fwd_persistent" => "fwd_persistent.cu.tera",
        _ => "input_bwd.cu.tera",
    }
}

fn render(t: &tera::Tera, name: &'static str, ctx: &tera::Context) -> Result<String, EmitError> {
    t.render(name, ctx).map_err(|e| EmitError::Template { template: name_of(name), detail: format!("{e:?}") })
}

/// Emit the forward pass of `plan` (fp32: scalar kernels everywhere).
pub fn emit(plan: &Plan) -> Result<Emitted, EmitError> {
    emit_with(plan, &EmitOptions::default())
}

/// Source bytes after which the layer kernels start a new translation unit (before a partition's
/// kernels): NVRTC compiles the units in parallel (`pc_runtime::cuda::split_units`), so its time
/// follows the largest unit. A few kernels; each unit costs NVRTC a fixed ~0.1 s on top.
const UNIT_BYTES: usize = 12_000;

/// A new unit `name` when the current one (from `start`) has grown past [`UNIT_BYTES`].
fn next_unit(source: &mut String, start: &mut usize, name: &str) {
    if source.len() - *start > UNIT_BYTES {
        *start = source.len();
        unit(source, name);
    }
}

/// Open translation unit `name` (every unit shares the text before the first one).
fn unit(source: &mut String, name: &str) {
    if !source.ends_with('\n') {
        source.push('\n');
    }
    *source += pc_runtime::cuda::UNIT_MARKER;
    *source += name;
    source.push('\n');
}

/// Emit with `opts`: with tf32/bf16 precision, sum partitions of block size ≥ 16 run forward on
/// tensor cores ([`mma`]).
pub fn emit_with(plan: &Plan, opts: &EmitOptions) -> Result<Emitted, EmitError> {
    let t = engine()?;
    let mut source = render(&t, "prelude", &tera::Context::new())?;
    let mut m = Manifest::default();
    // Partitions of the same shape share one kernel: the block count is a launch argument, block
    // size and width stay compile-time constants. This keeps NVRTC time proportional to the
    // number of distinct shapes, not of partitions.
    let mut emitted = std::collections::BTreeSet::new();
    let mut input_bwd: Vec<Step> = Vec::new();
    // Per depth, backward steps in launch order (assembled top-down at the end).
    let mut depth_bwd: Vec<Vec<Step>> = Vec::new();
    // Rows of the forward maxima buffer (`KernelArg::SumMax`): one per sum block on tensor cores.
    let mut max_rows = 0u32;
    // Packed weights of the tensor-core forward (`KernelArg::PackedWeights`) and their kernels,
    // which run after the EM kernels.
    let (mut packed_words, mut packs) = (0u64, Vec::new());
    let table = |m: &mut Manifest, data: Vec<u32>| {
        m.tables.push(data);
        KernelArg::Table(m.tables.len() as u32 - 1)
    };
    // The tensor-core helpers go to the head that every translation unit shares (see `unit`).
    if plan.depths.iter().flat_map(|d| &d.sums).any(|p| mma::MmaShape::for_partition(opts.precision, p.block_size, p.width).is_some()) {
        source += mma_bwd::MMA_CORE;
        emitted.insert("mma_core".to_string());
    }
    let mut unit_start = source.len();
    unit(&mut source, "inputs");
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
        let nstats: Vec<u32> = layer.segments.iter().flat_map(|s| std::iter::repeat_n(s.dist.num_stats(), s.num_nodes as usize)).collect();
        let (ids, vars, aux) = (table(&mut m, ids), table(&mut m, vars), table(&mut m, aux));
        if layer.kind != DistKind::Indicator {
            let bname = format!("input_{kind}_bwd");
            let mut ctx = tera::Context::new();
            ctx.insert("name", &bname);
            ctx.insert("kind", kind);
            source += &render(&t, "input_bwd", &ctx)?;
            let nst = table(&mut m, nstats);
            let args = vec![
                KernelArg::InputStats,
                KernelArg::NodeFlows,
                KernelArg::Data,
                KernelArg::Missing,
                KernelArg::LeafTable,
                ids,
                vars,
                aux,
                nst,
                KernelArg::Count,
                KernelArg::Batch,
            ];
            input_bwd.push(Step::Launch(KernelSpec {
                scales_with_batch: true,
                name: bname,
                layer: format!("{kind} inputs"),
                count: n as u32,
                threads_per_sample: n,
                block: BLOCK,
                args,
                small: None,
            }));
        }
        let args = vec![KernelArg::Nodes, KernelArg::Data, KernelArg::Missing, KernelArg::LeafTable, ids, vars, aux, KernelArg::Count, KernelArg::Batch];
        m.forward.push(KernelSpec { scales_with_batch: true, name, layer: format!("{kind} inputs"), count: n as u32, threads_per_sample: n, block: BLOCK, args, small: None });
    }
    for (d, depth) in plan.depths.iter().enumerate() {
        let (mut recompute, mut sum_bwd, mut prod_bwd) = (Vec::new(), Vec::new(), Vec::new());
        let fused = fuse::fused_children(depth, SMALL_MAX_WIDTH);
        let first_prod = m.forward.len();
        for (p, part) in depth.prods.iter().enumerate() {
            next_unit(&mut source, &mut unit_start, &format!("d{d}p{p}"));
            let name = format!("prod_fwd_bs{}_w{}", part.block_size, part.width);
            shape_kernel(&t, &mut emitted, &mut source, "prod_fwd", &name, part.block_size, part.width, None)?;
            let (nids, cids) = (table(&mut m, part.nids.clone()), table(&mut m, part.cids.clone()));
            let args = vec![KernelArg::Elements, KernelArg::Nodes, nids, cids, KernelArg::Count, KernelArg::Batch];
            let threads_per_sample = part.nids.len() as u64 * part.block_size as u64;
            let spec = KernelSpec { scales_with_batch: true, name, layer: format!("products d{d} p{p}"), count: part.nids.len() as u32, threads_per_sample, block: BLOCK, args, small: None };
            recompute.push(Step::Launch(spec.clone()));
            m.forward.push(spec);
            let bname = format!("prod_bwd_bs{}_w{}", part.block_size, part.width);
            shape_kernel(&t, &mut emitted, &mut source, "prod_bwd", &bname, part.block_size, part.width, None)?;
            let args = vec![KernelArg::NodeFlows, KernelArg::ElementFlows, nids, cids, KernelArg::Count, KernelArg::Batch];
            prod_bwd.push(Step::Launch(KernelSpec { scales_with_batch: true, name: bname, layer: format!("products d{d} p{p}"), count: part.nids.len() as u32, threads_per_sample, block: BLOCK, args, small: None }));
        }
        if fused.is_some() {
            // Small batches skip this depth's product launches: the sums below form the elements.
            for spec in &mut m.forward[first_prod..] {
                spec.small = Some(Box::new(KernelSpec { threads_per_sample: 0, small: None, ..spec.clone() }));
            }
        }
        // The tensor-core element flows store instead of adding where no element of this depth
        // has two parent sum blocks.
        let exclusive_elements = distinct_nonzero(&depth.sums.iter().flat_map(|s| s.cids.iter().copied()).collect::<Vec<_>>());
        for (p, part) in depth.sums.iter().enumerate() {
            next_unit(&mut source, &mut unit_start, &format!("d{d}s{p}"));
            let name = format!("sum_fwd_bs{}_w{}", part.block_size, part.width);
            let (nids, cids, pids) = (table(&mut m, part.nids.clone()), table(&mut m, part.cids.clone()), table(&mut m, part.pids.clone()));
            let args = vec![KernelArg::Nodes, KernelArg::Elements, KernelArg::SumParams, nids, cids, pids, KernelArg::Count, KernelArg::Batch];
            let threads_per_sample = part.nids.len() as u64 * part.block_size as u64;
            let count = part.nids.len() as u32;
            // Batches of up to SMALL_BATCH samples run a warp-per-node variant (`_small`, or
            // `_fused` with the depth's products folded in), whatever the precision.
            let small = (part.width <= SMALL_MAX_WIDTH).then(|| -> Result<KernelSpec, EmitError> {
                // Products of this depth fused in (see `fuse`), or read from the element buffer.
                let (kname, pw, args) = match &fused {
                    Some(f) => {
                        let (pw, fc) = &f[p];
                        let fc = table(&mut m, fc.clone());
                        let args = vec![KernelArg::Nodes, KernelArg::SumParams, nids, cids, pids, fc, KernelArg::Count, KernelArg::Batch];
                        (format!("sum_fwd_bs{}_w{}_p{pw}_fused", part.block_size, part.width), *pw, args)
                    }
                    None => (format!("{name}_small"), 0, args.clone()),
                };
                if emitted.insert(kname.clone()) {
                    let mut ctx = tera::Context::new();
                    ctx.insert("name", &kname);
                    ctx.insert("bs", &part.block_size);
                    ctx.insert("width", &part.width);
                    ctx.insert("pw", &pw);
                    ctx.insert("npb", &SMALL_NODES_PER_BLOCK);
                    source += &render(&t, "sum_fwd_small", &ctx)?;
                }
                // One CUDA block per (sum block, tile of nodes, sample).
                let tiles = part.block_size.div_ceil(SMALL_NODES_PER_BLOCK) as u64;
                Ok(KernelSpec {
                    name: kname,
                    layer: format!("sums d{d} p{p}"),
                    count,
                    threads_per_sample: count as u64 * tiles * BLOCK as u64,
                    scales_with_batch: true,
                    block: BLOCK,
                    args,
                    small: None,
                })
            });
            let small = small.transpose()?;
            let layer = format!("sums d{d} p{p}");
            // The tensor-core kernels see runs of blocks over the same children as one block
            // (`mma::MmaPart`): a partition may become two launches (merged runs, the rest), each
            // with its own tables; small batches run the partition's small-batch variant once.
            // (Merging keeps a block size that is a multiple of 16: one test for every part.)
            if mma::MmaShape::for_partition(opts.precision, part.block_size, part.width).is_some() {
                let parts = mma::MmaPart::split(part);
                let excl = mma_bwd::Exclusive { elements: exclusive_elements, params: distinct_nonzero(&part.pids) };
                let has_small = small.is_some();
                let mut small = small.map(Box::new);
                for (i, mp) in parts.iter().enumerate() {
                    let moff = max_rows;
                    let tables = match parts.len() == 1 && mp.group() == 1 {
                        true => [nids, cids, pids],
                        false => [table(&mut m, mp.nids.clone()), table(&mut m, mp.cids.clone()), table(&mut m, mp.pids.clone())],
                    };
                    next_unit(&mut source, &mut unit_start, &format!("d{d}s{p}f{i}"));
                    let [mut spec, pack] = mma::sum_forward(opts, mp, &mut emitted, &mut source, layer.clone(), tables, moff, packed_words)?.expect("every part of a tensor-core partition is one");
                    packed_words += pack.threads_per_sample;
                    packs.push(pack);
                    // The first launch carries the partition's small-batch variant (which covers every
                    // block); the others then skip small batches (a variant with no threads).
                    spec.small = match (i, has_small) {
                        (0, _) => small.take(),
                        (_, true) => Some(Box::new(KernelSpec { threads_per_sample: 0, small: None, ..spec.clone() })),
                        (_, false) => None,
                    };
                    m.forward.push(spec);
                    max_rows += mp.count();
                    next_unit(&mut source, &mut unit_start, &format!("d{d}s{p}b{i}"));
                    let specs = mma_bwd::sum_backward(opts.precision, mp, &mut emitted, &mut source, &layer, tables, moff, excl)?.expect("the forward's shape");
                    sum_bwd.extend(specs.map(Step::Launch));
                }
                continue;
            }
            shape_kernel(&t, &mut emitted, &mut source, "sum_fwd", &name, part.block_size, part.width, Some(part.child_block_size))?;
            let mut spec = KernelSpec { scales_with_batch: true, name, layer: layer.clone(), count, threads_per_sample, block: BLOCK, args, small: None };
            spec.small = small.map(Box::new);
            m.forward.push(spec);
            let bname = format!("sum_bwd_bs{}_w{}", part.block_size, part.width);
            shape_kernel(&t, &mut emitted, &mut source, "sum_bwd", &bname, part.block_size, part.width, None)?;
            let args = |out: KernelArg| vec![out, KernelArg::Nodes, KernelArg::NodeFlows, KernelArg::Elements, KernelArg::SumParams, nids, cids, pids, KernelArg::Count, KernelArg::Batch];
            let edges = part.nids.len() as u64 * part.width as u64;
            let layer = format!("sums d{d} p{p}");
            sum_bwd.push(Step::Launch(KernelSpec {
                scales_with_batch: true,
                name: format!("{bname}_eflow"),
                layer: layer.clone(),
                count,
                threads_per_sample: edges,
                block: BLOCK,
                args: args(KernelArg::ElementFlows),
                small: None,
            }));
            sum_bwd.push(Step::Launch(KernelSpec {
                scales_with_batch: false,
                name: format!("{bname}_pflow"),
                layer,
                count,
                // One CUDA block per (block, child) pair; it loops over nodes and samples.
                threads_per_sample: edges * BLOCK as u64,
                block: BLOCK,
                args: args(KernelArg::SumFlows),
                small: None,
            }));
        }
        let mut steps = recompute;
        steps.push(Step::ZeroElementFlows);
        steps.extend(sum_bwd);
        steps.extend(prod_bwd);
        depth_bwd.push(steps);
    }
    m.backward = depth_bwd.into_iter().rev().flatten().chain(input_bwd).collect();
    m.sum_max_rows = max_rows;
    unit(&mut source, "em");
    emit_em(plan, &t, &mut source, &mut m)?;
    m.em.extend(packs);
    m.packed_words = packed_words;
    m.precision = opts.precision;
    unit(&mut source, "queries");
    queries::emit_queries(plan, &mut source, &mut m)?;
    if let Some((p, shapes, layout)) = persistent::build(plan, plan.inputs.len() as u32) {
        unit(&mut source, pc_runtime::cuda::PERSISTENT_UNIT);
        let mut ctx = tera::Context::new();
        ctx.insert("name", &p.kernel);
        ctx.insert("threads", &persistent::THREADS);
        ctx.insert("fast_warps", &persistent::FAST_WARPS);
        ctx.insert("producers", &persistent::PRODUCER_WARPS);
        ctx.insert("prefetch_cap", &persistent::PREFETCH_CAP);
        ctx.insert("max_batch", &pc_runtime::cuda::SMALL_BATCH);
        ctx.insert("shapes", &shapes);
        ctx.insert("task_words", &pc_runtime::cuda::TASK_WORDS);
        ctx.insert("inline_deps", &pc_runtime::cuda::INLINE_DEPS);
        ctx.insert("cached_tasks", &p.cached_tasks);
        ctx.insert("off_red", &layout.off_red);
        ctx.insert("off_smx", &layout.off_smx);
        ctx.insert("off_gen", &layout.off_gen);
        ctx.insert("off_bnd", &layout.off_bnd);
        ctx.insert("off_task", &layout.off_task);
        ctx.insert("off_plist", &layout.off_plist);
        ctx.insert("off_ids", &layout.off_ids);
        ctx.insert("ids_words", &layout.ids_words);
        ctx.insert("off_ci", &layout.off_ci);
        ctx.insert("ci_words", &layout.ci_words);
        ctx.insert("off_out", &layout.off_out);
        ctx.insert("out_floats", &layout.out_floats);
        ctx.insert("off_ev", &layout.off_ev);
        ctx.insert("ev_floats", &layout.ev_floats);
        ctx.insert("off_slot", &layout.off_slot);
        ctx.insert("slot_bytes", &layout.slot_bytes);
        source += &render(&t, "fwd_persistent", &ctx)?;
        m.persistent = Some(p);
    }
    Ok(Emitted { source, manifest: m })
}

/// True when no nonzero id occurs twice (0 is padding).
fn distinct_nonzero(ids: &[u32]) -> bool {
    let mut v: Vec<u32> = ids.iter().copied().filter(|&i| i != 0).collect();
    v.sort_unstable();
    v.windows(2).all(|w| w[0] != w[1])
}

/// Render the kernel `name` of one partition shape from `template`, once per distinct name.
#[allow(clippy::too_many_arguments)] // the template's constants
fn shape_kernel(
    t: &tera::Tera,
    emitted: &mut std::collections::BTreeSet<String>,
    source: &mut String,
    template: &'static str,
    name: &str,
    block_size: u32,
    width: u32,
    child_block_size: Option<u32>,
) -> Result<(), EmitError> {
    if emitted.insert(name.to_string()) {
        let mut ctx = tera::Context::new();
        ctx.insert("name", name);
        ctx.insert("bs", &block_size);
        ctx.insert("width", &width);
        if let Some(cbs) = child_block_size {
            ctx.insert("cbs", &cbs);
        }
        *source += &render(t, template, &ctx)?;
    }
    Ok(())
}

/// EM kernels: one for all sum rows, one per leaf family with parameters (untied leaves only).
fn emit_em(plan: &Plan, t: &tera::Tera, source: &mut String, m: &mut Manifest) -> Result<(), EmitError> {
    let mut kinds = Vec::new();
    let mut specs = Vec::new();
    let (mut start, mut stride, mut width) = (Vec::new(), Vec::new(), Vec::new());
    for b in &plan.em_blocks {
        for node in 0..b.block_size {
            start.push(b.base + node);
            stride.push(b.block_size);
            width.push(b.width);
        }
    }
    let rows = start.len() as u64;
    let mut table = |data: Vec<u32>| {
        m.tables.push(data);
        KernelArg::Table(m.tables.len() as u32 - 1)
    };
    let args = vec![KernelArg::SumParams, KernelArg::SumFlows, table(start), table(stride), table(width), KernelArg::Count, KernelArg::StepSize, KernelArg::Pseudocount];
    specs.push(KernelSpec { scales_with_batch: false, name: "em_sums".into(), layer: "sum EM".into(), count: rows as u32, threads_per_sample: rows, block: BLOCK, args, small: None });
    for layer in &plan.inputs {
        let kind = match layer.kind {
            DistKind::Categorical => "categorical",
            DistKind::Bernoulli => "bernoulli",
            DistKind::Gaussian => "gaussian",
            DistKind::Indicator => continue,
        };
        let (mut pstart, mut aux, mut nstats, mut min_sigma) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for seg in layer.segments.iter().filter(|s| !s.tied) {
            for i in 0..seg.num_nodes {
                pstart.push(seg.param_start + i * seg.dist.num_params());
                aux.push(seg.flow_start + i * seg.dist.num_stats());
                nstats.push(seg.dist.num_stats());
                // f32 bits in the u32 table; the kernel reads them as floats.
                min_sigma.push(match seg.dist {
                    Dist::Gaussian { min_sigma } => min_sigma.to_bits(),
                    _ => 0,
                });
            }
        }
        let n = pstart.len() as u64;
        kinds.push(kind);
        let args = vec![
            KernelArg::InputParams,
            KernelArg::LeafTable,
            KernelArg::InputStats,
            table(pstart),
            table(aux),
            table(nstats),
            table(min_sigma),
            KernelArg::Count,
            KernelArg::StepSize,
            KernelArg::Pseudocount,
        ];
        // Categorical leaves: a warp per leaf (coalesced rows); other families: a thread per leaf.
        let threads = if layer.kind == DistKind::Categorical { 32 * n } else { n };
        specs.push(KernelSpec { scales_with_batch: false, name: format!("em_{kind}"), layer: format!("{kind} EM"), count: n as u32, threads_per_sample: threads, block: BLOCK, args, small: None });
    }
    let mut ctx = tera::Context::new();
    ctx.insert("kinds", &kinds);
    *source += &render(t, "em", &ctx)?;
    m.em = specs;
    Ok(())
}

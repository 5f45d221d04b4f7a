//! The CUDA emitter: plan → one `.cu` translation unit plus a [`Manifest`].
//!
//! Templates (`templates/*.cu.tera`, embedded at compile time) hold kernel skeletons; the emitter
//! fills in each partition shape's constants (block size, width). Index tables go to device memory
//! through the manifest, so source size grows with the number of distinct shapes, never with the
//! number of edges. Every pass is emitted: forward, flows, EM, queries and the persistent
//! small-batch forward, with scalar fp32 or tensor-core sum kernels; the source is cut into
//! translation units that NVRTC compiles in parallel.

mod cuts;
mod fuse;
mod layers;
pub mod mma;
pub mod mma_bwd;
pub mod persistent;

pub use mma::{EmitOptions, Precision};
mod queries;

use pc_runtime::cuda::{KernelArg, KernelSpec, Manifest};
use pc_runtime::dist::{Constants, DistKind};
use pc_runtime::plan::Plan;

/// Every layer template, registered under its name in the one tera instance of an emission
/// ([`engine`]; includes resolve across them): (name, file under `templates/`, text).
const TEMPLATES: [(&str, &str, &str); 23] = [
    ("prelude", "prelude.cu.tera", include_str!("../../../templates/prelude.cu.tera")),
    ("input_fwd", "input_fwd.cu.tera", include_str!("../../../templates/input_fwd.cu.tera")),
    ("prod_fwd", "prod_fwd.cu.tera", include_str!("../../../templates/prod_fwd.cu.tera")),
    ("sum_fwd", "sum_fwd.cu.tera", include_str!("../../../templates/sum_fwd.cu.tera")),
    ("sum_fwd_small", "sum_fwd_small.cu.tera", include_str!("../../../templates/sum_fwd_small.cu.tera")),
    ("sum_bwd", "sum_bwd.cu.tera", include_str!("../../../templates/sum_bwd.cu.tera")),
    ("prod_bwd", "prod_bwd.cu.tera", include_str!("../../../templates/prod_bwd.cu.tera")),
    ("input_bwd", "input_bwd.cu.tera", include_str!("../../../templates/input_bwd.cu.tera")),
    ("input_cat_fwd_rows", "input_cat_fwd_rows.cu.tera", include_str!("../../../templates/input_cat_fwd_rows.cu.tera")),
    ("input_mass", "input_mass.cu.tera", include_str!("../../../templates/input_mass.cu.tera")),
    ("input_cat_bwd_mma", "input_cat_bwd_mma.cu.tera", include_str!("../../../templates/input_cat_bwd_mma.cu.tera")),
    ("input_cat_bwd_sorted", "input_cat_bwd_sorted.cu.tera", include_str!("../../../templates/input_cat_bwd_sorted.cu.tera")),
    ("em", "em.cu.tera", include_str!("../../../templates/em.cu.tera")),
    ("fwd_persistent", "fwd_persistent.cu.tera", include_str!("../../../templates/fwd_persistent.cu.tera")),
    ("sum_fwd_pack", "sum_fwd_pack.cu.tera", include_str!("../../../templates/sum_fwd_pack.cu.tera")),
    ("sum_fwd_mma", "sum_fwd_mma.cu.tera", include_str!("../../../templates/sum_fwd_mma.cu.tera")),
    ("sum_fwd_gemm", "sum_fwd_gemm.cu.tera", include_str!("../../../templates/sum_fwd_gemm.cu.tera")),
    ("sum_bwd_mma", "sum_bwd_mma.cu.tera", include_str!("../../../templates/sum_bwd_mma.cu.tera")),
    ("sum_bwd_eflow_staged", "sum_bwd_eflow_staged.cu.tera", include_str!("../../../templates/sum_bwd_eflow_staged.cu.tera")),
    ("sum_bwd_pflow_staged", "sum_bwd_pflow_staged.cu.tera", include_str!("../../../templates/sum_bwd_pflow_staged.cu.tera")),
    ("query_prelude", "query_prelude.cu.tera", include_str!("../../../templates/query_prelude.cu.tera")),
    ("query_input", "query_input.cu.tera", include_str!("../../../templates/query_input.cu.tera")),
    ("query_sum", "query_sum.cu.tera", include_str!("../../../templates/query_sum.cu.tera")),
];
/// The tensor-core helpers, in the head every translation unit shares where some sum partition
/// runs on tensor cores (no template constants: appended as is).
const MMA_CORE: &str = include_str!("../../../templates/mma_core.cu.tera");
/// The engine's copy of a byte dataset's rows into a pass's inputs (`pcc_stage_u8`); no
/// parameters, so it is appended as is to the first unit.
const STAGE_U8: &str = include_str!("../../../templates/stage_u8.cu.tera");

/// Every leaf family's device functions, `templates/dist/<family>.cu.tera` (keyword, file, text):
/// the layer templates call `pcc_<family>_logp`, `_stats`, `_em`, … and know nothing else about a
/// family. Registered as `dist/<family>`; a family missing here is a render error.
const FAMILY_TEMPLATES: [(&str, &str, &str); 5] = [
    ("categorical", "dist/categorical.cu.tera", include_str!("../../../templates/dist/categorical.cu.tera")),
    ("bernoulli", "dist/bernoulli.cu.tera", include_str!("../../../templates/dist/bernoulli.cu.tera")),
    ("gaussian", "dist/gaussian.cu.tera", include_str!("../../../templates/dist/gaussian.cu.tera")),
    ("indicator", "dist/indicator.cu.tera", include_str!("../../../templates/dist/indicator.cu.tera")),
    ("binomial", "dist/binomial.cu.tera", include_str!("../../../templates/dist/binomial.cu.tera")),
];

/// Threads per CUDA block of every generated kernel.
pub const BLOCK: u32 = 256;

/// Widest sum partition with a small-batch variant: its child values are staged in shared memory
/// (4 bytes each, one to eight samples in 32 KiB); wider partitions run their batch kernel at every
/// batch size.
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

/// The one tera instance of an emission: every layer template ([`TEMPLATES`]) and every leaf
/// family's (`dist/<family>`).
fn engine() -> Result<tera::Tera, EmitError> {
    let mut t = tera::Tera::new();
    t.autoescape_on(Vec::<&str>::new());
    t.add_raw_templates(TEMPLATES.iter().map(|(name, _, src)| (*name, *src)))
        .map_err(|e| EmitError::Template { template: "templates/*.cu.tera", detail: format!("{e:?}") })?;
    add_family_templates(&mut t)?;
    Ok(t)
}

/// Register every family's template as `dist/<family>`.
fn add_family_templates(t: &mut tera::Tera) -> Result<(), EmitError> {
    for (family, file, src) in FAMILY_TEMPLATES {
        t.add_raw_template(&format!("dist/{family}"), src).map_err(|e| EmitError::Template { template: file, detail: format!("{e:?}") })?;
    }
    Ok(())
}

/// The device functions of `kind`'s leaves in `section`: `leaf` (forward, statistics, EM; in the
/// head every translation unit shares) or `query` (after the query prelude, whose Philox draws
/// they use).
fn family_functions(t: &tera::Tera, kind: DistKind, section: &str) -> Result<String, EmitError> {
    let name = kind.name();
    let file = FAMILY_TEMPLATES.iter().find(|f| f.0 == name).map_or("dist/", |f| f.1);
    let mut ctx = tera::Context::new();
    ctx.insert("section", section);
    t.render(&format!("dist/{name}"), &ctx).map_err(|e| EmitError::Template { template: file, detail: format!("{e:?}") })
}

/// The file of template `n` (error messages).
fn name_of(n: &str) -> &'static str {
    TEMPLATES.iter().find(|t| t.0 == n).map_or("templates/", |t| t.1)
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

/// Emit with `opts`: with tf32/bf16 precision, sum partitions of block size ≥ 16 run on tensor
/// cores ([`mma`], [`mma_bwd`]). The passes are [`layers::Emitter`]'s.
pub fn emit_with(plan: &Plan, opts: &EmitOptions) -> Result<Emitted, EmitError> {
    let mut e = layers::Emitter::new(plan, opts)?;
    for layer in &plan.inputs {
        e.input_layer(layer)?;
    }
    for (d, depth) in plan.depths.iter().enumerate() {
        e.depth(d, depth)?;
    }
    e.finish(plan)
}

/// Where a leaf family's kernels read their constants (`FamilyInfo::constants`). Categorical
/// leaves read their probabilities and take the logarithm themselves (a table of
/// log-probabilities would be as large as the parameters: 0.77 GiB on hclt1024); Bernoulli,
/// Gaussian and Binomial leaves read the table the EM kernels refresh (`KernelArg::LeafTable`, at
/// their statistics' slots), which the engine allocates only when some kernel binds it; leaves
/// without constants (indicators) are passed their parameters, unread.
fn leaf_constants(kind: DistKind) -> KernelArg {
    match kind.info().constants {
        Constants::Params | Constants::None => KernelArg::InputParams,
        Constants::Table => KernelArg::LeafTable,
    }
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
    let mut leaves = Vec::new();
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
    let args = vec![
        KernelArg::SumParams,
        KernelArg::SumFlows,
        table(start),
        table(stride),
        table(width),
        KernelArg::Count,
        KernelArg::StepSize,
        KernelArg::Pseudocount,
    ];
    specs.push(KernelSpec {
        scales_with_batch: false,
        batch_group: 1,
        name: "em_sums".into(),
        layer: "sum EM".into(),
        count: rows as u32,
        threads_per_sample: rows,
        block: BLOCK,
        args,
        small: None,
    });
    for layer in &plan.inputs {
        // Families without parameters (indicators) learn nothing.
        if layer.segments.iter().all(|s| s.dist.num_params() == 0) {
            continue;
        }
        let info = layer.kind.info();
        let kind = info.name;
        // A warp per leaf updates parameters that are also the constants; a thread per leaf also
        // refreshes the leaf table (and builds it when the engine starts).
        let skeleton = match (info.em_lanes, info.constants) {
            (32, Constants::Params) => "warp",
            (1, Constants::Table) => "thread",
            (lanes, constants) => {
                return Err(EmitError::Template { template: "em.cu.tera", detail: format!("no EM kernel for {kind} leaves ({lanes} lanes, {constants:?})") });
            }
        };
        let (mut pstart, mut aux, mut nstats, mut min_sigma) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for seg in layer.segments.iter().filter(|s| !s.tied) {
            for i in 0..seg.num_nodes {
                pstart.push(seg.param_start + i * seg.dist.num_params());
                aux.push(seg.flow_start + i * seg.dist.num_stats());
                nstats.push(seg.dist.num_stats());
                // The family's per-leaf constant (Gaussian σ floor, binomial trials) as f32 bits
                // in the u32 table; the kernel reads them as floats.
                min_sigma.push(seg.dist.kernel_constant().to_bits());
            }
        }
        let n = pstart.len() as u64;
        leaves.push(std::collections::BTreeMap::from([("kind", kind), ("skeleton", skeleton)]));
        // Leaves with parameters as constants keep no table (their kernels take the logarithm).
        let leaf_table = (skeleton == "thread").then_some(KernelArg::LeafTable);
        let args = [KernelArg::InputParams].into_iter().chain(leaf_table).chain([
            KernelArg::InputStats,
            table(pstart),
            table(aux),
            table(nstats),
            table(min_sigma),
            KernelArg::Count,
            KernelArg::StepSize,
            KernelArg::Pseudocount,
        ]);
        let args = args.collect();
        // A warp per leaf (coalesced rows of many parameters) or a thread per leaf.
        let threads = info.em_lanes as u64 * n;
        specs.push(KernelSpec {
            scales_with_batch: false,
            batch_group: 1,
            name: format!("em_{kind}"),
            layer: format!("{kind} EM"),
            count: n as u32,
            threads_per_sample: threads,
            block: BLOCK,
            args,
            small: None,
        });
    }
    let mut ctx = tera::Context::new();
    ctx.insert("leaves", &leaves);
    *source += &render(t, "em", &ctx)?;
    m.em = specs;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family's template renders both sections and defines the functions the layer
    /// templates call; a family or section without a template is a render error.
    #[test]
    fn every_family_defines_its_device_functions() {
        let t = engine().unwrap();
        for kind in DistKind::ALL {
            let (n, info) = (kind.name(), kind.info());
            let leaf = family_functions(&t, kind, "leaf").unwrap();
            let mut want = vec!["logp"];
            if kind != DistKind::Indicator {
                want.push("stats");
                want.push(if info.em_lanes == 32 { "em_warp" } else { "em" });
            }
            for f in want {
                assert_eq!(leaf.matches(&format!(" pcc_{n}_{f}(")).count(), 1, "{n}: pcc_{n}_{f}");
            }
            let query = family_functions(&t, kind, "query").unwrap();
            for f in ["max", "cond", "mode", "sample"] {
                assert_eq!(query.matches(&format!(" pcc_{n}_{f}(")).count(), 1, "{n}: pcc_{n}_{f}");
            }
            assert!(family_functions(&t, kind, "forward").is_err(), "{n}: an unknown section is an error");
        }
        assert!(t.render("dist/poisson", &tera::Context::new()).is_err(), "an unknown family is an error");
    }
}

//! Tensor-core (mma) sum-layer backward kernels (`templates/sum_bwd_mma.cu.tera`, helpers in
//! `templates/mma_core.cu.tera`), used wherever the forward of a partition runs on tensor cores
//! ([`super::mma::MmaShape::for_partition`]): they scale by the forward maximum of each block and
//! sample, which only that kernel writes.
//!
//! Per sum block of `BS` nodes over `W` children, with `G[m][b] = F[m][b]·exp(M_b − v[m][b])` and
//! `X[w][b] = exp(e[c_w][b] − M_b)`:
//! - element flows `F_c += X ⊙ (Θᵀ·G)`: a `W × B` output, `K = BS`; CUDA block = (sum block, tile
//!   of `TR` children, batch tiles of [`TN`] samples split as in the forward);
//! - parameter flows `PF += Θ ⊙ (G·Xᵀ)`: a `BS × W` output, `K` = the batch in chunks of 32;
//!   CUDA block = (sum block, tile of `TM` nodes, tile of [`PC`] children).
//!
//! Parameter-flow launches with fewer CUDA blocks than [`K_SPLIT_CTAS`] (the few-block depths
//! near an HCLT's root: two sum blocks of 512 nodes give 64 of them, each walking the whole batch
//! alone) also split their K loop, the batch, into slices ([`k_split`], the last kernel
//! argument), whose partial sums meet in atomics; a launch of one slice keeps the exclusive
//! stores. (The element flows' K split, over a block's nodes, made ptxas spill: not done.)
//!
//! Both stage operand chunks through registers: the loads of chunk k + 1 are issued before the
//! mma of chunk k (`pcc_fetch`) and stored to shared memory after it (`pcc_put`), so their
//! latency hides behind the tensor-core work, with several resident CUDA blocks per SM on top.
//!
//! Warp grids follow the forward's ([`super::mma::MmaShape`]): `1 × 4` warps for 16-row tiles,
//! `4 × 2` (256 threads) for 128, else `2 × 2`, each warp a grid of m16n8 accumulators.
//! Bounds: every global index is the scalar kernel's (`nids/cids/pids[r·W + w]` for `w < W`,
//! node rows `n0 + m` for `m < BS`, samples `b < B`); staged words stay below `KCW < LD`.

use pc_runtime::cuda::{KernelArg, KernelSpec, Precision};

use super::EmitError;
use super::mma::{MAX_SPLIT, MmaPart, MmaShape, TARGET_CTAS, block_label, warps};

/// Samples per batch tile of the element-flow kernel.
pub const TN: u32 = 64;
/// Children per tile of the parameter-flow kernel.
pub const PC: u32 = 64;
/// Batch samples per staged chunk of the parameter-flow kernel (tf32 stages a word per value:
/// half the chunk keeps its staging registers, and so the kernel, spill-free).
fn p_kc(precision: Precision) -> u32 {
    if precision == Precision::Bf16 { 32 } else { 16 }
}

/// A launch with fewer CUDA blocks than this splits its K loop over several blocks (their sums
/// then meet in atomics): about two resident blocks on each SM of an H100/H200, one wave.
pub const K_SPLIT_CTAS: u32 = super::mma::WAVE_CTAS;
/// The batch the parameter flows' K split is sized for (the training batch of the benchmarks).
pub const K_SPLIT_BATCH: u32 = 512;
/// At most this many K slices, and at least two K chunks per slice: more slices add atomics (one
/// per output and slice) faster than they add parallel work.
pub const MAX_K_SPLIT: u32 = 8;

/// K slices of a launch of `ctas` CUDA blocks whose K loop has `chunks` chunks: 1 unless the
/// launch is short of [`K_SPLIT_CTAS`] (the few-block depths at the top of an HCLT's tree, whose
/// launches otherwise run on a few SMs, each walking the whole K loop alone).
pub fn k_split(ctas: u32, chunks: u32) -> u32 {
    if ctas >= K_SPLIT_CTAS {
        return 1;
    }
    K_SPLIT_CTAS.div_ceil(ctas.max(1)).min(MAX_K_SPLIT).min(chunks / 2).max(1)
}

/// `__launch_bounds__` minimum blocks per SM of the backward kernels: 2 of 256 threads, 3 of 128
/// (up to 168 registers: a thread holds its accumulators and the next chunk's operands, loaded
/// during the current chunk's mma).
fn bwd_min_blocks(threads: u32) -> u32 {
    if threads >= 256 { 2 } else { 3 }
}

/// A `rows × cols` tile's warp grid ([`warps`]): threads, warps along the columns, m16 and n8
/// tiles per warp.
fn warp_grid(rows: u32, cols: u32) -> (u32, u32, u32, u32) {
    let (wm, wn) = warps(rows);
    (32 * wm * wn, wn, rows / wm / 16, cols / wn / 8)
}

/// The tile shape of one partition's backward kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BwdShape {
    pub precision: Precision,
    pub block_size: u32,
    /// Nodes per original block (see [`MmaPart`]).
    pub sub: u32,
    pub width: u32,
    /// Children per element-flow tile (rows) and the K chunk over the block's nodes.
    pub er: u32,
    pub e_kc: u32,
    /// Nodes per parameter-flow tile (rows).
    pub pm: u32,
    /// The staged backward (bf16 partitions of the two-kernel forward): G left as bf16 by
    /// `_gflow`, parameter flows from staged operands (`templates/sum_bwd_pflow_staged.cu.tera`).
    pub staged: bool,
}

impl BwdShape {
    /// `staged`: the partition's forward stages its children (`_x`), so the backward may too
    /// (bf16 only: tf32 keeps a word per value, which the staged G rows have no room for).
    pub fn for_part(precision: Precision, part: &MmaPart, staged: bool) -> Option<BwdShape> {
        let (block_size, width) = (part.block_size, part.width);
        MmaShape::for_partition(precision, block_size, width)?;
        let er = [128, 64, 32].into_iter().find(|&t| width >= t).unwrap_or(16);
        // tf32 stages a word per value: half the chunk keeps the prefetched next chunk in registers.
        let e_kc = block_size.min(p_kc(precision));
        let pm = [128, 64, 32, 16].into_iter().find(|t| block_size.is_multiple_of(*t)).expect("16 divides block_size");
        let staged = staged && precision == Precision::Bf16;
        Some(BwdShape { precision, block_size, sub: part.sub, width, er, e_kc, pm, staged })
    }

    pub fn kernel_name(&self) -> String {
        let s = if self.staged { "_s" } else { "" };
        format!("sum_bwd_{}_bs{}_w{}{s}", self.precision, block_label(self.block_size, self.sub), self.width)
    }

    /// Child tiles of the element-flow kernel and of the parameter-flow kernel, node tiles of the latter.
    fn tiles(&self) -> (u32, u32, u32) {
        (self.width.div_ceil(self.er), self.width.div_ceil(PC), self.block_size / self.pm)
    }

    fn render(&self, t: &tera::Tera) -> Result<String, EmitError> {
        let mut ctx = tera::Context::new();
        ctx.insert("name", &self.kernel_name());
        ctx.insert("prec", self.precision.name());
        ctx.insert("bf16", if self.precision == Precision::Bf16 { "true" } else { "false" });
        ctx.insert("bs", &self.block_size);
        ctx.insert("sub", &self.sub);
        ctx.insert("group", &(self.block_size / self.sub));
        ctx.insert("width", &self.width);
        ctx.insert("staged", &self.staged);
        // The forward's packed weights (the staged element flows' A operand): its node tiles and
        // child chunks.
        let fwd = MmaShape::for_partition(self.precision, self.block_size, self.width).expect("a tensor-core shape");
        ctx.insert("f_tm", &fwd.tm);
        ctx.insert("f_kc", &fwd.kc);
        ctx.insert("tn", &TN);
        let (et, ewn, emf, enf) = warp_grid(self.er, TN);
        ctx.insert("er", &self.er);
        ctx.insert("e_kc", &self.e_kc);
        ctx.insert("e_threads", &et);
        ctx.insert("e_minb", &bwd_min_blocks(et));
        ctx.insert("e_wn", &ewn);
        ctx.insert("e_mf", &emf);
        ctx.insert("e_nf", &enf);
        let (pt, pwn, pmf, pnf) = warp_grid(self.pm, PC);
        ctx.insert("pm", &self.pm);
        ctx.insert("pc", &PC);
        ctx.insert("p_kc", &p_kc(self.precision));
        ctx.insert("p_threads", &pt);
        // The parameter-flow staging holds more loads per pair (flow, value, maximum): 3 blocks of
        // 128 threads (≤ 168 registers) keep it spill-free.
        ctx.insert("p_minb", &bwd_min_blocks(pt));
        ctx.insert("p_wn", &pwn);
        ctx.insert("p_mf", &pmf);
        ctx.insert("p_nf", &pnf);
        super::render(t, "sum_bwd_mma", &ctx)
    }
}

/// Where a partition's backward writes without atomics.
#[derive(Clone, Copy, Debug)]
pub(super) struct Exclusive {
    /// No other sum block of the depth has one of this partition's children.
    pub elements: bool,
    /// No two blocks of this partition share a parameter (no tied sums inside it).
    pub params: bool,
}

/// What a staged backward takes from its partition's two-kernel forward.
pub(super) struct StagedForward<'a> {
    /// The staging launch `<fwd>_x`, run again before the parameter flows.
    pub stage: &'a KernelSpec,
    /// The partition's first packed weight word (the element flows read the packed weights).
    pub poff: KernelArg,
}

/// The launches of one partition's backward on tensor cores in order (G in place, element flows,
/// for a staged backward the forward's staging kernel again, parameter flows), rendering the
/// kernels the first time they are seen; `None`: the partition stays on the scalar backward.
/// `moff`: the partition's first row of the forward maxima; `staged`: the partition's two-kernel
/// forward, whose packed weights and staging kernel a bf16 backward uses.
#[allow(clippy::too_many_arguments)] // the launch's tables and placement
pub(super) fn sum_backward(
    t: &tera::Tera,
    precision: Precision,
    part: &MmaPart,
    emitted: &mut std::collections::BTreeSet<String>,
    source: &mut String,
    layer: &str,
    tables: [KernelArg; 3],
    moff: u32,
    excl: Exclusive,
    staged: Option<StagedForward>,
) -> Result<Option<Vec<KernelSpec>>, EmitError> {
    let Some(shape) = BwdShape::for_part(precision, part, staged.is_some()) else {
        return Ok(None);
    };
    let name = shape.kernel_name();
    if emitted.insert(name.clone()) {
        *source += &shape.render(t)?;
    }
    let count = part.count();
    let (rt, ct, mt) = shape.tiles();
    let [nids, cids, pids] = tables;
    let args = |out: KernelArg, excl: bool, ksplit: Option<u32>| {
        vec![
            out,
            KernelArg::NodeFlows,
            KernelArg::Elements,
            KernelArg::SumParams,
            KernelArg::SumMax,
            nids,
            cids,
            pids,
            KernelArg::Count,
            KernelArg::Batch,
            KernelArg::Int(moff as i32),
            KernelArg::Int(excl as i32),
        ]
        .into_iter()
        .chain(ksplit.map(|k| KernelArg::Int(k as i32)))
        .collect::<Vec<_>>()
    };
    let launch = |name: String, threads: u64, scales_with_batch: bool, block: u32, args: Vec<KernelArg>| KernelSpec {
        name,
        layer: layer.to_string(),
        count,
        threads_per_sample: threads,
        scales_with_batch,
        batch_group: 1,
        block,
        args,
        small: None,
    };
    // Element flows: (block, child tile) pairs split over the batch tiles like the forward.
    let items = count * rt;
    let split = TARGET_CTAS.div_ceil(items.max(1)).clamp(1, MAX_SPLIT);
    let (et, ..) = warp_grid(shape.er, TN);
    let (pt, ..) = warp_grid(shape.pm, PC);
    let ethreads = items as u64 * split as u64 * et as u64;
    // Parameter flows: (block, node tile, child tile), split over the batch (K) likewise; the
    // number of K chunks is the batch's, known only at run time: sized for [`K_SPLIT_BATCH`].
    let pitems = count * mt * ct;
    let pks = k_split(pitems, K_SPLIT_BATCH.div_ceil(p_kc(precision)));
    let pthreads = pitems as u64 * pks as u64 * pt as u64;
    let gflow_args = vec![KernelArg::NodeFlows, KernelArg::Nodes, KernelArg::SumMax, nids, KernelArg::Count, KernelArg::Batch, KernelArg::Int(moff as i32)];
    let Some(StagedForward { stage, poff }) = staged.filter(|_| shape.staged) else {
        let eflow = launch(format!("{name}_eflow"), ethreads, false, et, args(KernelArg::ElementFlows, excl.elements, None));
        let pflow = launch(format!("{name}_pflow"), pthreads, false, pt, args(KernelArg::SumFlows, excl.params, Some(pks)));
        // G in place first (thread = block, node, sample).
        let gflow = launch(format!("{name}_gflow"), count as u64 * shape.block_size as u64, true, 256, gflow_args);
        return Ok(Some(vec![gflow, eflow, pflow]));
    };
    // Staged: G as bf16 (CUDA block = block and node), element flows from the packed weights
    // and G, the children staged again by the forward's kernel (its maxima kept: moff −1), then
    // the parameter flows' product.
    let gflow = launch(format!("{name}_gflow"), count as u64 * shape.block_size as u64 * 256, false, 256, gflow_args);
    let eargs = vec![
        KernelArg::ElementFlows,
        KernelArg::NodeFlows,
        KernelArg::Elements,
        KernelArg::PackedWeights,
        KernelArg::SumMax,
        nids,
        cids,
        KernelArg::Count,
        KernelArg::Batch,
        KernelArg::Int(moff as i32),
        poff,
        KernelArg::Int(excl.elements as i32),
    ];
    let eflow = launch(format!("{name}_eflow"), ethreads, false, et, eargs);
    let mut restage = stage.clone();
    restage.layer = format!("{layer} (staged children)");
    restage.small = None;
    *restage.args.last_mut().expect("the staging launch's moff") = KernelArg::Int(-1);
    let pargs = vec![
        KernelArg::SumFlows,
        KernelArg::NodeFlows,
        KernelArg::XStage,
        KernelArg::SumParams,
        nids,
        cids,
        pids,
        KernelArg::Count,
        KernelArg::Batch,
        KernelArg::Int(excl.params as i32),
        KernelArg::Int(pks as i32),
    ];
    let pflow = launch(format!("{name}_pflow"), pthreads, false, pt, pargs);
    Ok(Some(vec![gflow, eflow, restage, pflow]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_split_fills_one_wave_only_where_a_launch_is_short_of_it() {
        // Launches of a wave or more keep one slice (their exclusive stores).
        assert_eq!(k_split(K_SPLIT_CTAS, 16), 1);
        assert_eq!(k_split(5000, 16), 1);
        // Two 512-node blocks: 64 parameter-flow tiles at batch 512 (16 chunks) split 5 ways.
        assert_eq!(k_split(64, 16), 5);
        // Never more than MAX_K_SPLIT slices, nor fewer than two chunks per slice.
        assert_eq!(k_split(1, 64), MAX_K_SPLIT);
        assert_eq!(k_split(1, 4), 2);
        assert_eq!(k_split(1, 3), 1);
        assert_eq!(k_split(0, 1), 1);
        for ctas in 0..600 {
            for chunks in 0..40 {
                let ks = k_split(ctas, chunks);
                assert!((1..=MAX_K_SPLIT).contains(&ks));
                assert!(ks == 1 || 2 * ks <= chunks, "{ctas} {chunks}: {ks}");
            }
        }
    }
}

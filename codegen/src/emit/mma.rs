//! Tensor-core (mma) sum-layer forward kernels with bf16 or tf32 operands and fp32 accumulation
//! (`templates/sum_fwd_mma.cu.tera`).
//!
//! A sum block of `BS` nodes over `W` children computes, per sample `b`,
//! `out[m,b] = M_b + log Σ_w θ[pids[w] + m] · exp(elem[cids[w], b] − M_b)`, `M_b = max_w elem[cids[w], b]`:
//! a matrix product `D = A · X` with `A[m][w] = θ` (`BS × W`) and `X[w][b] = exp(e − M)` (`W × B`).
//!
//! Kernel design (all shapes are template constants):
//! - 128 threads (4 warps) per CUDA block, 256 for 128-node tiles. Block `x` owns node tile
//!   `(x / S) % NT` of sum block `r = x / (S · NT)` and the batch tiles `x % S, x % S + S, ...` of
//!   `TB = 64` samples ([`SHORT_TB`] = 32 where even 8 blocks per node tile leave a launch
//!   short of a wave); the launch has `count · NT · S` blocks whatever the batch
//!   (`scales_with_batch = false`), with `S ≤ 512 / TB` chosen so that about [`TARGET_CTAS`] blocks run
//!   (a depth often has few sum blocks: its node tiles run in parallel, not one after another).
//!   Blocks with no batch tile (small batches) exit at once.
//! - Per batch tile and node tile of `TM` nodes (the largest of 128/64/32/16 dividing `BS`), the
//!   children are consumed in chunks of `KC` (≤ 32, a multiple of the mma K) staged to shared
//!   memory: `θ` and `exp(e − M)` computed in fp32, then rounded (`cvt.rn.bf16x2.f32` /
//!   `cvt.rna.tf32.f32`). Children past `W` get weight 0 and `X = 0`. `M_b` is a running maximum
//!   (online log-sum-exp): each chunk's values are loaded once, its column maxima combined in
//!   shared memory (`NTH/TB` threads per sample), and where `M_b` grows the column's
//!   accumulators are rescaled by `exp(M_old − M_new)` before the chunk's mma (a separate maxima
//!   pass read every child twice, with its dependent loads few in flight).
//! - Warps form a `WM × WN` grid (`1 × 4` for `TM = 16`, `4 × 2` for 128, else `2 × 2`); a warp owns `MF × NF`
//!   m16n8 accumulator tiles and issues `mma.sync.aligned.m16n8k16...bf16` or `m16n8k8...tf32`.
//! - `__launch_bounds__(threads, min_blocks)` so that ptxas keeps everything in registers (see
//!   [`MmaShape::min_blocks`]); 128-node tiles use 256 threads (8 warps, `4 × 2`) so that a
//!   thread holds 32 accumulators, not 64.
//! - Epilogue: `M_b + log D`, or −inf where `M_b = −inf` (all children −inf) or `D ≤ 0`, exactly as
//!   the scalar kernel; samples past `B` are neither read nor written.
//!
//! Bounds (every index the kernel forms; `LD = KCW + 4`, `WM·WTM = TM`, `WN·WTN = TB`):
//! - `sA[i·LD + kp]` (bf16) / `sA[i·LD + 2kp + {0,1}]` (tf32): `i < TM`, `kp < KC/2`, so the word is
//!   `< KCW < LD`; fragment loads use rows `wm·WTM + mi·16 + g + {0,8} ≤ TM − 1` and words
//!   `ks·8 + t + {0,4} ≤ 8·KC/KSTEP − 1 = KCW − 1`. `sX` likewise with rows `j < TB` and
//!   columns `wn·WTN + ni·8 + g ≤ TB − 1`; `sMp[kh][j]` with `kh < NTH/TB`, `sM[col]`, `col < TB`.
//! - Global: `cids/pids[r·W + k]` only for `r < n_blocks`, `k < W`; `elem[cids·B + b]` and
//!   `node[(nid + m)·B + b]` only for `b < B` and `m < BS`; `params[pids + m]` only for `k < W`,
//!   `m < BS` (the scalar kernel's indices). The replay in `tests` checks the same by
//!   construction (every staged word written before it is read, every output written once).
//!
//! Shared memory per block: `(TM + TB) · (KCW + 4)` words plus `(NTH/TB + 1) · TB` floats, at
//! most `(128 + 64) · 36 · 4 + 5 · 64 · 4 = 28,928` bytes (tf32, `KC = 32`, 256 threads); bf16
//! packs two k per word (`KCW = KC / 2`). The fragment layouts and bank analysis are in the template's header comment;
//! `tests` replays the kernel's index arithmetic on the CPU against a plain matrix product.

pub use pc_runtime::cuda::Precision;
use pc_runtime::cuda::{KernelArg, KernelSpec};
use pc_runtime::plan::SumPartition;

use super::EmitError;

/// Options of [`super::emit_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmitOptions {
    /// Operand precision of the sum forward kernels (default fp32: scalar everywhere).
    pub precision: Precision,
}

/// Samples per batch tile.
pub const TB: u32 = 64;
/// Samples per batch tile of a launch short of a wave ([`WAVE_CTAS`]): twice the batch tiles
/// to spread over CUDA blocks, where a depth has too few sum blocks to fill the GPU.
pub const SHORT_TB: u32 = 32;
/// About two resident CUDA blocks on each SM of an H100/H200: a launch with fewer is short of
/// one wave (the few-block depths near an HCLT's root).
pub const WAVE_CTAS: u32 = 264;
/// About this many CUDA blocks per launch (count × split), enough to fill an H100/H200.
pub const TARGET_CTAS: u32 = 2048;
/// At most this many blocks share one sum block's batch tiles.
pub const MAX_SPLIT: u32 = 8;

/// Rows of a merged block at most: `PCC_MERGE_ROWS=256` (two 128-node tiles) merges pd256's
/// regions (8 blocks of 32 over one child list) into one block, whose children no other block
/// reads (the two-kernel forward and the staged backward); opt-in until a GPU self-check has run
/// it, [`DEFAULT_GROUP_ROWS`] otherwise (read at emission, so the kernel cache keeps the variants
/// apart by their source).
const MAX_GROUP_ROWS: u32 = 256;
/// Rows of a merged block at most unless `PCC_MERGE_ROWS` says otherwise (the largest node tile).
const DEFAULT_GROUP_ROWS: u32 = 128;

fn max_group_rows() -> u32 {
    match std::env::var("PCC_MERGE_ROWS").ok().and_then(|v| v.parse::<u32>().ok()) {
        Some(r) if r.is_power_of_two() && (16..=MAX_GROUP_ROWS).contains(&r) => r,
        _ => DEFAULT_GROUP_ROWS,
    }
}

/// A sum partition as the tensor-core kernels see it: runs of `g` blocks over the same children,
/// with consecutive nodes, merged into one block of `g · sub` nodes (PD's regions have up to 8
/// blocks of 32 nodes over one child list: merged, a region is one block whose children only it
/// reads, so it takes the two-kernel forward and the staged backward). Node `m` of merged block `r` reads the weights
/// `pids[(r·g + m / sub)·W + w] + m % sub` (the original blocks' weight rows, in merged order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmaPart {
    /// Nodes per merged block (`g · sub`) and per original block.
    pub block_size: u32,
    pub sub: u32,
    pub width: u32,
    /// First node and children of each merged block, and the weight rows of its blocks.
    pub nids: Vec<u32>,
    pub cids: Vec<u32>,
    pub pids: Vec<u32>,
}

impl MmaPart {
    /// The partition's blocks as tensor-core launches: runs of `g` blocks (ordered by first node)
    /// with consecutive nodes and one child list merged, for the largest `g` (a power of two,
    /// `g · block_size ≤` [`max_group_rows`]) that merges at least half of the blocks; the blocks left over
    /// (a region cut by the partition) form a second, unmerged part. One part with `g = 1` when
    /// nothing merges.
    pub fn split(part: &SumPartition) -> Vec<MmaPart> {
        Self::split_rows(part, max_group_rows())
    }

    /// [`MmaPart::split`] with merged blocks of at most `max_rows` rows.
    pub fn split_rows(part: &SumPartition, max_rows: u32) -> Vec<MmaPart> {
        let (bs, w, n) = (part.block_size, part.width as usize, part.nids.len());
        let row = |t: &[u32], r: usize| t[r * w..(r + 1) * w].to_vec();
        let whole = || MmaPart { block_size: bs, sub: bs, width: part.width, nids: part.nids.clone(), cids: part.cids.clone(), pids: part.pids.clone() };
        if w == 0 || n == 0 {
            return vec![whole()];
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&r| part.nids[r]);
        // Greedy runs of at most g blocks: (merged runs, blocks left over).
        let runs = |g: usize| {
            let (mut full, mut rest) = (Vec::new(), Vec::new());
            let mut i = 0;
            while i < n {
                let r = order[i];
                let mut len = 1;
                while len < g && i + len < n {
                    let q = order[i + len];
                    if part.nids[q] != part.nids[r] + (len as u32) * bs || part.cids[q * w..(q + 1) * w] != part.cids[r * w..(r + 1) * w] {
                        break;
                    }
                    len += 1;
                }
                if len == g {
                    full.push(order[i..i + g].to_vec())
                } else {
                    rest.extend_from_slice(&order[i..i + len])
                }
                i += len;
            }
            (full, rest)
        };
        let pick = (2..=max_rows / bs.max(1))
            .rev()
            .filter(|g| g.is_power_of_two())
            .map(|g| (g, runs(g as usize)))
            .find(|(g, (full, _))| 2 * full.len() * *g as usize >= n);
        let Some((g, (full, rest))) = pick else { return vec![whole()] };
        let merged = MmaPart {
            block_size: g * bs,
            sub: bs,
            width: part.width,
            nids: full.iter().map(|run| part.nids[run[0]]).collect(),
            cids: full.iter().flat_map(|run| row(&part.cids, run[0])).collect(),
            pids: full.iter().flatten().flat_map(|&r| row(&part.pids, r)).collect(),
        };
        let mut parts = vec![merged];
        if !rest.is_empty() {
            parts.push(MmaPart {
                block_size: bs,
                sub: bs,
                width: part.width,
                nids: rest.iter().map(|&r| part.nids[r]).collect(),
                cids: rest.iter().flat_map(|&r| row(&part.cids, r)).collect(),
                pids: rest.iter().flat_map(|&r| row(&part.pids, r)).collect(),
            });
        }
        parts
    }

    pub fn count(&self) -> u32 {
        self.nids.len() as u32
    }

    /// The part as launches of at most `max_blocks` blocks each (in order; itself when it fits).
    pub fn chunks(self, max_blocks: usize) -> Vec<MmaPart> {
        let (n, w, g) = (self.nids.len(), self.width as usize, self.group() as usize);
        if n <= max_blocks.max(1) {
            return vec![self];
        }
        let step = max_blocks.max(1);
        (0..n)
            .step_by(step)
            .map(|a| {
                let b = (a + step).min(n);
                MmaPart {
                    nids: self.nids[a..b].to_vec(),
                    cids: self.cids[a * w..b * w].to_vec(),
                    pids: self.pids[a * g * w..b * g * w].to_vec(),
                    block_size: self.block_size,
                    sub: self.sub,
                    width: self.width,
                }
            })
            .collect()
    }

    pub fn group(&self) -> u32 {
        self.block_size / self.sub
    }
}

/// The tile shape of one mma sum kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmaShape {
    pub precision: Precision,
    pub block_size: u32,
    /// Nodes per original block (`block_size` unless blocks were merged, see [`MmaPart`]).
    pub sub: u32,
    pub width: u32,
    /// Nodes per node tile and node tiles per block.
    pub tm: u32,
    pub nt: u32,
    /// Children per chunk and the mma K.
    pub kc: u32,
    pub kstep: u32,
    /// 32-bit words per k-row of a staged tile.
    pub kcw: u32,
    /// Threads per CUDA block (32 · warps_m · warps_n).
    pub threads: u32,
    /// Samples per batch tile ([`TB`], or [`SHORT_TB`] for launches short of a wave).
    pub tb: u32,
    /// The two-kernel forward (`templates/sum_fwd_gemm.cu.tera`: the B operand staged once per
    /// block by `<name>_x`, then a plain product), for partitions whose children no other sum
    /// block reads ([`MmaShape::two_kernel`]).
    pub gemm: bool,
    pub warps_m: u32,
    pub warps_n: u32,
    /// m16 tiles and n8 tiles per warp.
    pub mf: u32,
    pub nf: u32,
    /// Children per cut of the cut-staged two-kernel forward (PD's sparse regions; see
    /// `templates/sum_fwd_gemm.cu.tera`); 0: the block's children staged per block.
    pub cut: u32,
}

impl MmaShape {
    /// The mma shape for a sum partition, or `None` where it stays scalar (fp32, or a block size
    /// that is not a multiple of 16).
    pub fn for_partition(precision: Precision, block_size: u32, width: u32) -> Option<MmaShape> {
        let kstep = match precision {
            Precision::Fp32 => return None,
            Precision::Bf16 => 16,
            Precision::Tf32 => 8,
        };
        if block_size < 16 || !block_size.is_multiple_of(16) || width == 0 {
            return None;
        }
        let tm = [128, 64, 32, 16].into_iter().find(|t| block_size.is_multiple_of(*t)).expect("16 divides block_size");
        // 32 children per chunk; tf32 (a word per value) 16, so that two stages of weights fit
        // the 48 KB of static shared memory.
        let kc = width.next_multiple_of(kstep).min(if precision == Precision::Bf16 { 32 } else { 16 });
        let kcw = if precision == Precision::Bf16 { kc / 2 } else { kc };
        let (warps_m, warps_n) = warps(tm);
        let threads = 32 * warps_m * warps_n;
        Some(MmaShape {
            precision,
            block_size,
            sub: block_size,
            width,
            tm,
            nt: block_size / tm,
            kc,
            kstep,
            kcw,
            threads,
            tb: TB,
            gemm: false,
            warps_m,
            warps_n,
            mf: tm / warps_m / 16,
            nf: TB / warps_n / 8,
            cut: 0,
        })
    }

    /// The same kernel with batch tiles of `tb` samples (a multiple of 8 · warps_n dividing the
    /// threads: 64 or 32).
    pub fn with_batch_tile(self, tb: u32) -> MmaShape {
        MmaShape { tb, nf: tb / self.warps_n / 8, ..self }
    }

    /// The shape a launch of `count` blocks runs: [`SHORT_TB`]-sample batch tiles where even
    /// [`MAX_SPLIT`] CUDA blocks per node tile leave it short of a wave.
    pub fn for_launch(self, count: u32) -> MmaShape {
        if count * self.nt * MAX_SPLIT < WAVE_CTAS { self.with_batch_tile(SHORT_TB) } else { self }
    }

    /// The shape of a (possibly merged) partition view.
    pub fn for_part(precision: Precision, part: &MmaPart) -> Option<MmaShape> {
        MmaShape::for_partition(precision, part.block_size, part.width).map(|s| MmaShape { sub: part.sub, ..s })
    }

    pub fn kernel_name(&self) -> String {
        let tb = if self.tb == TB { String::new() } else { format!("_tb{}", self.tb) };
        let g = if self.gemm { "_g" } else { "" };
        let c = if self.cut > 0 { format!("_c{}", self.cut) } else { String::new() };
        format!("sum_fwd_{}_bs{}_w{}{tb}{g}{c}", self.precision, block_label(self.block_size, self.sub), self.width)
    }

    /// The inline-PTX mma instruction with its operand list.
    fn mma_asm(&self) -> String {
        let shape = if self.precision == Precision::Bf16 { "m16n8k16" } else { "m16n8k8" };
        let p = self.precision.name();
        format!("mma.sync.aligned.{shape}.row.col.f32.{p}.{p}.f32 {{%0,%1,%2,%3}}, {{%4,%5,%6,%7}}, {{%8,%9}}, {{%0,%1,%2,%3}};")
    }

    /// `__launch_bounds__` minimum blocks per SM: at most 128 registers per thread (4 blocks of
    /// 128 threads or 2 of 256). Without it ptxas aims at ~96 registers and spills. Spill-free on
    /// sm_90 is checked by `tests/emit.rs`.
    pub fn min_blocks(&self) -> u32 {
        min_blocks(self.threads)
    }

    /// Shared memory the kernel declares (bytes): two stages of weights and raw child values,
    /// the staged X tile, the column maxima, maximum and scale.
    pub fn shared_bytes(&self) -> u32 {
        let ld = self.kcw + 4;
        let tb = self.tb;
        2 * self.tm * ld * 4 + 2 * self.kc * tb * 4 + tb * ld * 4 + 4 * tb * (self.threads / tb + 2)
    }

    /// The same tiles as the two-kernel forward (see [`MmaShape::gemm`]).
    pub fn two_kernel(self) -> MmaShape {
        MmaShape { gemm: true, ..self }
    }

    /// Words of one child row pair (bf16) or row (tf32) of the staged B operand per block: the
    /// [`KernelArg::XStage`] rows of a block.
    pub fn x_rows(&self) -> u32 {
        if self.precision == Precision::Bf16 { self.width.div_ceil(2) } else { self.width }
    }

    /// Chunks of `kc` children per block row.
    pub fn chunks(&self) -> u32 {
        self.width.div_ceil(self.kc)
    }

    /// Words of packed weights for `count` blocks (see the template: every node tile's chunks).
    pub fn packed_words(&self, count: u32) -> u64 {
        count as u64 * self.block_size as u64 * self.chunks() as u64 * self.kcw as u64
    }

    /// How many CUDA blocks share one node tile's batch tiles, for a launch over `count` sum
    /// blocks (at most as many as a batch of 512 has tiles: [`MAX_SPLIT`] of [`TB`] samples).
    pub fn split(&self, count: u32) -> u32 {
        TARGET_CTAS.div_ceil((count * self.nt).max(1)).clamp(1, MAX_SPLIT * TB / self.tb)
    }

    fn render(&self, t: &tera::Tera) -> Result<String, EmitError> {
        self.render_as(t, &self.kernel_name(), false)
    }

    /// The two-kernel template for this shape under `name`; `x_only`: its staging kernel
    /// `<name>_x` alone (the cuts' staging of the cut-staged forward).
    fn render_as(&self, t: &tera::Tera, name: &str, x_only: bool) -> Result<String, EmitError> {
        let mut ctx = tera::Context::new();
        ctx.insert("name", name);
        ctx.insert("x_only", &x_only);
        ctx.insert("cut", &self.cut);
        ctx.insert("cut_rows", &if self.precision == Precision::Bf16 { self.cut.div_ceil(2) } else { self.cut });
        ctx.insert("prec", self.precision.name());
        ctx.insert("mma_asm", &self.mma_asm());
        ctx.insert("bs", &self.block_size);
        ctx.insert("sub", &self.sub);
        ctx.insert("group", &(self.block_size / self.sub));
        ctx.insert("width", &self.width);
        ctx.insert("tm", &self.tm);
        ctx.insert("nt", &self.nt);
        ctx.insert("tb", &self.tb);
        ctx.insert("kc", &self.kc);
        ctx.insert("kstep", &self.kstep);
        ctx.insert("kcw", &self.kcw);
        ctx.insert("warps_n", &self.warps_n);
        ctx.insert("mf", &self.mf);
        ctx.insert("nf", &self.nf);
        ctx.insert("min_blocks", &self.min_blocks());
        ctx.insert("threads", &self.threads);
        ctx.insert("ww", &self.x_rows());
        super::render(t, if self.gemm { "sum_fwd_gemm" } else { "sum_fwd_mma" }, &ctx)
    }
}

/// Whether a partition takes the two-kernel forward ([`MmaShape::gemm`]) and with it the staged
/// backward: where no other sum block of the depth reads its children (an HCLT's), unless
/// `PCC_FWD_GEMM=0` (none); `PCC_FWD_GEMM=all` takes it for blocks over shared children too
/// (PD's regions: each block stages its own copy of X, the same values, and the element flows add
/// with atomics), opt-in until a GPU run has checked and timed it. Read at emission, so the kernel
/// cache keeps the variants apart by their source.
pub(super) fn two_kernel_forward(exclusive: bool) -> bool {
    match std::env::var("PCC_FWD_GEMM").as_deref() {
        Ok("0") => false,
        Ok("all") => true,
        _ => exclusive,
    }
}

/// Most [`KernelArg::XStage`] words per sample one launch of the two-kernel forward may stage
/// (64 MiB at batch 1024): a partition with more blocks runs as several launches
/// ([`MmaPart::chunks`]), so the buffer stays small where blocks are many (PD's regions, whose
/// blocks each stage a copy of their shared children; hclt1024's widest depths).
pub const MAX_X_WORDS: u32 = 1 << 14;

/// The blocks per launch of a two-kernel partition of `width` children ([`MAX_X_WORDS`]).
pub(super) fn x_blocks(precision: Precision, width: u32) -> usize {
    let rows = if precision == Precision::Bf16 { width.div_ceil(2) } else { width };
    (MAX_X_WORDS / rows.max(1)).max(1) as usize
}

/// One sum partition's forward on tensor cores, as [`sum_forward`] emits it.
pub(super) struct Forward {
    /// The forward launches in order (the two-kernel forward's staging launch, then its product).
    pub launches: Vec<KernelSpec>,
    /// The kernel that packs the weights (run after every EM step).
    pub pack: KernelSpec,
    /// Words per sample of [`KernelArg::XStage`] the launches use (0: none).
    pub x_words: u64,
    /// The partition's first packed weight word (its launches' and the pack kernel's argument).
    pub poff: KernelArg,
}

/// The launches of one sum partition's forward on tensor cores and the kernel that packs its
/// weights, rendering them into `source` the first time their shape is seen (the helpers they
/// use are in the source's head, see `layers::Emitter::new`). `tables`: nids, cids, pids;
/// `moff`: the partition's first row of the forward maxima; `poff`: its first packed word;
/// `exclusive`: no other sum block of the depth reads these children (see
/// [`two_kernel_forward`]). `None`: the partition stays on the scalar kernel.
#[allow(clippy::too_many_arguments)] // the launch's tables and placement, as `mma_bwd::sum_backward`
pub(super) fn sum_forward(
    t: &tera::Tera,
    opts: &EmitOptions,
    part: &MmaPart,
    emitted: &mut std::collections::BTreeSet<String>,
    source: &mut String,
    layer: String,
    tables: [KernelArg; 3],
    moff: u32,
    poff: u64,
    exclusive: bool,
) -> Result<Option<Forward>, EmitError> {
    let Some(shape) = MmaShape::for_part(opts.precision, part) else { return Ok(None) };
    let count = part.count();
    let shape = shape.for_launch(count);
    let shape = if two_kernel_forward(exclusive) { shape.two_kernel() } else { shape };
    let split = shape.split(count);
    let name = shape.kernel_name();
    if emitted.insert(name.clone()) {
        *source += &shape.render(t)?;
    }
    let words = shape.packed_words(count);
    let poff_arg = packed_offset(poff, words)?;
    let [nids, cids, pids] = tables;
    let forward = |args: Vec<KernelArg>| KernelSpec {
        name: name.clone(),
        layer: layer.clone(),
        count,
        // One CUDA block per (sum block, node tile, split); each loops over its batch tiles. The
        // kernel reads the split back as gridDim.x / (count · nt).
        threads_per_sample: count as u64 * shape.nt as u64 * split as u64 * shape.threads as u64,
        scales_with_batch: false,
        batch_group: 1,
        block: shape.threads,
        args,
        small: None,
    };
    let moff_arg = KernelArg::Int(moff as i32);
    let (launches, x_words) = if shape.gemm {
        let stage = KernelSpec {
            name: format!("{name}_x"),
            layer: format!("{layer} (staged children)"),
            count,
            // One CUDA block of 256 threads per (sum block, batch tile).
            threads_per_sample: count as u64 * 256,
            scales_with_batch: true,
            batch_group: shape.tb,
            block: 256,
            args: vec![KernelArg::XStage, KernelArg::Elements, cids, KernelArg::Count, KernelArg::Batch, KernelArg::SumMax, moff_arg],
            small: None,
        };
        let args = vec![KernelArg::XStage, KernelArg::PackedWeights, nids, KernelArg::Count, KernelArg::Batch, KernelArg::SumMax, moff_arg, poff_arg];
        (vec![stage, forward([vec![KernelArg::Nodes], args].concat())], count as u64 * shape.x_rows() as u64)
    } else {
        let args = vec![
            KernelArg::Nodes,
            KernelArg::Elements,
            KernelArg::PackedWeights,
            nids,
            cids,
            KernelArg::Count,
            KernelArg::Batch,
            KernelArg::SumMax,
            moff_arg,
            poff_arg,
        ];
        (vec![forward(args)], 0)
    };
    let pack = pack_spec(&name, &layer, count, words, pids, poff_arg);
    Ok(Some(Forward { launches, pack, x_words, poff: poff_arg }))
}

/// The packed-weights offset argument of a partition whose `words` start at `poff` (both ends
/// must be `i32` arguments).
fn packed_offset(poff: u64, words: u64) -> Result<KernelArg, EmitError> {
    let int = |v: u64, what: &str| {
        i32::try_from(v).map(KernelArg::Int).map_err(|_| EmitError::Template { template: "sum_fwd_mma.cu.tera", detail: format!("{what} {v} past 2^31 words") })
    };
    int(poff + words, "packed weights end")?;
    int(poff, "packed weights offset")
}

/// The launch of kernel `<name>_pack`, which packs `count` blocks' weights into `words` words
/// from `poff` (run after every EM step).
fn pack_spec(name: &str, layer: &str, count: u32, words: u64, pids: KernelArg, poff: KernelArg) -> KernelSpec {
    KernelSpec {
        name: format!("{name}_pack"),
        layer: format!("{layer} (packed weights)"),
        count,
        // One thread per packed word (the kernel loops, so any grid covers them).
        threads_per_sample: words,
        scales_with_batch: false,
        batch_group: 1,
        block: 256,
        args: vec![KernelArg::PackedWeights, KernelArg::SumParams, pids, KernelArg::Count, poff],
        small: None,
    }
}

/// The cut-staged forward of one launch of a partition's blocks (`crate::emit::cuts`): the
/// staging kernel over the `n_cuts` cuts (`<shape>_cut_x`, the two-kernel template's for `cut`
/// children, maxima at rows `cmoff..`), the cut-staged product (`<shape>_c<cut>`, block maxima
/// at rows `moff..`) and its pack kernel. `tables`: nids, cutx, pids, the cuts' children.
#[allow(clippy::too_many_arguments)] // as `sum_forward`, plus the cuts
pub(super) fn cut_forward(
    t: &tera::Tera,
    precision: Precision,
    part: &MmaPart,
    cut: u32,
    emitted: &mut std::collections::BTreeSet<String>,
    source: &mut String,
    layer: &str,
    tables: [KernelArg; 4],
    (moff, cmoff): (u32, u32),
    poff: u64,
    n_cuts: u32,
) -> Result<Forward, EmitError> {
    let base = MmaShape::for_part(precision, part).expect("a tensor-core partition");
    let count = part.count();
    let shape = MmaShape { cut, ..base.clone().for_launch(count).two_kernel() };
    let xshape = MmaShape { width: cut, ..base.two_kernel() };
    let (name, xname) = (shape.kernel_name(), format!("{}_cut", xshape.kernel_name()));
    if emitted.insert(name.clone()) {
        *source += &shape.render(t)?;
    }
    if emitted.insert(xname.clone()) {
        *source += &xshape.render_as(t, &xname, true)?;
    }
    let words = shape.packed_words(count);
    let poff_arg = packed_offset(poff, words)?;
    let [nids, cutx, pids, stage_cids] = tables;
    let (moff, cmoff) = (KernelArg::Int(moff as i32), KernelArg::Int(cmoff as i32));
    let stage = KernelSpec {
        name: format!("{xname}_x"),
        layer: format!("{layer} (staged cuts)"),
        count: n_cuts,
        // One CUDA block of 256 threads per (cut, batch tile).
        threads_per_sample: n_cuts as u64 * 256,
        scales_with_batch: true,
        batch_group: xshape.tb,
        block: 256,
        args: vec![KernelArg::XStage, KernelArg::Elements, stage_cids, KernelArg::Count, KernelArg::Batch, KernelArg::SumMax, cmoff],
        small: None,
    };
    let product = KernelSpec {
        name: name.clone(),
        layer: layer.to_string(),
        count,
        threads_per_sample: count as u64 * shape.nt as u64 * shape.split(count) as u64 * shape.threads as u64,
        scales_with_batch: false,
        batch_group: 1,
        block: shape.threads,
        args: vec![
            KernelArg::Nodes,
            KernelArg::XStage,
            KernelArg::PackedWeights,
            nids,
            cutx,
            KernelArg::Count,
            KernelArg::Batch,
            KernelArg::SumMax,
            moff,
            cmoff,
            poff_arg,
        ],
        small: None,
    };
    let pack = pack_spec(&name, layer, count, words, pids, poff_arg);
    Ok(Forward { launches: vec![stage, product], pack, x_words: n_cuts as u64 * xshape.x_rows() as u64, poff: poff_arg })
}

/// The warp grid (rows × columns of warps) of a tile of `rows` (16, 32, 64 or 128) × 64: `1 × 4`
/// for 16 rows, `4 × 2` (256 threads) for 128, else `2 × 2`; shared by the forward and backward
/// kernels.
pub(super) fn warps(rows: u32) -> (u32, u32) {
    match rows {
        16 => (1, 4),
        128 => (4, 2),
        _ => (2, 2),
    }
}

/// `__launch_bounds__` minimum blocks per SM for `threads` per block: at most 128 registers per
/// thread (see [`MmaShape::min_blocks`]).
pub(super) fn min_blocks(threads: u32) -> u32 {
    if threads >= 256 { 2 } else { 4 }
}

/// `512`, or `32x4` for 4 merged blocks of 32 nodes (kernel names).
pub(super) fn block_label(block_size: u32, sub: u32) -> String {
    if sub == block_size { block_size.to_string() } else { format!("{sub}x{}", block_size / sub) }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_staged;

//! The persistent small-batch forward pass: the plan's sum layers as a task graph run by one
//! resident kernel (`templates/fwd_persistent.cu.tera`, [`PersistentForward`]).
//!
//! A task is a tile of one sum block's nodes. Its child elements are the depth's products,
//! expanded to the product's child nodes (so no element buffer is written, as in the fused
//! small-batch kernels), and it depends on the tasks that wrote those nodes; input nodes are
//! written by the input launches that run first. The kernel is specialised per distinct
//! (block size, tile, width) shape through a C++ template, so the source grows with the number
//! of shapes, not of tasks.

use std::collections::BTreeMap;

use pc_runtime::cuda::{PersistentForward, SMALL_BATCH, TASK_WORDS};
use pc_runtime::plan::Plan;

/// Largest batch that runs the persistent pass. Measured on an H200 for hclt128 (median latency,
/// persistent vs per-depth launches with graph replay): batch 1 191 vs 281 µs, 2 311 vs 332,
/// 4 481 vs 440, 8 864 vs 639: one block per task serializes the samples of a larger batch.
pub const MAX_BATCH: u32 = 2;

/// Worker threads per CUDA block of the persistent kernel (16 warps); the block has three more
/// warps, two producers and the publisher (see the template).
pub const THREADS: u32 = 512;

/// Worker warps that compute a fast (128-node) task; the others wait at its barrier. The block is
/// issue-bound and each warp repeats the maxima, so fewer warps, each with more children, are
/// faster: measured on an H200 (hclt128, batch 1, kernel span) 16 warps 98.9 µs, 8 93.9, 4 93.4;
/// 8 keeps the dependent multiply-add chains short. (With fewer than 4 · the batch, the warps that
/// write the outputs find the maxima too.)
pub const FAST_WARPS: u32 = 8;
const _: () = assert!(FAST_WARPS >= 1 && FAST_WARPS <= THREADS / 32, "fast warps are worker warps");

/// The whole CUDA block: workers, the producer warp and the publisher warp.
pub const BLOCK_THREADS: u32 = THREADS + 32 * PRODUCER_WARPS + 32;

/// Producer warps per block (the template's `PCC_PRODUCERS`): each gathers half of the next task's
/// elements, whose instructions are on the chain's path.
pub const PRODUCER_WARPS: u32 = 2;

/// Most child loads (`count × product width`) of a task that the producer warp sums ahead of
/// time; wider tasks are staged by the 16 worker warps (one warp takes 32 ids per lane and round
/// trip: beyond this it would take longer than the task it overlaps).
pub const PREFETCH_CAP: u32 = 1024;

/// Nodes of a fast task (a whole warp row: four per lane) and its batch limit.
const FAST_TILE: u32 = 128;
const FAST_MAX_BATCH: u32 = 2;

/// Widest sum block it takes: each task stages `width × SMALL_BATCH` child values in shared memory
/// (32 KiB at 1024). Plans with a wider sum partition keep the per-depth launches.
pub const MAX_WIDTH: u32 = 1024;

/// Task descriptors each block copies into shared memory when it starts (its first ones), so a
/// task's words cost no global round trip.
pub const CACHED_TASKS: u32 = 64;

/// Most nodes per task; fewer when a thread would take more than [`CHILDREN_PER_THREAD`] children.
const MAX_TILE: u32 = 128;

/// Most children per thread in the dot products (more nodes per task spread them thinner; fewer
/// keep more tasks' worth of work per block).
const CHILDREN_PER_THREAD: u32 = 32;

/// One kernel specialisation: block size and tile (the width is a run-time value of the task).
/// `fast`: a 128-node tile of a block of a multiple of 128 nodes, run by the fast task (task word
/// 0 bit 15; batches ≤ 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Shape {
    pub bs: u32,
    pub tile: u32,
    pub fast: bool,
}

/// Nodes per task of a sum block of `bs` nodes over `width` children: at most [`MAX_TILE`],
/// halved (down to 16) until each thread's share of the children is at most
/// [`CHILDREN_PER_THREAD`].
fn tile_for(bs: u32, width: u32) -> u32 {
    let mut tile = bs.min(MAX_TILE);
    while tile > 16 && width.div_ceil(THREADS / tile) > CHILDREN_PER_THREAD {
        tile = tile.div_ceil(2);
    }
    tile
}

/// The task graph of `plan`, or `None` when a sum partition is too wide or a sum reads an element
/// that is not made by its own depth's products (then the per-depth launches stay in use).
pub fn build(plan: &Plan, prologue: u32) -> Option<(PersistentForward, Vec<Shape>, Layout)> {
    let mut shapes: BTreeMap<Shape, u32> = BTreeMap::new();
    let mut shape_order: Vec<Shape> = Vec::new();
    let (mut tasks, mut children, mut deps, mut cost_ns) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut slot_bytes = 0u32;
    // Two slots within an H100's 227 KiB of shared memory per block, next to the rest.
    let max_width = depths_max_width(plan);
    let slot_limit = (MAX_SHARED_BYTES.saturating_sub(Layout::new(max_width, 0).total) / 2 / 128 * 128).min(MAX_SLOT_BYTES);
    // Node id → 1 + the task that writes it (0: an input or dummy node, ready before the kernel).
    let mut writer = vec![0u32; plan.num_nodes as usize];
    for depth in &plan.depths {
        let made_by = super::fuse::element_makers(depth);
        for sum in &depth.sums {
            if sum.width > MAX_WIDTH {
                return None;
            }
            let (bs, width) = (sum.block_size, sum.width);
            let tile = tile_for(bs, width);
            let shape = Shape { bs, tile, fast: tile == FAST_TILE && bs % FAST_TILE == 0 };
            let sid = *shapes.entry(shape).or_insert_with(|| {
                shape_order.push(shape);
                shape_order.len() as u32 - 1
            });
            if sid >= MAX_SHAPES {
                return None;
            }
            for r in 0..sum.num_blocks() {
                let row = r * width as usize..(r + 1) * width as usize;
                let (cids, pids, count) = (&sum.cids[row.clone()], &sum.pids[row], sum.counts[r]);
                // Weights of real children are contiguous rows of the block (the plan's layout).
                if (0..count as usize).any(|w| pids[w] != pids[0] + w as u32 * bs) {
                    return None;
                }
                // Child element w → its product's child nodes (padding rows, which hold 0,
                // dropped), then padded with node 0 to the row's widest product.
                let mut lists: Vec<Vec<u32>> = Vec::with_capacity(count as usize);
                let mut producers: Vec<u32> = Vec::new();
                for &c in &cids[..count as usize] {
                    let &(pi, prow, k) = made_by.get(&c)?;
                    let prod = &depth.prods[pi];
                    let mut l = Vec::with_capacity(prod.width as usize);
                    for j in 0..prod.width as usize {
                        let node = prod.cids[prow * prod.width as usize + j] + k;
                        if node < plan.num_dummy_nodes {
                            continue;
                        }
                        l.push(node);
                        if let Some(t) = writer[node as usize].checked_sub(1) {
                            producers.push(t);
                        }
                    }
                    lists.push(l);
                }
                // Child j of element w at c0 + j * count + w: a warp's threads (consecutive
                // elements) read consecutive ids, and for a product block consecutive nodes.
                let pw = lists.iter().map(Vec::len).max().unwrap_or(0).max(1);
                // Each task's ids start 16-byte aligned and end padded to 16 bytes: the kernel
                // copies a narrow task's ids to shared memory in bulk.
                children.resize(children.len().next_multiple_of(4), 0);
                let c0 = children.len() as u32;
                for j in 0..pw {
                    children.extend(lists.iter().map(|l| l.get(j).copied().unwrap_or(0)));
                }
                children.resize(children.len().next_multiple_of(4), 0);
                producers.sort_unstable();
                producers.dedup();
                // A whole block's weights are one range: copied to shared memory in bulk when it
                // is 16-byte aligned and fits a slot.
                let bulk = count * bs * 4;
                let bulk = if tile == bs && pids[0] % 4 == 0 && bulk % 16 == 0 && bulk > 0 && bulk <= slot_limit { bulk } else { 0 };
                slot_bytes = slot_bytes.max(bulk);
                for m0 in (0..bs).step_by(tile as usize) {
                    let ntile = tile.min(bs - m0);
                    let id = (tasks.len() / TASK_WORDS) as u32;
                    let mut words = [0u32; TASK_WORDS];
                    // The fast task reads its weights 16 bytes at a time.
                    let fast_bit = if shape.fast && (pids[0] + m0).is_multiple_of(4) { FAST_BIT } else { 0 };
                    words[..9].copy_from_slice(&[
                        sid | fast_bit | width << 16,
                        sum.nids[r] + m0,
                        pids[0] + m0,
                        count,
                        c0,
                        pw as u32,
                        producers.len() as u32,
                        ntile,
                        deps.len() as u32,
                    ]);
                    words[15] = bulk;
                    tasks.extend_from_slice(&words);
                    deps.extend_from_slice(&producers);
                    // Barriers, the wait and the loads' round trips, plus the weights: from shared
                    // memory (prefetched) or through one SM's load path (~30 B/ns measured on an
                    // H200 for 64 KiB at batch 1).
                    let edges = count * ntile;
                    cost_ns.push(1200 + if bulk > 0 { edges / 32 } else { edges * 4 / 30 });
                    for m in 0..ntile {
                        writer[(sum.nids[r] + m0 + m) as usize] = id + 1;
                    }
                }
            }
        }
    }
    if tasks.is_empty() {
        return None;
    }
    let layout = Layout::new(max_width, slot_bytes);
    let p = PersistentForward {
        kernel: "fwd_persistent".into(),
        threads: BLOCK_THREADS,
        shared_bytes: layout.total,
        cached_tasks: CACHED_TASKS,
        max_batch: MAX_BATCH,
        prologue,
        tasks,
        children,
        deps,
        cost_ns,
    };
    Some((p, shape_order, layout))
}

/// The widest sum partition (a plan with one above [`MAX_WIDTH`] gets no persistent pass).
fn depths_max_width(plan: &Plan) -> u32 {
    plan.depths.iter().flat_map(|d| d.sums.iter().map(|s| s.width)).max().unwrap_or(1)
}

/// Shared memory a block may opt into on sm_90 (H100, H200).
const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// Largest weight copy per shared-memory slot (two slots): 96 KiB, so a block of 128 × 128 fp32
/// weights (64 KiB) double-buffers within an H100's 227 KiB.
const MAX_SLOT_BYTES: u32 = 96 * 1024;

/// Task word 0's flag of a fast task (the shape id takes the bits below it).
pub const FAST_BIT: u32 = 0x8000;

/// Shape ids take task word 0's low 14 bits (the runtime's publish flag and the fast bit sit
/// above them): a circuit with more shapes keeps the per-depth launches.
const MAX_SHAPES: u32 = 0x4000;

/// Byte offsets of the kernel's dynamic shared memory (the template's `PCC_OFF_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// Six mbarriers at 0 (two weight slots, four id slots), then: block reduction (the fast
    /// task's per-warp partial sums), per-sample maxima, the generation, four `staged` words (list
    /// position × producer warp) and the call's sequence number, two 16-float bound records (per
    /// list position: the producer warps' maxima of the staged child values, the task's outputs'
    /// maxima per warp), cached task words and task ids; four slots of narrow tasks' child ids (by list position mod 4); then two of
    /// each (double-buffered by list position): the children's positions in the previous task's
    /// outputs, task outputs, staged children; last two weight slots (128-byte aligned).
    pub off_red: u32,
    pub off_smx: u32,
    pub off_gen: u32,
    pub off_bnd: u32,
    pub off_task: u32,
    pub off_plist: u32,
    pub off_ids: u32,
    pub ids_words: u32,
    pub off_ci: u32,
    pub ci_words: u32,
    pub off_out: u32,
    pub out_floats: u32,
    pub off_ev: u32,
    pub ev_floats: u32,
    pub off_slot: u32,
    pub slot_bytes: u32,
    pub total: u32,
}

impl Layout {
    fn new(max_width: u32, slot_bytes: u32) -> Layout {
        let batch = SMALL_BATCH as u32;
        let off_red = 64;
        let red_floats = THREADS.max(THREADS / 32 * FAST_TILE * FAST_MAX_BATCH);
        let off_smx = off_red + 4 * red_floats;
        let off_gen = off_smx + 4 * batch;
        let off_bnd = off_gen + 32;
        let off_task = off_bnd + 2 * 16 * 4;
        let off_plist = off_task + 4 * CACHED_TASKS * TASK_WORDS as u32;
        let off_ids = (off_plist + 4 * CACHED_TASKS).next_multiple_of(128);
        let ids_words = FAST_TILE * 8;
        let off_ci = off_ids + 4 * 4 * ids_words;
        let ci_words = max_width.next_multiple_of(8);
        let off_out = off_ci + 2 * 2 * ci_words;
        let out_floats = MAX_TILE * batch;
        let off_ev = off_out + 2 * 4 * out_floats;
        let ev_floats = max_width.next_multiple_of(4) * batch;
        let off_slot = (off_ev + 2 * 4 * ev_floats).next_multiple_of(128);
        let slot_bytes = slot_bytes.next_multiple_of(128);
        Layout {
            off_red,
            off_smx,
            off_gen,
            off_bnd,
            off_task,
            off_plist,
            off_ids,
            ids_words,
            off_ci,
            ci_words,
            off_out,
            out_floats,
            off_ev,
            ev_floats,
            off_slot,
            slot_bytes,
            total: off_slot + 2 * slot_bytes,
        }
    }
}

/// The persistent kernel's source: `templates/fwd_persistent.cu.tera` with the pass's shapes,
/// constants and shared-memory layout.
pub(super) fn render_kernel(t: &tera::Tera, p: &PersistentForward, shapes: &[Shape], layout: &Layout) -> Result<String, super::EmitError> {
    let mut ctx = tera::Context::new();
    ctx.insert("name", &p.kernel);
    ctx.insert("threads", &THREADS);
    ctx.insert("fast_warps", &FAST_WARPS);
    ctx.insert("producers", &PRODUCER_WARPS);
    ctx.insert("prefetch_cap", &PREFETCH_CAP);
    ctx.insert("max_batch", &SMALL_BATCH);
    ctx.insert("shapes", &shapes);
    ctx.insert("task_words", &TASK_WORDS);
    ctx.insert("inline_deps", &pc_runtime::cuda::INLINE_DEPS);
    // Task word 0's flags and the fast task's batch limit: defined once, here and in the runtime.
    ctx.insert("fast_bit", &FAST_BIT);
    ctx.insert("publish_bit", &pc_runtime::cuda::PUBLISH_BIT);
    ctx.insert("fast_max_batch", &FAST_MAX_BATCH);
    ctx.insert("cached_tasks", &p.cached_tasks);
    for (key, v) in [
        ("off_red", layout.off_red),
        ("off_smx", layout.off_smx),
        ("off_gen", layout.off_gen),
        ("off_bnd", layout.off_bnd),
        ("off_task", layout.off_task),
        ("off_plist", layout.off_plist),
        ("off_ids", layout.off_ids),
        ("ids_words", layout.ids_words),
        ("off_ci", layout.off_ci),
        ("ci_words", layout.ci_words),
        ("off_out", layout.off_out),
        ("out_floats", layout.out_floats),
        ("off_ev", layout.off_ev),
        ("ev_floats", layout.ev_floats),
        ("off_slot", layout.off_slot),
        ("slot_bytes", layout.slot_bytes),
    ] {
        ctx.insert(key, &v);
    }
    super::render(t, "fwd_persistent", &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_weight_slots_fit_next_to_the_widest_staging() {
        for w in [1, 128, 1024] {
            let base = Layout::new(w, 0).total;
            let limit = (MAX_SHARED_BYTES - base) / 2 / 128 * 128;
            assert!(Layout::new(w, limit.min(MAX_SLOT_BYTES)).total <= MAX_SHARED_BYTES, "width {w}");
        }
    }

    #[test]
    fn tiles_bound_the_children_per_thread() {
        assert_eq!(tile_for(128, 128), 128);
        assert_eq!(tile_for(1, 128), 1);
        assert_eq!(tile_for(128, 256), 64);
        assert_eq!(tile_for(32, 1024), 16);
        assert_eq!(tile_for(64, 1024), 16);
        assert_eq!(tile_for(100, 64), 100);
    }
}

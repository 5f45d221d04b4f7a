//! The persistent small-batch forward pass: the plan's sum layers as a task graph run by one
//! resident kernel (`templates/fwd_persistent.cu.tera`, [`PersistentForward`]).
//!
//! A task is a tile of one sum block's nodes. Its child elements are the depth's products,
//! expanded to the product's child nodes (so no element buffer is written, as in the fused
//! small-batch kernels), and it depends on the tasks that wrote those nodes; input nodes are
//! written by the input launches that run first. The kernel is specialised per distinct
//! (block size, tile, width) shape through a C++ template, so the source grows with the number
//! of shapes, not of tasks.

use std::collections::{BTreeMap, HashMap};

use pc_runtime::cuda::{PersistentForward, SMALL_BATCH, TASK_WORDS};
use pc_runtime::plan::Plan;

/// Threads per CUDA block of the persistent kernel.
pub const THREADS: u32 = 256;

/// Widest sum block it takes: each task stages `width × SMALL_BATCH` child values in shared memory
/// (32 KiB at 1024). Plans with a wider sum partition keep the per-depth launches.
pub const MAX_WIDTH: u32 = 1024;

/// Most nodes per task; fewer when the children per thread would not fit in registers.
const MAX_TILE: u32 = 128;

/// Children per thread whose weights are prefetched into registers (the template's
/// `PCC_REG_WEIGHTS`).
const REG_WEIGHTS: u32 = 64;

/// One kernel specialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Shape {
    pub bs: u32,
    pub tile: u32,
    pub width: u32,
}

/// Nodes per task of a sum block of `bs` nodes over `width` children: at most [`MAX_TILE`],
/// halved (down to 16) until each thread's share of the children fits in registers.
fn tile_for(bs: u32, width: u32) -> u32 {
    let mut tile = bs.min(MAX_TILE);
    while tile > 16 && width.div_ceil(THREADS / tile) > REG_WEIGHTS {
        tile = tile.div_ceil(2);
    }
    tile
}

/// The task graph of `plan`, or `None` when a sum partition is too wide or a sum reads an element
/// that is not made by its own depth's products (then the per-depth launches stay in use).
pub fn build(plan: &Plan, prologue: u32) -> Option<(PersistentForward, Vec<Shape>)> {
    let mut shapes: BTreeMap<Shape, u32> = BTreeMap::new();
    let mut shape_order: Vec<Shape> = Vec::new();
    let (mut tasks, mut offsets, mut children, mut deps, mut cost_ns) = (Vec::new(), vec![0u32], Vec::new(), Vec::new(), Vec::new());
    // Node id → 1 + the task that writes it (0: an input or dummy node, ready before the kernel).
    let mut writer = vec![0u32; plan.num_nodes as usize];
    for depth in &plan.depths {
        let mut made_by: HashMap<u32, (usize, usize, u32)> = HashMap::new();
        for (pi, part) in depth.prods.iter().enumerate() {
            for (row, &e0) in part.nids.iter().enumerate() {
                for k in 0..part.block_size {
                    made_by.insert(e0 + k, (pi, row, k));
                }
            }
        }
        for sum in &depth.sums {
            if sum.width > MAX_WIDTH {
                return None;
            }
            let (bs, width) = (sum.block_size, sum.width);
            let tile = tile_for(bs, width);
            let shape = Shape { bs, tile, width };
            let sid = *shapes.entry(shape).or_insert_with(|| {
                shape_order.push(shape);
                shape_order.len() as u32 - 1
            });
            for r in 0..sum.num_blocks() {
                let row = r * width as usize..(r + 1) * width as usize;
                let (cids, pids, count) = (&sum.cids[row.clone()], &sum.pids[row], sum.counts[r]);
                // Weights of real children are contiguous rows of the block (the plan's layout).
                if (0..count as usize).any(|w| pids[w] != pids[0] + w as u32 * bs) {
                    return None;
                }
                // Child element w → its product's child nodes (padding rows, which hold 0, skipped).
                let e0 = offsets.len() as u32 - 1;
                let mut producers: Vec<u32> = Vec::new();
                for &c in &cids[..count as usize] {
                    let &(pi, prow, k) = made_by.get(&c)?;
                    let prod = &depth.prods[pi];
                    for j in 0..prod.width as usize {
                        let node = prod.cids[prow * prod.width as usize + j] + k;
                        if node < plan.num_dummy_nodes {
                            continue;
                        }
                        children.push(node);
                        if let Some(t) = writer[node as usize].checked_sub(1) {
                            producers.push(t);
                        }
                    }
                    offsets.push(children.len() as u32);
                }
                producers.sort_unstable();
                producers.dedup();
                for m0 in (0..bs).step_by(tile as usize) {
                    let ntile = tile.min(bs - m0);
                    let id = (tasks.len() / TASK_WORDS) as u32;
                    tasks.extend([sid, sum.nids[r] + m0, pids[0] + m0, count, e0, deps.len() as u32, producers.len() as u32, ntile]);
                    deps.extend_from_slice(&producers);
                    // A fixed start-up (waits, barriers) plus the edges, at roughly 16 per ns.
                    cost_ns.push(900 + count * ntile / 16);
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
    let max_width = shape_order.iter().map(|s| s.width).max().unwrap_or(1);
    let shared_bytes = 4 * (THREADS + SMALL_BATCH as u32 + 1 + max_width * SMALL_BATCH as u32);
    let p = PersistentForward {
        kernel: "fwd_persistent".into(),
        threads: THREADS,
        shared_bytes,
        prologue,
        tasks,
        offsets,
        children,
        deps,
        cost_ns,
    };
    Some((p, shape_order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fit_the_register_budget() {
        assert_eq!(tile_for(128, 128), 128);
        assert_eq!(tile_for(1, 128), 1);
        assert_eq!(tile_for(128, 256), 64);
        assert_eq!(tile_for(32, 1024), 16);
        assert_eq!(tile_for(100, 64), 100);
    }
}

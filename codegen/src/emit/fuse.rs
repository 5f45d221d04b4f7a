//! Product fusion for small batches: at a depth where every sum child element is made by one of
//! the depth's product partitions, and every sum partition's children share one product width,
//! the small-batch sum kernels form each element from its product's children as they stage it,
//! and the depth's product launches are skipped. This halves the launches of a small-batch
//! forward pass (latency), and the element buffer is never written by it; the backward pass and
//! the queries recompute products themselves before they read elements.

use std::collections::HashMap;

use pc_runtime::plan::DepthPlan;

/// Element id → (product partition, block row, offset in the block) of every element `depth`'s
/// products make.
pub fn element_makers(depth: &DepthPlan) -> HashMap<u32, (usize, usize, u32)> {
    let mut made_by = HashMap::new();
    for (pi, part) in depth.prods.iter().enumerate() {
        for (row, &e0) in part.nids.iter().enumerate() {
            for k in 0..part.block_size {
                made_by.insert(e0 + k, (pi, row, k));
            }
        }
    }
    made_by
}

/// Per sum partition of `depth`: the product width `pw` and the fused child table
/// `fc[(r * width + w) * pw + j]` = node id of child `j` of the product that makes child element
/// `w` of sum block `r` (0 for padded children, which the kernel treats as −inf). `None` when the
/// depth cannot be fused.
/// Also `None` when a sum partition is wider than `max_width` (it has no small-batch kernel).
pub fn fused_children(depth: &DepthPlan, max_width: u32) -> Option<Vec<(u32, Vec<u32>)>> {
    if depth.prods.is_empty() || depth.sums.is_empty() || depth.sums.iter().any(|s| s.width > max_width) {
        return None;
    }
    let made_by = element_makers(depth);
    depth
        .sums
        .iter()
        .map(|sum| {
            let width = sum.width as usize;
            let mut pw = None;
            for &c in sum.cids.iter().filter(|&&c| c != 0) {
                let &(pi, _, _) = made_by.get(&c)?;
                let w = depth.prods[pi].width;
                if *pw.get_or_insert(w) != w {
                    return None;
                }
            }
            let pw = pw? as usize;
            let mut fc = vec![0u32; sum.cids.len() * pw];
            for (i, &c) in sum.cids.iter().enumerate() {
                if c == 0 {
                    continue;
                }
                let (pi, row, k) = made_by[&c];
                let prod = &depth.prods[pi];
                for j in 0..pw {
                    // As the product kernel: child block start + k (a padded child is a zero-valued
                    // dummy node row, so it adds log 1 = 0 in both).
                    fc[i * pw + j] = prod.cids[row * pw + j] + k;
                }
            }
            debug_assert_eq!(fc.len(), sum.nids.len() * width * pw);
            Some((pw as u32, fc))
        })
        .collect()
}

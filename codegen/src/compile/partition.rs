//! Partitioning a layer by fan-in: blocks are padded to a common child count inside a partition,
//! and the layer is split into as few partitions as keep the padded work within a bound.

use std::collections::BTreeMap;

/// Smallest set of partition widths such that padding every count up to the first width ≥ it
/// costs at most `floor((1 + tol) · Σ counts)`, found by dynamic programming over the sorted
/// distinct counts (PyJuice's `partition_nodes_by_n_edges`, without its power-of-two rounding:
/// generated kernels take any width as a constant). `max_parts` caps the number of partitions;
/// with the cap the bound may be exceeded. Widths come back in increasing order.
pub fn partition_widths(counts: &[u32], tol: f64, max_parts: Option<usize>) -> Vec<u32> {
    let mut mult: BTreeMap<u32, u64> = BTreeMap::new();
    for &c in counts {
        *mult.entry(c).or_default() += 1;
    }
    let vals: Vec<u32> = mult.keys().copied().collect();
    let d = vals.len();
    if d <= 1 {
        return vals;
    }
    let mut cum = vec![0u64; d + 1];
    for (i, m) in mult.values().enumerate() {
        cum[i + 1] = cum[i] + m;
    }
    let total: u64 = mult.iter().map(|(v, m)| *v as u64 * m).sum();
    let target = (total as f64 * (1.0 + tol.max(0.0))).floor() as u64;
    let cost = |j: usize, i: usize| vals[i - 1] as u64 * (cum[i] - cum[j]);
    let cap = max_parts.unwrap_or(d).clamp(1, d);
    // dp[i] = best cost covering the first i distinct values with p partitions; back[p][i] = split.
    let mut dp: Vec<u64> = (0..=d).map(|i| if i == 0 { 0 } else { cost(0, i) }).collect();
    let mut back: Vec<Vec<usize>> = vec![vec![0; d + 1]];
    let mut parts = 1;
    while dp[d] > target && parts < cap {
        let mut next = vec![u64::MAX; d + 1];
        let mut arg = vec![0; d + 1];
        for i in parts + 1..=d {
            for (j, &prev) in dp.iter().enumerate().take(i).skip(parts) {
                if prev == u64::MAX {
                    continue;
                }
                let c = prev + cost(j, i);
                if c < next[i] {
                    next[i] = c;
                    arg[i] = j;
                }
            }
        }
        dp = next;
        back.push(arg);
        parts += 1;
    }
    let mut widths = Vec::with_capacity(parts);
    let mut i = d;
    for p in (0..parts).rev() {
        widths.push(vals[i - 1]);
        i = back[p][i];
    }
    widths.reverse();
    widths
}

/// Index of the partition (of `widths`, increasing) that takes a block with `count` children.
pub fn partition_of(widths: &[u32], count: u32) -> usize {
    widths.partition_point(|&w| w < count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(counts: &[u32], widths: &[u32]) -> u64 {
        counts.iter().map(|&c| widths[partition_of(widths, c)] as u64).sum()
    }

    #[test]
    fn uniform_counts_give_one_partition() {
        assert_eq!(partition_widths(&[4, 4, 4], 0.5, None), vec![4]);
    }

    #[test]
    fn zero_tolerance_gives_exact_widths() {
        let c = [1, 2, 3, 3, 9];
        let w = partition_widths(&c, 0.0, None);
        assert_eq!(w, vec![1, 2, 3, 9]);
        assert_eq!(padded(&c, &w), c.iter().map(|&x| x as u64).sum::<u64>());
    }

    #[test]
    fn bound_holds_and_is_tight() {
        // 100 blocks of 2 and one of 50: one partition would pad to 5050 > 1.5 * 250.
        let mut c = vec![2u32; 100];
        c.push(50);
        let w = partition_widths(&c, 0.5, None);
        assert_eq!(w, vec![2, 50]);
    }
}

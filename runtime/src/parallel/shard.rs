//! Which rows each rank takes: every global batch is cut into `size` contiguous, near-equal
//! parts, rank r taking part r, so the ranks together see exactly the batch a single process
//! would, and flows summed over ranks are that batch's flows.

use std::ops::Range;

/// Rank `rank`'s part of `rows` among `size` ranks (the first `len % size` parts one row longer).
pub fn shard(rows: Range<usize>, rank: usize, size: usize) -> Range<usize> {
    assert!(size > 0 && rank < size, "rank {rank} of {size}");
    let len = rows.end.saturating_sub(rows.start);
    let (base, extra) = (len / size, len % size);
    let start = rows.start + rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// A rank's rows of one epoch: `order` (the epoch's row order) cut into global batches of
/// `batch`, each batch sharded. Returns the rank's rows in processing order and, per global
/// batch, the range of that list it processes (empty where a batch is smaller than the world).
pub fn epoch_rows(order: &[usize], batch: usize, rank: usize, size: usize) -> (Vec<usize>, Vec<Range<usize>>) {
    assert!(batch > 0, "batch size 0");
    let mut rows = Vec::with_capacity(order.len() / size + batch);
    let mut ranges = Vec::with_capacity(order.len().div_ceil(batch));
    for start in (0..order.len()).step_by(batch) {
        let part = shard(start..(start + batch).min(order.len()), rank, size);
        let local = rows.len();
        rows.extend_from_slice(&order[part]);
        ranges.push(local..rows.len());
    }
    (rows, ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_rows_once_in_order() {
        for len in [0usize, 1, 5, 7, 64, 1000] {
            for size in 1..6 {
                let parts: Vec<_> = (0..size).map(|r| shard(10..10 + len, r, size)).collect();
                assert_eq!(parts[0].start, 10);
                assert_eq!(parts[size - 1].end, 10 + len);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() >= w[1].len() && w[0].len() - w[1].len() <= 1);
                }
            }
        }
    }

    #[test]
    fn epoch_rows_follow_the_order() {
        let order: Vec<usize> = (0..11).rev().collect();
        let (r0, b0) = epoch_rows(&order, 4, 0, 3);
        let (r2, b2) = epoch_rows(&order, 4, 2, 3);
        // Batches [10 9 8 7] [6 5 4 3] [2 1 0]: rank 0 takes 2, 2, 1 rows; rank 2 takes 1, 1, 1.
        assert_eq!(r0, vec![10, 9, 6, 5, 2]);
        assert_eq!(b0, vec![0..2, 2..4, 4..5]);
        assert_eq!(r2, vec![7, 3, 0]);
        assert_eq!(b2, vec![0..1, 1..2, 2..3]);
        let mut all: Vec<usize> = (0..3).flat_map(|r| epoch_rows(&order, 4, r, 3).0).collect();
        all.sort();
        assert_eq!(all, (0..11).collect::<Vec<_>>());
    }
}

//! Cut staging for PD's sparse regions (`PCC_PD_CUTS=1`, opt-in until a GPU run has checked and
//! timed it): a region's sum blocks each read some of the region's cuts (the product vectors of
//! its splits; pd256: 4 of up to 12 cuts of 256 children), so no two blocks read the same child
//! list and the per-block staging of the two-kernel forward stages every cut once per reader.
//! Here each cut is staged once (`exp(e − M_c)` with its own maximum, by the two-kernel template's
//! staging kernel over the cuts), and the cut-staged product (`templates/sum_fwd_gemm.cu.tera`
//! with `cut`) combines a block's cuts in units of their running maximum. [`plan`] finds the
//! cuts of a partition and groups its blocks into launches whose cuts fit the staging buffer.

use pc_runtime::plan::SumPartition;

use super::mma::MAX_X_WORDS;

/// One launch of a cut-staged partition: its blocks and the cuts they read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutLaunch {
    /// Indices of the partition's blocks, in order.
    pub blocks: Vec<usize>,
    /// The first child id of each cut the blocks read (the cuts' stage order).
    pub cuts: Vec<u32>,
    /// Per block, the stage of each of its cuts (`blocks.len() · width / cut`).
    pub cutx: Vec<u32>,
}

/// A partition's cut staging: children per cut and the launches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutPlan {
    pub cut: u32,
    pub launches: Vec<CutLaunch>,
}

/// Whether `PCC_PD_CUTS=1` asks for cut staging (read at emission).
pub fn enabled() -> bool {
    std::env::var("PCC_PD_CUTS").as_deref() == Ok("1")
}

/// The cut staging of `part`, when its blocks' children are runs of consecutive child ids whose
/// greatest common divisor `cut` is a multiple of `chunk` and less than the width (no padding),
/// and some cut is read by more than one block; else `None`. `row_words`: staged words per cut
/// and sample (the launches keep their cuts within [`MAX_X_WORDS`]).
pub fn plan(part: &SumPartition, chunk: u32, row_words: impl Fn(u32) -> u32) -> Option<CutPlan> {
    let w = part.width as usize;
    let n = part.nids.len();
    if w == 0 || n < 2 {
        return None;
    }
    // The cut: the greatest common divisor of the runs of consecutive ids (product blocks of a
    // cut may or may not be adjacent in the element layout).
    let rows = part.cids.chunks(w);
    let cut = rows.clone().try_fold(0u32, |g, r| run_lengths(r).map(|ls| ls.into_iter().fold(g, gcd)))?;
    if cut == 0 || cut as usize == w || !cut.is_multiple_of(chunk) {
        return None;
    }
    let per_launch = (MAX_X_WORDS / row_words(cut).max(1)).max(1) as usize;
    let mut launches: Vec<CutLaunch> = Vec::new();
    let mut total_reads = 0usize;
    for (bi, r) in rows.enumerate() {
        let firsts: Vec<u32> = r.chunks(cut as usize).map(|c| c[0]).collect();
        let fits = |l: &CutLaunch| {
            let new = firsts.iter().filter(|f| !l.cuts.contains(f)).count();
            l.cuts.len() + new <= per_launch
        };
        if launches.last().is_none_or(|l| !fits(l)) {
            launches.push(CutLaunch { blocks: Vec::new(), cuts: Vec::new(), cutx: Vec::new() });
        }
        let l = launches.last_mut().expect("a launch");
        l.blocks.push(bi);
        for f in firsts {
            let at = match l.cuts.iter().position(|&c| c == f) {
                Some(at) => at,
                None => {
                    l.cuts.push(f);
                    l.cuts.len() - 1
                }
            };
            l.cutx.push(at as u32);
            total_reads += 1;
        }
    }
    let staged: usize = launches.iter().map(|l| l.cuts.len()).sum();
    (staged < total_reads).then_some(CutPlan { cut, launches })
}

/// The lengths of the runs of consecutive ids in `row` (`None` with a padded child).
fn run_lengths(row: &[u32]) -> Option<Vec<u32>> {
    if row.contains(&0) {
        return None;
    }
    let mut lens = Vec::new();
    let mut start = 0;
    for i in 1..=row.len() {
        if i == row.len() || row[i] != row[i - 1] + 1 {
            lens.push((i - start) as u32);
            start = i;
        }
    }
    Some(lens)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(cids: Vec<u32>, width: u32) -> SumPartition {
        let n = cids.len() / width as usize;
        let nids = (0..n as u32).map(|i| 1000 + 32 * i).collect();
        SumPartition { block_size: 32, child_block_size: 32, width, nids, cids, counts: vec![width; n], pids: vec![0; n * width as usize] }
    }

    #[test]
    fn blocks_over_shared_cuts_are_planned_and_chunked() {
        // Three cuts of 64 (ids 100.., 200.., 300..); blocks over two cuts each.
        let run = |s: u32| (s..s + 64).collect::<Vec<u32>>();
        let cids = [run(100), run(200), run(200), run(300), run(100), run(300)].concat();
        let p = plan(&part(cids.clone(), 128), 32, |c| c / 2).expect("shared cuts");
        assert_eq!(p.cut, 64);
        assert_eq!(p.launches, vec![CutLaunch { blocks: vec![0, 1, 2], cuts: vec![100, 200, 300], cutx: vec![0, 1, 1, 2, 0, 2] }]);
        // Two cuts per launch at most: a launch per block here, so nothing is shared.
        assert!(plan(&part(cids, 128), 32, |_| MAX_X_WORDS / 2).is_none());
        // Two regions of two cuts: a launch each.
        let cids = [run(100), run(200), run(200), run(100), run(300), run(400), run(400), run(300)].concat();
        let p = plan(&part(cids, 128), 32, |_| MAX_X_WORDS / 2).expect("shared cuts");
        let want = |blocks: Vec<usize>, cuts: Vec<u32>| CutLaunch { blocks, cuts, cutx: vec![0, 1, 1, 0] };
        assert_eq!(p.launches, vec![want(vec![0, 1], vec![100, 200]), want(vec![2, 3], vec![300, 400])]);
    }

    #[test]
    fn other_partitions_are_left_alone_and_mixed_runs_cut_by_their_gcd() {
        let run = |s: u32| (s..s + 64).collect::<Vec<u32>>();
        // No cut read twice.
        assert!(plan(&part([run(100), run(200), run(300), run(400)].concat(), 128), 32, |c| c / 2).is_none());
        // One run per block (an HCLT's product vector).
        assert!(plan(&part([run(100), run(100)].concat(), 64), 32, |c| c / 2).is_none());
        // Runs not a multiple of the chunk, or of different lengths, or padded.
        let r48 = |s: u32| (s..s + 48).collect::<Vec<u32>>();
        assert!(plan(&part([r48(100), r48(200), r48(200), r48(100)].concat(), 96), 32, |c| c).is_none());
        // Runs of 64 and 32: cuts of 32 (the 64-run of one block is two cuts).
        let p = plan(&part([run(100), run(200)[..32].to_vec(), run(200)[..32].to_vec(), run(100)].concat(), 96), 32, |c| c).expect("cuts of 32");
        assert_eq!((p.cut, p.launches[0].cuts.clone()), (32, vec![100, 132, 200]));
        let mut padded = [run(100), run(200), run(200), run(100)].concat();
        padded[127] = 0;
        assert!(plan(&part(padded, 128), 32, |c| c).is_none());
    }
}

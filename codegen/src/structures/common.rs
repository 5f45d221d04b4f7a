//! Helpers shared by the structure generators: the block-size rule and a seeded generator.

/// `min(cap, largest power of two dividing latents)` (1 for `latents == 0`): the block-size rule
/// shared by the structure generators.
pub(crate) fn pow2_block_size(latents: u32, cap: u32) -> u32 {
    if latents == 0 { 1 } else { (1u32 << latents.trailing_zeros()).min(cap.max(1)) }
}

/// Blocks of `block_size` nodes holding `latents` nodes (rounded up).
pub(crate) fn num_blocks(latents: u32, block_size: u32) -> u32 {
    if block_size == 0 { 0 } else { latents.div_ceil(block_size) }
}

/// A tiny deterministic generator (SplitMix64), so that structures are reproducible from a seed
/// without extra dependencies.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

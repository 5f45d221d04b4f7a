//! Poon–Domingos (PD) structures for images, as PyJuice's `PD` (`structure_type = "sum_dominated"`).
//!
//! The image is a rectangle of `height x width` pixels; variable `row * width + col` is one pixel.
//! A rectangle may be cut along rows at the positive multiples of `split_intervals.0` and along
//! columns at the positive multiples of `split_intervals.1` that lie strictly inside it.
//!
//! * A **region** (rectangle) that has at least one cut is a sum vector of `L` nodes over one
//!   product vector per cut (rows first, then columns, cut points increasing); the product of a
//!   cut multiplies the two halves' region vectors elementwise. Regions are memoized by
//!   rectangle, so shared sub-regions are built once and reused ("sum dominated").
//! * If a region has more than `max_prod_block_conns` cuts, each of its sum blocks connects to
//!   only that many randomly chosen cuts (densely to all blocks of each chosen product vector,
//!   as PyJuice does). Every cut is used by at least one sum block: the cuts are dealt out over
//!   the sum blocks in a random order first and each sum block is then topped up with random
//!   others, so a block gets more than `max_prod_block_conns` cuts only when there are more cuts
//!   than `num_blocks * max_prod_block_conns`. With `c` = (sum block, cut) pairs,
//!   `c = max(num_blocks * min(cuts, k), cuts)`.
//! * An **atomic** region (no cut inside it, or split depth reached) is, as in PyJuice, the
//!   elementwise product of one fresh input vector (`L` leaves) per pixel followed by a
//!   block-diagonal sum (`L` nodes; sum block `i` mixes product block `i`).
//! * The **root** is one sum node over all products of the whole image. If the whole image is
//!   atomic the root is one sum node directly over the product of its pixels' inputs (PyJuice
//!   would return an `L`-node sum here, which is not a valid root).
//!
//! The split depth of a rectangle is the number of its sides that are not on the image border —
//! the fewest cuts that carve it out of the image — so it does not depend on the order in which
//! the memoized recursion first meets the rectangle. A rectangle is cut only if its depth is
//! below `max_split_depth` (the image has depth 0; `Some(0)` makes the whole image atomic,
//! `Some(1)` cuts only the image itself).
//!
//! Block size: `min(16, p)` for `L <= 32`, else `min(32, p)`, with `p` the largest power of two
//! dividing `L` (PyJuice's rule), unless [`PdOptions::block_size`] overrides it. Each vector has
//! `ceil(L / block_size)` blocks. The only randomness is in the sparse sums, drawn from
//! [`PdOptions::seed`]; the same options always give the same circuit.

use std::collections::HashMap;

use super::common::{SplitMix64, num_blocks, pow2_block_size};
use crate::builder::{CircuitBuilder, SumEdges};
use crate::error::CircuitError;
use crate::ir::{Circuit, Dist, NodeId};

/// Most cut points (along both axes together) of an image that is cut at all: the memoized
/// recursion nests one level per cut point of a chain of ever smaller rectangles, and an axis of
/// more than about 2,000 cut points has millions of rectangles.
pub const MAX_CUT_POINTS: usize = 2048;

/// Options of a PD structure ([`build`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PdOptions {
    /// Image height (rows). Default 28.
    pub height: u32,
    /// Image width (columns). Default 28.
    pub width: u32,
    /// Distance between cut points along (rows, columns); 0 never cuts that axis. Default (4, 4).
    pub split_intervals: (u32, u32),
    /// Cut only rectangles whose split depth (sides off the image border) is below this; `None`
    /// cuts down to rectangles without cut points. Default `None`.
    pub max_split_depth: Option<u32>,
    /// Latent count `L`: nodes per region vector. Default 32.
    pub latents: u32,
    /// At most this many cuts per sum block when a region has more cuts (0 counts as 1). Default 4.
    pub max_prod_block_conns: u32,
    /// Distribution of every pixel's leaves. Default `Categorical { num_cats: 256 }`
    /// (use `Bernoulli` for binary images).
    pub input: Dist,
    /// Block size (a power of two); `None` uses PyJuice's rule (see the module docs). If it does
    /// not divide `latents`, the latent count is rounded up to a multiple of it. Default `None`.
    pub block_size: Option<u32>,
    /// Seed of the sparse sums' random connections. Default 0.
    pub seed: u64,
}

impl Default for PdOptions {
    fn default() -> Self {
        PdOptions {
            height: 28,
            width: 28,
            split_intervals: (4, 4),
            max_split_depth: None,
            latents: 32,
            max_prod_block_conns: 4,
            input: Dist::Categorical { num_cats: 256 },
            block_size: None,
            seed: 0,
        }
    }
}

impl PdOptions {
    /// The block size [`build`] uses.
    pub fn effective_block_size(&self) -> u32 {
        self.block_size.unwrap_or_else(|| {
            let cap = if self.latents <= 32 { 16 } else { 32 };
            pow2_block_size(self.latents, cap)
        })
    }
}

/// A rectangle `[r0, r1) x [c0, c1)`.
type Rect = (u32, u32, u32, u32);

struct Pd<'a> {
    opts: &'a PdOptions,
    b: CircuitBuilder,
    rng: SplitMix64,
    memo: HashMap<Rect, NodeId>,
    row_cuts: Vec<u32>,
    col_cuts: Vec<u32>,
    nb: u32,
    bs: u32,
}

/// The positive multiples of `interval` below `len`: `len - 1` over `interval` of them.
fn num_cut_points(interval: u32, len: u32) -> usize {
    len.saturating_sub(1).checked_div(interval).unwrap_or(0) as usize
}

fn cut_points(interval: u32, len: u32) -> Vec<u32> {
    (1..=num_cut_points(interval, len) as u32).map(|k| k * interval).collect()
}

impl Pd<'_> {
    fn depth(&self, (r0, r1, c0, c1): Rect) -> u32 {
        (r0 > 0) as u32 + (r1 < self.opts.height) as u32 + (c0 > 0) as u32 + (c1 < self.opts.width) as u32
    }

    /// One product vector per cut of `r` (empty if `r` is atomic).
    fn cut_products(&mut self, r: Rect) -> Vec<NodeId> {
        if self.opts.max_split_depth.is_some_and(|d| self.depth(r) >= d) {
            return Vec::new();
        }
        let (r0, r1, c0, c1) = r;
        let mut prods = Vec::new();
        let rows: Vec<u32> = self.row_cuts.iter().copied().filter(|&p| r0 < p && p < r1).collect();
        for p in rows {
            let a = self.region((r0, p, c0, c1));
            let b = self.region((p, r1, c0, c1));
            prods.push(self.b.multiply(&[a, b]));
        }
        let cols: Vec<u32> = self.col_cuts.iter().copied().filter(|&p| c0 < p && p < c1).collect();
        for p in cols {
            let a = self.region((r0, r1, c0, p));
            let b = self.region((r0, r1, p, c1));
            prods.push(self.b.multiply(&[a, b]));
        }
        prods
    }

    /// The product of one fresh input vector per pixel of `r`.
    fn pixel_product(&mut self, (r0, r1, c0, c1): Rect) -> NodeId {
        let mut ins = Vec::with_capacity(((r1 - r0) * (c1 - c0)) as usize);
        for row in r0..r1 {
            if self.b.is_too_large() {
                break; // `finish` fails: stop building
            }
            for col in c0..c1 {
                ins.push(self.b.inputs(row * self.opts.width + col, self.nb, self.bs, self.opts.input));
            }
        }
        self.b.multiply(&ins)
    }

    /// The `L`-node region vector of `r` (memoized).
    fn region(&mut self, r: Rect) -> NodeId {
        if let Some(&id) = self.memo.get(&r) {
            return id;
        }
        if self.b.is_too_large() {
            return NodeId(0); // `finish` fails: stop building
        }
        let prods = self.cut_products(r);
        let id = if prods.is_empty() {
            let p = self.pixel_product(r);
            self.b.summate(&[p], self.nb, self.bs, SumEdges::BlockDiagonal)
        } else {
            self.mix(&prods)
        };
        self.memo.insert(r, id);
        id
    }

    /// An `L`-node sum over the cut products, sparse when there are too many cuts.
    fn mix(&mut self, prods: &[NodeId]) -> NodeId {
        let (nb, bs) = (self.nb, self.bs);
        let k = self.opts.max_prod_block_conns.max(1) as usize;
        let n = prods.len();
        // The sparse sum has `max(nb * min(n, k), n)` (block, cut) pairs of `nb` edges of
        // `bs x bs` weights; more weights than a circuit may hold are refused by the builder
        // before anything is allocated when asked for densely (dense is never fewer).
        let pairs = (nb as u64).saturating_mul(n.min(k) as u64).max(n as u64);
        let weights = pairs.saturating_mul(nb as u64).saturating_mul(bs as u64 * bs as u64);
        if n <= k || nb == 0 || self.b.is_too_large() || weights > crate::validate::MAX_BUFFER_ENTRIES {
            return self.b.summate(prods, nb, bs, SumEdges::Dense);
        }
        // Deal the cuts out in a random order (every cut used), then top up to k per block.
        let mut order: Vec<usize> = (0..n).collect();
        self.rng.shuffle(&mut order);
        let mut chosen: Vec<Vec<bool>> = vec![vec![false; n]; nb as usize];
        let mut count = vec![0usize; nb as usize];
        for (t, &p) in order.iter().enumerate() {
            let blk = t % nb as usize;
            chosen[blk][p] = true;
            count[blk] += 1;
        }
        for blk in 0..nb as usize {
            if count[blk] < k {
                let mut rest: Vec<usize> = (0..n).filter(|&p| !chosen[blk][p]).collect();
                self.rng.shuffle(&mut rest);
                for &p in &rest[..k - count[blk]] {
                    chosen[blk][p] = true;
                }
            }
        }
        let mut edges = Vec::new();
        for (blk, row) in chosen.iter().enumerate() {
            for p in (0..n).filter(|&p| row[p]) {
                edges.extend((0..nb).map(|j| [blk as u32, p as u32 * nb + j]));
            }
        }
        self.b.summate(prods, nb, bs, SumEdges::List(edges))
    }
}

/// Build a PD circuit over a `height x width` image (see the module docs).
pub fn build(opts: &PdOptions) -> Result<Circuit, CircuitError> {
    let shape = || format!("{}x{}", opts.height, opts.width);
    let num_vars = opts.height.checked_mul(opts.width).ok_or_else(|| CircuitError::BadOption {
        option: "image shape",
        value: shape(),
        reason: format!("{} pixels, more than the {} variables a circuit may have", opts.height as u64 * opts.width as u64, u32::MAX),
    })?;
    if num_vars == 0 {
        return Err(CircuitError::Empty);
    }
    let bs = opts.effective_block_size();
    let cuts = num_cut_points(opts.split_intervals.0, opts.height) + num_cut_points(opts.split_intervals.1, opts.width);
    let cut = opts.max_split_depth != Some(0);
    if cuts > MAX_CUT_POINTS && cut {
        return Err(CircuitError::BadOption {
            option: "split interval",
            value: format!("{:?} on {}", opts.split_intervals, shape()),
            reason: format!("{cuts} cut points, more than {MAX_CUT_POINTS} (use a larger interval)"),
        });
    }
    let (row_cuts, col_cuts) = match cut {
        true => (cut_points(opts.split_intervals.0, opts.height), cut_points(opts.split_intervals.1, opts.width)),
        false => (Vec::new(), Vec::new()),
    };
    let mut pd = Pd {
        opts,
        b: CircuitBuilder::new(num_vars),
        rng: SplitMix64::new(opts.seed),
        memo: HashMap::new(),
        row_cuts,
        col_cuts,
        nb: num_blocks(opts.latents, bs),
        bs,
    };
    let whole = (0, opts.height, 0, opts.width);
    let prods = pd.cut_products(whole);
    let root = if prods.is_empty() {
        let p = pd.pixel_product(whole);
        pd.b.summate(&[p], 1, 1, SumEdges::Dense)
    } else {
        pd.b.summate(&prods, 1, 1, SumEdges::Dense)
    };
    pd.b.finish(root)
}

//! RAT-SPNs (random and tensorized sum-product networks), as PyJuice's `RAT_SPN`.
//!
//! Every variable gets one input vector of `L` leaves, shared by all repetitions. Each
//! repetition partitions the variables recursively at random: a scope is shuffled and cut into
//! `num_pieces` balanced pieces (the first `len % num_pieces` pieces one longer; each piece's
//! variables sorted), down to `depth` levels or until a scope has fewer than `num_pieces`
//! variables.
//!
//! * An inner region is a sum vector of `L` nodes (dense `L x L`) over the elementwise product of
//!   its pieces' region vectors.
//! * A leaf region is a dense `L`-node sum over the elementwise product of its variables' input
//!   vectors; a leaf region with a single variable is that variable's input vector itself (a
//!   mixture of categoricals on one variable adds parameters, not expressiveness).
//! * The root is one sum node over the top products of all repetitions (the repetitions' top
//!   regions have no `L`-node sums of their own, as in PyJuice).
//!
//! Block size: `min(256, largest power of two dividing L)` unless
//! [`RatSpnOptions::block_size`] overrides it. The partitions are drawn from
//! [`RatSpnOptions::seed`]; the same options always give the same circuit.

use super::common::{SplitMix64, num_blocks, pow2_block_size};
use crate::builder::{CircuitBuilder, SumEdges};
use crate::error::CircuitError;
use crate::ir::{Circuit, Dist, NodeId};

/// Most split levels: the recursion is one frame pair per level, and with two or more pieces per
/// split no count of `u32` variables needs more than 32 levels.
pub const MAX_DEPTH: u32 = 64;

/// Options of a RAT-SPN ([`build`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RatSpnOptions {
    /// Number of variables. Default 16.
    pub num_vars: u32,
    /// Latent count `L`: nodes per region vector. Default 32.
    pub latents: u32,
    /// Levels of random splits (0: one leaf region over all variables), at most [`MAX_DEPTH`].
    /// Default 2.
    pub depth: u32,
    /// Independent random partitions mixed by the root. Default 4.
    pub num_repetitions: u32,
    /// Pieces per split (0 counts as 1). Default 2.
    pub num_pieces: u32,
    /// Distribution of every variable's leaves. Default `Categorical { num_cats: 256 }`
    /// (use `Bernoulli` for binary data).
    pub input: Dist,
    /// Block size (a power of two); `None` is `min(256, largest power of two dividing L)`. If it
    /// does not divide `latents`, the latent count is rounded up to a multiple of it. Default `None`.
    pub block_size: Option<u32>,
    /// Seed of the random partitions. Default 0.
    pub seed: u64,
}

impl Default for RatSpnOptions {
    fn default() -> Self {
        RatSpnOptions {
            num_vars: 16,
            latents: 32,
            depth: 2,
            num_repetitions: 4,
            num_pieces: 2,
            input: Dist::Categorical { num_cats: 256 },
            block_size: None,
            seed: 0,
        }
    }
}

impl RatSpnOptions {
    /// The block size [`build`] uses.
    pub fn effective_block_size(&self) -> u32 {
        self.block_size.unwrap_or_else(|| pow2_block_size(self.latents, 256))
    }
}

struct Rat<'a> {
    opts: &'a RatSpnOptions,
    b: CircuitBuilder,
    rng: SplitMix64,
    inputs: Vec<NodeId>,
    pieces: usize,
    nb: u32,
    bs: u32,
}

impl Rat<'_> {
    fn is_leaf(&self, scope: &[u32], depth: u32) -> bool {
        depth >= self.opts.depth || scope.len() < self.pieces
    }

    /// The product vector of region `scope` at split level `depth`.
    fn product(&mut self, scope: &[u32], depth: u32) -> NodeId {
        // Past a size limit `finish` fails anyway: stop building.
        if self.is_leaf(scope, depth) || self.b.is_too_large() {
            let ins: Vec<NodeId> = scope.iter().map(|&v| self.inputs[v as usize]).collect();
            return self.b.multiply(&ins);
        }
        let mut shuffled = scope.to_vec();
        self.rng.shuffle(&mut shuffled);
        let (q, rem) = (scope.len() / self.pieces, scope.len() % self.pieces);
        let mut children = Vec::with_capacity(self.pieces);
        let mut start = 0;
        for i in 0..self.pieces {
            let end = start + q + usize::from(i < rem);
            let mut piece = shuffled[start..end].to_vec();
            piece.sort_unstable();
            children.push(self.region(&piece, depth + 1));
            start = end;
        }
        self.b.multiply(&children)
    }

    /// The `L`-node region vector of `scope` at split level `depth`.
    fn region(&mut self, scope: &[u32], depth: u32) -> NodeId {
        if scope.len() == 1 && self.is_leaf(scope, depth) {
            return self.inputs[scope[0] as usize];
        }
        let p = self.product(scope, depth);
        self.b.summate(&[p], self.nb, self.bs, SumEdges::Dense)
    }
}

/// Build a RAT-SPN (see the module docs).
pub fn build(opts: &RatSpnOptions) -> Result<Circuit, CircuitError> {
    if opts.num_vars == 0 {
        return Err(CircuitError::Empty);
    }
    if opts.depth > MAX_DEPTH {
        let levels = if opts.num_pieces >= 2 {
            format!("; {} pieces per split need at most {} levels for {} variables", opts.num_pieces, levels(opts.num_vars, opts.num_pieces), opts.num_vars)
        } else {
            String::new()
        };
        return Err(CircuitError::BadOption {
            option: "depth",
            value: opts.depth.to_string(),
            reason: format!("more than {MAX_DEPTH} levels of splits{levels}"),
        });
    }
    let bs = opts.effective_block_size();
    let nb = num_blocks(opts.latents, bs);
    let mut b = CircuitBuilder::new(opts.num_vars);
    let inputs = (0..opts.num_vars).map(|v| b.inputs(v, nb, bs, opts.input)).collect();
    let mut rat = Rat { opts, b, rng: SplitMix64::new(opts.seed), inputs, pieces: opts.num_pieces.max(1) as usize, nb, bs };
    let all: Vec<u32> = (0..opts.num_vars).collect();
    let tops: Vec<NodeId> = (0..opts.num_repetitions).map_while(|_| (!rat.b.is_too_large()).then(|| rat.product(&all, 0))).collect();
    let root = rat.b.summate(&tops, 1, 1, SumEdges::Dense);
    rat.b.finish(root)
}

/// Split levels after which every piece of `num_vars` variables is smaller than `pieces` (`pieces >= 2`).
fn levels(num_vars: u32, pieces: u32) -> u32 {
    let (mut len, mut l) = (num_vars as u64, 0);
    while len >= pieces as u64 {
        len = len.div_ceil(pieces as u64);
        l += 1;
    }
    l
}

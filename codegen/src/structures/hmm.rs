//! Hidden Markov models, as PyJuice's `HMM`.
//!
//! Observations `x_1 .. x_T` are variables `0 .. T-1`, each categorical over `num_emits` values;
//! the hidden state takes `L = hidden` values. The circuit is built right to left:
//!
//! * `z_T` = the emission input vector of `x_T` (`L` categorical leaves, one per hidden state);
//! * for `t = T-1 .. 1`: `s_t` = an `L`-node sum over `z_{t+1}` (the dense `L x L` transition
//!   matrix: `s_t[h] = Σ_h' A[h, h'] z_{t+1}[h']`), then `z_t` = the elementwise product of the
//!   emission inputs of `x_t` and `s_t`, so `z_t[h] = p(x_t .. x_T | hidden state h at t)`;
//! * the root is one sum node over `z_1` (the initial distribution).
//!
//! `homogeneous` ties every transition sum to the first one built (`s_{T-1}`) and every emission
//! input vector to the first one built (that of `x_T`), so the model has `L² + L + L·V`
//! parameters instead of `(T-1)·L² + L + T·L·V`.
//!
//! Block size: `min(1024, largest power of two dividing L)` unless [`HmmOptions::block_size`]
//! overrides it. There is no randomness.

use super::common::{num_blocks, pow2_block_size};
use crate::builder::{CircuitBuilder, SumEdges};
use crate::error::CircuitError;
use crate::ir::{Circuit, Dist};

/// Options of an HMM ([`build`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HmmOptions {
    /// Sequence length `T` (number of observed variables). Default 16.
    pub seq_length: u32,
    /// Hidden states `L`. Default 32 (as `pcc learn hmm --latents`).
    pub hidden: u32,
    /// Emission categories `V` of every observation. Default 32.
    pub num_emits: u32,
    /// Share the transition matrix and the emission distributions across time steps. Default true.
    pub homogeneous: bool,
    /// Block size (a power of two); `None` is `min(1024, largest power of two dividing L)`. If it
    /// does not divide `hidden`, the state count is rounded up to a multiple of it. Default `None`.
    pub block_size: Option<u32>,
}

impl Default for HmmOptions {
    fn default() -> Self {
        HmmOptions { seq_length: 16, hidden: 32, num_emits: 32, homogeneous: true, block_size: None }
    }
}

impl HmmOptions {
    /// The block size [`build`] uses.
    pub fn effective_block_size(&self) -> u32 {
        self.block_size.unwrap_or_else(|| pow2_block_size(self.hidden, 1024))
    }
}

/// Build an HMM (see the module docs).
pub fn build(opts: &HmmOptions) -> Result<Circuit, CircuitError> {
    let t = opts.seq_length;
    if t == 0 {
        return Err(CircuitError::Empty);
    }
    let bs = opts.effective_block_size();
    let nb = num_blocks(opts.hidden, bs);
    let dist = Dist::Categorical { num_cats: opts.num_emits };
    let mut b = CircuitBuilder::new(t);
    let last = b.inputs(t - 1, nb, bs, dist);
    let mut z = last;
    let mut first_sum = None;
    for var in (0..t - 1).rev() {
        if b.is_too_large() {
            break; // `finish` fails: stop building
        }
        let x = if opts.homogeneous { b.tied_inputs(last, var) } else { b.inputs(var, nb, bs, dist) };
        let s = match first_sum {
            Some(src) if opts.homogeneous => b.tied_summate(src, &[z]),
            _ => b.summate(&[z], nb, bs, SumEdges::Dense),
        };
        first_sum.get_or_insert(s);
        z = b.multiply(&[x, s]);
    }
    let root = b.summate(&[z], 1, 1, SumEdges::Dense);
    b.finish(root)
}

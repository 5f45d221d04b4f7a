//! One rank of a data-parallel run: its engine's flows are summed with the other ranks' before
//! every EM step, so every rank applies the same step to the same parameters and they stay
//! identical (checked by a checksum when asked). The CPU engine reduces over the hub (f64, rank
//! order); the GPU engine over NCCL on the device.

use std::fmt::Display;
use std::ops::Range;

use super::{Hub, NcclComm, ParallelError, shard};
use crate::RuntimeError;
use crate::engine::Engine;
use crate::params::Params;

/// A rank: the hub to the others and, for the GPU engine, the NCCL communicator.
pub struct Rank {
    hub: Hub,
    nccl: Option<NcclComm>,
    /// Compare the parameters' checksums every this many EM steps (0: never).
    check_every: usize,
    steps: usize,
}

impl Rank {
    /// Join `engine` to the world of `hub`. Every rank must run the same engine kind on the same
    /// parameters (checked). A GPU engine gets an NCCL communicator when the world has several
    /// ranks or `nccl` asks for one (`--gpus` with one GPU runs the same path).
    /// A rank that fails here tells the others (they stop with an error naming it).
    pub fn new(hub: Hub, engine: &Engine, nccl: bool, check_every: usize) -> Result<Rank, RuntimeError> {
        let mut rank = Rank { hub, nccl: None, check_every, steps: 0 };
        match rank.join(engine, nccl) {
            Ok(()) => Ok(rank),
            Err(e) => {
                rank.fail(&e);
                Err(e)
            }
        }
    }

    fn join(&mut self, engine: &Engine, nccl: bool) -> Result<(), RuntimeError> {
        let gpu = matches!(engine, Engine::Gpu(_));
        let kinds = self.hub.all_gather_u64(u64::from(gpu))?;
        if let Some(r) = kinds.iter().position(|&k| k != kinds[0]) {
            let name = |k: u64| if k == 1 { "the GPU" } else { "the CPU" };
            return Err(ParallelError::Mismatch(format!(
                "rank {r} runs on {}, rank 0 on {} (give every rank the same --device)",
                name(kinds[r]),
                name(kinds[0])
            ))
            .into());
        }
        self.check_params(engine)?;
        if let Engine::Gpu(e) = engine
            && (nccl || self.size() > 1)
        {
            self.nccl = Some(NcclComm::init(&mut self.hub, e.context())?);
        }
        Ok(())
    }

    pub fn rank(&self) -> usize {
        self.hub.rank()
    }

    pub fn size(&self) -> usize {
        self.hub.size()
    }

    /// Rank 0 prints, shows progress and writes files.
    pub fn is_root(&self) -> bool {
        self.hub.rank() == 0
    }

    /// This rank's part of rows `rows`.
    pub fn shard(&self, rows: Range<usize>) -> Range<usize> {
        shard::shard(rows, self.rank(), self.size())
    }

    /// Sum `engine`'s accumulated flows over the ranks, in place.
    pub fn reduce_flows(&mut self, engine: &mut Engine) -> Result<(), RuntimeError> {
        match engine {
            Engine::Cpu(e) => {
                let f = e.flows_mut();
                let mut all: Vec<f64> = f.sum.iter().chain(&f.input).copied().chain([f.total]).collect();
                self.hub.all_reduce_f64(&mut all)?;
                let (s, i) = (f.sum.len(), f.input.len());
                f.sum.copy_from_slice(&all[..s]);
                f.input.copy_from_slice(&all[s..s + i]);
                f.total = all[s + i];
                Ok(())
            }
            Engine::Gpu(e) => match &mut self.nccl {
                Some(comm) => e.all_reduce_flows(&mut self.hub, comm),
                None => Ok(()),
            },
        }
    }

    /// The flows summed over the ranks, then one EM step ([`Engine::em_step_entropy`]) on every
    /// rank; the parameters' checksums are compared every `check_every` steps.
    pub fn em_step(&mut self, engine: &mut Engine, step_size: f32, pseudocount: f32, tau: f32) -> Result<(), RuntimeError> {
        self.reduce_flows(engine)?;
        engine.em_step_entropy(step_size, pseudocount, tau)?;
        self.steps += 1;
        if self.check_every > 0 && self.steps.is_multiple_of(self.check_every) {
            self.check_params(engine)?;
        }
        Ok(())
    }

    /// Fail unless every rank holds bit-identical parameters.
    pub fn check_params(&mut self, engine: &Engine) -> Result<(), RuntimeError> {
        let sums = self.hub.all_gather_u64(checksum(&engine.params()?))?;
        match sums.iter().position(|&c| c != sums[0]) {
            None => Ok(()),
            Some(r) => Err(ParallelError::Mismatch(format!(
                "rank {r}'s parameters differ from rank 0's (checksum {:08x} vs {:08x}{})",
                sums[r],
                sums[0],
                if self.steps == 0 { "; start every rank from the same model" } else { "" }
            ))
            .into()),
        }
    }

    /// Element-wise sums over the ranks, in place (e.g. log-likelihood totals and counts).
    pub fn sum(&mut self, xs: &mut [f64]) -> Result<(), RuntimeError> {
        Ok(self.hub.all_reduce_f64(xs)?)
    }

    /// Rank 0 gets every rank's values in rank order; the others `None`.
    pub fn gather(&mut self, mine: &[f32]) -> Result<Option<Vec<f32>>, RuntimeError> {
        Ok(self.hub.gather_f32(mine)?)
    }

    /// Rank 0 gets every rank's bytes in rank order (e.g. rendered query results); the others
    /// `None`.
    pub fn gather_bytes(&mut self, mine: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, RuntimeError> {
        Ok(self.hub.gather_bytes(mine)?)
    }

    /// Wait for every rank.
    pub fn barrier(&mut self) -> Result<(), RuntimeError> {
        Ok(self.hub.barrier()?)
    }

    /// This rank failed: tell the others so they stop with an error naming it.
    pub fn fail(&mut self, why: &dyn Display) {
        self.hub.fail(&why.to_string());
    }
}

/// CRC-32 of the parameters' bits (sum weights, then input parameters).
fn checksum(p: &Params) -> u64 {
    let mut h = crc32fast::Hasher::new();
    for x in p.sum.iter().chain(&p.input) {
        h.update(&x.to_bits().to_le_bytes());
    }
    u64::from(h.finalize())
}

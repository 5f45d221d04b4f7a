//! Data-parallel training and evaluation over several ranks (GPUs of one process, processes on
//! one host, or hosts), as PyTorch DDP does for PyJuice: each rank holds the full parameters,
//! runs forward and backward on its part of every batch ([`shard`]), the flows are summed over
//! the ranks ([`Rank::reduce_flows`]: NCCL on the device for the GPU engine, the [`Hub`] for the
//! CPU engine), and every rank applies the same EM step.
//!
//! Ranks meet at rank 0's [`Hub`] (a TCP star: the rendezvous, NCCL's unique id, small host
//! collectives and the failure protocol), addressed by the launcher variables users already
//! have from torchrun and Slurm ([`World::from_env`]).

mod error;
mod hub;
mod nccl;
mod rank;
pub mod shard;
mod world;

pub use error::ParallelError;
pub use hub::{Hub, Listener};
pub use nccl::{NcclComm, available as nccl_available};
pub use rank::Rank;
pub use shard::shard;
pub use world::{DEFAULT_PORT, DEFAULT_TIMEOUT, World, timeout_from_env};

impl Hub {
    /// This process's hub in `world`: rank 0 listens at the master address, the others join it.
    pub fn connect(world: &World, timeout: std::time::Duration) -> Result<Hub, ParallelError> {
        if world.rank == 0 { Listener::bind(&world.master)?.accept(world.size, timeout) } else { Hub::join(&world.master, world.rank, world.size, timeout) }
    }
}

/// Hubs of `size` ranks in this process (threads driving one GPU each), over a free loopback
/// port; in rank order.
pub fn local_hubs(size: usize, timeout: std::time::Duration) -> Result<Vec<Hub>, ParallelError> {
    let listener = Listener::bind("127.0.0.1:0")?;
    let addr = listener.addr().to_string();
    std::thread::scope(|s| {
        let joins: Vec<_> = (1..size)
            .map(|r| {
                s.spawn({
                    let addr = &addr;
                    move || Hub::join(addr, r, size, timeout)
                })
            })
            .collect();
        let mut hubs = vec![listener.accept(size, timeout)?];
        for j in joins {
            hubs.push(j.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?);
        }
        Ok(hubs)
    })
}

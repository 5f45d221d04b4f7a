//! Data-parallel commands: `--gpus 0,1,…` runs one rank per GPU on threads of this process;
//! a process started by torchrun or srun (`RANK`, `WORLD_SIZE`, …) is one rank driving GPU
//! `LOCAL_RANK` (or the CPU engine with `--device cpu`). Either way the command's work runs
//! once per rank with that rank's engine ([`run`]); a failing rank makes every rank stop with an
//! error that names it.

use anyhow::{Context, Result, bail};
use clap::Args;
use pc_codegen::Model;
use pc_runtime::parallel::{Hub, ParallelError, Rank, World, local_hubs, nccl_available, timeout_from_env};
use pc_runtime::{Engine, RuntimeError};

use super::{Device, DeviceArgs};

#[derive(Args, Clone, Debug, Default)]
pub struct ParallelArgs {
    /// Data-parallel over these GPUs of this host, one rank each (e.g. `0,1,2,3`; needs NCCL).
    /// Processes started by torchrun or srun need no flag: each drives GPU `LOCAL_RANK`.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub gpus: Option<Vec<usize>>,
    /// Compare the ranks' parameter checksums every N EM steps (0: only at the start); for
    /// debugging a data-parallel run.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub check_every: usize,
}

/// How this command runs: alone, as one rank of a launcher-started run (joined to the others
/// from the start, so a failure while loading stops them too), or as `--gpus` threads.
pub struct Ranks {
    mode: Mode,
}

enum Mode {
    Single,
    Process { hub: Hub, world: World },
    Threads { gpus: Vec<usize> },
}

impl Ranks {
    /// Join the world first (before any loading, whose failure the other ranks must hear about).
    pub fn start(p: &ParallelArgs, device: &DeviceArgs) -> Result<Ranks> {
        let world = World::from_env()?;
        if let Some(gpus) = &p.gpus {
            check_gpus(gpus, device, world.is_some())?;
            let nccl = nccl_available()?;
            eprintln!("pcc: {} on GPUs {gpus:?}, {nccl}", plural(gpus.len(), "rank"));
            return Ok(Ranks { mode: Mode::Threads { gpus: gpus.clone() } });
        }
        Ok(Ranks {
            mode: match world {
                Some(world) => {
                    let hub = Hub::connect(&world, timeout_from_env()?).with_context(|| format!("rank {} of {}", world.rank, world.size))?;
                    Mode::Process { hub, world }
                }
                None => Mode::Single,
            },
        })
    }

    /// Whether this process writes files and prints results (rank 0, or no ranks).
    pub fn is_writer(&self) -> bool {
        !matches!(&self.mode, Mode::Process { world, .. } if world.rank != 0)
    }

    /// Run `load` (reading the model and data); if it fails on this rank, tell the others.
    pub fn prepare<T>(&mut self, load: impl FnOnce() -> Result<T>) -> Result<T> {
        let out = load();
        if let (Err(e), Mode::Process { hub, world }) = (&out, &mut self.mode) {
            hub.fail(&format!("{e:#}"));
            return out.with_context(|| format!("rank {} of {}", world.rank, world.size));
        }
        out
    }

    /// Run `work` once per rank with that rank's engine (and, in a data-parallel run, its rank).
    pub fn run(self, p: &ParallelArgs, device: &DeviceArgs, model: &Model, work: impl Fn(&mut Engine, Option<&mut Rank>) -> Result<()> + Sync) -> Result<()> {
        match self.mode {
            Mode::Single => work(&mut device.engine(model)?, None),
            Mode::Process { hub, world } => {
                one_rank(hub, world.local_rank, device, model, false, p.check_every, &work).with_context(|| format!("rank {} of {}", world.rank, world.size))
            }
            Mode::Threads { gpus } => {
                // --gpus means the GPU engine: no rank falls back to the CPU.
                let device = &DeviceArgs { device: Device::Cuda, ..device.clone() };
                let hubs = local_hubs(gpus.len(), timeout_from_env()?)?;
                let results: Vec<Result<()>> = std::thread::scope(|s| {
                    let work = &work;
                    let jobs: Vec<_> =
                        hubs.into_iter().zip(&gpus).map(|(hub, &g)| s.spawn(move || one_rank(hub, g, device, model, true, p.check_every, work))).collect();
                    jobs.into_iter().map(|j| j.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
                });
                first_cause(results.into_iter().zip(&gpus).enumerate().map(|(r, (res, g))| res.with_context(|| format!("rank {r} (GPU {g})"))).collect())
            }
        }
    }
}

fn check_gpus(gpus: &[usize], device: &DeviceArgs, launched: bool) -> Result<()> {
    if gpus.is_empty() {
        bail!("--gpus needs at least one GPU index, e.g. --gpus 0,1");
    }
    if let Some(g) = gpus.iter().enumerate().find_map(|(i, g)| gpus[..i].contains(g).then_some(g)) {
        bail!("--gpus lists GPU {g} twice");
    }
    if device.device == Device::Cpu {
        bail!("--gpus runs the GPU engine: drop --device cpu (CPU ranks are started one process each by torchrun or srun)");
    }
    if launched {
        bail!("--gpus drives several GPUs from one process, but WORLD_SIZE says a launcher started this one: start one process per GPU without --gpus");
    }
    Ok(())
}

/// One rank: its engine, its place in the world, then the work; a failure here is told to the
/// other ranks.
fn one_rank(
    mut hub: Hub,
    ordinal: usize,
    device: &DeviceArgs,
    model: &Model,
    nccl: bool,
    check_every: usize,
    work: &(impl Fn(&mut Engine, Option<&mut Rank>) -> Result<()> + Sync),
) -> Result<()> {
    let who = format!("rank {} ", hub.rank());
    let mut engine = match device.engine_on(model, ordinal, &who) {
        Ok(e) => e,
        Err(e) => {
            hub.fail(&format!("{e:#}"));
            return Err(e);
        }
    };
    let mut rank = Rank::new(hub, &engine, nccl, check_every)?;
    work(&mut engine, Some(&mut rank)).inspect_err(|e| rank.fail(&format!("{e:#}")))
}

/// Of the ranks' results, the first error that is a rank's own (not another rank's failure
/// reported back), else the first error.
fn first_cause(results: Vec<Result<()>>) -> Result<()> {
    let echo = |e: &anyhow::Error| {
        e.chain().any(|c| {
            let p = c.downcast_ref::<ParallelError>().or_else(|| match c.downcast_ref::<RuntimeError>() {
                Some(RuntimeError::Parallel(p)) => Some(p),
                _ => None,
            });
            matches!(p, Some(ParallelError::RankFailed { .. } | ParallelError::Timeout { .. }))
        })
    };
    let mut errors: Vec<anyhow::Error> = results.into_iter().filter_map(Result::err).collect();
    match errors.iter().position(|e| !echo(e)) {
        Some(i) => Err(errors.swap_remove(i)),
        None if errors.is_empty() => Ok(()),
        None => Err(errors.swap_remove(0)),
    }
}

/// Mean log-likelihood of `ev`: on one engine, or each rank scoring its part and the totals
/// summed over the ranks.
pub fn mean_ll(engine: &mut Engine, rank: Option<&mut Rank>, ev: &pc_runtime::Evidence) -> Result<f64> {
    let Some(rank) = rank else { return Ok(super::mean(&engine.log_likelihood(ev)?)) };
    let lls = shard_lls(engine, rank, ev)?;
    let mut totals = [lls.iter().map(|&l| l as f64).sum::<f64>(), lls.len() as f64];
    rank.sum(&mut totals)?;
    Ok(totals[0] / totals[1])
}

/// Every sample's log-likelihood, in order, on rank 0 (`None` on the other ranks): each rank
/// scores its part of the rows.
pub fn gather_lls(engine: &mut Engine, rank: Option<&mut Rank>, ev: &pc_runtime::Evidence) -> Result<Option<Vec<f32>>> {
    let Some(rank) = rank else { return Ok(Some(engine.log_likelihood(ev)?)) };
    let lls = shard_lls(engine, rank, ev)?;
    Ok(rank.gather(&lls)?)
}

/// The log-likelihoods of this rank's part of `ev`'s samples.
fn shard_lls(engine: &mut Engine, rank: &Rank, ev: &pc_runtime::Evidence) -> Result<Vec<f32>> {
    let part = rank.shard(0..ev.num_samples());
    Ok(if part.is_empty() { Vec::new() } else { engine.log_likelihood(&ev.slice(part.start, part.end))? })
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

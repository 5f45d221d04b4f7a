//! `pcc train`: EM training with a progress bar, atomic saves after each epoch and the best
//! model on validation data kept.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use pc_codegen::model::PARAMS_FILE;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::engine::DeviceDataExt;
use pc_runtime::Engine;
use pc_runtime::parallel::{Rank, shard};

use super::parallel::{ParallelArgs, Ranks};
use super::{DataArgs, DeviceArgs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmMode {
    /// One EM step per mini-batch with step size `--step-size`.
    Mini,
    /// Flows accumulated over the whole epoch, then one EM step with step size 1.
    Full,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model directory (updated in place).
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 512)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = EmMode::Full)]
    pub em: EmMode,
    /// Step size of mini-batch EM (full-batch EM always uses 1).
    #[arg(long, default_value_t = 0.1)]
    pub step_size: f32,
    /// Pseudocount (Laplace smoothing) of every EM update.
    #[arg(long, default_value_t = 0.1)]
    pub pseudocount: f32,
    /// Data softening (Liu & Van den Broeck 2021): each observed discrete value is kept with
    /// probability β and the rest spread over the other categories (1 = none; try 0.999–0.99).
    #[arg(long, default_value_t = 1.0)]
    pub soften: f32,
    /// Entropy regularization strength τ of every EM step (0 = none; try 0.001–0.01).
    #[arg(long, default_value_t = 0.0)]
    pub entropy: f32,
    /// Validation data: the model on disk is then the best one on it.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Seed of the mini-batch shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

pub fn run(a: &TrainArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be positive");
    }
    // Hyper-parameters are checked before any work (EM would reject them only after an epoch).
    let full_step = if a.em == EmMode::Full { 1.0 } else { a.step_size };
    pc_runtime::check_em_hyper_parameters(full_step, a.pseudocount)?;
    pc_runtime::entropy::check_tau(a.entropy)?;
    let soft = if a.soften < 1.0 { Some(pc_runtime::Soft::softened(a.soften)?) } else { None };
    let mut ranks = Ranks::start(&a.parallel, &a.device)?;
    let ranks_writer = ranks.is_writer();
    let (_lock, model, data, valid) = ranks.prepare(|| {
        // One writer per model directory; held until the process ends. Ranks of a
        // multi-process run share the directory: only rank 0 writes, so only rank 0 locks.
        let lock = if ranks_writer && a.model.is_dir() { Some(super::lock::lock_model_dir(&a.model, "train")?) } else { None };
        let model = super::load_model(&a.model)?;
        let mut data = a.data.load()?.ev;
        data.soft = soft;
        let valid = match &a.valid {
            Some(p) => Some(super::load_data(p, None)?.ev),
            None => None,
        };
        Ok((lock, model, data, valid))
    })?;
    ranks.run(&a.parallel, &a.device, &model, |engine, rank| Trainer { a, model: &model, data: &data, valid: valid.as_ref(), rank }.run(engine))
}

/// One rank's training (the only one without `rank`): every global batch is sharded over the
/// ranks, the flows summed before each EM step; rank 0 prints, shows progress and saves.
struct Trainer<'a> {
    a: &'a TrainArgs,
    model: &'a pc_codegen::Model,
    data: &'a pc_runtime::Evidence,
    valid: Option<&'a pc_runtime::Evidence>,
    rank: Option<&'a mut Rank>,
}

impl Trainer<'_> {
    fn run(mut self, engine: &mut Engine) -> Result<()> {
        let a = self.a;
        let root = self.rank.as_ref().is_none_or(|r| r.is_root());
        let (rank, size) = self.rank.as_ref().map_or((0, 1), |r| (r.rank(), r.size()));
        let n = self.data.num_samples();
        let mut order: Vec<usize> = (0..n).collect();
        // The same seed on every rank: the same shuffled order, sharded the same way.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
        // With --valid, the model on disk is the best one on it: its score now is the one to beat (a
        // worse model never replaces it), and a validation file that does not fit the model fails
        // here, before the first epoch.
        let mut best = match self.valid {
            Some(v) => {
                let now = self.mean_ll(engine, v)?;
                if root {
                    println!("valid LL of the model on disk: {now:.4}");
                }
                now.max(f64::NEG_INFINITY) // NaN: any trained model beats it
            }
            None => f64::NEG_INFINITY,
        };
        let mini = a.em == EmMode::Mini;
        let mut device_data = None;
        let mut rows = Vec::new();
        for epoch in 1..=a.epochs {
            let t0 = Instant::now();
            if mini {
                order.shuffle(&mut rng);
            }
            // This rank's rows of every global batch, and where each batch's part lies in them.
            let (local, batches) = shard::epoch_rows(&order, a.batch_size, rank, size);
            let identity = local.iter().enumerate().all(|(i, &r)| i == r);
            // On the GPU, the epoch's rows go to the device once, in this epoch's order, when they
            // fit (then a batch is a row range there, with no per-batch upload).
            let on_device = if epoch == 1 || mini {
                engine.release(device_data.take());
                rows = local;
                engine.upload(self.data, (!identity).then_some(&rows[..]))?
            } else {
                device_data.take()
            };
            let pb = super::progress(n as u64, a.quiet || !root);
            pb.set_prefix(format!("epoch {epoch}/{}", a.epochs));
            let mut totals = [0.0f64, 0.0];
            for (b, part) in batches.iter().enumerate() {
                if !part.is_empty() {
                    let lls = engine.accumulate_flows_at(on_device.as_ref(), part.clone(), || self.data.select(&rows[part.clone()]))?;
                    totals[0] += lls.iter().map(|&l| l as f64).sum::<f64>();
                    totals[1] += lls.len() as f64;
                }
                if mini {
                    self.em_step(engine, a.step_size)?;
                }
                pb.set_position(((b + 1) * a.batch_size).min(n) as u64);
                pb.set_message(format!("LL {:.4}", totals[0] / totals[1].max(1.0)));
            }
            device_data = on_device;
            if !mini {
                self.em_step(engine, 1.0)?;
            }
            pb.finish_and_clear();
            if let Some(r) = self.rank.as_deref_mut() {
                r.sum(&mut totals)?;
            }
            // The training time alone (validation and the save follow), comparable across runs.
            let train_s = t0.elapsed().as_secs_f64();
            let mut line = format!("epoch {epoch:>4}: train LL {:.4} ({train_s:.2} s)", totals[0] / totals[1].max(1.0));
            let improved = match self.valid {
                Some(v) => {
                    let vl = self.mean_ll(engine, v)?;
                    line += &format!(", valid LL {vl:.4}");
                    let better = vl > best;
                    if better {
                        best = vl;
                    }
                    better
                }
                None => true,
            };
            if improved && root {
                pc_codegen::model::save_params(&self.model.circuit, &self.model.plan, &engine.params()?, &a.model.join(PARAMS_FILE))?;
                line += ", saved";
            }
            line += &format!(" ({:.1} s in all)", t0.elapsed().as_secs_f64());
            if root {
                println!("{line}");
            }
        }
        engine.release(device_data);
        Ok(())
    }

    /// One EM step (on the flows summed over the ranks).
    fn em_step(&mut self, engine: &mut Engine, step_size: f32) -> Result<()> {
        let (pc, tau) = (self.a.pseudocount, self.a.entropy);
        match self.rank.as_deref_mut() {
            Some(r) => r.em_step(engine, step_size, pc, tau)?,
            None => engine.em_step_entropy(step_size, pc, tau)?,
        }
        Ok(())
    }

    /// Mean log-likelihood of `ev`, each rank scoring its part.
    fn mean_ll(&mut self, engine: &mut Engine, ev: &pc_runtime::Evidence) -> Result<f64> {
        super::parallel::mean_ll(engine, self.rank.as_deref_mut(), ev)
    }
}

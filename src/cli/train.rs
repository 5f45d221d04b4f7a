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
    // One writer per model directory; held until the process ends.
    let _lock = if a.model.is_dir() { Some(super::lock::lock_model_dir(&a.model, "train")?) } else { None };
    let model = super::load_model(&a.model)?;
    let mut data = a.data.load()?.ev;
    data.soft = soft;
    let valid = match &a.valid {
        Some(p) => Some(super::load_data(p, None)?.ev),
        None => None,
    };
    let mut engine = a.device.engine(&model)?;
    let n = data.num_samples();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    // With --valid, the model on disk is the best one on it: its score now is the one to beat (a
    // worse model never replaces it), and a validation file that does not fit the model fails
    // here, before the first epoch.
    let mut best = match &valid {
        Some(v) => {
            let now = super::mean(&engine.log_likelihood(v)?);
            println!("valid LL of the model on disk: {now:.4}");
            now.max(f64::NEG_INFINITY) // NaN: any trained model beats it
        }
        None => f64::NEG_INFINITY,
    };
    let mut device_data = None;
    for epoch in 1..=a.epochs {
        let t0 = Instant::now();
        if a.em == EmMode::Mini {
            order.shuffle(&mut rng);
        }
        // On the GPU, the epoch's rows go to the device once, in this epoch's order, when they
        // fit (then a batch is a row range there, with no per-batch upload).
        let mini = a.em == EmMode::Mini;
        let on_device = if epoch == 1 || mini {
            engine.release(device_data.take());
            engine.upload(&data, mini.then_some(&order[..]))?
        } else {
            device_data.take()
        };
        let pb = super::progress(n as u64, a.quiet);
        pb.set_prefix(format!("epoch {epoch}/{}", a.epochs));
        let (mut sum, mut count) = (0.0f64, 0usize);
        for start in (0..n).step_by(a.batch_size) {
            let end = (start + a.batch_size).min(n);
            let lls = engine.accumulate_flows_at(on_device.as_ref(), start..end, || data.select(&order[start..end]))?;
            if a.em == EmMode::Mini {
                engine.em_step_entropy(a.step_size, a.pseudocount, a.entropy)?;
            }
            sum += lls.iter().map(|&l| l as f64).sum::<f64>();
            count += lls.len();
            pb.set_position(end as u64);
            pb.set_message(format!("LL {:.4}", sum / count as f64));
        }
        device_data = on_device;
        if a.em == EmMode::Full {
            engine.em_step_entropy(1.0, a.pseudocount, a.entropy)?;
        }
        pb.finish_and_clear();
        let train_ll = sum / count.max(1) as f64;
        let mut line = format!("epoch {epoch:>4}: train LL {train_ll:.4}");
        let improved = match &valid {
            Some(v) => {
                let vl = super::mean(&engine.log_likelihood(v)?);
                line += &format!(", valid LL {vl:.4}");
                let better = vl > best;
                if better {
                    best = vl;
                }
                better
            }
            None => true,
        };
        if improved {
            pc_codegen::model::save_params(&model.circuit, &model.plan, &engine.params()?, &a.model.join(PARAMS_FILE))?;
            line += ", saved";
        }
        line += &format!(" ({:.1} s)", t0.elapsed().as_secs_f64());
        println!("{line}");
    }
    engine.release(device_data);
    Ok(())
}

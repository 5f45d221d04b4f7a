//! `pcc fit`: one command from data to a validated model — learns a mixture of `--trees` HCLTs
//! (default 4), searches latents and the two regularizers of Liu & Van den Broeck (NeurIPS 2021:
//! data softening, entropy regularization) on the validation split within a time budget, trains
//! each candidate with early stopping, and keeps the best.
//!
//! The search is a documented coordinate schedule, not a full grid (a full grid of the defaults
//! would be 24 trainings):
//!
//! 1. each `--latents` value, with the grid values nearest the paper's HCLT regularizers
//!    (β = 0.998, τ = 0.001);
//! 2. each `--soften` value at the best latents;
//! 3. each `--entropy` value at the best latents and softening;
//! 4. each `--pseudocount` value at the best latents, softening and entropy (the stages before
//!    use the grid's value nearest the paper's 0.1; by default binary data keeps 0.1 and
//!    categorical data also tries 1: MNIST overfits with 0.1);
//! 5. the ablation: the best latents and pseudocount with neither regularizer, softening only,
//!    entropy only and both.
//!
//! A candidate already trained is not trained again. Each training is the paper's schedule:
//! mini-batch EM whose step size falls linearly from 0.9 to 0.1 over `--max-epochs`, then full-
//! batch EM, each phase stopped once the validation LL has fallen `--patience` times in a row; the
//! candidate's parameters are those of its best validation LL. Once the budget is spent no new
//! candidate starts (the running one finishes its epoch and stops).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use pc_codegen::Model;
use pc_codegen::structures::hclt::{self, HcltOptions, MiOptions};
use pc_runtime::{Dist, Evidence, Params, Soft};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::engine::Engine;
use super::{DeviceArgs, mean};

#[derive(Args, Debug)]
pub struct FitArgs {
    /// Training data (CSV or IDX; binary or categorical values).
    #[arg(long)]
    pub data: PathBuf,
    /// Validation data: selects the settings and the epoch.
    #[arg(long)]
    pub valid: PathBuf,
    /// Test data, evaluated once with the chosen model (optional).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Rows START..END of the training data only (e.g. MNIST: `--rows 0..8000 --valid-rows
    /// 8000..9000 --test-rows 9000..10000` with one file for all three).
    #[arg(long, value_parser = super::parse_range)]
    pub rows: Option<(usize, usize)>,
    /// Rows of the validation data.
    #[arg(long, value_parser = super::parse_range)]
    pub valid_rows: Option<(usize, usize)>,
    /// Rows of the test data.
    #[arg(long, value_parser = super::parse_range)]
    pub test_rows: Option<(usize, usize)>,
    /// Output model directory (the best model, and `fit.json` with the summary).
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
    /// Wall-clock budget of the search in seconds; no new candidate starts after it.
    #[arg(long, default_value_t = 1800)]
    pub budget: u64,
    /// Latent states per HCLT region to try.
    #[arg(long, value_delimiter = ',', default_values_t = [16u32, 32])]
    pub latents: Vec<u32>,
    /// Softening keep-probabilities β to try (1 = none).
    #[arg(long, value_delimiter = ',', default_values_t = [1.0f32, 0.999, 0.998, 0.995])]
    pub soften: Vec<f32>,
    /// Entropy regularization strengths τ to try (0 = none).
    #[arg(long, value_delimiter = ',', default_values_t = [0.0f32, 0.001, 0.01])]
    pub entropy: Vec<f32>,
    /// HCLTs in the model's mixture (trees after the first from bootstrap resamples of the data).
    /// Four, as the published HCLT results: on baudio and bnetflix a mixture of four L = 16 HCLTs
    /// beats one L = 32 or L = 48 HCLT by 0.2 nats at the same cost (docs/results.md).
    #[arg(long, default_value_t = 4)]
    pub trees: u32,
    /// Pseudocounts of the EM updates to try. Default: 0.1 (the published HCLT's) for binary
    /// data; 0.1 and 1 for categorical data such as images, which overfit with 0.1 alone.
    #[arg(long, value_delimiter = ',')]
    pub pseudocount: Vec<f32>,
    /// Mini-batch size of the first phase.
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    /// Most epochs of each phase (the mini-batch phase's step size falls over them).
    #[arg(long, default_value_t = 40)]
    pub max_epochs: usize,
    /// A phase stops once the validation LL has fallen this many times in a row.
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    /// Seed of the parameters and of the mini-batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// One candidate's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub latents: u32,
    pub soften: f32,
    pub entropy: f32,
    pub pseudocount: f32,
}

/// One trained candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    #[serde(flatten)]
    pub settings: Settings,
    pub valid_ll: f64,
    pub train_ll: f64,
    pub epochs: usize,
    pub seconds: f64,
    #[serde(skip)]
    params: Option<Params>,
}

#[derive(Serialize)]
struct Summary<'a> {
    chosen: Settings,
    /// Mean LL of the training data as trained on (softened where β < 1) at the chosen epoch.
    train_ll: f64,
    valid_ll: f64,
    test_ll: Option<f64>,
    /// Bits per dimension of the test data: −test LL / (variables · ln 2).
    test_bpd: Option<f64>,
    seconds: f64,
    device: String,
    sum_edges: u64,
    trials: &'a [Trial],
    /// Validation LL at the chosen latents with neither regularizer, each alone and both.
    ablation: Vec<(&'static str, Option<f64>)>,
}

/// The paper's HCLT regularizers, used while the latents are chosen.
const PAPER_SOFTEN: f32 = 0.998;
const PAPER_ENTROPY: f32 = 0.001;
/// The published HCLT's pseudocount (the authors' code).
const PAPER_PSEUDOCOUNT: f32 = 0.1;

pub fn run(a: &FitArgs) -> Result<()> {
    check_args(a)?;
    let t0 = Instant::now();
    let train = super::load_data(&a.data, a.rows)?.ev;
    let valid = super::load_data(&a.valid, a.valid_rows)?.ev;
    let test = a.test.as_ref().map(|p| super::load_data(p, a.test_rows)).transpose()?.map(|d| d.ev);
    let leaf = binary_or_categorical(&[&train, &valid])?;
    let pseudocounts = match (&a.pseudocount[..], leaf) {
        ([], Dist::Bernoulli) => vec![PAPER_PSEUDOCOUNT],
        ([], _) => vec![PAPER_PSEUDOCOUNT, 1.0],
        (grid, _) => grid.to_vec(),
    };
    let mut search = Search { a, train: &train, valid: &valid, leaf, trials: Vec::new(), models: Vec::new(), t0, device: String::new() };
    let pick = |trials: &[Trial], f: &dyn Fn(&Settings) -> bool| {
        trials.iter().filter(|t| f(&t.settings)).max_by(|x, y| x.valid_ll.total_cmp(&y.valid_ll)).map(|t| t.settings)
    };
    // The latents are chosen with the grid's values nearest the paper's regularizers.
    let (s0, e0, p0) = (nearest(&a.soften, PAPER_SOFTEN), nearest(&a.entropy, PAPER_ENTROPY), nearest(&pseudocounts, PAPER_PSEUDOCOUNT));
    for &l in &a.latents {
        search.try_settings(Settings { latents: l, soften: s0, entropy: e0, pseudocount: p0 })?;
    }
    let best_l = pick(&search.trials, &|_| true).context("the budget ran out before the first candidate finished")?.latents;
    for &s in &a.soften {
        search.try_settings(Settings { latents: best_l, soften: s, entropy: e0, pseudocount: p0 })?;
    }
    let best_s = pick(&search.trials, &|s| s.latents == best_l && s.pseudocount == p0).map_or(s0, |s| s.soften);
    for &e in &a.entropy {
        search.try_settings(Settings { latents: best_l, soften: best_s, entropy: e, pseudocount: p0 })?;
    }
    let best_e = pick(&search.trials, &|s| s.latents == best_l && s.soften == best_s && s.pseudocount == p0).map_or(e0, |s| s.entropy);
    for &p in &pseudocounts {
        search.try_settings(Settings { latents: best_l, soften: best_s, entropy: best_e, pseudocount: p })?;
    }
    let best = pick(&search.trials, &|s| s.latents == best_l).expect("tried above");
    // The ablation's regularizers: the chosen ones, or the grid's nearest the paper's where the
    // chosen candidate has none (a grid without any leaves that arm out of the ablation).
    let bs = if best.soften < 1.0 { best.soften } else { nearest_active(&a.soften, PAPER_SOFTEN, 1.0) };
    let be = if best.entropy > 0.0 { best.entropy } else { nearest_active(&a.entropy, PAPER_ENTROPY, 0.0) };
    let combos = [("neither", 1.0, 0.0), ("softening", bs, 0.0), ("entropy", 1.0, be), ("both", bs, be)];
    for (_, s, e) in combos {
        search.try_settings(Settings { latents: best_l, soften: s, entropy: e, pseudocount: best.pseudocount })?;
    }
    let chosen = best_overall(&search.trials);
    search.finish(chosen, &combos, test.as_ref())
}

/// The grid value nearest `target`.
fn nearest(grid: &[f32], target: f32) -> f32 {
    grid.iter().copied().min_by(|x, y| (x - target).abs().total_cmp(&(y - target).abs())).expect("checked non-empty")
}

/// The grid value nearest `target` among those other than `off`, else `off`.
fn nearest_active(grid: &[f32], target: f32, off: f32) -> f32 {
    let active: Vec<f32> = grid.iter().copied().filter(|&v| v != off).collect();
    if active.is_empty() { off } else { nearest(&active, target) }
}

fn check_args(a: &FitArgs) -> Result<()> {
    if a.latents.is_empty() || a.latents.contains(&0) || a.soften.is_empty() || a.entropy.is_empty() || a.trees == 0 {
        bail!("--latents, --soften and --entropy each need at least one value (latents positive), --trees at least 1");
    }
    for &b in &a.soften {
        Soft::softened(b).with_context(|| format!("--soften {b}"))?;
    }
    for &t in &a.entropy {
        pc_runtime::entropy::check_tau(t).with_context(|| format!("--entropy {t}"))?;
    }
    if a.test_rows.is_some() && a.test.is_none() {
        bail!("--test-rows selects rows of --test, which is not given");
    }
    for &p in &a.pseudocount {
        pc_runtime::check_em_hyper_parameters(0.9, p).with_context(|| format!("--pseudocount {p}"))?;
    }
    if a.batch_size == 0 || a.max_epochs == 0 {
        bail!("--batch-size and --max-epochs must be positive");
    }
    Ok(())
}

fn best_overall(trials: &[Trial]) -> Settings {
    trials.iter().max_by(|x, y| x.valid_ll.total_cmp(&y.valid_ll)).expect("at least one trial").settings
}

/// Bernoulli leaves for binary data, categorical over `0..=max` otherwise.
fn binary_or_categorical(sets: &[&Evidence]) -> Result<Dist> {
    let mut max = 0f32;
    for ev in sets {
        for (i, &x) in ev.values.iter().enumerate() {
            if ev.missing.as_ref().is_some_and(|m| m[i]) {
                continue;
            }
            if !(x >= 0.0 && x.fract() == 0.0 && x < 65536.0) {
                bail!("pcc fit needs discrete data (whole numbers 0..65535): value {x} at sample {}, variable {}", i / ev.num_vars, i % ev.num_vars);
            }
            max = max.max(x);
        }
    }
    Ok(if max <= 1.0 { Dist::Bernoulli } else { Dist::Categorical { num_cats: max as u32 + 1 } })
}

struct Search<'a> {
    a: &'a FitArgs,
    train: &'a Evidence,
    valid: &'a Evidence,
    leaf: Dist,
    trials: Vec<Trial>,
    /// The initial model of each latents value (structure learned once).
    models: Vec<(u32, Model)>,
    t0: Instant,
    device: String,
}

impl Search<'_> {
    fn out_of_time(&self) -> bool {
        self.t0.elapsed().as_secs() >= self.a.budget
    }

    fn model(&mut self, latents: u32) -> Result<Model> {
        if let Some((_, m)) = self.models.iter().find(|(l, _)| *l == latents) {
            return Ok(m.clone());
        }
        let opts = HcltOptions { latents, block_size: None, input: Some(self.leaf), tie_inputs: false, mi: MiOptions::default(), trees: self.a.trees };
        let circuit = hclt::learn(self.train, &opts).context("learning the HCLT structure")?;
        let m = Model::random(circuit, self.a.seed)?;
        self.models.push((latents, m.clone()));
        Ok(m)
    }

    /// Train `s` unless it was trained already or the budget is spent.
    fn try_settings(&mut self, s: Settings) -> Result<()> {
        if self.trials.iter().any(|t| t.settings == s) || self.out_of_time() {
            return Ok(());
        }
        let t = Instant::now();
        let model = self.model(s.latents)?;
        let label = format!("L={} β={} τ={} α={}", s.latents, s.soften, s.entropy, s.pseudocount);
        let mut engine = self.a.device.engine(&model)?;
        self.device = engine.device_name();
        let best_so_far = self.trials.iter().map(|t| t.valid_ll).fold(f64::NEG_INFINITY, f64::max);
        let (valid_ll, train_ll, epochs, params) = train(self.a, &mut engine, self.train, self.valid, s, &label, best_so_far, self.t0)?;
        let trial = Trial { settings: s, valid_ll, train_ll, epochs, seconds: t.elapsed().as_secs_f64(), params: Some(params) };
        println!(
            "{label}: valid LL {valid_ll:.4}, train LL {train_ll:.4}, {epochs} epochs, {:.1} s{}",
            trial.seconds,
            if valid_ll > best_so_far { "  (best so far)" } else { "" }
        );
        // Only the best candidate's parameters stay in memory.
        if valid_ll > best_so_far {
            self.trials.iter_mut().for_each(|t| t.params = None);
            self.trials.push(trial);
        } else {
            self.trials.push(Trial { params: None, ..trial });
        }
        Ok(())
    }

    /// Save the chosen model and write the summary.
    fn finish(mut self, chosen: Settings, combos: &[(&'static str, f32, f32)], test: Option<&Evidence>) -> Result<()> {
        let best = self.trials.iter_mut().find(|t| t.settings == chosen).expect("chosen from the trials");
        let params = best.params.take().expect("the best trial keeps its parameters");
        let (train_ll, valid_ll) = (best.train_ll, best.valid_ll);
        let mut model = self.model(chosen.latents)?;
        model.params = params;
        std::fs::create_dir_all(&self.a.out).with_context(|| format!("cannot create {}", self.a.out.display()))?;
        let _lock = super::lock::lock_model_dir(&self.a.out, "fit")?;
        model.save(&self.a.out)?;
        let test_ll = match test {
            Some(t) => Some(mean(&self.a.device.engine(&model)?.log_likelihood(t)?)),
            None => None,
        };
        let at = |s: f32, e: f32| Settings { latents: chosen.latents, soften: s, entropy: e, pseudocount: chosen.pseudocount };
        let ll_of = |s: f32, e: f32| self.trials.iter().find(|t| t.settings == at(s, e)).map(|t| t.valid_ll);
        // An arm whose regularizer the grids leave off is no arm (not "neither" again).
        let armed = |name: &str, s: f32, e: f32| match name {
            "softening" => s < 1.0,
            "entropy" => e > 0.0,
            "both" => s < 1.0 && e > 0.0,
            _ => true,
        };
        let ablation = combos.iter().map(|&(name, s, e)| (name, ll_of(s, e).filter(|_| armed(name, s, e)))).collect();
        let summary = Summary {
            chosen,
            train_ll,
            valid_ll,
            test_ll,
            test_bpd: test_ll.map(|t| -t / (model.plan.num_vars as f64 * std::f64::consts::LN_2)),
            seconds: self.t0.elapsed().as_secs_f64(),
            device: self.device.clone(),
            sum_edges: model.plan.num_sum_edges(),
            trials: &self.trials,
            ablation,
        };
        let json = serde_json::to_string_pretty(&summary)?;
        pc_runtime::atomic_write(&self.a.out.join("fit.json"), json.as_bytes())?;
        println!(
            "chosen: latents {}, softening β {}, entropy τ {}, pseudocount {}; train LL {train_ll:.4}, valid LL {valid_ll:.4}{}; {:.0} s; saved {}",
            chosen.latents,
            chosen.soften,
            chosen.entropy,
            chosen.pseudocount,
            test_ll.zip(summary.test_bpd).map_or(String::new(), |(t, b)| format!(", test LL {t:.4} ({b:.4} bpd)")),
            summary.seconds,
            self.a.out.display()
        );
        Ok(())
    }
}

/// Train one candidate: mini-batch EM with a falling step size, then full-batch EM, each phase
/// early-stopped on validation. Returns (best valid LL, train LL at that epoch, epochs run, the
/// best parameters).
#[allow(clippy::too_many_arguments)] // one candidate's whole context
fn train(
    a: &FitArgs,
    engine: &mut Engine,
    train: &Evidence,
    valid: &Evidence,
    s: Settings,
    label: &str,
    best_so_far: f64,
    t0: Instant,
) -> Result<(f64, f64, usize, Params)> {
    let soft_train = if s.soften < 1.0 { train.clone().with_soft(Soft::softened(s.soften)?) } else { train.clone() };
    let n = train.num_samples();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let mut best = (f64::NEG_INFINITY, f64::NAN, engine.params()?);
    let mut epochs = 0;
    for phase in ["mini-batch EM", "full-batch EM"] {
        let mini = phase == "mini-batch EM";
        let (mut prev, mut falls) = (f64::NEG_INFINITY, 0);
        let pb = super::progress(a.max_epochs as u64, a.quiet);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] epoch {pos}/{len} {msg} ({elapsed})").expect("valid template").progress_chars("=> "),
        );
        pb.set_prefix(format!("{label} {phase}"));
        for epoch in 0..a.max_epochs {
            let (mut sum, mut count) = (0.0f64, 0usize);
            if mini {
                order.shuffle(&mut rng);
                // The paper's schedule: step 0.9 at the first epoch down to 0.1 at the last.
                let step = 0.9 - 0.8 * epoch as f32 / (a.max_epochs.max(2) - 1) as f32;
                for start in (0..n).step_by(a.batch_size) {
                    let batch = soft_train.select(&order[start..(start + a.batch_size).min(n)]);
                    let lls = engine.accumulate_flows(&batch)?;
                    sum += lls.iter().map(|&l| l as f64).sum::<f64>();
                    count += lls.len();
                    engine.em_step_entropy(step, s.pseudocount, s.entropy)?;
                }
            } else {
                let lls = engine.accumulate_flows(&soft_train)?;
                sum = lls.iter().map(|&l| l as f64).sum();
                count = lls.len();
                engine.em_step_entropy(1.0, s.pseudocount, s.entropy)?;
            }
            epochs += 1;
            let vl = mean(&engine.log_likelihood(valid)?);
            if vl > best.0 {
                best = (vl, sum / count.max(1) as f64, engine.params()?);
            }
            falls = if vl < prev { falls + 1 } else { 0 };
            prev = vl;
            pb.inc(1);
            pb.set_message(format!("valid LL {vl:.4}, best {:.4}, best of the search {:.4}", best.0, best.0.max(best_so_far)));
            if falls >= a.patience || t0.elapsed().as_secs() >= a.budget {
                break;
            }
        }
        pb.finish_and_clear();
        // Full-batch EM continues from the best mini-batch parameters.
        engine_set(engine, &best.2)?;
    }
    Ok((best.0, best.1, epochs, best.2))
}

/// Put `params` into the engine (the CPU engine directly; the GPU engine through its EM kernels).
fn engine_set(engine: &mut Engine, params: &Params) -> Result<()> {
    match engine {
        Engine::Cpu(e) => e.set_params(params.clone())?,
        Engine::Gpu(e) => e.install_params(params)?,
    }
    Ok(())
}

//! `pcc learn`: build a structure (learned from data where the structure needs it), initialize
//! its parameters randomly and save the model directory.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use pc_codegen::structures::hclt::{self, HcltOptions, MiOptions};
use pc_codegen::structures::{hmm, pd, rat_spn};
use pc_codegen::{Circuit, Dist, Model};
use pc_runtime::{DistKind, Domain, Evidence};

use super::DataArgs;

#[derive(Args, Debug)]
pub struct LearnArgs {
    #[command(subcommand)]
    pub structure: Structure,
}

/// Options every structure shares.
#[derive(Args, Debug)]
pub struct Common {
    #[command(flatten)]
    pub data: DataArgs,
    /// Latent states per region (L).
    #[arg(long, default_value_t = 32)]
    pub latents: u32,
    /// Block size (default: the largest power of two dividing L, capped per structure).
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Most categories a discrete variable may get from the data (its largest value + 1): one
    /// outlier such as 1000000 would otherwise silently make a huge categorical model.
    #[arg(long, default_value_t = 1024)]
    pub max_categories: u32,
    /// Leaf family: `auto` (Bernoulli for binary data, else categorical over 0..=max),
    /// `bernoulli`, `categorical` or `binomial` (successes in `--trials` trials).
    #[arg(long, default_value = "auto")]
    pub leaf: String,
    /// Trials of binomial leaves (default: the data's largest value).
    #[arg(long)]
    pub trials: Option<u32>,
    /// Seed of the random parameters (and of random structure choices).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output model directory.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Structure {
    /// Hidden Chow–Liu tree learned from the data's mutual information.
    Hclt {
        #[command(flatten)]
        common: Common,
        /// Share one set of leaf parameters across all variables.
        #[arg(long)]
        tie_inputs: bool,
        /// Soft bins for mutual information on many-valued data.
        #[arg(long, default_value_t = 8)]
        mi_bins: u32,
        /// Estimate mutual information from at most this many samples.
        #[arg(long)]
        mi_samples: Option<usize>,
        /// A mixture of this many HCLTs (trees after the first from bootstrap resamples).
        #[arg(long, default_value_t = 1)]
        trees: u32,
    },
    // The structure flags below are the `circuit!` template keys (`split_intervals` is
    // `--split-intervals`) with the defaults of the structure's options (`PdOptions::default()`,
    // …), so the CLI and the macro agree (tests/cli.rs::structure_flags_are_the_template_keys);
    // the older spellings stay as aliases.
    /// Poon–Domingos structure over an image (axis-aligned splits).
    Pd {
        #[command(flatten)]
        common: Common,
        /// Image shape HEIGHTxWIDTH (default: from IDX data, else a square).
        #[arg(long)]
        shape: Option<String>,
        /// Split points every N pixels along both axes, or ROWS,COLS per axis (0: never cut that axis).
        #[arg(long, alias = "split-interval", default_value_t = Intervals(pd::PdOptions::default().split_intervals))]
        split_intervals: Intervals,
        /// Most cut products one sum block connects to (more cuts make the region's sum sparse).
        #[arg(long, alias = "max-prod-conns", default_value_t = pd::PdOptions::default().max_prod_block_conns)]
        max_prod_block_conns: u32,
        /// Cut only rectangles whose split depth (sides off the image border) is below this.
        #[arg(long)]
        max_split_depth: Option<u32>,
    },
    /// Random and tensorized SPN: random balanced partitions, several repetitions.
    RatSpn {
        #[command(flatten)]
        common: Common,
        /// Levels of random splits.
        #[arg(long, default_value_t = rat_spn::RatSpnOptions::default().depth)]
        depth: u32,
        /// Independent random partitionings, mixed at the root.
        #[arg(long, alias = "repetitions", default_value_t = rat_spn::RatSpnOptions::default().num_repetitions)]
        num_repetitions: u32,
        /// Parts per split.
        #[arg(long, alias = "pieces", default_value_t = rat_spn::RatSpnOptions::default().num_pieces)]
        num_pieces: u32,
    },
    /// Hidden Markov model over the data's variables as a sequence (latents = hidden states).
    Hmm {
        #[command(flatten)]
        common: Common,
        /// Tie all transitions and all emissions (a time-homogeneous HMM); `--homogeneous false`
        /// gives every step its own.
        #[arg(long, num_args = 0..=1, default_value_t = hmm::HmmOptions::default().homogeneous, default_missing_value = "true", action = clap::ArgAction::Set)]
        homogeneous: bool,
    },
}

/// Leaf distribution for discrete data, by `--leaf`: Bernoulli for binary data, else categorical
/// over `0..=max` (`auto`), or the family asked for; the variables' domains (at most
/// `--max-categories` values) must hold the data.
fn leaf_for(ev: &Evidence, common: &Common) -> Result<Dist> {
    let max_categories = common.max_categories;
    let mut max = (0f32, 0);
    for (i, &x) in ev.values.iter().enumerate() {
        if ev.missing.as_ref().is_some_and(|m| m[i]) {
            continue;
        }
        if !(x >= 0.0 && x.fract() == 0.0) {
            bail!("structure learning needs discrete data: value {x} at sample {}, variable {}", i / ev.num_vars, i % ev.num_vars);
        }
        if x > max.0 {
            max = (x, i);
        }
    }
    let (x, i) = max;
    // Values are at most 2^24 (the data readers' limit), so x + 1 is exact in u64.
    if x as u64 + 1 > max_categories as u64 {
        let (sample, var) = (i / ev.num_vars, i % ev.num_vars);
        bail!(
            "sample {sample} (row {}), variable {var} (column {}): value {x} would make a categorical of {} categories, more than --max-categories {max_categories} (raise it if the value is right)",
            sample + 1,
            var + 1,
            x as u64 + 1
        );
    }
    let (max, cats) = (x as u32, x as u32 + 1);
    if common.trials.is_some() && common.leaf != "binomial" {
        bail!("--trials is an option of binomial leaves (--leaf binomial), not of --leaf {}", common.leaf);
    }
    let dist = match (common.leaf.as_str(), DistKind::from_name(&common.leaf)) {
        ("auto", _) if max <= 1 => Dist::Bernoulli,
        ("auto", _) | (_, Some(DistKind::Categorical)) => Dist::Categorical { num_cats: cats },
        (_, Some(DistKind::Bernoulli)) => Dist::Bernoulli,
        (_, Some(DistKind::Binomial)) => Dist::Binomial { num_trials: common.trials.unwrap_or(max) },
        (other, _) => bail!("--leaf {other}: structures learned from discrete data take auto, bernoulli, categorical or binomial leaves"),
    };
    if let Err(reason) = dist.check() {
        bail!("--leaf {}: {reason}", common.leaf);
    }
    if let Domain::Discrete { num_cats } = dist.domain()
        && num_cats < cats
    {
        let (sample, var) = (i / ev.num_vars, i % ev.num_vars);
        bail!(
            "sample {sample} (row {}), variable {var} (column {}): value {x} is outside the {num_cats} values of {} leaves",
            sample + 1,
            var + 1,
            common.leaf
        );
    }
    Ok(dist)
}

fn image_shape(shape: &Option<String>, from_data: Option<[usize; 2]>, num_vars: usize) -> Result<(u32, u32)> {
    if let Some(s) = shape {
        let (h, w) = s.split_once('x').context("--shape must look like 28x28")?;
        let parse = |x: &str| x.parse::<u32>().with_context(|| format!("--shape {s}: `{x}` is not a side length"));
        let (h, w) = (parse(h)?, parse(w)?);
        let pixels = h as u64 * w as u64;
        if pixels != num_vars as u64 {
            bail!("--shape {h}x{w} has {pixels} pixels, the data has {num_vars} variables");
        }
        return Ok((h, w));
    }
    if let Some([h, w]) = from_data {
        return Ok((h as u32, w as u32));
    }
    let side = (num_vars as f64).sqrt().round() as usize;
    if side * side != num_vars {
        bail!("{num_vars} variables are not a square image; pass --shape HEIGHTxWIDTH");
    }
    Ok((side as u32, side as u32))
}

pub fn run(a: &LearnArgs) -> Result<()> {
    let (circuit, common) = match &a.structure {
        Structure::Hclt { common, tie_inputs, mi_bins, mi_samples, trees } => {
            let d = common.data.load()?;
            let opts = HcltOptions {
                latents: common.latents,
                block_size: common.block_size,
                input: Some(leaf_for(&d.ev, common)?),
                tie_inputs: *tie_inputs,
                mi: MiOptions { soft_bins: *mi_bins, max_samples: *mi_samples, ..MiOptions::default() },
                trees: *trees,
            };
            if *trees == 0 {
                bail!("--trees must be at least 1");
            }
            (hclt::learn(&d.ev, &opts).context("learning the HCLT structure")?, common)
        }
        Structure::Pd { common, shape, split_intervals, max_prod_block_conns, max_split_depth } => {
            let d = common.data.load()?;
            let (height, width) = image_shape(shape, d.shape, d.ev.num_vars)?;
            let opts = pd::PdOptions {
                height,
                width,
                split_intervals: split_intervals.0,
                max_split_depth: *max_split_depth,
                latents: common.latents,
                max_prod_block_conns: *max_prod_block_conns,
                input: leaf_for(&d.ev, common)?,
                block_size: common.block_size,
                seed: common.seed,
            };
            (pd::build(&opts)?, common)
        }
        Structure::RatSpn { common, depth, num_repetitions, num_pieces } => {
            let d = common.data.load()?;
            let opts = rat_spn::RatSpnOptions {
                num_vars: d.ev.num_vars as u32,
                latents: common.latents,
                depth: *depth,
                num_repetitions: *num_repetitions,
                num_pieces: *num_pieces,
                input: leaf_for(&d.ev, common)?,
                block_size: common.block_size,
                seed: common.seed,
            };
            (rat_spn::build(&opts)?, common)
        }
        Structure::Hmm { common, homogeneous } => {
            if !["auto", "categorical"].contains(&common.leaf.as_str()) {
                bail!("--leaf {}: an HMM's emissions are categorical", common.leaf);
            }
            let d = common.data.load()?;
            let num_emits = match leaf_for(&d.ev, common)? {
                Dist::Categorical { num_cats } => num_cats,
                _ => 2,
            };
            let opts = hmm::HmmOptions {
                seq_length: d.ev.num_vars as u32,
                hidden: common.latents,
                num_emits,
                homogeneous: *homogeneous,
                block_size: common.block_size,
            };
            (hmm::build(&opts)?, common)
        }
    };
    save(circuit, common)
}

/// `--split-intervals`: `N` (both axes) or `ROWS,COLS` (`PdOptions::split_intervals`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals(pub (u32, u32));

impl std::str::FromStr for Intervals {
    type Err = String;
    fn from_str(s: &str) -> Result<Intervals, String> {
        let num = |t: &str| t.trim().parse::<u32>().map_err(|e| format!("`{t}`: {e} (expected N or ROWS,COLS)"));
        match s.split_once(',') {
            Some((r, c)) => Ok(Intervals((num(r)?, num(c)?))),
            None => num(s).map(|n| Intervals((n, n))),
        }
    }
}

impl std::fmt::Display for Intervals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            (r, c) if r == c => write!(f, "{r}"),
            (r, c) => write!(f, "{r},{c}"),
        }
    }
}

fn save(circuit: Circuit, common: &Common) -> Result<()> {
    let model = Model::random(circuit, common.seed)?;
    // Not over a directory that a `train` is writing.
    std::fs::create_dir_all(&common.out).with_context(|| format!("cannot create {}", common.out.display()))?;
    let _lock = super::lock::lock_model_dir(&common.out, "learn")?;
    model.save(&common.out)?;
    println!(
        "saved {}: {} variables, {} sum edges, {} parameters, depth {}",
        common.out.display(),
        model.plan.num_vars,
        model.plan.num_sum_edges(),
        model.plan.num_learnable_params(),
        model.plan.depths.len()
    );
    Ok(())
}

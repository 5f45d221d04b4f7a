//! `pcc learn`: build a structure (learned from data where the structure needs it), initialize
//! its parameters randomly and save the model directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pc_codegen::structures::hclt::{self, HcltOptions, MiOptions};
use pc_codegen::{Circuit, Model};

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
    },
}

pub fn run(a: &LearnArgs) -> Result<()> {
    let (circuit, common) = match &a.structure {
        Structure::Hclt { common, tie_inputs, mi_bins, mi_samples } => {
            let d = common.data.load()?;
            let opts = HcltOptions {
                latents: common.latents,
                block_size: common.block_size,
                input: None,
                tie_inputs: *tie_inputs,
                mi: MiOptions { soft_bins: *mi_bins, max_samples: *mi_samples, ..MiOptions::default() },
            };
            (hclt::learn(&d.ev, &opts).context("learning the HCLT structure")?, common)
        }
    };
    save(circuit, common)
}

fn save(circuit: Circuit, common: &Common) -> Result<()> {
    let model = Model::random(circuit, common.seed)?;
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

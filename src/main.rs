//! The `pcc` command line: learn structures, train with EM, evaluate, query and sample.

mod cli;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pcc", version, about = "Probabilistic-circuit compiler: build, train and query probabilistic circuits")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a structure (HCLT, PD, RAT-SPN, HMM) with random parameters into a model directory.
    Learn(cli::learn::LearnArgs),
    /// Train a model with EM.
    Train(Box<cli::train::TrainArgs>),
    /// Learn an HCLT, choose latents and regularization on validation data, train with early
    /// stopping and save the best model (one command from data to model).
    Fit(Box<cli::fit::FitArgs>),
    /// Average log-likelihood and bits per dimension of a data set.
    Eval {
        /// Model directory.
        model: PathBuf,
        #[command(flatten)]
        data: cli::DataArgs,
        /// Print one JSON object with `avg_ll`, `bpd`, `n`.
        #[arg(long)]
        json: bool,
        /// The data is soft evidence: a CSV with, per variable, `P(x = 1)` of a binary variable or
        /// one probability per category (empty or `?` = unobserved); the result is the
        /// likelihood of the soft observations, `Σ_x p(x) Π_v s_v(x_v)`.
        #[arg(long)]
        soft: bool,
        #[command(flatten)]
        device: cli::DeviceArgs,
        #[command(flatten)]
        parallel: cli::parallel::ParallelArgs,
    },
    /// Marginal, conditional or MPE queries with missing values.
    Query(cli::query::QueryArgs),
    /// Draw samples as CSV or as a PNG grid.
    Sample(cli::sample::SampleArgs),
    /// Write the generated CUDA source and kernel manifest of a model; `--check` compiles them.
    Codegen {
        /// Model directory.
        model: PathBuf,
        /// Output directory (circuit.cu, manifest.json).
        #[arg(long)]
        out: PathBuf,
        /// Compile with NVRTC and report registers and spills per kernel.
        #[arg(long)]
        check: bool,
        /// Architecture for --check (sm_XY without the prefix).
        #[arg(long, default_value = "90")]
        arch: String,
        /// Operand precision of the sum forward kernels: fp32 (scalar), tf32 or bf16 (tensor
        /// cores for sum blocks of 16 nodes or more).
        #[arg(long, default_value = "fp32")]
        precision: pc_runtime::cuda::Precision,
    },
    /// Describe a model: variables, nodes, edges, parameters, depth, layers, memory.
    Info {
        /// Model directory.
        model: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Let a closed pipe (`pcc query … | head`) end the process quietly, as other Unix tools do,
/// instead of `println!` panicking on EPIPE.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> Result<()> {
    restore_sigpipe();
    match Cli::parse().command {
        Command::Learn(a) => cli::learn::run(&a),
        Command::Train(a) => cli::train::run(&a),
        Command::Fit(a) => cli::fit::run(&a),
        Command::Eval { model, data, json, soft, device, parallel } => cli::eval::run(&model, &data, &device, &parallel, json, soft),
        Command::Query(a) => cli::query::run(&a),
        Command::Sample(a) => cli::sample::run(&a),
        Command::Info { model, json } => cli::info::run(&model, json),
        Command::Codegen { model, out, check, arch, precision } => cli::codegen::run(&model, &out, check, &arch, precision),
    }
}

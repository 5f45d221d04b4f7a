//! The `pcc` subcommands, one file each, and what they share: data loading, device choice,
//! model loading.

pub mod codegen;
pub mod engine;
pub mod eval;
pub mod fit;
pub mod info;
pub mod learn;
pub mod lock;
pub mod parallel;
pub mod query;
pub mod sample;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use pc_codegen::Model;
use pc_runtime::Evidence;
use pc_runtime::dataset;

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The GPU when one is usable, else the CPU (saying why).
    Auto,
    Cpu,
    Cuda,
}

#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Engine to run on.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Operand precision of the GPU sum forward kernels: fp32 (scalar), tf32 or bf16 (tensor
    /// cores for sum blocks of 16 nodes or more, fp32 accumulation).
    #[arg(long, default_value = "fp32")]
    pub precision: pc_runtime::cuda::Precision,
}

impl DeviceArgs {
    /// The engine for `model` (see [`engine::start`]).
    pub fn engine(&self, model: &Model) -> Result<engine::Engine> {
        engine::start(model, self.device, self.precision)
    }

    /// The engine for `model` on GPU `ordinal` (a data-parallel rank's), `who` naming the rank.
    pub fn engine_on(&self, model: &Model, ordinal: usize, who: &str) -> Result<engine::Engine> {
        engine::start_on(model, self.device, self.precision, ordinal, who)
    }
}

/// A data file and an optional row range.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Data: IDX images (MNIST format) or CSV (comma-separated; `?` or an empty field = missing).
    #[arg(long)]
    pub data: PathBuf,
    /// Use only rows START..END of the data (e.g. `0..9000`).
    #[arg(long, value_parser = parse_range)]
    pub rows: Option<(usize, usize)>,
}

pub(crate) fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once("..").ok_or("expected START..END")?;
    let a: usize = if a.is_empty() { 0 } else { a.parse().map_err(|e| format!("{e}"))? };
    let b: usize = if b.is_empty() { usize::MAX } else { b.parse().map_err(|e| format!("{e}"))? };
    if a > b {
        return Err("START must not exceed END".into());
    }
    Ok((a, b))
}

/// Loaded data, with the image shape when it came from an IDX file.
pub struct Data {
    pub ev: Evidence,
    pub shape: Option<[usize; 2]>,
}

impl DataArgs {
    pub fn load(&self) -> Result<Data> {
        load_data(&self.data, self.rows)
    }
}

/// Read `path` once (a pipe or `/dev/stdin` cannot be reopened: sniffing the format from a first
/// read and then reading again lost the bytes of the first read), then parse IDX images or CSV
/// (`dataset::is_idx`).
pub fn load_data(path: &Path, rows: Option<(usize, usize)>) -> Result<Data> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (ev, shape) = dataset::evidence_from_bytes(path, &bytes, "?")?;
    let n = ev.num_samples();
    let ev = match rows {
        Some((a, b)) => {
            // An open end (`A..`) runs to the last row; an explicit end past it is a mistake.
            if a >= n || (b != usize::MAX && b > n) {
                let end = if b == usize::MAX { String::new() } else { b.to_string() };
                bail!("--rows {a}..{end}: {} has only {n} rows", path.display());
            }
            if a == b {
                bail!("--rows {a}..{b} selects no rows");
            }
            ev.slice(a, b.min(n))
        }
        None => ev,
    };
    if ev.num_samples() == 0 {
        bail!("{}: no samples", path.display());
    }
    Ok(Data { ev, shape })
}

pub fn load_model(dir: &Path) -> Result<Model> {
    Model::load(dir).with_context(|| format!("cannot load model {}", dir.display()))
}

/// Mean of f32 log-likelihoods in f64.
pub fn mean(v: &[f32]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
}

/// A progress bar on stderr (hidden when stderr is not a terminal or with `--quiet`).
pub fn progress(len: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} samples {msg} ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

//! `pcc sample`: unconditional samples as CSV or as a PNG grid of images.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use pc_runtime::{Domain, Evidence, dataset};

use super::DeviceArgs;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Model directory.
    pub model: PathBuf,
    /// Number of samples.
    #[arg(short = 'n', long, default_value_t = 64)]
    pub num: usize,
    /// Random seed: the same seed gives the same samples on the same engine (the CPU and GPU
    /// engines use different generators, so their samples differ).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the samples as a square grid of images.
    #[arg(long, conflicts_with = "csv", required_unless_present = "csv")]
    pub png: Option<PathBuf>,
    /// Write the samples as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Image shape HEIGHTxWIDTH (default: square).
    #[arg(long)]
    pub shape: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Most sample values one call draws (4 GiB of f32): a larger `-n` is an error, not an abort.
const MAX_VALUES: usize = 1 << 30;

pub fn run(a: &SampleArgs) -> Result<()> {
    let m = super::load_model(&a.model)?;
    let nv = m.plan.num_vars as usize;
    if a.num == 0 {
        bail!("-n 0: nothing to sample");
    }
    if a.num.checked_mul(nv).is_none_or(|v| v > MAX_VALUES) {
        bail!("-n {}: {} samples of {nv} variables exceed the {MAX_VALUES} values one call draws", a.num, a.num);
    }
    // The image shape is checked before any sampling.
    let shape = match &a.png {
        Some(_) => Some(image_shape(a.shape.as_deref(), nv)?),
        None => None,
    };
    let mut engine = a.device.engine(&m)?;
    let samples = engine.sample(a.num, a.seed)?;
    if let Some(path) = &a.csv {
        dataset::write_csv(path, &Evidence::new(nv, samples)?, "?")?;
        println!("wrote {} samples to {}", a.num, path.display());
        return Ok(());
    }
    let path = a.png.as_ref().expect("clap requires --png or --csv");
    let (h, w) = shape.expect("computed for --png");
    let levels = m.plan.domains.iter().map(|d| match d {
        Domain::Discrete { num_cats } => *num_cats as f32,
        Domain::Continuous => 256.0,
    });
    let scale = 255.0 / (levels.fold(2.0f32, f32::max) - 1.0);
    let cols = (a.num as f64).sqrt().ceil() as usize;
    let rows = a.num.div_ceil(cols.max(1));
    let (gw, gh) = (cols * (w + 1) + 1, rows * (h + 1) + 1);
    let mut img = vec![64u8; gw * gh];
    for (i, s) in samples.chunks(nv).enumerate() {
        let (r0, c0) = ((i / cols) * (h + 1) + 1, (i % cols) * (w + 1) + 1);
        for y in 0..h {
            for x in 0..w {
                img[(r0 + y) * gw + c0 + x] = (s[y * w + x] * scale).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    write_png(path, gw as u32, gh as u32, &img)?;
    println!("wrote a {rows}x{cols} grid of {} samples to {}", a.num, path.display());
    Ok(())
}

/// HEIGHTxWIDTH from `--shape` (or the square side), which must cover exactly `nv` variables.
fn image_shape(shape: Option<&str>, nv: usize) -> Result<(usize, usize)> {
    let (h, w) = match shape {
        Some(s) => {
            let (h, w) = s.split_once('x').context("--shape must look like 28x28")?;
            let dim = |d: &str| d.parse::<usize>().with_context(|| format!("--shape {s}: {d:?} is not a size"));
            (dim(h)?, dim(w)?)
        }
        None => {
            let side = (nv as f64).sqrt().round() as usize;
            if side * side != nv {
                bail!("{nv} variables are not a square image; pass --shape HEIGHTxWIDTH");
            }
            (side, side)
        }
    };
    if h.checked_mul(w) != Some(nv) {
        bail!("--shape {h}x{w} does not have {nv} pixels (the model's variables)");
    }
    Ok((h, w))
}

/// Grayscale PNG, written atomically.
fn write_png(path: &std::path::Path, width: u32, height: u32, pixels: &[u8]) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width, height);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(pixels)?;
    }
    pc_runtime::atomic_write(path, &bytes)?;
    Ok(())
}

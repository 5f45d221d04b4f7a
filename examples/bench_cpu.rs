//! CPU engine throughput on HCLT models of mnist10k: forward and train-step samples/s and
//! edge·samples/s, at each latent size and thread count given.
//!
//! Run: `cargo run --release --example bench_cpu -- [DATA_DIR] [--latents 32,128] [--threads 1,2]`
//! (DATA_DIR defaults to `../shared/data/mnist10k`). Prints one JSON line per configuration.

use std::time::Instant;

use anyhow::{Context, Result};
use pcc::codegen::Model;
use pcc::codegen::structures::hclt::{self, HcltOptions};
use pcc::runtime::dataset;

fn list(args: &[String], flag: &str, default: &[usize]) -> Vec<usize> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().filter(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "../shared/data/mnist10k".into());
    let (images, _) = dataset::read_idx_images(&std::path::Path::new(&dir).join("images-idx3-ubyte")).context("reading mnist10k")?;
    let train = images.slice(0, 9000);
    let batch = 512;
    let data = train.slice(0, batch * 4);
    for latents in list(&args, "--latents", &[32, 128]) {
        let circuit = hclt::learn(&train, &HcltOptions { latents: latents as u32, ..HcltOptions::default() })?;
        let model = Model::random(circuit, 0)?;
        let edges = model.plan.num_sum_edges() as f64;
        for threads in list(&args, "--threads", &[1, 2]) {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
            let (fwd, train_step) = pool.install(|| -> Result<(f64, f64)> {
                let mut engine = model.cpu_engine()?;
                engine.log_likelihood(&data.slice(0, batch))?; // warm-up
                let t = Instant::now();
                for k in 0..4 {
                    engine.log_likelihood(&data.slice(k * batch, (k + 1) * batch))?;
                }
                let fwd = t.elapsed().as_secs_f64() / 4.0;
                let t = Instant::now();
                for k in 0..2 {
                    engine.accumulate_flows(&data.slice(k * batch, (k + 1) * batch), None)?;
                    engine.em_step(0.1, 0.1)?;
                }
                Ok((fwd, t.elapsed().as_secs_f64() / 2.0))
            })?;
            println!(
                "{}",
                serde_json::json!({
                    "model": format!("hclt{latents}"), "threads": threads, "batch": batch, "sum_edges": edges,
                    "forward_s_per_batch": fwd, "forward_samples_per_s": batch as f64 / fwd,
                    "forward_edge_samples_per_s": edges * batch as f64 / fwd,
                    "train_s_per_batch": train_step, "train_samples_per_s": batch as f64 / train_step,
                    "train_edge_samples_per_s": edges * batch as f64 / train_step,
                })
            );
        }
    }
    Ok(())
}

//! NVRTC cold-compile time of generated sources (no GPU needed): per model and precision, the
//! whole source as one program, each translation unit alone, and the units compiled in parallel
//! (what `GpuEngine::new` does on a cache miss; its wall time follows the largest unit when there
//! are enough cores).
//! Run: `source .ci/nvrtc.sh && cargo run --release --example nvrtc_time -- [MNIST_DIR] [--whole]`

use std::time::Instant;

use anyhow::Result;
use pcc::codegen::emit::{EmitOptions, emit_with};
use pcc::codegen::structures::hclt::{self, HcltOptions};
use pcc::codegen::{Circuit, compile, structures::pd};
use pcc::runtime::cuda::{KernelCache, Precision, compile_cubin, compile_units, split_units};
use pcc::runtime::dataset;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.iter().find(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "../shared/data/mnist10k".into());
    let whole = args.iter().any(|a| a == "--whole");
    let (images, _) = dataset::read_idx_images(&std::path::Path::new(&dir).join("images-idx3-ubyte"))?;
    let tree = hclt::chow_liu(&images.slice(0, 9000), &Default::default())?;
    let mut models: Vec<(String, Circuit)> = Vec::new();
    for l in [128u32, 512] {
        models.push((
            format!("hclt{l}"),
            hclt::build(&tree, 784, pcc::codegen::Dist::Categorical { num_cats: 256 }, &HcltOptions { latents: l, ..Default::default() })?,
        ));
    }
    models.push(("pd256".into(), pd::build(&pd::PdOptions { latents: 256, ..Default::default() })?));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (name, c) in &models {
        let plan = compile(c)?;
        let e = emit_with(&plan, &EmitOptions { precision: Precision::Bf16 })?;
        let units = split_units(&e.source);
        if whole {
            let t = Instant::now();
            compile_cubin(&e.source, "whole.cu", "90")?;
            println!("{name} bf16: whole source ({} KiB) {:.2} s", e.source.len() / 1024, t.elapsed().as_secs_f64());
        }
        let mut times = Vec::new();
        for u in &units {
            let t = Instant::now();
            compile_cubin(&u.source, &format!("{}.cu", u.name), "90")?;
            times.push((u.name.clone(), u.source.len() / 1024, t.elapsed().as_secs_f64()));
        }
        let cache = KernelCache::new(std::env::temp_dir().join(format!("pcc-nvrtc-time-{}-{name}", std::process::id())));
        let t = Instant::now();
        compile_units(&cache, &units, "90")?;
        let par = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(cache.dir());
        let max = times.iter().map(|t| t.2).fold(0.0, f64::max);
        let list: Vec<String> = times.iter().map(|(n, k, s)| format!("{n} {k} KiB {s:.2} s")).collect();
        println!(
            "{name} bf16: {} units, largest {max:.2} s, sum {:.2} s, parallel on {cores} cores {par:.2} s: {}",
            units.len(),
            times.iter().map(|t| t.2).sum::<f64>(),
            list.join("; ")
        );
    }
    Ok(())
}

//! pcc's side of the PyJuice benchmark protocol (`../shared/bench/README.md`): mnist10k tiled 6x
//! to 59,904 samples, batch 512. Per model: train epoch (forward + backward + mini-batch EM step
//! 0.1 / pseudocount 0.1 per batch, after 3 warm-up batches), forward epoch, device memory in
//! use, time to a runnable engine; writes each model's `structure.json` so the PyJuice script
//! (`bench/pyjuice_bench.py`) rebuilds the identical circuit.
//!
//! Run: `cargo run --release --example bench_gpu -- MNIST_DIR OUT_DIR [hclt128,pd128]`

use std::time::Instant;

use anyhow::{Context, Result};
use pcc::codegen::emit::emit;
use pcc::codegen::structures::{hclt, pd};
use pcc::codegen::{Circuit, Model};
use pcc::runtime::cuda::{GpuEngine, KernelCache};
use pcc::runtime::{dataset, Evidence};

fn build(name: &str, images: &Evidence) -> Result<Circuit> {
    let l: u32 = name.trim_start_matches(|c: char| c.is_alphabetic()).parse().context("model name like hclt128 or pd128")?;
    Ok(if name.starts_with("hclt") {
        hclt::learn(images, &hclt::HcltOptions { latents: l, ..Default::default() })?
    } else {
        pd::build(&pd::PdOptions { latents: l, ..Default::default() })?
    })
}

fn used_memory() -> f64 {
    cudarc::driver::CudaContext::new(0)
        .and_then(|c| c.mem_get_info())
        .map(|(free, total)| (total - free) as f64 / (1u64 << 30) as f64)
        .unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().cloned().unwrap_or_else(|| "../shared/data/mnist10k".into());
    let out = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "bench-out".into()));
    let models: Vec<String> = args.get(2).map_or(vec!["hclt128".into(), "pd128".into()], |s| s.split(',').map(String::from).collect());
    let (images, _) = dataset::read_idx_images(&std::path::Path::new(&dir).join("images-idx3-ubyte"))?;
    let tiled = Evidence::new(784, images.values.repeat(6))?.slice(0, 59_904);
    let batch = 512;
    for name in models {
        let circuit = build(&name, &images)?;
        let model = Model::random(circuit, 0)?;
        model.save(&out.join(&name))?;
        let t = Instant::now();
        let e = emit(&model.plan)?;
        let cache = KernelCache::new(std::env::temp_dir().join(format!("pcc-bench-cache-{}", std::process::id())));
        let mut gpu = GpuEngine::new(model.plan.clone(), model.params.clone(), &e.source, e.manifest.clone(), &cache)?;
        let ready_cold = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _warm = GpuEngine::new(model.plan.clone(), model.params.clone(), &e.source, e.manifest.clone(), &cache)?;
        let ready_warm = t.elapsed().as_secs_f64();
        drop(_warm);
        for k in 0..3 {
            gpu.accumulate_flows(&tiled.slice(k * batch, (k + 1) * batch), None)?;
            gpu.em_step(0.1, 0.1)?;
        }
        let t = Instant::now();
        let mut ll_sum = 0.0f64;
        for s in (0..tiled.num_samples()).step_by(batch) {
            let lls = gpu.accumulate_flows(&tiled.slice(s, s + batch), None)?;
            gpu.em_step(0.1, 0.1)?;
            ll_sum += lls.iter().map(|&x| x as f64).sum::<f64>();
        }
        let train_s = t.elapsed().as_secs_f64();
        let mem = used_memory();
        let t = Instant::now();
        for s in (0..tiled.num_samples()).step_by(batch) {
            gpu.log_likelihood(&tiled.slice(s, s + batch))?;
        }
        let fwd_s = t.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "system": "pcc", "model": name, "sum_edges": model.plan.num_sum_edges(),
                "params": model.plan.num_learnable_params(), "nodes": model.plan.num_nodes - model.plan.num_dummy_nodes,
                "train_s": train_s, "fwd_s": fwd_s, "device_mem_in_use_gib": mem,
                "ready_cold_s": ready_cold, "ready_warm_s": ready_warm,
                "train_mean_ll": ll_sum / tiled.num_samples() as f64, "device": gpu.device_name,
            })
        );
    }
    Ok(())
}

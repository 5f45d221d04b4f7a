//! pcc's side of the PyJuice benchmark protocol (`../shared/bench/README.md`): mnist10k tiled 6x
//! to 59,904 samples, batch 512. Per model: train epoch (forward + backward + mini-batch EM step
//! 0.1 / pseudocount 0.1 per batch, after 3 warm-up batches), forward epoch, device memory in
//! use (the engine's own high-water mark and what the driver reports), time to a runnable engine
//! (with the warm start's breakdown), forward latency at batch 1 and 8 (median of 50, CUDA graph
//! replay and eager), and the forward epoch without graphs; writes each model's `structure.json` so the PyJuice script
//! (`bench/pyjuice_bench.py`) rebuilds the identical circuit.
//!
//! Run: `cargo run --release --example bench_gpu -- MNIST_DIR OUT_DIR [hclt128,pd128]`
//! (`PCC_PRECISION=fp32,bf16` runs each listed path on the same model; tf32/bf16 emit tensor-core
//! sum forward kernels; default fp32)

use std::time::Instant;

use anyhow::{Context, Result};
use pcc::codegen::emit::{EmitOptions, Precision, emit_with};
use pcc::codegen::structures::{hclt, pd};
use pcc::codegen::{Circuit, Model};
use pcc::runtime::cuda::{GpuEngine, KernelCache};
use pcc::runtime::{Evidence, dataset};

fn build(name: &str, images: &Evidence) -> Result<Circuit> {
    let l: u32 = name.trim_start_matches(|c: char| c.is_alphabetic()).parse().context("model name like hclt128 or pd128")?;
    Ok(if name.starts_with("hclt") {
        hclt::learn(images, &hclt::HcltOptions { latents: l, ..Default::default() })?
    } else {
        pd::build(&pd::PdOptions { latents: l, ..Default::default() })?
    })
}

/// The model's files for the PyJuice script (structure) and `pcc` (parameters too, unless
/// `PCC_BENCH_STRUCTURE_ONLY=1`: hclt1024's parameters are 2.4 GB to write).
fn save(model: &Model, dir: &std::path::Path) -> Result<()> {
    if std::env::var("PCC_BENCH_STRUCTURE_ONLY").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(dir)?;
        pcc::codegen::model::save_structure(&model.circuit, &dir.join(pcc::codegen::model::STRUCTURE_FILE))?;
        return Ok(());
    }
    Ok(model.save(dir)?)
}

fn used_memory() -> f64 {
    cudarc::driver::CudaContext::new(0).and_then(|c| c.mem_get_info()).map(|(free, total)| (total - free) as f64 / (1u64 << 30) as f64).unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().cloned().unwrap_or_else(|| "../shared/data/mnist10k".into());
    let out = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "bench-out".into()));
    let models: Vec<String> = args.get(2).map_or(vec!["hclt128".into(), "pd128".into()], |s| s.split(',').map(String::from).collect());
    let (images, _) = dataset::read_idx_images(&std::path::Path::new(&dir).join("images-idx3-ubyte"))?;
    let tiled = Evidence::new(784, images.values.repeat(6))?.slice(0, 59_904);
    let batch: usize = std::env::var("PCC_BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(512);
    let precisions: Vec<Precision> =
        std::env::var("PCC_PRECISION").unwrap_or_else(|_| "fp32".into()).split(',').map(|p| p.parse().map_err(anyhow::Error::msg)).collect::<Result<_>>()?;
    for name in models {
        // A structure already in OUT_DIR/MODEL (e.g. from `pcc learn hclt --latents 128`) is
        // reused with random parameters (seed 0), so a run on the GPU machine need not learn the
        // HCLT tree again.
        let dir = out.join(&name);
        let model = if dir.join("structure.json").exists() {
            let model = Model::random(pcc::codegen::model::load_structure(&dir.join("structure.json"))?, 0)?;
            save(&model, &dir)?;
            model
        } else {
            let model = Model::random(build(&name, &images)?, 0)?;
            save(&model, &dir)?;
            model
        };
        for precision in &precisions {
            let precision = *precision;
            let t = Instant::now();
            let e = emit_with(&model.plan, &EmitOptions { precision })?;
            let cache = KernelCache::new(std::env::temp_dir().join(format!("pcc-bench-cache-{}", std::process::id())));
            let mut gpu = GpuEngine::new(model.plan.clone(), model.params.clone(), &e.source, e.manifest.clone(), &cache)?;
            let ready_cold = t.elapsed().as_secs_f64();
            let (plan, params, manifest) = (model.plan.clone(), model.params.clone(), e.manifest.clone());
            let t = Instant::now();
            let warm = GpuEngine::new(plan, params, &e.source, manifest, &cache)?;
            let ready_warm = t.elapsed().as_secs_f64();
            let st = warm.startup();
            drop(warm);
            // The epoch's data on the device once (PyJuice's benchmark keeps its tensor there too);
            // `PCC_HOST_DATA=1` feeds every batch from host memory instead.
            let host_data = std::env::var("PCC_HOST_DATA").is_ok_and(|v| v == "1");
            let on_device = if host_data { None } else { Some(gpu.upload_data(&tiled)?) };
            let n = tiled.num_samples();
            let train_batch = |gpu: &mut GpuEngine, s: usize| -> Result<Vec<f32>> {
                let e = s + batch.min(n - s);
                Ok(match &on_device {
                    Some(d) => gpu.accumulate_flows_at(d, s..e, None)?,
                    None => gpu.accumulate_flows(&tiled.slice(s, e), None)?,
                })
            };
            for k in 0..3 {
                train_batch(&mut gpu, k * batch)?;
                gpu.em_step(0.1, 0.1)?;
            }
            let t = Instant::now();
            let mut ll_sum = 0.0f64;
            for s in (0..n).step_by(batch) {
                let lls = train_batch(&mut gpu, s)?;
                gpu.em_step(0.1, 0.1)?;
                ll_sum += lls.iter().map(|&x| x as f64).sum::<f64>();
            }
            let train_s = t.elapsed().as_secs_f64();
            let mem = used_memory();
            let t = Instant::now();
            for s in (0..n).step_by(batch) {
                let e = s + batch.min(n - s);
                match &on_device {
                    Some(d) => gpu.log_likelihood_at(d, s..e)?,
                    None => gpu.log_likelihood(&tiled.slice(s, e))?,
                };
            }
            let fwd_s = t.elapsed().as_secs_f64();
            gpu.set_graphs(false);
            let t = Instant::now();
            for s in (0..n).step_by(batch) {
                gpu.log_likelihood(&tiled.slice(s, (s + batch).min(n)))?;
            }
            let fwd_eager_s = t.elapsed().as_secs_f64();
            let mut lat = serde_json::Map::new();
            for graphs in [true, false] {
                gpu.set_graphs(graphs);
                for b in [1usize, 8] {
                    let x = tiled.slice(0, b);
                    let mut times: Vec<f64> = (0..60)
                        .map(|_| {
                            let t = Instant::now();
                            gpu.log_likelihood(&x).map(|_| t.elapsed().as_secs_f64() * 1e6)
                        })
                        .collect::<Result<_, _>>()?;
                    let times = &mut times[10..]; // warm-up (allocation, capture)
                    times.sort_by(f64::total_cmp);
                    lat.insert(format!("lat_b{b}_{}_us", if graphs { "graph" } else { "eager" }), times[times.len() / 2].into());
                }
            }
            // `PCC_LARGEST_BATCH=1`: the largest power-of-two batch whose buffers fit next to the
            // model (`reserve_batch` fails with a typed out-of-memory error past it), and one
            // training step at that batch (issue 13: the large models train at the largest batch
            // that fits).
            // The batch-512 peak, before the probe below raises it.
            let peak_gib = gpu.peak_device_bytes() as f64 / (1u64 << 30) as f64;
            let mut largest = serde_json::Value::Null;
            if std::env::var("PCC_LARGEST_BATCH").is_ok_and(|v| v == "1") {
                let mut b = batch;
                while b * 2 <= n && gpu.reserve_batch(b * 2).is_ok() {
                    b *= 2;
                }
                let t = Instant::now();
                let step = match &on_device {
                    Some(d) => gpu.accumulate_flows_at(d, 0..b, None).and_then(|_| gpu.em_step(0.1, 0.1)),
                    None => gpu.accumulate_flows(&tiled.slice(0, b), None).and_then(|_| gpu.em_step(0.1, 0.1)),
                };
                largest = serde_json::json!({"batch": b, "step_s": t.elapsed().as_secs_f64(), "ok": step.is_ok(),
                    "peak_mem_gib": gpu.peak_device_bytes() as f64 / (1u64 << 30) as f64, "error": step.err().map(|e| e.to_string())});
            }
            println!(
                "{}",
                serde_json::json!({
                    "largest_batch": largest,
                    "system": "pcc", "model": name, "precision": precision.to_string(), "sum_edges": model.plan.num_sum_edges(),
                    "params": model.plan.num_learnable_params(), "nodes": model.plan.num_nodes - model.plan.num_dummy_nodes,
                    "train_s": train_s, "fwd_s": fwd_s, "fwd_eager_s": fwd_eager_s, "device_mem_in_use_gib": mem,
                    "peak_mem_gib": peak_gib,
                    "ready_cold_s": ready_cold, "ready_warm_s": ready_warm,
                    "warm_breakdown_ms": {
                        "validate": st.validate.as_secs_f64() * 1e3, "context": st.context.as_secs_f64() * 1e3,
                        "kernels": st.kernels.as_secs_f64() * 1e3, "upload": st.upload.as_secs_f64() * 1e3,
                        "leaf_table": st.leaf_table.as_secs_f64() * 1e3,
                    },
                    "latency_us": lat,
                    "train_mean_ll": ll_sum / tiled.num_samples() as f64, "device": gpu.device_name, "data_on_device": !host_data,
                })
            );
        }
    }
    Ok(())
}

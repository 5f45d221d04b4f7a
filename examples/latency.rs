//! Forward latency of the GPU engine at small batch sizes (median of many host-to-host calls),
//! with CUDA graph replay and eager launches; meant to run under `nsys` to see per-kernel times.
//!
//! Run: `cargo run --release --example latency -- MNIST_DIR [hclt128|pd128|...] [ITERS] [BATCHES, e.g. 1,8,64]`
//! (`PCC_CUDA_GRAPHS=0` measures eager launches only; `PCC_STRUCTURE_DIR=DIR` reads DIR/MODEL/structure.json)

use std::time::Instant;

use anyhow::{Context, Result};
use pcc::codegen::Model;
use pcc::codegen::emit::{EmitOptions, Precision, emit_with};
use pcc::codegen::structures::{hclt, pd};
use pcc::runtime::cuda::{GpuEngine, KernelCache};
use pcc::runtime::dataset;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().cloned().unwrap_or_else(|| "../shared/data/mnist10k".into());
    let name = args.get(1).cloned().unwrap_or_else(|| "hclt128".into());
    let iters: usize = args.get(2).map_or(Ok(200), |s| s.parse()).context("ITERS")?;
    let batches: Vec<usize> = args.get(3).map_or(Ok(vec![1, 8, 64]), |s| s.split(',').map(str::parse).collect()).context("BATCHES")?;
    let modes: &[bool] = if std::env::var("PCC_CUDA_GRAPHS").is_ok_and(|v| v == "0") { &[false] } else { &[true, false] };
    let (images, _) = dataset::read_idx_images(&std::path::Path::new(&dir).join("images-idx3-ubyte"))?;
    let l: u32 = name.trim_start_matches(|c: char| c.is_alphabetic()).parse().context("model name like hclt128")?;
    // `PCC_STRUCTURE_DIR`: the structure in DIR/MODEL/structure.json (e.g. learned here and
    // carried, as bench_gpu's), so the GPU machine need not learn the HCLT tree again.
    let carried = std::env::var("PCC_STRUCTURE_DIR").ok().map(|d| std::path::Path::new(&d).join(&name).join("structure.json"));
    let circuit = if let Some(path) = carried.filter(|p| p.exists()) {
        pcc::codegen::model::load_structure(&path)?
    } else if name.starts_with("hclt") {
        hclt::learn(&images.slice(0, 9000), &hclt::HcltOptions { latents: l, ..Default::default() })?
    } else {
        pd::build(&pd::PdOptions { latents: l, ..Default::default() })?
    };
    let t0 = Instant::now();
    let model = Model::random(circuit, 0)?;
    let precision: Precision = std::env::var("PCC_PRECISION").unwrap_or_else(|_| "fp32".into()).parse().map_err(anyhow::Error::msg)?;
    let e = emit_with(&model.plan, &EmitOptions { precision })?;
    eprintln!("latency: model ready, source emitted ({:.1} s)", t0.elapsed().as_secs_f64());
    let mut gpu = GpuEngine::new(model.plan.clone(), model.params.clone(), &e.source, e.manifest.clone(), &KernelCache::new(KernelCache::default_dir()))?;
    println!("{name}: {} forward kernels, {} depths, device {}", e.manifest.forward.len(), model.plan.depths.len(), gpu.device_name);
    let cpu = model.cpu_engine()?;
    for &b in &batches {
        let x = images.slice(9000, 9000 + b);
        let (want, got) = (cpu.log_likelihood(&x)?, gpu.log_likelihood(&x)?);
        let rel = got.iter().zip(&want).map(|(g, w)| (*g as f64 - *w as f64).abs() / (w.abs() as f64).max(1.0)).fold(0.0, f64::max);
        println!("batch {b:>3}: max rel error vs the CPU engine {rel:.2e} {}", if rel <= 1e-4 && got.len() == b { "PASS" } else { "FAIL" });
    }
    for &graphs in modes {
        gpu.set_graphs(graphs);
        for &b in &batches {
            let x = images.slice(9000, 9000 + b);
            let mut t: Vec<f64> = Vec::with_capacity(iters);
            for i in 0..iters + 10 {
                let s = Instant::now();
                gpu.log_likelihood(&x)?;
                if i >= 10 {
                    t.push(s.elapsed().as_secs_f64() * 1e6);
                }
            }
            t.sort_by(f64::total_cmp);
            println!(
                "batch {b:>3} {}: median {:.1} µs, p10 {:.1}, p90 {:.1}",
                if graphs { "graph" } else { "eager" },
                t[t.len() / 2],
                t[t.len() / 10],
                t[t.len() * 9 / 10]
            );
            // `PCC_PERSISTENT_TRACE=FILE`: the persistent pass's per-task trace of the last call
            // at batch 1, with the task table and its dependencies (for offline analysis).
            if let (Some(path), 1, Some(p)) = (std::env::var_os("PCC_PERSISTENT_TRACE"), b, &e.manifest.persistent)
                && let Some(trace) = gpu.persistent_trace()?
            {
                let deps: Vec<&[u32]> = (0..p.num_tasks()).map(|i| p.task_deps(i)).collect();
                let v = serde_json::json!({"model": name, "graphs": graphs, "tasks": p.tasks, "deps": deps, "cost_ns": p.cost_ns, "trace": trace});
                std::fs::write(format!("{}.{}.json", path.to_string_lossy(), if graphs { "graph" } else { "eager" }), v.to_string())?;
            }
        }
    }
    Ok(())
}

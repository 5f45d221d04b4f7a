//! `pcc codegen`: write the CUDA source and kernel manifest generated for a model, and optionally
//! compile them with NVRTC to report registers and spills.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pc_codegen::pipeline::{Precision, emit_plan};
use pc_runtime::cuda::{compile_cubin_verbose, nvrtc_available};

pub fn run(model: &Path, out: &PathBuf, check: bool, arch: &str, precision: Precision) -> Result<()> {
    let m = super::load_model(model)?;
    let e = emit_plan(m.plan, precision)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    pc_runtime::atomic_write(&out.join("circuit.cu"), e.cuda_source.as_bytes())?;
    pc_runtime::atomic_write(&out.join("manifest.json"), serde_json::to_string_pretty(&e.manifest)?.as_bytes())?;
    let kernels = e.cuda_source.matches("__global__").count();
    println!(
        "wrote {} ({} kernels, {} KiB, {precision}: {} of {} sum forward launches on tensor cores) and manifest.json ({} forward launches, {} backward steps, {} tables)",
        out.join("circuit.cu").display(),
        kernels,
        e.cuda_source.len() / 1024,
        e.manifest.forward.iter().filter(|k| k.name.starts_with(&format!("sum_fwd_{precision}_"))).count(),
        e.manifest.forward.iter().filter(|k| k.name.starts_with("sum_fwd_")).count(),
        e.manifest.forward.len(),
        e.manifest.backward.len(),
        e.manifest.tables.len()
    );
    if check {
        if !nvrtc_available() {
            println!("--check: NVRTC is not available here (install nvidia-cuda-nvrtc 13 and add it to LD_LIBRARY_PATH); not compiled");
            return Ok(());
        }
        let t = std::time::Instant::now();
        let (cubin, log) = compile_cubin_verbose(&e.cuda_source, "circuit.cu", arch)?;
        println!("NVRTC sm_{arch}: {} KiB CUBIN in {:.2} s", cubin.len() / 1024, t.elapsed().as_secs_f64());
        let mut kernel = String::new();
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                kernel = rest.split('\'').next().unwrap_or("").to_string();
            }
            if line.contains("Used ") && line.contains("registers") {
                let usage = line.split("Used ").nth(1).unwrap_or(line);
                println!("  {kernel:<32} {usage}");
            }
            if line.contains("spill") && !line.contains(" 0 bytes spill stores, 0 bytes spill loads") {
                println!("  {kernel:<32} {}", line.trim());
            }
        }
    }
    Ok(())
}

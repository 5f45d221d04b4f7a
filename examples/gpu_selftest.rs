//! GPU self-check: every model is run on the CPU engine and the GPU engine at several batch sizes —
//! forward log-likelihoods, marginals, flows (sum parameters and leaf statistics, with missing
//! values and sample weights) and the parameters after one EM step — and the largest differences
//! are printed with pass/fail.
//!
//! Run: `cargo run --release --example gpu_selftest -- [MNIST_DIR] [--quick]`
//! (MNIST_DIR defaults to `../shared/data/mnist10k`; `--quick` uses small models only, e.g. under
//! compute-sanitizer).

use std::time::Instant;

use anyhow::{bail, Result};
use pcc::codegen::emit::emit;
use pcc::codegen::structures::{hclt, hmm, pd, rat_spn};
use pcc::codegen::{Circuit, Model};
use pcc::runtime::cuda::{GpuEngine, KernelCache};
use pcc::runtime::{dataset, Dist, Evidence};

/// Forward relative-error bound of the fp32 path.
const TOL: f64 = 1e-4;

fn with_missing(ev: &Evidence, frac: f64) -> Evidence {
    let missing = (0..ev.values.len()).map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64 > 1.0 - frac).collect();
    Evidence::with_missing(ev.num_vars, ev.values.clone(), Some(missing)).unwrap()
}

fn check(name: &str, circuit: Circuit, data: &Evidence, cache: &KernelCache) -> Result<bool> {
    let model = Model::random(circuit, 7)?;
    let cpu = model.cpu_engine()?;
    let t = Instant::now();
    let emitted = emit(&model.plan)?;
    let emit_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let mut gpu = GpuEngine::new(model.plan.clone(), model.params.clone(), &emitted.source, emitted.manifest.clone(), cache)?;
    let ready_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut ok = true;
    println!(
        "{name}: {} sum edges, {} kernels, {} KiB source; emit {emit_ms:.1} ms, NVRTC/cache + load {ready_ms:.1} ms",
        model.plan.num_sum_edges(),
        emitted.manifest.forward.len(),
        emitted.source.len() / 1024
    );
    for &b in &[1usize, 7, 100, 512, 1000] {
        let n = b.min(data.num_samples());
        for (what, ev) in [("forward", data.slice(0, n)), ("marginal", with_missing(&data.slice(0, n), 0.3))] {
            let want = cpu.log_likelihood(&ev)?;
            let t = Instant::now();
            let got = gpu.log_likelihood(&ev)?;
            let gpu_ms = t.elapsed().as_secs_f64() * 1e3;
            let (mut abs, mut rel) = (0f64, 0f64);
            for (g, w) in got.iter().zip(&want) {
                let d = (*g as f64 - *w as f64).abs();
                abs = abs.max(d);
                rel = rel.max(d / (w.abs() as f64).max(1.0));
            }
            let pass = rel <= TOL && got.len() == want.len();
            ok &= pass;
            println!(
                "  batch {n:>4} {what:<8}: max abs {abs:.2e}, max rel {rel:.2e} (fp32 path, bound {TOL:.0e}) {} [{gpu_ms:.2} ms incl. copies]",
                if pass { "PASS" } else { "FAIL" }
            );
        }
    }
    // Flows and one EM step (mini-batch, η = 0.5) against the CPU engine.
    for &b in &[7usize, 100, 512] {
        let n = b.min(data.num_samples());
        let ev = with_missing(&data.slice(0, n), 0.2);
        let mut cpu = model.cpu_engine()?;
        let mut gpu = GpuEngine::new(model.plan.clone(), model.params.clone(), &emitted.source, emitted.manifest.clone(), cache)?;
        let weights: Vec<f32> = (0..n).map(|i| 0.5 + (i % 4) as f32 * 0.25).collect();
        cpu.accumulate_flows(&ev, Some(&weights))?;
        gpu.accumulate_flows(&ev, Some(&weights))?;
        let (cf, gf) = (cpu.flows().clone(), gpu.flows()?);
        let rel = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max);
        let (sum_err, in_err) = (rel(&gf.sum, &cf.sum), rel(&gf.input, &cf.input));
        cpu.em_step(0.5, 0.1)?;
        gpu.em_step(0.5, 0.1)?;
        let perr = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
        let gp = gpu.params()?;
        let (ps, pi) = (perr(&gp.sum, &cpu.params().sum), perr(&gp.input, &cpu.params().input));
        let pass = sum_err <= 1e-3 && in_err <= 1e-3 && ps <= 1e-3 && pi <= 1e-3;
        ok &= pass;
        println!(
            "  batch {n:>4} flows: sum-parameter flows max rel {sum_err:.2e}, leaf statistics max rel {in_err:.2e}; after EM max |Δθ| sums {ps:.2e}, leaves {pi:.2e} (bound 1e-3) {}",
            if pass { "PASS" } else { "FAIL" }
        );
    }
    Ok(ok)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let dir = args.iter().find(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "../shared/data/mnist10k".into());
    let cache = KernelCache::new(KernelCache::default_dir());
    let mut ok = true;
    // Binary data for the small structures.
    let bin: Vec<f32> = (0..1000 * 16).map(|i| ((i * 2654435761usize) >> 9 & 1) as f32).collect();
    let bin = Evidence::new(16, bin)?;
    ok &= check("hclt16 (binary, 16 vars)", hclt::learn(&bin, &hclt::HcltOptions { latents: 16, ..Default::default() })?, &bin, &cache)?;
    let rat = rat_spn::RatSpnOptions { num_vars: 16, latents: 8, depth: 3, input: Dist::Bernoulli, ..Default::default() };
    ok &= check("rat-spn (binary, 16 vars)", rat_spn::build(&rat)?, &bin, &cache)?;
    let seq = Evidence::new(16, bin.values.iter().enumerate().map(|(i, x)| x + (i % 3) as f32).collect())?;
    ok &= check("hmm (16 steps, 4 symbols)", hmm::build(&hmm::HmmOptions { seq_length: 16, hidden: 32, num_emits: 4, homogeneous: true, ..Default::default() })?, &seq, &cache)?;
    if !quick {
        let (images, _) = dataset::read_idx_images(&std::path::Path::new(&dir).join("images-idx3-ubyte"))?;
        let train = images.slice(0, 9000);
        for l in [32u32, 128] {
            let c = hclt::learn(&train, &hclt::HcltOptions { latents: l, ..Default::default() })?;
            ok &= check(&format!("hclt{l} (mnist10k)"), c, &images, &cache)?;
        }
        let pdo = pd::PdOptions { latents: 16, ..Default::default() };
        ok &= check("pd16 (mnist10k)", pd::build(&pdo)?, &images, &cache)?;
    }
    if !ok {
        bail!("GPU and CPU engines disagree");
    }
    println!("ALL PASS");
    Ok(())
}

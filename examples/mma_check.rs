//! Tensor-core sum forward check: HCLT models (random binary data; 16/32/64/128 latents) and a PD
//! structure are emitted with each precision (fp32 scalar, tf32 and bf16 mma), run forward on the
//! GPU at several batch sizes and compared with the CPU engine (max relative error, relative to
//! max(|ll|, 1)); then forward throughput per precision.
//!
//! Run: `cargo run --release --example mma_check [-- --quick]` (`--quick`: HCLT 16/32 only).
//! Throughput times `GpuEngine::log_likelihood`, which uploads the batch and copies the root
//! values back (a device sync), so it includes those copies.

use std::time::Instant;

use anyhow::{Result, bail};
use pcc::codegen::emit::{EmitOptions, Precision, emit_with};
use pcc::codegen::structures::{hclt, pd};
use pcc::codegen::{Circuit, Model};
use pcc::runtime::cuda::{GpuEngine, KernelCache};
use pcc::runtime::{Dist, Evidence};

const BATCHES: [usize; 5] = [1, 7, 100, 512, 1000];
/// Samples per throughput measurement and timed repeats.
const BENCH_BATCH: usize = 1000;
const REPEATS: usize = 20;

fn bound(p: Precision) -> f64 {
    match p {
        Precision::Fp32 => 1e-4,
        Precision::Tf32 => 1e-3,
        Precision::Bf16 => 2e-3,
    }
}

/// Random binary data (deterministic), `n` samples of `vars` variables.
fn binary(n: usize, vars: usize, seed: u64) -> Evidence {
    let mut s = seed;
    let values = (0..n * vars)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) & 1) as f32
        })
        .collect();
    Evidence::new(vars, values).expect("valid binary data")
}

fn check(name: &str, circuit: Circuit, data: &Evidence, cache: &KernelCache) -> Result<bool> {
    let model = Model::random(circuit, 11)?;
    let cpu = model.cpu_engine()?;
    let mut ok = true;
    println!("{name}: {} sum edges, {} variables", model.plan.num_sum_edges(), data.num_vars);
    let wants: Vec<Vec<f32>> = BATCHES.iter().map(|&b| cpu.log_likelihood(&data.slice(0, b.min(data.num_samples())))).collect::<Result<_, _>>()?;
    let mut fp32_rate = None;
    for precision in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
        let e = emit_with(&model.plan, &EmitOptions { precision })?;
        let sums = e.manifest.forward.iter().filter(|k| k.name.starts_with("sum_fwd_")).count();
        let mma = e.manifest.forward.iter().filter(|k| k.name.starts_with(&format!("sum_fwd_{precision}_"))).count();
        let t = Instant::now();
        let mut gpu = match GpuEngine::new(model.plan.clone(), model.params.clone(), &e.source, e.manifest.clone(), cache) {
            Ok(g) => g,
            Err(err) => {
                println!("  {precision}: FAIL to build the engine: {err}");
                ok = false;
                continue;
            }
        };
        println!("  {precision}: {mma} of {sums} sum forward launches on tensor cores; NVRTC/cache + load {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
        for (&b, want) in BATCHES.iter().zip(&wants) {
            let n = b.min(data.num_samples());
            let got = gpu.log_likelihood(&data.slice(0, n))?;
            let (mut abs, mut rel, mut bad) = (0f64, 0f64, 0usize);
            for (g, w) in got.iter().zip(want) {
                if g.is_nan() || (g.is_infinite() != w.is_infinite()) {
                    bad += 1;
                    continue;
                }
                if w.is_infinite() {
                    continue;
                }
                let d = (*g as f64 - *w as f64).abs();
                abs = abs.max(d);
                rel = rel.max(d / (w.abs() as f64).max(1.0));
            }
            let pass = bad == 0 && got.len() == want.len() && rel <= bound(precision);
            ok &= pass;
            println!(
                "    batch {n:>4}: max abs {abs:.2e}, max rel {rel:.2e} (bound {:.0e}){} {}",
                bound(precision),
                if bad > 0 { format!(", {bad} NaN/inf mismatches") } else { String::new() },
                if pass { "PASS" } else { "FAIL" }
            );
        }
        let ev = data.slice(0, BENCH_BATCH.min(data.num_samples()));
        let n = ev.num_samples();
        gpu.log_likelihood(&ev)?; // warm-up (buffers for this batch size)
        let t = Instant::now();
        for _ in 0..REPEATS {
            gpu.log_likelihood(&ev)?;
        }
        let secs = t.elapsed().as_secs_f64();
        let rate = (n * REPEATS) as f64 / secs;
        let speedup = fp32_rate.map_or(String::new(), |f: f64| format!(" ({:.2}x fp32)", rate / f));
        if precision == Precision::Fp32 {
            fp32_rate = Some(rate);
        }
        println!("    forward batch {n}: {:.3} ms per call, {rate:.3e} samples/s{speedup}", secs * 1e3 / REPEATS as f64);
    }
    Ok(ok)
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let cache = KernelCache::new(KernelCache::default_dir());
    let mut ok = true;
    let data = binary(1000, 64, 3);
    let latents: &[u32] = if quick { &[16, 32] } else { &[16, 32, 64, 128] };
    for &l in latents {
        let c = hclt::learn(&data, &hclt::HcltOptions { latents: l, ..Default::default() })?;
        ok &= check(&format!("hclt{l} (random binary, 64 vars)"), c, &data, &cache)?;
    }
    if !quick {
        let img = binary(1000, 16 * 16, 5);
        let o = pd::PdOptions { height: 16, width: 16, split_intervals: (4, 4), latents: 32, input: Dist::Bernoulli, ..Default::default() };
        ok &= check("pd32 (random binary 16x16)", pd::build(&o)?, &img, &cache)?;
    }
    if !ok {
        bail!("some precision disagrees with the CPU engine beyond its bound");
    }
    println!("ALL PASS");
    Ok(())
}

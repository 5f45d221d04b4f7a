//! GPU self-check: every model is run on the CPU engine and the GPU engine at several batch sizes —
//! forward log-likelihoods, marginals, flows (sum parameters and leaf statistics, with missing
//! values and sample weights), the parameters after one EM step, and the queries (conditionals,
//! MPE, unconditional and conditional sampling) — and the largest differences are printed with
//! pass/fail. Besides the structures below, a corpus of small random circuits (pcc-testkit's
//! generator plus mixed Gaussian/Categorical/Bernoulli/Indicator circuits and Binomial circuits)
//! runs every check.
//!
//! Run: `cargo run --release --example gpu_selftest -- [MNIST_DIR] [--quick] [--cpu-queries]`
//! (MNIST_DIR defaults to `../shared/data/mnist10k`; `--quick` uses small models only, e.g. under
//! compute-sanitizer; `--cpu-queries` needs no GPU: it runs only the query checks, with the CPU
//! engine in the GPU's place, to check the checker itself).

use std::time::Instant;

use anyhow::{Result, bail};
use pcc::codegen::emit::{EmitOptions, Emitted, Precision, emit, emit_with};
use pcc::codegen::structures::{hclt, hmm, pd, rat_spn};
use pcc::codegen::{Circuit, Model};
use pcc::runtime::cuda::{GpuEngine, KernelCache};
use pcc::runtime::{Conditional, CpuEngine, Dist, Evidence, MpeResult, dataset};
use pcc_testkit as common;

/// Forward relative-error bound of the bf16 (tensor-core) path.
const TOL_BF16: f64 = 2e-3;
/// Forward relative-error bound of the fp32 path.
const TOL: f64 = 1e-4;

fn with_missing(ev: &Evidence, frac: f64) -> Evidence {
    let missing = (0..ev.values.len()).map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64 > 1.0 - frac).collect();
    Evidence::with_missing(ev.num_vars, ev.values.clone(), Some(missing)).unwrap()
}

fn check(name: &str, circuit: Circuit, data: &Evidence, cache: Option<&KernelCache>) -> Result<bool> {
    let model = Model::random(circuit, 7)?;
    let Some(cache) = cache else {
        println!("{name}: queries of the CPU engine against itself (--cpu-queries)");
        return check_queries(&model, data, &mut CpuQueries(model.cpu_engine()?));
    };
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
    // Small batches again and again on different rows: the small-batch paths (and the persistent
    // pass, with PCC_PERSISTENT=1) must give the CPU engine's values on every call, not only on
    // the first (a race shows as values that change from call to call).
    for &b in &[1usize, 2, 4, 8] {
        let (mut rel, mut calls) = (0f64, 0);
        for k in 0..REPEATS {
            let s = (k * b) % data.num_samples().saturating_sub(b).max(1);
            let ev = data.slice(s, (s + b).min(data.num_samples()));
            let (want, got) = (cpu.log_likelihood(&ev)?, gpu.log_likelihood(&ev)?);
            rel = got.iter().zip(&want).map(|(g, w)| (*g as f64 - *w as f64).abs() / (w.abs() as f64).max(1.0)).fold(rel, f64::max);
            calls += usize::from(got.len() == want.len());
        }
        let pass = rel <= TOL && calls == REPEATS;
        ok &= pass;
        println!("  batch {b:>4} x {REPEATS} calls: max rel {rel:.2e} (fp32 path, bound {TOL:.0e}) {}", verdict(pass));
    }
    // Data resident on the device: row ranges give exactly the host path's results (same
    // kernels, same values; only the batch's copy differs), with and without missing values.
    for ev in [data.slice(0, data.num_samples().min(600)), with_missing(&data.slice(0, data.num_samples().min(600)), 0.3)] {
        let n = ev.num_samples();
        let d = gpu.upload_data(&ev)?;
        let (a, b) = (n / 3, n);
        let got = gpu.log_likelihood_at(&d, a..b)?;
        let want = gpu.log_likelihood(&ev.slice(a, b))?;
        let bad_range = gpu.log_likelihood_at(&d, 0..n + 1).is_err();
        // MNIST's values are bytes: kept as such on the device and widened per batch.
        let bytes = d.is_bytes();
        gpu.release_data(d);
        let pass = got == want && bad_range && bytes;
        ok &= pass;
        println!("  rows {a}..{b} from device-resident data (kept as bytes: {bytes}): identical to the host path: {} {}", got == want, verdict(pass));
    }
    // Out of device memory is a typed error that names the sizes (checked before allocating).
    let oom = gpu.reserve_batch(1 << 30).map_err(|e| e.to_string());
    let pass = matches!(&oom, Err(m) if m.contains("out of device memory") && m.contains("batch of 1073741824"));
    ok &= pass;
    println!("  buffers for a batch of 2^30: {} {}", oom.err().unwrap_or_else(|| "allocated?!".into()), verdict(pass));
    // The bf16 path: tensor-core sum forward (blocks of 16 nodes or more; batches of up to
    // SMALL_BATCH samples run the fp32 small-batch kernels).
    let bf16 = emit_with(&model.plan, &EmitOptions { precision: Precision::Bf16 })?;
    let sums = bf16.manifest.forward.iter().filter(|k| k.name.starts_with("sum_fwd")).count();
    let mma = bf16.manifest.forward.iter().filter(|k| k.name.starts_with("sum_fwd_bf16")).count();
    let mut gpu16 = GpuEngine::new(model.plan.clone(), model.params.clone(), &bf16.source, bf16.manifest.clone(), cache)?;
    for &b in &[1usize, 7, 100, 512, 1000] {
        let n = b.min(data.num_samples());
        let ev = data.slice(0, n);
        let (want, got) = (cpu.log_likelihood(&ev)?, gpu16.log_likelihood(&ev)?);
        let rel = got.iter().zip(&want).map(|(g, w)| (*g as f64 - *w as f64).abs() / (w.abs() as f64).max(1.0)).fold(0.0, f64::max);
        let pass = rel <= TOL_BF16 && got.len() == want.len();
        ok &= pass;
        println!(
            "  batch {n:>4} forward : max rel {rel:.2e} (bf16 path: {mma} of {sums} sum launches on tensor cores, bound {TOL_BF16:.0e}) {}",
            if pass { "PASS" } else { "FAIL" }
        );
    }
    // Conditionals on the bf16 engine: its backward runs on tensor cores and reads the forward's
    // maxima, so every batch (the small ones too) needs the batch forward before it.
    for &b in &[3usize, 100] {
        let n = b.min(data.num_samples());
        let ev = with_missing(&data.slice(0, n), 0.3);
        let err = conditional_error(&cpu.conditionals(&ev)?, &gpu16.conditionals(&ev)?);
        let pass = err <= TOL_FLOWS_BF16;
        ok &= pass;
        println!("  batch {n:>4} conditionals (bf16 backward): max abs error {err:.2e} (bound {TOL_FLOWS_BF16:.0e}) {}", verdict(pass));
    }
    drop(gpu16);
    // Flows and one EM step (mini-batch, η = 0.5) against the CPU engine: the scalar fp32
    // backward, then the tensor-core backward (element and parameter flows as block mma tiles)
    // with operands rounded to tf32 (10-bit mantissa) or bf16 (7-bit) and fp32 accumulation, so
    // its bounds are the rounding's (relative to max(1, |CPU value|)).
    ok &= check_flows(&model, data, &emitted, "", TOL_FLOWS, cache)?;
    for (precision, bound) in [(Precision::Tf32, TOL_FLOWS_TF32), (Precision::Bf16, TOL_FLOWS_BF16)] {
        let e = emit_with(&model.plan, &EmitOptions { precision })?;
        let mma = e
            .manifest
            .backward
            .iter()
            .filter(|s| matches!(s, pcc::runtime::cuda::Step::Launch(k) if k.name.starts_with("sum_bwd_") && k.name.contains(precision.name())))
            .count();
        ok &= check_flows(&model, data, &e, &format!(" ({precision}: {mma} backward launches on tensor cores)"), bound, cache)?;
    }
    ok &= check_regularizers(&model, data, &emitted, cache)?;
    ok &= check_queries(&model, data, &mut gpu)?;
    Ok(ok)
}

/// Data softening (likelihoods, flows, from host and device-resident data) and one
/// entropy-regularized EM step of the fp32 GPU engine against the CPU engine (discrete circuits).
fn check_regularizers(model: &Model, data: &Evidence, e: &Emitted, cache: &KernelCache) -> Result<bool> {
    if model.plan.domains.contains(&pcc::runtime::Domain::Continuous) {
        return Ok(true);
    }
    let n = data.num_samples().min(300);
    let ev = with_missing(&data.slice(0, n), 0.2).with_soft(pcc::runtime::Soft::softened(0.9)?);
    let mut cpu = model.cpu_engine()?;
    let mut gpu = GpuEngine::new(model.plan.clone(), model.params.clone(), &e.source, e.manifest.clone(), cache)?;
    let (cl, gl) = (cpu.log_likelihood(&ev)?, gpu.log_likelihood(&ev)?);
    let ll_err = gl.iter().zip(&cl).map(|(g, c)| (*g as f64 - *c as f64).abs() / (c.abs() as f64).max(1.0)).fold(0.0, f64::max);
    cpu.accumulate_flows(&ev, None)?;
    let d = gpu.upload_data(&ev)?;
    gpu.accumulate_flows_at(&d, 0..n, None)?;
    gpu.release_data(d);
    let (cf, gf) = (cpu.flows().clone(), gpu.flows()?);
    let rel = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max);
    let flow_err = rel(&gf.sum, &cf.sum).max(rel(&gf.input, &cf.input));
    cpu.em_step_entropy(0.5, 0.1, 0.01)?;
    gpu.em_step_entropy(0.5, 0.1, 0.01)?;
    let gp = gpu.params()?;
    let perr = gp.sum.iter().chain(&gp.input).zip(cpu.params().sum.iter().chain(&cpu.params().input)).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    // The hard pass after a softened one reads keep = 1 again.
    let hard = data.slice(0, n.min(50));
    let (ch, gh) = (cpu.log_likelihood(&hard)?, gpu.log_likelihood(&hard)?);
    let hard_err = gh.iter().zip(&ch).map(|(g, c)| (*g as f64 - *c as f64).abs() / (c.abs() as f64).max(1.0)).fold(0.0, f64::max);
    let pass = ll_err <= TOL && flow_err <= TOL_FLOWS && perr <= TOL_FLOWS && hard_err <= TOL;
    println!(
        "  batch {n:>4} softened (β 0.9): forward max rel {ll_err:.2e}, flows from device-resident rows max rel {flow_err:.2e}; entropy-regularized EM (τ 0.01) max |Δθ| {perr:.2e}; hard forward after it {hard_err:.2e} {}",
        verdict(pass)
    );
    Ok(pass & check_dense_soft(model, data, e, cache)?)
}

/// Dense soft evidence (random category weights, 20% missing) on the GPU engine against the CPU
/// engine: the forward at a small and a large batch (the second large batch with other weights:
/// a replayed graph must read them), then the flows, then a hard forward after it.
fn check_dense_soft(model: &Model, data: &Evidence, e: &Emitted, cache: &KernelCache) -> Result<bool> {
    let mut gpu = GpuEngine::new(model.plan.clone(), model.params.clone(), &e.source, e.manifest.clone(), cache)?;
    let mut cpu = model.cpu_engine()?;
    let soft = |n: usize, seed: u64| -> Result<Evidence> { Ok(common::random_dense_soft(model, &with_missing(&data.slice(0, n), 0.2), seed)) };
    let rel_ll = |g: &[f32], c: &[f32]| g.iter().zip(c).map(|(g, c)| (*g as f64 - *c as f64).abs() / (c.abs() as f64).max(1.0)).fold(0.0, f64::max);
    let n = data.num_samples().min(300);
    let mut ll_err = 0f64;
    for (b, salt) in [(5usize.min(n), 1u64), (n, 2), (n, 3)] {
        let ev = soft(b, salt)?;
        ll_err = ll_err.max(rel_ll(&gpu.log_likelihood(&ev)?, &cpu.log_likelihood(&ev)?));
    }
    let ev = soft(n, 4)?;
    cpu.accumulate_flows(&ev, None)?;
    gpu.accumulate_flows(&ev, None)?;
    let (cf, gf) = (cpu.flows().clone(), gpu.flows()?);
    let rel = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f64::max);
    let flow_err = rel(&gf.sum, &cf.sum).max(rel(&gf.input, &cf.input));
    let hard = data.slice(0, n.min(50));
    let hard_err = rel_ll(&gpu.log_likelihood(&hard)?, &cpu.log_likelihood(&hard)?);
    let pass = ll_err <= TOL && flow_err <= TOL_FLOWS && hard_err <= TOL;
    println!(
        "  batch {n:>4} dense soft evidence: forward max rel {ll_err:.2e} (batches 5 and {n}, twice), flows max rel {flow_err:.2e}; hard forward after it {hard_err:.2e} {}",
        verdict(pass)
    );
    Ok(pass)
}

/// Flows (weighted samples, 20% missing) and one EM step of `e`'s GPU engine against the CPU
/// engine at batches 7, 100 and 512, within `bound`.
fn check_flows(model: &Model, data: &Evidence, e: &Emitted, label: &str, bound: f64, cache: &KernelCache) -> Result<bool> {
    let mut ok = true;
    for &b in &[7usize, 100, 512] {
        let n = b.min(data.num_samples());
        let ev = with_missing(&data.slice(0, n), 0.2);
        let mut cpu = model.cpu_engine()?;
        let mut gpu = GpuEngine::new(model.plan.clone(), model.params.clone(), &e.source, e.manifest.clone(), cache)?;
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
        // The forward after EM reads the weights the EM step wrote (the tensor-core forward: the
        // copy its pack kernels refreshed): the forward's bound, 2.5x for the rounded paths, whose
        // parameters after EM differ slightly too (stale weights are off by ~1e-1).
        let (cl, gl) = (cpu.log_likelihood(&ev)?, gpu.log_likelihood(&ev)?);
        let ll_err = gl.iter().zip(&cl).map(|(g, c)| (*g as f64 - *c as f64).abs() / (c.abs() as f64).max(1.0)).fold(0.0, f64::max);
        let ll_bound = if e.manifest.precision == Precision::Fp32 { TOL } else { 2.5 * TOL_BF16 };
        // NaN compares false: a NaN error fails.
        let pass = sum_err <= bound && in_err <= bound && ps <= bound && pi <= bound && ll_err <= ll_bound && gl.len() == cl.len();
        ok &= pass;
        println!(
            "  batch {n:>4} flows{label}: sum-parameter flows max rel {sum_err:.2e}, leaf statistics max rel {in_err:.2e}; after EM max |Δθ| sums {ps:.2e}, leaves {pi:.2e} (bound {bound:.0e}), forward max rel {ll_err:.2e} (bound {ll_bound:.0e}) {}",
            verdict(pass)
        );
    }
    Ok(ok)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --fast: only the structures with tensor-core blocks (HCLT, merged PD blocks, HMM), no
    // MNIST; --quick: no MNIST.
    let fast = args.iter().any(|a| a == "--fast");
    let quick = fast || args.iter().any(|a| a == "--quick");
    let cpu_queries = args.iter().any(|a| a == "--cpu-queries");
    let dir = args.iter().find(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "../shared/data/mnist10k".into());
    let cache = KernelCache::new(KernelCache::default_dir());
    let cache = (!cpu_queries).then_some(&cache);
    let mut ok = true;
    // The random corpus is built first, so a broken generator fails before any GPU work.
    let corpus = random_corpus()?;
    // Binary data for the small structures.
    let bin: Vec<f32> = (0..1000 * 16).map(|i| ((i * 2654435761usize) >> 9 & 1) as f32).collect();
    let bin = Evidence::new(16, bin)?;
    ok &= check("hclt16 (binary, 16 vars)", hclt::learn(&bin, &hclt::HcltOptions { latents: 16, ..Default::default() })?, &bin, cache)?;
    if !fast {
        let rat = rat_spn::RatSpnOptions { num_vars: 16, latents: 8, depth: 3, input: Dist::Bernoulli, ..Default::default() };
        ok &= check("rat-spn (binary, 16 vars)", rat_spn::build(&rat)?, &bin, cache)?;
    }
    // 128-node blocks: the small-batch paths' widest node tiles (and the persistent pass's fast
    // tasks, with PCC_PERSISTENT=1).
    ok &= check("hclt128 (binary, 16 vars)", hclt::learn(&bin, &hclt::HcltOptions { latents: 128, ..Default::default() })?, &bin, cache)?;
    let seq = Evidence::new(16, bin.values.iter().enumerate().map(|(i, x)| x + (i % 3) as f32).collect())?;
    // PD regions of 4 blocks of 32 nodes over one child list: the tensor-core kernels merge them.
    let pdo = pd::PdOptions { height: 4, width: 4, split_intervals: (2, 2), latents: 128, input: Dist::Bernoulli, ..Default::default() };
    ok &= check("pd 4x4, 128 latents (binary, 16 vars)", pd::build(&pdo)?, &bin, cache)?;
    ok &= check(
        "hmm (16 steps, 4 symbols)",
        hmm::build(&hmm::HmmOptions { seq_length: 16, hidden: 32, num_emits: 4, homogeneous: true, ..Default::default() })?,
        &seq,
        cache,
    )?;
    // Categorical(256) leaves in tiles of 64 per variable (the bf16/tf32 statistics by sorted
    // segments, long runs of one category): 64 central MNIST pixels of 1,200 images, when the
    // data directory has them (the full run below takes all of MNIST).
    let images = std::path::Path::new(&dir).join("images-idx3-ubyte");
    if quick && images.exists() {
        let (images, _) = dataset::read_idx_images(&images)?;
        let pixels: Vec<f32> = (0..1200).flat_map(|s| (350..414).map(move |v| (s, v))).map(|(s, v)| images.values[s * 784 + v]).collect();
        let pixels = Evidence::new(64, pixels)?;
        let c = hclt::learn(&pixels, &hclt::HcltOptions { latents: 64, ..Default::default() })?;
        ok &= check("hclt64 (categorical(256), 64 mnist pixels)", c, &pixels, cache)?;
        // A PD over the central 8×8 patch, cuts every 2 pixels, 64 latents in blocks of 32:
        // regions of more than 4 cuts have sparse blocks sharing cuts (one-kernel forward and
        // register-staged backward; cut-staged with PCC_PD_CUTS=1).
        let patch: Vec<f32> =
            (0..1200).flat_map(|s| (0..64).map(move |v| (s, (10 + v / 8) * 28 + 10 + v % 8))).map(|(s, v)| images.values[s * 784 + v]).collect();
        let patch = Evidence::new(64, patch)?;
        let pdo = pd::PdOptions { height: 8, width: 8, split_intervals: (2, 2), latents: 64, input: Dist::Categorical { num_cats: 256 }, ..Default::default() };
        ok &= check("pd 8x8, 64 latents (categorical(256), 64 mnist pixels)", pd::build(&pdo)?, &patch, cache)?;
    }
    for (name, circuit, data) in corpus.into_iter().filter(|_| !fast) {
        ok &= check(&name, circuit, &data, cache)?;
    }
    if !quick {
        let (images, _) = dataset::read_idx_images(&std::path::Path::new(&dir).join("images-idx3-ubyte"))?;
        let train = images.slice(0, 9000);
        for l in [32u32, 128] {
            let c = hclt::learn(&train, &hclt::HcltOptions { latents: l, ..Default::default() })?;
            ok &= check(&format!("hclt{l} (mnist10k)"), c, &images, cache)?;
        }
        let pdo = pd::PdOptions { latents: 16, ..Default::default() };
        ok &= check("pd16 (mnist10k)", pd::build(&pdo)?, &images, cache)?;
    }
    if !ok {
        bail!("GPU and CPU engines disagree");
    }
    println!("ALL PASS");
    Ok(())
}

/// Calls per batch size in the repeated small-batch check.
const REPEATS: usize = 20;

/// Flow and EM bound of the scalar fp32 backward.
const TOL_FLOWS: f64 = 1e-3;
/// Flow and EM bounds of the tensor-core backward (relative to max(1, |CPU value|)): tf32 rounds
/// each operand to 2^-11 relative, bf16 to 2^-8; sums of positive terms keep that order.
const TOL_FLOWS_TF32: f64 = 5e-3;
const TOL_FLOWS_BF16: f64 = 3e-2;

/// Conditionals bound: absolute on probabilities; on Gaussian means and variances relative to
/// max(1, |CPU value|).
const COND_TOL: f64 = 1e-4;
/// Unconditional / conditional samples drawn for the statistical checks.
const NUM_SAMPLES: usize = 20_000;
/// Per-test false-alarm probability of the sampling checks (a Bernstein bound per variable and
/// category): with at most ~2·10^5 tests per model (MNIST: 784 variables × 256 categories), a
/// correct sampler fails a model with probability ≤ 2·10^-4.
const SAMPLE_DELTA: f64 = 1e-9;

/// The queries both engines answer; the self-check runs them on the GPU engine (or, with
/// `--cpu-queries`, on the CPU engine to check the checker).
trait Queries {
    fn conditionals(&mut self, ev: &Evidence) -> Result<Vec<Vec<Conditional>>>;
    fn mpe(&mut self, ev: &Evidence) -> Result<MpeResult>;
    fn sample(&mut self, n: usize, seed: u64) -> Result<Vec<f32>>;
    fn sample_conditional(&mut self, ev: &Evidence, seed: u64) -> Result<Vec<f32>>;
}

impl Queries for GpuEngine {
    fn conditionals(&mut self, ev: &Evidence) -> Result<Vec<Vec<Conditional>>> {
        Ok(GpuEngine::conditionals(self, ev)?)
    }
    fn mpe(&mut self, ev: &Evidence) -> Result<MpeResult> {
        Ok(GpuEngine::mpe(self, ev)?)
    }
    fn sample(&mut self, n: usize, seed: u64) -> Result<Vec<f32>> {
        Ok(GpuEngine::sample(self, n, seed)?)
    }
    fn sample_conditional(&mut self, ev: &Evidence, seed: u64) -> Result<Vec<f32>> {
        Ok(GpuEngine::sample_conditional(self, ev, seed)?)
    }
}

struct CpuQueries(CpuEngine);

impl Queries for CpuQueries {
    fn conditionals(&mut self, ev: &Evidence) -> Result<Vec<Vec<Conditional>>> {
        Ok(self.0.conditionals(ev)?)
    }
    fn mpe(&mut self, ev: &Evidence) -> Result<MpeResult> {
        Ok(self.0.mpe(ev)?)
    }
    fn sample(&mut self, n: usize, seed: u64) -> Result<Vec<f32>> {
        Ok(self.0.sample(n, seed)?)
    }
    fn sample_conditional(&mut self, ev: &Evidence, seed: u64) -> Result<Vec<f32>> {
        Ok(self.0.sample_conditional(ev, seed)?)
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

/// Largest difference between two engines' conditionals (infinite on a shape or kind mismatch).
fn conditional_error(want: &[Vec<Conditional>], got: &[Vec<Conditional>]) -> f64 {
    if want.len() != got.len() {
        return f64::INFINITY;
    }
    let mut err = 0f64;
    for (w, g) in want.iter().zip(got) {
        if w.len() != g.len() {
            return f64::INFINITY;
        }
        for (a, b) in w.iter().zip(g) {
            let e = match (a, b) {
                (Conditional::Observed, Conditional::Observed) => 0.0,
                (Conditional::Discrete(p), Conditional::Discrete(q)) if p.len() == q.len() => {
                    p.iter().zip(q).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max)
                }
                (Conditional::Continuous { mean: m1, var: v1 }, Conditional::Continuous { mean: m2, var: v2 }) => {
                    let rel = |x: f32, y: f32| (x as f64 - y as f64).abs() / (x.abs() as f64).max(1.0);
                    rel(*m1, *m2).max(rel(*v1, *v2))
                }
                _ => f64::INFINITY,
            };
            err = if e.is_nan() { f64::INFINITY } else { err.max(e) };
        }
    }
    err
}

/// Relative difference of two log-values (equal infinities count as equal).
fn log_rel(a: f32, b: f32) -> f64 {
    if a == b {
        return 0.0;
    }
    let d = (a as f64 - b as f64).abs() / (b.abs() as f64).max(1.0);
    if d.is_nan() { f64::INFINITY } else { d }
}

/// Half-width `t` of the Bernstein bound P(|count − n p| ≥ t) ≤ δ for a Binomial(n, p) count.
fn bernstein(n: usize, p: f64, delta: f64) -> f64 {
    let l = (2.0 / delta).ln();
    let var = n as f64 * p * (1.0 - p);
    l / 3.0 + (l * l / 9.0 + 2.0 * var * l).sqrt()
}

/// Compare `samples` (`[n][nv]`) with exact marginals `marg` (CPU conditionals; `Observed`
/// variables are skipped). Discrete: every category's count within the Bernstein bound at
/// [`SAMPLE_DELTA`]. Continuous: the sample mean within 6 standard errors (σ/√n) and the sample
/// variance within 6 of its asymptotic standard errors (√((m4 − s⁴)/n)), plus 10^-3·max(1, var)
/// for the f32 rounding of the CPU's variance. Returns (worst deviation / bound, max abs
/// frequency error, whether every value was a valid category).
fn sample_stats(marg: &[Conditional], samples: &[f32], n: usize, nv: usize) -> (f64, f64, bool) {
    let (mut worst, mut freq_err, mut valid) = (0f64, 0f64, samples.len() == n * nv);
    if !valid {
        return (f64::INFINITY, f64::INFINITY, false);
    }
    for (v, c) in marg.iter().enumerate() {
        let col = (0..n).map(|i| samples[i * nv + v]);
        match c {
            Conditional::Observed => {}
            Conditional::Discrete(p) => {
                let mut counts = vec![0usize; p.len()];
                for x in col {
                    if x.fract() == 0.0 && x >= 0.0 && (x as usize) < p.len() {
                        counts[x as usize] += 1;
                    } else {
                        valid = false;
                    }
                }
                for (k, &pk) in p.iter().enumerate() {
                    let dev = (counts[k] as f64 - n as f64 * pk as f64).abs();
                    worst = worst.max(dev / bernstein(n, pk as f64, SAMPLE_DELTA));
                    freq_err = freq_err.max(dev / n as f64);
                }
            }
            Conditional::Continuous { mean, var } => {
                let xs: Vec<f64> = col.map(|x| x as f64).collect();
                if xs.iter().any(|x| !x.is_finite()) {
                    valid = false;
                    continue;
                }
                let m = xs.iter().sum::<f64>() / n as f64;
                let s2 = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n as f64;
                let m4 = xs.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n as f64;
                let (mean, var) = (*mean as f64, *var as f64);
                let mean_bound = 6.0 * (var.max(s2) / n as f64).sqrt() + 1e-6;
                let var_bound = 6.0 * ((m4 - s2 * s2).max(0.0) / n as f64).sqrt() + 1e-3 * var.max(1.0);
                worst = worst.max((m - mean).abs() / mean_bound).max((s2 - var).abs() / var_bound);
            }
        }
    }
    (worst, freq_err, valid)
}

/// Conditionals, MPE and sampling of `eng` against the CPU engine on `model`.
fn check_queries(model: &Model, data: &Evidence, eng: &mut dyn Queries) -> Result<bool> {
    let cpu = model.cpu_engine()?;
    let nv = model.plan.num_vars as usize;
    let mut ok = true;
    for &b in &[1usize, 7, 100, 512, 1000] {
        let n = b.min(data.num_samples());
        let ev = with_missing(&data.slice(0, n), 0.3);
        // Conditionals.
        let want = cpu.conditionals(&ev)?;
        let t = Instant::now();
        let got = eng.conditionals(&ev)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let err = conditional_error(&want, &got);
        let pass = err <= COND_TOL;
        ok &= pass;
        println!(
            "  batch {n:>4} conditionals: max abs error {err:.2e} (bound {COND_TOL:.0e}; Gaussian mean/var relative to max(1, |v|)) {} [{ms:.2} ms]",
            verdict(pass)
        );
        // MPE: values, and assignments equal up to exact ties (a differing completion must reach
        // the same max-product value under the CPU engine).
        let want = cpu.mpe(&ev)?;
        let t = Instant::now();
        let got = eng.mpe(&ev)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let shape_ok = got.log_values.len() == n && got.assignments.len() == n * nv;
        let val_err = if shape_ok { want.log_values.iter().zip(&got.log_values).map(|(&a, &b)| log_rel(b, a)).fold(0.0, f64::max) } else { f64::INFINITY };
        let differ: Vec<usize> = if shape_ok {
            (0..n).filter(|&i| want.assignments[i * nv..][..nv].iter().zip(&got.assignments[i * nv..][..nv]).any(|(a, b)| a.to_bits() != b.to_bits())).collect()
        } else {
            Vec::new()
        };
        let mut tie_err = 0f64;
        if !differ.is_empty() {
            let rows: Vec<f32> = differ.iter().flat_map(|&i| got.assignments[i * nv..][..nv].iter().copied()).collect();
            match Evidence::new(nv, rows).and_then(|e| cpu.mpe(&e)) {
                Ok(eval) => {
                    for (j, &i) in differ.iter().enumerate() {
                        tie_err = tie_err.max(log_rel(eval.log_values[j], want.log_values[i]));
                    }
                }
                // A completion the CPU engine rejects (e.g. a category out of range) is wrong.
                Err(_) => tie_err = f64::INFINITY,
            }
        }
        let pass = shape_ok && val_err <= TOL && tie_err <= TOL;
        ok &= pass;
        println!(
            "  batch {n:>4} MPE: values max rel {val_err:.2e}; {} assignments differ, all exact ties (their CPU max-product value max rel {tie_err:.2e}) (bound {TOL:.0e}) {} [{ms:.2} ms]",
            differ.len(),
            verdict(pass)
        );
    }
    // Unconditional sampling against the exact marginals.
    let marg = cpu.conditionals(&Evidence::all_missing(nv, 1))?.remove(0);
    let t = Instant::now();
    let samples = eng.sample(NUM_SAMPLES, 1234)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let (worst, freq_err, valid) = sample_stats(&marg, &samples, NUM_SAMPLES, nv);
    let again = eng.sample(1000, 1234)?;
    let deterministic = samples.len() >= 1000 * nv && again[..] == samples[..1000 * nv];
    let pass = valid && worst <= 1.0 && deterministic;
    ok &= pass;
    println!(
        "  sample {NUM_SAMPLES}: max |freq − p| {freq_err:.2e}, worst deviation / Bernstein bound (δ = {SAMPLE_DELTA:.0e} per category) {worst:.2}; same seed, other batch size: {} {} [{ms:.2} ms]",
        if deterministic { "identical" } else { "DIFFERENT" },
        verdict(pass)
    );
    // Conditional sampling: one evidence row (about half of it missing), repeated.
    let mut row = with_missing(&data.slice(0, 1), 0.5);
    if let Some(m) = row.missing.as_mut() {
        m[0] = true; // at least one variable to draw
    }
    let mask = row.missing.clone().unwrap_or_else(|| vec![false; nv]);
    let rows = Evidence::with_missing(nv, row.values.repeat(NUM_SAMPLES), Some(mask.repeat(NUM_SAMPLES)))?;
    let cmarg = cpu.conditionals(&row)?.remove(0);
    let samples = eng.sample_conditional(&rows, 99)?;
    let (worst, freq_err, valid) = sample_stats(&cmarg, &samples, NUM_SAMPLES, nv);
    let kept =
        samples.len() == NUM_SAMPLES * nv && (0..NUM_SAMPLES).all(|i| (0..nv).all(|v| mask[v] || samples[i * nv + v].to_bits() == row.values[v].to_bits()));
    let pass = valid && kept && worst <= 1.0;
    ok &= pass;
    println!(
        "  conditional sample {NUM_SAMPLES} × 1 row ({} of {nv} missing): max |freq − p| {freq_err:.2e}, worst deviation / bound {worst:.2}; observed values kept: {kept} {}",
        mask.iter().filter(|&&m| m).count(),
        verdict(pass)
    );
    Ok(ok)
}

/// Small random circuits: pcc-testkit's generator (mixed block sizes, block-sparse sums, shared
/// sub-circuits, tied inputs and sums, Categorical and Bernoulli leaves), mixed circuits with
/// Gaussian and Indicator leaves and circuits with Binomial leaves; 1000 random samples each.
fn random_corpus() -> Result<Vec<(String, Circuit, Evidence)>> {
    let mut v = Vec::new();
    for seed in 0..7u64 {
        let circuit = common::Gen::circuit(seed);
        let model = Model::random(circuit.clone(), 7)?;
        let data = common::random_evidence(&model, 1000, 0.0, 100 + seed);
        v.push((format!("random{seed} ({} vars)", model.plan.num_vars), circuit, data));
    }
    for seed in 0..3u64 {
        let (circuit, data) = common::mixed_circuit(seed, 1000, 0.0);
        v.push((format!("mixed{seed} (Gaussian/Categorical/Bernoulli/Indicator, 6 vars)"), circuit, data));
    }
    for seed in 0..2u64 {
        let (circuit, data) = common::binomial_circuit(seed, 1000, 0.0);
        v.push((format!("binomial{seed} (Binomial/Bernoulli/Categorical, 5 vars)"), circuit, data));
    }
    // The data fits each circuit's variable domains.
    for (name, c, d) in &v {
        let plan = pcc::codegen::compile(c)?;
        d.validate(&plan).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    Ok(v)
}

//! GPU smoke test of the CUDA foundation: probe the devices, compile a header-free kernel with
//! NVRTC to a CUBIN for the device's own architecture (through the on-disk cache), load it, run a
//! row-wise log-sum-exp and compare with the CPU.
//!
//! Run on a machine with an NVIDIA driver: `cargo run --release --example gpu_smoke`

use anyhow::{Result, bail};
use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use pcc::runtime::cuda::{KernelCache, nvrtc_version, probe};

const SOURCE: &str = r#"
extern "C" __global__ void lse_rows(const float* x, float* out, int n, int w) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float m = __int_as_float(0xff800000);
    for (int j = 0; j < w; ++j) m = fmaxf(m, x[i * w + j]);
    float s = 0.f;
    for (int j = 0; j < w; ++j) s += __expf(x[i * w + j] - m);
    out[i] = m + __logf(s);
}
"#;

fn main() -> Result<()> {
    let gpus = probe()?;
    for g in &gpus {
        println!("device {}: {}, sm_{}, {:.1} GiB", g.ordinal, g.name, g.arch(), g.total_memory as f64 / (1u64 << 30) as f64);
    }
    println!("NVRTC {:?}", nvrtc_version()?);
    let cache = KernelCache::new(std::env::temp_dir().join("pcc-gpu-smoke"));
    let t = std::time::Instant::now();
    let (cubin, hit) = cache.get_or_compile(SOURCE, "gpu_smoke.cu", &gpus[0].arch())?;
    println!("kernel: {} bytes, {} in {:.1} ms", cubin.len(), if hit { "cache hit" } else { "compiled" }, t.elapsed().as_secs_f64() * 1e3);
    let t = std::time::Instant::now();
    let (_, hit) = cache.get_or_compile(SOURCE, "gpu_smoke.cu", &gpus[0].arch())?;
    println!("warm start: cache hit {hit} in {:.2} ms", t.elapsed().as_secs_f64() * 1e3);

    let ctx = CudaContext::new(0)?;
    let stream = ctx.default_stream();
    let module = ctx.load_module(Ptx::from_binary(cubin))?;
    let f = module.load_function("lse_rows")?;
    let (n, w) = (10_000usize, 37usize);
    let x: Vec<f32> = (0..n * w).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
    let dx = stream.clone_htod(&x)?;
    let mut dout = stream.alloc_zeros::<f32>(n)?;
    let (ni, wi) = (n as i32, w as i32);
    let mut b = stream.launch_builder(&f);
    b.arg(&dx).arg(&mut dout).arg(&ni).arg(&wi);
    let cfg = LaunchConfig { grid_dim: (n.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: the kernel reads n*w floats from dx and writes n floats to dout, as allocated.
    unsafe { b.launch(cfg) }?;
    let out = stream.clone_dtoh(&dout)?;
    let mut worst = 0f64;
    for i in 0..n {
        let row = &x[i * w..][..w];
        let m = row.iter().copied().fold(f64::NEG_INFINITY, |a, b| a.max(b as f64));
        let want = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        worst = worst.max((out[i] as f64 - want).abs());
    }
    println!("max |gpu - cpu| = {worst:.2e} over {n} rows");
    if worst > 1e-4 {
        bail!("GPU result differs from the CPU");
    }
    println!("PASS");
    Ok(())
}

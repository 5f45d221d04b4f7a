//! NVRTC cold-compile time of the generated forward source for HCLT on mnist10k (no GPU needed).
//! Run: `source .ci/nvrtc.sh && cargo run --release --example nvrtc_time -- [MNIST_DIR] [--latents 32]`

use std::time::Instant;

use anyhow::Result;
use pcc::codegen::emit::emit;
use pcc::codegen::structures::hclt::{self, HcltOptions};
use pcc::codegen::{compile, structures::pd};
use pcc::runtime::cuda::compile_cubin;
use pcc::runtime::dataset;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.iter().find(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "../shared/data/mnist10k".into());
    let (images, _) = dataset::read_idx_images(&std::path::Path::new(&dir).join("images-idx3-ubyte"))?;
    let tree = hclt::chow_liu(&images.slice(0, 9000), &Default::default())?;
    for l in [32u32, 512] {
        let c = hclt::build(&tree, 784, pcc::codegen::Dist::Categorical { num_cats: 256 }, &HcltOptions { latents: l, ..Default::default() })?;
        let e = emit(&compile(&c)?)?;
        let t = Instant::now();
        let cubin = compile_cubin(&e.source, "hclt.cu", "90")?;
        let kernels = e.source.matches("__global__").count();
        println!("hclt{l}: {} launches, {kernels} kernels, {} KiB source, NVRTC sm_90 {:.2} s, {} KiB cubin", e.manifest.forward.len(), e.source.len() / 1024, t.elapsed().as_secs_f64(), cubin.len() / 1024);
    }
    let e = emit(&compile(&pd::build(&pd::PdOptions { latents: 64, ..Default::default() })?)?)?;
    let t = Instant::now();
    compile_cubin(&e.source, "pd.cu", "90")?;
    println!("pd64: {} launches, {} kernels, {} KiB source, NVRTC sm_90 {:.2} s", e.manifest.forward.len(), e.source.matches("__global__").count(), e.source.len() / 1024, t.elapsed().as_secs_f64());
    Ok(())
}

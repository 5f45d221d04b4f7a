//! NVRTC without a GPU: generated CUDA must compile here, so a broken kernel fails CI rather than a
//! user. `.ci/run` installs NVRTC 13; elsewhere these tests skip with a note when it is missing.

use pc_runtime::cuda::{CudaError, KernelCache, compile_cubin, nvrtc_available, nvrtc_version};

/// Header-free source: −inf from bits, fast intrinsics, and a bf16 tensor-core MMA in inline PTX
/// (no `cuda_bf16.h`/`mma.h`, which a user's machine may lack).
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

extern "C" __global__ void mma_probe(const unsigned* a, const unsigned* b, float* c) {
    float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
    unsigned a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], b0 = b[0], b1 = b[1];
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    unsigned packed;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(d0), "f"(d1));
    c[threadIdx.x * 4 + 0] = d0 + __int_as_float(packed & 0);
    c[threadIdx.x * 4 + 1] = d1;
    c[threadIdx.x * 4 + 2] = d2;
    c[threadIdx.x * 4 + 3] = d3;
}
"#;

fn nvrtc_or_skip() -> bool {
    if nvrtc_available() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("NVRTC 13 is required in CI (.ci/run installs it and sets LD_LIBRARY_PATH)");
    }
    eprintln!("note: NVRTC not found; skipping (pip install 'nvidia-cuda-nvrtc==13.0.*' and add its lib folder to LD_LIBRARY_PATH)");
    false
}

#[test]
fn header_free_source_compiles_to_cubin_for_hopper() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, _) = nvrtc_version().unwrap();
    assert_eq!(major, 13, "the cuda-13000 bindings expect NVRTC 13");
    let cubin = compile_cubin(SOURCE, "probe.cu", "90").unwrap();
    assert_eq!(&cubin[..4], b"\x7fELF", "a CUBIN is an ELF image");
    assert!(cubin.windows(8).any(|w| w == b"lse_rows"), "the kernel symbol is in the image");
}

#[test]
fn compile_errors_carry_the_nvrtc_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let err = compile_cubin("extern \"C\" __global__ void k() { undefined_thing(); }", "broken.cu", "90").unwrap_err();
    let CudaError::Compile { name, log, .. } = &err else { panic!("{err:?}") };
    assert_eq!(name, "broken.cu");
    assert!(log.contains("undefined_thing"), "{log}");
    assert!(err.to_string().contains("broken.cu"));
}

#[test]
fn cache_returns_the_compiled_kernel_on_the_second_call() {
    if !nvrtc_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::new(dir.path());
    let (first, hit1) = cache.get_or_compile(SOURCE, "probe.cu", "90").unwrap();
    let t = std::time::Instant::now();
    let (second, hit2) = cache.get_or_compile(SOURCE, "probe.cu", "90").unwrap();
    assert!(!hit1 && hit2);
    assert_eq!(first, second);
    assert!(t.elapsed().as_millis() < 100, "a warm start skips NVRTC");
    // Another architecture is another entry.
    let (_, hit3) = cache.get_or_compile(SOURCE, "probe.cu", "80").unwrap();
    assert!(!hit3);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

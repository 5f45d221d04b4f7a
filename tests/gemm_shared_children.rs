//! The two-kernel forward and staged backward for blocks over shared children (PD's regions),
//! opt-in by `PCC_FWD_GEMM=all` until a GPU run has checked them: every tensor-core partition
//! of a PD then stages its children (`_x` before each product launch, again before each staged
//! parameter-flow launch), no launch stages more than `MAX_X_WORDS` per sample, and the kernels
//! compile for sm_90 without spills. Its own test binary: the switch is a process-wide
//! environment variable.

use pcc::codegen::compile;
use pcc::codegen::emit::{EmitOptions, Precision, emit_with};
use pcc::codegen::structures::pd::{PdOptions, build};
use pcc::runtime::cuda::{KernelArg, Step, compile_cubin_verbose, nvrtc_available};

#[test]
fn shared_children_take_the_staged_kernels_when_asked() {
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var("PCC_FWD_GEMM", "all") };
    // Cut points every 2 pixels: regions of up to 6 cuts, sparse (blocks over 4 of them) beside dense.
    let c = build(&PdOptions { height: 8, width: 8, latents: 64, split_intervals: (2, 2), ..PdOptions::default() }).unwrap();
    let plan = compile(&c).unwrap();
    let e = emit_with(&plan, &EmitOptions { precision: Precision::Bf16 }).unwrap();
    let fwd: Vec<_> = e.manifest.forward.iter().filter(|k| k.name.starts_with("sum_fwd_bf16_")).collect();
    assert!(!fwd.is_empty());
    // Every product launch follows its staging launch; none stages more than the cap.
    for (i, k) in fwd.iter().enumerate().filter(|(_, k)| !k.name.ends_with("_x")) {
        assert!(k.name.ends_with("_g"), "{}: a two-kernel product", k.name);
        assert_eq!(fwd[i - 1].name, format!("{}_x", k.name));
    }
    assert!(e.manifest.x_words > 0 && e.manifest.x_words <= 1 << 14, "x_words {}", e.manifest.x_words);
    let bwd: Vec<_> = e.manifest.backward.iter().filter_map(|s| if let Step::Launch(k) = s { Some(k) } else { None }).collect();
    let staged = bwd.iter().filter(|k| k.name.ends_with("_s_pflow")).count();
    assert!(staged > 0 && bwd.iter().filter(|k| k.name.ends_with("_pflow") && k.name.starts_with("sum_bwd_bf16")).all(|k| k.name.ends_with("_s_pflow")));
    // Some element flows add (shared children): their `excl` argument is 0.
    let shared = bwd.iter().filter(|k| k.name.ends_with("_s_eflow") && k.args.last() == Some(&KernelArg::Int(0))).count();
    assert!(shared > 0, "a PD has regions read by several blocks");
    if !nvrtc_available() {
        eprintln!("note: NVRTC not found (source .ci/nvrtc.sh); the kernels were not compiled");
        return;
    }
    let (_, log) = compile_cubin_verbose(&e.source, "pd_all.cu", "90").unwrap();
    for (kernel, line) in pcc_testkit::ptxas_lines(&log) {
        if kernel.starts_with("sum_fwd_bf16") || kernel.starts_with("sum_bwd_bf16") {
            assert!(!pcc_testkit::spills(line), "{kernel}: {line}");
        }
    }
}

//! PD regions as one tensor-core block (`PCC_MERGE_ROWS=256`, opt-in until a GPU self-check has
//! run it). Its own test binary: the switch is a process-wide environment variable.

use pcc::codegen::Dist;
use pcc::codegen::compile;
use pcc::codegen::emit::{EmitOptions, Precision, emit_with};
use pcc::codegen::structures::pd;
use pcc::runtime::cuda::{KernelArg, KernelSpec, Step, compile_cubin_verbose, nvrtc_available};

/// A PD region's blocks over one child list merge into one tensor-core block (up to 256 rows),
/// whose children no other block reads: with bf16, its depth takes the two-kernel forward and the
/// staged backward, whose element flows store (`excl` 1); depths of regions whose blocks pick
/// different cuts (more cuts than a block takes) keep the one-kernel forward.
#[test]
fn pd_regions_over_one_child_list_take_the_staged_kernels() {
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var("PCC_MERGE_ROWS", "256") };
    // 8x8, cut points every 2 pixels: regions of 1 to 6 cuts; 256 latents in blocks of 32.
    let c = pd::build(&pd::PdOptions { height: 8, width: 8, split_intervals: (2, 2), latents: 256, input: Dist::Bernoulli, ..Default::default() }).unwrap();
    let plan = compile(&c).unwrap();
    let e = emit_with(&plan, &EmitOptions { precision: Precision::Bf16 }).unwrap();
    let fwd = |pat: &str| e.manifest.forward.iter().filter(|k| k.name.starts_with("sum_fwd_bf16_") && k.name.contains(pat)).count();
    assert!(
        fwd("bs32x8_") > 0 && e.manifest.forward.iter().any(|k| k.name.starts_with("sum_fwd_bf16_bs32x8_") && k.name.ends_with("_g")),
        "merged regions, two-kernel forward"
    );
    assert!(
        e.manifest.forward.iter().any(|k| k.name.starts_with("sum_fwd_bf16_bs32_") && !k.name.ends_with("_g")),
        "sparse regions keep the one-kernel forward"
    );
    let bwd: Vec<&KernelSpec> = e.manifest.backward.iter().filter_map(|s| if let Step::Launch(k) = s { Some(k) } else { None }).collect();
    assert!(
        bwd.iter().any(|k| k.name.starts_with("sum_bwd_bf16_bs32x8_") && k.name.ends_with("_s_eflow") && k.args.last() == Some(&KernelArg::Int(1))),
        "merged regions' element flows store"
    );
    // Spill-free on sm_90 (the staging loops of 3-cut regions' widths spilled when fully unrolled).
    if !nvrtc_available() {
        eprintln!("note: NVRTC not found (source .ci/nvrtc.sh); the kernels were not compiled");
        return;
    }
    let (_, log) = compile_cubin_verbose(&e.source, "pd_regions.cu", "90").unwrap();
    for (kernel, line) in pcc_testkit::ptxas_lines(&log) {
        if kernel.starts_with("sum_fwd_bf16") || kernel.starts_with("sum_bwd_bf16") {
            assert!(!pcc_testkit::spills(line), "{kernel}: {line}");
        }
    }
}

//! The categorical statistics on tensor cores (`templates/input_cat_bwd_mma.cu.tera`), the
//! default of the tensor-core manifests (`PCC_CAT_STATS=mma`, set here all the same): the emitter launches them
//! over (64-leaf, 64-category) tiles of each variable in place of the scalar kernel, and they
//! compile spill-free for both tensor-core precisions. Its own test binary: the switch is a
//! process-wide environment variable.

use pcc::codegen::compile;
use pcc::codegen::emit::{EmitOptions, Precision, emit_with};
use pcc::codegen::structures::hmm;
use pcc::runtime::cuda::{KernelArg, Step, compile_cubin_verbose, nvrtc_available};

#[test]
fn categorical_statistics_on_tensor_cores_emit_and_compile() {
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var("PCC_CAT_STATS", "mma") };
    let c = hmm::build(&hmm::HmmOptions { seq_length: 6, hidden: 96, num_emits: 70, homogeneous: false, block_size: Some(32) }).unwrap();
    let plan = compile(&c).unwrap();
    for precision in [Precision::Bf16, Precision::Tf32] {
        let e = emit_with(&plan, &EmitOptions { precision }).unwrap();
        let name = format!("input_categorical_bwd_{precision}");
        let k = e.manifest.backward.iter().find_map(|s| if let Step::Launch(k) = s { (k.name == name).then_some(k) } else { None }).expect("the launch");
        // 6 variables of 96 leaves: 2 tiles of 64 each; 70 categories: 2 tiles of 64.
        assert_eq!((k.count, k.threads_per_sample, k.block), (12, 12 * 2 * 128, 128), "{k:?}");
        let KernelArg::Table(t) = k.args[4] else { panic!("tiles table: {k:?}") };
        let tiles = &e.manifest.tables[t as usize];
        assert_eq!(tiles.len(), 12 * 65);
        // Each variable's 96 leaves: a full tile, then a tile of 32 and padding.
        let mut vars: Vec<u32> = tiles.chunks(65).map(|t| t[0]).collect();
        for (i, tile) in tiles.chunks(65).enumerate() {
            assert_eq!(tile[0], tiles[(i & !1) * 65], "tile {i}: one variable per pair of tiles");
            let leaves: Vec<u32> = tile[1..].iter().copied().filter(|&l| l != u32::MAX).collect();
            assert_eq!(leaves.len(), if i % 2 == 0 { 64 } else { 32 }, "tile {i}");
        }
        vars.sort_unstable();
        vars.dedup();
        assert_eq!(vars, (0..6).collect::<Vec<u32>>(), "every variable");
        let fp32 = emit_with(&plan, &EmitOptions { precision: Precision::Fp32 }).unwrap();
        assert!(!fp32.source.contains("input_categorical_bwd_"), "fp32 keeps the scalar kernel");
        if !nvrtc_available() {
            eprintln!("note: NVRTC not found (source .ci/nvrtc.sh); the kernel was not compiled");
            continue;
        }
        let (_, log) = compile_cubin_verbose(&e.source, "cat.cu", "90").unwrap();
        for (kernel, line) in pcc_testkit::ptxas_lines(&log) {
            assert!(kernel != name || !pcc_testkit::spills(line), "{kernel}: {line}");
        }
    }
}

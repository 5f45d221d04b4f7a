//! Golden files (insta) of the CUDA generated for three small circuits, so every change to the
//! templates or the emitter shows up in review. Accept intended changes with `cargo insta review`
//! (or `INSTA_UPDATE=always cargo test --test snapshots`); under `CI=true` a mismatch fails.

use pcc::codegen::emit::{EmitOptions, Precision, emit, emit_with};
use pcc::codegen::structures::hmm;
use pcc::codegen::{CircuitBuilder, Dist, SumEdges, compile};

#[test]
fn mixture_of_categorical_and_bernoulli() {
    let mut b = CircuitBuilder::new(2);
    let x = b.inputs(0, 1, 4, Dist::Categorical { num_cats: 3 });
    let y = b.inputs(1, 1, 4, Dist::Bernoulli);
    let p = b.multiply(&[x, y]);
    let root = b.summate(&[p], 1, 1, SumEdges::Dense);
    let e = emit(&compile(&b.finish(root).unwrap()).unwrap()).unwrap();
    insta::assert_snapshot!(e.source);
}

#[test]
fn homogeneous_hmm() {
    let c = hmm::build(&hmm::HmmOptions { seq_length: 3, hidden: 4, num_emits: 3, homogeneous: true, ..Default::default() }).unwrap();
    let e = emit(&compile(&c).unwrap()).unwrap();
    insta::assert_snapshot!(e.source);
}

#[test]
fn block_sparse_sum_with_gaussian_and_indicator_leaves() {
    let mut b = CircuitBuilder::new(2);
    let g = b.inputs(0, 2, 2, Dist::Gaussian { min_sigma: 0.01 });
    let i = b.inputs(1, 2, 2, Dist::Indicator { num_states: 2 });
    let p = b.multiply(&[g, i]);
    let s = b.summate(&[p], 2, 2, SumEdges::List(vec![[0, 0], [1, 0], [1, 1]]));
    let root = b.summate(&[s], 1, 1, SumEdges::Dense);
    let e = emit(&compile(&b.finish(root).unwrap()).unwrap()).unwrap();
    insta::assert_snapshot!(e.source);
}

#[test]
fn bf16_tensor_core_sum_of_block_size_16() {
    let mut b = CircuitBuilder::new(2);
    let x = b.inputs(0, 1, 16, Dist::Bernoulli);
    let y = b.inputs(1, 1, 16, Dist::Bernoulli);
    let p = b.multiply(&[x, y]);
    let s = b.summate(&[p], 1, 16, SumEdges::Dense);
    let root = b.summate(&[s], 1, 1, SumEdges::Dense);
    let e = emit_with(&compile(&b.finish(root).unwrap()).unwrap(), &EmitOptions { precision: Precision::Bf16 }).unwrap();
    assert!(e.source.contains("sum_fwd_bf16_bs16_w16"), "the block-16 sum runs on tensor cores");
    insta::assert_snapshot!(e.source);
}

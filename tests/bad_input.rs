//! Every kind of bad input a user can hand to pcc must come back as the right typed error, naming
//! the offending node / tensor / sample, and must never panic.
//!
//! Tests marked `regression` pin bugs found by this suite and since fixed.

use std::path::Path;

use pcc::codegen::model::{self, PARAMS_FILE, STRUCTURE_FILE, load_structure, save_structure};
use pcc::codegen::{Circuit, CircuitBuilder, CircuitError, Dist, Model, ModelError, Node, NodeId, SumEdges};
use pcc::runtime::plan::TensorLayout;
use pcc::runtime::{CpuEngine, Evidence, Params, ParamsError, Plan, RuntimeError};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const CAT3: Dist = Dist::Categorical { num_cats: 3 };
const GAUSS: Dist = Dist::Gaussian { min_sigma: 0.01 };

/// A valid model over 3 variables: 0 ~ Categorical{3}, 1 ~ Bernoulli, 2 ~ Gaussian.
///
/// Nodes: 0 = inputs(var 0), 1 = inputs(var 1), 2 = inputs(var 2), 3 = product,
/// 4 = sum (1 block of 2, dense over 2 child blocks), 5 = root sum (1 node).
fn mixed_circuit() -> Circuit {
    let mut b = CircuitBuilder::new(3);
    let x0 = b.inputs(0, 2, 2, CAT3);
    let x1 = b.inputs(1, 2, 2, Dist::Bernoulli);
    let x2 = b.inputs(2, 2, 2, GAUSS);
    let p = b.multiply(&[x0, x1, x2]);
    let s = b.summate(&[p], 1, 2, SumEdges::Dense);
    let r = b.summate(&[s], 1, 1, SumEdges::Dense);
    b.finish(r).expect("the reference circuit is valid")
}

fn mixed_model() -> Model {
    Model::random(mixed_circuit(), 11).expect("the reference model compiles")
}

fn engine() -> CpuEngine {
    mixed_model().cpu_engine().expect("valid engine")
}

/// Index of the tensor spec of IR node `ir`.
fn spec_of(plan: &Plan, ir: u32) -> &pcc::runtime::plan::TensorSpec {
    plan.tensors.iter().find(|t| t.ir_node == ir).unwrap_or_else(|| panic!("node {ir} has no tensor"))
}

fn assert_mentions(err: &dyn std::fmt::Display, needles: &[&str]) {
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "error message {msg:?} should mention {n:?}");
    }
}

fn hand_built(num_vars: u32, nodes: Vec<Node>, root: u32) -> Circuit {
    Circuit { num_vars, nodes, root: NodeId(root) }
}

fn input(var: u32, num_blocks: u32, block_size: u32, dist: Dist, tied_to: Option<u32>) -> Node {
    Node::Input { var, num_blocks, block_size, dist, tied_to: tied_to.map(NodeId) }
}

fn sum(children: &[u32], num_blocks: u32, block_size: u32, edges: Vec<[u32; 2]>, tied_to: Option<u32>) -> Node {
    Node::Sum { children: children.iter().map(|&c| NodeId(c)).collect(), num_blocks, block_size, edges, tied_to: tied_to.map(NodeId) }
}

// ---------------------------------------------------------------------------------------------
// Circuit structure
// ---------------------------------------------------------------------------------------------

#[test]
fn non_smooth_sum() {
    let mut b = CircuitBuilder::new(2);
    let x0 = b.inputs(0, 1, 1, Dist::Bernoulli);
    let x1 = b.inputs(1, 1, 1, Dist::Bernoulli);
    let s = b.summate(&[x0, x1], 1, 1, SumEdges::Dense);
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::NonSmooth { node: NodeId(2), first: NodeId(0), second: NodeId(1), var: 0 }), "{err}");
    assert_mentions(&err, &["node 2", "node 0", "node 1", "variable 0", "smooth"]);
}

#[test]
fn non_smooth_sum_deep() {
    // Sum children are products with scopes {0, 1} and {0, 2}: they differ on variable 1.
    let mut b = CircuitBuilder::new(3);
    let x0 = b.inputs(0, 1, 1, Dist::Bernoulli);
    let x1 = b.inputs(1, 1, 1, Dist::Bernoulli);
    let x2 = b.inputs(2, 1, 1, Dist::Bernoulli);
    let p01 = b.multiply(&[x0, x1]);
    let p02 = b.multiply(&[x0, x2]);
    let s = b.summate(&[p01, p02], 1, 1, SumEdges::Dense);
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::NonSmooth { node: NodeId(5), first: NodeId(3), second: NodeId(4), var: 1 }), "{err}");
    assert_mentions(&err, &["node 5", "node 3", "node 4", "variable 1"]);
}

#[test]
fn non_decomposable_product() {
    let mut b = CircuitBuilder::new(2);
    let x0 = b.inputs(0, 1, 1, Dist::Bernoulli);
    let x1 = b.inputs(1, 1, 1, Dist::Bernoulli);
    let x0b = b.inputs(0, 1, 1, Dist::Bernoulli);
    let p = b.multiply(&[x0, x1, x0b]);
    let err = b.finish(p).unwrap_err();
    assert!(matches!(err, CircuitError::NonDecomposable { node: NodeId(3), first: NodeId(0), second: NodeId(2), var: 0 }), "{err}");
    assert_mentions(&err, &["node 3", "node 0", "node 2", "variable 0", "decomposable"]);
}

#[test]
fn non_decomposable_product_same_child_twice() {
    let mut b = CircuitBuilder::new(1);
    let x0 = b.inputs(0, 1, 1, Dist::Bernoulli);
    let p = b.multiply(&[x0, x0]);
    let err = b.finish(p).unwrap_err();
    assert!(matches!(err, CircuitError::NonDecomposable { node: NodeId(1), var: 0, .. }), "{err}");
    assert_mentions(&err, &["node 1", "variable 0"]);
}

#[test]
fn block_size_mismatch_in_product() {
    let mut b = CircuitBuilder::new(2);
    let x0 = b.inputs(0, 2, 2, Dist::Bernoulli);
    let x1 = b.inputs(1, 2, 4, Dist::Bernoulli);
    let p = b.multiply(&[x0, x1]);
    let err = b.finish(p).unwrap_err();
    assert!(matches!(err, CircuitError::BlockSizeMismatch { node: NodeId(2), child: NodeId(1), expected: 2, found: 4 }), "{err}");
    assert_mentions(&err, &["node 2", "node 1", "4", "2"]);
}

#[test]
fn block_size_mismatch_in_sum() {
    // Two children with the same scope but block sizes 2 and 4.
    let mut b = CircuitBuilder::new(1);
    let a = b.inputs(0, 1, 2, Dist::Bernoulli);
    let c = b.inputs(0, 1, 4, Dist::Bernoulli);
    let s = b.summate(&[a, c], 1, 1, SumEdges::Dense);
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::BlockSizeMismatch { node: NodeId(2), child: NodeId(1), expected: 2, found: 4 }), "{err}");
    assert_mentions(&err, &["node 2", "node 1"]);
}

#[test]
fn sum_block_without_edges() {
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 2, 1, Dist::Bernoulli);
    // Block 1 of the sum is never connected.
    let s = b.summate(&[x], 2, 1, SumEdges::List(vec![[0, 0], [0, 1]]));
    let r = b.summate(&[s], 1, 1, SumEdges::Dense);
    let err = b.finish(r).unwrap_err();
    assert!(matches!(err, CircuitError::SumBlockWithoutEdges { node: NodeId(1), block: 1 }), "{err}");
    assert_mentions(&err, &["node 1", "block 1"]);
}

#[test]
fn sum_without_any_edges() {
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 1, 1, Dist::Bernoulli);
    let s = b.summate(&[x], 1, 1, SumEdges::List(vec![]));
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::SumBlockWithoutEdges { node: NodeId(1), block: 0 }), "{err}");
    assert_mentions(&err, &["node 1", "block 0"]);
}

#[test]
fn var_out_of_range() {
    let mut b = CircuitBuilder::new(2);
    let x0 = b.inputs(0, 1, 1, Dist::Bernoulli);
    let x5 = b.inputs(5, 1, 1, Dist::Bernoulli);
    let p = b.multiply(&[x0, x5]);
    let err = b.finish(p).unwrap_err();
    assert!(matches!(err, CircuitError::VarOutOfRange { node: NodeId(1), var: 5, num_vars: 2 }), "{err}");
    assert_mentions(&err, &["node 1", "variable 5", "2 variables"]);
}

#[test]
fn var_out_of_range_with_zero_vars() {
    let mut b = CircuitBuilder::new(0);
    let x = b.inputs(0, 1, 1, Dist::Bernoulli);
    let err = b.finish(x).unwrap_err();
    assert!(matches!(err, CircuitError::VarOutOfRange { node: NodeId(0), var: 0, num_vars: 0 }), "{err}");
}

#[test]
fn block_size_not_power_of_two() {
    for bs in [0u32, 3, 6, 12] {
        let mut b = CircuitBuilder::new(1);
        let x = b.inputs(0, 1, bs, Dist::Bernoulli);
        let s = b.summate(&[x], 1, 1, SumEdges::Dense);
        let err = b.finish(s).unwrap_err();
        assert!(matches!(err, CircuitError::BadBlockSize { node: NodeId(0), block_size } if block_size == bs), "{bs}: {err}");
        assert_mentions(&err, &["node 0", &format!("block size {bs}")]);
    }
    // On a sum too.
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 1, 1, Dist::Bernoulli);
    let s = b.summate(&[x], 1, 3, SumEdges::Dense);
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::BadBlockSize { node: NodeId(1), block_size: 3 }), "{err}");
}

#[test]
fn empty_node_and_empty_circuit() {
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 0, 1, Dist::Bernoulli);
    let err = b.finish(x).unwrap_err();
    assert!(matches!(err, CircuitError::EmptyNode { node: NodeId(0) }), "{err}");
    assert_mentions(&err, &["node 0"]);

    let err = CircuitBuilder::new(1).finish(NodeId(0)).unwrap_err();
    assert!(matches!(err, CircuitError::Empty), "{err}");
}

#[test]
fn bad_root() {
    let mut b = CircuitBuilder::new(1);
    b.inputs(0, 1, 1, Dist::Bernoulli);
    let err = b.finish(NodeId(7)).unwrap_err();
    assert!(matches!(err, CircuitError::BadRoot { root: NodeId(7) }), "{err}");
    assert_mentions(&err, &["node 7"]);
}

#[test]
fn root_not_scalar() {
    // A sum with 2 blocks of 1.
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 2, 1, Dist::Bernoulli);
    let s = b.summate(&[x], 2, 1, SumEdges::Dense);
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::RootNotScalar { root: NodeId(1), num_nodes: 2 }), "{err}");
    assert_mentions(&err, &["node 1", "2 nodes"]);

    // An input vector of 1 block of 4 nodes.
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 1, 4, Dist::Bernoulli);
    let err = b.finish(x).unwrap_err();
    assert!(matches!(err, CircuitError::RootNotScalar { root: NodeId(0), num_nodes: 4 }), "{err}");
}

#[test]
fn var_not_covered() {
    let mut b = CircuitBuilder::new(3);
    let x0 = b.inputs(0, 1, 1, Dist::Bernoulli);
    let x1 = b.inputs(1, 1, 1, Dist::Bernoulli);
    let p = b.multiply(&[x0, x1]);
    let err = b.finish(p).unwrap_err();
    assert!(matches!(err, CircuitError::VarNotCovered { var: 2 }), "{err}");
    assert_mentions(&err, &["variable 2"]);
}

#[test]
fn duplicate_sum_edge() {
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 2, 1, Dist::Bernoulli);
    let s = b.summate(&[x], 1, 1, SumEdges::List(vec![[0, 0], [0, 1], [0, 0]]));
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::DuplicateEdge { node: NodeId(1), edge: 2, block: 0, child_block: 0 }), "{err}");
    assert_mentions(&err, &["node 1", "edge 2"]);
}

#[test]
fn edge_out_of_range() {
    // Child block out of range.
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 2, 1, Dist::Bernoulli);
    let s = b.summate(&[x], 1, 1, SumEdges::List(vec![[0, 0], [0, 2]]));
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::EdgeOutOfRange { node: NodeId(1), edge: 1, block: 2, num_blocks: 2, .. }), "{err}");
    assert_mentions(&err, &["node 1", "edge 1", "block 2"]);

    // Sum block out of range.
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 2, 1, Dist::Bernoulli);
    let s = b.summate(&[x], 1, 1, SumEdges::List(vec![[0, 0], [3, 1]]));
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::EdgeOutOfRange { node: NodeId(1), edge: 1, block: 3, num_blocks: 1, .. }), "{err}");

    // BlockDiagonal with more sum blocks than child blocks.
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 2, 1, Dist::Bernoulli);
    let s = b.summate(&[x], 3, 1, SumEdges::BlockDiagonal);
    let r = b.summate(&[s], 1, 1, SumEdges::Dense);
    let err = b.finish(r).unwrap_err();
    assert!(matches!(err, CircuitError::EdgeOutOfRange { node: NodeId(1), edge: 2, block: 2, num_blocks: 2, .. }), "{err}");

    // Product edge out of range.
    let mut b = CircuitBuilder::new(2);
    let x0 = b.inputs(0, 2, 1, Dist::Bernoulli);
    let x1 = b.inputs(1, 2, 1, Dist::Bernoulli);
    let p = b.multiply_with_edges(&[x0, x1], vec![vec![0, 0], vec![1, 5]]);
    let r = b.summate(&[p], 1, 1, SumEdges::Dense);
    let err = b.finish(r).unwrap_err();
    assert!(matches!(err, CircuitError::EdgeOutOfRange { node: NodeId(2), edge: 1, block: 5, num_blocks: 2, .. }), "{err}");
    assert_mentions(&err, &["node 2", "node 1", "block 5"]);
}

#[test]
fn product_edge_shape() {
    let mut b = CircuitBuilder::new(2);
    let x0 = b.inputs(0, 2, 1, Dist::Bernoulli);
    let x1 = b.inputs(1, 2, 1, Dist::Bernoulli);
    let p = b.multiply_with_edges(&[x0, x1], vec![vec![0, 0], vec![1]]);
    let r = b.summate(&[p], 1, 1, SumEdges::Dense);
    let err = b.finish(r).unwrap_err();
    assert!(matches!(err, CircuitError::ProductEdgeShape { node: NodeId(2), row: 1, .. }), "{err}");
    assert_mentions(&err, &["node 2", "row 1"]);
}

#[test]
fn no_children() {
    let mut b = CircuitBuilder::new(1);
    b.inputs(0, 1, 1, Dist::Bernoulli);
    let s = b.summate(&[], 1, 1, SumEdges::List(vec![[0, 0]]));
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::NoChildren { node: NodeId(1), kind: "sum" }), "{err}");

    let c =
        hand_built(1, vec![input(0, 1, 1, Dist::Bernoulli, None), Node::Product { children: vec![], num_blocks: 1, block_size: 1, edges: vec![vec![]] }], 1);
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::NoChildren { node: NodeId(1), kind: "product" }), "{err}");
}

/// regression: `CircuitBuilder::tied_summate` with a source that is not a sum silently creates a sum
/// of 0 blocks, so `finish` reports `EmptyNode` ("a node vector needs at least one block") instead
/// of the real problem, `BadTie`. Same for `tied_inputs` with a non-input source.
#[test]
fn bad_tie_sum_to_input_via_builder() {
    let mut b = CircuitBuilder::new(1);
    let x = b.inputs(0, 2, 1, Dist::Bernoulli);
    let s = b.tied_summate(x, &[x]);
    let r = b.summate(&[s], 1, 1, SumEdges::Dense);
    let err = b.finish(r).unwrap_err();
    assert!(matches!(err, CircuitError::BadTie { node: NodeId(1), source_node: NodeId(0), .. }), "regression: expected BadTie, got {err:?}: {err}");
}

/// regression (same as above, for inputs): `tied_inputs` with a sum source gives `EmptyNode`.
#[test]
fn bad_tie_input_to_sum_via_builder() {
    let mut b = CircuitBuilder::new(2);
    let x = b.inputs(0, 1, 1, Dist::Bernoulli);
    let s = b.summate(&[x], 1, 1, SumEdges::Dense);
    let t = b.tied_inputs(s, 1);
    let p = b.multiply(&[s, t]);
    let err = b.finish(p).unwrap_err();
    assert!(matches!(err, CircuitError::BadTie { node: NodeId(2), source_node: NodeId(1), .. }), "regression: expected BadTie, got {err:?}: {err}");
}

#[test]
fn bad_tie_sum_to_input_hand_built() {
    // Node 2 is a sum of the right shape that claims to share the weights of input node 0.
    let c =
        hand_built(1, vec![input(0, 1, 1, Dist::Bernoulli, None), input(0, 1, 1, Dist::Bernoulli, None), sum(&[0, 1], 1, 1, vec![[0, 0], [0, 1]], Some(0))], 2);
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadTie { node: NodeId(2), source_node: NodeId(0), .. }), "{err}");
    assert_mentions(&err, &["node 2", "node 0"]);
}

#[test]
fn bad_tie_other_reasons() {
    // Different distributions.
    let c = hand_built(
        2,
        vec![
            input(0, 1, 1, Dist::Categorical { num_cats: 2 }, None),
            input(1, 1, 1, Dist::Categorical { num_cats: 3 }, Some(0)),
            Node::Product { children: vec![NodeId(0), NodeId(1)], num_blocks: 1, block_size: 1, edges: vec![vec![0, 0]] },
        ],
        2,
    );
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadTie { node: NodeId(1), source_node: NodeId(0), .. }), "{err}");
    assert_mentions(&err, &["node 1", "node 0", "distributions differ"]);

    // Different shapes.
    let c = hand_built(
        2,
        vec![
            input(0, 2, 1, Dist::Bernoulli, None),
            input(1, 1, 1, Dist::Bernoulli, Some(0)),
            Node::Product { children: vec![NodeId(0), NodeId(1)], num_blocks: 1, block_size: 1, edges: vec![vec![0, 0]] },
        ],
        2,
    );
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadTie { node: NodeId(1), source_node: NodeId(0), .. }), "{err}");

    // Source is itself tied.
    let c = hand_built(
        3,
        vec![
            input(0, 1, 1, Dist::Bernoulli, None),
            input(1, 1, 1, Dist::Bernoulli, Some(0)),
            input(2, 1, 1, Dist::Bernoulli, Some(1)),
            Node::Product { children: vec![NodeId(0), NodeId(1), NodeId(2)], num_blocks: 1, block_size: 1, edges: vec![vec![0, 0, 0]] },
        ],
        3,
    );
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadTie { node: NodeId(2), source_node: NodeId(1), .. }), "{err}");

    // Source comes after (or is) the tied node.
    let c = hand_built(1, vec![input(0, 1, 1, Dist::Bernoulli, Some(0))], 0);
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadTie { node: NodeId(0), source_node: NodeId(0), .. }), "{err}");

    // Tied sums whose edges differ.
    let c = hand_built(
        1,
        vec![
            input(0, 2, 1, Dist::Bernoulli, None),
            sum(&[0], 1, 1, vec![[0, 0], [0, 1]], None),
            sum(&[0], 1, 1, vec![[0, 1], [0, 0]], Some(1)),
            sum(&[1, 2], 1, 1, vec![[0, 0], [0, 1]], None),
        ],
        3,
    );
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadTie { node: NodeId(2), source_node: NodeId(1), .. }), "{err}");
    assert_mentions(&err, &["edges differ"]);
}

/// A tie to a node index past the end of the circuit is an error, not a panic.
#[test]
fn bad_tie_to_nonexistent_node() {
    let c =
        hand_built(1, vec![input(0, 1, 1, Dist::Bernoulli, None), input(0, 1, 1, Dist::Bernoulli, Some(9)), sum(&[0, 1], 1, 1, vec![[0, 0], [0, 1]], None)], 2);
    let res = std::panic::catch_unwind(|| pcc::codegen::validate(&c));
    let err = res.expect("validate must not panic on a tie to a missing node").unwrap_err();
    assert!(matches!(err, CircuitError::BadTie { node: NodeId(1), source_node: NodeId(9), .. }), "{err}");
}

#[test]
fn domain_conflict() {
    let mut b = CircuitBuilder::new(1);
    let a = b.inputs(0, 1, 1, CAT3);
    let c = b.inputs(0, 1, 1, Dist::Bernoulli);
    let s = b.summate(&[a, c], 1, 1, SumEdges::Dense);
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::DomainConflict { var: 0, first: NodeId(0), second: NodeId(1), .. }), "{err}");
    assert_mentions(&err, &["variable 0", "node 0", "node 1", "3 categories", "2 categories"]);

    // Discrete vs continuous.
    let mut b = CircuitBuilder::new(1);
    let a = b.inputs(0, 1, 1, GAUSS);
    let c = b.inputs(0, 1, 1, Dist::Indicator { num_states: 2 });
    let s = b.summate(&[a, c], 1, 1, SumEdges::Dense);
    let err = b.finish(s).unwrap_err();
    assert!(matches!(err, CircuitError::DomainConflict { var: 0, first: NodeId(0), second: NodeId(1), .. }), "{err}");
    assert_mentions(&err, &["continuous"]);
}

#[test]
fn invalid_gaussian_min_sigma() {
    for min_sigma in [0.0f32, -1.0, f32::NAN, f32::INFINITY, -0.0] {
        let mut b = CircuitBuilder::new(1);
        let x = b.inputs(0, 1, 1, Dist::Gaussian { min_sigma });
        let err = b.finish(x).unwrap_err();
        assert!(matches!(err, CircuitError::InvalidDistribution { node: NodeId(0), .. }), "{min_sigma}: {err}");
        assert_mentions(&err, &["node 0", "Gaussian"]);
    }
}

#[test]
fn invalid_zero_categories() {
    for dist in [Dist::Categorical { num_cats: 0 }, Dist::Indicator { num_states: 0 }] {
        let mut b = CircuitBuilder::new(1);
        let x = b.inputs(0, 1, 1, dist);
        let err = b.finish(x).unwrap_err();
        assert!(matches!(err, CircuitError::InvalidDistribution { node: NodeId(0), .. }), "{dist:?}: {err}");
    }
}

#[test]
fn child_after_parent() {
    // Node 0 is a sum over node 1, which comes later.
    let c = hand_built(1, vec![sum(&[1], 1, 1, vec![[0, 0]], None), input(0, 1, 1, Dist::Bernoulli, None)], 0);
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadChild { node: NodeId(0), child: NodeId(1) }), "{err}");
    assert_mentions(&err, &["node 0", "node 1", "topological"]);
    // compile() validates too.
    let err = pcc::codegen::compile(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadChild { .. }), "{err}");

    // Self reference and a child that does not exist at all.
    let c = hand_built(1, vec![input(0, 1, 1, Dist::Bernoulli, None), sum(&[1], 1, 1, vec![[0, 0]], None)], 1);
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadChild { node: NodeId(1), child: NodeId(1) }), "{err}");
    let c = hand_built(1, vec![input(0, 1, 1, Dist::Bernoulli, None), sum(&[42], 1, 1, vec![[0, 0]], None)], 1);
    let err = pcc::codegen::validate(&c).unwrap_err();
    assert!(matches!(err, CircuitError::BadChild { node: NodeId(1), child: NodeId(42) }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

#[test]
fn params_set_node_unnormalized() {
    let m = mixed_model();
    let mut p = m.params.clone();
    // Node 4: weights [2 edges, 2, 2]; every entry 0.3 makes each node sum to 1.2.
    let err = p.set_node(&m.plan, 4, &[0.3; 8]).unwrap_err();
    assert!(matches!(err, ParamsError::Unnormalized { ref name, row: 0, sum } if name == "node4.weights" && (sum - 1.2).abs() < 1e-6), "{err}");
    assert_mentions(&err, &["node4.weights", "node 0"]);
    assert_eq!(p, m.params, "a rejected set_node must leave the parameters untouched");

    // Valid weights are accepted and land in the flat vector.
    p.set_node(&m.plan, 4, &[0.25; 8]).unwrap();
    assert_eq!(p.extract(spec_of(&m.plan, 4)), vec![0.25; 8]);

    // Categorical rows must sum to one.
    let err = p.set_node(&m.plan, 0, &[0.5, 0.5, 0.5, 0.2, 0.3, 0.5, 0.2, 0.3, 0.5, 0.2, 0.3, 0.5]).unwrap_err();
    assert!(matches!(err, ParamsError::Unnormalized { ref name, row: 0, .. } if name == "node0.probs"), "{err}");
    let err = p.set_node(&m.plan, 0, &[0.2, 0.3, 0.5, 0.2, 0.3, 0.5, 0.2, 0.3, 0.5, 0.0, 0.3, 0.5]).unwrap_err();
    assert!(matches!(err, ParamsError::Unnormalized { ref name, row: 3, .. } if name == "node0.probs"), "{err}");
    assert_mentions(&err, &["node0.probs", "node 3"]);

    // Bernoulli probabilities above one.
    let err = p.set_node(&m.plan, 1, &[0.5, 0.5, 1.5, 0.5]).unwrap_err();
    assert!(matches!(err, ParamsError::ProbabilityAboveOne { ref name, row: 2, .. } if name == "node1.probs"), "{err}");
}

#[test]
fn params_set_node_negative() {
    let m = mixed_model();
    let mut p = m.params.clone();
    // Node 0 of sum 4 reads entries 0, 1 (edge 0) and 4, 5 (edge 1): -0.25 + 0.75 + 0.25 + 0.25 = 1.
    let w = [-0.25, 0.75, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25];
    let err = p.set_node(&m.plan, 4, &w).unwrap_err();
    assert!(matches!(err, ParamsError::Negative { ref name, index: 0, value } if name == "node4.weights" && value == -0.25), "{err}");
    assert_mentions(&err, &["node4.weights", "-0.25"]);

    let err = p.set_node(&m.plan, 0, &[0.2, 0.3, 0.5, 0.2, -0.3, 1.1, 0.2, 0.3, 0.5, 0.2, 0.3, 0.5]).unwrap_err();
    assert!(matches!(err, ParamsError::Negative { ref name, index: 4, .. } if name == "node0.probs"), "{err}");
    let err = p.set_node(&m.plan, 1, &[0.5, -0.1, 0.5, 0.5]).unwrap_err();
    assert!(matches!(err, ParamsError::Negative { ref name, index: 1, .. } if name == "node1.probs"), "{err}");
    assert_eq!(p, m.params);
}

#[test]
fn params_set_node_non_finite() {
    let m = mixed_model();
    let mut p = m.params.clone();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = [0.25f32; 8];
        w[3] = bad;
        let err = p.set_node(&m.plan, 4, &w).unwrap_err();
        assert!(matches!(err, ParamsError::NonFinite { ref name, index: 3 } if name == "node4.weights"), "{bad}: {err}");
        assert_mentions(&err, &["node4.weights", "index 3"]);

        let mut g = [0.0f32, 1.0, 0.5, 1.0, -0.5, 1.0, 0.0, 2.0];
        g[6] = bad;
        let err = p.set_node(&m.plan, 2, &g).unwrap_err();
        assert!(matches!(err, ParamsError::NonFinite { ref name, index: 6 } if name == "node2.mean_std"), "{bad}: {err}");
    }
    assert_eq!(p, m.params);
}

#[test]
fn params_set_node_gaussian_sigma() {
    let m = mixed_model();
    let mut p = m.params.clone();
    for sigma in [0.0f32, -0.0, -1.0] {
        // [4 nodes, (mean, sigma)]; node 2 gets the bad sigma.
        let g = [0.0f32, 1.0, 0.5, 1.0, -0.5, sigma, 0.0, 2.0];
        let err = p.set_node(&m.plan, 2, &g).unwrap_err();
        assert!(matches!(err, ParamsError::InvalidSigma { ref name, row: 2, .. } if name == "node2.mean_std"), "{sigma}: {err}");
        assert_mentions(&err, &["node2.mean_std", "node 2"]);
    }
    // A negative mean is fine.
    p.set_node(&m.plan, 2, &[-3.0, 1.0, 0.5, 1.0, -0.5, 0.1, 0.0, 2.0]).unwrap();
}

#[test]
fn params_set_node_wrong_shape_or_node() {
    let m = mixed_model();
    let mut p = m.params.clone();
    let err = p.set_node(&m.plan, 4, &[0.25; 7]).unwrap_err();
    assert!(matches!(err, ParamsError::ShapeMismatch { ref name, .. } if name == "node4.weights"), "{err}");
    assert_mentions(&err, &["node4.weights"]);
    // Node 3 is a product: it has no parameters.
    let err = p.set_node(&m.plan, 3, &[]).unwrap_err();
    assert!(matches!(err, ParamsError::UnexpectedTensor { .. }), "{err}");
    assert_mentions(&err, &["node3"]);
    let err = p.set_node(&m.plan, 99, &[1.0]).unwrap_err();
    assert!(matches!(err, ParamsError::UnexpectedTensor { .. }), "{err}");
}

#[test]
fn params_validate_after_poking_flat_vector() {
    let m = mixed_model();
    m.params.validate(&m.plan).unwrap();
    let spec = spec_of(&m.plan, 4);
    let TensorLayout::SumWeights { edge_bases, .. } = &spec.layout else { panic!("node 4 is a sum") };
    let idx = edge_bases[1] as usize; // edge 1, child node 0, sum node 0.

    let mut p = m.params.clone();
    p.sum[idx] += 0.5;
    let err = p.validate(&m.plan).unwrap_err();
    assert!(matches!(err, ParamsError::Unnormalized { ref name, row: 0, .. } if name == "node4.weights"), "{err}");
    assert_mentions(&err, &["node4.weights", "node 0"]);

    let mut p = m.params.clone();
    p.sum[idx] = -p.sum[idx];
    let err = p.validate(&m.plan).unwrap_err();
    assert!(matches!(err, ParamsError::Negative { ref name, index: 4, .. } if name == "node4.weights"), "{err}");

    let mut p = m.params.clone();
    p.sum[idx] = f32::NAN;
    let err = p.validate(&m.plan).unwrap_err();
    assert!(matches!(err, ParamsError::NonFinite { ref name, index: 4 } if name == "node4.weights"), "{err}");
    assert_mentions(&err, &["node4.weights", "index 4"]);

    // Input parameters: Gaussian sigma of node 1 of the Gaussian vector.
    let gspec = spec_of(&m.plan, 2);
    let TensorLayout::Input { param_start, .. } = gspec.layout else { panic!("node 2 is an input") };
    let mut p = m.params.clone();
    p.input[param_start as usize + 3] = 0.0;
    let err = p.validate(&m.plan).unwrap_err();
    assert!(matches!(err, ParamsError::InvalidSigma { ref name, row: 1, value } if name == "node2.mean_std" && value == 0.0), "{err}");
    assert_mentions(&err, &["node2.mean_std", "node 1"]);
    let mut p = m.params.clone();
    p.input[param_start as usize + 3] = -2.0;
    let err = p.validate(&m.plan).unwrap_err();
    assert!(matches!(err, ParamsError::InvalidSigma { ref name, row: 1, .. } if name == "node2.mean_std"), "{err}");

    // Wrong lengths.
    let mut p = m.params.clone();
    p.input.push(0.5);
    let err = p.validate(&m.plan).unwrap_err();
    assert!(matches!(err, ParamsError::WrongLength { .. }), "{err}");
    let mut p = m.params.clone();
    p.sum.pop();
    assert!(matches!(p.validate(&m.plan).unwrap_err(), ParamsError::WrongLength { .. }));
}

/// regression: the dummy parameters `[0, num_dummy_params)` must be 0 (the plan documents that
/// padded sum edges read them as weight 0; the CPU engine skips padding, a padded GPU kernel will
/// not), but `Params::validate` does not check them.
#[test]
fn params_validate_rejects_corrupted_dummy_params() {
    let m = mixed_model();
    assert!(m.plan.num_dummy_params > 0);
    let mut p = m.params.clone();
    p.sum[0] = f32::NAN;
    assert!(p.validate(&m.plan).is_err(), "regression: a NaN dummy parameter passes Params::validate");
}

/// regression: parameters fixed by the compiler (the weight 1 of the wrapper sum above a product
/// root) belong to no tensor, and `Params::validate` does not check them: a caller can set the
/// weight to 0.5 and the engine then returns a model whose probabilities sum to 0.5.
#[test]
fn params_validate_rejects_changed_fixed_params() {
    let mut b = CircuitBuilder::new(2);
    let x0 = b.inputs(0, 1, 1, Dist::Bernoulli);
    let x1 = b.inputs(1, 1, 1, Dist::Bernoulli);
    let p = b.multiply(&[x0, x1]);
    let m = Model::random(b.finish(p).unwrap(), 1).unwrap();
    let &[(idx, one)] = m.plan.fixed_params.as_slice() else { panic!("a product root has one fixed wrapper weight") };
    assert_eq!(one, 1.0);
    let mut p = m.params.clone();
    p.sum[idx as usize] = 0.5;
    if p.validate(&m.plan).is_ok() {
        let e = CpuEngine::new(m.plan.clone(), p).unwrap();
        let ev = Evidence::new(2, vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]).unwrap();
        let total: f64 = e.log_likelihood(&ev).unwrap().iter().map(|&l| (l as f64).exp()).sum();
        panic!("regression: a changed fixed parameter passes Params::validate; the engine's distribution sums to {total}");
    }
}

#[test]
fn engine_rejects_bad_params() {
    let m = mixed_model();
    let mut p = m.params.clone();
    p.input[0] = f32::NAN;
    let err = CpuEngine::new(m.plan.clone(), p.clone()).err().expect("NaN params must be rejected");
    assert!(matches!(err, RuntimeError::Params(ParamsError::NonFinite { ref name, index: 0 }) if name == "node0.probs"), "{err}");
    let mut e = m.cpu_engine().unwrap();
    let err = e.set_params(p).unwrap_err();
    assert!(matches!(err, RuntimeError::Params(ParamsError::NonFinite { .. })), "{err}");
    assert_eq!(e.params(), &m.params, "rejected parameters must not be installed");
}

#[test]
fn model_new_with_bad_params() {
    let c = mixed_circuit();
    let good = mixed_model();
    // Zeros are not normalized.
    let plan = pcc::codegen::compile(&c).unwrap();
    let err = Model::new(c.clone(), Params::zeros(&plan)).unwrap_err();
    assert!(matches!(err, ModelError::Params(ParamsError::Unnormalized { .. })), "{err}");

    let mut p = good.params.clone();
    p.input[1] = -0.5;
    let err = Model::new(c.clone(), p).unwrap_err();
    assert!(matches!(err, ModelError::Params(ParamsError::Negative { ref name, index: 1, .. }) if name == "node0.probs"), "{err}");
    assert_mentions(&err, &["node0.probs"]);

    let mut p = good.params.clone();
    p.sum.push(0.0);
    let err = Model::new(c.clone(), p).unwrap_err();
    assert!(matches!(err, ModelError::Params(ParamsError::WrongLength { .. })), "{err}");

    // Invalid circuit: the circuit error comes first.
    let mut bad = c.clone();
    bad.num_vars = 4;
    let err = Model::new(bad, good.params.clone()).unwrap_err();
    assert!(matches!(err, ModelError::Circuit(CircuitError::VarNotCovered { var: 3 })), "{err}");

    Model::new(c, good.params).expect("valid parameters are accepted");
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// Runs every data-consuming entry point of the engine and checks each returns the same error.
fn all_queries_fail(ev: &Evidence, check: impl Fn(&RuntimeError) -> bool) {
    let mut e = engine();
    let r = e.log_likelihood(ev).unwrap_err();
    assert!(check(&r), "log_likelihood: {r:?}");
    let r = e.accumulate_flows(ev, None).unwrap_err();
    assert!(check(&r), "accumulate_flows: {r:?}");
    assert_eq!(e.flows().total, 0.0, "rejected data must not add flows");
    assert!(e.flows().sum.iter().chain(&e.flows().input).all(|&f| f == 0.0));
    let r = e.conditionals(ev).unwrap_err();
    assert!(check(&r), "conditionals: {r:?}");
    let r = e.mpe(ev).unwrap_err();
    assert!(check(&r), "mpe: {r:?}");
    let r = e.sample_conditional(ev, 1).unwrap_err();
    assert!(check(&r), "sample_conditional: {r:?}");
    let r = e.trace(ev, None).expect_err("trace must reject");
    assert!(check(&r), "trace: {r:?}");
}

#[test]
fn data_category_out_of_range() {
    let e = engine();
    let ev = Evidence::new(3, vec![0.0, 1.0, 0.5, 3.0, 0.0, 0.5]).unwrap();
    let err = e.log_likelihood(&ev).unwrap_err();
    assert!(matches!(err, RuntimeError::CategoryOutOfRange { sample: 1, var: 0, value: 3.0, num_cats: 3 }), "{err}");
    assert_mentions(&err, &["sample 1", "variable 0", "3 categories"]);
    all_queries_fail(&ev, |r| matches!(r, RuntimeError::CategoryOutOfRange { sample: 1, var: 0, .. }));

    // Bernoulli variable with value 2.
    let ev = Evidence::new(3, vec![0.0, 2.0, 0.5]).unwrap();
    let err = e.log_likelihood(&ev).unwrap_err();
    assert!(matches!(err, RuntimeError::CategoryOutOfRange { sample: 0, var: 1, value: 2.0, num_cats: 2 }), "{err}");
    assert_mentions(&err, &["sample 0", "variable 1"]);

    // A huge category.
    let ev = Evidence::new(3, vec![1e9, 0.0, 0.5]).unwrap();
    assert!(matches!(e.log_likelihood(&ev).unwrap_err(), RuntimeError::CategoryOutOfRange { var: 0, .. }));
}

#[test]
fn data_not_a_category() {
    let e = engine();
    for bad in [1.5f32, -1.0, 0.25, -0.5] {
        let ev = Evidence::new(3, vec![0.0, 1.0, 0.5, 0.0, 1.0, 0.5, bad, 0.0, 0.5]).unwrap();
        let err = e.log_likelihood(&ev).unwrap_err();
        assert!(matches!(err, RuntimeError::NotACategory { sample: 2, var: 0, value } if value == bad), "{bad}: {err}");
        assert_mentions(&err, &["sample 2", "variable 0"]);
    }
    let ev = Evidence::new(3, vec![0.0, 0.5, 0.5]).unwrap();
    let err = e.log_likelihood(&ev).unwrap_err();
    assert!(matches!(err, RuntimeError::NotACategory { sample: 0, var: 1, .. }), "{err}");
    all_queries_fail(&ev, |r| matches!(r, RuntimeError::NotACategory { sample: 0, var: 1, .. }));
}

#[test]
fn data_non_finite_value() {
    let e = engine();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        // Gaussian variable 2 of sample 1.
        let ev = Evidence::new(3, vec![0.0, 1.0, 0.5, 1.0, 0.0, bad]).unwrap();
        let err = e.log_likelihood(&ev).unwrap_err();
        assert!(matches!(err, RuntimeError::NonFiniteValue { sample: 1, var: 2 }), "{bad}: {err}");
        assert_mentions(&err, &["sample 1", "variable 2"]);
        // Discrete variable.
        let ev = Evidence::new(3, vec![bad, 1.0, 0.5]).unwrap();
        let err = e.log_likelihood(&ev).unwrap_err();
        assert!(matches!(err, RuntimeError::NonFiniteValue { sample: 0, var: 0 }), "{bad}: {err}");
    }
    let ev = Evidence::new(3, vec![0.0, 1.0, f32::NAN]).unwrap();
    all_queries_fail(&ev, |r| matches!(r, RuntimeError::NonFiniteValue { sample: 0, var: 2 }));
}

#[test]
fn data_nan_marked_missing_is_accepted() {
    let mut e = engine();
    let values = vec![0.0, 1.0, 0.5, 2.0, 0.0, -1.0];
    let missing = vec![false, false, true, true, false, false];
    let reference = Evidence::with_missing(3, values.clone(), Some(missing.clone())).unwrap();
    let mut poisoned_values = values.clone();
    poisoned_values[2] = f32::NAN; // Gaussian, missing.
    poisoned_values[3] = 17.5; // Categorical, missing: not even a category.
    let poisoned = Evidence::with_missing(3, poisoned_values, Some(missing)).unwrap();

    let want = e.log_likelihood(&reference).unwrap();
    let got = e.log_likelihood(&poisoned).unwrap();
    assert!(got.iter().all(|l| l.is_finite()), "{got:?}");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want), "a missing value's stored number must be ignored");

    // Same for the other queries.
    assert_eq!(e.mpe(&poisoned).unwrap().log_values, e.mpe(&reference).unwrap().log_values);
    let mpe = e.mpe(&poisoned).unwrap();
    assert!(mpe.assignments.iter().all(|x| x.is_finite()), "{:?}", mpe.assignments);
    assert_eq!(e.conditionals(&poisoned).unwrap(), e.conditionals(&reference).unwrap());
    assert_eq!(e.sample_conditional(&poisoned, 5).unwrap(), e.sample_conditional(&reference, 5).unwrap());
    e.accumulate_flows(&poisoned, None).unwrap();
    let flows_poisoned = e.flows().clone();
    e.zero_flows();
    e.accumulate_flows(&reference, None).unwrap();
    assert_eq!(&flows_poisoned, e.flows());
    assert!(flows_poisoned.input.iter().all(|f| f.is_finite()));
    e.em_step(1.0, 0.1).unwrap();
    e.params().validate(e.plan()).unwrap();
}

#[test]
fn data_wrong_num_vars() {
    let ev = Evidence::new(2, vec![0.0, 1.0]).unwrap();
    let err = engine().log_likelihood(&ev).unwrap_err();
    assert!(matches!(err, RuntimeError::WrongNumVars { expected: 3, found: 2 }), "{err}");
    assert_mentions(&err, &["2 variables", "3"]);
    all_queries_fail(&ev, |r| matches!(r, RuntimeError::WrongNumVars { expected: 3, found: 2 }));
    let ev = Evidence::new(4, vec![0.0; 8]).unwrap();
    assert!(matches!(engine().log_likelihood(&ev).unwrap_err(), RuntimeError::WrongNumVars { expected: 3, found: 4 }));
}

#[test]
fn data_ragged() {
    let err = Evidence::new(3, vec![0.0; 4]).unwrap_err();
    assert!(matches!(err, RuntimeError::RaggedData { len: 4, num_vars: 3 }), "{err}");
    assert_mentions(&err, &["4 values", "3 variables"]);
    let err = Evidence::new(0, vec![]).unwrap_err();
    assert!(matches!(err, RuntimeError::RaggedData { num_vars: 0, .. }), "{err}");
    let err = Evidence::with_missing(3, vec![0.0; 5], Some(vec![false; 5])).unwrap_err();
    assert!(matches!(err, RuntimeError::RaggedData { len: 5, num_vars: 3 }), "{err}");
}

#[test]
fn data_mask_shape() {
    let err = Evidence::with_missing(3, vec![0.0; 6], Some(vec![false; 5])).unwrap_err();
    assert!(matches!(err, RuntimeError::MaskShape { expected: 6, found: 5 }), "{err}");
    assert_mentions(&err, &["5 entries", "6"]);
    let err = Evidence::with_missing(3, vec![0.0; 6], Some(vec![false; 9])).unwrap_err();
    assert!(matches!(err, RuntimeError::MaskShape { expected: 6, found: 9 }), "{err}");
}

/// Evidence has public fields, so a caller can build a ragged batch or a bad mask without the
/// constructors; the engine must then still return an error rather than panic.
#[test]
fn data_hand_built_evidence_does_not_panic() {
    let e = engine();
    let cases = [
        Evidence { num_vars: 3, values: vec![0.0; 6], missing: Some(vec![false; 2]), soft: None },
        Evidence { num_vars: 3, values: vec![0.0; 7], missing: None, soft: None },
        Evidence { num_vars: 0, values: vec![], missing: None, soft: None },
    ];
    let mut problems = Vec::new();
    for ev in cases {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.log_likelihood(&ev))) {
            Err(_) => problems.push(format!("log_likelihood panicked on {ev:?}")),
            Ok(Ok(ll)) => problems.push(format!("{ev:?} was accepted (log-likelihoods {ll:?})")),
            Ok(Err(_)) => {}
        }
    }
    assert!(problems.is_empty(), "regression: Evidence::validate does not check the shape:\n{}", problems.join("\n"));
}

#[test]
fn data_weights_shape() {
    let mut e = engine();
    let ev = Evidence::new(3, vec![0.0, 1.0, 0.5, 2.0, 0.0, 0.5]).unwrap();
    let err = e.accumulate_flows(&ev, Some(&[1.0])).unwrap_err();
    assert!(matches!(err, RuntimeError::WeightsShape { expected: 2, found: 1 }), "{err}");
    assert_mentions(&err, &["1 entries", "2 samples"]);
    let err = e.accumulate_flows(&ev, Some(&[1.0; 3])).unwrap_err();
    assert!(matches!(err, RuntimeError::WeightsShape { expected: 2, found: 3 }), "{err}");
    assert_eq!(e.flows().total, 0.0);
    let err = e.trace(&ev, Some(&[])).expect_err("trace must reject bad weights");
    assert!(matches!(err, RuntimeError::WeightsShape { expected: 2, found: 0 }), "{err}");
    e.accumulate_flows(&ev, Some(&[0.5, 2.0])).unwrap();
    assert_eq!(e.flows().total, 2.5);
}

#[test]
fn em_invalid_hyper_parameters() {
    let mut e = engine();
    let ev = Evidence::new(3, vec![0.0, 1.0, 0.5, 2.0, 0.0, 0.5]).unwrap();
    e.accumulate_flows(&ev, None).unwrap();
    let before = e.params().clone();
    let flows = e.flows().clone();
    for (step, pseudo) in [(0.0f32, 0.1f32), (1.5, 0.1), (-0.5, 0.1), (f32::NAN, 0.1), (0.5, -1.0), (0.5, f32::NAN), (0.5, f32::INFINITY)] {
        let err = e.em_step(step, pseudo).unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidHyperParameter(_)), "({step}, {pseudo}): {err}");
        let msg = err.to_string();
        assert!(msg.contains("step size") || msg.contains("pseudocount"), "{msg}");
        assert_eq!(e.params(), &before, "a rejected EM step must not change the parameters");
        assert_eq!(e.flows(), &flows, "a rejected EM step must not clear the flows");
    }
    assert_mentions(&e.em_step(1.5, 0.1).unwrap_err(), &["step size", "1.5"]);
    assert_mentions(&e.em_step(0.5, -1.0).unwrap_err(), &["pseudocount", "-1"]);
    e.em_step(1.0, 0.0).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Model files
// ---------------------------------------------------------------------------------------------

fn saved_model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let m = mixed_model();
    m.save(dir.path()).unwrap();
    (dir, m)
}

fn load_err(dir: &Path) -> ModelError {
    match std::panic::catch_unwind(|| Model::load(dir)) {
        Ok(Ok(_)) => panic!("loading {} must fail", dir.display()),
        Ok(Err(e)) => e,
        Err(_) => panic!("Model::load panicked on {}", dir.display()),
    }
}

fn params_error(e: &ModelError) -> Option<&ParamsError> {
    match e {
        ModelError::Runtime(RuntimeError::Params(p)) | ModelError::Params(p) => Some(p),
        _ => None,
    }
}

#[test]
fn truncated_params_file() {
    let (dir, m) = saved_model();
    let path = dir.path().join(PARAMS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert!(8 + header_len < bytes.len(), "the file has a data region");
    let cuts = [
        0,
        1,
        4,
        7,
        8,
        9,
        8 + header_len / 2,
        8 + header_len - 1,
        8 + header_len,
        8 + header_len + 1,
        bytes.len() / 2,
        (8 + header_len + bytes.len()) / 2,
        bytes.len() - 4,
        bytes.len() - 1,
    ];
    for cut in cuts {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = load_err(dir.path());
        assert!(
            matches!(err, ModelError::Runtime(RuntimeError::Params(ParamsError::Truncated { .. }))),
            "cut at {cut} of {} (header ends at {}): expected Truncated, got {err:?}",
            bytes.len(),
            8 + header_len
        );
        assert_mentions(&err, &[PARAMS_FILE, "truncated"]);
    }
    // The intact file still loads.
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(Model::load(dir.path()).unwrap().params, m.params);
}

#[test]
fn params_file_with_trailing_garbage() {
    let (dir, _m) = saved_model();
    let path = dir.path().join(PARAMS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0u8; 4]);
    std::fs::write(&path, &bytes).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(params_error(&err), Some(ParamsError::Truncated { .. } | ParamsError::Malformed { .. })), "{err:?}");
}

/// The crc32 hex digits of the header metadata, as a byte range of the file.
fn crc_hex_range(bytes: &[u8]) -> std::ops::Range<usize> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    let key = "\"crc32\":\"";
    let at = header.find(key).expect("crc32 in the metadata") + key.len() + 8;
    at..at + 8
}

/// Checks the outcome of loading a copy of the parameter file with bit `bit` of byte `pos`
/// flipped. Returns whether the flip went undetected (only tolerated for the letter case of the
/// recorded checksum's hex digits, which cannot change the parameters).
fn check_flip(res: Result<Params, ParamsError>, m: &Model, bytes: &[u8], pos: usize, bit: u32) -> bool {
    let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let err = match res {
        Ok(loaded) => {
            let flipped = bytes[pos] ^ (1 << bit);
            assert!(
                crc_hex_range(bytes).contains(&pos) && bit == 5 && flipped.is_ascii_alphabetic(),
                "bit {bit} of byte {pos} flipped (data starts at {data_start}) was not detected"
            );
            assert_eq!(loaded, m.params);
            return true;
        }
        Err(e) => e,
    };
    if pos >= data_start {
        assert!(matches!(err, ParamsError::ChecksumMismatch { .. }), "data byte {pos} bit {bit}: {err:?}");
        assert_mentions(&err, &[PARAMS_FILE, "checksum"]);
    } else {
        assert!(
            matches!(err, ParamsError::Truncated { .. } | ParamsError::Malformed { .. } | ParamsError::ChecksumMismatch { .. }),
            "header byte {pos} bit {bit}: {err:?}"
        );
    }
    false
}

#[test]
fn bit_flipped_params_file() {
    let (dir, m) = saved_model();
    let path = dir.path().join(PARAMS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert!(data_start < bytes.len());

    // Every bit of every byte, header and data, parsed in memory (Model::load reads the file and
    // calls exactly this).
    let mut undetected = Vec::new();
    for pos in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[pos] ^= 1 << bit;
            let res = std::panic::catch_unwind(|| Params::from_bytes(&m.plan, &flipped, &path))
                .unwrap_or_else(|_| panic!("Params::from_bytes panicked with bit {bit} of byte {pos} flipped"));
            if check_flip(res, &m, &bytes, pos, bit) {
                undetected.push((pos, bit));
            }
        }
    }
    // Through the file system and Model::load for every 7th byte (a rotating bit), which must
    // agree with the in-memory result.
    for pos in (0..bytes.len()).step_by(7) {
        let bit = (pos / 7 % 8) as u32;
        let mut flipped = bytes.clone();
        flipped[pos] ^= 1 << bit;
        std::fs::write(&path, &flipped).unwrap();
        let res = std::panic::catch_unwind(|| Model::load(dir.path())).unwrap_or_else(|_| panic!("Model::load panicked with bit {bit} of byte {pos} flipped"));
        let res = res.map(|loaded| loaded.params).map_err(|e| match e {
            ModelError::Runtime(RuntimeError::Params(p)) => p,
            other => panic!("byte {pos} bit {bit}: not a parameter error: {other:?}"),
        });
        let in_memory = Params::from_bytes(&m.plan, &flipped, &path);
        assert_eq!(format!("{:?}", res), format!("{:?}", in_memory), "byte {pos} bit {bit}");
        check_flip(res, &m, &bytes, pos, bit);
    }
    assert!(undetected.is_empty(), "undetected bit flips (byte, bit): {undetected:?}");
}

fn edit_structure(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(STRUCTURE_FILE);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn structure_unknown_version() {
    let (dir, _m) = saved_model();
    edit_structure(dir.path(), |v| v["version"] = 99.into());
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::UnsupportedVersion { found: 99, supported: 1, .. }), "{err}");
    assert_mentions(&err, &[STRUCTURE_FILE, "99"]);
    let err = load_structure(&dir.path().join(STRUCTURE_FILE)).unwrap_err();
    assert!(matches!(err, ModelError::UnsupportedVersion { found: 99, .. }), "{err}");
}

/// regression: a version that does not fit in u32 is truncated (`version as u32`) before it is
/// reported, so 2^32 + 1 is reported as "format version 1; this build reads version 1".
#[test]
fn structure_huge_version() {
    let (dir, _m) = saved_model();
    edit_structure(dir.path(), |v| v["version"] = (u32::MAX as u64 + 2).into());
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::UnsupportedVersion { .. } | ModelError::MalformedStructure { .. }), "{err}");
    assert!(!err.to_string().contains("format version 1;"), "regression: misleading message: {err}");
}

#[test]
fn structure_malformed() {
    let (dir, _m) = saved_model();
    let path = dir.path().join(STRUCTURE_FILE);
    let good = std::fs::read_to_string(&path).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("truncated JSON", good[..good.len() / 2].to_string()),
        ("empty file", String::new()),
        ("not JSON", "hello".into()),
        ("no format tag", good.replacen("pcc-structure", "something-else", 1)),
        ("no version", {
            let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
            v.as_object_mut().unwrap().remove("version");
            v.to_string()
        }),
        ("string version", {
            let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
            v["version"] = "1".into();
            v.to_string()
        }),
        ("bad node type", good.replacen("\"type\":\"sum\"", "\"type\":\"division\"", 1)),
        ("no circuit", {
            let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
            v.as_object_mut().unwrap().remove("circuit");
            v.to_string()
        }),
    ];
    for (what, text) in cases {
        assert_ne!(text, good, "{what}: the edit must change the file");
        std::fs::write(&path, text).unwrap();
        let err = load_err(dir.path());
        assert!(matches!(err, ModelError::MalformedStructure { .. }), "{what}: {err:?}");
        assert_mentions(&err, &[STRUCTURE_FILE]);
    }
    // Invalid UTF-8.
    std::fs::write(&path, [0xffu8, 0xfe, 0x00]).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::MalformedStructure { .. } | ModelError::Io { .. }), "{err:?}");
}

#[test]
fn structure_with_invalid_circuit() {
    let (dir, _m) = saved_model();
    // More variables than the circuit models.
    edit_structure(dir.path(), |v| v["circuit"]["num_vars"] = 5.into());
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::InvalidCircuit { source: CircuitError::VarNotCovered { var: 3 }, .. }), "{err}");
    assert_mentions(&err, &[STRUCTURE_FILE, "variable 3"]);

    // A hand-built non-smooth circuit written with save_structure.
    let c =
        hand_built(2, vec![input(0, 1, 1, Dist::Bernoulli, None), input(1, 1, 1, Dist::Bernoulli, None), sum(&[0, 1], 1, 1, vec![[0, 0], [0, 1]], None)], 2);
    save_structure(&c, &dir.path().join(STRUCTURE_FILE)).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::InvalidCircuit { source: CircuitError::NonSmooth { node: NodeId(2), .. }, .. }), "{err}");
    assert_mentions(&err, &[STRUCTURE_FILE, "node 2"]);

    // Forward reference in the file.
    let c = hand_built(1, vec![sum(&[1], 1, 1, vec![[0, 0]], None), input(0, 1, 1, Dist::Bernoulli, None)], 0);
    save_structure(&c, &dir.path().join(STRUCTURE_FILE)).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::InvalidCircuit { source: CircuitError::BadChild { .. }, .. }), "{err}");
}

#[test]
fn missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
    assert_mentions(&err, &[STRUCTURE_FILE]);
    let m = mixed_model();
    m.save(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join(PARAMS_FILE)).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::Runtime(RuntimeError::Io { .. })), "{err}");
    assert_mentions(&err, &[PARAMS_FILE]);
}

/// A model like `mixed_model`, with `v0` vectors on var 0 and `dist1` on var 1.
fn variant(v0_blocks: u32, dist1: Dist) -> Model {
    let mut b = CircuitBuilder::new(3);
    let x0 = b.inputs(0, v0_blocks, 2, CAT3);
    let x1 = b.inputs(1, v0_blocks, 2, dist1);
    let x2 = b.inputs(2, v0_blocks, 2, GAUSS);
    let p = b.multiply(&[x0, x1, x2]);
    let s = b.summate(&[p], 1, 2, SumEdges::Dense);
    let r = b.summate(&[s], 1, 1, SumEdges::Dense);
    Model::random(b.finish(r).unwrap(), 3).unwrap()
}

#[test]
fn params_file_from_another_model() {
    let (dir, m) = saved_model();
    let path = dir.path().join(PARAMS_FILE);

    // Same tensor names, different shapes.
    let other = variant(3, Dist::Bernoulli);
    other.params.save(&other.plan, &path).unwrap();
    let err = load_err(dir.path());
    let p = params_error(&err).unwrap_or_else(|| panic!("{err:?}"));
    assert!(matches!(p, ParamsError::ShapeMismatch { .. }), "{err}");
    assert_mentions(&err, &["node", "shape"]);
    if let ParamsError::ShapeMismatch { name, expected, found } = p {
        let spec = m.plan.tensors.iter().find(|t| &t.name == name).expect("expected tensor names are the model's");
        assert_eq!(expected, &spec.shape);
        assert_ne!(found, expected);
    }

    // The other model has no tensor for node 1 (an indicator).
    let other = variant(2, Dist::Indicator { num_states: 2 });
    other.params.save(&other.plan, &path).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(params_error(&err), Some(ParamsError::MissingTensor { name }) if name == "node1.probs"), "{err}");
    assert_mentions(&err, &["node1.probs"]);

    // This model has no tensor for node 1, the file does.
    let dir2 = tempfile::tempdir().unwrap();
    let ind = variant(2, Dist::Indicator { num_states: 2 });
    ind.save(dir2.path()).unwrap();
    m.params.save(&m.plan, &dir2.path().join(PARAMS_FILE)).unwrap();
    let err = load_err(dir2.path());
    assert!(matches!(params_error(&err), Some(ParamsError::UnexpectedTensor { name }) if name == "node1.probs"), "{err}");
    assert_mentions(&err, &["node1.probs"]);

    // Params::load directly reports the same errors as RuntimeError::Params.
    let err = Params::load(&ind.plan, &dir2.path().join(PARAMS_FILE)).unwrap_err();
    assert!(matches!(err, RuntimeError::Params(ParamsError::UnexpectedTensor { .. })), "{err}");
}

#[test]
fn params_file_with_bad_values_is_rejected() {
    // A file whose checksum is right but whose values are invalid (written by a buggy tool).
    let (dir, m) = saved_model();
    let mut bad = m.params.clone();
    bad.input[0] = -1.0;
    bad.save(&m.plan, &dir.path().join(PARAMS_FILE)).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(params_error(&err), Some(ParamsError::Negative { name, index: 0, .. }) if name == "node0.probs"), "{err}");
    let mut bad = m.params.clone();
    let TensorLayout::Input { param_start, .. } = spec_of(&m.plan, 2).layout else { unreachable!() };
    bad.input[param_start as usize + 1] = 0.0;
    bad.save(&m.plan, &dir.path().join(PARAMS_FILE)).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(params_error(&err), Some(ParamsError::InvalidSigma { name, row: 0, .. }) if name == "node2.mean_std"), "{err}");
}

#[test]
fn not_a_pcc_params_file() {
    // A valid safetensors file without pcc's metadata.
    let (dir, m) = saved_model();
    let path = dir.path().join(PARAMS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(10).position(|w| w == b"pcc-params").expect("format tag in the header");
    bytes[at..at + 3].copy_from_slice(b"xyz");
    std::fs::write(&path, &bytes).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(params_error(&err), Some(ParamsError::Malformed { .. })), "{err}");
    assert_mentions(&err, &["not a pcc parameter file"]);
    // Restoring the tag makes the file load again.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at..at + 3].copy_from_slice(b"pcc");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(Model::load(dir.path()).unwrap().params, m.params);
    std::fs::write(&path, b"not a safetensors file at all, just text").unwrap();
    let err = load_err(dir.path());
    assert!(matches!(params_error(&err), Some(ParamsError::Malformed { .. } | ParamsError::Truncated { .. })), "{err}");
}

#[test]
fn plan_json_unknown_version() {
    let m = mixed_model();
    let mut v: serde_json::Value = serde_json::from_str(&m.plan.to_json()).unwrap();
    v["version"] = 99.into();
    let err = Plan::from_json(&v.to_string()).unwrap_err();
    assert!(matches!(err, RuntimeError::UnsupportedPlanVersion { found: 99, supported: 1 }), "{err}");
    assert_mentions(&err, &["99"]);

    let err = Plan::from_json("{").unwrap_err();
    assert!(matches!(err, RuntimeError::MalformedPlan(_)), "{err}");
    let err = Plan::from_json("{\"version\": 1}").unwrap_err();
    assert!(matches!(err, RuntimeError::MalformedPlan(_)), "{err}");
    v.as_object_mut().unwrap().remove("version");
    let err = Plan::from_json(&v.to_string()).unwrap_err();
    assert!(matches!(err, RuntimeError::MalformedPlan(_)), "{err}");
    assert_eq!(Plan::from_json(&m.plan.to_json()).unwrap(), m.plan);
}

#[test]
fn structure_module_is_public() {
    // save_structure / load_structure round-trip (used above to write invalid circuits).
    let dir = tempfile::tempdir().unwrap();
    let c = mixed_circuit();
    let path = dir.path().join("s.json");
    model::save_structure(&c, &path).unwrap();
    assert_eq!(model::load_structure(&path).unwrap(), c);
}

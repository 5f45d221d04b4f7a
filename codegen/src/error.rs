//! Typed errors of the compiler side. Circuit errors name the node (vector index in the IR) and
//! the rule it breaks.

use std::path::PathBuf;

use crate::ir::NodeId;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CircuitError {
    #[error("the circuit has no nodes")]
    Empty,
    #[error("the circuit needs {count} {what}, more than the limit of {limit} (fewer latents or categories?)")]
    TooLarge { what: &'static str, count: u64, limit: u64 },
    #[error("{node}: child {child} does not exist or does not come before its parent (nodes must be in topological order)")]
    BadChild { node: NodeId, child: NodeId },
    #[error("root {root} does not exist")]
    BadRoot { root: NodeId },
    #[error("structure option {option} = {value}: {reason}")]
    BadOption { option: &'static str, value: String, reason: String },
    #[error("{node}: a node vector needs at least one block")]
    EmptyNode { node: NodeId },
    #[error("{node}: block size {block_size} is not a power of two")]
    BadBlockSize { node: NodeId, block_size: u32 },
    #[error("{node}: a {kind} node needs at least one child")]
    NoChildren { node: NodeId, kind: &'static str },
    #[error("{node}: variable {var} is out of range (the circuit has {num_vars} variables)")]
    VarOutOfRange { node: NodeId, var: u32, num_vars: u32 },
    #[error("{node}: invalid distribution: {reason}")]
    InvalidDistribution { node: NodeId, reason: String },
    #[error("{node}: block size mismatch: child {child} has block size {found}, expected {expected}")]
    BlockSizeMismatch { node: NodeId, child: NodeId, expected: u32, found: u32 },
    #[error("{node}: product edges must be a [{rows} x {cols}] matrix (one row per block, one column per child); row {row} is wrong")]
    ProductEdgeShape { node: NodeId, rows: u32, cols: usize, row: usize },
    #[error("{node}: edge {edge} refers to block {block}, but {what} has only {num_blocks} blocks")]
    EdgeOutOfRange { node: NodeId, edge: usize, block: u32, what: String, num_blocks: u32 },
    #[error("{node}: product is not decomposable: children {first} and {second} both contain variable {var}")]
    NonDecomposable { node: NodeId, first: NodeId, second: NodeId, var: u32 },
    #[error("{node}: sum is not smooth: children {first} and {second} have different scopes (variable {var} is in only one)")]
    NonSmooth { node: NodeId, first: NodeId, second: NodeId, var: u32 },
    #[error("{node}: sum block {block} has no edges")]
    SumBlockWithoutEdges { node: NodeId, block: u32 },
    #[error("{node}: edge {edge} connects sum block {block} to child block {child_block} a second time")]
    DuplicateEdge { node: NodeId, edge: usize, block: u32, child_block: u32 },
    #[error("{node}: cannot tie parameters to {source_node}: {reason}")]
    BadTie { node: NodeId, source_node: NodeId, reason: String },
    #[error("variable {var} is modelled by {first} as {first_domain} and by {second} as {second_domain}")]
    DomainConflict { var: u32, first: NodeId, first_domain: String, second: NodeId, second_domain: String },
    #[error("root {root} has {num_nodes} nodes; the root must be a single node")]
    RootNotScalar { root: NodeId, num_nodes: u64 },
    #[error("variable {var} is not in the root's scope (every variable must be modelled)")]
    VarNotCovered { var: u32 },
    #[error("node {node} has parameters but no parameter tensor (it is tied or parameter-free)")]
    NoParams { node: NodeId },
}

/// Errors of structure files and model directories.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("structure file {path} is malformed: {detail}")]
    MalformedStructure { path: PathBuf, detail: String },
    #[error("structure file {path} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion { path: PathBuf, found: u64, supported: u32 },
    #[error("structure file {path}: {source}")]
    InvalidCircuit { path: PathBuf, source: CircuitError },
    #[error(transparent)]
    Circuit(#[from] CircuitError),
    #[error(transparent)]
    Runtime(#[from] pc_runtime::RuntimeError),
    #[error(transparent)]
    Params(#[from] pc_runtime::ParamsError),
}

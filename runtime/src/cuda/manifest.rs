//! The kernel manifest: what the emitter promises about the source it generated — every kernel's
//! name, launch shape and arguments in launch order, and the index tables they read. The runtime
//! needs nothing else to run a circuit, so a deployed binary never links the compiler.

use serde::{Deserialize, Serialize};

/// One argument of a generated kernel, in signature order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KernelArg {
    /// Node values `[num_nodes][B]` (f32, log space).
    Nodes,
    /// Element (product) values `[num_elements][B]`.
    Elements,
    /// Sum weights (f32, plan layout).
    SumParams,
    /// Leaf constants ([`crate::Params::leaf_table`]).
    LeafTable,
    /// Evidence values, transposed to `[num_vars][B]`.
    Data,
    /// Missing-value mask `[num_vars][B]` (u8).
    Missing,
    /// Index table `tables[i]` (u32).
    Table(u32),
    /// The batch size (i32).
    Batch,
    /// The launch's block count ([`KernelSpec::count`], i32).
    Count,
}

/// One kernel launch. The grid covers `threads_per_sample * B` threads in blocks of `block`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelSpec {
    /// Kernel function; partitions of one shape share it.
    pub name: String,
    /// The plan layer this launch runs (for messages and profiles), e.g. `sums d3 p0`.
    pub layer: String,
    /// Blocks (or leaves) this launch covers.
    pub count: u32,
    pub threads_per_sample: u64,
    pub block: u32,
    pub args: Vec<KernelArg>,
}

/// Kernels of one pass in launch order plus the tables they index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub forward: Vec<KernelSpec>,
    pub tables: Vec<Vec<u32>>,
}

//! The kernel manifest: what the emitter promises about the source it generated — every kernel's
//! name, launch shape and arguments in launch order, and the index tables they read. The runtime
//! needs nothing else to run a circuit, so a deployed binary never links the compiler.

use serde::{Deserialize, Serialize};

/// One argument of a generated kernel, in signature order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// Node flows `[num_nodes][B]` (f32, linear).
    NodeFlows,
    /// Element flows `[num_elements][B]`.
    ElementFlows,
    /// Sum-parameter flows (f32, plan layout), accumulated across calls.
    SumFlows,
    /// Input expected statistics (f32, statistics layout), accumulated across calls.
    InputStats,
    /// Leaf parameters (f32, plan layout).
    InputParams,
    /// EM step size η (f32).
    StepSize,
    /// EM pseudocount α (f32).
    Pseudocount,
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
    /// False for kernels that loop over the batch themselves (parameter flows): then the grid
    /// covers `threads_per_sample` threads whatever the batch size.
    #[serde(default = "yes")]
    pub scales_with_batch: bool,
    pub block: u32,
    pub args: Vec<KernelArg>,
}

fn yes() -> bool {
    true
}

impl KernelSpec {
    /// Threads to launch for a batch of `batch` samples.
    pub fn threads(&self, batch: usize) -> u64 {
        if self.scales_with_batch { self.threads_per_sample * batch as u64 } else { self.threads_per_sample }
    }
}

impl Manifest {
    /// Serialize deterministically (the same manifest always gives the same bytes).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("manifest serialization cannot fail")
    }

    /// Parse a manifest written by [`Manifest::to_json`] (e.g. embedded by the build-script API or
    /// the `circuit!` macro).
    pub fn from_json(text: &str) -> Result<Manifest, crate::RuntimeError> {
        serde_json::from_str(text).map_err(|e| crate::RuntimeError::MalformedManifest(e.to_string()))
    }
}

/// One step of a pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Launch(KernelSpec),
    /// Clear the element flows (the element buffer is reused by every depth).
    ZeroElementFlows,
}

/// Kernels of one pass in launch order plus the tables they index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub forward: Vec<KernelSpec>,
    /// Flows top-down (after a forward pass): per depth the products are recomputed, element flows
    /// cleared, sum and product flows propagated; then leaf statistics.
    pub backward: Vec<Step>,
    /// EM update of every untied parameter from the accumulated flows (then the leaf constants).
    #[serde(default)]
    pub em: Vec<KernelSpec>,
    pub tables: Vec<Vec<u32>>,
}

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
    /// A variant of this launch for batches of at most [`SMALL_BATCH`] samples (same arguments),
    /// e.g. a sum layer that spreads each node's children over a warp instead of looping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small: Option<Box<KernelSpec>>,
}

/// Largest batch that runs the [`KernelSpec::small`] variants.
pub const SMALL_BATCH: usize = 8;

fn yes() -> bool {
    true
}

impl KernelSpec {
    /// Threads to launch for a batch of `batch` samples.
    pub fn threads(&self, batch: usize) -> u64 {
        if self.scales_with_batch { self.threads_per_sample * batch as u64 } else { self.threads_per_sample }
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

/// Operand precision of the sum-layer forward kernels. `Fp32` is the scalar path everywhere;
/// `Tf32`/`Bf16` run sum partitions of block size >= 16 (a multiple of 16) on tensor cores with
/// operands rounded to that type and fp32 accumulation; other partitions stay scalar fp32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Tf32,
    Bf16,
}

impl Precision {
    /// The name used on the command line and in kernel names (`fp32`, `tf32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Precision, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision `{s}` (expected fp32, tf32 or bf16)")),
        }
    }
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
    /// Precision the source was emitted with (manifests written before this field read `fp32`).
    /// Which partitions actually run on tensor cores shows in the kernel names (`sum_fwd_bf16_*`).
    #[serde(default)]
    pub precision: Precision,
}

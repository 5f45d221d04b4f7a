//! The execution plan: the single, serializable input of every engine.
//!
//! A plan is pure data produced by `pc-codegen`'s compiler. It fixes the buffer layout (node values,
//! element values, parameters, flows), the order of layers, and the index tables each layer reads.
//! Both the CPU engine and the generated CUDA kernels interpret exactly this layout, so a result on
//! one can be checked against the other.
//!
//! Buffer conventions (PyJuice-compatible, see `DESIGN.md`):
//! - node rows `[0, num_dummy_nodes)` always hold log 1 = 0, so a padded product child is harmless;
//! - element rows `[0, num_dummy_elements)` always hold log 0 = -inf, so a padded sum child adds 0;
//! - sum parameters `[0, num_dummy_params)` are 0, so a padded sum edge has weight 0;
//! - the element buffer is reused by every depth (the backward pass recomputes products).

use serde::{Deserialize, Serialize};

/// Version of the serialized plan format; bumped on any layout change.
pub const PLAN_VERSION: u32 = 1;

pub use crate::dist::{Dist, DistKind};

/// Domain of one variable, used to validate data before it reaches a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Domain {
    Discrete { num_cats: u32 },
    Continuous,
}

/// A run of input nodes on one variable that share one distribution (one IR input vector).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSegment {
    /// IR node this segment comes from.
    pub ir_node: u32,
    pub var: u32,
    pub dist: Dist,
    /// First global node id.
    pub node_start: u32,
    pub num_nodes: u32,
    /// Node `i` reads parameters `[param_start + i*P, +P)` of the input parameter vector.
    pub param_start: u32,
    /// Node `i` accumulates statistics into `[flow_start + i*S, +S)` of the input flow vector.
    /// Tied segments point at their source's parameters and flows.
    pub flow_start: u32,
    /// True when the parameters belong to another (source) segment.
    pub tied: bool,
}

/// All input segments of one distribution family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputLayer {
    pub kind: DistKind,
    pub segments: Vec<InputSegment>,
}

/// One partition of a product layer: `n` element blocks, each the elementwise log-sum of `width`
/// child node blocks (padded with block 0, the dummy nodes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProdPartition {
    pub block_size: u32,
    pub width: u32,
    /// Element id of the first element of each block, `[n]`.
    pub nids: Vec<u32>,
    /// Node id of the first node of each child block, `[n * width]`, padded with 0.
    pub cids: Vec<u32>,
}

/// One partition of a sum layer: `n` sum blocks of `block_size` nodes, each fully connected to
/// `width` child elements (block-sparse edges expanded to child nodes, padded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SumPartition {
    pub block_size: u32,
    pub child_block_size: u32,
    pub width: u32,
    /// Node id of the first node of each sum block, `[n]`.
    pub nids: Vec<u32>,
    /// Element id of each child node, `[n * width]`, padded with 0 (the -inf dummy element).
    pub cids: Vec<u32>,
    /// Number of real (unpadded) children of each block, `[n]`; padding always comes last.
    pub counts: Vec<u32>,
    /// Parameter index of the weight (child `w`, node 0 of the block), `[n * width]`; node `m` of
    /// the block uses `pids + m`. Real children are contiguous: `pids[w] = pids[0] + w*block_size`.
    /// Padded with 0 (a zero weight).
    pub pids: Vec<u32>,
}

impl SumPartition {
    pub fn num_blocks(&self) -> usize {
        self.nids.len()
    }
}

impl ProdPartition {
    pub fn num_blocks(&self) -> usize {
        self.nids.len()
    }
}

/// Everything evaluated at one depth: products first (into the shared element buffer), then sums.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DepthPlan {
    pub prods: Vec<ProdPartition>,
    pub sums: Vec<SumPartition>,
}

/// EM metadata: one untied sum block whose node `m` owns weights `base + w*block_size + m`,
/// `w < width`. Tied blocks share their source's rows and are not listed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmBlock {
    pub base: u32,
    pub block_size: u32,
    pub width: u32,
}

/// How one named tensor of a parameter file maps onto the flat parameter vectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TensorLayout {
    /// Sum weights `[num_edges, block_size, child_block_size]` in IR edge order: element
    /// `[e][m][k]` lives at `sum_params[edge_bases[e] + k*block_size + m]`; edge `e` leaves sum
    /// block `sum_blocks[e]`. Each sum node's weights (over all its edges) sum to one.
    SumWeights { block_size: u32, child_block_size: u32, edge_bases: Vec<u32>, sum_blocks: Vec<u32> },
    /// Input parameters `[num_nodes, P]` at `input_params[param_start + n*P + p]`.
    Input { dist: Dist, param_start: u32, num_nodes: u32 },
}

/// A tensor of the parameter file: its name, the IR node that owns it, its shape and layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub ir_node: u32,
    pub shape: Vec<usize>,
    pub layout: TensorLayout,
}

/// Where an IR node's values live in the plan's buffers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IrLocation {
    Input {
        node_start: u32,
        num_nodes: u32,
    },
    Sum {
        node_start: u32,
        num_nodes: u32,
    },
    /// A product is evaluated at every depth that consumes it (a pass-through copy per depth);
    /// a product used only inside another product is inlined and has no instance.
    Product {
        num_nodes: u32,
        instances: Vec<ProductInstance>,
    },
    /// Not reachable from the root: not compiled.
    Unused,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductInstance {
    /// Index into `Plan::depths`.
    pub depth: u32,
    pub element_start: u32,
}

/// The compiled circuit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub num_vars: u32,
    /// Domain of every variable (checked on all data before evaluation).
    pub domains: Vec<Domain>,
    pub num_nodes: u32,
    pub num_dummy_nodes: u32,
    pub num_elements: u32,
    pub num_dummy_elements: u32,
    /// Node id of the (single) root.
    pub root: u32,
    pub inputs: Vec<InputLayer>,
    pub depths: Vec<DepthPlan>,
    pub num_sum_params: u32,
    pub num_dummy_params: u32,
    pub num_input_params: u32,
    pub num_input_flows: u32,
    /// Parameters fixed by the compiler (e.g. the weight 1 of a root wrapper sum).
    pub fixed_params: Vec<(u32, f32)>,
    pub em_blocks: Vec<EmBlock>,
    pub tensors: Vec<TensorSpec>,
    pub ir_nodes: Vec<IrLocation>,
}

impl Plan {
    /// Number of scalar sum edges (padding excluded), counting tied copies.
    pub fn num_sum_edges(&self) -> u64 {
        self.depths.iter().flat_map(|d| d.sums.iter()).map(|p| p.counts.iter().map(|&c| c as u64 * p.block_size as u64).sum::<u64>()).sum()
    }

    /// Number of learnable parameters (sum weights of untied sums plus input parameters).
    pub fn num_learnable_params(&self) -> u64 {
        let sums: u64 = self.em_blocks.iter().map(|b| b.width as u64 * b.block_size as u64).sum();
        sums + self.inputs.iter().flat_map(|l| l.segments.iter()).filter(|s| !s.tied).map(|s| s.num_nodes as u64 * s.dist.num_params() as u64).sum::<u64>()
    }

    /// Serialize deterministically (the same plan always gives the same bytes).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plan serialization cannot fail")
    }

    /// Parse a plan written by [`Plan::to_json`] and check its bounds ([`Plan::check`]).
    pub fn from_json(text: &str) -> Result<Plan, crate::RuntimeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly = serde_json::from_str(text).map_err(|e| crate::RuntimeError::MalformedPlan(e.to_string()))?;
        if v.version != PLAN_VERSION {
            return Err(crate::RuntimeError::UnsupportedPlanVersion { found: v.version, supported: PLAN_VERSION });
        }
        let plan: Plan = serde_json::from_str(text).map_err(|e| crate::RuntimeError::MalformedPlan(e.to_string()))?;
        plan.check()?;
        Ok(plan)
    }
}

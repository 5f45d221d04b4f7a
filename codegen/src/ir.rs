//! The circuit IR: vectors of nodes in blocks, as in PyJuice (`inputs` / `multiply` / `summate`).
//!
//! A circuit is a list of node vectors in topological order (children come before parents) and a
//! root. Every node of a vector shares one scope. A vector of `num_blocks * block_size` nodes is
//! addressed in blocks; block sizes are powers of two and only change how kernels tile the work.

use serde::{Deserialize, Serialize};

pub use pc_runtime::plan::Dist;

/// Index of a node vector in [`Circuit::nodes`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// One vector of nodes.
// Unknown fields are errors: a misspelt `tied_to` would otherwise silently untie a vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    /// `num_blocks * block_size` leaves on variable `var`.
    Input {
        var: u32,
        num_blocks: u32,
        block_size: u32,
        dist: Dist,
        /// Share parameters with this (earlier, untied) input vector of the same shape.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tied_to: Option<NodeId>,
    },
    /// Products: block `i` multiplies, elementwise inside the block, block `edges[i][j]` of child
    /// `j`. All children have this vector's block size.
    Product { children: Vec<NodeId>, num_blocks: u32, block_size: u32, edges: Vec<Vec<u32>> },
    /// Sums over the concatenation of the children's blocks (the "virtual child vector"): edge
    /// `[i, j]` connects sum block `i` densely to virtual child block `j` (a
    /// `block_size x child_block_size` tile of weights).
    Sum {
        children: Vec<NodeId>,
        num_blocks: u32,
        block_size: u32,
        edges: Vec<[u32; 2]>,
        /// Share weights with this (earlier, untied) sum vector with identical shape and edges.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tied_to: Option<NodeId>,
    },
}

impl Node {
    pub fn num_blocks(&self) -> u32 {
        match self {
            Node::Input { num_blocks, .. } | Node::Product { num_blocks, .. } | Node::Sum { num_blocks, .. } => *num_blocks,
        }
    }
    pub fn block_size(&self) -> u32 {
        match self {
            Node::Input { block_size, .. } | Node::Product { block_size, .. } | Node::Sum { block_size, .. } => *block_size,
        }
    }
    pub fn num_nodes(&self) -> u64 {
        self.num_blocks() as u64 * self.block_size() as u64
    }
    pub fn children(&self) -> &[NodeId] {
        match self {
            Node::Input { .. } => &[],
            Node::Product { children, .. } | Node::Sum { children, .. } => children,
        }
    }
    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Input { .. } => "input",
            Node::Product { .. } => "product",
            Node::Sum { .. } => "sum",
        }
    }
    pub fn tied_to(&self) -> Option<NodeId> {
        match self {
            Node::Input { tied_to, .. } | Node::Sum { tied_to, .. } => *tied_to,
            Node::Product { .. } => None,
        }
    }
}

/// A whole circuit over variables `0..num_vars`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Circuit {
    pub num_vars: u32,
    pub nodes: Vec<Node>,
    pub root: NodeId,
}

impl Circuit {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Number of scalar sum edges of the IR, tied copies included (the one-edge sum the compiler
    /// adds above a non-sum root is counted by `Plan::num_sum_edges` only).
    pub fn num_sum_edges(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match n {
                Node::Sum { children, edges, block_size, .. } => {
                    let cbs = children.first().map_or(0, |c| self.node(*c).block_size()) as u64;
                    edges.len() as u64 * *block_size as u64 * cbs
                }
                _ => 0,
            })
            .sum()
    }
}

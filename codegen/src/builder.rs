//! A PyJuice-shaped builder: `inputs`, `multiply`, `summate`, with parameter tying. Nothing is
//! checked until [`CircuitBuilder::finish`], which validates the whole circuit at once so that
//! every error names the offending node.

use crate::error::CircuitError;
use crate::ir::{Circuit, Dist, Node, NodeId};

/// How a sum vector connects to its (concatenated) children's blocks.
#[derive(Clone, Debug, PartialEq)]
pub enum SumEdges {
    /// Every sum block to every child block.
    Dense,
    /// Sum block `i` to child block `i` (requires as many sum blocks as child blocks).
    BlockDiagonal,
    /// Explicit `[sum block, virtual child block]` pairs.
    List(Vec<[u32; 2]>),
}

#[derive(Clone, Debug)]
pub struct CircuitBuilder {
    num_vars: u32,
    nodes: Vec<Node>,
}

impl CircuitBuilder {
    pub fn new(num_vars: u32) -> CircuitBuilder {
        CircuitBuilder { num_vars, nodes: Vec::new() }
    }

    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        NodeId(self.nodes.len() as u32 - 1)
    }

    /// The node vector `id` as built so far.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// `num_blocks * block_size` leaves on `var`.
    pub fn inputs(&mut self, var: u32, num_blocks: u32, block_size: u32, dist: Dist) -> NodeId {
        self.push(Node::Input { var, num_blocks, block_size, dist, tied_to: None })
    }

    /// Leaves on `var` sharing the parameters of the input vector `source`.
    pub fn tied_inputs(&mut self, source: NodeId, var: u32) -> NodeId {
        // A source of the wrong kind still lends its shape, so validation reports `BadTie`.
        let (num_blocks, block_size, dist) = match self.nodes.get(source.index()) {
            Some(Node::Input { num_blocks, block_size, dist, .. }) => (*num_blocks, *block_size, *dist),
            Some(other) => (other.num_blocks(), other.block_size(), Dist::Bernoulli),
            None => (1, 1, Dist::Bernoulli),
        };
        self.push(Node::Input { var, num_blocks, block_size, dist, tied_to: Some(source) })
    }

    /// Products of corresponding blocks: block `i` multiplies block `i` of every child.
    pub fn multiply(&mut self, children: &[NodeId]) -> NodeId {
        let nb = children.first().map_or(0, |c| self.nodes.get(c.index()).map_or(0, Node::num_blocks));
        let edges = (0..nb).map(|i| vec![i; children.len()]).collect();
        self.multiply_with_edges(children, edges)
    }

    /// Products with explicit edges `[num_blocks][num_children]`.
    pub fn multiply_with_edges(&mut self, children: &[NodeId], edges: Vec<Vec<u32>>) -> NodeId {
        let block_size = children.first().map_or(0, |c| self.nodes.get(c.index()).map_or(0, Node::block_size));
        self.push(Node::Product { children: children.to_vec(), num_blocks: edges.len() as u32, block_size, edges })
    }

    /// A sum vector of `num_blocks * block_size` nodes over the concatenated children.
    pub fn summate(&mut self, children: &[NodeId], num_blocks: u32, block_size: u32, edges: SumEdges) -> NodeId {
        let child_blocks: u32 = children.iter().map(|c| self.nodes.get(c.index()).map_or(0, Node::num_blocks)).sum();
        let edges = match edges {
            SumEdges::Dense => (0..num_blocks).flat_map(|i| (0..child_blocks).map(move |j| [i, j])).collect(),
            SumEdges::BlockDiagonal => (0..num_blocks).map(|i| [i, i]).collect(),
            SumEdges::List(e) => e,
        };
        self.push(Node::Sum { children: children.to_vec(), num_blocks, block_size, edges, tied_to: None })
    }

    /// A sum vector over new children sharing the weights (and edges) of the sum vector `source`.
    pub fn tied_summate(&mut self, source: NodeId, children: &[NodeId]) -> NodeId {
        let (num_blocks, block_size, edges) = match self.nodes.get(source.index()) {
            Some(Node::Sum { num_blocks, block_size, edges, .. }) => (*num_blocks, *block_size, edges.clone()),
            Some(other) => (other.num_blocks(), other.block_size(), Vec::new()),
            None => (1, 1, Vec::new()),
        };
        self.push(Node::Sum { children: children.to_vec(), num_blocks, block_size, edges, tied_to: Some(source) })
    }

    /// Validate and return the circuit rooted at `root`.
    pub fn finish(self, root: NodeId) -> Result<Circuit, CircuitError> {
        let c = Circuit { num_vars: self.num_vars, nodes: self.nodes, root };
        crate::validate::validate(&c)?;
        Ok(c)
    }
}

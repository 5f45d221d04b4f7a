//! A PyJuice-shaped builder: `inputs`, `multiply`, `summate`, with parameter tying. Nothing is
//! checked until [`CircuitBuilder::finish`], which validates the whole circuit at once so that
//! every error names the offending node. The one exception is size: the builder keeps running
//! totals of what validation limits and refuses to materialize the edges of a call that would
//! pass a limit (a dense sum over 2^21 blocks is 2^42 edges), so that `finish` reports
//! [`CircuitError::TooLarge`] instead of the process aborting on an allocation first.

use crate::error::CircuitError;
use crate::ir::{Circuit, Dist, Node, NodeId};
use crate::validate::{MAX_BUFFER_ENTRIES, MAX_NODE_VECTORS};

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

/// What the circuit built so far needs, in the units validation limits.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    vectors: u64,
    nodes: u64,
    elements: u64,
    weights: u64,
    leaf_params: u64,
    leaf_stats: u64,
}

#[derive(Clone, Debug)]
pub struct CircuitBuilder {
    num_vars: u32,
    nodes: Vec<Node>,
    totals: Totals,
    /// The first limit a call would have passed; that call and every later one were recorded
    /// without edges, and [`CircuitBuilder::finish`] returns this error.
    too_large: Option<CircuitError>,
}

impl CircuitBuilder {
    pub fn new(num_vars: u32) -> CircuitBuilder {
        CircuitBuilder { num_vars, nodes: Vec::new(), totals: Totals::default(), too_large: None }
    }

    /// Whether a call has asked for more than a circuit may hold: [`CircuitBuilder::finish`] will
    /// fail, so a generator may stop building.
    pub fn is_too_large(&self) -> bool {
        self.too_large.is_some()
    }

    fn push(&mut self, n: Node) -> NodeId {
        self.nodes.push(n);
        NodeId(self.nodes.len() as u32 - 1)
    }

    /// Add a node vector's sizes to the totals; false (and the error recorded) when one of them
    /// would pass its limit, then the caller must not materialize the vector's edges.
    fn admit(&mut self, add: Totals) -> bool {
        if self.too_large.is_some() {
            return false;
        }
        let t = self.totals;
        let next = Totals {
            vectors: t.vectors + 1,
            nodes: t.nodes.saturating_add(add.nodes),
            elements: t.elements.saturating_add(add.elements),
            weights: t.weights.saturating_add(add.weights),
            leaf_params: t.leaf_params.saturating_add(add.leaf_params),
            leaf_stats: t.leaf_stats.saturating_add(add.leaf_stats),
        };
        let checks = [
            ("node vectors", next.vectors, MAX_NODE_VECTORS),
            ("nodes", next.nodes, MAX_BUFFER_ENTRIES),
            ("product elements", next.elements, MAX_BUFFER_ENTRIES),
            ("sum weights", next.weights, MAX_BUFFER_ENTRIES),
            ("leaf parameters", next.leaf_params, MAX_BUFFER_ENTRIES),
            ("leaf statistics", next.leaf_stats, MAX_BUFFER_ENTRIES),
        ];
        if let Some(&(what, count, limit)) = checks.iter().find(|(_, count, limit)| count > limit) {
            self.too_large = Some(CircuitError::TooLarge { what, count, limit });
            return false;
        }
        self.totals = next;
        true
    }

    /// Scalar nodes of `num_blocks` blocks of `block_size`.
    fn count(num_blocks: u32, block_size: u32) -> u64 {
        num_blocks as u64 * block_size as u64
    }

    fn block_size_of(&self, id: Option<&NodeId>) -> u32 {
        id.map_or(0, |c| self.nodes.get(c.index()).map_or(0, Node::block_size))
    }

    /// The node vector `id` as built so far.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// `num_blocks * block_size` leaves on `var`.
    pub fn inputs(&mut self, var: u32, num_blocks: u32, block_size: u32, dist: Dist) -> NodeId {
        let n = Self::count(num_blocks, block_size);
        let (p, s) = (dist.num_params() as u64, dist.num_stats() as u64);
        self.admit(Totals { nodes: n, leaf_params: n.saturating_mul(p), leaf_stats: n.saturating_mul(s), ..Totals::default() });
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
        let n = Self::count(num_blocks, block_size);
        self.admit(Totals { nodes: n, leaf_stats: n.saturating_mul(dist.num_stats() as u64), ..Totals::default() });
        self.push(Node::Input { var, num_blocks, block_size, dist, tied_to: Some(source) })
    }

    /// Products of corresponding blocks: block `i` multiplies block `i` of every child.
    pub fn multiply(&mut self, children: &[NodeId]) -> NodeId {
        let nb = children.first().map_or(0, |c| self.nodes.get(c.index()).map_or(0, Node::num_blocks));
        let block_size = self.block_size_of(children.first());
        let n = Self::count(nb, block_size);
        if !self.admit(Totals { nodes: n, elements: n, ..Totals::default() }) {
            return self.push(Node::Product { children: children.to_vec(), num_blocks: nb, block_size, edges: Vec::new() });
        }
        let edges = (0..nb).map(|i| vec![i; children.len()]).collect();
        self.push(Node::Product { children: children.to_vec(), num_blocks: nb, block_size, edges })
    }

    /// Products with explicit edges `[num_blocks][num_children]`.
    pub fn multiply_with_edges(&mut self, children: &[NodeId], edges: Vec<Vec<u32>>) -> NodeId {
        let block_size = self.block_size_of(children.first());
        let num_blocks = u32::try_from(edges.len()).unwrap_or(u32::MAX);
        let n = Self::count(num_blocks, block_size);
        self.admit(Totals { nodes: n, elements: n, ..Totals::default() });
        self.push(Node::Product { children: children.to_vec(), num_blocks, block_size, edges })
    }

    /// A sum vector of `num_blocks * block_size` nodes over the concatenated children.
    pub fn summate(&mut self, children: &[NodeId], num_blocks: u32, block_size: u32, edges: SumEdges) -> NodeId {
        let child_blocks: u64 = children.iter().map(|c| self.nodes.get(c.index()).map_or(0, Node::num_blocks) as u64).sum();
        let num_edges = match &edges {
            SumEdges::Dense => (num_blocks as u64).saturating_mul(child_blocks),
            SumEdges::BlockDiagonal => num_blocks as u64,
            SumEdges::List(e) => e.len() as u64,
        };
        // Block sizes of 0 (invalid, reported by validation) count as 1 here, so the admitted
        // weights bound the edges to materialize.
        let weights = num_edges.saturating_mul(Self::count(block_size.max(1), self.block_size_of(children.first()).max(1)));
        if !self.admit(Totals { nodes: Self::count(num_blocks, block_size), weights, ..Totals::default() }) {
            let edges = Vec::new();
            return self.push(Node::Sum { children: children.to_vec(), num_blocks, block_size, edges, tied_to: None });
        }
        // Admitted: the edges (at most the weights) fit the limit, so dense child blocks fit in u32.
        let child_blocks = child_blocks as u32;
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
        self.admit(Totals { nodes: Self::count(num_blocks, block_size), ..Totals::default() });
        self.push(Node::Sum { children: children.to_vec(), num_blocks, block_size, edges, tied_to: Some(source) })
    }

    /// Validate and return the circuit rooted at `root`.
    pub fn finish(self, root: NodeId) -> Result<Circuit, CircuitError> {
        if let Some(e) = self.too_large {
            return Err(e);
        }
        let c = Circuit { num_vars: self.num_vars, nodes: self.nodes, root };
        crate::validate::validate(&c)?;
        Ok(c)
    }
}

//! Structural validation: topological order, shapes, block sizes, decomposability, smoothness,
//! tying and variable domains. The first broken rule is reported with the node that breaks it.

use crate::error::CircuitError;
use crate::ir::{Circuit, Dist, Node, NodeId};
use pc_runtime::plan::Domain;

/// A set of variables as a bit vector.
#[derive(Clone, PartialEq, Eq)]
struct Scope(Vec<u64>);

impl Scope {
    fn new(num_vars: u32) -> Scope {
        Scope(vec![0; (num_vars as usize).div_ceil(64)])
    }
    fn insert(&mut self, v: u32) {
        self.0[v as usize / 64] |= 1 << (v % 64);
    }
    fn first_common(&self, o: &Scope) -> Option<u32> {
        first_bit(self.0.iter().zip(&o.0).map(|(a, b)| a & b))
    }
    fn first_difference(&self, o: &Scope) -> Option<u32> {
        first_bit(self.0.iter().zip(&o.0).map(|(a, b)| a ^ b))
    }
    fn union_with(&mut self, o: &Scope) {
        self.0.iter_mut().zip(&o.0).for_each(|(a, b)| *a |= b);
    }
    fn first_missing(&self, num_vars: u32) -> Option<u32> {
        (0..num_vars).find(|&v| self.0[v as usize / 64] & (1 << (v % 64)) == 0)
    }
}

fn first_bit(words: impl Iterator<Item = u64>) -> Option<u32> {
    for (i, w) in words.enumerate() {
        if w != 0 {
            return Some(i as u32 * 64 + w.trailing_zeros());
        }
    }
    None
}

fn domain_name(d: Domain) -> String {
    match d {
        Domain::Discrete { num_cats } => format!("discrete with {num_cats} categories"),
        Domain::Continuous => "continuous".into(),
    }
}

/// Check every structural rule. On success the circuit can be compiled.
pub fn validate(c: &Circuit) -> Result<(), CircuitError> {
    if c.nodes.is_empty() {
        return Err(CircuitError::Empty);
    }
    check_allocations(c)?;
    check_sizes(c)?;
    let mut scopes: Vec<Scope> = Vec::with_capacity(c.nodes.len());
    let mut domains: Vec<Option<(Domain, NodeId)>> = vec![None; c.num_vars as usize];
    for (i, node) in c.nodes.iter().enumerate() {
        let id = NodeId(i as u32);
        for &ch in node.children() {
            if ch.index() >= i {
                return Err(CircuitError::BadChild { node: id, child: ch });
            }
        }
        if node.num_blocks() == 0 {
            return Err(CircuitError::EmptyNode { node: id });
        }
        let bs = node.block_size();
        if !bs.is_power_of_two() {
            return Err(CircuitError::BadBlockSize { node: id, block_size: bs });
        }
        let mut scope = Scope::new(c.num_vars);
        match node {
            Node::Input { var, dist, tied_to, .. } => {
                if *var >= c.num_vars {
                    return Err(CircuitError::VarOutOfRange { node: id, var: *var, num_vars: c.num_vars });
                }
                if let Some(src) = tied_to {
                    check_tie(c, id, *src, i)?;
                }
                check_dist(id, dist)?;
                let dom = dist.domain();
                match domains[*var as usize] {
                    Some((d, first)) if d != dom => {
                        return Err(CircuitError::DomainConflict {
                            var: *var,
                            first,
                            first_domain: domain_name(d),
                            second: id,
                            second_domain: domain_name(dom),
                        });
                    }
                    Some(_) => {}
                    None => domains[*var as usize] = Some((dom, id)),
                }
                scope.insert(*var);
            }
            Node::Product { children, num_blocks, edges, .. } => {
                if children.is_empty() {
                    return Err(CircuitError::NoChildren { node: id, kind: "product" });
                }
                check_child_block_sizes(c, id, children, bs)?;
                if edges.len() != *num_blocks as usize {
                    return Err(CircuitError::ProductEdgeShape {
                        node: id,
                        rows: *num_blocks,
                        cols: children.len(),
                        row: edges.len().min(*num_blocks as usize),
                    });
                }
                for (r, row) in edges.iter().enumerate() {
                    if row.len() != children.len() {
                        return Err(CircuitError::ProductEdgeShape { node: id, rows: *num_blocks, cols: children.len(), row: r });
                    }
                    for (j, &blk) in row.iter().enumerate() {
                        let nb = c.node(children[j]).num_blocks();
                        if blk >= nb {
                            return Err(CircuitError::EdgeOutOfRange { node: id, edge: r, block: blk, what: format!("child {}", children[j]), num_blocks: nb });
                        }
                    }
                }
                for (j, &a) in children.iter().enumerate() {
                    let sa = &scopes[a.index()];
                    if let Some(var) = scope.first_common(sa) {
                        let first = *children[..j].iter().find(|b| scopes[b.index()].first_common(sa).is_some()).expect("some earlier child overlaps");
                        return Err(CircuitError::NonDecomposable { node: id, first, second: a, var });
                    }
                    scope.union_with(sa);
                }
            }
            Node::Sum { children, num_blocks, edges, tied_to, .. } => {
                if children.is_empty() {
                    return Err(CircuitError::NoChildren { node: id, kind: "sum" });
                }
                if let Some(src) = tied_to {
                    check_tie(c, id, *src, i)?;
                }
                let cbs = c.node(children[0]).block_size();
                check_child_block_sizes(c, id, children, cbs)?;
                let first = &scopes[children[0].index()];
                for &ch in &children[1..] {
                    if let Some(var) = first.first_difference(&scopes[ch.index()]) {
                        return Err(CircuitError::NonSmooth { node: id, first: children[0], second: ch, var });
                    }
                }
                scope = first.clone();
                let child_blocks = children.iter().fold(0u32, |n, ch| n.saturating_add(c.node(*ch).num_blocks()));
                let mut seen = std::collections::BTreeSet::new();
                let mut has_edge = vec![false; *num_blocks as usize];
                for (e, &[blk, cb]) in edges.iter().enumerate() {
                    if blk >= *num_blocks {
                        return Err(CircuitError::EdgeOutOfRange { node: id, edge: e, block: blk, what: "the sum".into(), num_blocks: *num_blocks });
                    }
                    if cb >= child_blocks {
                        return Err(CircuitError::EdgeOutOfRange {
                            node: id,
                            edge: e,
                            block: cb,
                            what: "the children together".into(),
                            num_blocks: child_blocks,
                        });
                    }
                    if !seen.insert((blk, cb)) {
                        return Err(CircuitError::DuplicateEdge { node: id, edge: e, block: blk, child_block: cb });
                    }
                    has_edge[blk as usize] = true;
                }
                if let Some(block) = has_edge.iter().position(|h| !h) {
                    return Err(CircuitError::SumBlockWithoutEdges { node: id, block: block as u32 });
                }
            }
        }
        scopes.push(scope);
    }
    let root = c.root;
    let root_node = c.nodes.get(root.index()).ok_or(CircuitError::BadRoot { root })?;
    if root_node.num_nodes() != 1 {
        return Err(CircuitError::RootNotScalar { root, num_nodes: root_node.num_nodes() });
    }
    if let Some(var) = scopes[root.index()].first_missing(c.num_vars) {
        return Err(CircuitError::VarNotCovered { var });
    }
    Ok(())
}

/// Most entries of one plan buffer (nodes, elements, weights, leaf parameters or statistics):
/// plans index them with 32-bit integers, and a structure file or flag that asks for more (a
/// CSV value of 16777215 makes a categorical of 16,777,216 categories) must be an error naming
/// the size, not an overflow further on.
pub const MAX_BUFFER_ENTRIES: u64 = 1 << 31;

/// Most node vectors of a circuit: each costs a few hundred bytes in the compiler, so a structure
/// file or a generator asking for more is refused before the work starts (the largest structures
/// pcc builds, a PD over 28x28 pixels cut at every pixel, have about 5 million).
pub const MAX_NODE_VECTORS: u64 = 1 << 24;

/// Most bytes of variable sets (one bit per variable per node vector) validation may allocate.
pub const MAX_SCOPE_BYTES: u64 = 1 << 32;

/// What validation itself allocates, checked before it does (and [`check_sizes`] before the
/// per-block tables): the variable sets are
/// `node vectors × num_vars` bits. Every variable needs an input vector, so a `num_vars` beyond
/// the input vectors (2^31 in a small file) is reported as the first uncovered variable, without
/// a table of 2^31 entries.
fn check_allocations(c: &Circuit) -> Result<(), CircuitError> {
    let vectors = c.nodes.len() as u64;
    if vectors > MAX_NODE_VECTORS {
        return Err(CircuitError::TooLarge { what: "node vectors", count: vectors, limit: MAX_NODE_VECTORS });
    }
    let mut vars: Vec<u32> = c.nodes.iter().filter_map(|n| if let Node::Input { var, .. } = n { Some(*var) } else { None }).collect();
    if vars.len() < c.num_vars as usize {
        vars.sort_unstable();
        vars.dedup();
        let var = vars.iter().zip(0u32..).find(|(v, i)| *v != i).map_or(vars.len() as u32, |(_, i)| i);
        return Err(CircuitError::VarNotCovered { var });
    }
    let bytes = vectors * (c.num_vars as u64).div_ceil(64) * 8;
    if bytes > MAX_SCOPE_BYTES {
        return Err(CircuitError::TooLarge { what: "bytes of variable sets to validate (node vectors x variables / 8)", count: bytes, limit: MAX_SCOPE_BYTES });
    }
    Ok(())
}

fn check_sizes(c: &Circuit) -> Result<(), CircuitError> {
    let (mut nodes, mut elements, mut weights, mut leaf_params, mut leaf_stats) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for node in &c.nodes {
        // Saturating: 2^32 nodes of 2^32 categories would wrap a u64.
        let n = node.num_nodes();
        nodes = nodes.saturating_add(n);
        match node {
            Node::Input { dist, tied_to, .. } => {
                leaf_stats = leaf_stats.saturating_add(n.saturating_mul(dist.num_stats() as u64));
                if tied_to.is_none() {
                    leaf_params = leaf_params.saturating_add(n.saturating_mul(dist.num_params() as u64));
                }
            }
            Node::Product { .. } => elements = elements.saturating_add(n),
            Node::Sum { children, edges, block_size, tied_to, .. } => {
                if tied_to.is_none() {
                    // Runs before the children are checked: a bad index counts as block size 0.
                    let cbs = children.first().and_then(|ch| c.nodes.get(ch.index())).map_or(0, Node::block_size);
                    let tile = *block_size as u64 * cbs as u64;
                    weights = weights.saturating_add((edges.len() as u64).saturating_mul(tile));
                }
            }
        }
    }
    for (what, count) in
        [("nodes", nodes), ("product elements", elements), ("sum weights", weights), ("leaf parameters", leaf_params), ("leaf statistics", leaf_stats)]
    {
        if count > MAX_BUFFER_ENTRIES {
            return Err(CircuitError::TooLarge { what, count, limit: MAX_BUFFER_ENTRIES });
        }
    }
    Ok(())
}

fn check_dist(node: NodeId, dist: &Dist) -> Result<(), CircuitError> {
    dist.check().map_err(|reason| CircuitError::InvalidDistribution { node, reason })
}

fn check_child_block_sizes(c: &Circuit, node: NodeId, children: &[NodeId], expected: u32) -> Result<(), CircuitError> {
    for &ch in children {
        let found = c.node(ch).block_size();
        if found != expected {
            return Err(CircuitError::BlockSizeMismatch { node, child: ch, expected, found });
        }
    }
    Ok(())
}

fn check_tie(c: &Circuit, node: NodeId, src: NodeId, i: usize) -> Result<(), CircuitError> {
    let bad = |reason: &str| Err(CircuitError::BadTie { node, source_node: src, reason: reason.into() });
    if src.index() >= i {
        return bad("the source must come before the tied node");
    }
    let (a, b) = (c.node(node), c.node(src));
    if b.tied_to().is_some() {
        return bad("the source is itself tied; tie to its source instead");
    }
    match (a, b) {
        (Node::Input { dist: da, .. }, Node::Input { dist: db, .. }) => {
            if da != db {
                return bad("the distributions differ");
            }
        }
        (Node::Sum { children: ca, edges: ea, .. }, Node::Sum { children: cb, edges: eb, .. }) => {
            if ea != eb {
                return bad("the edges differ");
            }
            let blocks = |ch: &[NodeId]| ch.iter().fold(0u32, |n, x| n.saturating_add(c.node(*x).num_blocks()));
            let cbs = |ch: &[NodeId]| c.node(ch[0]).block_size();
            if blocks(ca) != blocks(cb) || cbs(ca) != cbs(cb) {
                return bad("the children's blocks differ");
            }
        }
        _ => return bad("only input-to-input and sum-to-sum tying is possible"),
    }
    if a.num_blocks() != b.num_blocks() || a.block_size() != b.block_size() {
        return bad("the shapes (blocks x block size) differ");
    }
    Ok(())
}

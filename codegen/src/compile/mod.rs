//! The compiler: circuit IR → execution [`Plan`].
//!
//! 1. Products are flattened: a product child of a product is inlined (edges composed), so every
//!    product reads only input and sum nodes. A sum child that is not a product (an input or a sum)
//!    is wrapped in a one-child product.
//! 2. Depths: inputs are at depth 0; a product is ready one level above its deepest child; a sum
//!    sits at the depth of its latest-ready product child. Each product is evaluated at the depth
//!    of every sum that consumes it (a pass-through copy per depth). Products carry no parameters,
//!    so a copy costs one cheap elementwise pass and no identity-sum matrix product.
//! 3. Layout: dummy rows first, inputs grouped by distribution family, then sums by depth; the
//!    element buffer is shared by all depths; parameters are laid out per sum block, child-major
//!    with the node index fastest.
//! 4. Tables: per depth, product and sum layers are split by block size and partitioned by fan-in
//!    with a bound on padding ([`partition::partition_widths`]).
//!
//! The same circuit and options always give the same plan, byte for byte.

pub mod partition;

use std::collections::BTreeMap;

use pc_runtime::plan::{
    DepthPlan, DistKind, Domain, EmBlock, InputLayer, InputSegment, IrLocation, PLAN_VERSION, Plan, ProdPartition, ProductInstance, SumPartition, TensorLayout,
    TensorSpec,
};

use crate::error::CircuitError;
use crate::ir::{Circuit, Node, NodeId};
use crate::validate::validate;
use partition::{partition_of, partition_widths};

/// Knobs of the compiler.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileOptions {
    /// Allowed padding per layer: padded work ≤ (1 + tol) · real work (PyJuice's default 0.5).
    pub sparsity_tolerance: f64,
    /// Optional cap on partitions per layer (the bound may then be exceeded).
    pub max_partitions: Option<usize>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { sparsity_tolerance: 0.5, max_partitions: None }
    }
}

/// A product as the plan sees it: an IR product (flattened) or a one-child wrapper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ProdKey {
    Ir(u32),
    Wrap(u32),
}

#[derive(Clone, Debug)]
struct FlatProd {
    children: Vec<NodeId>,
    /// `[num_blocks][children]` child block per product block.
    edges: Vec<Vec<u32>>,
    block_size: u32,
}

/// A sum vector to compile (an IR sum, or the wrapper that makes a non-sum root a sum).
struct SumUnit {
    ir: Option<NodeId>,
    children: Vec<ProdKey>,
    child_blocks: Vec<u32>,
    num_blocks: u32,
    block_size: u32,
    child_block_size: u32,
    edges: Vec<[u32; 2]>,
    tied_to: Option<NodeId>,
    depth: u32,
}

/// Compile a circuit with default options.
pub fn compile(c: &Circuit) -> Result<Plan, CircuitError> {
    compile_with(c, &CompileOptions::default())
}

/// Compile a circuit.
pub fn compile_with(c: &Circuit, opts: &CompileOptions) -> Result<Plan, CircuitError> {
    validate(c)?;
    let n = c.nodes.len();
    let reach = reachable(c);

    // 1. Flattened products.
    let flat = flatten(c);
    let key_of = |ch: NodeId| if matches!(c.node(ch), Node::Product { .. }) { ProdKey::Ir(ch.0) } else { ProdKey::Wrap(ch.0) };
    let prod = |key: ProdKey| -> FlatProd {
        match key {
            ProdKey::Ir(p) => flat[p as usize].clone().expect("product"),
            ProdKey::Wrap(x) => {
                let node = &c.nodes[x as usize];
                FlatProd { children: vec![NodeId(x)], edges: (0..node.num_blocks()).map(|b| vec![b]).collect(), block_size: node.block_size() }
            }
        }
    };

    // 2. Depths and sum units.
    let mut depth = vec![0u32; n];
    let ready = |key: ProdKey, depth: &[u32]| 1 + prod(key).children.iter().map(|ch| depth[ch.index()]).max().unwrap_or(0);
    let mut units: Vec<SumUnit> = Vec::new();
    let mut unit_of: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, node) in c.nodes.iter().enumerate() {
        if !reach[i] {
            continue;
        }
        if let Node::Sum { children, num_blocks, block_size, edges, tied_to } = node {
            let keys: Vec<ProdKey> = children.iter().map(|&ch| key_of(ch)).collect();
            let d = keys.iter().map(|&k| ready(k, &depth)).max().expect("sum has children");
            depth[i] = d;
            unit_of.insert(i as u32, units.len());
            units.push(SumUnit {
                ir: Some(NodeId(i as u32)),
                child_blocks: children.iter().map(|ch| c.node(*ch).num_blocks()).collect(),
                children: keys,
                num_blocks: *num_blocks,
                block_size: *block_size,
                child_block_size: c.node(children[0]).block_size(),
                edges: edges.clone(),
                tied_to: *tied_to,
                depth: d,
            });
        }
    }
    let root_unit = match c.node(c.root) {
        Node::Sum { .. } => unit_of[&c.root.0],
        other => {
            let key = key_of(c.root);
            units.push(SumUnit {
                ir: None,
                children: vec![key],
                child_blocks: vec![1],
                num_blocks: 1,
                block_size: 1,
                child_block_size: other.block_size(),
                edges: vec![[0, 0]],
                tied_to: None,
                depth: ready(key, &depth),
            });
            units.len() - 1
        }
    };
    let max_depth = units.iter().map(|u| u.depth).max().unwrap_or(0);

    // 3a. Node layout: dummies, inputs by family, sums by depth.
    let max_prod_bs = units.iter().flat_map(|u| u.children.iter()).map(|&k| prod(k).block_size).max().unwrap_or(1);
    let num_dummy_nodes = max_prod_bs.max(1);
    let mut node_start = vec![u32::MAX; n];
    let mut cursor = num_dummy_nodes;
    for kind in KINDS {
        for (i, node) in c.nodes.iter().enumerate() {
            if let Node::Input { dist, .. } = node
                && reach[i]
                && dist.kind() == kind
            {
                node_start[i] = cursor;
                cursor += node.num_nodes() as u32;
            }
        }
    }
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&u| units[u].depth);
    // The units of each depth, in `order`: the passes below visit each depth once, so a deep
    // circuit (a chain of a million sums) costs linear, not depth × units, time.
    let mut at_depth: Vec<Vec<usize>> = vec![Vec::new(); max_depth as usize + 1];
    for &u in &order {
        at_depth[units[u].depth as usize].push(u);
    }
    let mut unit_start = vec![0u32; units.len()];
    for &u in &order {
        unit_start[u] = cursor;
        if let Some(ir) = units[u].ir {
            node_start[ir.index()] = cursor;
        }
        cursor += units[u].num_blocks * units[u].block_size;
    }
    let num_nodes = cursor;

    // 3b. Sum parameters: per block, edges in IR order, child-major with the node fastest.
    let (block_edges, bases, num_dummy_params, num_sum_params) = sum_param_bases(&units, &unit_of);

    // 3c. Input parameters and flows (tied segments share their source's).
    let (inputs, in_slots, ip, fl) = input_layers(c, &reach, &node_start);

    // 3d. Elements: per depth, product instances in order of first use; dummy element 0.
    let num_dummy_elements = 1u32;
    let (instances, inst_order, prod_instances, num_elements) = element_instances(&units, &at_depth, &prod, num_dummy_elements);

    // 4. Tables.
    let refs = Refs { c, reach: &reach, node_start: &node_start, units: &units, unit_of: &unit_of, block_edges: &block_edges, bases: &bases };
    let elements = Elements { instances: &instances, order: &inst_order };
    let depths: Vec<DepthPlan> = (1..=max_depth as usize)
        .map(|d| DepthPlan {
            prods: product_partitions(&refs, &prod, &elements, d, opts),
            sums: sum_partitions(&refs, &elements, &at_depth[d], &unit_start, d, opts),
        })
        .collect();

    // EM metadata, fixed parameters, tensors, IR locations, domains.
    let (em_blocks, fixed_params) = em_metadata(&units, &block_edges, &bases);
    let (tensors, ir_nodes, domains) = tensors_and_locations(&refs, &in_slots, prod_instances);

    Ok(Plan {
        version: PLAN_VERSION,
        num_vars: c.num_vars,
        domains,
        num_nodes,
        num_dummy_nodes,
        num_elements,
        num_dummy_elements,
        root: unit_start[root_unit],
        inputs,
        depths,
        num_sum_params,
        num_dummy_params,
        num_input_params: ip,
        num_input_flows: fl,
        fixed_params,
        em_blocks,
        tensors,
        ir_nodes,
    })
}

/// Per unit and block, its edges (indices into the unit's edge list).
type BlockEdges = Vec<Vec<Vec<usize>>>;

/// Step 3b: per unit and block its edges and first weight (tied units share their source's),
/// the dummy weights ahead of all, and the total.
fn sum_param_bases(units: &[SumUnit], unit_of: &BTreeMap<u32, usize>) -> (BlockEdges, Vec<Vec<u32>>, u32, u32) {
    let num_dummy_params = units.iter().map(|u| u.block_size).max().unwrap_or(1);
    let mut pcursor = num_dummy_params;
    let mut block_edges: Vec<Vec<Vec<usize>>> = Vec::with_capacity(units.len());
    for u in units {
        let mut be = vec![Vec::new(); u.num_blocks as usize];
        for (e, &[b, _]) in u.edges.iter().enumerate() {
            be[b as usize].push(e);
        }
        block_edges.push(be);
    }
    let mut bases: Vec<Vec<u32>> = vec![Vec::new(); units.len()];
    for (ui, u) in units.iter().enumerate() {
        if u.tied_to.is_some() {
            continue;
        }
        for be in &block_edges[ui] {
            bases[ui].push(pcursor);
            pcursor += be.len() as u32 * u.child_block_size * u.block_size;
        }
    }
    for (ui, u) in units.iter().enumerate() {
        if let Some(src) = u.tied_to {
            bases[ui] = bases[unit_of[&src.0]].clone();
        }
    }
    let num_sum_params = pcursor;

    (block_edges, bases, num_dummy_params, num_sum_params)
}

/// Per depth, each product instance's first element and the instances in order of first use;
/// per IR product, its instances; the element rows of the widest depth.
type Instances = (Vec<BTreeMap<ProdKey, u32>>, Vec<Vec<ProdKey>>, BTreeMap<u32, Vec<ProductInstance>>, u32);

/// Step 3d: the elements of each depth (its sums' product children, each once, after the dummy
/// elements; every depth reuses the same element rows).
fn element_instances(units: &[SumUnit], at_depth: &[Vec<usize>], prod: &dyn Fn(ProdKey) -> FlatProd, num_dummy_elements: u32) -> Instances {
    let max_depth = at_depth.len() as u32 - 1;
    let mut instances: Vec<BTreeMap<ProdKey, u32>> = vec![BTreeMap::new(); max_depth as usize + 1];
    let mut inst_order: Vec<Vec<ProdKey>> = vec![Vec::new(); max_depth as usize + 1];
    let mut prod_instances: BTreeMap<u32, Vec<ProductInstance>> = BTreeMap::new();
    let mut num_elements = num_dummy_elements;
    for d in 1..=max_depth {
        let mut ecur = num_dummy_elements;
        for &u in &at_depth[d as usize] {
            for &k in &units[u].children {
                if let std::collections::btree_map::Entry::Vacant(v) = instances[d as usize].entry(k) {
                    v.insert(ecur);
                    inst_order[d as usize].push(k);
                    if let ProdKey::Ir(p) = k {
                        prod_instances.entry(p).or_default().push(ProductInstance { depth: d - 1, element_start: ecur });
                    }
                    let p = prod(k);
                    ecur += p.edges.len() as u32 * p.block_size;
                }
            }
        }
        num_elements = num_elements.max(ecur);
    }

    (instances, inst_order, prod_instances, num_elements)
}

/// Input families in layout order.
const KINDS: [DistKind; DistKind::ALL.len()] = DistKind::ALL;

/// Step 1: every IR product flattened (a product child inlined, its edges composed), so that a
/// product reads only input and sum nodes.
fn flatten(c: &Circuit) -> Vec<Option<FlatProd>> {
    let mut flat: Vec<Option<FlatProd>> = vec![None; c.nodes.len()];
    for (i, node) in c.nodes.iter().enumerate() {
        if let Node::Product { children, num_blocks, block_size, edges } = node {
            let mut fch = Vec::new();
            let mut fe = vec![Vec::new(); *num_blocks as usize];
            for (j, &ch) in children.iter().enumerate() {
                if let Some(q) = &flat[ch.index()] {
                    fch.extend_from_slice(&q.children);
                    for (r, row) in fe.iter_mut().enumerate() {
                        row.extend_from_slice(&q.edges[edges[r][j] as usize]);
                    }
                } else {
                    fch.push(ch);
                    for (r, row) in fe.iter_mut().enumerate() {
                        row.push(edges[r][j]);
                    }
                }
            }
            flat[i] = Some(FlatProd { children: fch, edges: fe, block_size: *block_size });
        }
    }
    flat
}

/// Step 3c: the input layers (by family, in node order), each untied input's first parameter and
/// flow slot (tied inputs share their source's), and the parameter and flow totals.
fn input_layers(c: &Circuit, reach: &[bool], node_start: &[u32]) -> (Vec<InputLayer>, InputSlots, u32, u32) {
    let (mut ip, mut fl) = (0u32, 0u32);
    let mut in_slots: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    for (i, node) in c.nodes.iter().enumerate() {
        if let Node::Input { dist, tied_to: None, .. } = node
            && reach[i]
        {
            in_slots.insert(i as u32, (ip, fl));
            ip += node.num_nodes() as u32 * dist.num_params();
            fl += node.num_nodes() as u32 * dist.num_stats();
        }
    }
    let mut inputs = Vec::new();
    for kind in KINDS {
        let mut segments = Vec::new();
        for (i, node) in c.nodes.iter().enumerate() {
            if let Node::Input { var, dist, tied_to, .. } = node
                && reach[i]
                && dist.kind() == kind
            {
                let (param_start, flow_start) = in_slots[&tied_to.map_or(i as u32, |s| s.0)];
                segments.push(InputSegment {
                    ir_node: i as u32,
                    var: *var,
                    dist: *dist,
                    node_start: node_start[i],
                    num_nodes: node.num_nodes() as u32,
                    param_start,
                    flow_start,
                    tied: tied_to.is_some(),
                });
            }
        }
        if !segments.is_empty() {
            inputs.push(InputLayer { kind, segments });
        }
    }

    (inputs, in_slots, ip, fl)
}

/// Each untied input's first parameter and flow slot, by IR node.
type InputSlots = BTreeMap<u32, (u32, u32)>;

/// What the later steps read of the earlier ones.
struct Refs<'a> {
    c: &'a Circuit,
    reach: &'a [bool],
    node_start: &'a [u32],
    units: &'a [SumUnit],
    unit_of: &'a BTreeMap<u32, usize>,
    /// Per unit and block, its edges (indices into the unit's edge list).
    block_edges: &'a [Vec<Vec<usize>>],
    /// Per unit and block, its first weight.
    bases: &'a [Vec<u32>],
}

/// Step 3d's result: per depth, each product instance's first element, in order of first use.
struct Elements<'a> {
    instances: &'a [BTreeMap<ProdKey, u32>],
    order: &'a [Vec<ProdKey>],
}

/// Step 4, products of depth `d`: rows grouped by block size, partitioned by fan-in.
fn product_partitions(r: &Refs, prod: &dyn Fn(ProdKey) -> FlatProd, el: &Elements, d: usize, opts: &CompileOptions) -> Vec<ProdPartition> {
    let (node_start, tol) = (r.node_start, opts.sparsity_tolerance);
    let (inst_order, instances) = (el.order, el.instances);
    let mut groups: BTreeMap<u32, Vec<(u32, Vec<u32>)>> = BTreeMap::new();
    for &k in &inst_order[d] {
        let p = prod(k);
        let start = instances[d][&k];
        for (r, row) in p.edges.iter().enumerate() {
            let cids = p.children.iter().zip(row).map(|(ch, &b)| node_start[ch.index()] + b * p.block_size).collect();
            groups.entry(p.block_size).or_default().push((start + r as u32 * p.block_size, cids));
        }
    }
    let mut prods = Vec::new();
    for (bs, rows) in groups {
        let counts: Vec<u32> = rows.iter().map(|r| r.1.len() as u32).collect();
        let widths = partition_widths(&counts, tol, opts.max_partitions);
        let mut parts: Vec<ProdPartition> = widths.iter().map(|&w| ProdPartition { block_size: bs, width: w, nids: Vec::new(), cids: Vec::new() }).collect();
        for (nid, cids) in rows {
            let part = &mut parts[partition_of(&widths, cids.len() as u32)];
            part.nids.push(nid);
            let pad = part.width as usize - cids.len();
            part.cids.extend(cids);
            part.cids.extend(std::iter::repeat_n(0, pad));
        }
        prods.extend(parts);
    }
    prods
}

/// Step 4, sums of depth `d` (its units `at_depth`): rows grouped by (block size, child block
/// size), partitioned by fan-in; children are element ids, weights parameter ids.
fn sum_partitions(r: &Refs, el: &Elements, at_depth: &[usize], unit_start: &[u32], d: usize, opts: &CompileOptions) -> Vec<SumPartition> {
    let (units, block_edges, bases, instances, tol) = (r.units, r.block_edges, r.bases, el.instances, opts.sparsity_tolerance);
    struct Row {
        nid: u32,
        cids: Vec<u32>,
        pids: Vec<u32>,
    }
    let mut sgroups: BTreeMap<(u32, u32), Vec<Row>> = BTreeMap::new();
    for &u in at_depth {
        let unit = &units[u];
        let (bs, cbs) = (unit.block_size, unit.child_block_size);
        let mut prefix = vec![0u32];
        for &b in &unit.child_blocks {
            prefix.push(prefix.last().unwrap() + b);
        }
        for (i, edges) in block_edges[u].iter().enumerate() {
            let mut row = Row { nid: unit_start[u] + i as u32 * bs, cids: Vec::new(), pids: Vec::new() };
            for (l, &e) in edges.iter().enumerate() {
                let j = unit.edges[e][1];
                let t = prefix.partition_point(|&p| p <= j) - 1;
                let elem = instances[d][&unit.children[t]] + (j - prefix[t]) * cbs;
                for k in 0..cbs {
                    row.cids.push(elem + k);
                    row.pids.push(bases[u][i] + (l as u32 * cbs + k) * bs);
                }
            }
            sgroups.entry((bs, cbs)).or_default().push(row);
        }
    }
    let mut sums = Vec::new();
    for ((bs, cbs), rows) in sgroups {
        let counts: Vec<u32> = rows.iter().map(|r| r.cids.len() as u32).collect();
        let widths = partition_widths(&counts, tol, opts.max_partitions);
        let mut parts: Vec<SumPartition> = widths
            .iter()
            .map(|&w| SumPartition {
                block_size: bs,
                child_block_size: cbs,
                width: w,
                nids: Vec::new(),
                cids: Vec::new(),
                counts: Vec::new(),
                pids: Vec::new(),
            })
            .collect();
        for row in rows {
            let part = &mut parts[partition_of(&widths, row.cids.len() as u32)];
            let pad = part.width as usize - row.cids.len();
            part.nids.push(row.nid);
            part.counts.push(row.cids.len() as u32);
            part.cids.extend(row.cids);
            part.cids.extend(std::iter::repeat_n(0, pad));
            part.pids.extend(row.pids);
            part.pids.extend(std::iter::repeat_n(0, pad));
        }
        sums.extend(parts);
    }
    sums
}

/// EM blocks of the untied sums and the fixed weights (the wrapper sum of a non-sum root).
fn em_metadata(units: &[SumUnit], block_edges: &[Vec<Vec<usize>>], bases: &[Vec<u32>]) -> (Vec<EmBlock>, Vec<(u32, f32)>) {
    let mut em_blocks = Vec::new();
    let mut fixed_params = Vec::new();
    for (ui, u) in units.iter().enumerate() {
        if u.tied_to.is_some() {
            continue;
        }
        match u.ir {
            Some(_) => {
                for (i, be) in block_edges[ui].iter().enumerate() {
                    em_blocks.push(EmBlock { base: bases[ui][i], block_size: u.block_size, width: be.len() as u32 * u.child_block_size });
                }
            }
            None => fixed_params.push((bases[ui][0], 1.0)),
        }
    }
    (em_blocks, fixed_params)
}

/// Parameter tensors (safetensors names and layouts), each IR node's place in the plan, and the
/// variables' domains.
fn tensors_and_locations(
    r: &Refs,
    in_slots: &BTreeMap<u32, (u32, u32)>,
    mut prod_instances: BTreeMap<u32, Vec<ProductInstance>>,
) -> (Vec<TensorSpec>, Vec<IrLocation>, Vec<Domain>) {
    let (c, reach, node_start, units, unit_of, block_edges, bases) = (r.c, r.reach, r.node_start, r.units, r.unit_of, r.block_edges, r.bases);
    let n = c.nodes.len();
    let mut tensors = Vec::new();
    let mut ir_nodes = Vec::with_capacity(n);
    let mut domains = vec![Domain::Continuous; c.num_vars as usize];
    for (i, node) in c.nodes.iter().enumerate() {
        let nn = node.num_nodes() as u32;
        ir_nodes.push(if !reach[i] {
            IrLocation::Unused
        } else {
            match node {
                Node::Input { .. } => IrLocation::Input { node_start: node_start[i], num_nodes: nn },
                Node::Sum { .. } => IrLocation::Sum { node_start: node_start[i], num_nodes: nn },
                Node::Product { .. } => IrLocation::Product { num_nodes: nn, instances: prod_instances.remove(&(i as u32)).unwrap_or_default() },
            }
        });
        if !reach[i] {
            continue;
        }
        match node {
            Node::Input { var, dist, tied_to, .. } => {
                domains[*var as usize] = dist.domain();
                if tied_to.is_none() && dist.num_params() > 0 {
                    let field = dist.info().tensor_field;
                    tensors.push(TensorSpec {
                        name: format!("node{i}.{field}"),
                        ir_node: i as u32,
                        shape: vec![nn as usize, dist.num_params() as usize],
                        layout: TensorLayout::Input { dist: *dist, param_start: in_slots[&(i as u32)].0, num_nodes: nn },
                    });
                }
            }
            Node::Sum { block_size, edges, tied_to: None, .. } => {
                let ui = unit_of[&(i as u32)];
                let cbs = units[ui].child_block_size;
                let mut edge_bases = vec![0u32; edges.len()];
                for (b, be) in block_edges[ui].iter().enumerate() {
                    for (l, &e) in be.iter().enumerate() {
                        edge_bases[e] = bases[ui][b] + l as u32 * cbs * block_size;
                    }
                }
                tensors.push(TensorSpec {
                    name: format!("node{i}.weights"),
                    ir_node: i as u32,
                    shape: vec![edges.len(), *block_size as usize, cbs as usize],
                    layout: TensorLayout::SumWeights {
                        block_size: *block_size,
                        child_block_size: cbs,
                        edge_bases,
                        sum_blocks: edges.iter().map(|e| e[0]).collect(),
                    },
                });
            }
            _ => {}
        }
    }

    (tensors, ir_nodes, domains)
}

/// Nodes reachable from the root, plus the sources of reachable tied nodes (their parameters
/// must exist even when the source itself is not used).
fn reachable(c: &Circuit) -> Vec<bool> {
    let mut r = vec![false; c.nodes.len()];
    r[c.root.index()] = true;
    for i in (0..c.nodes.len()).rev() {
        if r[i] {
            for ch in c.nodes[i].children() {
                r[ch.index()] = true;
            }
            if let Some(src) = c.nodes[i].tied_to() {
                r[src.index()] = true;
            }
        }
    }
    r
}

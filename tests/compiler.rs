//! Compiler invariants: every edge appears exactly once in the plan, padding stays within the
//! bound, the output is deterministic, and the random-circuit generator covers every feature the
//! oracle tests rely on.

use pcc_testkit as common;

use std::collections::BTreeMap;

use common::Gen;
use pcc::codegen::{Circuit, CircuitBuilder, CompileOptions, Dist, Node, SumEdges, compile, compile_with};
use pcc::runtime::plan::{IrLocation, Plan, TensorLayout};

fn circuits() -> Vec<Circuit> {
    let mut v: Vec<Circuit> = (0..50).map(Gen::circuit).collect();
    v.push(skewed_fanin());
    v
}

/// One sum vector whose blocks have 1..=24 edges: forces several partitions.
fn skewed_fanin() -> Circuit {
    let mut b = CircuitBuilder::new(2);
    let x = b.inputs(0, 24, 2, Dist::Categorical { num_cats: 3 });
    let y = b.inputs(1, 24, 2, Dist::Bernoulli);
    let p = b.multiply(&[x, y]);
    let edges = (0..24u32).flat_map(|i| (0..=i).map(move |j| [i, j])).collect();
    let s = b.summate(&[p], 24, 2, SumEdges::List(edges));
    let root = b.summate(&[s], 1, 1, SumEdges::Dense);
    b.finish(root).unwrap()
}

/// (sum node id, parameter index) of every real scalar edge in the plan.
fn plan_sum_edges(plan: &Plan) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for part in plan.depths.iter().flat_map(|d| &d.sums) {
        let w = part.width as usize;
        for (r, &nid) in part.nids.iter().enumerate() {
            for m in 0..part.block_size {
                for i in 0..part.counts[r] as usize {
                    out.push((nid + m, part.pids[r * w + i] + m));
                }
            }
        }
    }
    out
}

#[test]
fn every_sum_edge_appears_exactly_once() {
    for (ci, c) in circuits().iter().enumerate() {
        let plan = compile(c).unwrap();
        let mut got = plan_sum_edges(&plan);
        let mut want = Vec::new();
        for (i, node) in c.nodes.iter().enumerate() {
            let Node::Sum { children, block_size, edges, tied_to, .. } = node else { continue };
            let IrLocation::Sum { node_start, .. } = plan.ir_nodes[i] else { continue };
            let src = tied_to.map_or(i as u32, |s| s.0);
            let spec = plan.tensors.iter().find(|t| t.ir_node == src).unwrap();
            let TensorLayout::SumWeights { edge_bases, .. } = &spec.layout else { panic!() };
            let cbs = c.node(children[0]).block_size();
            for (e, &[blk, _]) in edges.iter().enumerate() {
                for m in 0..*block_size {
                    for k in 0..cbs {
                        want.push((node_start + blk * block_size + m, edge_bases[e] + k * block_size + m));
                    }
                }
            }
        }
        // The compiler's own root wrapper (non-sum roots) adds its one fixed edge.
        for &(pid, _) in &plan.fixed_params {
            want.push((plan.root, pid));
        }
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got.len() as u64, want.len() as u64, "circuit {ci}: edge count");
        assert_eq!(got, want, "circuit {ci}: every edge exactly once");
        assert_eq!(plan.num_sum_edges(), want.len() as u64);
    }
}

#[test]
fn every_product_edge_appears_exactly_once() {
    for (ci, c) in circuits().iter().enumerate() {
        let plan = compile(c).unwrap();
        for (i, node) in c.nodes.iter().enumerate() {
            let Node::Product { .. } = node else { continue };
            let IrLocation::Product { instances, num_nodes } = &plan.ir_nodes[i] else { continue };
            for inst in instances {
                let depth = &plan.depths[inst.depth as usize];
                let rows: usize = depth
                    .prods
                    .iter()
                    .map(|p| p.nids.iter().filter(|&&n| n >= inst.element_start && n < inst.element_start + num_nodes).count() * p.block_size as usize)
                    .sum();
                assert_eq!(rows as u32, *num_nodes, "circuit {ci}: product {i} at depth {} has each node once", inst.depth);
            }
        }
        // Real product children are never the dummy node, padding always is.
        for p in plan.depths.iter().flat_map(|d| &d.prods) {
            for row in p.cids.chunks(p.width as usize) {
                let real = row.iter().take_while(|&&c| c != 0).count();
                assert!(row[real..].iter().all(|&c| c == 0), "circuit {ci}: padding only at the end");
                assert!(real >= 1);
            }
        }
    }
}

fn assert_padding_within(plan: &Plan, tol: f64, what: &str) {
    for (d, depth) in plan.depths.iter().enumerate() {
        let mut layers: BTreeMap<(u32, u32, bool), (u64, u64)> = BTreeMap::new();
        for p in &depth.sums {
            let e = layers.entry((p.block_size, p.child_block_size, true)).or_default();
            e.0 += p.counts.iter().map(|&c| c as u64).sum::<u64>();
            e.1 += p.nids.len() as u64 * p.width as u64;
        }
        for p in &depth.prods {
            let e = layers.entry((p.block_size, 0, false)).or_default();
            e.0 += p.cids.chunks(p.width as usize).map(|r| r.iter().take_while(|&&c| c != 0).count() as u64).sum::<u64>();
            e.1 += p.cids.len() as u64;
        }
        for (key, (real, padded)) in layers {
            let bound = (real as f64 * (1.0 + tol)).floor() as u64;
            assert!(padded <= bound, "{what}, depth {d}, layer {key:?}: padded {padded} > bound {bound} (real {real})");
        }
    }
}

#[test]
fn padding_stays_within_the_bound() {
    let mut multi = 0;
    for (ci, c) in circuits().iter().enumerate() {
        for tol in [0.0, 0.1, 0.5] {
            let plan = compile_with(c, &CompileOptions { sparsity_tolerance: tol, max_partitions: None }).unwrap();
            assert_padding_within(&plan, tol, &format!("circuit {ci}, tol {tol}"));
            multi += plan.depths.iter().filter(|d| d.sums.len() > 1).count();
        }
    }
    let skewed = compile_with(&skewed_fanin(), &CompileOptions { sparsity_tolerance: 0.1, max_partitions: None }).unwrap();
    assert!(skewed.depths.iter().any(|d| d.sums.len() >= 3), "the skewed layer is split into several partitions");
    assert!(multi > 0);
}

#[test]
fn compilation_is_deterministic() {
    for (ci, c) in circuits().iter().enumerate() {
        let a = compile(c).unwrap().to_json();
        let b = compile(c).unwrap().to_json();
        assert_eq!(a, b, "circuit {ci}");
        let c2: Circuit = serde_json::from_str(&serde_json::to_string(c).unwrap()).unwrap();
        assert_eq!(compile(&c2).unwrap().to_json(), a, "circuit {ci} after a JSON round trip");
        assert_eq!(Plan::from_json(&a).unwrap().to_json(), a, "circuit {ci}: plan JSON round trip");
    }
}

#[test]
fn generator_covers_every_feature() {
    let mut f: BTreeMap<&str, usize> = BTreeMap::new();
    for c in (0..50).map(Gen::circuit) {
        let plan = compile(&c).unwrap();
        let mut block_sizes = std::collections::BTreeSet::new();
        for node in &c.nodes {
            block_sizes.insert(node.block_size());
            match node {
                Node::Input { tied_to: Some(_), .. } => *f.entry("tied inputs").or_default() += 1,
                Node::Input { dist: Dist::Bernoulli, .. } => *f.entry("bernoulli").or_default() += 1,
                Node::Input { dist: Dist::Categorical { .. }, .. } => *f.entry("categorical").or_default() += 1,
                Node::Sum { tied_to: Some(_), .. } => *f.entry("tied sums").or_default() += 1,
                Node::Sum { children, edges, num_blocks, .. } => {
                    if children.len() > 1 {
                        *f.entry("several child vectors").or_default() += 1;
                    }
                    let cb: u32 = children.iter().map(|x| c.node(*x).num_blocks()).sum();
                    if (edges.len() as u32) < num_blocks * cb {
                        *f.entry("block-sparse sums").or_default() += 1;
                    }
                    for ch in children {
                        match c.node(*ch) {
                            Node::Input { .. } => *f.entry("sum over inputs").or_default() += 1,
                            Node::Sum { .. } => *f.entry("sum over sums").or_default() += 1,
                            Node::Product { .. } => {}
                        }
                    }
                }
                Node::Product { children, .. } if children.iter().any(|x| matches!(c.node(*x), Node::Product { .. })) => {
                    *f.entry("product of products").or_default() += 1;
                }
                _ => {}
            }
        }
        if block_sizes.len() >= 3 {
            *f.entry("three or more block sizes").or_default() += 1;
        }
        // Pass-through copies: a product evaluated above the depth where it is first ready.
        let mut node_depth = vec![0u32; plan.num_nodes as usize];
        for (d, depth) in plan.depths.iter().enumerate() {
            for s in &depth.sums {
                for &nid in &s.nids {
                    for m in 0..s.block_size {
                        node_depth[(nid + m) as usize] = d as u32 + 1;
                    }
                }
            }
        }
        for (d, depth) in plan.depths.iter().enumerate() {
            for p in &depth.prods {
                for row in p.cids.chunks(p.width as usize) {
                    let ready = 1 + row.iter().filter(|&&x| x != 0).map(|&x| node_depth[x as usize]).max().unwrap();
                    if ready < d as u32 + 1 {
                        *f.entry("pass-through copies").or_default() += 1;
                    }
                }
            }
        }
        if plan.ir_nodes.iter().any(|l| matches!(l, IrLocation::Product { instances, .. } if instances.len() > 1)) {
            *f.entry("products at several depths").or_default() += 1;
        }
    }
    for feature in [
        "tied inputs",
        "tied sums",
        "bernoulli",
        "categorical",
        "several child vectors",
        "block-sparse sums",
        "sum over inputs",
        "sum over sums",
        "product of products",
        "three or more block sizes",
        "pass-through copies",
        "products at several depths",
    ] {
        let n = f.get(feature).copied().unwrap_or(0);
        assert!(n >= 3, "feature `{feature}` appears only {n} times in the generated corpus: {f:?}");
    }
}

/// Every plan the compiler makes passes the bounds check that guards plans from files, and
/// survives its JSON round trip through that check.
#[test]
fn compiled_plans_pass_the_bounds_check() {
    let mut all = circuits();
    all.extend((0..20).map(|s| common::mixed_circuit(s, 10, 0.2).0));
    all.push(skewed_fanin());
    for (i, c) in all.iter().enumerate() {
        let plan = compile(c).unwrap();
        plan.check().unwrap_or_else(|e| panic!("circuit {i}: {e}"));
        assert_eq!(Plan::from_json(&plan.to_json()).unwrap(), plan, "circuit {i}");
    }
}

/// A change that breaks a plan, and the words its error must contain.
type Corruption = (&'static str, Box<dyn Fn(&mut Plan)>);

/// A plan whose indices point outside its buffers is an error naming the field, not a panic or
/// an out-of-bounds read in an engine.
#[test]
fn corrupt_plans_are_errors_naming_the_field() {
    let plan = compile(&Gen::circuit(3)).unwrap();
    let mut cases: Vec<Corruption> = vec![
        ("root", Box::new(|p: &mut Plan| p.root = p.num_nodes)),
        ("domains", Box::new(|p: &mut Plan| p.num_vars += 1)),
        ("input layer", Box::new(|p: &mut Plan| p.inputs[0].segments[0].node_start = p.num_nodes)),
        ("input layer", Box::new(|p: &mut Plan| p.inputs[0].segments[0].param_start = u32::MAX)),
        ("fixed parameter", Box::new(|p: &mut Plan| p.fixed_params.push((p.num_sum_params, 1.0)))),
        ("EM block", Box::new(|p: &mut Plan| p.em_blocks[0].base = p.num_sum_params)),
    ];
    let d = plan.depths.iter().position(|d| !d.sums.is_empty()).unwrap();
    cases.push(("sum partition", Box::new(move |p: &mut Plan| p.depths[d].sums[0].cids[0] = p.num_elements)));
    cases.push(("sum partition", Box::new(move |p: &mut Plan| p.depths[d].sums[0].pids[0] = p.num_sum_params)));
    cases.push((
        "sum partition",
        Box::new(move |p: &mut Plan| {
            p.depths[d].sums[0].counts.pop();
        }),
    ));
    // Found by the plan_json fuzz target: in-bounds weights that are not one run.
    let two = plan.depths.iter().enumerate().flat_map(|(d, depth)| depth.sums.iter().enumerate().map(move |(k, s)| (d, k, s)));
    let (d2, k, r, w) =
        two.flat_map(|(d, k, s)| s.counts.iter().position(|&c| c >= 2).map(|r| (d, k, r, s.width as usize))).next().expect("a block of two children");
    cases.push(("contiguous", Box::new(move |p: &mut Plan| p.depths[d2].sums[k].pids[r * w + 1] = p.depths[d2].sums[k].pids[r * w])));
    if let Some(d) = plan.depths.iter().position(|d| !d.prods.is_empty()) {
        cases.push(("product partition", Box::new(move |p: &mut Plan| p.depths[d].prods[0].cids[0] = p.num_nodes)));
    }
    for (what, corrupt) in &cases {
        let mut p = plan.clone();
        corrupt(&mut p);
        let e = Plan::from_json(&p.to_json()).expect_err(what).to_string();
        assert!(e.contains(what), "{what}: {e}");
    }
}

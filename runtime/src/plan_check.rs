//! Bounds of a plan that did not come from this process's compiler (an embedded or hand-edited
//! `plan.json`): every index an engine follows is checked once, so a corrupt plan is an error
//! naming the field instead of an out-of-bounds read (a panic in the CPU engine, a memory fault
//! on the GPU). [`Plan::from_json`] runs it; plans from `pc-codegen`'s compiler pass it by
//! construction (tests check that too).
//!
//! Not checked: that the depths are in dependency order and the layout is the one the compiler
//! would produce. A plan that violates those evaluates to wrong numbers, never out of bounds.

use crate::RuntimeError;
use crate::plan::{Dist, Domain, IrLocation, Plan, TensorLayout};

/// `what` is out of bounds (the error names the field and the values).
fn bad(what: String) -> RuntimeError {
    RuntimeError::MalformedPlan(what)
}

/// `start + len <= limit`, in 64 bits.
fn fits(start: u32, len: u64, limit: u32) -> bool {
    start as u64 + len <= limit as u64
}

impl Plan {
    /// Check every index of the plan against the sizes it declares.
    pub fn check(&self) -> Result<(), RuntimeError> {
        self.check_totals()?;
        self.check_inputs()?;
        for (d, depth) in self.depths.iter().enumerate() {
            self.check_depth(d, depth)?;
        }
        self.check_parameters()?;
        self.check_ir_locations()
    }

    fn check_totals(&self) -> Result<(), RuntimeError> {
        if self.domains.len() != self.num_vars as usize {
            return Err(bad(format!("{} domains for {} variables", self.domains.len(), self.num_vars)));
        }
        if self.num_dummy_nodes > self.num_nodes || self.num_dummy_elements > self.num_elements || self.num_dummy_params > self.num_sum_params {
            return Err(bad("more dummy nodes, elements or parameters than there are".into()));
        }
        if self.root >= self.num_nodes {
            return Err(bad(format!("root {} of {} nodes", self.root, self.num_nodes)));
        }
        Ok(())
    }

    fn check_inputs(&self) -> Result<(), RuntimeError> {
        for (l, layer) in self.inputs.iter().enumerate() {
            for (s, seg) in layer.segments.iter().enumerate() {
                let at = || format!("input layer {l}, segment {s}");
                let n = seg.num_nodes as u64;
                if seg.dist.kind() != layer.kind {
                    return Err(bad(format!("{}: a {:?} leaf in a {:?} layer", at(), seg.dist.kind(), layer.kind)));
                }
                let Some(domain) = self.domains.get(seg.var as usize) else {
                    return Err(bad(format!("{}: variable {} of {}", at(), seg.var, self.num_vars)));
                };
                if !fits(seg.node_start, n, self.num_nodes) {
                    return Err(bad(format!("{}: nodes {}+{} of {}", at(), seg.node_start, n, self.num_nodes)));
                }
                if !fits(seg.param_start, n * seg.dist.num_params() as u64, self.num_input_params) {
                    return Err(bad(format!("{}: parameters from {} past the {} there are", at(), seg.param_start, self.num_input_params)));
                }
                if !fits(seg.flow_start, n * seg.dist.num_stats() as u64, self.num_input_flows) {
                    return Err(bad(format!("{}: statistics from {} past the {} there are", at(), seg.flow_start, self.num_input_flows)));
                }
                // Data is checked against the domain, then indexes the leaf's categories.
                match (seg.dist, domain) {
                    (Dist::Categorical { num_cats }, Domain::Discrete { num_cats: k }) if *k <= num_cats && num_cats > 0 => {}
                    (Dist::Categorical { .. }, _) => return Err(bad(format!("{}: categorical leaves over a variable of domain {domain:?}", at()))),
                    (Dist::Indicator { num_states: 0 }, _) => return Err(bad(format!("{}: indicator leaves of 0 states", at()))),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn check_depth(&self, d: usize, depth: &crate::plan::DepthPlan) -> Result<(), RuntimeError> {
        for (p, part) in depth.prods.iter().enumerate() {
            let at = || format!("depth {d}, product partition {p}");
            let (bs, n) = (part.block_size as u64, part.nids.len() as u64);
            if part.cids.len() as u64 != n * part.width as u64 {
                return Err(bad(format!("{}: {} child ids for {n} blocks of width {}", at(), part.cids.len(), part.width)));
            }
            if let Some(e) = part.nids.iter().find(|&&e| !fits(e, bs, self.num_elements)) {
                return Err(bad(format!("{}: element block at {e} past the {} elements", at(), self.num_elements)));
            }
            if let Some(c) = part.cids.iter().find(|&&c| !fits(c, bs, self.num_nodes)) {
                return Err(bad(format!("{}: child block at node {c} past the {} nodes", at(), self.num_nodes)));
            }
        }
        for (p, part) in depth.sums.iter().enumerate() {
            let at = || format!("depth {d}, sum partition {p}");
            let (bs, n, w) = (part.block_size as u64, part.nids.len() as u64, part.width as u64);
            if part.cids.len() as u64 != n * w || part.pids.len() as u64 != n * w || part.counts.len() as u64 != n {
                return Err(bad(format!("{}: child, parameter or count tables do not match {n} blocks of width {w}", at())));
            }
            if bs == 0 || part.counts.iter().any(|&c| c > part.width) {
                return Err(bad(format!("{}: block size 0 or more real children than the width", at())));
            }
            if let Some(v) = part.nids.iter().find(|&&v| !fits(v, bs, self.num_nodes)) {
                return Err(bad(format!("{}: sum block at node {v} past the {} nodes", at(), self.num_nodes)));
            }
            if let Some(c) = part.cids.iter().find(|&&c| c >= self.num_elements) {
                return Err(bad(format!("{}: child element {c} of {}", at(), self.num_elements)));
            }
            if let Some(q) = part.pids.iter().find(|&&q| !fits(q, bs, self.num_sum_params)) {
                return Err(bad(format!("{}: weights at {q} past the {} parameters", at(), self.num_sum_params)));
            }
            // The engines read a block's real weights as one `[count][block_size]` run.
            for (r, &count) in part.counts.iter().enumerate() {
                let pids = &part.pids[r * w as usize..][..count as usize];
                if pids.iter().enumerate().any(|(k, &q)| q as u64 != pids[0] as u64 + k as u64 * bs) {
                    return Err(bad(format!("{}: block {r}'s weights are not one contiguous run", at())));
                }
            }
        }
        Ok(())
    }

    fn check_parameters(&self) -> Result<(), RuntimeError> {
        if let Some((i, _)) = self.fixed_params.iter().find(|(i, _)| *i >= self.num_sum_params) {
            return Err(bad(format!("fixed parameter {i} of {}", self.num_sum_params)));
        }
        for (k, b) in self.em_blocks.iter().enumerate() {
            if b.block_size == 0 || !fits(b.base, b.width as u64 * b.block_size as u64, self.num_sum_params) {
                return Err(bad(format!("EM block {k}: weights from {} past the {} parameters", b.base, self.num_sum_params)));
            }
        }
        for t in &self.tensors {
            let elems: Option<u64> = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
            let ok = match &t.layout {
                TensorLayout::SumWeights { block_size, child_block_size, edge_bases, sum_blocks } => {
                    let per = *block_size as u64 * *child_block_size as u64;
                    edge_bases.len() == sum_blocks.len()
                        && elems == Some(edge_bases.len() as u64 * per)
                        && edge_bases.iter().all(|&b| fits(b, per, self.num_sum_params))
                        && sum_blocks.iter().all(|&s| (s as u64) < self.num_sum_params as u64)
                }
                TensorLayout::Input { dist, param_start, num_nodes } => {
                    let n = *num_nodes as u64 * dist.num_params() as u64;
                    elems == Some(n) && fits(*param_start, n, self.num_input_params)
                }
            };
            if !ok {
                return Err(bad(format!("tensor `{}`: shape or location outside the parameters", t.name)));
            }
        }
        Ok(())
    }

    fn check_ir_locations(&self) -> Result<(), RuntimeError> {
        for (i, loc) in self.ir_nodes.iter().enumerate() {
            let ok = match loc {
                IrLocation::Input { node_start, num_nodes } | IrLocation::Sum { node_start, num_nodes } => fits(*node_start, *num_nodes as u64, self.num_nodes),
                IrLocation::Product { num_nodes, instances } => {
                    instances.iter().all(|p| (p.depth as usize) < self.depths.len() && fits(p.element_start, *num_nodes as u64, self.num_elements))
                }
                IrLocation::Unused => true,
            };
            if !ok {
                return Err(bad(format!("IR node {i}: its location is outside the buffers")));
            }
        }
        Ok(())
    }
}

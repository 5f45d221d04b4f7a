//! Per-chunk scratch buffers. Every buffer is node-major with the chunk's samples innermost
//! (`value[node * bc + b]`), matching the GPU layout.

use crate::plan::Plan;

pub(crate) struct Workspace {
    /// Samples in this chunk.
    pub bc: usize,
    pub node: Vec<f32>,
    pub elem: Vec<f32>,
    pub nflow: Vec<f32>,
    pub eflow: Vec<f32>,
    /// Dense scratch for one sum block: gathered children `[W][bc]`, outputs, maxima.
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub p: Vec<f32>,
    pub q: Vec<f32>,
    pub max: Vec<f32>,
}

impl Workspace {
    pub fn new(plan: &Plan, bc: usize, with_flows: bool) -> Workspace {
        let flows = |n: u32| if with_flows { vec![0.0; n as usize * bc] } else { Vec::new() };
        Workspace {
            bc,
            node: vec![0.0; plan.num_nodes as usize * bc],
            elem: vec![f32::NEG_INFINITY; plan.num_elements as usize * bc],
            nflow: flows(plan.num_nodes),
            eflow: flows(plan.num_elements),
            x: Vec::new(),
            y: Vec::new(),
            p: Vec::new(),
            q: Vec::new(),
            max: vec![0.0; bc],
        }
    }

    /// Resize to a (smaller) chunk; contents are rewritten by every pass.
    pub fn set_bc(&mut self, plan: &Plan, bc: usize) {
        if bc != self.bc {
            let with_flows = !self.nflow.is_empty();
            *self = Workspace::new(plan, bc, with_flows);
        }
    }

    #[inline]
    pub fn row(buf: &[f32], id: u32, bc: usize) -> &[f32] {
        &buf[id as usize * bc..][..bc]
    }

    #[inline]
    pub fn row_mut(buf: &mut [f32], id: u32, bc: usize) -> &mut [f32] {
        &mut buf[id as usize * bc..][..bc]
    }
}

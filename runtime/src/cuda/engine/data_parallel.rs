//! What data-parallel training needs of the GPU engine: its context (for NCCL) and an in-place
//! sum of its flow accumulators with the other ranks'.

use std::sync::Arc;

use cudarc::driver::{CudaContext, DevicePtrMut};

use super::GpuEngine;
use crate::RuntimeError;
use crate::parallel::{Hub, NcclComm};

impl GpuEngine {
    /// The engine's CUDA context (the NCCL communicator is made on its device).
    pub fn context(&self) -> &Arc<CudaContext> {
        self.stream.context()
    }

    /// Sum the flows accumulated on this rank with every other rank's, in place: the parameter
    /// flows and leaf statistics by NCCL on the device, the total root flow over the hub (which
    /// also checks that every rank is alive before the device collective starts). The EM step
    /// that follows then reads the same flows on every rank.
    pub fn all_reduce_flows(&mut self, hub: &mut Hub, comm: &mut NcclComm) -> Result<(), RuntimeError> {
        let mut total = [self.total_flow];
        hub.all_reduce_f64(&mut total)?;
        self.total_flow = total[0];
        let inputs = self.plan.num_input_flows as usize;
        let sums = self.dev.sum_flows.len();
        let (sum_ptr, _s) = self.dev.sum_flows.device_ptr_mut(&self.stream);
        let (input_ptr, _i) = self.dev.input_stats.device_ptr_mut(&self.stream);
        let bufs: &[(u64, usize)] = if inputs == 0 { &[(sum_ptr, sums)][..] } else { &[(sum_ptr, sums), (input_ptr, inputs)][..] };
        // SAFETY: both buffers live on this engine's device and stream and hold at least these
        // many f32 (the input statistics buffer may be longer than the statistics it holds).
        unsafe { comm.all_reduce_sum(&self.stream, bufs) }?;
        Ok(())
    }
}

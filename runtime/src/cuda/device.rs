//! Finding the GPUs: driver presence, device count, name, architecture and memory.

use cudarc::driver::CudaContext;

use super::CudaError;

/// One CUDA device.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    /// `(major, minor)`, e.g. `(9, 0)` for an H100.
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
}

impl GpuInfo {
    /// NVRTC's architecture name for this device, e.g. `90`.
    pub fn arch(&self) -> String {
        format!("{}{}", self.compute_capability.0, self.compute_capability.1)
    }
}

/// Every usable device. Errors say why there is none (no driver library, no device, a driver
/// failure), so callers can print the reason and fall back to the CPU.
pub fn probe() -> Result<Vec<GpuInfo>, CudaError> {
    if !super::raw::driver_present() {
        return Err(CudaError::NoDriver);
    }
    let count = CudaContext::device_count()?;
    if count <= 0 {
        return Err(CudaError::NoDevice);
    }
    (0..count as usize)
        .map(|ordinal| {
            let ctx = CudaContext::new(ordinal)?;
            Ok(GpuInfo { ordinal, name: ctx.name()?, compute_capability: ctx.compute_capability()?, total_memory: ctx.total_mem()? })
        })
        .collect()
}

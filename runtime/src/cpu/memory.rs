//! Host memory for the CPU engine's buffers, checked before they are allocated: a model within
//! pcc's size limits can still outgrow the machine (hclt1024's f64 flow accumulators alone are
//! 6.2 GB per group), and an allocation past the memory the kernel will give ends the process
//! (an abort, or the OOM killer) instead of returning an error that names the cause.

use crate::RuntimeError;
use crate::plan::Plan;

/// Bytes the operating system says can still be allocated (`MemAvailable` of `/proc/meminfo`),
/// or `PCC_HOST_MEMORY` (bytes) when set; `None` where neither is known (then nothing is
/// checked).
pub(crate) fn available() -> Option<u64> {
    if let Some(v) = std::env::var("PCC_HOST_MEMORY").ok().and_then(|v| v.parse().ok()) {
        return Some(v);
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// `bytes` for `what` fit in the available memory (always true where it is unknown).
pub(crate) fn fits(bytes: u64) -> bool {
    available().is_none_or(|a| bytes <= a)
}

/// An error naming `what`, its size and what is available.
pub(crate) fn too_large(what: impl Into<String>, bytes: u64) -> RuntimeError {
    RuntimeError::HostMemory { what: what.into(), bytes, available: available().unwrap_or(0) }
}

/// Bytes of one workspace of `bc` samples (node and element values, and their flows).
pub(crate) fn workspace_bytes(plan: &Plan, bc: usize, with_flows: bool) -> u64 {
    let per = (plan.num_nodes as u64 + plan.num_elements as u64) * bc as u64 * 4;
    if with_flows { 2 * per } else { per }
}

/// Bytes of one set of flow accumulators (f64 per sum parameter and leaf statistic).
pub(crate) fn flows_bytes(plan: &Plan) -> u64 {
    8 * (plan.num_sum_params as u64 + plan.num_input_flows as u64)
}

//! CUDA foundation of the GPU engine: device probing and NVRTC compilation to CUBIN with an
//! on-disk cache. Libraries are loaded dynamically (cudarc), so building needs no CUDA and a
//! machine without a driver gets [`CudaError::NoDriver`], never a panic.
//!
//! The kernels themselves (generated from the plan) and the engine that launches them arrive with
//! the CUDA code-generation issue; this module is what they stand on.

mod cache;
mod device;
mod engine;
pub use crate::manifest;
mod nvrtc;
pub mod persistent;
mod raw;
mod units;

pub use cache::KernelCache;
pub use device::{GpuInfo, probe};
pub use engine::{DeviceData, GpuEngine, STAGE_U8, StartupTimings};
pub use manifest::{
    INLINE_DEPS, KernelArg, KernelSpec, Manifest, PUBLISH_BIT, PersistentForward, Precision, QueryManifest, SMALL_BATCH, Step, TASK_WORDS, conditional_slots,
    conditionals_from_slots,
};
pub use nvrtc::{compile_cubin, compile_cubin_verbose, nvrtc_available, nvrtc_version};
pub(crate) use raw::stream_idle;
pub use units::{PERSISTENT_UNIT, UNIT_MARKER, Unit, compile_units, split_units};

/// Errors of the CUDA layer; each says what is missing or what failed.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver: libcuda could not be loaded (is an NVIDIA driver installed?)")]
    NoDriver,
    #[error("the CUDA driver reports no device")]
    NoDevice,
    #[error("there is no GPU {ordinal}: the CUDA driver reports {count} (numbered from 0)")]
    NoSuchDevice { ordinal: usize, count: usize },
    #[error(
        "NVRTC is not available: libnvrtc.so.13 could not be loaded (install the CUDA 13 NVRTC library, e.g. `pip install nvidia-cuda-nvrtc==13.0.*`, and add its lib folder to LD_LIBRARY_PATH)"
    )]
    NoNvrtc,
    #[error("CUDA driver error: {0:?}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("NVRTC error: {0:?}")]
    Nvrtc(#[from] cudarc::nvrtc::result::NvrtcError),
    #[error("NVRTC failed to compile `{name}` for sm_{arch}:\n{log}")]
    Compile { name: String, arch: String, log: String },
    #[error("kernel source `{name}` contains a NUL byte")]
    NulInSource { name: String },
    #[error("CUDA graph capture recorded nothing (the pass has no launches)")]
    EmptyGraph,
    #[error("the kernel manifest has no {0} kernels (emitted by an older pcc: emit the circuit again)")]
    MissingKernels(&'static str),
    #[error("kernel argument {0} has nothing bound in this pass (the manifest does not match the engine)")]
    Unbound(&'static str),
    #[error("the persistent forward pass finished without writing the root's value to the host (the plan's root is in no task of its schedule)")]
    NoHostResult,
    #[error(
        "out of device memory: {what} need {} MiB, the device has {} MiB free of {} MiB{}",
        bytes >> 20, free >> 20, total >> 20, if hint.is_empty() { String::new() } else { format!(" ({hint})") }
    )]
    OutOfMemory { what: String, bytes: u64, free: u64, total: u64, hint: Box<str> },
    #[error("kernel cache {path}: {source}")]
    Cache { path: std::path::PathBuf, source: std::io::Error },
}

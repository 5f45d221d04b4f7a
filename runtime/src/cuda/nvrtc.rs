//! NVRTC: CUDA C++ source to CUBIN for one real architecture (`sm_XY`). CUBIN, not PTX, because
//! PTX from a newer NVRTC can be rejected by an older driver.

use std::ffi::CString;

use super::{CudaError, raw};

/// Whether the NVRTC library can be loaded.
pub fn nvrtc_available() -> bool {
    raw::nvrtc_present()
}

/// NVRTC's `(major, minor)` version (part of every kernel-cache key).
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    Ok(raw::nvrtc_version()?)
}

/// Compile `source` (named `name` in messages) to a CUBIN for `sm_{arch}` (e.g. `"90"`).
/// A compile error returns NVRTC's log, unescaped.
pub fn compile_cubin(source: &str, name: &str, arch: &str) -> Result<Vec<u8>, CudaError> {
    compile(source, name, arch, false).map(|(cubin, _)| cubin)
}

/// [`compile_cubin`] with ptxas' resource report: returns the CUBIN and NVRTC's log, which lists
/// registers, spills and shared memory per kernel.
pub fn compile_cubin_verbose(source: &str, name: &str, arch: &str) -> Result<(Vec<u8>, String), CudaError> {
    compile(source, name, arch, true)
}

fn compile(source: &str, name: &str, arch: &str, verbose: bool) -> Result<(Vec<u8>, String), CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let src = CString::new(source).map_err(|_| CudaError::NulInSource { name: name.into() })?;
    let cname = CString::new(name).map_err(|_| CudaError::NulInSource { name: name.into() })?;
    let mut opts = vec![format!("--gpu-architecture=sm_{arch}"), "--std=c++17".to_string()];
    if verbose {
        opts.push("--ptxas-options=-v".to_string());
    }
    raw::nvrtc_compile(&src, &cname, &opts)?.map_err(|log| CudaError::Compile { name: name.into(), arch: arch.into(), log })
}

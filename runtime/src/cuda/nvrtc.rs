//! NVRTC: CUDA C++ source to CUBIN for one real architecture (`sm_XY`). CUBIN, not PTX, because
//! PTX from a newer NVRTC can be rejected by an older driver.

use std::ffi::CString;

use cudarc::nvrtc::{result, sys};

use super::CudaError;

/// Whether the NVRTC library can be loaded.
pub fn nvrtc_available() -> bool {
    // SAFETY: only checks whether the library can be opened.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's `(major, minor)` version (part of every kernel-cache key).
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are valid for writes.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result()?;
    Ok((major, minor))
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

fn log_of(prog: sys::nvrtcProgram) -> String {
    // SAFETY: called only on a live program.
    let log = unsafe { result::get_program_log(prog) }.unwrap_or_default();
    let log: Vec<u8> = log.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&log).into_owned()
}

fn compile(source: &str, name: &str, arch: &str, verbose: bool) -> Result<(Vec<u8>, String), CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let src = CString::new(source).map_err(|_| CudaError::NulInSource { name: name.into() })?;
    let cname = CString::new(name).map_err(|_| CudaError::NulInSource { name: name.into() })?;
    let prog = result::create_program(&src, Some(&cname))?;
    let mut opts = vec![format!("--gpu-architecture=sm_{arch}"), "--std=c++17".to_string()];
    if verbose {
        opts.push("--ptxas-options=-v".to_string());
    }
    // SAFETY: `prog` was created above and is destroyed exactly once below; `src` and `cname`
    // outlive it.
    unsafe {
        let compiled = result::compile_program(prog, &opts);
        let out = match compiled {
            Err(_) => Err(CudaError::Compile { name: name.into(), arch: arch.into(), log: log_of(prog) }),
            Ok(()) => {
                let mut size = 0usize;
                match sys::nvrtcGetCUBINSize(prog, &mut size).result() {
                    Err(e) => Err(CudaError::Nvrtc(e)),
                    Ok(()) => {
                        let mut cubin = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()).result().map(|_| (cubin, log_of(prog))).map_err(CudaError::Nvrtc)
                    }
                }
            }
        };
        result::destroy_program(prog)?;
        out
    }
}

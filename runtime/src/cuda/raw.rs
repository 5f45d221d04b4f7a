//! Every raw CUDA driver and NVRTC call of the runtime (`cudarc::driver::{sys, result}`,
//! `cudarc::nvrtc::{sys, result}`), each behind a small function that states what it needs
//! (cudarc's own layering: sys → result → safe). The rest of the runtime uses cudarc's safe API
//! and these functions; type and constant names from `sys` are fine anywhere.

use std::ffi::{CStr, c_void};

use cudarc::driver::{CudaStream, DriverError, result as dresult, sys as dsys};
use cudarc::nvrtc::{result as nresult, sys as nsys};

/// Whether the CUDA driver library can be loaded.
pub(crate) fn driver_present() -> bool {
    // SAFETY: only checks whether the library can be opened.
    unsafe { dsys::is_culib_present() }
}

/// Whether `stream` has finished all its work (`Ok(false)`: still busy), or the error that
/// ended it.
pub(crate) fn stream_idle(stream: &CudaStream) -> Result<bool, DriverError> {
    // SAFETY: a live stream of a live context (the `CudaStream` keeps both).
    match unsafe { dsys::cuStreamQuery(stream.cu_stream()) } {
        dsys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
        dsys::CUresult::CUDA_SUCCESS => Ok(true),
        e => Err(DriverError(e)),
    }
}

/// `bytes` of page-locked host memory of the current context, also mapped into the device's
/// address space where `mapped`.
///
/// # Safety
/// A context must be bound to the thread; the memory is uninitialised and must be released with
/// [`host_free`].
pub(crate) unsafe fn host_alloc(bytes: usize, mapped: bool) -> Result<*mut c_void, DriverError> {
    let flags = if mapped { dsys::CU_MEMHOSTALLOC_DEVICEMAP } else { 0 };
    // SAFETY: the caller's context; `bytes` as asked.
    unsafe { dresult::malloc_host(bytes, flags) }
}

/// Release memory from [`host_alloc`].
///
/// # Safety
/// `ptr` came from [`host_alloc`], is freed once, and no copy or kernel still uses it.
pub(crate) unsafe fn host_free(ptr: *mut c_void) -> Result<(), DriverError> {
    // SAFETY: as the caller promises.
    unsafe { dresult::free_host(ptr) }
}

/// The device address of mapped page-locked memory.
///
/// # Safety
/// `ptr` came from [`host_alloc`] with `mapped` and is still allocated.
pub(crate) unsafe fn host_device_ptr(ptr: *mut c_void) -> Result<dsys::CUdeviceptr, DriverError> {
    let mut d: dsys::CUdeviceptr = 0;
    // SAFETY: `d` is valid for writes; `ptr` as the caller promises.
    unsafe { dsys::cuMemHostGetDevicePointer_v2(&mut d, ptr, 0).result()? };
    Ok(d)
}

/// Copy `src` to device address `dst` on `stream`, asynchronously.
///
/// # Safety
/// `dst` holds at least `src.len()` words; `src` (page-locked for a truly asynchronous copy)
/// stays unchanged until the stream has passed the copy.
pub(crate) unsafe fn copy_htod_async(dst: dsys::CUdeviceptr, src: &[u32], stream: &CudaStream) -> Result<(), DriverError> {
    // SAFETY: as the caller promises.
    unsafe { dresult::memcpy_htod_async(dst, src, stream.cu_stream()) }
}

/// Copy `height` rows of `width` bytes between device buffers on `stream`: row y starts at
/// `src + y · src_pitch + src_x` and lands at `dst + y · dst_pitch`.
///
/// # Safety
/// Every source and destination row lies inside its buffer, and the buffers live until the
/// stream has passed the copy.
pub(crate) unsafe fn copy_2d_dtod_async(
    (src, src_x, src_pitch): (dsys::CUdeviceptr, usize, usize),
    (dst, dst_pitch): (dsys::CUdeviceptr, usize),
    (width, height): (usize, usize),
    stream: &CudaStream,
) -> Result<(), DriverError> {
    let c = dsys::CUDA_MEMCPY2D {
        srcXInBytes: src_x,
        srcY: 0,
        srcMemoryType: dsys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: std::ptr::null(),
        srcDevice: src,
        srcArray: std::ptr::null_mut(),
        srcPitch: src_pitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: dsys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: dst,
        dstArray: std::ptr::null_mut(),
        dstPitch: dst_pitch,
        WidthInBytes: width,
        Height: height,
    };
    // SAFETY: `c` describes device memory as the caller promises; a live stream.
    unsafe { dsys::cuMemcpy2DAsync_v2(&c, stream.cu_stream()).result() }
}

/// Set `n` bytes at device address `at` to `value` on `stream`.
///
/// # Safety
/// The `n` bytes lie inside a live device buffer.
pub(crate) unsafe fn memset_d8_async(at: dsys::CUdeviceptr, value: u8, n: usize, stream: &CudaStream) -> Result<(), DriverError> {
    // SAFETY: as the caller promises.
    unsafe { dsys::cuMemsetD8Async(at, value, n, stream.cu_stream()).result() }
}

/// Set `n` 32-bit words at device address `at` (4-byte aligned) to `value` on `stream`.
///
/// # Safety
/// The `n` words lie inside a live device buffer.
pub(crate) unsafe fn memset_d32_async(at: dsys::CUdeviceptr, value: u32, n: usize, stream: &CudaStream) -> Result<(), DriverError> {
    // SAFETY: as the caller promises.
    unsafe { dsys::cuMemsetD32Async(at, value, n, stream.cu_stream()).result() }
}

/// Whether the NVRTC library can be loaded.
pub(crate) fn nvrtc_present() -> bool {
    // SAFETY: only checks whether the library can be opened.
    unsafe { nsys::is_culib_present() }
}

/// NVRTC's `(major, minor)` version.
pub(crate) fn nvrtc_version() -> Result<(i32, i32), nresult::NvrtcError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are valid for writes.
    unsafe { nsys::nvrtcVersion(&mut major, &mut minor) }.result()?;
    Ok((major, minor))
}

/// What one NVRTC compilation gave: the CUBIN with NVRTC's log, or (a compile error) the log.
pub(crate) type Compiled = Result<(Vec<u8>, String), String>;

/// Compile `src` (named `name` in NVRTC's messages) with `opts` to a CUBIN; the outer error is an
/// NVRTC failure other than a compile error.
pub(crate) fn nvrtc_compile(src: &CStr, name: &CStr, opts: &[String]) -> Result<Compiled, nresult::NvrtcError> {
    let prog = nresult::create_program(src, Some(name))?;
    let log = |prog| {
        // SAFETY: called only on the live program below.
        let log = unsafe { nresult::get_program_log(prog) }.unwrap_or_default();
        let log: Vec<u8> = log.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&log).into_owned()
    };
    // SAFETY: `prog` was created above and is destroyed exactly once below; `src` and `name`
    // outlive it; the CUBIN buffer has the size NVRTC reports.
    unsafe {
        let out = match nresult::compile_program(prog, opts) {
            Err(_) => Ok(Err(log(prog))),
            Ok(()) => {
                let mut size = 0usize;
                nsys::nvrtcGetCUBINSize(prog, &mut size).result().and_then(|()| {
                    let mut cubin = vec![0u8; size];
                    nsys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()).result().map(|()| Ok((cubin, log(prog))))
                })
            }
        };
        nresult::destroy_program(prog)?;
        out
    }
}

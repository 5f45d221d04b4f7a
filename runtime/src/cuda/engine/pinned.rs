//! Page-locked host words without cudarc's per-copy events: the engine orders its staging copies
//! itself (one stream; a copy out of the staging is known finished once the call that issued it
//! saw its result), so each call saves the event record and stream wait cudarc adds around a copy
//! from a [`cudarc::driver::PinnedHostSlice`]. Optionally mapped into the device's address space,
//! for results the persistent kernel writes straight to the host.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError, sys};

use super::super::raw;
use rayon::prelude::*;

/// `len` page-locked, zero-initialised 32-bit words.
pub(super) struct PinnedWords {
    ptr: *mut u32,
    len: usize,
    /// Synchronized before the memory is freed: a copy or kernel may still use it.
    stream: Arc<CudaStream>,
}

// SAFETY: the words are only reached through `&mut GpuEngine` (or atomically, see `load`).
unsafe impl Send for PinnedWords {}

impl PinnedWords {
    /// Allocate; `mapped`: also addressable from the device ([`PinnedWords::device_ptr`]).
    pub fn new(stream: &Arc<CudaStream>, len: usize, mapped: bool) -> Result<PinnedWords, DriverError> {
        stream.context().bind_to_thread()?;
        let len = len.max(1);
        // SAFETY: the stream's context is bound (above); a fresh allocation of `4 · len` bytes,
        // zeroed before any use and freed once, on drop.
        let ptr = unsafe { raw::host_alloc(4 * len, mapped)? } as *mut u32;
        // SAFETY: `ptr` holds `len` u32 words, just allocated.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(PinnedWords { ptr, len, stream: stream.clone() })
    }

    /// The words, for the host to fill. The caller makes sure no copy from them is pending.
    pub fn words_mut(&mut self) -> &mut [u32] {
        // SAFETY: `len` initialised words owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Word `i`, read atomically (the device may be writing it).
    pub fn load(&self, i: usize, order: Ordering) -> u32 {
        assert!(i < self.len);
        // SAFETY: in bounds and 4-byte aligned; AtomicU32 has u32's layout.
        unsafe { (*(self.ptr.add(i) as *const AtomicU32)).load(order) }
    }

    /// The device's address of a mapped allocation.
    pub fn device_ptr(&self) -> Result<sys::CUdeviceptr, DriverError> {
        // SAFETY: `ptr` is a live page-locked allocation of this context (mapped where asked).
        unsafe { raw::host_device_ptr(self.ptr as *mut std::ffi::c_void) }
    }

    /// Copy the first `n` words to `dst` on the stream (asynchronous: the words must stay
    /// unchanged until the stream has passed the copy).
    pub fn copy_to(&self, n: usize, dst: sys::CUdeviceptr) -> Result<(), DriverError> {
        assert!(n <= self.len);
        // SAFETY: `n` initialised words; `dst` holds at least as many (the caller's buffer).
        unsafe { raw::copy_htod_async(dst, std::slice::from_raw_parts(self.ptr, n), &self.stream) }
    }
}

impl Drop for PinnedWords {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        // SAFETY: allocated by `host_alloc`, no longer used by the device (synchronized above).
        let _ = unsafe { raw::host_free(self.ptr as *mut std::ffi::c_void) };
    }
}

/// Buffers of at least this many bytes are uploaded through [`upload_staged`].
const STAGED_MIN_BYTES: usize = 32 << 20;

/// Words per staging chunk (8 MiB).
const CHUNK_WORDS: usize = 2 << 20;

/// The threads that fill the staging chunks: a pool of their own (a quarter of the cores, 1 to 4),
/// because the parameter validation runs beside the upload on rayon's global pool; sharing it,
/// the fills queued behind the validation's work and hclt512's upload took 147 ms instead of 63
/// (H100 host, 2026-12-07, `bench/results/2026-12-07-h100-suite-e78f9b1.jsonl`).
fn staging_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new().num_threads((cores / 4).clamp(1, 4)).thread_name(|i| format!("pcc-stage-{i}")).build().ok()
    })
    .as_ref()
}

/// `src` (4-byte values, `bits` giving each one's bit pattern) in a new device buffer. Large
/// buffers go through two page-locked chunks that the staging pool's threads fill while the copy engine
/// drains the other: a copy from pageable memory runs at the speed of the driver's own
/// single-threaded staging (~9 GB/s on the H100 hosts: hclt512's 1 GB of parameters took
/// ~110 ms of its warm start).
pub(super) fn upload_staged<T: DeviceRepr + Copy + Sync>(
    stream: &Arc<CudaStream>,
    src: &[T],
    bits: impl Fn(T) -> u32 + Sync,
) -> Result<CudaSlice<T>, DriverError> {
    assert_eq!(std::mem::size_of::<T>(), 4, "4-byte values");
    if src.is_empty() || 4 * src.len() < STAGED_MIN_BYTES {
        return stream.clone_htod(src);
    }
    // SAFETY: every element is written by the copies below, which the stream orders before any
    // later use of the buffer.
    let dst = unsafe { stream.alloc::<T>(src.len()) }?;
    let base = dst.device_ptr(stream).0;
    let mut bufs = [PinnedWords::new(stream, CHUNK_WORDS, false)?, PinnedWords::new(stream, CHUNK_WORDS, false)?];
    let mut done: [Option<CudaEvent>; 2] = [None, None];
    for (i, chunk) in src.chunks(CHUNK_WORDS).enumerate() {
        let k = i % 2;
        // The copy that last read this staging chunk must be over before it is refilled.
        if let Some(e) = done[k].take() {
            e.synchronize()?;
        }
        let words = &mut bufs[k].words_mut()[..chunk.len()];
        let mut fill = || words.par_chunks_mut(1 << 16).zip(chunk.par_chunks(1 << 16)).for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d = bits(*s)));
        // (Rayon's global pool if the staging threads could not be started.)
        match staging_pool() {
            Some(pool) => pool.install(fill),
            None => fill(),
        }
        bufs[k].copy_to(chunk.len(), base + 4 * (i * CHUNK_WORDS) as u64)?;
        done[k] = Some(stream.record_event(None)?);
    }
    // Dropping the chunks synchronizes the stream: the last copies are over.
    Ok(dst)
}

//! NCCL, loaded at run time like the driver and NVRTC, so a pcc build needs no CUDA toolkit and
//! runs without NCCL until several GPUs are asked for.
//!
//! The types are cudarc's (`nccl` feature); the library is opened here rather than through
//! cudarc's loader because the NCCL users install with pip (`nvidia-nccl-cu13`) is
//! `libnccl.so.2` inside the Python environment, a name and place cudarc's candidates miss.
//! Results are read as `c_int`, never as cudarc's `ncclResult_t` enum: NCCL may return codes
//! the enum does not list.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::sys::{cudaStream_t, ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId};

use super::{Hub, ParallelError};

const NCCL_SUCCESS: c_int = 0;
const NCCL_IN_PROGRESS: c_int = 7;

/// The loaded library and where it came from.
struct Lib {
    f: Fns,
    path: String,
    _lib: libloading::Library,
}

/// The NCCL entry points pcc uses.
struct Fns {
    get_version: unsafe extern "C" fn(*mut c_int) -> c_int,
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> c_int,
    all_reduce: unsafe extern "C" fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t) -> c_int,
    group_start: unsafe extern "C" fn() -> c_int,
    group_end: unsafe extern "C" fn() -> c_int,
    comm_get_async_error: unsafe extern "C" fn(ncclComm_t, *mut c_int) -> c_int,
    comm_abort: unsafe extern "C" fn(ncclComm_t) -> c_int,
    comm_destroy: unsafe extern "C" fn(ncclComm_t) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
}

/// Where NCCL is looked for, in order: `PCC_NCCL_LIB`, the loader's search path, then the
/// `nvidia/nccl/lib` folder of the Python environments a pip install puts it in (active venv or
/// conda, user site, each `python3` on `PATH`, the system's).
fn candidates() -> Vec<PathBuf> {
    let mut c: Vec<PathBuf> = std::env::var_os("PCC_NCCL_LIB").map(PathBuf::from).into_iter().collect();
    c.extend(["libnccl.so.2", "libnccl.so"].map(PathBuf::from));
    let mut prefixes: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"].iter().filter_map(std::env::var_os).map(PathBuf::from).collect();
    if let Some(home) = std::env::var_os("HOME") {
        prefixes.push(PathBuf::from(home).join(".local"));
    }
    // Environments on PATH but not activated (e.g. PyTorch's venv): the prefix of each python3.
    for dir in std::env::var_os("PATH").iter().flat_map(std::env::split_paths) {
        if dir.join("python3").exists()
            && let Some(prefix) = dir.parent()
        {
            prefixes.push(prefix.to_path_buf());
        }
    }
    prefixes.extend(["/usr/local", "/usr", "/opt/conda"].map(PathBuf::from));
    for prefix in prefixes {
        let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else { continue };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("python3") {
                for site in ["site-packages", "dist-packages"] {
                    c.push(e.path().join(site).join("nvidia/nccl/lib/libnccl.so.2"));
                }
            }
        }
    }
    c
}

fn lib() -> Result<&'static Lib, ParallelError> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(open).as_ref().map_err(|tried| ParallelError::NcclMissing { tried: tried.clone() })
}

fn open() -> Result<Lib, String> {
    let all = candidates();
    for path in &all {
        if path.components().count() > 1 && !path.exists() {
            continue;
        }
        // SAFETY: opening NCCL runs its (trusted) initialisers only.
        let Ok(lib) = (unsafe { libloading::Library::new(path) }) else { continue };
        // SAFETY: the symbols are NCCL's public C API with these signatures (nccl.h, 2.18+).
        if let Ok(f) = unsafe { symbols(&lib) } {
            return Ok(Lib { f, path: path.display().to_string(), _lib: lib });
        }
    }
    let shown: Vec<String> = all.iter().take(3).map(|p| p.display().to_string()).collect();
    Err(format!("{} and the Python environments' nvidia/nccl/lib", shown.join(", ")))
}

/// # Safety
/// `lib` must be NCCL.
unsafe fn symbols(lib: &libloading::Library) -> Result<Fns, libloading::Error> {
    // SAFETY: as the caller promises; the function pointers are copied out, and `Lib` keeps the
    // library loaded for as long as they are used.
    unsafe {
        Ok(Fns {
            get_version: *lib.get(b"ncclGetVersion\0")?,
            get_unique_id: *lib.get(b"ncclGetUniqueId\0")?,
            comm_init_rank: *lib.get(b"ncclCommInitRank\0")?,
            all_reduce: *lib.get(b"ncclAllReduce\0")?,
            group_start: *lib.get(b"ncclGroupStart\0")?,
            group_end: *lib.get(b"ncclGroupEnd\0")?,
            comm_get_async_error: *lib.get(b"ncclCommGetAsyncError\0")?,
            comm_abort: *lib.get(b"ncclCommAbort\0")?,
            comm_destroy: *lib.get(b"ncclCommDestroy\0")?,
            get_error_string: *lib.get(b"ncclGetErrorString\0")?,
        })
    }
}

/// Whether an NCCL library can be loaded, and which (path and version), or why not.
pub fn available() -> Result<String, ParallelError> {
    let l = lib()?;
    let mut v: c_int = 0;
    // SAFETY: `v` is valid for writes.
    check("ncclGetVersion", unsafe { (l.f.get_version)(&mut v) })?;
    Ok(format!("{} (NCCL {}.{}.{})", l.path, v / 10000, (v / 100) % 100, v % 100))
}

fn check(call: &'static str, code: c_int) -> Result<(), ParallelError> {
    if code == NCCL_SUCCESS {
        return Ok(());
    }
    let message = match lib() {
        // SAFETY: NCCL returns a static string for any code.
        Ok(l) => unsafe { CStr::from_ptr((l.f.get_error_string)(code)) }.to_string_lossy().into_owned(),
        Err(_) => String::new(),
    };
    Err(ParallelError::Nccl { call, message: format!("{message} (code {code})") })
}

/// One rank's NCCL communicator, on the device of the engine that made it.
pub struct NcclComm {
    comm: ncclComm_t,
    timeout: Duration,
}

// SAFETY: a communicator may be used from any thread, one at a time (`&mut self` calls).
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// Every rank calls this together: rank 0 makes the unique id, the hub carries it to the
    /// others, and each joins the communicator on `ctx`'s device.
    pub fn init(hub: &mut Hub, ctx: &Arc<CudaContext>) -> Result<NcclComm, ParallelError> {
        let mine = match lib() {
            Ok(l) if hub.rank() == 0 => {
                let mut id = ncclUniqueId { internal: [0; 128] };
                // SAFETY: `id` is valid for writes.
                check("ncclGetUniqueId", unsafe { (l.f.get_unique_id)(&mut id) }).map(|()| id.internal.iter().map(|&c| c as u8).collect())
            }
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        let mine = match mine {
            Ok(m) => m,
            Err(e) => {
                hub.fail(&e.to_string());
                return Err(e);
            }
        };
        let bytes = hub.broadcast(mine)?;
        let l = lib()?;
        let mut id = ncclUniqueId { internal: [0; 128] };
        if bytes.len() != id.internal.len() {
            return Err(ParallelError::Mismatch(format!("rank 0 sent an NCCL id of {} bytes", bytes.len())));
        }
        id.internal.iter_mut().zip(&bytes).for_each(|(d, &b)| *d = b as c_char);
        ctx.bind_to_thread().map_err(|e| ParallelError::Nccl { call: "cuCtxSetCurrent", message: e.to_string() })?;
        let mut comm: ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is valid for writes; every rank passes the same id and world size.
        check("ncclCommInitRank", unsafe { (l.f.comm_init_rank)(&mut comm, hub.size() as c_int, id, hub.rank() as c_int) })?;
        Ok(NcclComm { comm, timeout: hub.timeout() })
    }

    /// Sum `bufs` (device address, f32 count) over the ranks, in place, on `stream`, and wait
    /// for it (at most the hub's timeout: a rank that never joins aborts the communicator
    /// instead of hanging this one).
    ///
    /// # Safety
    /// Each buffer holds that many f32 on this communicator's device, and nothing else uses it
    /// until this returns.
    pub unsafe fn all_reduce_sum(&mut self, stream: &Arc<CudaStream>, bufs: &[(u64, usize)]) -> Result<(), ParallelError> {
        let l = lib()?;
        let raw = stream.cu_stream() as cudaStream_t;
        // SAFETY: NCCL group calls bracket the launches below.
        check("ncclGroupStart", unsafe { (l.f.group_start)() })?;
        for &(ptr, len) in bufs {
            // SAFETY: as the caller promises; in place; the stream orders it after the backward
            // pass that wrote it.
            let code =
                unsafe { (l.f.all_reduce)(ptr as *const c_void, ptr as *mut c_void, len, ncclDataType_t::ncclFloat32, ncclRedOp_t::ncclSum, self.comm, raw) };
            if code != NCCL_SUCCESS {
                // SAFETY: closes the group opened above.
                unsafe { (l.f.group_end)() };
                return check("ncclAllReduce", code);
            }
        }
        // SAFETY: closes the group opened above.
        check("ncclGroupEnd", unsafe { (l.f.group_end)() })?;
        self.wait(stream)
    }

    /// Poll the stream and NCCL's asynchronous error until the reduction is done.
    fn wait(&mut self, stream: &Arc<CudaStream>) -> Result<(), ParallelError> {
        let l = lib()?;
        let t0 = Instant::now();
        loop {
            match crate::cuda::stream_idle(stream) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(ParallelError::Nccl { call: "all-reduce (stream)", message: e.to_string() }),
            }
            let mut async_err: c_int = NCCL_SUCCESS;
            // SAFETY: `async_err` is valid for writes; the communicator is live.
            check("ncclCommGetAsyncError", unsafe { (l.f.comm_get_async_error)(self.comm, &mut async_err) })?;
            if async_err != NCCL_SUCCESS && async_err != NCCL_IN_PROGRESS {
                self.abort();
                return check("all-reduce", async_err);
            }
            if t0.elapsed() > self.timeout {
                self.abort();
                return Err(ParallelError::NcclTimeout { secs: self.timeout.as_secs() });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn abort(&mut self) {
        if let Ok(l) = lib()
            && !self.comm.is_null()
        {
            // SAFETY: the communicator is live; it is not used afterwards.
            unsafe { (l.f.comm_abort)(self.comm) };
            self.comm = std::ptr::null_mut();
        }
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if let Ok(l) = lib()
            && !self.comm.is_null()
        {
            // SAFETY: the communicator is live and used by no one else.
            unsafe { (l.f.comm_destroy)(self.comm) };
        }
    }
}

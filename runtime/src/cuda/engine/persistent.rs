//! The persistent small-batch forward launch ([`PersistentForward`]): its schedule for this
//! device, uploaded once, and the cooperative launch that runs it. Cooperative, because the
//! kernel's blocks wait on each other: the driver refuses the launch unless every block can be
//! resident at once, so a too-large grid is an error, never a hang.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, LaunchConfig, PushKernelArg, sys};

use crate::cuda::persistent::schedule;
use crate::cuda::units::Modules;
use crate::cuda::{CudaError, SMALL_BATCH};
use crate::manifest::PersistentForward;

pub(super) struct PersistentState {
    func: CudaFunction,
    /// Launches of `manifest.forward` (the input layers) that run before it.
    pub prologue: usize,
    /// Largest batch it runs (`PCC_PERSISTENT_MAX_BATCH` overrides the manifest, up to
    /// [`SMALL_BATCH`]).
    pub max_batch: usize,
    grid: u32,
    threads: u32,
    shared_bytes: u32,
    tasks: CudaSlice<u32>,
    children: CudaSlice<u32>,
    deps: CudaSlice<u32>,
    poff: CudaSlice<u32>,
    plist: CudaSlice<u32>,
    /// Generation, finished-block counter, then one flag per task.
    ctl: CudaSlice<u32>,
    /// Per task (8 words): see [`super::GpuEngine::persistent_trace`]. Only with
    /// `PCC_PERSISTENT_TRACE`.
    trace: Option<CudaSlice<u64>>,
}

/// Whether the persistent pass is switched on (yes unless `PCC_PERSISTENT=0`; see
/// [`PersistentState::load`]).
pub(super) fn enabled() -> bool {
    std::env::var("PCC_PERSISTENT").map_or(true, |v| v != "0")
}

impl PersistentState {
    /// Schedule `p` for this device and upload it; `None` where it is switched off
    /// (`PCC_PERSISTENT=0`), the device cannot launch cooperatively (e.g. some virtualized or
    /// MPS setups) or a block would not fit on an SM: then the per-depth launches run instead.
    ///
    /// It was off for a day (2026-12-07): on an H100 it gave wrong values at batches 1 and 2 for
    /// hclt128 on MNIST (128-node blocks, the pass's fast tasks, which `gpu_selftest --fast` did
    /// not cover then; `bench/results/2026-12-07-h100-small-batch-fa9712c.txt`). The host emulator
    /// reproduced it (`PCC_EMU_STRUCTURE`): the second producer warp gathered children before the
    /// first had waited for their flags. With the fix (each producer warp waits for every
    /// dependency) `latency` gave hclt128's CPU values exactly at batches 1–8 and the self-check,
    /// which now covers such blocks, passed (`bench/results/2026-12-07-h100-validate-2003cfd.txt`).
    pub fn load(ctx: &Arc<CudaContext>, modules: &Modules, stream: &Arc<CudaStream>, p: &PersistentForward) -> Result<Option<PersistentState>, CudaError> {
        if !enabled() {
            return Ok(None);
        }
        if ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH)? == 0 {
            return Ok(None);
        }
        let func = modules.function(&p.kernel)?;
        let sms = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        // Weight slots take the block past the default 48 KiB of shared memory: opt in (a device
        // with less shared memory per block keeps the per-depth launches).
        let opt_in = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?.max(0) as u32;
        if p.shared_bytes > opt_in {
            return Ok(None);
        }
        if p.shared_bytes > 48 * 1024 {
            func.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, p.shared_bytes as i32)?;
        }
        let per_sm = func.occupancy_max_active_blocks_per_multiprocessor(p.threads, p.shared_bytes as usize, None)?;
        if per_sm < 1 {
            return Ok(None);
        }
        let grid = sms.min(p.num_tasks()).max(1);
        let s = schedule(p, grid);
        if std::env::var_os("PCC_TRACE_START").is_some() {
            // Word 6 of each task: its dependencies on other blocks (`s.deps` holds only those
            // beyond the inline ones).
            let waits: u32 = s.tasks.chunks(crate::cuda::TASK_WORDS).map(|t| t[6]).sum();
            eprintln!("pcc: persistent forward: {} tasks on {grid} blocks, {waits} cross-block waits, modelled {:.1} us", p.num_tasks(), s.makespan_ns / 1e3);
        }
        let up = |v: &[u32]| if v.is_empty() { stream.clone_htod(&[0u32]) } else { stream.clone_htod(v) };
        Ok(Some(PersistentState {
            func,
            prologue: p.prologue as usize,
            max_batch: std::env::var("PCC_PERSISTENT_MAX_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(p.max_batch as usize).min(SMALL_BATCH),
            grid: grid as u32,
            threads: p.threads,
            shared_bytes: p.shared_bytes,
            tasks: up(&s.tasks)?,
            children: up(&p.children)?,
            deps: up(&s.deps)?,
            poff: up(&s.poff)?,
            plist: up(&s.plist)?,
            ctl: stream.alloc_zeros::<u32>(2 + p.num_tasks())?,
            trace: match std::env::var_os("PCC_PERSISTENT_TRACE") {
                Some(_) => Some(stream.alloc_zeros::<u64>(8 * p.num_tasks())?),
                None => None,
            },
        }))
    }

    /// The last launch's per-task trace, when tracing (`PCC_PERSISTENT_TRACE`).
    pub fn trace(&self, stream: &Arc<CudaStream>) -> Result<Option<Vec<u64>>, CudaError> {
        self.trace.as_ref().map(|t| stream.clone_dtoh(t)).transpose().map_err(CudaError::from)
    }

    /// Device bytes held.
    pub fn bytes(&self) -> usize {
        4 * (self.tasks.len() + self.children.len() + self.deps.len() + self.poff.len() + self.plist.len() + self.ctl.len())
    }

    /// Run every sum layer of a batch of `batch` samples (the input layers already ran). With
    /// `result` (the device address of host-mapped words, the call's sequence number on the
    /// device), the task that computes node `root` also writes its values, then the sequence
    /// number, to those words.
    pub fn launch(
        &self,
        stream: &CudaStream,
        nodes: &CudaSlice<f32>,
        sum_params: &CudaSlice<f32>,
        batch: usize,
        result: Option<(u64, &CudaView<u32>)>,
        root: u32,
    ) -> Result<(), CudaError> {
        let (b, no_trace, null) = (batch as i32, 0u64, 0u64);
        let mut l = stream.launch_builder(&self.func);
        l.arg(nodes).arg(sum_params).arg(&self.tasks).arg(&self.children).arg(&self.deps).arg(&self.poff).arg(&self.plist).arg(&self.ctl);
        match &self.trace {
            Some(t) => l.arg(t),
            None => l.arg(&no_trace),
        };
        l.arg(&b);
        match &result {
            Some((host, seq)) => l.arg(host).arg(*seq),
            None => l.arg(&null).arg(&null),
        };
        l.arg(&root);
        let cfg = LaunchConfig { grid_dim: (self.grid, 1, 1), block_dim: (self.threads, 1, 1), shared_mem_bytes: self.shared_bytes };
        // SAFETY: the arguments match the kernel's signature (emitted with the manifest); every
        // index in the tables lies inside the node and parameter buffers of this plan, and the
        // batch is at most SMALL_BATCH (the shared memory was sized for it).
        unsafe { l.launch_cooperative(cfg) }?;
        Ok(())
    }
}

//! The GPU engine: forward (log-likelihoods, marginals), backward (flows and leaf statistics,
//! accumulated on the device across calls) and EM. It loads the generated module for the device's
//! own architecture, keeps parameters, leaf tables, index tables and flow accumulators on the
//! device, allocates value buffers once per batch size and runs the manifest's steps in order on
//! one stream. EM runs on the device too (the CPU engine's rule, in f32), so a training step never
//! copies parameters to the host. Conditionals, MPE and sampling are in [`queries`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig, PinnedHostSlice, PushKernelArg, sys};

use super::units::{Modules, PERSISTENT_UNIT, compile_units, split_units};

mod data_parallel;
mod persistent;
mod pinned;
mod queries;
mod resident;

pub use resident::{DeviceData, STAGE_U8};

use pinned::PinnedWords;

use super::{CudaError, KernelArg, KernelCache, KernelSpec, Manifest, SMALL_BATCH, Step, TASK_WORDS};
use crate::RuntimeError;
use crate::data::Evidence;
use crate::em::check_em_hyper_parameters;
use crate::outputs::Flows;
use crate::params::Params;
use crate::plan::Plan;
use crate::soft::Soft;

/// A captured pass, replayed with one launch.
struct Graph(CudaGraph);

// SAFETY: a graph is only touched through `&mut GpuEngine` (never from two threads at once), and
// every cudarc call on it binds the context to the calling thread first.
unsafe impl Send for Graph {}

struct Buffers {
    // Graphs are declared first so they are destroyed before the buffers they point into.
    /// The forward pass captured for this batch size (inputs → root), when graphs are on.
    forward_graph: Option<Graph>,
    /// The forward pass of a training step (always the batch kernels: the tensor-core backward
    /// reads the maxima only they write), when it differs from `forward_graph` (small batches).
    train_graph: Option<Graph>,
    /// The backward steps captured for this batch size (after the root flows are set).
    backward_graph: Option<Graph>,
    batch: usize,
    nodes: CudaSlice<f32>,
    elems: CudaSlice<f32>,
    node_flows: CudaSlice<f32>,
    elem_flows: CudaSlice<f32>,
    /// Forward maxima of the tensor-core sum blocks (`KernelArg::SumMax`).
    smax: CudaSlice<f32>,
    /// The two-kernel sums' staged B operand (`KernelArg::XStage`).
    xstage: CudaSlice<u32>,
    /// The batch's input on the device ([`io_layout`]): values (f32), the missing mask (bytes)
    /// and the call's sequence number, uploaded from `staging` by one copy (two copies took
    /// ~3.5 µs more per call on an H200, `bench/micro/host_overhead.cu`).
    io: CudaSlice<u32>,
    /// Values per input row (variables × batch).
    io_n: usize,
    /// Page-locked staging of `io`: a copy from pageable memory goes through a driver bounce
    /// buffer and blocks the host.
    staging: PinnedWords,
    /// A copy out of `staging` may still be pending (cleared once a call saw its result).
    staging_busy: bool,
    /// The root's values, copied back (when the persistent pass does not write them to the host).
    host_root: PinnedHostSlice<f32>,
}

impl Buffers {
    fn bytes(&self) -> usize {
        4 * (self.nodes.len() + self.elems.len() + self.node_flows.len() + self.elem_flows.len() + self.smax.len() + self.xstage.len() + self.io.len())
    }
}

/// Check that `bytes` more fit in the device's free memory before allocating them (a failed
/// allocation midway would leave a half-built state and only the driver's bare error code), and
/// name an allocation failure that still happens (another process took the memory meanwhile).
fn ensure_fits(stream: &CudaStream, what: impl Fn() -> String, bytes: usize, hint: impl Fn(usize) -> String) -> Result<(), CudaError> {
    let (free, total) = stream.context().mem_get_info()?;
    if bytes > free {
        return Err(CudaError::OutOfMemory { what: what(), bytes: bytes as u64, free: free as u64, total: total as u64, hint: hint(free).into() });
    }
    Ok(())
}

/// [`ensure_fits`]'s error for an allocation that failed anyway.
fn name_oom(stream: &CudaStream, e: DriverError, what: impl Fn() -> String, bytes: usize, hint: impl Fn(usize) -> String) -> CudaError {
    match e.0 {
        sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => {
            let (free, total) = stream.context().mem_get_info().unwrap_or((0, 0));
            CudaError::OutOfMemory { what: what(), bytes: bytes as u64, free: free as u64, total: total as u64, hint: hint(free).into() }
        }
        _ => CudaError::from(e),
    }
}

/// Words of a batch's device input for `n` values: the values, ⌈n / 4⌉ words of mask bytes, the
/// sequence number; returns (words, the sequence number's word).
fn io_layout(n: usize) -> (usize, usize) {
    let seq = n + n.div_ceil(4);
    (seq + 1, seq)
}

/// Per-circuit device state: parameters, leaf constants, flow accumulators, index tables.
struct DeviceState {
    tables: Vec<CudaSlice<u32>>,
    sum_params: CudaSlice<f32>,
    input_params: CudaSlice<f32>,
    leaf_table: CudaSlice<f32>,
    sum_flows: CudaSlice<f32>,
    input_stats: CudaSlice<f32>,
    /// The leaves' owed missing-value flow (`KernelArg::LeafMass`, zero between passes); one
    /// word unless a statistics kernel binds it.
    leaf_mass: CudaSlice<f32>,
    /// The tensor-core forward's packed weights (`KernelArg::PackedWeights`), rewritten from
    /// `sum_params` by the pack kernels after every EM step.
    packed: CudaSlice<u32>,
    /// The soft-evidence mode (`KernelArg::SoftenKeep`: 1 hard, β softened, −1 dense) and its
    /// value on the device.
    soften: (CudaSlice<f32>, f32),
    /// Dense soft evidence of the current batch (`KernelArg::SoftProbs`); one word until some
    /// batch brings dense soft evidence, then grown as needed.
    soft_probs: CudaSlice<f32>,
}

impl DeviceState {
    /// Upload the index tables and parameters; allocate the accumulators (zeroed).
    fn upload(stream: &Arc<CudaStream>, plan: &Plan, params: &Params, manifest: &Manifest) -> Result<DeviceState, CudaError> {
        // `PCC_TRACE_START=1` prints each upload phase (to find where a warm start goes).
        let trace = std::env::var_os("PCC_TRACE_START").is_some();
        let lap = |what: &str, t: &mut Instant| {
            if trace {
                let _ = stream.synchronize();
                eprintln!("pcc: start: {what} {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
                *t = Instant::now();
            }
        };
        let words = manifest.tables.iter().map(|t| t.len().max(1)).sum::<usize>()
            + 2 * params.sum.len()
            + params.input.len()
            + 2 * plan.num_input_flows as usize
            + if manifest.takes(&KernelArg::LeafMass) { plan.num_nodes as usize } else { 0 }
            + manifest.packed_words as usize;
        let what = || "the circuit's parameters, flow accumulators and index tables".to_string();
        ensure_fits(stream, what, 4 * words, |_| "a smaller circuit, or a device with more memory".into())?;
        let mut t1 = Instant::now();
        let up_u32 = |v: &[u32]| if v.is_empty() { stream.clone_htod(&[0u32]) } else { pinned::upload_staged(stream, v, |w| w) };
        let tables = manifest.tables.iter().map(|t| up_u32(t)).collect::<Result<Vec<_>, _>>()?;
        lap(&format!("{} index tables", manifest.tables.len()), &mut t1);
        let up_f32 = |v: &[f32]| if v.is_empty() { stream.clone_htod(&[0f32]) } else { pinned::upload_staged(stream, v, f32::to_bits) };
        let (sum_params, input_params) = (up_f32(&params.sum)?, up_f32(&params.input)?);
        lap(&format!("{} parameters", params.sum.len() + params.input.len()), &mut t1);
        let sum_flows = stream.alloc_zeros::<f32>(plan.num_sum_params as usize)?;
        let input_stats = stream.alloc_zeros::<f32>((plan.num_input_flows as usize).max(1))?;
        // Only Bernoulli and Gaussian leaves read constants from a table (categorical ones take
        // the logarithm of their probabilities in the kernel): one word when no kernel binds it.
        let table_len = if manifest.takes(&KernelArg::LeafTable) { plan.num_input_flows as usize } else { 0 };
        let leaf_table = stream.alloc_zeros::<f32>(table_len.max(1))?;
        let mass_len = if manifest.takes(&KernelArg::LeafMass) { plan.num_nodes as usize } else { 0 };
        let leaf_mass = stream.alloc_zeros::<f32>(mass_len.max(1))?;
        let packed = stream.alloc_zeros::<u32>((manifest.packed_words as usize).max(1))?;
        let soften = (stream.clone_htod(&[1f32])?, 1.0);
        let soft_probs = stream.alloc_zeros::<f32>(1)?;
        lap("zeroed accumulators and leaf table", &mut t1);
        stream.synchronize()?;
        Ok(DeviceState { tables, sum_params, input_params, leaf_table, sum_flows, input_stats, leaf_mass, packed, soften, soft_probs })
    }
}

/// What [`GpuEngine::open`] gives: the device, its kernels and the time of each phase.
struct Opened {
    stream: Arc<CudaStream>,
    device_name: String,
    kernels: Kernels,
    pending: Option<PendingCompile>,
    host_out: Option<HostOut>,
    t_context: Duration,
    t_kernels: Duration,
}

/// The loaded kernels of a source.
struct Kernels {
    /// Each forward launch's function and its small-batch variant's.
    forward: Vec<(CudaFunction, Option<CudaFunction>)>,
    backward: Vec<Option<CudaFunction>>,
    em: Vec<CudaFunction>,
    /// The copy of byte rows of resident data into a pass's inputs, when the source defines it
    /// (sources emitted before it existed keep their datasets as floats).
    stage_u8: Option<CudaFunction>,
    queries: queries::QueryFns,
    /// The small-batch forward pass as one persistent launch, when the plan has one.
    persistent: Option<persistent::PersistentState>,
}

/// The persistent kernel's compile, still running on its own thread.
type PendingCompile = std::thread::JoinHandle<Result<Vec<u8>, CudaError>>;

/// Host-mapped words the persistent pass writes results to, and their device address.
type HostOut = (PinnedWords, u64);

impl Kernels {
    /// An embedded CUBIN for `arch` is the whole source; otherwise its units compile in
    /// parallel, and the persistent kernel (small batches only, the largest unit) on a thread of
    /// its own that the first small batch waits for: the batch kernels are ready first.
    #[allow(clippy::too_many_arguments)]
    fn load(
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        plan: &Plan,
        source: &str,
        cubins: &[(&str, &[u8])],
        manifest: &Manifest,
        cache: &KernelCache,
        arch: &str,
    ) -> Result<(Kernels, Option<PendingCompile>, Option<HostOut>), CudaError> {
        let (cubins, pending) = match cubins.iter().find(|(a, _)| *a == arch) {
            Some((_, bytes)) => (vec![(None, bytes.to_vec())], None),
            None => {
                let mut units = split_units(source);
                // Not compiled at all while the pass is switched off.
                let unit = units.iter().position(|u| u.name == PERSISTENT_UNIT).map(|i| units.remove(i));
                let pending = unit.filter(|_| persistent::enabled()).map(|u| {
                    let (cache, arch) = (cache.clone(), arch.to_string());
                    std::thread::spawn(move || cache.get_or_compile(&u.source, "persistent.cu", &arch).map(|(c, _)| c))
                });
                let cubins = compile_units(cache, &units, arch)?;
                (units.into_iter().map(|u| Some(u.source)).zip(cubins).collect(), pending)
            }
        };
        let modules = Modules::load(ctx, cubins)?;
        let load = |k: &KernelSpec| modules.function(&k.name);
        let forward = manifest.forward.iter().map(|k| Ok((load(k)?, k.small.as_deref().map(load).transpose()?))).collect::<Result<Vec<_>, CudaError>>()?;
        let backward = manifest
            .backward
            .iter()
            .map(|s| match s {
                Step::Launch(k) => load(k).map(Some),
                Step::ZeroElementFlows => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let em = manifest.em.iter().map(load).collect::<Result<Vec<_>, _>>()?;
        let stage_u8 = match source.contains(&format!(" {}(", resident::STAGE_U8)) {
            true => Some(modules.function(resident::STAGE_U8)?),
            false => None,
        };
        let queries = queries::QueryFns::load(&modules, &manifest.queries)?;
        let persistent = match (&manifest.persistent, &pending) {
            (Some(p), None) => persistent::PersistentState::load(ctx, &modules, stream, p)?,
            _ => None,
        };
        // The root's values straight to the host when a task of the persistent pass writes it.
        let root = plan.root;
        let root_in_tasks = manifest.persistent.as_ref().is_some_and(|p| p.tasks.chunks(TASK_WORDS).any(|t| root.wrapping_sub(t[1]) < t[7]));
        let host_out = match (persistent.is_some() || pending.is_some()) && root_in_tasks && std::env::var("PCC_HOST_RESULT").map_or(true, |v| v != "0") {
            true => {
                let w = PinnedWords::new(stream, 1 + SMALL_BATCH, true)?;
                let d = w.device_ptr()?;
                Some((w, d))
            }
            false => None,
        };
        Ok((Kernels { forward, backward, em, stage_u8, queries, persistent }, pending, host_out))
    }
}

/// Everything a launch may bind.
struct Bind<'a> {
    bufs: Option<&'a Buffers>,
    dev: &'a DeviceState,
    /// EM step size and pseudocount (EM launches only).
    em: (f32, f32),
    /// Query output buffer, sampling seed and the batch's first global sample (query launches only).
    out: Option<&'a CudaSlice<f32>>,
    seed: u64,
    sample0: u32,
}

impl<'a> Bind<'a> {
    /// The binding of a value, flow or EM pass (no query output).
    fn pass(bufs: Option<&'a Buffers>, dev: &'a DeviceState, em: (f32, f32)) -> Bind<'a> {
        Bind { bufs, dev, em, out: None, seed: 0, sample0: 0 }
    }
}

/// A circuit on one GPU.
pub struct GpuEngine {
    plan: Plan,
    manifest: Manifest,
    stream: Arc<CudaStream>,
    /// Every kernel of the source, loaded.
    kernels: Kernels,
    dev: DeviceState,
    total_flow: f64,
    buffers: Option<Buffers>,
    /// The device's name, for messages.
    pub device_name: String,
    startup: StartupTimings,
    use_graphs: bool,
    /// Graph capture of the persistent pass failed once (warned, graphs off).
    warned_capture: bool,
    /// Bytes of device memory this engine holds now (per-circuit state plus batch buffers) and the
    /// most it has held at once.
    bytes: (usize, usize),
    /// Host-mapped words the persistent pass writes the root's values to ([0] the call's sequence
    /// number, then the values), with their device address; `None` without a persistent pass or
    /// with `PCC_HOST_RESULT=0`. Declared after `buffers`: the graphs that write it go first.
    host_out: Option<HostOut>,
    /// The last call's sequence number (0 is never used).
    seq: u32,
    /// The persistent kernel's compile, still running on its own thread (see `ready_persistent`).
    pending_persistent: Option<PendingCompile>,
}

/// Largest batch that runs the small-batch variants (fp32 warp-per-node sums and fused products;
/// larger batches run the batch kernels, on tensor cores where emitted): the manifest's
/// `small_max_batch`, or `PCC_SMALL_MAX` in its place (at most [`SMALL_BATCH`]) to compare the
/// two paths at a batch size on a device.
fn small_max(manifest: &Manifest) -> usize {
    static MAX: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let env = *MAX.get_or_init(|| std::env::var("PCC_SMALL_MAX").ok().and_then(|v| v.parse().ok()));
    env.unwrap_or(manifest.small_max_batch as usize).min(SMALL_BATCH)
}

/// Where [`GpuEngine::new`] spent its time (for the warm-start budget).
#[derive(Clone, Copy, Debug, Default)]
pub struct StartupTimings {
    /// Validating the parameters' values against the plan (host), on a thread of its own beside
    /// the upload: it adds to the wall time only where it outlasts it.
    pub validate: Duration,
    /// Creating (or retaining) the CUDA context of device 0 and its stream.
    pub context: Duration,
    /// Kernel cache lookup (or NVRTC) and loading the module and its functions.
    pub kernels: Duration,
    /// Uploading parameters and index tables, allocating the flow accumulators.
    pub upload: Duration,
    /// Computing the leaf constants on the device.
    pub leaf_table: Duration,
}

impl StartupTimings {
    /// Wall time: the validation overlaps the upload.
    pub fn total(&self) -> Duration {
        self.context + self.kernels + self.validate.max(self.upload) + self.leaf_table
    }
}

impl GpuEngine {
    /// Compile (or fetch from `cache`) `source` for device 0 and upload everything the manifest
    /// needs. Parameters are validated against the plan first.
    pub fn new(plan: Plan, params: Params, source: &str, manifest: Manifest, cache: &KernelCache) -> Result<GpuEngine, RuntimeError> {
        Self::with_cubins(plan, params, source, &[], manifest, cache)
    }

    /// As [`GpuEngine::new`], but a CUBIN compiled ahead of time for the device's architecture
    /// (`cubins`: `("90", bytes)` pairs, e.g. embedded by a build script) is loaded directly, so
    /// such a device needs neither NVRTC nor the cache; other devices fall back to NVRTC.
    pub fn with_cubins(
        plan: Plan,
        params: Params,
        source: &str,
        cubins: &[(&str, &[u8])],
        manifest: Manifest,
        cache: &KernelCache,
    ) -> Result<GpuEngine, RuntimeError> {
        Self::on_device(0, plan, params, source, cubins, manifest, cache)
    }

    /// As [`GpuEngine::with_cubins`], on GPU `ordinal` (data-parallel ranks drive one each).
    pub fn on_device(
        ordinal: usize,
        plan: Plan,
        params: Params,
        source: &str,
        cubins: &[(&str, &[u8])],
        manifest: Manifest,
        cache: &KernelCache,
    ) -> Result<GpuEngine, RuntimeError> {
        // Lengths first (a wrong length must never reach a kernel). The pass over every value
        // (~50 ms for 200M parameters) runs beside the upload, which only copies; no kernel runs
        // before it has passed. (Beside the kernel loading too, it slowed the driver's module
        // loads from 2 to 55 ms on hclt512.)
        params.check_shape(&plan)?;
        let Opened { stream, device_name, kernels, pending, host_out, t_context, t_kernels } = Self::open(ordinal, &plan, source, cubins, &manifest, cache)?;
        let (checked, uploaded) = std::thread::scope(|s| {
            let check = s.spawn(|| {
                let t = Instant::now();
                params.validate(&plan).map(|()| t.elapsed())
            });
            let t = Instant::now();
            let dev = DeviceState::upload(&stream, &plan, &params, &manifest).map(|d| (d, t.elapsed()));
            (check.join(), dev)
        });
        let t_validate = checked.unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        let (dev, t_upload) = uploaded?;
        let t0 = Instant::now();
        // The leaf constants are computed on the device by the leaf EM kernels with η = 0 and
        // α = 0 on the (still zero) statistics: parameters stay, constants are refreshed. This
        // replaces a host pass and an upload as large as the leaf parameters. The pack kernels
        // write the tensor-core forward's copy of the sum weights.
        let bind = Bind::pass(None, &dev, (0.0, 0.0));
        let init = |k: &KernelSpec| k.args.contains(&KernelArg::LeafTable) || k.args.contains(&KernelArg::PackedWeights);
        for (spec, f) in manifest.em.iter().zip(&kernels.em).filter(|(k, _)| init(k)) {
            Self::launch(&stream, f, spec, &bind, 0)?;
        }
        stream.synchronize().map_err(CudaError::from)?;
        let startup = StartupTimings { validate: t_validate, context: t_context, kernels: t_kernels, upload: t_upload, leaf_table: t0.elapsed() };
        let use_graphs = std::env::var("PCC_CUDA_GRAPHS").map_or(true, |v| v != "0");
        let state_bytes = dev.tables.iter().map(|t| t.len() * 4).sum::<usize>()
            + 4 * (dev.sum_params.len()
                + dev.input_params.len()
                + dev.leaf_table.len()
                + dev.sum_flows.len()
                + dev.input_stats.len()
                + dev.leaf_mass.len()
                + dev.packed.len())
            + kernels.persistent.as_ref().map_or(0, |p| p.bytes());
        GpuEngine {
            plan,
            manifest,
            stream,
            kernels,
            dev,
            total_flow: 0.0,
            buffers: None,
            device_name,
            startup,
            use_graphs,
            warned_capture: false,
            bytes: (state_bytes, state_bytes),
            host_out,
            seq: 0,
            pending_persistent: pending,
        }
        .with_persistent_if_compiled()
    }

    /// Open device `ordinal` and load the kernels.
    fn open(ordinal: usize, plan: &Plan, source: &str, cubins: &[(&str, &[u8])], manifest: &Manifest, cache: &KernelCache) -> Result<Opened, RuntimeError> {
        let t0 = Instant::now();
        // Only the one device is opened (probing every device costs a context each on a warm start).
        if !super::raw::driver_present() {
            return Err(CudaError::NoDriver.into());
        }
        let count = CudaContext::device_count().map_err(CudaError::from)?.max(0) as usize;
        if count == 0 {
            return Err(CudaError::NoDevice.into());
        }
        if ordinal >= count {
            return Err(CudaError::NoSuchDevice { ordinal, count }.into());
        }
        let ctx = CudaContext::new(ordinal).map_err(CudaError::from)?;
        // One stream, ordered by construction: no per-buffer events, which would also break graph
        // capture (waits on events recorded outside it). Must precede every allocation.
        // SAFETY: every buffer of this engine is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        // A created stream, not the legacy default stream, which cannot be captured into a graph.
        let stream = ctx.new_stream().map_err(CudaError::from)?;
        let (major, minor) = ctx.compute_capability().map_err(CudaError::from)?;
        let device_name = ctx.name().map_err(CudaError::from)?;
        let t_context = t0.elapsed();
        let t0 = Instant::now();
        let (kernels, pending, host_out) = Kernels::load(&ctx, &stream, plan, source, cubins, manifest, cache, &format!("{major}{minor}"))?;
        let t_kernels = t0.elapsed();
        Ok(Opened { stream, device_name, kernels, pending, host_out, t_context, t_kernels })
    }

    /// The engine with its persistent kernel loaded when its background compile is already done
    /// (a warm start: it came from the cache).
    fn with_persistent_if_compiled(mut self) -> Result<GpuEngine, RuntimeError> {
        if self.pending_persistent.as_ref().is_some_and(|h| h.is_finished()) {
            self.ready_persistent()?;
        }
        Ok(self)
    }

    /// Load the persistent kernel once its background compile is done (waiting for it): before
    /// the first small batch, which it runs.
    fn ready_persistent(&mut self) -> Result<(), RuntimeError> {
        let Some(job) = self.pending_persistent.take() else { return Ok(()) };
        let cubin = job.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        let Some(p) = &self.manifest.persistent else { return Ok(()) };
        let modules = Modules::load(self.stream.context(), vec![(None, cubin)])?;
        self.kernels.persistent = persistent::PersistentState::load(self.stream.context(), &modules, &self.stream, p)?;
        let extra = self.kernels.persistent.as_ref().map_or(0, |p| p.bytes());
        self.bytes = (self.bytes.0 + extra, self.bytes.1 + extra);
        Ok(())
    }

    /// The persistent forward pass's per-task trace of the last small batch (8 words per task:
    /// the workers' start (globaltimer ns); their cycles to the end of staging, of the maxima, of
    /// the weight wait and of the writes; the publisher's time (ns); the block; the producer
    /// warp's cycles waiting for flags (low 32 bits) and in all (high 32)), when the engine was
    /// created with `PCC_PERSISTENT_TRACE` set; for profiling.
    pub fn persistent_trace(&self) -> Result<Option<Vec<u64>>, RuntimeError> {
        match &self.kernels.persistent {
            Some(p) => Ok(p.trace(&self.stream)?),
            None => Ok(None),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Where the construction of this engine spent its time.
    pub fn startup(&self) -> StartupTimings {
        self.startup
    }

    /// Device memory this engine has held at most so far (its own allocations; the driver's
    /// context and module memory come on top), in bytes.
    pub fn peak_device_bytes(&self) -> usize {
        self.bytes.1
    }

    /// Replay each pass as a CUDA graph captured once per batch size (the default; the
    /// environment variable `PCC_CUDA_GRAPHS=0` turns it off), or launch kernel by kernel.
    pub fn set_graphs(&mut self, on: bool) {
        if on != self.use_graphs {
            self.use_graphs = on;
            if let Some(b) = &mut self.buffers {
                b.forward_graph = None;
                b.train_graph = None;
                b.backward_graph = None;
            }
        }
    }

    /// The current parameters, copied from the device.
    pub fn params(&self) -> Result<Params, RuntimeError> {
        let sum = self.stream.clone_dtoh(&self.dev.sum_params).map_err(CudaError::from)?;
        let mut input = self.stream.clone_dtoh(&self.dev.input_params).map_err(CudaError::from)?;
        input.truncate(self.plan.num_input_params as usize);
        Ok(Params { sum, input })
    }

    /// Allocate the node, element and flow buffers of batches of `batch` samples now rather than
    /// at the first pass of that size (they are kept until a pass of another size). Fails with
    /// [`CudaError::OutOfMemory`], naming the sizes, when they do not fit.
    pub fn reserve_batch(&mut self, batch: usize) -> Result<(), RuntimeError> {
        Ok(self.buffers(batch.max(1))?)
    }

    /// The buffers of batch size `batch` (reallocated only when the size changes).
    fn buffers(&mut self, batch: usize) -> Result<(), CudaError> {
        if self.buffers.as_ref().is_some_and(|b| b.batch == batch) {
            return Ok(());
        }
        if let Some(old) = self.buffers.take() {
            // Free the old batch size's buffers first.
            self.bytes.0 -= old.bytes();
        }
        let s = &self.stream;
        let p = &self.plan;
        let io_words = io_layout(p.num_vars as usize * batch).0;
        let words =
            2 * (p.num_nodes as usize + p.num_elements as usize) + self.manifest.sum_max_rows as usize + self.manifest.x_words as usize + io_words / batch;
        let what = || format!("the node, element and flow buffers of a batch of {batch}");
        // The largest batch whose buffers fit in what is free now (the old size's are freed above).
        let hint = |free: usize| match free / (4 * words).max(1) {
            0 => "not even a batch of 1 fits: a smaller circuit, or a device with more memory".to_string(),
            fits => format!("use a batch size of at most {fits}, the largest whose buffers fit now"),
        };
        ensure_fits(s, what, 4 * words * batch, hint)?;
        self.buffers_unchecked(batch).map_err(|e| match e {
            CudaError::Driver(d) => name_oom(&self.stream, d, what, 4 * words * batch, hint),
            e => e,
        })
    }

    /// [`GpuEngine::buffers`] once the sizes are known to fit.
    fn buffers_unchecked(&mut self, batch: usize) -> Result<(), CudaError> {
        let s = &self.stream;
        let p = &self.plan;
        let nodes = s.alloc_zeros::<f32>(p.num_nodes as usize * batch)?;
        // Dummy elements hold −inf forever; every other element row is written before it is read.
        let mut init = vec![0f32; p.num_elements as usize * batch];
        init[..p.num_dummy_elements as usize * batch].fill(f32::NEG_INFINITY);
        let elems = s.clone_htod(&init)?;
        let node_flows = s.alloc_zeros::<f32>(p.num_nodes as usize * batch)?;
        let elem_flows = s.alloc_zeros::<f32>(p.num_elements as usize * batch)?;
        let smax = s.alloc_zeros::<f32>((self.manifest.sum_max_rows as usize * batch).max(1))?;
        let xstage = s.alloc_zeros::<u32>((self.manifest.x_words as usize * batch).max(1))?;
        let io_n = p.num_vars as usize * batch;
        let io = s.alloc_zeros::<u32>(io_layout(io_n).0)?;
        let staging = PinnedWords::new(s, io_layout(io_n).0, false)?;
        // SAFETY: written by the copy before the host reads it. Not write-combined: the host reads it.
        let host_root = unsafe { s.context().alloc_pinned_with_flags::<f32>(batch, 0)? };
        let b = Buffers {
            forward_graph: None,
            train_graph: None,
            backward_graph: None,
            batch,
            nodes,
            elems,
            node_flows,
            elem_flows,
            smax,
            xstage,
            io,
            io_n,
            staging,
            staging_busy: false,
            host_root,
        };
        self.bytes.0 += b.bytes();
        self.bytes.1 = self.bytes.1.max(self.bytes.0);
        self.buffers = Some(b);
        Ok(())
    }

    fn launch(stream: &CudaStream, f: &CudaFunction, spec: &KernelSpec, bind: &Bind, batch: usize) -> Result<(), CudaError> {
        let threads = spec.threads(batch);
        if threads == 0 {
            return Ok(());
        }
        let (b_i32, count) = (batch as i32, spec.count as i32);
        let bufs = || bind.bufs.expect("value buffers exist for value and flow passes");
        // The values and the mask, as the kernels see them (views into `io`).
        // SAFETY: `io` holds `io_n` f32 values, then `io_n` mask bytes (`io_layout`).
        let io = bind.bufs.map(|b| unsafe {
            let mask = b.io.slice(b.io_n..).transmute::<u8>(b.io_n).expect("io_layout holds the mask");
            (b.io.transmute::<f32>(b.io_n).expect("io_layout holds the values"), mask)
        });
        let io = || io.as_ref().expect("value buffers exist for value and flow passes");
        let mut launch = stream.launch_builder(f);
        // Buffers are passed by shared reference even when written: everything runs in order on
        // one stream, so cudarc's read/write event tracking has nothing to order.
        for arg in &spec.args {
            match arg {
                KernelArg::Nodes => launch.arg(&bufs().nodes),
                KernelArg::Elements => launch.arg(&bufs().elems),
                KernelArg::NodeFlows => launch.arg(&bufs().node_flows),
                KernelArg::ElementFlows => launch.arg(&bufs().elem_flows),
                KernelArg::SumMax => launch.arg(&bufs().smax),
                KernelArg::XStage => launch.arg(&bufs().xstage),
                KernelArg::Data => launch.arg(&io().0),
                KernelArg::Missing => launch.arg(&io().1),
                KernelArg::InputParams => launch.arg(&bind.dev.input_params),
                KernelArg::SoftenKeep => launch.arg(&bind.dev.soften.0),
                KernelArg::SoftProbs => launch.arg(&bind.dev.soft_probs),
                KernelArg::StepSize => launch.arg(&bind.em.0),
                KernelArg::Pseudocount => launch.arg(&bind.em.1),
                KernelArg::SumParams => launch.arg(&bind.dev.sum_params),
                KernelArg::LeafTable => launch.arg(&bind.dev.leaf_table),
                KernelArg::SumFlows => launch.arg(&bind.dev.sum_flows),
                KernelArg::PackedWeights => launch.arg(&bind.dev.packed),
                KernelArg::InputStats => launch.arg(&bind.dev.input_stats),
                KernelArg::LeafMass => launch.arg(&bind.dev.leaf_mass),
                KernelArg::Table(i) => launch.arg(&bind.dev.tables[*i as usize]),
                KernelArg::Batch => launch.arg(&b_i32),
                KernelArg::Count => launch.arg(&count),
                KernelArg::Output => launch.arg(bind.out.ok_or(CudaError::Unbound("output"))?),
                KernelArg::Seed => launch.arg(&bind.seed),
                KernelArg::SampleOffset => launch.arg(&bind.sample0),
                KernelArg::Int(v) => launch.arg(v),
            };
        }
        let grid = threads.div_ceil(spec.block as u64);
        let cfg = LaunchConfig { grid_dim: (grid as u32, 1, 1), block_dim: (spec.block, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the manifest was emitted for this plan: every kernel's arguments match its
        // signature, and every index it reads lies inside the buffers sized from the plan.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    /// Upload the batch (with the call's sequence number `seq`, see [`GpuEngine::log_likelihood`])
    /// and run the forward pass.
    fn run_forward(&mut self, ev: &Evidence, seq: u32) -> Result<usize, RuntimeError> {
        let batch = self.upload(ev, seq)?;
        self.forward_pass(batch, false)?;
        Ok(batch)
    }

    /// The forward pass over the uploaded batch. `train`: the pass before a backward, which always
    /// runs the batch kernels (the small-batch and persistent variants do not write the maxima
    /// that the tensor-core backward reads).
    fn forward_pass(&mut self, batch: usize, train: bool) -> Result<(), RuntimeError> {
        if batch == 0 {
            return Ok(());
        }
        if batch <= SMALL_BATCH && !train {
            self.ready_persistent()?;
        }
        let bufs = self.buffers.as_mut().expect("allocated by upload");
        let (stream, dev, manifest, forward) = (&self.stream, &self.dev, &self.manifest, &self.kernels.forward);
        let small = batch <= small_max(manifest) && !train;
        let persistent = self.kernels.persistent.as_ref().filter(|p| batch <= p.max_batch && !train);
        let (host_out, root) = (self.host_out.as_ref().map(|h| h.1), self.plan.root);
        let pass = |bufs: &Buffers| -> Result<(), CudaError> {
            let bind = Bind::pass(Some(bufs), dev, (0.0, 0.0));
            if let Some(p) = persistent {
                // Input layers (their small-batch variants where they have one), then every
                // sum layer in one launch.
                for (spec, (f, small_fn)) in manifest.forward.iter().zip(forward).take(p.prologue) {
                    let (spec, f) = match (&spec.small, small_fn) {
                        (Some(s), Some(fs)) => (&**s, fs),
                        _ => (spec, f),
                    };
                    Self::launch(stream, f, spec, &bind, batch)?;
                }
                let at_seq = io_layout(bufs.io_n).1;
                let seq = bufs.io.slice(at_seq..at_seq + 1);
                return p.launch(stream, &bufs.nodes, &dev.sum_params, batch, host_out.map(|h| (h, &seq)), root);
            }
            for (spec, (f, small_fn)) in manifest.forward.iter().zip(forward) {
                let (spec, f) = match (&spec.small, small_fn) {
                    (Some(s), Some(fs)) if small => (&**s, fs),
                    _ => (spec, f),
                };
                Self::launch(stream, f, spec, &bind, batch)?;
            }
            Ok(())
        };
        // Batches above SMALL_BATCH run the same launches in both modes: one graph.
        let separate = train && batch <= SMALL_BATCH;
        if !self.use_graphs {
            pass(bufs)?;
        } else {
            let slot = if separate { &bufs.train_graph } else { &bufs.forward_graph };
            if slot.is_none() {
                match capture(stream, || pass(bufs)) {
                    Ok(g) if separate => bufs.train_graph = Some(g),
                    Ok(g) => bufs.forward_graph = Some(g),
                    // A driver that cannot capture the cooperative launch: run this batch size
                    // eagerly (two launches) rather than fail.
                    Err(e) if persistent.is_some() => {
                        if !self.warned_capture {
                            eprintln!("pcc: warning: CUDA graph capture of the persistent forward pass failed ({e}); launching it directly");
                            self.warned_capture = true;
                        }
                        self.use_graphs = false;
                        pass(bufs)?;
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let g = if separate { &bufs.train_graph } else { &bufs.forward_graph };
            g.as_ref().expect("captured above").0.launch().map_err(CudaError::from)?;
        }
        Ok(())
    }

    /// Validate the batch, size the value buffers for it and upload its values, mask and the
    /// call's sequence number `seq` (one copy).
    fn upload(&mut self, ev: &Evidence, seq: u32) -> Result<usize, RuntimeError> {
        ev.validate(&self.plan)?;
        self.set_soften(ev)?;
        let batch = ev.num_samples();
        if batch == 0 {
            return Ok(0);
        }
        self.buffers(batch)?;
        self.upload_dense_soft(ev)?;
        let bufs = self.buffers.as_mut().expect("allocated above");
        if bufs.staging_busy {
            // A copy out of the staging words may still be pending: never refill them under it.
            self.stream.synchronize().map_err(CudaError::from)?;
        }
        let n = bufs.io_n;
        let (words, at_seq) = io_layout(n);
        let (vals, rest) = bufs.staging.words_mut().split_at_mut(n);
        // SAFETY: `io_layout`: n words of f32 values, then ⌈n / 4⌉ words holding n mask bytes.
        let (data, mask) =
            unsafe { (std::slice::from_raw_parts_mut(vals.as_mut_ptr() as *mut f32, n), std::slice::from_raw_parts_mut(rest.as_mut_ptr() as *mut u8, n)) };
        ev.transpose_into(data, mask);
        rest[at_seq - n] = seq;
        let (dst, _) = bufs.io.device_ptr(&self.stream);
        bufs.staging.copy_to(words, dst).map_err(CudaError::from)?;
        bufs.staging_busy = true;
        Ok(batch)
    }

    fn root_values(&mut self, batch: usize) -> Result<Vec<f32>, RuntimeError> {
        let Some(bufs) = &mut self.buffers else { return Ok(Vec::new()) };
        let root = self.plan.root as usize;
        self.stream.memcpy_dtoh(&bufs.nodes.slice(root * batch..(root + 1) * batch), &mut bufs.host_root).map_err(CudaError::from)?;
        // The stream's wait (a spin, under the context's default scheduling) rather than the
        // buffer's event's, which is a blocking-sync event: a sleeping thread wakes up late.
        self.stream.synchronize().map_err(CudaError::from)?;
        bufs.staging_busy = false;
        Ok(bufs.host_root.as_slice().map_err(CudaError::from)?.to_vec())
    }

    /// The root's values of call `seq`, written to host memory by the persistent pass: spin on
    /// the sequence number, asking the stream now and then whether it failed or finished without
    /// it (never a hang: a kernel waiting too long on a dependency traps). The launch may still be
    /// finishing when this returns; later work is ordered after it on the stream.
    fn host_root_values(&mut self, batch: usize, seq: u32) -> Result<Vec<f32>, RuntimeError> {
        let (host, _) = self.host_out.as_ref().expect("a direct call has the host words");
        let mut spins = 0u32;
        while host.load(0, Ordering::Acquire) != seq {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                match super::raw::stream_idle(&self.stream).map_err(CudaError::from)? {
                    false => {}
                    true if host.load(0, Ordering::Acquire) == seq => break,
                    true => return Err(CudaError::NoHostResult.into()),
                }
            }
            std::hint::spin_loop();
        }
        let v = (0..batch).map(|b| f32::from_bits(host.load(1 + b, Ordering::Relaxed))).collect();
        // The launch has started, so the copy before it has finished.
        if let Some(b) = &mut self.buffers {
            b.staging_busy = false;
        }
        Ok(v)
    }

    /// Log-likelihood of every sample (missing values marginalized), as the CPU engine computes it.
    /// A batch the persistent pass takes gets its values from host memory that the kernel writes
    /// (no copy back, no wait for the launch's end: ~7 µs less per call on an H200,
    /// `bench/micro/host_overhead.cu`).
    pub fn log_likelihood(&mut self, ev: &Evidence) -> Result<Vec<f32>, RuntimeError> {
        let n = ev.num_samples();
        if n <= SMALL_BATCH {
            self.ready_persistent()?;
        }
        let direct = self.host_out.is_some() && self.kernels.persistent.as_ref().is_some_and(|p| n > 0 && n <= p.max_batch);
        let seq = match direct {
            true => {
                self.seq = self.seq.wrapping_add(1).max(1);
                self.seq
            }
            false => 0,
        };
        match self.run_forward(ev, seq)? {
            0 => Ok(Vec::new()),
            batch if direct => self.host_root_values(batch, seq),
            batch => self.root_values(batch),
        }
    }

    /// Forward and backward on a batch, adding its flows to the device accumulators (as
    /// [`crate::CpuEngine::accumulate_flows`]). Returns the samples' log-likelihoods.
    pub fn accumulate_flows(&mut self, ev: &Evidence, weights: Option<&[f32]>) -> Result<Vec<f32>, RuntimeError> {
        let n = ev.num_samples();
        if let Some(w) = weights
            && w.len() != n
        {
            return Err(RuntimeError::WeightsShape { expected: n, found: w.len() });
        }
        let batch = self.upload(ev, 0)?;
        self.train_pass(batch, weights)
    }

    /// Forward and backward over the uploaded batch (see [`GpuEngine::accumulate_flows`]).
    fn train_pass(&mut self, batch: usize, weights: Option<&[f32]>) -> Result<Vec<f32>, RuntimeError> {
        self.forward_pass(batch, true)?;
        if batch == 0 {
            return Ok(Vec::new());
        }
        let root_flow = weights.map_or_else(|| vec![1.0; batch], <[f32]>::to_vec);
        self.total_flow += root_flow.iter().map(|&x| x as f64).sum::<f64>();
        let bufs = self.buffers.as_mut().expect("allocated by the forward pass");
        self.stream.memset_zeros(&mut bufs.node_flows).map_err(CudaError::from)?;
        let root = self.plan.root as usize;
        let mut root_row = bufs.node_flows.slice_mut(root * batch..(root + 1) * batch);
        self.stream.memcpy_htod(&root_flow, &mut root_row).map_err(CudaError::from)?;
        let (stream, dev, manifest, backward) = (&self.stream, &self.dev, &self.manifest, &self.kernels.backward);
        let pass = |bufs: &mut Buffers| -> Result<(), CudaError> {
            for (step, f) in manifest.backward.iter().zip(backward) {
                match (step, f) {
                    (Step::ZeroElementFlows, _) => stream.memset_zeros(&mut bufs.elem_flows)?,
                    (Step::Launch(spec), Some(f)) => Self::launch(stream, f, spec, &Bind::pass(Some(bufs), dev, (0.0, 0.0)), batch)?,
                    (Step::Launch(_), None) => unreachable!("every launch step has its function"),
                }
            }
            Ok(())
        };
        if !self.use_graphs {
            pass(bufs)?;
        } else {
            if bufs.backward_graph.is_none() {
                let g = capture(stream, || pass(bufs))?;
                bufs.backward_graph = Some(g);
            }
            bufs.backward_graph.as_ref().expect("captured above").0.launch().map_err(CudaError::from)?;
        }
        self.root_values(batch)
    }

    /// The accumulated flows, copied to the host (f64, like the CPU engine's).
    pub fn flows(&self) -> Result<Flows, RuntimeError> {
        let sum = self.stream.clone_dtoh(&self.dev.sum_flows).map_err(CudaError::from)?;
        let input = self.stream.clone_dtoh(&self.dev.input_stats).map_err(CudaError::from)?;
        Ok(Flows {
            sum: sum.iter().map(|&x| x as f64).collect(),
            input: input[..self.plan.num_input_flows as usize].iter().map(|&x| x as f64).collect(),
            total: self.total_flow,
        })
    }

    /// One EM step on the device from the accumulated flows (the CPU engine's rule, in f32), then
    /// the flows are cleared.
    pub fn em_step(&mut self, step_size: f32, pseudocount: f32) -> Result<(), RuntimeError> {
        check_em_hyper_parameters(step_size, pseudocount)?;
        let bind = Bind::pass(None, &self.dev, (step_size, pseudocount));
        for (spec, f) in self.manifest.em.iter().zip(&self.kernels.em) {
            Self::launch(&self.stream, f, spec, &bind, 0)?;
        }
        let dev = &mut self.dev;
        self.stream.memset_zeros(&mut dev.sum_flows).map_err(CudaError::from)?;
        self.stream.memset_zeros(&mut dev.input_stats).map_err(CudaError::from)?;
        self.total_flow = 0.0;
        Ok(())
    }
}

impl GpuEngine {
    /// `ev`'s soft-evidence mode ([`soften_keep`]) on the device, where the input kernels read it.
    pub(crate) fn set_soften(&mut self, ev: &Evidence) -> Result<(), RuntimeError> {
        let keep = soften_keep(ev, &self.manifest)?;
        self.set_keep(keep)
    }

    /// `ev`'s dense soft evidence, if any, to the device in the kernels' layout (`[row][B]`, as
    /// the values are `[var][B]`). Growing the buffer moves it, so the captured graphs, which hold
    /// its address, are dropped.
    fn upload_dense_soft(&mut self, ev: &Evidence) -> Result<(), RuntimeError> {
        let batch = ev.num_samples();
        let Some(cols) = ev.soft.as_ref().and_then(|s| s.dense_columns(batch)) else { return Ok(()) };
        if self.dev.soft_probs.len() < cols.len() {
            let what = || format!("dense soft evidence of {batch} samples");
            ensure_fits(&self.stream, what, 4 * cols.len(), |_| "smaller batches".into())?;
            self.dev.soft_probs = self.stream.alloc_zeros::<f32>(cols.len()).map_err(CudaError::from)?;
            if let Some(b) = &mut self.buffers {
                (b.forward_graph, b.train_graph, b.backward_graph) = (None, None, None);
            }
        }
        if !cols.is_empty() {
            self.stream.memcpy_htod(&cols, &mut self.dev.soft_probs.slice_mut(..cols.len())).map_err(CudaError::from)?;
        }
        Ok(())
    }

    /// Data softening's keep-probability on the device (written only when it changes).
    pub(crate) fn set_keep(&mut self, keep: f32) -> Result<(), RuntimeError> {
        if keep != self.dev.soften.1 {
            self.stream.memcpy_htod(&[keep], &mut self.dev.soften.0).map_err(CudaError::from)?;
            self.dev.soften.1 = keep;
        }
        Ok(())
    }

    /// One entropy-regularized EM step ([`crate::entropy`]): the regularized estimate is computed
    /// on the host from the downloaded flows and parameters, then installed
    /// ([`GpuEngine::install_params`]). Meant for the small circuits the regularizer is used on:
    /// it copies the flows and parameters both ways.
    pub fn em_step_entropy(&mut self, step_size: f32, pseudocount: f32, tau: f32) -> Result<(), RuntimeError> {
        let flows = self.flows()?;
        let mut params = self.params()?;
        crate::entropy::em_update_entropy(&self.plan, &mut params, &flows, step_size, pseudocount, tau)?;
        self.install_params(&params)
    }

    /// Replace the parameters with `params` (checked against the plan), through the device's own
    /// EM kernels (step 1, no pseudocount) from flows that are those parameters — each sum row
    /// its weights, each leaf the expected statistics of its new distribution — so the leaf
    /// table and the packed weights are refreshed as after any step. Accumulated flows are lost.
    pub fn install_params(&mut self, params: &Params) -> Result<(), RuntimeError> {
        params.validate(&self.plan)?;
        let target = crate::entropy::flows_installing(&self.plan, params);
        let sum: Vec<f32> = target.sum.iter().map(|&x| x as f32).collect();
        let input: Vec<f32> = target.input.iter().map(|&x| x as f32).collect();
        let dev = &mut self.dev;
        self.stream.memcpy_htod(&sum, &mut dev.sum_flows).map_err(CudaError::from)?;
        if !input.is_empty() {
            self.stream.memcpy_htod(&input, &mut dev.input_stats.slice_mut(..input.len())).map_err(CudaError::from)?;
        }
        self.em_step(1.0, 0.0)
    }
}

/// The soft-evidence mode of `ev` for the input kernels (`KernelArg::SoftenKeep`): 1 for hard
/// evidence, β for [`Soft::Softened`], −1 for [`Soft::Dense`] (in `KernelArg::SoftProbs`). Soft
/// evidence with the bf16/tf32 manifests' categorical statistics (sorted segments or the
/// tensor-core product, which count observed categories only) is an error.
pub(crate) fn soften_keep(ev: &Evidence, manifest: &Manifest) -> Result<f32, RuntimeError> {
    let mma_stats = || manifest.backward.iter().any(|s| matches!(s, Step::Launch(k) if k.name.starts_with("input_categorical_bwd_")));
    match ev.soft {
        None => Ok(1.0),
        Some(Soft::Softened { beta }) if beta >= 1.0 => Ok(1.0),
        Some(_) if mma_stats() => Err(RuntimeError::SoftUnsupported {
            query: "soft evidence with the bf16/tf32 categorical statistics, which count observed categories only (set PCC_CAT_STATS=scalar, or --precision fp32)",
        }),
        Some(Soft::Softened { beta }) => Ok(beta),
        Some(Soft::Dense { .. }) => Ok(-1.0),
    }
}

/// Capture the launches `record` makes on `stream` into a graph (nothing runs while capturing).
/// A failed launch ends the capture before the error is returned, so the stream stays usable.
fn capture(stream: &Arc<CudaStream>, record: impl FnOnce() -> Result<(), CudaError>) -> Result<Graph, CudaError> {
    stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    let recorded = record();
    let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
    recorded?;
    let graph = ended?.ok_or(CudaError::EmptyGraph)?;
    graph.upload()?;
    Ok(Graph(graph))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Soft;

    fn manifest(names: &[&str]) -> Manifest {
        let launch = |n: &&str| {
            Step::Launch(KernelSpec {
                name: n.to_string(),
                layer: "l".into(),
                count: 1,
                threads_per_sample: 1,
                scales_with_batch: true,
                batch_group: 1,
                block: 256,
                args: vec![],
                small: None,
            })
        };
        Manifest { backward: names.iter().map(launch).collect(), ..Manifest::default() }
    }

    /// Soft evidence is refused only where the categorical statistics count observed categories
    /// (tensor-core or sorted kernels); the scalar kernel and its missing-value credit take it.
    #[test]
    fn soft_evidence_is_refused_only_by_the_observed_count_statistics() {
        let ev = Evidence::new(1, vec![0.0]).unwrap().with_soft(Soft::softened(0.9).unwrap());
        let scalar = manifest(&["input_categorical_bwd", "input_categorical_mass"]);
        assert_eq!(soften_keep(&ev, &scalar).unwrap(), 0.9);
        for stats in ["input_categorical_bwd_bf16", "input_categorical_bwd_sorted_k256_t64"] {
            assert!(soften_keep(&ev, &manifest(&[stats])).is_err(), "{stats}");
        }
        assert_eq!(soften_keep(&Evidence::new(1, vec![0.0]).unwrap(), &manifest(&["input_categorical_bwd_bf16"])).unwrap(), 1.0);
    }
}

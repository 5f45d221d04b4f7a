//! The GPU engine (first slice: forward log-likelihood and marginals). It loads the generated
//! module for the device's own architecture, keeps parameters, leaf tables and index tables on the
//! device, allocates value buffers once per batch size and launches the manifest's kernels in
//! order on one stream.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::{probe, CudaError, KernelArg, KernelCache, Manifest};
use crate::data::Evidence;
use crate::params::Params;
use crate::plan::Plan;
use crate::RuntimeError;

struct Buffers {
    batch: usize,
    nodes: CudaSlice<f32>,
    elems: CudaSlice<f32>,
    data: CudaSlice<f32>,
    missing: CudaSlice<u8>,
}

/// A circuit on one GPU.
pub struct GpuEngine {
    plan: Plan,
    manifest: Manifest,
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    tables: Vec<CudaSlice<u32>>,
    sum_params: CudaSlice<f32>,
    leaf_table: CudaSlice<f32>,
    buffers: Option<Buffers>,
    /// The device's name, for messages.
    pub device_name: String,
}

impl GpuEngine {
    /// Compile (or fetch from `cache`) `source` for device 0 and upload everything the manifest
    /// needs. Parameters are validated against the plan first.
    pub fn new(plan: Plan, params: &Params, source: &str, manifest: Manifest, cache: &KernelCache) -> Result<GpuEngine, RuntimeError> {
        params.validate(&plan)?;
        let gpu = probe()?.into_iter().next().ok_or(CudaError::NoDevice)?;
        let (cubin, _) = cache.get_or_compile(source, "circuit.cu", &gpu.arch())?;
        let ctx = CudaContext::new(0).map_err(CudaError::from)?;
        let stream = ctx.default_stream();
        let module = ctx.load_module(Ptx::from_binary(cubin)).map_err(CudaError::from)?;
        let functions = manifest
            .forward
            .iter()
            .map(|k| module.load_function(&k.name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CudaError::from)?;
        let tables = manifest
            .tables
            .iter()
            .map(|t| stream.clone_htod(if t.is_empty() { &[0u32][..] } else { t }))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CudaError::from)?;
        let sum_params = stream.clone_htod(&params.sum).map_err(CudaError::from)?;
        let leaf = params.leaf_table(&plan);
        let leaf_table = stream.clone_htod(if leaf.is_empty() { &[0f32][..] } else { &leaf }).map_err(CudaError::from)?;
        Ok(GpuEngine { plan, manifest, stream, functions, tables, sum_params, leaf_table, buffers: None, device_name: gpu.name })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn buffers(&mut self, batch: usize) -> Result<(), CudaError> {
        if self.buffers.as_ref().is_some_and(|b| b.batch == batch) {
            return Ok(());
        }
        let s = &self.stream;
        let p = &self.plan;
        let nodes = s.alloc_zeros::<f32>(p.num_nodes as usize * batch)?;
        // Dummy elements hold −inf forever; every other element row is written before it is read.
        let mut init = vec![0f32; p.num_elements as usize * batch];
        init[..p.num_dummy_elements as usize * batch].fill(f32::NEG_INFINITY);
        let elems = s.clone_htod(&init)?;
        let data = s.alloc_zeros::<f32>(p.num_vars as usize * batch)?;
        let missing = s.alloc_zeros::<u8>(p.num_vars as usize * batch)?;
        self.buffers = Some(Buffers { batch, nodes, elems, data, missing });
        Ok(())
    }

    /// Log-likelihood of every sample (missing values marginalized), as the CPU engine computes it.
    pub fn log_likelihood(&mut self, ev: &Evidence) -> Result<Vec<f32>, RuntimeError> {
        ev.validate(&self.plan)?;
        let batch = ev.num_samples();
        if batch == 0 {
            return Ok(Vec::new());
        }
        self.buffers(batch)?;
        let nv = ev.num_vars;
        let mut data = vec![0f32; nv * batch];
        let mut missing = vec![0u8; nv * batch];
        for s in 0..batch {
            for v in 0..nv {
                if ev.is_missing(s, v) {
                    missing[v * batch + s] = 1;
                } else {
                    data[v * batch + s] = ev.value(s, v);
                }
            }
        }
        let bufs = self.buffers.as_mut().expect("allocated above");
        self.stream.memcpy_htod(&data, &mut bufs.data).map_err(CudaError::from)?;
        self.stream.memcpy_htod(&missing, &mut bufs.missing).map_err(CudaError::from)?;
        let b_i32 = batch as i32;
        let counts: Vec<i32> = self.manifest.forward.iter().map(|k| k.count as i32).collect();
        for (k, (spec, f)) in self.manifest.forward.iter().zip(&self.functions).enumerate() {
            let threads = spec.threads_per_sample * batch as u64;
            if threads == 0 {
                continue;
            }
            let mut launch = self.stream.launch_builder(f);
            // Buffers are passed by shared reference even when written: everything runs in order
            // on one stream, so cudarc's read/write event tracking has nothing to order.
            for arg in &spec.args {
                match arg {
                    KernelArg::Nodes => launch.arg(&bufs.nodes),
                    KernelArg::Elements => launch.arg(&bufs.elems),
                    KernelArg::SumParams => launch.arg(&self.sum_params),
                    KernelArg::LeafTable => launch.arg(&self.leaf_table),
                    KernelArg::Data => launch.arg(&bufs.data),
                    KernelArg::Missing => launch.arg(&bufs.missing),
                    KernelArg::Table(i) => launch.arg(&self.tables[*i as usize]),
                    KernelArg::Batch => launch.arg(&b_i32),
                    KernelArg::Count => launch.arg(&counts[k]),
                };
            }
            let grid = threads.div_ceil(spec.block as u64);
            let cfg = LaunchConfig { grid_dim: (grid as u32, 1, 1), block_dim: (spec.block, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the manifest was emitted for this plan: every kernel's arguments match its
            // signature, and every index it reads lies inside the buffers sized from the plan.
            unsafe { launch.launch(cfg) }.map_err(CudaError::from)?;
        }
        let root = self.plan.root as usize;
        let row = bufs.nodes.slice(root * batch..(root + 1) * batch);
        Ok(self.stream.clone_dtoh(&row).map_err(CudaError::from)?)
    }
}

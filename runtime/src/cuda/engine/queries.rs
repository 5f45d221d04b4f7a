//! Queries on the device, with the CPU engine's signatures and results: conditionals (forward,
//! node flows top-down, then per input layer `Σ_{leaves n of v} F_n p_n(k)`), MPE (max-product
//! forward, then a top-down walk that flags each selected sum's first argmax child) and sampling
//! (log-sum forward, then the same walk drawing children and leaf values with Philox-4x32-10
//! keyed by the seed, counter = (global sample, node)). The walks keep their selection flags in
//! the node and element flow buffers. Large batches are split into chunks of [`QUERY_BATCH`]
//! samples; counters use global sample indices, so draws do not depend on the split.

use std::borrow::Cow;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream};

use crate::cuda::units::Modules;

use super::{Bind, Buffers, DeviceState, GpuEngine};
use crate::RuntimeError;
use crate::cuda::{CudaError, KernelArg, KernelSpec, QueryManifest, Step, conditional_slots, conditionals_from_slots};
use crate::data::Evidence;
use crate::outputs::{Conditional, MpeResult};

/// Samples per device batch of a query.
pub const QUERY_BATCH: usize = 2048;

/// The query kernels, aligned with the manifest's query sections.
pub(super) struct QueryFns {
    cond: Vec<CudaFunction>,
    mpe_forward: Vec<CudaFunction>,
    mpe_backward: Vec<Option<CudaFunction>>,
    sample_backward: Vec<Option<CudaFunction>>,
}

impl QueryFns {
    pub(super) fn load(modules: &Modules, q: &QueryManifest) -> Result<QueryFns, CudaError> {
        let load = |k: &KernelSpec| modules.function(&k.name);
        let steps = |s: &[Step]| {
            s.iter()
                .map(|s| match s {
                    Step::Launch(k) => load(k).map(Some),
                    Step::ZeroElementFlows => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(QueryFns {
            cond: q.conditionals.iter().map(load).collect::<Result<_, _>>()?,
            mpe_forward: q.mpe_forward.iter().map(load).collect::<Result<_, _>>()?,
            mpe_backward: steps(&q.mpe_backward)?,
            sample_backward: steps(&q.sample_backward)?,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    Mpe,
    Sample,
}

/// What a query launch binds besides the value buffers.
struct QueryBind<'a> {
    out: Option<&'a CudaSlice<f32>>,
    seed: u64,
    sample0: u32,
}

/// Run `steps` in order (launches whose spec `skip` accepts are left out).
#[allow(clippy::too_many_arguments)]
fn run_steps(
    stream: &Arc<CudaStream>,
    steps: &[Step],
    fns: &[Option<CudaFunction>],
    bufs: &mut Buffers,
    dev: &DeviceState,
    q: &QueryBind,
    batch: usize,
    skip: impl Fn(&KernelSpec) -> bool,
) -> Result<(), CudaError> {
    for (step, f) in steps.iter().zip(fns) {
        match (step, f) {
            (Step::ZeroElementFlows, _) => stream.memset_zeros(&mut bufs.elem_flows)?,
            (Step::Launch(spec), _) if skip(spec) => {}
            (Step::Launch(spec), Some(f)) => {
                let bind = Bind { bufs: Some(bufs), dev, em: (0.0, 0.0), out: q.out, seed: q.seed, sample0: q.sample0 };
                GpuEngine::launch(stream, f, spec, &bind, batch)?
            }
            (Step::Launch(_), None) => return Err(CudaError::Unbound("kernel function")),
        }
    }
    Ok(())
}

/// Chunks `[a, b)` of `n` samples.
fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(QUERY_BATCH).map(move |a| (a, (a + QUERY_BATCH).min(n)))
}

fn part<'a>(ev: &'a Evidence, a: usize, b: usize) -> Cow<'a, Evidence> {
    if a == 0 && b == ev.num_samples() { Cow::Borrowed(ev) } else { Cow::Owned(ev.slice(a, b)) }
}

impl GpuEngine {
    /// Manifests emitted before the query kernels existed have none: say so instead of failing.
    /// (The query passes have their own launches: a partition may take more forward launches
    /// than max-product ones, e.g. the two-kernel tensor-core forward or merged blocks.)
    fn check_queries(&self) -> Result<(), CudaError> {
        let q = &self.manifest.queries;
        if !self.manifest.forward.is_empty() && (q.mpe_forward.is_empty() || q.sample_backward.is_empty()) {
            return Err(CudaError::MissingKernels("query"));
        }
        Ok(())
    }

    /// Clear the node flows and set the root's row to 1 (unit root flow, or the root's flag).
    fn set_root_flow(&mut self, batch: usize) -> Result<(), CudaError> {
        let bufs = self.buffers.as_mut().ok_or(CudaError::Unbound("value buffers"))?;
        self.stream.memset_zeros(&mut bufs.node_flows)?;
        let root = self.plan.root as usize;
        let mut row = bufs.node_flows.slice_mut(root * batch..(root + 1) * batch);
        self.stream.memcpy_htod(&vec![1f32; batch], &mut row)?;
        Ok(())
    }

    /// The top-down walk after a forward pass of `batch` samples (global index of the first:
    /// `sample0`): returns `[batch][num_vars]` values.
    fn walk(&mut self, mode: Walk, batch: usize, seed: u64, sample0: u32) -> Result<Vec<f32>, RuntimeError> {
        self.set_root_flow(batch)?;
        let nv = self.plan.num_vars as usize;
        let out = self.stream.alloc_zeros::<f32>((batch * nv).max(1)).map_err(CudaError::from)?;
        let bufs = self.buffers.as_mut().ok_or(CudaError::Unbound("value buffers"))?;
        let (steps, fns) = match mode {
            Walk::Mpe => (&self.manifest.queries.mpe_backward, &self.kernels.queries.mpe_backward),
            Walk::Sample => (&self.manifest.queries.sample_backward, &self.kernels.queries.sample_backward),
        };
        let q = QueryBind { out: Some(&out), seed, sample0 };
        run_steps(&self.stream, steps, fns, bufs, &self.dev, &q, batch, |_| false)?;
        let mut host = self.stream.clone_dtoh(&out).map_err(CudaError::from)?;
        host.truncate(batch * nv);
        Ok(host)
    }

    /// `P(x_v | e)` for every variable unobserved in each sample (as
    /// [`crate::CpuEngine::conditionals`]): linear node flows from a unit root flow, then
    /// `Σ_{leaves n of v} F_n p_n(k)` per category (Gaussian: the posterior mixture's mean and
    /// variance). Returns `[sample][var]`.
    pub fn conditionals(&mut self, ev: &Evidence) -> Result<Vec<Vec<Conditional>>, RuntimeError> {
        ev.require_hard("conditionals")?;
        ev.validate(&self.plan)?;
        self.check_queries()?;
        let (offsets, slots) = conditional_slots(&self.plan);
        let slots = slots as usize;
        let mut result = Vec::with_capacity(ev.num_samples());
        for (a, b) in chunks(ev.num_samples()) {
            let part = part(ev, a, b);
            // The forward of a training step (the batch kernels whatever the batch): the
            // tensor-core backward below reads the maxima only they write.
            let batch = self.upload(&part, 0)?;
            if batch == 0 {
                continue;
            }
            self.forward_pass(batch, true)?;
            self.set_root_flow(batch)?;
            let out = self.stream.alloc_zeros::<f32>((batch * slots).max(1)).map_err(CudaError::from)?;
            let bufs = self.buffers.as_mut().ok_or(CudaError::Unbound("value buffers"))?;
            // Node flows only: the steps that accumulate parameter flows or leaf statistics are
            // left out (whatever those kernels become, they are recognized by what they write).
            let accumulates = |k: &KernelSpec| k.args.iter().any(|a| matches!(a, KernelArg::SumFlows | KernelArg::InputStats));
            let none = QueryBind { out: None, seed: 0, sample0: 0 };
            run_steps(&self.stream, &self.manifest.backward, &self.kernels.backward, bufs, &self.dev, &none, batch, accumulates)?;
            let bind = Bind { bufs: Some(bufs), dev: &self.dev, em: (0.0, 0.0), out: Some(&out), seed: 0, sample0: 0 };
            for (spec, f) in self.manifest.queries.conditionals.iter().zip(&self.kernels.queries.cond) {
                Self::launch(&self.stream, f, spec, &bind, batch)?;
            }
            let host = self.stream.clone_dtoh(&out).map_err(CudaError::from)?;
            for s in 0..batch {
                result.push(conditionals_from_slots(&self.plan, &part, s, &host[s * slots..(s + 1) * slots], &offsets));
            }
        }
        Ok(result)
    }

    /// MPE under evidence (as [`crate::CpuEngine::mpe`]): the value of the best induced tree
    /// (max-product) and the completion it implies; ties go to the first child / category.
    pub fn mpe(&mut self, ev: &Evidence) -> Result<MpeResult, RuntimeError> {
        ev.require_hard("MPE")?;
        ev.validate(&self.plan)?;
        self.check_queries()?;
        let n = ev.num_samples();
        let (mut log_values, mut assignments) = (Vec::with_capacity(n), Vec::with_capacity(n * self.plan.num_vars as usize));
        for (a, b) in chunks(n) {
            let part = part(ev, a, b);
            let batch = self.upload(&part, 0)?;
            if batch == 0 {
                continue;
            }
            {
                let bufs = self.buffers.as_ref().ok_or(CudaError::Unbound("value buffers"))?;
                let bind = Bind { bufs: Some(bufs), dev: &self.dev, em: (0.0, 0.0), out: None, seed: 0, sample0: 0 };
                for (spec, f) in self.manifest.queries.mpe_forward.iter().zip(&self.kernels.queries.mpe_forward) {
                    Self::launch(&self.stream, f, spec, &bind, batch)?;
                }
            }
            log_values.extend(self.root_values(batch)?);
            assignments.extend(self.walk(Walk::Mpe, batch, 0, a as u32)?);
        }
        Ok(MpeResult { log_values, assignments })
    }

    /// `n` unconditional samples, row-major `[n, num_vars]`; deterministic for a seed (GPU draws
    /// differ from the CPU engine's: same distribution, different generator).
    pub fn sample(&mut self, n: usize, seed: u64) -> Result<Vec<f32>, RuntimeError> {
        self.sample_conditional(&Evidence::all_missing(self.plan.num_vars as usize, n), seed)
    }

    /// One sample per evidence row from `P(x_missing | x_observed)`; observed values are kept.
    /// Sample `i`'s draws depend only on `(seed, i)`.
    pub fn sample_conditional(&mut self, ev: &Evidence, seed: u64) -> Result<Vec<f32>, RuntimeError> {
        ev.require_hard("conditional sampling")?;
        ev.validate(&self.plan)?;
        self.check_queries()?;
        let n = ev.num_samples();
        let mut out = Vec::with_capacity(n * self.plan.num_vars as usize);
        for (a, b) in chunks(n) {
            let part = part(ev, a, b);
            let batch = self.run_forward(&part, 0)?;
            if batch == 0 {
                continue;
            }
            // Philox counters take the global sample index (mod 2^32).
            out.extend(self.walk(Walk::Sample, batch, seed, a as u32)?);
        }
        Ok(out)
    }
}

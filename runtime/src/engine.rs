//! One engine for callers that run wherever they are: the GPU engine where the device choice allows
//! and one starts, otherwise the CPU engine, with the reason. The CLI and the deployment binary
//! both start theirs here, so the device policy (`auto` falls back, `cuda` fails, `cpu` never
//! touches the driver) and the per-engine dispatch are written once.

use crate::RuntimeError;
use crate::cpu::CpuEngine;
use crate::cuda::{DeviceData, GpuEngine};
use crate::data::Evidence;
use crate::outputs::{Conditional, MpeResult};
use crate::params::Params;

/// Where a caller asks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The GPU when one is usable, else the CPU (with the reason).
    Auto,
    Cpu,
    Cuda,
}

/// The CPU or the GPU engine, behind one set of calls.
pub enum Engine {
    Cpu(Box<CpuEngine>),
    Gpu(Box<GpuEngine>),
}

/// An engine and, when `Device::Auto` fell back to the CPU, why the GPU engine did not start.
pub struct Started {
    pub engine: Engine,
    pub fallback: Option<String>,
}

impl Engine {
    /// Start the engine `device` asks for. `gpu` builds the GPU engine (the caller knows where
    /// its kernels come from: the emitter, or CUBINs embedded at build time); it is not called for
    /// `Device::Cpu`. With `Device::Cuda` its failure is the error; with `Device::Auto` the CPU
    /// engine starts instead and [`Started::fallback`] says why.
    pub fn start<E: std::fmt::Display>(
        device: Device,
        cpu: impl FnOnce() -> Result<CpuEngine, RuntimeError>,
        gpu: impl FnOnce() -> Result<GpuEngine, E>,
    ) -> Result<Started, RuntimeError> {
        if device == Device::Cpu {
            return Ok(Started { engine: Engine::Cpu(Box::new(cpu()?)), fallback: None });
        }
        match gpu() {
            Ok(g) => Ok(Started { engine: Engine::Gpu(Box::new(g)), fallback: None }),
            Err(e) if device == Device::Cuda => Err(RuntimeError::GpuUnavailable(e.to_string())),
            Err(e) => Ok(Started { engine: Engine::Cpu(Box::new(cpu()?)), fallback: Some(e.to_string()) }),
        }
    }

    /// `cpu`, or the GPU's name.
    pub fn device_name(&self) -> String {
        match self {
            Engine::Cpu(_) => "cpu".into(),
            Engine::Gpu(e) => e.device_name.clone(),
        }
    }

    pub fn log_likelihood(&mut self, ev: &Evidence) -> Result<Vec<f32>, RuntimeError> {
        match self {
            Engine::Cpu(e) => e.log_likelihood(ev),
            Engine::Gpu(e) => e.log_likelihood(ev),
        }
    }

    pub fn accumulate_flows(&mut self, ev: &Evidence) -> Result<Vec<f32>, RuntimeError> {
        match self {
            Engine::Cpu(e) => e.accumulate_flows(ev, None),
            Engine::Gpu(e) => e.accumulate_flows(ev, None),
        }
    }

    /// Flows of rows `rows` of `dev` when this is the GPU engine and the rows are on its device,
    /// else of the host rows `host` builds.
    pub fn accumulate_flows_at(
        &mut self,
        dev: Option<&DeviceData>,
        rows: std::ops::Range<usize>,
        host: impl FnOnce() -> Evidence,
    ) -> Result<Vec<f32>, RuntimeError> {
        match (self, dev) {
            (Engine::Gpu(e), Some(d)) => e.accumulate_flows_at(d, rows, None),
            (e, _) => e.accumulate_flows(&host()),
        }
    }

    pub fn em_step(&mut self, step_size: f32, pseudocount: f32) -> Result<(), RuntimeError> {
        match self {
            Engine::Cpu(e) => e.em_step(step_size, pseudocount),
            Engine::Gpu(e) => e.em_step(step_size, pseudocount),
        }
    }

    /// One entropy-regularized EM step ([`crate::entropy`]); `tau = 0` is the plain step.
    pub fn em_step_entropy(&mut self, step_size: f32, pseudocount: f32, tau: f32) -> Result<(), RuntimeError> {
        match self {
            _ if tau == 0.0 => self.em_step(step_size, pseudocount),
            Engine::Cpu(e) => e.em_step_entropy(step_size, pseudocount, tau),
            Engine::Gpu(e) => e.em_step_entropy(step_size, pseudocount, tau),
        }
    }

    /// The current parameters (copied from the device for the GPU engine).
    pub fn params(&self) -> Result<Params, RuntimeError> {
        match self {
            Engine::Cpu(e) => Ok(e.params().clone()),
            Engine::Gpu(e) => e.params(),
        }
    }

    pub fn conditionals(&mut self, ev: &Evidence) -> Result<Vec<Vec<Conditional>>, RuntimeError> {
        match self {
            Engine::Cpu(e) => e.conditionals(ev),
            Engine::Gpu(e) => e.conditionals(ev),
        }
    }

    pub fn mpe(&mut self, ev: &Evidence) -> Result<MpeResult, RuntimeError> {
        match self {
            Engine::Cpu(e) => e.mpe(ev),
            Engine::Gpu(e) => e.mpe(ev),
        }
    }

    /// `n` samples; deterministic for a seed on one engine kind (the CPU engine draws from
    /// ChaCha8 streams, the GPU engine from Philox, so the two give different samples).
    pub fn sample(&mut self, n: usize, seed: u64) -> Result<Vec<f32>, RuntimeError> {
        match self {
            Engine::Cpu(e) => e.sample(n, seed),
            Engine::Gpu(e) => e.sample(n, seed),
        }
    }
}

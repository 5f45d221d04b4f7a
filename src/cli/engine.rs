//! The engine a command runs on: the GPU engine where `--device` allows and a GPU is usable,
//! otherwise the CPU engine, with one line saying why.

use anyhow::{Result, bail};
use pc_codegen::Model;
use pc_codegen::emit::{EmitOptions, Precision, emit_with};
use pc_runtime::cuda::{DeviceData, GpuEngine, KernelCache};
use pc_runtime::{Conditional, CpuEngine, Evidence, MpeResult, Params};

use super::Device;

pub enum Engine {
    Cpu(Box<CpuEngine>),
    Gpu(Box<GpuEngine>),
}

impl Engine {
    /// Build the engine `device` asks for: `auto` falls back to the CPU engine (saying why) when
    /// no GPU is usable, `cuda` fails instead.
    pub fn new(model: &Model, device: Device, precision: Precision) -> Result<Engine> {
        if device == Device::Cpu {
            if precision != Precision::Fp32 {
                bail!(
                    "--precision {precision} selects the GPU engine's tensor-core kernels; the CPU engine (--device cpu) computes in f32/f64: drop --precision or use --device cuda"
                );
            }
            return Ok(Engine::Cpu(Box::new(model.cpu_engine()?)));
        }
        let gpu = emit_with(&model.plan, &EmitOptions { precision })
            .map_err(anyhow::Error::from)
            .and_then(|e| Ok(GpuEngine::new(model.plan.clone(), model.params.clone(), &e.source, e.manifest, &KernelCache::new(KernelCache::default_dir()))?));
        match (gpu, device) {
            (Ok(g), _) => {
                eprintln!("pcc: running on {} ({precision} sum forward)", g.device_name);
                Ok(Engine::Gpu(Box::new(g)))
            }
            (Err(e), Device::Cuda) => bail!("--device cuda: {e:#}"),
            (Err(e), _) => {
                eprintln!("pcc: running on the CPU: {e:#}");
                Ok(Engine::Cpu(Box::new(model.cpu_engine()?)))
            }
        }
    }

    pub fn log_likelihood(&mut self, ev: &Evidence) -> Result<Vec<f32>> {
        Ok(match self {
            Engine::Cpu(e) => e.log_likelihood(ev)?,
            Engine::Gpu(e) => e.log_likelihood(ev)?,
        })
    }

    pub fn accumulate_flows(&mut self, ev: &Evidence) -> Result<Vec<f32>> {
        Ok(match self {
            Engine::Cpu(e) => e.accumulate_flows(ev, None)?,
            Engine::Gpu(e) => e.accumulate_flows(ev, None)?,
        })
    }

    /// `data`'s rows (in `order` when given) on the device for [`Engine::accumulate_flows_at`],
    /// when this is the GPU engine and they leave at least half of the free device memory free;
    /// `None` otherwise (then every batch goes from host memory, and no reordered copy is made).
    pub fn upload(&mut self, data: &Evidence, order: Option<&[usize]>) -> Result<Option<DeviceData>> {
        let Engine::Gpu(e) = self else { return Ok(None) };
        let need = 5 * data.values.len();
        if e.free_device_bytes()? < 2 * need {
            return Ok(None);
        }
        Ok(Some(match order {
            Some(order) => e.upload_data(&data.select(order))?,
            None => e.upload_data(data)?,
        }))
    }

    /// Flows of rows `rows` of data on the device, else of the host rows `host`.
    pub fn accumulate_flows_at(&mut self, dev: Option<&DeviceData>, rows: std::ops::Range<usize>, host: impl FnOnce() -> Evidence) -> Result<Vec<f32>> {
        match (self, dev) {
            (Engine::Gpu(e), Some(d)) => Ok(e.accumulate_flows_at(d, rows, None)?),
            (e, _) => e.accumulate_flows(&host()),
        }
    }

    /// Free the device copy of a dataset.
    pub fn release(&mut self, data: Option<DeviceData>) {
        if let (Engine::Gpu(e), Some(d)) = (self, data) {
            e.release_data(d);
        }
    }

    pub fn em_step(&mut self, step_size: f32, pseudocount: f32) -> Result<()> {
        match self {
            Engine::Cpu(e) => e.em_step(step_size, pseudocount)?,
            Engine::Gpu(e) => e.em_step(step_size, pseudocount)?,
        }
        Ok(())
    }

    /// The current parameters (copied from the device for the GPU engine).
    pub fn params(&self) -> Result<Params> {
        Ok(match self {
            Engine::Cpu(e) => e.params().clone(),
            Engine::Gpu(e) => e.params()?,
        })
    }

    pub fn conditionals(&mut self, ev: &Evidence) -> Result<Vec<Vec<Conditional>>> {
        Ok(match self {
            Engine::Cpu(e) => e.conditionals(ev)?,
            Engine::Gpu(e) => e.conditionals(ev)?,
        })
    }

    pub fn mpe(&mut self, ev: &Evidence) -> Result<MpeResult> {
        Ok(match self {
            Engine::Cpu(e) => e.mpe(ev)?,
            Engine::Gpu(e) => e.mpe(ev)?,
        })
    }

    /// `n` samples; deterministic for a seed on one engine kind (the CPU engine draws from
    /// ChaCha8 streams, the GPU engine from Philox, so the two give different samples).
    pub fn sample(&mut self, n: usize, seed: u64) -> Result<Vec<f32>> {
        Ok(match self {
            Engine::Cpu(e) => e.sample(n, seed)?,
            Engine::Gpu(e) => e.sample(n, seed)?,
        })
    }
}

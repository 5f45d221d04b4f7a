//! The engine a command runs on: the GPU engine where `--device` allows and a GPU is usable,
//! otherwise the CPU engine, with one line saying why.

use anyhow::{bail, Result};
use pc_codegen::emit::{emit_with, EmitOptions, Precision};
use pc_codegen::Model;
use pc_runtime::cuda::{GpuEngine, KernelCache};
use pc_runtime::{CpuEngine, Evidence, Params};

use super::Device;

pub enum Engine {
    Cpu(Box<CpuEngine>),
    Gpu(Box<GpuEngine>),
}

impl Engine {
    /// Build the engine `device` asks for. `gpu_ready` is false for queries the GPU engine does
    /// not run yet; then `auto` uses the CPU and `cuda` fails, naming the query.
    pub fn new(model: &Model, device: Device, precision: Precision, query: Option<&str>) -> Result<Engine> {
        if device == Device::Cpu {
            return Ok(Engine::Cpu(Box::new(model.cpu_engine()?)));
        }
        if let Some(q) = query {
            if device == Device::Cuda {
                bail!("--device cuda: {q} does not run on the GPU engine yet; use --device cpu or auto");
            }
            eprintln!("pcc: running on the CPU: {q} does not run on the GPU engine yet");
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
}

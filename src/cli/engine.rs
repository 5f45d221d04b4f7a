//! The engine a command runs on: the GPU engine where `--device` allows and a GPU is usable,
//! otherwise the CPU engine, with one line saying why.

use anyhow::{Result, bail};
use pc_codegen::Model;
use pc_codegen::pipeline::{Precision, emit_plan};
use pc_runtime::cuda::{DeviceData, GpuEngine, KernelCache};
use pc_runtime::{CpuEngine, Evidence};

use super::Device;

pub use pc_runtime::Engine;

/// Start the engine `device` asks for (`pc_runtime::Engine::start`'s policy): `auto` falls back to
/// the CPU engine, saying why, when no GPU is usable; `cuda` fails instead. The GPU engine's
/// kernels come from the emitter at `precision`.
pub fn start(model: &Model, device: Device, precision: Precision) -> Result<Engine> {
    start_on(model, device, precision, 0, "")
}

/// [`start`] on GPU `ordinal`; `who` (e.g. `rank 1 `) starts the line that names the device.
pub fn start_on(model: &Model, device: Device, precision: Precision, ordinal: usize, who: &str) -> Result<Engine> {
    if device == Device::Cpu && precision != Precision::Fp32 {
        bail!(
            "--precision {precision} selects the GPU engine's tensor-core kernels; the CPU engine (--device cpu) computes in f32/f64: drop --precision or use --device cuda"
        );
    }
    let runtime_device = match device {
        Device::Auto => pc_runtime::Device::Auto,
        Device::Cpu => pc_runtime::Device::Cpu,
        Device::Cuda => pc_runtime::Device::Cuda,
    };
    let gpu = || -> Result<GpuEngine> {
        let a = emit_plan(model.plan.clone(), precision)?;
        let cache = KernelCache::new(KernelCache::default_dir());
        Ok(GpuEngine::on_device(ordinal, a.plan, model.params.clone(), &a.cuda_source, &[], a.manifest, &cache)?)
    };
    let cpu = || CpuEngine::new(model.plan.clone(), model.params.clone());
    let started = Engine::start(runtime_device, cpu, || gpu().map_err(|e| format!("{e:#}")))?;
    match (&started.engine, &started.fallback) {
        (_, Some(why)) => eprintln!("pcc: {who}running on the CPU: {why}"),
        (Engine::Gpu(g), None) => eprintln!("pcc: {who}running on {} ({precision} sum forward)", g.device_name),
        (Engine::Cpu(_), None) => {}
    }
    Ok(started.engine)
}

/// What only `pcc train` asks of an engine: a dataset kept on the device across epochs.
pub trait DeviceDataExt {
    fn upload(&mut self, data: &Evidence, order: Option<&[usize]>) -> Result<Option<DeviceData>>;
    fn release(&mut self, data: Option<DeviceData>);
}

impl DeviceDataExt for Engine {
    /// `data`'s rows (in `order` when given) on the device for `Engine::accumulate_flows_at`,
    /// when this is the GPU engine and they leave at least half of the free device memory free;
    /// `None` otherwise (then every batch goes from host memory, and no reordered copy is made).
    fn upload(&mut self, data: &Evidence, order: Option<&[usize]>) -> Result<Option<DeviceData>> {
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

    /// Free the device copy of a dataset.
    fn release(&mut self, data: Option<DeviceData>) {
        if let (Engine::Gpu(e), Some(d)) = (self, data) {
            e.release_data(d);
        }
    }
}

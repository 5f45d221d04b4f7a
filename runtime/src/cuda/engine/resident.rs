//! Data resident in device memory: a dataset is validated and uploaded once, then passes run on
//! row ranges of it with no host work per batch but a strided device-to-device copy into the
//! pass's input buffer (PyJuice's benchmark likewise keeps its tensor on the GPU). Training from
//! host memory transposes and uploads every batch (~2 MB for a batch of 512 MNIST images), which
//! bounds the small models' step time.

use std::ops::Range;

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};

use super::{GpuEngine, io_layout};
use crate::RuntimeError;
use crate::cuda::{CudaError, raw};
use crate::data::Evidence;

/// The kernel that widens byte rows into a pass's float inputs (emitted into every source's
/// first unit, `templates/stage_u8.cu.tera`).
pub const STAGE_U8: &str = "pcc_stage_u8";

/// A dataset on the device, variable-major (`[num_vars][num_samples]`, the layout of a pass's
/// input rows), with its missing-value mask only when some value is missing.
pub struct DeviceData {
    values: Values,
    mask: Option<CudaSlice<u8>>,
    num_samples: usize,
    num_vars: usize,
    /// The data's softening keep-probability (1: hard), set on the device for each pass over it.
    keep: f32,
}

impl DeviceData {
    pub fn num_samples(&self) -> usize {
        self.num_samples
    }

    pub fn num_vars(&self) -> usize {
        self.num_vars
    }

    /// Device memory it holds (bytes).
    pub fn bytes(&self) -> usize {
        let values = match &self.values {
            Values::F32(v) => 4 * v.len(),
            Values::U8(v) => v.len(),
        };
        values + self.mask.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the values are kept as bytes (every value an integer in 0..=255).
    pub fn is_bytes(&self) -> bool {
        matches!(self.values, Values::U8(_))
    }
}

/// The values of a [`DeviceData`]: bytes when every value is an integer in 0..=255 (categorical
/// and binary data: MNIST at a quarter of the memory), else floats.
enum Values {
    F32(CudaSlice<f32>),
    U8(CudaSlice<u8>),
}

impl GpuEngine {
    /// Validate `ev` against the plan and copy it to the device once. Its bytes count towards
    /// [`GpuEngine::peak_device_bytes`] while it lives (they are released from the count by
    /// [`GpuEngine::release_data`]).
    pub fn upload_data(&mut self, ev: &Evidence) -> Result<DeviceData, RuntimeError> {
        ev.validate(&self.plan)?;
        if matches!(ev.soft, Some(crate::Soft::Dense { .. })) {
            return Err(RuntimeError::SoftUnsupported { query: "device-resident data (pass dense soft evidence batch by batch)" });
        }
        let keep = super::soften_keep(ev, &self.manifest)?;
        let (values, mask) = ev.transposed();
        let n = ev.num_samples();
        let bytes = self.kernels.stage_u8.is_some() && values.iter().all(|&x| (0.0..=255.0).contains(&x) && x.fract() == 0.0);
        let has_missing = mask.iter().any(|&m| m != 0);
        let need = values.len() * if bytes { 1 } else { 4 } + if has_missing { mask.len() } else { 0 };
        let what = || format!("a dataset of {n} samples on the device");
        super::ensure_fits(&self.stream, what, need, |_| "keep it in host memory: the passes of `GpuEngine::accumulate_flows` upload each batch".into())?;
        let values = match bytes {
            true => {
                let b: Vec<u8> = values.iter().map(|&x| x as u8).collect();
                Values::U8(self.stream.clone_htod(if b.is_empty() { &[0u8][..] } else { &b }).map_err(CudaError::from)?)
            }
            false => Values::F32(self.stream.clone_htod(if values.is_empty() { &[0f32][..] } else { &values }).map_err(CudaError::from)?),
        };
        let mask = match has_missing {
            true => Some(self.stream.clone_htod(&mask).map_err(CudaError::from)?),
            false => None,
        };
        let data = DeviceData { values, mask, num_samples: n, num_vars: ev.num_vars, keep };
        self.bytes.0 += data.bytes();
        self.bytes.1 = self.bytes.1.max(self.bytes.0);
        Ok(data)
    }

    /// Device memory free now (bytes), as the driver reports it.
    pub fn free_device_bytes(&self) -> Result<usize, RuntimeError> {
        Ok(self.stream.context().mem_get_info().map_err(CudaError::from)?.0)
    }

    /// Drop `data` and its bytes from the engine's memory count.
    pub fn release_data(&mut self, data: DeviceData) {
        self.bytes.0 -= data.bytes();
    }

    /// [`GpuEngine::log_likelihood`] of the rows `rows` of `data`.
    pub fn log_likelihood_at(&mut self, data: &DeviceData, rows: Range<usize>) -> Result<Vec<f32>, RuntimeError> {
        let batch = self.stage_rows(data, rows)?;
        self.forward_pass(batch, false)?;
        self.root_values(batch)
    }

    /// [`GpuEngine::accumulate_flows`] over the rows `rows` of `data`.
    pub fn accumulate_flows_at(&mut self, data: &DeviceData, rows: Range<usize>, weights: Option<&[f32]>) -> Result<Vec<f32>, RuntimeError> {
        if let Some(w) = weights
            && w.len() != rows.len()
        {
            return Err(RuntimeError::WeightsShape { expected: rows.len(), found: w.len() });
        }
        let batch = self.stage_rows(data, rows)?;
        self.train_pass(batch, weights)
    }

    /// Copy rows `rows` of `data` into the pass's input buffer (values, then mask bytes; the
    /// sequence word stays 0: results come back by copy).
    fn stage_rows(&mut self, data: &DeviceData, rows: Range<usize>) -> Result<usize, RuntimeError> {
        if data.num_vars != self.plan.num_vars as usize {
            return Err(RuntimeError::DeviceDataShape { expected: self.plan.num_vars as usize, found: data.num_vars });
        }
        if rows.start > rows.end || rows.end > data.num_samples {
            return Err(RuntimeError::RowRange { start: rows.start, end: rows.end, len: data.num_samples });
        }
        let batch = rows.len();
        if batch == 0 {
            return Ok(0);
        }
        self.set_keep(data.keep)?;
        self.buffers(batch)?;
        // A copy from the host staging into `io` may still be pending: the copies below are on
        // the same stream, so they land after it.
        let bufs = self.buffers.as_ref().expect("allocated above");
        let (n, nv, stream) = (bufs.io_n, data.num_vars, &self.stream);
        let (io, _) = bufs.io.device_ptr(stream);
        let copy = |src: u64, dst: u64, elem: usize| -> Result<(), CudaError> {
            // SAFETY: source rows [start, end) of each of the nv variable rows lie inside the
            // dataset (checked above); the destination is the first nv · batch values (or mask
            // bytes) of `io`, sized by `io_layout(nv · batch)`; both on this engine's stream.
            unsafe { raw::copy_2d_dtod_async((src, rows.start * elem, data.num_samples * elem), (dst, batch * elem), (batch * elem, nv), stream) }
                .map_err(CudaError::from)
        };
        match &data.values {
            Values::F32(v) => copy(v.device_ptr(stream).0, io, 4)?,
            Values::U8(v) => {
                // A byte dataset of another engine, whose source has the kernel, on one whose
                // (older) source has not.
                let f = self.kernels.stage_u8.as_ref().ok_or(CudaError::MissingKernels("byte-dataset staging"))?;
                let (threads, (pitch, start)) = ((nv * batch) as u32, (data.num_samples as i64, rows.start as i64));
                let cfg = LaunchConfig { grid_dim: (threads.div_ceil(256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                let mut l = stream.launch_builder(f);
                let (nv, b) = (nv as i32, batch as i32);
                l.arg(&bufs.io).arg(v).arg(&pitch).arg(&start).arg(&nv).arg(&b);
                // SAFETY: `pcc_stage_u8(float*, const u8*, long long, long long, int, int)`;
                // it reads rows [start, start + batch) of the nv · pitch bytes (checked above)
                // and writes the first nv · batch floats of `io`.
                unsafe { l.launch(cfg) }.map_err(CudaError::from)?;
            }
        }
        let mask_at = io + 4 * n as u64;
        match &data.mask {
            Some(m) => {
                let (m, _) = m.device_ptr(stream);
                copy(m, mask_at, 1)?;
            }
            // SAFETY: the n mask bytes follow the n values in `io` (`io_layout`).
            None => unsafe { raw::memset_d8_async(mask_at, 0, n, stream) }.map_err(CudaError::from)?,
        }
        let (_, at_seq) = io_layout(n);
        // SAFETY: the sequence word lies inside `io` (`io_layout`).
        unsafe { raw::memset_d32_async(io + 4 * at_seq as u64, 0, 1, stream) }.map_err(CudaError::from)?;
        Ok(batch)
    }
}

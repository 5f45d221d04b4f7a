//! Model parameters in the plan's flat layout, their validation, random initialization and the
//! safetensors file format (one named tensor per IR node, in the IR's natural shapes).

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensorError, SafeTensors, tensor::TensorView};

use crate::dist::{check_nonneg, check_rows};
use crate::plan::{Plan, TensorLayout, TensorSpec};
use crate::{ParamsError, RuntimeError, atomic_write};

/// Tolerance on `|Σ θ - 1|` when checking that a distribution is normalized (f32 storage).
pub const NORMALIZATION_TOL: f64 = 1e-3;

/// Format tag stored in the parameter file's metadata.
const FORMAT_TAG: &str = "pcc-params";
const FORMAT_VERSION: &str = "1";

/// All parameters of a compiled circuit, in the plan's flat layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Sum weights (linear space); `[0, num_dummy_params)` are zeros.
    pub sum: Vec<f32>,
    /// Input parameters of every untied input segment.
    pub input: Vec<f32>,
}

impl Params {
    /// Zero-filled parameters of the right shape (not a valid model until filled).
    pub fn zeros(plan: &Plan) -> Params {
        Params { sum: vec![0.0; plan.num_sum_params as usize], input: vec![0.0; plan.num_input_params as usize] }
    }

    /// PyJuice-style random initialization: weights `exp(-U(0,1) * perturbation)`, normalized;
    /// leaves as their family says (`crate::dist`: categorical as the weights, Bernoulli
    /// `p ~ U(0.2, 0.8)`, Gaussian `μ ~ U(-1, 1)`, `σ = 1`, …). Deterministic for a seed.
    pub fn random(plan: &Plan, seed: u64, perturbation: f32) -> Params {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut p = Params::zeros(plan);
        for b in &plan.em_blocks {
            for m in 0..b.block_size {
                let idx = |w: u32| (b.base + w * b.block_size + m) as usize;
                let mut total = 0.0f64;
                for w in 0..b.width {
                    let v = (-rng.random::<f32>() * perturbation).exp();
                    p.sum[idx(w)] = v;
                    total += v as f64;
                }
                for w in 0..b.width {
                    p.sum[idx(w)] = (p.sum[idx(w)] as f64 / total) as f32;
                }
            }
        }
        for &(i, v) in &plan.fixed_params {
            p.sum[i as usize] = v;
        }
        for seg in plan.inputs.iter().flat_map(|l| l.segments.iter()).filter(|s| !s.tied) {
            let np = seg.dist.num_params() as usize;
            for n in 0..seg.num_nodes as usize {
                let row = &mut p.input[seg.param_start as usize + n * np..][..np];
                seg.dist.init(row, &mut rng, perturbation);
            }
        }
        p
    }

    /// Per-node constants of the forward pass, precomputed once per parameter change so the hot loop
    /// does a lookup instead of a logarithm. Laid out like the statistics (`S` slots per node at the
    /// segment's `flow_start`), filled by the family (`crate::dist`): Categorical `log θ_k`;
    /// Bernoulli `(log(1−p), log p)`; Gaussian `(μ, σ, log σ + ½ log 2π)`; Binomial
    /// `(log(1−p), log p, n)`; Indicator nothing.
    pub fn leaf_table(&self, plan: &Plan) -> Vec<f32> {
        // Segments are filled in parallel (25M logarithms for an HCLT-128 on MNIST would
        // otherwise dominate the start of an engine), then copied to their disjoint ranges.
        let segs: Vec<_> = plan.inputs.iter().flat_map(|l| l.segments.iter()).filter(|s| !s.tied).collect();
        let parts: Vec<Vec<f32>> = segs.par_iter().map(|seg| self.segment_table(seg)).collect();
        let mut tab = vec![0.0; plan.num_input_flows as usize];
        for (seg, part) in segs.iter().zip(parts) {
            tab[seg.flow_start as usize..][..part.len()].copy_from_slice(&part);
        }
        tab
    }

    /// The leaf constants of one untied segment, in its statistics layout.
    fn segment_table(&self, seg: &crate::plan::InputSegment) -> Vec<f32> {
        let (np, ns) = (seg.dist.num_params() as usize, seg.dist.num_stats() as usize);
        let mut tab = vec![0.0; seg.num_nodes as usize * ns];
        for i in 0..seg.num_nodes as usize {
            let prm = &self.input[seg.param_start as usize + i * np..][..np];
            seg.dist.table(prm, &mut tab[i * ns..][..ns]);
        }
        tab
    }

    /// The lengths only: what must hold before any buffer of these parameters reaches a kernel
    /// (the GPU engine uploads while [`Params::validate`] checks the values).
    pub fn check_shape(&self, plan: &Plan) -> Result<(), ParamsError> {
        if self.sum.len() != plan.num_sum_params as usize || self.input.len() != plan.num_input_params as usize {
            return Err(ParamsError::WrongLength {
                sum: self.sum.len(),
                input: self.input.len(),
                expected_sum: plan.num_sum_params as usize,
                expected_input: plan.num_input_params as usize,
            });
        }
        Ok(())
    }

    /// Check lengths, finiteness, signs and normalization of every tensor; errors name the tensor.
    pub fn validate(&self, plan: &Plan) -> Result<(), ParamsError> {
        self.check_shape(plan)?;
        if let Some(index) = self.sum[..plan.num_dummy_params as usize].iter().position(|&v| v != 0.0) {
            return Err(ParamsError::DummyNotZero { index, value: self.sum[index] });
        }
        for &(index, expected) in &plan.fixed_params {
            let found = self.sum[index as usize];
            if found != expected {
                return Err(ParamsError::FixedChanged { index: index as usize, expected, found });
            }
        }
        // Tensors are checked in parallel; the first failing tensor in plan order is reported.
        match plan.tensors.par_iter().find_map_first(|spec| validate_tensor(spec, &self.extract(spec)).err()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The tensor `spec` in its file shape (row-major), gathered from the flat layout.
    pub fn extract(&self, spec: &TensorSpec) -> Vec<f32> {
        let mut out = vec![0.0; spec.shape.iter().product()];
        match &spec.layout {
            TensorLayout::SumWeights { block_size, child_block_size, edge_bases, .. } => {
                let (bs, cbs) = (*block_size as usize, *child_block_size as usize);
                for (e, &base) in edge_bases.iter().enumerate() {
                    for m in 0..bs {
                        for k in 0..cbs {
                            out[(e * bs + m) * cbs + k] = self.sum[base as usize + k * bs + m];
                        }
                    }
                }
            }
            TensorLayout::Input { param_start, .. } => {
                let n = out.len();
                out.copy_from_slice(&self.input[*param_start as usize..][..n]);
            }
        }
        out
    }

    /// Scatter a tensor in file shape into the flat layout (no validation).
    pub fn insert(&mut self, spec: &TensorSpec, values: &[f32]) {
        match &spec.layout {
            TensorLayout::SumWeights { block_size, child_block_size, edge_bases, .. } => {
                let (bs, cbs) = (*block_size as usize, *child_block_size as usize);
                for (e, &base) in edge_bases.iter().enumerate() {
                    for m in 0..bs {
                        for k in 0..cbs {
                            self.sum[base as usize + k * bs + m] = values[(e * bs + m) * cbs + k];
                        }
                    }
                }
            }
            TensorLayout::Input { param_start, .. } => {
                self.input[*param_start as usize..][..values.len()].copy_from_slice(values);
            }
        }
    }

    /// Set the parameters of one IR node from a tensor in its file shape, validating it.
    pub fn set_node(&mut self, plan: &Plan, ir_node: u32, values: &[f32]) -> Result<(), ParamsError> {
        let spec = plan.tensors.iter().find(|t| t.ir_node == ir_node).ok_or_else(|| ParamsError::UnexpectedTensor { name: format!("node{ir_node}") })?;
        let expected: usize = spec.shape.iter().product();
        if values.len() != expected {
            return Err(ParamsError::ShapeMismatch { name: spec.name.clone(), expected: spec.shape.clone(), found: vec![values.len()] });
        }
        validate_tensor(spec, values)?;
        self.insert(spec, values);
        Ok(())
    }

    /// Write a safetensors file atomically (temporary file + rename), with a CRC32 checksum of all
    /// tensor bytes in the metadata so that corruption is detected on load.
    pub fn save(&self, plan: &Plan, path: &Path) -> Result<(), RuntimeError> {
        self.save_tagged(plan, path, &[])
    }

    /// [`Params::save`] with extra metadata entries (for example the fingerprint of the structure
    /// the parameters belong to), read back by [`Params::load_tagged`].
    pub fn save_tagged(&self, plan: &Plan, path: &Path, tags: &[(&str, String)]) -> Result<(), RuntimeError> {
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = plan
            .tensors
            .iter()
            .map(|spec| {
                let bytes = self.extract(spec).iter().flat_map(|v| v.to_le_bytes()).collect();
                (spec.name.clone(), spec.shape.clone(), bytes)
            })
            .collect();
        // The checksum covers tensors in name order, the order `load` sees them in.
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let crc = checksum(tensors.iter().map(|(n, s, b)| (n.as_str(), s.as_slice(), b.as_slice())));
        let crc = with_tags(crc, tags.iter().map(|(k, v)| (*k, v.as_str())));
        let views = tensors.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("shape matches data")));
        let mut meta = HashMap::from([
            ("format".to_string(), FORMAT_TAG.to_string()),
            ("version".to_string(), FORMAT_VERSION.to_string()),
            ("crc32".to_string(), format!("{crc:08x}")),
        ]);
        meta.extend(tags.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| ParamsError::Malformed { path: path.into(), detail: e.to_string() })?;
        atomic_write(path, &bytes)
    }

    /// Read and fully validate a parameter file written by [`Params::save`] for this plan.
    pub fn load(plan: &Plan, path: &Path) -> Result<Params, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, e))?;
        Ok(Self::from_bytes(plan, &bytes, path)?)
    }

    /// [`Params::load`], with the file's metadata (its format entries and any tags).
    pub fn load_tagged(plan: &Plan, path: &Path) -> Result<(Params, HashMap<String, String>), RuntimeError> {
        let bytes = std::fs::read(path).map_err(|e| RuntimeError::io(path, e))?;
        let params = Self::from_bytes(plan, &bytes, path)?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| ParamsError::Malformed { path: path.into(), detail: e.to_string() })?;
        Ok((params, meta.metadata().clone().unwrap_or_default()))
    }

    /// Parse parameter-file bytes (`path` only names the source in errors).
    pub fn from_bytes(plan: &Plan, bytes: &[u8], path: &Path) -> Result<Params, ParamsError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| match e {
            SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => ParamsError::Truncated { path: path.into(), detail: e.to_string() },
            SafeTensorError::MetadataIncompleteBuffer => match declared_len(bytes) {
                Some(n) if bytes.len() > n => ParamsError::Malformed {
                    path: path.into(),
                    detail: format!("{} bytes after the last tensor (the header describes {n} bytes)", bytes.len() - n),
                },
                _ => ParamsError::Truncated { path: path.into(), detail: e.to_string() },
            },
            other => ParamsError::Malformed { path: path.into(), detail: other.to_string() },
        })?;
        let (_, meta) = SafeTensors::read_metadata(bytes).expect("already parsed");
        let info = meta.metadata().clone().unwrap_or_default();
        if info.get("format").map(String::as_str) != Some(FORMAT_TAG) {
            return Err(ParamsError::Malformed { path: path.into(), detail: "not a pcc parameter file (metadata `format` is missing)".into() });
        }
        if info.get("version").map(String::as_str) != Some(FORMAT_VERSION) {
            return Err(ParamsError::Malformed { path: path.into(), detail: format!("unsupported parameter format version {:?}", info.get("version")) });
        }
        let recorded = info.get("crc32").ok_or_else(|| ParamsError::Malformed { path: path.into(), detail: "checksum missing from metadata".into() })?;
        // Parse, then insist on the exact canonical spelling so a flipped bit in it is caught too.
        let expected = u32::from_str_radix(recorded, 16)
            .ok()
            .filter(|c| format!("{c:08x}") == *recorded)
            .ok_or_else(|| ParamsError::Malformed { path: path.into(), detail: format!("checksum {recorded:?} is not 8 lower-case hex digits") })?;
        let mut names: Vec<&str> = st.names();
        names.sort_unstable();
        let views: Vec<(String, TensorView)> = names.iter().map(|n| (n.to_string(), st.tensor(n).expect("listed"))).collect();
        let found = checksum(views.iter().map(|(n, v)| (n.as_str(), v.shape(), v.data())));
        let found = with_tags(found, info.iter().filter(|(k, _)| !CORE_KEYS.contains(&k.as_str())).map(|(k, v)| (k.as_str(), v.as_str())));
        if found != expected {
            return Err(ParamsError::ChecksumMismatch { path: path.into(), expected, found });
        }
        // A set, not a scan per name: a structure of a million sums has a million tensors.
        let expected: std::collections::HashSet<&str> = plan.tensors.iter().map(|t| t.name.as_str()).collect();
        for name in &names {
            if !expected.contains(name) {
                return Err(ParamsError::UnexpectedTensor { name: name.to_string() });
            }
        }
        let mut params = Params::zeros(plan);
        for &(i, v) in &plan.fixed_params {
            params.sum[i as usize] = v;
        }
        for spec in &plan.tensors {
            let view = st.tensor(&spec.name).map_err(|_| ParamsError::MissingTensor { name: spec.name.clone() })?;
            if view.dtype() != Dtype::F32 {
                return Err(ParamsError::WrongDtype { name: spec.name.clone(), found: format!("{:?}", view.dtype()) });
            }
            if view.shape() != spec.shape.as_slice() {
                return Err(ParamsError::ShapeMismatch { name: spec.name.clone(), expected: spec.shape.clone(), found: view.shape().to_vec() });
            }
            let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            validate_tensor(spec, &values)?;
            params.insert(spec, &values);
        }
        Ok(params)
    }
}

/// File length the safetensors header describes (8 + header + largest data offset), if readable.
fn declared_len(bytes: &[u8]) -> Option<usize> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let end = header.as_object()?.values().filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64()).max().unwrap_or(0);
    Some(8 + n + end as usize)
}

/// The metadata entries every parameter file has; the others are tags ([`Params::save_tagged`]).
const CORE_KEYS: [&str; 3] = ["format", "version", "crc32"];

/// The tensors' checksum extended over the tags (sorted by key), so that a flipped bit in a tag
/// (e.g. the structure fingerprint) is detected too; unchanged without tags, so files written
/// before tags existed keep their checksum.
fn with_tags<'a>(crc: u32, tags: impl Iterator<Item = (&'a str, &'a str)>) -> u32 {
    let mut tags: Vec<(&str, &str)> = tags.collect();
    if tags.is_empty() {
        return crc;
    }
    tags.sort_unstable();
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    for (k, v) in tags {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    h.finalize()
}

fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (name, shape, data) in tensors {
        h.update(name.as_bytes());
        for d in shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(data);
    }
    h.finalize()
}

/// Validate one tensor in file shape.
fn validate_tensor(spec: &TensorSpec, values: &[f32]) -> Result<(), ParamsError> {
    let name = spec.name.as_str();
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(ParamsError::NonFinite { name: name.to_string(), index });
    }
    match &spec.layout {
        TensorLayout::SumWeights { block_size, child_block_size, sum_blocks, .. } => {
            check_nonneg(name, values)?;
            let (bs, cbs) = (*block_size as usize, *child_block_size as usize);
            let nblocks = sum_blocks.iter().map(|&b| b as usize + 1).max().unwrap_or(0);
            let mut sums = vec![0.0f64; nblocks * bs];
            for (e, &blk) in sum_blocks.iter().enumerate() {
                for m in 0..bs {
                    let row: f64 = values[(e * bs + m) * cbs..][..cbs].iter().map(|&v| v as f64).sum();
                    sums[blk as usize * bs + m] += row;
                }
            }
            check_rows(name, &sums)
        }
        TensorLayout::Input { dist, .. } => dist.validate(name, values),
    }
}

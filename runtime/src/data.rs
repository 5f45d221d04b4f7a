//! Evidence: a batch of samples with optional missing values and soft observations, validated
//! against a plan.

use crate::RuntimeError;
use crate::plan::{Domain, Plan};
use crate::soft::Soft;

/// A batch of samples, row-major `[num_samples, num_vars]`. Discrete values are category indices
/// stored as `f32` (exact up to 2^24). `missing[i]` marks `values[i]` as unobserved; a missing
/// value is marginalized out and its stored number is ignored. `soft`, where present, turns the
/// discrete observations into soft ones ([`Soft`]); likelihoods, flows and EM take it, MPE,
/// conditionals and sampling refuse it.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub num_vars: usize,
    pub values: Vec<f32>,
    pub missing: Option<Vec<bool>>,
    pub soft: Option<Soft>,
}

impl Evidence {
    /// Fully observed samples.
    pub fn new(num_vars: usize, values: Vec<f32>) -> Result<Self, RuntimeError> {
        Self::with_missing(num_vars, values, None)
    }

    /// Samples with a missing-value mask of the same shape as `values`.
    pub fn with_missing(num_vars: usize, values: Vec<f32>, missing: Option<Vec<bool>>) -> Result<Self, RuntimeError> {
        if num_vars == 0 || !values.len().is_multiple_of(num_vars) {
            return Err(RuntimeError::RaggedData { len: values.len(), num_vars });
        }
        if let Some(m) = &missing
            && m.len() != values.len()
        {
            return Err(RuntimeError::MaskShape { expected: values.len(), found: m.len() });
        }
        Ok(Evidence { num_vars, values, missing, soft: None })
    }

    /// Evidence where every variable of every sample is missing (unconditional queries).
    pub fn all_missing(num_vars: usize, num_samples: usize) -> Self {
        Evidence { num_vars, values: vec![0.0; num_vars * num_samples], missing: Some(vec![true; num_vars * num_samples]), soft: None }
    }

    /// The same samples with soft observations (checked against the plan by [`Evidence::validate`]).
    pub fn with_soft(mut self, soft: Soft) -> Self {
        self.soft = Some(soft);
        self
    }

    /// The soft observations of a hard-only query (MPE, conditionals, sampling) are an error.
    pub fn require_hard(&self, query: &'static str) -> Result<(), RuntimeError> {
        match self.soft {
            Some(_) => Err(RuntimeError::SoftUnsupported { query }),
            None => Ok(()),
        }
    }

    pub fn num_samples(&self) -> usize {
        self.values.len() / self.num_vars.max(1)
    }

    #[inline]
    pub fn is_missing(&self, sample: usize, var: usize) -> bool {
        self.missing.as_ref().is_some_and(|m| m[sample * self.num_vars + var])
    }

    #[inline]
    pub fn value(&self, sample: usize, var: usize) -> f32 {
        self.values[sample * self.num_vars + var]
    }

    /// The device layout of the GPU kernels: values and the missing mask (1 = missing, value 0)
    /// transposed to `[num_vars][num_samples]`, so a kernel's threads over samples read
    /// consecutive addresses.
    pub fn transposed(&self) -> (Vec<f32>, Vec<u8>) {
        let (n, nv) = (self.num_samples(), self.num_vars);
        let (mut data, mut missing) = (vec![0f32; nv * n], vec![0u8; nv * n]);
        self.transpose_into(&mut data, &mut missing);
        (data, missing)
    }

    /// [`Evidence::transposed`] into given buffers of `num_vars × num_samples` elements each
    /// (every element is written).
    pub fn transpose_into(&self, data: &mut [f32], missing: &mut [u8]) {
        let (n, nv) = (self.num_samples(), self.num_vars);
        assert!(data.len() == nv * n && missing.len() == nv * n, "transpose_into: buffers of {} and {} for {nv} × {n}", data.len(), missing.len());
        for s in 0..n {
            for v in 0..nv {
                let (d, m) = if self.is_missing(s, v) { (0.0, 1) } else { (self.value(s, v), 0) };
                data[v * n + s] = d;
                missing[v * n + s] = m;
            }
        }
    }

    /// Check shape and every observed value against the variables' domains.
    pub fn validate(&self, plan: &Plan) -> Result<(), RuntimeError> {
        if self.num_vars != plan.num_vars as usize {
            return Err(RuntimeError::WrongNumVars { expected: plan.num_vars as usize, found: self.num_vars });
        }
        // The fields are public: re-check what the constructors guarantee.
        if !self.values.len().is_multiple_of(self.num_vars) {
            return Err(RuntimeError::RaggedData { len: self.values.len(), num_vars: self.num_vars });
        }
        if let Some(m) = &self.missing
            && m.len() != self.values.len()
        {
            return Err(RuntimeError::MaskShape { expected: self.values.len(), found: m.len() });
        }
        for s in 0..self.num_samples() {
            for (v, dom) in plan.domains.iter().enumerate() {
                if self.is_missing(s, v) {
                    continue;
                }
                let x = self.value(s, v);
                if !x.is_finite() {
                    return Err(RuntimeError::NonFiniteValue { sample: s, var: v });
                }
                if let Domain::Discrete { num_cats } = *dom {
                    if x.fract() != 0.0 || x < 0.0 {
                        return Err(RuntimeError::NotACategory { sample: s, var: v, value: x });
                    }
                    if x >= num_cats as f32 {
                        return Err(RuntimeError::CategoryOutOfRange { sample: s, var: v, value: x, num_cats });
                    }
                }
            }
        }
        match &self.soft {
            Some(soft) => soft.validate(plan, self.num_samples()),
            None => Ok(()),
        }
    }

    /// Rows `[start, end)` as a new batch (used to split data into mini-batches).
    pub fn slice(&self, start: usize, end: usize) -> Evidence {
        let (a, b) = (start * self.num_vars, end * self.num_vars);
        Evidence {
            num_vars: self.num_vars,
            values: self.values[a..b].to_vec(),
            missing: self.missing.as_ref().map(|m| m[a..b].to_vec()),
            soft: self.soft.as_ref().map(|s| s.select(start..end)),
        }
    }

    /// The given rows, in the given order, as a new batch (used to shuffle mini-batches).
    pub fn select(&self, rows: &[usize]) -> Evidence {
        let nv = self.num_vars;
        Evidence {
            num_vars: nv,
            values: rows.iter().flat_map(|&r| self.values[r * nv..][..nv].iter().copied()).collect(),
            missing: self.missing.as_ref().map(|m| rows.iter().flat_map(|&r| m[r * nv..][..nv].iter().copied()).collect()),
            soft: self.soft.as_ref().map(|s| s.select(rows.iter().copied())),
        }
    }
}

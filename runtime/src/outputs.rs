//! What the passes and queries hand back, the same from both engines (CPU and GPU): accumulated
//! flows, per-variable conditionals, MPE results. Their own module so that neither engine, nor
//! the leaf families (`dist`), reach into the other engine for them.

use crate::plan::Plan;

/// Accumulated flows: sum-parameter flows (plan layout) and input expected statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Flows {
    pub sum: Vec<f64>,
    pub input: Vec<f64>,
    /// Total root flow accumulated (the number of samples for unit weights).
    pub total: f64,
}

impl Flows {
    pub fn zeros(plan: &Plan) -> Flows {
        Flows { sum: vec![0.0; plan.num_sum_params as usize], input: vec![0.0; plan.num_input_flows as usize], total: 0.0 }
    }
    pub(crate) fn add(&mut self, other: &Flows) {
        self.sum.iter_mut().zip(&other.sum).for_each(|(a, b)| *a += b);
        self.input.iter_mut().zip(&other.input).for_each(|(a, b)| *a += b);
        self.total += other.total;
    }
}

/// Posterior of one variable given a sample's evidence.
#[derive(Clone, Debug, PartialEq)]
pub enum Conditional {
    /// The variable was observed.
    Observed,
    /// `P(x_v = k | e)` for every category `k`.
    Discrete(Vec<f32>),
    /// Mean and variance of the posterior Gaussian mixture.
    Continuous { mean: f32, var: f32 },
}

/// MPE (max-product) result: the value of the best induced tree and its completion of the evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct MpeResult {
    /// `log max_{x_missing, tree}` per sample.
    pub log_values: Vec<f32>,
    /// Row-major `[num_samples, num_vars]`: observed values kept, missing ones filled in.
    pub assignments: Vec<f32>,
}

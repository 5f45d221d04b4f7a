//! Indicator leaves: node `i` of a vector is `[x == i mod num_states]`. No parameters and no
//! statistics (sums above them learn); on the GPU the per-leaf index is the indicated state.

use rand_chacha::ChaCha8Rng;

use super::{Constants, Dist, Family, FamilyInfo, ShapeParam, ShapeValue};
use crate::ParamsError;
use crate::outputs::Conditional;
use crate::plan::Domain;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Indicator {
    pub num_states: u32,
}

pub(crate) const INFO: FamilyInfo = FamilyInfo {
    kind: super::DistKind::Indicator,
    name: "indicator",
    shape: Some(ShapeParam::Count { key: "states", placeholder: "N" }),
    tensor_field: "probs",
    constants: Constants::None,
    em_lanes: 1,
    with_shape: |v| match v {
        Some(ShapeValue::Count(num_states)) => Some(Dist::Indicator { num_states }),
        _ => None,
    },
};

impl Indicator {
    #[inline]
    fn state(&self, local: u32) -> u32 {
        local % self.num_states
    }
    #[inline]
    fn log_prob(&self, local: u32, x: f32) -> f32 {
        if x as u32 == self.state(local) { 0.0 } else { f32::NEG_INFINITY }
    }
}

impl Family for Indicator {
    const INFO: FamilyInfo = INFO;

    fn num_params(&self) -> u32 {
        0
    }
    fn num_stats(&self) -> u32 {
        0
    }
    fn domain(&self) -> Domain {
        Domain::Discrete { num_cats: self.num_states }
    }
    fn check(&self) -> Result<(), String> {
        if self.num_states < 1 { Err("an indicator needs at least one state".into()) } else { Ok(()) }
    }
    fn shape(&self) -> Option<ShapeValue> {
        Some(ShapeValue::Count(self.num_states))
    }
    fn init(&self, _prm: &mut [f32], _rng: &mut ChaCha8Rng, _perturbation: f32) {}
    fn validate(&self, _name: &str, _values: &[f32]) -> Result<(), ParamsError> {
        Ok(())
    }
    fn table(&self, _prm: &[f32], _tab: &mut [f32]) {}
    #[inline]
    fn log_prob_table(&self, _tab: &[f32], local: u32, x: f32) -> f32 {
        self.log_prob(local, x)
    }
    fn log_prob(&self, _prm: &[f32], local: u32, x: f32) -> f32 {
        Indicator::log_prob(self, local, x)
    }
    fn mode(&self, _prm: &[f32], local: u32) -> (f32, f32) {
        (0.0, self.state(local) as f32)
    }
    fn add_observed(&self, _stats: &mut [f64], _x: f32, _f: f64) {}
    fn add_missing(&self, _stats: &mut [f64], _prm: &[f32], _f: f64) {}
    fn em_update(&self, _prm: &mut [f32], _stats: &[f64], _eta: f64, _alpha: f64) {}
    fn sample(&self, _prm: &[f32], local: u32, _rng: &mut ChaCha8Rng) -> f32 {
        self.state(local) as f32
    }
    fn add_conditional(&self, out: &mut Conditional, _prm: &[f32], local: u32, f: f32) {
        if let Conditional::Discrete(p) = out {
            p[self.state(local) as usize] += f;
        }
    }
    /// The gather scans all of the variable's categories for the one indicated (none if the
    /// state is outside the variable's range).
    fn conditional_slots(&self, local: u32, domain: Domain) -> Option<u32> {
        match domain {
            Domain::Discrete { num_cats } if self.state(local) < num_cats => Some(num_cats),
            _ => None,
        }
    }
    fn kernel_aux(&self, _flow_slot: u32, local: u32) -> u32 {
        self.state(local)
    }
}

//! Leaf families: one module per family owns everything the Rust side knows about it — parameter
//! and statistic counts, domain, keyword, random initialization, parameter checks, the constants of
//! the leaf table, log-density, mode, statistics, EM update, sampling and conditionals. Its CUDA
//! counterpart is `templates/dist/<family>.cu.tera`.
//!
//! This file is the registry: the [`Dist`] enum (the serialized form that plans, model files and
//! `structure.json` hold), the [`Family`] trait every family implements, and the one dispatch from
//! a `Dist` to its family ([`with_family!`]). The engines, [`Params`](crate::Params), the compiler,
//! the emitter and the `circuit!` macro call the methods of [`Dist`] and [`DistKind`] below and
//! never match on the family themselves, so a new family is its two files, a variant of [`Dist`]
//! and of [`DistKind`], one arm of [`with_family!`] and one line of [`FAMILIES`] (plus its
//! template's line in the emitter).

mod bernoulli;
mod binomial;
mod categorical;
mod gaussian;
mod indicator;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::ParamsError;
use crate::outputs::Conditional;
use crate::plan::Domain;

/// A leaf distribution together with its compile-time constants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Dist {
    /// Categorical over `0..num_cats`; parameters: `num_cats` probabilities.
    Categorical { num_cats: u32 },
    /// Bernoulli over `{0, 1}`; parameter: P(x = 1).
    Bernoulli,
    /// Gaussian; parameters: mean and standard deviation, the latter never below `min_sigma`.
    Gaussian { min_sigma: f32 },
    /// Node `i` of the vector is the indicator `[x == i mod num_states]`; no parameters.
    Indicator { num_states: u32 },
    /// Binomial over `0..=num_trials` (successes in `num_trials` trials); parameter: the success
    /// probability p.
    Binomial { num_trials: u32 },
}

/// The family of a distribution: one input layer per family. The order of the variants is the
/// order of the input layers in a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistKind {
    Categorical,
    Bernoulli,
    Gaussian,
    Indicator,
    Binomial,
}

/// Every family, indexed by [`DistKind`] (checked at compile time below).
pub const FAMILIES: [FamilyInfo; 5] = [categorical::INFO, bernoulli::INFO, gaussian::INFO, indicator::INFO, binomial::INFO];

const _: () = {
    let mut i = 0;
    while i < FAMILIES.len() {
        assert!(FAMILIES[i].kind as usize == i, "FAMILIES must list the families in DistKind order");
        i += 1;
    }
};

/// What the compiler, the emitter, the macro and the CLI need to know about a family (as opposed
/// to one distribution of it).
#[derive(Clone, Copy, Debug)]
pub struct FamilyInfo {
    pub kind: DistKind,
    /// The family's keyword: `circuit!` and the CLI spell it so, kernels are named after it
    /// (`input_<name>_fwd`, `pcc_<name>_logp`) and its template is `templates/dist/<name>.cu.tera`.
    pub name: &'static str,
    /// The number that completes the family into a distribution (`categorical(var 0, states 4)`),
    /// if any.
    pub shape: Option<ShapeParam>,
    /// Field of the family's parameter tensors in model files (`node3.probs`).
    pub tensor_field: &'static str,
    /// Where the family's GPU kernels read a leaf's constants.
    pub constants: Constants,
    /// Threads per leaf of the family's GPU EM kernel: 1, or 32 (a warp per leaf, whose lanes
    /// stride over a long parameter row).
    pub em_lanes: u32,
    /// The family's distribution of a shape value (`None` where the value does not fit).
    pub with_shape: fn(Option<ShapeValue>) -> Option<Dist>,
}

/// The option that completes a family into a distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ShapeParam {
    /// A whole number, required (`states 4`); `placeholder` is how messages spell it (`N`).
    Count { key: &'static str, placeholder: &'static str },
    /// A real number with a default where a leaf omits it (`min_sigma 0.01`).
    Real { key: &'static str, placeholder: &'static str, default: f32 },
}

impl ShapeParam {
    pub fn key(&self) -> &'static str {
        match self {
            ShapeParam::Count { key, .. } | ShapeParam::Real { key, .. } => key,
        }
    }
    pub fn placeholder(&self) -> &'static str {
        match self {
            ShapeParam::Count { placeholder, .. } | ShapeParam::Real { placeholder, .. } => placeholder,
        }
    }
}

/// The value of a family's [`ShapeParam`] in one distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ShapeValue {
    Count(u32),
    Real(f32),
}

/// Where a family's GPU kernels read a leaf's constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Constants {
    /// Its parameters, at their slots: no table (the kernels take logarithms themselves).
    Params,
    /// The leaf table (`Params::leaf_table` on the host, refreshed by the EM kernels on the
    /// device) at the leaf's statistics slots.
    Table,
    /// None: the leaf's per-leaf index (`Dist::kernel_aux`) says all there is.
    None,
}

impl DistKind {
    /// Every family, in layout order.
    pub const ALL: [DistKind; FAMILIES.len()] = {
        let mut all = [DistKind::Categorical; FAMILIES.len()];
        let mut i = 0;
        while i < FAMILIES.len() {
            all[i] = FAMILIES[i].kind;
            i += 1;
        }
        all
    };

    pub fn info(self) -> &'static FamilyInfo {
        &FAMILIES[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The family with keyword `name`.
    pub fn from_name(name: &str) -> Option<DistKind> {
        FAMILIES.iter().find(|f| f.name == name).map(|f| f.kind)
    }

    /// The distribution of this family with shape `value` (`None` for a family without one);
    /// `None` when the value does not fit the family's [`ShapeParam`].
    pub fn with_shape(self, value: Option<ShapeValue>) -> Option<Dist> {
        (self.info().with_shape)(value)
    }
}

/// Everything about one distribution of a family. Slices are one node's: `prm` its parameters
/// (`num_params`), `stats` its statistics and `tab` its leaf-table constants (`num_stats` each);
/// `local` is the node's index within its input vector.
pub(crate) trait Family {
    const INFO: FamilyInfo;
    /// Parameters stored per node.
    fn num_params(&self) -> u32;
    /// Expected statistics (flows) accumulated per node; also the node's slots of the leaf table.
    fn num_stats(&self) -> u32;
    /// The values a variable modelled by this distribution may take.
    fn domain(&self) -> Domain;
    /// Why the distribution is unusable (a structure is checked before it compiles), if it is.
    fn check(&self) -> Result<(), String>;
    /// The shape value ([`FamilyInfo::shape`]).
    fn shape(&self) -> Option<ShapeValue>;
    /// The per-leaf constant that the GPU EM kernels receive (they rebuild the leaf table from it).
    fn kernel_constant(&self) -> f32 {
        0.0
    }
    /// Random parameters of one node (PyJuice-style, deterministic for the generator's state).
    fn init(&self, prm: &mut [f32], rng: &mut ChaCha8Rng, perturbation: f32);
    /// Check a parameter tensor of this distribution (`values`: `[nodes, num_params]`, finite).
    fn validate(&self, name: &str, values: &[f32]) -> Result<(), ParamsError>;
    /// The node's leaf-table constants (what the forward reads instead of taking logarithms).
    fn table(&self, prm: &[f32], tab: &mut [f32]);
    /// `log p(x)` from the node's leaf-table constants.
    fn log_prob_table(&self, tab: &[f32], local: u32, x: f32) -> f32;
    /// `log p(x)` from the node's parameters.
    fn log_prob(&self, prm: &[f32], local: u32, x: f32) -> f32;
    /// `max_x log p(x)` and the maximizing value (the first one on ties).
    fn mode(&self, prm: &[f32], local: u32) -> (f32, f32);
    /// Add flow `f` of an observed value `x` to the node's statistics.
    fn add_observed(&self, stats: &mut [f64], x: f32, f: f64);
    /// Credit flow `f` of a missing value: the expected statistics under the node's distribution.
    /// Must be linear in `f`: both engines credit a leaf's missing values (and the softened share
    /// of its observed ones) once per batch, with their flows summed.
    fn add_missing(&self, stats: &mut [f64], prm: &[f32], f: f64);
    /// One EM update from the node's statistics (step `eta`, pseudocount `alpha`); a node that
    /// received no flow and no pseudocount keeps its parameters.
    fn em_update(&self, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64);
    /// The entropy-regularized EM update ([`crate::entropy`]) with strength `b = τ · ctx · N`; a
    /// family whose entropy the regularizer does not cover takes the plain update.
    fn em_update_entropy(&self, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64, _b: f64) {
        self.em_update(prm, stats, eta, alpha)
    }
    /// One draw from the node's distribution.
    fn sample(&self, prm: &[f32], local: u32, rng: &mut ChaCha8Rng) -> f32;
    /// Add the node's distribution, weighted by its flow `f`, to a variable's posterior
    /// accumulator (raw moments for continuous variables); a leaf whose domain does not match the
    /// accumulator adds nothing.
    fn add_conditional(&self, out: &mut Conditional, prm: &[f32], local: u32, f: f32);
    /// How many of a discrete variable's categories (or continuous moments) the GPU's conditional
    /// gather credits from this leaf, given the variable's domain; `None` where
    /// [`Family::add_conditional`] adds nothing.
    fn conditional_slots(&self, local: u32, domain: Domain) -> Option<u32>;
    /// The per-leaf index the GPU kernels receive (`aux`): the node's first statistics slot
    /// `flow_slot` (where its table constants live too), or what the family needs instead.
    fn kernel_aux(&self, flow_slot: u32, _local: u32) -> u32 {
        flow_slot
    }
}

/// The one dispatch from a [`Dist`] to its family: binds `$f` to the family's value and evaluates
/// `$body`. Every method of [`Dist`] goes through here.
macro_rules! with_family {
    ($dist:expr, $f:ident => $body:expr) => {
        match *$dist {
            Dist::Categorical { num_cats } => {
                let $f = categorical::Categorical { num_cats };
                $body
            }
            Dist::Bernoulli => {
                let $f = bernoulli::Bernoulli;
                $body
            }
            Dist::Gaussian { min_sigma } => {
                let $f = gaussian::Gaussian { min_sigma };
                $body
            }
            Dist::Indicator { num_states } => {
                let $f = indicator::Indicator { num_states };
                $body
            }
            Dist::Binomial { num_trials } => {
                let $f = binomial::Binomial { num_trials };
                $body
            }
        }
    };
}

fn info_of<F: Family>(_: &F) -> &'static FamilyInfo {
    &F::INFO
}

impl Dist {
    pub fn kind(&self) -> DistKind {
        with_family!(self, f => info_of(&f).kind)
    }
    pub fn info(&self) -> &'static FamilyInfo {
        with_family!(self, f => info_of(&f))
    }
    /// Parameters stored per node.
    pub fn num_params(&self) -> u32 {
        with_family!(self, f => f.num_params())
    }
    /// Expected statistics (flows) accumulated per node, e.g. category counts, (count of 0, count
    /// of 1), or the Gaussian moments (Σ F·x, Σ F·x², Σ F); the node's slots of the leaf table.
    pub fn num_stats(&self) -> u32 {
        with_family!(self, f => f.num_stats())
    }
    /// The values a variable modelled by this distribution may take.
    pub fn domain(&self) -> Domain {
        with_family!(self, f => f.domain())
    }
    /// Why the distribution is unusable, if it is (`pc-codegen`'s validation reports it).
    pub fn check(&self) -> Result<(), String> {
        with_family!(self, f => f.check())
    }
    /// The value of the family's shape option ([`FamilyInfo::shape`]).
    pub fn shape(&self) -> Option<ShapeValue> {
        with_family!(self, f => f.shape())
    }
    /// The per-leaf constant of the GPU EM kernels (Gaussian: the σ floor; Binomial: the number
    /// of trials; otherwise 0).
    pub fn kernel_constant(&self) -> f32 {
        with_family!(self, f => f.kernel_constant())
    }
    /// The per-leaf index of the GPU kernels (`aux`) of node `local`, whose statistics start at
    /// `flow_slot`.
    pub fn kernel_aux(&self, flow_slot: u32, local: u32) -> u32 {
        with_family!(self, f => f.kernel_aux(flow_slot, local))
    }
    /// Slots of the conditional gather a leaf fills for a variable of `domain` (see
    /// [`Family::conditional_slots`]).
    pub fn conditional_slots(&self, local: u32, domain: Domain) -> Option<u32> {
        with_family!(self, f => f.conditional_slots(local, domain))
    }

    #[inline]
    pub(crate) fn init(&self, prm: &mut [f32], rng: &mut ChaCha8Rng, perturbation: f32) {
        with_family!(self, f => f.init(prm, rng, perturbation))
    }
    pub(crate) fn validate(&self, name: &str, values: &[f32]) -> Result<(), ParamsError> {
        with_family!(self, f => f.validate(name, values))
    }
    #[inline]
    pub(crate) fn table(&self, prm: &[f32], tab: &mut [f32]) {
        with_family!(self, f => f.table(prm, tab))
    }
    #[inline]
    pub(crate) fn log_prob_table(&self, tab: &[f32], local: u32, x: f32) -> f32 {
        with_family!(self, f => f.log_prob_table(tab, local, x))
    }
    /// `log p(x)` from parameters (the engines read the leaf table; this is its reference).
    #[cfg(test)]
    pub(crate) fn log_prob(&self, prm: &[f32], local: u32, x: f32) -> f32 {
        with_family!(self, f => f.log_prob(prm, local, x))
    }
    #[inline]
    pub(crate) fn mode(&self, prm: &[f32], local: u32) -> (f32, f32) {
        with_family!(self, f => f.mode(prm, local))
    }
    #[inline]
    pub(crate) fn add_observed(&self, stats: &mut [f64], x: f32, f: f64) {
        with_family!(self, d => d.add_observed(stats, x, f))
    }
    #[inline]
    pub(crate) fn add_missing(&self, stats: &mut [f64], prm: &[f32], f: f64) {
        with_family!(self, d => d.add_missing(stats, prm, f))
    }
    pub(crate) fn em_update(&self, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64) {
        with_family!(self, f => f.em_update(prm, stats, eta, alpha))
    }
    pub(crate) fn em_update_entropy(&self, prm: &mut [f32], stats: &[f64], eta: f64, alpha: f64, b: f64) {
        with_family!(self, f => f.em_update_entropy(prm, stats, eta, alpha, b))
    }
    pub(crate) fn sample(&self, prm: &[f32], local: u32, rng: &mut ChaCha8Rng) -> f32 {
        with_family!(self, f => f.sample(prm, local, rng))
    }
    #[inline]
    pub(crate) fn add_conditional(&self, out: &mut Conditional, prm: &[f32], local: u32, f: f32) {
        with_family!(self, d => d.add_conditional(out, prm, local, f))
    }
}

/// Every value of a tensor non-negative (the error names the first negative one).
pub(crate) fn check_nonneg(name: &str, values: &[f32]) -> Result<(), ParamsError> {
    match values.iter().position(|v| *v < 0.0) {
        Some(index) => Err(ParamsError::Negative { name: name.to_string(), index, value: values[index] }),
        None => Ok(()),
    }
}

/// Every row sum within [`NORMALIZATION_TOL`](crate::params::NORMALIZATION_TOL) of one.
pub(crate) fn check_rows(name: &str, sums: &[f64]) -> Result<(), ParamsError> {
    match sums.iter().position(|s| (s - 1.0).abs() > crate::params::NORMALIZATION_TOL) {
        Some(row) => Err(ParamsError::Unnormalized { name: name.to_string(), row, sum: sums[row] }),
        None => Ok(()),
    }
}

/// Every value a probability (in `[0, 1]`).
pub(crate) fn check_probabilities(name: &str, values: &[f32]) -> Result<(), ParamsError> {
    check_nonneg(name, values)?;
    match values.iter().position(|&p| p > 1.0) {
        Some(row) => Err(ParamsError::ProbabilityAboveOne { name: name.to_string(), row, value: values[row] }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One distribution of every family with parameters and the values to evaluate.
    fn cases() -> Vec<(Dist, Vec<f32>, Vec<f32>)> {
        vec![
            (Dist::Categorical { num_cats: 3 }, vec![0.2, 0.5, 0.3], vec![0.0, 1.0, 2.0]),
            (Dist::Bernoulli, vec![0.3], vec![0.0, 1.0]),
            (Dist::Gaussian { min_sigma: 0.1 }, vec![0.5, 0.05], vec![-1.0, 0.5, 2.0]),
            (Dist::Indicator { num_states: 2 }, vec![], vec![0.0, 1.0]),
            (Dist::Binomial { num_trials: 5 }, vec![0.3], vec![0.0, 1.0, 2.0, 5.0]),
        ]
    }

    #[test]
    fn every_family_is_registered_once_in_kind_order() {
        assert_eq!(cases().len(), FAMILIES.len(), "a case per family");
        for (dist, ..) in cases() {
            let kind = dist.kind();
            assert_eq!(kind.info().kind, kind);
            assert_eq!(DistKind::from_name(kind.name()), Some(kind));
            assert_eq!(kind.with_shape(dist.shape()), Some(dist), "{dist:?} from its keyword and shape");
        }
        assert_eq!(DistKind::ALL.len(), FAMILIES.len());
    }

    #[test]
    fn table_lookup_equals_direct_log_density() {
        for (dist, prm, xs) in cases() {
            let mut tab = vec![0.0; dist.num_stats() as usize];
            dist.table(&prm, &mut tab);
            for &x in &xs {
                let (a, b) = (dist.log_prob_table(&tab, 1, x), dist.log_prob(&prm, 1, x));
                assert!(a == b || (a - b).abs() < 1e-6, "{dist:?} at {x}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn the_serialized_form_is_unchanged() {
        let json: Vec<String> = cases().iter().map(|(d, ..)| serde_json::to_string(d).unwrap()).collect();
        assert_eq!(
            json,
            [
                r#"{"kind":"categorical","num_cats":3}"#,
                r#"{"kind":"bernoulli"}"#,
                r#"{"kind":"gaussian","min_sigma":0.1}"#,
                r#"{"kind":"indicator","num_states":2}"#,
                r#"{"kind":"binomial","num_trials":5}"#,
            ]
        );
    }
}

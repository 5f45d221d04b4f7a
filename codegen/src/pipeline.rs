//! The one way from a circuit to what an engine runs: compile (IR → [`Plan`], with
//! [`CompileOptions`]), then emit (plan → CUDA source and kernel manifest, at a [`Precision`]).
//! The CLI and the GPU engine's start ([`emit_plan`], the plan of a loaded model), the
//! build-script API ([`crate::build`]) and the `circuit!` macro ([`crate::declare`]) all come
//! through here, so each accepts the same options and gets the same kernels for them.

use pc_runtime::Plan;
use pc_runtime::cuda::Manifest;

use crate::compile::{CompileOptions, compile_with};
pub use crate::emit::Precision;
use crate::emit::{EmitError, EmitOptions, emit_with};
use crate::error::CircuitError;
use crate::ir::Circuit;

/// Options of the whole pipeline: the compiler's and the emitter's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    pub compile: CompileOptions,
    /// Operand precision of the tensor-core sum kernels (fp32: the scalar kernels everywhere).
    pub precision: Precision,
}

/// What a circuit becomes: its plan, and the CUDA source and kernel manifest emitted for it (the
/// manifest names its precision). The JSON forms ([`Artifacts::plan_json`],
/// [`Artifacts::manifest_json`]) are made on demand: the manifest of a large circuit is hundreds
/// of MB of JSON, which only embedding needs.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub plan: Plan,
    pub cuda_source: String,
    pub manifest: Manifest,
}

/// Why a circuit could not be turned into [`Artifacts`].
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Circuit(#[from] CircuitError),
    #[error("CUDA emission failed: {0}")]
    Emit(#[from] EmitError),
}

impl Artifacts {
    /// The plan as the runtime reads it back (`Plan::from_json`).
    pub fn plan_json(&self) -> String {
        self.plan.to_json()
    }

    /// The manifest as the runtime reads it back.
    pub fn manifest_json(&self) -> String {
        self.manifest.to_json()
    }
}

/// Compile and emit `circuit` with `opts`.
pub fn run(circuit: &Circuit, opts: &Options) -> Result<Artifacts, PipelineError> {
    let plan = compile_with(circuit, &opts.compile)?;
    Ok(emit_plan(plan, opts.precision)?)
}

/// Emit an already compiled plan (a loaded model's) at `precision`.
pub fn emit_plan(plan: Plan, precision: Precision) -> Result<Artifacts, EmitError> {
    let emitted = emit_with(&plan, &EmitOptions { precision })?;
    Ok(Artifacts { plan, cuda_source: emitted.source, manifest: emitted.manifest })
}

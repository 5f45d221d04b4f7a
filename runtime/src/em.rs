//! EM hyper-parameters, checked the same way by every engine and by the CLI before any pass runs.

use crate::RuntimeError;

/// Step size in (0, 1] and a finite, non-negative pseudocount (every engine's EM).
pub fn check_em_hyper_parameters(step_size: f32, pseudocount: f32) -> Result<(), RuntimeError> {
    if !(step_size > 0.0 && step_size <= 1.0) {
        return Err(RuntimeError::InvalidHyperParameter(format!("step size must be in (0, 1], got {step_size}")));
    }
    if !(pseudocount >= 0.0 && pseudocount.is_finite()) {
        return Err(RuntimeError::InvalidHyperParameter(format!("pseudocount must be finite and ≥ 0, got {pseudocount}")));
    }
    Ok(())
}

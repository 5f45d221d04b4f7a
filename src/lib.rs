//! pcc — a probabilistic-circuit compiler.
//!
//! This facade re-exports the two library crates: [`codegen`] (IR, builder, validation, structure
//! files, compiler) and [`runtime`] (plans, parameters, engines).

pub use pc_codegen as codegen;
pub use pc_runtime as runtime;

/// The README's code runs as a doctest, so the documented API cannot drift.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

//! pcc — a probabilistic-circuit compiler.
//!
//! This facade re-exports the library crates: [`codegen`] (IR, builder, validation, structure
//! files, compiler, emitter, build-script API) and [`runtime`] (plans, parameters, engines), and
//! the ahead-of-time entry points [`circuit!`] and [`include_circuit!`].

pub use pc_codegen as codegen;
pub use pc_runtime as runtime;

/// Declare a circuit in Rust; it is compiled at compile time into a module with its plan and
/// CUDA kernels embedded (see `pc_codegen::declare` for the language).
pub use pc_macros::circuit;

/// Include a circuit that `pc_codegen::build::Config::compile` compiled in the build script:
/// `pcc::include_circuit!("foo");` expands to `include!(concat!(env!("OUT_DIR"), "/", "foo",
/// ".rs"))`, which defines `mod foo`. Defined in `pc-runtime` (re-exported here) so that a
/// deployment crate depending only on `pc-runtime` can use it too.
pub use pc_runtime::include_circuit;

/// The README's code runs as a doctest, so the documented API cannot drift.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

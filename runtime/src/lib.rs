//! `pc-runtime`: everything a deployed pcc program needs at run time — the execution plan format,
//! model parameters and their files, evidence validation, and the engines that run a plan.
//!
//! The runtime never depends on the compiler (`pc-codegen`), on tera or on syn: a plan is data.

pub mod cpu;
pub mod cuda;
pub mod data;
pub mod dataset;
mod error;
pub mod params;
pub mod plan;

pub use cpu::{Conditional, CpuEngine, Flows, MpeResult, Trace};
pub use data::Evidence;
pub use error::{ParamsError, RuntimeError};
pub use params::Params;
pub use plan::{Dist, DistKind, Domain, Plan, PLAN_VERSION};

/// Include the typed module that `pc_codegen::build::Config::compile` wrote into `OUT_DIR` for a
/// circuit: `include_circuit!("foo");` defines `mod foo` (`foo::plan()`, `foo::CUDA_SOURCE`,
/// `foo::Circuit::load_cpu(..)`, …). The generated code names only this crate, so a deployment
/// crate needs `pc-runtime` as its only normal dependency (`pc-codegen` as a build-dependency).
#[macro_export]
macro_rules! include_circuit {
    ($name:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $name, ".rs"));
    };
}

use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` atomically: a temporary file in the same directory is written, synced
/// and renamed over the target, so a crash never leaves a half-written model behind.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| RuntimeError::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| RuntimeError::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| RuntimeError::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| RuntimeError::io(path, e.error))?;
    Ok(())
}

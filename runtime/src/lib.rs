//! `pc-runtime`: everything a deployed pcc program needs at run time — the execution plan format,
//! model parameters and their files, evidence validation, and the engines that run a plan.
//!
//! The runtime never depends on the compiler (`pc-codegen`), on tera or on syn: a plan is data.

pub mod cpu;
pub mod cuda;
pub mod data;
pub mod dataset;
pub mod dist;
pub mod em;
pub mod engine;
pub mod entropy;
mod error;
pub mod manifest;
pub mod outputs;
pub mod parallel;
pub mod params;
pub mod plan;
mod plan_check;
pub mod soft;

pub use cpu::{CpuEngine, Trace};
pub use data::Evidence;
pub use em::check_em_hyper_parameters;
pub use engine::{Device, Engine, Started};
pub use error::{ParamsError, RuntimeError};
pub use outputs::{Conditional, Flows, MpeResult};
pub use params::Params;
pub use plan::{Dist, DistKind, Domain, PLAN_VERSION, Plan};
pub use soft::Soft;

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
/// and renamed over the target, then the directory is synced, so a crash never leaves a
/// half-written model behind and the new name survives it.
///
/// Every output of pcc goes through here, so it also decides what may be replaced: never
/// something that is not a regular file (a device such as `/dev/null`, a FIFO, a directory, a
/// symbolic link — renaming over it would destroy it, not write into it) and never a read-only
/// file. An existing file keeps its permissions; a new one gets the mode a plain create gives
/// (0666 less the umask), not the temporary file's 0600.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let existing = match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => return Err(RuntimeError::NotARegularFile { path: path.to_path_buf() }),
        Ok(m) if m.permissions().readonly() => return Err(RuntimeError::ReadOnlyOutput { path: path.to_path_buf() }),
        Ok(m) => Some(m.permissions()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(RuntimeError::io(path, e)),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = temp_prefix(path);
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The mode passed to open(2): the umask applies to it, as for any created file.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(|e| RuntimeError::io(dir, e))?;
    if let Some(perms) = existing {
        tmp.as_file().set_permissions(perms).map_err(|e| RuntimeError::io(tmp.path(), e))?;
    }
    tmp.write_all(bytes).map_err(|e| RuntimeError::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| RuntimeError::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| RuntimeError::io(path, e.error))?;
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| RuntimeError::io(dir, e))?;
    Ok(())
}

/// Name prefix of the temporary files [`atomic_write`] writes next to `path` (`.NAME.tmp`).
fn temp_prefix(path: &Path) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".tmp");
    prefix
}

/// Remove the temporary files of [`atomic_write`] to `path` that a killed writer left behind;
/// returns their paths. Only for a caller that knows no writer of `path` is running (`pcc train`
/// holds its model directory's lock).
pub fn remove_stale_temps(path: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = temp_prefix(path);
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().as_encoded_bytes().starts_with(prefix.as_encoded_bytes()) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

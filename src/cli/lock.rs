//! An advisory lock on a model directory, so that two `pcc train` runs (or a `learn -o` into a
//! directory being trained) cannot race on its files: the second one fails at once, naming the
//! holder. The lock is `flock(2)` on `DIR/.pcc-lock`, which records the holder; the kernel drops
//! it when the holder exits, however it exits (a SIGKILL included), so a lock is never stale. The
//! file itself stays (removing a lock file races with the next locker).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Name of the lock file inside a model directory.
pub const LOCK_FILE: &str = ".pcc-lock";

/// Held until dropped (or the process ends).
pub struct ModelLock {
    _file: std::fs::File,
}

/// Lock model directory `dir` (which must exist) for `what` (e.g. "train"), or fail naming the
/// process that holds it. Then remove temporary files that an interrupted save left behind
/// (none can be live: every writer of a model directory holds this lock).
pub fn lock_model_dir(dir: &Path, what: &str) -> Result<ModelLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    try_lock(&file).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = if holder.trim().is_empty() { "a process that is starting" } else { holder.trim() };
            anyhow::anyhow!("model directory {} is in use by {holder}; wait for it to finish or stop it", dir.display())
        }
        _ => anyhow::Error::new(e).context(format!("cannot lock {}", path.display())),
    })?;
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    file.set_len(0)
        .and_then(|_| write!(file, "pcc {what} (pid {}, since unix time {since})", std::process::id()))
        .with_context(|| format!("cannot write the lock file {}", path.display()))?;
    for file_name in [pc_codegen::model::STRUCTURE_FILE, pc_codegen::model::PARAMS_FILE] {
        for stale in pc_runtime::remove_stale_temps(&dir.join(file_name)).with_context(|| format!("cannot clean {}", dir.display()))? {
            eprintln!("removed {}, left by an interrupted save", stale.display());
        }
    }
    Ok(ModelLock { _file: file })
}

#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) { std::io::Error::from(std::io::ErrorKind::WouldBlock) } else { e })
}

#[cfg(not(unix))]
fn try_lock(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(()) // no advisory lock here: runs on one directory are not serialized
}

//! On-disk cache of compiled kernels, keyed by SHA-256 of (source, architecture, NVRTC version),
//! so a warm start skips NVRTC entirely.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{CudaError, compile_cubin, nvrtc_version};

/// A folder of `<key>.cubin` files.
#[derive(Clone, Debug)]
pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    pub fn new(dir: impl Into<PathBuf>) -> KernelCache {
        KernelCache { dir: dir.into() }
    }

    /// `$PCC_CACHE_DIR`, else `$XDG_CACHE_HOME/pcc/kernels`, else `~/.cache/pcc/kernels`.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("PCC_CACHE_DIR") {
            return d.into();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("pcc").join("kernels")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache key of a source for an architecture under the installed NVRTC.
    pub fn key(source: &str, arch: &str, nvrtc: (i32, i32)) -> String {
        let mut h = Sha256::new();
        h.update(source.as_bytes());
        h.update([0]);
        h.update(arch.as_bytes());
        h.update(format!("\0nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The CUBIN of `source` for `sm_{arch}`, compiled on a miss and stored atomically.
    /// Returns the bytes and whether they came from the cache.
    pub fn get_or_compile(&self, source: &str, name: &str, arch: &str) -> Result<(Vec<u8>, bool), CudaError> {
        let path = self.dir.join(format!("{}.cubin", Self::key(source, arch, nvrtc_version()?)));
        if let Ok(bytes) = std::fs::read(&path)
            && !bytes.is_empty()
        {
            return Ok((bytes, true));
        }
        let cubin = compile_cubin(source, name, arch)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| CudaError::Cache { path: self.dir.clone(), source: e })?;
        crate::atomic_write(&path, &cubin).map_err(|e| CudaError::Cache { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
        Ok((cubin, false))
    }
}

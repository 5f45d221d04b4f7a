//! Errors of data-parallel runs: each names the rank, the variable or the library at fault, so a
//! failed rank never leaves the others hanging or guessing.

/// Why a data-parallel run could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    /// A launcher variable (`RANK`, `WORLD_SIZE`, …) is missing or malformed.
    #[error("{var}={value:?}: {reason}")]
    Env { var: &'static str, value: String, reason: String },
    /// The ranks could not meet at the rendezvous address.
    #[error("rendezvous at {addr}: {reason}")]
    Rendezvous { addr: String, reason: String },
    /// Another rank reported an error or exited; every rank stops with this.
    #[error("rank {rank} failed: {reason}")]
    RankFailed { rank: usize, reason: String },
    /// A rank did not reach a collective in time.
    #[error("rank {rank} did not reach {what} within {secs} s (set PCC_DIST_TIMEOUT to wait longer if it is only slow)")]
    Timeout { rank: usize, what: &'static str, secs: u64 },
    /// The ranks disagree on something that must be the same everywhere.
    #[error("ranks disagree: {0}")]
    Mismatch(String),
    /// `--gpus` or a multi-process GPU run without an NCCL library.
    #[error(
        "no NCCL library found (looked for {tried}); `pip install nvidia-nccl-cu13` gives libnccl.so.2, which pcc finds in the active Python environment, or set PCC_NCCL_LIB to its path"
    )]
    NcclMissing { tried: String },
    /// An NCCL all-reduce did not finish: some rank never joined it.
    #[error("the NCCL all-reduce did not finish within {secs} s (a rank stopped mid-collective; set PCC_DIST_TIMEOUT to wait longer if it is only slow)")]
    NcclTimeout { secs: u64 },
    /// An NCCL call failed.
    #[error("NCCL {call}: {message}")]
    Nccl { call: &'static str, message: String },
}

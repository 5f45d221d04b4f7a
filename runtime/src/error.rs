//! Typed errors of the runtime. Every variant names the cause (tensor, sample, variable, file) so a
//! user can fix the input without reading code.

use std::path::PathBuf;

/// Problems with a parameter set, from a file or from a caller.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("parameter file {path} is truncated ({detail})")]
    Truncated { path: PathBuf, detail: String },
    #[error("parameter file {path} is malformed: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("parameter file {path} is corrupted: checksum {found:08x} does not match the recorded {expected:08x}")]
    ChecksumMismatch { path: PathBuf, expected: u32, found: u32 },
    #[error("parameter file {path} was saved for another structure (the model directory holds files of two different saves)")]
    OtherStructure { path: PathBuf },
    #[error("parameter tensor `{name}` is missing")]
    MissingTensor { name: String },
    #[error("parameter tensor `{name}` does not belong to this model")]
    UnexpectedTensor { name: String },
    #[error("parameter tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("parameter tensor `{name}` has dtype {found}, expected F32")]
    WrongDtype { name: String, found: String },
    #[error("parameter tensor `{name}` holds a NaN or infinite value at flat index {index}")]
    NonFinite { name: String, index: usize },
    #[error("parameter tensor `{name}` holds the negative value {value} at flat index {index}")]
    Negative { name: String, index: usize, value: f32 },
    #[error("parameter tensor `{name}`: the distribution of node {row} sums to {sum}, not 1")]
    Unnormalized { name: String, row: usize, sum: f64 },
    #[error("parameter tensor `{name}`: node {row} has standard deviation {value}, which must be positive")]
    InvalidSigma { name: String, row: usize, value: f32 },
    #[error("parameter tensor `{name}`: node {row} has probability {value} > 1")]
    ProbabilityAboveOne { name: String, row: usize, value: f32 },
    #[error("dummy parameter {index} is {value}; the padding weights must stay 0")]
    DummyNotZero { index: usize, value: f32 },
    #[error("parameter {index} is fixed by the compiler to {expected}, found {found}")]
    FixedChanged { index: usize, expected: f32, found: f32 },
    #[error("parameter vectors have lengths ({sum}, {input}), the plan needs ({expected_sum}, {expected_input})")]
    WrongLength { sum: usize, input: usize, expected_sum: usize, expected_input: usize },
}

/// Errors of the runtime (data validation, engines, files).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("data has {found} variables per sample, the model has {expected}")]
    WrongNumVars { expected: usize, found: usize },
    #[error("data holds {len} values, which is not a whole number of samples of {num_vars} variables")]
    RaggedData { len: usize, num_vars: usize },
    #[error("missing-value mask has {found} entries, the data has {expected}")]
    MaskShape { expected: usize, found: usize },
    #[error("sample {sample}, variable {var}: value is NaN or infinite (mark it missing instead)")]
    NonFiniteValue { sample: usize, var: usize },
    #[error("sample {sample}, variable {var}: category {value} is out of range (the variable has {num_cats} categories)")]
    CategoryOutOfRange { sample: usize, var: usize, value: f32, num_cats: u32 },
    #[error("variable {var} is continuous: soft evidence is for discrete variables only")]
    SoftOnContinuous { var: usize },
    #[error("soft evidence does not fit the model: {detail}")]
    SoftShape { detail: String },
    #[error("soft evidence, sample {sample}, variable {var}: {value} is not a probability in [0, 1]")]
    SoftValue { sample: usize, var: usize, value: f32 },
    #[error("soft evidence, sample {sample}, variable {var}: every category has probability 0 (mark the value missing to leave it unobserved)")]
    SoftAllZero { sample: usize, var: usize },
    #[error("{query} takes hard evidence only; drop the soft observations (values and missing marks remain)")]
    SoftUnsupported { query: &'static str },
    #[error("sample {sample}, variable {var}: value {value} is not a category index (a whole number)")]
    NotACategory { sample: usize, var: usize, value: f32 },
    #[error("rows {start}..{end} are not a range of the {len} samples on the device")]
    RowRange { start: usize, end: usize, len: usize },
    #[error("the data on the device has {found} variables per sample, the model has {expected}")]
    DeviceDataShape { expected: usize, found: usize },
    #[error("sample weights have {found} entries, the batch has {expected} samples")]
    WeightsShape { expected: usize, found: usize },
    #[error("invalid EM hyper-parameter: {0}")]
    InvalidHyperParameter(String),
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error(
        "not enough host memory: {what} need {} MiB, {} MiB are available (a smaller model or batch, or the GPU engine)",
        bytes >> 20, available >> 20
    )]
    HostMemory { what: String, bytes: u64, available: u64 },
    #[error("malformed plan: {0}")]
    MalformedPlan(String),
    #[error("malformed kernel manifest: {0}")]
    MalformedManifest(String),
    #[error("plan format version {found} is not supported (this build reads version {supported})")]
    UnsupportedPlanVersion { found: u32, supported: u32 },
    #[error("{path}: not a regular file (a device, FIFO, directory or symbolic link is never replaced by an output)")]
    NotARegularFile { path: PathBuf },
    #[error("{path} is read-only: not replaced (make it writable or choose another path)")]
    ReadOnlyOutput { path: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Cuda(#[from] crate::cuda::CudaError),
    #[error(transparent)]
    Parallel(#[from] crate::parallel::ParallelError),
    /// `Device::Cuda` was asked for and the GPU engine did not start (the reason inside).
    #[error("--device cuda: the GPU engine cannot start: {0}")]
    GpuUnavailable(String),
}

impl RuntimeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io { path: path.into(), source }
    }
}

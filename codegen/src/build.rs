//! The build-script API (prost-build style): compile a circuit's structure file at build time.
//!
//! ```no_run
//! // build.rs of a crate with `pc-codegen` as a build-dependency and `pc-runtime` as a dependency
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     pc_codegen::build::Config::new().compile("models/foo")?;
//!     Ok(())
//! }
//! ```
//!
//! [`Config::compile`] reads `models/foo/structure.json` (the file [`crate::Model::save`] writes),
//! compiles the plan, emits the CUDA source and manifest, and writes into `OUT_DIR`:
//!
//! | file | content |
//! | --- | --- |
//! | `foo.rs` | `pub mod foo { … }`, the typed module ([`crate::aot::module_source`]) |
//! | `foo.plan.json` | the execution plan (`include_str!`d by `foo.rs`) |
//! | `foo.manifest.json` | the kernel manifest |
//! | `foo.cu` | the CUDA source |
//! | `foo.sm_90.cubin`, … | CUBINs for [`Config::cubin_archs`], when NVRTC can be loaded at build time |
//!
//! The program then writes `pc_runtime::include_circuit!("foo");` (or `pcc::include_circuit!`)
//! and uses `foo::plan()`, `foo::CUDA_SOURCE`, `foo::Circuit::load_cpu(params_path)`, …. Files
//! are written atomically and only when their content changed, and the structure file is announced
//! with `cargo:rerun-if-changed`, so cargo reruns the script exactly when the circuit changes.

use std::path::{Path, PathBuf};

use pc_runtime::{RuntimeError, atomic_write};

use crate::aot::{AotError, Embed, ModuleSpec, is_identifier, module_source};
use crate::compile::CompileOptions;
use crate::error::{CircuitError, ModelError};
use crate::model::{STRUCTURE_FILE, load_structure};
use crate::pipeline::{Options, Precision};

/// Errors of the build-script API; each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("OUT_DIR is not set: run from a build script or set Config::out_dir")]
    NoOutDir,
    #[error("cannot name the module of {path}: `{name}` is not a Rust identifier; set Config::module_name")]
    BadModuleName { path: PathBuf, name: String },
    #[error(transparent)]
    Structure(#[from] ModelError),
    #[error("{path}: the circuit does not compile: {source}")]
    Compile { path: PathBuf, source: CircuitError },
    #[error("{path}: CUDA emission failed: {source}")]
    Emit { path: PathBuf, source: crate::emit::EmitError },
    #[error("cannot create output directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: RuntimeError },
    #[error("{path}: NVRTC could not compile the CUDA source for sm_{arch}: {source}")]
    Nvrtc { path: PathBuf, arch: String, source: pc_runtime::cuda::CudaError },
    #[error("`{arch}` is not a GPU architecture such as 90 or sm_90")]
    BadArch { arch: String },
}

/// Settings of a build-script compilation; see the module docs.
#[derive(Clone, Debug)]
pub struct Config {
    out_dir: Option<PathBuf>,
    module_name: Option<String>,
    runtime_path: String,
    options: Options,
    cargo_metadata: bool,
    cubin_archs: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// What [`Config::compile`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The module name (`include_circuit!(NAME)`).
    pub module: String,
    /// The structure file that was read.
    pub structure: PathBuf,
    /// The generated Rust file (`OUT_DIR/NAME.rs`).
    pub rust_file: PathBuf,
    /// Every file of the output (the Rust file first).
    pub files: Vec<PathBuf>,
    /// The files whose content changed and were rewritten (empty when everything was up to date).
    pub written: Vec<PathBuf>,
    /// Architectures whose CUBIN is embedded (`CUBINS` of the module); empty when none was asked
    /// for or NVRTC could not be loaded.
    pub cubins: Vec<String>,
}

impl Config {
    /// Defaults: `OUT_DIR` from the environment, module named after the model directory, runtime
    /// path `::pc_runtime`, default compile options, `cargo:` lines printed.
    pub fn new() -> Config {
        Config {
            out_dir: None,
            module_name: None,
            runtime_path: "::pc_runtime".into(),
            options: Options::default(),
            cargo_metadata: true,
            cubin_archs: Vec::new(),
        }
    }

    /// Also compile the CUDA source into CUBINs for these architectures (`"90"` or `"sm_90"`) and
    /// embed them (`CUBINS`), so the program needs only the NVIDIA driver on such GPUs. Needs
    /// NVRTC (`libnvrtc.so.13`) at build time; without it a `cargo:warning` says so and the
    /// program compiles its kernels with NVRTC at first start instead.
    pub fn cubin_archs<S: AsRef<str>>(&mut self, archs: impl IntoIterator<Item = S>) -> &mut Self {
        self.cubin_archs = archs.into_iter().map(|a| a.as_ref().trim().trim_start_matches("sm_").to_string()).filter(|a| !a.is_empty()).collect();
        let mut seen = std::collections::HashSet::new();
        self.cubin_archs.retain(|a| seen.insert(a.clone()));
        self
    }

    /// Write here instead of `OUT_DIR` (tests, or checking generated code in).
    pub fn out_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Name of the generated module (and of its files); default: the model directory's name, or
    /// the structure file's stem, with `-` replaced by `_`.
    pub fn module_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.module_name = Some(name.into());
        self
    }

    /// How the generated code names the runtime crate: `::pc_runtime` (default, for a crate that
    /// depends on `pc-runtime`) or e.g. `::pcc::runtime` (for a crate that depends on `pcc`).
    pub fn runtime_path(&mut self, path: impl Into<String>) -> &mut Self {
        self.runtime_path = path.into();
        self
    }

    /// Options of the compiler (IR → plan).
    pub fn compile_options(&mut self, opts: CompileOptions) -> &mut Self {
        self.options.compile = opts;
        self
    }

    /// Operand precision of the tensor-core sum kernels the GPU engine runs (default fp32: the
    /// scalar kernels; `bf16`/`tf32` as `pcc --precision`).
    pub fn precision(&mut self, precision: Precision) -> &mut Self {
        self.options.precision = precision;
        self
    }

    /// Print `cargo:rerun-if-changed` lines (default true; turn off outside build scripts).
    pub fn cargo_metadata(&mut self, on: bool) -> &mut Self {
        self.cargo_metadata = on;
        self
    }

    /// Compile the model at `model`: a model directory (its `structure.json` is read) or a
    /// structure file. See the module docs for what is written.
    pub fn compile(&self, model: impl AsRef<Path>) -> Result<Generated, BuildError> {
        let model = model.as_ref();
        let structure = if model.is_dir() { model.join(STRUCTURE_FILE) } else { model.to_path_buf() };
        if self.cargo_metadata {
            println!("cargo:rerun-if-changed={}", structure.display());
        }
        let module = match &self.module_name {
            Some(n) => n.clone(),
            None => default_module_name(model),
        };
        if !is_identifier(&module) {
            return Err(BuildError::BadModuleName { path: structure, name: module });
        }
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => std::env::var_os("OUT_DIR").map(PathBuf::from).ok_or(BuildError::NoOutDir)?,
        };

        let circuit = load_structure(&structure)?;
        let artifacts = crate::pipeline::run(&circuit, &self.options).map_err(|e| match e {
            AotError::Circuit(source) => BuildError::Compile { path: structure.clone(), source },
            AotError::Emit(source) => BuildError::Emit { path: structure.clone(), source },
        })?;
        let (plan_file, manifest_file, cuda_file) = (format!("{module}.plan.json"), format!("{module}.manifest.json"), format!("{module}.cu"));
        let origin = format!("`{}`", structure.display());
        if let Some(bad) = self.cubin_archs.iter().find(|a| !a.bytes().all(|b| b.is_ascii_alphanumeric())) {
            return Err(BuildError::BadArch { arch: bad.clone() });
        }
        let nvrtc_available = !self.cubin_archs.is_empty() && pc_runtime::cuda::nvrtc_available();
        let mut cubins: Vec<(String, String, Vec<u8>)> = Vec::new();
        if nvrtc_available {
            for arch in &self.cubin_archs {
                let bytes = pc_runtime::cuda::compile_cubin(&artifacts.cuda_source, &cuda_file, arch).map_err(|source| BuildError::Nvrtc {
                    path: structure.clone(),
                    arch: arch.clone(),
                    source,
                })?;
                cubins.push((arch.clone(), format!("{module}.sm_{arch}.cubin"), bytes));
            }
        } else if !self.cubin_archs.is_empty() && self.cargo_metadata {
            println!(
                "cargo:warning=NVRTC (libnvrtc.so.13) cannot be loaded: no CUBIN embedded for sm_{}; the program will compile its kernels with NVRTC at run time",
                self.cubin_archs.join(", sm_")
            );
        }
        if !self.cubin_archs.is_empty() && self.cargo_metadata {
            // Whether NVRTC loads depends on the library path.
            println!("cargo:rerun-if-env-changed=LD_LIBRARY_PATH");
        }
        let listed: Vec<(&str, &str)> = cubins.iter().map(|(a, f, _)| (a.as_str(), f.as_str())).collect();
        let spec = ModuleSpec { name: &module, runtime: &self.runtime_path, origin: &origin };
        let rust = module_source(&spec, &artifacts, Embed::Files { plan: &plan_file, manifest: &manifest_file, cuda: &cuda_file, cubins: &listed });

        std::fs::create_dir_all(&out_dir).map_err(|e| BuildError::CreateDir { path: out_dir.clone(), source: e })?;
        let (plan_json, manifest_json) = (artifacts.plan_json(), artifacts.manifest_json());
        let mut outputs: Vec<(PathBuf, &[u8])> = vec![
            (out_dir.join(format!("{module}.rs")), rust.as_bytes()),
            (out_dir.join(&plan_file), plan_json.as_bytes()),
            (out_dir.join(&manifest_file), manifest_json.as_bytes()),
            (out_dir.join(&cuda_file), artifacts.cuda_source.as_bytes()),
        ];
        outputs.extend(cubins.iter().map(|(_, file, bytes)| (out_dir.join(file), bytes.as_slice())));
        let mut written = Vec::new();
        for (path, bytes) in &outputs {
            if write_if_changed(path, bytes)? {
                written.push(path.clone());
            }
        }
        Ok(Generated {
            module,
            structure,
            rust_file: outputs[0].0.clone(),
            files: outputs.iter().map(|(p, _)| p.clone()).collect(),
            written,
            cubins: cubins.into_iter().map(|(a, _, _)| a).collect(),
        })
    }
}

/// The model directory's name (or a structure file's stem), `-` replaced by `_`.
fn default_module_name(model: &Path) -> String {
    let name = if model.is_dir() || model.file_name().is_some_and(|f| f == STRUCTURE_FILE) {
        let dir = if model.is_dir() { Some(model) } else { model.parent() };
        dir.and_then(|d| d.canonicalize().ok().or_else(|| Some(d.to_path_buf()))).and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()))
    } else {
        model.file_stem().map(|f| f.to_string_lossy().into_owned())
    };
    name.unwrap_or_default().replace('-', "_")
}

/// Write atomically unless the file already holds `bytes`; true if written.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, BuildError> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    atomic_write(path, bytes).map_err(|e| BuildError::Write { path: path.to_path_buf(), source: e })?;
    Ok(true)
}

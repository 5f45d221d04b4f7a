//! Ahead-of-time output: the Rust source of a compiled circuit's typed module.
//!
//! Both ways of compiling a circuit ahead of time end here, in [`module_source`]: the build-script
//! API ([`crate::build`]) writes its text into `OUT_DIR` with the plan, manifest and CUDA source in
//! files next to it ([`Embed::Files`]), and the `circuit!` macro parses the same text into tokens
//! with the data inline ([`Embed::Inline`]). The generated module names only the runtime crate
//! (`::pc_runtime` or a re-export such as `::pcc::runtime`), never this crate, tera or syn.

use std::fmt::Write as _;

pub use crate::pipeline::{Artifacts, PipelineError as AotError};

/// How the generated module gets its data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Embed<'a> {
    /// As string literals in the module itself (the macro).
    Inline,
    /// With `include_str!` of files next to the generated `.rs` file (the build script); the names
    /// are relative to that file. `cubins` lists `(architecture, file)` pairs of CUBINs compiled at
    /// build time (`include_bytes!`d into `CUBINS`).
    Files { plan: &'a str, manifest: &'a str, cuda: &'a str, cubins: &'a [(&'a str, &'a str)] },
}

/// What the generated module is called, which runtime path it names, and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleSpec<'a> {
    /// The module's name (a Rust identifier).
    pub name: &'a str,
    /// Path of the runtime crate in the user's crate: `::pc_runtime`, or `::pcc::runtime`.
    pub runtime: &'a str,
    /// Where the circuit came from, for the module docs (a structure file, `circuit!`).
    pub origin: &'a str,
}

/// Whether `name` is usable as a module name (an identifier that is not a keyword).
pub fn is_identifier(name: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let",
        "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "try", "type", "unsafe",
        "use", "where", "while", "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "_",
    ];
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic()) && chars.all(|c| c == '_' || c.is_ascii_alphanumeric()) && !KEYWORDS.contains(&name)
}

fn literal(s: &str) -> String {
    // `Debug` of a `str` escapes exactly what a Rust string literal needs (`"`, `\`, controls).
    format!("{s:?}")
}

/// The Rust source of the typed module of a compiled circuit (see the module docs).
///
/// The module holds `NUM_VARS`, `PLAN_JSON`, `MANIFEST_JSON`, `CUDA_SOURCE`, `plan()`,
/// `manifest()` and `Circuit` (plan + parameters) with `load`, `random`, `from_params`, `cpu`,
/// `gpu`, `load_cpu` and `load_gpu`.
pub fn module_source(spec: &ModuleSpec, a: &Artifacts, embed: Embed) -> String {
    let (plan, manifest, cuda, cubins) = match embed {
        Embed::Inline => (literal(&a.plan_json()), literal(&a.manifest_json()), literal(&a.cuda_source), String::new()),
        Embed::Files { plan, manifest, cuda, cubins } => (
            format!("include_str!({})", literal(plan)),
            format!("include_str!({})", literal(manifest)),
            format!("include_str!({})", literal(cuda)),
            cubins.iter().map(|(arch, file)| format!("({}, include_bytes!({})), ", literal(arch), literal(file))).collect(),
        ),
    };
    let (name, rt, origin) = (spec.name, spec.runtime, spec.origin.replace('\n', " "));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"/// A probabilistic circuit compiled ahead of time by pc-codegen from {origin}: its execution
/// plan, kernel manifest and CUDA source are embedded; [`Circuit`] pairs the plan with parameters
/// and starts the CPU or GPU engine. Generated code: do not edit.
#[allow(non_snake_case, dead_code, clippy::all)]
pub mod {name} {{
    use {rt} as __rt;

    /// Name of the circuit.
    pub const NAME: &str = {name_lit};
    /// Number of variables (values per sample).
    pub const NUM_VARS: usize = {num_vars};
    /// Scalar sum edges of the plan.
    pub const NUM_SUM_EDGES: u64 = {edges};
    /// Learnable parameters of the plan.
    pub const NUM_PARAMS: u64 = {params};
    /// The execution plan as JSON ([`plan`] parses it).
    pub const PLAN_JSON: &str = {plan};
    /// The kernel manifest as JSON ([`manifest`] parses it).
    pub const MANIFEST_JSON: &str = {manifest};
    /// The CUDA source generated for this circuit (compiled by NVRTC when a GPU engine starts).
    pub const CUDA_SOURCE: &str = {cuda};
    /// CUBINs of [`CUDA_SOURCE`] compiled at build time (`("90", bytes)` = sm_90): a GPU of such an
    /// architecture needs no NVRTC; others compile the source at their first start.
    pub const CUBINS: &[(&str, &[u8])] = &[{cubins}];

    /// The execution plan.
    pub fn plan() -> __rt::Plan {{
        __rt::Plan::from_json(PLAN_JSON).expect("the embedded plan was written by pc-codegen")
    }}

    /// The kernel manifest of [`CUDA_SOURCE`].
    pub fn manifest() -> __rt::cuda::Manifest {{
        __rt::cuda::Manifest::from_json(MANIFEST_JSON).expect("the embedded manifest was written by pc-codegen")
    }}

    /// The circuit's plan with a set of parameters; starts engines.
    #[derive(Clone, Debug)]
    pub struct Circuit {{
        plan: __rt::Plan,
        params: __rt::Params,
    }}

    impl Circuit {{
        /// Read and validate a parameter file (`params.safetensors` of a model directory).
        pub fn load(params_path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<Circuit, __rt::RuntimeError> {{
            let plan = plan();
            let params = __rt::Params::load(&plan, params_path.as_ref())?;
            ::core::result::Result::Ok(Circuit {{ plan, params }})
        }}

        /// Random parameters (deterministic for a seed), e.g. to train from scratch.
        pub fn random(seed: u64) -> Circuit {{
            let plan = plan();
            let params = __rt::Params::random(&plan, seed, 2.0);
            Circuit {{ plan, params }}
        }}

        /// Validated parameters in this plan's layout.
        pub fn from_params(params: __rt::Params) -> ::core::result::Result<Circuit, __rt::RuntimeError> {{
            let plan = plan();
            params.validate(&plan)?;
            ::core::result::Result::Ok(Circuit {{ plan, params }})
        }}

        /// The execution plan.
        pub fn plan(&self) -> &__rt::Plan {{
            &self.plan
        }}

        /// The parameters.
        pub fn params(&self) -> &__rt::Params {{
            &self.params
        }}

        /// Write the parameters as a safetensors file (atomically).
        pub fn save_params(&self, path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<(), __rt::RuntimeError> {{
            self.params.save(&self.plan, path.as_ref())
        }}

        /// A CPU engine over this circuit.
        pub fn cpu(&self) -> ::core::result::Result<__rt::CpuEngine, __rt::RuntimeError> {{
            __rt::CpuEngine::new(self.plan.clone(), self.params.clone())
        }}

        /// A GPU engine running the embedded kernels: an embedded CUBIN for the device's
        /// architecture, else [`CUDA_SOURCE`] compiled by NVRTC (cached in `cache`).
        pub fn gpu(&self, cache: &__rt::cuda::KernelCache) -> ::core::result::Result<__rt::cuda::GpuEngine, __rt::RuntimeError> {{
            __rt::cuda::GpuEngine::with_cubins(self.plan.clone(), self.params.clone(), CUDA_SOURCE, CUBINS, manifest(), cache)
        }}

        /// [`Circuit::load`], then [`Circuit::cpu`].
        pub fn load_cpu(params_path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<__rt::CpuEngine, __rt::RuntimeError> {{
            Circuit::load(params_path)?.cpu()
        }}

        /// [`Circuit::load`], then [`Circuit::gpu`].
        pub fn load_gpu(
            params_path: impl ::core::convert::AsRef<::std::path::Path>,
            cache: &__rt::cuda::KernelCache,
        ) -> ::core::result::Result<__rt::cuda::GpuEngine, __rt::RuntimeError> {{
            Circuit::load(params_path)?.gpu(cache)
        }}
    }}
}}
"#,
        name_lit = literal(name),
        num_vars = a.plan.num_vars,
        edges = a.plan.num_sum_edges(),
        params = a.plan.num_learnable_params(),
    );
    s
}

//! `pc-macros`: the `circuit! { … }` macro of pcc. Use it through `pcc::circuit!`.
//!
//! The crate is thin, as in cubecl: [`parse`] turns tokens into pc-codegen's syntax-free
//! [`pc_codegen::declare::Declaration`] (recording spans), and [`generate`] hands it to
//! pc-codegen, which checks, builds, compiles and emits the circuit and writes the module's Rust
//! source — the same text the build-script API (`pc_codegen::build`) writes into `OUT_DIR`.

mod generate;
mod parse;

/// Declare a probabilistic circuit; it is validated, compiled and its CUDA generated at compile
/// time, and the macro expands to a module with the circuit embedded.
///
/// ```text
/// pcc::circuit! {
///     name: tiny, vars: 2,                               // headers; also `runtime: ::pc_runtime`
///     x0 = categorical(var 0, states 3, block 4);        // leaves: categorical | bernoulli |
///     x1 = bernoulli(var 1, block 4);                    //   gaussian (min_sigma) | indicator (states)
///     p  = product(x0, x1);                              // options: blocks (1), block (1), tie NODE
///     s  = sum(p; block 1);                              // edges dense (default) | diagonal | [(i, j), ..]
///     root s;
/// }
/// pcc::circuit! { name: pd4, template: pd(shape = (4, 4), latents = 8, input = bernoulli) }
/// ```
///
/// The module `tiny` holds `NUM_VARS`, `PLAN_JSON`, `MANIFEST_JSON`, `CUDA_SOURCE`, `plan()`,
/// `manifest()` and `Circuit` (`load`, `random`, `from_params`, `cpu`, `gpu`, `load_cpu`,
/// `load_gpu`). See `pc_codegen::declare` for the full language. Errors point at the offending
/// tokens, with the message of the rule the circuit breaks.
#[proc_macro]
pub fn circuit(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    match syn::parse::<parse::Input>(input).and_then(|i| generate::expand(&i)) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.into_compile_error().into(),
    }
}

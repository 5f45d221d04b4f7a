//! `pc-macros`: the `circuit! { … }` macro of pcc. Use it through `pcc::circuit!`.
//!
//! The crate is thin, as in cubecl: `pc_codegen::syntax` turns tokens into pc-codegen's
//! syntax-free [`pc_codegen::declare::Declaration`] (recording spans), and [`generate`] hands it to
//! pc-codegen, which checks, builds, compiles and emits the circuit and writes the module's Rust
//! source — the same text the build-script API (`pc_codegen::build`) writes into `OUT_DIR`.

mod generate;

/// Declare a probabilistic circuit; it is validated, compiled and its CUDA generated at compile
/// time, and the macro expands to a module with the circuit embedded.
///
/// ```text
/// pcc::circuit! {
///     name: tiny, vars: 2,                               // headers; also `runtime: ::pc_runtime`,
///                                                        //   `precision: bf16` (GPU sum kernels)
///     x0 = categorical(var 0, states 3, block 4);        // leaves: categorical | bernoulli |
///     x1 = bernoulli(var 1, block 4);                    //   gaussian (min_sigma) | indicator (states) |
///                                                        //   binomial (trials)
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
    match syn::parse::<pc_codegen::syntax::Input>(input).and_then(|i| generate::expand(&i)) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.into_compile_error().into(),
    }
}

#[cfg(test)]
mod tests {
    use pc_codegen::declare::{Arg, Body, Call, Loc, Value};

    use pc_codegen::syntax::Input;

    fn parse(src: &str) -> Input {
        syn::parse_str::<Input>(src).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_headers_nodes_options_and_root() {
        let i = parse(
            "name: tiny, vars: 3, runtime: ::pc_runtime,
             x0 = categorical(var 0, states = 4, block 8);
             p = product(x0, x1; edges [[0, 1], [1, 0]]);
             s = sum(p; block 8, edges [(0, 0)], tie t);
             g = gaussian(var 2, min_sigma 0.5);
             root s;",
        );
        assert_eq!(i.decl.name, "tiny");
        assert_eq!(i.decl.vars, Some(3));
        assert_eq!(i.runtime.replace(' ', ""), "::pc_runtime");
        let Body::Nodes { nodes, root } = &i.decl.body else { panic!("nodes") };
        assert_eq!(root.as_deref(), Some("s"));
        assert_eq!(nodes.len(), 4);
        assert_eq!(
            nodes[0].call,
            Call {
                name: "categorical".into(),
                args: vec![Arg::Named("var".into(), Value::Int(0)), Arg::Named("states".into(), Value::Int(4)), Arg::Named("block".into(), Value::Int(8)),],
            }
        );
        let edges = Value::List(vec![Value::List(vec![Value::Int(0), Value::Int(1)]), Value::List(vec![Value::Int(1), Value::Int(0)])]);
        assert_eq!(nodes[1].call.args[2], Arg::Named("edges".into(), edges));
        assert_eq!(nodes[1].call.args[0], Arg::Positional(Value::Ident("x0".into())));
        assert_eq!(nodes[2].call.args[3], Arg::Named("tie".into(), Value::Ident("t".into())));
        assert_eq!(nodes[3].call.args[1], Arg::Named("min_sigma".into(), Value::Float(0.5)));
        assert_eq!(i.spans.nodes[2].call.args.len(), 4);
    }

    #[test]
    fn parses_templates() {
        let i = parse("name: pd4, template: pd(shape = (4, 4), input = categorical(256), homogeneous = true)");
        let Body::Template(t) = &i.decl.body else { panic!("template") };
        assert_eq!(t.name, "pd");
        assert_eq!(t.args[0], Arg::Named("shape".into(), Value::Tuple(vec![Value::Int(4), Value::Int(4)])));
        let dist = Call { name: "categorical".into(), args: vec![Arg::Positional(Value::Int(256))] };
        assert_eq!(t.args[1], Arg::Named("input".into(), Value::Call(dist)));
        assert_eq!(t.args[2], Arg::Named("homogeneous".into(), Value::Bool(true)));
        assert_eq!(i.runtime, "::pcc::runtime");
        assert_eq!(i.decl.precision, pc_codegen::pipeline::Precision::Fp32, "the default");
        let i = parse("name: pd4, precision: bf16, template: pd(shape = (4, 4))");
        assert_eq!(i.decl.precision, pc_codegen::pipeline::Precision::Bf16);
    }

    #[test]
    fn expansion_is_the_shared_module_text() {
        let i = parse("name: m, vars: 1, x = bernoulli(var 0, block 2); s = sum(x); root s;");
        let tokens = crate::generate::expand(&i).unwrap().to_string();
        assert!(tokens.contains("pub mod m") && tokens.contains("CUDA_SOURCE"), "{tokens}");
        let i = parse("name: m, vars: 2, x = bernoulli(var 0, block 2); s = sum(x); root s;");
        let e = pc_codegen::declare::expand(&i.decl, &i.runtime).unwrap_err();
        assert_eq!(e.loc, Loc::Root);
    }

    #[test]
    fn syntax_errors() {
        for (src, msg) in [
            ("vars: 1", "missing `name"),
            ("name: a, nme: b", "unknown header `nme`"),
            ("name: a, name: b", "given twice"),
            ("name: a, x = sum(p, 1 2)", "expected `,` or `;`"),
            ("name: a, root s; root t;", "one root"),
            ("name: a, template: pd(shape = (4, 4)), x = bernoulli(var 0);", "not both"),
            ("name: a, precision: fp64", "unknown precision `fp64`"),
            ("name: a, precision: bf16, precision: tf32", "given twice"),
        ] {
            let e = syn::parse_str::<Input>(src).err().unwrap_or_else(|| panic!("{src} parsed"));
            assert!(e.to_string().contains(msg), "{src}: {e}");
        }
    }
}

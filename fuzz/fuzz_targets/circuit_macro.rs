//! The `circuit!` language: text → tokens → `pc_codegen::syntax::Input` (the macro's parser) →
//! `declare::build` (names, options, templates, validation) → for small circuits, `declare::expand`
//! (compile, emit CUDA, the module's Rust source, which must parse as Rust tokens again).
//! Anything may be rejected with an error; nothing may panic, hang or run out of memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pc_codegen::declare::{self, Arg, Body, Call, Value};
use pc_codegen::syntax::Input;

/// Declarations with a number above this are only parsed: sizes (latents, blocks, states) that
/// large build circuits within pcc's limits but of gigabytes, which is the limits' point.
const MAX_INT: u64 = 256;
/// Built circuits up to this many scalar nodes are compiled and emitted.
const MAX_NODES: u64 = 1 << 14;

fn max_int(v: &Value) -> u64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) if f.is_finite() => f.abs().min(u64::MAX as f64) as u64,
        Value::Float(_) => u64::MAX,
        Value::Bool(_) | Value::Ident(_) => 0,
        Value::Tuple(vs) | Value::List(vs) => vs.iter().map(max_int).max().unwrap_or(0),
        Value::Call(c) => call_max(c),
    }
}

fn call_max(c: &Call) -> u64 {
    c.args
        .iter()
        .map(|a| match a {
            Arg::Positional(v) | Arg::Named(_, v) => max_int(v),
        })
        .max()
        .unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(input) = syn::parse_str::<Input>(text) else { return };
    let decl = &input.decl;
    let big = decl.vars.is_some_and(|v| v > MAX_INT)
        || match &decl.body {
            Body::Template(c) => call_max(c) > MAX_INT,
            Body::Nodes { nodes, .. } => nodes.iter().any(|n| call_max(&n.call) > MAX_INT),
        };
    if big {
        return;
    }
    let Ok(circuit) = declare::build(decl) else { return };
    if circuit.nodes.iter().map(|n| n.num_nodes()).sum::<u64>() > MAX_NODES {
        return;
    }
    let text = declare::expand(decl, &input.runtime).expect("a circuit that builds expands");
    assert!(text.parse::<proc_macro2::TokenStream>().is_ok(), "the generated module parses as Rust tokens");
});

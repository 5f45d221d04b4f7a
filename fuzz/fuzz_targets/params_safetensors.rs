//! Parameter files: arbitrary bytes read as the safetensors parameters of a fixed small model.
//! Anything may be rejected with a `ParamsError`; nothing may panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pc_codegen::{CircuitBuilder, Dist, Model, SumEdges};
use pc_runtime::Params;

/// A model with every kind of tensor: categorical, Bernoulli and Gaussian leaves, tied inputs,
/// and sums with block-sparse edges.
fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let mut b = CircuitBuilder::new(4);
        let c0 = b.inputs(0, 2, 2, Dist::Categorical { num_cats: 3 });
        let b1 = b.inputs(1, 2, 2, Dist::Bernoulli);
        let g2 = b.inputs(2, 2, 2, Dist::Gaussian { min_sigma: 0.1 });
        let c3 = b.tied_inputs(c0, 3);
        let p = b.multiply(&[c0, b1]);
        let q = b.multiply(&[g2, c3]);
        let s = b.summate(&[p], 2, 2, SumEdges::List(vec![[0, 0], [1, 1], [1, 0]]));
        let t = b.summate(&[q], 2, 2, SumEdges::Dense);
        let r = b.multiply(&[s, t]);
        let root = b.summate(&[r], 1, 1, SumEdges::Dense);
        Model::random(b.finish(root).expect("valid"), 1).expect("compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let m = model();
    if let Ok(params) = Params::from_bytes(&m.plan, data, Path::new("fuzz.safetensors")) {
        params.validate(&m.plan).expect("loaded parameters are valid");
    }
});

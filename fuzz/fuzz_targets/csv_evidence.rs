//! CSV data and evidence: arbitrary bytes parsed as CSV with missing values, then validated as
//! evidence against a small discrete model and evaluated. Errors are fine; panics are not.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pc_codegen::{CircuitBuilder, Dist, Model, SumEdges};
use pc_runtime::dataset::csv_auto_from_bytes;

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let mut b = CircuitBuilder::new(3);
        let x = b.inputs(0, 1, 2, Dist::Categorical { num_cats: 4 });
        let y = b.inputs(1, 1, 2, Dist::Bernoulli);
        let z = b.inputs(2, 1, 2, Dist::Gaussian { min_sigma: 0.1 });
        let p = b.multiply(&[x, y, z]);
        let root = b.summate(&[p], 1, 1, SumEdges::Dense);
        Model::random(b.finish(root).expect("valid"), 1).expect("compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = csv_auto_from_bytes(Path::new("fuzz.csv"), data, "?") else { return };
    assert_eq!(ev.values.len() % ev.num_vars, 0);
    let m = model();
    if ev.validate(&m.plan).is_ok() && ev.num_samples() <= 64 {
        let engine = m.cpu_engine().expect("engine");
        let ll = engine.log_likelihood(&ev).expect("validated evidence evaluates");
        assert!(ll.iter().all(|l| !l.is_nan()), "{ll:?}");
        engine.conditionals(&ev).expect("validated evidence has conditionals");
    }
});

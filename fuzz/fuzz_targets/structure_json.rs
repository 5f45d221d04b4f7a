//! Structure files: JSON → `Circuit` → validation → compiled plan → a CPU engine's forward pass.
//! Anything may be rejected with an error; nothing may panic, hang or run out of memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pc_codegen::{compile, validate, Circuit, Model};
use pc_runtime::Evidence;

/// Validated circuits up to this many scalar nodes are compiled and evaluated. Larger ones are
/// within pcc's limits (2^31 entries per buffer) but take gigabytes, which is the limits' point,
/// not a bug; the fuzzer looks for logic errors.
const MAX_NODES: u64 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = serde_json::from_slice::<Circuit>(data) else { return };
    if validate(&c).is_err() || c.nodes.iter().map(|n| n.num_nodes()).sum::<u64>() > MAX_NODES {
        return;
    }
    let plan = compile(&c).expect("a validated circuit compiles");
    assert_eq!(plan.num_vars, c.num_vars);
    if c.num_vars > 64 || c.num_sum_edges() > MAX_NODES {
        return;
    }
    let model = Model::random(c, 0).expect("a validated circuit gets parameters");
    let engine = model.cpu_engine().expect("an engine over a compiled plan");
    let ev = Evidence::all_missing(model.plan.num_vars as usize, 1);
    let ll = engine.log_likelihood(&ev).expect("all-missing evidence is valid");
    assert!(ll[0].abs() < 1e-2, "the marginal of nothing is log 1, got {}", ll[0]);
});

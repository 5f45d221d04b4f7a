//! Plan files (what a build script or `circuit!` embeds, and the deployment binary loads):
//! JSON → `Plan::from_json` (parse, version, bounds) → random parameters → a CPU engine's
//! forward pass and flows. Anything may be rejected with an error; nothing may panic, hang or
//! run out of memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pc_runtime::{CpuEngine, Evidence, Params, Plan};

/// Plans up to this many nodes, elements and parameters are evaluated (larger ones are valid
/// but slow; the fuzzer looks for logic errors).
const MAX_SIZE: u32 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(plan) = Plan::from_json(text) else { return };
    let sizes = [plan.num_nodes, plan.num_elements, plan.num_sum_params, plan.num_input_params, plan.num_input_flows, plan.num_vars];
    if sizes.iter().any(|&s| s > MAX_SIZE) || plan.depths.iter().flat_map(|d| d.sums.iter()).map(|p| p.cids.len()).sum::<usize>() > MAX_SIZE as usize {
        return;
    }
    let params = Params::random(&plan, 0, 1.0);
    let Ok(mut engine) = CpuEngine::new(plan, params) else { return };
    let ev = Evidence::all_missing(engine.plan().num_vars as usize, 2);
    if let Ok(ll) = engine.log_likelihood(&ev) {
        assert_eq!(ll.len(), 2);
    }
    let _ = engine.accumulate_flows(&ev, None);
});

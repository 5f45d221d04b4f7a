//! The CPU engine checks its buffers against the host's available memory before allocating them
//! (`PCC_HOST_MEMORY` stands in for `MemAvailable` here): with less memory it runs fewer chunks
//! or flow groups at once, with the same results to the bit; with too little it is an error that
//! names the sizes. One test in its own binary: it sets a process-wide variable.

use pcc_testkit as common;

use common::Gen;
use pcc::codegen::Model;
use pcc::runtime::Evidence;
use pcc::runtime::cpu::CHUNK;
use rand::{Rng, SeedableRng};

fn set_limit(bytes: Option<u64>) {
    // SAFETY: this binary has one test and no other thread reads the environment meanwhile
    // (the engine reads the variable on the calling thread before it starts its workers).
    unsafe {
        match bytes {
            Some(b) => std::env::set_var("PCC_HOST_MEMORY", b.to_string()),
            None => std::env::remove_var("PCC_HOST_MEMORY"),
        }
    }
}

#[test]
fn less_host_memory_means_less_parallelism_then_a_named_error() {
    let m = Model::random(Gen::circuit(7), 3).unwrap();
    let plan = &m.plan;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let n = 4 * CHUNK + 37; // four flow groups, five chunks
    let data: Vec<f32> = (0..n * plan.num_vars as usize)
        .map(|i| match plan.domains[i % plan.num_vars as usize] {
            pcc::runtime::Domain::Discrete { num_cats } => rng.random_range(0..num_cats) as f32,
            pcc::runtime::Domain::Continuous => rng.random_range(-1.0..1.0),
        })
        .collect();
    let ev = Evidence::new(plan.num_vars as usize, data).unwrap();
    let flows = 8 * (plan.num_sum_params as u64 + plan.num_input_flows as u64);
    let ws = 2 * 4 * (plan.num_nodes as u64 + plan.num_elements as u64) * CHUNK as u64;
    // The engine is built with no limit; the passes run under `limit`.
    let run = |limit: Option<u64>| {
        let mut e = m.cpu_engine().unwrap();
        set_limit(limit);
        let lls = e.log_likelihood(&ev);
        let acc = e.accumulate_flows(&ev, None);
        set_limit(None);
        (lls.unwrap(), acc.unwrap(), e.flows().clone())
    };
    let (lls, acc, full) = run(None);
    // Room for one group's accumulators and buffers at a time, not four: groups one by one.
    let (lls1, acc1, seq) = run(Some((flows + ws) * 3 / 2));
    assert_eq!(acc1, acc, "one group at a time: same likelihoods");
    assert_eq!(seq.sum, full.sum, "same parameter flows to the bit");
    assert_eq!(seq.input, full.input, "same statistics to the bit");
    assert_eq!(lls1, lls);
    // Room for one chunk's values, not two: chunks one by one.
    let e = m.cpu_engine().unwrap();
    set_limit(Some(ws / 2 + ws / 4));
    let lls2 = e.log_likelihood(&ev);
    set_limit(None);
    assert_eq!(lls2.unwrap(), lls, "one chunk at a time: same likelihoods");
    // Not even one group's buffers.
    set_limit(Some(flows + 4 * plan.num_input_flows as u64 + ws / 4));
    let mut e = m.cpu_engine().unwrap();
    let err = e.accumulate_flows(&ev, None).unwrap_err().to_string();
    set_limit(None);
    assert!(err.contains("not enough host memory") && err.contains("MiB"), "{err}");
}

//! Entropy regularization on the CPU engine: the latent-variable entropy against brute-force
//! enumeration of induced trees, and the regularized EM step against its definition (τ = 0 is
//! plain EM; τ > 0 raises the entropy and keeps every row normalized).

use pcc_testkit as common;

use common::{Gen, Reference, random_evidence};
use pcc::codegen::Model;
use pcc::runtime::entropy::latent_entropy;

const CIRCUITS: u64 = 40;

fn model(seed: u64) -> Model {
    Model::random(Gen::circuit(seed), 9000 + seed).expect("compiles")
}

#[test]
fn latent_entropy_matches_induced_tree_enumeration() {
    let mut checked = 0;
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let Some(want) = Reference::new(&m).latent_entropy_by_trees(400_000) else { continue };
        let got = latent_entropy(&m.plan, &m.params).unwrap();
        assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "circuit {seed}: pcc {got}, enumeration {want}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} circuits small enough to enumerate");
}

#[test]
fn zero_tau_is_plain_em_and_positive_tau_raises_the_entropy() {
    for seed in 0..CIRCUITS {
        let m = model(seed);
        let ev = random_evidence(&m, 30, 0.1, 77 + seed);
        let step = |tau: f32| {
            let mut e = m.cpu_engine().unwrap();
            e.accumulate_flows(&ev, None).unwrap();
            if tau == 0.0 {
                e.em_step(1.0, 0.1).unwrap()
            } else {
                e.em_step_entropy(1.0, 0.1, tau).unwrap()
            }
            e.params().clone()
        };
        let plain = step(0.0);
        let mut e = m.cpu_engine().unwrap();
        e.accumulate_flows(&ev, None).unwrap();
        e.em_step_entropy(1.0, 0.1, 0.0).unwrap();
        for (a, b) in plain.sum.iter().chain(&plain.input).zip(e.params().sum.iter().chain(&e.params().input)) {
            assert!((a - b).abs() < 1e-6, "circuit {seed}: τ = 0 gives {b}, plain EM {a}");
        }
        let h0 = latent_entropy(&m.plan, &plain).unwrap();
        let reg = step(0.5);
        reg.validate(&m.plan).expect("regularized parameters stay normalized");
        let h1 = latent_entropy(&m.plan, &reg).unwrap();
        assert!(h1 > h0 - 1e-9, "circuit {seed}: entropy {h1} with τ = 0.5, {h0} without");
    }
}

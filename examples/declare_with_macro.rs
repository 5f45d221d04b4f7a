//! Declare a circuit with `pcc::circuit!` (validated, compiled and its CUDA generated at compile
//! time), train it with EM on the CPU engine on synthetic data, and query it: a marginal, the
//! conditionals of the unobserved variables, and the MPE completion.
//!
//! Run: `cargo run --example declare_with_macro`

use anyhow::Result;
use pcc::runtime::{Conditional, Evidence};
use rand::{Rng, SeedableRng};

// Six binary sensors; a hierarchy of latent mixtures over pairs of sensors.
pcc::circuit! {
    name: sensors, vars: 6,
    x0 = bernoulli(var 0, block 8);
    x1 = bernoulli(var 1, block 8);
    x2 = bernoulli(var 2, block 8);
    x3 = bernoulli(var 3, block 8);
    x4 = bernoulli(var 4, block 8);
    x5 = bernoulli(var 5, block 8);
    a   = product(x0, x1);   sa  = sum(a; block 8);   // 8 latent states of the pair (x0, x1)
    b   = product(x2, x3);   sb  = sum(b; block 8);
    c   = product(x4, x5);   sc  = sum(c; block 8);
    ab  = product(sa, sb);   sab = sum(ab; block 8);
    top = product(sab, sc);
    mix = sum(top);                                   // one root node over 8 components
    root mix;
}

/// Samples of a noisy two-state source: a hidden bit `z`; sensor `i` reads `z` flipped with
/// probability 0.05 + 0.05 i.
fn synthetic(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(n * sensors::NUM_VARS);
    for _ in 0..n {
        let z = rng.random_bool(0.3);
        for i in 0..sensors::NUM_VARS {
            let flip = rng.random_bool(0.05 + 0.05 * i as f64);
            values.push((z ^ flip) as u8 as f32);
        }
    }
    values
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
}

fn main() -> Result<()> {
    println!(
        "circuit `{}`: {} variables, {} sum edges, {} parameters; {} bytes of CUDA generated at compile time",
        sensors::NAME,
        sensors::NUM_VARS,
        sensors::NUM_SUM_EDGES,
        sensors::NUM_PARAMS,
        sensors::CUDA_SOURCE.len()
    );
    let nv = sensors::NUM_VARS;
    let train = Evidence::new(nv, synthetic(4000, 1))?;
    let test = Evidence::new(nv, synthetic(1000, 2))?;

    let mut engine = sensors::Circuit::random(7).cpu()?;
    println!("step  0: train LL {:8.4}", mean(&engine.log_likelihood(&train)?));
    for step in 1..=30 {
        let lls = engine.accumulate_flows(&train, None)?; // E-step (LL before this update)
        engine.em_step(1.0, 0.1)?; // full-batch M-step
        if step % 5 == 0 {
            println!("step {step:2}: train LL {:8.4}", mean(&lls));
        }
    }
    println!("test LL {:8.4} nats/sample", mean(&engine.log_likelihood(&test)?));

    // Queries with missing values: sensors 0 and 1 read 1, the rest are unobserved.
    let ev = Evidence::with_missing(nv, vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0], Some(vec![false, false, true, true, true, true]))?;
    let marginal = engine.log_likelihood(&ev)?[0];
    println!("P(x0 = 1, x1 = 1) = {:.4}", marginal.exp());
    for (v, c) in engine.conditionals(&ev)?[0].iter().enumerate() {
        if let Conditional::Discrete(p) = c {
            println!("P(x{v} = 1 | x0 = 1, x1 = 1) = {:.4}", p[1]);
        }
    }
    let mpe = engine.mpe(&ev)?;
    println!("MPE completion: {:?} (log value {:.4})", mpe.assignments, mpe.log_values[0]);
    Ok(())
}

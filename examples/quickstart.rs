//! Quickstart: build a ground-truth circuit with the builder, draw train/test data from it, learn an
//! HCLT structure from the training samples, train it with EM on the CPU engine, and compare the
//! learned model's test log-likelihood with the ground truth's.
//!
//! Run: `cargo run --release --example quickstart`

use anyhow::Result;
use pcc::codegen::structures::hclt::{self, HcltOptions};
use pcc::codegen::{Circuit, CircuitBuilder, Dist, Model, NodeId, SumEdges, compile};
use pcc::runtime::{Evidence, Params};

/// A balanced binary tree over `vars`: leaves are `latents` Bernoulli nodes, every inner region
/// multiplies its two halves elementwise and mixes the products with a dense `latents x latents`
/// sum; the root mixes the top products into one node.
fn tree(b: &mut CircuitBuilder, vars: &[u32], latents: u32) -> NodeId {
    if vars.len() == 1 {
        return b.inputs(vars[0], 1, latents, Dist::Bernoulli);
    }
    let (l, r) = vars.split_at(vars.len() / 2);
    let (l, r) = (tree(b, l, latents), tree(b, r, latents));
    let p = b.multiply(&[l, r]);
    b.summate(&[p], 1, latents, SumEdges::Dense)
}

fn structure(num_vars: u32, latents: u32) -> Result<Circuit> {
    let mut b = CircuitBuilder::new(num_vars);
    let vars: Vec<u32> = (0..num_vars).collect();
    let top = tree(&mut b, &vars, latents);
    let root = b.summate(&[top], 1, 1, SumEdges::Dense);
    Ok(b.finish(root)?)
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
}

fn main() -> Result<()> {
    let (num_vars, latents) = (16, 8);
    let circuit = structure(num_vars, latents)?;
    let plan = compile(&circuit)?;
    println!("ground truth: {num_vars} variables, {} sum edges, {} parameters, depth {}", plan.num_sum_edges(), plan.num_learnable_params(), plan.depths.len());

    // Ground truth: peaked random parameters, then train/test samples from it.
    let truth = Model::new(circuit.clone(), Params::random(&plan, 1, 8.0))?.cpu_engine()?;
    let nv = num_vars as usize;
    let train = Evidence::new(nv, truth.sample(5000, 10)?)?;
    let test = Evidence::new(nv, truth.sample(2000, 11)?)?;
    let truth_ll = mean(&truth.log_likelihood(&test)?);

    // Learn an HCLT from the training samples alone, then train it with full-batch EM.
    let learned = hclt::learn(&train, &HcltOptions { latents: 16, ..HcltOptions::default() })?;
    let mut model = Model::random(learned, 2)?.cpu_engine()?;
    println!("learned HCLT: {} sum edges, depth {}", model.plan().num_sum_edges(), model.plan().depths.len());
    println!("epoch   0: train LL {:8.4}", mean(&model.log_likelihood(&train)?));
    for epoch in 1..=40 {
        let lls = model.accumulate_flows(&train, None)?;
        model.em_step(1.0, 1.0)?;
        if epoch % 10 == 0 {
            println!("epoch {epoch:3}: train LL {:8.4} (before this step)", mean(&lls));
        }
    }
    let learned_ll = mean(&model.log_likelihood(&test)?);
    println!("test log-likelihood (nats/sample): learned {learned_ll:.4}, ground truth {truth_ll:.4}");
    Ok(())
}

//! `pcc info`: sizes of a model and its compiled plan.

use std::path::Path;

use anyhow::Result;

pub fn run(dir: &Path, json: bool) -> Result<()> {
    let m = super::load_model(dir)?;
    let plan = &m.plan;
    let partitions: usize = plan.depths.iter().map(|d| d.prods.len() + d.sums.len()).sum();
    let per_sample = 4 * (plan.num_nodes as u64 + plan.num_elements as u64);
    let fixed = 4 * (plan.num_sum_params as u64 + plan.num_input_params as u64) + 8 * (plan.num_sum_params as u64 + plan.num_input_flows as u64);
    let memory: serde_json::Map<String, serde_json::Value> =
        [1u64, 64, 512, 4096].iter().map(|&b| (format!("batch_{b}"), serde_json::json!(fixed + 2 * b * per_sample))).collect();
    let summary = serde_json::json!({
        "variables": plan.num_vars,
        "node_vectors": m.circuit.nodes.len(),
        "nodes": plan.num_nodes - plan.num_dummy_nodes,
        "sum_edges": plan.num_sum_edges(),
        "parameters": plan.num_learnable_params(),
        "depth": plan.depths.len(),
        "layers": 2 * plan.depths.len() + plan.inputs.len(),
        "partitions": partitions,
        "memory_bytes": memory,
    });
    if json {
        println!("{summary}");
    } else {
        println!("model {}", dir.display());
        for (k, v) in summary.as_object().expect("object") {
            if k == "memory_bytes" {
                println!("  memory (values + flows + parameters):");
                for (b, bytes) in v.as_object().expect("object") {
                    println!("    {:<16} {:.1} MiB", b.replace('_', " "), bytes.as_f64().unwrap_or(0.0) / (1 << 20) as f64);
                }
            } else {
                println!("  {k:<18} {v}");
            }
        }
    }
    Ok(())
}

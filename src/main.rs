//! The `pcc` command line. This first version inspects and checks model directories; learning,
//! training and queries arrive with the structures issue.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pc_codegen::Model;

#[derive(Parser)]
#[command(name = "pcc", version, about = "Probabilistic-circuit compiler: build, train and query probabilistic circuits")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model directory (structure.json + params.safetensors): sizes, depth, layers.
    Info {
        /// Model directory.
        model: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Info { model, json } => info(&model, json),
    }
}

fn info(dir: &std::path::Path, json: bool) -> Result<()> {
    let m = Model::load(dir).with_context(|| format!("cannot load model {}", dir.display()))?;
    let plan = &m.plan;
    let partitions: usize = plan.depths.iter().map(|d| d.prods.len() + d.sums.len()).sum();
    let summary = serde_json::json!({
        "variables": plan.num_vars,
        "node_vectors": m.circuit.nodes.len(),
        "nodes": plan.num_nodes - plan.num_dummy_nodes,
        "sum_edges": plan.num_sum_edges(),
        "parameters": plan.num_learnable_params(),
        "depth": plan.depths.len(),
        "layers": 2 * plan.depths.len() + plan.inputs.len(),
        "partitions": partitions,
        "bytes_per_sample": 4 * (plan.num_nodes as u64 + plan.num_elements as u64),
    });
    if json {
        println!("{summary}");
    } else {
        println!("model {}", dir.display());
        for (k, v) in summary.as_object().expect("object") {
            println!("  {k:<18} {v}");
        }
    }
    Ok(())
}

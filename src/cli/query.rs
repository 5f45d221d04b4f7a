//! `pcc query marginal|conditional|mpe`: queries with missing values (`?` or empty CSV fields).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use pc_runtime::{Conditional, dataset};

use super::DeviceArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QueryKind {
    /// log p(observed values), the missing ones summed out.
    Marginal,
    /// P(x_v | observed values) for every missing variable v.
    Conditional,
    /// The most probable completion (max-product) and its log value.
    Mpe,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[arg(value_enum)]
    pub kind: QueryKind,
    /// Model directory.
    pub model: PathBuf,
    /// Evidence CSV: one sample per line; missing values as `--missing-marker` or empty fields.
    #[arg(long)]
    pub evidence: PathBuf,
    #[arg(long, default_value = "?")]
    pub missing_marker: String,
    /// One JSON object per sample (JSON lines).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(a: &QueryArgs) -> Result<()> {
    let m = super::load_model(&a.model)?;
    let ev = dataset::read_csv_auto(&a.evidence, &a.missing_marker)?;
    let mut engine = a.device.engine(&m)?;
    let nv = ev.num_vars;
    match a.kind {
        QueryKind::Marginal => {
            for (s, ll) in engine.log_likelihood(&ev)?.iter().enumerate() {
                if a.json {
                    println!("{}", serde_json::json!({ "sample": s, "log_marginal": ll }));
                } else {
                    println!("sample {s}: log p(evidence) = {ll:.6}");
                }
            }
        }
        QueryKind::Conditional => {
            for (s, conds) in engine.conditionals(&ev)?.iter().enumerate() {
                let mut vars = serde_json::Map::new();
                for (v, c) in conds.iter().enumerate() {
                    let value = match c {
                        Conditional::Observed => continue,
                        Conditional::Discrete(p) => serde_json::json!(p),
                        Conditional::Continuous { mean, var } => serde_json::json!({ "mean": mean, "var": var }),
                    };
                    vars.insert(v.to_string(), value);
                }
                if a.json {
                    println!("{}", serde_json::json!({ "sample": s, "conditionals": vars }));
                } else {
                    println!("sample {s}:");
                    for (v, p) in &vars {
                        println!("  x{v}: {p}");
                    }
                }
            }
        }
        QueryKind::Mpe => {
            let r = engine.mpe(&ev)?;
            for s in 0..ev.num_samples() {
                let x = &r.assignments[s * nv..][..nv];
                if a.json {
                    println!("{}", serde_json::json!({ "sample": s, "log_value": r.log_values[s], "assignment": x }));
                } else {
                    let text: Vec<String> = x.iter().map(|v| v.to_string()).collect();
                    println!("sample {s}: log value {:.6}, assignment {}", r.log_values[s], text.join(","));
                }
            }
        }
    }
    Ok(())
}

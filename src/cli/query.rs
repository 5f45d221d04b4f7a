//! `pcc query marginal|conditional|mpe`: queries with missing values (`?` or empty CSV fields).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use pc_runtime::{Conditional, Engine, Evidence, dataset};

use super::DeviceArgs;
use super::parallel::{ParallelArgs, Ranks};

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
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

pub fn run(a: &QueryArgs) -> Result<()> {
    let mut ranks = Ranks::start(&a.parallel, &a.device)?;
    let (m, ev) = ranks.prepare(|| Ok((super::load_model(&a.model)?, dataset::read_csv_auto(&a.evidence, &a.missing_marker)?)))?;
    ranks.run(&a.parallel, &a.device, &m, |engine, rank| {
        let Some(rank) = rank else {
            print!("{}", answer(a, engine, &ev, 0)?);
            return Ok(());
        };
        // Each rank answers its part of the samples; rank 0 prints them in order.
        let part = rank.shard(0..ev.num_samples());
        let text = if part.is_empty() { String::new() } else { answer(a, engine, &ev.slice(part.start, part.end), part.start)? };
        if let Some(all) = rank.gather_bytes(text.into_bytes())? {
            all.iter().for_each(|t| print!("{}", String::from_utf8_lossy(t)));
        }
        Ok(())
    })
}

/// The answers for the samples of `ev`, numbered from `first`, one line (or block) each.
fn answer(a: &QueryArgs, engine: &mut Engine, ev: &Evidence, first: usize) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let nv = ev.num_vars;
    match a.kind {
        QueryKind::Marginal => {
            for (i, ll) in engine.log_likelihood(ev)?.iter().enumerate() {
                let s = first + i;
                if a.json {
                    writeln!(out, "{}", serde_json::json!({ "sample": s, "log_marginal": ll }))?;
                } else {
                    writeln!(out, "sample {s}: log p(evidence) = {ll:.6}")?;
                }
            }
        }
        QueryKind::Conditional => {
            for (i, conds) in engine.conditionals(ev)?.iter().enumerate() {
                let s = first + i;
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
                    writeln!(out, "{}", serde_json::json!({ "sample": s, "conditionals": vars }))?;
                } else {
                    writeln!(out, "sample {s}:")?;
                    for (v, p) in &vars {
                        writeln!(out, "  x{v}: {p}")?;
                    }
                }
            }
        }
        QueryKind::Mpe => {
            let r = engine.mpe(ev)?;
            for i in 0..ev.num_samples() {
                let s = first + i;
                let x = &r.assignments[i * nv..][..nv];
                if a.json {
                    writeln!(out, "{}", serde_json::json!({ "sample": s, "log_value": r.log_values[i], "assignment": x }))?;
                } else {
                    let text: Vec<String> = x.iter().map(|v| v.to_string()).collect();
                    writeln!(out, "sample {s}: log value {:.6}, assignment {}", r.log_values[i], text.join(","))?;
                }
            }
        }
    }
    Ok(out)
}

//! `pcc eval`: average log-likelihood and bits per dimension of a data set.

use std::path::Path;

use anyhow::{Context, Result, bail};
use pc_runtime::Evidence;

use super::parallel::{ParallelArgs, Ranks, gather_lls};
use super::{DataArgs, DeviceArgs};

/// Score `data` under the model in `dir` (with `--gpus` or under a launcher, each rank scores
/// its part of the rows and rank 0 prints).
pub fn run(dir: &Path, data: &DataArgs, device: &DeviceArgs, parallel: &ParallelArgs, json: bool, soft: bool) -> Result<()> {
    let mut ranks = Ranks::start(parallel, device)?;
    let (m, ev) = ranks.prepare(|| {
        let m = super::load_model(dir)?;
        let ev = if soft { soft_data(data, &m.plan.domains)? } else { data.load()?.ev };
        Ok((m, ev))
    })?;
    ranks.run(parallel, device, &m, |engine, rank| {
        let Some(lls) = gather_lls(engine, rank, &ev)? else { return Ok(()) };
        let avg = super::mean(&lls);
        let bpd = -avg / (ev.num_vars as f64 * std::f64::consts::LN_2);
        if json {
            println!("{}", serde_json::json!({ "avg_ll": avg, "bpd": bpd, "n": lls.len() }));
        } else {
            println!("average log-likelihood {avg:.4} nats, {bpd:.4} bits per dimension, {} samples", lls.len());
        }
        Ok(())
    })
}

/// A soft CSV for the model's variables (`pc_runtime::soft::evidence_from_soft_csv`), rows
/// `--rows` of it.
fn soft_data(data: &DataArgs, domains: &[pc_runtime::Domain]) -> Result<Evidence> {
    let text = std::fs::read_to_string(&data.data).with_context(|| format!("cannot read {}", data.data.display()))?;
    let ev = pc_runtime::soft::evidence_from_soft_csv(&text, domains).with_context(|| format!("{}", data.data.display()))?;
    let n = ev.num_samples();
    match data.rows {
        Some((a, b)) if a >= n || a == b => bail!("--rows {a}..: {} has {n} rows", data.data.display()),
        Some((a, b)) => Ok(ev.slice(a, b.min(n))),
        None if n == 0 => bail!("{}: no samples", data.data.display()),
        None => Ok(ev),
    }
}

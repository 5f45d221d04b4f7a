//! `pcc eval`: average log-likelihood and bits per dimension of a data set.

use std::path::Path;

use anyhow::Result;

use super::{DataArgs, DeviceArgs};

pub fn run(dir: &Path, data: &DataArgs, device: &DeviceArgs, json: bool) -> Result<()> {
    let m = super::load_model(dir)?;
    let d = data.load()?;
    let mut engine = device.engine(&m)?;
    let lls = engine.log_likelihood(&d.ev)?;
    let avg = super::mean(&lls);
    let bpd = -avg / (d.ev.num_vars as f64 * std::f64::consts::LN_2);
    if json {
        println!("{}", serde_json::json!({ "avg_ll": avg, "bpd": bpd, "n": lls.len() }));
    } else {
        println!("average log-likelihood {avg:.4} nats, {bpd:.4} bits per dimension, {} samples", lls.len());
    }
    Ok(())
}

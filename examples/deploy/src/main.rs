//! A deployment binary: `build.rs` compiled the circuit `models/mixture` at build time, so this
//! crate depends on `pc-runtime` alone (no compiler, tera or syn) and embeds the plan and the
//! CUDA kernels. Run: `cargo run -p pcc-deploy-example [-- params.safetensors]`.

pc_runtime::include_circuit!("mixture");

use pc_runtime::{Evidence, RuntimeError};

fn main() -> Result<(), RuntimeError> {
    let circuit = match std::env::args().nth(1) {
        Some(path) => mixture::Circuit::load(path)?,
        None => mixture::Circuit::random(0),
    };
    println!(
        "circuit `{}`: {} variables, {} sum edges, {} bytes of embedded CUDA",
        mixture::NAME,
        mixture::NUM_VARS,
        mixture::NUM_SUM_EDGES,
        mixture::CUDA_SOURCE.len()
    );
    let engine = circuit.cpu()?;
    let data = Evidence::new(mixture::NUM_VARS, vec![0.0, 1.0, 2.0, 2.0, 0.0, 1.0])?;
    println!("log p(x) = {:?}", engine.log_likelihood(&data)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::mixture;
    use pc_runtime::Evidence;

    #[test]
    fn embedded_circuit_is_normalized() {
        let engine = mixture::Circuit::random(1).cpu().unwrap();
        let mut values = Vec::new();
        for a in 0..3 {
            for b in 0..2 {
                for c in 0..3 {
                    values.extend([a as f32, b as f32, c as f32]);
                }
            }
        }
        let lls = engine.log_likelihood(&Evidence::new(3, values).unwrap()).unwrap();
        let total: f64 = lls.iter().map(|&l| (l as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert_eq!(mixture::plan().num_vars, 3);
        assert!(!mixture::manifest().forward.is_empty());
        assert!(mixture::CUDA_SOURCE.contains("__global__"));
    }
}

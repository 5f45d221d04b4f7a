//! Compiles `models/mixture/structure.json` into `OUT_DIR/mixture.rs` (+ plan, manifest, CUDA).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    pc_codegen::build::Config::new().compile("models/mixture")?;
    Ok(())
}

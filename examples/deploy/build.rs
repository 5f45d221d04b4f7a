//! Compiles a circuit's structure file into `OUT_DIR/circuit.rs` (+ plan, manifest, CUDA source),
//! and, when NVRTC can be loaded here, the CUDA source into CUBINs for the GPU architectures the
//! binary should run on without NVRTC (`OUT_DIR/circuit_cubins.rs`, a list of `(arch, bytes)`).
//!
//! Environment:
//! - `PCC_DEPLOY_MODEL`: the model directory (its `structure.json` is read) or structure file;
//!   relative paths are relative to this crate's directory. Default: the committed `models/mixture`.
//! - `PCC_DEPLOY_ARCHS`: comma-separated architectures to embed CUBINs for (`90` = sm_90, H100 and
//!   H200); default `90`; empty = none.
//!
//! The module is always named `circuit`, so `src/main.rs` is the same for every model.

use std::fmt::Write as _;
use std::path::PathBuf;

const DEFAULT_MODEL: &str = "models/mixture";
const DEFAULT_ARCHS: &str = "90";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=PCC_DEPLOY_MODEL");
    println!("cargo:rerun-if-env-changed=PCC_DEPLOY_ARCHS");
    // Whether NVRTC can be loaded depends on the library path.
    println!("cargo:rerun-if-env-changed=LD_LIBRARY_PATH");
    let model = std::env::var("PCC_DEPLOY_MODEL").ok().filter(|m| !m.is_empty()).unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let archs_env = std::env::var("PCC_DEPLOY_ARCHS").ok();
    let explicit = archs_env.is_some();
    let archs: Vec<String> = archs_env.as_deref().unwrap_or(DEFAULT_ARCHS).split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    let nvrtc = pc_runtime::cuda::nvrtc_available();
    // The default architecture is embedded only when NVRTC is here (no warning otherwise);
    // architectures asked for explicitly make pc-codegen warn when it cannot compile them.
    let embed: &[String] = if nvrtc || explicit { &archs } else { &[] };
    let generated = pc_codegen::build::Config::new()
        .module_name("circuit")
        .cubin_archs(embed)
        .compile(&model)
        .map_err(|e| format!("PCC_DEPLOY_MODEL={model}, PCC_DEPLOY_ARCHS={}: {e}", archs.join(",")))?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);

    let requested: Vec<String> = archs.iter().map(|a| a.trim_start_matches("sm_").to_string()).collect();
    let mut list = format!(
        "/// The structure file the circuit was compiled from.\npub const MODEL: &str = {:?};\n\n",
        generated.structure.canonicalize().unwrap_or_else(|_| generated.structure.clone()).display().to_string()
    );
    writeln!(list, "/// The architectures asked for (`PCC_DEPLOY_ARCHS`, default `{DEFAULT_ARCHS}`).")?;
    writeln!(list, "pub const REQUESTED_ARCHS: &[&str] = &{requested:?};")?;
    writeln!(list, "/// Whether NVRTC could be loaded at build time (if not, `CUBINS` is empty).")?;
    writeln!(list, "pub const NVRTC_AT_BUILD: bool = {nvrtc};\n")?;
    list.push_str(
        "/// CUBINs compiled at build time by pc-codegen (`Config::cubin_archs`; `(\"90\", bytes)` = sm_90);\n\
         /// a GPU of another architecture compiles the CUDA source with NVRTC at run time instead.\n\
         pub const CUBINS: &[(&str, &[u8])] = super::circuit::CUBINS;\n",
    );
    let path = out_dir.join("circuit_cubins.rs");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(list.as_str()) {
        pc_runtime::atomic_write(&path, list.as_bytes())?;
    }
    Ok(())
}

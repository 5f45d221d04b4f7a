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
    let generated = pc_codegen::build::Config::new()
        .module_name("circuit")
        .compile(&model)
        .map_err(|e| format!("PCC_DEPLOY_MODEL={model}: {e}"))?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);

    let archs_env = std::env::var("PCC_DEPLOY_ARCHS").ok();
    let explicit = archs_env.is_some();
    let mut archs: Vec<String> = archs_env
        .as_deref()
        .unwrap_or(DEFAULT_ARCHS)
        .split(',')
        .map(|a| a.trim().trim_start_matches("sm_").to_string())
        .filter(|a| !a.is_empty())
        .collect();
    let mut seen = std::collections::HashSet::new();
    archs.retain(|a| seen.insert(a.clone()));
    if let Some(bad) = archs.iter().find(|a| !a.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err(format!("PCC_DEPLOY_ARCHS: `{bad}` is not an architecture such as 90 or sm_90").into());
    }

    let mut list = format!(
        "/// The structure file the circuit was compiled from.\npub const MODEL: &str = {:?};\n\n",
        generated.structure.canonicalize().unwrap_or_else(|_| generated.structure.clone()).display().to_string()
    );
    let nvrtc = pc_runtime::cuda::nvrtc_available();
    writeln!(list, "/// The architectures asked for (`PCC_DEPLOY_ARCHS`, default `{DEFAULT_ARCHS}`).")?;
    writeln!(list, "pub const REQUESTED_ARCHS: &[&str] = &{archs:?};")?;
    writeln!(list, "/// Whether NVRTC could be loaded at build time (if not, `CUBINS` is empty).")?;
    writeln!(list, "pub const NVRTC_AT_BUILD: bool = {nvrtc};\n")?;
    list.push_str(
        "/// CUBINs compiled at build time for these architectures (`(\"90\", bytes)` = sm_90); a GPU of\n\
         /// another architecture compiles the CUDA source with NVRTC at run time instead.\n\
         pub const CUBINS: &[(&str, &[u8])] = &[\n",
    );
    if !archs.is_empty() {
        if nvrtc {
            let source = std::fs::read_to_string(out_dir.join("circuit.cu"))?;
            for arch in &archs {
                let cubin = pc_runtime::cuda::compile_cubin(&source, "circuit.cu", arch)
                    .map_err(|e| format!("{}: NVRTC for sm_{arch}: {e}", generated.structure.display()))?;
                let file = format!("circuit.sm_{arch}.cubin");
                let path = out_dir.join(&file);
                if std::fs::read(&path).ok().as_deref() != Some(&cubin[..]) {
                    pc_runtime::atomic_write(&path, &cubin)?;
                }
                writeln!(list, "    ({arch:?}, include_bytes!({file:?})),")?;
            }
        } else if explicit {
            println!(
                "cargo:warning=PCC_DEPLOY_ARCHS={}: NVRTC (libnvrtc.so.13) cannot be loaded, so no CUBIN is embedded; \
                 the binary will compile its kernels with NVRTC at run time",
                archs.join(",")
            );
        }
    }
    list.push_str("];\n");
    let path = out_dir.join("circuit_cubins.rs");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(list.as_str()) {
        pc_runtime::atomic_write(&path, list.as_bytes())?;
    }
    Ok(())
}

//! Model directories: `structure.json` (the versioned circuit IR) next to `params.safetensors`
//! (one tensor per parameterized IR node). Every write is atomic; every load is validated.

use std::path::Path;

use pc_runtime::{atomic_write, CpuEngine, Params, Plan};
use serde::{Deserialize, Serialize};

use crate::compile::compile;
use crate::error::ModelError;
use crate::ir::Circuit;
use crate::validate::validate;

/// Version of the structure file format.
pub const STRUCTURE_VERSION: u32 = 1;
const STRUCTURE_TAG: &str = "pcc-structure";
pub const STRUCTURE_FILE: &str = "structure.json";
pub const PARAMS_FILE: &str = "params.safetensors";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StructureFile {
    format: String,
    version: u32,
    circuit: Circuit,
}

/// Write a circuit as a versioned JSON structure file (atomically).
pub fn save_structure(c: &Circuit, path: &Path) -> Result<(), ModelError> {
    let file = StructureFile { format: STRUCTURE_TAG.into(), version: STRUCTURE_VERSION, circuit: c.clone() };
    let text = serde_json::to_string(&file).expect("IR serialization cannot fail");
    Ok(atomic_write(path, text.as_bytes())?)
}

/// Read and validate a structure file.
pub fn load_structure(path: &Path) -> Result<Circuit, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.into(), source: e })?;
    let malformed = |detail: String| ModelError::MalformedStructure { path: path.into(), detail };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(STRUCTURE_TAG) {
        return Err(malformed(format!("not a pcc structure file (expected \"format\": \"{STRUCTURE_TAG}\")")));
    }
    let version = value.get("version").and_then(|v| v.as_u64()).ok_or_else(|| malformed("no \"version\" field".into()))?;
    if version != STRUCTURE_VERSION as u64 {
        return Err(ModelError::UnsupportedVersion { path: path.into(), found: version, supported: STRUCTURE_VERSION });
    }
    let file: StructureFile = serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
    validate(&file.circuit).map_err(|e| ModelError::InvalidCircuit { path: path.into(), source: e })?;
    Ok(file.circuit)
}

/// A circuit, its compiled plan and its parameters.
#[derive(Clone, Debug)]
pub struct Model {
    pub circuit: Circuit,
    pub plan: Plan,
    pub params: Params,
}

impl Model {
    /// Compile `circuit` and attach validated `params` (in the plan's layout).
    pub fn new(circuit: Circuit, params: Params) -> Result<Model, ModelError> {
        let plan = compile(&circuit)?;
        params.validate(&plan)?;
        Ok(Model { circuit, plan, params })
    }

    /// Compile `circuit` with randomly initialized parameters (deterministic for a seed).
    pub fn random(circuit: Circuit, seed: u64) -> Result<Model, ModelError> {
        let plan = compile(&circuit)?;
        let params = Params::random(&plan, seed, 2.0);
        Ok(Model { circuit, plan, params })
    }

    /// A CPU engine over a copy of this model.
    pub fn cpu_engine(&self) -> Result<CpuEngine, ModelError> {
        Ok(CpuEngine::new(self.plan.clone(), self.params.clone())?)
    }

    /// Save into directory `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::Io { path: dir.into(), source: e })?;
        save_structure(&self.circuit, &dir.join(STRUCTURE_FILE))?;
        self.params.save(&self.plan, &dir.join(PARAMS_FILE))?;
        Ok(())
    }

    /// Load a model directory, validating the structure, the tensors' shapes and values.
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        let circuit = load_structure(&dir.join(STRUCTURE_FILE))?;
        let plan = compile(&circuit)?;
        let params = Params::load(&plan, &dir.join(PARAMS_FILE))?;
        Ok(Model { circuit, plan, params })
    }
}

//! Model directories: `structure.json` (the versioned circuit IR) next to `params.safetensors`
//! (one tensor per parameterized IR node). Every write is atomic; every load is validated.

use std::path::Path;

use pc_runtime::{CpuEngine, Params, Plan, atomic_write};
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

/// Metadata key of the parameter file naming its structure's fingerprint.
const STRUCTURE_TAG_KEY: &str = "structure_sha256";

/// SHA-256 (hex) of a circuit's serialized form: the identity of a structure.
pub fn structure_fingerprint(c: &Circuit) -> String {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(c).expect("IR serialization cannot fail");
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Save `params` (of `circuit`, compiled to `plan`) to `path`, tagged with the structure's
/// fingerprint; what [`Model::save`] and `pcc train` write.
pub fn save_params(circuit: &Circuit, plan: &Plan, params: &Params, path: &Path) -> Result<(), ModelError> {
    Ok(params.save_tagged(plan, path, &[(STRUCTURE_TAG_KEY, structure_fingerprint(circuit))])?)
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

    /// Save into directory `dir` (created if needed): the structure, then the parameters tagged
    /// with the structure's fingerprint (so a kill between the two writes leaves a pair that
    /// [`Model::load`] rejects rather than one that evaluates silently).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::Io { path: dir.into(), source: e })?;
        save_structure(&self.circuit, &dir.join(STRUCTURE_FILE))?;
        save_params(&self.circuit, &self.plan, &self.params, &dir.join(PARAMS_FILE))
    }

    /// Load a model directory, validating the structure, the tensors' shapes and values, and
    /// that the parameters were saved for this structure (files written before the fingerprint
    /// existed carry none and load as before).
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        let circuit = load_structure(&dir.join(STRUCTURE_FILE))?;
        let plan = compile(&circuit)?;
        let path = dir.join(PARAMS_FILE);
        let (params, tags) = Params::load_tagged(&plan, &path)?;
        if tags.get(STRUCTURE_TAG_KEY).is_some_and(|f| *f != structure_fingerprint(&circuit)) {
            return Err(pc_runtime::ParamsError::OtherStructure { path }.into());
        }
        Ok(Model { circuit, plan, params })
    }
}

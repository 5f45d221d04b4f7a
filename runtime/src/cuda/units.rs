//! Translation units of a generated source, compiled in parallel. The emitter marks where a unit
//! begins with a [`UNIT_MARKER`] line; the text before the first marker (prelude and shared
//! helpers) is prepended to every unit. Each unit is compiled (or fetched from the cache, keyed
//! by its own text) on its own thread and loaded as its own module; a kernel is looked up in
//! every module. NVRTC time then follows the largest unit, not the whole source: hclt128's
//! source took 6.1 s as one program on two cores, its persistent kernel alone 4.3 s. A source
//! without markers (older emitters, a build script's embedded CUBIN) is one unit.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use super::{CudaError, KernelCache};

/// Starts a line that opens a translation unit; the rest of the line names it.
pub const UNIT_MARKER: &str = "// @pcc-unit ";

/// The unit of the persistent small-batch kernel (compiled in the background by the engine).
pub const PERSISTENT_UNIT: &str = "persistent";

/// A unit's name and full text (shared head included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub source: String,
}

/// The units of `source`, in order (the whole source as one unit `circuit` without markers).
pub fn split_units(source: &str) -> Vec<Unit> {
    let mut starts: Vec<usize> = source.match_indices(UNIT_MARKER).map(|(i, _)| i).filter(|&i| i == 0 || source.as_bytes()[i - 1] == b'\n').collect();
    if starts.is_empty() {
        return vec![Unit { name: "circuit".into(), source: source.to_string() }];
    }
    let head = &source[..starts[0]];
    starts.push(source.len());
    starts
        .windows(2)
        .map(|w| {
            let body = &source[w[0]..w[1]];
            let name = body[UNIT_MARKER.len()..].lines().next().unwrap_or("").trim().to_string();
            Unit { name, source: format!("{head}{body}") }
        })
        .collect()
}

/// CUBINs of `units` for `sm_{arch}` through `cache`, in the units' order, compiled on rayon's
/// threads (one per core: NVRTC programs are independent, and a program takes up to a few hundred
/// MB while it compiles, so not one thread per unit).
pub fn compile_units(cache: &KernelCache, units: &[Unit], arch: &str) -> Result<Vec<Vec<u8>>, CudaError> {
    use rayon::prelude::*;
    units.par_iter().map(|u| cache.get_or_compile(&u.source, &format!("{}.cu", u.name), arch).map(|(c, _)| c)).collect()
}

/// The loaded modules of a source, each with its unit's text when known: a kernel is taken from
/// the module whose unit defines it (` name(`), so no lookup fails (a failed
/// `cuModuleGetFunction` is an API error that compute-sanitizer reports); without texts, from the
/// first module that has it.
pub(crate) struct Modules(Vec<(Option<String>, Arc<CudaModule>)>);

impl Modules {
    pub fn load(ctx: &Arc<CudaContext>, cubins: Vec<(Option<String>, Vec<u8>)>) -> Result<Modules, CudaError> {
        cubins
            .into_iter()
            .map(|(src, c)| ctx.load_module(Ptx::from_binary(c)).map(|m| (src, m)).map_err(CudaError::from))
            .collect::<Result<_, _>>()
            .map(Modules)
    }

    /// Kernel `name` from the module whose unit defines it, else the first module that has it
    /// (the last module's error otherwise).
    pub fn function(&self, name: &str) -> Result<CudaFunction, CudaError> {
        if let Some(f) = self.0.iter().find(|(src, _)| src.as_deref().is_some_and(|s| defines(s, name))).and_then(|(_, m)| m.load_function(name).ok()) {
            return Ok(f);
        }
        let mut last = None;
        for (_, m) in &self.0 {
            match m.load_function(name) {
                Ok(f) => return Ok(f),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or(CudaError::MissingKernels("any"), CudaError::from))
    }
}

/// Whether `source` defines kernel `name` (`name(` after a space, as the templates write it).
fn defines(source: &str, name: &str) -> bool {
    source.match_indices(name).any(|(i, _)| source[..i].ends_with(' ') && source[i + name.len()..].starts_with('('))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_share_the_head_and_keep_their_order() {
        let src = format!("head\n{UNIT_MARKER}a\nk1\n{UNIT_MARKER}b\nk2\nk3\n");
        let u = split_units(&src);
        assert_eq!(u.len(), 2);
        assert_eq!((u[0].name.as_str(), u[0].source.as_str()), ("a", &*format!("head\n{UNIT_MARKER}a\nk1\n")));
        assert_eq!((u[1].name.as_str(), u[1].source.as_str()), ("b", &*format!("head\n{UNIT_MARKER}b\nk2\nk3\n")));
        assert!(defines("void __launch_bounds__(128) k_1(int", "k_1") && !defines("void k_10(int", "k_1") && !defines("x_k_1(", "k_1"));
        // Without markers: the whole source; a marker inside a line does not count.
        assert_eq!(split_units("x // @pcc-unit y\n"), vec![Unit { name: "circuit".into(), source: "x // @pcc-unit y\n".into() }]);
    }
}

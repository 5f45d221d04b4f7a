//! Ahead-of-time paths: the `circuit!` macro, the builder (compile + emit at run time) and the
//! build-script API (`pc_codegen::build::Config`) give the identical plan, manifest and CUDA source
//! for the same circuit; templates in the macro match `pc_codegen::structures`; build-script
//! errors name the file; unchanged outputs are not rewritten.

use std::path::Path;

use pcc::codegen::aot::{Embed, ModuleSpec, module_source};
use pcc::codegen::build::{BuildError, Config};
use pcc::codegen::emit::emit;
use pcc::codegen::pipeline::{self, Options, Precision};
use pcc::codegen::structures::{hmm, pd};
use pcc::codegen::{Circuit, CircuitBuilder, Dist, Model, SumEdges, compile};
use pcc::runtime::Evidence;

pcc::circuit! {
    name: tiny, vars: 4,
    x0 = categorical(var 0, states 4, blocks 2, block 4);
    x1 = bernoulli(var 1, blocks 2, block 4);
    x2 = gaussian(var 2, blocks 2, block 4, min_sigma 0.05);
    x3 = categorical(var 3, tie x0);
    a  = product(x0, x1);
    b  = product(x2, x3);
    sa = sum(a; blocks 2, block 4, edges diagonal);
    sb = sum(b; tie sa);
    p  = product(sa, sb);
    q  = product(sa, sb; edges [[0, 1], [1, 0]]);
    top = sum(p, q; block 1, edges [(0, 0), (0, 1), (0, 2), (0, 3)]);
    root top;
}

/// The same circuit as `tiny`, through the builder.
fn tiny_circuit() -> Circuit {
    let mut b = CircuitBuilder::new(4);
    let x0 = b.inputs(0, 2, 4, Dist::Categorical { num_cats: 4 });
    let x1 = b.inputs(1, 2, 4, Dist::Bernoulli);
    let x2 = b.inputs(2, 2, 4, Dist::Gaussian { min_sigma: 0.05 });
    let x3 = b.tied_inputs(x0, 3);
    let a = b.multiply(&[x0, x1]);
    let bb = b.multiply(&[x2, x3]);
    let sa = b.summate(&[a], 2, 4, SumEdges::BlockDiagonal);
    let sb = b.tied_summate(sa, &[bb]);
    let p = b.multiply(&[sa, sb]);
    let q = b.multiply_with_edges(&[sa, sb], vec![vec![0, 1], vec![1, 0]]);
    let top = b.summate(&[p, q], 1, 1, SumEdges::List(vec![[0, 0], [0, 1], [0, 2], [0, 3]]));
    b.finish(top).unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn macro_and_builder_give_the_same_plan_manifest_and_source() {
    let plan = compile(&tiny_circuit()).unwrap();
    let emitted = emit(&plan).unwrap();
    assert_eq!(tiny::PLAN_JSON, plan.to_json());
    assert_eq!(tiny::CUDA_SOURCE, emitted.source);
    assert_eq!(tiny::MANIFEST_JSON, emitted.manifest.to_json());
    assert_eq!(tiny::plan(), plan);
    assert_eq!(tiny::manifest(), emitted.manifest);
    assert_eq!(tiny::NUM_VARS, 4);
    assert_eq!(tiny::NUM_SUM_EDGES, plan.num_sum_edges());
    assert_eq!(tiny::NUM_PARAMS, plan.num_learnable_params());
}

#[test]
fn build_script_and_builder_give_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("tiny-model");
    Model::random(tiny_circuit(), 3).unwrap().save(&model_dir).unwrap();
    let out = dir.path().join("out");
    let g = Config::new().out_dir(&out).cargo_metadata(false).compile(&model_dir).unwrap();
    assert_eq!(g.module, "tiny_model", "named after the directory, `-` replaced");
    assert_eq!(g.rust_file, out.join("tiny_model.rs"));
    assert_eq!(g.written, g.files, "a first run writes every file");

    let plan = compile(&tiny_circuit()).unwrap();
    let emitted = emit(&plan).unwrap();
    assert_eq!(read(&out.join("tiny_model.plan.json")), plan.to_json());
    assert_eq!(read(&out.join("tiny_model.manifest.json")), emitted.manifest.to_json());
    assert_eq!(read(&out.join("tiny_model.cu")), emitted.source);
    // The build-script files are the macro's embedded strings, byte for byte.
    assert_eq!(read(&out.join("tiny_model.plan.json")), tiny::PLAN_JSON);
    assert_eq!(read(&out.join("tiny_model.cu")), tiny::CUDA_SOURCE);
    assert_eq!(read(&out.join("tiny_model.manifest.json")), tiny::MANIFEST_JSON);

    // The Rust file is the shared generator's text, with the data in files next to it.
    let origin = format!("`{}`", model_dir.join("structure.json").display());
    let spec = ModuleSpec { name: "tiny_model", runtime: "::pc_runtime", origin: &origin };
    let files = Embed::Files { plan: "tiny_model.plan.json", manifest: "tiny_model.manifest.json", cuda: "tiny_model.cu", cubins: &[] };
    let rust = read(&g.rust_file);
    assert_eq!(rust, module_source(&spec, &pipeline::run(&tiny_circuit(), &Options::default()).unwrap(), files));
    assert!(rust.contains("include_str!(\"tiny_model.cu\")"), "{rust}");
    assert!(!rust.contains("pc_codegen") && !rust.contains("tera") && !rust.contains("syn::"), "runtime-only code");

    // Unchanged outputs are not rewritten (no rebuild loops); a changed one is.
    let again = Config::new().out_dir(&out).cargo_metadata(false).compile(&model_dir).unwrap();
    assert!(again.written.is_empty(), "{:?}", again.written);
    std::fs::write(out.join("tiny_model.cu"), "stale").unwrap();
    let again = Config::new().out_dir(&out).cargo_metadata(false).compile(&model_dir).unwrap();
    assert_eq!(again.written, vec![out.join("tiny_model.cu")]);

    // Options: module name, runtime path, a structure file instead of a directory.
    let g = Config::new()
        .out_dir(&out)
        .cargo_metadata(false)
        .module_name("renamed")
        .runtime_path("::pcc::runtime")
        .compile(model_dir.join("structure.json"))
        .unwrap();
    let rust = read(&g.rust_file);
    assert!(rust.contains("pub mod renamed {") && rust.contains("use ::pcc::runtime as __rt;"), "{rust}");
}

#[test]
fn macro_module_loads_parameters_saved_by_the_builder_path() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::random(tiny_circuit(), 5).unwrap();
    model.save(dir.path()).unwrap();
    let params = dir.path().join("params.safetensors");
    let engine = tiny::Circuit::load_cpu(&params).unwrap();
    let ev = Evidence::with_missing(4, vec![1.0, 0.0, 0.3, 2.0, 3.0, 1.0, -0.4, 0.0], None).unwrap();
    assert_eq!(engine.log_likelihood(&ev).unwrap(), model.cpu_engine().unwrap().log_likelihood(&ev).unwrap());
    let c = tiny::Circuit::load(&params).unwrap();
    assert_eq!(c.params(), &model.params);
    let copy = dir.path().join("copy.safetensors");
    c.save_params(&copy).unwrap();
    assert_eq!(tiny::Circuit::load(&copy).unwrap().params(), &model.params);
    assert_eq!(tiny::Circuit::from_params(model.params.clone()).unwrap().params(), &model.params);
    let random = tiny::Circuit::random(1);
    assert!(random.cpu().unwrap().log_likelihood(&ev).unwrap().iter().all(|l| l.is_finite()));
    // A parameter file of another circuit is rejected with the runtime's typed error.
    let other = dir.path().join("other");
    Model::random(hmm::build(&hmm::HmmOptions { seq_length: 4, hidden: 4, num_emits: 3, ..Default::default() }).unwrap(), 1).unwrap().save(&other).unwrap();
    assert!(tiny::Circuit::load(other.join("params.safetensors")).is_err());
}

pcc::circuit! { name: pd44, template: pd(shape = (4, 4), latents = 8, input = bernoulli, max_prod_block_conns = 2, seed = 7) }
pcc::circuit! { name: pd_binomial, template: pd(shape = (2, 2), latents = 4, input = binomial(6)) }

pcc::circuit! {
    name: counts, vars: 3,
    x0 = binomial(var 0, trials 4, blocks 2, block 2);
    x1 = binomial(var 1, tie x0, trials 4);
    x2 = bernoulli(var 2, blocks 2, block 2);
    p  = product(x0, x1, x2);
    s  = sum(p; block 1);
    root s;
}

/// Binomial leaves in `circuit!`: the keyword with its `trials` (also tied, and as a template's
/// `input = binomial(N)`) gives the builder's circuit.
#[test]
fn the_macro_declares_binomial_leaves() {
    let mut b = CircuitBuilder::new(3);
    let x0 = b.inputs(0, 2, 2, Dist::Binomial { num_trials: 4 });
    let x1 = b.tied_inputs(x0, 1);
    let x2 = b.inputs(2, 2, 2, Dist::Bernoulli);
    let p = b.multiply(&[x0, x1, x2]);
    let s = b.summate(&[p], 1, 1, SumEdges::Dense);
    let plan = compile(&b.finish(s).unwrap()).unwrap();
    assert_eq!(counts::PLAN_JSON, plan.to_json());
    assert_eq!(counts::CUDA_SOURCE, emit(&plan).unwrap().source);
    let ev = Evidence::new(3, vec![0.0, 4.0, 1.0, 2.0, 3.0, 0.0]).unwrap();
    assert!(counts::Circuit::random(2).cpu().unwrap().log_likelihood(&ev).unwrap().iter().all(|l| l.is_finite()));

    let opts = pd::PdOptions { height: 2, width: 2, latents: 4, input: Dist::Binomial { num_trials: 6 }, ..Default::default() };
    assert_eq!(pd_binomial::PLAN_JSON, compile(&pd::build(&opts).unwrap()).unwrap().to_json());
}
pcc::circuit! { name: hmm6, vars: 6, template: hmm(seq_length = 6, hidden = 8, num_emits = 5, homogeneous = true) }

pcc::circuit! { name: pd44_bf16, precision: bf16, template: pd(shape = (4, 4), split_intervals = (2, 2), latents = 16, input = bernoulli, seed = 7) }

/// The macro's `precision` header and the build script's `Config::precision` reach the emitter
/// through the one pipeline: the same bf16 kernels as `pcc --precision bf16`.
#[test]
fn macro_and_build_script_accept_a_precision() {
    let opts = pd::PdOptions { height: 4, width: 4, split_intervals: (2, 2), latents: 16, input: Dist::Bernoulli, seed: 7, ..Default::default() };
    let circuit = pd::build(&opts).unwrap();
    let bf16 = pipeline::run(&circuit, &Options { precision: Precision::Bf16, ..Options::default() }).unwrap();
    assert!(bf16.manifest.forward.iter().any(|k| k.name.starts_with("sum_fwd_bf16_")), "tensor-core launches");
    assert_eq!(pd44_bf16::CUDA_SOURCE, bf16.cuda_source);
    assert_eq!(pd44_bf16::MANIFEST_JSON, bf16.manifest_json());
    assert_eq!(bf16.manifest.precision, Precision::Bf16);

    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("pd44");
    Model::random(circuit, 1).unwrap().save(&model_dir).unwrap();
    let out = dir.path().join("out");
    Config::new().out_dir(&out).cargo_metadata(false).precision(Precision::Bf16).compile(&model_dir).unwrap();
    assert_eq!(read(&out.join("pd44.cu")), bf16.cuda_source);
    assert_eq!(read(&out.join("pd44.manifest.json")), bf16.manifest_json());
}

#[test]
fn macro_templates_match_the_structures() {
    let opts = pd::PdOptions { height: 4, width: 4, latents: 8, input: Dist::Bernoulli, max_prod_block_conns: 2, seed: 7, ..Default::default() };
    let plan = compile(&pd::build(&opts).unwrap()).unwrap();
    let emitted = emit(&plan).unwrap();
    assert_eq!(pd44::PLAN_JSON, plan.to_json());
    assert_eq!(pd44::CUDA_SOURCE, emitted.source);
    assert_eq!(pd44::MANIFEST_JSON, emitted.manifest.to_json());

    let opts = hmm::HmmOptions { seq_length: 6, hidden: 8, num_emits: 5, homogeneous: true, block_size: None };
    let plan = compile(&hmm::build(&opts).unwrap()).unwrap();
    assert_eq!(hmm6::PLAN_JSON, plan.to_json());
    assert_eq!(hmm6::CUDA_SOURCE, emit(&plan).unwrap().source);
}

#[test]
fn build_script_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = || {
        let mut c = Config::new();
        c.out_dir(&out).cargo_metadata(false);
        c
    };
    let missing = dir.path().join("nope");
    let e = cfg().compile(&missing).unwrap_err();
    assert!(matches!(e, BuildError::Structure(_)) && e.to_string().contains("nope"), "{e}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"format\": \"pcc-structure\"").unwrap();
    let e = cfg().compile(&bad).unwrap_err();
    assert!(e.to_string().contains("bad.json") && e.to_string().contains("malformed"), "{e}");

    let m = dir.path().join("3d-model");
    Model::random(tiny_circuit(), 1).unwrap().save(&m).unwrap();
    let e = cfg().compile(&m).unwrap_err();
    assert!(matches!(&e, BuildError::BadModuleName { name, .. } if name == "3d_model"), "{e}");
    assert!(cfg().module_name("model3d").compile(&m).is_ok());

    let e = Config::new().cargo_metadata(false).module_name("x").compile(&m);
    if std::env::var_os("OUT_DIR").is_none() {
        assert!(matches!(e, Err(BuildError::NoOutDir)), "{e:?}");
    }
}

#[test]
fn generated_rust_snapshot() {
    let mut b = CircuitBuilder::new(2);
    let x = b.inputs(0, 1, 2, Dist::Categorical { num_cats: 3 });
    let y = b.inputs(1, 1, 2, Dist::Bernoulli);
    let p = b.multiply(&[x, y]);
    let root = b.summate(&[p], 1, 1, SumEdges::Dense);
    let a = pipeline::run(&b.finish(root).unwrap(), &Options::default()).unwrap();
    let spec = ModuleSpec { name: "mix", runtime: "::pc_runtime", origin: "`models/mix/structure.json`" };
    insta::assert_snapshot!(module_source(&spec, &a, Embed::Files { plan: "mix.plan.json", manifest: "mix.manifest.json", cuda: "mix.cu", cubins: &[] }));
}

#[test]
fn embedded_cuda_compiles_with_nvrtc() {
    use pcc::runtime::cuda::{compile_cubin, nvrtc_available};
    if !nvrtc_available() {
        eprintln!("note: NVRTC not found (source .ci/nvrtc.sh); skipping the compile check of the embedded CUDA");
        return;
    }
    for (name, src) in [("tiny.cu", tiny::CUDA_SOURCE), ("pd44.cu", pd44::CUDA_SOURCE)] {
        let cubin = compile_cubin(src, name, "90").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!cubin.is_empty(), "{name}");
    }
}

#[test]
fn build_script_embeds_cubins_when_nvrtc_is_available() {
    use pcc::runtime::cuda::nvrtc_available;
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("tiny");
    Model::random(tiny_circuit(), 3).unwrap().save(&model_dir).unwrap();
    let out = dir.path().join("out");
    let bad = Config::new().out_dir(&out).cargo_metadata(false).cubin_archs(["sm_9.0"]).compile(&model_dir).unwrap_err();
    assert!(bad.to_string().contains("`9.0` is not a GPU architecture"), "{bad}");
    if !nvrtc_available() {
        assert!(std::env::var("CI").is_err(), "CI must have NVRTC (.ci/nvrtc.sh)");
        eprintln!("note: NVRTC not found (source .ci/nvrtc.sh); skipping the CUBIN embedding check");
        return;
    }
    let g = Config::new().out_dir(&out).cargo_metadata(false).cubin_archs(["sm_90", "90", "80"]).compile(&model_dir).unwrap();
    assert_eq!(g.cubins, ["90", "80"], "deduplicated, `sm_` stripped, in order");
    for arch in ["90", "80"] {
        let file = out.join(format!("tiny.sm_{arch}.cubin"));
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF", "{} is a CUBIN", file.display());
        assert!(g.files.contains(&file));
    }
    let rust = read(&g.rust_file);
    assert!(rust.contains(r#"("90", include_bytes!("tiny.sm_90.cubin"))"#), "{rust}");
    assert!(rust.contains("GpuEngine::with_cubins"), "the module's gpu() loads the embedded CUBINs first");
    // Without architectures the module embeds none.
    let g = Config::new().out_dir(&out).cargo_metadata(false).compile(&model_dir).unwrap();
    assert!(g.cubins.is_empty() && read(&g.rust_file).contains("pub const CUBINS: &[(&str, &[u8])] = &[];"));
}

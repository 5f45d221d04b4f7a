//! The categorical leaves' forward by leaf rows (`templates/input_cat_fwd_rows.cu.tera`: a warp
//! per leaf, its log-probabilities once in shared memory), against the per-sample kernel it
//! replaces above the small batches (`input_fwd.cu.tera`, the launch's `small` variant): the
//! emitter's launch (same arguments, a warp per leaf, the per-sample kernel as its small-batch
//! variant, `PCC_LEAF_FWD=sample` to go back), a spill-free sm_90 compile, and both kernels'
//! generated CUDA compiled for the host and run over the manifest's own tables, the row kernel
//! with every CUDA thread an OS thread (`__syncwarp` a warp barrier). Every leaf row must equal
//! the per-sample kernel's bit for bit: hard evidence with missing values, data softening and
//! dense soft evidence; batches below and above the categories, a multiple of 4 (the 16-byte
//! path) and not; circuits whose variables have different category counts (rows shorter than
//! the shared row).

use pcc::codegen::emit::emit;
use pcc::codegen::structures::hmm;
use pcc::codegen::{Circuit, compile};
use pcc::runtime::cuda::{KernelSpec, Manifest, compile_cubin_verbose, nvrtc_available};
use pcc_testkit::Gen;
use pcc_testkit::host_cuda::{
    DRIVER_PRELUDE, THREADED_SHIM, XorShift, build_threaded, device_fn_text, host_cxx, kernel_text, manifest_table, read_f32, write_f32, write_u32,
};

/// What the two kernels need besides the threaded shim: the prelude's constant and index split,
/// the categorical log-probability (from the source) and CUDA's math built-ins.
const EXTRA: &str = r#"
#include <cmath>
static inline float __int_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline float pcc_host_expf(float x) { return expf(x); }
#define __expf pcc_host_expf
#define PCC_NEG_INF __int_as_float(0xff800000)
"#;

fn rows_launch(m: &Manifest) -> KernelSpec {
    m.forward.iter().find(|k| k.name.starts_with("input_categorical_fwd_rows")).cloned().expect("the row launch")
}

/// Both kernels of `c`'s categorical layer on the host over batches of several sizes and the
/// three evidence modes; every leaf row bit for bit equal.
fn rows_equal_per_sample(c: &Circuit, seed: u64) {
    let plan = compile(c).unwrap();
    let e = emit(&plan).unwrap();
    let rows = rows_launch(&e.manifest);
    let per = rows.small.as_deref().expect("the per-sample kernel is the small-batch variant").clone();
    assert!(per.name.starts_with("input_categorical_fwd") && per.scales_with_batch, "{per:?}");
    assert_eq!(rows.args, per.args, "the same arguments");
    assert!(!rows.scales_with_batch && rows.threads_per_sample == (rows.count as u64).div_ceil(8) * 256, "a warp per leaf: {rows:?}");
    let Some(cxx) = host_cxx() else { return };
    let m = &e.manifest;
    let (ids, vars, cslot, ncats, soft_off) = (
        manifest_table(m, &rows.args[4]),
        manifest_table(m, &rows.args[5]),
        manifest_table(m, &rows.args[6]),
        manifest_table(m, &rows.args[7]),
        manifest_table(m, &rows.args[10]),
    );
    let n_vars = plan.num_vars as usize;
    let n_nodes = plan.num_nodes as usize;
    let mut cats = vec![1u32; n_vars];
    for (&v, &k) in vars.iter().zip(&ncats) {
        cats[v as usize] = k;
    }
    let soft_rows = soft_off.iter().zip(&ncats).map(|(&o, &k)| (o + k) as usize).max().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let launch_args =
        "nodes.data(), data.data(), missing.data(), c.data(), ids.data(), vars.data(), cslot.data(), ncats.data(), &keep, soft.data(), soft_off.data()";
    let driver = format!(
        r#"
int main(int argc, char** argv) {{
    const std::string d = argv[1];
    const int B = atoi(argv[2]);
    const float keep = (float)atof(argv[3]);
    auto data = rd<float>(d + "/data"); auto c = rd<float>(d + "/c"); auto soft = rd<float>(d + "/soft");
    auto missing = rd<unsigned char>(d + "/missing");
    auto ids = rd<u32>(d + "/ids"); auto vars = rd<u32>(d + "/vars"); auto cslot = rd<u32>(d + "/cslot");
    auto ncats = rd<u32>(d + "/ncats"); auto soft_off = rd<u32>(d + "/soft_off");
    std::vector<float> nodes((size_t){n_nodes} * B, 7.f);
    LAUNCH({per}, {per_threads}LL * B, {launch_args}, {count}, B);
    FILE* f = fopen((d + "/want").c_str(), "wb"); fwrite(nodes.data(), 4, nodes.size(), f); fclose(f);
    std::fill(nodes.begin(), nodes.end(), 7.f);
    LAUNCH_T({rows}, {rows_threads}LL, {launch_args}, {count}, B);
    f = fopen((d + "/got").c_str(), "wb"); fwrite(nodes.data(), 4, nodes.size(), f); fclose(f);
}}
"#,
        per = per.name,
        per_threads = per.threads_per_sample,
        rows = rows.name,
        rows_threads = rows.threads_per_sample,
        count = rows.count,
    );
    let src = format!(
        "{THREADED_SHIM}{EXTRA}{DRIVER_PRELUDE}{}\n{}\n{}\n{}\n{driver}",
        device_fn_text(&e.source, "pcc_split"),
        device_fn_text(&e.source, "pcc_categorical_logp"),
        kernel_text(&e.source, &per.name),
        kernel_text(&e.source, &rows.name)
    );
    let exe = build_threaded(&cxx, d, &src, "leaf rows");
    for (name, t) in [("ids", &ids), ("vars", &vars), ("cslot", &cslot), ("ncats", &ncats), ("soft_off", &soft_off)] {
        write_u32(&d.join(name), t);
    }
    let mut rng = XorShift(seed | 1);
    let n_consts = plan.num_input_params as usize;
    for batch in [3usize, 37, 300, 516] {
        // Probabilities, some tiny (logarithms far below 0).
        let consts: Vec<f32> = (0..n_consts).map(|_| if rng.unit() < 0.1 { 1e-30 } else { rng.unit() + 1e-3 }).collect();
        // Skewed categories (MNIST's zeros) and every category somewhere.
        let data: Vec<f32> = (0..n_vars * batch).map(|i| if rng.unit() < 0.4 { 0.0 } else { (rng.next_u64() % cats[i / batch] as u64) as f32 }).collect();
        let missing: Vec<u8> = (0..n_vars * batch).map(|_| u8::from(rng.unit() < 0.15)).collect();
        let soft: Vec<f32> = (0..soft_rows * batch).map(|_| if rng.unit() < 0.3 { 0.0 } else { rng.unit() }).collect();
        write_f32(&d.join("c"), &consts);
        write_f32(&d.join("data"), &data);
        std::fs::write(d.join("missing"), &missing).unwrap();
        write_f32(&d.join("soft"), &soft);
        for keep in ["1", "0.9", "0", "-1"] {
            let st = std::process::Command::new(&exe).arg(d).arg(batch.to_string()).arg(keep).output().unwrap();
            assert!(st.status.success(), "B={batch} keep {keep}: {} {}", st.status, String::from_utf8_lossy(&st.stderr));
            let (want, got) = (read_f32(&d.join("want")), read_f32(&d.join("got")));
            let mut finite = 0;
            for &id in &ids {
                for b in 0..batch {
                    let (w, g) = (want[id as usize * batch + b], got[id as usize * batch + b]);
                    assert_eq!(w.to_bits(), g.to_bits(), "B={batch} keep {keep}: node {id} sample {b}: {g} vs the per-sample kernel's {w}");
                    finite += usize::from(w.is_finite() && w != 0.0);
                }
            }
            assert!(finite > ids.len() * batch / 2, "B={batch} keep {keep}: mostly computed values ({finite})");
            let others = (0..n_nodes).filter(|n| !ids.contains(&(*n as u32))).flat_map(|n| &got[n * batch..(n + 1) * batch]);
            assert!(others.into_iter().all(|&v| v == 7.0), "B={batch} keep {keep}: only leaf rows written");
        }
    }
}

/// One test: the switch below changes the process's environment, which every emission reads.
#[test]
fn row_kernel_compiles_equals_the_per_sample_kernel_and_can_be_switched_off() {
    compiles_without_spills_and_switches_off();
    equals_the_per_sample_kernel_on_host_threads();
}

fn equals_the_per_sample_kernel_on_host_threads() {
    // 96 leaves of 70 categories per variable: twelve warps' CUDA blocks, one partly filled.
    let hmm = hmm::build(&hmm::HmmOptions { seq_length: 4, hidden: 96, num_emits: 70, homogeneous: false, block_size: Some(32) }).unwrap();
    rows_equal_per_sample(&hmm, 11);
    // Random circuits: variables of different category counts (and Bernoulli ones elsewhere).
    let mut tested = 0;
    for seed in 0..40 {
        let c = Gen::circuit(seed);
        let plan = compile(&c).unwrap();
        let e = emit(&plan).unwrap();
        if e.manifest.forward.iter().any(|k| k.name.starts_with("input_categorical_fwd_rows")) {
            let ncats = manifest_table(&e.manifest, &rows_launch(&e.manifest).args[7]);
            if ncats.iter().any(|&k| k != ncats[0]) {
                rows_equal_per_sample(&c, seed);
                tested += 1;
            }
        }
        if tested == 2 {
            break;
        }
    }
    assert_eq!(tested, 2, "two random circuits with mixed category counts");
}

fn compiles_without_spills_and_switches_off() {
    let c = hmm::build(&hmm::HmmOptions { seq_length: 3, hidden: 40, num_emits: 256, homogeneous: false, block_size: Some(8) }).unwrap();
    let plan = compile(&c).unwrap();
    let e = emit(&plan).unwrap();
    let rows = rows_launch(&e.manifest);
    assert_eq!(rows.name, "input_categorical_fwd_rows_k256");
    if nvrtc_available() {
        let (_, log) = compile_cubin_verbose(&e.source, "rows.cu", "90").unwrap();
        let lines = pcc_testkit::ptxas_lines(&log);
        assert!(lines.iter().any(|(k, _)| k.starts_with("input_categorical_fwd_rows")), "ptxas reports the kernel");
        for (kernel, line) in lines {
            assert!(!kernel.starts_with("input_categorical_fwd_rows") || !pcc_testkit::spills(line), "{kernel}: {line}");
        }
    } else {
        eprintln!("note: NVRTC not found (source .ci/nvrtc.sh); the kernel was not compiled for sm_90");
    }
    // SAFETY: this binary's only test runs on one thread, and nothing else of it reads the
    // environment meanwhile.
    unsafe { std::env::set_var("PCC_LEAF_FWD", "sample") };
    let off = emit(&plan).unwrap();
    // SAFETY: as above.
    unsafe { std::env::remove_var("PCC_LEAF_FWD") };
    assert!(!off.source.contains("input_categorical_fwd_rows"), "PCC_LEAF_FWD=sample: the per-sample kernel only");
    assert!(off.manifest.forward.iter().any(|k| k.name == "input_categorical_fwd" && k.small.is_none()));
}

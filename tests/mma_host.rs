//! The tensor-core training pass on the host: a bf16/tf32 manifest's packing, forward and backward
//! launches (two-kernel and one-kernel sum forwards, staged and register-staged flows, the
//! categorical statistics, products, leaves) with their generated CUDA compiled for the host by
//! `pcc_testkit::host_mma` (every CUDA thread an OS thread; `mma.sync`, `ldmatrix`, `cp.async`
//! and the conversions emulated per the PTX ISA) and run over the manifest's own tables, against
//! the CPU engine: root log-likelihoods within the GPU self-check's forward bound, sum-parameter
//! flows and leaf statistics within its flow bounds. So the kernels' own text, not a
//! transcription, is checked without a GPU: an HCLT (two-kernel forward, staged backward), a PD
//! with merged regions and sparse blocks (one-kernel forward, register-staged backward), at
//! batches that are and are not a multiple of the tiles, with missing values.
//!
//! Its own test binary: `PCC_MERGE_ROWS`, `PCC_CAT_STATS`, `PCC_FWD_GEMM` and `PCC_PD_CUTS` are process-wide
//! switches, and the opt-in variants run here too (one test, in turn).

use pcc::codegen::Model;
use pcc::codegen::emit::{EmitOptions, Precision, emit_with};
use pcc::codegen::structures::{hclt, pd};
use pcc::codegen::{Circuit, Dist};
use pcc::runtime::Evidence;
use pcc::runtime::cuda::{KernelArg, KernelSpec, Manifest, Step};
use pcc_testkit::host_cuda::{DRIVER_PRELUDE, THREADED_SHIM, build_threaded, host_cxx, read_f32, write_f32, write_u32};
use pcc_testkit::host_mma::{MMA_SHIM, host_source};

fn arg(a: &KernelArg, k: &KernelSpec) -> String {
    match a {
        KernelArg::Nodes => "nodes.data()".into(),
        KernelArg::Elements => "elems.data()".into(),
        KernelArg::NodeFlows => "nflow.data()".into(),
        KernelArg::ElementFlows => "eflow.data()".into(),
        KernelArg::SumMax => "smax.data()".into(),
        KernelArg::XStage => "xs.data()".into(),
        KernelArg::Data => "data.data()".into(),
        KernelArg::Missing => "missing.data()".into(),
        KernelArg::InputParams => "prm.data()".into(),
        KernelArg::SoftenKeep => "&keep".into(),
        KernelArg::SoftProbs => "&no_soft".into(),
        KernelArg::SumParams => "sum.data()".into(),
        KernelArg::LeafTable => "table.data()".into(),
        KernelArg::SumFlows => "sflow.data()".into(),
        KernelArg::PackedWeights => "packed.data()".into(),
        KernelArg::InputStats => "stats.data()".into(),
        KernelArg::LeafMass => "mass.data()".into(),
        KernelArg::Table(i) => format!("tab[{i}].data()"),
        KernelArg::Batch => "B".into(),
        KernelArg::Count => format!("{}", k.count),
        KernelArg::Int(v) => format!("{v}"),
        other => panic!("no training launch binds {other:?}"),
    }
}

/// `LAUNCH_B` of `k` with its grid for the run's batch `B` (`KernelSpec::threads`).
fn launch(k: &KernelSpec) -> String {
    let threads = match k.scales_with_batch {
        true => format!("{}LL * ((B + {g} - 1) / {g})", k.threads_per_sample, g = k.batch_group.max(1)),
        false => format!("{}LL", k.threads_per_sample),
    };
    let args: Vec<String> = k.args.iter().map(|a| arg(a, k)).collect();
    format!("    LAUNCH_B({}, {}, {threads}, {});\n", k.name, k.block, args.join(", "))
}

fn driver(model: &Model, m: &Manifest) -> String {
    let plan = &model.plan;
    let packs: String = m.em.iter().filter(|k| k.name.ends_with("_pack")).map(launch).collect();
    let fwd: String = m.forward.iter().map(launch).collect();
    let bwd: String = m
        .backward
        .iter()
        .map(|s| match s {
            Step::ZeroElementFlows => "    std::fill(eflow.begin(), eflow.end(), 0.f);\n".into(),
            Step::Launch(k) => launch(k),
        })
        .collect();
    let (nn, ne, nde, ndn, root) = (plan.num_nodes, plan.num_elements, plan.num_dummy_elements, plan.num_dummy_nodes, plan.root);
    let (nsp, nif, rows, xw, pw, ntab) =
        (plan.num_sum_params.max(1), plan.num_input_flows.max(1), m.sum_max_rows.max(1), m.x_words.max(1), m.packed_words.max(1), m.tables.len());
    format!(
        r#"{DRIVER_PRELUDE}
static void wr(const std::string& path, const std::vector<float>& v) {{
    FILE* f = fopen(path.c_str(), "wb"); fwrite(v.data(), 4, v.size(), f); fclose(f);
}}
int main(int argc, char** argv) {{
    const std::string dir = argv[1];
    const int B = atoi(argv[2]);
    const float keep = 1.f, no_soft = 0.f;
    std::vector<std::vector<unsigned>> tab;
    for (int i = 0; i < {ntab}; ++i) tab.push_back(rd<unsigned>(dir + "/tab" + std::to_string(i)));
    std::vector<float> sum = rd<float>(dir + "/sum"), prm = rd<float>(dir + "/prm"), table = rd<float>(dir + "/table");
    std::vector<float> data = rd<float>(dir + "/data");
    std::vector<unsigned char> missing = rd<unsigned char>(dir + "/missing");
    std::vector<float> nodes((size_t){nn} * B, 0.f), elems((size_t){ne} * B, 0.f), nflow((size_t){nn} * B, 0.f), eflow((size_t){ne} * B, 0.f);
    for (size_t i = 0; i < (size_t){nde} * B; ++i) elems[i] = PCC_NEG_INF;
    (void){ndn};
    std::vector<float> smax((size_t){rows} * B, 0.f), sflow({nsp}, 0.f), stats({nif}, 0.f), mass({nn}, 0.f), root(B);
    std::vector<u32> xs((size_t){xw} * B, 0u), packed({pw}, 0u);
{packs}{fwd}    for (int b = 0; b < B; ++b) root[b] = nodes[(size_t){root} * B + b];
    wr(dir + "/root", root);
    wr(dir + "/nodes", nodes);
    for (int b = 0; b < B; ++b) nflow[(size_t){root} * B + b] = 1.f;
{bwd}    wr(dir + "/sflow", sflow);
    wr(dir + "/stats", stats);
    for (float v : mass) if (v != 0.f) {{ fprintf(stderr, "leaf mass left behind\n"); return 4; }}
}}
"#
    )
}

/// Deterministic evidence: categories from a hash, 10% missing.
fn evidence(model: &Model, n: usize, seed: u64) -> Evidence {
    pcc_testkit::random_evidence(model, n, 0.1, seed)
}

/// The training pass of `model` at `precision` on host threads against the CPU engine, at each
/// batch size; `what` names the case. Returns the kernel names it ran.
fn check(what: &str, model: &Model, precision: Precision, batches: &[usize]) -> Vec<String> {
    let e = emit_with(&model.plan, &EmitOptions { precision }).unwrap();
    let Some(cxx) = host_cxx() else { return Vec::new() };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, t) in e.manifest.tables.iter().enumerate() {
        write_u32(&d.join(format!("tab{i}")), t);
    }
    write_f32(&d.join("sum"), &model.params.sum);
    write_f32(&d.join("prm"), &model.params.input);
    write_f32(&d.join("table"), &model.params.leaf_table(&model.plan));
    let src = format!("{THREADED_SHIM}{MMA_SHIM}{}{}", host_source(&e.source), driver(model, &e.manifest));
    let exe = build_threaded(&cxx, d, &src, what);
    // Tighter than the GPU self-check's bounds (2e-3; 3e-2 and 5e-3), which cover MNIST-sized
    // models: these small ones stay well inside them (bf16 ~2e-4 and ~2e-3, tf32 ~2e-5 and ~2e-4),
    // and a swapped pair of children in a fragment costs ~4e-2.
    // Sum nodes near the leaves have |value| of a few nats, where the rounding shows more.
    let (ll_bound, node_bound, flow_bound) = match precision {
        Precision::Bf16 => (1e-3, 5e-3, 6e-3),
        _ => (1e-4, 5e-4, 1e-3),
    };
    for &b in batches {
        let ev = evidence(model, b, 17 + b as u64);
        let (data, missing) = ev.transposed();
        write_f32(&d.join("data"), &data);
        std::fs::write(d.join("missing"), &missing).unwrap();
        let st = std::process::Command::new(&exe).arg(d).arg(b.to_string()).output().unwrap();
        assert!(st.status.success(), "{what} B={b}: {} {}", st.status, String::from_utf8_lossy(&st.stderr));
        let mut cpu = model.cpu_engine().unwrap();
        let want = cpu.accumulate_flows(&ev, None).unwrap();
        let got = read_f32(&d.join("root"));
        let close = |g: f32, w: f32| match (g.is_finite(), w.is_finite()) {
            (true, true) => (g as f64 - w as f64).abs() / (w.abs() as f64).max(1.0),
            _ if g == w => 0.0,
            _ => f64::INFINITY,
        };
        let ll = got.iter().zip(&want).map(|(g, w)| close(*g, *w)).fold(0.0, f64::max);
        // Every sum node's value (a wrong scale in one block shows here before it fades in the root).
        let trace = cpu.trace(&ev, None).unwrap();
        let nodes = read_f32(&d.join("nodes"));
        let sums = model.plan.depths.iter().flat_map(|dp| &dp.sums).flat_map(|p| p.nids.iter().flat_map(move |&n| n..n + p.block_size));
        let node = sums.flat_map(|n| (0..b).map(move |s| n as usize * b + s)).map(|i| close(nodes[i], trace.node_values[i])).fold(0.0, f64::max);
        let rel = |a: &[f32], w: &[f64]| a.iter().zip(w).map(|(g, w)| (*g as f64 - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max);
        let (sf, st) = (rel(&read_f32(&d.join("sflow")), &cpu.flows().sum), rel(&read_f32(&d.join("stats")), &cpu.flows().input));
        eprintln!("{what} B={b}: root LL max rel {ll:.2e}, sum nodes {node:.2e}, sum flows {sf:.2e}, leaf statistics {st:.2e}");
        assert!(
            ll <= ll_bound && node <= node_bound,
            "{what} B={b}: log-likelihoods off by {ll:.2e} (bound {ll_bound:.0e}), sum node values by {node:.2e} (bound {node_bound:.0e})"
        );
        assert!(sf <= flow_bound && st <= flow_bound, "{what} B={b}: flows off by {sf:.2e} / {st:.2e} (bound {flow_bound:.0e})");
    }
    e.manifest.launches().map(|k| k.name.clone()).collect()
}

fn hclt_model() -> Model {
    let data: Vec<f32> = (0..300 * 12).map(|i| ((i * 2654435761usize) >> 9 & 3) as f32).collect();
    let c = hclt::learn(&Evidence::new(12, data).unwrap(), &hclt::HcltOptions { latents: 32, ..Default::default() }).unwrap();
    Model::random(c, 3).unwrap()
}

/// A PD over a `h`×`w` image with cuts every 2 pixels and `latents` nodes per region (blocks of
/// 32): regions of more than 4 cuts (8×8) have sparse blocks, each over 4 of them.
fn pd_model(h: u32, w: u32, latents: u32) -> Model {
    let opts = pd::PdOptions { height: h, width: w, split_intervals: (2, 2), latents, input: Dist::Categorical { num_cats: 3 }, ..Default::default() };
    let c: Circuit = pd::build(&opts).unwrap();
    let mut model = Model::random(c, 5).unwrap();
    // Peaked leaves (each probability to the 6th power, renormalized): node values then differ
    // by several nats between a region's cuts, so a cut combined at a wrong scale shows.
    for p in model.params.input.chunks_mut(3) {
        p.iter_mut().for_each(|v| *v = v.powi(6));
        let s: f32 = p.iter().sum();
        p.iter_mut().for_each(|v| *v /= s);
    }
    model
}

/// Sets environment variable `k` to `v` (`None`: removes it) for the emissions that follow.
fn set(k: &str, v: Option<&str>) {
    // SAFETY: this binary's only test runs on one thread and reads the environment only through
    // the emitter, in between these calls.
    unsafe {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
}

#[test]
fn tensor_core_training_pass_on_host_threads_matches_the_cpu_engine() {
    let ran = |names: &[String], what: &str, f: &dyn Fn(&str) -> bool| assert!(names.iter().any(|n| f(n)), "{what}: {names:?}");
    let hclt = hclt_model();
    let names = check("hclt bf16", &hclt, Precision::Bf16, &[40, 64]);
    if names.is_empty() {
        return; // no C++ compiler
    }
    ran(&names, "two-kernel forward, staged backward", &|n| n.ends_with("_s_pflow") || n.ends_with("_g_x"));
    ran(&names, "tensor-core statistics", &|n| n == "input_categorical_bwd_bf16");
    check("hclt tf32", &hclt, Precision::Tf32, &[40]);
    // PD regions over one child list: merged blocks, staged.
    let names = check("pd 4x6 bf16", &pd_model(4, 6, 64), Precision::Bf16, &[36]);
    ran(&names, "merged blocks", &|n| n.starts_with("sum_fwd_bf16_bs32x2_"));
    // Sparse blocks (4 of a region's 6 cuts): one-kernel forward, register-staged backward.
    let pd8 = pd_model(8, 8, 64);
    let names = check("pd 8x8 bf16", &pd8, Precision::Bf16, &[20]);
    ran(&names, "one-kernel forward", &|n| n.starts_with("sum_fwd_bf16_bs32_") && !n.contains("_g"));
    ran(&names, "register-staged backward", &|n| n.starts_with("sum_bwd_bf16_bs32_") && n.ends_with("_pflow") && !n.ends_with("_s_pflow"));
    // The opt-in variants, not yet run on a GPU: sorted-segment statistics, whole 256-row PD
    // regions, shared children staged.
    set("PCC_CAT_STATS", Some("sorted"));
    let names = check("hclt bf16, PCC_CAT_STATS=sorted", &hclt, Precision::Bf16, &[40]);
    ran(&names, "sorted statistics", &|n| n.starts_with("input_categorical_bwd_sorted"));
    set("PCC_CAT_STATS", None);
    set("PCC_MERGE_ROWS", Some("256"));
    let names = check("pd 4x4 latents 256 bf16, PCC_MERGE_ROWS=256", &pd_model(4, 4, 256), Precision::Bf16, &[20]);
    ran(&names, "256-row regions", &|n| n.starts_with("sum_fwd_bf16_bs32x8_"));
    set("PCC_MERGE_ROWS", None);
    set("PCC_FWD_GEMM", Some("all"));
    let names = check("pd 8x8 bf16, PCC_FWD_GEMM=all", &pd8, Precision::Bf16, &[20]);
    ran(&names, "shared children staged", &|n| n.starts_with("sum_fwd_bf16_bs32_") && n.ends_with("_g_x"));
    set("PCC_FWD_GEMM", None);
    set("PCC_PD_CUTS", Some("1"));
    for precision in [Precision::Bf16, Precision::Tf32] {
        let names = check(&format!("pd 8x8 {precision}, PCC_PD_CUTS=1"), &pd8, precision, &[20]);
        ran(&names, "cut-staged forward", &|n| n.contains("_g_c") && !n.ends_with("_pack"));
        ran(&names, "cuts staged", &|n| n.ends_with("_cut_x"));
    }
    // pd256's shapes (blocks of 32 over 4 cuts of 256): launches within the staging cap, and a
    // spill-free sm_90 compile.
    let big = pd::build(&pd::PdOptions {
        height: 16,
        width: 16,
        split_intervals: (4, 4),
        latents: 256,
        input: Dist::Categorical { num_cats: 4 },
        ..Default::default()
    })
    .unwrap();
    let plan = pcc::codegen::compile(&big).unwrap();
    let e = emit_with(&plan, &EmitOptions { precision: Precision::Bf16 }).unwrap();
    let cut_launches: Vec<&KernelSpec> = e.manifest.forward.iter().filter(|k| k.name.ends_with("_cut_x")).collect();
    assert!(
        !cut_launches.is_empty() && e.manifest.forward.iter().any(|k| k.name.contains("_w1024") && k.name.ends_with("_g_c256")),
        "pd256's sparse blocks cut-staged"
    );
    assert!(e.manifest.x_words <= pcc::codegen::emit::mma::MAX_X_WORDS as u64, "within the staging cap: {}", e.manifest.x_words);
    if pcc::runtime::cuda::nvrtc_available() {
        let (_, log) = pcc::runtime::cuda::compile_cubin_verbose(&e.source, "cuts.cu", "90").unwrap();
        for (kernel, line) in pcc_testkit::ptxas_lines(&log) {
            assert!(!kernel.contains("_g_c") && !kernel.ends_with("_cut_x") || !pcc_testkit::spills(line), "{kernel}: {line}");
        }
    }
    set("PCC_PD_CUTS", None);
}

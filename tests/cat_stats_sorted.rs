//! The categorical statistics by sorted segments (`templates/input_cat_bwd_sorted.cu.tera`,
//! `PCC_CAT_STATS=sorted` on the tensor-core manifests until a GPU self-check has run it; its own
//! test binary, as the switch is process-wide): the emitter's launches and tables, a spill-free sm_90
//! compile, and both kernels' generated CUDA compiled for the host and run with real concurrency
//! (every CUDA thread an OS thread, `__syncthreads` a block barrier, the warp shuffles and ballots
//! a warp barrier around an exchange buffer, the atomics real atomics) over the manifest's own
//! tables, against the statistics summed directly. Batches of one and several sort chunks, not a
//! multiple of 4 (the scalar row copy) and a multiple (the vector copy), skewed categories (long
//! segments that cross the 32-position windows), and missing values.

use pcc::codegen::compile;
use pcc::codegen::emit::{EmitOptions, Precision, emit_with};
use pcc::codegen::structures::hmm;
use pcc::runtime::cuda::{KernelArg, KernelSpec, Manifest, Step, compile_cubin_verbose, nvrtc_available};
use pcc_testkit::host_cuda::{
    DRIVER_PRELUDE, THREADED_SHIM, XorShift, build_threaded, device_fn_text, host_cxx, kernel_text, manifest_table, read_f32, write_f32, write_u32,
};

fn launches(m: &Manifest) -> (KernelSpec, KernelSpec) {
    let find = |suffix: bool| {
        m.backward
            .iter()
            .find_map(|s| match s {
                Step::Launch(k) if k.name.starts_with("input_categorical_bwd_sorted") && k.name.ends_with("_sort") == suffix => Some(k.clone()),
                _ => None,
            })
            .expect("the launch")
    };
    (find(true), find(false))
}

#[test]
fn sorted_segment_statistics_match_direct_sums_on_host_threads() {
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var("PCC_CAT_STATS", "sorted") };
    let c = hmm::build(&hmm::HmmOptions { seq_length: 5, hidden: 96, num_emits: 70, homogeneous: false, block_size: Some(32) }).unwrap();
    let plan = compile(&c).unwrap();
    let e = emit_with(&plan, &EmitOptions { precision: Precision::Bf16 }).unwrap();
    let (sort, stats) = launches(&e.manifest);
    // 5 variables of 96 leaves: tiles of 64 (a full one and one of 32 each); 70 categories.
    assert_eq!((sort.count, stats.count, stats.block), (5, 10, 256), "{sort:?} {stats:?}");
    assert!(e.manifest.x_words >= 5, "the sort's rows fit the staging buffer");
    assert!(matches!(sort.args[0], KernelArg::XStage) && matches!(stats.args[2], KernelArg::XStage));
    let fp32 = emit_with(&plan, &EmitOptions { precision: Precision::Fp32 }).unwrap();
    assert!(!fp32.source.contains("input_categorical_bwd_sorted"), "fp32 keeps the scalar kernel");
    if nvrtc_available() {
        let (_, log) = compile_cubin_verbose(&e.source, "cat.cu", "90").unwrap();
        for (kernel, line) in pcc_testkit::ptxas_lines(&log) {
            assert!(!kernel.starts_with("input_categorical_bwd_sorted") || !pcc_testkit::spills(line), "{kernel}: {line}");
        }
    } else {
        eprintln!("note: NVRTC not found (source .ci/nvrtc.sh); the kernels were not compiled for sm_90");
    }
    let Some(cxx) = host_cxx() else { return };
    let m = &e.manifest;
    let (tiles, ids, aux, nstats) =
        (manifest_table(m, &stats.args[4]), manifest_table(m, &stats.args[5]), manifest_table(m, &stats.args[6]), manifest_table(m, &stats.args[7]));
    // The missing-value credit the statistics summed per leaf, credited right after them.
    let mass = m
        .backward
        .iter()
        .find_map(|s| match s {
            Step::Launch(k) if k.name == "input_categorical_mass" => Some(k.clone()),
            _ => None,
        })
        .expect("the missing-value credit");
    assert!(matches!(stats.args[8], KernelArg::LeafMass) && matches!(mass.args[1], KernelArg::LeafMass));
    let cslot = manifest_table(m, &mass.args[5]);
    let vars = manifest_table(m, &sort.args[3]);
    let n_vars = plan.num_vars as usize;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let driver = format!(
        r#"
int main(int argc, char** argv) {{
    const std::string d = argv[1];
    const int B = atoi(argv[2]);
    auto data = rd<float>(d + "/data"); auto nflow = rd<float>(d + "/nflow"); auto c = rd<float>(d + "/c");
    auto missing = rd<unsigned char>(d + "/missing");
    auto vars = rd<u32>(d + "/vars"); auto tiles = rd<u32>(d + "/tiles"); auto ids = rd<u32>(d + "/ids");
    auto aux = rd<u32>(d + "/aux"); auto cslot = rd<u32>(d + "/cslot"); auto nstats = rd<u32>(d + "/nstats");
    std::vector<u32> xs({n_vars} * (size_t)B, 0xdeadbeefu);
    std::vector<float> stats({n_stats}, 0.f), mass({n_nodes}, 0.f);
    LAUNCH_T({sort}, {sort_threads}LL * ((B + {ch} - 1) / {ch}), xs.data(), data.data(), missing.data(), vars.data(), {sort_count}, B);
    LAUNCH_T({stats}, {stats_threads}LL, stats.data(), nflow.data(), xs.data(), missing.data(), tiles.data(), ids.data(), aux.data(), nstats.data(), mass.data(), {stats_count}, B);
    LAUNCH_T({mass_k}, {mass_threads}LL, stats.data(), mass.data(), c.data(), ids.data(), aux.data(), cslot.data(), nstats.data(), {mass_count});
    for (float v : mass) if (v != 0.f) {{ fprintf(stderr, "leaf mass left behind\n"); return 4; }}
    FILE* f = fopen((d + "/got").c_str(), "wb"); fwrite(stats.data(), 4, stats.size(), f); fclose(f);
}}
"#,
        n_stats = (plan.num_input_flows as usize).max(1),
        sort = sort.name,
        sort_threads = sort.threads_per_sample,
        ch = sort.batch_group,
        sort_count = sort.count,
        stats = stats.name,
        stats_threads = stats.threads_per_sample,
        stats_count = stats.count,
        mass_k = mass.name,
        mass_threads = mass.threads_per_sample,
        mass_count = mass.count,
        n_nodes = plan.num_nodes,
    );
    let src = format!(
        "{THREADED_SHIM}{DRIVER_PRELUDE}{}\n{}\n{}\n{}\n{driver}",
        kernel_text(&e.source, &sort.name),
        kernel_text(&e.source, &stats.name),
        device_fn_text(&e.source, "pcc_categorical_stats"),
        kernel_text(&e.source, &mass.name)
    );
    let exe = build_threaded(&cxx, d, &src, "sorted statistics");
    for (name, data) in [("vars", &vars), ("tiles", &tiles), ("ids", &ids), ("aux", &aux), ("cslot", &cslot), ("nstats", &nstats)] {
        write_u32(&d.join(name), data);
    }
    let n_nodes = ids.iter().copied().max().unwrap() as usize + 1;
    let n_consts = cslot.iter().zip(&nstats).map(|(&s, &k)| (s + k) as usize).max().unwrap();
    let mut rng = XorShift(0x9e3779b97f4a7c15);
    // Leaf l of the layer: its variable (from the tiles).
    let mut leaf_var = vec![u32::MAX; ids.len()];
    for t in tiles.chunks(65) {
        for &l in t[1..].iter().filter(|&&l| l != u32::MAX) {
            leaf_var[l as usize] = t[0];
        }
    }
    assert!(leaf_var.iter().all(|&v| v != u32::MAX), "every leaf in a tile");
    for (batch, p_missing) in [(37usize, 0.0f32), (100, 0.2), (600, 0.05), (1029, 0.0)] {
        // Skewed categories: half the samples in category 0 (segments longer than a window).
        let data: Vec<f32> = (0..n_vars * batch).map(|_| if rng.unit() < 0.5 { 0.0 } else { (rng.next_u64() % 70) as f32 }).collect();
        let missing: Vec<u8> = (0..n_vars * batch).map(|i| u8::from(i / batch != 1 && rng.unit() < p_missing)).collect();
        let nflow: Vec<f32> = (0..n_nodes * batch).map(|_| if rng.unit() < 0.1 { 0.0 } else { rng.unit() }).collect();
        let consts: Vec<f32> = (0..n_consts).map(|_| rng.unit()).collect();
        let mut want = vec![0f64; (plan.num_input_flows as usize).max(1)];
        for (l, &node) in ids.iter().enumerate() {
            let v = leaf_var[l] as usize;
            for b in 0..batch {
                let f = nflow[node as usize * batch + b] as f64;
                if missing[v * batch + b] == 1 {
                    for k in 0..nstats[l] {
                        want[(aux[l] + k) as usize] += f * consts[(cslot[l] + k) as usize] as f64;
                    }
                } else {
                    want[aux[l] as usize + data[v * batch + b] as usize] += f;
                }
            }
        }
        write_f32(&d.join("data"), &data);
        std::fs::write(d.join("missing"), &missing).unwrap();
        write_f32(&d.join("nflow"), &nflow);
        write_f32(&d.join("c"), &consts);
        let st = std::process::Command::new(&exe).arg(d).arg(batch.to_string()).output().unwrap();
        assert!(st.status.success(), "B={batch}: {} {}", st.status, String::from_utf8_lossy(&st.stderr));
        let got = read_f32(&d.join("got"));
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1.0)).fold(0.0f64, f64::max);
        assert!(worst < 1e-5, "B={batch} missing {p_missing}: worst relative error {worst}");
        eprintln!("B={batch} missing {p_missing}: worst relative error {worst:.2e}");
    }
}

//! The GPU query passes executed on the CPU: the generated CUDA itself, compiled for the host
//! with a shim for the few CUDA built-ins the query kernels use, and a generated driver that runs
//! the manifest's steps (forward, node flows, max-product forward, the MPE and sampling walks,
//! the conditional gathers) one launch at a time over the manifest's own index tables. So the
//! emitter's tables and step order, the kernels' text and index arithmetic and the query
//! algorithms are checked against the CPU engine without a GPU (the GPU self-check runs the same
//! kernels on a device). Until 2026-12-07 a Rust transcription of every kernel stood in between;
//! the host build made it redundant.
// Index loops on purpose: they mirror the kernels' index arithmetic.
#![allow(clippy::needless_range_loop)]

use pcc_testkit as common;

use common::Gen;
use common::host_cuda::{DRIVER_PRELUDE, KERNEL_SHIM, per_sample_launch, read_f32, write_f32};
use pcc::codegen::Model;
use pcc::codegen::emit::emit;
use pcc::codegen::structures::{hclt, hmm};
use pcc::runtime::cuda::{KernelArg, KernelSpec, Manifest, Step, conditional_slots, conditionals_from_slots};
use pcc::runtime::{Conditional, Evidence, MpeResult};

fn nonempty(v: Vec<f32>) -> Vec<f32> {
    if v.is_empty() { vec![0.0] } else { v }
}

/// A model's generated CUDA compiled for the host, with the directory its runs exchange files in.
struct Host {
    dir: tempfile::TempDir,
    exe: std::path::PathBuf,
}

/// Every corpus model compiled for the host (as many at once as there are cores: a compile takes
/// a few hundred MB); `None` without a C++ compiler.
fn hosts(corpus: &[(String, Model, Evidence)]) -> Option<Vec<Host>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut built = Vec::new();
    for chunk in corpus.chunks(cores) {
        let done: Vec<Option<Host>> = std::thread::scope(|s| {
            let jobs: Vec<_> = chunk
                .iter()
                .map(|(_, model, _)| {
                    s.spawn(move || {
                        let dir = tempfile::tempdir().unwrap();
                        host_program(model, dir.path()).map(|exe| Host { dir, exe })
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        built.extend(done);
    }
    built.into_iter().collect()
}

/// Conditionals as the GPU engine computes them (the raw accumulators, normalized as the engine does).
fn conditionals(model: &Model, h: &Host, ev: &Evidence) -> Vec<Vec<Conditional>> {
    let (out, _) = run_host(&h.exe, h.dir.path(), ev, 0, ev.num_samples(), 0, 0);
    let (offsets, slots) = conditional_slots(&model.plan);
    (0..ev.num_samples()).map(|s| conditionals_from_slots(&model.plan, ev, s, &out[s * slots as usize..][..slots as usize], &offsets)).collect()
}

/// MPE as the GPU engine computes it.
fn mpe(h: &Host, ev: &Evidence) -> MpeResult {
    let (assignments, log_values) = run_host(&h.exe, h.dir.path(), ev, 0, ev.num_samples(), 1, 0);
    MpeResult { log_values, assignments }
}

/// Samples of rows `[a, b)` of `ev` as the GPU engine draws them in one batch.
fn sample(h: &Host, ev: &Evidence, a: usize, b: usize, seed: u64) -> Vec<f32> {
    run_host(&h.exe, h.dir.path(), ev, a, b, 2, seed).0
}

fn corpus() -> Vec<(String, Model, Evidence)> {
    let mut v = Vec::new();
    for s in 0..12u64 {
        let model = Model::random(Gen::circuit(s), 7).unwrap();
        let ev = common::random_evidence(&model, 64, 0.4, 50 + s);
        v.push((format!("random{s}"), model, ev));
    }
    for s in 0..3u64 {
        let (c, ev) = common::mixed_circuit(s, 64, 0.4);
        v.push((format!("mixed{s}"), Model::random(c, 3).unwrap(), ev));
    }
    for s in 0..2u64 {
        let (c, ev) = common::binomial_circuit(s, 64, 0.4);
        v.push((format!("binomial{s}"), Model::random(c, 3).unwrap(), ev));
    }
    let data: Vec<f32> = (0..200 * 10).map(|i| ((i * 2654435761usize) >> 7 & 1) as f32).collect();
    let hc = hclt::learn(&Evidence::new(10, data).unwrap(), &hclt::HcltOptions { latents: 8, ..Default::default() }).unwrap();
    let model = Model::random(hc, 5).unwrap();
    let ev = common::random_evidence(&model, 64, 0.4, 9);
    v.push(("hclt".into(), model, ev));
    let model =
        Model::random(hmm::build(&hmm::HmmOptions { seq_length: 6, hidden: 8, num_emits: 3, homogeneous: true, ..Default::default() }).unwrap(), 5).unwrap();
    let ev = common::random_evidence(&model, 64, 0.4, 10);
    v.push(("hmm".into(), model, ev));
    v
}

/// Every query of the host-compiled CUDA against the CPU engine, over one build of the corpus
/// (compiling it takes most of the time).
#[test]
fn host_cuda_queries_match_the_cpu_engine() {
    let corpus = corpus();
    let Some(hosts) = hosts(&corpus) else { return };
    conditionals_match(&corpus, &hosts);
    mpe_matches(&corpus, &hosts);
    samples_follow_the_exact_marginals_and_ignore_the_batch_split(&corpus, &hosts);
    soft_training_passes_match(&corpus, &hosts);
}

/// Soft evidence in the input kernels: data softening (mode β) and dense soft evidence (mode −1)
/// give the forward's likelihoods and the training backward's leaf statistics of the
/// host-compiled CUDA equal to the CPU engine's.
fn soft_training_passes_match(corpus: &[(String, Model, Evidence)], hosts: &[Host]) {
    let keep = 0.9f32;
    let softened = |_: &Model, ev: &Evidence| ev.clone().with_soft(pcc::runtime::Soft::softened(keep).unwrap());
    soft_training_pass_matches(corpus, hosts, "softened", keep, softened);
    soft_training_pass_matches(corpus, hosts, "dense soft", -1.0, |m, ev| common::random_dense_soft(m, ev, 11));
}

fn soft_training_pass_matches(corpus: &[(String, Model, Evidence)], hosts: &[Host], what: &str, mode: f32, soften: impl Fn(&Model, &Evidence) -> Evidence) {
    let mut checked = 0;
    for ((name, model, ev), h) in corpus.iter().zip(hosts) {
        if model.plan.domains.contains(&pcc::runtime::Domain::Continuous) {
            continue;
        }
        let soft = soften(model, ev);
        let (_, root) = run_host_soft(&h.exe, h.dir.path(), &soft, 0, soft.num_samples(), 3, 0, mode);
        let mut cpu = model.cpu_engine().unwrap();
        let want = cpu.accumulate_flows(&soft, None).unwrap();
        for (s, (g, w)) in root.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{name}, sample {s}: {what} LL host CUDA {g}, CPU engine {w}");
        }
        let stats = read_f32(&h.dir.path().join("stats"));
        for (i, (g, w)) in stats.iter().zip(cpu.flows().input.iter()).enumerate() {
            assert!((*g as f64 - w).abs() <= 1e-3 * w.abs().max(1.0), "{name}: {what} leaf statistics[{i}] host CUDA {g}, CPU engine {w}");
        }
        checked += 1;
    }
    assert!(checked >= 5, "{what} evidence checked on {checked} discrete models only");
}

fn conditionals_match(corpus: &[(String, Model, Evidence)], hosts: &[Host]) {
    for ((name, model, ev), h) in corpus.iter().zip(hosts) {
        let want = model.cpu_engine().unwrap().conditionals(ev).unwrap();
        let got = conditionals(model, h, ev);
        assert_eq!(want.len(), got.len());
        for (s, (w, g)) in want.iter().zip(&got).enumerate() {
            for (v, (a, b)) in w.iter().zip(g).enumerate() {
                let ok = match (a, b) {
                    (Conditional::Observed, Conditional::Observed) => true,
                    (Conditional::Discrete(p), Conditional::Discrete(q)) => p.len() == q.len() && p.iter().zip(q).all(|(x, y)| (x - y).abs() <= 1e-5),
                    (Conditional::Continuous { mean: m1, var: v1 }, Conditional::Continuous { mean: m2, var: v2 }) => {
                        (m1 - m2).abs() <= 1e-5 * m1.abs().max(1.0) && (v1 - v2).abs() <= 1e-4 * v1.abs().max(1.0)
                    }
                    _ => false,
                };
                assert!(ok, "{name}: sample {s} var {v}: CPU {a:?}, host-compiled CUDA {b:?}");
            }
        }
    }
}

fn mpe_matches(corpus: &[(String, Model, Evidence)], hosts: &[Host]) {
    for ((name, model, ev), h) in corpus.iter().zip(hosts) {
        let cpu = model.cpu_engine().unwrap();
        let want = cpu.mpe(ev).unwrap();
        let got = mpe(h, ev);
        let nv = model.plan.num_vars as usize;
        for s in 0..ev.num_samples() {
            let (a, b) = (want.log_values[s], got.log_values[s]);
            assert!(a == b || (a - b).abs() <= 1e-5 * a.abs().max(1.0), "{name}: sample {s}: value CPU {a}, host-compiled CUDA {b}");
            let (x, y) = (&want.assignments[s * nv..][..nv], &got.assignments[s * nv..][..nv]);
            if x != y {
                // Allowed only for an exact tie: the GPU's completion reaches the same value.
                let e = cpu.mpe(&Evidence::new(nv, y.to_vec()).unwrap()).unwrap().log_values[0];
                assert!((e - a).abs() <= 1e-5 * a.abs().max(1.0), "{name}: sample {s}: CPU {x:?} ({a}), host-compiled CUDA {y:?} ({e})");
            }
        }
    }
}

fn samples_follow_the_exact_marginals_and_ignore_the_batch_split(corpus: &[(String, Model, Evidence)], hosts: &[Host]) {
    const N: usize = 3000;
    for ((name, model, ev), h) in corpus.iter().zip(hosts) {
        let nv = model.plan.num_vars as usize;
        let cpu = model.cpu_engine().unwrap();
        // Conditional sampling of one evidence row, repeated; the unconditional case is the
        // all-missing row.
        for row in [Evidence::all_missing(nv, 1), ev.slice(0, 1)] {
            let mask: Vec<bool> = (0..nv).map(|v| row.is_missing(0, v)).collect();
            let rows = Evidence::with_missing(nv, row.values.repeat(N), Some(mask.repeat(N))).unwrap();
            let whole = sample(h, &rows, 0, N, 42);
            let split: Vec<f32> = [(0, 1000), (1000, 1777), (1777, N)].iter().flat_map(|&(a, b)| sample(h, &rows, a, b, 42)).collect();
            assert!(whole == split, "{name}: draws depend only on (seed, sample, node)");
            if mask.iter().any(|&x| x) {
                assert!(whole != sample(h, &rows, 0, N, 43), "{name}: the seed matters");
            }
            let marg = cpu.conditionals(&row).unwrap().remove(0);
            for (v, c) in marg.iter().enumerate() {
                let col: Vec<f32> = (0..N).map(|i| whole[i * nv + v]).collect();
                match c {
                    Conditional::Observed => assert!(col.iter().all(|x| x.to_bits() == row.values[v].to_bits()), "{name}: var {v} kept"),
                    Conditional::Discrete(p) => {
                        for (k, &pk) in p.iter().enumerate() {
                            let count = col.iter().filter(|&&x| x == k as f32).count() as f64;
                            // Bernstein bound at δ = 1e-9.
                            let l = (2e9f64).ln();
                            let var = N as f64 * pk as f64 * (1.0 - pk as f64);
                            let t = l / 3.0 + (l * l / 9.0 + 2.0 * var * l).sqrt();
                            assert!((count - N as f64 * pk as f64).abs() <= t, "{name}: var {v} cat {k}: {count} of {N}, p = {pk}");
                        }
                        assert!(col.iter().all(|&x| x.fract() == 0.0 && (x as usize) < p.len()), "{name}: var {v} categories");
                    }
                    Conditional::Continuous { mean, var } => {
                        let mu = col.iter().map(|&x| x as f64).sum::<f64>() / N as f64;
                        let s2 = col.iter().map(|&x| (x as f64 - mu).powi(2)).sum::<f64>() / N as f64;
                        assert!((mu - *mean as f64).abs() <= 6.0 * (*var as f64 / N as f64).sqrt() + 1e-6, "{name}: var {v} mean {mu} vs {mean}");
                        assert!((s2 - *var as f64).abs() <= 0.25 * *var as f64 + 1e-3, "{name}: var {v} variance {s2} vs {var}");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The generated CUDA itself, compiled for the host: a shim maps the few CUDA built-ins the
// templates use (thread indices, atomicAdd, __expf/__logf, __int_as_float, min) to C++, and a
// generated driver runs every launch of a query sequentially over its whole grid. Kernels use no
// shared memory and no intra-kernel synchronization, so a sequential run is one valid schedule.
// (A kernel reading or writing past a buffer would show as wrong values or a crash of the
// program; the vectors are sized as the engine sizes its buffers.)

const SHIM: &str = r#"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <string>
#include <algorithm>
struct pcc_dim3 { unsigned x, y, z; };
static pcc_dim3 blockIdx, blockDim, threadIdx, gridDim;
static inline void __syncthreads() {}
static inline float pcc_host_expf(float x) { return expf(x); }
static inline float pcc_host_logf(float x) { return logf(x); }
#define __expf pcc_host_expf
#define __logf pcc_host_logf
// Warp shuffles cannot run one thread at a time; the kernels that use them (small-batch sums,
// parameter flows) are never launched by this driver, so reaching one is a test bug.
static inline float __shfl_xor_sync(unsigned, float, int) { std::abort(); }
static inline float __shfl_down_sync(unsigned, float, int) { std::abort(); }
static inline float __shfl_sync(unsigned, float, int) { std::abort(); }
static inline bool __any_sync(unsigned, bool) { std::abort(); }
static inline void __syncwarp() {}
// The persistent forward kernel (blocks wait on each other) compiles but is never launched here;
// tests/persistent_emulator.rs runs it on threads.
#define PCC_DYN_SMEM(n) unsigned char* n = nullptr; std::abort()
static inline void pcc_bar_work() {}
static inline void pcc_bar_done_arrive() {}
static inline void pcc_bar_done_wait() {}
static inline void pcc_bar_next_wait() {}
static inline void pcc_bar_next_arrive() {}
static inline void pcc_fence_acq_rel() {  }
#define PCC_SPIN_PAUSE()
static inline unsigned pcc_ld_relaxed(const unsigned* p) { return *p; }
static inline unsigned pcc_ld_acquire(const unsigned* p) { return *p; }
static inline void pcc_prefetch_l2(const void*) {}
static inline void pcc_st_relaxed(unsigned* p, unsigned v) { *p = v; }
static inline unsigned long long pcc_globaltimer() { return 0; }
static inline float pcc_ld_fresh(const float* p) { return *p; }
static inline long long clock64() { return 0; }
static inline void __trap() { std::abort(); }
static inline void __threadfence() {}
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
static inline int pcc_redux_max(int) { std::abort(); }
static inline void pcc_st_sys(unsigned* p, unsigned v) { *p = v; }
static inline void pcc_fence_sys() {}
"#;

fn driver(model: &Model, m: &Manifest) -> String {
    let plan = &model.plan;
    let arg = |a: &KernelArg, k: &KernelSpec| -> String {
        match a {
            KernelArg::Nodes => "nodes.data()".into(),
            KernelArg::Elements => "elems.data()".into(),
            KernelArg::NodeFlows => "nflow.data()".into(),
            KernelArg::ElementFlows => "eflow.data()".into(),
            KernelArg::Data => "data.data()".into(),
            KernelArg::Missing => "missing.data()".into(),
            KernelArg::SumParams => "sum.data()".into(),
            KernelArg::InputParams => "prm.data()".into(),
            KernelArg::LeafTable => "table.data()".into(),
            KernelArg::Output => "out.data()".into(),
            KernelArg::Table(i) => format!("tab[{i}].data()"),
            KernelArg::Batch => "B".into(),
            KernelArg::Count => format!("{}", k.count),
            KernelArg::Seed => "seed".into(),
            KernelArg::SampleOffset => "sample0".into(),
            KernelArg::Int(v) => format!("{v}"),
            KernelArg::SumFlows => "sflow.data()".into(),
            KernelArg::InputStats => "stats.data()".into(),
            KernelArg::LeafMass => "mass.data()".into(),
            KernelArg::SoftenKeep => "&keep".into(),
            KernelArg::SoftProbs => "soft.data()".into(),
            other => panic!("no query launch binds {other:?}"),
        }
    };
    let launch = |k: &KernelSpec| -> String {
        let args: Vec<String> = k.args.iter().map(|a| arg(a, k)).collect();
        // KernelSpec::threads: a grid over samples (in groups), or a fixed one (the parameter
        // flows' reductions over the batch).
        let threads = match k.scales_with_batch {
            true => format!("{}LL * ((B + {g} - 1) / {g})", k.threads_per_sample, g = k.batch_group.max(1)),
            false => format!("{}LL", k.threads_per_sample),
        };
        format!("    LAUNCH({}, {threads}, {});\n", k.name, args.join(", "))
    };
    let steps = |s: &[Step], skip: &dyn Fn(&KernelSpec) -> bool| -> String {
        s.iter()
            .map(|s| match s {
                Step::ZeroElementFlows => "    std::fill(eflow.begin(), eflow.end(), 0.f);\n".into(),
                Step::Launch(k) if skip(k) => String::new(),
                Step::Launch(k) => launch(k),
            })
            .collect()
    };
    let fwd: String = m.forward.iter().map(|k| launch(per_sample_launch(k))).collect();
    let mpe_fwd: String = m.queries.mpe_forward.iter().map(launch).collect();
    let cond: String = m.queries.conditionals.iter().map(launch).collect();
    let accumulates = |k: &KernelSpec| k.args.iter().any(|a| matches!(a, KernelArg::SumFlows | KernelArg::InputStats));
    let bwd = steps(&m.backward, &accumulates);
    // The training pass's leaf statistics: node flows as above, then the input layers' statistics
    // kernels (the parameter-flow kernels reduce over warps, which host threads cannot emulate).
    let train_bwd = steps(&m.backward, &|k| accumulates(k) && !k.name.starts_with("input_"));
    let mpe_bwd = steps(&m.queries.mpe_backward, &|_| false);
    let sample_bwd = steps(&m.queries.sample_backward, &|_| false);
    let (nn, ne, nde, nv, root) = (plan.num_nodes, plan.num_elements, plan.num_dummy_elements, plan.num_vars, plan.root);
    let slots = conditional_slots(plan).1;
    let (nsp, nif) = (plan.num_sum_params.max(1), plan.num_input_flows.max(1));
    let ntab = m.tables.len();
    let prelude = DRIVER_PRELUDE;
    format!(
        r#"{prelude}
static void wr(const std::string& path, const std::vector<float>& v) {{
    FILE* f = fopen(path.c_str(), "wb"); fwrite(v.data(), sizeof(float), v.size(), f); fclose(f);
}}
int main(int argc, char** argv) {{
    const std::string dir = argv[1];
    const int mode = atoi(argv[2]), B = atoi(argv[3]);
    const unsigned long long seed = strtoull(argv[4], 0, 10);
    const u32 sample0 = (u32)strtoul(argv[5], 0, 10);
    const float keep = argc > 6 ? strtof(argv[6], 0) : 1.f;
    std::vector<float> sflow({nsp}, 0.f), stats({nif}, 0.f), mass({nn}, 0.f);
    std::vector<std::vector<unsigned>> tab;
    for (int i = 0; i < {ntab}; ++i) tab.push_back(rd<unsigned>(dir + "/tab" + std::to_string(i)));
    std::vector<float> sum = rd<float>(dir + "/sum"), prm = rd<float>(dir + "/prm"), table = rd<float>(dir + "/table");
    std::vector<float> data = rd<float>(dir + "/data"), soft = rd<float>(dir + "/soft");
    std::vector<unsigned char> missing = rd<unsigned char>(dir + "/missing");
    std::vector<float> nodes((size_t){nn} * B, 0.f), elems((size_t){ne} * B, 0.f), nflow((size_t){nn} * B, 0.f), eflow((size_t){ne} * B, 0.f);
    for (size_t i = 0; i < (size_t){nde} * B; ++i) elems[i] = PCC_NEG_INF;
    std::vector<float> out((size_t)B * (mode == 0 ? {slots} : {nv}), 0.f), root(B);
    if (mode == 1) {{
{mpe_fwd}    }} else {{
{fwd}    }}
    for (int b = 0; b < B; ++b) root[b] = nodes[(size_t){root} * B + b];
    std::fill(nflow.begin(), nflow.end(), 0.f);
    for (int b = 0; b < B; ++b) nflow[(size_t){root} * B + b] = 1.f;
    if (mode == 3) {{
{train_bwd}        wr(dir + "/stats", stats);
        for (float m : mass) if (m != 0.f) {{ fprintf(stderr, "leaf mass left behind\n"); return 4; }}
    }} else if (mode == 0) {{
{bwd}{cond}    }} else if (mode == 1) {{
{mpe_bwd}    }} else {{
{sample_bwd}    }}
    wr(dir + "/out", out);
    wr(dir + "/root", root);
    return 0;
}}
"#
    )
}

/// Compile the circuit's generated CUDA with the host C++ compiler; `None` without one.
fn host_program(model: &Model, dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if std::process::Command::new(&cxx).arg("--version").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "a C++ compiler is required in CI");
        eprintln!("note: no C++ compiler ({cxx}); skipping");
        return None;
    }
    let e = emit(&model.plan).unwrap();
    for (i, t) in e.manifest.tables.iter().enumerate() {
        std::fs::write(dir.join(format!("tab{i}")), t.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    write_f32(&dir.join("sum"), &model.params.sum);
    write_f32(&dir.join("prm"), &nonempty(model.params.input.clone()));
    write_f32(&dir.join("table"), &nonempty(model.params.leaf_table(&model.plan)));
    let src = format!("{SHIM}{KERNEL_SHIM}{}{}", e.source, driver(model, &e.manifest));
    std::fs::write(dir.join("prog.cpp"), src).unwrap();
    let exe = dir.join("prog");
    let out = std::process::Command::new(&cxx).args(["-O1", "-w", "-std=c++17", "-o"]).arg(&exe).arg(dir.join("prog.cpp")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(exe)
}

/// Run query `mode` (0 conditionals, 1 MPE, 2 sampling) of the host-compiled CUDA on rows
/// `[a, b)` of `ev`: returns (output buffer, root values).
fn run_host(exe: &std::path::Path, dir: &std::path::Path, ev: &Evidence, a: usize, b: usize, mode: u32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    run_host_soft(exe, dir, ev, a, b, mode, seed, 1.0)
}

/// [`run_host`] with data softening's keep-probability `keep`, and mode 3 besides: a training
/// pass (forward, node flows and the leaf statistics, into file `stats`).
#[allow(clippy::too_many_arguments)] // the program's command line, spelled out
fn run_host_soft(exe: &std::path::Path, dir: &std::path::Path, ev: &Evidence, a: usize, b: usize, mode: u32, seed: u64, keep: f32) -> (Vec<f32>, Vec<f32>) {
    let part = ev.slice(a, b);
    let (data, missing) = part.transposed();
    write_f32(&dir.join("data"), &data);
    // Dense soft evidence in the kernels' layout (one unused word otherwise).
    let soft = part.soft.as_ref().and_then(|s| s.dense_columns(part.num_samples())).unwrap_or_default();
    write_f32(&dir.join("soft"), &nonempty(soft));
    std::fs::write(dir.join("missing"), &missing).unwrap();
    let args = [mode.to_string(), part.num_samples().to_string(), seed.to_string(), a.to_string(), keep.to_string()];
    let out = std::process::Command::new(exe).arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "host program (mode {mode}): {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    (read_f32(&dir.join("out")), read_f32(&dir.join("root")))
}

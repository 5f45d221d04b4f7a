//! The persistent small-batch forward kernel, compiled from its generated CUDA for the host and
//! run with real concurrency: every CUDA thread is an OS thread, `__syncthreads` a per-block
//! barrier, the flags C++ acquire/release atomics, and the task lists come from the runtime's own
//! scheduler for several block counts. So the task graph (fused children, dependencies, tiles),
//! the schedule's dropped same-block dependencies, the generation scheme across launches and the
//! kernel's arithmetic are checked without a GPU: every sum node must equal the one the per-depth
//! kernels compute (run sequentially on the host), and the root must equal the CPU engine. The
//! small-batch sum variants run on the same data too (a block's threads as OS threads).

use pcc_testkit as common;

use common::Gen;
use common::host_cuda::{DRIVER_PRELUDE, KERNEL_SHIM, per_sample_launch, read_f32, write_f32, write_u32};
use pcc::codegen::Model;
use pcc::codegen::emit::emit;
use pcc::codegen::structures::{hclt, hmm, rat_spn};
use pcc::runtime::Evidence;
use pcc::runtime::cuda::persistent::schedule;
use pcc::runtime::cuda::{KernelArg, KernelSpec, Manifest, SMALL_BATCH};

const SHIM: &str = r#"
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>
struct pcc_dim3 { unsigned x, y, z; };
static thread_local pcc_dim3 blockIdx, threadIdx;
static pcc_dim3 blockDim, gridDim;
static thread_local std::barrier<>* pcc_bar = nullptr;
// The named barriers 1 (workers), 2 (workers + publisher) and 3 (the whole block).
static thread_local std::barrier<>* pcc_nbar[4] = {nullptr, nullptr, nullptr, nullptr};
static thread_local unsigned char* pcc_smem = nullptr;
// Warp shuffles: the warp's 32 threads meet at a barrier around a shared exchange buffer.
static thread_local std::barrier<>* pcc_warp_bar = nullptr;
static thread_local float* pcc_warp_buf = nullptr;
#define PCC_DYN_SMEM(n) unsigned char* n = pcc_smem
#define PCC_SPIN_PAUSE() std::this_thread::yield()
#define PCC_SPIN_LIMIT (120LL * 1000000000LL)
static inline void __syncthreads() { if (pcc_bar) pcc_bar->arrive_and_wait(); }
#define __expf expf
#define __logf logf
static inline unsigned pcc_ld_relaxed(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline unsigned pcc_ld_acquire(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void pcc_prefetch_l2(const void*) {}
static inline void pcc_st_relaxed(unsigned* p, unsigned v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline unsigned long long pcc_globaltimer() { return (unsigned long long)std::chrono::steady_clock::now().time_since_epoch().count(); }
static inline float pcc_ld_fresh(const float* p) { float v; __atomic_load(p, &v, __ATOMIC_RELAXED); return v; }
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline long long clock64() { return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
static inline void __trap() { fprintf(stderr, "trap: a dependency never completed\n"); std::abort(); }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline float __shfl_xor_sync(unsigned, float v, int o) {
    const unsigned lane = threadIdx.x & 31;
    pcc_warp_buf[lane] = v;
    pcc_warp_bar->arrive_and_wait();
    const float r = pcc_warp_buf[lane ^ o];
    pcc_warp_bar->arrive_and_wait();
    return r;
}
static inline float __shfl_down_sync(unsigned, float, int) { std::abort(); }
static inline float __shfl_sync(unsigned, float v, int src) {
    const unsigned lane = threadIdx.x & 31;
    pcc_warp_buf[lane] = v;
    pcc_warp_bar->arrive_and_wait();
    const float r = pcc_warp_buf[src & 31];
    pcc_warp_bar->arrive_and_wait();
    return r;
}
static inline bool __any_sync(unsigned, bool p) {
    const unsigned lane = threadIdx.x & 31;
    pcc_warp_buf[lane] = p ? 1.f : 0.f;
    pcc_warp_bar->arrive_and_wait();
    bool any = false;
    for (int i = 0; i < 32; ++i) any = any || pcc_warp_buf[i] != 0.f;
    pcc_warp_bar->arrive_and_wait();
    return any;
}
static inline void __syncwarp() { pcc_warp_bar->arrive_and_wait(); }
static inline int pcc_redux_max(int v) {
    const unsigned lane = threadIdx.x & 31;
    std::memcpy(&pcc_warp_buf[lane], &v, 4);
    pcc_warp_bar->arrive_and_wait();
    int m = v;
    for (int i = 0; i < 32; ++i) { int x; std::memcpy(&x, &pcc_warp_buf[i], 4); m = x > m ? x : m; }
    pcc_warp_bar->arrive_and_wait();
    return m;
}
static inline void pcc_bar_work() { pcc_nbar[1]->arrive_and_wait(); }
static inline void pcc_bar_done_arrive() { (void)pcc_nbar[2]->arrive(); }
static inline void pcc_bar_done_wait() { pcc_nbar[2]->arrive_and_wait(); }
static inline void pcc_bar_next_wait() { pcc_nbar[3]->arrive_and_wait(); }
static inline void pcc_bar_next_arrive() { (void)pcc_nbar[3]->arrive(); }
static inline void pcc_fence_acq_rel() { std::atomic_thread_fence(std::memory_order_acq_rel); }
static inline void pcc_st_sys(unsigned* p, unsigned v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void pcc_fence_sys() { std::atomic_thread_fence(std::memory_order_seq_cst); }
// A launch of a kernel that synchronizes its block (the small-batch sums): 256 threads walk the
// grid's blocks in turn, meeting at the block barrier between blocks (shared arrays are static).
#define LAUNCH_T(k, threads, ...) do { long long T_ = (threads); unsigned g_ = (unsigned)((T_ + 255) / 256); blockDim.x = 256; gridDim.x = g_; \
    std::barrier<> bar_(256); std::vector<std::unique_ptr<std::barrier<>>> wb_; for (int w = 0; w < 8; ++w) wb_.emplace_back(new std::barrier<>(32)); \
    std::vector<float> buf_(256); std::vector<std::thread> th_; \
    for (unsigned tx = 0; tx < 256; ++tx) th_.emplace_back([&, tx] { threadIdx.x = tx; pcc_bar = &bar_; pcc_warp_bar = wb_[tx / 32].get(); pcc_warp_buf = &buf_[(tx / 32) * 32]; \
        for (unsigned gx = 0; gx < g_; ++gx) { blockIdx.x = gx; k(__VA_ARGS__); bar_.arrive_and_wait(); } pcc_bar = nullptr; }); \
    for (auto& t : th_) t.join(); } while (0)

"#;

/// The host driver: the per-depth forward launches sequentially (reference node values), then the
/// persistent kernel twice on threads (node values reset to NaN before each: a stale or missing
/// dependency shows), writing both node arrays and the final generation.
fn driver(model: &Model, m: &Manifest) -> String {
    let plan = &model.plan;
    let arg = |a: &KernelArg, k: &KernelSpec| -> String {
        match a {
            KernelArg::Nodes => "nodes.data()".into(),
            KernelArg::Elements => "elems.data()".into(),
            KernelArg::Data => "data.data()".into(),
            KernelArg::Missing => "missing.data()".into(),
            KernelArg::SumParams => "sum.data()".into(),
            KernelArg::LeafTable => "table.data()".into(),
            KernelArg::InputParams => "prm.data()".into(),
            KernelArg::Table(i) => format!("tab[{i}].data()"),
            KernelArg::Batch => "B".into(),
            KernelArg::Count => format!("{}", k.count),
            KernelArg::SoftenKeep => "&keep".into(),
            KernelArg::SoftProbs => "&no_soft".into(),
            other => panic!("no forward launch binds {other:?}"),
        }
    };
    let args = |k: &KernelSpec| k.args.iter().map(|a| arg(a, k)).collect::<Vec<String>>().join(", ");
    let fwd: String =
        m.forward.iter().map(per_sample_launch).map(|k| format!("    LAUNCH({}, {}LL * B, {});\n", k.name, k.threads_per_sample, args(k))).collect();
    // The small-batch path: each launch's `small` variant (a variant with no threads skips it),
    // grids from `KernelSpec::threads` (samples grouped per CUDA block where the variant says so).
    let small: String = m
        .forward
        .iter()
        .map(|k| k.small.as_deref().unwrap_or(k))
        .filter(|k| k.threads_per_sample > 0)
        .map(|k| {
            let threads = match k.scales_with_batch {
                true => format!("{}LL * ((B + {g} - 1) / {g})", k.threads_per_sample, g = k.batch_group.max(1)),
                false => format!("{}LL", k.threads_per_sample),
            };
            format!("    LAUNCH_T({}, {threads}, {});\n", k.name, args(k))
        })
        .collect();
    let p = m.persistent.as_ref().expect("a persistent pass");
    let (nn, ne, nde, ndn, ntab, root) = (plan.num_nodes, plan.num_elements, plan.num_dummy_elements, plan.num_dummy_nodes, m.tables.len(), plan.root);
    let (kernel, threads, smem_floats, ntasks, tw) = (&p.kernel, p.threads, p.shared_bytes / 4, p.num_tasks(), pcc::runtime::cuda::TASK_WORDS);
    let prelude = DRIVER_PRELUDE;
    let hw = 1 + SMALL_BATCH;
    let pt = pcc::codegen::emit::persistent::THREADS;
    format!(
        r#"{prelude}
static void wr(const std::string& path, const void* p, size_t bytes) {{
    FILE* f = fopen(path.c_str(), "wb"); fwrite(p, 1, bytes, f); fclose(f);
}}
int main(int argc, char** argv) {{
    const std::string dir = argv[1];
    const int B = atoi(argv[2]), G = atoi(argv[3]);
    const float keep = 1.f;  // hard evidence
    const float no_soft = 0.f;  // no dense soft evidence (read only where keep is -1)
    std::vector<std::vector<unsigned>> tab;
    for (int i = 0; i < {ntab}; ++i) tab.push_back(rd<unsigned>(dir + "/tab" + std::to_string(i)));
    std::vector<float> sum = rd<float>(dir + "/sum"), table = rd<float>(dir + "/table"), prm = rd<float>(dir + "/prm"), data = rd<float>(dir + "/data");
    std::vector<unsigned char> missing = rd<unsigned char>(dir + "/missing");
    std::vector<unsigned> tasks = rd<unsigned>(dir + "/tasks"), ech = rd<unsigned>(dir + "/ech"),
        deps = rd<unsigned>(dir + "/deps"), poff = rd<unsigned>(dir + "/poff"), plist = rd<unsigned>(dir + "/plist");
    std::vector<float> nodes((size_t){nn} * B, 0.f), elems((size_t){ne} * B, 0.f);
    for (size_t i = 0; i < (size_t){nde} * B; ++i) elems[i] = PCC_NEG_INF;
{fwd}    wr(dir + "/ref", nodes.data(), nodes.size() * 4);
    // Again through the small-batch variants, from fresh buffers.
    std::fill(nodes.begin(), nodes.end(), 0.f);
    std::fill(elems.begin(), elems.end(), 0.f);
    for (size_t i = 0; i < (size_t){nde} * B; ++i) elems[i] = PCC_NEG_INF;
{small}    wr(dir + "/small", nodes.data(), nodes.size() * 4);
    std::vector<unsigned> ctl(2 + {ntasks}, 0);
    std::vector<unsigned long long> trace((size_t){ntasks} * 8, ~0ull);
    // The host-mapped result: [0] the call's sequence number once [1, 1 + B) hold the root's values.
    std::vector<unsigned> host({hw}, 0);
    unsigned seq = 0;
    for (int run = 0; run < 2; ++run) {{
        seq = 100 + run;
        // Sum node rows back to NaN (inputs and dummy rows keep their values).
        for (unsigned t = 0; t < {ntasks}; ++t) {{
            const unsigned* d = &tasks[t * {tw}];
            for (unsigned m = 0; m < d[7]; ++m) for (int b = 0; b < B; ++b) nodes[(size_t)(d[1] + m) * B + b] = NAN;
        }}
        gridDim.x = G; blockDim.x = {threads};
        std::vector<std::unique_ptr<std::barrier<>>> bars;
        std::vector<std::vector<float>> smem(G, std::vector<float>({smem_floats}, NAN));
        for (int g = 0; g < G; ++g) bars.emplace_back(new std::barrier<>({threads}));
        // Per block: workers (all but the producer and publisher warps), workers + publisher, all.
        std::vector<std::unique_ptr<std::barrier<>>> nbars;
        for (int g = 0; g < G; ++g) {{
            nbars.emplace_back(new std::barrier<>({pt}));
            nbars.emplace_back(new std::barrier<>({pt} + 32));
            nbars.emplace_back(new std::barrier<>({threads}));
        }}
        const int warps = {threads} / 32;
        std::vector<std::unique_ptr<std::barrier<>>> wbars;
        for (int i = 0; i < G * warps; ++i) wbars.emplace_back(new std::barrier<>(32));
        std::vector<float> wbuf((size_t)G * warps * 32);
        std::vector<std::thread> th;
        for (int g = 0; g < G; ++g) for (unsigned t = 0; t < {threads}; ++t)
            th.emplace_back([&, g, t] {{
                blockIdx.x = g; threadIdx.x = t; pcc_bar = bars[g].get();
                for (int i = 1; i < 4; ++i) pcc_nbar[i] = nbars[g * 3 + i - 1].get();
                pcc_smem = (unsigned char*)smem[g].data();
                pcc_warp_bar = wbars[g * warps + t / 32].get(); pcc_warp_buf = &wbuf[(size_t)(g * warps + t / 32) * 32];
                {kernel}(nodes.data(), sum.data(), tasks.data(), ech.data(), deps.data(), poff.data(), plist.data(), ctl.data(), run == 1 ? trace.data() : nullptr, B, host.data(), &seq, {root}u);
            }});
        for (auto& x : th) x.join();
    }}
    for (size_t i = 0; i < (size_t){ndn} * B; ++i) if (nodes[i] != 0.f) {{ fprintf(stderr, "dummy row changed\n"); return 4; }}
    bool root_task = false;
    for (unsigned t = 0; t < {ntasks}; ++t) root_task = root_task || {root}u - tasks[t * {tw} + 1] < tasks[t * {tw} + 7];
    if (root_task != (host[0] == seq)) {{ fprintf(stderr, "host flag %u, sequence %u\n", host[0], seq); return 5; }}
    if (root_task && std::memcmp(&host[1], &nodes[(size_t){root} * B], 4 * B) != 0) {{ fprintf(stderr, "host root differs\n"); return 6; }}
    wr(dir + "/got", nodes.data(), nodes.size() * 4);
    wr(dir + "/ctl", ctl.data(), 8);
    // The second launch traced every task: the block that ran it.
    std::vector<unsigned> owner({ntasks});
    for (unsigned t = 0; t < {ntasks}; ++t) owner[t] = (unsigned)trace[(size_t)t * 8 + 6];
    wr(dir + "/owner", owner.data(), owner.size() * 4);
    return 0;
}}
"#
    )
}

#[test]
fn persistent_forward_on_host_threads_equals_the_per_depth_kernels() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if std::process::Command::new(&cxx).arg("--version").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "a C++ compiler is required in CI");
        eprintln!("note: no C++ compiler ({cxx}); skipping");
        return;
    }
    let mut corpus: Vec<(String, Model)> = Vec::new();
    for s in [0u64, 3, 7] {
        corpus.push((format!("random{s}"), Model::random(Gen::circuit(s), 7).unwrap()));
    }
    let (c, mixed_ev) = common::mixed_circuit(1, SMALL_BATCH, 0.4);
    corpus.push(("mixed1".into(), Model::random(c, 3).unwrap()));
    // Binomial leaves: their forward kernel (compiled for the host too) against the CPU engine.
    corpus.push(("binomial1".into(), Model::random(common::binomial_circuit(1, 1, 0.0).0, 3).unwrap()));
    let data: Vec<f32> = (0..200 * 12).map(|i| ((i * 2654435761usize) >> 7 & 1) as f32).collect();
    let hc = hclt::learn(&Evidence::new(12, data).unwrap(), &hclt::HcltOptions { latents: 16, ..Default::default() }).unwrap();
    corpus.push(("hclt16".into(), Model::random(hc, 5).unwrap()));
    // Blocks of 128 × 128: weights copied in bulk, four children per shared-memory load at batch 1.
    let data: Vec<f32> = (0..200 * 6).map(|i| ((i * 2654435761usize) >> 5 & 1) as f32).collect();
    let hc = hclt::learn(&Evidence::new(6, data).unwrap(), &hclt::HcltOptions { latents: 128, ..Default::default() }).unwrap();
    corpus.push(("hclt128x6".into(), Model::random(hc, 5).unwrap()));
    // More tasks than a block caches descriptors for (one block runs them all at G = 1).
    let data: Vec<f32> = (0..100 * 200).map(|i| ((i * 2654435761usize) >> 9 & 1) as f32).collect();
    let hc = hclt::learn(&Evidence::new(200, data).unwrap(), &hclt::HcltOptions { latents: 4, ..Default::default() }).unwrap();
    let model = Model::random(hc, 5).unwrap();
    let n = emit(&model.plan).unwrap().manifest.persistent.unwrap().num_tasks();
    assert!(n > pcc::codegen::emit::persistent::CACHED_TASKS as usize, "{n} tasks");
    corpus.push(("hclt4x200".into(), model));
    let hm = hmm::build(&hmm::HmmOptions { seq_length: 9, hidden: 8, num_emits: 3, homogeneous: true, ..Default::default() }).unwrap();
    corpus.push(("hmm".into(), Model::random(hm, 5).unwrap()));
    // Blocks of 256 nodes over 256 children: four 64-node tiles per block.
    let hm = hmm::build(&hmm::HmmOptions { seq_length: 3, hidden: 256, num_emits: 4, homogeneous: false, ..Default::default() }).unwrap();
    corpus.push(("hmm256".into(), Model::random(hm, 5).unwrap()));
    let rat = rat_spn::build(&rat_spn::RatSpnOptions { num_vars: 8, latents: 8, input: pcc::codegen::Dist::Categorical { num_cats: 3 }, ..Default::default() })
        .unwrap();
    corpus.push(("rat_spn".into(), Model::random(rat, 5).unwrap()));
    let bulk = corpus.iter().filter(|(_, m)| emit(&m.plan).unwrap().manifest.persistent.unwrap().tasks.chunks(16).any(|t| t[15] > 0)).count();
    assert!(bulk >= 3, "only {bulk} corpus circuits copy weights in bulk");
    // `PCC_EMU_ONLY=name` runs one circuit of the corpus (when debugging the template).
    if let Ok(only) = std::env::var("PCC_EMU_ONLY") {
        corpus.retain(|(n, _)| *n == only);
    }
    // `PCC_EMU_STRUCTURE=FILE` runs a structure file instead (e.g. a suite model that misbehaves
    // on a GPU), on `PCC_EMU_BLOCKS` blocks (default 16) at batches 1 and 2.
    if let Ok(path) = std::env::var("PCC_EMU_STRUCTURE") {
        let c = pcc::codegen::model::load_structure(std::path::Path::new(&path)).unwrap();
        corpus = vec![("structure".into(), Model::random(c, 0).unwrap())];
    }
    for (name, model) in &corpus {
        let e = emit(&model.plan).unwrap();
        let p = e.manifest.persistent.as_ref().unwrap_or_else(|| panic!("{name}: no persistent pass"));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (i, t) in e.manifest.tables.iter().enumerate() {
            write_u32(&d.join(format!("tab{i}")), t);
        }
        write_f32(&d.join("sum"), &model.params.sum);
        write_f32(&d.join("table"), &model.params.leaf_table(&model.plan));
        write_f32(&d.join("prm"), &model.params.input);
        write_u32(&d.join("ech"), &p.children);
        let src = format!("{SHIM}{KERNEL_SHIM}{}{}", e.source, driver(model, &e.manifest));
        std::fs::write(d.join("prog.cpp"), src).unwrap();
        let cpu = model.cpu_engine().unwrap();
        // The fast tasks shift by a bound; with the threshold above every sum, each node takes the
        // exact fallback instead (a path real data seldom reaches).
        let variants: &[&str] = if name == "hclt128x6" { &["", "-DPCC_BOUND_MIN=3e38f"] } else { &[""] };
        for (vi, define) in variants.iter().enumerate() {
            let exe = d.join(format!("prog{vi}"));
            let mut cc = std::process::Command::new(&cxx);
            cc.args(["-O1", "-w", "-std=c++20", "-pthread"]);
            if !define.is_empty() {
                cc.arg(define);
            }
            let out = cc.arg("-o").arg(&exe).arg(d.join("prog.cpp")).output().unwrap();
            assert!(out.status.success(), "{name} {define}: {}", String::from_utf8_lossy(&out.stderr));
            run_configs(name, model, p, d, &exe, &cpu, &mixed_ev);
        }
    }
}

/// Run `exe` (one build of the driver) on each (batch, blocks) configuration of `name`.
#[allow(clippy::too_many_arguments)]
fn run_configs(
    name: &str,
    model: &Model,
    p: &pcc::runtime::cuda::PersistentForward,
    d: &std::path::Path,
    exe: &std::path::Path,
    cpu: &pcc::runtime::CpuEngine,
    mixed_ev: &Evidence,
) {
    // One block running every task only where that overflows its cached descriptors.
    let blocks: usize = std::env::var("PCC_EMU_BLOCKS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let file = [(1, blocks), (2, blocks)];
    let configs: &[(usize, usize)] = match name {
        "hclt4x200" => &[(1, 1), (2, 3)],
        "structure" => &file,
        _ => &[(1, 3), (2, 2), (3, 2), (SMALL_BATCH, 4)],
    };
    for &(batch, blocks) in configs {
        let s = schedule(p, blocks);
        for (f, v) in [("tasks", &s.tasks), ("deps", &s.deps), ("poff", &s.poff), ("plist", &s.plist)] {
            write_u32(&d.join(f), v);
        }
        let ev = if name == "mixed1" { mixed_ev.slice(0, batch) } else { common::random_evidence(model, batch, 0.3, 11 + batch as u64) };
        let (data, missing) = ev.transposed();
        write_f32(&d.join("data"), &data);
        std::fs::write(d.join("missing"), &missing).unwrap();
        let st = std::process::Command::new(exe).arg(d).args([batch.to_string(), blocks.to_string()]).output().unwrap();
        assert!(st.status.success(), "{name} B={batch} G={blocks}: {} {}", st.status, String::from_utf8_lossy(&st.stderr));
        let (want, got) = (read_f32(&d.join("ref")), read_f32(&d.join("got")));
        let ctl: Vec<u32> = std::fs::read(d.join("ctl")).unwrap().chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(ctl, vec![2, 0], "{name}: generation after two launches, block counter reset");
        let owner: Vec<u32> = std::fs::read(d.join("owner")).unwrap().chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(owner, s.owner, "{name}: every task ran on its scheduled block (trace)");
        // Every node row: inputs unchanged, every sum node as the per-depth kernels computed it.
        for (i, (&w, &g)) in want.iter().zip(&got).enumerate() {
            let ok = (w == g) || (w.is_finite() && g.is_finite() && (w - g).abs() <= 2e-5 * w.abs().max(1.0));
            assert!(ok, "{name} B={batch} G={blocks}: node {} sample {}: per-depth {w}, persistent {g}", i / batch, i % batch);
        }
        // The small-batch variants: every node as the batch kernels computed it.
        let small = read_f32(&d.join("small"));
        for (i, (&w, &g)) in want.iter().zip(&small).enumerate() {
            let ok = (w == g) || (w.is_finite() && g.is_finite() && (w - g).abs() <= 2e-5 * w.abs().max(1.0));
            assert!(ok, "{name} B={batch}: node {} sample {}: batch kernels {w}, small-batch variants {g}", i / batch, i % batch);
        }
        let ll = cpu.log_likelihood(&ev).unwrap();
        let root = model.plan.root as usize;
        for (smp, &l) in ll.iter().enumerate() {
            let g = got[root * batch + smp];
            assert!((g - l).abs() <= 1e-4 * l.abs().max(1.0), "{name} B={batch}: root {g} vs CPU {l}");
        }
    }
}

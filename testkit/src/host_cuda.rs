//! Support for the tests that compile generated CUDA for the host (`query_emulator`,
//! `persistent_emulator`): the driver's file I/O and sequential launch macro, and the binary files
//! the Rust side exchanges with it.

/// C++ that both host builds of the generated CUDA share, after their own shims (whose standard
/// headers must come before the `__noinline__` macro) and before the source: CUDA's
/// keywords and the few built-ins they treat alike, and the persistent kernel's bulk copies as
/// `memcpy` that complete their mbarrier's phase at once (a wait spins until the copy was issued).
pub const KERNEL_SHIM: &str = r#"
#include <cstring>
#include <sched.h>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
static inline float __int_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
static inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
struct float4 { float x, y, z, w; };
static inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
// Host launches run one thread at a time: a thread's warp is itself.
static inline unsigned pcc_host_lane_bit() { return 1u << (threadIdx.x & 31); }
#define __activemask() pcc_host_lane_bit()
#define __match_any_sync(mask, v) ((void)(v), pcc_host_lane_bit())
static inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
#define __noinline__ __attribute__((noinline))
#define PCC_HOST_EMULATION 1
// An mbarrier as its count of completed phases: a copy completes one (the kernel's mbarriers
// expect one copy per phase); a wait for parity P returns once phase P has completed.
static inline void pcc_mbar_init(unsigned long long* m) { __atomic_store_n(m, 0ull, __ATOMIC_RELEASE); }
static inline void pcc_tma(void* dst, const void* src, unsigned bytes, unsigned long long* m) {
    std::memcpy(dst, src, bytes);
    __atomic_fetch_add(m, 1ull, __ATOMIC_RELEASE);
}
static inline void pcc_mbar_wait(unsigned long long* m, unsigned parity) {
    while ((__atomic_load_n(m, __ATOMIC_ACQUIRE) & 1ull) == parity) sched_yield();
}
#define PCC_BULK(t) ((t)[15])
#define PCC_BULK_IDS 1
"#;

/// A shim for kernels that synchronize their block or warp, with the launch `LAUNCH_T(kernel,
/// threads, args…)`: every CUDA thread of a block an OS thread, `__syncthreads` a block barrier,
/// the warp shuffles and ballots a warp barrier around an exchange buffer, the atomics real
/// atomics; the grid's blocks run in turn (shared arrays are static, one block at a time).
pub const THREADED_SHIM: &str = r#"
#include <algorithm>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
typedef unsigned int u32;
struct pcc_dim3 { unsigned x, y, z; };
static thread_local pcc_dim3 blockIdx, threadIdx;
static pcc_dim3 blockDim, gridDim;
struct float4 { float x, y, z, w; };
static inline int min(int a, int b) { return a < b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static thread_local std::barrier<>* pcc_bar = nullptr;
static thread_local std::barrier<>* pcc_warp_bar = nullptr;
static thread_local unsigned* pcc_warp_buf = nullptr;
static int pcc_or_flag = 0;
static inline void __syncthreads() { pcc_bar->arrive_and_wait(); }
static inline int __syncthreads_or(int p) {
    pcc_bar->arrive_and_wait();
    if (p) __atomic_store_n(&pcc_or_flag, 1, __ATOMIC_RELAXED);
    pcc_bar->arrive_and_wait();
    const int r = __atomic_load_n(&pcc_or_flag, __ATOMIC_RELAXED);
    pcc_bar->arrive_and_wait();
    if (threadIdx.x == 0) __atomic_store_n(&pcc_or_flag, 0, __ATOMIC_RELAXED);
    pcc_bar->arrive_and_wait();
    return r;
}
static inline void __syncwarp() { pcc_warp_bar->arrive_and_wait(); }
// Every lane publishes a word, all meet, each reads the word of `src(lane)`, all meet again.
template <class F> static inline unsigned pcc_exchange(unsigned v, F src) {
    const unsigned lane = threadIdx.x & 31;
    pcc_warp_buf[lane] = v;
    pcc_warp_bar->arrive_and_wait();
    const int s = src(lane);
    const unsigned r = pcc_warp_buf[s >= 0 && s < 32 ? s : lane];
    pcc_warp_bar->arrive_and_wait();
    return r;
}
static inline unsigned pcc_bits(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline float pcc_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned __shfl_down_sync(unsigned, unsigned v, int d) { return pcc_exchange(v, [&](unsigned l) { return (int)l + d; }); }
static inline float __shfl_down_sync(unsigned, float v, int d) { return pcc_float(__shfl_down_sync(0u, pcc_bits(v), d)); }
static inline unsigned __shfl_up_sync(unsigned, unsigned v, int d) { return pcc_exchange(v, [&](unsigned l) { return (int)l - d; }); }
static inline unsigned __shfl_sync(unsigned, unsigned v, int s) { return pcc_exchange(v, [&](unsigned) { return s & 31; }); }
static inline float __shfl_sync(unsigned, float v, int s) { return pcc_float(__shfl_sync(0u, pcc_bits(v), s)); }
static inline unsigned __ballot_sync(unsigned, bool p) {
    const unsigned lane = threadIdx.x & 31;
    pcc_warp_buf[lane] = p ? 1u : 0u;
    pcc_warp_bar->arrive_and_wait();
    unsigned m = 0;
    for (int i = 0; i < 32; ++i) m |= pcc_warp_buf[i] << i;
    pcc_warp_bar->arrive_and_wait();
    return m;
}
static inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
#define __activemask() 0xffffffffu
// Not emulated: a kernel that reaches it aborts the host run.
static inline unsigned __match_any_sync(unsigned, unsigned long long) { std::abort(); }
static inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline float atomicAdd(float* p, float v) {
    unsigned* u = reinterpret_cast<unsigned*>(p);
    unsigned old = __atomic_load_n(u, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(u, &old, pcc_bits(pcc_float(old) + v), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return pcc_float(old);
}
// A launch of blocks of NB threads (a multiple of 32): NB threads walk the grid's blocks in turn,
// meeting at the block barrier between blocks (shared arrays are static, one block at a time).
// Each warp has an exchange word per lane and a wide buffer of 8 words per lane (warp-collective
// instructions of host_mma.rs).
static thread_local unsigned* pcc_warp_wide = nullptr;
#define LAUNCH_B(k, NB, threads, ...) do { const unsigned nb_ = (NB); long long T_ = (threads); unsigned g_ = (unsigned)((T_ + nb_ - 1) / nb_); \
    blockDim.x = nb_; gridDim.x = g_; \
    std::barrier<> bar_(nb_); std::vector<std::unique_ptr<std::barrier<>>> wb_; for (unsigned w = 0; w < nb_ / 32; ++w) wb_.emplace_back(new std::barrier<>(32)); \
    std::vector<unsigned> buf_(nb_), wide_(nb_ * 8); std::vector<std::thread> th_; \
    for (unsigned tx = 0; tx < nb_; ++tx) th_.emplace_back([&, tx] { threadIdx.x = tx; pcc_bar = &bar_; pcc_warp_bar = wb_[tx / 32].get(); \
        pcc_warp_buf = &buf_[(tx / 32) * 32]; pcc_warp_wide = &wide_[(tx / 32) * 32 * 8]; \
        for (unsigned gx = 0; gx < g_; ++gx) { blockIdx.x = gx; k(__VA_ARGS__); bar_.arrive_and_wait(); } }); \
    for (auto& t : th_) t.join(); } while (0)
#define LAUNCH_T(k, threads, ...) LAUNCH_B(k, 256, threads, __VA_ARGS__)
"#;

/// C++ for a driver (after a shim that declares `blockIdx`, `threadIdx`, `blockDim` and `gridDim`):
/// `LAUNCH(kernel, threads, args…)` runs a grid of 256-thread blocks one thread
/// at a time (kernels without intra-block synchronization), `rd<T>(path)` reads a binary file
/// (at least one element, as the engine uploads empty buffers).
pub const DRIVER_PRELUDE: &str = r#"
#define LAUNCH(k, threads, ...) do { long long T_ = (threads); unsigned g_ = (unsigned)((T_ + 255) / 256); blockDim.x = 256; gridDim.x = g_; \
    for (unsigned gx = 0; gx < g_; ++gx) for (unsigned tx = 0; tx < 256; ++tx) { blockIdx.x = gx; threadIdx.x = tx; k(__VA_ARGS__); } } while (0)
template <class T> static std::vector<T> rd(const std::string& path) {
    FILE* f = fopen(path.c_str(), "rb"); if (!f) { perror(path.c_str()); exit(2); }
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    std::vector<T> v(n / sizeof(T) > 0 ? n / sizeof(T) : 1); if (n > 0 && fread(v.data(), 1, n, f) != (size_t)n) exit(3); fclose(f); return v;
}
"#;

/// Forward launch `k` as one thread per (row, sample): an input layer's per-sample variant where
/// it has one (`KernelSpec::small`; the row kernel of categorical leaves shares a row between a
/// warp's lanes in shared memory, which a sequential host run, `LAUNCH` one thread at a time,
/// cannot run; `tests/leaf_rows.rs` runs it on threads), else `k`.
pub fn per_sample_launch(k: &pcc::runtime::cuda::KernelSpec) -> &pcc::runtime::cuda::KernelSpec {
    match &k.small {
        Some(s) if k.name.starts_with("input_") => s,
        _ => k,
    }
}

/// Little-endian `u32`s; an empty slice writes one 0 (what the engine uploads for it).
pub fn write_u32(path: &std::path::Path, v: &[u32]) {
    let v = if v.is_empty() { &[0u32][..] } else { v };
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

/// Little-endian `f32`s; an empty slice writes one 0.
pub fn write_f32(path: &std::path::Path, v: &[f32]) {
    let v = if v.is_empty() { &[0f32][..] } else { v };
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

pub fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The text of kernel `name` in `source`: from its `extern "C"` line through its closing brace.
pub fn kernel_text<'a>(source: &'a str, name: &str) -> &'a str {
    let at = source.find(&format!(" {name}(")).unwrap_or_else(|| panic!("kernel {name} in the source"));
    let start = source[..at].rfind("extern \"C\"").expect("its extern line");
    braced(source, start, name)
}

/// `source` from `start` through the brace that closes the first `{` after it.
fn braced<'a>(source: &'a str, start: usize, name: &str) -> &'a str {
    let body = start + source[start..].find('{').expect("its body");
    let mut depth = 0;
    for (i, ch) in source[body..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &source[start..body + i + 1];
                }
            }
            _ => {}
        }
    }
    panic!("{name}: unbalanced braces")
}

/// The text of device function `name` in `source`: from the start of its signature's line
/// (one line, as the templates write them) through its closing brace.
pub fn device_fn_text<'a>(source: &'a str, name: &str) -> &'a str {
    let at = source.find(&format!(" {name}(")).unwrap_or_else(|| panic!("function {name} in the source"));
    let start = source[..at].rfind('\n').map_or(0, |i| i + 1);
    braced(source, start, name)
}

/// The host C++ compiler (`$CXX`, else `c++`), or `None` with a note when there is none (an
/// error in CI, which must run the host builds).
pub fn host_cxx() -> Option<String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if std::process::Command::new(&cxx).arg("--version").output().is_ok() {
        return Some(cxx);
    }
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "a C++ compiler is required in CI");
    eprintln!("note: no C++ compiler ({cxx}); skipping the host run");
    None
}

/// `src` (a program on [`THREADED_SHIM`]) built with `cxx` in `dir` as `prog`; panics with the
/// compiler's first messages, prefixed by `what`, when it does not build.
pub fn build_threaded(cxx: &str, dir: &std::path::Path, src: &str, what: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("prog.cpp"), src).unwrap();
    let exe = dir.join("prog");
    let out = std::process::Command::new(cxx).args(["-O1", "-w", "-std=c++20", "-pthread", "-o"]).arg(&exe).arg(dir.join("prog.cpp")).output().unwrap();
    assert!(out.status.success(), "{what}: host build: {}", String::from_utf8_lossy(&out.stderr).chars().take(4000).collect::<String>());
    exe
}

/// The index table `a` (a [`pcc::runtime::cuda::KernelArg::Table`]) of manifest `m`.
pub fn manifest_table(m: &pcc::runtime::cuda::Manifest, a: &pcc::runtime::cuda::KernelArg) -> Vec<u32> {
    let pcc::runtime::cuda::KernelArg::Table(t) = a else { panic!("a table: {a:?}") };
    m.tables[*t as usize].clone()
}

/// A small xorshift generator for the host tests' data.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1) with 24 bits.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

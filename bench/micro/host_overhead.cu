// Microbenchmark behind issue 5's batch-1 latency (docs/perf-log.md, 2026-11-27): where the ~34 µs
// between the persistent kernel's span and a host-to-host `log_likelihood` go. Host-to-host medians
// (2,000 calls each, after warm-up) of the pieces of one small forward call, eager and as a graph:
// page-locked copies in and out, an input-layer-sized kernel, a cooperative launch of one
// 576-thread block per SM with ~200 KiB of shared memory, and the alternatives: results read back
// through mapped (zero-copy) host memory with the host spinning on a flag instead of a copy and a
// stream synchronize, inputs read by the kernel from mapped memory, one merged input copy, and a
// programmatic dependent launch (PDL) of the cooperative kernel. Also the SM clock while spinning.
// Standalone CUDA, no pcc code:
//   nvcc -O3 -arch=sm_90a -std=c++17 -o host_overhead bench/micro/host_overhead.cu && ./host_overhead
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } } while (0)

typedef unsigned long long u64;
constexpr int VARS = 784, LEAVES = 784 * 128, SMEM = 200 * 1024, THREADS = 576;

__device__ __forceinline__ u64 gt() { u64 t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }

// Input-layer-like kernel: thread per leaf, a table lookup on its variable's value.
__global__ void input_like(float* node, const float* data, const unsigned char* missing, const float* table, int pdl_trigger) {
    if (pdl_trigger) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= LEAVES) return;
    const int v = t % VARS;
    node[t] = missing[v] ? 0.f : table[t * 2 + ((int)data[v] & 1)];
}

// Persistent-kernel-like: every block touches its shared memory; block 0 writes the "root" (the sum
// of 128 leaves) to `out` (device or mapped host), then, when `flag` is set, a system fence and the
// flag (the call's sequence number read from `seq`).
__global__ void __launch_bounds__(THREADS) coop_like(const float* node, float* out, volatile unsigned* flag, const volatile unsigned* seq, int pdl_wait) {
    extern __shared__ float sm[];
    unsigned s = 0;
    if (blockIdx.x == 0 && threadIdx.x == 0 && flag) s = *seq;
    sm[threadIdx.x] = threadIdx.x;
    if (pdl_wait) asm volatile("griddepcontrol.wait;" ::: "memory");
    __syncthreads();
    if (blockIdx.x == 0 && threadIdx.x < 32) {
        float a = 0.f;
        for (int i = threadIdx.x; i < 128; i += 32) a += node[i];
        for (int o = 16; o; o >>= 1) a += __shfl_xor_sync(~0u, a, o);
        if (threadIdx.x == 0) {
            out[0] = a + sm[5];
            if (flag) { __threadfence_system(); *flag = s; }
        }
    }
}

// Reads the batch from mapped host memory into device memory (one block).
__global__ void copy_in(const float* hdata, const unsigned char* hmissing, float* data, unsigned char* missing) {
    for (int i = threadIdx.x; i < VARS; i += blockDim.x) { data[i] = hdata[i]; missing[i] = hmissing[i]; }
}

__global__ void empty() {}

__global__ void clock_rate(u64* out) {
    const u64 t0 = gt();
    const long long c0 = clock64();
    while (gt() - t0 < 2000000) {}
    out[0] = gt() - t0;
    out[1] = clock64() - c0;
}


static void bench(const char* name, const std::function<void()>& call, int iters = 2000) {
    for (int i = 0; i < 200; ++i) call();
    std::vector<double> t(iters);
    for (int i = 0; i < iters; ++i) {
        auto a = std::chrono::steady_clock::now();
        call();
        t[i] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count();
    }
    std::vector<double> s = t;
    std::sort(s.begin(), s.end());
    printf("%-64s median %7.2f us  p10 %7.2f  p90 %7.2f\n", name, s[iters / 2], s[iters / 10], s[iters * 9 / 10]);
}

int main() {
    CK(cudaSetDevice(0));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const int sms = prop.multiProcessorCount;
    printf("device %s, %d SMs\n", prop.name, sms);
    CK(cudaFuncSetAttribute(coop_like, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    float *node, *data, *table, *dout;
    unsigned char* missing;
    CK(cudaMalloc(&node, LEAVES * 4));
    CK(cudaMalloc(&data, (VARS + 256) * 4));
    CK(cudaMalloc(&missing, VARS));
    CK(cudaMalloc(&table, LEAVES * 8));
    CK(cudaMemset(table, 0, LEAVES * 8));
    CK(cudaMalloc(&dout, 64));
    float *hdata, *hout;
    unsigned char* hmissing;
    unsigned *hflag, *hseq;
    CK(cudaHostAlloc(&hdata, (VARS + 256) * 4, cudaHostAllocMapped));
    CK(cudaHostAlloc(&hmissing, VARS, cudaHostAllocMapped));
    CK(cudaHostAlloc(&hout, 64, cudaHostAllocMapped));
    CK(cudaHostAlloc(&hflag, 64, cudaHostAllocMapped));
    CK(cudaHostAlloc(&hseq, 64, cudaHostAllocMapped));
    memset(hdata, 0, (VARS + 256) * 4);
    memset(hmissing, 0, VARS);
    *hflag = 0;
    *hseq = 0;
    float *mdata, *mout;
    unsigned char* mmissing;
    unsigned *mflag, *mseq;
    CK(cudaHostGetDevicePointer(&mdata, hdata, 0));
    CK(cudaHostGetDevicePointer(&mmissing, hmissing, 0));
    CK(cudaHostGetDevicePointer(&mout, hout, 0));
    CK(cudaHostGetDevicePointer(&mflag, hflag, 0));
    CK(cudaHostGetDevicePointer(&mseq, hseq, 0));
    {
        u64* c;
        CK(cudaMalloc(&c, 16));
        clock_rate<<<1, 1, 0, st>>>(c);
        u64 h[2];
        CK(cudaMemcpy(h, c, 16, cudaMemcpyDeviceToHost));
        printf("SM clock while spinning: %.0f MHz\n", (double)h[1] / (double)h[0] * 1e3);
    }
    const int in_blocks = (LEAVES + 255) / 256;
    auto coop = [&](float* out, unsigned* flag, unsigned* seq) {
        void* args[] = {&node, &out, &flag, &seq, nullptr};
        int pdl = 0;
        args[4] = &pdl;
        CK(cudaLaunchCooperativeKernel((void*)coop_like, dim3(sms), dim3(THREADS), args, SMEM, st));
    };
    auto plain = [&](float* out, unsigned* flag, unsigned* seq) {
        coop_like<<<sms, THREADS, SMEM, st>>>(node, out, flag, seq, 0);
    };
    auto coop_pdl = [&](float* out, unsigned* flag, unsigned* seq, bool cooperative) -> cudaError_t {
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(sms);
        cfg.blockDim = dim3(THREADS);
        cfg.dynamicSmemBytes = SMEM;
        cfg.stream = st;
        cudaLaunchAttribute at[2];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        at[1].id = cudaLaunchAttributeCooperative;
        at[1].val.cooperative = 1;
        cfg.attrs = at;
        cfg.numAttrs = cooperative ? 2 : 1;
        return cudaLaunchKernelEx(&cfg, coop_like, (const float*)node, out, (volatile unsigned*)flag, (const volatile unsigned*)seq, 1);
    };
    auto h2d2 = [&] {
        CK(cudaMemcpyAsync(data, hdata, VARS * 4, cudaMemcpyHostToDevice, st));
        CK(cudaMemcpyAsync(missing, hmissing, VARS, cudaMemcpyHostToDevice, st));
    };
    auto d2h = [&] { CK(cudaMemcpyAsync(hout, dout, 4, cudaMemcpyDeviceToHost, st)); };
    auto sync = [&] { CK(cudaStreamSynchronize(st)); };
    unsigned seq = 0;
    // Host side of a zero-copy result: a new sequence number before the launch, then spin on the flag.
    auto spin = [&] {
        while (__atomic_load_n(hflag, __ATOMIC_ACQUIRE) != seq) {}
    };
    auto next_seq = [&] { ++seq; __atomic_store_n(hseq, seq, __ATOMIC_RELEASE); };

    bench("empty kernel + sync", [&] { empty<<<1, 32, 0, st>>>(); sync(); });
    bench("H2D 3136 B + H2D 784 B (pinned) + sync", [&] { h2d2(); sync(); });
    bench("H2D 3920 B (one merged copy) + sync", [&] { CK(cudaMemcpyAsync(data, hdata, VARS * 5, cudaMemcpyHostToDevice, st)); sync(); });
    bench("D2H 4 B (pinned) + sync", [&] { d2h(); sync(); });
    bench("input-like kernel (100k threads) + sync", [&] { input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 0); sync(); });
    bench("copy-in kernel from mapped host memory + sync", [&] { copy_in<<<1, 256, 0, st>>>(mdata, mmissing, data, missing); sync(); });
    bench("input-like kernel reading mapped host memory + sync", [&] { input_like<<<in_blocks, 256, 0, st>>>(node, mdata, mmissing, table, 0); sync(); });
    bench("plain launch 1 block/SM, 200 KiB smem + sync", [&] { plain(dout, nullptr, nullptr); sync(); });
    bench("cooperative launch 1 block/SM, 200 KiB smem + sync", [&] { coop(dout, nullptr, nullptr); sync(); });
    bench("cooperative, result by mapped flag (spin, no sync)", [&] { next_seq(); coop(mout, mflag, mseq); spin(); });
    bench("eager: H2D x2, input, coop, D2H, sync", [&] {
        h2d2(); input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 0); coop(dout, nullptr, nullptr); d2h(); sync();
    });
    bench("eager: H2D x2, input, coop writing mapped flag, spin", [&] {
        next_seq(); h2d2(); input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 0); coop(mout, mflag, mseq); spin();
    });
    bench("eager: input reading mapped, coop writing mapped flag, spin", [&] {
        next_seq(); input_like<<<in_blocks, 256, 0, st>>>(node, mdata, mmissing, table, 0); coop(mout, mflag, mseq); spin();
    });
    bench("eager: copy-in kernel, input, coop writing mapped flag, spin", [&] {
        next_seq(); copy_in<<<1, 256, 0, st>>>(mdata, mmissing, data, missing); input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 0);
        coop(mout, mflag, mseq); spin();
    });
    // Graphs of the same sequences.
    auto graph = [&](const std::function<void()>& rec) {
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        rec();
        CK(cudaStreamEndCapture(st, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        CK(cudaGraphUpload(ge, st));
        return ge;
    };
    cudaGraphExec_t g1 = graph([&] { input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 0); coop(dout, nullptr, nullptr); });
    bench("graph[input, coop] with H2D x2 before, D2H after, sync", [&] { h2d2(); CK(cudaGraphLaunch(g1, st)); d2h(); sync(); });
    cudaGraphExec_t g2 = graph([&] { h2d2(); input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 0); coop(dout, nullptr, nullptr); d2h(); });
    bench("graph[H2D x2, input, coop, D2H] + sync", [&] { CK(cudaGraphLaunch(g2, st)); sync(); });
    cudaGraphExec_t g3 = graph([&] { input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 0); coop(mout, mflag, mseq); });
    bench("graph[input, coop writing mapped flag] with H2D x2 before, spin", [&] { next_seq(); h2d2(); CK(cudaGraphLaunch(g3, st)); spin(); });
    cudaGraphExec_t g4 = graph([&] { copy_in<<<1, 256, 0, st>>>(mdata, mmissing, data, missing); input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 0); coop(mout, mflag, mseq); });
    bench("graph[copy-in kernel, input, coop writing mapped flag], spin", [&] { next_seq(); CK(cudaGraphLaunch(g4, st)); spin(); });
    cudaGraphExec_t g5 = graph([&] { input_like<<<in_blocks, 256, 0, st>>>(node, mdata, mmissing, table, 0); coop(mout, mflag, mseq); });
    bench("graph[input reading mapped, coop writing mapped flag], spin", [&] { next_seq(); CK(cudaGraphLaunch(g5, st)); spin(); });
    // PDL: the cooperative kernel launched as a programmatic dependent of the input kernel.
    input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 1);
    cudaError_t e = coop_pdl(dout, nullptr, nullptr, true);
    printf("PDL + cooperative launch: %s\n", cudaGetErrorString(e));
    cudaGetLastError();
    sync();
    const bool pdl_coop = e == cudaSuccess;
    bench(pdl_coop ? "eager PDL: H2D x2, input, coop (PDL), D2H, sync" : "eager PDL: H2D x2, input, plain (PDL), D2H, sync", [&] {
        h2d2(); input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 1); CK(coop_pdl(dout, nullptr, nullptr, pdl_coop)); d2h(); sync();
    });
    cudaGraphExec_t g6 = graph([&] { input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 1); CK(coop_pdl(mout, mflag, mseq, pdl_coop)); });
    bench("graph[input, coop (PDL) writing mapped flag] with H2D x2 before, spin", [&] { next_seq(); h2d2(); CK(cudaGraphLaunch(g6, st)); spin(); });
    cudaGraphExec_t g7 = graph([&] { copy_in<<<1, 256, 0, st>>>(mdata, mmissing, data, missing); input_like<<<in_blocks, 256, 0, st>>>(node, data, missing, table, 1); CK(coop_pdl(mout, mflag, mseq, pdl_coop)); });
    bench("graph[copy-in, input, coop (PDL) writing mapped flag], spin", [&] { next_seq(); CK(cudaGraphLaunch(g7, st)); spin(); });
    CK(cudaStreamSynchronize(st));
    CK(cudaGetLastError());
    printf("done\n");
    return 0;
}

// Microbenchmark behind the persistent kernel's design (docs/perf-log.md, 2026-11-27): how fast one
// SM takes in a 64 KiB weight block by bulk copy (TMA) or by ld.global.cg, alone and with every SM
// streaming; the latency of a warp's eight independent L2 loads with and without a bulk-copy stream
// in flight on its SM; the one-way hand-off latency between the two CTAs of a cluster (st.async
// with complete_tx on the peer's mbarrier). Standalone CUDA, no pcc code:
//   nvcc -O3 -arch=sm_90a -std=c++17 -o tma_ingest bench/micro/tma_ingest.cu && ./tma_ingest
// Results: bench/results/2026-11-27-h200-tma-ingest-microbench.txt.
#ifndef __CUDACC_RTC__
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#endif
typedef unsigned int u32;
typedef unsigned long long u64;
__device__ __forceinline__ u32 sa(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(u64* m) { asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(sa(m))); asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
__device__ __forceinline__ void expect(u64* m, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(sa(m)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void copy(void* dst, const void* src, u32 bytes, u64* m, int pol_kind) {
    u64 pol;
    if (pol_kind == 0) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    else asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol));
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;"
                 :: "r"(sa(dst)), "l"(src), "r"(bytes), "r"(sa(m)), "l"(pol) : "memory");
}
__device__ __forceinline__ void tma(void* dst, const void* src, u32 bytes, u64* m, int pol_kind) { expect(m, bytes); copy(dst, src, bytes, m, pol_kind); }
__device__ __forceinline__ void mbar_wait(u64* m, u32 parity) {
    u32 done = 0;
    while (!done) asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(sa(m)), "r"(parity) : "memory");
}
__device__ __forceinline__ u64 gt() { u64 t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }
// mode 0: TMA, `chunks` copies per block of `bytes`, `depth` blocks in flight; mode 1: 512 threads ld.global.cg float4 into smem.
// src region of block b: src + b * region + (rep % wrap) * bytes
extern "C" __global__ void __launch_bounds__(576) ingest(const float* src, size_t region, int wrap, int reps, int bytes, int chunks, int mode, int pol, u64* out, float* sink) {
    extern __shared__ __align__(128) unsigned char sm[];
    u64* mb = (u64*)sm;
    float* slot = (float*)(sm + 128);
    const char* base = (const char*)src + blockIdx.x * region;
    if (threadIdx.x == 0) for (int i = 0; i < 4; ++i) mbar_init(mb + i);
    __syncthreads();
    u64 t0 = gt();
    long long c0 = clock64();
    float acc = 0.f;
    if (mode == 0) {
        if (threadIdx.x == 0) {
            u32 ph[2] = {0, 0};
            // two slots, keep 2 in flight
            for (int r = 0; r < reps + 2; ++r) {
                int s = r & 1;
                if (r >= 2) { mbar_wait(mb + s, ph[s]); ph[s] ^= 1; }
                if (r < reps) {
                    const char* p = base + (size_t)(r % wrap) * bytes;
                    int cb = bytes / chunks;
                    // all chunks complete on the same mbarrier: expect_tx per chunk
                    expect(mb + s, bytes);
                    for (int c = 0; c < chunks; ++c) copy((char*)slot + s * bytes + c * cb, p + c * cb, cb, mb + s, pol);
                }
            }
        }
    } else {
        for (int r = 0; r < reps; ++r) {
            const float4* p = (const float4*)(base + (size_t)(r % wrap) * bytes);
            int n = bytes / 16;
            float4 v[8];
            if (threadIdx.x < 512) {
#pragma unroll
                for (int i = 0; i < 8; ++i) { int j = threadIdx.x + i * 512; v[i] = j < n ? __ldcg(p + j) : make_float4(0,0,0,0); }
#pragma unroll
                for (int i = 0; i < 8; ++i) { int j = threadIdx.x + i * 512; if (j < n) ((float4*)slot)[j] = v[i]; }
            }
            __syncthreads();
        }
    }
    __syncthreads();
    long long c1 = clock64();
    u64 t1 = gt();
    acc += slot[threadIdx.x];
    if (acc == 12345.f) sink[0] = acc;
    if (threadIdx.x == 0) { out[blockIdx.x * 2] = t1 - t0; out[blockIdx.x * 2 + 1] = c1 - c0; }
}
// Latency of one warp's 8 independent ld.cg (L2-resident) while thread 32 streams TMA copies (or not).
extern "C" __global__ void __launch_bounds__(64) lat(const float* hot, const float* stream_src, int stream, int bytes, u64* out, float* sink) {
    extern __shared__ __align__(128) unsigned char sm[];
    u64* mb = (u64*)sm;
    float* slot = (float*)(sm + 128);
    if (threadIdx.x == 0) for (int i = 0; i < 2; ++i) mbar_init(mb + i);
    __syncthreads();
    if (threadIdx.x == 32) {
        if (stream) {
            u32 ph[2] = {0, 0};
            for (int r = 0; r < 400; ++r) {
                int s = r & 1;
                if (r >= 2) { mbar_wait(mb + s, ph[s]); ph[s] ^= 1; }
                tma((char*)slot + s * bytes, (const char*)stream_src + (size_t)r * bytes, bytes, mb + s, 0);
            }
            mbar_wait(mb + 0, ph[0]); mbar_wait(mb + 1, ph[1]);
        }
    } else if (threadIdx.x < 32) {
        float acc = 0.f;
        long long tot = 0, mx = 0;
        for (int it = 0; it < 100; ++it) {
            long long c0 = clock64();
            float v[8];
#pragma unroll
            for (int i = 0; i < 8; ++i) v[i] = __ldcg(hot + (it * 8 + i) * 32 + threadIdx.x);
#pragma unroll
            for (int i = 0; i < 8; ++i) acc += v[i];
            __syncwarp();
            long long d = clock64() - c0;
            tot += d; mx = d > mx ? d : mx;
            long long w0 = clock64(); while (clock64() - w0 < 2000) {}
        }
        if (threadIdx.x == 0) { out[0] = tot / 100; out[1] = mx; }
        if (acc == 12345.f) sink[0] = acc;
    }
}
// One-way handoff latency inside a 2-CTA cluster: st.async with complete_tx on the peer's mbarrier.
extern "C" __global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(32) pingpong(u64* out, int iters) {
    __shared__ __align__(8) u64 mb;
    __shared__ __align__(16) u32 box[4];
    u32 rank;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    if (threadIdx.x == 0) mbar_init(&mb);
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
    const u32 peer = rank ^ 1;
    u32 rbox, rmb;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(rbox) : "r"(sa(box)), "r"(peer));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(rmb) : "r"(sa(&mb)), "r"(peer));
    long long c0 = clock64();
    u64 t0 = gt();
    if (threadIdx.x == 0) {
        u32 ph = 0;
        for (int i = 0; i < iters; ++i) {
            expect(&mb, 4);
            if (rank == 0) {
                asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.u32 [%0], %1, [%2];" :: "r"(rbox), "r"((u32)i), "r"(rmb) : "memory");
                mbar_wait(&mb, ph);
            } else {
                mbar_wait(&mb, ph);
                asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.u32 [%0], %1, [%2];" :: "r"(rbox), "r"((u32)i), "r"(rmb) : "memory");
            }
            ph ^= 1;
        }
    }
    long long c1 = clock64();
    u64 t1 = gt();
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
    if (threadIdx.x == 0 && rank == 0) { out[0] = t1 - t0; out[1] = c1 - c0; out[2] = box[0]; }
}
#ifndef __CUDACC_RTC__
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)
int main() {
    size_t big = (size_t)1 << 30;
    float* src; CK(cudaMalloc(&src, big * 2)); CK(cudaMemset(src, 0, big * 2));
    float* sink; CK(cudaMalloc(&sink, 64));
    u64* out; CK(cudaMalloc(&out, 8 * 2 * 256));
    CK(cudaFuncSetAttribute(ingest, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    CK(cudaFuncSetAttribute(lat, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    int reps = 200, bytes = 65536;
    struct Cfg { const char* name; int grid, mode, chunks, hot, pol; };
    Cfg cfgs[] = {
        {"tma 1 blk, L2-hot (same 64K x4)", 1, 0, 1, 1, 0},
        {"tma 1 blk, HBM stream", 1, 0, 1, 0, 0},
        {"tma 1 blk, HBM stream, 4 chunks", 1, 0, 4, 0, 0},
        {"tma 1 blk, L2-hot 16 chunks", 1, 0, 16, 1, 0},
        {"ldcg 1 blk, L2-hot", 1, 1, 1, 1, 0},
        {"ldcg 1 blk, HBM", 1, 1, 1, 0, 0},
        {"tma 8 blk, HBM", 8, 0, 1, 0, 0},
        {"tma 132 blk, HBM", 132, 0, 1, 0, 0},
        {"tma 132 blk, L2-hot", 132, 0, 1, 1, 0},
        {"ldcg 132 blk, HBM", 132, 1, 1, 0, 0},
    };
    for (auto& c : cfgs) {
        size_t region = c.hot ? (size_t)bytes * 4 : (size_t)bytes * reps;
        int wrap = c.hot ? 4 : reps;
        if (region * c.grid > big * 2) region = big * 2 / c.grid;
        int chunks = c.chunks;
        for (int w = 0; w < 2; ++w) {
            ingest<<<c.grid, 576, 2 * bytes + 128>>>(src, region, wrap, reps, bytes, chunks, c.mode, c.pol, out, sink);
            CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
        }
        std::vector<u64> h(2 * c.grid); CK(cudaMemcpy(h.data(), out, 16 * c.grid, cudaMemcpyDeviceToHost));
        u64 mxns = 0; for (int b = 0; b < c.grid; ++b) mxns = std::max(mxns, h[2 * b]);
        double per = (double)mxns / reps;
        printf("%-40s %7.1f ns per 64 KiB per block = %6.1f B/ns per SM, %8.1f GB/s total (cycles/rep %.0f)\n", c.name, per, bytes / per, bytes / per * c.grid, (double)h[1] / reps);
    }
    for (int s = 0; s < 2; ++s) {
        lat<<<1, 64, 2 * bytes + 128>>>(src, src + ((size_t)64 << 20), s, bytes, out, sink);
        CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
        u64 h[2]; CK(cudaMemcpy(h, out, 16, cudaMemcpyDeviceToHost));
        printf("8 independent ldcg (L2 hit), %s TMA stream: mean %llu cycles, max %llu\n", s ? "WITH" : "without", h[0], h[1]);
    }
    {
        int iters = 10000;
        pingpong<<<2, 32>>>(out, iters);
        CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
        u64 h[3]; CK(cudaMemcpy(h, out, 24, cudaMemcpyDeviceToHost));
        printf("cluster-2 st.async ping-pong: one-way %.1f ns, %.0f cycles (last %llu)\n", (double)h[0] / iters / 2, (double)h[1] / iters / 2, h[2]);
    }
    return 0;
}
#endif

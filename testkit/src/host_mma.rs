//! Tensor-core kernels on the host: the generated CUDA of a training pass (tensor-core sums,
//! staged backward, categorical statistics) compiled for the host and run on threads, so the
//! kernels' own text is checked against the CPU engine without a GPU.
//!
//! [`host_source`] keeps the head (prelude, tensor-core helpers, leaf families) and the units of
//! the forward and backward passes of an emitted source (not EM, queries or the persistent
//! pass), replaces the helpers whose instructions address shared memory (`cp.async`, `cvta`,
//! `ldmatrix`) by [`MMA_SHIM`]'s host versions, and rewrites every remaining inline-assembly
//! statement into a host call ([`rewrite_asm`]; an instruction it does not know fails the test).
//! The host versions follow the PTX ISA: `mma.sync` m16n8k16 (bf16) and m16n8k8 (tf32) as
//! warp-collective exchanges of the fragment registers (the layouts of "Matrix Fragments for
//! mma.m16n8k16 / m16n8k8"), `ldmatrix .trans` likewise, copies as synchronous `memcpy`, the
//! conversions with their rounding (bf16 to nearest even, tf32 to nearest, ties away).

/// C++ after [`crate::host_cuda::THREADED_SHIM`]: the host versions of the tensor-core
/// instructions and helpers, and the CUDA vector types and intrinsics the kernels use.
pub const MMA_SHIM: &str = r#"
#include <cmath>
struct uint2 { u32 x, y; };
struct uint4 { u32 x, y, z, w; };
struct float2 { float x, y; };
static inline uint4 make_uint4(u32 a, u32 b, u32 c, u32 d) { return uint4{a, b, c, d}; }
static inline float2 make_float2(float a, float b) { return float2{a, b}; }
static inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
static inline float pcc_host_expf(float x) { return expf(x); }
static inline float pcc_host_logf(float x) { return logf(x); }
#define __expf pcc_host_expf
#define __logf pcc_host_logf
static inline float __int_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline float __shfl_xor_sync(unsigned, float v, int m) { return pcc_float(pcc_exchange(pcc_bits(v), [&](unsigned l) { return (int)(l ^ (unsigned)m); })); }
static inline u32 __byte_perm(u32 x, u32 y, u32 s) {
    const unsigned long long v = (unsigned long long)y << 32 | x;
    u32 r = 0;
    for (int i = 0; i < 4; ++i) r |= (u32)((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
    return r;
}
// cvt.rn.bf16x2.f32 (to nearest even; no NaN in these kernels) and cvt.rna.tf32.f32 (ties away).
static inline u32 pcc_h_bf16(float f) { const u32 u = pcc_bits(f); return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16; }
static inline u32 pcc_h_bf16x2(float hi, float lo) { return pcc_h_bf16(hi) << 16 | pcc_h_bf16(lo); }
static inline u32 pcc_h_tf32(float f) { return (pcc_bits(f) + 0x1000u) & 0xffffe000u; }
static inline float pcc_h_half(u32 w, int hi) { return pcc_float(hi ? (w & 0xffff0000u) : (w << 16)); }
// Every lane publishes n words into its warp's wide buffer; all meet.
static inline const u32* pcc_h_publish(const u32* w, int n) {
    u32* mine = pcc_warp_wide + (threadIdx.x & 31) * 8;
    for (int i = 0; i < n; ++i) mine[i] = w[i];
    pcc_warp_bar->arrive_and_wait();
    return pcc_warp_wide;
}
// mma.sync m16n8k16 bf16 (K16) or m16n8k8 tf32: D += A·B, A at words 0..3, B at 4..5 of each lane.
static inline void pcc_h_mma(bool bf16, float& d0, float& d1, float& d2, float& d3, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    const u32 mine[6] = {a0, a1, a2, a3, b0, b1};
    const u32* W = pcc_h_publish(mine, 6);
    auto A = [&](int r, int k) {
        if (bf16) { const u32 w = W[((r & 7) * 4 + ((k & 7) >> 1)) * 8 + (r >> 3) + 2 * (k >> 3)]; return pcc_h_half(w, k & 1); }
        return pcc_float(W[((r & 7) * 4 + (k & 3)) * 8 + (r >> 3) + 2 * (k >> 2)] & 0xffffe000u);
    };
    auto B = [&](int k, int n) {
        if (bf16) { const u32 w = W[(n * 4 + ((k & 7) >> 1)) * 8 + 4 + (k >> 3)]; return pcc_h_half(w, k & 1); }
        return pcc_float(W[(n * 4 + (k & 3)) * 8 + 4 + (k >> 2)] & 0xffffe000u);
    };
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, K = bf16 ? 16 : 8;
    float* d[4] = {&d0, &d1, &d2, &d3};
    for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        float s = 0.f;
        for (int k = 0; k < K; ++k) s += A(row, k) * B(k, col);
        *d[e] += s;
    }
    pcc_warp_bar->arrive_and_wait();  // the buffer is read before any lane publishes again
}
// Host versions of mma_core's shared-memory helpers: copies complete at once.
static inline void pcc_cp16(void* s, const void* g) { std::memcpy(s, g, 16); }
static inline void pcc_cp4(void* s, const void* g) { std::memcpy(s, g, 4); }
static inline void pcc_cp_commit() {}
static inline void pcc_cp_wait_all() {}
// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: lanes 8j..8j + 7 give the rows of matrix j;
// register j of lane (g, t) receives its elements (2t, g) (low half) and (2t + 1, g).
static inline void pcc_ldsm_x4_t(u32 (&d)[4], const u32* p) {
    u32 mine[2];
    std::memcpy(mine, &p, sizeof p);
    const u32* W = pcc_h_publish(mine, 2);
    auto row = [&](int l) { const u32* q; std::memcpy(&q, W + l * 8, sizeof q); return reinterpret_cast<const unsigned short*>(q); };
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int j = 0; j < 4; ++j) d[j] = (u32)row(8 * j + 2 * t)[g] | (u32)row(8 * j + 2 * t + 1)[g] << 16;
    pcc_warp_bar->arrive_and_wait();
}
"#;

/// Helpers of the head that [`MMA_SHIM`] defines instead (they address shared memory by its
/// 32-bit window, which a host pointer does not fit).
const SHIMMED: [&str; 6] = ["pcc_cp_smem", "pcc_cp16", "pcc_cp4", "pcc_cp_commit", "pcc_cp_wait_all", "pcc_ldsm_x4_t"];

/// Units of an emitted source that a training pass does not launch (or that need more than
/// [`MMA_SHIM`]): EM, the queries and the persistent small-batch pass.
const SKIPPED_UNITS: [&str; 3] = ["em", "queries", "persistent"];

/// `source` (an emitted `.cu`) for the host: the head and the pass units, shimmed helpers
/// removed, inline assembly rewritten ([`rewrite_asm`]).
pub fn host_source(source: &str) -> String {
    let marker = "// @pcc-unit ";
    let mut kept = String::new();
    let mut keep = true;
    for line in source.split_inclusive('\n') {
        if let Some(name) = line.trim_start().strip_prefix(marker) {
            keep = !SKIPPED_UNITS.contains(&name.trim());
        }
        if keep {
            kept.push_str(line);
        }
    }
    for name in SHIMMED {
        if kept.contains(&format!(" {name}(")) {
            let text = crate::host_cuda::device_fn_text(&kept, name).to_string();
            kept = kept.replacen(&text, "", 1);
        }
    }
    rewrite_asm(&kept)
}

/// Every `asm(…);` / `asm volatile(…);` statement of `text` as a host call (`MMA_SHIM`), by its
/// instruction; panics on an instruction it does not know.
pub fn rewrite_asm(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = find_asm(rest) {
        out.push_str(&rest[..at]);
        let open = at + rest[at..].find('(').expect("asm(");
        let close = matching(rest, open);
        let end = close + rest[close..].find(';').expect("asm statement ends with ;") + 1;
        out.push_str(&host_call(&rest[open + 1..close]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The next `asm(` or `asm volatile(` that starts a statement.
fn find_asm(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("asm") {
        let at = from + i;
        let before = s[..at].chars().next_back();
        let after = s[at + 3..].trim_start();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && (after.starts_with('(') || after.starts_with("volatile")) {
            return Some(at);
        }
        from = at + 3;
    }
    None
}

/// The index of the parenthesis that closes the one at `open` (string literals skipped).
fn matching(s: &str, open: usize) -> usize {
    let (mut depth, mut in_str) = (0, false);
    for (i, c) in s[open..].char_indices() {
        match c {
            '"' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return open + i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced asm statement")
}

/// `body` split at top-level occurrences of `sep` (outside parentheses, brackets and strings).
fn split_top(body: &str, sep: char) -> Vec<String> {
    let (mut parts, mut cur, mut depth, mut in_str) = (Vec::new(), String::new(), 0i32, false);
    for c in body.chars() {
        match c {
            '"' => in_str = !in_str,
            '(' | '[' if !in_str => depth += 1,
            ')' | ']' if !in_str => depth -= 1,
            _ => {}
        }
        if c == sep && depth == 0 && !in_str {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

/// The expressions of an operand list `"=r"(x), "f"(y)`.
fn operands(list: &str) -> Vec<String> {
    if list.trim().is_empty() {
        return Vec::new();
    }
    split_top(list, ',')
        .into_iter()
        .map(|op| {
            let op = op.trim();
            let open = op.find('(').expect("operand (expr)");
            op[open + 1..op.len() - 1].trim().to_string()
        })
        .collect()
}

/// The host statement for one asm statement's body (template, outputs, inputs, clobbers).
fn host_call(body: &str) -> String {
    let parts = split_top(body, ':');
    let template: String = {
        let head = parts[0].trim().trim_start_matches("volatile").trim();
        head.split('"').skip(1).step_by(2).collect()
    };
    let outs = parts.get(1).map(|p| operands(p)).unwrap_or_default();
    let ins = parts.get(2).map(|p| operands(p)).unwrap_or_default();
    let op = template.split_whitespace().next().unwrap_or("");
    match op {
        "cvt.rn.bf16x2.f32" => format!("{} = pcc_h_bf16x2({}, {});", outs[0], ins[0], ins[1]),
        "cvt.rna.tf32.f32" => format!("{} = pcc_h_tf32({});", outs[0], ins[0]),
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" | "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" => {
            let bf16 = op.contains("bf16");
            format!("pcc_h_mma({bf16}, {}, {});", outs.join(", "), ins.join(", "))
        }
        "cp.async.wait_group" | "cp.async.wait_all;" | "cp.async.wait_all" | "cp.async.commit_group;" | "cp.async.commit_group" => ";".into(),
        "red.relaxed.gpu.global.add.v2.f32" => format!("{{ atomicAdd({p}, {}); atomicAdd({p} + 1, {}); }}", ins[1], ins[2], p = ins[0]),
        _ => panic!("no host version of `{template}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asm_statements_become_host_calls() {
        let src = r#"x; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(w) : "f"(x(2 * k + 1)), "f"(v0)); y;
asm volatile("cp.async.wait_group 1;" ::: "memory");
asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
int basm = 1;"#;
        let out = rewrite_asm(src);
        assert!(out.contains("w = pcc_h_bf16x2(x(2 * k + 1), v0);"), "{out}");
        assert!(out.contains("pcc_h_mma(true, d[0], d[1], d[2], d[3], a[0], a[1], a[2], a[3], b[0], b[1]);"), "{out}");
        assert!(!out.contains("asm(") && !out.contains("asm volatile") && out.contains("int basm = 1;"), "{out}");
    }

    #[test]
    #[should_panic(expected = "no host version")]
    fn unknown_instructions_are_refused() {
        rewrite_asm(r#"asm volatile("bar.sync 1, %0;" :: "r"(n));"#);
    }
}

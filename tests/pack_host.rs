//! The tensor-core forward's packing kernels (`templates/sum_fwd_pack.cu.tera`, run after every EM
//! step), their generated CUDA compiled for the host (the two conversion instructions replaced by
//! host functions with the same rounding) and run over the manifest's own tables and offsets: the
//! packed buffer must be the documented layout word for word (`sum_fwd_mma.cu.tera`: per block,
//! node tile, chunk of KC children and tile row, KCW words of rounded weights, bf16 pairs lower
//! child low), for merged PD regions, sparse PD blocks, an HCLT and widths that are not a multiple
//! of the chunk, and every packed word written exactly once.

use pcc::codegen::emit::{EmitOptions, Precision, emit_with};
use pcc::codegen::structures::{hclt, pd};
use pcc::codegen::{Circuit, Dist, compile};
use pcc::runtime::Evidence;
use pcc::runtime::cuda::{KernelArg, KernelSpec};
use pcc_testkit::host_cuda::{DRIVER_PRELUDE, kernel_text, read_f32, write_f32, write_u32};

const SHIM: &str = r#"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#define __global__
#define __launch_bounds__(n)
typedef unsigned int u32;
struct uint4 { u32 x, y, z, w; };
static inline uint4 make_uint4(u32 a, u32 b, u32 c, u32 d) { return uint4{a, b, c, d}; }
struct pcc_dim3 { unsigned x, y, z; };
static pcc_dim3 blockIdx, threadIdx, blockDim, gridDim;
static inline u32 host_bits(float f) { u32 u; std::memcpy(&u, &f, 4); return u; }
// cvt.rn.bf16x2.f32 (round to nearest even; no NaN here) and cvt.rna.tf32.f32 (ties away).
static inline u32 host_bf16(float f) { u32 u = host_bits(f); return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16; }
static inline u32 host_bf16x2(float hi, float lo) { return host_bf16(hi) << 16 | host_bf16(lo); }
static inline u32 host_tf32(float f) { return (host_bits(f) + 0x1000u) & 0xffffe000u; }
"#;

fn bf16(f: f32) -> u32 {
    let u = f.to_bits();
    (u + 0x7fff + ((u >> 16) & 1)) >> 16
}

fn tf32(f: f32) -> u32 {
    (f.to_bits() + 0x1000) & 0xffff_e000
}

/// A pack kernel's constants, read from its text (`constexpr int SUB = …, G = …, …;`).
fn constants(text: &str) -> std::collections::HashMap<String, u64> {
    let line = text.lines().find(|l| l.contains("constexpr int SUB")).expect("the constants line");
    line.trim()
        .trim_start_matches("constexpr int")
        .trim_end_matches(';')
        .split(',')
        .map(|kv| kv.split('=').map(str::trim).collect::<Vec<_>>())
        .map(|kv| (kv[0].to_string(), kv[1].parse().unwrap()))
        .collect()
}

fn corpus() -> Vec<(String, Circuit)> {
    let bin = Evidence::new(10, (0..400 * 10).map(|i| ((i * 2654435761usize) >> 9 & 1) as f32).collect()).unwrap();
    vec![
        (
            "pd8x8".into(),
            pd::build(&pd::PdOptions { height: 8, width: 8, split_intervals: (2, 2), latents: 256, input: Dist::Bernoulli, ..Default::default() }).unwrap(),
        ),
        ("hclt64".into(), hclt::learn(&bin, &hclt::HcltOptions { latents: 64, ..Default::default() }).unwrap()),
        ("odd_widths".into(), pcc_testkit::odd_widths_circuit()),
    ]
}

#[test]
fn pack_kernels_write_the_documented_layout() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if std::process::Command::new(&cxx).arg("--version").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "a C++ compiler is required in CI");
        eprintln!("note: no C++ compiler ({cxx}); skipping");
        return;
    }
    for (name, c) in corpus() {
        let plan = compile(&c).unwrap();
        let num_params = plan.num_sum_params as usize;
        let params: Vec<f32> = (0..num_params).map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32).collect();
        for precision in [Precision::Bf16, Precision::Tf32] {
            let e = emit_with(&plan, &EmitOptions { precision }).unwrap();
            let packs: Vec<&KernelSpec> = e.manifest.em.iter().filter(|k| k.name.ends_with("_pack")).collect();
            assert!(!packs.is_empty(), "{name} {precision}: pack launches");
            let words: u64 = packs.iter().map(|k| k.threads_per_sample).sum();
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let mut texts = std::collections::BTreeMap::new();
            let mut launches = String::new();
            for (i, k) in packs.iter().enumerate() {
                let (KernelArg::Table(t), KernelArg::Int(poff)) = (k.args[2], k.args[4]) else { panic!("{k:?}") };
                write_u32(&d.join(format!("pids{i}")), &e.manifest.tables[t as usize]);
                texts.entry(k.name.clone()).or_insert_with(|| kernel_text(&e.source, &k.name).to_string());
                launches += &format!(
                    "    {{ auto p = rd<u32>(d + \"/pids{i}\"); LAUNCH({}, {}LL, packed.data(), params.data(), p.data(), {}, {poff}); }}\n",
                    k.name, k.threads_per_sample, k.count
                );
            }
            let kernels: String = texts
                .values()
                .map(|t| {
                    t.replace(r#"asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(word) : "f"(v1), "f"(v0));"#, "word = host_bf16x2(v1, v0);")
                        .replace(r#"asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(word) : "f"(v));"#, "word = host_tf32(v);")
                })
                .collect::<Vec<_>>()
                .join("\n");
            assert!(!kernels.contains("asm("), "{name} {precision}: every conversion replaced");
            let src = format!(
                "{SHIM}{DRIVER_PRELUDE}{kernels}\nint main(int, char** argv) {{\n    const std::string d = argv[1];\n    auto params = rd<float>(d + \"/params\");\n    std::vector<u32> packed({words}, 0xdeadbeefu);\n{launches}    FILE* f = fopen((d + \"/got\").c_str(), \"wb\"); fwrite(packed.data(), 4, packed.size(), f); fclose(f);\n}}\n"
            );
            std::fs::write(d.join("prog.cpp"), src).unwrap();
            let exe = d.join("prog");
            let out = std::process::Command::new(&cxx).args(["-O1", "-w", "-std=c++17", "-o"]).arg(&exe).arg(d.join("prog.cpp")).output().unwrap();
            assert!(out.status.success(), "{name} {precision}: host build: {}", String::from_utf8_lossy(&out.stderr));
            write_f32(&d.join("params"), &params);
            let st = std::process::Command::new(&exe).arg(d).output().unwrap();
            assert!(st.status.success(), "{name} {precision}: {}", String::from_utf8_lossy(&st.stderr));
            let got: Vec<u32> = read_f32(&d.join("got")).into_iter().map(f32::to_bits).collect();
            // The documented layout, from the manifest's tables and the kernel's constants.
            let mut want = vec![0xdead_beefu32; words as usize];
            for k in &packs {
                let (KernelArg::Table(t), KernelArg::Int(poff)) = (k.args[2], k.args[4]) else { unreachable!() };
                let pids = &e.manifest.tables[t as usize];
                let cst = constants(&texts[&k.name]);
                let [sub, g, w, tm, nt, kc, kcw] = ["SUB", "G", "W", "TM", "NT", "KC", "KCW"].map(|c| cst[c] as usize);
                let nch = w.div_ceil(kc);
                let value = |prow: &[u32], k: usize, msub: usize| if k < w { params[prow[k] as usize + msub] } else { 0.0 };
                for r in 0..k.count as usize {
                    for ntile in 0..nt {
                        for ch in 0..nch {
                            for i in 0..tm {
                                let (mrow, at) = (ntile * tm + i, poff as usize + (((r * nt + ntile) * nch + ch) * tm + i) * kcw);
                                let prow = &pids[(r * g + mrow / sub) * w..][..w];
                                for kw in 0..kcw {
                                    want[at + kw] = match precision {
                                        Precision::Bf16 => {
                                            bf16(value(prow, ch * kc + 2 * kw + 1, mrow % sub)) << 16 | bf16(value(prow, ch * kc + 2 * kw, mrow % sub))
                                        }
                                        _ => tf32(value(prow, ch * kc + kw, mrow % sub)),
                                    };
                                }
                            }
                        }
                    }
                }
            }
            assert!(want.iter().all(|&x| x != 0xdead_beef), "{name} {precision}: the launches' regions tile the buffer");
            let bad = got.iter().zip(&want).position(|(a, b)| a != b);
            assert!(bad.is_none(), "{name} {precision}: word {bad:?} of {words}: {:#x} vs {:#x}", got[bad.unwrap()], want[bad.unwrap()]);
        }
    }
}

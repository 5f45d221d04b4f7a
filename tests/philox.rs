//! The sampling kernels' random numbers: Philox-4x32-10 as written in
//! `templates/query_prelude.cu.tera`. A Rust transcription of the published algorithm is checked
//! against Random123's known-answer vectors (`kat_vectors`), and the template's own text is
//! compiled with the host C compiler (it is plain C on purpose) and must agree with both.

const TEMPLATE: &str = include_str!("../templates/query_prelude.cu.tera");

/// Random123 `kat_vectors`, philox4x32 with 10 rounds: counter, key, expected output.
const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
];

/// Philox-4x32-R (Salmon, Moraes, Dror, Shaw, SC'11), key bumped between rounds.
fn philox(mut c: [u32; 4], key: [u32; 2], rounds: u32) -> [u32; 4] {
    let (mut k0, mut k1) = (key[0], key[1]);
    for r in 0..rounds {
        if r > 0 {
            k0 = k0.wrapping_add(0x9E37_79B9);
            k1 = k1.wrapping_add(0xBB67_AE85);
        }
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k0, p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k1, p0 as u32];
    }
    c
}

#[test]
fn rust_philox_matches_the_published_known_answers() {
    for (ctr, key, want) in KAT {
        assert_eq!(philox(ctr, key, 10), want, "ctr {ctr:08x?} key {key:08x?}");
    }
}

#[test]
fn template_declares_philox_4x32_10() {
    for needle in ["0xD2511F53u", "0xCD9E8D57u", "0x9E3779B9u", "0xBB67AE85u", "r < 10"] {
        assert!(TEMPLATE.contains(needle), "the template's Philox lacks {needle}");
    }
    assert!(!TEMPLATE.contains("{{") && !TEMPLATE.contains("{%"), "the prelude has no template parameters (the C check compiles it as is)");
}

/// Compile the template's text as C and run it: its Philox on the known-answer inputs and on
/// the counters the kernels use, and its uniform helpers.
#[test]
fn template_philox_compiled_as_c_matches() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if std::process::Command::new(&cc).arg("--version").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "a C compiler is required in CI");
        eprintln!("note: no C compiler ({cc}); skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = String::from(
        "#include <math.h>\n#include <stddef.h>\n#include <stdio.h>\ntypedef unsigned int u32;\n#define __device__\n#define __forceinline__ static inline\n",
    );
    c += TEMPLATE;
    c += r#"
int main(void) {
    u32 v[4];
    unsigned a, b, d, e, f, g;
    while (scanf("%x %x %x %x %x %x", &a, &b, &d, &e, &f, &g) == 6) {
        v[0] = a; v[1] = b; v[2] = d; v[3] = e;
        pcc_philox(v, f, g);
        printf("%08x %08x %08x %08x\n", v[0], v[1], v[2], v[3]);
    }
    pcc_draw(v, 0x0123456789abcdefULL, 7u, 42u);
    printf("draw %08x %08x %08x %08x\n", v[0], v[1], v[2], v[3]);
    printf("u53 %.17g %.17g\n", pcc_u53(0xffffffffu, 0xffffffffu), pcc_u53(0u, 0u));
    printf("u24 %.9g %.9g\n", (double)pcc_u24(0xffffffffu), (double)pcc_u24(0u));
    return 0;
}
"#;
    let src = dir.path().join("philox.c");
    let exe = dir.path().join("philox");
    std::fs::write(&src, c).unwrap();
    let out = std::process::Command::new(&cc).arg("-O1").arg("-o").arg(&exe).arg(&src).arg("-lm").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut inputs: Vec<([u32; 4], [u32; 2])> = KAT.iter().map(|(c, k, _)| (*c, *k)).collect();
    for i in 0..64u32 {
        inputs.push(([i * 7919, i.wrapping_mul(0x9E37_79B9), 0, 0], [i.wrapping_mul(0x85EB_CA6B), !i]));
    }
    let stdin: String = inputs.iter().map(|(c, k)| format!("{:x} {:x} {:x} {:x} {:x} {:x}\n", c[0], c[1], c[2], c[3], k[0], k[1])).collect();
    let mut child = std::process::Command::new(&exe).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, (c, k)) in inputs.iter().enumerate() {
        let want = philox(*c, *k, 10);
        assert_eq!(lines[i], format!("{:08x} {:08x} {:08x} {:08x}", want[0], want[1], want[2], want[3]), "input {i}");
    }
    for (i, (_, _, want)) in KAT.iter().enumerate() {
        assert_eq!(lines[i], format!("{:08x} {:08x} {:08x} {:08x}", want[0], want[1], want[2], want[3]), "KAT {i}");
    }
    // pcc_draw: counter (sample, node, 0, 0), key (low, high word of the seed).
    let d = philox([7, 42, 0, 0], [0x89ab_cdef, 0x0123_4567], 10);
    assert_eq!(lines[inputs.len()], format!("draw {:08x} {:08x} {:08x} {:08x}", d[0], d[1], d[2], d[3]));
    let u53: Vec<f64> = lines[inputs.len() + 1][4..].split(' ').map(|x| x.parse().unwrap()).collect();
    assert!(u53[0] < 1.0 && u53[0] > 1.0 - 1e-15 && u53[1] == 0.0, "{u53:?}");
    let u24: Vec<f64> = lines[inputs.len() + 2][4..].split(' ').map(|x| x.parse().unwrap()).collect();
    assert!(u24[0] < 1.0 && u24[0] > 1.0 - 1e-7 && u24[1] == 0.0, "{u24:?}");
}

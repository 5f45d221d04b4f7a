//! CPU replay of `templates/sum_fwd_mma.cu.tera`: the pack kernel, then every CUDA block, thread
//! and warp of a launch in order with the kernel's own index arithmetic (cp.async copies of packed
//! weights and raw child rows, the column maxima, staging, fragment loads, epilogue), while
//! the mma itself follows the PTX ISA fragment tables independently: each lane's registers are
//! scattered to matrix coordinates by the documented formulas, multiplied, and gathered back. So a
//! wrong lane→element mapping, a shared-memory index out of range or a missed tail shows up here,
//! without a GPU. Keep the `kernel:` lines in step with the template.

// The replay indexes by thread, lane and tile exactly as the kernel does.
#![allow(clippy::needless_range_loop)]

use super::{MmaShape, Precision, SHORT_TB, TB};

/// Round to bf16, nearest even (`cvt.rn.bf16x2.f32`), as the upper 16 bits of an f32.
pub(super) fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Round to tf32, nearest with ties away from zero (`cvt.rna.tf32.f32`), as an f32 bit pattern.
fn tf32_bits(x: f32) -> u32 {
    (x.to_bits() + 0x1000) & 0xffff_e000
}

pub(super) fn bf16_val(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `cvt.rn.bf16x2.f32 d, hi, lo`: `hi` goes to the upper half, `lo` to the lower.
pub(super) fn pack_bf16x2(hi: f32, lo: f32) -> u32 {
    ((bf16_bits(hi) as u32) << 16) | bf16_bits(lo) as u32
}

/// One `mma.sync` on a warp per the PTX ISA fragment tables (g = lane >> 2, t = lane % 4).
/// `a[lane]`, `b[lane]` are the lanes' operand registers; returns each lane's D fragment added to
/// `c[lane]`.
pub(super) fn mma_warp(prec: Precision, a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &mut [[f32; 4]; 32]) {
    let k = if prec == Precision::Bf16 { 16 } else { 8 };
    let mut am = vec![[None::<f32>; 16]; 16]; // [row][k]
    let mut bm = vec![[None::<f32>; 8]; 16]; // [k][col]
    let put = |m: &mut Vec<[Option<f32>; 16]>, r: usize, col: usize, v: f32| {
        assert!(m[r][col].is_none(), "A element ({r},{col}) held by two lanes");
        m[r][col] = Some(v);
    };
    for lane in 0..32 {
        let (g, t) = (lane >> 2, lane % 4);
        if prec == Precision::Bf16 {
            // m16n8k16 .bf16 A: a_i, i = 0..8, two per register (lower index in the low half);
            // row = g for i in {0,1,4,5} else g + 8; col = 2t + (i & 1) (+ 8 for i >= 4).
            for i in 0..8 {
                let reg = a[lane][i / 2];
                let v = bf16_val(if i % 2 == 0 { reg as u16 } else { (reg >> 16) as u16 });
                let row = if i < 2 || (4..6).contains(&i) { g } else { g + 8 };
                let col = 2 * t + (i & 1) + if i >= 4 { 8 } else { 0 };
                put(&mut am, row, col, v);
            }
            // B: b_i, i = 0..4; row = 2t + (i & 1) (+ 8 for i >= 2), col = g.
            for i in 0..4 {
                let reg = b[lane][i / 2];
                let v = bf16_val(if i % 2 == 0 { reg as u16 } else { (reg >> 16) as u16 });
                let row = 2 * t + (i & 1) + if i >= 2 { 8 } else { 0 };
                assert!(bm[row][g].is_none());
                bm[row][g] = Some(v);
            }
        } else {
            // m16n8k8 .tf32 A: row = g for a0, a2 else g + 8; col = t for a0, a1 else t + 4.
            for i in 0..4 {
                let v = f32::from_bits(a[lane][i]);
                let row = if i % 2 == 0 { g } else { g + 8 };
                let col = if i < 2 { t } else { t + 4 };
                put(&mut am, row, col, v);
            }
            // B: row = t for b0, t + 4 for b1; col = g.
            for i in 0..2 {
                let row = if i == 0 { t } else { t + 4 };
                assert!(bm[row][g].is_none());
                bm[row][g] = Some(f32::from_bits(b[lane][i]));
            }
        }
    }
    for lane in 0..32 {
        let (g, t) = (lane >> 2, lane % 4);
        // C/D: row = g for c0, c1 else g + 8; col = 2t + (i & 1).
        for (i, ci) in c[lane].iter_mut().enumerate() {
            let row = if i < 2 { g } else { g + 8 };
            let col = 2 * t + (i & 1);
            let mut s = 0f32;
            for kk in 0..k {
                s += am[row][kk].expect("A element unset") * bm[kk][col].expect("B element unset");
            }
            *ci += s;
        }
    }
}

pub(super) struct Launch<'a> {
    pub(super) shape: &'a MmaShape,
    pub(super) b: usize,
    pub(super) nids: &'a [u32],
    pub(super) cids: &'a [u32],
    pub(super) pids: &'a [u32],
    pub(super) params: &'a [f32],
    pub(super) elem: &'a [f32],
}

/// Kernel `_pack`: every packed word, row i fastest, written once.
pub(super) fn pack_kernel(l: &Launch) -> Vec<Option<u32>> {
    let sh = l.shape;
    let (w_, tm, nt_, kc, kcw) = (sh.width as usize, sh.tm as usize, sh.nt as usize, sh.kc as usize, sh.kcw as usize);
    let n_blocks = l.nids.len();
    let (nch, sub, grp) = (w_.div_ceil(kc), sh.sub as usize, (sh.block_size / sh.sub) as usize);
    let mut packed = vec![None::<u32>; n_blocks * nt_ * nch * tm * kcw];
    for q in 0..packed.len() {
        let i = q % tm;
        let rest = q / tm;
        let (kw, rest) = (rest % kcw, rest / kcw);
        let (ch, rest) = (rest % nch, rest / nch);
        let (nt, r) = (rest % nt_, rest / nt_);
        let (mrow, at) = (nt * tm + i, ((((r * nt_ + nt) * nch + ch) * tm + i) * kcw + kw));
        let prow = &l.pids[(r * grp + mrow / sub) * w_..];
        let wt = |k: usize| if k < w_ { l.params[prow[k] as usize + mrow % sub] } else { 0.0 };
        let word = match sh.precision {
            Precision::Bf16 => pack_bf16x2(wt(ch * kc + 2 * kw + 1), wt(ch * kc + 2 * kw)),
            _ => tf32_bits(wt(ch * kc + kw)),
        };
        assert!(packed[at].replace(word).is_none(), "packed word {at} written twice");
    }
    packed
}

/// Kernel `issue`: chunk `k0`'s cp.async copies of node tile `tile` (= r · NT + nt) into sA and
/// sR: packed weights 16 bytes a copy, raw child rows 16 bytes when B % 4 == 0, else 4; children
/// past W and samples past B are not copied. Every thread's copies, each word written once.
fn issue(l: &Launch, packed: &[Option<u32>], c: &[u32], tile: usize, k0: usize, b0: usize) -> (Vec<Option<u32>>, Vec<Option<f32>>) {
    let sh = l.shape;
    let (w_, tm, kc, kcw, nth, b) = (sh.width as usize, sh.tm as usize, sh.kc as usize, sh.kcw as usize, sh.threads as usize, l.b);
    let (ld, tb, nch) = (kcw + 4, sh.tb as usize, w_.div_ceil(kc));
    let ch = k0 / kc;
    let mut sa = vec![None::<u32>; tm * ld];
    let mut sr = vec![None::<f32>; kc * tb];
    let a0 = (tile * nch + ch) * tm * kcw;
    let (av, rv, xv) = (tm * kcw / 4, kcw / 4, kc * tb / 4);
    for tid in 0..nth {
        for v in (tid..av).step_by(nth) {
            let (row, w4) = (v / rv, v % rv);
            for i in 0..4 {
                assert!(sa[row * ld + 4 * w4 + i].is_none(), "weight word copied twice");
                sa[row * ld + 4 * w4 + i] = Some(packed[a0 + row * kcw + 4 * w4 + i].expect("packed word unwritten"));
            }
        }
        if b.is_multiple_of(4) {
            for v in (tid..xv).step_by(nth) {
                let (kk, q) = (v / (tb / 4), 4 * (v % (tb / 4)));
                if k0 + kk < w_ && b0 + q < b {
                    for i in 0..4 {
                        assert!(sr[kk * tb + q + i].is_none());
                        sr[kk * tb + q + i] = Some(l.elem[c[k0 + kk] as usize * b + b0 + q + i]);
                    }
                }
            }
        } else {
            for v in (tid..kc * tb).step_by(nth) {
                let (kk, q) = (v / tb, v % tb);
                if k0 + kk < w_ && b0 + q < b {
                    assert!(sr[kk * tb + q].is_none());
                    sr[kk * tb + q] = Some(l.elem[c[k0 + kk] as usize * b + b0 + q]);
                }
            }
        }
    }
    (sa, sr)
}

/// Replays the kernel; returns the node buffer (NaN where never written).
fn replay(l: &Launch, num_nodes: usize) -> Vec<f32> {
    let sh = l.shape;
    let (w_, tm, nt_, kc, kstep) = (sh.width as usize, sh.tm as usize, sh.nt as usize, sh.kc as usize, sh.kstep as usize);
    let (nth, wn, mf, nf) = (sh.threads as usize, sh.warps_n as usize, sh.mf as usize, sh.nf as usize);
    let (wtm, wtn, kcw) = (mf * 16, nf * 8, sh.kcw as usize);
    let (ld, kp_n, kl, tb) = (kcw + 4, kc / 2, nth / sh.tb as usize, sh.tb as usize);
    assert!(tm % wtm == 0 && (tm / wtm) * wn == nth / 32 && wn * wtn == tb);
    assert!(kc % kstep == 0 && kcw % 8 == 0 && (tb * kp_n) % nth == 0 && nth % tb == 0);
    let n_blocks = l.nids.len();
    let split = sh.split(n_blocks as u32) as usize;
    let grid = n_blocks * nt_ * split; // the manifest's threads_per_sample / block
    let b = l.b;
    let packed = pack_kernel(l);
    let mut node = vec![f32::NAN; num_nodes * b];
    let mut written = vec![false; num_nodes * b];
    let neg = f32::NEG_INFINITY;
    for bx in 0..grid {
        let s = grid / (n_blocks * nt_); // kernel: S = gridDim.x / (n_blocks * NT)
        let (r, ntile) = (bx / (s * nt_), bx / s % nt_);
        if r >= n_blocks {
            continue;
        }
        let c = &l.cids[r * w_..(r + 1) * w_];
        let nid = l.nids[r] as usize;
        let nbt = b.div_ceil(tb);
        let mut bt = bx % s;
        while bt < nbt {
            let b0 = bt * tb;
            // kernel: the column's running maximum (every thread of column j holds the same).
            let mut run_m = vec![neg; tb];
            for nt in ntile..ntile + 1 {
                // acc[warp][mi][ni][lane][e]
                let mut acc = vec![vec![vec![[[0f32; 4]; 32]; nf]; mf]; nth / 32];
                let mut k0 = 0;
                while k0 < w_ {
                    let mut sx = vec![None::<u32>; tb * ld];
                    let (sa, sr) = issue(l, &packed, c, r * nt_ + nt, k0, b0);
                    // kernel: each thread's child values from sR and chunk maximum (sMp[kh][j]).
                    let xq_n = tb * kp_n / nth;
                    let mut raw = vec![Vec::new(); nth];
                    let mut smp = vec![vec![f32::NAN; tb]; kl];
                    for tid in 0..nth {
                        let (j, kh) = (tid % tb, tid / tb);
                        let jin = b0 + j < b;
                        let mut cm = neg;
                        for xq in 0..xq_n {
                            assert_eq!((xq * nth + tid) % tb, j);
                            let k = 2 * ((xq * nth + tid) / tb);
                            let rd = |kk: usize| sr[kk * tb + j].expect("raw child value read before its copy");
                            let e0 = if jin && k0 + k < w_ { rd(k) } else { neg };
                            let e1 = if jin && k0 + k + 1 < w_ { rd(k + 1) } else { neg };
                            cm = cm.max(e0.max(e1));
                            raw[tid].push((e0, e1));
                        }
                        smp[kh][j] = cm;
                    }
                    // kernel: new running maximum, the accumulators' scale, X = exp(e − M).
                    let mut scale = vec![f32::NAN; tb];
                    let new_m: Vec<f32> = (0..tb).map(|j| smp.iter().fold(run_m[j], |m, row| m.max(row[j]))).collect();
                    for tid in 0..nth {
                        let (j, kh) = (tid % tb, tid / tb);
                        let (mx, nm) = (run_m[j], new_m[j]);
                        if kh == 0 {
                            scale[j] = if nm == mx { 1.0 } else { (mx - nm).exp() };
                        }
                        for (xq, &(e0, e1)) in raw[tid].iter().enumerate() {
                            let kp = (xq * nth + tid) / tb;
                            let (x0, x1) = if nm == neg { (0.0, 0.0) } else { ((e0 - nm).exp(), (e1 - nm).exp()) };
                            if sh.precision == Precision::Bf16 {
                                sx[j * ld + kp] = Some(pack_bf16x2(x1, x0));
                            } else {
                                sx[j * ld + 2 * kp] = Some(tf32_bits(x0));
                                sx[j * ld + 2 * kp + 1] = Some(tf32_bits(x1));
                            }
                        }
                    }
                    run_m = new_m;
                    // kernel: accumulators of column col scale by sScale[col] before the mma.
                    for (warp, acc_w) in acc.iter_mut().enumerate() {
                        let wnn = warp % wn;
                        for lane in 0..32 {
                            let t = lane & 3;
                            for mi in 0..mf {
                                for ni in 0..nf {
                                    for e in 0..4 {
                                        acc_w[mi][ni][lane][e] *= scale[wnn * wtn + ni * 8 + 2 * t + (e & 1)];
                                    }
                                }
                            }
                        }
                    }
                    for ks in 0..kc / kstep {
                        for warp in 0..nth / 32 {
                            let (wm, wnn) = (warp / wn, warp % wn);
                            let mut a = vec![[[0u32; 4]; 32]; mf];
                            let mut bfr = vec![[[0u32; 2]; 32]; nf];
                            for lane in 0..32 {
                                let (g, t) = (lane >> 2, lane & 3);
                                let rd = |s: &Vec<Option<u32>>, at: usize| s[at].expect("fragment load of an unstaged shared word");
                                for (mi, am) in a.iter_mut().enumerate() {
                                    let base = (wm * wtm + mi * 16 + g) * ld + ks * 8 + t;
                                    am[lane] = [rd(&sa, base), rd(&sa, base + 8 * ld), rd(&sa, base + 4), rd(&sa, base + 8 * ld + 4)];
                                }
                                for (ni, bm) in bfr.iter_mut().enumerate() {
                                    let base = (wnn * wtn + ni * 8 + g) * ld + ks * 8 + t;
                                    bm[lane] = [rd(&sx, base), rd(&sx, base + 4)];
                                }
                            }
                            for mi in 0..mf {
                                for ni in 0..nf {
                                    mma_warp(sh.precision, &a[mi], &bfr[ni], &mut acc[warp][mi][ni]);
                                }
                            }
                        }
                    }
                    k0 += kc;
                }
                let out = Out { b, b0, first: nid + nt * tm };
                store_tile(sh, &acc, &out, |col| run_m[col], &mut node, &mut written);
            }
            bt += s;
        }
    }
    node
}

/// Where a tile's outputs go: batch size, the tile's first sample and its first node.
struct Out {
    b: usize,
    b0: usize,
    first: usize,
}

/// Both forwards' epilogue: each accumulator `(warp, mi, ni, lane, e)` of the tile goes to node
/// `first + row`, sample `b0 + col` (columns past B are not stored) as `M + log D` (−inf where
/// `M = −inf` or `D ≤ 0`), `M` the column's maximum; every output written once.
fn store_tile(sh: &MmaShape, acc: &[Vec<Vec<[[f32; 4]; 32]>>], out: &Out, m: impl Fn(usize) -> f32, node: &mut [f32], written: &mut [bool]) {
    let (wn, wtm, wtn, neg) = (sh.warps_n as usize, sh.mf as usize * 16, sh.nf as usize * 8, f32::NEG_INFINITY);
    for (warp, acc_w) in acc.iter().enumerate() {
        let (wm, wnn) = (warp / wn, warp % wn);
        for lane in 0..32 {
            let (g, t) = (lane >> 2, lane & 3);
            for (mi, acc_m) in acc_w.iter().enumerate() {
                for (ni, acc_n) in acc_m.iter().enumerate() {
                    for e in 0..4 {
                        let row = wm * wtm + mi * 16 + g + (e >> 1) * 8;
                        let col = wnn * wtn + ni * 8 + 2 * t + (e & 1);
                        if out.b0 + col < out.b {
                            let (mc, sv) = (m(col), acc_n[lane][e]);
                            let at = (out.first + row) * out.b + out.b0 + col;
                            assert!(!written[at], "output ({}, {}) written twice", out.first + row, out.b0 + col);
                            written[at] = true;
                            node[at] = if mc != neg && sv > 0.0 { mc + sv.ln() } else { neg };
                        }
                    }
                }
            }
        }
    }
}

/// Kernel `_x` of the two-kernel forward: every block's B operand words `[r][kw][b]` and its
/// maxima `[r][b]`, each word written once.
pub(super) fn stage_x(l: &Launch) -> (Vec<Option<u32>>, Vec<f32>) {
    let sh = l.shape;
    let (w_, ww, n_blocks, b, neg) = (sh.width as usize, sh.x_rows() as usize, l.nids.len(), l.b, f32::NEG_INFINITY);
    let mut xs = vec![None::<u32>; n_blocks * ww * b];
    let mut smax = vec![f32::NAN; n_blocks * b];
    for r in 0..n_blocks {
        let c = &l.cids[r * w_..(r + 1) * w_];
        for bb in 0..b {
            let e = |k: usize| l.elem[c[k] as usize * b + bb];
            let m = (0..w_).map(e).fold(neg, f32::max);
            smax[r * b + bb] = m;
            let x = |k: usize| if m == neg || k >= w_ { 0.0 } else { (e(k) - m).exp() };
            for kw in 0..ww {
                let word = if sh.precision == Precision::Bf16 { pack_bf16x2(x(2 * kw + 1), x(2 * kw)) } else { tf32_bits(x(kw)) };
                assert!(xs[(r * ww + kw) * b + bb].replace(word).is_none(), "staged word written twice");
            }
        }
    }
    (xs, smax)
}

/// Replays the two-kernel forward (`templates/sum_fwd_gemm.cu.tera`): `_x` stages every block's
/// B operand and maximum, then the product kernel copies chunks of it and of the packed weights
/// and multiplies. Returns the node buffer (NaN where never written).
fn replay_gemm(l: &Launch, num_nodes: usize) -> Vec<f32> {
    let sh = l.shape;
    assert!(sh.gemm);
    let (w_, tm, nt_, kc, kstep) = (sh.width as usize, sh.tm as usize, sh.nt as usize, sh.kc as usize, sh.kstep as usize);
    let (nth, wn, mf, nf) = (sh.threads as usize, sh.warps_n as usize, sh.mf as usize, sh.nf as usize);
    let (wtm, wtn, kcw, tb, ww) = (mf * 16, nf * 8, sh.kcw as usize, sh.tb as usize, sh.x_rows() as usize);
    let (ld, ldj, nch) = (kcw + 4, tb + 8, w_.div_ceil(kc));
    let (n_blocks, b) = (l.nids.len(), l.b);
    let (xs, smax) = stage_x(l);
    let packed = pack_kernel(l);
    let split = sh.split(n_blocks as u32) as usize;
    let grid = n_blocks * nt_ * split;
    let mut node = vec![f32::NAN; num_nodes * b];
    let mut written = vec![false; num_nodes * b];
    for bx in 0..grid {
        let s = grid / (n_blocks * nt_);
        let (r, ntile) = (bx / (s * nt_), bx / s % nt_);
        let nid = l.nids[r] as usize;
        let mut bt = bx % s;
        while bt < b.div_ceil(tb) {
            let b0 = bt * tb;
            let mut acc = vec![vec![vec![[[0f32; 4]; 32]; nf]; mf]; nth / 32];
            for ch in 0..nch {
                // kernel `issue`: packed weights as the one-kernel forward; X rows past the last
                // word zeroed; columns past B never copied (NaN here: they must not leak).
                let mut sa = vec![None::<u32>; tm * ld];
                let at = ((r * nt_ + ntile) * nch + ch) * tm * kcw;
                for row in 0..tm {
                    for kw in 0..kcw {
                        sa[row * ld + kw] = Some(packed[at + row * kcw + kw].expect("packed word"));
                    }
                }
                let mut sx = vec![None::<u32>; kcw * ldj];
                for kw in 0..kcw {
                    for q in 0..tb {
                        sx[kw * ldj + q] = Some(if ch * kcw + kw >= ww {
                            0
                        } else if b0 + q < b {
                            xs[(r * ww + ch * kcw + kw) * b + b0 + q].expect("staged word read before `_x` wrote it")
                        } else {
                            f32::NAN.to_bits()
                        });
                    }
                }
                for ks in 0..kc / kstep {
                    for (warp, acc_w) in acc.iter_mut().enumerate() {
                        let (wm, wnn) = (warp / wn, warp % wn);
                        let mut a = vec![[[0u32; 4]; 32]; mf];
                        let mut bfr = vec![[[0u32; 2]; 32]; nf];
                        for lane in 0..32 {
                            let (g, t) = (lane >> 2, lane & 3);
                            let rd = |s: &Vec<Option<u32>>, at: usize| s[at].expect("fragment load of an unstaged shared word");
                            for (mi, am) in a.iter_mut().enumerate() {
                                let base = (wm * wtm + mi * 16 + g) * ld + ks * 8 + t;
                                am[lane] = [rd(&sa, base), rd(&sa, base + 8 * ld), rd(&sa, base + 4), rd(&sa, base + 8 * ld + 4)];
                            }
                            for (ni, bm) in bfr.iter_mut().enumerate() {
                                let base = (ks * 8 + t) * ldj + wnn * wtn + ni * 8 + g;
                                bm[lane] = [rd(&sx, base), rd(&sx, base + 4 * ldj)];
                            }
                        }
                        for mi in 0..mf {
                            for ni in 0..nf {
                                mma_warp(sh.precision, &a[mi], &bfr[ni], &mut acc_w[mi][ni]);
                            }
                        }
                    }
                }
            }
            let out = Out { b, b0, first: nid + ntile * tm };
            store_tile(sh, &acc, &out, |col| smax[r * b + b0 + col], &mut node, &mut written);
            bt += s;
        }
    }
    node
}

/// A small deterministic generator.
pub(super) struct Lcg(pub(super) u64);
impl Lcg {
    pub(super) fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }
}

/// Random partition of `n` blocks: some blocks padded (children past `counts` point at the −inf
/// dummy element 0 with pid 0), some element rows −inf for every sample, one block whose every
/// child is −inf for sample 0, and a node with all-zero weights.
fn check(prec: Precision, bs: u32, width: u32, batches: &[usize]) {
    check_tile(prec, bs, width, batches, TB, false);
}

/// [`check`] with batch tiles of `tb` samples, of the two-kernel forward where `gemm`.
fn check_tile(prec: Precision, bs: u32, width: u32, batches: &[usize], tb: u32, gemm: bool) {
    let shape = MmaShape::for_partition(prec, bs, width).unwrap().with_batch_tile(tb);
    let shape = if gemm { shape.two_kernel() } else { shape };
    let n = 3usize;
    let (bs_, w_) = (bs as usize, width as usize);
    let mut rng = Lcg(bs as u64 * 1000 + width as u64);
    let num_elems = 1 + n * w_;
    let mut cids = Vec::new();
    let mut pids = Vec::new();
    let mut params = vec![0f32; n * w_ * bs_];
    for r in 0..n {
        let real = if r == 1 { (w_ / 2).max(1) } else { w_ };
        for w in 0..w_ {
            if w < real {
                cids.push((1 + r * w_ + w) as u32);
                pids.push(((r * w_ + w) * bs_) as u32);
            } else {
                cids.push(0);
                pids.push(0);
            }
        }
        for w in 0..real {
            for m in 0..bs_ {
                // node 3 of block 0 has only zero weights: its output is −inf.
                params[(r * w_ + w) * bs_ + m] = if r == 0 && m == 3 { 0.0 } else { 0.05 + rng.next() };
            }
        }
    }
    let nids: Vec<u32> = (0..n as u32).map(|r| 5 + r * bs).collect();
    let num_nodes = 5 + n * bs_ + 2;
    for &b in batches {
        let mut elem = vec![0f32; num_elems * b];
        for (e, row) in elem.chunks_mut(b).enumerate() {
            for (s, x) in row.iter_mut().enumerate() {
                *x = if e == 0 || e % 7 == 3 { f32::NEG_INFINITY } else { -40.0 * rng.next() - if s % 3 == 0 { 200.0 } else { 0.0 } };
            }
        }
        // Block 2: every child −inf for sample 0.
        for w in 0..w_ {
            elem[(1 + 2 * w_ + w) * b] = f32::NEG_INFINITY;
        }
        let l = Launch { shape: &shape, b, nids: &nids, cids: &cids, pids: &pids, params: &params, elem: &elem };
        let got = if shape.gemm { replay_gemm(&l, num_nodes) } else { replay(&l, num_nodes) };
        // Reference in f64 on the same rounded operands (layout errors are gross; rounding is
        // shared, summation order is not). The kernel shifts chunk c's children by the running
        // maximum M_c over chunks 0..=c before rounding, then scales by exp(M_c − M) in fp32;
        // the two-kernel forward shifts every child by M.
        let kc = shape.kc as usize;
        let round = |x: f32| -> f64 { if prec == Precision::Bf16 { bf16_val(bf16_bits(x)) as f64 } else { f32::from_bits(tf32_bits(x)) as f64 } };
        for r in 0..n {
            for m in 0..bs_ {
                for s in 0..b {
                    let mx = (0..w_).map(|w| elem[cids[r * w_ + w] as usize * b + s]).fold(f32::NEG_INFINITY, f32::max);
                    let want = if mx == f32::NEG_INFINITY {
                        f64::NEG_INFINITY
                    } else {
                        let e = |w: usize| elem[cids[r * w_ + w] as usize * b + s];
                        let run = |w: usize| if shape.gemm { mx } else { (0..((w / kc + 1) * kc).min(w_)).map(e).fold(f32::NEG_INFINITY, f32::max) };
                        let sum: f64 = (0..w_)
                            .filter(|&w| run(w) != f32::NEG_INFINITY)
                            .map(|w| round(params[pids[r * w_ + w] as usize + m]) * round((e(w) - run(w)).exp()) * ((run(w) - mx) as f64).exp())
                            .sum();
                        if sum > 0.0 { mx as f64 + sum.ln() } else { f64::NEG_INFINITY }
                    };
                    let g = got[(nids[r] as usize + m) * b + s] as f64;
                    let ok = if want == f64::NEG_INFINITY { g == f64::NEG_INFINITY } else { (g - want).abs() <= 1e-5 * want.abs().max(1.0) };
                    assert!(ok, "{prec} bs{bs} w{width} B{b}: node {m} of block {r}, sample {s}: got {g}, want {want}");
                }
            }
        }
        // Nothing outside the partition's nodes was written.
        for (i, v) in got.iter().enumerate() {
            let nd = i / b;
            if !(5..5 + n * bs_).contains(&nd) {
                assert!(v.is_nan(), "node {nd} outside the partition was written");
            }
        }
        // Spot-check against unrounded fp32 math: bf16/tf32 operand rounding stays small.
        let tol = if prec == Precision::Bf16 { 1e-2 } else { 2e-3 };
        let s = 1;
        if s < b {
            let mx = (0..w_).map(|w| elem[cids[w] as usize * b + s]).fold(f32::NEG_INFINITY, f32::max) as f64;
            let exact: f64 = (0..w_).map(|w| params[pids[w] as usize] as f64 * ((elem[cids[w] as usize * b + s] as f64) - mx).exp()).sum();
            let g = got[nids[0] as usize * b + s] as f64;
            assert!((g - (mx + exact.ln())).abs() <= tol, "{prec}: {g} vs exact {}", mx + exact.ln());
        }
    }
}

#[test]
fn shapes_follow_the_block_size() {
    assert!(MmaShape::for_partition(Precision::Fp32, 32, 8).is_none());
    assert!(MmaShape::for_partition(Precision::Bf16, 8, 8).is_none());
    assert!(MmaShape::for_partition(Precision::Tf32, 24, 8).is_none());
    let s = MmaShape::for_partition(Precision::Bf16, 48, 5).unwrap();
    assert_eq!((s.tm, s.nt, s.kc, s.kcw, s.warps_m, s.warps_n, s.mf, s.nf), (16, 3, 16, 8, 1, 4, 1, 2));
    let s = MmaShape::for_partition(Precision::Tf32, 256, 100).unwrap();
    assert_eq!((s.tm, s.nt, s.kc, s.kcw, s.threads, s.warps_m, s.warps_n, s.mf, s.nf), (128, 2, 16, 16, 256, 4, 2, 2, 4));
    assert!(s.shared_bytes() <= 48 * 1024);
    // The largest tiles of either precision fit the 48 KB of static shared memory.
    for prec in [Precision::Bf16, Precision::Tf32] {
        assert!(MmaShape::for_partition(prec, 128, 4096).unwrap().shared_bytes() <= 48 * 1024, "{prec}");
    }
    assert_eq!(s.kernel_name(), "sum_fwd_tf32_bs256_w100");
}

#[test]
fn bf16_replay_matches_the_matrix_product() {
    check(Precision::Bf16, 16, 3, &[1, 7, 70]);
    check(Precision::Bf16, 32, 40, &[7, 130]);
    check(Precision::Bf16, 48, 16, &[65]);
    check(Precision::Bf16, 128, 33, &[100]);
    check(Precision::Bf16, 96, 20, &[64]);
}

#[test]
fn short_batch_tiles_replay_the_matrix_product() {
    for prec in [Precision::Bf16, Precision::Tf32] {
        check_tile(prec, 16, 3, &[1, 33], SHORT_TB, false);
        check_tile(prec, 32, 40, &[7, 70], SHORT_TB, false);
        check_tile(prec, 128, 33, &[100], SHORT_TB, false);
        check_tile(prec, 256, 20, &[3, 64], SHORT_TB, false);
    }
    // Launches short of a wave take them; others keep 64-sample tiles.
    let s = MmaShape::for_partition(Precision::Bf16, 512, 512).unwrap();
    assert_eq!((s.clone().for_launch(2).tb, s.clone().for_launch(83).tb), (SHORT_TB, TB));
    assert_eq!(s.clone().for_launch(2).kernel_name(), "sum_fwd_bf16_bs512_w512_tb32");
    assert_eq!((s.split(2), s.clone().for_launch(2).split(2)), (8, 16));
}

#[test]
fn two_kernel_forward_replays_the_matrix_product() {
    for prec in [Precision::Bf16, Precision::Tf32] {
        for tb in [TB, SHORT_TB] {
            check_tile(prec, 16, 3, &[1, 33], tb, true);
            check_tile(prec, 32, 40, &[7, 70], tb, true);
            check_tile(prec, 48, 16, &[65], tb, true);
            check_tile(prec, 128, 33, &[100, 6], tb, true);
            check_tile(prec, 256, 20, &[3, 130], tb, true);
        }
    }
    let s = MmaShape::for_partition(Precision::Bf16, 512, 511).unwrap().two_kernel();
    assert_eq!((s.kernel_name(), s.x_rows()), ("sum_fwd_bf16_bs512_w511_g".to_string(), 256));
    assert_eq!(MmaShape::for_partition(Precision::Tf32, 512, 511).unwrap().x_rows(), 511);
}

#[test]
fn tf32_replay_matches_the_matrix_product() {
    check(Precision::Tf32, 16, 1, &[1, 64]);
    check(Precision::Tf32, 32, 9, &[7, 130]);
    check(Precision::Tf32, 64, 64, &[100]);
    check(Precision::Tf32, 256, 20, &[3]);
    check(Precision::Tf32, 96, 44, &[66]);
}

/// A partition of `n` blocks of `bs` nodes over `w` children; `kids(r)` gives block r's first
/// child id (children `kids(r)..kids(r) + w`); nodes consecutive, weights laid out per block.
fn partition(n: usize, bs: u32, w: u32, kids: impl Fn(usize) -> u32) -> pc_runtime::plan::SumPartition {
    pc_runtime::plan::SumPartition {
        block_size: bs,
        child_block_size: bs,
        width: w,
        nids: (0..n as u32).map(|r| 10 + r * bs).collect(),
        cids: (0..n).flat_map(|r| (0..w).map(move |k| (r, k))).map(|(r, k)| kids(r) + k).collect(),
        counts: vec![w; n],
        pids: (0..n as u32).flat_map(|r| (0..w).map(move |k| 100 + (r * w + k) * bs)).collect(),
    }
}

#[test]
fn runs_of_blocks_over_one_child_list_merge() {
    use super::MmaPart;
    // Regions of 8 blocks of 32 over one child list (PD): each merged into one 256-row block.
    let p = partition(16, 32, 5, |r| 1 + (r / 8) as u32 * 100);
    let parts = MmaPart::split_rows(&p, 256);
    assert_eq!(parts.len(), 1);
    let m = &parts[0];
    assert_eq!((m.block_size, m.sub, m.group(), m.count()), (256, 32, 8, 2));
    assert_eq!(m.nids, vec![10, 10 + 256]);
    assert_eq!(&m.cids[..5], &p.cids[..5]);
    assert_eq!(&m.cids[5..2 * 5], &p.cids[8 * 5..9 * 5]);
    // The weight rows of merged block r's g-th original block: row r·G + g.
    assert_eq!(m.pids, p.pids);
    // At most 128 rows (the default): two merged blocks per region.
    let parts = MmaPart::split_rows(&p, 128);
    assert_eq!((parts.len(), parts[0].block_size, parts[0].count()), (1, 128, 4));
    // Regions of 16 blocks of 32: two merged blocks of 256 rows each.
    let p = partition(32, 32, 5, |r| 1 + (r / 16) as u32 * 100);
    let parts = MmaPart::split_rows(&p, 256);
    assert_eq!((parts.len(), parts[0].block_size, parts[0].count()), (1, 256, 4));
}

#[test]
fn a_block_cut_from_its_region_stays_unmerged() {
    use super::MmaPart;
    // Block 0 is the last block of another region; blocks 1..=8 form a region of 8.
    let p = partition(9, 32, 3, |r| if r == 0 { 500 } else { 1 });
    let parts = MmaPart::split_rows(&p, 256);
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0].group(), parts[0].count(), parts[1].group(), parts[1].count()), (8, 1, 1, 1));
    assert_eq!(parts[0].nids, vec![10 + 32]);
    assert_eq!(parts[1].nids, vec![10]);
    assert_eq!(parts[1].cids, p.cids[..3].to_vec());
    assert_eq!(parts[1].pids, p.pids[..3].to_vec());
    // Every original block's weights appear exactly once over the parts.
    let mut all: Vec<u32> = parts.iter().flat_map(|m| m.pids.clone()).collect();
    all.sort_unstable();
    let mut want = p.pids.clone();
    want.sort_unstable();
    assert_eq!(all, want);
}

#[test]
fn blocks_with_their_own_children_stay_as_they_are() {
    use super::MmaPart;
    let p = partition(6, 32, 4, |r| 1 + r as u32 * 10);
    let parts = MmaPart::split_rows(&p, 256);
    assert_eq!(parts.len(), 1);
    assert_eq!((parts[0].block_size, parts[0].group()), (32, 1));
    assert_eq!((&parts[0].nids, &parts[0].cids, &parts[0].pids), (&p.nids, &p.cids, &p.pids));
    // 256-node blocks have no room to merge.
    let p = partition(4, 256, 4, |_| 1);
    assert_eq!(MmaPart::split_rows(&p, 256)[0].group(), 1);
}

/// Merged blocks (`MmaPart`: runs of blocks over one child list) through the pack kernel's
/// weight-row arithmetic (`pids[(r·G + m / SUB)·W + w] + m % SUB`) and the forward, against the
/// original blocks' log-sum-exp in f64 (operand rounding within bf16/tf32 tolerance).
#[test]
fn merged_blocks_replay_matches_each_original_block() {
    use super::MmaPart;
    for (prec, tol) in [(Precision::Bf16, 2e-2), (Precision::Tf32, 2e-3)] {
        // Two regions of 8 blocks of 16 nodes over 40 children each (merged 8 at a time: 128 rows).
        let (bs, w) = (16u32, 40u32);
        let p = partition(16, bs, w, |r| 1 + (r / 8) as u32 * 100);
        let parts = MmaPart::split_rows(&p, 256);
        assert_eq!((parts.len(), parts[0].group(), parts[0].block_size), (1, 8, 128));
        let mp = &parts[0];
        let shape = MmaShape::for_part(prec, mp).unwrap();
        let mut rng = Lcg(7);
        let num_params = *p.pids.iter().max().unwrap() as usize + bs as usize;
        let params: Vec<f32> = (0..num_params).map(|_| 0.05 + rng.next()).collect();
        let num_elems = 300;
        for b in [66usize, 64] {
            let elem: Vec<f32> = (0..num_elems * b).map(|_| -30.0 * rng.next()).collect();
            let num_nodes = 10 + 16 * bs as usize;
            let l = Launch { shape: &shape, b, nids: &mp.nids, cids: &mp.cids, pids: &mp.pids, params: &params, elem: &elem };
            let got = replay(&l, num_nodes);
            for r in 0..16usize {
                for m in 0..bs as usize {
                    for s in [0, 1, b - 1] {
                        let e = |k: usize| elem[p.cids[r * w as usize + k] as usize * b + s] as f64;
                        let mx = (0..w as usize).map(e).fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = (0..w as usize).map(|k| params[p.pids[r * w as usize + k] as usize + m] as f64 * (e(k) - mx).exp()).sum();
                        let want = mx + sum.ln();
                        let g = got[(p.nids[r] as usize + m) * b + s] as f64;
                        assert!((g - want).abs() <= tol, "{prec} B{b}: block {r} node {m} sample {s}: {g} vs {want}");
                    }
                }
            }
        }
    }
}

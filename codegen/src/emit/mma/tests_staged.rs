//! CPU replay of the staged backward's parameter flows (bf16, `templates/sum_bwd_pflow_staged.cu.tera`
//! and the staged `_gflow` of `sum_bwd_mma.cu.tera`): `_gflow`'s in-place compaction of G to bf16
//! (its chunk order, read before write), the forward's `_x` run again (tests.rs), then `_pflow`
//! block by block with its own index arithmetic: cp.async chunks with zeroed tails, 8-byte
//! fragment loads split by `prmt` into two children's fragments, the children of a fragment pair,
//! K slices. The mma follows the PTX fragment tables (tests.rs). Checked against Θ ⊙ (G·Xᵀ) in f64
//! on the same rounded operands. Keep it in step with the templates.

// The replay indexes by thread, lane and tile exactly as the kernel does.
#![allow(clippy::needless_range_loop)]

use super::super::mma_bwd::{BwdShape, PC};
use super::tests::{Launch, Lcg, bf16_val, mma_warp, pack_bf16x2, stage_x};
use super::{MmaPart, MmaShape, Precision, warps};

/// `__byte_perm(x, y, s)`: byte i of the result is byte `s >> 4i & 7` of `y:x` (x the low word).
fn byte_perm(x: u32, y: u32, s: u32) -> u32 {
    let bytes = x as u64 | (y as u64) << 32;
    (0..4).fold(0, |w, i| w | (((bytes >> (8 * ((s >> (4 * i)) & 7))) & 0xff) as u32) << (8 * i))
}

/// The staged `_gflow`: CUDA block = (block r, node m), 256 threads, chunks of 512 samples; all
/// threads read the chunk (fp32 F, v, M) before any writes its bf16 words into the row's first
/// half. `nflow` holds f32 bit patterns.
fn gflow(nflow: &mut [u32], node: &[f32], smax: &[f32], nids: &[u32], bs: usize, b: usize) {
    for r in 0..nids.len() {
        for m in 0..bs {
            let at = (nids[r] as usize + m) * b;
            for c0 in (0..b).step_by(512) {
                let g = |i: usize, flow: &[u32]| {
                    let (f, v, mb) = (f32::from_bits(flow[at + i]), node[at + i], smax[r * b + i]);
                    if f != 0.0 && v != f32::NEG_INFINITY { f * (mb - v).exp() } else { 0.0 }
                };
                let reads: Vec<(f32, f32)> = (0..256)
                    .map(|tid| {
                        let bb = c0 + 2 * tid;
                        (if bb < b { g(bb, nflow) } else { 0.0 }, if bb + 1 < b { g(bb + 1, nflow) } else { 0.0 })
                    })
                    .collect();
                // __syncthreads()
                for (tid, (g0, g1)) in reads.into_iter().enumerate() {
                    let bb = c0 + 2 * tid;
                    if bb < b {
                        nflow[at + bb / 2] = pack_bf16x2(g1, g0);
                    }
                }
            }
        }
    }
}

/// The staged `_pflow` with `ks` K slices; adds into `pflow`.
#[allow(clippy::too_many_arguments)] // the kernel's arguments
fn pflow_kernel(sh: &BwdShape, gs: &[u32], xs: &[Option<u32>], l: &Launch, ks_n: usize, excl: bool, pflow: &mut [f32], owned_writes: &mut [u32]) {
    let (bs, w_, tm, tc, kc) = (sh.block_size as usize, sh.width as usize, sh.pm as usize, PC as usize, 32usize);
    let (kcw, tcw, ww) = (kc / 2, tc / 2, w_.div_ceil(2));
    let (ld, ldj, ns) = (kcw + 4, kc + 8, 3);
    let (wm_, wn_) = warps(sh.pm);
    let (wn_, nth) = (wn_ as usize, 32 * (wm_ * wn_) as usize);
    let (mf, nf) = (tm / wm_ as usize / 16, tc / wn_ / 8);
    let (mt, ct, grp, sub) = (bs / tm, w_.div_ceil(tc), (sh.block_size / sh.sub) as usize, sh.sub as usize);
    let (n_blocks, b) = (l.nids.len(), l.b);
    let grid = n_blocks * mt * ct * ks_n;
    for bx in 0..grid {
        let split = ks_n > 1;
        let (ks, item) = if split { (bx % ks_n, bx / ks_n) } else { (0, bx) };
        let (r, m0, w0) = (item / (mt * ct), (item / ct) % mt * tm, item % ct * tc);
        let per = if split { b.div_ceil(kc).div_ceil(ks_n) } else { 0 };
        let (kb, ke) = if split { (ks * per * kc, b.min(ks * per * kc + per * kc)) } else { (0, b) };
        if r >= n_blocks || (split && kb >= b) {
            continue;
        }
        let owned = excl && !split;
        let c = &l.cids[r * w_..(r + 1) * w_];
        let ga = (l.nids[r] as usize + m0) * b;
        let xb = (r * ww + w0 / 2) * b;
        let bw = b.div_ceil(2);
        let nch = (ke - kb).div_ceil(kc);
        let mut sa = vec![vec![None::<u32>; tm * ld]; ns];
        let mut sx = vec![vec![None::<u32>; tcw * ldj]; ns];
        // kernel `issue` (the copies land before the chunk's barrier: replayed at once).
        let issue = |ch: usize, sa: &mut Vec<Vec<Option<u32>>>, sx: &mut Vec<Vec<Option<u32>>>| {
            if ch >= nch {
                return;
            }
            let (st, k0) = (ch % ns, kb + ch * kc);
            let kw0 = k0 / 2;
            for row in 0..tm {
                for q in 0..kcw {
                    sa[st][row * ld + q] = Some(if kw0 + q < bw { gs[ga + row * b + kw0 + q] } else { 0 });
                }
            }
            for kw in 0..tcw {
                for q in 0..kc {
                    let word = if w0 / 2 + kw < ww && k0 + q < b { xs[xb + kw * b + k0 + q].expect("X staged by `_x`") } else { 0 };
                    sx[st][kw * ldj + q] = Some(word);
                }
            }
        };
        let mut acc = vec![vec![vec![[[0f32; 4]; 32]; nf]; mf]; nth / 32];
        issue(0, &mut sa, &mut sx);
        issue(1, &mut sa, &mut sx);
        for ch in 0..nch {
            let st = ch % ns;
            // Stage (ch + 2) % 3 is chunk ch − 1's, done by every thread after this barrier.
            let (cur_a, cur_x) = (sa[st].clone(), sx[st].clone());
            issue(ch + 2, &mut sa, &mut sx);
            for kk in 0..kc / 16 {
                for (warp, acc_w) in acc.iter_mut().enumerate() {
                    let (wm, wn) = (warp / wn_, warp % wn_);
                    let mut a = vec![[[0u32; 4]; 32]; mf];
                    let mut bf = vec![[[0u32; 2]; 32]; nf];
                    for lane in 0..32 {
                        let (g, t) = (lane >> 2, lane & 3);
                        let rd = |s: &Vec<Option<u32>>, at: usize| s[at].expect("fragment load of an unstaged shared word");
                        for (mi, am) in a.iter_mut().enumerate() {
                            let base = (wm * mf * 16 + mi * 16 + g) * ld + kk * 8 + t;
                            am[lane] = [rd(&cur_a, base), rd(&cur_a, base + 8 * ld), rd(&cur_a, base + 4), rd(&cur_a, base + 8 * ld + 4)];
                        }
                        for p in 0..nf / 2 {
                            let s = (wn * nf * 4 + p * 8 + g) * ldj + kk * 16 + 2 * t;
                            assert!(s % 2 == 0, "8-byte aligned fragment load");
                            let (lo, hi) = ((rd(&cur_x, s), rd(&cur_x, s + 1)), (rd(&cur_x, s + 8), rd(&cur_x, s + 9)));
                            bf[2 * p][lane] = [byte_perm(lo.0, lo.1, 0x5410), byte_perm(hi.0, hi.1, 0x5410)];
                            bf[2 * p + 1][lane] = [byte_perm(lo.0, lo.1, 0x7632), byte_perm(hi.0, hi.1, 0x7632)];
                        }
                    }
                    for mi in 0..mf {
                        for ni in 0..nf {
                            mma_warp(Precision::Bf16, &a[mi], &bf[ni], &mut acc_w[mi][ni]);
                        }
                    }
                }
            }
        }
        for (warp, acc_w) in acc.iter().enumerate() {
            let (wm, wn) = (warp / wn_, warp % wn_);
            for mi in 0..mf {
                for ni in 0..nf {
                    for lane in 0..32 {
                        let (g, t) = (lane >> 2, lane & 3);
                        for e in 0..4 {
                            let (row, n) = (wm * mf * 16 + mi * 16 + g + (e >> 1) * 8, 2 * t + (e & 1));
                            let w = w0 + 2 * (wn * nf * 4 + (ni >> 1) * 8 + n) + (ni & 1);
                            if w < w_ && c[w] != 0 {
                                let m = m0 + row;
                                let i = (l.pids[(r * grp + m / sub) * w_ + w] as usize) + m % sub;
                                pflow[i] += l.params[i] * acc_w[mi][ni][lane][e];
                                owned_writes[i] += owned as u32;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Blocks of `bs` nodes over `width` children (block 1 padded with dummy children), random
/// flows with zeros, node values with −inf, a sample whose children are all −inf.
fn check(bs: u32, width: u32, b: usize, ks_n: usize) {
    let part = MmaPart { block_size: bs, sub: bs, width, nids: vec![], cids: vec![], pids: vec![] };
    let fwd = MmaShape::for_partition(Precision::Bf16, bs, width).unwrap().two_kernel();
    let sh = BwdShape::for_part(Precision::Bf16, &part, true).unwrap();
    assert!(sh.staged && sh.kernel_name().ends_with("_s"));
    let (n, bs_, w_) = (3usize, bs as usize, width as usize);
    let mut rng = Lcg(bs as u64 * 7919 + width as u64 * 31 + b as u64);
    let (mut cids, mut pids) = (Vec::new(), Vec::new());
    for r in 0..n {
        for w in 0..w_ {
            let real = r != 1 || w < (w_ / 2).max(1);
            cids.push(if real { (1 + r * w_ + w) as u32 } else { 0 });
            pids.push(if real { ((r * w_ + w) * bs_) as u32 } else { 0 });
        }
    }
    let params: Vec<f32> = (0..n * w_ * bs_).map(|_| 0.05 + rng.next()).collect();
    let mut elem: Vec<f32> = (0..(1 + n * w_) * b).map(|_| -20.0 * rng.next()).collect();
    elem[..b].fill(f32::NEG_INFINITY);
    for w in 0..w_ {
        elem[(1 + 2 * w_ + w) * b] = f32::NEG_INFINITY; // block 2, sample 0: every child −inf
    }
    let nids: Vec<u32> = (0..n as u32).map(|r| 4 + r * bs).collect();
    let rows = 4 + n * bs_ + 1;
    let l = Launch { shape: &fwd, b, nids: &nids, cids: &cids, pids: &pids, params: &params, elem: &elem };
    let (xs, smax) = stage_x(&l);
    let node: Vec<f32> = (0..rows * b).map(|i| if i % 13 == 5 { f32::NEG_INFINITY } else { -10.0 * rng.next() }).collect();
    let flow: Vec<f32> = (0..rows * b).map(|i| if i % 11 == 2 { 0.0 } else { rng.next() }).collect();
    let mut nflow: Vec<u32> = flow.iter().map(|f| f.to_bits()).collect();
    gflow(&mut nflow, &node, &smax, &nids, bs_, b);
    // The compacted rows hold bf16 G (0 past an odd B) in their first halves.
    let gval = |r: usize, m: usize, s: usize| -> f32 {
        let at = (nids[r] as usize + m) * b + s;
        let (f, v, mb) = (flow[at], node[at], smax[r * b + s]);
        if f != 0.0 && v != f32::NEG_INFINITY { f * (mb - v).exp() } else { 0.0 }
    };
    for r in 0..n {
        for m in 0..bs_ {
            let row = (nids[r] as usize + m) * b;
            for s in 0..b.div_ceil(2) * 2 {
                let word = nflow[row + s / 2];
                let half = if s % 2 == 0 { word as u16 } else { (word >> 16) as u16 };
                let want = if s < b { pack_bf16x2(0.0, gval(r, m, s)) as u16 } else { 0 };
                assert_eq!(half, want, "B{b}: G of block {r} node {m} sample {s}");
            }
        }
    }
    let mut pflow = vec![0f32; params.len()];
    let mut owned = vec![0u32; params.len()];
    pflow_kernel(&sh, &nflow, &xs, &l, ks_n, true, &mut pflow, &mut owned);
    let xval = |r: usize, w: usize, s: usize| -> f64 {
        let word = xs[(r * w_.div_ceil(2) + w / 2) * b + s].unwrap();
        bf16_val(if w.is_multiple_of(2) { word as u16 } else { (word >> 16) as u16 }) as f64
    };
    for r in 0..n {
        for m in 0..bs_ {
            for w in 0..w_ {
                if cids[r * w_ + w] == 0 {
                    continue;
                }
                let i = pids[r * w_ + w] as usize + m;
                let sum: f64 = (0..b).map(|s| bf16_val(pack_bf16x2(0.0, gval(r, m, s)) as u16) as f64 * xval(r, w, s)).sum();
                let want = params[i] as f64 * sum;
                let got = pflow[i] as f64;
                assert!((got - want).abs() <= 1e-4 * want.abs() + 1e-6, "bs{bs} w{width} B{b} KS{ks_n}: block {r} node {m} child {w}: {got} vs {want}");
                assert!(owned[i] <= 1, "an owned slot written twice");
            }
        }
    }
}

#[test]
fn staged_parameter_flows_replay_the_product() {
    for (bs, w) in [(16, 3), (32, 40), (128, 64), (64, 130)] {
        for b in [1, 7, 64, 130] {
            check(bs, w, b, 1);
        }
    }
    // K slices, chunked `_gflow` rows (B past 512; odd and multiple-of-8 batches).
    check(128, 70, 1100, 3);
    check(16, 33, 1024, 5);
    check(32, 64, 96, 2);
}

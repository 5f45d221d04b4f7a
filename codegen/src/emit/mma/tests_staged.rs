//! CPU replay of the staged backward (bf16; `templates/sum_bwd_pflow_staged.cu.tera`,
//! `sum_bwd_eflow_staged.cu.tera` and the staged `_gflow` of `sum_bwd_mma.cu.tera`): `_gflow`'s
//! in-place compaction of G to bf16 (its chunk order, read before write), the forward's `_x` run
//! again and its `_pack` (tests.rs), then `_pflow` and `_eflow` block by block with their own index
//! arithmetic: cp.async chunks with zeroed tails, 8-byte fragment loads split by `prmt` into two
//! children's fragments, `ldmatrix .trans` per the PTX ISA, K slices. The mma follows the PTX
//! fragment tables (tests.rs). Checked against Θ ⊙ (G·Xᵀ) and X ⊙ (Θᵀ·G) in f64 on the same rounded
//! operands. Keep it in step with the templates.

// The replay indexes by thread, lane and tile exactly as the kernel does.
#![allow(clippy::needless_range_loop)]

use super::super::mma_bwd::{BwdShape, PC, TN};
use super::tests::{Launch, Lcg, bf16_val, mma_warp, pack_bf16x2, pack_kernel, stage_x};
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

/// Every accumulator of a tile as (row in the tile, warp column, fragment, column in the
/// fragment, value), per the m16n8 C layout (rows g and g + 8, columns 2t and 2t + 1).
fn accumulators(acc: &[Vec<Vec<[[f32; 4]; 32]>>], wn_: usize) -> impl Iterator<Item = (usize, usize, usize, usize, f32)> + '_ {
    acc.iter().enumerate().flat_map(move |(warp, acc_w)| {
        let (wm, wn, mf) = (warp / wn_, warp % wn_, acc_w.len());
        acc_w.iter().enumerate().flat_map(move |(mi, frags)| {
            frags.iter().enumerate().flat_map(move |(ni, lanes)| {
                lanes.iter().enumerate().flat_map(move |(lane, v)| {
                    let (g, t) = (lane >> 2, lane & 3);
                    (0..4).map(move |e| (wm * mf * 16 + mi * 16 + g + (e >> 1) * 8, wn, ni, 2 * t + (e & 1), v[e]))
                })
            })
        })
    })
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
        for (row, wn, ni, n, v) in accumulators(&acc, wn_) {
            let w = w0 + 2 * (wn * nf * 4 + (ni >> 1) * 8 + n) + (ni & 1);
            if w < w_ && c[w] != 0 {
                let m = m0 + row;
                let i = (l.pids[(r * grp + m / sub) * w_ + w] as usize) + m % sub;
                pflow[i] += l.params[i] * v;
                owned_writes[i] += owned as u32;
            }
        }
    }
}

/// `ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16` per the PTX ISA: lanes 8j..8j + 7 give the
/// row addresses (words) of matrix j; register j of lane (g, t) holds matrix j's elements (2t, g)
/// in its low half and (2t + 1, g) in its high half.
fn ldsm_x4_t(s: &[Option<u32>], addr: &[usize; 32]) -> [[u32; 4]; 32] {
    let half = |j: usize, row: usize, col: usize| -> u32 {
        let a = addr[8 * j + row];
        assert!(a.is_multiple_of(4), "16-byte aligned ldmatrix row");
        let w = s[a + col / 2].expect("ldmatrix of an unstaged word");
        if col.is_multiple_of(2) { w & 0xffff } else { w >> 16 }
    };
    let mut d = [[0u32; 4]; 32];
    for (lane, dl) in d.iter_mut().enumerate() {
        let (g, t) = (lane >> 2, lane & 3);
        for (j, dj) in dl.iter_mut().enumerate() {
            *dj = half(j, 2 * t, g) | half(j, 2 * t + 1, g) << 16;
        }
    }
    d
}

/// The staged `_eflow` with `split` CUDA blocks per (block, child tile); stores (`excl`) or adds
/// into `eflow`, counting stores per slot.
#[allow(clippy::too_many_arguments)] // the kernel's arguments
fn eflow_kernel(sh: &BwdShape, packed: &[Option<u32>], gs: &[u32], l: &Launch, smax: &[f32], split: usize, excl: bool, eflow: &mut [f32], stores: &mut [u32]) {
    let fwd = l.shape;
    let (bs, w_, tr, tn, kc) = (sh.block_size as usize, sh.width as usize, sh.er as usize, TN as usize, sh.e_kc as usize);
    let (wm_, wn_) = warps(sh.er);
    let (wn_, nth) = (wn_ as usize, 32 * (wm_ * wn_) as usize);
    let (mf, nf) = (tr / wm_ as usize / 16, tn / wn_ / 8);
    let (ftm, fkc) = (fwd.tm as usize, fwd.kc as usize);
    let (fnt, fkcw, fnch) = (bs / ftm, fkc / 2, w_.div_ceil(fkc));
    let (ldt, ldg, nch, rt) = (tr / 2 + 4, tn / 2 + 4, bs.div_ceil(kc), w_.div_ceil(tr));
    let (n_blocks, b) = (l.nids.len(), l.b);
    let grid = n_blocks * rt * split;
    for bx in 0..grid {
        let s = grid / (n_blocks * rt);
        let (rr, vec) = (bx / s, b.is_multiple_of(8));
        let (r, w0) = (rr / rt, rr % rt * tr);
        let (c, n0, pk) = (&l.cids[r * w_..(r + 1) * w_], l.nids[r] as usize, r * fnt * fnch * ftm * fkcw);
        let mut bt = bx % s;
        while bt < b.div_ceil(tn) {
            let b0 = bt * tn;
            let sm: Vec<f32> = (0..tn).map(|col| if b0 + col < b { smax[r * b + b0 + col] } else { f32::NEG_INFINITY }).collect();
            let mut acc = vec![vec![vec![[[0f32; 4]; 32]; nf]; mf]; nth / 32];
            for ch in 0..nch {
                // kernel `issue`: packed weight pieces of 8 children, G pieces of 8 samples (vec)
                // or pairs; everything else zeroed.
                let mut st = vec![None::<u32>; kc * ldt];
                for row in 0..kc {
                    for q in (0..tr).step_by(8) {
                        let (m, w) = (ch * kc + row, w0 + q);
                        let fch = w / fkc;
                        for i in 0..4 {
                            let word = if m < bs && fch < fnch {
                                packed[pk + ((m / ftm * fnch + fch) * ftm + m % ftm) * fkcw + (w % fkc) / 2 + i].expect("packed")
                            } else {
                                0
                            };
                            st[row * ldt + q / 2 + i] = Some(word);
                        }
                    }
                }
                let mut sg = vec![None::<u32>; kc * ldg];
                for row in 0..kc {
                    let m = ch * kc + row;
                    for q in (0..tn).step_by(if vec { 8 } else { 2 }) {
                        for i in 0..if vec { 4 } else { 1 } {
                            let word = if m < bs && b0 + q < b { gs[(n0 + m) * b + (b0 + q) / 2 + i] } else { 0 };
                            sg[row * ldg + q / 2 + i] = Some(word);
                        }
                    }
                }
                for kk in 0..kc / 16 {
                    for (warp, acc_w) in acc.iter_mut().enumerate() {
                        let (wm, wn) = (warp / wn_, warp % wn_);
                        let addr = |f: &dyn Fn(usize, usize) -> usize| -> [usize; 32] { std::array::from_fn(|lane| f(lane >> 3, lane & 7)) };
                        let a: Vec<[[u32; 4]; 32]> = (0..mf)
                            .map(|mi| ldsm_x4_t(&st, &addr(&|j, jr| (kk * 16 + (j >> 1) * 8 + jr) * ldt + (wm * mf * 16 + mi * 16 + (j & 1) * 8) / 2)))
                            .collect();
                        let mut bf = vec![[[0u32; 2]; 32]; nf];
                        for p in 0..nf / 2 {
                            let d = ldsm_x4_t(&sg, &addr(&|j, jr| (kk * 16 + (j & 1) * 8 + jr) * ldg + (wn * nf * 8 + p * 16 + (j >> 1) * 8) / 2));
                            for lane in 0..32 {
                                bf[2 * p][lane] = [d[lane][0], d[lane][1]];
                                bf[2 * p + 1][lane] = [d[lane][2], d[lane][3]];
                            }
                        }
                        // A: register j of the fragment is matrix j.
                        for mi in 0..mf {
                            for ni in 0..nf {
                                mma_warp(Precision::Bf16, &a[mi], &bf[ni], &mut acc_w[mi][ni]);
                            }
                        }
                    }
                }
            }
            for (row, wn, ni, n, v) in accumulators(&acc, wn_) {
                let col = wn * nf * 8 + ni * 8 + n;
                let (w, bb) = (w0 + row, b0 + col);
                if w < w_ && bb < b && c[w] != 0 && sm[col] != f32::NEG_INFINITY {
                    let at = c[w] as usize * b + bb;
                    let ev = l.elem[at];
                    let f = if ev == f32::NEG_INFINITY { 0.0 } else { (ev - sm[col]).exp() * v };
                    if excl {
                        eflow[at] = f;
                        stores[at] += 1;
                    } else {
                        eflow[at] += f;
                    }
                }
            }
            bt += s;
        }
    }
}

/// Blocks of `bs` nodes over `width` children (block 1 padded with dummy children), random
/// flows with zeros, node values with −inf, a sample whose children are all −inf.
fn check(bs: u32, width: u32, b: usize, ks_n: usize) {
    check_merged(bs, 1, width, b, ks_n);
}

/// As [`check`], for blocks of `g` merged blocks of `sub` nodes each (`MmaPart`: a PD region),
/// each original block with its own weight rows.
fn check_merged(sub: u32, g: u32, width: u32, b: usize, ks_n: usize) {
    let bs = sub * g;
    let part = MmaPart { block_size: bs, sub, width, nids: vec![], cids: vec![], pids: vec![] };
    let fwd = MmaShape::for_part(Precision::Bf16, &part).unwrap().two_kernel();
    let sh = BwdShape::for_part(Precision::Bf16, &part, true).unwrap();
    assert!(sh.staged && sh.kernel_name().ends_with("_s"));
    let (n, bs_, w_, sub_, g_) = (3usize, bs as usize, width as usize, sub as usize, g as usize);
    let mut rng = Lcg(bs as u64 * 7919 + width as u64 * 31 + b as u64 + g as u64);
    let (mut cids, mut pids) = (Vec::new(), Vec::new());
    for r in 0..n {
        for w in 0..w_ {
            let real = r != 1 || w < (w_ / 2).max(1);
            cids.push(if real { (1 + r * w_ + w) as u32 } else { 0 });
        }
        for j in 0..g_ {
            for w in 0..w_ {
                let real = r != 1 || w < (w_ / 2).max(1);
                pids.push(if real { (((r * g_ + j) * w_ + w) * sub_) as u32 } else { 0 });
            }
        }
    }
    // The weight of node m of merged block r for child w.
    let pidx = |r: usize, m: usize, w: usize| pids[(r * g_ + m / sub_) * w_ + w] as usize + m % sub_;
    let params: Vec<f32> = (0..n * g_ * w_ * sub_).map(|_| 0.05 + rng.next()).collect();
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
    // Element flows: X ⊙ (Θᵀ·G), Θ as packed by the forward's `_pack`.
    let packed = pack_kernel(&l);
    for (split, excl) in [(1, true), (2, true), (1, false)] {
        let mut eflow = vec![0f32; elem.len()];
        let mut stores = vec![0u32; elem.len()];
        eflow_kernel(&sh, &packed, &nflow, &l, &smax, split, excl, &mut eflow, &mut stores);
        for r in 0..n {
            for w in 0..w_ {
                let cw = cids[r * w_ + w] as usize;
                if cw == 0 {
                    continue;
                }
                for s in 0..b {
                    let (ev, mb) = (elem[cw * b + s], smax[r * b + s]);
                    let sum: f64 = (0..bs_)
                        .map(|m| bf16_val(pack_bf16x2(0.0, params[pidx(r, m, w)]) as u16) as f64 * bf16_val(pack_bf16x2(0.0, gval(r, m, s)) as u16) as f64)
                        .sum();
                    let want = if mb == f32::NEG_INFINITY || ev == f32::NEG_INFINITY { 0.0 } else { ((ev - mb) as f64).exp() * sum };
                    let got = eflow[cw * b + s] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs() + 1e-7,
                        "eflow bs{bs} w{width} B{b} split {split} excl {excl}: block {r} child {w} sample {s}: {got} vs {want}"
                    );
                    assert!(stores[cw * b + s] <= 1, "an owned element flow stored twice");
                }
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
                let i = pidx(r, m, w);
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
fn staged_flows_replay_the_products() {
    for (bs, w) in [(16, 3), (32, 40), (128, 64), (64, 130)] {
        for b in [1, 7, 64, 130] {
            check(bs, w, b, 1);
        }
    }
    // K slices, chunked `_gflow` rows (B past 512; odd and multiple-of-8 batches).
    check(128, 70, 1100, 3);
    check(16, 33, 1024, 5);
    check(32, 64, 96, 2);
    // Merged PD regions: 8 and 4 blocks of 32 over one child list.
    check_merged(32, 8, 96, 70, 1);
    check_merged(32, 4, 64, 130, 2);
}

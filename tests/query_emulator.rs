//! The GPU query passes executed on the CPU: an emulator runs the manifest's steps (forward,
//! node flows, max-product forward, the MPE and sampling walks, the conditional gathers) with
//! every generated kernel transcribed line by line from its template into Rust, over the
//! manifest's own index tables, with bounds-checked indexing. So the emitter's tables and step
//! order, the kernels' index arithmetic (every buffer index in bounds for this corpus) and the
//! query algorithms are checked against the CPU engine without a GPU. What it cannot check is
//! that the CUDA text says the same as its transcription (the GPU self-check does that).
// Index loops on purpose: they mirror the kernels' index arithmetic.
#![allow(clippy::needless_range_loop)]

use pcc_testkit as common;

use common::Gen;
use common::host_cuda::{DRIVER_PRELUDE, KERNEL_SHIM, read_f32, write_f32};
use pcc::codegen::Model;
use pcc::codegen::emit::emit;
use pcc::codegen::structures::{hclt, hmm};
use pcc::runtime::cuda::{KernelArg, KernelSpec, Manifest, Step, conditional_slots, conditionals_from_slots};
use pcc::runtime::{Conditional, Evidence, MpeResult, Plan};

const NEG_INF: f32 = f32::NEG_INFINITY;

fn philox(mut c: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut k0, mut k1) = (key[0], key[1]);
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k0, p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k1, p0 as u32];
        k0 = k0.wrapping_add(0x9E37_79B9);
        k1 = k1.wrapping_add(0xBB67_AE85);
    }
    c
}
fn draw(seed: u64, sample: u32, node: u32) -> [u32; 4] {
    philox([sample, node, 0, 0], [seed as u32, (seed >> 32) as u32])
}
fn u53(a: u32, b: u32) -> f64 {
    ((((a >> 5) as u64) << 26) | (b >> 6) as u64) as f64 * (1.0 / 9007199254740992.0)
}
fn u24(a: u32) -> f32 {
    (a >> 8) as f32 * (1.0 / 16777216.0)
}

// templates/dist/binomial.cu.tera.
fn binomial_lpmf(n: u32, lp: f32, lq: f32, k: u32) -> f32 {
    if k > n {
        return NEG_INF;
    }
    let m = k.min(n - k);
    let mut lc = 0f64;
    for j in 1..=m {
        lc += ((n - m + j) as f64 / j as f64).ln();
    }
    let mut out = lc as f32;
    if k > 0 {
        out += k as f32 * lp;
    }
    if k < n {
        out += (n - k) as f32 * lq;
    }
    out
}
/// `pcc_binomial_logp` from the leaf constants `c` = (log(1−p), log p, n).
fn binomial_logp(c: &[f32], x: f32) -> f32 {
    binomial_lpmf(c[2] as u32, c[1], c[0], x as u32)
}
fn binomial_mode(n: u32, p: f32) -> u32 {
    let (pd, q) = (p as f64, 1.0 - p as f64);
    let mut k = 0;
    while k < n && (n - k) as f64 * pd > (k + 1) as f64 * q {
        k += 1;
    }
    k
}
fn binomial_draw(n: u32, p: f32, mut u: f64) -> u32 {
    let p = p as f64;
    let (lp, lq) = (p.ln(), (-p).ln_1p());
    let (mut lc, mut last) = (0f64, 0);
    for k in 0..=n {
        if k > 0 {
            lc += ((n - k + 1) as f64 / k as f64).ln();
        }
        let mut l = lc;
        if k > 0 {
            l += k as f64 * lp;
        }
        if k < n {
            l += (n - k) as f64 * lq;
        }
        let pk = l.exp();
        if pk > 0.0 {
            last = k;
        }
        if u < pk {
            return k;
        }
        u -= pk;
    }
    last
}

/// Device buffers of one batch.
struct Dev<'a> {
    m: &'a Manifest,
    plan: &'a Plan,
    b: usize,
    nodes: Vec<f32>,
    elems: Vec<f32>,
    nflow: Vec<f32>,
    eflow: Vec<f32>,
    data: Vec<f32>,
    missing: Vec<u8>,
    sum: Vec<f32>,
    prm: Vec<f32>,
    table: Vec<f32>,
    out: Vec<f32>,
    seed: u64,
    sample0: u32,
}

fn nonempty(v: Vec<f32>) -> Vec<f32> {
    if v.is_empty() { vec![0.0] } else { v }
}

impl<'a> Dev<'a> {
    fn new(model: &'a Model, m: &'a Manifest, ev: &Evidence) -> Dev<'a> {
        let plan = &model.plan;
        let b = ev.num_samples();
        let nv = plan.num_vars as usize;
        let mut elems = vec![0f32; plan.num_elements as usize * b];
        elems[..plan.num_dummy_elements as usize * b].fill(NEG_INF);
        let (mut data, mut missing) = (vec![0f32; nv * b], vec![0u8; nv * b]);
        for s in 0..b {
            for v in 0..nv {
                if ev.is_missing(s, v) {
                    missing[v * b + s] = 1;
                } else {
                    data[v * b + s] = ev.value(s, v);
                }
            }
        }
        Dev {
            m,
            plan,
            b,
            nodes: vec![0.0; plan.num_nodes as usize * b],
            elems,
            nflow: vec![0.0; plan.num_nodes as usize * b],
            eflow: vec![0.0; plan.num_elements as usize * b],
            data,
            missing,
            sum: model.params.sum.clone(),
            prm: nonempty(model.params.input.clone()),
            table: nonempty(model.params.leaf_table(plan)),
            out: Vec::new(),
            seed: 0,
            sample0: 0,
        }
    }

    fn tables(&self, k: &KernelSpec) -> Vec<&'a [u32]> {
        let m = self.m;
        k.args
            .iter()
            .filter_map(|a| match a {
                KernelArg::Table(i) => Some(&m.tables[*i as usize][..]),
                _ => None,
            })
            .collect()
    }

    fn set_root_flow(&mut self) {
        self.nflow.fill(0.0);
        let r = self.plan.root as usize;
        self.nflow[r * self.b..(r + 1) * self.b].fill(1.0);
    }

    fn steps(&mut self, steps: &[Step], skip: impl Fn(&KernelSpec) -> bool) {
        for s in steps {
            match s {
                Step::ZeroElementFlows => self.eflow.fill(0.0),
                Step::Launch(k) if skip(k) => {}
                Step::Launch(k) => self.launch(k),
            }
        }
    }

    /// One kernel, transcribed from its template (dispatch on the generated name).
    fn launch(&mut self, k: &KernelSpec) {
        let t = self.tables(k);
        let n = k.count as usize;
        let bb = self.b;
        let name = k.name.as_str();
        let kind = name.split('_').nth(1).unwrap_or("");
        // Block size and width: launch arguments of the query kernels, in the name of the others.
        let ints: Vec<usize> = k.args.iter().filter_map(|a| if let KernelArg::Int(v) = a { Some(*v as usize) } else { None }).collect();
        let shape = |name: &str| -> (usize, usize) {
            if let [bs, w] = ints[..] {
                return (bs, w);
            }
            let bs = name.split("_bs").nth(1).unwrap().split('_').next().unwrap().parse().unwrap();
            let w = name.split("_w").last().unwrap().split('_').next().unwrap().parse().unwrap();
            (bs, w)
        };
        if name.starts_with("input_") && (name.ends_with("_fwd")) {
            let max = name.ends_with("_max_fwd");
            let (ids, vars, aux) = (t[0], t[1], t[2]);
            for i in 0..n {
                for b in 0..bb {
                    let at = vars[i] as usize * bb + b;
                    let out = if self.missing[at] == 0 {
                        let x = self.data[at];
                        let a = aux[i] as usize;
                        match kind {
                            // Categorical leaves read their probabilities: at the parameter
                            // slots (the max pass's fourth table; the log-sum pass's third).
                            "categorical" if max => self.prm[t[3][i] as usize + x as u32 as usize].ln(),
                            "categorical" => self.prm[a + x as u32 as usize].ln(),
                            "bernoulli" => self.table[a + (x >= 0.5) as usize],
                            "gaussian" => {
                                let c = &self.table[a..a + 3];
                                let z = (x - c[0]) / c[1];
                                -0.5 * z * z - c[2]
                            }
                            "binomial" => binomial_logp(&self.table[a..a + 3], x),
                            "indicator" => {
                                if x as u32 == aux[i] {
                                    0.0
                                } else {
                                    NEG_INF
                                }
                            }
                            _ => panic!("the emulator does not know {kind} leaves"),
                        }
                    } else if !max {
                        0.0
                    } else {
                        let (pstart, nstats) = (t[3], t[4]);
                        let a = aux[i] as usize;
                        match kind {
                            "categorical" => {
                                let q = &self.prm[pstart[i] as usize..][..nstats[i] as usize];
                                q.iter().fold(0f32, |m, &p| m.max(p)).ln()
                            }
                            "bernoulli" => {
                                let p = self.prm[pstart[i] as usize];
                                if p > 1.0 - p { self.table[a + 1] } else { self.table[a] }
                            }
                            "gaussian" => -self.table[a + 2],
                            "binomial" => {
                                let c = &self.table[a..a + 3];
                                let n = c[2] as u32;
                                binomial_lpmf(n, c[1], c[0], binomial_mode(n, self.prm[pstart[i] as usize]))
                            }
                            "indicator" => 0.0,
                            _ => panic!("the emulator does not know {kind} leaves"),
                        }
                    };
                    self.nodes[ids[i] as usize * bb + b] = out;
                }
            }
        } else if name.starts_with("prod_fwd_") {
            let (bs, w) = shape(name);
            let (nids, cids) = (t[0], t[1]);
            for r in 0..n {
                for kk in 0..bs {
                    for b in 0..bb {
                        let mut acc = 0f32;
                        for j in 0..w {
                            acc += self.nodes[(cids[r * w + j] as usize + kk) * bb + b];
                        }
                        self.elems[(nids[r] as usize + kk) * bb + b] = acc;
                    }
                }
            }
        } else if name.starts_with("prod_bwd_") {
            let (bs, w) = shape(name);
            let (nids, cids) = (t[0], t[1]);
            for r in 0..n {
                for kk in 0..bs {
                    for b in 0..bb {
                        let f = self.eflow[(nids[r] as usize + kk) * bb + b];
                        if f == 0.0 {
                            continue;
                        }
                        for j in 0..w {
                            let c = cids[r * w + j] as usize;
                            if c == 0 {
                                break;
                            }
                            self.nflow[(c + kk) * bb + b] += f;
                        }
                    }
                }
            }
        } else if name.starts_with("sum_fwd_") {
            let (bs, w) = shape(name);
            let (nids, cids, pids) = (t[0], t[1], t[2]);
            for r in 0..n {
                for m in 0..bs {
                    for b in 0..bb {
                        let e = |x: usize| self.elems[cids[r * w + x] as usize * bb + b];
                        let mx = (0..w).map(e).fold(NEG_INF, f32::max);
                        let mut out = NEG_INF;
                        if mx != NEG_INF {
                            let s: f32 = (0..w).map(|x| self.sum[pids[r * w + x] as usize + m] * (e(x) - mx).exp()).sum();
                            if s > 0.0 {
                                out = mx + s.ln();
                            }
                        }
                        self.nodes[(nids[r] as usize + m) * bb + b] = out;
                    }
                }
            }
        } else if name.starts_with("sum_bwd_") && name.ends_with("_eflow") {
            let (bs, w) = shape(name.trim_end_matches("_eflow"));
            let (nids, cids, pids) = (t[0], t[1], t[2]);
            for r in 0..n {
                for x in 0..w {
                    for b in 0..bb {
                        let c = cids[r * w + x] as usize;
                        if c == 0 {
                            continue;
                        }
                        let e = self.elems[c * bb + b];
                        if e == NEG_INF {
                            continue;
                        }
                        let (p, n0) = (pids[r * w + x] as usize, nids[r] as usize);
                        let mut acc = 0f32;
                        for m in 0..bs {
                            let f = self.nflow[(n0 + m) * bb + b];
                            let v = self.nodes[(n0 + m) * bb + b];
                            if f != 0.0 && v != NEG_INF {
                                acc += self.sum[p + m] * f * (e - v).exp();
                            }
                        }
                        self.eflow[c * bb + b] += acc;
                    }
                }
            }
        } else if name == "sum_max_fwd" {
            let (bs, w) = shape(name);
            let (nids, cids, pids, counts) = (t[0], t[1], t[2], t[3]);
            for r in 0..n {
                for m in 0..bs {
                    for b in 0..bb {
                        let mut out = NEG_INF;
                        for x in 0..(counts[r] as usize).min(w) {
                            let lt = self.sum[pids[r * w + x] as usize + m].ln();
                            if lt == NEG_INF {
                                continue;
                            }
                            out = out.max(lt + self.elems[cids[r * w + x] as usize * bb + b]);
                        }
                        self.nodes[(nids[r] as usize + m) * bb + b] = out;
                    }
                }
            }
        } else if name == "sum_mpe" || name == "sum_sample" {
            let (bs, w) = shape(name);
            let (nids, cids, pids, counts) = (t[0], t[1], t[2], t[3]);
            for r in 0..n {
                for m in 0..bs {
                    for b in 0..bb {
                        let node = nids[r] as usize + m;
                        if self.nflow[node * bb + b] == 0.0 {
                            continue;
                        }
                        let cnt = (counts[r] as usize).min(w);
                        if cnt == 0 {
                            continue;
                        }
                        let score = |x: usize| self.sum[pids[r * w + x] as usize + m].ln() + self.elems[cids[r * w + x] as usize * bb + b];
                        let pick = if name == "sum_mpe" {
                            let (mut pick, mut best) = (0, score(0));
                            for x in 1..cnt {
                                if score(x) > best {
                                    best = score(x);
                                    pick = x;
                                }
                            }
                            pick
                        } else {
                            let mx = (0..cnt).map(score).fold(NEG_INF, f32::max);
                            let wt = |x: usize| if score(x) == NEG_INF { 0.0 } else { ((score(x) - mx) as f64).exp() };
                            let total: f64 = (0..cnt).map(wt).sum();
                            let r4 = draw(self.seed, self.sample0.wrapping_add(b as u32), node as u32);
                            let mut u = u53(r4[0], r4[1]) * total;
                            let (mut pick, mut last) = (None, 0);
                            for x in 0..cnt {
                                let v = wt(x);
                                if v > 0.0 {
                                    last = x;
                                }
                                if pick.is_none() {
                                    if u < v { pick = Some(x) } else { u -= v }
                                }
                            }
                            pick.unwrap_or(last)
                        };
                        self.eflow[cids[r * w + pick] as usize * bb + b] = 1.0;
                    }
                }
            }
        } else if name.starts_with("input_") && name.contains("_cond_k") {
            let kmax: usize = name.rsplit("_k").next().unwrap().parse().unwrap();
            let (slots, _) = (conditional_slots(self.plan).1 as usize, ());
            let (evar, eslot, encat, estart, ids, aux, pstart, ncat) = (t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
            for e in 0..n {
                for k in 0..kmax {
                    for b in 0..bb {
                        if k as u32 >= encat[e] || self.missing[evar[e] as usize * bb + b] == 0 {
                            continue;
                        }
                        let mut acc = 0f32;
                        for j in estart[e] as usize..estart[e + 1] as usize {
                            let f = self.nflow[ids[j] as usize * bb + b];
                            if f == 0.0 {
                                continue;
                            }
                            match kind {
                                "categorical" => {
                                    if (k as u32) < ncat[j] {
                                        acc += f * self.prm[pstart[j] as usize + k];
                                    }
                                }
                                "bernoulli" => {
                                    let p = self.prm[pstart[j] as usize];
                                    acc += f * if k == 0 { 1.0 - p } else { p };
                                }
                                "gaussian" => {
                                    let (mu, sd) = (self.table[aux[j] as usize], self.table[aux[j] as usize + 1]);
                                    acc += f * if k == 0 { mu } else { sd * sd + mu * mu };
                                }
                                "binomial" => {
                                    if (k as u32) < ncat[j] {
                                        acc += f * binomial_logp(&self.table[aux[j] as usize..][..3], k as f32).exp();
                                    }
                                }
                                "indicator" => {
                                    if aux[j] == k as u32 {
                                        acc += f;
                                    }
                                }
                                _ => panic!("the emulator does not know {kind} leaves"),
                            }
                        }
                        self.out[b * slots + eslot[e] as usize + k] += acc;
                    }
                }
            }
        } else if name.starts_with("input_") && (name.ends_with("_mpe") || name.ends_with("_sample")) {
            let nv = self.plan.num_vars as usize;
            let (ids, vars, aux, pstart, nstats) = (t[0], t[1], t[2], t[3], t[4]);
            for i in 0..n {
                for b in 0..bb {
                    let node = ids[i] as usize;
                    if self.nflow[node * bb + b] == 0.0 {
                        continue;
                    }
                    let at = vars[i] as usize * bb + b;
                    let o = b * nv + vars[i] as usize;
                    if self.missing[at] == 0 {
                        self.out[o] = self.data[at];
                        continue;
                    }
                    let q = &self.prm[pstart[i] as usize..];
                    let a = aux[i] as usize;
                    self.out[o] = if name.ends_with("_mpe") {
                        match kind {
                            "categorical" => {
                                let (mut arg, mut best) = (0u32, NEG_INF);
                                for j in 0..nstats[i] as usize {
                                    if q[j] > best {
                                        best = q[j];
                                        arg = j as u32;
                                    }
                                }
                                arg as f32
                            }
                            "bernoulli" => (q[0] > 1.0 - q[0]) as u32 as f32,
                            "gaussian" => self.table[a],
                            "binomial" => binomial_mode(self.table[a + 2] as u32, q[0]) as f32,
                            "indicator" => aux[i] as f32,
                            _ => panic!("the emulator does not know {kind} leaves"),
                        }
                    } else {
                        let r4 = draw(self.seed, self.sample0.wrapping_add(b as u32), node as u32);
                        match kind {
                            "categorical" => {
                                let k = nstats[i] as usize;
                                let mut u = u53(r4[0], r4[1]);
                                let (mut pick, mut last) = (k, 0);
                                for (j, &p) in q[..k].iter().enumerate() {
                                    let p = p as f64;
                                    if p > 0.0 {
                                        last = j;
                                    }
                                    if pick == k {
                                        if u < p { pick = j } else { u -= p }
                                    }
                                }
                                (if pick == k { last } else { pick }) as f32
                            }
                            "bernoulli" => (u24(r4[0]) < q[0]) as u32 as f32,
                            "gaussian" => {
                                let (u1, u2) = (1.0 - u53(r4[0], r4[1]), u53(r4[2], r4[3]));
                                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                                (self.table[a] as f64 + self.table[a + 1] as f64 * z) as f32
                            }
                            "binomial" => binomial_draw(self.table[a + 2] as u32, q[0], u53(r4[0], r4[1])) as f32,
                            "indicator" => aux[i] as f32,
                            _ => panic!("the emulator does not know {kind} leaves"),
                        }
                    };
                }
            }
        } else {
            panic!("the emulator does not know kernel {name}");
        }
    }
}

/// Conditionals as the GPU engine computes them.
fn conditionals(model: &Model, m: &Manifest, ev: &Evidence) -> Vec<Vec<Conditional>> {
    let mut d = Dev::new(model, m, ev);
    for k in &m.forward {
        d.launch(k);
    }
    d.set_root_flow();
    d.steps(&m.backward, |k| k.args.iter().any(|a| matches!(a, KernelArg::SumFlows | KernelArg::InputStats)));
    let (offsets, slots) = conditional_slots(&model.plan);
    d.out = vec![0.0; d.b * slots as usize];
    for k in &m.queries.conditionals {
        d.launch(k);
    }
    (0..d.b)
        .map(|s| {
            let row = &d.out[s * slots as usize..][..slots as usize];
            conditionals_from_slots(&model.plan, ev, s, row, &offsets)
        })
        .collect()
}

/// MPE as the GPU engine computes it.
fn mpe(model: &Model, m: &Manifest, ev: &Evidence) -> MpeResult {
    let mut d = Dev::new(model, m, ev);
    for k in &m.queries.mpe_forward {
        d.launch(k);
    }
    let r = model.plan.root as usize;
    let log_values = d.nodes[r * d.b..(r + 1) * d.b].to_vec();
    d.set_root_flow();
    d.out = vec![0.0; d.b * model.plan.num_vars as usize];
    d.steps(&m.queries.mpe_backward, |_| false);
    MpeResult { log_values, assignments: d.out }
}

/// Samples of rows `[a, b)` of `ev` as the GPU engine draws them in one batch.
fn sample(model: &Model, m: &Manifest, ev: &Evidence, a: usize, b: usize, seed: u64) -> Vec<f32> {
    let part = ev.slice(a, b);
    let mut d = Dev::new(model, m, &part);
    for k in &m.forward {
        d.launch(k);
    }
    d.set_root_flow();
    d.out = vec![0.0; d.b * model.plan.num_vars as usize];
    d.seed = seed;
    d.sample0 = a as u32;
    d.steps(&m.queries.sample_backward, |_| false);
    d.out
}

fn corpus() -> Vec<(String, Model, Evidence)> {
    let mut v = Vec::new();
    for s in 0..12u64 {
        let model = Model::random(Gen::circuit(s), 7).unwrap();
        let ev = common::random_evidence(&model, 64, 0.4, 50 + s);
        v.push((format!("random{s}"), model, ev));
    }
    for s in 0..3u64 {
        let (c, ev) = common::mixed_circuit(s, 64, 0.4);
        v.push((format!("mixed{s}"), Model::random(c, 3).unwrap(), ev));
    }
    for s in 0..2u64 {
        let (c, ev) = common::binomial_circuit(s, 64, 0.4);
        v.push((format!("binomial{s}"), Model::random(c, 3).unwrap(), ev));
    }
    let data: Vec<f32> = (0..200 * 10).map(|i| ((i * 2654435761usize) >> 7 & 1) as f32).collect();
    let hc = hclt::learn(&Evidence::new(10, data).unwrap(), &hclt::HcltOptions { latents: 8, ..Default::default() }).unwrap();
    let model = Model::random(hc, 5).unwrap();
    let ev = common::random_evidence(&model, 64, 0.4, 9);
    v.push(("hclt".into(), model, ev));
    let model =
        Model::random(hmm::build(&hmm::HmmOptions { seq_length: 6, hidden: 8, num_emits: 3, homogeneous: true, ..Default::default() }).unwrap(), 5).unwrap();
    let ev = common::random_evidence(&model, 64, 0.4, 10);
    v.push(("hmm".into(), model, ev));
    v
}

#[test]
fn emulated_conditionals_match_the_cpu_engine() {
    for (name, model, ev) in corpus() {
        let m = emit(&model.plan).unwrap().manifest;
        let want = model.cpu_engine().unwrap().conditionals(&ev).unwrap();
        let got = conditionals(&model, &m, &ev);
        assert_eq!(want.len(), got.len());
        for (s, (w, g)) in want.iter().zip(&got).enumerate() {
            for (v, (a, b)) in w.iter().zip(g).enumerate() {
                let ok = match (a, b) {
                    (Conditional::Observed, Conditional::Observed) => true,
                    (Conditional::Discrete(p), Conditional::Discrete(q)) => p.len() == q.len() && p.iter().zip(q).all(|(x, y)| (x - y).abs() <= 1e-5),
                    (Conditional::Continuous { mean: m1, var: v1 }, Conditional::Continuous { mean: m2, var: v2 }) => {
                        (m1 - m2).abs() <= 1e-5 * m1.abs().max(1.0) && (v1 - v2).abs() <= 1e-4 * v1.abs().max(1.0)
                    }
                    _ => false,
                };
                assert!(ok, "{name}: sample {s} var {v}: CPU {a:?}, emulated GPU {b:?}");
            }
        }
    }
}

#[test]
fn emulated_mpe_matches_the_cpu_engine() {
    for (name, model, ev) in corpus() {
        let m = emit(&model.plan).unwrap().manifest;
        let cpu = model.cpu_engine().unwrap();
        let want = cpu.mpe(&ev).unwrap();
        let got = mpe(&model, &m, &ev);
        let nv = model.plan.num_vars as usize;
        for s in 0..ev.num_samples() {
            let (a, b) = (want.log_values[s], got.log_values[s]);
            assert!(a == b || (a - b).abs() <= 1e-5 * a.abs().max(1.0), "{name}: sample {s}: value CPU {a}, emulated GPU {b}");
            let (x, y) = (&want.assignments[s * nv..][..nv], &got.assignments[s * nv..][..nv]);
            if x != y {
                // Allowed only for an exact tie: the GPU's completion reaches the same value.
                let e = cpu.mpe(&Evidence::new(nv, y.to_vec()).unwrap()).unwrap().log_values[0];
                assert!((e - a).abs() <= 1e-5 * a.abs().max(1.0), "{name}: sample {s}: CPU {x:?} ({a}), emulated GPU {y:?} ({e})");
            }
        }
    }
}

#[test]
fn emulated_samples_follow_the_exact_marginals_and_ignore_the_batch_split() {
    const N: usize = 3000;
    for (name, model, ev) in corpus() {
        let m = emit(&model.plan).unwrap().manifest;
        let nv = model.plan.num_vars as usize;
        let cpu = model.cpu_engine().unwrap();
        // Conditional sampling of one evidence row, repeated; the unconditional case is the
        // all-missing row.
        for row in [Evidence::all_missing(nv, 1), ev.slice(0, 1)] {
            let mask: Vec<bool> = (0..nv).map(|v| row.is_missing(0, v)).collect();
            let rows = Evidence::with_missing(nv, row.values.repeat(N), Some(mask.repeat(N))).unwrap();
            let whole = sample(&model, &m, &rows, 0, N, 42);
            let split: Vec<f32> = [(0, 1000), (1000, 1777), (1777, N)].iter().flat_map(|&(a, b)| sample(&model, &m, &rows, a, b, 42)).collect();
            assert!(whole == split, "{name}: draws depend only on (seed, sample, node)");
            if mask.iter().any(|&x| x) {
                assert!(whole != sample(&model, &m, &rows, 0, N, 43), "{name}: the seed matters");
            }
            let marg = cpu.conditionals(&row).unwrap().remove(0);
            for (v, c) in marg.iter().enumerate() {
                let col: Vec<f32> = (0..N).map(|i| whole[i * nv + v]).collect();
                match c {
                    Conditional::Observed => assert!(col.iter().all(|x| x.to_bits() == row.values[v].to_bits()), "{name}: var {v} kept"),
                    Conditional::Discrete(p) => {
                        for (k, &pk) in p.iter().enumerate() {
                            let count = col.iter().filter(|&&x| x == k as f32).count() as f64;
                            // Bernstein bound at δ = 1e-9.
                            let l = (2e9f64).ln();
                            let var = N as f64 * pk as f64 * (1.0 - pk as f64);
                            let t = l / 3.0 + (l * l / 9.0 + 2.0 * var * l).sqrt();
                            assert!((count - N as f64 * pk as f64).abs() <= t, "{name}: var {v} cat {k}: {count} of {N}, p = {pk}");
                        }
                        assert!(col.iter().all(|&x| x.fract() == 0.0 && (x as usize) < p.len()), "{name}: var {v} categories");
                    }
                    Conditional::Continuous { mean, var } => {
                        let mu = col.iter().map(|&x| x as f64).sum::<f64>() / N as f64;
                        let s2 = col.iter().map(|&x| (x as f64 - mu).powi(2)).sum::<f64>() / N as f64;
                        assert!((mu - *mean as f64).abs() <= 6.0 * (*var as f64 / N as f64).sqrt() + 1e-6, "{name}: var {v} mean {mu} vs {mean}");
                        assert!((s2 - *var as f64).abs() <= 0.25 * *var as f64 + 1e-3, "{name}: var {v} variance {s2} vs {var}");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The generated CUDA itself, compiled for the host: a shim maps the few CUDA built-ins the
// templates use (thread indices, atomicAdd, __expf/__logf, __int_as_float, min) to C++, and a
// generated driver runs every launch of a query sequentially over its whole grid. Kernels use no
// shared memory and no intra-kernel synchronization, so a sequential run is one valid schedule.
// Its results must equal the emulator's (same float operations in the same order): this checks
// that the CUDA text says what the emulator's transcription says, and with it the index bounds
// (the driver runs under the same inputs; the emulator's Vec indexing would have panicked).

const SHIM: &str = r#"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <string>
#include <algorithm>
struct pcc_dim3 { unsigned x, y, z; };
static pcc_dim3 blockIdx, blockDim, threadIdx, gridDim;
static inline void __syncthreads() {}
static inline float pcc_host_expf(float x) { return expf(x); }
static inline float pcc_host_logf(float x) { return logf(x); }
#define __expf pcc_host_expf
#define __logf pcc_host_logf
// Warp shuffles cannot run one thread at a time; the kernels that use them (small-batch sums,
// parameter flows) are never launched by this driver, so reaching one is a test bug.
static inline float __shfl_xor_sync(unsigned, float, int) { std::abort(); }
static inline float __shfl_down_sync(unsigned, float, int) { std::abort(); }
static inline float __shfl_sync(unsigned, float, int) { std::abort(); }
static inline bool __any_sync(unsigned, bool) { std::abort(); }
static inline void __syncwarp() {}
// The persistent forward kernel (blocks wait on each other) compiles but is never launched here;
// tests/persistent_emulator.rs runs it on threads.
#define PCC_DYN_SMEM(n) unsigned char* n = nullptr; std::abort()
static inline void pcc_bar_work() {}
static inline void pcc_bar_done_arrive() {}
static inline void pcc_bar_done_wait() {}
static inline void pcc_bar_next_wait() {}
static inline void pcc_bar_next_arrive() {}
static inline void pcc_fence_acq_rel() {  }
#define PCC_SPIN_PAUSE()
static inline unsigned pcc_ld_relaxed(const unsigned* p) { return *p; }
static inline unsigned pcc_ld_acquire(const unsigned* p) { return *p; }
static inline void pcc_prefetch_l2(const void*) {}
static inline void pcc_st_relaxed(unsigned* p, unsigned v) { *p = v; }
static inline unsigned long long pcc_globaltimer() { return 0; }
static inline float pcc_ld_fresh(const float* p) { return *p; }
static inline long long clock64() { return 0; }
static inline void __trap() { std::abort(); }
static inline void __threadfence() {}
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
static inline int pcc_redux_max(int) { std::abort(); }
static inline void pcc_st_sys(unsigned* p, unsigned v) { *p = v; }
static inline void pcc_fence_sys() {}
"#;

fn driver(model: &Model, m: &Manifest) -> String {
    let plan = &model.plan;
    let arg = |a: &KernelArg, k: &KernelSpec| -> String {
        match a {
            KernelArg::Nodes => "nodes.data()".into(),
            KernelArg::Elements => "elems.data()".into(),
            KernelArg::NodeFlows => "nflow.data()".into(),
            KernelArg::ElementFlows => "eflow.data()".into(),
            KernelArg::Data => "data.data()".into(),
            KernelArg::Missing => "missing.data()".into(),
            KernelArg::SumParams => "sum.data()".into(),
            KernelArg::InputParams => "prm.data()".into(),
            KernelArg::LeafTable => "table.data()".into(),
            KernelArg::Output => "out.data()".into(),
            KernelArg::Table(i) => format!("tab[{i}].data()"),
            KernelArg::Batch => "B".into(),
            KernelArg::Count => format!("{}", k.count),
            KernelArg::Seed => "seed".into(),
            KernelArg::SampleOffset => "sample0".into(),
            KernelArg::Int(v) => format!("{v}"),
            other => panic!("no query launch binds {other:?}"),
        }
    };
    let launch = |k: &KernelSpec| -> String {
        let args: Vec<String> = k.args.iter().map(|a| arg(a, k)).collect();
        assert!(k.scales_with_batch);
        format!("    LAUNCH({}, {}LL * B, {});\n", k.name, k.threads_per_sample, args.join(", "))
    };
    let steps = |s: &[Step], skip: &dyn Fn(&KernelSpec) -> bool| -> String {
        s.iter()
            .map(|s| match s {
                Step::ZeroElementFlows => "    std::fill(eflow.begin(), eflow.end(), 0.f);\n".into(),
                Step::Launch(k) if skip(k) => String::new(),
                Step::Launch(k) => launch(k),
            })
            .collect()
    };
    let fwd: String = m.forward.iter().map(launch).collect();
    let mpe_fwd: String = m.queries.mpe_forward.iter().map(launch).collect();
    let cond: String = m.queries.conditionals.iter().map(launch).collect();
    let accumulates = |k: &KernelSpec| k.args.iter().any(|a| matches!(a, KernelArg::SumFlows | KernelArg::InputStats));
    let bwd = steps(&m.backward, &accumulates);
    let mpe_bwd = steps(&m.queries.mpe_backward, &|_| false);
    let sample_bwd = steps(&m.queries.sample_backward, &|_| false);
    let (nn, ne, nde, nv, root) = (plan.num_nodes, plan.num_elements, plan.num_dummy_elements, plan.num_vars, plan.root);
    let slots = conditional_slots(plan).1;
    let ntab = m.tables.len();
    let prelude = DRIVER_PRELUDE;
    format!(
        r#"{prelude}
static void wr(const std::string& path, const std::vector<float>& v) {{
    FILE* f = fopen(path.c_str(), "wb"); fwrite(v.data(), sizeof(float), v.size(), f); fclose(f);
}}
int main(int argc, char** argv) {{
    const std::string dir = argv[1];
    const int mode = atoi(argv[2]), B = atoi(argv[3]);
    const unsigned long long seed = strtoull(argv[4], 0, 10);
    const u32 sample0 = (u32)strtoul(argv[5], 0, 10);
    std::vector<std::vector<unsigned>> tab;
    for (int i = 0; i < {ntab}; ++i) tab.push_back(rd<unsigned>(dir + "/tab" + std::to_string(i)));
    std::vector<float> sum = rd<float>(dir + "/sum"), prm = rd<float>(dir + "/prm"), table = rd<float>(dir + "/table");
    std::vector<float> data = rd<float>(dir + "/data");
    std::vector<unsigned char> missing = rd<unsigned char>(dir + "/missing");
    std::vector<float> nodes((size_t){nn} * B, 0.f), elems((size_t){ne} * B, 0.f), nflow((size_t){nn} * B, 0.f), eflow((size_t){ne} * B, 0.f);
    for (size_t i = 0; i < (size_t){nde} * B; ++i) elems[i] = PCC_NEG_INF;
    std::vector<float> out((size_t)B * (mode == 0 ? {slots} : {nv}), 0.f), root(B);
    if (mode == 1) {{
{mpe_fwd}    }} else {{
{fwd}    }}
    for (int b = 0; b < B; ++b) root[b] = nodes[(size_t){root} * B + b];
    std::fill(nflow.begin(), nflow.end(), 0.f);
    for (int b = 0; b < B; ++b) nflow[(size_t){root} * B + b] = 1.f;
    if (mode == 0) {{
{bwd}{cond}    }} else if (mode == 1) {{
{mpe_bwd}    }} else {{
{sample_bwd}    }}
    wr(dir + "/out", out);
    wr(dir + "/root", root);
    return 0;
}}
"#
    )
}

/// Compile the circuit's generated CUDA with the host C++ compiler; `None` without one.
fn host_program(model: &Model, dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if std::process::Command::new(&cxx).arg("--version").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "a C++ compiler is required in CI");
        eprintln!("note: no C++ compiler ({cxx}); skipping");
        return None;
    }
    let e = emit(&model.plan).unwrap();
    for (i, t) in e.manifest.tables.iter().enumerate() {
        std::fs::write(dir.join(format!("tab{i}")), t.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    }
    write_f32(&dir.join("sum"), &model.params.sum);
    write_f32(&dir.join("prm"), &nonempty(model.params.input.clone()));
    write_f32(&dir.join("table"), &nonempty(model.params.leaf_table(&model.plan)));
    let src = format!("{SHIM}{KERNEL_SHIM}{}{}", e.source, driver(model, &e.manifest));
    std::fs::write(dir.join("prog.cpp"), src).unwrap();
    let exe = dir.join("prog");
    let out = std::process::Command::new(&cxx).args(["-O1", "-w", "-std=c++17", "-o"]).arg(&exe).arg(dir.join("prog.cpp")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(exe)
}

/// Run query `mode` (0 conditionals, 1 MPE, 2 sampling) of the host-compiled CUDA on rows
/// `[a, b)` of `ev`: returns (output buffer, root values).
fn run_host(exe: &std::path::Path, dir: &std::path::Path, ev: &Evidence, a: usize, b: usize, mode: u32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let part = ev.slice(a, b);
    let n = part.num_samples();
    let (data, missing) = part.transposed();
    write_f32(&dir.join("data"), &data);
    std::fs::write(dir.join("missing"), &missing).unwrap();
    let st = std::process::Command::new(exe).arg(dir).args([mode.to_string(), n.to_string(), seed.to_string(), a.to_string()]).status().unwrap();
    assert!(st.success());
    (read_f32(&dir.join("out")), read_f32(&dir.join("root")))
}

#[test]
fn generated_cuda_run_on_the_host_equals_the_emulator() {
    let corpus = corpus();
    for (name, model, ev) in
        corpus.iter().filter(|(n, ..)| ["random0", "random3", "random7", "random10", "mixed0", "mixed2", "binomial0", "hmm", "hclt"].contains(&n.as_str()))
    {
        let dir = tempfile::tempdir().unwrap();
        let Some(exe) = host_program(model, dir.path()) else { return };
        let m = emit(&model.plan).unwrap().manifest;
        let n = ev.num_samples();
        let nv = model.plan.num_vars as usize;
        // Conditionals: the raw accumulators, normalized as the engine does, against the emulator.
        let (out, _) = run_host(&exe, dir.path(), ev, 0, n, 0, 0);
        let (offsets, slots) = conditional_slots(&model.plan);
        let want = conditionals(model, &m, ev);
        for s in 0..n {
            let row = &out[s * slots as usize..][..slots as usize];
            for (v, w) in want[s].iter().enumerate() {
                let o = offsets[v] as usize;
                match w {
                    Conditional::Observed => {}
                    Conditional::Discrete(p) => {
                        let t: f32 = row[o..o + p.len()].iter().sum();
                        for (k, &pk) in p.iter().enumerate() {
                            let g = if t > 0.0 { row[o + k] / t } else { row[o + k] };
                            assert!((g - pk).abs() <= 1e-6, "{name}: conditional sample {s} var {v} cat {k}: host CUDA {g}, emulator {pk}");
                        }
                    }
                    Conditional::Continuous { mean, var } => {
                        let g = (row[o], (row[o + 1] - row[o] * row[o]).max(0.0));
                        assert!(
                            (g.0 - mean).abs() <= 1e-6 * mean.abs().max(1.0) && (g.1 - var).abs() <= 1e-5 * var.abs().max(1.0),
                            "{name}: sample {s} var {v}"
                        );
                    }
                }
            }
        }
        // MPE: values and assignments identical to the emulator's.
        let (out, root) = run_host(&exe, dir.path(), ev, 0, n, 1, 0);
        let want = mpe(model, &m, ev);
        assert!(root.iter().zip(&want.log_values).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: MPE values");
        assert!(out.iter().zip(&want.assignments).all(|(a, b)| a.to_bits() == b.to_bits()) && out.len() == n * nv, "{name}: MPE assignments");
        // Sampling: bit-identical draws, also when split into batches at other boundaries.
        let (out, _) = run_host(&exe, dir.path(), ev, 0, n, 2, 77);
        let want = sample(model, &m, ev, 0, n, 77);
        assert!(out.len() == want.len() && out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: samples");
        let (first, _) = run_host(&exe, dir.path(), ev, 0, 10, 2, 77);
        let (rest, _) = run_host(&exe, dir.path(), ev, 10, n, 2, 77);
        assert!([first, rest].concat() == out, "{name}: samples independent of the batch split");
    }
}

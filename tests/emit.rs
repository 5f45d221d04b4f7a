//! The CUDA emitter: generated sources for a corpus of circuits (random circuits, HCLT, PD,
//! RAT-SPN, HMM, Gaussian, Indicator and Binomial leaves) compile with NVRTC for sm_90, stay
//! compact (one kernel per distinct partition shape, never code per edge), and match their
//! manifests.

use pcc_testkit as common;

use common::Gen;
use pcc::codegen::emit::{EmitOptions, Precision, emit, emit_with};
use pcc::codegen::structures::{hclt, hmm, pd, rat_spn};
use pcc::codegen::{Circuit, CircuitBuilder, Dist, SumEdges, compile};
use pcc::runtime::Domain;
use pcc::runtime::Evidence;
use pcc::runtime::cuda::{KernelArg, KernelSpec, Step, compile_cubin, compile_cubin_verbose, conditional_slots, nvrtc_available};

fn corpus() -> Vec<(String, Circuit)> {
    let mut v: Vec<(String, Circuit)> = (0..12).map(|s| (format!("random{s}"), Gen::circuit(s))).collect();
    let data: Vec<f32> = (0..400 * 12).map(|i| ((i * 2654435761usize) >> 7 & 1) as f32).collect();
    let ev = Evidence::new(12, data).unwrap();
    v.push(("hclt".into(), hclt::learn(&ev, &hclt::HcltOptions { latents: 16, ..Default::default() }).unwrap()));
    v.push(("pd".into(), pd::build(&pd::PdOptions { height: 8, width: 8, split_intervals: (2, 2), latents: 8, ..Default::default() }).unwrap()));
    v.push(("rat_spn".into(), rat_spn::build(&rat_spn::RatSpnOptions { num_vars: 12, latents: 8, depth: 2, ..Default::default() }).unwrap()));
    v.push(("hmm".into(), hmm::build(&hmm::HmmOptions { seq_length: 10, hidden: 16, num_emits: 5, homogeneous: true, ..Default::default() }).unwrap()));
    let mut b = CircuitBuilder::new(2);
    let g = b.inputs(0, 1, 4, Dist::Gaussian { min_sigma: 0.01 });
    let i = b.inputs(1, 1, 4, Dist::Indicator { num_states: 4 });
    let p = b.multiply(&[g, i]);
    let root = b.summate(&[p], 1, 1, SumEdges::Dense);
    v.push(("gaussian_indicator".into(), b.finish(root).unwrap()));
    v.push(("binomial".into(), common::binomial_circuit(0, 1, 0.0).0));
    v
}

/// The C type a launch passes for `a` (what the engine binds).
/// The persistent pass's tasks: every sum node written by exactly one task, dependencies earlier
/// in the order and naming the writers of the task's child nodes, children in range, bulk weight
/// copies 16-byte aligned and inside the parameters, and shared memory within an H100's 227 KiB.
#[test]
fn persistent_tasks_cover_every_sum_node_once_in_topological_order() {
    for (name, c) in corpus() {
        let plan = compile(&c).unwrap();
        let e = emit(&plan).unwrap();
        let p = e.manifest.persistent.as_ref().unwrap_or_else(|| panic!("{name}: no persistent pass"));
        assert_eq!(p.prologue as usize, plan.inputs.len(), "{name}: the input launches run first");
        assert!(p.shared_bytes <= 227 * 1024, "{name}: {} bytes of shared memory", p.shared_bytes);
        let mut writer = vec![None; plan.num_nodes as usize];
        for i in 0..p.num_tasks() {
            let t = p.task(i);
            for m in 0..t[7] {
                let slot = &mut writer[(t[1] + m) as usize];
                assert!(slot.is_none(), "{name}: node {} written twice", t[1] + m);
                *slot = Some(i);
            }
            let (count, c0, pw) = (t[3] as usize, t[4] as usize, t[5] as usize);
            let kids = &p.children[c0..c0 + count * pw];
            let mut want: Vec<u32> = kids.iter().filter_map(|&n| writer[n as usize].map(|w| w as u32)).filter(|&w| w != i as u32).collect();
            want.sort();
            want.dedup();
            let mut deps = p.task_deps(i).to_vec();
            deps.sort();
            assert_eq!(deps, want, "{name}: task {i} depends on exactly the writers of its children");
            assert!(deps.iter().all(|&d| (d as usize) < i), "{name}: task {i} depends on a later task");
            if t[15] > 0 {
                assert!(t[2].is_multiple_of(4) && t[15].is_multiple_of(16), "{name}: task {i} bulk copy alignment");
                assert!((t[2] + t[15] / 4) as usize <= plan.num_sum_params as usize, "{name}: task {i} bulk copy past the parameters");
            }
        }
        let sums: usize = plan.depths.iter().flat_map(|d| d.sums.iter()).map(|s| s.nids.len() * s.block_size as usize).sum();
        assert_eq!(writer.iter().filter(|w| w.is_some()).count(), sums, "{name}: every sum node has a task");
    }
}

fn c_type(a: &KernelArg) -> &'static str {
    match a {
        KernelArg::Missing => "unsigned char*",
        KernelArg::Table(_) | KernelArg::PackedWeights | KernelArg::XStage => "u32*",
        KernelArg::Batch | KernelArg::Count | KernelArg::Int(_) => "int",
        KernelArg::StepSize | KernelArg::Pseudocount => "float",
        KernelArg::Seed => "unsigned long long",
        KernelArg::SampleOffset => "u32",
        _ => "float*",
    }
}

/// Parameter types of kernel `name` as declared in `source` (qualifiers dropped).
fn signature(source: &str, name: &str) -> Vec<String> {
    // `void name(` or `void __launch_bounds__(…) name(`.
    let at = source.find(&format!(" {name}(")).unwrap_or_else(|| panic!("kernel {name} is not defined")) + name.len() + 2;
    let end = at + source[at..].find(')').unwrap();
    source[at..end]
        .split(',')
        .map(|p| {
            let words: Vec<&str> = p.split_whitespace().filter(|w| *w != "const" && *w != "__restrict__").collect();
            words[..words.len() - 1].join(" ")
        })
        .collect()
}

/// Categorical (and indicator) leaves read their probabilities, so the engine allocates the table
/// of leaf constants (as large as the leaf statistics) only for circuits with Bernoulli, Gaussian
/// or Binomial leaves: exactly those bind it.
#[test]
fn only_bernoulli_gaussian_and_binomial_leaves_bind_the_leaf_table() {
    use pcc::runtime::plan::DistKind;
    let mut seen = [false; 2];
    for (name, c) in corpus() {
        let plan = compile(&c).unwrap();
        let needs = plan.inputs.iter().any(|l| matches!(l.kind, DistKind::Bernoulli | DistKind::Gaussian | DistKind::Binomial));
        seen[needs as usize] = true;
        for precision in [Precision::Fp32, Precision::Bf16] {
            let e = emit_with(&plan, &EmitOptions { precision }).unwrap();
            assert_eq!(e.manifest.takes(&KernelArg::LeafTable), needs, "{name} ({precision}): leaf table bound iff some leaf needs it");
            assert!(e.manifest.launches().count() > e.manifest.forward.len(), "{name}: launches() covers more than the forward");
        }
    }
    assert_eq!(seen, [true, true], "the corpus has circuits of both kinds");
}

#[test]
fn manifests_match_the_plan_and_sources_stay_compact() {
    for (name, c) in corpus() {
        let plan = compile(&c).unwrap();
        let e = emit(&plan).unwrap();
        let partitions: usize = plan.depths.iter().map(|d| d.prods.len() + d.sums.len()).sum();
        assert_eq!(e.manifest.forward.len(), partitions + plan.inputs.len(), "{name}: one launch per input layer and partition");
        let backward = e.manifest.backward.iter().filter_map(|s| match s {
            Step::Launch(k) => Some(k),
            Step::ZeroElementFlows => None,
        });
        // Small-batch variants: same arguments (warp-per-node sums), or products fused into the
        // depth's sums: the depth's product launches have an empty small variant and every sum
        // launch of that depth a `_fused` one that reads nodes, not elements.
        for k in &e.manifest.forward {
            let Some(s) = &k.small else { continue };
            assert_eq!((&s.layer, s.count), (&k.layer, k.count), "{name}: {} small variant covers the same layer", k.name);
            if s.threads_per_sample == 0 {
                assert!(k.layer.starts_with("products d"), "{name}: only product launches are skipped, not {}", k.layer);
                let depth = k.layer.split(' ').nth(1).unwrap();
                let sums: Vec<&KernelSpec> = e.manifest.forward.iter().filter(|x| x.layer.starts_with(&format!("sums {depth} "))).collect();
                assert!(!sums.is_empty(), "{name}: {depth} has sums");
                for x in sums {
                    assert!(x.small.as_ref().is_some_and(|s| s.name.ends_with("_fused")), "{name}: {} of {depth} is fused", x.layer);
                }
            } else if s.name.ends_with("_fused") {
                assert_eq!(s.args[0], KernelArg::Nodes, "{name}: {}", s.name);
                assert!(!s.args.contains(&KernelArg::Elements), "{name}: {} reads no elements", s.name);
            } else {
                assert_eq!(s.args, k.args, "{name}: {} small variant binds the same arguments", k.name);
            }
        }
        let small = e.manifest.forward.iter().filter_map(|k| k.small.as_deref());
        let q = &e.manifest.queries;
        let walks = q.mpe_backward.iter().chain(&q.sample_backward).filter_map(|s| match s {
            Step::Launch(k) => Some(k),
            Step::ZeroElementFlows => None,
        });
        let launches: Vec<&KernelSpec> =
            e.manifest.forward.iter().chain(small).chain(backward).chain(&e.manifest.em).chain(&q.conditionals).chain(&q.mpe_forward).chain(walks).collect();
        // Queries: the max-product forward mirrors the forward launch for launch; each walk clears
        // the element flags once per depth and ends with one launch per input layer.
        assert_eq!(q.mpe_forward.len(), e.manifest.forward.len(), "{name}: max-product forward mirrors the forward pass");
        // (Leaves as their per-sample kernel: the max-product leaves have no row variant.)
        for (a, b) in q.mpe_forward.iter().zip(e.manifest.forward.iter().map(pcc_testkit::host_cuda::per_sample_launch)) {
            assert_eq!((&a.layer, a.count, a.threads_per_sample), (&b.layer, b.count, b.threads_per_sample), "{name}: {}", a.name);
        }
        for walk in [&q.mpe_backward, &q.sample_backward] {
            assert_eq!(walk.iter().filter(|s| matches!(s, Step::ZeroElementFlows)).count(), plan.depths.len(), "{name}: flags cleared per depth");
            assert_eq!(walk.len(), q.mpe_backward.len(), "{name}: both walks have the same steps");
            let leaves = walk.iter().rev().take(plan.inputs.len()).filter(|s| matches!(s, Step::Launch(k) if k.args[0] == KernelArg::Output)).count();
            assert_eq!(leaves, plan.inputs.len(), "{name}: the walk ends at the input layers");
        }
        assert!(q.conditionals.len() <= plan.inputs.len(), "{name}: at most one conditional launch per input layer");
        // Conditional gathers write out[b][eslot[e] + k] for k < encat[e]: inside the variable's
        // own slots, so never into another variable's or sample's row.
        let (offsets, slots) = conditional_slots(&plan);
        let width = |v: usize| match plan.domains[v] {
            Domain::Discrete { num_cats } => num_cats,
            Domain::Continuous => 2,
        };
        assert_eq!(slots, (0..plan.domains.len()).map(width).sum::<u32>(), "{name}: slots");
        for k in &q.conditionals {
            let t: Vec<&Vec<u32>> =
                k.args.iter().filter_map(|a| if let KernelArg::Table(i) = a { Some(&e.manifest.tables[*i as usize]) } else { None }).collect();
            let (evar, eslot, encat, estart) = (t[0], t[1], t[2], t[3]);
            assert_eq!((evar.len(), estart.len()), (k.count as usize, k.count as usize + 1), "{name}: {}", k.name);
            assert!(estart.windows(2).all(|w| w[0] < w[1]) && *estart.last().unwrap() as usize == t[4].len(), "{name}: {} CSR", k.name);
            for e in 0..evar.len() {
                let v = evar[e] as usize;
                assert!(eslot[e] == offsets[v] && encat[e] <= width(v) && encat[e] > 0, "{name}: {} entry {e}", k.name);
                assert!(encat[e] as u64 <= k.threads_per_sample / k.count as u64, "{name}: {} categories within K", k.name);
            }
        }
        let zeroings = e.manifest.backward.iter().filter(|s| matches!(s, Step::ZeroElementFlows)).count();
        assert_eq!(zeroings, plan.depths.len(), "{name}: element flows cleared once per depth");
        let mut names: Vec<&str> = launches.iter().map(|k| k.name.as_str()).collect();
        names.sort();
        names.dedup();
        for k in &names {
            let defs = e.source.matches(&format!("void {k}(")).count() + e.source.matches(&format!("void __launch_bounds__(256) {k}(")).count();
            assert_eq!(defs, 1, "{name}: kernel {k} is defined once");
        }
        // Plus the persistent small-batch forward, one kernel whatever the shapes.
        let persistent = e.manifest.persistent.as_ref().map_or(0, |p| {
            assert_eq!(e.source.matches(&format!("void __launch_bounds__(PCC_NT) {}(", p.kernel)).count(), 1, "{name}: persistent kernel");
            1
        });
        // Plus the engine's byte-dataset staging kernel, in the first unit.
        let stage = format!("void {}(", pcc::runtime::cuda::STAGE_U8);
        assert_eq!(e.source.matches(&stage).count(), 1, "{name}: the staging kernel is defined once");
        let first_unit = pcc::runtime::cuda::split_units(&e.source).into_iter().next().unwrap();
        assert!(first_unit.source.contains(&stage), "{name}: the staging kernel is in the first unit");
        assert_eq!(e.source.matches("__global__").count(), names.len() + persistent + 1, "{name}: one kernel per distinct shape");
        let mut layers: Vec<&str> = e.manifest.forward.iter().map(|k| k.layer.as_str()).collect();
        layers.sort();
        layers.dedup();
        assert_eq!(layers.len(), e.manifest.forward.len(), "{name}: every launch names its own layer");
        for k in &launches {
            let params = signature(&e.source, &k.name);
            assert_eq!(params.len(), k.args.len(), "{name}: kernel {} parameter count", k.name);
            // A table may hold f32 bits that the kernel reads as floats (EM's σ floors).
            let want: Vec<&str> =
                k.args.iter().zip(&params).map(|(a, p)| if matches!(a, KernelArg::Table(_)) && p == "float*" { "float*" } else { c_type(a) }).collect();
            assert_eq!(params, want, "{name}: kernel {} takes the manifest's arguments in order", k.name);
            for a in &k.args {
                if let KernelArg::Table(i) = a {
                    assert!((*i as usize) < e.manifest.tables.len());
                }
            }
        }
        // The persistent kernel is a fixed body plus one `case` line per (block size, tile).
        let fixed = if persistent == 1 {
            let at = e.source.find("// Persistent small-batch forward").expect("persistent kernel header");
            let body = e.source.len() - at;
            let cases = e.source[at..].matches("case ").count();
            assert!(body < 42_000 + 200 * cases, "{name}: {body} bytes of persistent kernel for {cases} shapes");
            body
        } else {
            0
        };
        // Plus each leaf family's device functions (`templates/dist`), fixed text once per family, and its
        // input kernels' soft-evidence branches (~1.5 KB), categorical leaves also their row kernel
        // (~3.5 KB with its soft-evidence branches); ~1.6 KB per kernel (the small-batch sums,
        // which stage a group of samples and their maxima, are ~2.7 KB); the prelude's helpers
        // (~2.6 KB with `pcc_split`) once.
        let families = 4500 * plan.inputs.len() + 3500 * names.iter().filter(|k| k.starts_with("input_categorical_fwd_rows")).count();
        assert!(
            e.source.len() - fixed < 2600 + families + 1600 * names.len(),
            "{name}: {} bytes of source ({} fixed) for {} kernels, {families} of families",
            e.source.len(),
            fixed,
            names.len()
        );
        assert!(!e.source.contains("#include"), "{name}: generated CUDA is self-contained");
        // Small circuits keep the small-batch variants up to SMALL_BATCH (`SMALL_PATH_MAX_PARAMS`).
        assert_eq!(e.manifest.small_max_batch as usize, pcc::runtime::cuda::SMALL_BATCH, "{name}: small-batch variants kept");
        let json = serde_json::to_string(&e.manifest).unwrap();
        assert_eq!(serde_json::from_str::<pcc::runtime::cuda::Manifest>(&json).unwrap(), e.manifest, "{name}: manifest JSON round trip");
    }
}

#[test]
fn generated_sources_compile_with_nvrtc() {
    if !nvrtc_available() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "NVRTC 13 is required in CI (.ci/run installs it)");
        eprintln!("note: NVRTC not found; skipping");
        return;
    }
    for (name, c) in corpus() {
        let e = emit(&compile(&c).unwrap()).unwrap();
        let cubin = compile_cubin(&e.source, &format!("{name}.cu"), "90").unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(&cubin[..4], b"\x7fELF");
    }
}

/// The corpus plus larger blocks (HCLT 32/64/128 latents, PD 32 latents), so that every mma tile
/// shape (16, 32, 64 and 128-node tiles; short and long widths) is generated.
fn mma_corpus() -> Vec<(String, Circuit)> {
    let mut v = corpus();
    let data: Vec<f32> = (0..400 * 10).map(|i| ((i * 2654435761usize) >> 9 & 1) as f32).collect();
    let ev = Evidence::new(10, data).unwrap();
    for latents in [32, 64, 128] {
        v.push((format!("hclt{latents}"), hclt::learn(&ev, &hclt::HcltOptions { latents, ..Default::default() }).unwrap()));
    }
    v.push(("odd_widths".into(), common::odd_widths_circuit()));
    // 4 blocks of 32 over one child list per region: merged into 128-node tensor-core blocks.
    v.push((
        "pd128x4".into(),
        pd::build(&pd::PdOptions { height: 4, width: 4, split_intervals: (2, 2), latents: 128, input: Dist::Bernoulli, ..Default::default() }).unwrap(),
    ));
    v.push((
        "pd32".into(),
        pd::build(&pd::PdOptions { height: 8, width: 8, split_intervals: (4, 4), latents: 32, input: Dist::Bernoulli, ..Default::default() }).unwrap(),
    ));
    v
}

#[test]
fn tensor_core_precisions_emit_mma_kernels_that_compile() {
    let nvrtc = nvrtc_available();
    if !nvrtc {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "NVRTC 13 is required in CI (.ci/run installs it)");
        eprintln!("note: NVRTC not found; checking manifests only");
    }
    let mut mma_kernels = 0;
    for (name, c) in mma_corpus() {
        let plan = compile(&c).unwrap();
        let fp32 = emit(&plan).unwrap();
        assert_eq!(emit_with(&plan, &EmitOptions::default()).unwrap(), fp32, "{name}: emit = emit_with(fp32)");
        assert_eq!(fp32.manifest.precision, Precision::Fp32);
        let mut sources = Vec::new();
        for precision in [Precision::Tf32, Precision::Bf16] {
            let e = emit_with(&plan, &EmitOptions { precision }).unwrap();
            assert_eq!(e.manifest.precision, precision);
            assert!(!e.source.contains("#include"), "{name}: generated CUDA is self-contained");
            if name == "pd128x4" {
                assert!(
                    e.source.contains(&format!("sum_fwd_{precision}_bs32x4_")) && e.source.contains(&format!("sum_bwd_{precision}_bs32x4_")),
                    "{name}: merged blocks"
                );
            }
            let mut sums = 0;
            for (d, depth) in plan.depths.iter().enumerate() {
                for (p, part) in depth.sums.iter().enumerate() {
                    let uses_mma = part.block_size >= 16 && part.block_size % 16 == 0;
                    let k = e.manifest.forward.iter().find(|k| k.layer == format!("sums d{d} p{p}")).unwrap();
                    assert_eq!(k.name.starts_with(&format!("sum_fwd_{precision}_")), uses_mma, "{name}: {} for block size {}", k.name, part.block_size);
                    if uses_mma {
                        assert!(
                            !k.scales_with_batch && (k.block == 128 || k.block == 256) && k.threads_per_sample % (k.block as u64 * k.count as u64) == 0,
                            "{name}: {k:?}"
                        );
                        mma_kernels += 1;
                    }
                    sums += 1;
                }
            }
            assert!(sums > 0);
            // Sum partitions on tensor cores run their backward there too (element and parameter
            // flows), reading the maxima buffer that their forward writes; everything else is
            // unchanged.
            let launches = |m: &pcc::runtime::cuda::Manifest| -> Vec<KernelSpec> {
                m.backward.iter().filter_map(|s| if let Step::Launch(k) = s { Some(k.clone()) } else { None }).collect()
            };
            // Each tensor-core partition's backward starts with its G-in-place launch (over the
            // blocks its flows kernels take); the rest match the scalar launches one to one.
            let all = launches(&e.manifest);
            let all_bwd = all.clone();
            for (i, k) in all.iter().enumerate().filter(|(_, k)| k.name.ends_with("_gflow")) {
                let next = &all[i + 1];
                assert!(
                    next.name == k.name.replace("_gflow", "_eflow") && next.count == k.count && k.args.contains(&KernelArg::SumMax),
                    "{name}: {k:?} then {next:?}"
                );
            }
            // A staged backward (bf16, two-kernel forward) reruns the forward's staging launch, its
            // maxima kept (moff −1), right before its parameter flows, which read the buffer.
            for (i, k) in all.iter().enumerate().filter(|(_, k)| k.name.ends_with("_x")) {
                let next = &all[i + 1];
                assert!(precision == Precision::Bf16 && next.name.ends_with("_s_pflow") && next.count == k.count, "{name}: {k:?} then {next:?}");
                assert!(k.args[0] == KernelArg::XStage && next.args[2] == KernelArg::XStage && k.args.last() == Some(&KernelArg::Int(-1)), "{name}: {k:?}");
                assert!(e.manifest.forward.iter().any(|f| f.name == k.name), "{name}: {} is the forward's staging kernel", k.name);
            }
            // The categorical statistics by sorted segments: their sort launch comes right before
            // them and writes the staging buffer they read.
            for (i, k) in all.iter().enumerate().filter(|(_, k)| k.name.ends_with("_sort")) {
                let next = &all[i + 1];
                assert!(
                    next.name == k.name.trim_end_matches("_sort") && k.args[0] == KernelArg::XStage && next.args[2] == KernelArg::XStage,
                    "{name}: {k:?} then {next:?}"
                );
            }
            let bwd: Vec<KernelSpec> =
                all.into_iter().filter(|k| !k.name.ends_with("_gflow") && !k.name.ends_with("_x") && !k.name.ends_with("_sort")).collect();
            let bwd32 = launches(&fp32.manifest);
            assert_eq!(bwd.len(), bwd32.len(), "{name}: one launch per scalar launch");
            // Equal up to where their tables sit (merged blocks add tables in between).
            let tables = |k: &KernelSpec, m: &pcc::runtime::cuda::Manifest| -> Vec<Vec<u32>> {
                k.args.iter().filter_map(|a| if let KernelArg::Table(i) = a { Some(m.tables[*i as usize].clone()) } else { None }).collect()
            };
            let strip = |k: &KernelSpec| KernelSpec {
                args: k.args.iter().map(|a| if let KernelArg::Table(_) = a { KernelArg::Table(0) } else { *a }).collect(),
                ..k.clone()
            };
            let same = |k: &KernelSpec, k32: &KernelSpec| {
                assert_eq!(strip(k), strip(k32), "{name}");
                assert_eq!(tables(k, &e.manifest), tables(k32, &fp32.manifest), "{name}: {}", k.name);
            };
            let mut rows = 0;
            for (k, k32) in bwd.iter().zip(&bwd32) {
                if k.name.starts_with("input_categorical_bwd_") {
                    // Categorical statistics on tensor cores (or by sorted segments, with
                    // PCC_CAT_STATS=sorted): a CUDA block per tile; the scalar kernel's four
                    // soft-evidence arguments (categories per leaf, the mode, the dense weights
                    // and their offsets) are not among them (the engine refuses soft evidence
                    // with these kernels), nor the probabilities and their slots (missing values
                    // go to the leaf mass, which the next launch credits, as the scalar kernel's).
                    assert!(k32.name == "input_categorical_bwd" && k.layer == k32.layer && k.args.len() + 6 == k32.args.len(), "{name}: {k:?}");
                    assert!(k.args.contains(&KernelArg::LeafMass) && k32.args.contains(&KernelArg::LeafMass), "{name}: {k:?}");
                    assert!(k32.args.contains(&KernelArg::SoftenKeep) && !k.args.contains(&KernelArg::SoftenKeep), "{name}: {k:?}");
                    assert!(!k.scales_with_batch && k.threads_per_sample % (k.count as u64 * k.block as u64) == 0, "{name}: {k:?}");
                } else if k.name.starts_with(&format!("sum_bwd_{precision}_")) {
                    let staged = k.name.ends_with("_s_pflow");
                    assert!((staged || k.args.contains(&KernelArg::SumMax)) && k.layer == k32.layer, "{name}: {k:?}");
                    assert_eq!(k.name.ends_with("_eflow"), k32.name.ends_with("_eflow"), "{name}: {} for {}", k.name, k32.name);
                    rows += k.count * k.name.ends_with("_pflow") as u32;
                } else {
                    same(k, k32);
                }
            }
            assert_eq!(rows, e.manifest.sum_max_rows, "{name}: one maxima row per tensor-core sum block");
            // Every tensor-core launch (forward, pack, G, flows) takes the manifest's arguments.
            for k in e
                .manifest
                .forward
                .iter()
                .chain(&e.manifest.em)
                .chain(&all_bwd)
                .filter(|k| k.name.contains(&format!("_{precision}_")) || k.name.contains("_sorted_"))
            {
                let want: Vec<&str> = k.args.iter().map(c_type).collect();
                assert_eq!(signature(&e.source, &k.name), want, "{name}: kernel {} takes the manifest's arguments in order", k.name);
            }
            // EM as in fp32, then one pack kernel per tensor-core forward launch (same name with
            // `_pack`), whose regions of the packed weights tile the buffer in order.
            let n32 = fp32.manifest.em.len();
            e.manifest.em[..n32].iter().zip(&fp32.manifest.em).for_each(|(k, k32)| same(k, k32));
            // (The two-kernel forward's staging launches `*_x` come with their product launch.)
            let fwd: Vec<&KernelSpec> =
                e.manifest.forward.iter().filter(|k| k.name.starts_with(&format!("sum_fwd_{precision}_")) && !k.name.ends_with("_x")).collect();
            for (i, k) in e.manifest.forward.iter().enumerate().filter(|(_, k)| k.name.ends_with("_g_x")) {
                let next = &e.manifest.forward[i + 1];
                assert!(next.name == k.name.trim_end_matches("_x") && next.count == k.count, "{name}: {k:?} then {next:?}");
                assert!(k.args[0] == KernelArg::XStage && next.args[1] == KernelArg::XStage, "{name}: staged through the buffer");
                let rows = next.name.split("_w").nth(1).and_then(|w| w.split('_').next()).and_then(|w| w.parse::<u64>().ok()).expect("width in the name");
                let words = if precision == Precision::Bf16 { rows.div_ceil(2) } else { rows };
                assert!(k.count as u64 * words <= e.manifest.x_words, "{name}: {} fits the staging buffer", k.name);
            }
            let packs = &e.manifest.em[n32..];
            assert_eq!(packs.len(), fwd.len(), "{name}: one pack kernel per tensor-core forward");
            let mut end = 0u64;
            for (pk, f) in packs.iter().zip(&fwd) {
                assert_eq!(pk.name, format!("{}_pack", f.name), "{name}");
                assert!(pk.args[0] == KernelArg::PackedWeights && f.args[2] == KernelArg::PackedWeights, "{name}: {pk:?}");
                let (Some(KernelArg::Int(po)), Some(KernelArg::Int(fo))) = (pk.args.last(), f.args.last()) else { panic!("{name}: offsets") };
                assert_eq!((*po as u64, *fo as u64), (end, end), "{name}: packed regions in order, without gaps");
                end += pk.threads_per_sample;
            }
            assert_eq!(end, e.manifest.packed_words, "{name}: packed words");
            // Without an mma launch the source is the fp32 one, which the test above compiles.
            if e.source != fp32.source {
                sources.push((precision, e.source));
            }
        }
        if nvrtc {
            for (precision, source) in sources {
                let (cubin, log) =
                    compile_cubin_verbose(&source, &format!("{name}_{precision}.cu"), "90").unwrap_or_else(|err| panic!("{name} {precision}: {err}"));
                assert_eq!(&cubin[..4], b"\x7fELF");
                // ptxas -v: "Compiling entry function 'k'", then "... N bytes spill stores, M bytes
                // spill loads" and "Used R registers, ...". Tensor-core kernels must not spill.
                for (kernel, line) in common::ptxas_lines(&log) {
                    if kernel.starts_with(&format!("sum_fwd_{precision}_")) || kernel.starts_with(&format!("sum_bwd_{precision}_")) {
                        assert!(!common::spills(line), "{name}: {kernel} spills: {line}");
                        if line.contains("Used ") {
                            eprintln!("{name}: {kernel}: {}", line.split("Used ").nth(1).unwrap_or(line));
                        }
                    }
                }
            }
        }
    }
    assert!(mma_kernels > 10, "the corpus exercises the mma path ({mma_kernels} launches)");
}

/// The persistent kernel keeps its state in registers: no local array and little spilling (at
/// most 16 bytes stored and 16 loaded per function; ptxas measures 4/4 for the worker function,
/// 0/4 for the producers' and the publisher's, under the 96 registers it gives the called
/// functions, since the fast task shifts by a bound and each producer warp gathers two elements
/// per lane; before, 56/220 and 36/72). Before the roles were split into functions, the merged
/// loop spilled its state: a round trip through L1 in every task of the chain. Checked on a
/// circuit with fast 128-node tasks, general tasks and a wide product.
#[test]
fn persistent_kernel_keeps_its_state_in_registers() {
    if !nvrtc_available() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "NVRTC is required in CI");
        return;
    }
    let data: Vec<f32> = (0..200 * 8).map(|i| ((i * 2654435761usize) >> 5 & 1) as f32).collect();
    let c = hclt::learn(&Evidence::new(8, data).unwrap(), &hclt::HcltOptions { latents: 128, ..Default::default() }).unwrap();
    let e = emit(&compile(&c).unwrap()).unwrap();
    assert!(e.manifest.persistent.is_some());
    let (_, log) = compile_cubin_verbose(&e.source, "hclt128.cu", "90").unwrap();
    let mut kernel = "";
    let mut checked = false;
    let bytes = |line: &str, what: &str| -> u32 {
        let before = line.split(what).next().unwrap_or("");
        before.split([',', '.']).next_back().unwrap_or("").trim().parse().unwrap_or(u32::MAX)
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            kernel = rest.split('\'').next().unwrap_or("");
        }
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            kernel = rest.trim();
        }
        if (kernel == "fwd_persistent" || kernel.contains("pcc_")) && line.contains("spill stores") {
            eprintln!("fwd_persistent: {line}");
            let (st, ld) = (bytes(line, " bytes spill stores"), bytes(line, " bytes spill loads"));
            assert!(st <= 16 && ld <= 16, "{kernel} spills ({st} bytes stored, {ld} loaded): {line}");
            checked = true;
        }
    }
    assert!(checked, "no ptxas report for fwd_persistent:\n{log}");
}

/// The engine compiles a source's translation units separately (in parallel): each must compile
/// alone, every kernel of the manifest must be in exactly one unit, and the persistent kernel in
/// the unit the engine compiles in the background.
#[test]
fn translation_units_compile_alone_and_hold_every_kernel_once() {
    use pcc::runtime::cuda::{PERSISTENT_UNIT, split_units};
    let nvrtc = nvrtc_available();
    let data: Vec<f32> = (0..400 * 10).map(|i| ((i * 2654435761usize) >> 9 & 1) as f32).collect();
    let ev = Evidence::new(10, data).unwrap();
    let models = [
        ("hclt64", hclt::learn(&ev, &hclt::HcltOptions { latents: 64, ..Default::default() }).unwrap()),
        (
            "pd32",
            pd::build(&pd::PdOptions { height: 8, width: 8, split_intervals: (4, 4), latents: 32, input: Dist::Bernoulli, ..Default::default() }).unwrap(),
        ),
    ];
    for (name, c) in models {
        let plan = compile(&c).unwrap();
        for precision in [Precision::Fp32, Precision::Bf16] {
            let e = emit_with(&plan, &EmitOptions { precision }).unwrap();
            let units = split_units(&e.source);
            assert!(units.len() >= 4, "{name} {precision}: inputs, em, queries, persistent at least ({})", units.len());
            let m = &e.manifest;
            let mut names: Vec<&str> = m.forward.iter().chain(&m.em).map(|k| k.name.as_str()).collect();
            names.extend(m.backward.iter().filter_map(|s| if let Step::Launch(k) = s { Some(k.name.as_str()) } else { None }));
            for k in names {
                let def = format!(" {k}(");
                let holders: Vec<&str> = units.iter().filter(|u| u.source.contains(&def)).map(|u| u.name.as_str()).collect();
                assert_eq!(holders.len(), 1, "{name} {precision}: kernel {k} in units {holders:?}");
            }
            let p = m.persistent.as_ref().expect("a persistent pass");
            assert!(units.iter().any(|u| u.name == PERSISTENT_UNIT && u.source.contains(&format!(" {}(", p.kernel))), "{name} {precision}");
            if nvrtc {
                for u in &units {
                    compile_cubin(&u.source, &format!("{name}_{}.cu", u.name), "90").unwrap_or_else(|err| panic!("{name} {precision} unit {}: {err}", u.name));
                }
            }
        }
    }
}

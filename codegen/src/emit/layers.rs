//! The passes of [`super::emit_with`]: input layers, then per depth its product and sum
//! partitions (scalar or tensor-core kernels, with the small-batch variants), then EM, queries
//! and the persistent pass. [`Emitter`] holds what they share: the source so far, the manifest,
//! the kernels already rendered and the translation-unit boundaries.

use std::collections::BTreeSet;

use pc_runtime::cuda::{KernelArg, KernelSpec, Manifest, Step};
use pc_runtime::dist::{Constants, DistKind};
use pc_runtime::plan::{DepthPlan, InputLayer, Plan, SumPartition};

use super::{BLOCK, SMALL_MAX_WIDTH, SMALL_NODES_PER_BLOCK};
use super::{
    EmitError, EmitOptions, Emitted, cuts, distinct_nonzero, emit_em, family_functions, fuse, leaf_constants, mma, mma_bwd, next_unit, persistent, queries,
    render, shape_kernel, unit,
};

/// One emission's state.
pub(super) struct Emitter<'a> {
    t: tera::Tera,
    opts: &'a EmitOptions,
    source: String,
    m: Manifest,
    /// Kernel names already rendered: partitions of one shape share a kernel,
    /// so NVRTC time follows the number of distinct shapes, not of partitions.
    emitted: BTreeSet<String>,
    /// Where the current translation unit began.
    unit_start: usize,
    /// Leaf statistics, the last backward steps.
    input_bwd: Vec<Step>,
    /// Per depth, backward steps in launch order (assembled top-down at the end).
    depth_bwd: Vec<Vec<Step>>,
    /// Rows of the forward maxima buffer (`KernelArg::SumMax`): one per sum block on tensor cores.
    max_rows: u32,
    /// Words of the tensor-core forward's packed weights and the kernels that write them (run
    /// after the EM kernels).
    packed_words: u64,
    packs: Vec<KernelSpec>,
    /// The tensor-core helpers (`mma_core`) are in the head: some sum partition uses them.
    mma_head: bool,
    /// Per variable, where its categories start in a dense soft-evidence row (continuous
    /// variables take none: `pc_runtime::Soft::offsets`).
    soft_offsets: Vec<u32>,
}

/// Prefix sums of the variables' category counts (continuous variables count 0).
fn soft_offsets(plan: &Plan) -> Vec<u32> {
    let mut at = 0u32;
    plan.domains
        .iter()
        .map(|d| {
            let here = at;
            if let pc_runtime::Domain::Discrete { num_cats } = d {
                at = at.saturating_add(*num_cats);
            }
            here
        })
        .collect()
}

/// A sum partition's index tables in the manifest.
#[derive(Clone, Copy)]
struct SumTables {
    nids: KernelArg,
    cids: KernelArg,
    pids: KernelArg,
}

impl<'a> Emitter<'a> {
    /// The prelude, the tensor-core helpers where some partition uses them and the device
    /// functions of the plan's leaf families (in the head every translation unit shares), and the
    /// first unit.
    pub fn new(plan: &Plan, opts: &'a EmitOptions) -> Result<Emitter<'a>, EmitError> {
        let t = super::engine()?;
        let mut source = render(&t, "prelude", &tera::Context::new())?;
        let emitted = BTreeSet::new();
        let mma_head = plan.depths.iter().flat_map(|d| &d.sums).any(|p| mma::MmaShape::for_partition(opts.precision, p.block_size, p.width).is_some());
        if mma_head {
            source += super::MMA_CORE;
        }
        for layer in &plan.inputs {
            source += &family_functions(&t, layer.kind, "leaf")?;
        }
        let unit_start = source.len();
        unit(&mut source, "inputs");
        source += super::STAGE_U8;
        Ok(Emitter {
            t,
            opts,
            source,
            m: Manifest::default(),
            emitted,
            unit_start,
            input_bwd: Vec::new(),
            depth_bwd: Vec::new(),
            max_rows: 0,
            packed_words: 0,
            packs: Vec::new(),
            mma_head,
            soft_offsets: soft_offsets(plan),
        })
    }

    fn table(&mut self, data: Vec<u32>) -> KernelArg {
        self.m.tables.push(data);
        KernelArg::Table(self.m.tables.len() as u32 - 1)
    }

    /// Start a new translation unit `name` if the current one is full.
    fn next_unit(&mut self, name: &str) {
        next_unit(&mut self.source, &mut self.unit_start, name);
    }

    /// One input layer: its forward kernel and (except indicators) its statistics kernel.
    ///
    /// Where the kernels read a leaf's constants is the family's (`FamilyInfo::constants`):
    /// categorical leaves read their probabilities (`KernelArg::InputParams` at the parameter
    /// slots) and take the logarithm in the kernel: no table of log-probabilities, which on
    /// MNIST-sized HCLTs is as large as the parameters themselves (hclt1024: 0.77 GiB). Bernoulli,
    /// Gaussian and Binomial leaves read their constants from `KernelArg::LeafTable` (at the
    /// statistics slots).
    pub fn input_layer(&mut self, layer: &InputLayer) -> Result<(), EmitError> {
        let info = layer.kind.info();
        let kind = info.name;
        let (mut ids, mut vars, mut aux, mut pstart) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for seg in &layer.segments {
            for i in 0..seg.num_nodes {
                ids.push(seg.node_start + i);
                vars.push(seg.var);
                aux.push(seg.dist.kernel_aux(seg.flow_start + i * seg.dist.num_stats(), i));
                pstart.push(seg.param_start + i * seg.dist.num_params());
            }
        }
        let name = format!("input_{kind}_fwd");
        let mut ctx = tera::Context::new();
        ctx.insert("name", &name);
        ctx.insert("kind", kind);
        self.source += &render(&self.t, "input_fwd", &ctx)?;
        let n = ids.len() as u64;
        let nstats: Vec<u32> = layer.segments.iter().flat_map(|s| std::iter::repeat_n(s.dist.num_stats(), s.num_nodes as usize)).collect();
        // Categories per leaf for data softening (0: continuous, never softened).
        let ncats: Vec<u32> = layer
            .segments
            .iter()
            .flat_map(|s| {
                let k = match s.dist.domain() {
                    pc_runtime::Domain::Discrete { num_cats } => num_cats,
                    pc_runtime::Domain::Continuous => 0,
                };
                std::iter::repeat_n(k, s.num_nodes as usize)
            })
            .collect();
        let soft_off: Vec<u32> = vars.iter().map(|&v| self.soft_offsets[v as usize]).collect();
        let (ids, vars, aux, ncats, soft_off) = (self.table(ids), self.table(vars), self.table(aux), self.table(ncats), self.table(soft_off));
        // Where the forward reads a leaf's constants: its probabilities, or its table slots.
        let consts = leaf_constants(layer.kind);
        let cslots = if info.constants == Constants::Params { self.table(pstart) } else { aux };
        // Families without statistics (indicators) have no backward kernel.
        if layer.segments.iter().any(|s| s.dist.num_stats() > 0) {
            let nst = self.table(nstats.clone());
            match self.categorical_stats(layer, [ids, aux, nst], &nstats)? {
                Some(specs) => self.input_bwd.extend(specs.into_iter().map(Step::Launch)),
                None => {
                    let stats = self.scalar_stats(kind, n, [consts, ids, vars, aux, cslots, nst, ncats, soft_off])?;
                    self.input_bwd.push(Step::Launch(stats));
                }
            }
            let mass = self.leaf_mass(kind, n, [consts, ids, aux, cslots, nst])?;
            self.input_bwd.push(Step::Launch(mass));
        }
        let args = vec![
            KernelArg::Nodes,
            KernelArg::Data,
            KernelArg::Missing,
            consts,
            ids,
            vars,
            cslots,
            ncats,
            KernelArg::SoftenKeep,
            KernelArg::SoftProbs,
            soft_off,
            KernelArg::Count,
            KernelArg::Batch,
        ];
        let per_sample = leaf_sample_launch(name, kind, n, args);
        let spec = match self.categorical_rows(layer)? {
            Some(rows) => KernelSpec { args: per_sample.args.clone(), small: Some(Box::new(per_sample)), ..rows },
            None => per_sample,
        };
        self.m.forward.push(spec);
        Ok(())
    }

    /// The scalar statistics launch of an input layer (`templates/input_bwd.cu.tera`, thread =
    /// (leaf, sample); every family, every evidence mode). `t`: consts, ids, vars, aux, cslots,
    /// nstats, ncats, soft_off.
    fn scalar_stats(&mut self, kind: &str, n: u64, t: [KernelArg; 8]) -> Result<KernelSpec, EmitError> {
        let name = format!("input_{kind}_bwd");
        let mut ctx = tera::Context::new();
        ctx.insert("name", &name);
        ctx.insert("kind", kind);
        self.source += &render(&self.t, "input_bwd", &ctx)?;
        let [consts, ids, vars, aux, cslots, nst, ncats, soft_off] = t;
        let args = vec![
            KernelArg::InputStats,
            KernelArg::NodeFlows,
            KernelArg::Data,
            KernelArg::Missing,
            consts,
            ids,
            vars,
            aux,
            cslots,
            nst,
            ncats,
            KernelArg::SoftenKeep,
            KernelArg::SoftProbs,
            soft_off,
            KernelArg::LeafMass,
            KernelArg::Count,
            KernelArg::Batch,
        ];
        Ok(leaf_sample_launch(name, kind, n, args))
    }

    /// The missing-value credit that an input layer's statistics launch summed per leaf
    /// (`templates/input_mass.cu.tera`, a thread per leaf), run right after it. `t`: consts, ids,
    /// aux, cslots, nstats.
    fn leaf_mass(&mut self, kind: &str, n: u64, t: [KernelArg; 5]) -> Result<KernelSpec, EmitError> {
        // Not `input_{kind}_bwd_…`: that prefix names the tensor-core and sorted statistics.
        let name = format!("input_{kind}_mass");
        if self.emitted.insert(name.clone()) {
            let mut ctx = tera::Context::new();
            ctx.insert("name", &name);
            ctx.insert("kind", kind);
            self.source += &render(&self.t, "input_mass", &ctx)?;
        }
        let [consts, ids, aux, cslots, nst] = t;
        Ok(KernelSpec {
            scales_with_batch: false,
            batch_group: 1,
            name,
            layer: format!("{kind} inputs (missing-value credit)"),
            count: n as u32,
            threads_per_sample: n,
            block: BLOCK,
            args: vec![KernelArg::InputStats, KernelArg::LeafMass, consts, ids, aux, cslots, nst, KernelArg::Count],
            small: None,
        })
    }

    /// The categorical leaves' forward by leaf rows (`templates/input_cat_fwd_rows.cu.tera`: a
    /// warp per leaf, its log-probabilities once in shared memory), with the per-sample kernel's
    /// arguments; that kernel stays the small-batch variant. `None` for other families, for more
    /// than [`ROWS_MAX_CATS`] categories, or with `PCC_LEAF_FWD=sample` (the per-sample kernel at
    /// every batch size, to compare).
    fn categorical_rows(&mut self, layer: &InputLayer) -> Result<Option<KernelSpec>, EmitError> {
        let kmax = layer.segments.iter().map(|s| s.dist.num_stats()).max().unwrap_or(0);
        if layer.kind != DistKind::Categorical || kmax == 0 || kmax > ROWS_MAX_CATS || std::env::var("PCC_LEAF_FWD").as_deref() == Ok("sample") {
            return Ok(None);
        }
        let name = format!("input_categorical_fwd_rows_k{kmax}");
        if self.emitted.insert(name.clone()) {
            let mut ctx = tera::Context::new();
            ctx.insert("name", &name);
            ctx.insert("nk", &kmax);
            self.source += &render(&self.t, "input_cat_fwd_rows", &ctx)?;
        }
        let n = layer.segments.iter().map(|s| s.num_nodes as u64).sum::<u64>();
        Ok(Some(KernelSpec {
            scales_with_batch: false,
            batch_group: 1,
            name,
            layer: "categorical inputs".into(),
            count: n as u32,
            // A warp per leaf, eight per CUDA block; each loops over the batch.
            threads_per_sample: n.div_ceil(8) * BLOCK as u64,
            block: BLOCK,
            args: Vec::new(), // the per-sample kernel's (the caller's)
            small: None,
        }))
    }

    /// Depth `d`: its products, then its sums; backward steps: products recomputed, element
    /// flows cleared, sum flows, product flows.
    pub fn depth(&mut self, d: usize, depth: &DepthPlan) -> Result<(), EmitError> {
        let fused = fuse::fused_children(depth, SMALL_MAX_WIDTH);
        let first_prod = self.m.forward.len();
        let (recompute, prod_bwd) = self.products(d, depth)?;
        if fused.is_some() {
            // Small batches skip this depth's product launches: the sums below form the elements.
            for spec in &mut self.m.forward[first_prod..] {
                spec.small = Some(Box::new(KernelSpec { threads_per_sample: 0, small: None, ..spec.clone() }));
            }
        }
        // The tensor-core element flows store instead of adding where no element of this depth
        // has two parent sum blocks, a run of blocks that the tensor-core kernels merge
        // (`mma::MmaPart`: a PD region's blocks over one child list) counting as one.
        let exclusive_elements = distinct_nonzero(&self.child_lists(depth));
        let mut sum_bwd = Vec::new();
        for (p, part) in depth.sums.iter().enumerate() {
            self.next_unit(&format!("d{d}s{p}"));
            let tables = SumTables { nids: self.table(part.nids.clone()), cids: self.table(part.cids.clone()), pids: self.table(part.pids.clone()) };
            let fused_children = fused.as_ref().map(|f| &f[p]);
            let small = self.small_sum(d, p, part, tables, fused_children)?;
            if mma::MmaShape::for_partition(self.opts.precision, part.block_size, part.width).is_some() {
                self.mma_sum(d, p, part, tables, small, exclusive_elements, &mut sum_bwd)?;
            } else {
                self.scalar_sum(d, p, part, tables, small, &mut sum_bwd)?;
            }
        }
        let mut steps = recompute;
        steps.push(Step::ZeroElementFlows);
        steps.extend(sum_bwd);
        steps.extend(prod_bwd);
        self.depth_bwd.push(steps);
        Ok(())
    }

    /// The child lists of depth `d`'s sum blocks as its kernels read them, concatenated: a
    /// tensor-core partition's merged blocks read their shared list once.
    fn child_lists(&self, depth: &DepthPlan) -> Vec<u32> {
        let lists = |part: &SumPartition| match mma::MmaShape::for_partition(self.opts.precision, part.block_size, part.width) {
            Some(_) => mma::MmaPart::split(part).into_iter().flat_map(|mp| mp.cids).collect(),
            None => part.cids.clone(),
        };
        depth.sums.iter().flat_map(lists).collect()
    }

    /// Depth `d`'s product partitions: forward launches (also recomputed in the backward) and
    /// their flows.
    fn products(&mut self, d: usize, depth: &DepthPlan) -> Result<(Vec<Step>, Vec<Step>), EmitError> {
        let (mut recompute, mut prod_bwd) = (Vec::new(), Vec::new());
        for (p, part) in depth.prods.iter().enumerate() {
            self.next_unit(&format!("d{d}p{p}"));
            let name = format!("prod_fwd_bs{}_w{}", part.block_size, part.width);
            shape_kernel(&self.t, &mut self.emitted, &mut self.source, "prod_fwd", &name, part.block_size, part.width, None)?;
            let (nids, cids) = (self.table(part.nids.clone()), self.table(part.cids.clone()));
            let spec = prod_fwd_spec(d, p, part, nids, cids);
            let (layer, count, threads_per_sample) = (spec.layer.clone(), spec.count, spec.threads_per_sample);
            recompute.push(Step::Launch(spec.clone()));
            self.m.forward.push(spec);
            let (bname, excl) = prod_bwd_kernel(part);
            if self.emitted.insert(bname.clone()) {
                let mut ctx = tera::Context::new();
                ctx.insert("name", &bname);
                ctx.insert("bs", &part.block_size);
                ctx.insert("width", &part.width);
                ctx.insert("excl", &excl);
                self.source += &render(&self.t, "prod_bwd", &ctx)?;
            }
            let args = vec![KernelArg::NodeFlows, KernelArg::ElementFlows, nids, cids, KernelArg::Count, KernelArg::Batch];
            prod_bwd.push(Step::Launch(KernelSpec {
                scales_with_batch: true,
                batch_group: 1,
                name: bname,
                layer,
                count,
                threads_per_sample,
                block: BLOCK,
                args,
                small: None,
            }));
        }
        Ok((recompute, prod_bwd))
    }

    /// The categorical statistics of a tensor-core manifest (bf16/tf32; fp32 keeps the scalar
    /// kernel as the exact reference), by `PCC_CAT_STATS`: `sorted`, by sorted segments
    /// (`templates/input_cat_bwd_sorted.cu.tera`, a sort launch and the statistics launch; opt-in
    /// until a GPU self-check has run it), `mma` (the default: the tensor-core product of
    /// `templates/input_cat_bwd_mma.cu.tera`) or `scalar` (`None`: the scalar kernel).
    /// `tables`: ids, aux, nstats. Missing values go to [`KernelArg::LeafMass`] in every variant.
    fn categorical_stats(&mut self, layer: &InputLayer, tables: [KernelArg; 3], nstats: &[u32]) -> Result<Option<Vec<KernelSpec>>, EmitError> {
        let kmax = nstats.iter().copied().max().unwrap_or(0);
        if layer.kind != DistKind::Categorical || !self.mma_head || kmax == 0 {
            return Ok(None);
        }
        match std::env::var("PCC_CAT_STATS").as_deref() {
            Ok("scalar") => Ok(None),
            Ok("sorted") if kmax <= SORTED_MAX_CATS => Ok(Some(self.categorical_stats_sorted(layer, tables, kmax)?)),
            _ => Ok(Some(vec![self.categorical_stats_mma(layer, tables, kmax)?])),
        }
    }

    /// Tiles of up to `tl` leaves of one segment (one variable) each: the variable, then the
    /// leaf indices, padded with `u32::MAX`; and their number.
    fn leaf_tiles(layer: &InputLayer, tl: u32) -> (Vec<u32>, u32) {
        let (mut tiles, mut n_tiles, mut leaf) = (Vec::new(), 0u32, 0u32);
        for seg in &layer.segments {
            for first in (0..seg.num_nodes).step_by(tl as usize) {
                let len = tl.min(seg.num_nodes - first);
                tiles.push(seg.var);
                tiles.extend(leaf + first..leaf + first + len);
                tiles.extend(std::iter::repeat_n(u32::MAX, (tl - len) as usize));
                n_tiles += 1;
            }
            leaf += seg.num_nodes;
        }
        (tiles, n_tiles)
    }

    /// The sort of each variable's batch by category and the statistics by sorted segments
    /// (`templates/input_cat_bwd_sorted.cu.tera`). The sort writes the [`KernelArg::XStage`]
    /// buffer (`[var][B]` words), which the sums' backward no longer needs by then: the manifest's
    /// `x_words` covers the variables.
    fn categorical_stats_sorted(&mut self, layer: &InputLayer, tables: [KernelArg; 3], kmax: u32) -> Result<Vec<KernelSpec>, EmitError> {
        // 64 leaves per tile (8 per warp), 32 where no variable has more than 32 leaves.
        let tl = if layer.segments.iter().any(|s| s.num_nodes > 32) { 64 } else { 32 };
        let (tiles, n_tiles) = Self::leaf_tiles(layer, tl);
        let mut vars: Vec<u32> = layer.segments.iter().map(|s| s.var).collect();
        vars.sort_unstable();
        vars.dedup();
        let n_vars = vars.len() as u32;
        self.m.x_words = self.m.x_words.max(vars.last().map_or(0, |&v| v as u64 + 1));
        let name = format!("input_categorical_bwd_sorted_k{kmax}_t{tl}");
        if self.emitted.insert(name.clone()) {
            let mut ctx = tera::Context::new();
            ctx.insert("name", &name);
            ctx.insert("tl", &tl);
            ctx.insert("ch", &SORTED_CHUNK);
            ctx.insert("nk", &kmax);
            self.source += &render(&self.t, "input_cat_bwd_sorted", &ctx)?;
        }
        let [ids, aux, nst] = tables;
        let (tiles, vars) = (self.table(tiles), self.table(vars));
        let sort = KernelSpec {
            scales_with_batch: true,
            batch_group: SORTED_CHUNK,
            name: format!("{name}_sort"),
            layer: "categorical inputs (sorted by category)".into(),
            count: n_vars,
            // One CUDA block of 256 threads per (variable, chunk of SORTED_CHUNK samples).
            threads_per_sample: n_vars as u64 * 256,
            block: 256,
            args: vec![KernelArg::XStage, KernelArg::Data, KernelArg::Missing, vars, KernelArg::Count, KernelArg::Batch],
            small: None,
        };
        let args = vec![
            KernelArg::InputStats,
            KernelArg::NodeFlows,
            KernelArg::XStage,
            KernelArg::Missing,
            tiles,
            ids,
            aux,
            nst,
            KernelArg::LeafMass,
            KernelArg::Count,
            KernelArg::Batch,
        ];
        let stats = KernelSpec {
            scales_with_batch: false,
            batch_group: 1,
            name,
            layer: "categorical inputs".into(),
            count: n_tiles,
            // One CUDA block per tile; it loops over the batch's chunks.
            threads_per_sample: n_tiles as u64 * 256,
            block: 256,
            args,
            small: None,
        };
        Ok(vec![sort, stats])
    }

    /// Categorical statistics on tensor cores (`templates/input_cat_bwd_mma.cu.tera`: per
    /// variable, the leaves' flows times the one-hot data). `tables`: ids, aux, cslots.
    fn categorical_stats_mma(&mut self, layer: &InputLayer, tables: [KernelArg; 3], kmax: u32) -> Result<KernelSpec, EmitError> {
        const TM: u32 = 64;
        const TC: u32 = 64;
        let (tiles, n_tiles) = Self::leaf_tiles(layer, TM);
        let bf16 = self.opts.precision == pc_runtime::cuda::Precision::Bf16;
        let name = format!("input_categorical_bwd_{}", self.opts.precision);
        let (wm, wn) = mma::warps(TM);
        let threads = 32 * wm * wn;
        let ct = kmax.div_ceil(TC);
        let mut ctx = tera::Context::new();
        ctx.insert("name", &name);
        ctx.insert("prec", self.opts.precision.name());
        ctx.insert("bf16", if bf16 { "true" } else { "false" });
        ctx.insert("tm", &TM);
        ctx.insert("tc", &TC);
        ctx.insert("kc", &if bf16 { 32 } else { 16 });
        ctx.insert("ct", &ct);
        ctx.insert("threads", &threads);
        ctx.insert("minb", &3);
        ctx.insert("wn", &wn);
        ctx.insert("mf", &(TM / wm / 16));
        ctx.insert("nf", &(TC / wn / 8));
        self.source += &render(&self.t, "input_cat_bwd_mma", &ctx)?;
        let [ids, aux, nst] = tables;
        let tiles = self.table(tiles);
        let args = vec![
            KernelArg::InputStats,
            KernelArg::NodeFlows,
            KernelArg::Data,
            KernelArg::Missing,
            tiles,
            ids,
            aux,
            nst,
            KernelArg::LeafMass,
            KernelArg::Count,
            KernelArg::Batch,
        ];
        Ok(KernelSpec {
            scales_with_batch: false,
            batch_group: 1,
            name,
            layer: "categorical inputs".into(),
            count: n_tiles,
            threads_per_sample: n_tiles as u64 * ct as u64 * threads as u64,
            block: threads,
            args,
            small: None,
        })
    }

    /// The warp-per-node variant that batches of up to `SMALL_BATCH` samples run, whatever the
    /// precision: with the depth's products folded in (`_fused`, see `fuse`) or reading the
    /// element buffer (`_small`); none for partitions wider than [`SMALL_MAX_WIDTH`].
    fn small_sum(&mut self, d: usize, p: usize, part: &SumPartition, tb: SumTables, fused: Option<&(u32, Vec<u32>)>) -> Result<Option<KernelSpec>, EmitError> {
        if part.width > SMALL_MAX_WIDTH {
            return Ok(None);
        }
        let SumTables { nids, cids, pids } = tb;
        let (kname, pw, args) = match fused {
            Some((pw, fc)) => {
                let fc = self.table(fc.clone());
                let args = vec![KernelArg::Nodes, KernelArg::SumParams, nids, cids, pids, fc, KernelArg::Count, KernelArg::Batch];
                (format!("sum_fwd_bs{}_w{}_p{pw}_fused", part.block_size, part.width), *pw, args)
            }
            None => (format!("sum_fwd_bs{}_w{}_small", part.block_size, part.width), 0, scalar_sum_args(tb)),
        };
        if self.emitted.insert(kname.clone()) {
            let mut ctx = tera::Context::new();
            ctx.insert("name", &kname);
            ctx.insert("bs", &part.block_size);
            ctx.insert("width", &part.width);
            ctx.insert("pw", &pw);
            ctx.insert("npb", &SMALL_NODES_PER_BLOCK);
            ctx.insert("sb", &small_group(part.width));
            self.source += &render(&self.t, "sum_fwd_small", &ctx)?;
        }
        // One CUDA block per (sum block, tile of nodes, group of samples).
        let (count, tiles) = (part.nids.len() as u32, part.block_size.div_ceil(SMALL_NODES_PER_BLOCK) as u64);
        let threads_per_sample = count as u64 * tiles * BLOCK as u64;
        Ok(Some(KernelSpec {
            name: kname,
            layer: format!("sums d{d} p{p}"),
            count,
            threads_per_sample,
            scales_with_batch: true,
            batch_group: small_group(part.width),
            block: BLOCK,
            args,
            small: None,
        }))
    }

    /// A sum partition on tensor cores. The kernels see runs of blocks over the same children
    /// as one block (`mma::MmaPart`): a partition may become two launches (merged runs, the
    /// rest), each with its own tables; small batches run the partition's small-batch variant
    /// once. (Merging keeps a block size that is a multiple of 16: one test for every part.)
    #[allow(clippy::too_many_arguments)] // the partition, its tables and the depth's facts
    fn mma_sum(
        &mut self,
        d: usize,
        p: usize,
        part: &SumPartition,
        tb: SumTables,
        small: Option<KernelSpec>,
        exclusive_elements: bool,
        sum_bwd: &mut Vec<Step>,
    ) -> Result<(), EmitError> {
        let layer = format!("sums d{d} p{p}");
        if cuts::enabled() && !exclusive_elements {
            let shape = mma::MmaShape::for_partition(self.opts.precision, part.block_size, part.width).expect("a tensor-core partition");
            let rows = |cut: u32| mma::MmaShape { width: cut, ..shape.clone() }.x_rows();
            if let Some(plan) = cuts::plan(part, shape.kc, rows) {
                return self.cut_sum(part, &layer, plan, small, sum_bwd);
            }
        }
        let parts = mma::MmaPart::split(part);
        // Two-kernel launches stage at most MAX_X_WORDS per sample.
        let parts: Vec<mma::MmaPart> = match mma::two_kernel_forward(exclusive_elements) {
            true => parts.into_iter().flat_map(|mp| mp.chunks(mma::x_blocks(self.opts.precision, part.width))).collect(),
            false => parts,
        };
        let excl = mma_bwd::Exclusive { elements: exclusive_elements, params: distinct_nonzero(&part.pids) };
        let has_small = small.is_some();
        let mut small = small.map(Box::new);
        for (i, mp) in parts.iter().enumerate() {
            let moff = self.max_rows;
            let tables = match parts.len() == 1 && mp.group() == 1 {
                true => [tb.nids, tb.cids, tb.pids],
                false => [self.table(mp.nids.clone()), self.table(mp.cids.clone()), self.table(mp.pids.clone())],
            };
            self.next_unit(&format!("d{d}s{p}f{i}"));
            let forward = mma::sum_forward(
                &self.t,
                self.opts,
                mp,
                &mut self.emitted,
                &mut self.source,
                layer.clone(),
                tables,
                moff,
                self.packed_words,
                exclusive_elements,
            )?;
            let forward = forward.expect("every part of a tensor-core partition is one");
            self.packed_words += forward.pack.threads_per_sample;
            self.packs.push(forward.pack);
            self.m.x_words = self.m.x_words.max(forward.x_words);
            // The two-kernel forward's staging launch (its first), which a staged backward runs again.
            let (stage, poff) = ((forward.x_words > 0).then(|| forward.launches[0].clone()), forward.poff);
            self.push_forward(forward.launches, i == 0, &mut small, has_small);
            self.max_rows += mp.count();
            self.next_unit(&format!("d{d}s{p}b{i}"));
            let staged = stage.as_ref().map(|stage| mma_bwd::StagedForward { stage, poff });
            let specs = mma_bwd::sum_backward(&self.t, self.opts.precision, mp, &mut self.emitted, &mut self.source, &layer, tables, moff, excl, staged)?
                .expect("the forward's shape");
            sum_bwd.extend(specs.into_iter().map(Step::Launch));
        }
        Ok(())
    }

    /// A tensor-core partition's forward launches, in order. The partition's first launch
    /// (`first` and the first of `launches`) carries its small-batch variant `small` (which
    /// covers every block); the others then skip small batches (a variant with no threads).
    fn push_forward(&mut self, launches: Vec<KernelSpec>, first: bool, small: &mut Option<Box<KernelSpec>>, has_small: bool) {
        for (j, mut spec) in launches.into_iter().enumerate() {
            spec.small = match (first && j == 0, has_small) {
                (true, _) => small.take(),
                (false, true) => Some(Box::new(KernelSpec { threads_per_sample: 0, small: None, ..spec.clone() })),
                (false, false) => None,
            };
            self.m.forward.push(spec);
        }
    }

    /// A sum partition whose blocks read shared cuts ([`cuts::plan`], `PCC_PD_CUTS=1`): per
    /// launch, the cuts staged once (the two-kernel template's staging kernel over the cuts), then
    /// the cut-staged product, which writes each block's maximum for the register-staged
    /// backward (its children are shared: element flows add).
    fn cut_sum(&mut self, part: &SumPartition, layer: &str, plan: cuts::CutPlan, small: Option<KernelSpec>, sum_bwd: &mut Vec<Step>) -> Result<(), EmitError> {
        let (w, prec, has_small) = (part.width as usize, self.opts.precision, small.is_some());
        let mut small = small.map(Box::new);
        for (i, l) in plan.launches.iter().enumerate() {
            let pick = |t: &[u32], n: usize| l.blocks.iter().flat_map(|&b| t[b * n..(b + 1) * n].iter().copied()).collect::<Vec<u32>>();
            let count = l.blocks.len() as u32;
            let mp = mma::MmaPart {
                block_size: part.block_size,
                sub: part.block_size,
                width: part.width,
                nids: pick(&part.nids, 1),
                cids: pick(&part.cids, w),
                pids: pick(&part.pids, w),
            };
            let stage_cids: Vec<u32> = l.cuts.iter().flat_map(|&c| c..c + plan.cut).collect();
            let tables = [self.table(mp.nids.clone()), self.table(mp.cids.clone()), self.table(mp.pids.clone())];
            let (cutx, stage_cids) = (self.table(l.cutx.clone()), self.table(stage_cids));
            let (moff, cmoff) = (self.max_rows, self.max_rows + count);
            self.max_rows += count + l.cuts.len() as u32;
            self.next_unit(&format!("{}c{i}", layer.replace(' ', "_")));
            let forward = mma::cut_forward(
                &self.t,
                prec,
                &mp,
                plan.cut,
                &mut self.emitted,
                &mut self.source,
                layer,
                [tables[0], cutx, tables[2], stage_cids],
                (moff, cmoff),
                self.packed_words,
                l.cuts.len() as u32,
            )?;
            self.packed_words += forward.pack.threads_per_sample;
            self.packs.push(forward.pack);
            self.m.x_words = self.m.x_words.max(forward.x_words);
            self.push_forward(forward.launches, i == 0, &mut small, has_small);
            let excl = mma_bwd::Exclusive { elements: false, params: distinct_nonzero(&mp.pids) };
            let specs =
                mma_bwd::sum_backward(&self.t, prec, &mp, &mut self.emitted, &mut self.source, layer, tables, moff, excl, None)?.expect("the forward's shape");
            sum_bwd.extend(specs.into_iter().map(Step::Launch));
        }
        Ok(())
    }

    /// A sum partition on the scalar fp32 kernels: forward, element flows (thread = edge and
    /// sample), parameter flows (CUDA block = block and child; it loops over nodes and samples).
    fn scalar_sum(
        &mut self,
        d: usize,
        p: usize,
        part: &SumPartition,
        tb: SumTables,
        small: Option<KernelSpec>,
        sum_bwd: &mut Vec<Step>,
    ) -> Result<(), EmitError> {
        let (name, layer) = (format!("sum_fwd_bs{}_w{}", part.block_size, part.width), format!("sums d{d} p{p}"));
        shape_kernel(&self.t, &mut self.emitted, &mut self.source, "sum_fwd", &name, part.block_size, part.width, Some(part.child_block_size))?;
        let count = part.nids.len() as u32;
        let threads_per_sample = count as u64 * part.block_size as u64;
        let small = small.map(Box::new);
        self.m.forward.push(KernelSpec {
            scales_with_batch: true,
            batch_group: 1,
            name,
            layer: layer.clone(),
            count,
            threads_per_sample,
            block: BLOCK,
            args: scalar_sum_args(tb),
            small,
        });
        let bname = format!("sum_bwd_bs{}_w{}", part.block_size, part.width);
        shape_kernel(&self.t, &mut self.emitted, &mut self.source, "sum_bwd", &bname, part.block_size, part.width, None)?;
        let SumTables { nids, cids, pids } = tb;
        let args = |out: KernelArg| {
            vec![out, KernelArg::Nodes, KernelArg::NodeFlows, KernelArg::Elements, KernelArg::SumParams, nids, cids, pids, KernelArg::Count, KernelArg::Batch]
        };
        let edges = count as u64 * part.width as u64;
        let eflow = KernelSpec {
            scales_with_batch: true,
            batch_group: 1,
            name: format!("{bname}_eflow"),
            layer: layer.clone(),
            count,
            threads_per_sample: edges,
            block: BLOCK,
            args: args(KernelArg::ElementFlows),
            small: None,
        };
        let pflow = KernelSpec {
            scales_with_batch: false,
            batch_group: 1,
            name: format!("{bname}_pflow"),
            layer,
            count,
            threads_per_sample: edges * BLOCK as u64,
            block: BLOCK,
            args: args(KernelArg::SumFlows),
            small: None,
        };
        sum_bwd.extend([Step::Launch(eflow), Step::Launch(pflow)]);
        Ok(())
    }

    /// EM, the queries and the persistent small-batch pass; the manifest assembled.
    pub fn finish(mut self, plan: &Plan) -> Result<Emitted, EmitError> {
        let mut m = self.m;
        m.backward = self.depth_bwd.into_iter().rev().flatten().chain(self.input_bwd).collect();
        m.sum_max_rows = self.max_rows;
        unit(&mut self.source, "em");
        emit_em(plan, &self.t, &mut self.source, &mut m)?;
        m.em.extend(self.packs);
        m.packed_words = self.packed_words;
        m.precision = self.opts.precision;
        m.small_max_batch = small_max_batch(plan, self.opts.precision);
        unit(&mut self.source, "queries");
        queries::emit_queries(&self.t, plan, &mut self.source, &mut m)?;
        if let Some((p, shapes, layout)) = persistent::build(plan, plan.inputs.len() as u32) {
            unit(&mut self.source, pc_runtime::cuda::PERSISTENT_UNIT);
            self.source += &persistent::render_kernel(&self.t, &p, &shapes, &layout)?;
            m.persistent = Some(p);
        }
        Ok(Emitted { source: self.source, manifest: m })
    }
}

/// A launch of kernel `name` over `n` leaves of a `kind` input layer, a thread per (leaf, sample).
fn leaf_sample_launch(name: String, kind: &str, n: u64, args: Vec<KernelArg>) -> KernelSpec {
    KernelSpec {
        scales_with_batch: true,
        batch_group: 1,
        name,
        layer: format!("{kind} inputs"),
        count: n as u32,
        threads_per_sample: n,
        block: BLOCK,
        args,
        small: None,
    }
}

/// The forward launch of product partition `p` of depth `d` (`templates/prod_fwd.cu.tera`, named
/// by shape): a thread per (product node, four consecutive samples). The queries' max-product
/// forward and walks launch the same kernel.
pub(super) fn prod_fwd_spec(d: usize, p: usize, part: &pc_runtime::plan::ProdPartition, nids: KernelArg, cids: KernelArg) -> KernelSpec {
    let count = part.nids.len() as u32;
    KernelSpec {
        scales_with_batch: true,
        batch_group: 4,
        name: format!("prod_fwd_bs{}_w{}", part.block_size, part.width),
        layer: format!("products d{d} p{p}"),
        count,
        threads_per_sample: count as u64 * part.block_size as u64,
        block: BLOCK,
        args: vec![KernelArg::Elements, KernelArg::Nodes, nids, cids, KernelArg::Count, KernelArg::Batch],
        small: None,
    }
}

/// The backward kernel of a product partition (the training pass's, which the queries' node
/// flows reuse) and whether it takes plain adds: child rows that no other (product, sample)
/// thread of its launch writes ([`exclusive_child_rows`]) do.
pub(super) fn prod_bwd_kernel(part: &pc_runtime::plan::ProdPartition) -> (String, bool) {
    let excl = exclusive_child_rows(part);
    (format!("prod_bwd_bs{}_w{}{}", part.block_size, part.width, if excl { "_excl" } else { "" }), excl)
}

/// Whether every child node row a product partition's backward adds to (`cids[r·W + j] + k`,
/// `k < block_size`, up to the padding) belongs to one (block, child) pair only: then no two
/// threads of its launch add to one value.
fn exclusive_child_rows(part: &pc_runtime::plan::ProdPartition) -> bool {
    let w = part.width as usize;
    let mut rows: Vec<u32> = Vec::with_capacity(part.nids.len() * w * part.block_size as usize);
    for r in 0..part.nids.len() {
        for &c in part.cids[r * w..(r + 1) * w].iter().take_while(|&&c| c != 0) {
            rows.extend(c..c + part.block_size);
        }
    }
    rows.sort_unstable();
    rows.windows(2).all(|p| p[0] != p[1])
}

/// Samples per chunk of the categorical statistics by sorted segments: a chunk's offsets fit the
/// sort word's low 16 bits, and a warp's copy of one leaf's flows (2 KB) its shared memory.
const SORTED_CHUNK: u32 = 512;

/// Most categories of a leaf forward by rows: eight warps' rows of shared memory, 32 KiB.
const ROWS_MAX_CATS: u32 = 1024;

/// Most categories the statistics by sorted segments take (the sort's bins are in shared
/// memory); layers with more keep the tensor-core product.
const SORTED_MAX_CATS: u32 = 4096;

/// Bytes of shared memory the small-batch variant stages a group's child values in.
const SMALL_STAGE_BYTES: u32 = 32 * 1024;

/// Samples per CUDA block of the small-batch variant of a partition `width` children wide: the
/// most (a power of two, at most [`pc_runtime::cuda::SMALL_BATCH`]) whose child values fit in
/// [`SMALL_STAGE_BYTES`], so a batch of 8 reads each weight once (width ≤ 1024) instead of 8 times.
fn small_group(width: u32) -> u32 {
    let fit = (SMALL_STAGE_BYTES / (4 * width.max(1))).clamp(1, pc_runtime::cuda::SMALL_BATCH as u32);
    1 << fit.ilog2()
}

/// Sum parameters from which tensor-core circuits run batches of 5..=8 samples on the batch
/// kernels rather than the small-batch variants. The variants (fp32, a warp per node, a group of
/// up to 8 samples per CUDA block) read every fp32 weight once per call; the batch kernels read
/// the packed bf16 weights once per depth, and win at batch 8 on large circuits. Measured on an
/// H100 (2026-12-07, `bench/results/2026-12-07-h100-small-batch-fa9712c.txt`, graph replay,
/// variants / batch kernels): pd128 (39M) b4 443 / 779 µs, b8 625 / 807; pd256 (155M) b4 1425 /
/// 1639, b8 2306 / 1688. So circuits from this size keep the variants up to batch 4.
pub const SMALL_PATH_MAX_PARAMS: u32 = 50_000_000;

/// Largest batch that large circuits run on the small-batch variants (see [`SMALL_PATH_MAX_PARAMS`]).
const LARGE_SMALL_MAX_BATCH: u32 = 4;

/// [`Manifest::small_max_batch`] for `plan` at `precision` (see [`SMALL_PATH_MAX_PARAMS`]);
/// batches of 1–2 run the persistent pass where there is one.
fn small_max_batch(plan: &Plan, precision: pc_runtime::cuda::Precision) -> u32 {
    match precision != pc_runtime::cuda::Precision::Fp32 && plan.num_sum_params >= SMALL_PATH_MAX_PARAMS {
        true => LARGE_SMALL_MAX_BATCH,
        false => pc_runtime::cuda::SMALL_BATCH as u32,
    }
}

/// The scalar sum forward's arguments (also the `_small` variant's).
fn scalar_sum_args(tb: SumTables) -> Vec<KernelArg> {
    vec![KernelArg::Nodes, KernelArg::Elements, KernelArg::SumParams, tb.nids, tb.cids, tb.pids, KernelArg::Count, KernelArg::Batch]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_groups_fit_their_staging_and_the_batch_limit() {
        for width in [1, 4, 128, 1000, 1024, 1025, 2048, 3072, SMALL_MAX_WIDTH] {
            let g = small_group(width);
            assert!(g.is_power_of_two() && g as usize <= pc_runtime::cuda::SMALL_BATCH, "width {width}: {g}");
            assert!(4 * width * g <= SMALL_STAGE_BYTES, "width {width}: {g} samples overflow the staging");
        }
        assert_eq!(small_group(1024), 8, "a batch of 8 reads each weight once up to 1024 children");
        assert_eq!(small_group(SMALL_MAX_WIDTH), 2);
    }
}

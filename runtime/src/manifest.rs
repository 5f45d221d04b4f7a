//! The kernel manifest: what the emitter promises about the source it generated — every kernel's
//! name, launch shape and arguments in launch order, and the index tables they read. The runtime
//! needs nothing else to run a circuit, so a deployed binary never links the compiler.

use serde::{Deserialize, Serialize};

use crate::data::Evidence;
use crate::outputs::Conditional;
use crate::plan::{Domain, Plan};

/// One argument of a generated kernel, in signature order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelArg {
    /// Node values `[num_nodes][B]` (f32, log space).
    Nodes,
    /// Element (product) values `[num_elements][B]`.
    Elements,
    /// Sum weights (f32, plan layout).
    SumParams,
    /// Leaf constants ([`crate::Params::leaf_table`]).
    LeafTable,
    /// Evidence values, transposed to `[num_vars][B]`.
    Data,
    /// Missing-value mask `[num_vars][B]` (u8).
    Missing,
    /// Index table `tables[i]` (u32).
    Table(u32),
    /// The batch size (i32).
    Batch,
    /// The launch's block count ([`KernelSpec::count`], i32).
    Count,
    /// Node flows `[num_nodes][B]` (f32, linear).
    NodeFlows,
    /// Element flows `[num_elements][B]`.
    ElementFlows,
    /// Sum-parameter flows (f32, plan layout), accumulated across calls.
    SumFlows,
    /// Forward maxima of the tensor-core sum blocks, `[Manifest::sum_max_rows][B]` (f32): written
    /// by the tensor-core forward, read by the tensor-core backward.
    SumMax,
    /// The tensor-core forward's B operand, `exp(children − max)` rounded and packed per block
    /// (`[Manifest::x_words][B]` u32 words; layout: `templates/sum_fwd_gemm.cu.tera`): written by
    /// a depth's `*_x` kernels, read by its two-kernel sums; every depth reuses it.
    XStage,
    /// Sum weights packed for the tensor-core forward (u32 words, [`Manifest::packed_words`]):
    /// written from [`KernelArg::SumParams`] by the `*_pack` kernels at the end of
    /// [`Manifest::em`], read by the forward (layout: `templates/sum_fwd_mma.cu.tera`).
    PackedWeights,
    /// Input expected statistics (f32, statistics layout), accumulated across calls.
    InputStats,
    /// Per leaf node (f32, `[num_nodes]`, indexed by node id): the flow of the pass's samples
    /// owed the leaf's missing-value expectation (missing values, data softening), summed by the
    /// scalar statistics kernel and credited once per leaf by its `_mass` kernel, which leaves it
    /// zero: `K` adds per categorical leaf and pass instead of `K` per (leaf, sample).
    LeafMass,
    /// Leaf parameters (f32, plan layout).
    InputParams,
    /// The batch's soft-evidence mode, one f32 in device memory: 1 = hard evidence, β in (0, 1)
    /// = data softening ([`crate::Soft::Softened`]), −1 = dense soft evidence in
    /// [`KernelArg::SoftProbs`]; a pointer, so captured graphs read the current value.
    SoftenKeep,
    /// Dense soft evidence ([`crate::Soft::Dense`]) of the batch (f32, `[Σ_v K_v][B]`: category
    /// `k` of variable `v` of sample `b` at `(offset_v + k)·B + b`), read where
    /// [`KernelArg::SoftenKeep`] is −1.
    SoftProbs,
    /// EM step size η (f32).
    StepSize,
    /// EM pseudocount α (f32).
    Pseudocount,
    /// The query's output buffer (f32): `[B][slots]` conditional accumulators
    /// ([`conditional_slots`]) or `[B][num_vars]` assignments (MPE, samples).
    Output,
    /// Sampling seed (u64): the Philox key.
    Seed,
    /// Global index of the batch's first sample (u32): Philox counters use global sample indices,
    /// so draws do not depend on how a query is split into batches.
    SampleOffset,
    /// A constant of the launch (i32): the block size or width of a partition, for kernels that
    /// take the shape at run time (the query walks, off the training path: one kernel for every
    /// shape keeps NVRTC time flat).
    Int(i32),
}

/// One kernel launch. The grid covers `threads_per_sample · ⌈B / batch_group⌉` threads in blocks of `block`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelSpec {
    /// Kernel function; partitions of one shape share it.
    pub name: String,
    /// The plan layer this launch runs (for messages and profiles), e.g. `sums d3 p0`.
    pub layer: String,
    /// Blocks (or leaves) this launch covers.
    pub count: u32,
    pub threads_per_sample: u64,
    /// False for kernels that loop over the batch themselves (parameter flows): then the grid
    /// covers `threads_per_sample` threads whatever the batch size.
    #[serde(default = "yes")]
    pub scales_with_batch: bool,
    /// Samples each CUDA block of a batch-scaled launch takes: the grid covers
    /// `threads_per_sample · ⌈B / batch_group⌉` threads (the small-batch sum variants stage a
    /// group of samples' children together, so each weight is read once per group, not per
    /// sample). 1 (one sample per thread) unless written; 0 reads as 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub batch_group: u32,
    pub block: u32,
    pub args: Vec<KernelArg>,
    /// A variant of this launch for batches of at most [`SMALL_BATCH`] samples, e.g. a sum layer
    /// that spreads each node's children over a warp instead of looping, possibly computing its
    /// child elements from the products' children itself; a variant with no threads skips the
    /// launch (a product layer fused into the sums that consume it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small: Option<Box<KernelSpec>>,
}

/// Largest batch that runs the [`KernelSpec::small`] variants.
pub const SMALL_BATCH: usize = 8;

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

impl KernelSpec {
    /// Threads to launch for a batch of `batch` samples.
    pub fn threads(&self, batch: usize) -> u64 {
        match self.scales_with_batch {
            true => self.threads_per_sample * batch.div_ceil(self.batch_group.max(1) as usize) as u64,
            false => self.threads_per_sample,
        }
    }
}

impl Manifest {
    /// Serialize deterministically (the same manifest always gives the same bytes).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("manifest serialization cannot fail")
    }

    /// Parse a manifest written by [`Manifest::to_json`] (e.g. embedded by the build-script API or
    /// the `circuit!` macro).
    pub fn from_json(text: &str) -> Result<Manifest, crate::RuntimeError> {
        serde_json::from_str(text).map_err(|e| crate::RuntimeError::MalformedManifest(e.to_string()))
    }

    /// Every kernel launch of every pass (small-batch variants included).
    pub fn launches(&self) -> impl Iterator<Item = &KernelSpec> {
        fn steps(v: &[Step]) -> impl Iterator<Item = &KernelSpec> {
            v.iter().filter_map(|s| match s {
                Step::Launch(k) => Some(k),
                Step::ZeroElementFlows => None,
            })
        }
        let q = &self.queries;
        let specs = self.forward.iter().chain(steps(&self.backward)).chain(&self.em).chain(&q.conditionals).chain(&q.mpe_forward);
        let specs = specs.chain(steps(&q.mpe_backward)).chain(steps(&q.sample_backward));
        specs.flat_map(|k| std::iter::once(k).chain(k.small.as_deref()))
    }

    /// Whether some launch binds `arg` (the engine allocates buffers no kernel reads as one word).
    pub fn takes(&self, arg: &KernelArg) -> bool {
        self.launches().any(|k| k.args.contains(arg))
    }
}

/// One step of a pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Launch(KernelSpec),
    /// Clear the element flows (the element buffer is reused by every depth).
    ZeroElementFlows,
}

/// Operand precision of the sum-layer forward kernels. `Fp32` is the scalar path everywhere;
/// `Tf32`/`Bf16` run sum partitions of block size >= 16 (a multiple of 16) on tensor cores with
/// operands rounded to that type and fp32 accumulation; other partitions stay scalar fp32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Tf32,
    Bf16,
}

impl Precision {
    /// The name used on the command line and in kernel names (`fp32`, `tf32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Precision, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision `{s}` (expected fp32, tf32 or bf16)")),
        }
    }
}

/// Kernels of one pass in launch order plus the tables they index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub forward: Vec<KernelSpec>,
    /// Flows top-down (after a forward pass): per depth the products are recomputed, element flows
    /// cleared, sum and product flows propagated; then leaf statistics.
    pub backward: Vec<Step>,
    /// EM update of every untied parameter from the accumulated flows (then the leaf constants).
    #[serde(default)]
    pub em: Vec<KernelSpec>,
    pub tables: Vec<Vec<u32>>,
    /// Precision the source was emitted with (manifests written before this field read `fp32`).
    /// Which partitions actually run on tensor cores shows in the kernel names (`sum_fwd_bf16_*`).
    #[serde(default)]
    pub precision: Precision,
    /// Conditionals, MPE and sampling; empty in manifests emitted before queries ran on the device.
    #[serde(default)]
    pub queries: QueryManifest,
    /// The small-batch forward pass as one persistent launch (see [`PersistentForward`]); absent
    /// when some sum layer does not fit it (or in manifests written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<PersistentForward>,
    /// Rows of the [`KernelArg::SumMax`] buffer (one per sum block on tensor cores).
    #[serde(default)]
    pub sum_max_rows: u32,
    /// Words of the [`KernelArg::PackedWeights`] buffer (0 without tensor-core sums).
    #[serde(default)]
    pub packed_words: u64,
    /// Words per sample of the [`KernelArg::XStage`] buffer (0 without two-kernel sums).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub x_words: u64,
    /// Largest forward batch that runs the small-batch variants ([`KernelSpec::small`]); larger
    /// ones run the batch kernels. [`SMALL_BATCH`] unless the emitter found the batch kernels
    /// faster (see `pc_codegen::emit`); manifests written before the field read [`SMALL_BATCH`].
    #[serde(default = "small_batch")]
    pub small_max_batch: u32,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn small_batch() -> u32 {
    SMALL_BATCH as u32
}

/// Words per task of [`PersistentForward::tasks`]: 0 shape (low 14 bits), flags (bits 14 and 15,
/// [`PUBLISH_BIT`] and the emitter's fast bit) and sum width (high 16), 1 first node, 2 first weight, 3 real children, 4 first child id (the children are a dense
/// `[product width][count]` table), 5 product width (padded with node 0, a dummy row that holds
/// 0), 6 dependencies, 7 nodes in the tile, 8 first dependency in `deps`, 15 bytes of weights to
/// copy to shared memory in bulk (0: read from global memory). The runtime's schedule moves the
/// first [`INLINE_DEPS`] dependencies into words 9..=14 (so a task's wait needs no extra load) and
/// word 8 then points at the rest.
pub const TASK_WORDS: usize = 16;

/// Task word 0's flag, set by the runtime's schedule, of a task that some other block waits for:
/// only those publish their flag. Bit 15 marks a fast task (see the emitter); the shape id takes
/// the bits below.
pub const PUBLISH_BIT: u32 = 0x4000;

/// Dependencies kept in the task words by the runtime's schedule.
pub const INLINE_DEPS: usize = 6;

/// The forward pass of batches of at most [`SMALL_BATCH`] samples in one launch: after the input
/// launches (`manifest.forward[..prologue]`), a persistent kernel whose resident CUDA blocks run
/// static lists of sum tasks (a tile of one sum block's nodes, its products fused in), each
/// waiting only for the tasks that wrote its child nodes. The runtime schedules the tasks onto
/// the device's SMs ([`crate::cuda::persistent::schedule`]). A batch-1 pass then costs the circuit's
/// dependency chain at a few hundred ns per step instead of a kernel launch per depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistentForward {
    /// Kernel function (`node, params, tasks, eoff, ech, deps, poff, plist, ctl, B`).
    pub kernel: String,
    /// Threads per CUDA block.
    pub threads: u32,
    /// Dynamic shared memory per CUDA block (bytes).
    pub shared_bytes: u32,
    /// Task descriptors a block keeps in shared memory (the first ones of its list).
    pub cached_tasks: u32,
    /// Largest batch that runs this pass (larger small batches keep the per-depth launches, which
    /// spread samples over more CUDA blocks).
    #[serde(default = "persistent_max_batch")]
    pub max_batch: u32,
    /// Leading launches of [`Manifest::forward`] to run first (the input layers).
    pub prologue: u32,
    /// `[num_tasks * TASK_WORDS]` in topological order (every dependency comes earlier).
    pub tasks: Vec<u32>,
    /// Child element `w` of a task is the product of the nodes `children[c + j * count + w]`,
    /// `j < pw` (`c`, `pw`, `count`: task words 4, 5 and 3).
    pub children: Vec<u32>,
    /// Producer tasks of each task's child nodes (the task's slice per [`TASK_WORDS`]).
    pub deps: Vec<u32>,
    /// Estimated run time of each task (ns at batch 1), for the scheduler.
    pub cost_ns: Vec<u32>,
}

fn persistent_max_batch() -> u32 {
    2
}

impl PersistentForward {
    pub fn num_tasks(&self) -> usize {
        self.tasks.len() / TASK_WORDS
    }

    /// Task `i`'s words.
    pub fn task(&self, i: usize) -> &[u32] {
        &self.tasks[i * TASK_WORDS..(i + 1) * TASK_WORDS]
    }

    /// Task `i`'s dependencies.
    pub fn task_deps(&self, i: usize) -> &[u32] {
        let t = self.task(i);
        &self.deps[t[8] as usize..(t[8] + t[6]) as usize]
    }
}

/// Query kernels. Each runs after a forward pass and uses the node/element flow buffers:
/// conditionals as linear flows, MPE and sampling as selection flags (non-zero = in the sample's
/// induced tree).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryManifest {
    /// After the flow steps of [`Manifest::backward`] (those without parameter flows or input
    /// statistics): per input layer, `Σ_{leaves n of v} F_n p_n(k)` into `Output[B][slots]`.
    #[serde(default)]
    pub conditionals: Vec<KernelSpec>,
    /// Max-product forward, one launch per launch of [`Manifest::forward`] (same order): missing
    /// leaves give their maximum log-density, sums `max_c (log θ_c + e_c)`.
    #[serde(default)]
    pub mpe_forward: Vec<KernelSpec>,
    /// Top-down selection after `mpe_forward` (root flag set by the engine): per depth the
    /// products are recomputed, element flags cleared, each selected sum flags its first argmax
    /// child, products pass flags to their children; then selected leaves write `Output[B][num_vars]`.
    #[serde(default)]
    pub mpe_backward: Vec<Step>,
    /// The same walk after a log-sum forward pass, drawing children ∝ θ_c exp(e_c) and leaf values
    /// with Philox-4x32-10 keyed by the seed, counter (sample, node, 0, 0).
    #[serde(default)]
    pub sample_backward: Vec<Step>,
}

/// Layout of the conditional accumulators of one sample: variable `v` owns `[offsets[v], +n)`,
/// `n` = its number of categories (discrete) or 2 (continuous: `Σ F μ` and `Σ F (σ² + μ²)`).
/// Returns `(offsets, slots per sample)`. The emitter and the engine both use this.
pub fn conditional_slots(plan: &Plan) -> (Vec<u32>, u32) {
    let mut offsets = Vec::with_capacity(plan.domains.len());
    let mut total = 0u32;
    for d in &plan.domains {
        offsets.push(total);
        total += match d {
            Domain::Discrete { num_cats } => *num_cats,
            Domain::Continuous => 2,
        };
    }
    (offsets, total)
}

/// Sample `s`'s conditionals from its accumulator row (the [`conditional_slots`] layout),
/// normalized as the CPU engine does; observed variables give [`Conditional::Observed`].
pub fn conditionals_from_slots(plan: &Plan, ev: &Evidence, s: usize, row: &[f32], offsets: &[u32]) -> Vec<Conditional> {
    plan.domains
        .iter()
        .enumerate()
        .map(|(v, d)| {
            if !ev.is_missing(s, v) {
                return Conditional::Observed;
            }
            let o = offsets[v] as usize;
            match d {
                Domain::Discrete { num_cats } => {
                    let mut p = row[o..o + *num_cats as usize].to_vec();
                    // Flows sum to one up to rounding; renormalize to remove it.
                    let t: f32 = p.iter().sum();
                    if t > 0.0 {
                        p.iter_mut().for_each(|q| *q /= t);
                    }
                    Conditional::Discrete(p)
                }
                Domain::Continuous => {
                    let mean = row[o];
                    Conditional::Continuous { mean, var: (row[o + 1] - mean * mean).max(0.0) }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(batch_group: u32, scales_with_batch: bool) -> KernelSpec {
        let name = "k".to_string();
        KernelSpec { name, layer: "l".into(), count: 1, threads_per_sample: 256, scales_with_batch, batch_group, block: 256, args: vec![], small: None }
    }

    #[test]
    fn grouped_launches_cover_every_group_of_samples_once() {
        // A group of 8: batches 1..=8 take one group, 9 two.
        for (batch, groups) in [(1, 1), (3, 1), (8, 1), (9, 2), (16, 2)] {
            assert_eq!(spec(8, true).threads(batch), 256 * groups, "batch {batch}");
        }
        assert_eq!(spec(1, true).threads(5), 256 * 5);
        // 0 (a hand-edited manifest) reads as 1, never a division by zero.
        assert_eq!(spec(0, true).threads(3), 256 * 3);
        assert_eq!(spec(8, false).threads(100), 256);
    }

    #[test]
    fn batch_group_is_written_only_when_not_one() {
        let json = serde_json::to_string(&spec(1, true)).unwrap();
        assert!(!json.contains("batch_group"), "{json}");
        let back: KernelSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back.batch_group, 1, "manifests written before the field read 1");
        let json = serde_json::to_string(&spec(4, true)).unwrap();
        assert_eq!(serde_json::from_str::<KernelSpec>(&json).unwrap().batch_group, 4);
    }
}

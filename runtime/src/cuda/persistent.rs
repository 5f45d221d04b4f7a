//! Static schedule of the persistent forward pass ([`PersistentForward`]) onto the device's
//! resident CUDA blocks, computed once when an engine starts (it depends on the SM count).
//!
//! List scheduling in the tasks' topological order: each task goes to the block where it could
//! start earliest, counting a cross-block dependency as a flag round trip through L2 and a
//! same-block one as free. So a chain of dependent tasks (the deep spine of an HCLT) stays on one
//! block, with only barriers between its steps, while a wide depth spreads over all SMs.
//! Dependencies satisfied inside a block are dropped from the uploaded lists: the block's own
//! `__syncthreads` already orders them. Every block runs its list in increasing task order, which
//! with co-resident blocks makes the pass deadlock-free.

use crate::manifest::{INLINE_DEPS, PUBLISH_BIT, PersistentForward, TASK_WORDS};

/// Estimated cost of waiting on another block's flag (ns): release, L2 round trip, acquire.
const CROSS_BLOCK_NS: f64 = 1000.0;

/// What the kernel reads: per-block task lists and the tasks with their cross-block dependencies.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Block `g` runs `plist[poff[g] .. poff[g + 1]]`.
    pub poff: Vec<u32>,
    pub plist: Vec<u32>,
    /// The manifest's tasks with their dependencies on other blocks only: the first
    /// [`INLINE_DEPS`] in the task words, the rest in `deps`.
    pub tasks: Vec<u32>,
    pub deps: Vec<u32>,
    /// The block of every task.
    pub owner: Vec<u32>,
    /// The model's finish time of the last task (ns), for logs.
    pub makespan_ns: f64,
}

/// Schedule `p`'s tasks onto `blocks` resident CUDA blocks (at least one).
pub fn schedule(p: &PersistentForward, blocks: usize) -> Schedule {
    let blocks = blocks.max(1);
    let n = p.num_tasks();
    let mut free = vec![0f64; blocks];
    let mut finish = vec![0f64; n];
    let mut owner = vec![0u32; n];
    let mut cands: Vec<usize> = Vec::new();
    for i in 0..n {
        let deps = p.task_deps(i);
        cands.clear();
        cands.extend(deps.iter().map(|&d| owner[d as usize] as usize));
        // The block that frees up first (lowest index on ties).
        let idle = (0..blocks).min_by(|&a, &b| free[a].total_cmp(&free[b])).unwrap_or(0);
        cands.push(idle);
        let start_on = |g: usize| -> f64 {
            let ready = deps.iter().map(|&d| finish[d as usize] + if owner[d as usize] as usize == g { 0.0 } else { CROSS_BLOCK_NS }).fold(0.0, f64::max);
            ready.max(free[g])
        };
        let (mut best, mut best_t) = (cands[0], f64::INFINITY);
        for &g in &cands {
            let t = start_on(g);
            if t < best_t || (t == best_t && g < best) {
                (best, best_t) = (g, t);
            }
        }
        owner[i] = best as u32;
        finish[i] = best_t + f64::from(p.cost_ns[i]);
        free[best] = finish[i];
    }
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); blocks];
    for (i, &g) in owner.iter().enumerate() {
        lists[g as usize].push(i as u32);
    }
    let mut poff = Vec::with_capacity(blocks + 1);
    let mut plist = Vec::with_capacity(n);
    poff.push(0);
    for l in &lists {
        plist.extend_from_slice(l);
        poff.push(plist.len() as u32);
    }
    let mut tasks = p.tasks.clone();
    let mut deps = Vec::new();
    for i in 0..n {
        let cross: Vec<u32> = p.task_deps(i).iter().copied().filter(|&d| owner[d as usize] != owner[i]).collect();
        // Only a task that another block waits for publishes a flag (a gpu-scope fence each).
        for &d in &cross {
            tasks[d as usize * TASK_WORDS] |= PUBLISH_BIT;
        }
        let t = &mut tasks[i * TASK_WORDS..(i + 1) * TASK_WORDS];
        let inline = cross.len().min(INLINE_DEPS);
        t[6] = cross.len() as u32;
        t[8] = deps.len() as u32;
        t[9..9 + inline].copy_from_slice(&cross[..inline]);
        t[9 + inline..9 + INLINE_DEPS].fill(0);
        deps.extend_from_slice(&cross[inline..]);
    }
    Schedule { poff, plist, tasks, deps, owner, makespan_ns: finish.iter().copied().fold(0.0, f64::max) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(first_dep: usize, deps: usize) -> [u32; TASK_WORDS] {
        let mut w = [0u32; TASK_WORDS];
        (w[6], w[7], w[8]) = (deps as u32, 1, first_dep as u32);
        w
    }

    /// A chain 0 → 1 → 2 and two independent tasks 3, 4.
    fn sample() -> PersistentForward {
        let mut tasks = Vec::new();
        let deps_of: [&[u32]; 5] = [&[], &[0], &[1], &[], &[]];
        let mut deps = Vec::new();
        for d in deps_of {
            tasks.extend(words(deps.len(), d.len()));
            deps.extend_from_slice(d);
        }
        PersistentForward {
            kernel: "k".into(),
            threads: 256,
            shared_bytes: 0,
            cached_tasks: 0,
            max_batch: 2,
            prologue: 0,
            tasks,
            children: vec![],
            deps,
            cost_ns: vec![1000; 5],
        }
    }

    #[test]
    fn chains_stay_on_one_block_and_local_dependencies_are_dropped() {
        let s = schedule(&sample(), 3);
        assert_eq!(s.owner[0], s.owner[1]);
        assert_eq!(s.owner[1], s.owner[2]);
        assert!(s.deps.is_empty() && s.tasks.chunks(TASK_WORDS).all(|t| t[6] == 0), "{:?}", s.tasks);
        // The independent tasks run on the other blocks.
        assert_ne!(s.owner[3], s.owner[0]);
        assert_ne!(s.owner[4], s.owner[0]);
        assert_eq!(s.makespan_ns, 3000.0);
    }

    #[test]
    fn lists_are_in_topological_order_and_cover_every_task_once() {
        for blocks in [1, 2, 7] {
            let s = schedule(&sample(), blocks);
            assert_eq!(s.poff.len(), blocks + 1);
            let mut seen = s.plist.clone();
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2, 3, 4]);
            for g in 0..blocks {
                let l = &s.plist[s.poff[g] as usize..s.poff[g + 1] as usize];
                assert!(l.windows(2).all(|w| w[0] < w[1]), "block {g}: {l:?}");
            }
        }
    }

    #[test]
    fn dependencies_beyond_the_inline_ones_go_to_the_list() {
        // Ten independent producers on ten blocks, one consumer of all.
        let mut tasks = Vec::new();
        for _ in 0..10 {
            tasks.extend(words(0, 0));
        }
        tasks.extend(words(0, 10));
        let p = PersistentForward { tasks, deps: (0..10).collect(), cost_ns: vec![1000; 11], ..sample() };
        let s = schedule(&p, 10);
        let t = &s.tasks[10 * TASK_WORDS..];
        assert_eq!(t[6], 9, "one producer shares the consumer's block");
        assert_eq!(t[15], 0, "the bulk-copy word is kept");
        let mut all: Vec<u32> = t[9..9 + INLINE_DEPS].iter().copied().chain(s.deps[t[8] as usize..].iter().copied()).collect();
        all.sort();
        let local = s.owner.iter().position(|&o| o == s.owner[10]).unwrap() as u32;
        assert_eq!(all, (0..10).filter(|&d| d != local).collect::<Vec<u32>>());
    }

    #[test]
    fn cross_block_dependencies_are_kept() {
        // One block is busy with a long task; a dependent of two producers on different blocks
        // keeps the dependency on the one it does not run with.
        let mut p = sample();
        // Task 2 now depends on 1 and 3.
        p.tasks = Vec::new();
        let deps_of: [&[u32]; 5] = [&[], &[0], &[], &[], &[1, 2]];
        p.deps.clear();
        for d in deps_of {
            p.tasks.extend(words(p.deps.len(), d.len()));
            p.deps.extend_from_slice(d);
        }
        let s = schedule(&p, 2);
        let t4 = &s.tasks[4 * TASK_WORDS..5 * TASK_WORDS];
        assert_eq!(t4[6], 1);
        assert_ne!(s.owner[t4[9] as usize], s.owner[4]);
        // Exactly the tasks another block waits for publish a flag.
        let waited: Vec<u32> = (0..5).flat_map(|i| s.tasks[i * TASK_WORDS + 9..i * TASK_WORDS + 9 + s.tasks[i * TASK_WORDS + 6] as usize].to_vec()).collect();
        for i in 0..5u32 {
            let bit = s.tasks[i as usize * TASK_WORDS] & PUBLISH_BIT != 0;
            assert_eq!(bit, waited.contains(&i), "task {i}: publish bit {bit}, waited for: {waited:?}");
        }
        assert!(waited.len() == 1);
    }
}

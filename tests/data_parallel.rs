//! Data-parallel arithmetic and the rank protocol, without GPUs: the CPU engine's flows of the
//! shards of a batch sum to the batch's flows; EM after the reduction equals single-process EM
//! and leaves every rank with the same parameters; the hub's collectives are exact and ordered;
//! a failed, exited or stalled rank stops every rank with an error naming it.

use std::time::Duration;

use pcc_testkit as common;

use common::{Gen, random_evidence};
use pcc::codegen::Model;
use pcc::runtime::Engine;
use pcc::runtime::parallel::{Hub, ParallelError, Rank, local_hubs, shard};

fn model(seed: u64) -> Model {
    Model::random(Gen::circuit(seed), 500 + seed).expect("compiles")
}

/// Run `f(rank, hub)` on `size` threads joined by loopback hubs; results in rank order.
fn world<T: Send>(size: usize, timeout: Duration, f: impl Fn(usize, Hub) -> T + Sync) -> Vec<T> {
    let hubs = local_hubs(size, timeout).expect("hubs");
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = hubs.into_iter().enumerate().map(|(r, h)| s.spawn(move || f(r, h))).collect();
        handles.into_iter().map(|h| h.join().expect("rank thread")).collect()
    })
}

/// Per-sample flows are f32 and summed per chunk, so shards group the additions differently.
fn rel_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 2e-6 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn shard_flows_sum_to_the_batch_flows() {
    for seed in 0..12 {
        let m = model(seed);
        let ev = random_evidence(&m, 37, 0.2, 40 + seed);
        let mut whole = m.cpu_engine().unwrap();
        whole.accumulate_flows(&ev, None).unwrap();
        let mut summed = pcc::runtime::Flows::zeros(&m.plan);
        for r in 0..3 {
            let rows: Vec<usize> = shard(0..37, r, 3).collect();
            let mut e = m.cpu_engine().unwrap();
            e.accumulate_flows(&ev.select(&rows), None).unwrap();
            let f = e.flows();
            summed.sum.iter_mut().zip(&f.sum).for_each(|(a, b)| *a += b);
            summed.input.iter_mut().zip(&f.input).for_each(|(a, b)| *a += b);
            summed.total += f.total;
        }
        let w = whole.flows();
        assert_eq!(summed.total, w.total, "circuit {seed}");
        for (i, (a, b)) in w.sum.iter().chain(&w.input).zip(summed.sum.iter().chain(&summed.input)).enumerate() {
            assert!(rel_close(*a, *b), "circuit {seed}, flow {i}: batch {a}, shards summed {b}");
        }
    }
}

/// Mini-batch EM over `batches` of `ev` (step 0.5), on `size` ranks or, for `size` 0, one process.
fn train(m: &Model, ev: &pcc::runtime::Evidence, batches: &[std::ops::Range<usize>], size: usize, tau: f32) -> Vec<pcc::runtime::Params> {
    if size == 0 {
        let mut e = Engine::Cpu(Box::new(m.cpu_engine().unwrap()));
        for b in batches {
            e.accumulate_flows(&ev.select(&b.clone().collect::<Vec<_>>())).unwrap();
            e.em_step_entropy(0.5, 0.1, tau).unwrap();
        }
        return vec![e.params().unwrap()];
    }
    world(size, Duration::from_secs(30), |_, hub| {
        let mut e = Engine::Cpu(Box::new(m.cpu_engine().unwrap()));
        let mut rank = Rank::new(hub, &e, false, 1).unwrap();
        for b in batches {
            let rows: Vec<usize> = rank.shard(b.clone()).collect();
            e.accumulate_flows(&ev.select(&rows)).unwrap();
            rank.em_step(&mut e, 0.5, 0.1, tau).unwrap();
        }
        e.params().unwrap()
    })
}

#[test]
fn em_after_the_reduction_equals_single_process_em() {
    for seed in 0..6 {
        let m = model(seed);
        let ev = random_evidence(&m, 50, 0.1, 90 + seed);
        let batches = [0..20, 20..40, 40..50];
        for tau in [0.0, 0.01] {
            let single = &train(&m, &ev, &batches, 0, tau)[0];
            let ranks = train(&m, &ev, &batches, 3, tau);
            for (r, p) in ranks.iter().enumerate() {
                // Every rank applied the same step to the same flows: bit-identical parameters.
                assert_eq!(p.sum, ranks[0].sum, "circuit {seed}: rank {r}");
                assert_eq!(p.input, ranks[0].input, "circuit {seed}: rank {r}");
            }
            for (i, (a, b)) in single.sum.iter().chain(&single.input).zip(ranks[0].sum.iter().chain(&ranks[0].input)).enumerate() {
                assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "circuit {seed}, τ {tau}, parameter {i}: one process {a}, three ranks {b}");
            }
        }
    }
}

#[test]
fn hub_collectives_are_exact_and_in_rank_order() {
    let out = world(4, Duration::from_secs(30), |r, mut hub| {
        let mut xs = vec![r as f64 + 0.1, 1e16, -(r as f64)];
        hub.all_reduce_f64(&mut xs).unwrap();
        let gathered = hub.gather_f32(&vec![r as f32; r + 1]).unwrap();
        let b = hub.broadcast(if r == 0 { b"id".to_vec() } else { b"ignored".to_vec() }).unwrap();
        let all = hub.all_gather_u64(10 * r as u64).unwrap();
        hub.barrier().unwrap();
        (xs, gathered, b, all)
    });
    let want = ((0.1f64 + 1.1) + 2.1) + 3.1;
    for (r, (xs, gathered, b, all)) in out.iter().enumerate() {
        assert_eq!(xs[0].to_bits(), want.to_bits(), "rank {r}: sums in rank order, the same bits everywhere");
        assert_eq!((xs[1], xs[2]), (4e16, -6.0));
        assert_eq!(gathered.is_some(), r == 0);
        assert_eq!(b, b"id");
        assert_eq!(all, &vec![0, 10, 20, 30]);
    }
    assert_eq!(out[0].1.as_ref().unwrap(), &vec![0., 1., 1., 2., 2., 2., 3., 3., 3., 3.]);
}

fn failed_rank(e: &ParallelError) -> Option<usize> {
    match e {
        ParallelError::RankFailed { rank, .. } | ParallelError::Timeout { rank, .. } => Some(*rank),
        _ => None,
    }
}

#[test]
fn a_failed_rank_stops_every_rank_with_its_name() {
    let out = world(3, Duration::from_secs(30), |r, mut hub| {
        let mut xs = [1.0];
        hub.all_reduce_f64(&mut xs).unwrap();
        if r == 2 {
            hub.fail("out of device memory on GPU 2");
            return None;
        }
        Some(hub.all_reduce_f64(&mut xs).unwrap_err())
    });
    for (r, e) in out.iter().enumerate().take(2) {
        let e = e.as_ref().unwrap();
        assert_eq!(failed_rank(e), Some(2), "rank {r}: {e}");
        assert!(e.to_string().contains("out of device memory on GPU 2"), "rank {r}: {e}");
    }
}

#[test]
fn an_exited_rank_or_rank_zero_is_named() {
    let out = world(3, Duration::from_secs(30), |r, mut hub| {
        if r == 1 {
            drop(hub); // the process "exits": its connection closes
            return None;
        }
        Some(hub.barrier().unwrap_err())
    });
    for r in [0, 2] {
        let e = out[r].as_ref().unwrap();
        assert_eq!(failed_rank(e), Some(1), "rank {r}: {e}");
        assert!(e.to_string().contains("exited"), "rank {r}: {e}");
    }
    let out = world(2, Duration::from_secs(30), |r, mut hub| {
        if r == 0 {
            hub.fail("cannot write the model");
            return None;
        }
        Some(hub.barrier().unwrap_err())
    });
    let e = out[1].as_ref().unwrap();
    assert_eq!(failed_rank(e), Some(0), "{e}");
    assert!(e.to_string().contains("cannot write the model"), "{e}");
}

#[test]
fn a_stalled_rank_times_out_instead_of_hanging() {
    let t0 = std::time::Instant::now();
    let out = world(3, Duration::from_millis(600), |r, mut hub| {
        if r == 1 {
            std::thread::sleep(Duration::from_millis(2000));
        }
        hub.barrier().err()
    });
    let e = out[0].as_ref().expect("rank 0 gave up on rank 1");
    assert!(matches!(e, ParallelError::Timeout { rank: 1, .. }), "{e}");
    assert!(e.to_string().contains("PCC_DIST_TIMEOUT"), "{e}");
    // Rank 2 was told (or timed out itself); rank 1 finds the world gone when it arrives.
    assert!(out[2].is_some() && out[1].is_some());
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn ranks_with_different_parameters_are_refused() {
    let out = world(2, Duration::from_secs(30), |r, hub| {
        // The same structure; rank 1 loaded other parameters (another model directory).
        let m = Model::random(Gen::circuit(1), if r == 0 { 501 } else { 999 }).unwrap();
        let e = Engine::Cpu(Box::new(m.cpu_engine().unwrap()));
        Rank::new(hub, &e, false, 0).err()
    });
    for e in &out {
        let e = e.as_ref().expect("refused").to_string();
        assert!(e.contains("rank 1's parameters differ from rank 0's"), "{e}");
    }
}

#[test]
fn a_stray_connection_does_not_break_the_rendezvous() {
    use std::io::Write;
    let listener = pcc::runtime::parallel::Listener::bind("127.0.0.1:0").unwrap();
    let addr = listener.addr().to_string();
    std::thread::scope(|s| {
        let root = s.spawn(|| listener.accept(2, Duration::from_secs(20)));
        // A port probe: connects, writes garbage, hangs up.
        let mut probe = std::net::TcpStream::connect(&addr).unwrap();
        probe.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        drop(probe);
        let mut leaf = Hub::join(&addr, 1, 2, Duration::from_secs(20)).unwrap();
        let mut root = root.join().unwrap().unwrap();
        let l = s.spawn(move || leaf.all_gather_u64(7).unwrap());
        assert_eq!(root.all_gather_u64(3).unwrap(), vec![3, 7]);
        assert_eq!(l.join().unwrap(), vec![3, 7]);
    });
}

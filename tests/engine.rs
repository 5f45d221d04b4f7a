//! Engine behaviour that brute force does not cover: any batch size, chunk and group boundaries,
//! and bit-identical results whatever the thread count.

use pcc_testkit as common;

use common::{Gen, random_evidence};
use pcc::codegen::Model;

#[test]
fn any_batch_size_gives_the_same_answers() {
    for seed in [3u64, 17, 29] {
        let m = Model::random(Gen::circuit(seed), seed).unwrap();
        let ev = random_evidence(&m, 700, 0.2, seed);
        let e = m.cpu_engine().unwrap();
        let all = e.log_likelihood(&ev).unwrap();
        assert_eq!(all.len(), 700);
        for &(a, b) in &[(0usize, 1usize), (1, 8), (8, 137), (137, 600), (600, 700)] {
            let part = e.log_likelihood(&ev.slice(a, b)).unwrap();
            assert_eq!(&all[a..b], &part[..], "circuit {seed}: rows {a}..{b}");
        }
        // Flows of the whole batch equal the flows of its pieces (up to f64 summation order).
        let mut whole = m.cpu_engine().unwrap();
        whole.accumulate_flows(&ev, None).unwrap();
        let mut pieces = m.cpu_engine().unwrap();
        for (a, b) in [(0, 1), (1, 100), (100, 700)] {
            pieces.accumulate_flows(&ev.slice(a, b), None).unwrap();
        }
        for (x, y) in whole.flows().sum.iter().zip(&pieces.flows().sum) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + x.abs()), "circuit {seed}: {x} vs {y}"); // f32 sums inside a chunk
        }
        assert_eq!(whole.flows().total, 700.0);
        // An empty batch is fine too.
        assert!(e.log_likelihood(&ev.slice(0, 0)).unwrap().is_empty());
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let m = Model::random(Gen::circuit(5), 5).unwrap();
    let ev = random_evidence(&m, 1000, 0.2, 5);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut e = m.cpu_engine().unwrap();
            let lls = e.accumulate_flows(&ev, None).unwrap();
            let flows = e.flows().clone();
            let samples = e.sample(300, 9).unwrap();
            (lls, flows, samples)
        })
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
}

/// `pc_runtime::Engine::start`: `cpu` never builds the GPU engine, `auto` falls back with the
/// reason, `cuda` fails naming it.
#[test]
fn device_policy_of_the_runtime_engine() {
    use pcc::runtime::{Device, Engine};
    let m = Model::random(Gen::circuit(3), 3).unwrap();
    let cpu = || pcc::runtime::CpuEngine::new(m.plan.clone(), m.params.clone());
    let no_gpu = || Err::<pcc::runtime::cuda::GpuEngine, _>("no driver here");
    let never = || -> Result<pcc::runtime::cuda::GpuEngine, &str> { panic!("--device cpu never starts the GPU engine") };
    let s = Engine::start(Device::Cpu, cpu, never).unwrap();
    assert!(matches!(s.engine, Engine::Cpu(_)) && s.fallback.is_none());
    let mut s = Engine::start(Device::Auto, cpu, no_gpu).unwrap();
    assert_eq!(s.fallback.as_deref(), Some("no driver here"));
    assert_eq!(s.engine.device_name(), "cpu");
    let ev = random_evidence(&m, 5, 0.2, 3);
    assert_eq!(s.engine.log_likelihood(&ev).unwrap(), m.cpu_engine().unwrap().log_likelihood(&ev).unwrap());
    let e = Engine::start(Device::Cuda, cpu, no_gpu).err().expect("cuda without a GPU is an error");
    assert_eq!(e.to_string(), "--device cuda: the GPU engine cannot start: no driver here");
}

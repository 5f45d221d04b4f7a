//! Data-parallel runs of the `pcc` command line without GPUs: two CPU ranks started with the
//! torchrun variables train, evaluate and answer queries like one process; a rank that fails
//! (bad data, never started) stops the other with an error naming it; `--gpus` misuse and a
//! missing NCCL library are explained.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn pcc(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pcc"));
    c.args(args).env_remove("WORLD_SIZE").env_remove("RANK").env_remove("SLURM_NTASKS").env("PCC_DIST_TIMEOUT", "60");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn ok(args: &[&str]) -> String {
    let out = pcc(args, &[]).output().unwrap();
    assert!(out.status.success(), "pcc {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A port nobody listens on now (the OS's pick for a socket closed at once).
fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

/// Start rank `rank` of `size` of `pcc args` (the others at `port`).
fn rank(args: &[&str], rank: usize, size: usize, port: &str, extra: &[(&str, String)]) -> Child {
    let mut env =
        vec![("MASTER_ADDR", "127.0.0.1".to_string()), ("MASTER_PORT", port.to_string()), ("WORLD_SIZE", size.to_string()), ("RANK", rank.to_string())];
    env.extend(extra.iter().cloned());
    pcc(args, &env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Run `pcc args` as `size` ranks; their outputs in rank order.
fn ranks(args: &[&str], size: usize) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..size).map(|r| rank(args, r, size, &port, &[])).collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Correlated binary data: 8 variables, each a noisy copy of the previous one.
fn write_data(path: &Path, n: usize, seed: u64) {
    pcc_testkit::write_binary_chain_csv(path, n, 8, seed);
}

/// A temporary directory with `train.csv` (`rows` rows of [`write_data`]) and `m`, a 2-latent
/// HCLT learned from it, and a function naming a file in it.
fn learned(rows: usize, seed: u64) -> (tempfile::TempDir, impl Fn(&str) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let p = move |name: &str| root.join(name).to_str().unwrap().to_string();
    write_data(Path::new(&p("train.csv")), rows, seed);
    ok(&["learn", "hclt", "--data", &p("train.csv"), "--latents", "2", "-o", &p("m")]);
    (dir, p)
}

fn avg_ll(json: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    v["avg_ll"].as_f64().unwrap()
}

#[test]
fn two_cpu_ranks_train_evaluate_and_query_like_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_data(Path::new(&p("train.csv")), 700, 1);
    write_data(Path::new(&p("valid.csv")), 150, 2);
    ok(&["learn", "hclt", "--data", &p("train.csv"), "--latents", "4", "-o", &p("one")]);
    let copy = |to: &str| {
        std::fs::create_dir_all(p(to)).unwrap();
        for f in ["structure.json", "params.safetensors"] {
            std::fs::copy(dir.path().join("one").join(f), dir.path().join(to).join(f)).unwrap();
        }
    };
    copy("two");
    let train = |m: &str| {
        vec![
            "train".to_string(),
            p(m),
            "--data".into(),
            p("train.csv"),
            "--valid".into(),
            p("valid.csv"),
            "--epochs".into(),
            "3".into(),
            "--em".into(),
            "mini".into(),
        ]
        .into_iter()
        .chain(["--batch-size", "128", "--step-size", "0.5", "--device", "cpu", "--quiet", "--check-every", "1"].map(String::from))
        .collect::<Vec<_>>()
    };
    let one = train("one");
    let one_log = ok(&one.iter().map(String::as_str).collect::<Vec<_>>());
    let two = train("two");
    let outs = ranks(&two.iter().map(String::as_str).collect::<Vec<_>>(), 2);
    for (r, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "rank {r}:\n{}", stderr(o));
    }
    // Rank 0 prints the epochs; rank 1 is silent.
    let two_log = String::from_utf8_lossy(&outs[0].stdout).into_owned();
    assert_eq!(one_log.lines().count(), two_log.lines().count(), "one process:\n{one_log}\ntwo ranks:\n{two_log}");
    assert!(outs[1].stdout.is_empty(), "rank 1 printed: {}", String::from_utf8_lossy(&outs[1].stdout));
    let eval = |m: &str| avg_ll(&ok(&["eval", &p(m), "--data", &p("valid.csv"), "--device", "cpu", "--json"]));
    let (a, b) = (eval("one"), eval("two"));
    assert!((a - b).abs() < 1e-5 * a.abs(), "valid LL: one process {a}, two ranks {b}");
    // Sharded evaluation and queries print what one process prints.
    let e = ranks(&["eval", &p("two"), "--data", &p("valid.csv"), "--device", "cpu", "--json"], 2);
    assert_eq!(avg_ll(&String::from_utf8_lossy(&e[0].stdout)), b);
    assert!(e[1].stdout.is_empty());
    std::fs::write(p("ev.csv"), "1,?,0,1,?,?,1,0\n?,?,?,?,?,?,?,?\n0,0,0,0,0,0,0,0\n").unwrap();
    let q = ["query", "marginal", &p("two"), "--evidence", &p("ev.csv"), "--device", "cpu"];
    let alone = ok(&q);
    let sharded = ranks(&q, 2);
    assert_eq!(String::from_utf8_lossy(&sharded[0].stdout), alone);
    assert_eq!(alone.lines().count(), 3);
}

#[test]
fn a_rank_that_fails_stops_the_others_naming_it() {
    let (_dir, p) = learned(200, 3);
    std::fs::write(p("bad.csv"), "0,1,0,1,0,1,0,1\n0,1,2\n").unwrap();
    let port = free_port();
    let args = |data: &str| ["train", &p("m"), "--data", data, "--epochs", "2", "--device", "cpu", "--quiet"].map(String::from);
    let (a0, a1) = (args(&p("train.csv")), args(&p("bad.csv")));
    let t0 = std::time::Instant::now();
    let r0 = rank(&a0.iter().map(String::as_str).collect::<Vec<_>>(), 0, 2, &port, &[]);
    let r1 = rank(&a1.iter().map(String::as_str).collect::<Vec<_>>(), 1, 2, &port, &[]);
    let (o0, o1) = (r0.wait_with_output().unwrap(), r1.wait_with_output().unwrap());
    assert!(!o0.status.success() && !o1.status.success());
    assert!(stderr(&o1).contains("rank 1 of 2") && stderr(&o1).contains("3 fields"), "{}", stderr(&o1));
    assert!(stderr(&o0).contains("rank 1 failed") && stderr(&o0).contains("3 fields"), "{}", stderr(&o0));
    assert!(t0.elapsed().as_secs() < 30, "took {:?}", t0.elapsed());

    // A rank that never starts: rank 0 gives up after PCC_DIST_TIMEOUT.
    let port = free_port();
    let o = rank(&a0.iter().map(String::as_str).collect::<Vec<_>>(), 0, 2, &port, &[("PCC_DIST_TIMEOUT", "1".into())]).wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("rank 1 did not join within 1 s"), "{}", stderr(&o));
}

#[test]
fn launcher_variables_and_gpus_misuse_are_explained() {
    let (_dir, p) = learned(50, 4);
    let fails = |args: &[&str], env: &[(&str, String)]| {
        let o = pcc(args, env).output().unwrap();
        assert!(!o.status.success(), "pcc {args:?} should fail");
        stderr(&o)
    };
    let train = ["train", &p("m"), "--data", &p("train.csv"), "--epochs", "1", "--quiet"];
    let e = fails(&train, &[("WORLD_SIZE", "2".into()), ("RANK", "2".into()), ("MASTER_ADDR", "127.0.0.1".into())]);
    assert!(e.contains("RANK") && e.contains("below WORLD_SIZE=2"), "{e}");
    let e = fails(&train, &[("WORLD_SIZE", "2".into()), ("RANK", "1".into())]);
    assert!(e.contains("MASTER_ADDR"), "{e}");
    let with = |extra: &[&'static str]| train.iter().copied().chain(extra.iter().copied()).collect::<Vec<_>>();
    assert!(fails(&with(&["--gpus", "0,1,0"]), &[]).contains("lists GPU 0 twice"));
    assert!(fails(&with(&["--gpus", "0", "--device", "cpu"]), &[]).contains("drop --device cpu"));
    let e = fails(&with(&["--gpus", "0"]), &[("WORLD_SIZE", "2".into()), ("RANK", "0".into()), ("MASTER_ADDR", "127.0.0.1".into())]);
    assert!(e.contains("one process per GPU"), "{e}");
    // Without NCCL (none on this machine unless a test environment installed one), --gpus says
    // where to get it; with one, it is the GPU that is missing here.
    let e = fails(&with(&["--gpus", "0"]), &[("PCC_NCCL_LIB", "/nonexistent/libnccl.so.2".into())]);
    assert!(e.contains("pip install nvidia-nccl-cu13") || e.contains("rank 0 (GPU 0)"), "{e}");
}

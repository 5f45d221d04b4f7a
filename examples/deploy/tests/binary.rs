//! The deployment binary against the library code behind `pcc eval` / `pcc query marginal`
//! (`pc_codegen::Model::load(dir)` → `cpu_engine()` → `log_likelihood`), on the committed model
//! with random parameters: same per-sample numbers, printed the same way; plus IDX and stdin input,
//! the latency benchmark's output, and clear errors with a non-zero exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pc_codegen::Model;
use pc_codegen::model::load_structure;
use pc_runtime::{Evidence, dataset};

const BIN: &str = env!("CARGO_BIN_EXE_pcc-deploy-example");

/// A model directory (structure + random parameters) of the committed circuit.
fn model(dir: &Path, seed: u64) -> PathBuf {
    let structure = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mixture/structure.json");
    let m = Model::random(load_structure(&structure).unwrap(), seed).unwrap();
    let out = dir.join("model");
    m.save(&out).unwrap();
    out
}

/// What `pcc eval` / `pcc query marginal` compute on this model and data (the CPU engine).
fn reference(model_dir: &Path, ev: &Evidence) -> Vec<f32> {
    Model::load(model_dir).unwrap().cpu_engine().unwrap().log_likelihood(ev).unwrap()
}

/// Every sample of the mixture (3 x 2 x 3) plus rows with missing values, as CSV.
fn csv_rows() -> String {
    let mut s = String::new();
    for a in 0..3 {
        for b in 0..2 {
            for c in 0..3 {
                s += &format!("{a},{b},{c}\n");
            }
        }
    }
    s + "?,1,2\n2,,0\n?,?,1\n?,?,?\n1, 0 ,?\n"
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the deployment binary");
    // Fed from a thread (no deadlock on a full stdout pipe); the binary may exit without reading
    // it all (e.g. a bad parameter file), so a broken pipe is not a failure here.
    let feeder = stdin.map(|bytes| {
        let (mut pipe, bytes) = (child.stdin.take().unwrap(), bytes.to_vec());
        std::thread::spawn(move || match pipe.write_all(&bytes) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("cannot write the binary's stdin: {e}"),
            _ => {}
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    out
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}, stderr:\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The lines `pcc query marginal [--json]` prints for these log-likelihoods.
fn pcc_query_marginal(lls: &[f32], json: bool) -> Vec<String> {
    lls.iter()
        .enumerate()
        .map(|(s, ll)| if json { serde_json::json!({ "sample": s, "log_marginal": ll }).to_string() } else { format!("sample {s}: log p(evidence) = {ll:.6}") })
        .collect()
}

#[test]
fn csv_answers_equal_pcc_query_and_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 7);
    let csv = tmp.path().join("data.csv");
    std::fs::write(&csv, csv_rows()).unwrap();
    let ev = dataset::read_csv_auto(&csv, "?").unwrap();
    assert!(ev.missing.is_some());
    let want = reference(&dir, &ev);
    let params = dir.join("params.safetensors");
    let (p, c) = (params.to_str().unwrap(), csv.to_str().unwrap());

    // `pcc query marginal`, text and JSON lines, across several batches.
    for json in [false, true] {
        let mut args = vec!["--params", p, "--input", c, "--device", "cpu", "--query", "marginal", "--batch", "4"];
        if json {
            args.push("--json");
        }
        let got = stdout(&run(&args, None));
        assert_eq!(got.lines().collect::<Vec<_>>(), pcc_query_marginal(&want, json), "json={json}");
    }

    // With `PCC_BIN=path/to/pcc`, also against the real `pcc query marginal` (same output bytes).
    if let Some(pcc) = std::env::var_os("PCC_BIN") {
        for json in [false, true] {
            let mut cmd = Command::new(&pcc);
            cmd.args(["query", "marginal"]).arg(&dir).args(["--evidence", c, "--device", "cpu"]);
            if json {
                cmd.arg("--json");
            }
            let want = cmd.output().unwrap();
            assert!(want.status.success(), "{}", String::from_utf8_lossy(&want.stderr));
            let mut args = vec!["--params", p, "--input", c, "--device", "cpu", "--query", "marginal"];
            if json {
                args.push("--json");
            }
            assert_eq!(stdout(&run(&args, None)), String::from_utf8(want.stdout).unwrap(), "json={json}");
        }
    }

    // The default query (per-sample log-likelihood) holds the same numbers, and the stderr
    // summary is `pcc eval`'s line.
    let o = run(&["--params", p, "--input", c, "--device", "cpu", "--json"], None);
    let got: Vec<f32> = stdout(&o)
        .lines()
        .enumerate()
        .map(|(s, l)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["sample"], s);
            v["log_likelihood"].as_f64().unwrap() as f32
        })
        .collect();
    assert_eq!(got, want);
    let avg = want.iter().map(|&x| x as f64).sum::<f64>() / want.len() as f64;
    let bpd = -avg / (3.0 * std::f64::consts::LN_2);
    let eval_line = format!("average log-likelihood {avg:.4} nats, {bpd:.4} bits per dimension, {} samples", want.len());
    assert!(stderr(&o).contains(&eval_line), "{}\nwanted: {eval_line}", stderr(&o));

    let text = stdout(&run(&["--params", p, "--input", c, "--device", "cpu", "--quiet"], None));
    let lines: Vec<String> = want.iter().enumerate().map(|(s, ll)| format!("sample {s}: log-likelihood = {ll:.6}")).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), lines);

    // A model directory works as --params too; a different marker is honoured.
    std::fs::write(&csv, csv_rows().replace('?', "NA")).unwrap();
    let got = stdout(&run(&["--params", dir.to_str().unwrap(), "--input", c, "--device", "cpu", "--missing-marker", "NA", "--query", "marginal"], None));
    assert_eq!(got.lines().collect::<Vec<_>>(), pcc_query_marginal(&want, false));
}

#[test]
fn stdin_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 11);
    let csv = tmp.path().join("data.csv");
    std::fs::write(&csv, csv_rows()).unwrap();
    let want = pcc_query_marginal(&reference(&dir, &dataset::read_csv_auto(&csv, "?").unwrap()), true);
    let p = dir.join("params.safetensors");
    let p = p.to_str().unwrap();
    for args in [
        vec!["--params", p, "--device", "cpu", "--query", "marginal", "--json"],
        vec!["--params", p, "--input", "-", "--device=cpu", "--query=marginal", "--json"],
    ] {
        let got = stdout(&run(&args, Some(csv_rows().as_bytes())));
        assert_eq!(got.lines().collect::<Vec<_>>(), want, "{args:?}");
    }
}

#[test]
fn idx_input_from_file_and_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 3);
    // 1x3 "images": every sample of the mixture.
    let mut pixels = Vec::new();
    for a in 0..3u8 {
        for b in 0..2u8 {
            for c in 0..3u8 {
                pixels.extend([a, b, c]);
            }
        }
    }
    let idx = tmp.path().join("data-images-idx3-ubyte");
    dataset::write_idx_images(&idx, &pixels, 18, 1, 3).unwrap();
    let (ev, _) = dataset::read_idx_images(&idx).unwrap();
    let want = pcc_query_marginal(&reference(&dir, &ev), false);
    let p = dir.join("params.safetensors");
    let p = p.to_str().unwrap();
    let got = stdout(&run(&["--params", p, "--input", idx.to_str().unwrap(), "--device", "cpu", "--query", "marginal"], None));
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
    let bytes = std::fs::read(&idx).unwrap();
    for fmt in [&[][..], &["--format", "idx"][..]] {
        let mut args = vec!["--params", p, "--device", "cpu", "--query", "marginal"];
        args.extend_from_slice(fmt);
        let got = stdout(&run(&args, Some(&bytes)));
        assert_eq!(got.lines().collect::<Vec<_>>(), want, "{args:?}");
    }
}

#[test]
fn auto_device_runs_somewhere_and_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 5);
    let p = dir.join("params.safetensors");
    let o = run(&["--params", p.to_str().unwrap(), "--json"], Some(b"0,1,2\n1,?,0\n"));
    let err = stderr(&o);
    assert!(err.contains("running on"), "auto names the engine it chose:\n{err}");
    let ev = dataset::csv_auto_from_bytes(Path::new("x"), b"0,1,2\n1,?,0\n", "?").unwrap();
    let want = reference(&dir, &ev);
    for (l, w) in stdout(&o).lines().zip(&want) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let got = v["log_likelihood"].as_f64().unwrap() as f32;
        // The GPU computes in another order: equal to float tolerance.
        assert!((got - w).abs() <= 1e-4 * w.abs().max(1.0), "{got} vs {w}");
    }
    assert_eq!(stdout(&o).lines().count(), 2);
}

#[test]
fn latency_bench_prints_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 1);
    let p = dir.join("params.safetensors");
    let o = run(&["--params", p.to_str().unwrap(), "--device", "cpu", "--bench-latency", "5"], Some(b"0,1,2\n1,?,0\n"));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["bench"], "startup");
    assert!(lines[0]["ready_since_main_us"].as_f64().unwrap() > 0.0);
    for (l, batch) in lines[1..].iter().zip([1, 8]) {
        assert_eq!(l["bench"], "latency");
        assert_eq!(l["batch"], batch);
        assert_eq!(l["iters"], 5);
        let (p10, med, p90) = (l["p10_us"].as_f64().unwrap(), l["median_us"].as_f64().unwrap(), l["p90_us"].as_f64().unwrap());
        assert!(0.0 < p10 && p10 <= med && med <= p90, "{l}");
    }
}

#[test]
fn info_lists_the_embedded_circuit() {
    let o = run(&["--info", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["num_vars"], 3);
    assert!(v["model"].as_str().unwrap().ends_with("structure.json"));
    assert!(v["cubin_archs"].is_array());
}

fn fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr:\n{err}");
    assert!(err.contains(needle), "stderr should mention {needle:?}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn errors_are_clear_and_exit_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 2);
    let p = dir.join("params.safetensors");
    let p = p.to_str().unwrap();
    let missing = tmp.path().join("nope.safetensors");
    fails(&run(&["--params", missing.to_str().unwrap()], Some(b"0,1,2\n")), 1, "cannot read parameter file");
    std::fs::write(tmp.path().join("bad.safetensors"), b"not a safetensors file").unwrap();
    fails(&run(&["--params", tmp.path().join("bad.safetensors").to_str().unwrap(), "--device", "cpu"], Some(b"0,1,2\n")), 1, "bad.safetensors");
    fails(&run(&["--params", p, "--device", "cpu"], Some(b"0,1,2,0\n1,0,1,1\n")), 1, "each sample has 4 values, but the circuit");
    fails(&run(&["--params", p, "--device", "cpu"], Some(b"0,1,2\n0,1\n")), 1, "<stdin>");
    fails(&run(&["--params", p, "--device", "cpu"], Some(b"0,1,2\n0,1,5\n")), 1, "category 5 is out of range");
    fails(&run(&["--params", p, "--device", "cpu"], Some(b"0,1,2\n0,x,1\n")), 1, "<stdin>");
    fails(&run(&["--params", p, "--device", "cpu"], Some(b"")), 1, "<stdin>");
    fails(&run(&["--params", p, "--input", tmp.path().join("absent.csv").to_str().unwrap()], None), 1, "absent.csv");
    fails(&run(&["--params", p, "--device", "cpu", "--format", "idx"], Some(b"0,1,2\n")), 1, "<stdin>");
    fails(&run(&["--params", p, "--bogus"], None), 2, "unexpected argument `--bogus`");
    fails(&run(&["--params", p, "--device", "tpu"], None), 2, "expected auto, cpu or cuda");
    fails(&run(&["--params", p, "--batch", "0"], None), 2, "--batch 0");
    fails(&run(&["--input", "x.csv"], None), 2, "--params PATH is required");
    // Without a usable GPU, --device cuda refuses instead of falling back.
    let o = run(&["--params", p, "--device", "cuda"], Some(b"0,1,2\n"));
    if !o.status.success() {
        fails(&o, 1, "--device cuda");
    }
}

/// `| head -1`: a closed stdout ends the program without a panic message.
#[test]
fn closed_stdout_is_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 4);
    let csv = tmp.path().join("big.csv");
    std::fs::write(&csv, "0,1,2\n".repeat(200_000)).unwrap();
    let mut child = Command::new(BIN)
        .args(["--params", dir.join("params.safetensors").to_str().unwrap(), "--input", csv.to_str().unwrap(), "--device", "cpu"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert!(first.starts_with(b"sample 0"));
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
}

/// CSV on stdin is a stream: with `--batch 1` each row's answer is printed before the next row
/// arrives (a deployment can sit at the end of a live pipe).
#[test]
fn stdin_is_streamed_batch_by_batch() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 6);
    let mut child = Command::new(BIN)
        .args(["--params", dir.join("params.safetensors").to_str().unwrap(), "--device", "cpu", "--batch", "1", "--query", "marginal"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            tx.send(line.unwrap()).unwrap();
        }
    });
    let ev = dataset::csv_auto_from_bytes(Path::new("x"), b"0,1,2\n?,0,1\n", "?").unwrap();
    let want = pcc_query_marginal(&reference(&dir, &ev), false);
    let wait = std::time::Duration::from_secs(60);
    stdin.write_all(b"0,1,2\n").unwrap();
    stdin.flush().unwrap();
    assert_eq!(rx.recv_timeout(wait).expect("no answer to the first row while stdin is open"), want[0]);
    stdin.write_all(b"?,0,1\n").unwrap();
    stdin.flush().unwrap();
    assert_eq!(rx.recv_timeout(wait).expect("no answer to the second row"), want[1]);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
}

/// Errors in later batches of a stream name the line of the whole input.
#[test]
fn stream_errors_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 8);
    let p = dir.join("params.safetensors");
    let p = p.to_str().unwrap();
    let ok = "0,1,2\n".repeat(5);
    let o = run(&["--params", p, "--device", "cpu", "--batch", "2"], Some(format!("{ok}1,z,1\n").as_bytes()));
    fails(&o, 1, "<stdin>, line 6, column 2: `z` is not a number");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 4, "the complete batches before the error were answered");
    fails(
        &run(&["--params", p, "--device", "cpu", "--batch", "2"], Some(format!("{ok}1,1,9\n").as_bytes())),
        1,
        "line 6: sample 5, variable 2: category 9 is out of range",
    );
    fails(&run(&["--params", p, "--device", "cpu", "--batch", "2"], Some(format!("{ok}1,1\n").as_bytes())), 1, "line 6: 2 fields");
    fails(&run(&["--params", p, "--device", "cpu", "--batch", "2"], Some(format!("{ok}\n{ok}").as_bytes())), 1, "line 6, column 1: blank line between samples");
    // Trailing blank lines are fine.
    let o = run(&["--params", p, "--device", "cpu", "--batch", "2"], Some(format!("{ok}\n\n").as_bytes()));
    assert_eq!(stdout(&o).lines().count(), 5);
}

#[test]
fn soft_evidence_input_equals_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path(), 5);
    // Per row: variable 0 (3 categories), variable 1 (binary: P(x = 1)), variable 2 (3 categories).
    let text = "0.2,0.3,0.5,0.7,1,0,0\n,,,0.4,0,0.5,0.5\n1,0,0,1,0,0,1\n";
    let ev = pc_runtime::soft::evidence_from_soft_csv(text, &Model::load(&dir).unwrap().plan.domains).unwrap();
    let want = pcc_query_marginal(&reference(&dir, &ev), true);
    let p = dir.join("params.safetensors");
    let got = stdout(&run(&["--params", p.to_str().unwrap(), "--format", "soft", "--device", "cpu", "--query", "marginal", "--json"], Some(text.as_bytes())));
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
    let bad = run(&["--params", p.to_str().unwrap(), "--format", "soft", "--device", "cpu"], Some(b"0.2,0.3\n"));
    assert!(!bad.status.success() && stderr(&bad).contains("line 1: 2 fields"), "{}", stderr(&bad));
}

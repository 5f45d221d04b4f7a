//! The `pcc` command line end to end on small data: learn → train → eval → query → sample → info,
//! and its error messages.

use std::path::Path;
use std::process::{Command, Output};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn pcc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pcc")).args(args).output().expect("pcc runs")
}

fn ok(args: &[&str]) -> String {
    let out = pcc(args);
    assert!(out.status.success(), "pcc {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = pcc(args);
    assert!(!out.status.success(), "pcc {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// Correlated binary data: 6 variables, each a noisy copy of the previous one.
fn write_data(path: &Path, n: usize, seed: u64) {
    pcc_testkit::write_binary_chain_csv(path, n, 6, seed);
}

/// A temporary directory holding `train.csv` (`rows` rows of [`write_data`] with `seed`) and
/// `model`, a 2-latent HCLT learned from it; returns the directory and the model's path.
fn learned(rows: usize, seed: u64) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    write_data(&dir.path().join("train.csv"), rows, seed);
    let model = dir.path().join("model").to_str().unwrap().to_string();
    ok(&["learn", "hclt", "--data", dir.path().join("train.csv").to_str().unwrap(), "--latents", "2", "-o", &model]);
    (dir, model)
}

#[test]
fn learn_train_eval_query_sample_info() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_data(Path::new(&p("train.csv")), 400, 1);
    write_data(Path::new(&p("valid.csv")), 100, 2);
    let model = p("model");

    let out = ok(&["learn", "hclt", "--data", &p("train.csv"), "--latents", "4", "-o", &model]);
    assert!(out.contains("6 variables"), "{out}");
    assert!(Path::new(&model).join("structure.json").exists());

    let eval = |m: &str| -> f64 {
        let out = ok(&["eval", m, "--data", &p("valid.csv"), "--json", "--device", "cpu"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["n"], 100);
        let bpd = v["bpd"].as_f64().unwrap();
        let ll = v["avg_ll"].as_f64().unwrap();
        assert!((bpd + ll / (6.0 * std::f64::consts::LN_2)).abs() < 1e-9);
        ll
    };
    let before = eval(&model);
    let out =
        ok(&["train", &model, "--data", &p("train.csv"), "--valid", &p("valid.csv"), "--epochs", "5", "--batch-size", "64", "--quiet", "--device", "cpu"]);
    assert_eq!(out.lines().filter(|l| l.starts_with("epoch")).count(), 5, "{out}");
    assert!(out.contains("saved"));
    let after = eval(&model);
    assert!(after > before + 0.1, "training improves validation LL: {before} -> {after}");
    ok(&["train", &model, "--data", &p("train.csv"), "--epochs", "2", "--em", "mini", "--step-size", "0.2", "--quiet", "--device", "cpu"]);

    std::fs::write(p("evidence.csv"), "1,?,0,1,?,1\n?,?,?,?,?,?\n0,0,0,0,0,0\n").unwrap();
    let out = ok(&["query", "marginal", &model, "--evidence", &p("evidence.csv"), "--json", "--device", "cpu"]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[1]["log_marginal"].as_f64().unwrap().abs() < 1e-4, "all missing: log 1");
    let out = ok(&["query", "conditional", &model, "--evidence", &p("evidence.csv"), "--json", "--device", "cpu"]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let c = first["conditionals"].as_object().unwrap();
    assert_eq!(c.keys().collect::<Vec<_>>(), ["1", "4"]);
    let p1: f64 = c["1"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((p1 - 1.0).abs() < 1e-5);
    let out = ok(&["query", "mpe", &model, "--evidence", &p("evidence.csv"), "--json", "--device", "cpu"]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let a: Vec<f64> = first["assignment"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!((a[0], a[2], a[3], a[5]), (1.0, 0.0, 1.0, 1.0), "evidence kept");

    ok(&["sample", &model, "-n", "50", "--seed", "3", "--csv", &p("samples.csv"), "--device", "cpu"]);
    let text = std::fs::read_to_string(p("samples.csv")).unwrap();
    assert_eq!(text.lines().count(), 50);
    assert!(text.lines().all(|l| l.split(',').count() == 6 && l.split(',').all(|x| x == "0" || x == "1")));
    ok(&["sample", &model, "-n", "9", "--png", &p("grid.png"), "--shape", "2x3", "--device", "cpu"]);
    assert_eq!(&std::fs::read(p("grid.png")).unwrap()[1..4], b"PNG");

    let info: serde_json::Value = serde_json::from_str(ok(&["info", &model, "--json"]).trim()).unwrap();
    assert_eq!(info["variables"], 6);
    assert!(info["sum_edges"].as_u64().unwrap() > 0);
    assert!(info["memory_bytes"]["batch_512"].as_u64().unwrap() > info["memory_bytes"]["batch_1"].as_u64().unwrap());
}

#[test]
fn errors_are_clear() {
    let (dir, model) = learned(50, 1);
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let err = fails(&["eval", &model, "--data", &p("train.csv"), "--device", "cuda"]);
    assert!(err.contains("CUDA"), "{err}");
    std::fs::write(p("wide.csv"), "0,1,0,1,0,1,1\n").unwrap();
    let err = fails(&["eval", &model, "--data", &p("wide.csv"), "--device", "cpu"]);
    assert!(err.contains("7 variables") && err.contains("6"), "{err}");
    std::fs::write(p("bad.csv"), "0,1,0,1,0,1\n0,1,2,1,0,1\n").unwrap();
    let err = fails(&["eval", &model, "--data", &p("bad.csv"), "--device", "cpu"]);
    assert!(err.contains("sample 1") && err.contains("variable 2"), "{err}");
    let err = fails(&["eval", &p("nowhere"), "--data", &p("train.csv")]);
    assert!(err.contains("nowhere"), "{err}");
}

/// Row ranges, empty data and flags that would be silently ignored are errors (issue 15): training
/// on no rows used to print "saved" over uniform parameters, and `eval` on none printed NaN.
#[test]
fn empty_or_out_of_range_rows_and_ignored_flags_are_errors() {
    let (dir, model) = learned(10, 3);
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let params = std::fs::read(Path::new(&model).join("params.safetensors")).unwrap();
    let err = fails(&["train", &model, "--data", &p("train.csv"), "--rows", "5..5", "--device", "cpu", "--epochs", "1", "--quiet"]);
    assert!(err.contains("5..5") && err.contains("no rows"), "{err}");
    assert_eq!(std::fs::read(Path::new(&model).join("params.safetensors")).unwrap(), params, "the model is untouched");
    let err = fails(&["eval", &model, "--data", &p("train.csv"), "--rows", "3..3", "--device", "cpu"]);
    assert!(err.contains("no rows"), "{err}");
    let err = fails(&["eval", &model, "--data", &p("train.csv"), "--rows", "2..11", "--device", "cpu"]);
    assert!(err.contains("2..11") && err.contains("only 10 rows"), "{err}");
    ok(&["eval", &model, "--data", &p("train.csv"), "--rows", "2..", "--device", "cpu"]);
    ok(&["eval", &model, "--data", &p("train.csv"), "--rows", "2..10", "--device", "cpu"]);
    std::fs::write(p("empty.csv"), "").unwrap();
    let err = fails(&["eval", &model, "--data", &p("empty.csv"), "--device", "cpu"]);
    assert!(err.contains("no samples") || err.contains("empty"), "{err}");
    let err = fails(&["eval", &model, "--data", &p("train.csv"), "--device", "cpu", "--precision", "bf16"]);
    assert!(err.contains("--precision bf16") && err.contains("--device cpu"), "{err}");
}

/// `train` checks its hyper-parameters and validation data before the first epoch, and with
/// `--valid` keeps a model on disk that training does not beat (issue 15).
#[test]
fn train_checks_before_it_trains_and_keeps_a_better_model() {
    let (dir, model) = learned(40, 6);
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let params = || std::fs::read(Path::new(&model).join("params.safetensors")).unwrap();
    let before = params();
    let cpu = ["--device", "cpu", "--quiet", "--epochs", "1"];
    let err = fails(&[&["train", &model, "--data", &p("train.csv"), "--em", "mini", "--step-size", "0"][..], &cpu].concat());
    assert!(err.contains("step"), "{err}");
    std::fs::write(p("wide.csv"), "0,1,0,1,0,1,1\n").unwrap();
    let err = fails(&[&["train", &model, "--data", &p("train.csv"), "--valid", &p("wide.csv")][..], &cpu].concat());
    assert!(err.contains("7 variables"), "{err}");
    assert_eq!(params(), before, "a failed start leaves the model untouched");
    // Train well, then try to replace it with one epoch on 2 rows: its validation score is worse,
    // so the model on disk stays.
    ok(&[&["train", &model, "--data", &p("train.csv"), "--valid", &p("train.csv")][..], &["--device", "cpu", "--quiet", "--epochs", "5"][..]].concat());
    let good = params();
    let out = ok(&[&["train", &model, "--data", &p("train.csv"), "--rows", "0..2", "--valid", &p("train.csv"), "--pseudocount", "0"][..], &cpu].concat());
    assert!(out.contains("valid LL of the model on disk"), "{out}");
    assert!(!out.contains("saved"), "{out}");
    assert_eq!(params(), good, "not beaten: not replaced");
}

/// Data read from a pipe keeps every row (issue 15: format sniffing read the first bytes, then
/// reopened the file, so `--data <(cat ten_rows.csv)` silently lost the first rows).
#[cfg(unix)]
#[test]
fn data_from_a_pipe_keeps_every_row() {
    let (dir, model) = learned(10, 7);
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let fifo = p("rows.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let text = std::fs::read(p("train.csv")).unwrap();
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::write(fifo, text).unwrap()
    });
    let out = ok(&["eval", &model, "--data", &fifo, "--device", "cpu"]);
    writer.join().unwrap();
    assert!(out.contains("10 samples"), "{out}");
}

/// Outputs never replace what is not a regular file or a read-only file, and keep an existing
/// file's mode; new files get 0666 less the umask (issue 15: `--csv /dev/null` as root replaced
/// the device node, a symlink became a file, a FIFO was replaced, every output was 0600).
#[cfg(unix)]
#[test]
fn outputs_replace_only_writable_regular_files() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let (dir, model) = learned(10, 8);
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let sample_to = |out: &str| pcc(&["sample", &model, "-n", "2", "--csv", out, "--device", "cpu"]);
    // A symbolic link: refused, the link and its target untouched.
    std::fs::write(p("target.csv"), "keep").unwrap();
    std::os::unix::fs::symlink(p("target.csv"), p("link.csv")).unwrap();
    let out = sample_to(&p("link.csv"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    assert!(std::fs::symlink_metadata(p("link.csv")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(p("target.csv")).unwrap(), "keep");
    // A FIFO: refused, still a FIFO (and nothing blocks on it).
    assert!(Command::new("mkfifo").arg(p("out.fifo")).status().unwrap().success());
    let out = sample_to(&p("out.fifo"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    assert!(std::fs::symlink_metadata(p("out.fifo")).unwrap().file_type().is_fifo());
    // A read-only file: refused, unchanged.
    std::fs::write(p("ro.csv"), "keep").unwrap();
    std::fs::set_permissions(p("ro.csv"), std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = sample_to(&p("ro.csv"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("read-only"));
    assert_eq!(std::fs::read_to_string(p("ro.csv")).unwrap(), "keep");
    // An existing file keeps its mode; a new one gets 0666 less the umask.
    std::fs::write(p("old.csv"), "x").unwrap();
    std::fs::set_permissions(p("old.csv"), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(sample_to(&p("old.csv")).status.success());
    assert_eq!(std::fs::metadata(p("old.csv")).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(sample_to(&p("new.csv")).status.success());
    let umask = Command::new("sh").args(["-c", "umask"]).output().unwrap();
    let umask = u32::from_str_radix(String::from_utf8_lossy(&umask.stdout).trim(), 8).unwrap();
    assert_eq!(std::fs::metadata(p("new.csv")).unwrap().permissions().mode() & 0o777, 0o666 & !umask);
}

/// A structure too large for a plan's 32-bit indices is an error naming the size (issue 15: a
/// CSV value of 16777215 with `--latents 256` asked for 2^33 leaf parameters and panicked).
#[test]
fn structures_too_large_for_a_plan_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(p("big.csv"), "0,1\n16777215,0\n").unwrap();
    let out = pcc(&["learn", "hclt", "--data", &p("big.csv"), "--latents", "256", "--max-categories", "16777216", "-o", &p("m")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("leaf parameters") && !err.contains("panicked"), "{err}");
    assert!(!Path::new(&p("m")).exists(), "nothing written");
}

/// Sample counts and image shapes from the command line are checked before anything is drawn
/// (issue 15: a huge `-n` wrote an empty file with exit 0, a huge `--shape` overflowed).
#[test]
fn sample_sizes_are_checked() {
    let (dir, model) = learned(10, 5);
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let cpu = ["--device", "cpu"];
    let err = fails(&[&["sample", &model, "-n", "1152921504606846976", "--csv", &p("s.csv")][..], &cpu].concat());
    assert!(err.contains("exceed"), "{err}");
    assert!(!Path::new(&p("s.csv")).exists(), "nothing written");
    let err = fails(&[&["sample", &model, "-n", "0", "--csv", &p("s.csv")][..], &cpu].concat());
    assert!(err.contains("nothing to sample"), "{err}");
    let err = fails(&[&["sample", &model, "-n", "2", "--png", &p("s.png"), "--shape", "2x9223372036854775816"][..], &cpu].concat());
    assert!(err.contains("--shape") && !err.contains("panicked"), "{err}");
    let err = fails(&[&["sample", &model, "-n", "2", "--png", &p("s.png"), "--shape", "3x2x1"][..], &cpu].concat());
    assert!(err.contains("--shape"), "{err}");
    ok(&[&["sample", &model, "-n", "2", "--png", &p("s.png"), "--shape", "2x3"][..], &cpu].concat());
}

/// A structure file with a field pcc does not know (a misspelt `tied_to`, say) is rejected, not
/// read with the field dropped.
#[test]
fn unknown_fields_in_a_structure_file_are_errors() {
    let (_dir, model) = learned(10, 4);
    let path = Path::new(&model).join("structure.json");
    let text = std::fs::read_to_string(&path).unwrap();
    for (what, bad) in [
        ("file", text.replacen("{", "{\"comment\":1,", 1)),
        ("circuit", text.replacen("\"num_vars\"", "\"extra\":0,\"num_vars\"", 1)),
        ("node", text.replacen("\"var\"", "\"tied_too\":0,\"var\"", 1)),
    ] {
        assert_ne!(bad, text, "{what}: the edit applies");
        std::fs::write(&path, &bad).unwrap();
        let err = fails(&["info", &model]);
        assert!(err.contains("unknown field"), "{what}: {err}");
    }
    std::fs::write(&path, &text).unwrap();
    ok(&["info", &model]);
}

#[test]
fn every_structure_learns_trains_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_data(Path::new(&p("train.csv")), 200, 4);
    let structures: [&[&str]; 4] = [
        &["hclt", "--tie-inputs"],
        &["pd", "--shape", "2x3", "--split-interval", "1"],
        &["rat-spn", "--depth", "1", "--repetitions", "3"],
        &["hmm", "--homogeneous"],
    ];
    let train = p("train.csv");
    for args in structures {
        let model = p(args[0]);
        let mut cmd = vec!["learn"];
        cmd.extend_from_slice(args);
        cmd.extend_from_slice(&["--data", &train, "--latents", "4", "-o", &model]);
        ok(&cmd);
        ok(&["train", &model, "--data", &p("train.csv"), "--epochs", "3", "--quiet", "--device", "cpu"]);
        let out = ok(&["eval", &model, "--data", &p("train.csv"), "--json", "--device", "cpu"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let ll = v["avg_ll"].as_f64().unwrap();
        assert!(ll.is_finite() && ll < 0.0 && ll > -6.0 * std::f64::consts::LN_2 - 0.5, "{}: avg LL {ll}", args[0]);
    }
    let err = fails(&["learn", "pd", "--data", &p("train.csv"), "-o", &p("x")]);
    assert!(err.contains("not a square image"), "{err}");
}

#[test]
fn codegen_writes_source_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_data(Path::new(&p("train.csv")), 50, 1);
    ok(&["learn", "hclt", "--data", &p("train.csv"), "--latents", "4", "-o", &p("model")]);
    let out = ok(&["codegen", &p("model"), "--out", &p("gen"), "--check"]);
    let source = std::fs::read_to_string(dir.path().join("gen/circuit.cu")).unwrap();
    assert!(source.contains("__global__"));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("gen/manifest.json")).unwrap()).unwrap();
    assert!(!manifest["forward"].as_array().unwrap().is_empty());
    if pcc::runtime::cuda::nvrtc_available() {
        assert!(out.contains("NVRTC sm_90") && out.contains("registers"), "{out}");
    } else {
        assert!(out.contains("not compiled"), "{out}");
    }
}

/// Sizes from flags and data files are checked before anything is allocated by them (issue 15:
/// each of these panicked or aborted on an allocation).
#[test]
fn sizes_from_flags_and_data_are_checked_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_data(Path::new(&p("six.csv")), 20, 9);
    let clean = |args: &[String], needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        assert!(!err.contains("panicked") && !err.contains("memory allocation"), "{args:?}: {err}");
        assert!(needles.iter().all(|n| err.contains(n)), "{args:?}: {err}");
        assert!(!Path::new(&p("m")).exists(), "{args:?}: nothing written");
    };
    let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let learn = |structure: &str, extra: &[&str]| strings(&[&["learn", structure, "--data", &p("six.csv"), "-o", &p("m")][..], extra].concat());
    // 2 x 2147484040 wraps to 784 in u32; the product is checked in 64 bits.
    std::fs::write(p("img.csv"), format!("{}\n", vec!["0"; 784].join(","))).unwrap();
    clean(&strings(&["learn", "pd", "--data", &p("img.csv"), "--shape", "2x2147484040", "-o", &p("m")]), &["4294968080 pixels"]);
    clean(&learn("hclt", &["--latents", "2147483648"]), &["limit"]);
    clean(&learn("hclt", &["--latents", "65536", "--block-size", "1"]), &["sum weights", "limit"]);
    clean(&learn("hmm", &["--latents", "2147483648"]), &["limit"]);
    clean(&learn("pd", &["--shape", "2x3", "--latents", "2147483648"]), &["limit"]);
    clean(&learn("rat-spn", &["--latents", "4294967295", "--block-size", "1"]), &["limit"]);
    clean(&learn("rat-spn", &["--repetitions", "4294967295"]), &["limit"]);
    // 2,000,000 columns: refused on the first line.
    let wide = vec!["0"; 2_000_000].join(",");
    std::fs::write(p("wide.csv"), format!("{wide}\n{wide}\n")).unwrap();
    clean(&strings(&["learn", "hclt", "--data", &p("wide.csv"), "-o", &p("m")]), &["2000000 columns", "limit"]);
    // One outlier would make a categorical of 1,000,001 categories: refused, naming the place.
    std::fs::write(p("outlier.csv"), "0,1,2\n1,1000000,0\n2,0,1\n").unwrap();
    let err = fails(&["learn", "hclt", "--data", &p("outlier.csv"), "-o", &p("m")]);
    assert!(err.contains("value 1000000") && err.contains("column 2") && err.contains("row 2") && err.contains("--max-categories 1024"), "{err}");
    std::fs::write(p("small.csv"), "0,1,2\n1,5,0\n2,0,1\n").unwrap();
    let err = fails(&["learn", "rat-spn", "--data", &p("small.csv"), "--max-categories", "5", "-o", &p("m")]);
    assert!(err.contains("value 5") && err.contains("6 categories"), "{err}");
    ok(&["learn", "rat-spn", "--data", &p("small.csv"), "--max-categories", "6", "-o", &p("m")]);
}

/// Recursion depth is bounded (issue 15: `learn rat-spn --depth 1000000` overflowed the stack):
/// RAT-SPN depth and PD cut points have limits with an error naming them.
#[test]
fn structure_recursion_depth_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_data(Path::new(&p("six.csv")), 20, 10);
    for pieces in ["2", "1"] {
        let err = fails(&["learn", "rat-spn", "--data", &p("six.csv"), "--depth", "1000000", "--pieces", pieces, "-o", &p("m")]);
        assert!(err.contains("depth = 1000000") && err.contains("64 levels") && !err.contains("overflow"), "{err}");
    }
    ok(&["learn", "rat-spn", "--data", &p("six.csv"), "--depth", "64", "-o", &p("m")]);
    // A 1 x 3000 image cut at every pixel nests 3000 levels deep.
    std::fs::write(p("row.csv"), format!("{}\n", vec!["1"; 3000].join(","))).unwrap();
    let err = fails(&["learn", "pd", "--data", &p("row.csv"), "--shape", "1x3000", "--split-interval", "1", "-o", &p("pd")]);
    assert!(err.contains("2999 cut points") && err.contains("2048"), "{err}");
}

/// `train` holds an advisory lock on its model directory: a second `train` (or a `learn -o`) on it
/// fails at once naming the first; a kill releases it; temporary files an interrupted save left
/// behind are removed by the next run (issue 15: two runs on one directory silently raced).
#[cfg(unix)]
#[test]
fn a_second_writer_of_a_model_directory_fails_naming_the_first() {
    let (dir, model) = learned(10, 12);
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let train = ["train", &model, "--data", &p("train.csv"), "--quiet", "--device", "cpu"];
    let mut first =
        Command::new(env!("CARGO_BIN_EXE_pcc")).args([&train[..], &["--epochs", "100000000"]].concat()).stdout(std::process::Stdio::null()).spawn().unwrap();
    let holder = format!("pid {}", first.id());
    let lock = Path::new(&model).join(".pcc-lock");
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).unwrap_or_default().contains(&holder) {
        assert!(t0.elapsed().as_secs() < 30, "the first train never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let err = fails(&[&train[..], &["--epochs", "1"]].concat());
    assert!(err.contains("in use by pcc train") && err.contains(&holder), "{err}");
    let err = fails(&["learn", "hclt", "--data", &p("train.csv"), "--latents", "2", "-o", &model]);
    assert!(err.contains("in use by pcc train") && err.contains(&holder), "{err}");
    first.kill().unwrap();
    first.wait().unwrap();
    let stale = Path::new(&model).join(".params.safetensors.tmpXYZ123");
    std::fs::write(&stale, "half a save").unwrap();
    let out = pcc(&[&train[..], &["--epochs", "1"]].concat());
    assert!(out.status.success(), "the kill released the lock: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("left by an interrupted save"));
    assert!(!stale.exists(), "stale temporary file removed");
}

/// SIGKILL `pcc train` at 24 random moments (startup, EM, mid-save): after each, the model
/// directory loads (the last good state) and evaluates; a new `train` continues from the model on
/// disk (there is no `--resume`: `train` always starts from the directory's parameters) and
/// removes what a kill mid-save left behind.
#[cfg(unix)]
#[test]
fn train_killed_at_random_moments_leaves_a_loadable_model() {
    use pcc::codegen::Model;
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_data(Path::new(&p("train.csv")), 3000, 13);
    let model = p("model");
    ok(&["learn", "hclt", "--data", &p("train.csv"), "--latents", "8", "-o", &model]);
    let data = pcc::runtime::dataset::read_binary_csv(Path::new(&p("train.csv"))).unwrap();
    let mean_ll = || {
        let m = Model::load(Path::new(&model)).unwrap();
        let ll = m.cpu_engine().unwrap().log_likelihood(&data).unwrap();
        ll.iter().map(|&l| l as f64).sum::<f64>() / ll.len() as f64
    };
    let initial = mean_ll();
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let (mut saves, mut temps_left) = (0, 0);
    for kill in 0..24 {
        let child = Command::new(env!("CARGO_BIN_EXE_pcc"))
            .args(["train", &model, "--data", &p("train.csv"), "--epochs", "100000000", "--quiet", "--device", "cpu"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(2..300)));
        // SAFETY: kill(2) on the child's pid, which has not been waited for (so not reused).
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
        let out = child.wait_with_output().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(libc::SIGKILL), "kill {kill}: killed, not finished");
        saves += String::from_utf8_lossy(&out.stdout).matches("saved").count();
        temps_left += std::fs::read_dir(&model).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp")).count();
        let ll = mean_ll();
        assert!(ll.is_finite(), "kill {kill}: the model loads and evaluates ({ll})");
    }
    eprintln!("24 kills: {saves} saves completed between them, {temps_left} temporary files left by kills mid-save");
    assert!(saves > 0, "some kills came after saves");
    ok(&["train", &model, "--data", &p("train.csv"), "--epochs", "1", "--quiet", "--device", "cpu"]);
    assert!(std::fs::read_dir(&model).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")), "no temporary file stays");
    let trained = mean_ll();
    assert!(trained > initial + 0.05, "training went on across the kills: {initial} -> {trained}");
}

/// A save that cannot be written (the file-size limit stands in for a full disk: writes past it
/// fail with EFBIG once SIGXFSZ is ignored) fails with an error naming the file, and the model on
/// disk stays as it was, byte for byte, and loads.
#[test]
fn a_save_that_cannot_be_written_leaves_the_previous_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.csv");
    write_data(&data, 200, 14);
    let model = dir.path().join("model").to_str().unwrap().to_string();
    let data = data.to_str().unwrap();
    ok(&["learn", "hclt", "--data", data, "--latents", "16", "-o", &model]);
    let params = Path::new(&model).join("params.safetensors");
    let before = std::fs::read(&params).unwrap();
    assert!(before.len() > 3 * 1024, "a parameter file larger than the limit below ({} bytes)", before.len());
    // bash: `ulimit -f` counts 1024-byte blocks; an ignored signal stays ignored across exec.
    let out = Command::new("bash")
        .args(["-c", "trap '' XFSZ; ulimit -f 2; exec \"$@\"", "limited", env!("CARGO_BIN_EXE_pcc")])
        .args(["train", &model, "--data", data, "--epochs", "1", "--quiet", "--device", "cpu"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the save cannot succeed: {err}");
    assert!(err.contains("params.safetensors") && !err.contains("panicked"), "{err}");
    assert_eq!(std::fs::read(&params).unwrap(), before, "the previous parameters are untouched");
    ok(&["eval", &model, "--data", data, "--device", "cpu"]);
    let leftovers: Vec<_> = std::fs::read_dir(&model)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file left: {leftovers:?}");
}

/// `--leaf binomial` (with `--trials`, or the data's largest value): count data learns, trains and
/// evaluates; trials below the data, `--trials` for another family and binomial HMM emissions are
/// errors.
#[test]
fn binomial_leaves_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut text = String::new();
    for _ in 0..200 {
        // Successes of 4 trials, correlated across the 6 variables through a shared rate.
        let rate = if rng.random_bool(0.5) { 0.2 } else { 0.7 };
        let row: Vec<String> = (0..6).map(|_| (0..4).filter(|_| rng.random_bool(rate)).count().to_string()).collect();
        text += &row.join(",");
        text += "\n";
    }
    std::fs::write(p("counts.csv"), text).unwrap();
    let data = p("counts.csv");
    for (structure, trials) in [("hclt", Some("4")), ("rat-spn", None), ("pd", Some("6"))] {
        let model = p(&format!("{structure}-binomial"));
        let mut cmd = vec!["learn", structure, "--data", &data, "--latents", "4", "--leaf", "binomial", "-o", &model];
        if structure == "pd" {
            cmd.extend_from_slice(&["--shape", "2x3", "--split-interval", "1"]);
        }
        if let Some(t) = trials {
            cmd.extend_from_slice(&["--trials", t]);
        }
        ok(&cmd);
        let structure_json: String = std::fs::read_to_string(Path::new(&model).join("structure.json")).unwrap().split_whitespace().collect();
        let want = format!(r#""num_trials":{}"#, trials.unwrap_or("4"));
        assert!(structure_json.contains(r#""kind":"binomial""#) && structure_json.contains(&want), "{structure}: binomial leaves with {want}");
        ok(&["train", &model, "--data", &p("counts.csv"), "--epochs", "3", "--quiet", "--device", "cpu"]);
        let out = ok(&["eval", &model, "--data", &p("counts.csv"), "--json", "--device", "cpu"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let ll = v["avg_ll"].as_f64().unwrap();
        // Above the uniform model over each variable's values (trials + 1).
        let values: f64 = trials.unwrap_or("4").parse::<f64>().unwrap() + 1.0;
        assert!(ll.is_finite() && ll < 0.0 && ll > -6.0 * values.ln(), "{structure}: avg LL {ll}");
    }
    let learn = |extra: &[&str]| fails(&[&["learn", "hclt", "--data", &p("counts.csv"), "-o", &p("bad")][..], extra].concat());
    let err = learn(&["--leaf", "binomial", "--trials", "2"]);
    assert!(err.contains("outside the 3 values of binomial leaves"), "{err}");
    let err = learn(&["--leaf", "categorical", "--trials", "4"]);
    assert!(err.contains("--trials is an option of binomial leaves"), "{err}");
    let err = learn(&["--leaf", "bernoulli"]);
    assert!(err.contains("outside the 2 values of bernoulli leaves"), "{err}");
    let err = learn(&["--leaf", "poisson"]);
    assert!(err.contains("--leaf poisson"), "{err}");
    let err = fails(&["learn", "hmm", "--data", &p("counts.csv"), "--leaf", "binomial", "-o", &p("bad")]);
    assert!(err.contains("categorical"), "{err}");
}

/// The structure flags of `pcc learn` are the `circuit!` template keys (snake case as kebab case)
/// with the defaults of the structure's options, so a CLI user and a macro user get the same
/// circuit from the same words; keys that come from the data (shape, variable counts, the leaf)
/// are the only ones without a flag.
#[test]
fn structure_flags_are_the_template_keys() {
    use pcc::codegen::structures::{hmm::HmmOptions, pd::PdOptions, rat_spn::RatSpnOptions};
    let help = |s: &str| String::from_utf8(pcc(&["learn", s, "--help"]).stdout).unwrap().replace('\n', " ");
    let default_of = |help: &str, flag: &str| -> Option<String> {
        let at = help.find(&format!("--{flag} "))?;
        let rest = &help[at..];
        let end = rest[2..].find(" --").map_or(rest.len(), |e| e + 2);
        rest[..end].split("[default: ").nth(1).map(|d| d.split(']').next().unwrap().to_string())
    };
    let pd = PdOptions::default();
    let (rat, hmm) = (RatSpnOptions::default(), HmmOptions::default());
    // (structure, [(flag, its default as the help prints it)])
    type Flags<'a> = Vec<(&'a str, Option<String>)>;
    let cases: [(&str, Flags); 3] = [
        (
            "pd",
            vec![
                ("shape", None),
                ("latents", Some(pd.latents.to_string())),
                ("split-intervals", Some(pd.split_intervals.0.to_string())),
                ("max-split-depth", None),
                ("max-prod-block-conns", Some(pd.max_prod_block_conns.to_string())),
                ("block-size", None),
                ("seed", Some(pd.seed.to_string())),
            ],
        ),
        (
            "rat-spn",
            vec![
                ("latents", Some(rat.latents.to_string())),
                ("depth", Some(rat.depth.to_string())),
                ("num-repetitions", Some(rat.num_repetitions.to_string())),
                ("num-pieces", Some(rat.num_pieces.to_string())),
                ("block-size", None),
                ("seed", Some(rat.seed.to_string())),
            ],
        ),
        // An HMM's `hidden` states are the structures' common `--latents`.
        ("hmm", vec![("latents", Some(hmm.hidden.to_string())), ("homogeneous", Some(hmm.homogeneous.to_string())), ("block-size", None)]),
    ];
    assert_eq!(pd.split_intervals.0, pd.split_intervals.1, "the default prints as one number");
    for (structure, flags) in cases {
        let h = help(structure);
        for (flag, want) in flags {
            assert!(h.contains(&format!("--{flag} ")), "pcc learn {structure} has no --{flag}: {h}");
            assert_eq!(default_of(&h, flag), want, "pcc learn {structure} --{flag}: default");
        }
    }
    // The older spellings still parse.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "0,1,1,0,1,0\n1,0,0,1,1,1\n").unwrap();
    for (structure, extra) in
        [("pd", vec!["--shape", "2x3", "--split-interval", "1", "--max-prod-conns", "2"]), ("rat-spn", vec!["--repetitions", "2", "--pieces", "2"])]
    {
        let out = dir.path().join(structure);
        let mut args = vec!["learn", structure, "--data", csv.to_str().unwrap(), "--latents", "2", "-o", out.to_str().unwrap()];
        args.extend(extra);
        let o = pcc(&args);
        assert!(o.status.success(), "{structure}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn fit_softening_entropy_and_soft_evidence_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    write_data(&dir.path().join("train.csv"), 300, 1);
    write_data(&dir.path().join("valid.csv"), 100, 2);
    let fit = [
        "fit",
        "--data",
        &p("train.csv"),
        "--valid",
        &p("valid.csv"),
        "--test",
        &p("valid.csv"),
        "-o",
        &p("m"),
        "--latents",
        "4",
        "--soften",
        "1,0.99",
        "--entropy",
        "0,0.01",
        "--pseudocount",
        "0.1,1",
        "--max-epochs",
        "3",
        "--device",
        "cpu",
        "--quiet",
    ];
    let out = ok(&fit);
    assert!(out.contains("chosen: latents 4"), "{out}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("m/fit.json")).unwrap()).unwrap();
    let trials = summary["trials"].as_array().unwrap();
    // Latents stage (paper defaults), β ∈ {1, 0.99}, τ ∈ {0, 0.01}, α ∈ {0.1, 1}, the ablation: no
    // candidate twice.
    assert!(trials.len() >= 5, "{summary}");
    assert!(trials.iter().any(|t| t["pseudocount"].as_f64() == Some(1.0)), "the pseudocount stage ran: {summary}");
    assert!(summary["chosen"]["pseudocount"].as_f64().is_some(), "{summary}");
    assert!(summary["test_ll"].as_f64().unwrap().is_finite() && summary["ablation"].as_array().unwrap().len() == 4, "{summary}");
    let best = trials.iter().map(|t| t["valid_ll"].as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(summary["valid_ll"].as_f64().unwrap(), best, "the saved model is the best trial");
    // The saved model evaluates to the summary's test LL.
    let eval: serde_json::Value = serde_json::from_str(&ok(&["eval", &p("m"), "--data", &p("valid.csv"), "--json", "--device", "cpu"])).unwrap();
    assert!((eval["avg_ll"].as_f64().unwrap() - summary["test_ll"].as_f64().unwrap()).abs() < 1e-9);
    ok(&["train", &p("m"), "--data", &p("train.csv"), "--epochs", "1", "--soften", "0.99", "--entropy", "0.01", "--device", "cpu", "--quiet"]);
    // One-hot soft evidence is the hard data; a blank field is an unobserved variable.
    let hard = std::fs::read_to_string(dir.path().join("valid.csv")).unwrap();
    std::fs::write(dir.path().join("soft.csv"), &hard).unwrap();
    let ll = |args: &[&str]| -> f64 { serde_json::from_str::<serde_json::Value>(&ok(args)).unwrap()["avg_ll"].as_f64().unwrap() };
    let a = ll(&["eval", &p("m"), "--data", &p("valid.csv"), "--json", "--device", "cpu"]);
    let b = ll(&["eval", &p("m"), "--data", &p("soft.csv"), "--soft", "--json", "--device", "cpu"]);
    assert!((a - b).abs() < 1e-5, "hard {a}, one-hot soft {b}");
    std::fs::write(dir.path().join("soft2.csv"), "0.3,0.9,,1,0,0.5\n").unwrap();
    assert!(ll(&["eval", &p("m"), "--data", &p("soft2.csv"), "--soft", "--json", "--device", "cpu"]).is_finite());
    // Errors name the cause.
    std::fs::write(dir.path().join("bad.csv"), "0.3,0.9,1\n").unwrap();
    let err = fails(&["eval", &p("m"), "--data", &p("bad.csv"), "--soft", "--device", "cpu"]);
    assert!(err.contains("line 1: 3 fields"), "{err}");
    std::fs::write(dir.path().join("bad.csv"), "0.3,1.5,1,0,0,0\n").unwrap();
    assert!(fails(&["eval", &p("m"), "--data", &p("bad.csv"), "--soft", "--device", "cpu"]).contains("not a probability"));
    assert!(fails(&["train", &p("m"), "--data", &p("train.csv"), "--soften", "0", "--device", "cpu"]).contains("β must be in (0, 1]"));
    assert!(fails(&[&fit[..11], &["--entropy=-1"]].concat()).contains("τ must be finite"));
}

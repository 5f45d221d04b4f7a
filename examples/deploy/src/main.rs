//! A deployment binary: `build.rs` compiled a circuit's structure file at build time (the committed
//! `models/mixture` unless `PCC_DEPLOY_MODEL` names another) into the module `circuit`, and the
//! CUDA kernels into CUBINs for the architectures in `PCC_DEPLOY_ARCHS` where NVRTC was available.
//! So this crate links `pc-runtime` alone (no compiler, tera or syn), and on those GPUs needs only
//! the NVIDIA driver: no CUDA toolkit, no NVRTC, no Python.
//!
//! It loads parameters from a safetensors file, reads samples from a file or stdin (CSV with
//! missing values, or IDX images), and prints one log-likelihood (= log-marginal of the observed
//! values) per sample, on the GPU when one is usable and on the CPU otherwise. See `--help`.

pc_runtime::include_circuit!("circuit");

mod cubins {
    include!(concat!(env!("OUT_DIR"), "/circuit_cubins.rs"));
}

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pc_runtime::cuda::{GpuEngine, KernelCache};
use pc_runtime::{Engine, Evidence, dataset};

const BIN: &str = "pcc-deploy-example";

const USAGE: &str = "\
usage: pcc-deploy-example --params PATH [--input FILE|-] [--format csv|idx|soft] [--missing-marker M]
                          [--query ll|marginal] [--device auto|cpu|cuda] [--batch N] [--json]
                          [--quiet] [--bench-latency ITERS]
       pcc-deploy-example --info [--json]

Evaluates the circuit compiled into this binary on samples read from a file or stdin.

  --params PATH          parameter file (safetensors), or a model directory holding params.safetensors
  --input FILE|-         samples: CSV (comma-separated, one sample per line; a missing value is the
                         missing marker or an empty field) or IDX images; `-` or absent: stdin
  --format csv|idx|soft  input format (default: IDX if the data starts with a NUL byte, else CSV);
                         soft: soft evidence, per variable P(x = 1) of a binary variable or one
                         probability per category (empty = unobserved); the result is
                         log Σ_x p(x) Π_v s_v(x_v)
  --missing-marker M     CSV field that marks a missing value (default `?`)
  --query ll|marginal    ll: `sample S: log-likelihood = X`; marginal: `sample S: log p(evidence) = X`
                         (as `pcc query marginal`); both marginalize missing values (default ll)
  --device auto|cpu|cuda auto: the GPU when usable, else the CPU (saying why); cuda: GPU or error
  --batch N              samples per engine call (default 512); CSV is read as a stream, N rows at a
                         time, and each batch's answers are printed as soon as it is done
  --json                 JSON lines: {\"log_likelihood\":X,\"sample\":S} (ll) or {\"log_marginal\":X,\"sample\":S}
  --quiet                no notes on stderr (device, average log-likelihood)
  --bench-latency ITERS  instead of printing results: time ITERS calls (after 10 warm-up calls) at
                         batch 1 and 8 (the first rows of the first batch), with CUDA graphs on and
                         off on a GPU;
                         prints JSON lines (startup, then one per batch size and mode)
  --info                 describe the embedded circuit and CUBINs
  -h, --help, -V, --version
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Idx,
    /// Soft evidence (`pc_runtime::soft::evidence_from_soft_csv`), read whole.
    Soft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Query {
    Ll,
    Marginal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug)]
struct Args {
    params: Option<PathBuf>,
    /// `None`: stdin.
    input: Option<PathBuf>,
    format: Option<Format>,
    missing_marker: String,
    query: Query,
    device: Device,
    batch: usize,
    json: bool,
    quiet: bool,
    bench_latency: Option<usize>,
    info: bool,
}

/// Why the program stops: a usage error (exit 2, with a hint) or a failure (exit 1).
enum Failure {
    Usage(String),
    Error(String),
    /// stdout was closed (e.g. `| head`): stop quietly.
    ClosedPipe,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Error(e.to_string())
    }
}

fn fail(msg: impl Into<String>) -> Failure {
    Failure::Error(msg.into())
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, Failure> {
    let mut a = Args {
        params: None,
        input: None,
        format: None,
        missing_marker: "?".into(),
        query: Query::Ll,
        device: Device::Auto,
        batch: 512,
        json: false,
        quiet: false,
        bench_latency: None,
        info: false,
    };
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let value = |it: &mut dyn Iterator<Item = String>| -> Result<String, Failure> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| usage(format!("{flag} needs a value"))),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("{BIN} {} (circuit from {}, embedded CUBINs: {})", env!("CARGO_PKG_VERSION"), cubins::MODEL, archs_text());
                return Ok(None);
            }
            "--params" => a.params = Some(value(&mut it)?.into()),
            "--input" => {
                let v = value(&mut it)?;
                a.input = if v == "-" { None } else { Some(v.into()) };
            }
            "--format" => {
                a.format = Some(match value(&mut it)?.as_str() {
                    "csv" => Format::Csv,
                    "idx" => Format::Idx,
                    "soft" => Format::Soft,
                    other => return Err(usage(format!("--format {other}: expected csv, idx or soft"))),
                })
            }
            "--missing-marker" => a.missing_marker = value(&mut it)?,
            "--query" => {
                a.query = match value(&mut it)?.as_str() {
                    "ll" | "log-likelihood" => Query::Ll,
                    "marginal" => Query::Marginal,
                    other => return Err(usage(format!("--query {other}: expected ll or marginal"))),
                }
            }
            "--device" => {
                a.device = match value(&mut it)?.as_str() {
                    "auto" => Device::Auto,
                    "cpu" => Device::Cpu,
                    "cuda" | "gpu" => Device::Cuda,
                    other => return Err(usage(format!("--device {other}: expected auto, cpu or cuda"))),
                }
            }
            "--batch" => {
                let v = value(&mut it)?;
                a.batch = match v.parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(usage(format!("--batch {v}: expected a positive integer"))),
                }
            }
            "--bench-latency" => {
                let v = value(&mut it)?;
                a.bench_latency = match v.parse::<usize>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => return Err(usage(format!("--bench-latency {v}: expected a positive number of iterations"))),
                }
            }
            "--json" | "--quiet" | "--info" if inline.is_some() => return Err(usage(format!("{flag} takes no value"))),
            "--json" => a.json = true,
            "--quiet" | "-q" => a.quiet = true,
            "--info" => a.info = true,
            other => return Err(usage(format!("unexpected argument `{other}`"))),
        }
    }
    if a.params.is_none() && !a.info {
        return Err(usage("--params PATH is required (the parameter file of the circuit)"));
    }
    Ok(Some(a))
}

fn archs_text() -> String {
    if cubins::CUBINS.is_empty() {
        "none (NVRTC at run time)".into()
    } else {
        cubins::CUBINS.iter().map(|(a, _)| format!("sm_{a}")).collect::<Vec<_>>().join(", ")
    }
}

/// Write to stdout; a closed pipe ends the program quietly.
fn out(w: &mut impl Write, line: std::fmt::Arguments) -> Result<(), Failure> {
    w.write_fmt(line).and_then(|_| w.write_all(b"\n")).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Failure::ClosedPipe,
        _ => fail(format!("cannot write to stdout: {e}")),
    })
}

fn flush(w: &mut impl Write) -> Result<(), Failure> {
    w.flush().map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Failure::ClosedPipe,
        _ => fail(format!("cannot write to stdout: {e}")),
    })
}

/// The engine (`pc_runtime::Engine`) and where its kernels came from (`embedded sm_90 CUBIN`, or
/// NVRTC / the kernel cache; `cpu`).
struct Running {
    engine: Engine,
    kernels: String,
}

/// The architecture of device 0 (the engine's), e.g. `90`; its context is already current.
fn device_arch() -> Option<String> {
    let ctx = cudarc::driver::CudaContext::new(0).ok()?;
    let (major, minor) = ctx.compute_capability().ok()?;
    Some(format!("{major}{minor}"))
}

fn start_engine(c: &circuit::Circuit, device: Device, quiet: bool) -> Result<Running, Failure> {
    let device = match device {
        Device::Auto => pc_runtime::Device::Auto,
        Device::Cpu => pc_runtime::Device::Cpu,
        Device::Cuda => pc_runtime::Device::Cuda,
    };
    let cache = KernelCache::new(KernelCache::default_dir());
    let gpu = || GpuEngine::with_cubins(c.plan().clone(), c.params().clone(), circuit::CUDA_SOURCE, cubins::CUBINS, circuit::manifest(), &cache);
    let started = Engine::start(device, || c.cpu(), gpu).map_err(|e| fail(e.to_string()))?;
    let kernels = match &started.engine {
        Engine::Cpu(_) => "cpu".to_string(),
        Engine::Gpu(_) => {
            let arch = device_arch().unwrap_or_default();
            match cubins::CUBINS.iter().any(|(a, _)| *a == arch) {
                true => format!("embedded sm_{arch} CUBIN"),
                false => format!("sm_{arch} kernels from NVRTC / the kernel cache"),
            }
        }
    };
    if !quiet {
        match (&started.engine, &started.fallback) {
            (_, Some(why)) => eprintln!("{BIN}: running on the CPU: {why}"),
            (Engine::Gpu(g), None) => eprintln!("{BIN}: running on {} ({kernels})", g.device_name),
            (Engine::Cpu(_), None) => {}
        }
    }
    Ok(Running { engine: started.engine, kernels })
}

/// The samples of `--input` (or stdin), batch by batch, each checked against the circuit. CSV is
/// read as a stream (`--batch` lines at a time, so a pipe gets its answers as rows arrive); an IDX
/// file is read whole (its header gives its size).
struct Input {
    name: String,
    batch: usize,
    plan: pc_runtime::Plan,
    source: Source,
    /// Global index of the next sample.
    next: usize,
}

enum Source {
    Whole(Evidence),
    Csv(CsvStream),
}

struct CsvStream {
    reader: Box<dyn BufRead>,
    marker: String,
    /// Lines read so far (1-based number of the last one).
    line: usize,
    /// The first blank line seen (only trailing blank lines are allowed, as in `pcc`).
    blank: Option<usize>,
}

impl Input {
    fn open(a: &Args) -> Result<Input, Failure> {
        let (name, mut reader): (String, Box<dyn BufRead>) = match &a.input {
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|e| fail(format!("cannot read {}: {e}", p.display())))?;
                (p.display().to_string(), Box::new(BufReader::with_capacity(1 << 20, f)))
            }
            None => ("<stdin>".to_string(), Box::new(BufReader::with_capacity(1 << 20, std::io::stdin()))),
        };
        let read_err = |e: std::io::Error| fail(format!("cannot read {name}: {e}"));
        let format = match a.format {
            Some(f) => f,
            None => match dataset::is_idx(reader.fill_buf().map_err(read_err)?) {
                true => Format::Idx,
                false => Format::Csv,
            },
        };
        let source = match format {
            Format::Idx => {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).map_err(read_err)?;
                let (ev, _) = dataset::idx_images_from_bytes(Path::new(&name), &bytes)?;
                Source::Whole(ev)
            }
            Format::Csv => Source::Csv(CsvStream { reader, marker: a.missing_marker.clone(), line: 0, blank: None }),
            Format::Soft => {
                let mut text = String::new();
                reader.read_to_string(&mut text).map_err(read_err)?;
                let ev = pc_runtime::soft::evidence_from_soft_csv(&text, &circuit::plan().domains).map_err(|e| fail(format!("{name}: {e}")))?;
                Source::Whole(ev)
            }
        };
        Ok(Input { name, batch: a.batch, plan: circuit::plan(), source, next: 0 })
    }

    /// The next batch and its first sample's global index; `None` at the end. An input without a
    /// single sample is an error.
    fn next_batch(&mut self) -> Result<Option<(usize, Evidence)>, Failure> {
        let start = self.next;
        let (ev, first_line) = match &mut self.source {
            Source::Whole(ev) => {
                let end = (start + self.batch).min(ev.num_samples());
                (ev.slice(start, end), None)
            }
            Source::Csv(csv) => match csv.next_chunk(&self.name, self.batch)? {
                Some((ev, line)) => (ev, Some(line)),
                None => (Evidence { num_vars: circuit::NUM_VARS, values: Vec::new(), missing: None, soft: None }, None),
            },
        };
        if ev.num_samples() == 0 {
            if start == 0 {
                return Err(fail(format!("{} holds no samples", self.name)));
            }
            return Ok(None);
        }
        let at = match first_line {
            Some(l) => format!("{}, line {l}", self.name),
            None => self.name.clone(),
        };
        if ev.num_vars != circuit::NUM_VARS {
            return Err(fail(format!(
                "{at}: each sample has {} values, but the circuit has {} variables (compiled from {})",
                ev.num_vars,
                circuit::NUM_VARS,
                cubins::MODEL
            )));
        }
        if let Err(e) = ev.validate(&self.plan) {
            // Sample indices of the whole input (and the CSV line), not of this batch.
            use pc_runtime::RuntimeError as E;
            let (local, e) = match e {
                E::NonFiniteValue { sample, var } => (sample, E::NonFiniteValue { sample: sample + start, var }),
                E::CategoryOutOfRange { sample, var, value, num_cats } => (sample, E::CategoryOutOfRange { sample: sample + start, var, value, num_cats }),
                E::NotACategory { sample, var, value } => (sample, E::NotACategory { sample: sample + start, var, value }),
                other => (0, other),
            };
            let at = match first_line {
                Some(l) => format!("{}, line {}", self.name, l + local),
                None => self.name.clone(),
            };
            return Err(fail(format!("{at}: {e}")));
        }
        self.next += ev.num_samples();
        Ok(Some((start, ev)))
    }
}

impl CsvStream {
    /// Up to `batch` samples and the line number of the first; `None` at the end.
    fn next_chunk(&mut self, name: &str, batch: usize) -> Result<Option<(Evidence, usize)>, Failure> {
        let mut chunk = Vec::new();
        let mut line = Vec::new();
        let (mut rows, mut first) = (0, 0);
        while rows < batch {
            line.clear();
            let n = self.reader.read_until(b'\n', &mut line).map_err(|e| fail(format!("cannot read {name}: {e}")))?;
            if n == 0 {
                break;
            }
            self.line += 1;
            if line.trim_ascii().is_empty() {
                self.blank.get_or_insert(self.line);
                continue;
            }
            if let Some(b) = self.blank {
                return Err(fail(format!("{name}, line {b}, column 1: blank line between samples (only trailing blank lines are allowed)")));
            }
            if rows == 0 {
                first = self.line;
            }
            chunk.extend_from_slice(&line);
            if !line.ends_with(b"\n") {
                chunk.push(b'\n');
            }
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        let ev = dataset::csv_auto_from_bytes(Path::new(name), &chunk, &self.marker).map_err(|e| {
            // Line numbers of the whole input, not of this chunk.
            use dataset::DataError as D;
            let by = first - 1;
            match e {
                D::Malformed { path, line, column, detail } => D::Malformed { path, line: line + by, column, detail },
                D::OutOfRange { path, line, column, value, allowed } => D::OutOfRange { path, line: line + by, column, value, allowed },
                D::Ragged { path, line, expected, found } => D::Ragged { path, line: line + by, expected, found },
                other => other,
            }
        })?;
        Ok(Some((ev, first)))
    }
}

fn info(json: bool) -> Result<(), Failure> {
    let mut w = std::io::stdout().lock();
    let archs: Vec<&str> = cubins::CUBINS.iter().map(|(a, _)| *a).collect();
    if json {
        let v = serde_json::json!({
            "model": cubins::MODEL,
            "num_vars": circuit::NUM_VARS,
            "num_sum_edges": circuit::NUM_SUM_EDGES,
            "num_params": circuit::NUM_PARAMS,
            "cuda_source_bytes": circuit::CUDA_SOURCE.len(),
            "cubin_archs": archs,
            "requested_archs": cubins::REQUESTED_ARCHS,
            "nvrtc_at_build": cubins::NVRTC_AT_BUILD,
            "cubin_bytes": cubins::CUBINS.iter().map(|(_, b)| b.len()).collect::<Vec<_>>(),
        });
        out(&mut w, format_args!("{v}"))
    } else {
        out(&mut w, format_args!("circuit compiled from {}", cubins::MODEL))?;
        out(&mut w, format_args!("{} variables, {} sum edges, {} parameters", circuit::NUM_VARS, circuit::NUM_SUM_EDGES, circuit::NUM_PARAMS))?;
        out(&mut w, format_args!("embedded CUDA source: {} bytes", circuit::CUDA_SOURCE.len()))?;
        out(&mut w, format_args!("embedded CUBINs: {}", archs_text()))?;
        let nvrtc = if cubins::NVRTC_AT_BUILD { "available" } else { "not available" };
        out(&mut w, format_args!("requested architectures: {:?}; NVRTC at build time: {nvrtc}", cubins::REQUESTED_ARCHS))
    }
}

/// Microseconds, to 0.01 µs.
fn us(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e6)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The sample at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn median(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// `--bench-latency`: host-to-host latency of `log_likelihood` at batch 1 and 8.
fn bench(engine: &mut Engine, ev: &Evidence, iters: usize, w: &mut impl Write) -> Result<(), Failure> {
    const WARMUP: usize = 10;
    let device = engine.device_name();
    for batch in [1usize, 8] {
        // The first rows of the input, repeated if it has fewer.
        let rows: Vec<usize> = (0..batch).map(|i| i % ev.num_samples()).collect();
        let b = ev.select(&rows);
        let modes: &[Option<bool>] = match engine {
            Engine::Gpu(..) => &[Some(true), Some(false)],
            Engine::Cpu(_) => &[None],
        };
        for &graphs in modes {
            if let (Engine::Gpu(g), Some(on)) = (&mut *engine, graphs) {
                g.set_graphs(on);
            }
            let mut times = Vec::with_capacity(iters);
            for i in 0..WARMUP + iters {
                let t = Instant::now();
                let lls = engine.log_likelihood(&b)?;
                let dt = t.elapsed();
                std::hint::black_box(lls);
                if i >= WARMUP {
                    times.push(dt.as_secs_f64() * 1e6);
                }
            }
            times.sort_by(f64::total_cmp);
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            let v = serde_json::json!({
                "bench": "latency",
                "model": cubins::MODEL,
                "device": device,
                "cuda_graphs": graphs,
                "batch": batch,
                "iters": iters,
                "median_us": round(median(&times)),
                "p10_us": round(quantile(&times, 0.1)),
                "p90_us": round(quantile(&times, 0.9)),
                "min_us": round(times[0]),
                "mean_us": round(mean),
            });
            out(w, format_args!("{v}"))?;
        }
    }
    Ok(())
}

fn run(t_main: Instant) -> Result<(), Failure> {
    let Some(a) = parse_args(std::env::args().skip(1))? else { return Ok(()) };
    if a.info {
        return info(a.json);
    }
    let params = a.params.clone().expect("checked by parse_args");
    let params = if params.is_dir() { params.join("params.safetensors") } else { params };
    let t0 = Instant::now();
    let c = circuit::Circuit::load(&params).map_err(|e| match e {
        pc_runtime::RuntimeError::Io { source, .. } => fail(format!("cannot read parameter file {}: {source}", params.display())),
        e => {
            // Most parameter errors name the file already.
            let (msg, path) = (e.to_string(), params.display().to_string());
            fail(if msg.contains(&path) { msg } else { format!("{path}: {msg}") })
        }
    })?;
    let t_params = t0.elapsed();
    let t0 = Instant::now();
    let Running { mut engine, kernels } = start_engine(&c, a.device, a.quiet)?;
    let t_engine = t0.elapsed();
    let t_ready = t_main.elapsed();
    let mut input = Input::open(&a)?;
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());

    if let Some(iters) = a.bench_latency {
        let mut v = serde_json::json!({
            "bench": "startup",
            "model": cubins::MODEL,
            "device": engine.device_name(),
            "kernels": kernels,
            "params_load_us": us(t_params),
            "engine_us": us(t_engine),
            "ready_since_main_us": us(t_ready),
        });
        if let Engine::Gpu(g) = &engine {
            let s = g.startup();
            let fields = [
                ("validate_us", s.validate),
                ("context_us", s.context),
                ("kernels_us", s.kernels),
                ("upload_us", s.upload),
                ("leaf_table_us", s.leaf_table),
                ("startup_total_us", s.total()),
            ];
            for (k, d) in fields {
                v[k] = serde_json::json!(us(d));
            }
        }
        out(&mut w, format_args!("{v}"))?;
        let (_, ev) = input.next_batch()?.expect("an empty input is an error");
        bench(&mut engine, &ev, iters, &mut w)?;
        return flush(&mut w);
    }

    let (mut n, mut sum) = (0usize, 0f64);
    while let Some((start, ev)) = input.next_batch()? {
        let end = start + ev.num_samples();
        let lls = engine.log_likelihood(&ev).map_err(|e| fail(format!("{}: samples {start}..{end}: {e}", input.name)))?;
        for (i, ll) in lls.iter().enumerate() {
            let s = start + i;
            sum += *ll as f64;
            match (a.query, a.json) {
                (Query::Ll, false) => out(&mut w, format_args!("sample {s}: log-likelihood = {ll:.6}"))?,
                (Query::Marginal, false) => out(&mut w, format_args!("sample {s}: log p(evidence) = {ll:.6}"))?,
                (Query::Ll, true) => out(&mut w, format_args!("{}", serde_json::json!({ "sample": s, "log_likelihood": ll })))?,
                (Query::Marginal, true) => out(&mut w, format_args!("{}", serde_json::json!({ "sample": s, "log_marginal": ll })))?,
            }
        }
        n = end;
        // Answers leave as each batch is done (the input may be a live stream).
        flush(&mut w)?;
    }
    if a.query == Query::Ll && !a.quiet && n > 0 {
        // The summary `pcc eval` prints.
        let avg = sum / n as f64;
        let bpd = -avg / (circuit::NUM_VARS as f64 * std::f64::consts::LN_2);
        eprintln!("average log-likelihood {avg:.4} nats, {bpd:.4} bits per dimension, {n} samples");
    }
    Ok(())
}

fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let t_main = Instant::now();
    restore_sigpipe();
    match run(t_main) {
        Ok(()) | Err(Failure::ClosedPipe) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("{BIN}: error: {msg}\n(run `{BIN} --help` for the flags)");
            ExitCode::from(2)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("{BIN}: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Device, Query, circuit, median, parse_args, quantile};
    use pc_runtime::Evidence;

    #[test]
    fn embedded_circuit_is_normalized() {
        let engine = circuit::Circuit::random(1).cpu().unwrap();
        let nv = circuit::NUM_VARS;
        assert_eq!(nv, 3, "the default model is models/mixture");
        let mut values = Vec::new();
        for a in 0..3 {
            for b in 0..2 {
                for c in 0..3 {
                    values.extend([a as f32, b as f32, c as f32]);
                }
            }
        }
        let lls = engine.log_likelihood(&Evidence::new(3, values).unwrap()).unwrap();
        let total: f64 = lls.iter().map(|&l| (l as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert!(!circuit::manifest().forward.is_empty());
        assert!(circuit::CUDA_SOURCE.contains("__global__"));
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags() {
        let a = parse_args(args(&["--params", "p", "--input=-", "--query", "marginal", "--device=cpu", "--batch", "7", "--json"]).into_iter())
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(a.input, None);
        assert_eq!((a.query, a.device, a.batch, a.json), (Query::Marginal, Device::Cpu, 7, true));
        assert!(parse_args(args(&["--batch", "0", "--params", "p"]).into_iter()).is_err());
        assert!(parse_args(args(&["--params"]).into_iter()).is_err());
        assert!(parse_args(args(&["--input", "x"]).into_iter()).is_err(), "--params is required");
        assert!(parse_args(args(&["--params", "p", "--bogus"]).into_iter()).is_err());
    }

    #[test]
    fn statistics() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0];
        assert_eq!(median(&v), 6.0);
        assert_eq!(median(&v[..4]), 2.5);
        assert_eq!(quantile(&v, 0.1), 2.0);
        assert_eq!(quantile(&v, 0.9), 10.0);
    }

    /// When NVRTC was loadable at build time, a CUBIN is embedded for every requested architecture
    /// (`sm_90` by default), and each is an ELF file.
    #[test]
    fn embedded_cubins_are_cubins() {
        let embedded: Vec<&str> = super::cubins::CUBINS.iter().map(|(a, _)| *a).collect();
        if super::cubins::NVRTC_AT_BUILD {
            assert_eq!(embedded, super::cubins::REQUESTED_ARCHS);
        } else {
            assert!(embedded.is_empty());
        }
        for (arch, bytes) in super::cubins::CUBINS {
            assert!(bytes.starts_with(b"\x7fELF"), "sm_{arch}: not an ELF CUBIN");
        }
    }
}

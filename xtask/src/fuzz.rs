//! `cargo xtask fuzz [--minutes N] [TARGET...]`: builds the libFuzzer targets of tests/fuzz (a
//! workspace of its own) on stable Rust, seeds each corpus from tests/fuzz/seeds and the test
//! fixtures, runs each target for N minutes, and fails if any target found a crash, a panic, a
//! timeout or an out-of-memory input, naming the artifact that reproduces it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::setup::Workspace;

/// Every target, and the fixture file extensions that seed it.
const TARGETS: &[(&str, &[&str])] = &[
    ("image", &["png", "jpg", "jpeg"]),
    ("pickle", &["pkl", "sav", "joblib"]),
    ("joblib", &["sav", "joblib", "pkl"]),
    ("torch_zip", &["pth", "pt", "ckpt"]),
    ("safetensors", &["safetensors"]),
];

/// The instrumentation cargo-fuzz asks of rustc, which stable rustc accepts too.
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
     -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
     -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing";

/// An input that runs longer than this, in seconds, is a finding.
const TIMEOUT_S: u32 = 10;
/// A process that grows past this RSS, in MiB, is a finding.
const RSS_LIMIT_MB: u32 = 2048;
/// Larger fixtures slow every execution down and are left out of the seeds.
const MAX_SEED_BYTES: u64 = 1 << 20;
/// The largest input libFuzzer generates (it starts small and grows toward this).
const MAX_LEN: u32 = 64 << 10;

struct Outcome {
    target: &'static str,
    seconds: f64,
    runs: Option<u64>,
    finding: Option<String>,
}

pub fn fuzz(ws: &Workspace, args: &[&str]) -> Result<()> {
    let (minutes, targets) = parse_args(args)?;
    let dir = ws.root.join("tests").join("fuzz");
    let triple = host_triple()?;
    build(&dir, &triple, &targets)?;
    let mut outcomes = Vec::new();
    for &target in &targets {
        let corpus = seed(ws, &dir, target)?;
        let binary = dir.join("target").join(&triple).join("release").join(target);
        outcomes.push(run_target(&dir, &binary, target, &corpus, minutes)?);
    }
    println!("\n{:<12} {:>8} {:>12} {:>8}  findings", "target", "seconds", "runs", "exec/s");
    for o in &outcomes {
        let runs = o.runs.map_or("?".to_string(), |r| r.to_string());
        let rate = o.runs.map_or("?".to_string(), |r| format!("{:.0}", r as f64 / o.seconds.max(1e-3)));
        let finding = o.finding.as_deref().unwrap_or("none");
        println!("{:<12} {:>8.0} {:>12} {:>8}  {finding}", o.target, o.seconds, runs, rate);
    }
    let found: Vec<_> = outcomes.iter().filter(|o| o.finding.is_some()).map(|o| o.target).collect();
    if !found.is_empty() {
        bail!(
            "fuzzing found inputs that fail in: {}; reproduce one with tests/fuzz/target/{triple}/release/TARGET ARTIFACT",
            found.join(", ")
        );
    }
    Ok(())
}

fn parse_args(args: &[&str]) -> Result<(f64, Vec<&'static str>)> {
    let mut minutes = 2.0;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        if arg == "--minutes" {
            let value = args.next().context("--minutes needs a number, e.g. --minutes 5")?;
            minutes =
                value.parse().ok().filter(|m: &f64| *m > 0.0).with_context(|| {
                    format!("--minutes takes a positive number of minutes per target, not '{value}'")
                })?;
        } else if let Some(&(name, _)) = TARGETS.iter().find(|(name, _)| *name == arg) {
            targets.push(name);
        } else {
            let names: Vec<_> = TARGETS.iter().map(|(name, _)| *name).collect();
            bail!("unknown fuzz target or option '{arg}'; the targets are {}", names.join(", "));
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|(name, _)| *name).collect();
    }
    Ok((minutes, targets))
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    let text = String::from_utf8(out.stdout)?;
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV did not print the host triple")
}

fn build(dir: &Path, triple: &str, targets: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // An explicit --target keeps the instrumentation off build scripts and proc macros, which
    // are not linked with libFuzzer.
    cmd.args(["build", "--release", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .args(["--target", triple, "--target-dir"])
        .arg(dir.join("target"))
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for target in targets {
        cmd.args(["--bin", target]);
    }
    eprintln!("xtask: building the fuzz targets (instrumented, release)");
    let status = cmd.status().context("running cargo build for tests/fuzz")?;
    if !status.success() {
        bail!("building the fuzz targets failed; see the compiler output above");
    }
    Ok(())
}

/// Fills tests/fuzz/corpus/TARGET with the committed seeds and the fixtures of tests/work whose
/// extension the target reads. The corpus keeps what earlier runs found.
fn seed(ws: &Workspace, dir: &Path, target: &str) -> Result<PathBuf> {
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    let extensions = TARGETS.iter().find(|(name, _)| *name == target).map_or(&[][..], |(_, e)| e);
    let mut files = Vec::new();
    collect(&dir.join("seeds").join(target), &[], &mut files);
    collect(&ws.root.join("tests").join("work"), extensions, &mut files);
    let mut copied = 0;
    for file in files {
        let small = std::fs::metadata(&file).is_ok_and(|m| m.len() <= MAX_SEED_BYTES);
        let rel = file.strip_prefix(&ws.root).unwrap_or(&file);
        let name = format!("seed-{}", rel.to_string_lossy().replace(['/', '\\'], "_"));
        if small && std::fs::copy(&file, corpus.join(name)).is_ok() {
            copied += 1;
        }
    }
    eprintln!("xtask: {target}: {copied} seed files in {}", corpus.display());
    Ok(corpus)
}

/// Files under `dir`, recursively, with one of `extensions` (any, if empty).
fn collect(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, extensions, out);
        } else {
            let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            let wanted = extensions.is_empty() && ext.as_deref() != Some("py")
                || ext.as_deref().is_some_and(|e| extensions.contains(&e));
            if wanted {
                out.push(path);
            }
        }
    }
}

fn run_target(dir: &Path, binary: &Path, target: &'static str, corpus: &Path, minutes: f64) -> Result<Outcome> {
    let artifacts = dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let log_path = dir.join("target").join(format!("fuzz-{target}.log"));
    let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let seconds = (minutes * 60.0).round().max(1.0) as u64;
    eprintln!("xtask: fuzzing {target} for {seconds} s (log: {})", log_path.display());
    let start = Instant::now();
    let status = Command::new(binary)
        .arg(corpus)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={TIMEOUT_S}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg("-print_final_stats=1")
        // libFuzzer appends the file name to the prefix; the trailing slash makes it a folder.
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    let elapsed = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let runs = text
        .lines()
        .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .find_map(|v| v.trim().parse().ok())
        .or_else(|| {
            text.lines().filter_map(|l| l.strip_prefix("Done ")).find_map(|l| l.split(' ').next()?.parse().ok())
        });
    let finding = if status.success() {
        None
    } else {
        // The first that matches says what libFuzzer (or the panic hook) reported.
        let kinds = [
            ("panicked", "panic"),
            ("has overflowed its stack", "stack overflow"),
            ("libFuzzer: timeout", "timeout"),
            ("libFuzzer: out-of-memory", "out of memory"),
            ("deadly signal", "crash"),
        ];
        let kind = kinds.iter().find(|(k, _)| text.contains(k)).map_or("failure", |(_, kind)| kind);
        let artifact = text
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .map_or_else(|| format!("no artifact; see {}", log_path.display()), str::to_string);
        Some(format!("{kind} ({status}): {artifact}"))
    };
    Ok(Outcome { target, seconds: elapsed, runs, finding })
}

//! Project tasks: `cargo xtask <task>`.
//!
//!   demo           set up, then extract embeddings from a generated sample dataset
//!   test           set up, generate the parity fixtures, then run every test
//!   setup          only the set-up (system packages, Python venv, release build, plugins)
//!   bench vision   deepembed against a DeepTune-like Python pipeline (see docs/BENCHMARKS.md);
//!                  with --model-only, against the model alone on random tensors (the ceiling)
//!   bench text     the same for text: all-MiniLM-L6-v2 and a GPT-2-sized model
//!   bench tabular  a GANDALF against pytorch-tabular's own inference path
//!   bench timeseries  a DeepAR against pytorch-forecasting's own forward
//!   bench tabpfn   a TabPFN classifier against tabpfn's own embedding path (DeepTune's)
//!   bench resume   merge speed on 100k vision rows, and what picking up a killed run costs
//!   bench precision  --precision bf16 against fp32 on the CPU: speed and drift per model
//!   bench loading  seconds and peak RSS of loading ViT-B/16, VGG-16 and a BERT-base-sized model;
//!                  `--plugins DIR` alternates with another build's plugins
//!   gpu-check      on a CUDA device: the model alone against the whole command, fp16/bf16 drift
//!                  (bench/gpu_check.sh; needs an NVIDIA GPU); `gpu-check --bundle DIR` instead
//!                  builds what the check needs into DIR, to carry to a GPU machine
//!   fuzz           libFuzzer over the image, pickle, joblib, torch zip and safetensors readers:
//!                  `fuzz [--minutes N] [TARGET...]`, N minutes per target (default 2)

mod fuzz;
mod gpu_bundle;
mod setup;

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};
use setup::{run, Workspace};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ws = Workspace::locate();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["setup"] => setup::setup(&ws),
        ["demo"] => demo(&ws),
        ["test", rest @ ..] => test(&ws, rest),
        ["bench", kind @ ("vision" | "text" | "tabular" | "timeseries" | "tabpfn" | "resume" | "precision" | "loading"), rest @ ..] => {
            bench(&ws, kind, rest)
        }
        ["gpu-check", rest @ ..] => gpu_check(&ws, rest),
        ["fuzz", rest @ ..] => fuzz::fuzz(&ws, rest),
        _ => bail!(
            "usage: cargo xtask <demo | test [test filter] | setup | bench vision|text|tabular|timeseries|tabpfn|resume|precision|loading [options] | gpu-check [--bundle DIR] | fuzz [--minutes N] [TARGET...]>"
        ),
    }
}

fn demo(ws: &Workspace) -> Result<()> {
    setup::setup(ws)?;
    let demo = ws.root.join("target").join("demo");
    // The generator prints the directory of the real MiniLM model it ships with.
    let generated = ws.command(ws.python())?.arg("tests/python/gen_demo.py").arg(&demo).output()?;
    if !generated.status.success() {
        bail!("generating the demo data failed:\n{}", String::from_utf8_lossy(&generated.stderr));
    }
    let minilm = String::from_utf8(generated.stdout)?.trim().to_string();
    let out = demo.join("deeptune_results");
    let [images, resnet, texts, table, gandalf, vitals, deepar] = [
        "images.parquet",
        "resnet18-random-weights.pth",
        "texts.parquet",
        "table.parquet",
        "gandalf",
        "vitals.parquet",
        "deepar",
    ]
    .map(|name| demo.join(name).display().to_string());
    let runs = [
        (
            "image embeddings (random-weight ResNet-18)",
            vec![
                "vision",
                "--model_version",
                "resnet18",
                "--batch_size",
                "16",
                "--df",
                &images,
                "--model_weights",
                &resnet,
            ],
        ),
        (
            "text embeddings (all-MiniLM-L6-v2, real)",
            vec!["mbert", "--use_case", "pretrained", "--model_weights", &minilm, "--df", &texts],
        ),
        (
            "tabular embeddings (GANDALF trained on the table)",
            vec![
                "gandalf",
                "--model_weights",
                &gandalf,
                "--tabular_target_column",
                "outcome",
                "--grouper",
                "patient_id",
                "--df",
                &table,
            ],
        ),
        (
            "time-series embeddings (DeepAR trained on the vitals)",
            vec![
                "deepar",
                "--model_weights",
                &deepar,
                "--time_idx_column",
                "timestamp",
                "--group_ids",
                "patient",
                "--df",
                &vitals,
            ],
        ),
    ];
    let mut written = Vec::new();
    for (what, args) in runs {
        let status = Command::new(ws.binary()).arg("embed").args(args).arg("--out").arg(&out).status()?;
        if !status.success() {
            bail!("the demo's {what} failed");
        }
        written.push((what, newest_dir(&out)?));
    }
    println!("\nDemo output:");
    for (what, dir) in written {
        println!("  {what:<54} {}", dir.display());
    }
    println!("Run `{} plugins` to see what is installed.", ws.binary().display());
    Ok(())
}

fn newest_dir(dir: &Path) -> Result<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).collect();
    dirs.sort_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    dirs.last().map(|e| e.path()).ok_or_else(|| anyhow::anyhow!("no output in {}", dir.display()))
}

/// Generates fixtures (only when a generator or the requirements changed), then runs every
/// test of the workspace in release mode, so test builds reuse the release artifacts.
fn test(ws: &Workspace, filter: &[&str]) -> Result<()> {
    setup::setup(ws)?;
    setup::test_packages()?;
    let work = ws.root.join("tests").join("work");
    generate_fixtures(ws, &work)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    build_third_party_plugins(ws, &cargo)?;
    if filter.is_empty() {
        hygiene(ws, &cargo)?;
    }
    let mut cmd = ws.command(&cargo)?;
    cmd.args(["test", "--release", "--workspace", "--exclude", "xtask"])
        .env("DEEPEMBED_TEST_DATA", &work)
        .env("DEEPEMBED_PYTHON", ws.python())
        .env("DEEPEMBED_BIN", ws.binary());
    if !filter.is_empty() {
        cmd.arg("--").args(filter);
    }
    run(&mut cmd)
}

/// Formatting, lints and unused dependencies, as part of the tests: rustfmt and clippy on both
/// workspaces (warnings are errors), and cargo-machete (installed on first use) for
/// dependencies no code uses.
fn hygiene(ws: &Workspace, cargo: &str) -> Result<()> {
    let plugins = ws.root.join("tests").join("plugins").join("Cargo.toml");
    run(ws.command(cargo)?.args(["fmt", "--all", "--check"]))?;
    run(ws.command(cargo)?.args(["fmt", "--all", "--check", "--manifest-path"]).arg(&plugins))?;
    run(ws.command(cargo)?.args(["clippy", "--release", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    run(ws
        .command(cargo)?
        .args(["clippy", "--release", "--all-targets", "--manifest-path"])
        .arg(&plugins)
        .arg("--target-dir")
        .arg(ws.root.join("target"))
        .args(["--", "-D", "warnings"]))?;
    if !setup::has_cargo_tool("cargo-machete") {
        run(ws.command(cargo)?.args(["install", "--locked", "--quiet", "cargo-machete@0.9.2"]))?;
    }
    // With CARGO set (as under `cargo xtask`), cargo-machete takes its first argument for the
    // subcommand name `machete` and drops it.
    run(ws.command("cargo-machete")?.env_remove("CARGO").arg(&ws.root))
}

/// The plugins of tests/plugins: a workspace of its own, depending only on the SDK. Built with the
/// host's lock file and target directory so the shared dependencies are not compiled twice.
fn build_third_party_plugins(ws: &Workspace, cargo: &str) -> Result<()> {
    let dir = ws.root.join("tests").join("plugins");
    std::fs::copy(ws.root.join("Cargo.lock"), dir.join("Cargo.lock"))?;
    run(ws
        .command(cargo)?
        .args(["build", "--release", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(ws.root.join("target")))
}

fn generate_fixtures(ws: &Workspace, work: &Path) -> Result<()> {
    // Each generator writes its fixtures into its own folder under `work`.
    let generators = [
        ("gen_vision.py", "vision"),
        ("gen_checkpoints.py", "checkpoints"),
        ("gen_text.py", "text"),
        ("gen_tabular.py", "tabular"),
        ("gen_timeseries.py", "timeseries"),
        ("gen_tabpfn.py", "tabpfn"),
    ];
    let python_dir = ws.root.join("tests").join("python");
    // Both reference stacks, every generator and the modules they import (vision_families/*.py).
    let mut fingerprint = std::fs::read_to_string(ws.requirements())?;
    fingerprint.push_str(&std::fs::read_to_string(ws.tabpfn_requirements())?);
    for file in python_files(&python_dir)? {
        fingerprint.push_str(&file.display().to_string());
        fingerprint.push_str(&std::fs::read_to_string(&file)?);
    }
    let stamp = work.join(".generated-by");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(fingerprint.as_str()) {
        eprintln!("xtask: fixtures in {} are up to date", work.display());
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    setup::tabpfn_reference(ws)?;
    for (generator, folder) in generators {
        let mut cmd = ws.command(ws.python())?;
        if generator == "gen_tabpfn.py" {
            // tabpfn's stack in front of the venv; and tabpfn must not phone home.
            cmd.env("PYTHONPATH", ws.tabpfn_libs()).env("TABPFN_DISABLE_TELEMETRY", "1");
        }
        run(cmd.arg(python_dir.join(generator)).arg(work.join(folder)))?;
    }
    std::fs::write(stamp, fingerprint)?;
    Ok(())
}

/// The `.py` files under `dir`, recursively, in a fixed order.
fn python_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(python_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "py") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn bench(ws: &Workspace, kind: &str, rest: &[&str]) -> Result<()> {
    setup::setup(ws)?;
    if kind == "vision" && rest.contains(&"--model-only") {
        return bench_model_only(ws, rest.iter().filter(|a| **a != "--model-only"));
    }
    if kind == "tabpfn" {
        // Its Python side is tabpfn's own, from the reference stack bench_tabpfn.py finds in
        // .venv-tabpfn (not in the main venv).
        setup::tabpfn_reference(ws)?;
    }
    run(ws
        .command(ws.python())?
        .arg(format!("bench/bench_{kind}.py"))
        .arg("--deepembed")
        .arg(ws.binary())
        .arg("--work")
        .arg(ws.root.join("target").join("bench"))
        .args(rest))
}

/// The model alone against the whole command (bench/model_only.py), with the plugin's
/// `model_only` example as the model-alone side.
fn bench_model_only<'a>(ws: &Workspace, rest: impl Iterator<Item = &'a &'a str>) -> Result<()> {
    run(ws.command("cargo")?.args(["build", "--release", "-q", "-p", "deepembed-vision", "--examples"]))?;
    run(ws
        .command(ws.python())?
        .arg("bench/model_only.py")
        .arg("--deepembed")
        .arg(ws.binary())
        .arg("--example")
        .arg(ws.root.join("target/release/examples/model_only"))
        .arg("--work")
        .arg(ws.root.join("target").join("bench"))
        .args(rest))
}

/// The GPU check (bench/gpu_check.sh) with every section: the examples it runs, the vision
/// fixtures for the device preprocessing check, and the benchmark GANDALF (trained here, where
/// pytorch-tabular is installed; a GPU machine may lack it).
fn gpu_check(ws: &Workspace, rest: &[&str]) -> Result<()> {
    setup::setup(ws)?;
    let work = ws.root.join("tests").join("work");
    generate_fixtures(ws, &work)?;
    run(ws.command("cargo")?.args(["build", "--release", "-q", "-p", "deepembed-vision", "--examples"]))?;
    let gandalf_model = ws.root.join("target").join("bench").join("gpu-gandalf").join("model");
    if let ["--bundle", dir] = rest {
        return gpu_bundle::bundle(ws, Path::new(dir), &gandalf_model);
    }
    // `python3` in the script is the venv's: ws.command puts it first on PATH.
    run(ws
        .command("bash")?
        .arg(ws.root.join("bench").join("gpu_check.sh"))
        .arg(ws.binary())
        .args(rest)
        .env("PREPROCESS_FIXTURES", work.join("vision"))
        .env("GANDALF_MODEL", gandalf_model))
}

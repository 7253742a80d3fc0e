//! `cargo xtask gpu-check --bundle DIR`: everything the GPU check needs from this machine, in one
//! folder small enough to carry to a GPU machine that cannot build or reach anything.
//!
//! The GPU machine has its own Python with torch, but no Rust toolchain and no pytorch-tabular.
//! So the binaries are built here (stripped), the device preprocessing fixtures and the
//! benchmark GANDALF are made here, and all of it goes into `DIR/bundle.tgz` with `DIR/run.sh`.
//! On the GPU machine, from a checkout of the same commit:
//!
//!   ONLY=decoding,vision bash DIR/run.sh        (any gpu_check.sh variables; no ONLY: all)

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::setup::{plugin_library, run, Workspace};

/// The plugins the check runs: vision (preprocessing, decoding, the table, drift), mbert (text),
/// gpt2 (drift) and gandalf (tabular).
const PLUGINS: [&str; 4] = ["vision", "mbert", "gpt2", "gandalf"];
const EXAMPLES: [&str; 4] = ["model_only", "device_preprocess", "decode_scaling", "device_resize"];

pub fn bundle(ws: &Workspace, out: &Path, gandalf_model: &Path) -> Result<()> {
    if !gandalf_model.is_dir() {
        let work = gandalf_model.parent().context("the GANDALF model's directory")?;
        run(ws
            .command(ws.python())?
            .arg("-c")
            .arg("import sys; sys.path.insert(0, 'bench'); from bench_tabular import make_model; make_model(sys.argv[1], [])")
            .arg(work))?;
    }
    let staging = out.join("staging");
    let _ = std::fs::remove_dir_all(&staging);
    let (bin, plugins, examples) = (staging.join("bin"), staging.join("bin/plugins"), staging.join("bin/examples"));
    for dir in [&plugins, &examples, &staging.join("fixtures/vision"), &staging.join("gandalf")] {
        std::fs::create_dir_all(dir)?;
    }
    let release = ws.release();
    stripped(&ws.binary(), &bin.join("deepembed"))?;
    for name in PLUGINS {
        let file = plugin_library(name);
        stripped(&release.join("plugins").join(&file), &plugins.join(&file))?;
    }
    for name in EXAMPLES {
        stripped(&release.join("examples").join(name), &examples.join(name))?;
    }
    let vision = ws.root.join("tests/work/vision");
    for file in ["images.parquet", "preprocessed.f32"] {
        std::fs::copy(vision.join(file), staging.join("fixtures/vision").join(file))
            .with_context(|| format!("copying {}", vision.join(file).display()))?;
    }
    run(Command::new("cp").arg("-r").arg(gandalf_model).arg(staging.join("gandalf/model")))?;
    let archive = out.join("bundle.tgz");
    run(Command::new("tar").arg("czf").arg(&archive).arg("-C").arg(&staging).arg("."))?;
    std::fs::remove_dir_all(&staging)?;
    std::fs::write(out.join("run.sh"), RUN_SH)?;
    let size = std::fs::metadata(&archive)?.len() as f64 / (1 << 20) as f64;
    eprintln!(
        "xtask: {} ({size:.1} MiB) and run.sh; on the GPU machine: bash {}/run.sh",
        archive.display(),
        out.display()
    );
    Ok(())
}

fn stripped(from: &Path, to: &Path) -> Result<()> {
    run(Command::new("strip").arg("-o").arg(to).arg(from))
}

const RUN_SH: &str = r#"#!/usr/bin/env bash
# Written by `cargo xtask gpu-check --bundle`: unpacks bundle.tgz and runs bench/gpu_check.sh on
# it. Run from the repository root of the same commit; gpu_check.sh's variables (ONLY, MODELS,
# PRECISIONS, BATCH, ...) pass through.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
unpacked="$(mktemp -d)"
trap 'rm -rf "$unpacked"' EXIT
tar xzf "$here/bundle.tgz" -C "$unpacked"
PREPROCESS_FIXTURES="$unpacked/fixtures/vision" GANDALF_MODEL="$unpacked/gandalf/model" \
    bash bench/gpu_check.sh "$unpacked/bin/deepembed" "$@"
"#;

//! `deepembed slurm --shards N [sbatch options] -- embed <plugin> ...`: one extraction as a Slurm
//! array job of N shards and a merge job that runs when every shard succeeded.
//!
//! Each array task runs the embed command with `--shard slurm --out <OUT>/shards_<stamp>`; the
//! merge job (`--dependency=afterok`) runs `deepembed merge` on that directory into `<OUT>` (the
//! command's own `--out`, default `deeptune_results`). The user's sbatch options (GPUs, memory,
//! time, partition, account) go to the array job unchanged; the merge job, which needs no GPU,
//! gets only the partition, account and QOS among them. Tasks are requeued on pre-emption
//! (`--requeue`): a task killed part-way leaves no finished run directory (its directory is
//! removed on SIGTERM, and one cut by SIGKILL has no embedding_details.json, which merge
//! ignores), so its requeued run starts the shard again.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// What `deepembed slurm` was asked to submit.
struct Submission {
    shards: u64,
    dry_run: bool,
    sbatch: Vec<String>,
    embed: Vec<String>,
}

/// sbatch options that the merge job keeps: where and on whose account it runs.
const MERGE_KEEPS: &[&str] = &["--partition", "-p", "--account", "-A", "--qos", "-q", "--clusters", "-M"];

pub fn run(args: &[String]) -> Result<()> {
    let submission = parse(args)?;
    let deepembed = std::env::current_exe().context("cannot find the deepembed executable")?;
    let out = absolute(&flag_value(&submission.embed, "out").unwrap_or_else(|| "deeptune_results".into()))?;
    let stamp = chrono::Local::now().format("%Y%m%d_%H%M%S");
    let shards_dir = out.join(format!("shards_{stamp}"));

    let mut task = vec![deepembed.display().to_string()];
    task.extend(without_flag(&submission.embed, "out"));
    // --resume: a requeued task (pre-empted, or its node lost) continues after its last committed
    // piece, and one that had finished does nothing.
    task.extend(
        ["--shard", "slurm", "--out", &shards_dir.display().to_string(), "--quiet", "--resume"].map(String::from),
    );
    let merge = [
        deepembed.display().to_string(),
        "merge".into(),
        shards_dir.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    let array_script = script(&format!("exec {}", shell_words(&task)));
    let merge_script = script(&format!("exec {}", shell_words(&merge)));

    let mut array_cmd = vec![
        "sbatch".to_string(),
        "--parsable".into(),
        format!("--array=0-{}", submission.shards - 1),
        "--requeue".into(),
        "--job-name=deepembed".into(),
    ];
    array_cmd.extend(submission.sbatch.iter().cloned());
    let mut merge_cmd = vec!["sbatch".to_string(), "--parsable".into(), "--job-name=deepembed-merge".into()];
    merge_cmd.extend(kept_for_merge(&submission.sbatch));

    if submission.dry_run {
        println!("# array job ({} shards): {} <<'EOF'\n{array_script}EOF", submission.shards, shell_words(&array_cmd));
        println!(
            "# merge job, after every shard succeeded: {} --dependency=afterok:<array job id> <<'EOF'\n{merge_script}EOF",
            shell_words(&merge_cmd)
        );
        return Ok(());
    }
    std::fs::create_dir_all(&shards_dir).with_context(|| format!("cannot create {}", shards_dir.display()))?;
    let array_id = sbatch(&array_cmd, &array_script)?;
    merge_cmd.push(format!("--dependency=afterok:{array_id}"));
    let merge_id = sbatch(&merge_cmd, &merge_script)?;
    log::info!(
        "submitted array job {array_id} ({} shards into {}) and merge job {merge_id} (into {})",
        submission.shards,
        shards_dir.display(),
        out.display()
    );
    println!("{array_id}\n{merge_id}");
    Ok(())
}

fn parse(args: &[String]) -> Result<Submission> {
    let split = args.iter().position(|a| a == "--").ok_or_else(|| {
        anyhow!("name the extraction after --: deepembed slurm --shards N [sbatch options] -- embed <plugin> ...")
    })?;
    let (ours, embed) = (&args[..split], &args[split + 1..]);
    if embed.first().map(String::as_str) != Some("embed") || embed.len() < 2 {
        bail!("after --, give an embed command: deepembed slurm --shards N -- embed <plugin> --df ...");
    }
    if flag_value(embed, "shard").is_some() {
        bail!("the embed command must not have --shard: deepembed slurm gives each array task its own");
    }
    let (mut shards, mut dry_run, mut sbatch) = (None, false, Vec::new());
    let mut it = ours.iter();
    while let Some(arg) = it.next() {
        if arg == "--dry-run" || arg == "--dry_run" {
            dry_run = true;
        } else if let Some(v) = arg.strip_prefix("--shards=") {
            shards = Some(v.to_string());
        } else if arg == "--shards" {
            shards = Some(it.next().ok_or_else(|| anyhow!("--shards needs a number"))?.clone());
        } else {
            sbatch.push(arg.clone());
        }
    }
    let text = shards.ok_or_else(|| anyhow!("--shards N is required: how many array tasks share the input"))?;
    let shards = text
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| anyhow!("--shards {text}: expected a positive number"))?;
    if sbatch.iter().any(|a| a.starts_with("--array") || a == "-a" || a.starts_with("--dependency") || a == "-d") {
        bail!("--array and --dependency are set by deepembed slurm (--shards N); leave them out");
    }
    Ok(Submission { shards, dry_run, sbatch, embed: embed.to_vec() })
}

/// The value of `--name VALUE` / `--name=VALUE` (snake or kebab case) in `args`.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    let spellings = [format!("--{name}"), format!("--{}", name.replace('_', "-"))];
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        for s in &spellings {
            if arg == s {
                return it.next().cloned();
            }
            if let Some(v) = arg.strip_prefix(&format!("{s}=")) {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// `args` without `--name VALUE` / `--name=VALUE`.
fn without_flag(args: &[String], name: &str) -> Vec<String> {
    let spellings = [format!("--{name}"), format!("--{}", name.replace('_', "-"))];
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if spellings.iter().any(|s| arg == s) {
            it.next();
        } else if !spellings.iter().any(|s| arg.starts_with(&format!("{s}="))) {
            out.push(arg.clone());
        }
    }
    out
}

/// The user's sbatch options that also apply to the merge job.
fn kept_for_merge(sbatch: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = sbatch.iter();
    while let Some(arg) = it.next() {
        if MERGE_KEEPS.iter().any(|k| arg.starts_with(&format!("{k}=")) && k.starts_with("--")) {
            out.push(arg.clone());
        } else if MERGE_KEEPS.contains(&arg.as_str()) {
            out.push(arg.clone());
            out.extend(it.next().cloned());
        }
    }
    out
}

fn absolute(path: &str) -> Result<PathBuf> {
    let path = Path::new(path);
    Ok(if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) })
}

fn script(command: &str) -> String {
    format!("#!/bin/bash\nset -euo pipefail\n{command}\n")
}

/// Words quoted for a POSIX shell.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Submits `script` on sbatch's standard input; returns the job id (`--parsable`: `id[;cluster]`).
fn sbatch(cmd: &[String], script: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| "cannot run sbatch: is Slurm installed and on PATH?".to_string())?;
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("{} failed: {}", shell_words(cmd), String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() {
        bail!("sbatch printed no job id");
    }
    Ok(id)
}

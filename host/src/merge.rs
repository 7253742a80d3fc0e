//! `deepembed merge DIR... [--out OUT]`: the run directories of `--shard I/N` runs put back
//! together as one run in DeepTune's layout.
//!
//! First it checks that the shards belong together (same plugin and version, model, output file
//! and arguments but `--shard`) and cover every input row exactly once, naming the missing or
//! overlapping ranges otherwise. Then it writes one Parquet file whose row groups are the
//! shards' in row order, copying their column chunks without decoding them, and the JSON files
//! with rows, skipped rows and durations summed.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::output;

/// Arguments that differ between shards of one run by design.
const PER_SHARD_ARGUMENTS: &[&str] = &["shard", "out", "json"];

/// One shard's run directory, read.
struct ShardRun {
    dir: PathBuf,
    details: Map<String, Value>,
    arguments: Map<String, Value>,
    skipped: Vec<Value>,
    index: u64,
    count: u64,
    first_row: u64,
    rows: u64,
    input_rows: u64,
}

impl ShardRun {
    fn read(dir: &Path) -> Result<ShardRun> {
        let json = |name: &str| -> Result<Value> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{} is not a finished deepembed run directory: no {name}", dir.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
        };
        let Value::Object(details) = json("embedding_details.json")? else {
            bail!("{}: embedding_details.json is not an object", dir.display())
        };
        let Value::Object(arguments) = json("cli_arguments.json")? else {
            bail!("{}: cli_arguments.json is not an object", dir.display())
        };
        let skipped = match json("skipped_rows.json") {
            Ok(Value::Array(rows)) => rows,
            _ if !dir.join("skipped_rows.json").exists() => Vec::new(),
            _ => bail!("{}: skipped_rows.json is not a list", dir.display()),
        };
        let shard = details.get("shard").and_then(Value::as_object).ok_or_else(|| {
            anyhow!(
                "{} is not a shard: its run had no --shard (embedding_details.json has no \"shard\")",
                dir.display()
            )
        })?;
        let number = |key: &str| {
            shard.get(key).and_then(Value::as_u64).ok_or_else(|| anyhow!("{}: shard.{key} is missing", dir.display()))
        };
        Ok(ShardRun {
            index: number("index")?,
            count: number("count")?,
            first_row: number("first_row")?,
            rows: number("rows")?,
            input_rows: number("input_rows")?,
            dir: dir.to_path_buf(),
            details,
            arguments,
            skipped,
        })
    }

    fn detail(&self, key: &str) -> &Value {
        self.details.get(key).unwrap_or(&Value::Null)
    }

    /// The shard's embeddings file; none for a shard without output rows, which has none.
    fn parquet(&self) -> Result<Option<PathBuf>> {
        if self.detail("rows").as_u64() == Some(0) {
            return Ok(None);
        }
        let name = self.detail("file_name").as_str().ok_or_else(|| anyhow!("{}: no file_name", self.dir.display()))?;
        let path = self.dir.join(name);
        if !path.is_file() {
            bail!("{}: its embeddings file {name} is missing", self.dir.display());
        }
        Ok(Some(path))
    }

    fn end(&self) -> u64 {
        self.first_row + self.rows
    }
}

pub struct Merged {
    pub dir: PathBuf,
    pub file: PathBuf,
    pub rows: u64,
}

/// Merges the shard runs in `dirs` into a new run directory under `out` (default: the first
/// shard's parent).
pub fn merge(dirs: &[PathBuf], out: Option<&Path>) -> Result<Merged> {
    if dirs.is_empty() {
        bail!("name the shards' run directories: deepembed merge DIR...");
    }
    let dirs = expand(dirs)?;
    let mut shards = dirs.iter().map(|d| ShardRun::read(d)).collect::<Result<Vec<_>>>()?;
    check_same_run(&shards)?;
    shards.sort_by_key(|s| (s.first_row, s.index));
    check_coverage(&shards)?;

    let first = &shards[0];
    let model_str = first.detail("model_str").as_str().unwrap_or("merged").to_string();
    let file_name = first.detail("file_name").as_str().expect("checked").to_string();
    let out = match out {
        Some(out) => out.to_path_buf(),
        None => first.dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")),
    };
    let dir = output::create_run_dir(&out, &model_str)?;
    let written = write_outputs(&shards, &dir, &file_name);
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let rows = written?;
    Ok(Merged { file: dir.join(&file_name), dir, rows })
}

/// Run directories as given, and for a directory that is not one, the run directories in it
/// (what a Slurm array's tasks leave in their common `--out`).
fn expand(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut runs = Vec::new();
    for dir in dirs {
        if dir.join("embedding_details.json").exists() || !dir.is_dir() {
            runs.push(dir.clone());
            continue;
        }
        let mut inside: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("embedding_details.json").exists())
            .collect();
        if inside.is_empty() {
            bail!("{} is neither a run directory nor holds any (no embedding_details.json)", dir.display());
        }
        inside.sort();
        runs.extend(inside);
    }
    Ok(runs)
}

/// Same plugin, version, model, output file, shard count, input size and arguments but the
/// per-shard ones.
fn check_same_run(shards: &[ShardRun]) -> Result<()> {
    let first = &shards[0];
    for other in &shards[1..] {
        for key in ["plugin", "plugin_version", "model_str", "file_name", "dims"] {
            if first.detail(key) != other.detail(key) {
                bail!(
                    "{} and {} are not shards of one run: {key} is {} in one and {} in the other",
                    first.dir.display(),
                    other.dir.display(),
                    first.detail(key),
                    other.detail(key)
                );
            }
        }
        if (first.count, first.input_rows) != (other.count, other.input_rows) {
            bail!(
                "{} and {} are not shards of one run: one is a shard of {} over {} rows, the other of {} over {} rows",
                first.dir.display(),
                other.dir.display(),
                first.count,
                first.input_rows,
                other.count,
                other.input_rows
            );
        }
        let keys = first.arguments.keys().chain(other.arguments.keys());
        for key in keys.filter(|k| !PER_SHARD_ARGUMENTS.contains(&k.as_str())) {
            let (a, b) = (first.arguments.get(key), other.arguments.get(key));
            if a != b {
                let show = |v: Option<&Value>| v.map_or("absent".to_string(), Value::to_string);
                bail!(
                    "{} and {} are not shards of one run: --{key} is {} in one and {} in the other",
                    first.dir.display(),
                    other.dir.display(),
                    show(a),
                    show(b)
                );
            }
        }
    }
    Ok(())
}

/// Every row of the input in exactly one shard; otherwise the missing and overlapping ranges.
fn check_coverage(shards: &[ShardRun]) -> Result<()> {
    let input_rows = shards[0].input_rows;
    let mut problems = Vec::new();
    let mut covered = 0u64;
    for s in shards {
        if s.first_row > covered {
            problems.push(format!("rows {covered} to {} are in no shard", s.first_row - 1));
        } else if s.first_row < covered {
            problems.push(format!(
                "rows {} to {} are in more than one shard (again in {})",
                s.first_row,
                covered.min(s.end()) - 1,
                s.dir.display()
            ));
        }
        covered = covered.max(s.end());
    }
    if covered < input_rows {
        problems.push(format!("rows {covered} to {} are in no shard", input_rows - 1));
    }
    if !problems.is_empty() {
        bail!("the shards do not cover the input's {input_rows} rows exactly once: {}", problems.join("; "));
    }
    Ok(())
}

/// The merged Parquet file and JSON files; returns the rows written.
fn write_outputs(shards: &[ShardRun], dir: &Path, file_name: &str) -> Result<u64> {
    let files: Vec<PathBuf> =
        shards.iter().map(ShardRun::parquet).filter_map(Result::transpose).collect::<Result<_>>()?;
    if files.is_empty() {
        bail!("no shard holds any output row: there is nothing to merge");
    }
    let temp = dir.join(format!(".{file_name}.partial"));
    let rows = output::concat_parquet(&files, &temp)?;
    std::fs::rename(&temp, dir.join(file_name))
        .with_context(|| format!("cannot move the merged file to {}", dir.join(file_name).display()))?;

    let first = &shards[0];
    let sum = |key: &str| shards.iter().map(|s| s.detail(key).as_f64().unwrap_or(0.0)).sum::<f64>();
    let seconds = sum("total_duration_seconds");
    let skipped = shards.iter().map(|s| s.skipped.len()).sum::<usize>();
    let mut details = first.details.clone();
    details.remove("shard");
    details.insert("rows".into(), rows.into());
    details.insert("skipped_rows".into(), skipped.into());
    details.insert("total_duration_seconds".into(), seconds.into());
    let input_rows = rows + skipped as u64;
    details.insert("rows_per_second".into(), if seconds > 0.0 { input_rows as f64 / seconds } else { 0.0 }.into());
    let merged: Vec<Value> = shards
        .iter()
        .map(|s| json!({"dir": s.dir, "index": s.index, "first_row": s.first_row, "rows": s.rows}))
        .collect();
    details.insert("merged_shards".into(), merged.into());
    output::write_json(&dir.join("embedding_details.json"), &Value::Object(details))?;

    let mut arguments = first.arguments.clone();
    for key in PER_SHARD_ARGUMENTS {
        arguments.remove(*key);
    }
    output::write_json(&dir.join("cli_arguments.json"), &Value::Object(arguments))?;

    if skipped > 0 {
        let mut rows: Vec<Value> = shards.iter().flat_map(|s| s.skipped.iter().cloned()).collect();
        rows.sort_by_key(|r| r.get("row").and_then(Value::as_u64).unwrap_or(0));
        output::write_json(&dir.join("skipped_rows.json"), &Value::Array(rows))?;
    }
    Ok(rows)
}

//! `deepembed embed <plugin>`: one extraction, from input Parquet to the output layout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deepembed_sdk::abi::{self, HostInput, HostSink};
use deepembed_sdk::{OutputPlan, RunSettings};
use indicatif::ProgressBar;
use serde_json::{json, Map, Value};

use crate::loader::Plugin;
use crate::output::{self, ParquetSink};
use crate::shard::Shard;
use crate::{input, logger, signals};

/// One input table of the run: the flag that named it and its path.
pub struct InputFile {
    pub flag: String,
    pub path: PathBuf,
}

/// What the host was asked to do.
pub struct EmbedRequest<'a> {
    pub plugin: &'a Plugin,
    pub settings: RunSettings,
    /// The plugin's own options, by snake_case name (paths already absolute).
    pub options: Map<String, Value>,
    /// Every argument, host and plugin, for cli_arguments.json.
    pub arguments: Map<String, Value>,
    pub inputs: Vec<InputFile>,
    /// The input whose rows are embedded (the progress bar counts them).
    pub embedded: Option<String>,
    /// Only this range of the embedded input's rows.
    pub shard: Option<Shard>,
    pub out: PathBuf,
    pub quiet: bool,
}

/// Where a finished run put its results.
pub struct EmbedResult {
    pub dir: PathBuf,
    pub file: PathBuf,
    pub rows: u64,
    pub skipped: usize,
}

/// The host's state during a run: it receives the plugin's callbacks.
struct RunSink<'a> {
    out: &'a Path,
    dir: Option<PathBuf>,
    plan: Option<OutputPlan>,
    parquet: Option<ParquetSink>,
    /// The schema of the first batch: every later batch must have exactly this one.
    schema: Option<SchemaRef>,
    skipped: Vec<(u64, String)>,
    /// With `--shard`: the rows of the embedded input the run reads.
    shard: Option<ShardRows>,
    bar: ProgressBar,
}

/// A shard's rows of the embedded input.
#[derive(Clone, Copy)]
struct ShardRows {
    shard: Shard,
    first_row: u64,
    rows: u64,
    table_rows: u64,
}

impl HostSink for RunSink<'_> {
    fn begin(&mut self, plan_json: &str) -> Result<(), String> {
        if self.plan.is_some() {
            return Err("plugin declared its output twice".into());
        }
        let plan: OutputPlan =
            serde_json::from_str(plan_json).map_err(|e| format!("plugin sent an invalid output plan: {e}"))?;
        if plan.file_name.contains(['/', '\\']) || plan.model_str.contains(['/', '\\']) {
            return Err(format!("plugin asked for an output name with a path separator: {}", plan.file_name));
        }
        let dir = output::create_run_dir(self.out, &plan.model_str).map_err(|e| format!("{e:#}"))?;
        // From here until the run ends, an interrupt removes the directory.
        signals::guard(&dir);
        self.parquet = Some(ParquetSink::new(&dir, &plan.file_name));
        self.dir = Some(dir);
        self.plan = Some(plan);
        Ok(())
    }

    fn emit(&mut self, batch: RecordBatch) -> Result<(), String> {
        let sink = self.parquet.as_mut().ok_or("plugin emitted output before declaring it")?;
        match &self.schema {
            None => self.schema = Some(batch.schema()),
            Some(first) if **first != *batch.schema() => {
                return Err(format!(
                    "plugin changed its output columns mid-run (first batch: {first}; this batch: {})",
                    batch.schema()
                ))
            }
            Some(_) => {}
        }
        sink.write(&batch).map_err(|e| format!("{e:#}"))
    }

    fn skip(&mut self, row: u64, reason: &str) -> Result<(), String> {
        // A shard's rows are numbered as in the whole table.
        let row = row + self.shard.map_or(0, |s| s.first_row);
        log::warn!("skipping row {row}: {reason}");
        self.skipped.push((row, reason.to_string()));
        Ok(())
    }

    fn progress(&mut self, rows: u64) {
        self.bar.inc(rows);
    }

    fn cancelled(&mut self) -> bool {
        signals::interrupted()
    }
}

impl RunSink<'_> {
    /// Removes what a failed run created: the directory is new and holds only our files.
    fn discard(&mut self) {
        self.parquet = None;
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn embed(req: EmbedRequest) -> Result<EmbedResult> {
    let name = &req.plugin.manifest.name;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut shard_rows = None;
    for file in &req.inputs {
        let shard = req.shard.filter(|_| req.embedded.as_ref() == Some(&file.flag));
        let opened = input::open(&file.path, &file.flag, req.settings.batch_size as usize, shard)?;
        if let Some(s) = shard {
            let end = opened.first_row + opened.rows;
            log::info!("shard {}/{}: rows {} to {end} of {}", s.index, s.count, opened.first_row, opened.table_rows);
            shard_rows = Some(ShardRows {
                shard: s,
                first_row: opened.first_row,
                rows: opened.rows,
                table_rows: opened.table_rows,
            });
        }
        let again = inputs.iter().any(|i: &HostInput| i.name == file.flag);
        if !again {
            let files = match opened.files.len() {
                1 => String::new(),
                n => format!(" ({n} Parquet files)"),
            };
            log::info!(
                "{name}: {} rows from {}{files} (--{}) on {}",
                opened.rows,
                file.path.display(),
                file.flag,
                req.settings.device
            );
        }
        inputs.push(HostInput { name: file.flag.clone(), rows: opened.rows, reader: opened.reader });
    }
    let total = inputs.iter().find(|i| Some(&i.name) == req.embedded.as_ref()).map_or(0, |i| i.rows);
    let bar = logger::progress_bar(total, req.quiet);
    let mut sink = RunSink {
        out: &req.out,
        dir: None,
        plan: None,
        parquet: None,
        schema: None,
        skipped: vec![],
        shard: shard_rows,
        bar: bar.clone(),
    };
    let started = Instant::now();
    let options = Value::Object(req.options.clone()).to_string();
    let result = abi::run_plugin(req.plugin.module, &mut sink, options, req.settings, inputs);
    logger::finish_progress(&bar);
    let done = match result {
        Err(e) => Err(anyhow!("plugin '{name}' failed: {e}")),
        Ok(()) => finish(&req, &mut sink, started),
    };
    if done.is_err() {
        sink.discard();
    }
    signals::release();
    done
}

/// Renames the Parquet file into place and writes the JSON files beside it.
fn finish(req: &EmbedRequest, sink: &mut RunSink, started: Instant) -> Result<EmbedResult> {
    let plugin = &req.plugin.manifest;
    let plan =
        sink.plan.clone().ok_or_else(|| anyhow!("plugin '{}' finished without producing output", plugin.name))?;
    let dir = sink.dir.clone().context("output directory missing")?;
    let parquet = sink.parquet.take().context("output file missing")?;
    let rows = parquet.rows;
    let file = parquet.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let input_rows = rows + sink.skipped.len() as u64;

    let mut details = json!({
        "epochs": 1,
        "total_duration_seconds": seconds,
        "rows": rows,
        "dims": plan.dims,
        "skipped_rows": sink.skipped.len(),
        "device": req.settings.device.to_string(),
        "batch_size": req.settings.batch_size,
        "precision": req.settings.precision.name(),
        "plugin": plugin.name,
        "plugin_version": plugin.version,
        "rows_per_second": if seconds > 0.0 { input_rows as f64 / seconds } else { 0.0 },
        "deepembed_version": env!("CARGO_PKG_VERSION"),
    });
    if let Value::Object(map) = &mut details {
        map.insert("model_str".into(), plan.model_str.clone().into());
        map.insert("file_name".into(), plan.file_name.clone().into());
        if let Some(s) = sink.shard {
            map.insert(
                "shard".into(),
                json!({"index": s.shard.index, "count": s.shard.count, "first_row": s.first_row, "rows": s.rows,
                       "input_rows": s.table_rows}),
            );
        }
        for (k, v) in &plan.details {
            map.entry(k.clone()).or_insert(v.clone());
        }
    }
    output::write_json(&dir.join("embedding_details.json"), &details)?;
    output::write_json(&dir.join("cli_arguments.json"), &Value::Object(req.arguments.clone()))?;
    if !sink.skipped.is_empty() {
        let skipped: Vec<Value> =
            sink.skipped.iter().map(|(row, reason)| json!({"row": row, "reason": reason})).collect();
        output::write_json(&dir.join("skipped_rows.json"), &Value::Array(skipped))?;
    }
    log::info!(
        "{rows} rows x {} dims in {seconds:.1} s ({:.1} rows/s){}",
        plan.dims,
        input_rows as f64 / seconds.max(1e-9),
        if sink.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} rows skipped (see skipped_rows.json)", sink.skipped.len())
        }
    );
    Ok(EmbedResult { dir, file, rows, skipped: sink.skipped.len() })
}

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
use crate::output;
use crate::resume::{self, Assembled, CommitPolicy, Fingerprint, Pieces, Progress, Start};
use crate::shard::Shard;
use crate::writer::Writer;
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
    /// When to commit the output in pieces; `None` when the plugin's rows are not embedded
    /// independently, so its runs cannot resume.
    pub commit: Option<CommitPolicy>,
    /// `--resume`: `Some(None)` continues the latest unfinished run in `out`, `Some(Some(dir))`
    /// that one.
    pub resume: Option<Option<PathBuf>>,
    /// With `--model PACK/MODEL`: the pack's record for embedding_details.json, and the
    /// embedding width it promises.
    pub pack: Option<Value>,
    pub expected_dims: Option<usize>,
}

/// Where a finished run put its results.
pub struct EmbedResult {
    pub dir: PathBuf,
    /// The embeddings file; none for a shard without rows.
    pub file: Option<PathBuf>,
    pub rows: u64,
    pub skipped: usize,
}

/// The host's state during a run: it receives the plugin's callbacks.
struct RunSink<'a> {
    out: &'a Path,
    /// Set before the run; the plugin's output plan completes it at `begin`.
    fingerprint: Option<Fingerprint>,
    /// A run being continued, until `begin` opens it.
    resuming: Option<(PathBuf, Progress)>,
    commit: Option<CommitPolicy>,
    expected_dims: Option<usize>,
    dir: Option<PathBuf>,
    /// The output, written on its own thread once the plugin declared it.
    writer: Option<Writer>,
    /// Rows skipped before the plugin declared its output (a plugin that reads its input once
    /// before it embeds, as deepar does), handed to the writer at `begin`.
    early_skips: Vec<(u64, String)>,
    /// The schema of the first batch: every later batch must have exactly this one.
    schema: Option<SchemaRef>,
    /// The embedded input's first row number in this attempt: the plugin counts from 0.
    row_offset: u64,
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
        if self.writer.is_some() {
            return Err("plugin declared its output twice".into());
        }
        let plan: OutputPlan =
            serde_json::from_str(plan_json).map_err(|e| format!("plugin sent an invalid output plan: {e}"))?;
        if plan.file_name.contains(['/', '\\']) || plan.model_str.contains(['/', '\\']) {
            return Err(format!("plugin asked for an output name with a path separator: {}", plan.file_name));
        }
        if let Some(width) = self.expected_dims.filter(|&w| w != plan.dims) {
            return Err(format!("the pack promises embeddings of width {width}, the model gives {}", plan.dims));
        }
        let (dir, progress) = match self.resuming.take() {
            Some((dir, progress)) => {
                let (then, now) = (&progress.plan, &plan);
                if (&then.model_str, &then.file_name, then.dims) != (&now.model_str, &now.file_name, now.dims) {
                    return Err(format!(
                        "cannot resume {}: the plugin now declares {} ({} dims), the run was {} ({} dims)",
                        dir.display(),
                        now.file_name,
                        now.dims,
                        then.file_name,
                        then.dims
                    ));
                }
                // The earlier attempts' pieces are never removed.
                signals::guard(&dir, true);
                (dir, progress)
            }
            None => {
                let dir = output::create_run_dir(self.out, &plan.model_str).map_err(|e| format!("{e:#}"))?;
                // From here until the run ends, an interrupt removes the directory, unless it
                // holds committed pieces by then.
                signals::guard(&dir, false);
                let fingerprint = self.fingerprint.take().expect("the fingerprint is made before the run");
                (dir, Progress { fingerprint, plan, pieces: vec![], attempts: vec![] })
            }
        };
        self.dir = Some(dir.clone());
        let pieces = Pieces::start(&dir, progress, self.commit).map_err(|e| format!("{e:#}"))?;
        let writer = Writer::start(pieces).map_err(|e| format!("{e:#}"))?;
        for (row, reason) in self.early_skips.drain(..) {
            writer.skip(row, &reason).map_err(|e| format!("{e:#}"))?;
        }
        self.writer = Some(writer);
        Ok(())
    }

    fn emit(&mut self, batch: RecordBatch) -> Result<(), String> {
        let writer = self.writer.as_ref().ok_or("plugin emitted output before declaring it")?;
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
        writer.write(batch).map_err(|e| format!("{e:#}"))
    }

    fn skip(&mut self, row: u64, reason: &str) -> Result<(), String> {
        // Rows are numbered as in the whole table, whatever range this attempt reads.
        let row = row + self.row_offset;
        log::warn!("skipping row {row}: {reason}");
        match &self.writer {
            Some(writer) => writer.skip(row, reason).map_err(|e| format!("{e:#}")),
            None => {
                self.early_skips.push((row, reason.to_string()));
                Ok(())
            }
        }
    }

    fn progress(&mut self, rows: u64) {
        self.bar.inc(rows);
        // A rows-independent plugin reports rows once they are emitted or skipped: everything
        // before them may be committed. A failure shows in `cancelled` and when the run ends.
        if let Some(writer) = &self.writer {
            let _ = writer.rows_done(rows);
        }
    }

    fn cancelled(&mut self) -> bool {
        signals::interrupted() || self.writer.as_ref().is_some_and(Writer::failed)
    }
}

impl RunSink<'_> {
    /// After a failure or an interrupt: a directory holding committed pieces (`committed` rows)
    /// stays for `--resume` (the piece being written is removed); otherwise what the run created
    /// goes.
    fn abandon(&mut self, committed: Option<u64>) {
        if let Some(dir) = self.dir.take() {
            if let Some(rows) = committed {
                log::warn!(
                    "{rows} rows are committed in {}; continue the run with the same command and --resume {}",
                    dir.display(),
                    dir.display()
                );
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

pub fn embed(req: EmbedRequest) -> Result<EmbedResult> {
    let name = &req.plugin.manifest.name;
    if req.resume.is_some() && req.commit.is_none() {
        return Err(resume::not_resumable(name));
    }
    let fingerprint = fingerprint(&req)?;
    let start = match &req.resume {
        Some(dir) => resume::locate(&req.out, dir.as_deref(), &fingerprint)?,
        None => Start::New,
    };
    let (resuming, committed) = match start {
        Start::New => (None, 0),
        Start::Finished { dir, file, rows } => return Ok(EmbedResult { dir, file, rows, skipped: 0 }),
        Start::Continue { dir, progress } => {
            let committed = progress.committed_rows();
            log::info!(
                "resuming {}: {committed} rows committed by {} earlier attempt(s)",
                dir.display(),
                progress.attempts.len()
            );
            (Some((dir, *progress)), committed)
        }
    };

    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut shard_rows = None;
    let mut row_offset = 0;
    let mut remaining = None;
    for file in &req.inputs {
        let embedded = req.embedded.as_ref() == Some(&file.flag);
        let shard = req.shard.filter(|_| embedded);
        let skip = if embedded { committed } else { 0 };
        let opened = input::open(&file.path, &file.flag, req.settings.batch_size as usize, shard, skip)?;
        if embedded {
            row_offset = opened.first_row;
            remaining = Some(opened.rows);
        }
        if let Some(s) = shard {
            let (start, end) = opened.range;
            log::info!("shard {}/{}: rows {start} to {end} of {}", s.index, s.count, opened.table_rows);
            shard_rows =
                Some(ShardRows { shard: s, first_row: start, rows: end - start, table_rows: opened.table_rows });
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
    let started = Instant::now();
    let total = inputs.iter().find(|i| Some(&i.name) == req.embedded.as_ref()).map_or(0, |i| i.rows);
    let bar = logger::progress_bar(total, req.quiet);
    let mut sink = RunSink {
        out: &req.out,
        fingerprint: Some(fingerprint),
        resuming,
        commit: req.commit,
        expected_dims: req.expected_dims,
        dir: None,
        writer: None,
        early_skips: Vec::new(),
        schema: None,
        row_offset,
        shard: shard_rows,
        bar: bar.clone(),
    };
    let result = if sink.resuming.is_some() && remaining == Some(0) {
        // Every row is committed (the last attempt died while putting the pieces together): no
        // model to run, only the pieces to assemble.
        drop(inputs);
        let plan = sink.resuming.as_ref().map(|(_, p)| serde_json::to_string(&p.plan)).transpose()?;
        sink.begin(&plan.unwrap_or_default()).map_err(|e| anyhow!(e))
    } else {
        let options = Value::Object(req.options.clone()).to_string();
        abi::run_plugin(req.plugin.module, &mut sink, options, req.settings, inputs)
            .map_err(|e| anyhow!("plugin '{name}' failed: {e}"))
    };
    logger::finish_progress(&bar);
    let (pieces, written) = match sink.writer.take() {
        Some(writer) => writer.close(),
        None => (None, Ok(())),
    };
    // When both failed, the writing is the cause: the plugin stopped because of it.
    let result = written.context("writing the output").and(result);
    // What an abandoned run keeps: its committed rows, if any.
    let committed = pieces.as_ref().filter(|p| p.has_committed()).map(|p| p.progress().committed_rows());
    let done = result.and_then(|()| {
        let pieces = pieces.ok_or_else(|| anyhow!("plugin '{name}' finished without producing output"))?;
        finish(&req, &mut sink, pieces, started)
    });
    if done.is_err() {
        sink.abandon(committed);
    }
    signals::release();
    done
}

/// The fingerprint a resumable run records and a resumed one must match (for a run that cannot
/// resume, without the input files' stamps).
fn fingerprint(req: &EmbedRequest) -> Result<Fingerprint> {
    let mut inputs: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for file in req.inputs.iter().filter(|_| req.commit.is_some()) {
        if !inputs.iter().any(|(flag, _)| *flag == file.flag) {
            inputs.push((file.flag.clone(), input::resolve(&file.path, &file.flag)?));
        }
    }
    let plugin = &req.plugin.manifest;
    Fingerprint::new(&plugin.name, &plugin.version, &req.arguments, req.shard, &inputs)
}

/// Puts the pieces together, writes the JSON files beside them, then moves the Parquet file
/// into place.
fn finish(req: &EmbedRequest, sink: &mut RunSink, pieces: Pieces, started: Instant) -> Result<EmbedResult> {
    let dir = sink.dir.clone().context("output directory missing")?;
    let assembled = pieces.assemble(req.shard.is_some())?;
    match write_json_files(req, sink, &dir, &assembled, started) {
        Ok(skipped) => {
            let rows = assembled.rows;
            let file = assembled.complete()?;
            Ok(EmbedResult { dir, file, rows, skipped })
        }
        Err(e) => {
            assembled.discard();
            Err(e)
        }
    }
}

/// `embedding_details.json`, `cli_arguments.json` and `skipped_rows.json`; returns the number of
/// skipped rows.
fn write_json_files(
    req: &EmbedRequest,
    sink: &RunSink,
    dir: &Path,
    assembled: &Assembled,
    started: Instant,
) -> Result<usize> {
    let plugin = &req.plugin.manifest;
    let progress = &assembled.progress;
    let plan = &progress.plan;
    let rows = assembled.rows;
    let skipped: Vec<&resume::SkippedRow> = progress.pieces.iter().flat_map(|p| &p.skipped).collect();
    let attempts = &progress.attempts;
    // Earlier attempts count until their last commit; this one until now.
    let earlier: f64 = attempts.iter().rev().skip(1).map(|a| a.seconds).sum();
    let seconds = earlier + started.elapsed().as_secs_f64();
    let input_rows = rows + skipped.len() as u64;

    let mut details = json!({
        "epochs": 1,
        "total_duration_seconds": seconds,
        "rows": rows,
        "dims": plan.dims,
        "skipped_rows": skipped.len(),
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
        if let Some(pack) = &req.pack {
            map.insert("pack".into(), pack.clone());
        }
        if req.commit.is_some() {
            map.insert("resumed".into(), (attempts.len() > 1).into());
            if attempts.len() > 1 {
                map.insert("attempts".into(), serde_json::to_value(attempts)?);
            }
        }
        // The host's fields win over a plugin's, but for DeepTune's `epochs`: 1, or what the
        // plugin's DeepTune script writes there (TabPFN's sentence).
        if let Some(epochs) = plan.details.get("epochs") {
            map.insert("epochs".into(), epochs.clone());
        }
        for (k, v) in &plan.details {
            map.entry(k.clone()).or_insert(v.clone());
        }
    }
    output::write_json(&dir.join("embedding_details.json"), &details)?;
    output::write_json(&dir.join("cli_arguments.json"), &Value::Object(req.arguments.clone()))?;
    if !skipped.is_empty() {
        let list: Vec<Value> = skipped.iter().map(|s| json!({"row": s.row, "reason": s.reason})).collect();
        output::write_json(&dir.join("skipped_rows.json"), &Value::Array(list))?;
    }
    log::info!(
        "{rows} rows x {} dims in {seconds:.1} s ({:.1} rows/s){}{}",
        plan.dims,
        input_rows as f64 / seconds.max(1e-9),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(", {} rows skipped (see skipped_rows.json)", skipped.len())
        },
        if attempts.len() > 1 { format!(", in {} attempts", attempts.len()) } else { String::new() }
    );
    Ok(skipped.len())
}

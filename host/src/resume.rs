//! Resumable runs.
//!
//! A run of a plugin whose rows are embedded independently (`InputSpec::rows_independent`)
//! writes its output in durable pieces. Every `--commit_rows` input rows or `--commit_seconds`
//! seconds, whichever comes first, the piece being written is closed, synced and renamed into
//! `.pieces/`, then `.progress.json` (the run's fingerprint, its output plan, its committed
//! pieces and its attempts) is replaced atomically. A run killed at any point leaves a directory
//! whose committed pieces are whole and listed; `--resume` reads the input from the first row
//! after them. The finished file is the pieces' row groups put together
//! ([`output::concat_parquet`]): the same rows, order, schema and values as an uninterrupted run.
//! Then the hidden files go.
//!
//! A run continues another only when nothing that decides its output changed: the plugin and its
//! version, every argument but those that only say how to run ([`FREE_ON_RESUME`]), the shard,
//! and each input file's path, size, modification time and Parquet footer (hashed). Anything
//! else is refused, naming what differs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::RecordBatch;
use deepembed_sdk::OutputPlan;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::output::{self, ParquetSink};
use crate::shard::Shard;

/// The run directory's record of what is committed.
pub const PROGRESS_FILE: &str = ".progress.json";
/// Where committed pieces live until the run finishes.
pub const PIECES_DIR: &str = ".pieces";

/// Arguments that may change between attempts: they say how to run, not what to compute.
const FREE_ON_RESUME: &[&str] = &["commit_rows", "commit_seconds", "json", "out"];

/// What must be the same for one run to continue another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub plugin: String,
    pub plugin_version: String,
    /// Every argument but [`FREE_ON_RESUME`], as in `cli_arguments.json`.
    pub arguments: Map<String, Value>,
    /// The shard as resolved (`--shard slurm` is a different shard in each array task).
    pub shard: Option<(u64, u64)>,
    pub inputs: Vec<InputStamp>,
}

/// One input flag's files, stamped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputStamp {
    pub flag: String,
    pub files: Vec<FileStamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileStamp {
    pub path: PathBuf,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub modified_ns: u64,
    /// SHA-256 of the Parquet footer (schema, row groups, statistics), in hex.
    pub footer_sha256: String,
}

impl Fingerprint {
    pub fn new(
        plugin: &str,
        version: &str,
        arguments: &Map<String, Value>,
        shard: Option<Shard>,
        inputs: &[(String, Vec<PathBuf>)],
    ) -> Result<Fingerprint> {
        let mut arguments = arguments.clone();
        for key in FREE_ON_RESUME {
            arguments.remove(*key);
        }
        let inputs = inputs
            .iter()
            .map(|(flag, files)| {
                let files = files.iter().map(|f| FileStamp::of(f, flag)).collect::<Result<_>>()?;
                Ok(InputStamp { flag: flag.clone(), files })
            })
            .collect::<Result<_>>()?;
        Ok(Fingerprint {
            plugin: plugin.into(),
            plugin_version: version.into(),
            arguments,
            shard: shard.map(|s| (s.index, s.count)),
            inputs,
        })
    }

    /// What differs between the run's fingerprint (`self`) and this attempt's (`now`), one line
    /// each; empty when the run may continue.
    pub fn differences(&self, now: &Fingerprint) -> Vec<String> {
        let mut diffs = Vec::new();
        if self.plugin != now.plugin {
            diffs.push(format!("plugin: {} when the run started, {} now", self.plugin, now.plugin));
        }
        if self.plugin_version != now.plugin_version {
            diffs.push(format!(
                "plugin version: {} when the run started, {} now",
                self.plugin_version, now.plugin_version
            ));
        }
        let mut keys: Vec<&String> = self.arguments.keys().chain(now.arguments.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (then, current) = (self.arguments.get(key), now.arguments.get(key));
            if then != current {
                let show = |v: Option<&Value>| v.map_or("absent".to_string(), Value::to_string);
                diffs.push(format!("--{key}: {} when the run started, {} now", show(then), show(current)));
            }
        }
        if self.shard != now.shard {
            let show = |s: Option<(u64, u64)>| s.map_or("none".to_string(), |(i, n)| format!("{i}/{n}"));
            diffs.push(format!("shard: {} when the run started, {} now", show(self.shard), show(now.shard)));
        }
        for (then, current) in self.inputs.iter().zip(&now.inputs) {
            let paths = |s: &InputStamp| s.files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>();
            if paths(then) != paths(current) {
                diffs.push(format!(
                    "--{}: other files ({} when the run started; {} now)",
                    then.flag,
                    paths(then).join(", "),
                    paths(current).join(", ")
                ));
                continue;
            }
            for (a, b) in then.files.iter().zip(&current.files) {
                let mut changed = Vec::new();
                if a.size != b.size {
                    changed.push(format!("size {} bytes then, {} now", a.size, b.size));
                }
                if a.modified_ns != b.modified_ns {
                    changed.push("modification time".to_string());
                }
                if a.footer_sha256 != b.footer_sha256 {
                    changed.push("Parquet footer".to_string());
                }
                if !changed.is_empty() {
                    diffs.push(format!("--{}: {} changed ({})", then.flag, a.path.display(), changed.join(", ")));
                }
            }
        }
        if self.inputs.len() != now.inputs.len() {
            diffs.push("the plugin's inputs are not the same".to_string());
        }
        diffs
    }
}

impl FileStamp {
    fn of(path: &Path, flag: &str) -> Result<FileStamp> {
        let context = || format!("cannot read {} (--{flag})", path.display());
        let mut file = File::open(path).with_context(context)?;
        let meta = file.metadata().with_context(context)?;
        let modified = meta.modified().with_context(context)?;
        let modified_ns = modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        // A Parquet file ends with the footer, its 4-byte length and "PAR1".
        let size = meta.len();
        let mut tail = [0u8; 8];
        if size < 8 {
            bail!("{} is not a Parquet file (--{flag})", path.display());
        }
        file.seek(SeekFrom::End(-8)).with_context(context)?;
        file.read_exact(&mut tail).with_context(context)?;
        let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if &tail[4..] != b"PAR1" || footer + 8 > size {
            bail!("{} is not a Parquet file (--{flag})", path.display());
        }
        file.seek(SeekFrom::End(-(footer as i64) - 8)).with_context(context)?;
        let mut bytes = vec![0u8; footer as usize];
        file.read_exact(&mut bytes).with_context(context)?;
        let footer_sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        Ok(FileStamp { path: path.to_path_buf(), size, modified_ns, footer_sha256 })
    }
}

/// A committed piece: `input_rows` consecutive input rows, of which `output_rows` are in `file`
/// (none when every row was skipped) and the rest in `skipped`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Piece {
    pub file: Option<String>,
    pub input_rows: u64,
    pub output_rows: u64,
    pub skipped: Vec<SkippedRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SkippedRow {
    pub row: u64,
    pub reason: String,
}

/// One attempt at the run: what it committed, and how long it took to (until its last commit).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub input_rows: u64,
    pub output_rows: u64,
    pub seconds: f64,
}

/// `.progress.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    pub fingerprint: Fingerprint,
    pub plan: OutputPlan,
    pub pieces: Vec<Piece>,
    pub attempts: Vec<Attempt>,
}

impl Progress {
    pub fn committed_rows(&self) -> u64 {
        self.pieces.iter().map(|p| p.input_rows).sum()
    }

    fn read(dir: &Path) -> Result<Progress> {
        let path = dir.join(PROGRESS_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a deepembed progress file", path.display()))
    }

    /// Replaces the file atomically: a reader sees the old one or the new one, never a mix.
    fn write(&self, dir: &Path) -> Result<()> {
        let temp = dir.join(format!("{PROGRESS_FILE}.partial"));
        let mut file = File::create(&temp).with_context(|| format!("cannot write {}", temp.display()))?;
        file.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, dir.join(PROGRESS_FILE))?;
        sync_dir(dir)
    }
}

/// What `--resume` found.
pub enum Start {
    /// Nothing to continue: a new run directory.
    New,
    /// An unfinished run to continue.
    Continue { dir: PathBuf, progress: Box<Progress> },
    /// The same run, finished already (a Slurm task requeued after it finished).
    Finished { dir: PathBuf, file: Option<PathBuf>, rows: u64 },
}

/// The run `--resume [DIR]` continues: DIR, or the most recent unfinished run in `out` of the
/// same plugin and shard. Refuses one whose fingerprint differs, naming the differences.
pub fn locate(out: &Path, dir: Option<&Path>, now: &Fingerprint) -> Result<Start> {
    let (dir, progress) = match dir {
        Some(dir) => {
            if !dir.join(PROGRESS_FILE).exists() {
                if dir.join("embedding_details.json").exists() {
                    bail!("--resume {}: that run is finished; there is nothing to continue", dir.display());
                }
                bail!("--resume {}: not an unfinished deepembed run directory (no {PROGRESS_FILE})", dir.display());
            }
            (dir.to_path_buf(), Box::new(Progress::read(dir)?))
        }
        None => {
            let mut unfinished = Vec::new();
            if let Ok(entries) = std::fs::read_dir(out) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(progress) = Progress::read(&path) else { continue };
                    let same = progress.fingerprint.plugin == now.plugin && progress.fingerprint.shard == now.shard;
                    let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH);
                    if same {
                        unfinished.push((modified, path, progress));
                    }
                }
            }
            unfinished.sort_by_key(|(modified, path, _)| (*modified, path.clone()));
            match unfinished.pop() {
                None => {
                    if let Some(finished) = finished_run(out, now) {
                        return Ok(finished);
                    }
                    log::info!("--resume: no unfinished {} run in {}; starting a new one", now.plugin, out.display());
                    return Ok(Start::New);
                }
                Some((_, dir, progress)) => (dir, Box::new(progress)),
            }
        }
    };
    let diffs = progress.fingerprint.differences(now);
    if !diffs.is_empty() {
        bail!(
            "cannot resume {}: {}\nRun it as it was started, or without --resume to start a new run.",
            dir.display(),
            diffs.join("; ")
        );
    }
    Ok(Start::Continue { dir, progress })
}

/// A finished run in `out` of the same plugin, version, shard and arguments (its input files are
/// not stamped in a finished run: they are not compared).
fn finished_run(out: &Path, now: &Fingerprint) -> Option<Start> {
    let read = |path: PathBuf| -> Option<Map<String, Value>> {
        serde_json::from_str::<Value>(&std::fs::read_to_string(path).ok()?).ok()?.as_object().cloned()
    };
    for entry in std::fs::read_dir(out).ok()?.flatten() {
        let dir = entry.path();
        let (Some(details), Some(mut arguments)) =
            (read(dir.join("embedding_details.json")), read(dir.join("cli_arguments.json")))
        else {
            continue;
        };
        for key in FREE_ON_RESUME {
            arguments.remove(*key);
        }
        let text = |key: &str| details.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let number = |v: Option<&Value>, key: &str| v.and_then(|s| s.get(key)).and_then(Value::as_u64);
        let shard = details.get("shard");
        let shard = number(shard, "index").zip(number(shard, "count"));
        if text("plugin") == now.plugin
            && text("plugin_version") == now.plugin_version
            && shard == now.shard
            && arguments == now.arguments
            && dir.join(text("file_name")).is_file()
        {
            log::info!("--resume: {} is this run, finished already; nothing to do", dir.display());
            let rows = details.get("rows").and_then(Value::as_u64).unwrap_or(0);
            let file = Some(dir.join(text("file_name"))).filter(|f| f.is_file());
            return Some(Start::Finished { file, dir, rows });
        }
    }
    None
}

/// When a piece is committed.
#[derive(Clone, Copy, Debug)]
pub struct CommitPolicy {
    pub rows: u64,
    pub interval: Duration,
}

/// The run's output while it is written: committed pieces and the one being written.
pub struct Pieces {
    dir: PathBuf,
    progress: Progress,
    /// When pieces are committed and `.progress.json` kept; `None` for a run that cannot resume
    /// (its plugin reads other rows to embed a row): one piece, committed at the end.
    policy: Option<CommitPolicy>,
    current: Option<ParquetSink>,
    current_rows: u64,
    current_skipped: Vec<SkippedRow>,
    last_commit: Instant,
    attempt_started: Instant,
}

impl Pieces {
    /// Starts an attempt on the run in `dir` (new, or continued with its committed pieces).
    pub fn start(dir: &Path, mut progress: Progress, policy: Option<CommitPolicy>) -> Result<Pieces> {
        progress.attempts.push(Attempt { input_rows: 0, output_rows: 0, seconds: 0.0 });
        let pieces_dir = dir.join(PIECES_DIR);
        std::fs::create_dir_all(&pieces_dir).with_context(|| format!("cannot create {}", pieces_dir.display()))?;
        remove_uncommitted(&pieces_dir, &progress);
        if policy.is_some() {
            progress.write(dir)?;
        }
        let mut pieces = Pieces {
            dir: dir.to_path_buf(),
            progress,
            policy,
            current: None,
            current_rows: 0,
            current_skipped: Vec::new(),
            last_commit: Instant::now(),
            attempt_started: Instant::now(),
        };
        pieces.current = Some(pieces.next_sink());
        Ok(pieces)
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Whether anything is committed (a kept directory then holds work worth resuming).
    pub fn has_committed(&self) -> bool {
        self.policy.is_some() && !self.progress.pieces.is_empty()
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.current.as_mut().expect("a piece is always open").write(batch)
    }

    pub fn skip(&mut self, row: u64, reason: &str) {
        self.current_skipped.push(SkippedRow { row, reason: reason.to_string() });
    }

    /// `rows` more input rows are done (emitted or skipped): commits when the policy says so.
    pub fn rows_done(&mut self, rows: u64) -> Result<()> {
        self.current_rows += rows;
        let due = self.policy.is_some_and(|p| self.current_rows >= p.rows || self.last_commit.elapsed() >= p.interval);
        if due {
            self.commit()?;
        }
        test_stall("rows", self.progress.attempts.last().map_or(0, |a| a.input_rows) + self.current_rows);
        Ok(())
    }

    /// Closes the current piece and records it: file synced and renamed first, then the
    /// progress file replaced, so a listed piece is always whole.
    fn commit(&mut self) -> Result<()> {
        let sink = self.current.take().expect("a piece is always open");
        if self.current_rows == 0 && sink.rows == 0 {
            self.current = Some(sink);
            return Ok(());
        }
        let output_rows = sink.rows;
        let file = if output_rows > 0 {
            let path = sink.finish()?;
            sync_dir(&self.dir.join(PIECES_DIR))?;
            Some(path.file_name().expect("a piece file name").to_string_lossy().into_owned())
        } else {
            None
        };
        self.progress.pieces.push(Piece {
            file,
            input_rows: self.current_rows,
            output_rows,
            skipped: std::mem::take(&mut self.current_skipped),
        });
        let attempt = self.progress.attempts.last_mut().expect("an attempt was started");
        attempt.input_rows += self.current_rows;
        attempt.output_rows += output_rows;
        attempt.seconds = self.attempt_started.elapsed().as_secs_f64();
        self.current_rows = 0;
        if self.policy.is_some() {
            self.progress.write(&self.dir)?;
            crate::signals::keep_on_interrupt();
        }
        self.last_commit = Instant::now();
        self.current = Some(self.next_sink());
        Ok(())
    }

    fn next_sink(&self) -> ParquetSink {
        let name = format!("piece_{:06}.parquet", self.progress.pieces.len() + 1);
        ParquetSink::new(&self.dir.join(PIECES_DIR), &name)
    }

    /// Commits the last piece and puts the pieces together, under a temporary name in the run
    /// directory: the caller writes the JSON files, then [`Assembled::complete`] moves it into
    /// place, so the Parquet file appears last. No rows at all is an error unless `may_be_empty`
    /// (a shard of a table with fewer rows than shards): then there is no Parquet file, since the
    /// host learns the output's columns from its first batch.
    pub fn assemble(mut self, may_be_empty: bool) -> Result<Assembled> {
        self.commit()?;
        let progress = self.progress;
        let pieces_dir = self.dir.join(PIECES_DIR);
        let files: Vec<PathBuf> =
            progress.pieces.iter().filter_map(|p| p.file.as_ref()).map(|f| pieces_dir.join(f)).collect();
        let temp = self.dir.join(format!(".{}.partial", progress.plan.file_name));
        let rows = match files.as_slice() {
            [] if may_be_empty => 0,
            [] => bail!("the plugin produced no output rows"),
            // One piece is the whole file already: linked, not copied (the piece stays until the
            // end, for a run killed before then to be assembled again).
            [only] => {
                let _ = std::fs::remove_file(&temp);
                if std::fs::hard_link(only, &temp).is_err() {
                    std::fs::copy(only, &temp).with_context(|| format!("cannot write {}", temp.display()))?;
                }
                progress.pieces.iter().map(|p| p.output_rows).sum()
            }
            _ => output::concat_parquet(&files, &temp)?,
        };
        test_stall("assembling", 0);
        let temp = (!files.is_empty()).then_some(temp);
        Ok(Assembled { dir: self.dir, temp, progress, rows })
    }
}

/// A run's finished Parquet file under its temporary name (none for an empty shard).
pub struct Assembled {
    dir: PathBuf,
    temp: Option<PathBuf>,
    pub progress: Progress,
    pub rows: u64,
}

impl Assembled {
    /// Moves the file into place and removes the hidden files, the progress file first: a run
    /// killed in between is finished, not resumable.
    pub fn complete(self) -> Result<Option<PathBuf>> {
        let target = self.dir.join(&self.progress.plan.file_name);
        if let Some(temp) = &self.temp {
            std::fs::rename(temp, &target)
                .with_context(|| format!("cannot move the finished file to {}", target.display()))?;
        }
        let _ = std::fs::remove_file(self.dir.join(PROGRESS_FILE));
        let _ = std::fs::remove_dir_all(self.dir.join(PIECES_DIR));
        Ok(self.temp.map(|_| target))
    }

    /// Removes the temporary file (the JSON files could not be written).
    pub fn discard(self) {
        if let Some(temp) = &self.temp {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// Files in `.pieces` that the progress file does not list: a piece being written when the run
/// was killed, or one renamed just before the progress file would have listed it.
fn remove_uncommitted(pieces_dir: &Path, progress: &Progress) {
    let Ok(entries) = std::fs::read_dir(pieces_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !progress.pieces.iter().any(|p| p.file.as_deref() == Some(name.as_str())) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))
}

/// For the kill tests only: `DEEPEMBED_TEST_STALL=rows:N` stops the process (it sleeps, for the
/// test to kill it) once this attempt has done N rows (after any commit they made due),
/// `assembling` once the finished file is written under its temporary name, before the JSON
/// files and before it is moved into place.
fn test_stall(point: &str, rows: u64) {
    let Ok(spec) = std::env::var("DEEPEMBED_TEST_STALL") else { return };
    let stall = match spec.split_once(':') {
        Some((name, n)) => name == point && n.parse::<u64>().is_ok_and(|n| rows >= n),
        None => spec == point,
    };
    if stall {
        eprintln!("deepembed: stalled at {spec} for a test");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// The error when `--resume` is given for a plugin that cannot resume.
pub fn not_resumable(plugin: &str) -> anyhow::Error {
    anyhow!(
        "--resume: plugin {plugin} embeds a row from other rows too (a series' history, or statistics over the whole \
         table), so its output cannot be committed in pieces; run it again without --resume"
    )
}

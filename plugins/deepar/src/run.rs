//! The run, in two passes over the input:
//!
//! 1. **read**: every input row is encoded with the checkpoint's preprocessing into a compact
//!    temporary file, noting the earliest timestamp (hour 0 of the index) and whether each
//!    series' rows arrive in time order. Bad rows fail the run or are skipped here, before any
//!    output exists.
//! 2. **embed**: rows are windowed per series and run through the network in chunks of
//!    `batch_size`. When every series arrived in time order (the common case), rows are
//!    windowed in input order, holding `L + 1` rows per series, and written as they go (with
//!    short windows, which place a row only once its series' next row is seen, by row number
//!    as below). Otherwise they are sorted by (series, time) on disk within `--sort_memory_mb`,
//!    windowed in that order, written to a file of fixed-size results by row number, and read
//!    back from it in input order.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::{OutputPlan, RunContext};
use tch::Tensor;

use crate::encode::{DeepTuneGroup, RowEncoder, SeriesIds};
use crate::network::Network;
use crate::options::DeepArOptions;
use crate::output::{OutputRows, Rows};
use crate::record::Record;
use crate::saved::{RealSource, SavedDeepAr};
use crate::spill::{sorted, Spill, TempDir};
use crate::time::TimeAxis;
use crate::windows::{Derived, History, LaggedInput, Placed, TargetSlot, Windowing};

/// DeepTune's MODEL_STR for DeepAR.
const MODEL_STR: &str = "deepAR";

pub fn run(ctx: &mut RunContext<'_>, opts: &DeepArOptions) -> Result<()> {
    ctx.require_fp32("its recurrent network runs outside the SDK's pipeline, in float32")?;
    let saved = SavedDeepAr::load(&opts.model_weights)?;
    check_lists(opts, &saved)?;
    let targets: Vec<String> = saved.targets.iter().map(|t| t.name.clone()).collect();
    match &opts.target_column {
        Some(t) if !targets.contains(t) => bail!(
            "--target_column {t}: the checkpoint's model forecasts '{}' (its targets are among its inputs, so they cannot be swapped)",
            targets.join("', '")
        ),
        _ => {}
    }
    let group_ids = opts.group_ids.clone().unwrap_or_else(|| saved.group_ids.clone());
    let length = opts.max_encoder_length.unwrap_or(saved.max_encoder_length);
    if length != saved.max_encoder_length {
        log::warn!(
            "--max_encoder_length {length}: the model was trained on windows of {} rows",
            saved.max_encoder_length
        );
    }
    let frame = DeepTuneGroup::for_input(&group_ids, ctx.input_schema("df")?);
    let schema = frame.schema(ctx.input_schema("df")?.as_ref().clone());
    let encoder = RowEncoder::new(&saved, &schema, &opts.time_idx_column, &group_ids)?;
    let network = Network::from_saved(&saved, ctx.tch_device())?;
    log::info!(
        "DeepAR ({}, {} layers, hidden {}) from {}: {} continuous and {} categorical inputs, windows of {length} hours, series by [{}]",
        saved.cell,
        saved.rnn_layers,
        saved.hidden_size,
        saved.path.display(),
        saved.reals.len(),
        saved.categoricals.len(),
        group_ids.join(", ")
    );

    // Pass 1: encode and spill, noting hour 0 and whether series arrive in time order.
    let temp = TempDir::new()?;
    let mut spill = Spill::create(temp.file("input"), encoder.layout())?;
    let mut series = SeriesIds::default();
    let mut scan = Scan::default();
    let mut skipped = Vec::new();
    let mut first_row = 0u64;
    for batch in ctx.take_input("df")? {
        if ctx.cancelled() {
            bail!("interrupted");
        }
        let batch = frame.batch(batch.map_err(|e| anyhow!("reading input: {e}"))?)?;
        for (i, record) in encoder.encode(&batch, first_row, &mut series)?.into_iter().enumerate() {
            match record {
                Ok(record) => {
                    scan.see(&record, &series)?;
                    spill.push(&record)?;
                }
                Err(reason) => {
                    let row = first_row + i as u64;
                    ctx.skip_row(row, &reason)?;
                    skipped.push(row);
                }
            }
        }
        first_row += batch.num_rows() as u64;
    }
    let spilled = spill.finish()?;
    let total_rows = first_row;
    log::info!(
        "{total_rows} rows in {} series{}",
        series.len(),
        if scan.in_order { ", each in time order" } else { ", not in time order: sorting them on disk" }
    );

    let dims = network.dims();
    let mut details = serde_json::Map::new();
    details.insert("checkpoint".into(), saved.path.display().to_string().into());
    details.insert("cell_type".into(), saved.cell.to_string().into());
    details.insert("max_encoder_length".into(), length.into());
    details.insert("group_ids".into(), group_ids.clone().into());
    details.insert("series".into(), series.len().into());
    let plan =
        OutputPlan { model_str: MODEL_STR.into(), file_name: format!("{MODEL_STR}_embeddings.parquet"), dims, details };
    let output = OutputRows::new(dims, &targets)?;
    ctx.begin(&plan)?;

    // Pass 2: window, embed, write in input order.
    let time_slot = saved.reals.iter().position(|r| r.source == RealSource::TimeIndex);
    let windowing = Windowing {
        length,
        // A length given on the command line is DeepTune's: its dataset, built with that
        // max_encoder_length and pytorch-forecasting's default min_encoder_length (the same),
        // pads rows with a shorter history. Otherwise the checkpoint's own lengths.
        min_length: if opts.max_encoder_length.is_some() { length } else { saved.min_encoder_length.min(length) },
        allow_gaps: saved.allow_missing_timesteps,
        targets: (0..saved.targets.len())
            .map(|k| TargetSlot {
                slot: saved.reals.iter().position(|r| r.source == RealSource::Target(k)).expect("checked at load"),
                per_window: saved.targets[k].normaliser.per_window().cloned(),
            })
            .collect(),
        time_slot: time_slot.map(|s| (s, saved.reals[s].center, saved.reals[s].scale)),
        layout: encoder.layout(),
        axis: TimeAxis { kind: encoder.time_kind(), earliest: scan.earliest },
        per_window_inputs: saved
            .reals
            .iter()
            .enumerate()
            .filter_map(|(slot, real)| Some((slot, real.normaliser.as_ref()?.per_window()?.clone())))
            .collect(),
        derived: derived_inputs(&saved),
        lagged: saved
            .reals
            .iter()
            .enumerate()
            .filter_map(|(slot, real)| match real.source {
                RealSource::Lagged { of, lag } => Some(LaggedInput { slot, of, lag }),
                _ => None,
            })
            .collect(),
        max_lag: saved.max_lag,
        fill: saved.constant_fill.clone(),
    };
    let model = Model { network: &network, layout: encoder.layout() };
    let sink = if scan.in_order && !windowing.places_late() {
        Sink::InOrder(InOrder { output: &output })
    } else {
        // Rows come out of windowing in another order than the input's (sorted by series, or
        // with short windows a row placed only once its series' next row is seen, which may be
        // much later in the input): they are written by row number.
        Sink::ByRow(ByRow::create(temp.file("results"), dims, targets.len())?)
    };
    let mut batcher = Batcher { chunk: Chunk::default(), model, sink, batch_size: ctx.batch_size() };
    if scan.in_order {
        // Each series' rows arrive in time order: windowed as they come, one history per series.
        let mut histories: HashMap<u32, History> = HashMap::new();
        for record in spilled.read()? {
            let record = record?;
            let history = histories.entry(record.series).or_default();
            batcher.add(ctx, windowing.push(history, record, &series)?)?;
        }
        if windowing.places_late() {
            // Each series' last row (in series order, for the same chunks run after run).
            let mut histories: Vec<(u32, History)> = histories.into_iter().collect();
            histories.sort_unstable_by_key(|(id, _)| *id);
            for (_, mut history) in histories {
                batcher.add(ctx, windowing.finish(&mut history))?;
            }
        }
    } else {
        let budget = usize::try_from(opts.sort_memory_mb).unwrap_or(usize::MAX).saturating_mul(1 << 20);
        let mut history = History::default();
        let mut current = None;
        for record in sorted(&spilled, &temp, budget)? {
            let record = record?;
            if current != Some(record.series) {
                batcher.add(ctx, windowing.finish(&mut history))?;
                history = History::default();
                current = Some(record.series);
            }
            batcher.add(ctx, windowing.push(&mut history, record, &series)?)?;
        }
        batcher.add(ctx, windowing.finish(&mut history))?;
    }
    batcher.finish(ctx, &output, total_rows, &skipped)
}

/// The inputs filled in per window, by slot: the relative time index, the encoder length, and
/// a per-window normaliser's center and scale.
fn derived_inputs(saved: &SavedDeepAr) -> Vec<(usize, Derived)> {
    let per_window = |k: usize| saved.targets[k].normaliser.per_window().is_some();
    let max_encoder_length = saved.max_encoder_length;
    let mut derived = Vec::new();
    for (slot, real) in saved.reals.iter().enumerate() {
        let (center, scale) = (real.center, real.scale);
        derived.push((
            slot,
            match real.source {
                RealSource::RelativeTimeIndex => Derived::RelativeTimeIndex { max_encoder_length },
                RealSource::EncoderLength => Derived::EncoderLength { max_encoder_length },
                RealSource::TargetCenter(target) if per_window(target) => {
                    Derived::WindowCenter { target, center, scale }
                }
                RealSource::TargetScale(target) if per_window(target) => Derived::WindowScale { target, center, scale },
                _ => continue,
            },
        ));
    }
    derived
}

/// What the first pass learns: hour 0, and whether each series arrived in time order.
struct Scan {
    earliest: i64,
    in_order: bool,
    /// Per series: its latest timestamp so far and that row.
    last: Vec<(i64, u64)>,
}

impl Default for Scan {
    fn default() -> Scan {
        Scan { earliest: i64::MAX, in_order: true, last: Vec::new() }
    }
}

impl Scan {
    fn see(&mut self, record: &Record, series: &SeriesIds) -> Result<()> {
        self.earliest = self.earliest.min(record.time);
        let id = record.series as usize;
        if id >= self.last.len() {
            self.last.resize(id + 1, (i64::MIN, 0));
        }
        let (time, row) = self.last[id];
        if record.time == time {
            bail!(
                "rows {row} and {} of series '{}' have the same time; each series needs one row per step of the time index",
                record.row,
                series.describe(record.series)
            );
        }
        if record.time < time {
            self.in_order = false;
        } else {
            self.last[id] = (record.time, record.row);
        }
        Ok(())
    }
}

/// Placed rows waiting for the model: at most `batch_size`.
#[derive(Default)]
struct Chunk {
    rows: Vec<u64>,
    rows_out: Rows,
    /// The rows that have a window (indices into this chunk), by window length (all full ones
    /// but a series' first few rows, with short windows).
    windowed: BTreeMap<usize, Windows>,
}

/// Windows of one length, their inputs concatenated.
#[derive(Default)]
struct Windows {
    rows: Vec<usize>,
    reals: Vec<f32>,
    codes: Vec<i64>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn extend(&mut self, placed: Option<Placed>) {
        let Some(placed) = placed else { return };
        if let Some(window) = placed.window {
            let windows = self.windowed.entry(window.steps).or_default();
            windows.rows.push(self.rows.len());
            windows.reals.extend_from_slice(&window.reals);
            windows.codes.extend_from_slice(&window.codes);
        }
        self.rows.push(placed.row);
        self.rows_out.targets.extend_from_slice(&placed.targets);
        self.rows_out.padded.push(true);
    }

    /// Runs the model on the windowed rows; padded rows keep zeros. Leaves the chunk empty.
    fn embed(&mut self, model: &mut Model<'_>) -> Result<(Vec<u64>, Rows)> {
        let mut done = std::mem::take(self);
        let dims = model.network.dims();
        done.rows_out.embeddings = vec![0.0; done.rows.len() * dims];
        for (steps, windows) in &done.windowed {
            let values = model.embed(windows.rows.len(), *steps, &windows.reals, &windows.codes)?;
            for (k, &i) in windows.rows.iter().enumerate() {
                done.rows_out.embeddings[i * dims..(i + 1) * dims].copy_from_slice(&values[k * dims..(k + 1) * dims]);
                done.rows_out.padded[i] = false;
            }
        }
        Ok((done.rows, done.rows_out))
    }
}

struct Model<'n> {
    network: &'n Network,
    layout: crate::record::Layout,
}

impl Model<'_> {
    fn embed(&mut self, windows: usize, steps: usize, reals: &[f32], codes: &[i64]) -> Result<Vec<f32>> {
        let (n, steps) = (windows as i64, steps as i64);
        let reals = Tensor::from_slice(reals).view([n, steps, self.layout.reals as i64]);
        let codes = Tensor::from_slice(codes).view([n, steps, self.layout.categoricals as i64]);
        let out = tch::no_grad(|| self.network.forward(&reals, &codes));
        let out = out.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous();
        Vec::<f32>::try_from(out.view([-1])).context("reading embeddings back")
    }
}

/// Collects placed rows into chunks of `batch_size`, runs each full chunk through the model and
/// hands its results to the sink.
struct Batcher<'m, 'o> {
    chunk: Chunk,
    model: Model<'m>,
    sink: Sink<'o>,
    batch_size: usize,
}

impl Batcher<'_, '_> {
    fn add(&mut self, ctx: &mut RunContext<'_>, placed: Option<Placed>) -> Result<()> {
        self.chunk.extend(placed);
        if self.chunk.len() >= self.batch_size {
            self.sink.put(ctx, self.chunk.embed(&mut self.model)?)?;
        }
        Ok(())
    }

    /// Runs the last chunk; results kept by row number are then emitted in input order.
    fn finish(mut self, ctx: &mut RunContext<'_>, output: &OutputRows, total_rows: u64, skipped: &[u64]) -> Result<()> {
        self.sink.put(ctx, self.chunk.embed(&mut self.model)?)?;
        if let Sink::ByRow(by_row) = self.sink {
            by_row.emit_in_order(ctx, output, total_rows, skipped, self.batch_size)?;
        }
        Ok(())
    }
}

/// Where chunks' results go: straight to the host when they come in input order, else by row
/// number.
enum Sink<'o> {
    InOrder(InOrder<'o>),
    ByRow(ByRow),
}

impl Sink<'_> {
    fn put(&mut self, ctx: &mut RunContext<'_>, chunk: (Vec<u64>, Rows)) -> Result<()> {
        match self {
            Sink::InOrder(sink) => sink.put(ctx, chunk),
            Sink::ByRow(sink) => sink.put(chunk),
        }
    }
}

/// Writes chunks straight to the host: their rows are in input order.
struct InOrder<'o> {
    output: &'o OutputRows,
}

impl InOrder<'_> {
    fn put(&mut self, ctx: &mut RunContext<'_>, (_, rows): (Vec<u64>, Rows)) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        ctx.emit(&self.output.batch(&rows)?)?;
        ctx.progress(rows.len() as u64);
        Ok(())
    }
}

/// Results of rows that come in any order, kept in a file of fixed-size slots by row number,
/// then read back in input order.
struct ByRow {
    path: PathBuf,
    file: File,
    dims: usize,
    targets: usize,
}

impl ByRow {
    fn create(path: PathBuf, dims: usize, targets: usize) -> Result<ByRow> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(ByRow { path, file, dims, targets })
    }

    /// Bytes per row: the embedding, the targets, the padded flag.
    fn slot(&self) -> usize {
        4 * self.dims + 4 * self.targets + 1
    }

    fn put(&mut self, (row_numbers, rows): (Vec<u64>, Rows)) -> Result<()> {
        let slot = self.slot();
        let mut bytes = Vec::with_capacity(slot);
        for (i, &row) in row_numbers.iter().enumerate() {
            bytes.clear();
            let embedding = &rows.embeddings[i * self.dims..(i + 1) * self.dims];
            for x in embedding.iter().chain(&rows.targets[i * self.targets..(i + 1) * self.targets]) {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            bytes.push(u8::from(rows.padded[i]));
            self.file
                .write_all_at(&bytes, row * slot as u64)
                .with_context(|| format!("writing {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Emits rows `0..total` in order, leaving out the skipped ones (sorted).
    fn emit_in_order(
        &self,
        ctx: &mut RunContext<'_>,
        output: &OutputRows,
        total: u64,
        skipped: &[u64],
        batch_size: usize,
    ) -> Result<()> {
        let slot = self.slot();
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&self.path)?);
        let mut bytes = vec![0u8; slot];
        let mut rows = Rows::default();
        let mut skipped = skipped.iter().peekable();
        for row in 0..total {
            if skipped.peek() == Some(&&row) {
                skipped.next();
                // A skipped row's slot was never written; the last ones may be past the end.
                let _ = reader.read_exact(&mut bytes);
                continue;
            }
            reader.read_exact(&mut bytes).with_context(|| format!("reading {}", self.path.display()))?;
            let (floats, padded) = bytes.split_at(4 * (self.dims + self.targets));
            let mut floats = floats.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")));
            rows.embeddings.extend(floats.by_ref().take(self.dims));
            rows.targets.extend(floats);
            rows.padded.push(padded[0] == 1);
            if rows.len() >= batch_size {
                let full = std::mem::take(&mut rows);
                ctx.emit(&output.batch(&full)?)?;
                ctx.progress(full.len() as u64);
            }
        }
        if !rows.is_empty() {
            ctx.emit(&output.batch(&rows)?)?;
            ctx.progress(rows.len() as u64);
        }
        Ok(())
    }
}

/// The `--static_*` / `--time_varying_*` flags, when given, must be the checkpoint's lists.
fn check_lists(opts: &DeepArOptions, saved: &SavedDeepAr) -> Result<()> {
    let lists = &saved.lists;
    let is_target = |r: &String| saved.targets.iter().any(|t| t.name == *r);
    let unknown_reals: Vec<String> =
        lists.time_varying_unknown_reals.iter().filter(|r| !is_target(r)).cloned().collect();
    check_list("--static_categoricals", &opts.static_categoricals, &lists.static_categoricals)?;
    check_list("--static_reals", &opts.static_reals, &lists.static_reals)?;
    check_list(
        "--time_varying_known_categoricals",
        &opts.time_varying_known_categoricals,
        &lists.time_varying_known_categoricals,
    )?;
    check_list(
        "--time_varying_unknown_categoricals",
        &opts.time_varying_unknown_categoricals,
        &lists.time_varying_unknown_categoricals,
    )?;
    check_list("--time_varying_known_reals", &opts.time_varying_known_reals, &lists.time_varying_known_reals)?;
    check_list("--time_varying_unknown_reals", &opts.time_varying_unknown_reals, &unknown_reals)
}

fn check_list(flag: &str, given: &Option<Vec<String>>, saved: &[String]) -> Result<()> {
    match given {
        Some(given) if given.as_slice() != saved => bail!(
            "{flag} [{}] contradicts the checkpoint, which was trained with [{}]; leave the flag out to use the checkpoint's",
            given.join(", "),
            saved.join(", ")
        ),
        _ => Ok(()),
    }
}

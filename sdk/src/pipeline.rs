//! The one batch pipeline every plugin runs:
//!
//! 1. **prepare** (a CPU thread): input batches, gathered into windows, become model rows: an
//!    image's pixels, a text's token ids, a table row's codes. A row the model cannot use is a
//!    reason, not a row.
//! 2. **embed** (this thread, on the run's device): the usable rows of a window, in chunks of at
//!    most `batch_size`, become embeddings. A [`Batching`] strategy says in which order rows are
//!    chunked (input order, or longest first so chunks of similar length pad little).
//! 3. **emit**: the window's embeddings, back in input order, with the carried columns
//!    ([`OutputColumns`]), go to the host; unusable rows are skipped or fail the run there, per
//!    `--on_error`, naming the row.
//!
//! The model runs under `--precision`: with fp16 or bf16, inside libtorch's autocast to that
//! type on the run's device ([`autocast`]); the embeddings are read back as float32 either way.
//! Rows whose embeddings hold a NaN or an infinity (or, in fp16, are all zero) are counted and
//! reported at the end ([`SuspectRows`]).
//!
//! At the end it logs where the time went (preparing; on the model's thread: waiting for
//! windows, sending chunks, reading back, emitting): when the model's thread waits for windows,
//! the run is bound by the CPU-side preparation; on a GPU, reading back is where it waits for
//! the device.
//!
//! Preparing the next windows overlaps embedding this one; memory is bounded by the windows in
//! flight (see [`windows_ahead`]). On a GPU the model's thread keeps the device busy: it reads a
//! chunk back (waiting for the device) right before it sends the next one, and emits finished
//! windows only after that send, while the device works. So the device idles only for the
//! read-back copy, whatever emitting costs, as long as emitting a window takes less time than
//! the device spends on a chunk. Inputs reach the device without a copy on this thread where the
//! plugin can arrange it (vision decodes straight into pinned memory: `StagingBytes`).

use std::collections::VecDeque;
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::ffi_stream::RecordBatchStreamReader;
use tch::Tensor;

use crate::abi::autocast::autocast;
use crate::output::OutputColumns;
use crate::suspect_rows::SuspectRows;
use crate::{Device, DeviceKind, RunContext};

/// CPU work on input rows. Runs on its own thread, so it owns its state (which it may keep
/// between windows: counts, a series' history) and gives it back at the end.
pub trait Prepare: Send + 'static {
    /// One model row.
    type Row: Send + 'static;

    /// The model rows of `batch`'s rows, one per input row, in order: `Err(reason)` for a row
    /// that cannot be used. `first_row` is the batch's first row number in the input file. An
    /// `Err` of the whole call stops the run.
    fn prepare(&mut self, batch: &RecordBatch, first_row: u64) -> Result<Vec<Result<Self::Row, String>>>;

    /// On a GPU run, called before each `prepare` but the last, with the window that comes
    /// after it: the next `prepare` call gets this same batch and `first_row`. A plugin that
    /// prepares on a thread pool can start on it here, so threads that finish their share of
    /// this window go on with the next instead of waiting for the slowest row (vision does).
    /// Not called on the CPU, where preparing shares the cores with the model. Nothing by
    /// default.
    fn look_ahead(&mut self, _next: &RecordBatch, _first_row: u64) {}
}

/// The model: rows to embeddings, on the run's device.
pub trait Embed<Row> {
    /// `rows` (at most `batch_size`) to a `(rows.len(), dims)` float tensor, on any device. The
    /// work may still be queued on the device when this returns. The pipeline reads the result
    /// back (which waits for the device) before the next call, and drops a window's rows only
    /// after all its chunks are read back: host memory that a call copies from asynchronously
    /// may be reused from the next call on, and a row's own memory for as long as the row lives.
    /// Keep host work here small: the device waits for it (see the module's comment).
    fn embed(&mut self, rows: &[&Row]) -> Result<Tensor>;
}

/// In which order the usable rows of a window are cut into chunks for the model.
pub enum Batching<Row> {
    /// Input order, one input batch per window.
    InputOrder,
    /// Longest first within windows of `window_batches` input batches (ties keep input order),
    /// so each chunk holds rows of similar length; the first chunk shows the peak memory at once.
    LongestFirst { window_batches: usize, length: fn(&Row) -> usize },
}

/// A window of input rows, prepared.
struct Window<Row> {
    batch: RecordBatch,
    first_row: u64,
    rows: Vec<Result<Row, String>>,
}

/// Runs the pipeline over the input `input`, emitting into `columns`. The caller has already
/// called [`RunContext::begin`]. Returns the preparer, with whatever it counted.
pub fn run<P: Prepare>(
    ctx: &mut RunContext<'_>,
    input: RecordBatchStreamReader,
    columns: &OutputColumns,
    mut preparer: P,
    model: &mut dyn Embed<P::Row>,
    batching: Batching<P::Row>,
) -> Result<P> {
    let window_batches = match &batching {
        Batching::InputOrder => 1,
        Batching::LongestFirst { window_batches, .. } => (*window_batches).max(1),
    };
    // `ahead - 1` windows wait in the channel and one more in the preparer's blocked send: at most
    // `ahead` windows prepared and not yet taken by the model.
    log::debug!("pipeline: starting (the model is loaded)");
    let (tx, rx) = sync_channel::<Result<Window<P::Row>>>(windows_ahead(ctx.device()) - 1);
    let ahead = looks_ahead(ctx.device());
    let reader = thread::Builder::new().name("prepare".into()).spawn(move || {
        let mut input = input.peekable();
        let mut first_row = 0u64;
        let mut preparing = Duration::ZERO;
        let mut next = read_next_window(&mut input, window_batches);
        while let Some(current) = next.take() {
            let started = Instant::now();
            // With `ahead`, the window after this one is read first, so that the plugin can
            // start on it (`Prepare::look_ahead`) while it finishes this one; else only once
            // this one is sent.
            if ahead {
                next = read_next_window(&mut input, window_batches);
            }
            let window = current.and_then(|batch| {
                if let Some(Ok(following)) = &next {
                    preparer.look_ahead(following, first_row + batch.num_rows() as u64);
                }
                let rows = preparer.prepare(&batch, first_row).with_context(|| rows_context(first_row, &batch))?;
                if rows.len() != batch.num_rows() {
                    bail!("the plugin prepared {} rows for {} input rows", rows.len(), batch.num_rows());
                }
                Ok(Window { batch, first_row, rows })
            });
            if let Ok(w) = &window {
                first_row += w.batch.num_rows() as u64;
            }
            preparing += started.elapsed();
            let stop = window.is_err();
            if tx.send(window).is_err() || stop {
                break;
            }
            if !ahead {
                let started = Instant::now();
                next = read_next_window(&mut input, window_batches);
                preparing += started.elapsed();
            }
        }
        (preparer, preparing)
    })?;
    let mut times = StageTimes::default();
    // One autocast region for the whole run (fp32: none), on this thread, where the model runs.
    let (device, precision) = (ctx.device().kind, ctx.precision());
    let result = autocast(device, precision, || consume(ctx, columns, model, &batching, rx, &mut times));
    // The preparer stops by itself once the receiver is gone.
    let (preparer, preparing) = reader.join().map_err(|_| anyhow!("the preparing thread panicked"))?;
    if result.is_ok() {
        times.log(preparing);
    }
    result.map(|()| preparer)
}

/// Where the model's thread spent the run.
#[derive(Default)]
struct StageTimes {
    /// Waiting for prepared windows: the run is bound by preparation.
    waiting: Duration,
    /// Sending chunks: the plugin's `embed` (host work, and queueing the device's work).
    sending: Duration,
    /// Reading embeddings back, which waits for the device: on a GPU, the device's own time.
    reading_back: Duration,
    emitting: Duration,
}

impl StageTimes {
    fn log(&self, preparing: Duration) {
        let total = (self.waiting + self.sending + self.reading_back + self.emitting).as_secs_f64().max(1e-9);
        log::info!(
            "pipeline: preparing {:.2} s (its own thread); the model's thread waited {:.2} s for prepared rows ({:.0}%), \
             sent chunks {:.2} s, read back {:.2} s (waiting for the device), emitted {:.2} s",
            preparing.as_secs_f64(),
            self.waiting.as_secs_f64(),
            100.0 * self.waiting.as_secs_f64() / total,
            self.sending.as_secs_f64(),
            self.reading_back.as_secs_f64(),
            self.emitting.as_secs_f64()
        );
    }
}

/// How many windows are prepared ahead of the one being embedded. On the CPU, one: preparing
/// and embedding share the same cores, and measured on 2 cores taking turns (none ahead) gained
/// nothing over it. On a GPU, enough to hide one slow window's decoding.
fn windows_ahead(device: Device) -> usize {
    match device.kind {
        DeviceKind::Cpu => 1,
        DeviceKind::Cuda => 3,
    }
}

/// Whether the plugin is shown the next window before it prepares this one
/// ([`Prepare::look_ahead`]). On a GPU, yes: the cores do nothing but prepare. On the CPU, no:
/// preparing shares the cores with the model, and starting the next window early only competes
/// with it (vision, ResNet-18 bf16 on 2 cores, six alternating runs of 1024 images: a median
/// 14.5 s with it against 14.1 s without).
fn looks_ahead(device: Device) -> bool {
    matches!(device.kind, DeviceKind::Cuda)
}

fn rows_context(first_row: u64, batch: &RecordBatch) -> String {
    format!("input rows {first_row} to {}", first_row + batch.num_rows().max(1) as u64 - 1)
}

/// The next window of `batches` input batches, or `None` at the end of the input.
fn read_next_window(
    input: &mut std::iter::Peekable<impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>>,
    batches: usize,
) -> Option<Result<RecordBatch>> {
    input.peek().is_some().then(|| read_window(input, batches))
}

fn read_window(
    input: &mut impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>,
    batches: usize,
) -> Result<RecordBatch> {
    let mut window = Vec::with_capacity(batches);
    for batch in input.take(batches) {
        window.push(batch.map_err(|e| anyhow!("reading input: {e}"))?);
    }
    match window.len() {
        0 => bail!("empty window"),
        1 => Ok(window.pop().expect("one batch")),
        _ => Ok(arrow::compute::concat_batches(&window[0].schema(), &window)?),
    }
}

/// A window whose embeddings are not all read back yet.
struct Pending<Row> {
    /// Counts windows, so a chunk in flight finds its own.
    seq: u64,
    window: Window<Row>,
    /// The positions in `window.rows` of the usable rows, in input order.
    kept: Vec<u32>,
    /// Row-major, one row per entry of `kept`.
    embeddings: Vec<f32>,
    /// Chunks sent to the model and not yet read back, or not yet sent.
    chunks_left: usize,
}

impl<Row> Pending<Row> {
    /// The `k`-th usable row.
    fn row(&self, k: usize) -> &Row {
        self.window.rows[self.kept[k] as usize].as_ref().expect("kept rows are usable")
    }
}

/// The chunk last sent to the model, read back right before the next one is sent; the windows
/// it finishes are emitted after that send, while the device works on the next chunk.
struct InFlight {
    out: Tensor,
    /// Its window's `seq`.
    window: u64,
    /// Where its rows go among the window's kept rows.
    positions: Vec<usize>,
}

fn consume<Row>(
    ctx: &mut RunContext<'_>,
    columns: &OutputColumns,
    model: &mut dyn Embed<Row>,
    batching: &Batching<Row>,
    windows: std::sync::mpsc::Receiver<Result<Window<Row>>>,
    times: &mut StageTimes,
) -> Result<()> {
    let dims = columns.dims();
    let batch_size = ctx.batch_size();
    // Oldest first; at most the window being sent and the one before it, until it is emitted.
    let mut pending: VecDeque<Pending<Row>> = VecDeque::new();
    let mut in_flight: Option<InFlight> = None;
    let mut first_read_back = FirstReadBack::default();
    let mut suspect = SuspectRows::new(ctx.precision());
    for seq in 0.. {
        let started = Instant::now();
        let Ok(window) = windows.recv() else { break };
        times.waiting += started.elapsed();
        if ctx.cancelled() {
            bail!("interrupted");
        }
        let window = window?;
        if seq == 0 {
            log::debug!("pipeline: first window prepared ({} rows)", window.rows.len());
        }
        let mut kept: Vec<u32> = Vec::with_capacity(window.rows.len());
        for (i, row) in window.rows.iter().enumerate() {
            match row {
                Ok(_) => kept.push(i as u32),
                Err(reason) => ctx.skip_row(window.first_row + i as u64, reason)?,
            }
        }
        let embeddings = vec![0f32; kept.len() * dims];
        pending.push_back(Pending { seq, window, kept, embeddings, chunks_left: 0 });
        let current = pending.back_mut().expect("just pushed");
        let mut order: Vec<usize> = (0..current.kept.len()).collect();
        if let Batching::LongestFirst { length, .. } = batching {
            order.sort_by_key(|&k| std::cmp::Reverse(length(current.row(k))));
        }
        let chunks: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
        current.chunks_left = chunks.len();
        for positions in chunks {
            // The chunk before comes back first: on a GPU, a read-back queued after this chunk
            // would wait for this chunk's work too, and the device would then idle while this
            // thread emits. Read back first, the device idles only for that copy.
            let started = Instant::now();
            let previous = in_flight.take().map(|chunk| read_back(chunk, &pending)).transpose()?;
            first_read_back.note(previous.is_some());
            times.reading_back += started.elapsed();
            let started = Instant::now();
            let current = pending.back().expect("pushed above");
            let rows: Vec<&Row> = positions.iter().map(|&k| current.row(k)).collect();
            let out = send_chunk(model, &rows, dims)
                .with_context(|| rows_context(current.window.first_row, &current.window.batch))?;
            in_flight = Some(InFlight { out, window: seq, positions });
            times.sending += started.elapsed();
            let started = Instant::now();
            if let Some(previous) = previous {
                previous.store(&mut pending, dims, &mut suspect);
            }
            times.reading_back += started.elapsed();
        }
        let started = Instant::now();
        emit_finished(ctx, columns, &mut pending)?;
        times.emitting += started.elapsed();
    }
    let started = Instant::now();
    if let Some(last) = in_flight.take() {
        read_back(last, &pending)?.store(&mut pending, dims, &mut suspect);
        first_read_back.note(true);
    }
    times.reading_back += started.elapsed();
    let started = Instant::now();
    emit_finished(ctx, columns, &mut pending)?;
    times.emitting += started.elapsed();
    debug_assert!(pending.is_empty(), "every window is emitted");
    suspect.report();
    Ok(())
}

/// Sends one chunk to the model (under the run's autocast region, if any) and checks the shape
/// of what comes back. On a GPU the work is only queued: [`read_back`] waits for it.
fn send_chunk<Row>(model: &mut dyn Embed<Row>, rows: &[&Row], dims: usize) -> Result<Tensor> {
    let out = tch::no_grad(|| model.embed(rows))?;
    if out.size() != [rows.len() as i64, dims as i64] {
        bail!("the model returned embeddings of shape {:?}, expected [{}, {dims}]", out.size(), rows.len());
    }
    Ok(out)
}

/// Reads a chunk's embeddings back as f32. This waits for the device, so this chunk's inputs,
/// and those of every chunk sent before it, are no longer in use afterwards.
fn read_back<Row>(chunk: InFlight, pending: &VecDeque<Pending<Row>>) -> Result<ReadBack> {
    let window = pending.iter().find(|w| w.seq == chunk.window).expect("a chunk's window is pending");
    // To float32 where the embeddings are (under autocast they may be half), then across.
    let out = chunk.out.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu).contiguous();
    let values = Vec::<f32>::try_from(out.view([-1]))
        .context("reading embeddings back")
        .with_context(|| rows_context(window.window.first_row, &window.window.batch))?;
    Ok(ReadBack { values, window: chunk.window, positions: chunk.positions })
}

/// Logs (at debug) when the first chunk's embeddings are back. In the start-up timeline, the span
/// from the first window prepared to here holds the first chunk's model run with whatever the
/// device does once (on a GPU: its libraries' handles, loading kernels), and, since a chunk is
/// read back when the next one is sent, any wait for the second window.
#[derive(Default)]
struct FirstReadBack(bool);

impl FirstReadBack {
    fn note(&mut self, read_back: bool) {
        if read_back && !self.0 {
            self.0 = true;
            log::debug!("pipeline: first chunk read back");
        }
    }
}

/// A chunk's embeddings, read back, not yet in their window.
struct ReadBack {
    values: Vec<f32>,
    window: u64,
    positions: Vec<usize>,
}

impl ReadBack {
    fn store<Row>(self, pending: &mut VecDeque<Pending<Row>>, dims: usize, suspect: &mut SuspectRows) {
        let window = pending.iter_mut().find(|w| w.seq == self.window).expect("a chunk's window is pending");
        for (j, &k) in self.positions.iter().enumerate() {
            let embedding = &self.values[j * dims..(j + 1) * dims];
            suspect.check(window.window.first_row + u64::from(window.kept[k]), embedding);
            window.embeddings[k * dims..(k + 1) * dims].copy_from_slice(embedding);
        }
        window.chunks_left -= 1;
    }
}

/// Emits, in input order, the windows at the front whose embeddings are all read back.
fn emit_finished<Row>(
    ctx: &mut RunContext<'_>,
    columns: &OutputColumns,
    pending: &mut VecDeque<Pending<Row>>,
) -> Result<()> {
    while pending.front().is_some_and(|w| w.chunks_left == 0) {
        let Pending { window, kept, embeddings, .. } = pending.pop_front().expect("checked above");
        let kept = (kept.len() != window.batch.num_rows()).then_some(kept.as_slice());
        ctx.emit(&columns.batch(&window.batch, kept, &embeddings)?)?;
        ctx.progress(window.batch.num_rows() as u64);
    }
    Ok(())
}

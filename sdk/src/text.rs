//! The run loop shared by text plugins.
//!
//! A tokenizing thread reads windows of input rows and tokenizes them while this thread runs the
//! model on the previous window. Within a window, rows are batched by similar token count and,
//! where the model's output provably does not depend on padding, each batch is padded only to
//! its longest text. Output rows keep input order; memory is bounded by the window.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread;

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use tch::Tensor;

use crate::columns::{self, EmbeddingNames};
use crate::RunContext;

/// Input batches gathered into one window, the span over which rows are sorted by length.
const WINDOW_BATCHES: usize = 8;

/// Text to token ids (special tokens included, truncated). Runs on the tokenizing thread.
pub trait Tokenize: Send + 'static {
    fn encode(&self, texts: Vec<&str>) -> Result<Vec<Vec<i64>>>;
}

/// Token ids and attention mask, both (B, T) int64, to embeddings (B, dims) float.
pub trait Embed {
    fn embed(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Pad each batch to its longest text: only where the embedding ignores padding.
    Longest,
    /// Pad every text to this many tokens, as DeepTune does.
    Fixed(usize),
}

/// How a text plugin lays out its run.
pub struct TextLayout<'a> {
    pub text_column: &'a str,
    pub label_column: &'a str,
    /// The name the label column gets in the output (DeepTune's text tools keep `labels`).
    pub label_output: &'a str,
    pub names: EmbeddingNames,
    pub dims: usize,
    pub pad_id: i64,
    pub padding: Padding,
}

struct Window {
    batch: RecordBatch,
    /// Token ids per row; None for rows that cannot be embedded (see `failed`).
    tokens: Vec<Option<Vec<i64>>>,
    failed: Vec<(u64, String)>,
}

/// Fails early, naming what is missing, instead of at the first batch.
pub fn check_text_column(schema: &Schema, text_column: &str) -> Result<()> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let Ok(field) = schema.field_with_name(text_column) else {
        bail!("the input has no '{text_column}' column (--text_column); its columns are: {}", names.join(", "));
    };
    if !matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        bail!("column '{text_column}' has type {}, expected text (string)", field.data_type());
    }
    Ok(())
}

/// Checks that a tokenizer and a model belong together and that `max_length` fits the model,
/// before any row is read.
pub fn check_fits(
    max_length: usize,
    max_positions: i64,
    tokenizer_vocab: usize,
    model_vocab: i64,
    tokenizer_dir: &std::path::Path,
) -> Result<()> {
    if max_length as i64 > max_positions {
        bail!("--max_length {max_length} exceeds the model's {max_positions} positions");
    }
    if tokenizer_vocab as i64 > model_vocab {
        bail!(
            "the tokenizer in {} has {tokenizer_vocab} tokens but the model's vocabulary has {model_vocab}: they do not belong together",
            tokenizer_dir.display()
        );
    }
    Ok(())
}

/// Runs `model` over the input's texts. The caller has already called `ctx.begin`.
pub fn run(ctx: &mut RunContext, layout: &TextLayout, tokenizer: impl Tokenize, model: &dyn Embed) -> Result<()> {
    let batch_size = ctx.batch_size();
    let input = ctx.take_input()?;
    let text_column = layout.text_column.to_string();
    let (tx, rx) = sync_channel::<Result<Window>>(1);
    let reader = thread::Builder::new().name("tokenize".into()).spawn(move || {
        let mut first_row = 0u64;
        let mut input = input.peekable();
        while input.peek().is_some() {
            let window = read_window(&mut input).and_then(|b| tokenize(b, &tokenizer, &text_column, first_row));
            if let Ok(w) = &window {
                first_row += w.batch.num_rows() as u64;
            }
            let stop = window.is_err();
            if tx.send(window).is_err() || stop {
                break;
            }
        }
    })?;
    let result = consume(ctx, layout, model, batch_size, rx);
    let _ = reader.join();
    result
}

fn read_window(input: &mut impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>) -> Result<RecordBatch> {
    let mut batches = Vec::with_capacity(WINDOW_BATCHES);
    for batch in input.take(WINDOW_BATCHES) {
        batches.push(batch.map_err(|e| anyhow!("reading input: {e}"))?);
    }
    let schema = batches.first().map(|b| b.schema()).ok_or_else(|| anyhow!("empty window"))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

fn texts(column: &ArrayRef) -> Result<Vec<Option<&str>>> {
    Ok(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().iter().collect(),
        DataType::LargeUtf8 => column.as_string::<i64>().iter().collect(),
        DataType::Utf8View => column.as_string_view().iter().collect(),
        other => bail!("text column has type {other}, expected string"),
    })
}

fn tokenize(batch: RecordBatch, tokenizer: &impl Tokenize, text_column: &str, first_row: u64) -> Result<Window> {
    let column =
        batch.column_by_name(text_column).ok_or_else(|| anyhow!("input lacks column '{text_column}'"))?.clone();
    let texts = texts(&column)?;
    let present: Vec<&str> = texts.iter().flatten().copied().collect();
    let mut encoded = tokenizer.encode(present)?.into_iter();
    let mut tokens = Vec::with_capacity(texts.len());
    let mut failed = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match text {
            Some(_) => tokens.push(encoded.next()),
            None => {
                tokens.push(None);
                failed.push((first_row + i as u64, format!("column '{text_column}': the text is null")));
            }
        }
    }
    Ok(Window { batch, tokens, failed })
}

fn consume(
    ctx: &mut RunContext,
    layout: &TextLayout,
    model: &dyn Embed,
    batch_size: usize,
    rx: Receiver<Result<Window>>,
) -> Result<()> {
    let device = ctx.device().to_tch();
    let dims = layout.dims;
    for window in rx {
        let w = window?;
        for (row, reason) in &w.failed {
            ctx.skip_row(*row, reason)?;
        }
        let kept: Vec<u32> = (0..w.tokens.len() as u32).filter(|&i| w.tokens[i as usize].is_some()).collect();
        let length = |k: usize| w.tokens[kept[k] as usize].as_ref().map_or(0, Vec::len);
        // Longest first, so the first batch shows the peak memory at once; ties keep input order.
        let mut order: Vec<usize> = (0..kept.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(length(k)));
        let mut matrix = vec![0f32; kept.len() * dims];
        for chunk in order.chunks(batch_size.max(1)) {
            let rows: Vec<&[i64]> =
                chunk.iter().map(|&k| w.tokens[kept[k] as usize].as_deref().unwrap_or_default()).collect();
            let width = match layout.padding {
                Padding::Longest => rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1),
                Padding::Fixed(n) => n,
            };
            let (ids, mask) = padded(&rows, width, layout.pad_id);
            let shape = [rows.len() as i64, width as i64];
            let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
            let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
            let out = tch::no_grad(|| model.embed(&ids, &mask))?;
            let out = out.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous();
            if out.size() != [rows.len() as i64, dims as i64] {
                bail!("the model returned embeddings of shape {:?}, expected [{}, {dims}]", out.size(), rows.len());
            }
            let values = Vec::<f32>::try_from(out.view([-1]))?;
            for (j, &k) in chunk.iter().enumerate() {
                matrix[k * dims..(k + 1) * dims].copy_from_slice(&values[j * dims..(j + 1) * dims]);
            }
        }
        ctx.emit(&output_batch(&w.batch, &kept, &matrix, layout)?)?;
        ctx.progress(w.batch.num_rows() as u64);
    }
    Ok(())
}

fn padded(rows: &[&[i64]], width: usize, pad_id: i64) -> (Vec<i64>, Vec<i64>) {
    let mut ids = vec![pad_id; rows.len() * width];
    let mut mask = vec![0i64; rows.len() * width];
    for (r, tokens) in rows.iter().enumerate() {
        let n = tokens.len().min(width);
        ids[r * width..r * width + n].copy_from_slice(&tokens[..n]);
        mask[r * width..r * width + n].fill(1);
    }
    (ids, mask)
}

/// Embedding columns, then the label column (renamed), then every other input column.
fn output_batch(batch: &RecordBatch, kept: &[u32], matrix: &[f32], layout: &TextLayout) -> Result<RecordBatch> {
    let subset = (kept.len() != batch.num_rows()).then_some(kept);
    let mut out = columns::embedding_columns(matrix, kept.len(), layout.dims, layout.names)?;
    if let Some(labels) = batch.column_by_name(layout.label_column) {
        let indices = subset.map(|k| UInt32Array::from(k.to_vec()));
        let labels = columns::select_rows(labels, indices.as_ref())?;
        out.push((Field::new(layout.label_output, labels.data_type().clone(), labels.null_count() > 0), labels));
    }
    let exclude = [layout.text_column, layout.label_column];
    out.extend(columns::pass_through(batch, &exclude, subset)?);
    columns::assemble(out)
}

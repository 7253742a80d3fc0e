//! The run loop. A tokenizing thread reads windows of input rows and tokenizes them (the
//! tokenizer parallelises over CPU threads) while this thread runs the model on the previous
//! window. Within a window, rows are batched by similar token count and each batch is padded
//! only to its longest text: BERT's [CLS] vector does not depend on padding (padded keys are
//! masked), so this changes no embedding and saves most of the work on short texts. Output rows
//! keep input order.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread;

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use deepembed_sdk::columns::{self, EmbeddingNames};
use deepembed_sdk::{OutputPlan, RunContext};
use tch::Tensor;

use crate::model::TextModel;
use crate::options::TextOptions;
use crate::tokenizer::BertTokenizer;

/// Input batches gathered into one window, the span over which rows are sorted by length.
const WINDOW_BATCHES: usize = 8;

struct Window {
    batch: RecordBatch,
    /// Token ids per row; None for rows that cannot be embedded (see `failed`).
    tokens: Vec<Option<Vec<i64>>>,
    failed: Vec<(u64, String)>,
}

pub fn run(ctx: &mut RunContext, opts: &TextOptions) -> Result<()> {
    check_columns(ctx.input_schema(), opts)?;
    let device = ctx.device().to_tch();
    let model = TextModel::load(opts, device)?;
    if opts.max_length as i64 > model.max_positions() {
        bail!("--max_length {} exceeds the model's {} positions", opts.max_length, model.max_positions());
    }
    let tokenizer = BertTokenizer::load(&model.tokenizer_dir, opts.max_length)?;
    if tokenizer.vocab_size() as i64 > model.vocab_size() {
        bail!(
            "the tokenizer in {} has {} tokens but the model's vocabulary has {}: they do not belong together",
            model.tokenizer_dir.display(),
            tokenizer.vocab_size(),
            model.vocab_size()
        );
    }
    let pad_id = tokenizer.pad_id;
    let model_str = opts.model_str();
    let plan = OutputPlan {
        model_str: model_str.to_string(),
        file_name: format!("{model_str}_{}_embeddings.parquet", opts.use_case.name()),
        dims: model.dims as usize,
        details: model.details.clone(),
    };
    ctx.begin(&plan)?;

    let batch_size = ctx.batch_size();
    let input = ctx.take_input()?;
    let text_column = opts.text_column.clone();
    let (tx, rx) = sync_channel::<Result<Window>>(1);
    let reader = thread::Builder::new().name("mbert-tokenize".into()).spawn(move || {
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
    let result = consume(ctx, opts, &model, pad_id, batch_size, rx);
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

fn check_columns(schema: &Schema, opts: &TextOptions) -> Result<()> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let Ok(field) = schema.field_with_name(&opts.text_column) else {
        bail!("the input has no '{}' column (--text_column); its columns are: {}", opts.text_column, names.join(", "));
    };
    if !matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        bail!("column '{}' has type {}, expected text (string)", opts.text_column, field.data_type());
    }
    Ok(())
}

fn texts(column: &ArrayRef) -> Result<Vec<Option<&str>>> {
    Ok(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().iter().collect(),
        DataType::LargeUtf8 => column.as_string::<i64>().iter().collect(),
        DataType::Utf8View => column.as_string_view().iter().collect(),
        other => bail!("text column has type {other}, expected string"),
    })
}

fn tokenize(batch: RecordBatch, tokenizer: &BertTokenizer, text_column: &str, first_row: u64) -> Result<Window> {
    let column = batch.column_by_name(text_column).ok_or_else(|| anyhow!("input lacks column '{text_column}'"))?.clone();
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

fn consume(ctx: &mut RunContext, opts: &TextOptions, model: &TextModel, pad_id: i64, batch_size: usize, rx: Receiver<Result<Window>>) -> Result<()> {
    let device = ctx.device().to_tch();
    let dims = model.dims as usize;
    for window in rx {
        let w = window?;
        for (row, reason) in &w.failed {
            ctx.skip_row(*row, reason)?;
        }
        let kept: Vec<u32> = (0..w.tokens.len() as u32).filter(|&i| w.tokens[i as usize].is_some()).collect();
        // Longest first, so the first batch shows the peak memory at once; ties keep input order.
        let mut order: Vec<usize> = (0..kept.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(w.tokens[kept[k] as usize].as_ref().map_or(0, Vec::len)));
        let mut matrix = vec![0f32; kept.len() * dims];
        for chunk in order.chunks(batch_size.max(1)) {
            let rows: Vec<&Vec<i64>> = chunk.iter().map(|&k| w.tokens[kept[k] as usize].as_ref().expect("kept rows have tokens")).collect();
            let width = if opts.pad_to_longest { rows.iter().map(|r| r.len()).max().unwrap_or(1) } else { opts.max_length };
            let (ids, mask) = padded(&rows, width, pad_id);
            let shape = [rows.len() as i64, width as i64];
            let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
            let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
            let out = model.forward(&ids, &mask).to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous();
            let values = Vec::<f32>::try_from(out.view([-1]))?;
            for (j, &k) in chunk.iter().enumerate() {
                matrix[k * dims..(k + 1) * dims].copy_from_slice(&values[j * dims..(j + 1) * dims]);
            }
        }
        ctx.emit(&output_batch(&w.batch, &kept, &matrix, dims, opts)?)?;
        ctx.progress(w.batch.num_rows() as u64);
    }
    Ok(())
}

fn padded(rows: &[&Vec<i64>], width: usize, pad_id: i64) -> (Vec<i64>, Vec<i64>) {
    let mut ids = vec![pad_id; rows.len() * width];
    let mut mask = vec![0i64; rows.len() * width];
    for (r, tokens) in rows.iter().enumerate() {
        ids[r * width..r * width + tokens.len()].copy_from_slice(tokens);
        mask[r * width..r * width + tokens.len()].fill(1);
    }
    (ids, mask)
}

/// DeepTune's columns: `embed0000`..., then `labels`, then every other input column.
fn output_batch(batch: &RecordBatch, kept: &[u32], matrix: &[f32], dims: usize, opts: &TextOptions) -> Result<RecordBatch> {
    let subset = (kept.len() != batch.num_rows()).then_some(kept);
    let mut out = columns::embedding_columns(matrix, kept.len(), dims, EmbeddingNames::Embed4)?;
    if let Some(labels) = batch.column_by_name(&opts.label_column) {
        let indices = subset.map(|k| UInt32Array::from(k.to_vec()));
        let labels = columns::select_rows(labels, indices.as_ref())?;
        out.push((Field::new("labels", labels.data_type().clone(), labels.null_count() > 0), labels));
    }
    let exclude = [opts.text_column.as_str(), opts.label_column.as_str()];
    out.extend(columns::pass_through(batch, &exclude, subset)?);
    columns::assemble(out)
}

//! What text plugins share: tokenizing as the pipeline's preparation, and batches of token ids
//! cut longest first and padded to their longest text where the model's output provably does
//! not depend on padding.

use std::path::Path;

use anyhow::{bail, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use tch::Tensor;

use crate::options::{Padding, TextInput};
use crate::output::{require_column, Carry, EmbeddingNames, OutputColumns};
use crate::pipeline::{self, Batching, Embed, Prepare};
use crate::{OutputPlan, RunContext};

/// Texts gathered into one window, the span over which they are sorted by length (in whole
/// input batches, which hold `--batch_size` rows). Chunks cut from a wider window pad less: on
/// 20,000 generated notes of median 30 tokens, batch 64, the padded batches held 1.59 times the
/// real tokens with windows of 512 texts, 1.06 with 4096, and 1.01 sorting all of them (as the
/// fastest Python loop does). A window holds its texts and at most 4096 x `--max_length` ids.
const WINDOW_ROWS: usize = 4096;

/// Text to token ids (special tokens included, truncated). Runs on the preparing thread.
pub trait Tokenize: Send + 'static {
    fn encode(&self, texts: Vec<&str>) -> Result<Vec<Vec<i64>>>;
    /// Tokens in the vocabulary, added tokens included.
    fn vocab_size(&self) -> usize;
    /// The id of padding positions.
    fn pad_id(&self) -> i64;
}

/// A Hugging Face `tokenizers` tokenizer (the library transformers' fast tokenizers run), set
/// up as transformers calls it with `truncation=True, max_length=...`.
#[cfg(feature = "tokenizers")]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    pad_id: i64,
}

#[cfg(feature = "tokenizers")]
impl HfTokenizer {
    /// `inner`, truncating to `max_length` tokens (special tokens included) and padding with
    /// `pad_id`. A tokenizer.json may carry its own fixed padding and truncation (MiniLM's pads
    /// to 128); transformers ignores them when called with explicit arguments, and so do we.
    pub fn new(mut inner: tokenizers::Tokenizer, max_length: usize, pad_id: i64) -> Result<HfTokenizer> {
        use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};
        inner.with_padding(None);
        let truncation = TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        inner.with_truncation(Some(truncation)).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(HfTokenizer { inner, pad_id })
    }

    /// `dir/tokenizer.json`, when the directory has one.
    pub fn json_in(dir: &Path) -> Result<Option<tokenizers::Tokenizer>> {
        let json = dir.join("tokenizer.json");
        if !json.is_file() {
            return Ok(None);
        }
        let tokenizer = tokenizers::Tokenizer::from_file(&json)
            .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", json.display()))?;
        Ok(Some(tokenizer))
    }
}

#[cfg(feature = "tokenizers")]
impl Tokenize for HfTokenizer {
    fn encode(&self, texts: Vec<&str>) -> Result<Vec<Vec<i64>>> {
        let encodings = self.inner.encode_batch(texts, true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(encodings.iter().map(|e| e.get_ids().iter().map(|&id| i64::from(id)).collect()).collect())
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn pad_id(&self) -> i64 {
        self.pad_id
    }
}

/// A text model: token ids and attention mask, both (B, T) int64, to embeddings (B, dims).
pub trait TextModel {
    fn embed(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor>;
    /// Positions the model has embeddings for.
    fn max_positions(&self) -> i64;
    /// Rows of the model's token embedding table.
    fn vocab_size(&self) -> i64;
    /// Whether padding a batch only to its longest text leaves the embedding unchanged.
    fn ignores_padding(&self) -> bool;
}

/// A Hugging Face tokenizer directory's `tokenizer_config.json` (null when there is none), whose
/// options a tokenizer built from vocabulary files follows.
pub fn tokenizer_config(dir: &Path) -> Result<serde_json::Value> {
    match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: tokenizer_config.json is not JSON: {e}", dir.display())),
        Err(_) => Ok(serde_json::Value::Null),
    }
}

/// Fails early, naming what is missing, instead of at the first batch.
pub fn check_text_column(schema: &Schema, text_column: &str) -> Result<()> {
    let field = require_column(schema, text_column, "--text_column")?;
    // pandas' category dtype and polars' Categorical arrive dictionary-encoded.
    let values = match field.data_type() {
        DataType::Dictionary(_, values) => values.as_ref(),
        other => other,
    };
    if !matches!(values, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        bail!("column '{text_column}' has type {}, expected text (string)", field.data_type());
    }
    Ok(())
}

/// Checks that a tokenizer and a model belong together and that `max_length` fits the model,
/// before any row is read.
fn check_fits(max_length: usize, tokenizer: &impl Tokenize, model: &dyn TextModel, tokenizer_dir: &Path) -> Result<()> {
    let max_positions = model.max_positions();
    if max_length as i64 > max_positions {
        bail!("--max_length {max_length} exceeds the model's {max_positions} positions");
    }
    let (tokens, rows) = (tokenizer.vocab_size(), model.vocab_size());
    if tokens as i64 > rows {
        bail!(
            "the tokenizer in {} has {tokens} tokens but the model's vocabulary has {rows}: they do not belong together",
            tokenizer_dir.display()
        );
    }
    Ok(())
}

/// Runs `model` over the texts of the run's `df` and writes `plan`: embedding columns named
/// `names`, then the label column as `labels` (DeepTune's text tools keep that name), then
/// every other input column. Checks first that the tokenizer (loaded from `tokenizer_dir`) and
/// the model belong together.
pub fn run(
    ctx: &mut RunContext<'_>,
    input: &TextInput,
    plan: &OutputPlan,
    names: EmbeddingNames,
    (tokenizer, tokenizer_dir): (impl Tokenize, &Path),
    model: &dyn TextModel,
) -> Result<()> {
    check_fits(input.max_length, &tokenizer, model, tokenizer_dir)?;
    let schema = ctx.input_schema("df")?.clone();
    let columns = OutputColumns::new(
        &schema,
        plan.dims,
        names,
        Some((&input.label_column, "labels")),
        Carry::AllExcept(vec![input.text_column.clone()]),
    )?;
    ctx.begin(plan)?;
    let width = match input.padding {
        Padding::Longest if model.ignores_padding() => None,
        _ => Some(input.max_length),
    };
    let mut batches = TokenBatches { model, pad_id: tokenizer.pad_id(), width, device: ctx.tch_device() };
    let tokenizing = Tokenizing { tokenizer, column: input.text_column.clone() };
    let reader = ctx.take_input("df")?;
    let window_batches = WINDOW_ROWS.div_ceil(ctx.batch_size().max(1));
    let batching = Batching::LongestFirst { window_batches, length: Vec::len };
    pipeline::run(ctx, reader, &columns, tokenizing, &mut batches, batching)?;
    Ok(())
}

/// The preparation: a window's texts to token ids. A null text is a row that cannot be used.
struct Tokenizing<T> {
    tokenizer: T,
    column: String,
}

impl<T: Tokenize> Prepare for Tokenizing<T> {
    type Row = Vec<i64>;

    fn prepare(&mut self, batch: &RecordBatch, _first_row: u64) -> Result<Vec<Result<Vec<i64>, String>>> {
        let Some(column) = batch.column_by_name(&self.column) else { bail!("the input lacks column {}", self.column) };
        // A dictionary-encoded column (a categorical of texts) becomes its plain strings.
        let column = match column.data_type() {
            DataType::Dictionary(_, values) => arrow::compute::cast(column, values)?,
            _ => column.clone(),
        };
        let texts: Vec<Option<&str>> = match column.data_type() {
            DataType::Utf8 => column.as_string::<i32>().iter().collect(),
            DataType::LargeUtf8 => column.as_string::<i64>().iter().collect(),
            DataType::Utf8View => column.as_string_view().iter().collect(),
            other => bail!("text column has type {other}, expected string"),
        };
        let mut encoded = self.tokenizer.encode(texts.iter().flatten().copied().collect())?.into_iter();
        let null = format!("column '{}': the text is null", self.column);
        Ok(texts.iter().map(|t| t.and_then(|_| encoded.next()).ok_or_else(|| null.clone())).collect())
    }
}

/// The model side: token ids padded into (B, T) tensors.
struct TokenBatches<'m> {
    model: &'m dyn TextModel,
    pad_id: i64,
    /// Pad to this many tokens; `None`: to the longest text of each batch.
    width: Option<usize>,
    device: tch::Device,
}

impl Embed<Vec<i64>> for TokenBatches<'_> {
    fn embed(&mut self, rows: &[&Vec<i64>]) -> Result<Tensor> {
        let width = self.width.unwrap_or_else(|| rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1));
        let mut ids = vec![self.pad_id; rows.len() * width];
        let mut mask = vec![0i64; rows.len() * width];
        for (r, tokens) in rows.iter().enumerate() {
            let n = tokens.len().min(width);
            ids[r * width..r * width + n].copy_from_slice(&tokens[..n]);
            mask[r * width..r * width + n].fill(1);
        }
        let shape = [rows.len() as i64, width as i64];
        let ids = Tensor::from_slice(&ids).view(shape).to_device(self.device);
        let mask = Tensor::from_slice(&mask).view(shape).to_device(self.device);
        self.model.embed(&ids, &mask)
    }
}

//! The run loop: a decoding thread turns input batches into preprocessed tensors (images decoded
//! and resized in parallel on CPU threads) while this thread runs the model on the previous
//! batch and hands embeddings to the host.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread;

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use deepembed_sdk::columns::{self, EmbeddingNames};
use deepembed_sdk::{OutputPlan, RunContext};
use rayon::prelude::*;
use tch::Tensor;

use crate::image::{self, PIXELS, SIZE};
use crate::model::EmbeddingModel;
use crate::options::VisionOptions;

/// One input batch, preprocessed.
struct Prepared {
    batch: RecordBatch,
    /// Images of the rows that decoded, in order, `PIXELS` floats each.
    pixels: Vec<f32>,
    /// Indices (within the batch) of those rows.
    kept: Vec<u32>,
    /// Rows that could not be used, with the reason.
    failed: Vec<(u64, String)>,
}

pub fn run(ctx: &mut RunContext, opts: &VisionOptions) -> Result<()> {
    check_columns(ctx.input_schema(), opts)?;
    let device = ctx.device().to_tch();
    let model = EmbeddingModel::load(opts, device)?;
    let mode = &opts.mode;
    let model_str = opts.model_str();
    let plan = OutputPlan {
        file_name: format!("{model_str}_{mode}_embeddings.parquet"),
        model_str,
        dims: model.dims as usize,
        details: model.details.clone(),
    };
    ctx.begin(&plan)?;

    let input = ctx.take_input()?;
    let image_column = opts.image_column.clone();
    // Two batches in flight: one being decoded while the model runs on the other.
    let (tx, rx) = sync_channel::<Result<Prepared>>(1);
    let decoder = thread::Builder::new().name("vision-decode".into()).spawn(move || {
        let mut first_row = 0u64;
        for batch in input {
            let prepared =
                batch.map_err(|e| anyhow!("reading input: {e}")).and_then(|b| prepare(b, &image_column, first_row));
            if let Ok(p) = &prepared {
                first_row += p.batch.num_rows() as u64;
            }
            let stop = prepared.is_err();
            if tx.send(prepared).is_err() || stop {
                break;
            }
        }
    })?;
    let result = consume(ctx, opts, &model, rx);
    // The decoder stops by itself once the receiver is gone.
    let _ = decoder.join();
    result
}

fn consume(
    ctx: &mut RunContext,
    opts: &VisionOptions,
    model: &EmbeddingModel,
    rx: Receiver<Result<Prepared>>,
) -> Result<()> {
    let device = ctx.device().to_tch();
    let dims = model.dims as usize;
    for prepared in rx {
        let p = prepared?;
        for (row, reason) in &p.failed {
            ctx.skip_row(*row, reason)?;
        }
        let n = p.kept.len();
        let embeddings: Vec<f32> = if n == 0 {
            vec![]
        } else {
            let images = Tensor::from_slice(&p.pixels).view([n as i64, 3, SIZE as i64, SIZE as i64]).to_device(device);
            let out = model.forward(&images).to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous();
            Vec::<f32>::try_from(out.view([-1])).context("reading embeddings back")?
        };
        let batch = output_batch(&p, &embeddings, dims, opts)?;
        ctx.emit(&batch)?;
        ctx.progress(p.batch.num_rows() as u64);
    }
    Ok(())
}

/// Fails early, naming what is missing, instead of at the first batch.
fn check_columns(schema: &Schema, opts: &VisionOptions) -> Result<()> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let Ok(field) = schema.field_with_name(&opts.image_column) else {
        bail!(
            "the input has no '{}' column (--image_column); its columns are: {}",
            opts.image_column,
            names.join(", ")
        );
    };
    if !image_type_supported(field.data_type()) {
        bail!("column '{}' has type {}, expected encoded image bytes (binary)", opts.image_column, field.data_type());
    }
    if let Some(g) = &opts.grouper {
        if !names.contains(&g.as_str()) {
            bail!("--grouper {g}: the input has no such column; its columns are: {}", names.join(", "));
        }
    }
    Ok(())
}

fn image_type_supported(t: &DataType) -> bool {
    match t {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => true,
        // Hugging Face datasets write images as struct<bytes: binary, path: string>.
        DataType::Struct(fields) => fields.iter().any(|f| f.name() == "bytes" && image_type_supported(f.data_type())),
        _ => false,
    }
}

/// The encoded bytes of each row (None for a null).
fn image_bytes(column: &ArrayRef) -> Result<Vec<Option<&[u8]>>> {
    Ok(match column.data_type() {
        DataType::Binary => column.as_binary::<i32>().iter().collect(),
        DataType::LargeBinary => column.as_binary::<i64>().iter().collect(),
        DataType::BinaryView => column.as_binary_view().iter().collect(),
        DataType::Struct(_) => {
            let s = column.as_struct();
            let bytes = s.column_by_name("bytes").ok_or_else(|| anyhow!("image struct has no 'bytes' field"))?;
            let mut out = image_bytes(bytes)?;
            for (i, slot) in out.iter_mut().enumerate() {
                if s.is_null(i) {
                    *slot = None;
                }
            }
            out
        }
        other => bail!("image column has type {other}, expected binary"),
    })
}

fn prepare(batch: RecordBatch, image_column: &str, first_row: u64) -> Result<Prepared> {
    let column =
        batch.column_by_name(image_column).ok_or_else(|| anyhow!("input batch lacks column '{image_column}'"))?.clone();
    let images = image_bytes(&column)?;
    let mut pixels = vec![0f32; images.len() * PIXELS];
    let outcomes: Vec<Result<()>> = pixels
        .par_chunks_mut(PIXELS)
        .zip(images.par_iter())
        .map(|(out, bytes)| match bytes {
            Some(bytes) => image::preprocess_into(bytes, out),
            None => Err(anyhow!("the image is null")),
        })
        .collect();
    let mut kept = Vec::with_capacity(images.len());
    let mut failed = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(()) => kept.push(i as u32),
            Err(e) => failed.push((first_row + i as u64, format!("column '{image_column}': {e:#}"))),
        }
    }
    if !failed.is_empty() {
        // Compact the good images to the front, in order.
        for (dst, &src) in kept.iter().enumerate() {
            if dst != src as usize {
                pixels.copy_within(src as usize * PIXELS..(src as usize + 1) * PIXELS, dst * PIXELS);
            }
        }
        pixels.truncate(kept.len() * PIXELS);
    }
    Ok(Prepared { batch, pixels, kept, failed })
}

/// DeepTune's columns: `"0"`..`"N-1"`, then `label`, then every other input column.
fn output_batch(p: &Prepared, embeddings: &[f32], dims: usize, opts: &VisionOptions) -> Result<RecordBatch> {
    let kept = (p.kept.len() != p.batch.num_rows()).then_some(p.kept.as_slice());
    let mut out = columns::embedding_columns(embeddings, p.kept.len(), dims, EmbeddingNames::Index)?;
    if let Some(labels) = p.batch.column_by_name(&opts.label_column) {
        let indices = kept.map(|k| arrow::array::UInt32Array::from(k.to_vec()));
        let labels = columns::select_rows(labels, indices.as_ref())?;
        out.push((Field::new("label", labels.data_type().clone(), labels.null_count() > 0), labels));
    }
    let exclude = [opts.image_column.as_str(), opts.label_column.as_str()];
    out.extend(columns::pass_through(&p.batch, &exclude, kept)?);
    columns::assemble(out)
}

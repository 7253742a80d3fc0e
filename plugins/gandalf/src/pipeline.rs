//! The run: check the input against the saved model, then per input batch encode the rows with
//! the saved preprocessing, run the network and hand the embeddings to the host.

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::{Field, Schema};
use deepembed_sdk::columns::{self, EmbeddingNames};
use deepembed_sdk::{OutputPlan, RunContext};
use tch::Tensor;

use crate::gandalf::Gandalf;
use crate::options::GandalfOptions;
use crate::preprocessing::Counts;
use crate::saved_model::SavedModel;

/// DeepTune's MODEL_STR for GANDALF.
const MODEL_STR: &str = "GANDALF";

pub fn run(ctx: &mut RunContext, opts: &GandalfOptions) -> Result<()> {
    let saved = SavedModel::load(&opts.model_weights)?;
    let config = &saved.config;
    check_user_columns("--continuous_cols", opts.continuous_cols.as_deref(), &config.continuous_cols)?;
    check_user_columns("--categorical_cols", opts.categorical_cols.as_deref(), &config.categorical_cols)?;
    let device = ctx.device().to_tch();
    let model = Gandalf::from_weights(
        &saved.weights,
        config.continuous_cols.len(),
        config.categorical_cols.len(),
        config.gflu_stages,
        device,
    )?;
    for (encoder, cardinality) in saved.preprocessing.encoders.iter().zip(model.cardinalities()) {
        if encoder.min_code() < 0 || encoder.max_code() >= cardinality {
            bail!(
                "datamodule.sav and model.ckpt disagree: column '{}' has codes up to {} but its embedding table has {cardinality} rows; were they saved from the same model?",
                encoder.column,
                encoder.max_code()
            );
        }
    }
    let label = label_column(ctx.input_schema(), opts, &config.target)?;
    check_input(ctx.input_schema(), config, opts)?;
    saved.preprocessing.check_types(ctx.input_schema())?;
    log::info!(
        "GANDALF ({}) from {}: {} continuous, {} categorical columns, {} GFLU stages, {} dims",
        config.task,
        saved.dir.display(),
        config.continuous_cols.len(),
        config.categorical_cols.len(),
        config.gflu_stages,
        model.features
    );

    let mut details = serde_json::Map::new();
    details.insert("task".into(), config.task.clone().into());
    details.insert("model_dir".into(), saved.dir.display().to_string().into());
    details.insert("continuous_cols".into(), config.continuous_cols.clone().into());
    details.insert("categorical_cols".into(), config.categorical_cols.clone().into());
    let plan = OutputPlan {
        model_str: MODEL_STR.into(),
        file_name: format!("{MODEL_STR}_embeddings.parquet"),
        dims: model.features,
        details,
    };
    ctx.begin(&plan)?;

    let mut counts = saved.preprocessing.counts();
    let mut first_row = 0u64;
    let input = ctx.take_input()?;
    for batch in input {
        let batch = batch.map_err(|e| anyhow!("reading input: {e}"))?;
        let encoded =
            saved.preprocessing.encode(&batch, &mut counts).with_context(|| format!("rows from {first_row}"))?;
        for (row, reason) in &encoded.failed {
            ctx.skip_row(first_row + *row as u64, reason)?;
        }
        let n = encoded.kept.len() as i64;
        let embeddings: Vec<f32> = if n == 0 {
            vec![]
        } else {
            let continuous = Tensor::from_slice(&encoded.continuous)
                .view([n, config.continuous_cols.len() as i64])
                .to_device(device);
            let categorical = Tensor::from_slice(&encoded.categorical)
                .view([n, config.categorical_cols.len() as i64])
                .to_device(device);
            let out =
                tch::no_grad(|| model.forward(&continuous, &categorical)).to_device(tch::Device::Cpu).contiguous();
            Vec::<f32>::try_from(out.view([-1])).context("reading embeddings back")?
        };
        let kept = (encoded.kept.len() != batch.num_rows()).then_some(encoded.kept.as_slice());
        ctx.emit(&output_batch(&batch, &embeddings, model.features, kept, label.as_deref(), opts.grouper.as_deref())?)?;
        ctx.progress(batch.num_rows() as u64);
        first_row += batch.num_rows() as u64;
    }
    report(&counts, &saved);
    Ok(())
}

/// `--continuous_cols` / `--categorical_cols`, when given, must name the saved config's columns.
fn check_user_columns(flag: &str, given: Option<&[String]>, saved: &[String]) -> Result<()> {
    let Some(given) = given else { return Ok(()) };
    if given != saved {
        let missing: Vec<&str> = saved.iter().filter(|c| !given.contains(c)).map(String::as_str).collect();
        let extra: Vec<&str> = given.iter().filter(|c| !saved.contains(c)).map(String::as_str).collect();
        let mut problem =
            format!("{flag} {} does not match the model, which was trained on [{}]", given.join(" "), saved.join(", "));
        if !missing.is_empty() {
            problem += &format!("; not given: {}", missing.join(", "));
        }
        if !extra.is_empty() {
            problem += &format!("; not model columns: {}", extra.join(", "));
        }
        if missing.is_empty() && extra.is_empty() {
            problem += "; the order differs";
        }
        bail!("{problem} (leave the flag out to use the saved columns)");
    }
    Ok(())
}

/// Every model column and the grouper must be in the input.
fn check_input(schema: &Schema, config: &crate::saved_model::SavedConfig, opts: &GandalfOptions) -> Result<()> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let missing: Vec<&str> = config
        .continuous_cols
        .iter()
        .chain(&config.categorical_cols)
        .map(String::as_str)
        .filter(|c| !names.contains(c))
        .collect();
    if !missing.is_empty() {
        bail!("the input lacks the model's column(s) {}; its columns are: {}", missing.join(", "), names.join(", "));
    }
    if let Some(g) = &opts.grouper {
        if !names.contains(&g.as_str()) {
            bail!("--grouper {g}: the input has no such column; its columns are: {}", names.join(", "));
        }
    }
    Ok(())
}

/// The column written as `label`: `--tabular_target_column` (which must exist), else the saved
/// target when the input has it.
fn label_column(schema: &Schema, opts: &GandalfOptions, target: &[String]) -> Result<Option<String>> {
    match &opts.target_column {
        Some(column) if schema.field_with_name(column).is_err() => {
            bail!("--tabular_target_column {column}: the input has no such column")
        }
        Some(column) => Ok(Some(column.clone())),
        None => {
            let found = target.first().filter(|t| schema.field_with_name(t).is_ok()).cloned();
            if found.is_none() {
                log::info!("the input has no target column ({}); no label column is written", target.join(", "));
            }
            Ok(found)
        }
    }
}

/// `"0"`..`"N-1"`, then `label`, then the grouper.
fn output_batch(
    batch: &RecordBatch,
    embeddings: &[f32],
    dims: usize,
    kept: Option<&[u32]>,
    label: Option<&str>,
    grouper: Option<&str>,
) -> Result<RecordBatch> {
    let rows = kept.map_or(batch.num_rows(), <[u32]>::len);
    let indices = kept.map(|k| UInt32Array::from(k.to_vec()));
    let mut out = columns::embedding_columns(embeddings, rows, dims, EmbeddingNames::Index)?;
    for (name, source) in [("label", label), (grouper.unwrap_or_default(), grouper)] {
        let Some(source) = source else { continue };
        let column = batch.column_by_name(source).ok_or_else(|| anyhow!("input batch lacks column '{source}'"))?;
        let column = columns::select_rows(column, indices.as_ref())?;
        out.push((Field::new(name, column.data_type().clone(), true), column));
    }
    columns::assemble(out)
}

fn report(counts: &Counts, saved: &SavedModel) {
    for (encoder, (&unseen, &missing)) in
        saved.preprocessing.encoders.iter().zip(counts.unseen.iter().zip(&counts.missing_categories))
    {
        if unseen > 0 {
            log::warn!(
                "column '{}': {unseen} value(s) not seen in training were encoded as unseen, as pytorch-tabular does",
                encoder.column
            );
        }
        if missing > 0 {
            log::info!(
                "column '{}': {missing} missing value(s) were encoded as pytorch-tabular encodes missing categories",
                encoder.column
            );
        }
    }
    for (column, &missing) in saved.preprocessing.continuous.iter().zip(&counts.missing_continuous) {
        if missing > 0 {
            log::warn!(
                "column '{column}': {missing} missing value(s); as in pytorch-tabular, those rows' embeddings are NaN"
            );
        }
    }
}

//! The run: check the input against the saved model, then per input batch encode the rows with
//! the saved preprocessing, run the network and hand the embeddings to the host.

use std::sync::Arc;

use anyhow::{bail, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use deepembed_sdk::output::{Carry, EmbeddingNames, OutputColumns};
use deepembed_sdk::pipeline::{self, Batching, Embed, Prepare};
use deepembed_sdk::{OutputPlan, RunContext};
use tch::Tensor;

use crate::gandalf::Gandalf;
use crate::options::GandalfOptions;
use crate::preprocessing::{Counts, Encoded, Preprocessing};
use crate::saved_model::SavedModel;

/// DeepTune's MODEL_STR for GANDALF.
const MODEL_STR: &str = "GANDALF";

pub fn run(ctx: &mut RunContext<'_>, opts: &GandalfOptions) -> Result<()> {
    let saved = SavedModel::load(&opts.model_weights)?;
    let config = &saved.config;
    check_user_columns("--continuous_cols", opts.continuous_cols.as_deref(), &config.continuous_cols)?;
    // A user names the categorical columns training was given, or all of them with the ones
    // derived from dates.
    let given_categorical: Vec<String> =
        config.categorical_cols.iter().filter(|c| saved.preprocessing.date_part(c).is_none()).cloned().collect();
    if opts.categorical_cols.as_deref() != Some(&config.categorical_cols[..]) {
        check_user_columns("--categorical_cols", opts.categorical_cols.as_deref(), &given_categorical)?;
    }
    let device = ctx.tch_device();
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
    let schema = ctx.input_schema("df")?.clone();
    let label = label_column(&schema, opts, &config.target)?;
    check_input(&schema, &saved.preprocessing, opts)?;
    saved.preprocessing.check_types(&schema)?;
    log::info!(
        "GANDALF ({}) from {}: {} continuous, {} categorical columns, {} GFLU stages, {} dims",
        config.task,
        saved.dir.display(),
        config.continuous_cols.len(),
        config.categorical_cols.len(),
        config.gflu_stages,
        model.features
    );
    if let Some(transform) = &saved.preprocessing.transform {
        log::info!("continuous columns go through the saved {} first", transform.describe());
    }

    let mut details = serde_json::Map::new();
    details.insert("task".into(), config.task.clone().into());
    details.insert("model_dir".into(), saved.dir.display().to_string().into());
    details.insert("continuous_cols".into(), config.continuous_cols.clone().into());
    details.insert("categorical_cols".into(), config.categorical_cols.clone().into());
    if let Some(name) = &config.continuous_feature_transform {
        details.insert("continuous_feature_transform".into(), name.clone().into());
    }
    let plan = OutputPlan {
        model_str: MODEL_STR.into(),
        file_name: format!("{MODEL_STR}_embeddings.parquet"),
        dims: model.features,
        details,
    };
    // "0".."N-1", then `label`, then the grouper: DeepTune writes no other column.
    let grouper = opts.grouper.iter().map(|g| (g.clone(), g.clone())).collect();
    let columns = OutputColumns::new(
        &schema,
        plan.dims,
        EmbeddingNames::Index,
        label.as_deref().map(|l| (l, "label")),
        Carry::Only(grouper),
    )?;
    ctx.begin(&plan)?;
    let counts = saved.preprocessing.counts();
    let encoding = Encoding { counts, preprocessing: saved.preprocessing };
    let input = ctx.take_input("df")?;
    let encoding = pipeline::run(
        ctx,
        input,
        &columns,
        encoding,
        &mut Rows {
            model: &model,
            continuous: config.continuous_cols.len(),
            categorical: config.categorical_cols.len(),
            device,
        },
        Batching::InputOrder,
    )?;
    report(&encoding.counts, &encoding.preprocessing);
    Ok(())
}

/// One encoded row: its place in its batch's encoded values (scaled continuous values and
/// category codes), which the batch's rows share rather than copy.
struct Row {
    encoded: Arc<Encoded>,
    index: usize,
}

/// The preparation: the saved preprocessing on each batch, counting what it met.
struct Encoding {
    preprocessing: Preprocessing,
    counts: Counts,
}

impl Prepare for Encoding {
    type Row = Row;

    fn prepare(&mut self, batch: &RecordBatch, _first_row: u64) -> Result<Vec<Result<Row, String>>> {
        let mut encoded = self.preprocessing.encode(batch, &mut self.counts)?;
        let failed = std::mem::take(&mut encoded.failed);
        let encoded = Arc::new(encoded);
        let mut rows: Vec<Result<Row, String>> = (0..batch.num_rows()).map(|_| Err(String::new())).collect();
        for (index, &r) in encoded.kept.iter().enumerate() {
            rows[r as usize] = Ok(Row { encoded: encoded.clone(), index });
        }
        for (r, reason) in failed {
            rows[r as usize] = Err(reason);
        }
        Ok(rows)
    }
}

/// The model side: a chunk of rows as two tensors through the backbone.
struct Rows<'m> {
    model: &'m Gandalf,
    continuous: usize,
    categorical: usize,
    device: tch::Device,
}

impl Embed<Row> for Rows<'_> {
    fn embed(&mut self, rows: &[&Row]) -> Result<Tensor> {
        let (c, k) = (self.continuous, self.categorical);
        let mut continuous = Vec::with_capacity(rows.len() * c);
        let mut categorical = Vec::with_capacity(rows.len() * k);
        for row in rows {
            continuous.extend_from_slice(&row.encoded.continuous[row.index * c..(row.index + 1) * c]);
            categorical.extend_from_slice(&row.encoded.categorical[row.index * k..(row.index + 1) * k]);
        }
        let n = rows.len() as i64;
        let continuous = Tensor::from_slice(&continuous).view([n, c as i64]).to_device(self.device);
        let categorical = Tensor::from_slice(&categorical).view([n, k as i64]).to_device(self.device);
        Ok(self.model.forward(&continuous, &categorical))
    }
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
fn check_input(schema: &Schema, preprocessing: &Preprocessing, opts: &GandalfOptions) -> Result<()> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let categorical = preprocessing.encoders.iter().map(|e| &e.column).filter(|c| preprocessing.date_part(c).is_none());
    let dates = preprocessing.dates.iter().map(|d| &d.column);
    let missing: Vec<&str> = preprocessing
        .continuous
        .iter()
        .chain(categorical)
        .chain(dates)
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
    match &opts.tabular_target_column {
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

fn report(counts: &Counts, preprocessing: &Preprocessing) {
    for (encoder, (&unseen, &missing)) in
        preprocessing.encoders.iter().zip(counts.unseen.iter().zip(&counts.missing_categories))
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
    for (column, &missing) in preprocessing.continuous.iter().zip(&counts.missing_continuous) {
        if missing > 0 {
            log::warn!(
                "column '{column}': {missing} missing value(s); as in pytorch-tabular, those rows' embeddings are NaN"
            );
        }
    }
}

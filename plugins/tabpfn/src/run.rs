//! The run: read the model and the training table, fit member 0's preprocessing on the training
//! rows, read the evaluation table once for the two per-column tests every evaluation row takes
//! part in (docs/TABPFN.md §6), build the context (thinking and training rows through every layer) once,
//! then stream the evaluation rows through the SDK's pipeline in batches against it.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use arrow::array::RecordBatch;
use deepembed_sdk::output::{Carry, EmbeddingNames, OutputColumns};
use deepembed_sdk::pipeline::{self, Batching, Embed, Prepare};
use deepembed_sdk::{OutputPlan, RunContext};
use tch::{Device, Kind, Tensor};

use crate::model::{context_bytes, Context, InputEncoder, ModelConfig, TabPfn};
use crate::options::{Mode, TabPfnOptions};
use crate::preprocess::{self, Fitted, Targets};
use crate::rng::Generator;
use crate::saved::{SavedTabPfn, Task};
use crate::table::{feature_columns, table_of, targets};

/// DeepTune's names: `embed_output_<MODEL_STR>_<id>/TABPFN_<mode>_embeddings.parquet`, the
/// directory `FINETUNED_...` for a fine-tuned estimator.
const MODEL_STR: &str = "TRAINED_TABPFN_embeddings";
const FINETUNED_MODEL_STR: &str = "FINETUNED_TABPFN_embeddings";

pub fn run(ctx: &mut RunContext<'_>, opts: &TabPfnOptions) -> Result<()> {
    let saved = SavedTabPfn::load(&opts.model_weights, opts.finetuning_mode)?;
    let mode_task = match opts.mode {
        Mode::Cls => Task::Classification,
        Mode::Reg => Task::Regression,
    };
    if saved.task != mode_task {
        bail!(
            "--mode {}: {} holds a {}; use --mode {}",
            opts.mode,
            saved.source.display(),
            saved.task.estimator(),
            if saved.task == Task::Classification { "cls" } else { "reg" }
        );
    }
    let config = ModelConfig::from_json(&saved.architecture)
        .with_context(|| format!("{}: the architecture config", saved.source.display()))?;
    let device = ctx.tch_device();
    let mut model = TabPfn::new(config.clone(), &saved.weights, device)?;
    if model.needs_column_table() {
        model.set_column_table(crate::saved::column_table::load()?)?;
    }

    // The training rows: every feature column and the target, read in full (they are the context).
    let train_schema = ctx.input_schema("train_df")?.clone();
    let eval_schema = ctx.input_schema("eval_df")?.clone();
    let features = feature_columns(&train_schema, &opts.target_column, opts.grouper.as_deref())?;
    if train_schema.index_of(&opts.target_column).is_err() {
        bail!("--target_column {}: the training table has no such column", opts.target_column);
    }
    check_eval_columns(&train_schema, &eval_schema, &features, opts)?;
    let (train, train_targets) = read_train(ctx, &features, &opts.target_column, saved.task)?;

    // Member 0's preprocessing, fitted on the training rows.
    let classes =
        preprocess::classes(&train_targets, usize::try_from(saved.inference.max_number_of_classes).unwrap_or(0))?;
    let n_classes = (saved.task == Task::Classification).then_some(classes.len());
    let member = crate::member::member0(&saved, n_classes)?;
    let (fitted, prepared) = preprocess::fit(&train, &train_targets, &member, Generator::new)?;
    let m = prepared.m;
    log::info!(
        "TabPFN {} from {}: {} training rows, {} features ({} after member 0's preprocessing), {} dims",
        saved.task.estimator(),
        saved.source.display(),
        prepared.rows,
        features.len(),
        m,
        model.dims()
    );
    check_context_fits(&config, prepared.rows as u64, m as u64, device)?;
    let x_train = Tensor::from_slice(&prepared.x_train).view([prepared.rows as i64, m as i64]);
    let y_train = Tensor::from_slice(&prepared.y_train).to_kind(Kind::Float);
    let encoder = InputEncoder::fit(&x_train, model_task(saved.task), saved.inference.outlier_removal_std(saved.task))?;
    drop(train);

    // Pass 1 over the evaluation rows: the column tests every row takes part in.
    let mut flags = encoder.flags();
    for batch in ctx.take_input("eval_df")? {
        if ctx.cancelled() {
            bail!("interrupted");
        }
        let batch = batch.map_err(|e| anyhow!("reading --eval_df: {e}"))?;
        let rows = fitted.transform(&table_of(&batch, &features, "--eval_df")?)?;
        encoder.observe(&mut flags, &Tensor::from_slice(&rows).view([batch.num_rows() as i64, m as i64]))?;
    }
    let context = model.context(&encoder, &flags, &x_train, &y_train)?;
    drop((x_train, y_train, encoder));

    // Pass 2: embed, in input order.
    let label = eval_schema.index_of(&opts.target_column).ok().map(|_| (opts.target_column.as_str(), "label"));
    let grouper = opts.grouper.iter().map(|g| (g.clone(), g.clone())).collect();
    let columns =
        OutputColumns::new(&eval_schema, model.dims() as usize, EmbeddingNames::Index, label, Carry::Only(grouper))?;
    let mut details = serde_json::Map::new();
    details.insert("epochs".into(), "We only track total time for embedding".into());
    details.insert("model".into(), saved.source.display().to_string().into());
    details.insert("estimator".into(), saved.task.estimator().into());
    details.insert("training_rows".into(), prepared.rows.into());
    details.insert("features".into(), features.clone().into());
    ctx.begin(&OutputPlan {
        model_str: if opts.finetuning_mode { FINETUNED_MODEL_STR } else { MODEL_STR }.into(),
        file_name: format!("TABPFN_{}_embeddings.parquet", opts.mode),
        dims: model.dims() as usize,
        details,
    })?;
    let input = ctx.take_input("eval_df")?;
    let preparer = EvalRows { fitted: Arc::new(fitted), features, m };
    let mut embedder = Embedder { model: &model, context: &context, m };
    pipeline::run(ctx, input, &columns, preparer, &mut embedder, Batching::InputOrder)?;
    Ok(())
}

fn model_task(task: Task) -> crate::model::Task {
    match task {
        Task::Classification => crate::model::Task::Classification,
        Task::Regression => crate::model::Task::Regression,
    }
}

/// The training table's features and targets, all rows (the context holds them anyway).
fn read_train(
    ctx: &mut RunContext<'_>,
    features: &[String],
    target: &str,
    task: Task,
) -> Result<(preprocess::Table, Targets)> {
    let schema = ctx.input_schema("train_df")?.clone();
    let batches: Vec<RecordBatch> =
        ctx.take_input("train_df")?.collect::<Result<_, _>>().map_err(|e| anyhow!("reading --train_df: {e}"))?;
    let train = arrow::compute::concat_batches(&schema, &batches)?;
    drop(batches);
    if train.num_rows() == 0 {
        bail!("--train_df has no rows");
    }
    let column = train.column_by_name(target).expect("checked");
    let y = targets(column, target, task == Task::Classification)?;
    Ok((table_of(&train, features, "--train_df")?, y))
}

/// The evaluation table must have the training table's features, of the same kind; the target
/// and grouper are optional there (the target becomes `label`).
fn check_eval_columns(
    train: &arrow::datatypes::Schema,
    eval: &arrow::datatypes::Schema,
    features: &[String],
    opts: &TabPfnOptions,
) -> Result<()> {
    for name in features {
        let Ok(field) = eval.field_with_name(name) else {
            bail!("--eval_df has no column '{name}', a feature of the training table (every training column but the target and grouper is a feature)");
        };
        let train_type = train.field_with_name(name).expect("a training column").data_type();
        let text = |t: &arrow::datatypes::DataType| !t.is_numeric() && *t != arrow::datatypes::DataType::Boolean;
        if text(train_type) != text(field.data_type()) {
            bail!(
                "column '{name}' is {} in --train_df but {} in --eval_df; give it the same kind in both",
                train_type,
                field.data_type()
            );
        }
    }
    if let Some(g) = &opts.grouper {
        if eval.index_of(g).is_err() {
            bail!("--grouper {g}: --eval_df has no such column");
        }
    }
    Ok(())
}

/// Refuses a context that would not fit in memory, naming the limit.
fn check_context_fits(config: &ModelConfig, n_train: u64, m: u64, device: Device) -> Result<()> {
    let needed = context_bytes(config, n_train, m);
    let available = match device {
        Device::Cpu => available_memory(),
        // libtorch does not say how much GPU memory is free before allocating; it fails clearly.
        _ => None,
    };
    if let Some(available) = available {
        let limit = available / 10 * 8;
        if needed > limit {
            bail!(
                "the context of {n_train} training rows x {m} columns needs about {} MiB, more than the {} MiB this machine has available (80% of MemAvailable); use fewer training rows or a machine with more memory",
                needed >> 20,
                limit >> 20
            );
        }
    }
    log::info!("context: about {} MiB for {n_train} training rows", needed >> 20);
    Ok(())
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The preparation: member 0's preprocessing of each evaluation batch.
struct EvalRows {
    fitted: Arc<Fitted>,
    features: Vec<String>,
    m: usize,
}

impl Prepare for EvalRows {
    type Row = Vec<f64>;

    fn prepare(&mut self, batch: &RecordBatch, _first_row: u64) -> Result<Vec<Result<Vec<f64>, String>>> {
        let rows = self.fitted.transform(&table_of(batch, &self.features, "--eval_df")?)?;
        Ok(rows.chunks(self.m.max(1)).take(batch.num_rows()).map(|r| Ok(r.to_vec())).collect())
    }
}

/// The model side: a chunk of evaluation rows against the context.
struct Embedder<'m> {
    model: &'m TabPfn,
    context: &'m Context,
    m: usize,
}

impl Embed<Vec<f64>> for Embedder<'_> {
    fn embed(&mut self, rows: &[&Vec<f64>]) -> Result<Tensor> {
        let values: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let x = Tensor::from_slice(&values).view([rows.len() as i64, self.m as i64]);
        self.model.embed(self.context, &x)
    }
}

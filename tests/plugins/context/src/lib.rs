//! An outside plugin with two declared inputs, as TabPFN has: the embedding of an `--eval_df`
//! row is (x, mean of x over `--train_df`, largest x over `--eval_df`), the training table read
//! in full first and the evaluation table read twice (a first pass for its maximum).

use deepembed_sdk::anyhow::{anyhow, Result};
use deepembed_sdk::arrow::array::{AsArray, RecordBatch};
use deepembed_sdk::arrow::compute::cast;
use deepembed_sdk::arrow::datatypes::{DataType, Float32Type};
use deepembed_sdk::output::{Carry, EmbeddingNames, OutputColumns};
use deepembed_sdk::pipeline::{self, Batching, Embed, Prepare};
use deepembed_sdk::{options, InputSpec, Manifest, Options, OutputPlan, Plugin, RunContext};

options! {
    pub struct ContextOptions {
        /// The numeric column, in both tables.
        #[arg(default = "value")]
        pub column: String,
    }
}

#[derive(Default)]
struct Context;

fn values(batch: &RecordBatch, column: &str) -> Result<Vec<Option<f32>>> {
    let x = batch.column_by_name(column).ok_or_else(|| anyhow!("no column '{column}'"))?;
    Ok(cast(x, &DataType::Float32)?.as_primitive::<Float32Type>().iter().collect())
}

struct Values(String);

impl Prepare for Values {
    type Row = f32;

    fn prepare(&mut self, batch: &RecordBatch, _first_row: u64) -> Result<Vec<Result<f32, String>>> {
        Ok(values(batch, &self.0)?.into_iter().map(|v| v.ok_or_else(|| "the value is null".to_string())).collect())
    }
}

struct WithStatistics {
    train_mean: f32,
    eval_max: f32,
}

impl Embed<f32> for WithStatistics {
    fn embed(&mut self, rows: &[&f32]) -> Result<deepembed_sdk::tch::Tensor> {
        let values: Vec<f32> = rows.iter().flat_map(|&&x| [x, self.train_mean, self.eval_max]).collect();
        Ok(deepembed_sdk::tch::Tensor::from_slice(&values).view([rows.len() as i64, 3]))
    }
}

impl Plugin for Context {
    type Options = ContextOptions;

    fn manifest(&self) -> Manifest {
        Manifest {
            name: "context".into(),
            version: "0.3.1".into(),
            modality: "tabular".into(),
            description: "Test plugin: eval rows embedded with a statistic of the training table".into(),
            models: vec![],
            args: ContextOptions::arg_specs(),
            inputs: vec![
                InputSpec::new("train_df", "The training table (context)."),
                InputSpec::new("eval_df", "The table whose rows are embedded.").embedded().passes(2),
            ],
        }
    }

    fn run(&self, options: ContextOptions, ctx: &mut RunContext<'_>) -> Result<()> {
        let (mut sum, mut n) = (0f64, 0u64);
        for batch in ctx.take_input("train_df")? {
            for v in values(&batch?, &options.column)?.into_iter().flatten() {
                sum += f64::from(v);
                n += 1;
            }
        }
        let schema = ctx.input_schema("eval_df")?.clone();
        let columns = OutputColumns::new(
            &schema,
            3,
            EmbeddingNames::Index,
            None,
            Carry::AllExcept(vec![options.column.clone()]),
        )?;
        ctx.begin(&OutputPlan {
            model_str: "CONTEXT".into(),
            file_name: "CONTEXT_embeddings.parquet".into(),
            dims: 3,
            details: Default::default(),
        })?;
        let mut eval_max = f32::NEG_INFINITY;
        for batch in ctx.take_input("eval_df")? {
            eval_max = values(&batch?, &options.column)?.into_iter().flatten().fold(eval_max, f32::max);
        }
        let input = ctx.take_input("eval_df")?;
        let mut model = WithStatistics { train_mean: (sum / n.max(1) as f64) as f32, eval_max };
        pipeline::run(ctx, input, &columns, Values(options.column), &mut model, Batching::InputOrder)?;
        Ok(())
    }
}

deepembed_sdk::export_plugin!(Context);

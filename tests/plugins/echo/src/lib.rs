//! A minimal outside plugin, written as a third-party author would: the embedding of a row is
//! (x, 2x) for a numeric column x, through the SDK's pipeline.

use deepembed_sdk::anyhow::{anyhow, Result};
use deepembed_sdk::arrow::array::{AsArray, RecordBatch};
use deepembed_sdk::arrow::compute::cast;
use deepembed_sdk::arrow::datatypes::{DataType, Float32Type};
use deepembed_sdk::output::{Carry, EmbeddingNames, OutputColumns};
use deepembed_sdk::pipeline::{self, Batching, Embed, Prepare};
use deepembed_sdk::{options, InputSpec, Manifest, Options, OutputPlan, Plugin, RunContext};

options! {
    pub struct EchoOptions {
        /// The numeric column to echo.
        #[arg(default = "value")]
        pub column: String,
    }
}

#[derive(Default)]
struct Echo;

struct Values(String);

impl Prepare for Values {
    type Row = f32;

    fn prepare(&mut self, batch: &RecordBatch, _first_row: u64) -> Result<Vec<Result<f32, String>>> {
        let x = batch.column_by_name(&self.0).ok_or_else(|| anyhow!("no column '{}'", self.0))?;
        let x = cast(x, &DataType::Float32)?;
        Ok(x.as_primitive::<Float32Type>().iter().map(|v| v.ok_or_else(|| "the value is null".to_string())).collect())
    }
}

struct Double;

impl Embed<f32> for Double {
    fn embed(&mut self, rows: &[&f32]) -> Result<deepembed_sdk::tch::Tensor> {
        let values: Vec<f32> = rows.iter().flat_map(|&&x| [x, 2.0 * x]).collect();
        Ok(deepembed_sdk::tch::Tensor::from_slice(&values).view([rows.len() as i64, 2]))
    }
}

impl Plugin for Echo {
    type Options = EchoOptions;

    fn manifest(&self) -> Manifest {
        Manifest {
            name: "echo".into(),
            version: "0.3.1".into(),
            modality: "tabular".into(),
            description: "Test plugin: (x, 2x) of a numeric column".into(),
            models: vec!["double".into()],
            args: EchoOptions::arg_specs(),
            inputs: InputSpec::default_inputs(),
        }
    }

    fn run(&self, options: EchoOptions, ctx: &mut RunContext<'_>) -> Result<()> {
        let schema = ctx.input_schema("df")?.clone();
        let columns = OutputColumns::new(
            &schema,
            2,
            EmbeddingNames::Index,
            None,
            Carry::AllExcept(vec![options.column.clone()]),
        )?;
        ctx.begin(&OutputPlan {
            model_str: "ECHO".into(),
            file_name: "ECHO_embeddings.parquet".into(),
            dims: 2,
            details: Default::default(),
        })?;
        let input = ctx.take_input("df")?;
        pipeline::run(ctx, input, &columns, Values(options.column), &mut Double, Batching::InputOrder)?;
        deepembed_sdk::log::info!("echo saw {} rows", ctx.input_rows("df")?);
        Ok(())
    }
}

deepembed_sdk::export_plugin!(Echo);

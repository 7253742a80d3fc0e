//! A minimal outside plugin: the embedding of a row is (x, 2x) for a numeric column x.

use std::sync::Arc;

use deepembed_sdk::anyhow::{anyhow, Result};
use deepembed_sdk::arrow::array::{ArrayRef, AsArray, Float32Array};
use deepembed_sdk::arrow::compute::cast;
use deepembed_sdk::arrow::datatypes::{DataType, Field, Float32Type};
use deepembed_sdk::columns::{assemble, pass_through};
use deepembed_sdk::{ArgKind, ArgSpec, Manifest, OutputPlan, Plugin, RunContext};

#[derive(Default)]
struct Echo;

impl Plugin for Echo {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: "echo".into(),
            version: "0.3.1".into(),
            modality: "tabular".into(),
            description: "Test plugin: (x, 2x) of a numeric column".into(),
            models: vec!["double".into()],
            args: vec![ArgSpec::new("column", ArgKind::String, "The numeric column to echo.").default("value")],
        }
    }

    fn run(&self, ctx: &mut RunContext) -> Result<()> {
        let column = ctx.args().str("column").unwrap_or("value").to_string();
        ctx.begin(&OutputPlan {
            model_str: "ECHO".into(),
            file_name: "ECHO_embeddings.parquet".into(),
            dims: 2,
            details: Default::default(),
        })?;
        let mut rows = 0;
        for batch in ctx.take_input()? {
            let batch = batch?;
            let x = batch.column_by_name(&column).ok_or_else(|| anyhow!("no column '{column}'"))?;
            let x = cast(x, &DataType::Float32)?;
            let x = x.as_primitive::<Float32Type>();
            let doubled: Float32Array = x.iter().map(|v| v.map(|v| v * 2.0)).collect();
            let mut cols = vec![
                (Field::new("0", DataType::Float32, true), Arc::new(x.clone()) as ArrayRef),
                (Field::new("1", DataType::Float32, true), Arc::new(doubled) as ArrayRef),
            ];
            cols.extend(pass_through(&batch, &[column.as_str()], None)?);
            ctx.emit(&assemble(cols)?)?;
            ctx.progress(batch.num_rows() as u64);
            rows += x.len();
        }
        deepembed_sdk::log::info!("echo saw {rows} rows");
        Ok(())
    }
}

deepembed_sdk::export_plugin!(Echo);

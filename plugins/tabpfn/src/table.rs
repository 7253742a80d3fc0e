//! Parquet columns as tabpfn sees a pandas frame: numbers (float64, missing as NaN) or text, per
//! feature column, and the target as class labels or values.

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Schema};
use deepembed_sdk::output::column_names;

use crate::preprocess::{Column, Label, Table, Targets};

/// Which input columns are features: every column but the target and the grouper, in input
/// order (the grouper is not a feature, unlike in DeepTune; see the README).
pub fn feature_columns(schema: &Schema, target: &str, grouper: Option<&str>) -> Result<Vec<String>> {
    // A pandas index saved into the file is the frame's index once DeepTune reads it, not a
    // feature.
    let index = deepembed_sdk::output::pandas_index_columns(schema);
    let features: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != target && Some(n.as_str()) != grouper && !index.contains(n))
        .collect();
    if features.is_empty() {
        bail!("the training table has no feature column besides the target; its columns are: {}", column_names(schema));
    }
    for field in schema.fields() {
        if features.contains(field.name()) && kind(field.data_type()).is_none() {
            bail!(
                "column '{}' is {}: tabpfn reads numbers and text only (convert it, or drop it from the table)",
                field.name(),
                field.data_type()
            );
        }
    }
    Ok(features)
}

/// Whether a column is read as numbers or as text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Numbers,
    Text,
}

fn kind(data_type: &DataType) -> Option<Kind> {
    match data_type {
        t if t.is_numeric() || *t == DataType::Boolean => Some(Kind::Numbers),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Kind::Text),
        DataType::Dictionary(_, value) => kind(value),
        _ => None,
    }
}

/// The feature columns of `batch` (by name, in `features`' order) as a [`Table`].
pub fn table_of(batch: &RecordBatch, features: &[String], which: &str) -> Result<Table> {
    let mut columns = Vec::with_capacity(features.len());
    for name in features {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| anyhow!("{which} has no column '{name}', a feature of the training table"))?;
        columns.push(read_column(column, name)?);
    }
    Ok(Table { names: features.to_vec(), columns, rows: batch.num_rows() })
}

fn read_column(column: &ArrayRef, name: &str) -> Result<Column> {
    Ok(match kind(column.data_type()) {
        Some(Kind::Numbers) => Column::Numbers(numbers(column)?),
        Some(Kind::Text) => {
            let text = arrow::compute::cast(column, &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            Column::Text((0..text.len()).map(|i| text.is_valid(i).then(|| text.value(i).to_string())).collect())
        }
        None => bail!("column '{name}' is {}: tabpfn reads numbers and text only", column.data_type()),
    })
}

fn numbers(column: &ArrayRef) -> Result<Vec<f64>> {
    let cast = arrow::compute::cast(column, &DataType::Float64)?;
    let values = cast.as_primitive::<Float64Type>();
    Ok((0..values.len()).map(|i| if values.is_valid(i) { values.value(i) } else { f64::NAN }).collect())
}

/// The training target: class labels (`cls`) or float64 values (`reg`). Missing targets are
/// refused, naming the first row, as tabpfn refuses them.
pub fn targets(column: &ArrayRef, name: &str, classification: bool) -> Result<Targets> {
    let missing = (0..column.len()).find(|&i| column.is_null(i));
    if let Some(i) = missing {
        bail!("training row {i}: the target '{name}' is missing (tabpfn needs every training row's target)");
    }
    if !classification {
        if kind(column.data_type()) != Some(Kind::Numbers) {
            bail!("--mode reg: the target '{name}' is {}, not numbers", column.data_type());
        }
        let values = numbers(column)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!("training row {i}: the target '{name}' is {} (tabpfn needs finite targets)", values[i]);
        }
        return Ok(Targets::Values(values));
    }
    Ok(Targets::Classes(match kind(column.data_type()) {
        Some(Kind::Numbers) => numbers(column)?.into_iter().map(Label::Number).collect(),
        Some(Kind::Text) => match read_column(column, name)? {
            Column::Text(values) => values.into_iter().map(|v| Label::Text(v.unwrap_or_default())).collect(),
            Column::Numbers(_) => unreachable!("text column"),
        },
        None => bail!("the target '{name}' is {}: use numbers or text", column.data_type()),
    }))
}

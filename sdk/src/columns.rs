//! Output columns: embedding columns from a row-major matrix, and input columns passed through.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use arrow::array::{Array, ArrayRef, Float32Array, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema};

/// How embedding columns are named: DeepTune uses different spellings per modality.
#[derive(Debug, Clone, Copy)]
pub enum EmbeddingNames {
    /// `"0"`, `"1"`, ... (vision, GPT-2, GANDALF)
    Index,
    /// `embed0000`, ... (BERT)
    Embed4,
    /// `emb_0`, ... (DeepAR)
    EmbUnderscore,
}

impl EmbeddingNames {
    pub fn name(self, i: usize) -> String {
        match self {
            EmbeddingNames::Index => i.to_string(),
            EmbeddingNames::Embed4 => format!("embed{i:04}"),
            EmbeddingNames::EmbUnderscore => format!("emb_{i}"),
        }
    }
}

/// Float32 columns from a row-major `rows x dims` matrix.
pub fn embedding_columns(
    matrix: &[f32],
    rows: usize,
    dims: usize,
    names: EmbeddingNames,
) -> Result<Vec<(Field, ArrayRef)>> {
    if matrix.len() != rows * dims {
        return Err(anyhow!("embedding matrix holds {} values, expected {rows} x {dims}", matrix.len()));
    }
    Ok((0..dims)
        .map(|d| {
            let column: Float32Array = (0..rows).map(|r| matrix[r * dims + d]).collect::<Vec<f32>>().into();
            (Field::new(names.name(d), DataType::Float32, false), Arc::new(column) as ArrayRef)
        })
        .collect())
}

/// The input columns that are not model input, in input order, restricted to `rows`
/// (indices into the batch) when some rows were skipped.
pub fn pass_through(batch: &RecordBatch, exclude: &[&str], rows: Option<&[u32]>) -> Result<Vec<(Field, ArrayRef)>> {
    let indices = rows.map(|r| UInt32Array::from(r.to_vec()));
    let schema = batch.schema();
    let mut out = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if exclude.contains(&field.name().as_str()) {
            continue;
        }
        out.push((field.as_ref().clone(), select_rows(column, indices.as_ref())?));
    }
    Ok(out)
}

/// `column` restricted to `indices` (all rows when `None`).
pub fn select_rows(column: &ArrayRef, indices: Option<&UInt32Array>) -> Result<ArrayRef> {
    match indices {
        Some(indices) if indices.len() != column.len() => Ok(take(column.as_ref(), indices, None)?),
        _ => Ok(column.clone()),
    }
}

/// Assembles a batch from named columns, failing on a duplicate name (a pass-through column
/// called `label` next to the label column, say) rather than writing an ambiguous file.
pub fn assemble(columns: Vec<(Field, ArrayRef)>) -> Result<RecordBatch> {
    let mut seen = std::collections::HashSet::new();
    for (field, _) in &columns {
        if !seen.insert(field.name().clone()) {
            return Err(anyhow!("two output columns would be named '{}'; rename that input column", field.name()));
        }
    }
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

//! The output rows, as DeepTune writes them: `emb_0`..`emb_{H-1}` (float32), the target column
//! (float32, the row's own value; one per target for a model of several) and `is_padded`.

use std::sync::Arc;

use anyhow::{bail, Result};
use arrow::array::{BooleanArray, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deepembed_sdk::output::{embedding_columns, EmbeddingNames};

pub struct OutputRows {
    schema: SchemaRef,
    dims: usize,
    targets: usize,
}

/// Rows ready to be written: `embeddings` is row-major, `rows x dims` (zeros where padded), and
/// so is `targets`, `rows x targets`.
#[derive(Default)]
pub struct Rows {
    pub embeddings: Vec<f32>,
    pub targets: Vec<f32>,
    pub padded: Vec<bool>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.padded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.padded.is_empty()
    }
}

impl OutputRows {
    pub fn new(dims: usize, targets: &[String]) -> Result<OutputRows> {
        let mut fields: Vec<Field> =
            (0..dims).map(|d| Field::new(EmbeddingNames::EmbUnderscore.name(d), DataType::Float32, false)).collect();
        fields.extend(targets.iter().map(|t| Field::new(t, DataType::Float32, false)));
        fields.push(Field::new("is_padded", DataType::Boolean, false));
        let mut seen = std::collections::HashSet::new();
        for field in &fields {
            if !seen.insert(field.name().as_str()) {
                bail!("the target column '{}' has the name of an output column; rename it", field.name());
            }
        }
        Ok(OutputRows { schema: Arc::new(Schema::new(fields)), dims, targets: targets.len() })
    }

    pub fn batch(&self, rows: &Rows) -> Result<RecordBatch> {
        let mut columns = embedding_columns(&rows.embeddings, self.dims);
        for k in 0..self.targets {
            let values: Vec<f32> = rows.targets.iter().skip(k).step_by(self.targets).copied().collect();
            columns.push(Arc::new(Float32Array::from(values)));
        }
        columns.push(Arc::new(BooleanArray::from(rows.padded.clone())));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

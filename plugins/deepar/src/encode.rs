//! Input rows to [`Record`]s with the checkpoint's own preprocessing: each real standardised in
//! float64 by its saved scaler then held as float32, the target by the saved `TorchNormalizer`,
//! each category coded by its saved `NaNLabelEncoder`, the row's series and timestamp. A row
//! that cannot be encoded is a reason naming the column and value, not a record.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Schema};
use deepembed_sdk::output::column_names;

use crate::record::{Layout, Record};
use crate::saved::{Categorical, RealSource, SavedDeepAr};
use crate::time::{column_nanos, text_values};

/// DeepTune's single-series convention: a constant `group` column of "0" it adds itself.
const DEEPTUNE_GROUP: &str = "group";

/// The series seen so far, numbered in order of first appearance, with their keys for messages.
#[derive(Default)]
pub struct SeriesIds {
    ids: HashMap<String, u32>,
    keys: Vec<String>,
}

impl SeriesIds {
    fn id(&mut self, key: &str) -> Result<u32> {
        if let Some(&id) = self.ids.get(key) {
            return Ok(id);
        }
        let id = u32::try_from(self.keys.len()).map_err(|_| anyhow!("more than 2^32 series"))?;
        self.ids.insert(key.to_string(), id);
        self.keys.push(key.to_string());
        Ok(id)
    }

    /// How a message names series `id`: `patient=17`.
    pub fn describe(&self, id: u32) -> &str {
        &self.keys[id as usize]
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A continuous input's column and its saved scaling.
struct RealColumn {
    index: usize,
    name: String,
    center: f64,
    scale: f64,
}

/// Where each model input is in the input table.
pub struct RowEncoder {
    layout: Layout,
    time: (usize, String),
    target: (usize, String),
    /// Per real slot: the input column and its scaling; `None` for the time index slot.
    reals: Vec<Option<RealColumn>>,
    categoricals: Vec<(usize, Categorical)>,
    /// The series columns; empty for DeepTune's constant single series.
    groups: Vec<(usize, String)>,
}

impl RowEncoder {
    pub fn new(
        saved: &SavedDeepAr,
        schema: &Schema,
        time: &str,
        target: &str,
        groups: &[String],
    ) -> Result<RowEncoder> {
        let index = |name: &str, what: &str| {
            schema.index_of(name).map_err(|_| {
                anyhow!("the input has no '{name}' column ({what}); its columns are: {}", column_names(schema))
            })
        };
        let numeric = |name: &str, what: &str| -> Result<usize> {
            let i = index(name, what)?;
            let kind = schema.field(i).data_type();
            if !kind.is_numeric() {
                bail!("column '{name}' ({what}) is {kind}, not numbers");
            }
            Ok(i)
        };
        let time = (index(time, "--time_idx_column")?, time.to_string());
        let target_index = numeric(target, "the target")?;
        let mut reals = Vec::with_capacity(saved.reals.len());
        for real in &saved.reals {
            let column = |index: usize, name: &str| RealColumn {
                index,
                name: name.to_string(),
                center: real.center,
                scale: real.scale,
            };
            reals.push(match &real.source {
                RealSource::Target => Some(column(target_index, target)),
                RealSource::TimeIndex => None,
                RealSource::Column(name) => Some(column(numeric(name, "a continuous input of the model")?, name)),
            });
        }
        let mut categoricals = Vec::with_capacity(saved.categoricals.len());
        for categorical in &saved.categoricals {
            let i = index(&categorical.name, "a categorical input of the model")?;
            let kind = schema.field(i).data_type();
            if kind.is_numeric() {
                bail!(
                    "column '{}' (a categorical input of the model) holds numbers ({kind}); pytorch-forecasting takes categories as text, so the model's categories are text",
                    categorical.name
                );
            }
            categoricals.push((i, categorical.clone()));
        }
        let constant = groups == [DEEPTUNE_GROUP] && schema.index_of(DEEPTUNE_GROUP).is_err();
        let groups = if constant {
            Vec::new()
        } else {
            groups.iter().map(|g| Ok((index(g, "a series id, --group_ids")?, g.clone()))).collect::<Result<_>>()?
        };
        let layout = Layout { reals: reals.len(), categoricals: categoricals.len() };
        Ok(RowEncoder { layout, time, target: (target_index, target.to_string()), reals, categoricals, groups })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The records of `batch`'s rows, in order; `first_row` is its first row's number.
    pub fn encode(
        &self,
        batch: &RecordBatch,
        first_row: u64,
        series: &mut SeriesIds,
    ) -> Result<Vec<Result<Record, String>>> {
        let n = batch.num_rows();
        let times = column_nanos(batch.column(self.time.0), &self.time.1)?;
        let target = floats(batch.column(self.target.0))?;
        let reals: Vec<Option<Vec<Option<f64>>>> = self
            .reals
            .iter()
            .map(|r| r.as_ref().map(|r| floats(batch.column(r.index))).transpose())
            .collect::<Result<_>>()?;
        let categories: Vec<_> =
            self.categoricals.iter().map(|(i, _)| text_values(batch.column(*i))).collect::<Result<_>>()?;
        let groups: Vec<_> = self.groups.iter().map(|(i, _)| text_values(batch.column(*i))).collect::<Result<_>>()?;
        let mut records = Vec::with_capacity(n);
        for (i, time) in times.into_iter().enumerate() {
            let record = time.and_then(|time| {
                let key = self.series_key(&groups, i)?;
                let id = series.id(&key).map_err(|e| e.to_string())?;
                let raw_target =
                    target[i].ok_or_else(|| format!("column '{}': missing target value", self.target.1))?;
                let mut values = Vec::with_capacity(self.layout.reals);
                for (slot, column) in self.reals.iter().zip(&reals) {
                    values.push(match (slot, column) {
                        (Some(slot), Some(column)) => {
                            let x = column[i].ok_or_else(|| format!("column '{}': missing value", slot.name))?;
                            ((x - slot.center) / slot.scale) as f32
                        }
                        _ => 0.0,
                    });
                }
                let mut codes = Vec::with_capacity(self.layout.categoricals);
                for ((_, categorical), values) in self.categoricals.iter().zip(&categories) {
                    codes.push(code(categorical, values, i)?);
                }
                Ok(Record {
                    row: first_row + i as u64,
                    series: id,
                    time,
                    target: raw_target as f32,
                    reals: values,
                    codes,
                })
            });
            records.push(record);
        }
        Ok(records)
    }

    fn series_key(&self, groups: &[std::sync::Arc<StringArray>], i: usize) -> Result<String, String> {
        let mut key = String::new();
        for ((_, name), values) in self.groups.iter().zip(groups) {
            if values.is_null(i) {
                return Err(format!("column '{name}': missing series id"));
            }
            if !key.is_empty() {
                key.push_str(", ");
            }
            key.push_str(&format!("{name}={}", values.value(i)));
        }
        Ok(key)
    }
}

/// A numeric column as float64 values, `None` where missing or not finite (pytorch-forecasting
/// refuses both).
fn floats(column: &ArrayRef) -> Result<Vec<Option<f64>>> {
    let cast = arrow::compute::cast(column, &DataType::Float64)?;
    let values = cast.as_primitive::<Float64Type>();
    Ok((0..values.len()).map(|i| values.is_valid(i).then(|| values.value(i)).filter(|x| x.is_finite())).collect())
}

/// A category's code from the saved encoder: unknown or missing values fail, as
/// `NaNLabelEncoder` does, unless it was fitted with `add_nan` (then they take code 0).
fn code(categorical: &Categorical, values: &StringArray, i: usize) -> Result<u32, String> {
    let value = values.is_valid(i).then(|| values.value(i));
    let found = value.and_then(|v| categorical.classes.get(v)).copied();
    let code = match (found, categorical.add_nan) {
        (Some(code), _) => code,
        (None, true) => 0,
        (None, false) => {
            let mut known: Vec<&str> = categorical.classes.keys().map(String::as_str).collect();
            known.sort_unstable();
            let shown = if known.len() > 10 { format!("{}, ...", known[..10].join(", ")) } else { known.join(", ") };
            return Err(match value {
                Some(v) => format!(
                    "column '{}': category '{v}' was not seen in training (the checkpoint's encoder knows {shown})",
                    categorical.name
                ),
                None => format!(
                    "column '{}': missing category (the checkpoint's encoder has no code for it)",
                    categorical.name
                ),
            });
        }
    };
    u32::try_from(code).map_err(|_| format!("column '{}': code {code} out of range", categorical.name))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::SeriesIds;

    pub fn add(ids: &mut SeriesIds, key: &str) -> u32 {
        ids.id(key).unwrap()
    }
}

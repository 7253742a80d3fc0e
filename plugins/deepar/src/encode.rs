//! Input rows to [`Record`]s with the checkpoint's own preprocessing: each real standardised in
//! float64 by its saved scaler then held as float32, each target by its saved normaliser
//! (or left raw, for one fitted on each window), each category coded by its saved
//! `NaNLabelEncoder`, the row's series and timestamp. A row that cannot be encoded is a reason
//! naming the column and value, not a record.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use deepembed_sdk::output::column_names;

use crate::normaliser::{fitted_input, Normaliser, Scales};
use crate::record::{Layout, Record};
use crate::saved::{Categorical, RealSource, SavedDeepAr};
use crate::time::{column_times, text_values, TimeKind};

/// DeepTune's single-series convention: a constant `group` column of "0" it adds itself.
const DEEPTUNE_GROUP: &str = "group";

/// DeepTune's frame preparation: a model whose series are told apart by `group` alone, given an
/// input without that column, gets the column DeepTune adds itself (`group = "0"`, one series),
/// so that everything that reads it (the series, a normaliser's scales by group, a category)
/// sees what DeepTune's dataset saw.
pub struct DeepTuneGroup {
    add: bool,
}

impl DeepTuneGroup {
    pub fn for_input(groups: &[String], schema: &Schema) -> DeepTuneGroup {
        DeepTuneGroup { add: groups == [DEEPTUNE_GROUP] && schema.index_of(DEEPTUNE_GROUP).is_err() }
    }

    /// The input's schema, with the column when it is added.
    pub fn schema(&self, schema: Schema) -> Schema {
        if !self.add {
            return schema;
        }
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(DEEPTUNE_GROUP, DataType::Utf8, false)));
        Schema::new_with_metadata(fields, schema.metadata().clone())
    }

    /// A batch of the input, with the column when it is added.
    pub fn batch(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if !self.add {
            return Ok(batch);
        }
        let schema = Arc::new(self.schema(batch.schema().as_ref().clone()));
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec!["0"; batch.num_rows()])));
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

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

/// Where a continuous input's value comes from.
enum Slot {
    /// An input column, with its saved scaler (an affine scaler as a fitted normaliser without
    /// transformation: the same float64 arithmetic).
    Column {
        index: usize,
        name: String,
        normalising: Normalising,
    },
    /// Target `k`, through its normaliser.
    Target(usize),
    /// Target `k`'s fitted normaliser's center or scale for the row, standardised.
    TargetCenter {
        target: usize,
        center: f64,
        scale: f64,
    },
    TargetScale {
        target: usize,
        center: f64,
        scale: f64,
    },
    /// Filled in when the row is windowed: per window (the time index, the relative time index,
    /// the encoder length, and a per-window normaliser's center and scale), or from the series'
    /// earlier rows (a lagged input).
    Later,
}

/// Where each model input is in the input table.
pub struct RowEncoder {
    layout: Layout,
    time: (usize, String),
    time_kind: TimeKind,
    /// The target columns, in the model's order, with their normalisers.
    targets: Vec<(usize, String, Normalising)>,
    reals: Vec<Slot>,
    categoricals: Vec<(usize, Categorical)>,
    /// The series columns (none: one series).
    groups: Vec<(usize, String)>,
}

impl RowEncoder {
    pub fn new(saved: &SavedDeepAr, schema: &Schema, time: &str, groups: &[String]) -> Result<RowEncoder> {
        let index = |name: &str, what: &str| {
            schema.index_of(name).map_err(|_| {
                anyhow!("the input has no '{name}' column ({what}); its columns are: {}", column_names(schema))
            })
        };
        let numeric = |name: &str, what: &str| -> Result<usize> {
            let i = index(name, what)?;
            let kind = schema.field(i).data_type();
            // pandas takes booleans as 0 and 1, as the scalers did in training.
            if !kind.is_numeric() && kind != &DataType::Boolean {
                bail!("column '{name}' ({what}) is {kind}, not numbers");
            }
            Ok(i)
        };
        let time = (index(time, "--time_idx_column")?, time.to_string());
        let targets = saved
            .targets
            .iter()
            .map(|t| Ok((numeric(&t.name, "a target")?, t.name.clone(), Normalising::new(&t.normaliser, &index)?)))
            .collect::<Result<Vec<_>>>()?;
        // A per-window normaliser's center and scale are the window's, not the row's.
        let per_window = |k: usize| saved.targets[k].normaliser.per_window().is_some();
        let mut reals = Vec::with_capacity(saved.reals.len());
        for real in &saved.reals {
            let (center, scale) = (real.center, real.scale);
            reals.push(match real.source {
                RealSource::Target(k) => Slot::Target(k),
                RealSource::TargetCenter(target) if !per_window(target) => Slot::TargetCenter { target, center, scale },
                RealSource::TargetScale(target) if !per_window(target) => Slot::TargetScale { target, center, scale },
                RealSource::TimeIndex
                | RealSource::RelativeTimeIndex
                | RealSource::EncoderLength
                | RealSource::TargetCenter(_)
                | RealSource::TargetScale(_)
                | RealSource::Lagged { .. } => Slot::Later,
                RealSource::Column(ref name) => {
                    let affine = || Normaliser::Fitted {
                        transformation: None,
                        scales: Scales::Global { center: real.center, scale: real.scale },
                    };
                    Slot::Column {
                        index: numeric(name, "a continuous input of the model")?,
                        name: name.clone(),
                        normalising: Normalising::new(&real.normaliser.clone().unwrap_or_else(affine), &index)?,
                    }
                }
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
        let groups =
            groups.iter().map(|g| Ok((index(g, "a series id, --group_ids")?, g.clone()))).collect::<Result<_>>()?;
        let layout = Layout { targets: targets.len(), reals: reals.len(), categoricals: categoricals.len() };
        Ok(RowEncoder {
            layout,
            time_kind: TimeKind::of(schema.field(time.0).data_type()),
            time,
            targets,
            reals,
            categoricals,
            groups,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn time_kind(&self) -> TimeKind {
        self.time_kind
    }

    /// The records of `batch`'s rows, in order; `first_row` is its first row's number.
    pub fn encode(
        &self,
        batch: &RecordBatch,
        first_row: u64,
        series: &mut SeriesIds,
    ) -> Result<Vec<Result<Record, String>>> {
        let n = batch.num_rows();
        let times = column_times(batch.column(self.time.0), &self.time.1)?;
        let targets: Vec<Vec<Option<f64>>> =
            self.targets.iter().map(|(index, _, _)| floats(batch.column(*index))).collect::<Result<_>>()?;
        let reals: Vec<Option<Vec<Option<f64>>>> = self
            .reals
            .iter()
            .map(|slot| match slot {
                Slot::Column { index, .. } => floats(batch.column(*index)).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        // The series columns each by-series normaliser reads; the values per-window normalisers
        // fit on, prepared for the whole batch.
        let target_series: Vec<_> = self.targets.iter().map(|(_, _, n)| n.series_of(batch)).collect::<Result<_>>()?;
        let target_prepared: Vec<_> = self.targets.iter().zip(&targets).map(|((_, _, n), t)| n.prepare(t)).collect();
        let mut real_series: Vec<Vec<Arc<StringArray>>> = Vec::with_capacity(self.reals.len());
        let mut real_prepared = Vec::with_capacity(self.reals.len());
        for (slot, column) in self.reals.iter().zip(&reals) {
            let (series, prepared) = match (slot, column) {
                (Slot::Column { normalising, .. }, Some(column)) => {
                    (normalising.series_of(batch)?, normalising.prepare(column))
                }
                _ => (Vec::new(), None),
            };
            real_series.push(series);
            real_prepared.push(prepared);
        }
        let categories: Vec<_> =
            self.categoricals.iter().map(|(i, _)| text_values(batch.column(*i))).collect::<Result<_>>()?;
        let groups: Vec<_> = self.groups.iter().map(|(i, _)| text_values(batch.column(*i))).collect::<Result<_>>()?;
        let mut records = Vec::with_capacity(n);
        for (i, time) in times.into_iter().enumerate() {
            let record = time.and_then(|time| {
                let key = self.series_key(&groups, i)?;
                let id = series.id(&key).map_err(|e| e.to_string())?;
                // Each target's raw value, its input, and its fitted center and scale.
                let mut raw_targets = Vec::with_capacity(self.targets.len());
                let mut target_inputs = Vec::with_capacity(self.targets.len());
                for (k, (_, name, normalising)) in self.targets.iter().enumerate() {
                    let raw =
                        targets[k][i].ok_or_else(|| format!("column '{name}': missing or infinite target value"))?;
                    let (input, fitted) = normalising
                        .input(raw, target_prepared[k].as_ref().map(|p| &p[i]), &target_series[k], i)
                        .map_err(|e| format!("column '{name}': {e}"))?;
                    raw_targets.push(raw as f32);
                    target_inputs.push((input, fitted.unwrap_or((0.0, 1.0))));
                }
                let mut values = Vec::with_capacity(self.layout.reals);
                let columns = self.reals.iter().zip(&reals).zip(real_series.iter().zip(&real_prepared));
                for ((slot, column), (series, prepared)) in columns {
                    values.push(match (slot, column) {
                        (Slot::Column { name, normalising, .. }, Some(column)) => {
                            let x = column[i].ok_or_else(|| format!("column '{name}': missing or infinite value"))?;
                            let prepared = prepared.as_ref().map(|p| &p[i]);
                            normalising.input(x, prepared, series, i).map_err(|e| format!("column '{name}': {e}"))?.0
                        }
                        (Slot::Target(k), _) => target_inputs[*k].0,
                        (Slot::TargetCenter { target, center, scale }, _) => {
                            ((target_inputs[*target].1 .0 - center) / scale) as f32
                        }
                        (Slot::TargetScale { target, center, scale }, _) => {
                            ((target_inputs[*target].1 .1 - center) / scale) as f32
                        }
                        _ => 0.0,
                    });
                }
                let mut codes = Vec::with_capacity(self.layout.categoricals);
                for ((_, categorical), values) in self.categoricals.iter().zip(&categories) {
                    codes.push(code(categorical, values, i)?);
                }
                Ok(Record { row: first_row + i as u64, series: id, time, targets: raw_targets, reals: values, codes })
            });
            records.push(record);
        }
        Ok(records)
    }

    fn series_key(&self, groups: &[Arc<StringArray>], i: usize) -> Result<String, String> {
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

/// A normaliser (of the target or of another input) and the input columns its by-series scales
/// read.
struct Normalising {
    normaliser: Normaliser,
    series_columns: Vec<usize>,
}

impl Normalising {
    fn new(normaliser: &Normaliser, index: &dyn Fn(&str, &str) -> Result<usize>) -> Result<Normalising> {
        let series_columns = match normaliser {
            Normaliser::Fitted { scales: Scales::ByGroup(groups), .. } => groups
                .columns
                .iter()
                .map(|c| index(c, "a series column a normaliser's scales are by"))
                .collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        Ok(Normalising { normaliser: normaliser.clone(), series_columns })
    }

    /// The series columns of `batch` this normaliser reads, as text.
    fn series_of(&self, batch: &RecordBatch) -> Result<Vec<Arc<StringArray>>> {
        self.series_columns.iter().map(|&i| text_values(batch.column(i))).collect()
    }

    /// For a per-window normaliser, a batch's values as windows hold them (float32, transformed);
    /// `None` for a fitted one.
    fn prepare(&self, values: &[Option<f64>]) -> Option<Vec<Result<f32, String>>> {
        match &self.normaliser {
            Normaliser::PerWindow(normaliser) => Some(normaliser.prepare(values)),
            Normaliser::Fitted { .. } => None,
        }
    }

    /// Row `i`'s input value: `y` normalised with the fitted center and scale (the row's
    /// series' for a by-series normaliser), returned with them; for one fitted on each window,
    /// its `prepared` value.
    fn input(
        &self,
        y: f64,
        prepared: Option<&Result<f32, String>>,
        series: &[Arc<StringArray>],
        i: usize,
    ) -> Result<(f32, Option<(f64, f64)>), String> {
        match &self.normaliser {
            Normaliser::Fitted { transformation, scales } => {
                let params = match scales {
                    Scales::Global { center, scale } => (*center, *scale),
                    Scales::ByGroup(groups) => {
                        let values: Vec<Option<&str>> =
                            series.iter().map(|v| v.is_valid(i).then(|| v.value(i))).collect();
                        groups.lookup(&values)?
                    }
                };
                Ok((fitted_input(*transformation, params, y)?, Some(params)))
            }
            Normaliser::PerWindow(_) => Ok((prepared.expect("prepared for the batch").clone()?, None)),
        }
    }
}

/// A numeric column as float64 values, `None` where missing or not finite (pytorch-forecasting
/// refuses both).
fn floats(column: &ArrayRef) -> Result<Vec<Option<f64>>> {
    let cast = arrow::compute::cast(column, &DataType::Float64)?;
    let values = cast.as_primitive::<Float64Type>();
    Ok((0..values.len()).map(|i| values.is_valid(i).then(|| values.value(i)).filter(|x| x.is_finite())).collect())
}

/// A category's code from the saved encoder.
fn code(categorical: &Categorical, values: &StringArray, i: usize) -> Result<u32, String> {
    let code = categorical.code_of(values.is_valid(i).then(|| values.value(i)))?;
    u32::try_from(code).map_err(|_| format!("column '{}': code {code} out of range", categorical.name))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::SeriesIds;

    pub fn add(ids: &mut SeriesIds, key: &str) -> u32 {
        ids.id(key).unwrap()
    }
}

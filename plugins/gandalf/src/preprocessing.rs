//! pytorch-tabular's inference preprocessing, with the fitted values from `datamodule.sav`:
//! categories become the saved codes (`fillna(0).map(mapping)`, unseen values the imputed code),
//! continuous values go through the saved quantile or power transform, if the model was trained
//! with one (`continuous_feature_transform`), and the saved StandardScaler, in float64, then to
//! float32. Categories derived from date columns (see [`crate::dates`]) are computed from them.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use deepembed_sdk::checkpoint::pandas::PyKey;
use deepembed_sdk::checkpoint::sklearn::{FeatureTransform, StandardScaler};
use deepembed_sdk::checkpoint::Value;

use crate::dates::{DateColumn, Part};

/// What the encoder does with a category training never saw.
#[derive(Debug, Clone, Copy)]
pub enum Unseen {
    /// Use this code (pytorch-tabular's default, `handle_unknown_categories=True`: 0).
    Impute(i64),
    /// The model was saved with `handle_unknown_categories=False`.
    Error,
}

/// The fitted code table of one categorical column.
pub struct CategoryEncoder {
    pub column: String,
    codes: HashMap<PyKey, i64>,
    unseen: Unseen,
    missing_is_error: bool,
}

impl CategoryEncoder {
    pub fn new(
        column: &str,
        categories: &[Value],
        codes: &[Value],
        unseen: Unseen,
        missing_is_error: bool,
    ) -> Result<CategoryEncoder> {
        let mut table = HashMap::with_capacity(codes.len());
        for (category, code) in categories.iter().zip(codes) {
            let key = PyKey::of(category)
                .ok_or_else(|| anyhow!("column '{column}': category {} cannot be looked up", category.type_name()))?;
            let code = code
                .as_i64()
                .ok_or_else(|| anyhow!("column '{column}': the code of a category is a {}", code.type_name()))?;
            // pandas' map uses the first of duplicated labels.
            table.entry(key).or_insert(code);
        }
        Ok(CategoryEncoder { column: column.to_string(), codes: table, unseen, missing_is_error })
    }

    /// The largest code this encoder can produce (to check against the embedding table).
    pub fn max_code(&self) -> i64 {
        let imputed = match self.unseen {
            Unseen::Impute(code) => code,
            Unseen::Error => 0,
        };
        self.codes.values().copied().max().unwrap_or(0).max(imputed)
    }

    pub fn min_code(&self) -> i64 {
        let imputed = match self.unseen {
            Unseen::Impute(code) => code,
            Unseen::Error => 0,
        };
        self.codes.values().copied().min().unwrap_or(0).min(imputed)
    }
}

pub struct Preprocessing {
    pub continuous: Vec<String>,
    /// `continuous_feature_transform`'s fitted transform, applied before the scaler.
    pub transform: Option<FeatureTransform>,
    pub scaler: Option<StandardScaler>,
    pub encoders: Vec<CategoryEncoder>,
    /// The date columns whose parts are among the encoders' columns.
    pub dates: Vec<DateColumn>,
}

/// One batch, ready for the model: only the rows that could be encoded.
pub struct Encoded {
    /// Row-major `kept x continuous` values.
    pub continuous: Vec<f32>,
    /// Row-major `kept x categorical` codes.
    pub categorical: Vec<i64>,
    /// Indices (within the batch) of the rows encoded.
    pub kept: Vec<u32>,
    /// Rows that could not be encoded (index within the batch, reason).
    pub failed: Vec<(u32, String)>,
}

/// What the run reports at its end, per column.
#[derive(Default)]
pub struct Counts {
    /// Categorical values training never saw (encoded as unseen), per categorical column.
    pub unseen: Vec<u64>,
    /// Missing categorical values, per categorical column.
    pub missing_categories: Vec<u64>,
    /// Missing continuous values (their rows' embeddings are NaN), per continuous column.
    pub missing_continuous: Vec<u64>,
}

impl Preprocessing {
    pub fn counts(&self) -> Counts {
        Counts {
            unseen: vec![0; self.encoders.len()],
            missing_categories: vec![0; self.encoders.len()],
            missing_continuous: vec![0; self.continuous.len()],
        }
    }

    /// One continuous value as pytorch-tabular prepares it: the fitted transform, then the
    /// scaler, in float64. scikit-learn refuses infinities (NaN passes through), and Box-Cox
    /// values that are not strictly positive.
    fn continuous_value(&self, c: usize, x: f64) -> Result<f64, String> {
        let y = match &self.transform {
            Some(t) => t
                .transform(c, x)
                .map_err(|refused| format!("{x} {refused}, so the saved {} cannot transform it", t.describe()))?,
            None => x,
        };
        match &self.scaler {
            Some(_) if y.is_infinite() && y == x => {
                Err(format!("{x} is not finite, and the saved scaler cannot transform it"))
            }
            Some(_) if y.is_infinite() => {
                Err(format!("{x} becomes {y} through the saved transform, and the saved scaler cannot transform that"))
            }
            Some(scaler) => Ok(scaler.transform(c, y)),
            None => Ok(y),
        }
    }

    /// Checks the input's column types before any row is read.
    pub fn check_types(&self, schema: &arrow::datatypes::Schema) -> Result<()> {
        for name in &self.continuous {
            let dt = value_type(schema.field_with_name(name)?.data_type());
            if !(dt.is_numeric() || matches!(dt, DataType::Boolean | DataType::Null) || is_text(dt)) {
                bail!("continuous column '{name}' has type {dt}; it must hold numbers");
            }
        }
        for date in &self.dates {
            let dt = value_type(schema.field_with_name(&date.column)?.data_type());
            if !(matches!(dt, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64) || is_text(dt)) {
                bail!("date column '{}' has type {dt}; it must hold dates, timestamps or text dates", date.column);
            }
        }
        for encoder in self.encoders.iter().filter(|e| self.date_part(&e.column).is_none()) {
            let dt = value_type(schema.field_with_name(&encoder.column)?.data_type());
            if !(dt.is_integer() || dt.is_floating() || is_text(dt) || matches!(dt, DataType::Boolean | DataType::Null))
            {
                bail!(
                    "categorical column '{}' has type {dt}; categories must be text, integers, floats or booleans",
                    encoder.column
                );
            }
        }
        Ok(())
    }

    /// The date column and part a category column is derived from, if it is.
    pub fn date_part(&self, column: &str) -> Option<(usize, Part)> {
        self.dates
            .iter()
            .enumerate()
            .find_map(|(d, date)| date.parts.iter().find(|(name, _)| name == column).map(|&(_, part)| (d, part)))
    }

    pub fn encode(&self, batch: &RecordBatch, counts: &mut Counts) -> Result<Encoded> {
        let rows = batch.num_rows();
        let mut errors: Vec<Option<String>> = vec![None; rows];
        let mut continuous = vec![0f32; rows * self.continuous.len()];
        let width = self.continuous.len();
        for (c, name) in self.continuous.iter().enumerate() {
            let values = continuous_values(column(batch, name)?, name, &mut errors)?;
            for (r, value) in values.into_iter().enumerate() {
                let Some(x) = value else { continue };
                if x.is_nan() {
                    counts.missing_continuous[c] += 1;
                }
                let x = match self.continuous_value(c, x) {
                    Ok(x) => x,
                    Err(reason) => {
                        errors[r].get_or_insert_with(|| format!("column '{name}': {reason}"));
                        continue;
                    }
                };
                continuous[r * width + c] = x as f32;
            }
        }
        let mut dates = Vec::with_capacity(self.dates.len());
        for date in &self.dates {
            let values = date.dates(&plain(column(batch, &date.column)?)?)?;
            dates.push(
                values
                    .into_iter()
                    .enumerate()
                    .map(|(r, t)| {
                        t.unwrap_or_else(|reason| {
                            errors[r].get_or_insert(reason);
                            None
                        })
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let n_cat = self.encoders.len();
        let mut categorical = vec![0i64; rows * n_cat];
        for (c, encoder) in self.encoders.iter().enumerate() {
            let keys = match self.date_part(&encoder.column) {
                Some((d, part)) => dates[d].iter().map(|&t| part.of(t).map(PyKey::Int)).collect(),
                None => category_keys(column(batch, &encoder.column)?)?,
            };
            for (r, key) in keys.into_iter().enumerate() {
                let missing = key.is_none();
                let key = match key {
                    Some(key) => key,
                    None if encoder.missing_is_error => {
                        errors[r].get_or_insert_with(|| {
                            format!(
                                "column '{}': missing value, and the model was saved with handle_missing_values=False",
                                encoder.column
                            )
                        });
                        continue;
                    }
                    // pandas' fillna(0) before the lookup.
                    None => {
                        counts.missing_categories[c] += 1;
                        PyKey::Int(0)
                    }
                };
                categorical[r * n_cat + c] = match (encoder.codes.get(&key), encoder.unseen) {
                    (Some(&code), _) => code,
                    (None, Unseen::Impute(code)) => {
                        counts.unseen[c] += u64::from(!missing);
                        code
                    }
                    (None, Unseen::Error) => {
                        errors[r].get_or_insert_with(|| format!("column '{}': category {} was not seen in training, and the model was saved with handle_unknown_categories=False", encoder.column, key));
                        continue;
                    }
                };
            }
        }
        let kept: Vec<u32> = (0..rows as u32).filter(|&r| errors[r as usize].is_none()).collect();
        let failed = errors.into_iter().enumerate().filter_map(|(r, e)| e.map(|e| (r as u32, e))).collect();
        if kept.len() < rows {
            continuous =
                kept.iter().flat_map(|&r| continuous[r as usize * width..(r as usize + 1) * width].to_vec()).collect();
            categorical =
                kept.iter().flat_map(|&r| categorical[r as usize * n_cat..(r as usize + 1) * n_cat].to_vec()).collect();
        }
        Ok(Encoded { continuous, categorical, kept, failed })
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| anyhow!("the input has no column '{name}'"))
}

/// A dictionary column's value type; other types as they are.
fn value_type(dt: &DataType) -> &DataType {
    match dt {
        DataType::Dictionary(_, values) => values,
        other => other,
    }
}

fn is_text(dt: &DataType) -> bool {
    matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Decodes dictionary columns (pandas categoricals written to Parquet).
fn plain(array: &ArrayRef) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Dictionary(_, values) => Ok(cast(array, values)?),
        _ => Ok(array.clone()),
    }
}

/// Continuous values as float64, NaN for missing; `None` where the row has an error (recorded).
fn continuous_values(array: &ArrayRef, name: &str, errors: &mut [Option<String>]) -> Result<Vec<Option<f64>>> {
    let array = plain(array)?;
    if is_text(array.data_type()) {
        // Text columns hold numbers written as text; pandas and scikit-learn convert them too.
        let text = cast(&array, &DataType::Utf8)?;
        return Ok(text
            .as_string::<i32>()
            .iter()
            .enumerate()
            .map(|(r, s)| match s {
                None => Some(f64::NAN),
                Some(s) => match s.trim().parse::<f64>() {
                    Ok(x) => Some(x),
                    Err(_) => {
                        errors[r].get_or_insert_with(|| format!("column '{name}': '{s}' is not a number"));
                        None
                    }
                },
            })
            .collect());
    }
    let floats = cast(&array, &DataType::Float64)?;
    Ok(floats.as_primitive::<Float64Type>().iter().map(|x| Some(x.unwrap_or(f64::NAN))).collect())
}

/// Category lookup keys, `None` for missing values (null, or NaN in a float column).
fn category_keys(array: &ArrayRef) -> Result<Vec<Option<PyKey>>> {
    let array = plain(array)?;
    let dt = array.data_type().clone();
    Ok(if is_text(&dt) {
        cast(&array, &DataType::Utf8)?.as_string::<i32>().iter().map(|s| s.map(|s| PyKey::Str(s.to_string()))).collect()
    } else if dt.is_floating() {
        cast(&array, &DataType::Float64)?
            .as_primitive::<Float64Type>()
            .iter()
            .map(|x| x.and_then(PyKey::float))
            .collect()
    } else if dt == DataType::UInt64 {
        // Beyond i64: compare as Python would, through the float path.
        cast(&array, &DataType::Float64)?
            .as_primitive::<Float64Type>()
            .iter()
            .map(|x| x.and_then(PyKey::float))
            .collect()
    } else if dt.is_integer() || dt == DataType::Boolean || dt == DataType::Null {
        cast(&array, &DataType::Int64)?.as_primitive::<Int64Type>().iter().map(|x| x.map(PyKey::Int)).collect()
    } else {
        bail!("categories of type {dt} are not supported")
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::Int8Type;

    use super::*;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn site_encoder(unseen: Unseen) -> CategoryEncoder {
        // Training saw "a", "b" and a missing value (pandas filled it with 0 before fitting).
        let categories = [Value::Str("a".into()), Value::Str("b".into()), Value::Int(0)];
        CategoryEncoder::new("site", &categories, &[Value::Int(1), Value::Int(2), Value::Int(3)], unseen, false)
            .unwrap()
    }

    fn preprocessing(encoders: Vec<CategoryEncoder>, scaler: Option<StandardScaler>) -> Preprocessing {
        Preprocessing { continuous: vec!["x".into()], transform: None, scaler, encoders, dates: vec![] }
    }

    #[test]
    fn categories_map_to_saved_codes_and_unseen_to_the_imputed_code() {
        let p = preprocessing(vec![site_encoder(Unseen::Impute(0))], None);
        let sites: ArrayRef = Arc::new(StringArray::from(vec![Some("b"), Some("zz"), None, Some("a")]));
        let b = batch(vec![("x", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])) as ArrayRef), ("site", sites)]);
        let mut counts = p.counts();
        let encoded = p.encode(&b, &mut counts).unwrap();
        // A missing value looks up pandas' fill value 0, which training saw here.
        assert_eq!(encoded.categorical, vec![2, 0, 3, 1]);
        assert_eq!((counts.unseen[0], counts.missing_categories[0]), (1, 1));
        assert!(encoded.failed.is_empty());
    }

    #[test]
    fn dictionary_integer_float_and_boolean_categories_compare_as_python_does() {
        let codes = [Value::Int(1), Value::Int(2)];
        let encoder =
            |categories: &[Value]| CategoryEncoder::new("c", categories, &codes, Unseen::Impute(0), false).unwrap();
        let cases: Vec<(CategoryEncoder, ArrayRef, Vec<i64>)> = vec![
            (
                encoder(&[Value::Str("u".into()), Value::Str("v".into())]),
                Arc::new(["v", "u", "w"].into_iter().collect::<DictionaryArray<Int8Type>>()),
                vec![2, 1, 0],
            ),
            (
                encoder(&[Value::Int(3), Value::Int(5)]),
                Arc::new(Float64Array::from(vec![5.0, 3.0, 3.5, f64::NAN])),
                vec![2, 1, 0, 0],
            ),
            (encoder(&[Value::Float(1.5), Value::Int(7)]), Arc::new(Int32Array::from(vec![7, 1])), vec![2, 0]),
            (
                encoder(&[Value::Bool(false), Value::Bool(true)]),
                Arc::new(BooleanArray::from(vec![true, false])),
                vec![2, 1],
            ),
            (encoder(&[Value::Str("1".into()), Value::Int(2)]), Arc::new(Int64Array::from(vec![1, 2])), vec![0, 2]),
        ];
        for (i, (encoder, column, want)) in cases.into_iter().enumerate() {
            let rows = column.len();
            let p = Preprocessing {
                continuous: vec![],
                transform: None,
                scaler: None,
                encoders: vec![encoder],
                dates: vec![],
            };
            let encoded = p.encode(&batch(vec![("c", column)]), &mut p.counts()).unwrap();
            assert_eq!(encoded.categorical, want, "case {i}");
            assert_eq!(encoded.kept.len(), rows, "case {i}");
        }
    }

    #[test]
    fn bad_values_fail_their_row_only() {
        let scaler =
            StandardScaler { mean: Some(vec![1.0]), scale: Some(vec![2.0]), feature_names: None, n_features: 1 };
        let p = preprocessing(vec![site_encoder(Unseen::Error)], Some(scaler));
        let x: ArrayRef = Arc::new(StringArray::from(vec![Some(" 3.0"), Some("abc"), Some("inf"), None, Some("5")]));
        let sites: ArrayRef = Arc::new(StringArray::from(vec!["a", "a", "a", "a", "mars"]));
        let mut counts = p.counts();
        let encoded = p.encode(&batch(vec![("x", x), ("site", sites)]), &mut counts).unwrap();
        assert_eq!(encoded.kept, vec![0, 3]);
        // Scaled in float64 as scikit-learn does; a missing value stays NaN.
        assert_eq!(encoded.continuous[0], 1.0);
        assert!(encoded.continuous[1].is_nan());
        assert_eq!(counts.missing_continuous[0], 1);
        let reasons: Vec<(u32, &str)> = encoded.failed.iter().map(|(r, m)| (*r, m.as_str())).collect();
        assert!(reasons[0].0 == 1 && reasons[0].1.contains("'abc' is not a number"), "{reasons:?}");
        assert!(reasons[1].0 == 2 && reasons[1].1.contains("not finite"), "{reasons:?}");
        assert!(reasons[2].0 == 4 && reasons[2].1.contains("'mars' was not seen in training"), "{reasons:?}");
    }
}

//! scikit-learn transformers inside pickles, read as inert data: the fitted parameters that
//! reproduce `transform`. Anything else is refused by class name, so a model whose saved
//! preprocessing cannot be reproduced never runs on silently different inputs.
//!
//! - [`StandardScaler`] (and `RobustScaler`): `(x - center) / scale`, exactly.
//! - [`QuantileTransformer`] (uniform or normal output) and [`PowerTransformer`] (Yeo-Johnson or
//!   Box-Cox, standardized or not), through [`FeatureTransform`]: numpy's and scipy's float64
//!   arithmetic operation for operation ([`math`]); libm's `log1p`, `expm1` and `pow` may differ
//!   from numpy's SIMD ones in the last bit.
//!
//! Transforms work one value of one feature at a time, so a caller streams rows through them.
//! A value scikit-learn's `transform` refuses (an infinity; a non-positive value for Box-Cox)
//! comes back as a [`Refused`], for the caller to report with its row and column.

pub mod math;
mod power_transformer;
mod quantile_transformer;
mod standard_scaler;

pub use power_transformer::{PowerMethod, PowerTransformer};
pub use quantile_transformer::{OutputDistribution, QuantileColumn, QuantileTransformer};
pub use standard_scaler::StandardScaler;

use crate::error::{data_err, data_error, Result};
use crate::pickle::Value;

/// Why scikit-learn's `transform` would refuse a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Infinite (scikit-learn's input check allows NaN, never infinities).
    Infinite,
    /// Zero or negative, where Box-Cox needs strictly positive values.
    NotPositive,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Infinite => "is not finite",
            Refused::NotPositive => "is not strictly positive",
        })
    }
}

/// A fitted per-feature transform of continuous columns, told apart by its class.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureTransform {
    Quantile(QuantileTransformer),
    Power(PowerTransformer),
}

impl FeatureTransform {
    pub fn from_value(value: &Value) -> Result<FeatureTransform> {
        match value {
            Value::Object(o) if o.name == "QuantileTransformer" => {
                QuantileTransformer::from_value(value).map(FeatureTransform::Quantile)
            }
            Value::Object(o) if o.name == "PowerTransformer" => {
                PowerTransformer::from_value(value).map(FeatureTransform::Power)
            }
            Value::Object(o) => data_err!(
                "{}.{} is not a transform deepembed reproduces (QuantileTransformer, PowerTransformer)",
                o.module,
                o.name
            ),
            other => data_err!("expected a fitted scikit-learn transform, got {}", other.type_name()),
        }
    }

    /// `transform` of one value of feature `i`, in float64; NaN stays NaN.
    pub fn transform(&self, i: usize, x: f64) -> std::result::Result<f64, Refused> {
        match self {
            FeatureTransform::Quantile(t) => t.transform(i, x),
            FeatureTransform::Power(t) => t.transform(i, x),
        }
    }

    pub fn n_features(&self) -> usize {
        match self {
            FeatureTransform::Quantile(t) => t.n_features,
            FeatureTransform::Power(t) => t.n_features,
        }
    }

    /// `feature_names_in_`, when it was fitted on a DataFrame.
    pub fn feature_names(&self) -> Option<&[String]> {
        match self {
            FeatureTransform::Quantile(t) => t.feature_names.as_deref(),
            FeatureTransform::Power(t) => t.feature_names.as_deref(),
        }
    }

    /// What it is, in scikit-learn's words: `QuantileTransformer(output_distribution='normal')`.
    pub fn describe(&self) -> String {
        match self {
            FeatureTransform::Quantile(t) => format!("QuantileTransformer(output_distribution='{}')", t.output.name()),
            FeatureTransform::Power(t) => {
                let standardize = if t.standardize.is_some() { "True" } else { "False" };
                format!("PowerTransformer(method='{}', standardize={standardize})", t.method.name())
            }
        }
    }
}

/// The BUILD state of a fitted scikit-learn object of class `class`.
fn fitted_state<'v>(value: &'v Value, class: &str) -> Result<&'v Value> {
    let Value::Object(object) = value else { data_err!("expected a {class}, got {}", value.type_name()) };
    if object.name != class || !object.module.starts_with("sklearn.") {
        data_err!("expected sklearn's {class}, got {}.{}", object.module, object.name);
    }
    object.state.as_ref().ok_or_else(|| data_error!("{class} without fitted state"))
}

/// A fitted numeric array attribute (`mean_`, `quantiles_`...), as f64 in C order, with its shape.
fn fitted_array(state: &Value, class: &str, key: &str) -> Result<(Vec<f64>, Vec<usize>)> {
    match state.get(key) {
        Some(Value::Array(a)) => Ok((a.to_f64()?, a.shape.clone())),
        other => data_err!("{class}.{key} is {} (was it fitted?)", other.map_or("missing".into(), Value::type_name)),
    }
}

/// `feature_names_in_`, present when it was fitted on a DataFrame.
fn feature_names(state: &Value) -> Result<Option<Vec<String>>> {
    match state.get("feature_names_in_") {
        Some(Value::Array(a)) => Ok(Some(a.to_strings()?)),
        _ => Ok(None),
    }
}

/// `n_features_in_`, or `fallback` (the length of a per-feature array) for older pickles.
fn n_features(state: &Value, fallback: usize) -> usize {
    state.get("n_features_in_").and_then(Value::as_i64).map_or(fallback, |n| n as usize)
}

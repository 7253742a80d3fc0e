//! scikit-learn transformers inside pickles, read as inert data: the fitted parameters that
//! reproduce `transform` exactly. Anything else is refused by class name, so a model whose saved
//! preprocessing cannot be reproduced never runs on silently different inputs.

use crate::error::{data_err, data_error, Result};

use crate::pickle::Value;

/// A fitted `sklearn.preprocessing.StandardScaler`.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardScaler {
    /// `mean_`, when `with_mean`.
    pub mean: Option<Vec<f64>>,
    /// `scale_`, when `with_std`.
    pub scale: Option<Vec<f64>>,
    /// `feature_names_in_`, when it was fitted on a DataFrame.
    pub feature_names: Option<Vec<String>>,
    pub n_features: usize,
}

impl StandardScaler {
    pub fn from_value(value: &Value) -> Result<StandardScaler> {
        let Value::Object(object) = value else { data_err!("expected a StandardScaler, got {}", value.type_name()) };
        if object.name != "StandardScaler" || !object.module.starts_with("sklearn.") {
            data_err!("expected sklearn's StandardScaler, got {}.{}", object.module, object.name);
        }
        let state = object.state.as_ref().ok_or_else(|| data_error!("StandardScaler without fitted state"))?;
        let flag = |key: &str| !matches!(state.get(key), Some(Value::Bool(false)));
        let array = |key: &str| -> Result<Vec<f64>> {
            match state.get(key) {
                Some(Value::Array(a)) => a.to_f64(),
                other => data_err!(
                    "StandardScaler.{key} is {} (was the scaler fitted?)",
                    other.map_or("missing".into(), Value::type_name)
                ),
            }
        };
        let mean = if flag("with_mean") { Some(array("mean_")?) } else { None };
        let scale = if flag("with_std") { Some(array("scale_")?) } else { None };
        let feature_names = match state.get("feature_names_in_") {
            Some(Value::Array(a)) => Some(a.to_strings()?),
            _ => None,
        };
        let n_features = state
            .get("n_features_in_")
            .and_then(Value::as_i64)
            .map(|n| n as usize)
            .or_else(|| mean.as_ref().or(scale.as_ref()).map(Vec::len))
            .unwrap_or(0);
        for (name, values) in [("mean_", &mean), ("scale_", &scale)] {
            if let Some(values) = values {
                if values.len() != n_features {
                    data_err!("StandardScaler.{name} has {} values for {n_features} features", values.len());
                }
            }
        }
        Ok(StandardScaler { mean, scale, feature_names, n_features })
    }

    /// `transform` of one value of feature `i`, in float64 as scikit-learn computes it.
    pub fn transform(&self, i: usize, x: f64) -> f64 {
        let centred = match &self.mean {
            Some(mean) => x - mean[i],
            None => x,
        };
        match &self.scale {
            Some(scale) => centred / scale[i],
            None => centred,
        }
    }
}

//! `sklearn.preprocessing.StandardScaler`: `(x - mean_) / scale_`, in float64.

use super::{feature_names, fitted_array, fitted_state, n_features};
use crate::error::{data_err, Result};
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
        const CLASS: &str = "StandardScaler";
        let state = fitted_state(value, CLASS)?;
        let flag = |key: &str| !matches!(state.get(key), Some(Value::Bool(false)));
        let array = |key: &str| fitted_array(state, CLASS, key).map(|(values, _)| values);
        let mean = if flag("with_mean") { Some(array("mean_")?) } else { None };
        let scale = if flag("with_std") { Some(array("scale_")?) } else { None };
        let n_features = n_features(state, mean.as_ref().or(scale.as_ref()).map_or(0, Vec::len));
        for (name, values) in [("mean_", &mean), ("scale_", &scale)] {
            if let Some(values) = values {
                if values.len() != n_features {
                    data_err!("StandardScaler.{name} has {} values for {n_features} features", values.len());
                }
            }
        }
        Ok(StandardScaler { mean, scale, feature_names: feature_names(state)?, n_features })
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

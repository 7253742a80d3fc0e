//! `sklearn.preprocessing.StandardScaler`: `(x - mean_) / scale_`, in float64; `RobustScaler`,
//! of the same form, is read into it.

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
        Self::affine(value, "StandardScaler", [("with_mean", "mean_"), ("with_std", "scale_")])
    }

    /// A fitted `RobustScaler`, whose `transform` has the same form: `(x - center_) / scale_`,
    /// each when `with_centering` / `with_scaling`.
    pub fn from_robust_scaler(value: &Value) -> Result<StandardScaler> {
        Self::affine(value, "RobustScaler", [("with_centering", "center_"), ("with_scaling", "scale_")])
    }

    /// A scaler `class` whose center and scale are the arrays `keys`, each present when its flag
    /// is not False.
    fn affine(value: &Value, class: &str, keys: [(&str, &str); 2]) -> Result<StandardScaler> {
        let state = fitted_state(value, class)?;
        let part = |(flag, key): (&str, &str)| match state.get(flag) {
            Some(Value::Bool(false)) => Ok(None),
            _ => fitted_array(state, class, key).map(|(values, _)| Some(values)),
        };
        let (mean, scale) = (part(keys[0])?, part(keys[1])?);
        let n_features = n_features(state, mean.as_ref().or(scale.as_ref()).map_or(0, Vec::len));
        for ((_, name), values) in keys.iter().zip([&mean, &scale]) {
            if let Some(values) = values {
                if values.len() != n_features {
                    data_err!("{class}.{name} has {} values for {n_features} features", values.len());
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

//! `sklearn.preprocessing.PowerTransformer`: Yeo-Johnson or Box-Cox with each feature's fitted
//! lambda, then, when `standardize`, its fitted StandardScaler.

use super::math::{boxcox, yeojohnson};
use super::{feature_names, fitted_array, fitted_state, n_features, Refused, StandardScaler};
use crate::error::{data_err, data_error, Result};
use crate::pickle::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerMethod {
    YeoJohnson,
    BoxCox,
}

impl PowerMethod {
    pub fn name(self) -> &'static str {
        match self {
            PowerMethod::YeoJohnson => "yeo-johnson",
            PowerMethod::BoxCox => "box-cox",
        }
    }
}

/// A fitted `sklearn.preprocessing.PowerTransformer`.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerTransformer {
    pub method: PowerMethod,
    pub lambdas: Vec<f64>,
    /// The scaler fitted on the transformed values, when `standardize`.
    pub standardize: Option<StandardScaler>,
    pub feature_names: Option<Vec<String>>,
    pub n_features: usize,
}

impl PowerTransformer {
    pub fn from_value(value: &Value) -> Result<PowerTransformer> {
        const CLASS: &str = "PowerTransformer";
        let state = fitted_state(value, CLASS)?;
        let method = match state.get("method").and_then(Value::as_str) {
            Some("yeo-johnson") => PowerMethod::YeoJohnson,
            Some("box-cox") => PowerMethod::BoxCox,
            other => data_err!("PowerTransformer.method is {other:?}, not 'yeo-johnson' or 'box-cox'"),
        };
        let (lambdas, _) = fitted_array(state, CLASS, "lambdas_")?;
        let n_features = n_features(state, lambdas.len());
        if lambdas.len() != n_features {
            data_err!("PowerTransformer.lambdas_ has {} values for {n_features} features", lambdas.len());
        }
        let standardize = match state.get("standardize") {
            Some(Value::Bool(false)) => None,
            _ => {
                let scaler = state
                    .get("_scaler")
                    .ok_or_else(|| data_error!("PowerTransformer standardizes, but holds no fitted _scaler"))?;
                let scaler = StandardScaler::from_value(scaler)?;
                if scaler.n_features != n_features {
                    data_err!("PowerTransformer._scaler has {} features for {n_features}", scaler.n_features);
                }
                Some(scaler)
            }
        };
        Ok(PowerTransformer { method, lambdas, standardize, feature_names: feature_names(state)?, n_features })
    }

    /// `transform` of one value of feature `i`; NaN stays NaN.
    pub fn transform(&self, i: usize, x: f64) -> std::result::Result<f64, Refused> {
        if x.is_infinite() {
            return Err(Refused::Infinite);
        }
        let y = match self.method {
            PowerMethod::BoxCox if x <= 0.0 => return Err(Refused::NotPositive),
            PowerMethod::BoxCox => boxcox(x, self.lambdas[i]),
            PowerMethod::YeoJohnson => yeojohnson(x, self.lambdas[i]),
        };
        Ok(match &self.standardize {
            Some(scaler) => scaler.transform(i, y),
            None => y,
        })
    }
}

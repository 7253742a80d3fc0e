//! `sklearn.preprocessing.QuantileTransformer`: each feature through its fitted quantiles to a
//! uniform value in [0, 1], then, for normal output, through the normal distribution's inverse.

use std::sync::LazyLock;

use super::math::{interp, ndtri};
use super::{feature_names, fitted_array, fitted_state, n_features, Refused};
use crate::error::{data_err, Result};
use crate::pickle::Value;

/// How far inside the fitted range a value must lie, for normal output, not to be clipped
/// (scikit-learn's `BOUNDS_THRESHOLD`).
const BOUNDS_THRESHOLD: f64 = 1e-7;

/// What normal output is clipped to: the threshold's images under `ndtri`, as scikit-learn
/// computes them (once here, not per value).
static NORMAL_CLIP: LazyLock<(f64, f64)> =
    LazyLock::new(|| (ndtri(BOUNDS_THRESHOLD - f64::EPSILON), ndtri(1.0 - (BOUNDS_THRESHOLD - f64::EPSILON))));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputDistribution {
    Uniform,
    Normal,
}

impl OutputDistribution {
    pub fn name(self) -> &'static str {
        match self {
            OutputDistribution::Uniform => "uniform",
            OutputDistribution::Normal => "normal",
        }
    }
}

/// One feature's fitted quantiles against the shared references, and both read backwards and
/// negated, for the interpolation from the other side.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileColumn {
    quantiles: Vec<f64>,
    references: Vec<f64>,
    negated_quantiles: Vec<f64>,
    negated_references: Vec<f64>,
}

impl QuantileColumn {
    /// `quantiles` ascending (ties allowed) and `references` of the same length.
    pub fn new(quantiles: Vec<f64>, references: Vec<f64>) -> QuantileColumn {
        assert_eq!(quantiles.len(), references.len(), "one reference per quantile");
        assert!(!quantiles.is_empty(), "at least one quantile");
        let negated = |v: &[f64]| v.iter().rev().map(|x| -x).collect();
        QuantileColumn {
            negated_quantiles: negated(&quantiles),
            negated_references: negated(&references),
            quantiles,
            references,
        }
    }

    pub fn quantiles(&self) -> &[f64] {
        &self.quantiles
    }

    /// The uniform output for `x` (not NaN): interpolated from below and from above and
    /// averaged, so that a run of tied quantiles maps to its middle; the fitted minimum and
    /// maximum map to exactly 0 and 1.
    pub fn uniform(&self, x: f64) -> f64 {
        let (q, last) = (&self.quantiles, self.quantiles.len() - 1);
        // scikit-learn sets the upper bound first, so the lower one wins where both hold
        if x == q[0] {
            return 0.0;
        }
        if x == q[last] {
            return 1.0;
        }
        self.interpolated(x)
    }

    /// The normal output for `x` (not NaN): values within `BOUNDS_THRESHOLD` of the fitted range's
    /// ends (or beyond) become its ends, and `ndtri`'s result is clipped to what the threshold
    /// maps to, so no value becomes infinite.
    pub fn normal(&self, x: f64) -> f64 {
        let (q, last) = (&self.quantiles, self.quantiles.len() - 1);
        let u = if x - BOUNDS_THRESHOLD < q[0] {
            0.0
        } else if x + BOUNDS_THRESHOLD > q[last] {
            1.0
        } else {
            self.interpolated(x)
        };
        let (clip_min, clip_max) = *NORMAL_CLIP;
        // np.clip: the lower bound first, then the upper
        ndtri(u).max(clip_min).min(clip_max)
    }

    fn interpolated(&self, x: f64) -> f64 {
        0.5 * (interp(x, &self.quantiles, &self.references)
            - interp(-x, &self.negated_quantiles, &self.negated_references))
    }
}

/// Ascending with ties allowed, and no NaN.
fn ascending(values: &[f64]) -> bool {
    values.windows(2).all(|w| w[0] <= w[1]) && !values.iter().any(|v| v.is_nan())
}

/// A fitted `sklearn.preprocessing.QuantileTransformer` (dense input).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantileTransformer {
    pub output: OutputDistribution,
    pub columns: Vec<QuantileColumn>,
    pub feature_names: Option<Vec<String>>,
    pub n_features: usize,
}

impl QuantileTransformer {
    pub fn from_value(value: &Value) -> Result<QuantileTransformer> {
        const CLASS: &str = "QuantileTransformer";
        let state = fitted_state(value, CLASS)?;
        let output = match state.get("output_distribution").and_then(Value::as_str) {
            Some("uniform") => OutputDistribution::Uniform,
            Some("normal") => OutputDistribution::Normal,
            other => data_err!("QuantileTransformer.output_distribution is {other:?}, not 'uniform' or 'normal'"),
        };
        let (references, _) = fitted_array(state, CLASS, "references_")?;
        let (quantiles, shape) = fitted_array(state, CLASS, "quantiles_")?;
        let [rows, features] = shape[..] else {
            data_err!("QuantileTransformer.quantiles_ has shape {shape:?}, not (quantiles, features)")
        };
        if quantiles.len() != rows * features {
            data_err!("QuantileTransformer.quantiles_ holds {} values for shape {shape:?}", quantiles.len());
        }
        if rows != references.len() || rows == 0 {
            data_err!("QuantileTransformer.quantiles_ has {rows} rows for {} references", references.len());
        }
        if !ascending(&references) {
            data_err!("QuantileTransformer.references_ are not ascending");
        }
        let columns = (0..features)
            .map(|f| {
                let column: Vec<f64> = (0..rows).map(|r| quantiles[r * features + f]).collect();
                // fit() makes them ascending (np.maximum.accumulate); interpolation needs it
                if !ascending(&column) {
                    data_err!("QuantileTransformer.quantiles_ of feature {f} are not ascending");
                }
                Ok(QuantileColumn::new(column, references.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        let n_features = n_features(state, features);
        if n_features != features {
            data_err!("QuantileTransformer.quantiles_ has {features} columns for {n_features} features");
        }
        Ok(QuantileTransformer { output, columns, feature_names: feature_names(state)?, n_features })
    }

    /// `transform` of one value of feature `i`; NaN stays NaN.
    pub fn transform(&self, i: usize, x: f64) -> std::result::Result<f64, Refused> {
        if x.is_infinite() {
            return Err(Refused::Infinite);
        }
        if x.is_nan() {
            return Ok(x);
        }
        Ok(match self.output {
            OutputDistribution::Uniform => self.columns[i].uniform(x),
            OutputDistribution::Normal => self.columns[i].normal(x),
        })
    }
}

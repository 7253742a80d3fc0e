//! pytorch-forecasting's target normalisers, read from the checkpoint as data and applied as
//! its `TimeSeriesDataSet` applies them to the target it feeds DeepAR:
//!
//! - `TorchNormalizer` (DeepTune's): one fitted center and scale;
//! - `GroupNormalizer` (the library's default for short windows): a fitted center and scale over
//!   all rows, or per series (its `groups`, looked up by the series' category codes; with
//!   `scale_by_group`, the geometric mean of each column's);
//! - `EncoderNormalizer` (the default for windows over 20): fitted afresh on each window's
//!   encoder targets, in float32, at prediction time.
//!
//! Each may first transform the target (`log`, `log1p`, `logit`, `count`, `softplus`, `relu`,
//! `sqrt`). The fitted ones work in float64 on the float64 target (pandas), the per-window one in
//! float32 on the float32 target tensor, as pytorch-forecasting does. A value the transformation
//! is not defined for (log of a negative number) fails its row.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use deepembed_sdk::checkpoint::pandas::{DataFrame, PyKey};
use deepembed_sdk::checkpoint::Value;

use crate::saved::Categorical;

/// `TorchNormalizer.TRANSFORMATIONS`' forward functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transformation {
    Log,
    Log1p,
    Logit,
    Count,
    Softplus,
    Relu,
    Sqrt,
}

/// What the network's target input is made of.
#[derive(Debug, Clone)]
pub enum TargetNormaliser {
    /// `(transform(y) - center) / scale` in float64, with a center and scale fitted in training.
    Fitted { transformation: Option<Transformation>, scales: Scales },
    /// `EncoderNormalizer`: fitted on each window.
    PerWindow(EncoderNormaliser),
}

/// A fitted normaliser's centers and scales.
#[derive(Debug, Clone)]
pub enum Scales {
    Global { center: f64, scale: f64 },
    ByGroup(GroupScales),
}

/// A `GroupNormalizer`'s centers and scales by series: keyed by the category codes of its
/// `groups` columns (which pytorch-forecasting codes with the dataset's `NaNLabelEncoder`s).
#[derive(Debug, Clone)]
pub struct GroupScales {
    /// The normaliser's columns, in its order, with their encoders.
    pub columns: Vec<Categorical>,
    table: GroupTable,
}

#[derive(Debug, Clone)]
enum GroupTable {
    /// One row per combination of codes (`norm_` indexed by all columns).
    Joint(ScaleTable),
    /// `scale_by_group`: a table per column; a series' center and scale are the products over
    /// the columns, to the power `1 / columns`.
    PerColumn(Vec<ScaleTable>),
}

/// Fitted `(center, scale)` by index label, and `missing_` (the medians) for a label training
/// never saw.
#[derive(Debug, Clone)]
struct ScaleTable {
    rows: HashMap<PyKey, (f64, f64)>,
    missing: (f64, f64),
}

impl ScaleTable {
    fn get(&self, key: &PyKey) -> (f64, f64) {
        self.rows.get(key).copied().unwrap_or(self.missing)
    }
}

/// An `EncoderNormalizer`'s settings.
#[derive(Debug, Clone)]
pub struct EncoderNormaliser {
    pub transformation: Option<Transformation>,
    method: Method,
    center: bool,
    /// `max_length`: how many of the last encoder steps the center and the scale are fitted on
    /// (`None`: all).
    center_steps: Option<usize>,
    scale_steps: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    Standard,
    /// Quantiles `lower`, `center`, `upper`: center the middle one, scale half the spread.
    Robust {
        lower: f64,
        center: f64,
        upper: f64,
    },
    Identity,
}

impl Transformation {
    fn from_name(name: &str) -> Option<Transformation> {
        Some(match name {
            "log" => Transformation::Log,
            "log1p" => Transformation::Log1p,
            "logit" => Transformation::Logit,
            "count" => Transformation::Count,
            "softplus" => Transformation::Softplus,
            "relu" => Transformation::Relu,
            "sqrt" => Transformation::Sqrt,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Transformation::Log => "log",
            Transformation::Log1p => "log1p",
            Transformation::Logit => "logit",
            Transformation::Count => "count",
            Transformation::Softplus => "softplus",
            Transformation::Relu => "relu",
            Transformation::Sqrt => "sqrt",
        }
    }
}

/// The forward transformations in one float type, as torch computes them in that type.
trait Float:
    Copy + PartialOrd + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Neg<Output = Self>
{
    const EPS: Self;
    const ONE: Self;
    const TWENTY: Self;
    /// `-1 / eps`: where `_clipped_log` clips.
    const MIN_LOG: Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn exp_m1(self) -> Self;
    fn sqrt(self) -> Self;
}

macro_rules! float {
    ($t:ident) => {
        impl Float for $t {
            const EPS: $t = $t::EPSILON;
            const ONE: $t = 1.0;
            const TWENTY: $t = 20.0;
            const MIN_LOG: $t = -1.0 / $t::EPSILON;
            fn ln(self) -> $t {
                $t::ln(self)
            }
            fn ln_1p(self) -> $t {
                $t::ln_1p(self)
            }
            fn exp_m1(self) -> $t {
                $t::exp_m1(self)
            }
            fn sqrt(self) -> $t {
                $t::sqrt(self)
            }
        }
    };
}

float!(f32);
float!(f64);

impl Transformation {
    fn forward<F: Float>(self, y: F) -> F {
        match self {
            // `_clipped_log`: log(0) = -inf is clipped to -1/eps; NaN stays NaN.
            Transformation::Log => {
                let l = y.ln();
                if l < F::MIN_LOG {
                    F::MIN_LOG
                } else {
                    l
                }
            }
            Transformation::Log1p => y.ln_1p(),
            // `_clipped_logit`: clamp to [eps, 1 - eps], then log(x) - log1p(-x).
            Transformation::Logit => {
                let x = if y < F::EPS {
                    F::EPS
                } else if y > F::ONE - F::EPS {
                    F::ONE - F::EPS
                } else {
                    y
                };
                x.ln() - (-x).ln_1p()
            }
            Transformation::Count => y + F::ONE,
            // `softplus_inv`: y where y > 20, else y + log(-expm1(-(y + eps))).
            Transformation::Softplus => {
                if y > F::TWENTY {
                    y
                } else {
                    y + (-(-(y + F::EPS)).exp_m1()).ln()
                }
            }
            Transformation::Relu => y,
            Transformation::Sqrt => y.sqrt(),
        }
    }
}

/// Applies an optional transformation; `Err` names it when the value is outside its domain.
fn transformed<F: Float + Into<f64>>(transformation: Option<Transformation>, y: F) -> Result<F, String> {
    let Some(t) = transformation else { return Ok(y) };
    let out = t.forward(y);
    if out.into().is_finite() {
        Ok(out)
    } else {
        Err(format!(
            "target {} is outside the domain of the checkpoint's target transformation '{}'",
            y.into(),
            t.name()
        ))
    }
}

impl TargetNormaliser {
    /// Reads `dataset_parameters["target_normalizer"]`; `encoder` gives the dataset's
    /// `NaNLabelEncoder` of a column (a `GroupNormalizer`'s table is keyed by their codes).
    pub fn from_value(
        value: &Value,
        path: &Path,
        encoder: impl Fn(&str) -> Result<Categorical>,
    ) -> Result<TargetNormaliser> {
        let Value::Object(object) = value else {
            bail!(
                "{}: the target normaliser is {}, not a pytorch-forecasting normaliser",
                path.display(),
                value.type_name()
            );
        };
        let class = object.name.as_str();
        if !object.module.starts_with("pytorch_forecasting.") {
            bail!(
                "{}: the target normaliser is {}.{}, not a pytorch-forecasting normaliser",
                path.display(),
                object.module,
                class
            );
        }
        let state = object.state.as_ref().ok_or_else(|| anyhow!("{}: the {class} has no state", path.display()))?;
        let what = |key: &str| format!("{}: the {class}'s {key}", path.display());
        let transformation = match state.get("transformation") {
            None | Some(Value::None) => None,
            Some(Value::Str(name)) => Some(Transformation::from_name(name).ok_or_else(|| {
                anyhow!(
                    "{} '{name}' is not one of pytorch-forecasting's (log, log1p, logit, count, softplus, relu, sqrt)",
                    what("transformation")
                )
            })?),
            Some(other) => bail!(
                "{} is {}: a custom transformation holds functions, which deepembed does not run",
                what("transformation"),
                other.type_name()
            ),
        };
        let number = |value: Option<&Value>, key: &str| {
            value
                .and_then(Value::as_f64)
                .ok_or_else(|| anyhow!("{} is missing or not a number (was it fitted?)", what(key)))
        };
        match class {
            "TorchNormalizer" => Ok(TargetNormaliser::Fitted {
                transformation,
                scales: Scales::Global {
                    center: number(state.get("center_"), "center_")?,
                    scale: number(state.get("scale_"), "scale_")?,
                },
            }),
            "GroupNormalizer" => {
                let norm = state.get("norm_").ok_or_else(|| anyhow!("{} is missing (was it fitted?)", what("norm_")))?;
                let groups = string_list(state.get("_groups").or_else(|| state.get("groups")));
                let scales = if groups.is_empty() {
                    Scales::Global { center: number(norm.get("center"), "norm_ center")?, scale: number(norm.get("scale"), "norm_ scale")? }
                } else {
                    let missing = state.get("missing_").ok_or_else(|| anyhow!("{} is missing", what("missing_")))?;
                    let table = if matches!(state.get("scale_by_group"), Some(Value::Bool(true))) {
                        let per_column = groups
                            .iter()
                            .map(|g| {
                                let frame = norm.get(g).ok_or_else(|| anyhow!("{} has no table for '{g}'", what("norm_")))?;
                                let medians = missing.get(g).ok_or_else(|| anyhow!("{} has no medians for '{g}'", what("missing_")))?;
                                Ok(ScaleTable {
                                    rows: scale_rows(frame, &what("norm_"))?,
                                    missing: center_scale(medians, &what("missing_"))?,
                                })
                            })
                            .collect::<Result<_>>()?;
                        GroupTable::PerColumn(per_column)
                    } else {
                        GroupTable::Joint(ScaleTable {
                            rows: scale_rows(norm, &what("norm_"))?,
                            missing: center_scale(missing, &what("missing_"))?,
                        })
                    };
                    let columns = groups.iter().map(|g| encoder(g)).collect::<Result<_>>()?;
                    Scales::ByGroup(GroupScales { columns, table })
                };
                Ok(TargetNormaliser::Fitted { transformation, scales })
            }
            "EncoderNormalizer" => {
                let method = method(state, &what("method"))?;
                let center = !matches!(state.get("center"), Some(Value::Bool(false)));
                let steps = |v: &Value| {
                    v.as_i64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| anyhow!("{} holds {}, not a length", what("max_length"), v.type_name()))
                };
                // `slice(-n, None)` of the encoder: 0 keeps it all, like None.
                let last = |n: usize| (n > 0).then_some(n);
                let (center_steps, scale_steps) = match state.get("max_length") {
                    None | Some(Value::None) => (None, None),
                    Some(Value::List(v) | Value::Tuple(v)) if v.len() == 2 => (last(steps(&v[0])?), last(steps(&v[1])?)),
                    Some(v) => {
                        let n = last(steps(v)?);
                        (n, n)
                    }
                };
                Ok(TargetNormaliser::PerWindow(EncoderNormaliser { transformation, method, center, center_steps, scale_steps }))
            }
            "MultiNormalizer" => bail!("{}: a MultiNormalizer normalises several targets; deepembed reads single-target DeepAR models", path.display()),
            other => bail!(
                "{}: the target normaliser is {}.{other}; deepembed reproduces TorchNormalizer, GroupNormalizer and EncoderNormalizer",
                path.display(),
                object.module
            ),
        }
    }

    pub fn transformation(&self) -> Option<Transformation> {
        match self {
            TargetNormaliser::Fitted { transformation, .. } => *transformation,
            TargetNormaliser::PerWindow(e) => e.transformation,
        }
    }

    /// Checks a raw target value against the transformation, in the precision it is applied in.
    pub fn check(&self, y: f64) -> Result<(), String> {
        match self {
            TargetNormaliser::Fitted { transformation, .. } => transformed(*transformation, y).map(drop),
            TargetNormaliser::PerWindow(e) => transformed(e.transformation, y as f32).map(drop),
        }
    }
}

/// `(transform(y) - center) / scale` in float64, held as float32: a fitted normaliser's input.
pub fn fitted_input(
    transformation: Option<Transformation>,
    (center, scale): (f64, f64),
    y: f64,
) -> Result<f32, String> {
    Ok(((transformed(transformation, y)? - center) / scale) as f32)
}

impl GroupScales {
    /// A series' center and scale from its values in the normaliser's columns; `Err` for a
    /// value their encoders have no code for (pytorch-forecasting fails then too).
    pub fn lookup(&self, values: &[Option<&str>]) -> Result<(f64, f64), String> {
        let codes = self.columns.iter().zip(values).map(|(c, v)| c.code_of(*v)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.by_codes(&codes))
    }

    fn by_codes(&self, codes: &[i64]) -> (f64, f64) {
        match &self.table {
            GroupTable::Joint(table) => table.get(&match codes {
                [one] => PyKey::Int(*one),
                many => PyKey::Tuple(many.iter().map(|&c| PyKey::Int(c)).collect()),
            }),
            GroupTable::PerColumn(columns) => {
                let (mut center, mut scale) = (1.0f64, 1.0f64);
                for (table, &code) in columns.iter().zip(codes) {
                    let (c, s) = table.get(&PyKey::Int(code));
                    center *= c;
                    scale *= s;
                }
                let root = 1.0 / columns.len() as f64;
                (center.powf(root), scale.powf(root))
            }
        }
    }
}

/// An `EncoderNormalizer` fitted on one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowFit {
    /// The normalised encoder targets.
    pub inputs: Vec<f32>,
    pub center: f32,
    pub scale: f32,
}

impl EncoderNormaliser {
    /// A window's target inputs: `encoder` (the raw float32 targets of its encoder steps, gaps
    /// filled) fitted on and normalised, as `EncoderNormalizer.fit` then `.transform` do them.
    /// Every value has passed [`TargetNormaliser::check`].
    pub fn normalise(&self, encoder: &[f32]) -> WindowFit {
        let y: Vec<f32> = encoder.iter().map(|&v| self.transformation.map_or(v, |t| t.forward(v))).collect();
        let tail = |n: Option<usize>| &y[y.len() - n.unwrap_or(y.len()).min(y.len())..];
        let (for_center, for_scale) = (tail(self.center_steps), tail(self.scale_steps));
        let (mut center, scale) = match self.method {
            Method::Identity => (0.0f32, 1.0f32),
            Method::Standard => (mean(for_center), std(for_scale) + f32::EPSILON),
            Method::Robust { lower, center, upper } => (
                quantile(for_center, center),
                (quantile(for_scale, upper) - quantile(for_scale, lower)) / 2.0 + f32::EPSILON,
            ),
        };
        if !self.center {
            center = 0.0;
        }
        WindowFit { inputs: y.iter().map(|&v| (v - center) / scale).collect(), center, scale }
    }
}

/// `torch.mean` of float32 values: summed in higher precision here, rounded once.
fn mean(y: &[f32]) -> f32 {
    (y.iter().map(|&v| f64::from(v)).sum::<f64>() / y.len() as f64) as f32
}

/// `torch.std` (with Bessel's correction) of float32 values, which libtorch accumulates in
/// float64: two passes in float64, rounded once.
fn std(y: &[f32]) -> f32 {
    let n = y.len() as f64;
    let mean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let squares: f64 = y.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum();
    (squares / (n - 1.0)).sqrt() as f32
}

/// `torch.quantile(y, q)` (linear interpolation) in float32, `q` held as float32 as torch takes it.
fn quantile(y: &[f32], q: f64) -> f32 {
    let mut sorted = y.to_vec();
    sorted.sort_by(f32::total_cmp);
    let rank = q as f32 * (sorted.len() - 1) as f32;
    let below = rank.floor();
    let weight = rank - below;
    let (start, end) = (sorted[below as usize], sorted[rank.ceil() as usize]);
    // torch.lerp, which is exact at both ends.
    if weight < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

fn method(state: &Value, what: &str) -> Result<Method> {
    let kwargs = state.get("_method_kwargs").or_else(|| state.get("method_kwargs"));
    let quantile = |key: &str, default: f64| match kwargs.and_then(|k| k.get(key)) {
        None | Some(Value::None) => Ok(default),
        Some(v) => v.as_f64().ok_or_else(|| anyhow!("{what}_kwargs['{key}'] is {}, not a number", v.type_name())),
    };
    match state.get("method").and_then(Value::as_str).unwrap_or("standard") {
        "standard" => Ok(Method::Standard),
        "identity" => Ok(Method::Identity),
        "robust" => Ok(Method::Robust {
            lower: quantile("lower", 0.25)?,
            center: quantile("center", 0.5)?,
            upper: quantile("upper", 0.75)?,
        }),
        other => bail!("{what} '{other}' is not one of pytorch-forecasting's (standard, robust, identity)"),
    }
}

/// A fitted `norm_` table (a DataFrame of `center` and `scale` indexed by codes) by index label.
fn scale_rows(frame: &Value, what: &str) -> Result<HashMap<PyKey, (f64, f64)>> {
    let frame = DataFrame::from_value(frame).map_err(|e| anyhow!("{what}: {e}"))?;
    let column = |name: &str| frame.column(name).ok_or_else(|| anyhow!("{what} has no '{name}' column"));
    let (centers, scales) = (column("center")?, column("scale")?);
    let mut rows = HashMap::with_capacity(centers.len());
    for ((label, c), s) in frame.index.values.iter().zip(centers).zip(scales) {
        let key = PyKey::of(label).ok_or_else(|| anyhow!("{what}: index label {label:?} is not a code"))?;
        let (Some(c), Some(s)) = (c.as_f64(), s.as_f64()) else {
            bail!("{what}: the row {label:?} holds {} and {}, not numbers", c.type_name(), s.type_name());
        };
        rows.entry(key).or_insert((c, s));
    }
    Ok(rows)
}

/// A `{"center": ..., "scale": ...}` dict.
fn center_scale(value: &Value, what: &str) -> Result<(f64, f64)> {
    let number =
        |key: &str| value.get(key).and_then(Value::as_f64).ok_or_else(|| anyhow!("{what} has no number '{key}'"));
    Ok((number("center")?, number("scale")?))
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::List(items) | Value::Tuple(items)) => {
            items.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoder(method: Method, center: bool, steps: (Option<usize>, Option<usize>)) -> EncoderNormaliser {
        EncoderNormaliser { transformation: None, method, center, center_steps: steps.0, scale_steps: steps.1 }
    }

    #[test]
    fn transformations_clip_as_pytorch_forecasting_does() {
        assert_eq!(Transformation::Log.forward(0.0f32), -1.0 / f32::EPSILON);
        assert_eq!(Transformation::Log.forward(0.0f64), -1.0 / f64::EPSILON);
        assert!(Transformation::Log.forward(-1.0f64).is_nan());
        // logit clamps into (0, 1)
        assert_eq!(Transformation::Logit.forward(0.0f64), Transformation::Logit.forward(f64::EPSILON));
        assert!(Transformation::Logit.forward(2.0f32).is_finite());
        // softplus_inv is the identity above 20 and inverts softplus below
        assert_eq!(Transformation::Softplus.forward(25.0f64), 25.0);
        let y = 1.5f64;
        assert!((Transformation::Softplus.forward(y).exp().ln_1p() - y).abs() < 1e-12);
        assert!(transformed(Some(Transformation::Sqrt), -4.0f64).unwrap_err().contains("'sqrt'"));
        assert_eq!(transformed(None, -4.0f64), Ok(-4.0));
    }

    #[test]
    fn encoder_windows_are_fitted_on_their_own_tail() {
        let sample_sd = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt() + f64::from(f32::EPSILON)
        };
        let y = [1.0f32, 2.0, 4.0, 8.0];
        let close = |a: f32, b: f64| (f64::from(a) - b).abs() < 1e-6 * b.abs().max(1.0);
        // standard: mean 3.75, sample standard deviation of all four
        let out = encoder(Method::Standard, true, (None, None)).normalise(&y).inputs;
        assert!(close(out[0], (1.0 - 3.75) / sample_sd(&[1.0, 2.0, 4.0, 8.0])), "{out:?}");
        // center from the last 2 (6.0), scale from the last 3
        let out = encoder(Method::Standard, true, (Some(2), Some(3))).normalise(&y).inputs;
        assert!(close(out[3], 2.0 / sample_sd(&[2.0, 4.0, 8.0])), "{out:?}");
        let out = encoder(Method::Identity, true, (None, None)).normalise(&y).inputs;
        assert_eq!(out, y);
        // uncentred: the scale alone
        let out = encoder(Method::Standard, false, (None, None)).normalise(&y).inputs;
        assert!(close(out[0], 1.0 / sample_sd(&[1.0, 2.0, 4.0, 8.0])), "{out:?}");
    }

    #[test]
    fn quantiles_interpolate_as_torch_does() {
        let y = [4.0f32, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&y, 0.5), 2.5);
        assert_eq!(quantile(&y, 0.0), 1.0);
        assert_eq!(quantile(&y, 1.0), 4.0);
        assert_eq!(quantile(&y, 0.25), 1.75);
        let robust = encoder(Method::Robust { lower: 0.25, center: 0.5, upper: 0.75 }, true, (None, None));
        let out = robust.normalise(&y).inputs;
        assert_eq!(out[1], (1.0 - 2.5) / ((3.25 - 1.75) / 2.0 + f32::EPSILON));
    }

    #[test]
    fn group_scales_fall_back_to_the_medians() {
        let rows = HashMap::from([
            (PyKey::Int(0), (1.0, 2.0)),
            (PyKey::Tuple(vec![PyKey::Int(0), PyKey::Int(1)]), (3.0, 4.0)),
        ]);
        let joint = GroupScales {
            columns: vec![],
            table: GroupTable::Joint(ScaleTable { rows: rows.clone(), missing: (9.0, 9.0) }),
        };
        assert_eq!(joint.by_codes(&[0, 1]), (3.0, 4.0));
        assert_eq!(joint.by_codes(&[1, 1]), (9.0, 9.0));
        let single =
            GroupScales { columns: vec![], table: GroupTable::Joint(ScaleTable { rows, missing: (9.0, 9.0) }) };
        assert_eq!(single.by_codes(&[0]), (1.0, 2.0));
        let per_column = GroupScales {
            columns: vec![],
            table: GroupTable::PerColumn(vec![
                ScaleTable { rows: HashMap::from([(PyKey::Int(0), (2.0, 4.0))]), missing: (1.0, 1.0) },
                ScaleTable { rows: HashMap::from([(PyKey::Int(5), (8.0, 9.0))]), missing: (3.0, 3.0) },
            ]),
        };
        assert_eq!(per_column.by_codes(&[0, 5]), (4.0, 6.0));
        assert_eq!(per_column.by_codes(&[0, 6]), ((2.0f64 * 3.0).sqrt(), (4.0f64 * 3.0).sqrt()));
    }
}

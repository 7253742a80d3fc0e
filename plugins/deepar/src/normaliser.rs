//! pytorch-forecasting's normalisers, read from the checkpoint as data and applied as its
//! `TimeSeriesDataSet` applies them to the target it feeds DeepAR (its `target_normalizer`) and
//! to other continuous inputs (its `scalers`):
//!
//! - `TorchNormalizer` (DeepTune's): one fitted center and scale;
//! - `GroupNormalizer` (the library's default for short windows): a fitted center and scale over
//!   all rows, or per series (its `groups`, looked up by the series' values, or by their category
//!   codes when the dataset coded them; with `scale_by_group`, the geometric mean of each
//!   column's);
//! - `EncoderNormalizer` (the default for windows over 20): fitted afresh on each window's
//!   encoder steps, in float32, at prediction time.
//!
//! Each may first transform the value (`log`, `log1p`, `logit`, `count`, `softplus`, `relu`,
//! `sqrt`). The fitted ones work in float64 on float64 values (pandas), the per-window one in
//! float32 on the float32 tensor, as pytorch-forecasting does. A value the transformation is not
//! defined for (log of a negative number) fails its row.
//!
//! A window's fit can divide by a small spread, which magnifies a last-bit difference in its
//! inputs; so the per-window path takes its transformation and sums from libtorch itself, the
//! kernels pytorch-forecasting runs, and its standard deviations and quantiles in arithmetic that
//! rounds as libtorch's does.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use deepembed_sdk::checkpoint::pandas::{DataFrame, PyKey};
use deepembed_sdk::checkpoint::Value;
use tch::{Kind, Tensor};

use crate::saved::{str_list, Categorical};

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

/// How a continuous input (the target, or another) is normalised.
#[derive(Debug, Clone)]
pub enum Normaliser {
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

/// A `GroupNormalizer`'s centers and scales by series, keyed by the values of its `groups`
/// columns, or by their category codes for the columns the dataset coded (categorical inputs,
/// and the group ids when the target normaliser is a `GroupNormalizer`).
#[derive(Debug, Clone)]
pub struct GroupScales {
    /// The normaliser's columns, in its order.
    pub columns: Vec<String>,
    /// Each column's `NaNLabelEncoder`, when the table is keyed by its codes.
    encoders: Vec<Option<Categorical>>,
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
    transformation: Option<Transformation>,
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

impl Transformation {
    /// The forward transformation in float64, as torch computes it on a float64 tensor.
    fn forward(self, y: f64) -> f64 {
        let eps = f64::EPSILON;
        match self {
            // `_clipped_log`: log(0) = -inf is clipped to -1/eps; NaN stays NaN.
            Transformation::Log => {
                let l = y.ln();
                if l < -1.0 / eps {
                    -1.0 / eps
                } else {
                    l
                }
            }
            Transformation::Log1p => y.ln_1p(),
            // `_clipped_logit`: clamp to [eps, 1 - eps], then log(x) - log1p(-x).
            Transformation::Logit => {
                let x = y.clamp(eps, 1.0 - eps);
                x.ln() - (-x).ln_1p()
            }
            Transformation::Count => y + 1.0,
            // `softplus_inv`: y where y > 20, else y + log(-expm1(-(y + eps))).
            Transformation::Softplus => {
                if y > 20.0 {
                    y
                } else {
                    y + (-(-(y + eps)).exp_m1()).ln()
                }
            }
            Transformation::Relu => y,
            Transformation::Sqrt => y.sqrt(),
        }
    }
}

/// Applies an optional transformation; `Err` names it when the value is outside its domain.
fn transformed(transformation: Option<Transformation>, y: f64) -> Result<f64, String> {
    let Some(t) = transformation else { return Ok(y) };
    let out = t.forward(y);
    if out.is_finite() {
        Ok(out)
    } else {
        Err(outside(t, y))
    }
}

fn outside(t: Transformation, y: f64) -> String {
    format!("value {y} is outside the domain of the checkpoint's '{}' transformation", t.name())
}

impl Transformation {
    /// The forward transformation of a float32 tensor with libtorch's kernels, operation for
    /// operation as `TorchNormalizer.TRANSFORMATIONS` writes it.
    fn forward_tensor(self, y: &Tensor) -> Tensor {
        let eps = f64::from(f32::EPSILON);
        match self {
            Transformation::Log => y.log().clamp_min(-1.0 / eps),
            Transformation::Log1p => y.log1p(),
            Transformation::Logit => {
                let x = y.clamp(eps, 1.0 - eps);
                x.log() - x.neg().log1p()
            }
            Transformation::Count => y + 1.0,
            Transformation::Softplus => {
                let inverse = y + (y + eps).neg().expm1().neg().log();
                y.where_self(&y.gt(20.0), &inverse)
            }
            Transformation::Relu => y.shallow_clone(),
            Transformation::Sqrt => y.sqrt(),
        }
    }
}

impl Normaliser {
    /// The normaliser fitted on each window, if this is one.
    pub fn per_window(&self) -> Option<&EncoderNormaliser> {
        match self {
            Normaliser::PerWindow(normaliser) => Some(normaliser),
            Normaliser::Fitted { .. } => None,
        }
    }

    /// Reads a fitted normaliser; `role` says what it scales in messages ("the target
    /// normaliser", "the scaler of 'dose'"). `encoder` gives a column's `NaNLabelEncoder` when the
    /// dataset coded the column (a `GroupNormalizer`'s table is keyed by its codes then), `None`
    /// if not.
    pub fn from_value(
        value: &Value,
        path: &Path,
        role: &str,
        encoder: &dyn Fn(&str) -> Result<Option<Categorical>>,
    ) -> Result<Normaliser> {
        let object = match value {
            Value::Object(object) if object.module.starts_with("pytorch_forecasting.") => object,
            _ => bail!("{}: {role} is {}, not a pytorch-forecasting normaliser", path.display(), value.type_name()),
        };
        let class = object.name.as_str();
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
        match class {
            "TorchNormalizer" => Ok(Normaliser::Fitted {
                transformation,
                scales: Scales::Global {
                    center: number(state.get("center_"), &what("center_"))?,
                    scale: number(state.get("scale_"), &what("scale_"))?,
                },
            }),
            "GroupNormalizer" => {
                Ok(Normaliser::Fitted { transformation, scales: group_scales(state, &what, encoder)? })
            }
            "EncoderNormalizer" => {
                Ok(Normaliser::PerWindow(EncoderNormaliser::from_state(state, transformation, &what)?))
            }
            // A model of several targets has one at the top (see `saved::read_targets`), not here.
            "MultiNormalizer" => bail!("{}: {role} is a MultiNormalizer inside another normaliser", path.display()),
            other => bail!(
                "{}: {role} is {}.{other}; deepembed reproduces TorchNormalizer, GroupNormalizer and EncoderNormalizer",
                path.display(),
                object.module
            ),
        }
    }
}

/// A fitted `GroupNormalizer`'s centers and scales: one pair over all rows, or tables by its
/// `groups`.
fn group_scales(
    state: &Value,
    what: &dyn Fn(&str) -> String,
    encoder: &dyn Fn(&str) -> Result<Option<Categorical>>,
) -> Result<Scales> {
    let norm = state.get("norm_").ok_or_else(|| anyhow!("{} is missing (was it fitted?)", what("norm_")))?;
    let groups = str_list(state, "_groups").or_else(|| str_list(state, "groups")).unwrap_or_default();
    if groups.is_empty() {
        return Ok(Scales::Global {
            center: number(norm.get("center"), &what("norm_ center"))?,
            scale: number(norm.get("scale"), &what("norm_ scale"))?,
        });
    }
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
    let encoders = groups.iter().map(|g| encoder(g)).collect::<Result<_>>()?;
    let mut scales = GroupScales { columns: groups, encoders, table };
    scales.key_by_text();
    Ok(Scales::ByGroup(scales))
}

/// A fitted number, or why not.
fn number(value: Option<&Value>, what: &str) -> Result<f64> {
    value.and_then(Value::as_f64).ok_or_else(|| anyhow!("{what} is missing or not a number (was it fitted?)"))
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
    /// Re-keys the uncoded columns' labels by their text, which is how the input's values are
    /// read (a series id `17` is the text "17").
    fn key_by_text(&mut self) {
        fn text(key: PyKey) -> PyKey {
            match key {
                PyKey::Int(i) => PyKey::Str(i.to_string()),
                PyKey::Float(bits) => PyKey::Str(f64::from_bits(bits).to_string()),
                other => other,
            }
        }
        let uncoded: Vec<bool> = self.encoders.iter().map(Option::is_none).collect();
        let rekey = |table: &mut ScaleTable, levels: &[bool]| {
            table.rows = std::mem::take(&mut table.rows)
                .into_iter()
                .map(|(key, v)| {
                    let key = match key {
                        PyKey::Tuple(items) => PyKey::Tuple(
                            items.into_iter().zip(levels).map(|(k, &u)| if u { text(k) } else { k }).collect(),
                        ),
                        single if levels[0] => text(single),
                        single => single,
                    };
                    (key, v)
                })
                .collect();
        };
        match &mut self.table {
            GroupTable::Joint(table) => rekey(table, &uncoded),
            GroupTable::PerColumn(tables) => {
                for (table, u) in tables.iter_mut().zip(&uncoded) {
                    rekey(table, std::slice::from_ref(u));
                }
            }
        }
    }

    /// A series' center and scale from its values (as text) in the normaliser's columns; `Err`
    /// for a value their encoders have no code for (pytorch-forecasting fails then too). A value
    /// or combination training never saw takes the medians.
    pub fn lookup(&self, values: &[Option<&str>]) -> Result<(f64, f64), String> {
        let keys = self
            .encoders
            .iter()
            .zip(values)
            .map(|(encoder, v)| match encoder {
                Some(encoder) => encoder.code_of(*v).map(PyKey::Int),
                None => Ok(v.map_or(PyKey::None, |v| PyKey::Str(v.to_string()))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.by_keys(keys))
    }

    fn by_keys(&self, mut keys: Vec<PyKey>) -> (f64, f64) {
        match &self.table {
            GroupTable::Joint(table) => {
                table.get(&if keys.len() == 1 { keys.pop().expect("one key") } else { PyKey::Tuple(keys) })
            }
            GroupTable::PerColumn(columns) => {
                let (mut center, mut scale) = (1.0f64, 1.0f64);
                for (table, key) in columns.iter().zip(&keys) {
                    let (c, s) = table.get(key);
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
    pub center: f32,
    pub scale: f32,
}

impl EncoderNormaliser {
    fn from_state(
        state: &Value,
        transformation: Option<Transformation>,
        what: &dyn Fn(&str) -> String,
    ) -> Result<EncoderNormaliser> {
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
        Ok(EncoderNormaliser { transformation, method, center, center_steps, scale_steps })
    }

    /// Raw values as a window holds them: float32, transformed by libtorch; `Err` for a value
    /// outside the transformation's domain. Missing values stay NaN.
    pub fn prepare(&self, raw: &[Option<f64>]) -> Vec<Result<f32, String>> {
        let values: Vec<f32> = raw.iter().map(|v| v.map_or(f32::NAN, |v| v as f32)).collect();
        let Some(t) = self.transformation else { return values.into_iter().map(Ok).collect() };
        let out = t.forward_tensor(&Tensor::from_slice(&values));
        let out = Vec::<f32>::try_from(out).expect("a float32 vector");
        out.into_iter()
            .zip(raw)
            .map(|(y, x)| match x {
                Some(x) if !y.is_finite() => Err(outside(t, *x)),
                _ => Ok(y),
            })
            .collect()
    }

    /// `EncoderNormalizer.fit` on `y`, the prepared values of a window's encoder steps (gaps
    /// filled).
    pub fn fit(&self, y: &[f32]) -> WindowFit {
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
        WindowFit { center, scale }
    }

    /// `EncoderNormalizer.transform` of one prepared value with a window's fit.
    pub fn apply(&self, fit: &WindowFit, y: f32) -> f32 {
        (y - fit.center) / fit.scale
    }
}

/// `torch.mean` of float32 values: libtorch's own float32 sum (its order of additions depends on
/// the machine's vector width), divided by the count in float32.
fn mean(y: &[f32]) -> f32 {
    let sum = Tensor::from_slice(y).sum(Kind::Float).double_value(&[]) as f32;
    sum / y.len() as f32
}

/// `torch.std` (with Bessel's correction) of float32 values as libtorch computes it: deviations
/// from the float32 mean, squared and summed in float64, rounded once. (A float64 mean differs
/// where the spread is tiny against the level, e.g. 1e5 +- 1.)
fn std(y: &[f32]) -> f32 {
    let n = y.len() as f64;
    let mean = f64::from(mean(y));
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

/// A fitted `norm_` table (a DataFrame of `center` and `scale` indexed by the groups' codes or
/// values) by index label.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_is_libtorchs_also_for_a_small_spread_on_a_large_level() {
        // Windows like 1e5 + 0.37 * hour: a float64 mean gives other last bits than torch.std.
        let mut state = 12345u64;
        for window in 0..500 {
            let n = 3 + window % 40;
            let level = [80.0, 1e3, 1e5, 1e6][window % 4];
            let y: Vec<f32> = (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (level + ((state >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 3.0) as f32
                })
                .collect();
            let torch = Tensor::from_slice(&y).std_dim(-1, true, false).double_value(&[]) as f32;
            assert_eq!(std(&y).to_bits(), torch.to_bits(), "window {window}: {y:?}");
        }
    }

    /// Fits on `y` and normalises it, as the target's window is.
    fn normalise(normaliser: &EncoderNormaliser, y: &[f32]) -> Vec<f32> {
        let fit = normaliser.fit(y);
        y.iter().map(|&v| normaliser.apply(&fit, v)).collect()
    }

    fn ints(codes: &[i64]) -> Vec<PyKey> {
        codes.iter().map(|&c| PyKey::Int(c)).collect()
    }

    fn encoder(method: Method, center: bool, steps: (Option<usize>, Option<usize>)) -> EncoderNormaliser {
        EncoderNormaliser { transformation: None, method, center, center_steps: steps.0, scale_steps: steps.1 }
    }

    #[test]
    fn transformations_clip_as_pytorch_forecasting_does() {
        assert_eq!(Transformation::Log.forward(0.0), -1.0 / f64::EPSILON);
        assert!(Transformation::Log.forward(-1.0).is_nan());
        // logit clamps into (0, 1)
        assert_eq!(Transformation::Logit.forward(0.0), Transformation::Logit.forward(f64::EPSILON));
        assert!(Transformation::Logit.forward(2.0).is_finite());
        // softplus_inv is the identity above 20 and inverts softplus below
        assert_eq!(Transformation::Softplus.forward(25.0), 25.0);
        let y = 1.5f64;
        assert!((Transformation::Softplus.forward(y).exp().ln_1p() - y).abs() < 1e-12);
        assert!(transformed(Some(Transformation::Sqrt), -4.0).unwrap_err().contains("'sqrt'"));
        assert_eq!(transformed(None, -4.0), Ok(-4.0));
        // float32, through libtorch: log(0) clipped at -1/eps, a negative value refused
        let e = EncoderNormaliser {
            transformation: Some(Transformation::Log),
            method: Method::Identity,
            center: true,
            center_steps: None,
            scale_steps: None,
        };
        let prepared = e.prepare(&[Some(0.0), Some(1.0), Some(-2.0), None]);
        assert_eq!(prepared[0], Ok(-1.0 / f32::EPSILON));
        assert_eq!(prepared[1], Ok(0.0));
        assert!(prepared[2].as_ref().unwrap_err().contains("'log'"));
        assert!(prepared[3].as_ref().unwrap().is_nan());
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
        let out = normalise(&encoder(Method::Standard, true, (None, None)), &y);
        assert!(close(out[0], (1.0 - 3.75) / sample_sd(&[1.0, 2.0, 4.0, 8.0])), "{out:?}");
        // center from the last 2 (6.0), scale from the last 3
        let out = normalise(&encoder(Method::Standard, true, (Some(2), Some(3))), &y);
        assert!(close(out[3], 2.0 / sample_sd(&[2.0, 4.0, 8.0])), "{out:?}");
        let out = normalise(&encoder(Method::Identity, true, (None, None)), &y);
        assert_eq!(out, y);
        // uncentred: the scale alone
        let out = normalise(&encoder(Method::Standard, false, (None, None)), &y);
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
        let out = normalise(&robust, &y);
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
            encoders: vec![],
            table: GroupTable::Joint(ScaleTable { rows: rows.clone(), missing: (9.0, 9.0) }),
        };
        assert_eq!(joint.by_keys(ints(&[0, 1])), (3.0, 4.0));
        assert_eq!(joint.by_keys(ints(&[1, 1])), (9.0, 9.0));
        let single = GroupScales {
            columns: vec![],
            encoders: vec![],
            table: GroupTable::Joint(ScaleTable { rows, missing: (9.0, 9.0) }),
        };
        assert_eq!(single.by_keys(ints(&[0])), (1.0, 2.0));
        let per_column = GroupScales {
            columns: vec![],
            encoders: vec![],
            table: GroupTable::PerColumn(vec![
                ScaleTable { rows: HashMap::from([(PyKey::Int(0), (2.0, 4.0))]), missing: (1.0, 1.0) },
                ScaleTable { rows: HashMap::from([(PyKey::Int(5), (8.0, 9.0))]), missing: (3.0, 3.0) },
            ]),
        };
        assert_eq!(per_column.by_keys(ints(&[0, 5])), (4.0, 6.0));
        assert_eq!(per_column.by_keys(ints(&[0, 6])), ((2.0f64 * 3.0).sqrt(), (4.0f64 * 3.0).sqrt()));
    }

    #[test]
    fn uncoded_series_are_looked_up_by_their_text() {
        let rows = HashMap::from([(PyKey::Int(17), (1.0, 2.0)), (PyKey::Str("b".into()), (3.0, 4.0))]);
        let mut scales = GroupScales {
            columns: vec!["patient".into()],
            encoders: vec![None],
            table: GroupTable::Joint(ScaleTable { rows, missing: (9.0, 9.0) }),
        };
        scales.key_by_text();
        assert_eq!(scales.lookup(&[Some("17")]), Ok((1.0, 2.0)));
        assert_eq!(scales.lookup(&[Some("b")]), Ok((3.0, 4.0)));
        assert_eq!(scales.lookup(&[Some("c")]), Ok((9.0, 9.0)));
        assert_eq!(scales.lookup(&[None]), Ok((9.0, 9.0)));
    }
}

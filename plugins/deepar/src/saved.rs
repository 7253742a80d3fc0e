//! A pytorch-forecasting DeepAR checkpoint, read as data: the Lightning `.ckpt`'s
//! `hyper_parameters` (the network's shape and input order), its `dataset_parameters` (the fitted
//! target normaliser, see [`crate::normaliser`], scalers and category encoders of the training
//! `TimeSeriesDataSet`) and its `state_dict`. Nothing in the file is executed; what the forward
//! needs and cannot be reproduced exactly is refused by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::checkpoint::pandas::PyKey;
use deepembed_sdk::checkpoint::sklearn::StandardScaler;
use deepembed_sdk::checkpoint::{Checkpoint, StateDict, Value};

use crate::fill::ConstantFill;
use crate::normaliser::{Normaliser, Scales};

/// The recurrent cell (`cell_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Lstm,
    Gru,
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        })
    }
}

/// Where a continuous input's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum RealSource {
    /// Target `k`, normalised by its normaliser; at each step it holds the previous step's value
    /// (teacher forcing).
    Target(usize),
    /// The hourly time index itself.
    TimeIndex,
    /// An input column.
    Column(String),
    /// `add_relative_time_idx`: the step's place relative to the predicted one, over the
    /// training's `max_encoder_length` (not scaled).
    RelativeTimeIndex,
    /// `add_encoder_length`: the window's encoder length, scaled to [-1, 1] (not scaled further).
    EncoderLength,
    /// `add_target_scales`: target `k`'s normaliser's center (`<target>_center`) or scale
    /// (`<target>_scale`) for the row's series or window, standardised by its scaler.
    TargetCenter(usize),
    TargetScale(usize),
    /// `lags`: the input in slot `of` (the target or a column) `lag` rows earlier in the row's
    /// series (rows, not hours), scaled as that input is.
    Lagged {
        of: usize,
        lag: usize,
    },
}

/// One continuous input, in the network's order (`x_reals`), with its fitted scaling:
/// `(x - center) / scale` in float64. A target's scaling is its [`Normaliser`] instead
/// (here 0 and 1).
#[derive(Debug, Clone)]
pub struct Real {
    pub name: String,
    pub source: RealSource,
    pub center: f64,
    pub scale: f64,
    /// A column scaled by a pytorch-forecasting normaliser instead (center 0, scale 1 above).
    pub normaliser: Option<Normaliser>,
}

impl Real {
    pub fn scaled(&self, x: f64) -> f64 {
        (x - self.center) / self.scale
    }
}

/// One categorical input (`x_categoricals` order), or a series column, with its fitted
/// `NaNLabelEncoder`.
#[derive(Debug, Clone)]
pub struct Categorical {
    pub name: String,
    pub classes: HashMap<String, i64>,
    /// `add_nan`: unknown and missing values take code 0 instead of failing.
    pub add_nan: bool,
}

impl Categorical {
    /// A value's code: unknown or missing values fail, as `NaNLabelEncoder` does, unless it was
    /// fitted with `add_nan` (then they take code 0).
    pub fn code_of(&self, value: Option<&str>) -> Result<i64, String> {
        match (value.and_then(|v| self.classes.get(v)), self.add_nan) {
            (Some(&code), _) => Ok(code),
            (None, true) => Ok(0),
            (None, false) => {
                let mut known: Vec<&str> = self.classes.keys().map(String::as_str).collect();
                known.sort_unstable();
                let shown =
                    if known.len() > 10 { format!("{}, ...", known[..10].join(", ")) } else { known.join(", ") };
                Err(match value {
                    Some(v) => format!(
                        "column '{}': category '{v}' was not seen in training (the checkpoint's encoder knows {shown})",
                        self.name
                    ),
                    None => format!(
                        "column '{}': missing category (the checkpoint's encoder has no code for it)",
                        self.name
                    ),
                })
            }
        }
    }
}

/// One embedding table: its shape and the categorical inputs it reads: one, or a variable
/// group's columns (`variable_groups`), whose rows are summed (an `EmbeddingBag`). The tables'
/// outputs are concatenated in this order (`embedding_sizes`' order), after the continuous inputs.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub name: String,
    pub inputs: Vec<usize>,
    pub cardinality: i64,
    pub dim: i64,
}

/// The checkpoint's variable lists, which the `--static_*` / `--time_varying_*` flags are checked
/// against.
#[derive(Debug, Clone, Default)]
pub struct VariableLists {
    pub static_categoricals: Vec<String>,
    pub static_reals: Vec<String>,
    pub time_varying_known_categoricals: Vec<String>,
    pub time_varying_unknown_categoricals: Vec<String>,
    pub time_varying_known_reals: Vec<String>,
    pub time_varying_unknown_reals: Vec<String>,
}

/// A variable the model forecasts (one, or several with a `MultiNormalizer`), with its fitted
/// normaliser.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub normaliser: Normaliser,
}

pub struct SavedDeepAr {
    pub path: PathBuf,
    pub cell: Cell,
    pub hidden_size: i64,
    pub rnn_layers: i64,
    /// The targets, in the model's order (`target`).
    pub targets: Vec<Target>,
    /// The training frame's name for the derived hourly index (`"time_idx"` in DeepTune).
    pub time_idx: String,
    pub group_ids: Vec<String>,
    pub max_encoder_length: i64,
    /// The shortest encoder pytorch-forecasting's index samples (`max_encoder_length` unless
    /// set lower).
    pub min_encoder_length: i64,
    pub max_prediction_length: i64,
    /// Whether training allowed gaps in the hourly index (DeepTune: yes); they are then
    /// forward-filled as pytorch-forecasting does.
    pub allow_missing_timesteps: bool,
    pub lists: VariableLists,
    pub reals: Vec<Real>,
    pub categoricals: Vec<Categorical>,
    pub embeddings: Vec<Embedding>,
    /// The largest of the training's `lags` (0 without): pytorch-forecasting drops each series'
    /// first `max_lag` rows, which have no lagged values.
    pub max_lag: usize,
    /// The constants of the hours a window fills, for the variables `constant_fill_strategy`
    /// names (the others are forward-filled).
    pub constant_fill: ConstantFill,
    pub weights: StateDict,
}

impl SavedDeepAr {
    /// Reads `path`: a `.ckpt` file, or a directory whose first `*.ckpt` by name is taken.
    pub fn load(path: &Path) -> Result<SavedDeepAr> {
        let path = locate(path)?;
        let checkpoint = Checkpoint::open(&path)?;
        let root = checkpoint.root();
        let what = |key: &str| format!("{}: {key}", path.display());
        let hparams = root.get("hyper_parameters").ok_or_else(|| {
            anyhow!(
                "{} is not a Lightning checkpoint of a pytorch-forecasting model: it has no hyper_parameters",
                path.display()
            )
        })?;
        if str_list(hparams, "x_reals").is_none() || hparams.get("rnn_layers").is_none() {
            bail!(
                "{} holds no DeepAR hyper-parameters (x_reals, rnn_layers): is it another pytorch-forecasting model?",
                path.display()
            );
        }
        let dataset = root.get("dataset_parameters").or_else(|| hparams.get("dataset_parameters"));
        let dataset = dataset.filter(|d| !matches!(d, Value::None)).ok_or_else(|| {
            anyhow!(
                "{} has no dataset_parameters: it was not saved by a pytorch-forecasting model built with from_dataset, so its normalisers and encoders are unknown",
                path.display()
            )
        })?;
        let cell = match str_field(hparams, "cell_type").unwrap_or("LSTM") {
            "LSTM" => Cell::Lstm,
            "GRU" => Cell::Gru,
            other => bail!("{}: cell_type '{other}' is not a DeepAR cell (LSTM or GRU)", what("hyper_parameters")),
        };
        let targets = match hparams.get("target") {
            Some(Value::Str(t)) => vec![t.clone()],
            Some(_) => str_list(hparams, "target")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| anyhow!("{}: target is neither a name nor a list of names", what("hyper_parameters")))?,
            None => bail!("{}: no target", what("hyper_parameters")),
        };
        let time_idx = str_field(dataset, "time_idx").unwrap_or("time_idx").to_string();
        let group_ids = str_list(dataset, "group_ids").unwrap_or_default();
        let normaliser =
            dataset.get("target_normalizer").ok_or_else(|| anyhow!("{}: no target_normalizer", path.display()))?;
        // The columns the dataset codes before fitting normalisers: its categorical inputs, and
        // the group ids when the target normaliser is a GroupNormalizer or a MultiNormalizer.
        let mut coded: Vec<String> = str_list(hparams, "x_categoricals").unwrap_or_default();
        if matches!(normaliser, Value::Object(o) if o.name == "GroupNormalizer" || o.name == "MultiNormalizer") {
            coded.extend(group_ids.iter().cloned());
        }
        let encoders = dataset.get("categorical_encoders");
        let encoder_of = |column: &str| -> Result<Option<Categorical>> {
            if !coded.iter().any(|c| c == column) {
                return Ok(None);
            }
            let encoder = encoders.and_then(|e| e.get(column)).ok_or_else(|| {
                anyhow!("{}: a normaliser is by '{column}', which has no saved encoder", path.display())
            })?;
            label_encoder(column, encoder, &path).map(Some)
        };
        let targets = read_targets(targets, normaliser, &path, &encoder_of)?;
        let lags = read_lags(dataset, &path)?;
        let reals = read_reals(hparams, dataset, &targets, &time_idx, &lags, &path, &encoder_of)?;
        check_lagged_scaling(&reals, &targets, &group_ids, &path)?;
        let (categoricals, embeddings) = read_categoricals(hparams, dataset, &path)?;
        let constant_fill = ConstantFill::read(dataset, &reals, &targets, &categoricals, &path)?;
        let weights =
            checkpoint.state_dict_where(|name| name.starts_with("rnn.") || name.starts_with("embeddings."))?;
        Ok(SavedDeepAr {
            cell,
            hidden_size: int_field(hparams, "hidden_size", &path)?,
            rnn_layers: int_field(hparams, "rnn_layers", &path)?,
            targets,
            time_idx,
            group_ids,
            max_encoder_length: int_field(dataset, "max_encoder_length", &path)?,
            min_encoder_length: match dataset.get("min_encoder_length") {
                None | Some(Value::None) => int_field(dataset, "max_encoder_length", &path)?,
                Some(_) => int_field(dataset, "min_encoder_length", &path)?.max(1),
            },
            max_prediction_length: int_field(dataset, "max_prediction_length", &path)?,
            allow_missing_timesteps: matches!(dataset.get("allow_missing_timesteps"), Some(Value::Bool(true))),
            lists: VariableLists {
                static_categoricals: str_list(dataset, "static_categoricals").unwrap_or_default(),
                static_reals: str_list(dataset, "static_reals").unwrap_or_default(),
                time_varying_known_categoricals: str_list(dataset, "time_varying_known_categoricals")
                    .unwrap_or_default(),
                time_varying_unknown_categoricals: str_list(dataset, "time_varying_unknown_categoricals")
                    .unwrap_or_default(),
                time_varying_known_reals: str_list(dataset, "time_varying_known_reals").unwrap_or_default(),
                time_varying_unknown_reals: str_list(dataset, "time_varying_unknown_reals").unwrap_or_default(),
            },
            reals,
            categoricals,
            embeddings,
            constant_fill,
            max_lag: lags.iter().flat_map(|(_, lags)| lags.iter().copied()).max().unwrap_or(0),
            weights,
            path,
        })
    }
}

/// `path` itself, or the first `*.ckpt` (by name) in the directory `path`.
fn locate(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        bail!("--model_weights {}: no such file or directory", path.display());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "ckpt"))
        .collect();
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        anyhow!("--model_weights {}: the directory holds no *.ckpt file (give the Lightning checkpoint pytorch-forecasting's training wrote)", path.display())
    })
}

/// The targets with their normalisers: the target normaliser itself for one, a `MultiNormalizer`'s
/// for several.
fn read_targets(
    names: Vec<String>,
    normaliser: &Value,
    path: &Path,
    encoder_of: &dyn Fn(&str) -> Result<Option<Categorical>>,
) -> Result<Vec<Target>> {
    let multi = match normaliser {
        Value::Object(o) if o.name == "MultiNormalizer" => {
            let state = o.state.as_ref();
            match state.and_then(|s| s.get("normalizers")) {
                Some(Value::List(items)) | Some(Value::Tuple(items)) => Some(items),
                _ => bail!("{}: the MultiNormalizer has no list of normalizers", path.display()),
            }
        }
        _ => None,
    };
    match multi {
        Some(normalisers) if normalisers.len() != names.len() => bail!(
            "{}: the MultiNormalizer holds {} normalisers for {} targets",
            path.display(),
            normalisers.len(),
            names.len()
        ),
        Some(normalisers) => names
            .into_iter()
            .zip(normalisers)
            .map(|(name, value)| {
                let role = format!("the normaliser of the target '{name}'");
                Ok(Target { normaliser: Normaliser::from_value(value, path, &role, encoder_of)?, name })
            })
            .collect(),
        None if names.len() > 1 => {
            bail!("{}: {} targets but no MultiNormalizer for them", path.display(), names.len())
        }
        None => {
            let normaliser = Normaliser::from_value(normaliser, path, "the target normaliser", encoder_of)?;
            Ok(names.into_iter().map(|name| Target { name, normaliser: normaliser.clone() }).collect())
        }
    }
}

/// The dataset's `lags`: each lagged variable with its lags (whole numbers of rows, at least 1).
fn read_lags(dataset: &Value, path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let mut lags = Vec::new();
    for (name, values) in dataset.get("lags").and_then(Value::dict_entries).unwrap_or_default() {
        let name = name.as_str().ok_or_else(|| anyhow!("{}: lags has a non-string key", path.display()))?;
        let values: Option<Vec<usize>> = match values {
            Value::List(v) | Value::Tuple(v) => {
                v.iter().map(|lag| lag.as_i64().and_then(|l| usize::try_from(l).ok())).collect()
            }
            _ => None,
        };
        match values {
            Some(values) if values.iter().all(|&l| l > 0) => lags.push((name.to_string(), values)),
            _ => bail!("{}: lags['{name}'] is not a list of positive whole numbers of rows", path.display()),
        }
    }
    Ok(lags)
}

/// The continuous inputs in `x_reals` order, each with its scaler, but the target and the inputs
/// pytorch-forecasting fills in per sample unscaled. A scaler is scikit-learn's `StandardScaler`
/// (the default) or `RobustScaler`, none, or a pytorch-forecasting normaliser (not for the time
/// index). A lagged input (`<name>_lagged_by_<lag>`) has no scaler of its own: it takes its
/// variable's value rows earlier, scaled as that is.
fn read_reals(
    hparams: &Value,
    dataset: &Value,
    targets: &[Target],
    time_idx: &str,
    lags: &[(String, Vec<usize>)],
    path: &Path,
    encoder_of: &dyn Fn(&str) -> Result<Option<Categorical>>,
) -> Result<Vec<Real>> {
    let names = str_list(hparams, "x_reals").unwrap_or_default();
    let scalers = dataset.get("scalers");
    let added = |flag: &str| matches!(dataset.get(flag), Some(Value::Bool(true)));
    let lagged = |name: &str| {
        lags.iter().find_map(|(of, lags)| {
            lags.iter().find(|lag| name == format!("{of}_lagged_by_{lag}")).map(|&lag| (of, lag))
        })
    };
    let mut reals = Vec::with_capacity(names.len());
    for name in &names {
        if let Some((of, lag)) = lagged(name) {
            let Some(of) = names.iter().position(|n| n == of) else {
                bail!("{}: the model's input '{name}' lags '{of}', which is not one of its inputs", path.display());
            };
            let source = RealSource::Lagged { of, lag };
            reals.push(Real { name: name.clone(), source, center: 0.0, scale: 1.0, normaliser: None });
            continue;
        }
        let name = name.clone();
        // `<target>_center` / `<target>_scale`: which target's.
        let scales_of = |suffix: &str| {
            targets.iter().position(|t| added("add_target_scales") && name == format!("{}_{suffix}", t.name))
        };
        let source = targets
            .iter()
            .position(|t| t.name == name)
            .map(RealSource::Target)
            .or_else(|| (name == time_idx).then_some(RealSource::TimeIndex))
            .or_else(|| {
                (name == "relative_time_idx" && added("add_relative_time_idx")).then_some(RealSource::RelativeTimeIndex)
            })
            .or_else(|| (name == "encoder_length" && added("add_encoder_length")).then_some(RealSource::EncoderLength))
            .or_else(|| scales_of("center").map(RealSource::TargetCenter))
            .or_else(|| scales_of("scale").map(RealSource::TargetScale))
            .unwrap_or_else(|| RealSource::Column(name.clone()));
        let unscaled =
            matches!(source, RealSource::Target(_) | RealSource::RelativeTimeIndex | RealSource::EncoderLength);
        let mut normaliser = None;
        let (source, (center, scale)) = if unscaled {
            (source, (0.0, 1.0))
        } else {
            match scalers.and_then(|s| s.get(&name)) {
                None | Some(Value::None) => (source, (0.0, 1.0)),
                Some(scaler @ Value::Object(o)) if o.module.starts_with("pytorch_forecasting.") => {
                    if !matches!(source, RealSource::Column(_)) {
                        bail!(
                            "{}: '{name}' is scaled by a {}; deepembed reads a StandardScaler or RobustScaler for it",
                            path.display(),
                            o.name
                        );
                    }
                    let role = format!("the scaler of '{name}'");
                    normaliser = Some(Normaliser::from_value(scaler, path, &role, encoder_of)?);
                    (source, (0.0, 1.0))
                }
                Some(scaler) => {
                    let robust = matches!(scaler, Value::Object(o) if o.name == "RobustScaler");
                    let scaler = if robust { StandardScaler::from_robust_scaler(scaler) } else { StandardScaler::from_value(scaler) }.map_err(|e| {
                        anyhow!("{}: the scaler of '{name}': {e}; deepembed reproduces StandardScaler, RobustScaler and pytorch-forecasting's normalisers", path.display())
                    })?;
                    if scaler.n_features != 1 {
                        bail!(
                            "{}: the scaler of '{name}' was fitted on {} features, not one",
                            path.display(),
                            scaler.n_features
                        );
                    }
                    let center = scaler.mean.as_ref().map_or(0.0, |m| m[0]);
                    let scale = scaler.scale.as_ref().map_or(1.0, |s| s[0]);
                    (source, (center, scale))
                }
            }
        };
        reals.push(Real { name, source, center, scale, normaliser });
    }
    for real in &reals {
        if let RealSource::Lagged { of, .. } = real.source {
            if !matches!(reals[of].source, RealSource::Target(_) | RealSource::Column(_)) {
                bail!(
                    "{}: the model's input '{}' lags '{}', which pytorch-forecasting computes per sample; deepembed lags the target and input columns",
                    path.display(),
                    real.name,
                    reals[of].name
                );
            }
        }
    }
    for (k, target) in targets.iter().enumerate() {
        if !reals.iter().any(|r| r.source == RealSource::Target(k)) {
            bail!(
                "{}: the target '{}' is not among the model's inputs (x_reals), as DeepAR requires",
                path.display(),
                target.name
            );
        }
    }
    Ok(reals)
}

/// The embedding tables (`embedding_sizes` order) and the categorical inputs they read, with
/// their encoders, in the order the tables read them. A variable group's columns share the
/// group's encoder. A categorical input no table reads (a lagged category: the dataset makes it,
/// the network has no embedding for it) does not reach the network.
fn read_categoricals(hparams: &Value, dataset: &Value, path: &Path) -> Result<(Vec<Categorical>, Vec<Embedding>)> {
    let names = str_list(hparams, "x_categoricals").unwrap_or_default();
    let encoders = dataset.get("categorical_encoders");
    let groups_value = hparams.get("categorical_groups");
    let groups = groups_value.and_then(Value::dict_entries).unwrap_or_default();
    let sizes = hparams.get("embedding_sizes").and_then(Value::dict_entries).unwrap_or_default();
    if let Some((group, _)) = groups.iter().find(|(g, _)| !sizes.iter().any(|(name, _)| name == g)) {
        bail!(
            "{}: the model was trained with the variable group {}, which no embedding reads (a group of continuous inputs); deepembed reproduces groups of categories",
            path.display(),
            group.as_str().unwrap_or("?")
        );
    }
    let mut categoricals = Vec::with_capacity(names.len());
    let mut embeddings = Vec::with_capacity(sizes.len());
    for (key, size) in sizes {
        let name = key.as_str().ok_or_else(|| anyhow!("{}: embedding_sizes has a non-string key", path.display()))?;
        let columns = match groups_value.filter(|g| g.get(name).is_some()) {
            Some(groups) => str_list(groups, name)
                .ok_or_else(|| anyhow!("{}: the variable group '{name}' is not a list of columns", path.display()))?,
            None => vec![name.to_string()],
        };
        if let Some(column) = columns.iter().find(|c| !names.contains(c)) {
            bail!("{}: embedding '{name}' reads '{column}', which is not a categorical input", path.display());
        }
        let encoder = encoders.and_then(|e| e.get(name)).ok_or_else(|| {
            anyhow!("{}: the categorical input '{name}' has no saved encoder in dataset_parameters", path.display())
        })?;
        let pair = match size {
            Value::Tuple(v) | Value::List(v) if v.len() == 2 => (v[0].as_i64(), v[1].as_i64()),
            _ => (None, None),
        };
        let (Some(cardinality), Some(dim)) = pair else {
            bail!("{}: embedding_sizes['{name}'] is not a (classes, size) pair", path.display());
        };
        let inputs = (categoricals.len()..categoricals.len() + columns.len()).collect();
        for column in &columns {
            categoricals.push(label_encoder(column, encoder, path)?);
        }
        embeddings.push(Embedding { name: name.to_string(), inputs, cardinality, dim });
    }
    Ok((categoricals, embeddings))
}

/// A lagged input is its variable's scaled value at an earlier row of the series, which is what
/// pytorch-forecasting computes when the variable's scaling is the same for both rows: one
/// scaling, or one per series. A normaliser by other columns (which may change within a series)
/// is refused.
fn check_lagged_scaling(reals: &[Real], targets: &[Target], group_ids: &[String], path: &Path) -> Result<()> {
    for real in reals {
        let RealSource::Lagged { of, .. } = real.source else { continue };
        let lagged = &reals[of];
        let normaliser = match lagged.source {
            RealSource::Target(k) => Some(&targets[k].normaliser),
            _ => lagged.normaliser.as_ref(),
        };
        if let Some(Normaliser::Fitted { scales: Scales::ByGroup(groups), .. }) = normaliser {
            if let Some(column) = groups.columns.iter().find(|c| !group_ids.contains(c)) {
                bail!(
                    "{}: the model's input '{}' lags '{}', whose normaliser scales by '{column}', which is not a series id; deepembed lags inputs scaled per series or globally",
                    path.display(),
                    real.name,
                    lagged.name
                );
            }
        }
    }
    Ok(())
}

/// A fitted `NaNLabelEncoder`: its `classes_` (value to code) and `add_nan`.
fn label_encoder(name: &str, value: &Value, path: &Path) -> Result<Categorical> {
    let Value::Object(object) = value else {
        bail!("{}: the encoder of '{name}' is {}, not a NaNLabelEncoder", path.display(), value.type_name());
    };
    if object.name != "NaNLabelEncoder" {
        bail!(
            "{}: the encoder of '{name}' is {}.{}; deepembed reads NaNLabelEncoder only",
            path.display(),
            object.module,
            object.name
        );
    }
    let state = object.state.as_ref();
    let classes = state
        .and_then(|s| s.get("classes_"))
        .and_then(Value::dict_entries)
        .ok_or_else(|| anyhow!("{}: the encoder of '{name}' has no classes_ (was it fitted?)", path.display()))?;
    let mut codes = HashMap::with_capacity(classes.len());
    for (class, code) in classes {
        // Whole-number series ids (group ids may be integers) match the input's text of them.
        // numpy string scalars when the encoder was fitted on an array (a variable group's).
        let text = match PyKey::of(class) {
            Some(PyKey::Str(s)) => Some(s),
            Some(PyKey::Int(i)) if !matches!(class, Value::Bool(_)) => Some(i.to_string()),
            _ => None,
        };
        let (Some(class), Some(code)) = (text, code.as_i64()) else {
            bail!(
                "{}: the encoder of '{name}' maps {} to {}; categories are text in pytorch-forecasting",
                path.display(),
                class.type_name(),
                code.type_name()
            );
        };
        codes.insert(class, code);
    }
    let add_nan = matches!(state.and_then(|s| s.get("add_nan")), Some(Value::Bool(true)));
    Ok(Categorical { name: name.to_string(), classes: codes, add_nan })
}

fn str_field<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value.get(key).and_then(Value::as_str)
}

/// A list of strings; `None` when absent or `None` in the file.
pub(crate) fn str_list(value: &Value, key: &str) -> Option<Vec<String>> {
    match value.get(key)? {
        Value::List(items) | Value::Tuple(items) => items.iter().map(|v| v.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

fn int_field(value: &Value, key: &str, path: &Path) -> Result<i64> {
    match value.get(key) {
        Some(v) => v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        None => None,
    }
    .ok_or_else(|| anyhow!("{}: {key} is missing or not an integer", path.display()))
}

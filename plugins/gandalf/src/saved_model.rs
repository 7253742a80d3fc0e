//! A pytorch-tabular `save_model` directory, read as data: `config.yml` (columns, task, GANDALF
//! settings), `datamodule.sav` (the fitted category encoder and scaler) and `model.ckpt`'s weights.
//! Nothing in these files is executed; what cannot be reproduced exactly is refused by name.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::checkpoint::pandas::DataFrame;
use deepembed_sdk::checkpoint::sklearn::StandardScaler;
use deepembed_sdk::checkpoint::{read_pickle_file, Checkpoint, StateDict, Value};
use serde::Deserialize;

use crate::preprocessing::{CategoryEncoder, Preprocessing, Unseen};

/// What DeepTune names the save directory inside its output directory.
const DEEPTUNE_SUBDIR: &str = "GANDALF_model";

/// The parts of `config.yml` (pytorch-tabular's merged data, model and trainer config) used here.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedConfig {
    #[serde(default)]
    pub target: Vec<String>,
    #[serde(default)]
    pub continuous_cols: Vec<String>,
    #[serde(default)]
    pub categorical_cols: Vec<String>,
    #[serde(default)]
    pub date_columns: Vec<serde_yaml_ng::Value>,
    #[serde(default)]
    pub encode_date_columns: bool,
    #[serde(default)]
    pub continuous_feature_transform: Option<String>,
    #[serde(default = "yes")]
    pub normalize_continuous_features: bool,
    pub task: String,
    #[serde(rename = "_model_name")]
    pub model_name: String,
    pub gflu_stages: usize,
    #[serde(default = "yes")]
    pub batch_norm_continuous_input: bool,
    #[serde(default)]
    pub virtual_batch_size: Option<usize>,
}

fn yes() -> bool {
    true
}

pub struct SavedModel {
    pub dir: PathBuf,
    pub config: SavedConfig,
    pub preprocessing: Preprocessing,
    pub weights: StateDict,
}

impl SavedModel {
    pub fn load(path: &Path) -> Result<SavedModel> {
        let dir = locate(path)?;
        let config = read_config(&dir)?;
        let preprocessing = read_datamodule(&dir, &config)?;
        let weights = Checkpoint::open(&dir.join("model.ckpt"))?.state_dict()?;
        Ok(SavedModel { dir, config, preprocessing, weights })
    }
}

/// The save directory: `path` itself, or DeepTune's `path/GANDALF_model`.
fn locate(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        bail!("--model_weights {}: not a directory (give the directory TabularModel.save_model wrote)", path.display());
    }
    for dir in [path.to_path_buf(), path.join(DEEPTUNE_SUBDIR)] {
        if dir.join("config.yml").is_file() {
            for file in ["model.ckpt", "datamodule.sav"] {
                if !dir.join(file).is_file() {
                    bail!("{} has config.yml but no {file}: not a complete pytorch-tabular save (TabularModel.save_model writes config.yml, model.ckpt and datamodule.sav)", dir.display());
                }
            }
            return Ok(dir);
        }
    }
    bail!(
        "--model_weights {}: not a pytorch-tabular GANDALF save: there is no config.yml in it or in {DEEPTUNE_SUBDIR}/ (TabularModel.save_model writes config.yml, model.ckpt and datamodule.sav)",
        path.display()
    )
}

fn read_config(dir: &Path) -> Result<SavedConfig> {
    let path = dir.join("config.yml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let config: SavedConfig = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a pytorch-tabular config", path.display()))?;
    if config.model_name != "GANDALFModel" {
        bail!(
            "{} holds a pytorch-tabular {}, not a GANDALF model; this plugin reads GANDALF only",
            dir.display(),
            config.model_name
        );
    }
    if let Some(transform) = &config.continuous_feature_transform {
        bail!(
            "the model was trained with continuous_feature_transform '{transform}' (a fitted scikit-learn quantile or power transform), which deepembed does not reproduce; \
             its embeddings would not be what the model saw, so nothing was computed"
        );
    }
    if config.encode_date_columns && !config.date_columns.is_empty() {
        bail!("the model was trained with date_columns (pytorch-tabular derives calendar features from them), which deepembed does not reproduce; nothing was computed");
    }
    Ok(config)
}

/// The fitted preprocessing inside `datamodule.sav` (a joblib pickle of the TabularDatamodule).
fn read_datamodule(dir: &Path, config: &SavedConfig) -> Result<Preprocessing> {
    let path = dir.join("datamodule.sav");
    let root = read_pickle_file(&path)?;
    let context = || format!("reading the fitted preprocessing in {}", path.display());
    // pytorch-tabular keeps these behind properties; older releases stored them directly.
    let field =
        |name: &str| root.get(&format!("_{name}")).or_else(|| root.get(name)).filter(|v| !matches!(v, Value::None));

    if let Some(transform) = field("continuous_transform") {
        bail!(
            "{} holds a fitted continuous transform ({}), which deepembed does not reproduce; nothing was computed",
            path.display(),
            transform.type_name()
        );
    }
    let scaler = if config.normalize_continuous_features && !config.continuous_cols.is_empty() {
        let value = field("scaler").ok_or_else(|| {
            anyhow!("{} has no fitted scaler, but config.yml says continuous features are normalized", path.display())
        })?;
        let scaler = StandardScaler::from_value(value).with_context(context)?;
        check_scaler(&scaler, &config.continuous_cols).with_context(context)?;
        Some(scaler)
    } else {
        None
    };
    let encoders = if config.categorical_cols.is_empty() {
        vec![]
    } else {
        let encoder = field("categorical_encoder").ok_or_else(|| {
            anyhow!("{} has no fitted category encoder, but config.yml lists categorical columns", path.display())
        })?;
        read_encoders(encoder, &config.categorical_cols).with_context(context)?
    };
    Ok(Preprocessing { continuous: config.continuous_cols.clone(), scaler, encoders })
}

fn check_scaler(scaler: &StandardScaler, continuous: &[String]) -> Result<()> {
    if scaler.n_features != continuous.len() {
        bail!(
            "the scaler was fitted on {} columns, config.yml lists {} continuous columns",
            scaler.n_features,
            continuous.len()
        );
    }
    if let Some(names) = &scaler.feature_names {
        if names != continuous {
            bail!(
                "the scaler was fitted on columns [{}], config.yml lists [{}]",
                names.join(", "),
                continuous.join(", ")
            );
        }
    }
    Ok(())
}

/// pytorch-tabular's OrdinalEncoder: per column a DataFrame indexed by category with a `value`
/// column of codes from 1.
fn read_encoders(encoder: &Value, columns: &[String]) -> Result<Vec<CategoryEncoder>> {
    let Value::Object(object) = encoder else { bail!("the category encoder is a {}", encoder.type_name()) };
    if object.name != "OrdinalEncoder" {
        bail!(
            "the category encoder is {}.{}; deepembed reads pytorch-tabular's OrdinalEncoder",
            object.module,
            object.name
        );
    }
    let unseen = match encoder.get("handle_unseen").and_then(Value::as_str) {
        Some("impute") => Unseen::Impute(encoder.get("_imputed").and_then(Value::as_i64).unwrap_or(0)),
        // "ignore" leaves NaN codes, which pytorch-tabular then fails to convert: an error too.
        _ => Unseen::Error,
    };
    let missing_is_error = encoder.get("handle_missing").and_then(Value::as_str) == Some("error");
    let mapping =
        encoder.get("_mapping").ok_or_else(|| anyhow!("the category encoder has no mapping (was it fitted?)"))?;
    columns
        .iter()
        .map(|column| {
            let table = mapping
                .get(column)
                .ok_or_else(|| anyhow!("the category encoder has no mapping for column '{column}'"))?;
            let frame =
                DataFrame::from_value(table).with_context(|| format!("the category mapping of column '{column}'"))?;
            let codes = frame
                .column("value")
                .ok_or_else(|| anyhow!("the category mapping of column '{column}' has no 'value' column"))?;
            CategoryEncoder::new(column, &frame.index.values, codes, unseen, missing_is_error)
        })
        .collect()
}

//! A pytorch-tabular `save_model` directory, read as data: `config.yml` (columns, task, GANDALF
//! settings), `datamodule.sav` (the fitted category encoder, continuous transform and scaler) and
//! `model.ckpt`'s weights.
//! Nothing in these files is executed; what cannot be reproduced exactly is refused by name.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::checkpoint::pandas::DataFrame;
use deepembed_sdk::checkpoint::sklearn::{FeatureTransform, OutputDistribution, PowerMethod, StandardScaler};
use deepembed_sdk::checkpoint::{read_pickle_file, Checkpoint, StateDict, Value};
use serde::Deserialize;

use crate::dates::DateColumn;
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
    // The YAML parser takes quadratic time on deep nesting (100k brackets: 11 s); refuse it first.
    let depth = yaml_depth(&text);
    if depth > MAX_YAML_DEPTH {
        bail!(
            "{} nests {depth} levels deep, more than the {MAX_YAML_DEPTH} a pytorch-tabular config can have; \
             the file is corrupt or not a config.yml: point --model_weights at the directory pytorch-tabular's save_model wrote",
            path.display()
        );
    }
    let config: SavedConfig = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a pytorch-tabular config", path.display()))?;
    if config.model_name != "GANDALFModel" {
        bail!(
            "{} holds a pytorch-tabular {}, not a GANDALF model; this plugin reads GANDALF only",
            dir.display(),
            config.model_name
        );
    }
    Ok(config)
}

/// Deepest YAML nesting accepted in config.yml; pytorch-tabular writes three or four levels.
const MAX_YAML_DEPTH: usize = 64;

/// An upper bound on the nesting depth of a YAML text, found in one linear pass without parsing:
/// the deepest flow nesting (`[`, `{`) plus the deepest block nesting (indentation levels and
/// compact `- - ` entries). Quoted scalars and comments are skipped as the YAML scanner skips them;
/// brackets inside plain scalars are counted, which can only overestimate.
fn yaml_depth(text: &str) -> usize {
    let (mut flow, mut max_flow) = (0usize, 0usize);
    let (mut indents, mut max_block) = (Vec::<usize>::new(), 0usize);
    // Quoted scalars may span lines.
    let mut quote: Option<char> = None;
    for line in text.lines() {
        let content = line.trim_start_matches(' ');
        if flow == 0 && quote.is_none() && !content.is_empty() && !content.starts_with('#') {
            let mut column = line.len() - content.len();
            let mut rest = content;
            loop {
                while indents.last().is_some_and(|&i| i > column) {
                    indents.pop();
                }
                if indents.last() != Some(&column) {
                    indents.push(column);
                }
                // Each compact sequence entry ("- - x") opens a level further in.
                match rest.strip_prefix('-').filter(|r| r.starts_with([' ', '\t'])) {
                    Some(r) => {
                        let inner = r.trim_start_matches([' ', '\t']);
                        column += rest.len() - inner.len();
                        rest = inner;
                    }
                    None => break,
                }
            }
            max_block = max_block.max(indents.len());
        }
        let mut prev = ' ';
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => quote = None,
                Some(_) => {}
                // A quote opens a scalar only where a token starts, as in the YAML scanner.
                None if (c == '\'' || c == '"') && (prev.is_whitespace() || "[{,:-?".contains(prev)) => quote = Some(c),
                None if c == '#' && prev.is_whitespace() => break,
                None if c == '[' || c == '{' => {
                    flow += 1;
                    max_flow = max_flow.max(flow);
                }
                None if c == ']' || c == '}' => flow = flow.saturating_sub(1),
                None => {}
            }
            prev = c;
        }
    }
    max_flow + max_block
}

/// The fitted preprocessing inside `datamodule.sav` (a joblib pickle of the TabularDatamodule).
fn read_datamodule(dir: &Path, config: &SavedConfig) -> Result<Preprocessing> {
    let path = dir.join("datamodule.sav");
    let root = read_pickle_file(&path)?;
    let context = || format!("reading the fitted preprocessing in {}", path.display());
    // pytorch-tabular keeps these behind properties; older releases stored them directly.
    let field =
        |name: &str| root.get(&format!("_{name}")).or_else(|| root.get(name)).filter(|v| !matches!(v, Value::None));

    // pytorch-tabular applies the fitted transform when its config names one (and there are
    // continuous columns), whatever else the datamodule holds.
    let transform = match &config.continuous_feature_transform {
        Some(name) if !config.continuous_cols.is_empty() => {
            let value = field("continuous_transform").ok_or_else(|| {
                anyhow!(
                    "{} has no fitted continuous transform, but config.yml says continuous_feature_transform: {name}",
                    path.display()
                )
            })?;
            let transform = FeatureTransform::from_value(value).with_context(context)?;
            check_transform(&transform, name, &config.continuous_cols).with_context(context)?;
            Some(transform)
        }
        _ => None,
    };
    let scaler = if config.normalize_continuous_features && !config.continuous_cols.is_empty() {
        let value = field("scaler").ok_or_else(|| {
            anyhow!("{} has no fitted scaler, but config.yml says continuous features are normalized", path.display())
        })?;
        let scaler = StandardScaler::from_value(value).with_context(context)?;
        check_fitted_columns("the scaler", scaler.n_features, scaler.feature_names.as_deref(), &config.continuous_cols)
            .with_context(context)?;
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
    Ok(Preprocessing {
        continuous: config.continuous_cols.clone(),
        transform,
        scaler,
        encoders,
        dates: read_dates(config)?,
    })
}

/// The date columns, when pytorch-tabular derived categories from them: each part's column must
/// be among config.yml's categorical columns, where training added it.
fn read_dates(config: &SavedConfig) -> Result<Vec<DateColumn>> {
    if !config.encode_date_columns {
        return Ok(vec![]);
    }
    let dates = DateColumn::read_all(&config.date_columns)?;
    for date in &dates {
        if let Some((name, _)) = date.parts.iter().find(|(name, _)| !config.categorical_cols.contains(name)) {
            bail!(
                "config.yml: date column '{}' gives the category '{name}', which categorical_cols does not list; was the config edited?",
                date.column
            );
        }
    }
    Ok(dates)
}

/// The fitted transform is the one config.yml names, fitted on its continuous columns.
fn check_transform(transform: &FeatureTransform, name: &str, continuous: &[String]) -> Result<()> {
    let matches = match (name, transform) {
        ("quantile_uniform", FeatureTransform::Quantile(t)) => t.output == OutputDistribution::Uniform,
        ("quantile_normal", FeatureTransform::Quantile(t)) => t.output == OutputDistribution::Normal,
        ("yeo-johnson", FeatureTransform::Power(t)) => t.method == PowerMethod::YeoJohnson,
        ("box-cox", FeatureTransform::Power(t)) => t.method == PowerMethod::BoxCox,
        _ => false,
    };
    if !matches {
        bail!(
            "config.yml says continuous_feature_transform: {name}, but the saved transform is {}",
            transform.describe()
        );
    }
    check_fitted_columns("the continuous transform", transform.n_features(), transform.feature_names(), continuous)
}

/// A fitted scikit-learn object (`what`) was fitted on config.yml's continuous columns: as many,
/// and the same names in the same order when it recorded them.
fn check_fitted_columns(what: &str, n_features: usize, names: Option<&[String]>, continuous: &[String]) -> Result<()> {
    if n_features != continuous.len() {
        bail!("{what} was fitted on {n_features} columns, config.yml lists {} continuous columns", continuous.len());
    }
    if let Some(names) = names {
        if names != continuous {
            bail!("{what} was fitted on columns [{}], config.yml lists [{}]", names.join(", "), continuous.join(", "));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_config_is_refused_quickly() {
        let dir = std::env::temp_dir().join(format!("deepembed-gandalf-yaml-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.yml"), "[".repeat(100_000)).unwrap();
        let start = std::time::Instant::now();
        let err = format!("{:#}", read_config(&dir).unwrap_err());
        let elapsed = start.elapsed();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(elapsed < std::time::Duration::from_millis(500), "took {elapsed:?}");
        assert!(err.contains("config.yml") && err.contains("levels deep"), "{err}");
    }

    #[test]
    fn depth_of_ordinary_yaml() {
        let config = "target:\n- outcome\ncontinuous_cols:\n- age\n- 'x # [not a comment'\n\
                      model_config:\n  layers: [1, [2, 3]]\n  name: \"a]]]]\"  # [[[[\n";
        assert_eq!(yaml_depth(config), 2 + 2);
        assert_eq!(yaml_depth("a: b\n"), 1);
        // Four sequences, counted with the column of their scalar: an overestimate by one.
        assert_eq!(yaml_depth("- - - - x\n"), 5);
        assert_eq!(yaml_depth(&"[".repeat(1000)), 1000 + 1);
        // Closing brackets inside a quoted scalar do not hide the nesting around them.
        assert_eq!(yaml_depth(&"[[ ']]' ".repeat(100)), 200 + 1);
        // Block nesting by indentation.
        let deep: String = (0..100).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert_eq!(yaml_depth(&deep), 100);
    }
}

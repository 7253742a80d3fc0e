//! A TabPFN model as DeepTune leaves it, read as data (docs/TABPFN.md §1): a `.tabpfn_fit` zip
//! (`init_params.json` naming the checkpoint), a bare torch checkpoint, or with
//! `--finetuning-mode` a joblib dump of a fine-tuned estimator. The result is what ensemble
//! member 0 needs: the task, the architecture config, the resolved inference config, the
//! weights and the estimator's seed and ensemble size. Nothing in these files is executed, and
//! nothing is ever downloaded; settings deepembed does not reproduce are refused by name.

mod cache;
pub mod column_table;
mod finetuned;
mod inference;
mod legacy;
mod pyjson;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::checkpoint::{Checkpoint, StateDict, Value};
use serde_json::{Map, Value as Json};

pub use cache::{default_checkpoint, dotenv_value, DefaultCheckpoint, Environment, ModelVersion, Platform};
pub use inference::{
    AppendOriginal, CategoricalEncoding, GlobalTransformer, InferenceConfig, OutlierRemovalStd, PolynomialFeatures,
    PreprocessorConfig, ShiftMethod, SubsampleSamples, PREPROCESSOR_NAMES, REPRODUCED_TRANSFORMS,
};

/// Which estimator the model is: `TabPFNClassifier` or `TabPFNRegressor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Classification,
    Regression,
}

impl Task {
    /// The tabpfn estimator class.
    pub fn estimator(self) -> &'static str {
        match self {
            Task::Classification => "TabPFNClassifier",
            Task::Regression => "TabPFNRegressor",
        }
    }

    /// The task a checkpoint's architecture config was trained for: `max_num_classes` 0 is a
    /// regressor (a bar-distribution head), 2 or more a classifier (model_loading.py l.713).
    pub fn of_architecture(architecture: &Json) -> Result<Task> {
        match architecture.get("max_num_classes").map(|v| (v, v.as_i64())) {
            Some((_, Some(0))) => Ok(Task::Regression),
            Some((_, Some(n))) if n >= 2 => Ok(Task::Classification),
            Some((v, _)) => {
                bail!("its config's max_num_classes is {v}: neither a classifier's (2 or more) nor a regressor's (0)")
            }
            None => bail!("its config has no max_num_classes: not a tabpfn checkpoint"),
        }
    }
}

/// What ensemble member 0 of a fitted TabPFN needs.
pub struct SavedTabPfn {
    pub task: Task,
    /// The checkpoint's `config` (tabpfn's `ModelConfig` fields), as stored: for `ModelConfig::from_json`.
    pub architecture: Json,
    /// The checkpoint's inference config (or the v2.5 defaults) with the estimator's overrides
    /// applied, checked to be reproducible for member 0.
    pub inference: InferenceConfig,
    /// The checkpoint's `state_dict`, `criterion.*` of a regressor included.
    pub weights: StateDict,
    pub n_estimators: usize,
    pub random_state: u64,
    /// The user's `categorical_features_indices` (column positions), if any.
    pub categorical_features_indices: Option<Vec<usize>>,
    /// Whether tabpfn's size limits (`MAX_NUMBER_OF_FEATURES` / `_SAMPLES`, 1000 rows on CPU)
    /// were waived.
    pub ignore_pretraining_limits: bool,
    /// The file read: the `.tabpfn_fit`, the checkpoint or the joblib. `weights.source()` is
    /// the checkpoint it named.
    pub source: PathBuf,
}

impl SavedTabPfn {
    /// Reads `path` (`--model_weights`): a `.tabpfn_fit`, a bare torch checkpoint (with
    /// tabpfn's default params: 8 estimators, random_state 0, no overrides) or, with
    /// `finetuning_mode`, a joblib dump of a fitted estimator. A directory holding exactly one
    /// `*.tabpfn_fit` (or `*.joblib`) stands for it.
    pub fn load(path: &Path, finetuning_mode: bool) -> Result<SavedTabPfn> {
        let path = locate(path, finetuning_mode)?;
        let file = path.display();
        match (file_kind(&path)?, finetuning_mode) {
            (FileKind::Fit, false) => {
                let params = InitParams::from_json(&read_init_params(&path)?)
                    .with_context(|| format!("{file}: init_params.json"))?;
                let model = read_checkpoint(&params.checkpoint_path(&path)?)?;
                assemble(&path, params, model)
            }
            (FileKind::Checkpoint, false) => {
                let model = read_checkpoint(&path)?;
                assemble(&path, InitParams::defaults(model.task), model)
            }
            (FileKind::Pickle, true) => {
                let finetuned = finetuned::read(&path)?;
                let model = match finetuned.model {
                    Some(m) => Model {
                        task: Task::of_architecture(&m.architecture).with_context(|| format!("{file}: model_path"))?,
                        architecture: m.architecture,
                        inference: m.inference,
                        weights: m.weights,
                    },
                    None => read_checkpoint(&finetuned.params.checkpoint_path(&path)?)?,
                };
                assemble(&path, finetuned.params, model)
            }
            (FileKind::Pickle, false) => bail!(
                "{file} is a pickle (a joblib dump), not a .tabpfn_fit nor a torch checkpoint; if it is DeepTune's fine-tuned TabPFN, pass --finetuning-mode"
            ),
            (kind, true) => bail!(
                "--finetuning-mode reads the joblib dump DeepTune's fine-tuning writes, but {file} is {}; drop --finetuning-mode to read it",
                match kind {
                    FileKind::Fit => "a .tabpfn_fit",
                    _ => "a torch checkpoint",
                }
            ),
        }
    }
}

/// The weights file's contents, whatever file they came from.
struct Model {
    task: Task,
    architecture: Json,
    inference: InferenceConfig,
    weights: StateDict,
}

/// Puts the estimator's params and the model together: the task must agree, the overrides
/// apply (`override_with_user_input`, base.py l.536), and member 0 must be reproducible.
fn assemble(source: &Path, params: InitParams, model: Model) -> Result<SavedTabPfn> {
    let file = source.display();
    if params.task != model.task {
        bail!(
            "{file}: the estimator is a {} but its checkpoint {} was trained as a {}; tabpfn would {}. Give a {} checkpoint",
            params.task.estimator(),
            model.weights.source().display(),
            model.task.estimator(),
            match params.task {
                Task::Regression => "refuse it",
                Task::Classification => "run it with a regressor's preprocessing",
            },
            match params.task {
                Task::Regression => "regression",
                Task::Classification => "classification",
            }
        );
    }
    let inference = match &params.overrides {
        None => model.inference,
        Some(overrides) => model
            .inference
            .with_overrides(overrides)
            .with_context(|| format!("{file}: the estimator's inference_config"))?,
    };
    inference.check_reproducible(params.task).with_context(|| format!("{file}"))?;
    Ok(SavedTabPfn {
        task: params.task,
        architecture: model.architecture,
        inference,
        weights: model.weights,
        n_estimators: params.n_estimators,
        random_state: params.random_state,
        categorical_features_indices: params.categorical_features_indices,
        ignore_pretraining_limits: params.ignore_pretraining_limits,
        source: source.to_path_buf(),
    })
}

/// `model_path`: tabpfn's default checkpoint, or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ModelPath {
    Auto,
    File(String),
}

/// The estimator's init params that matter (docs/TABPFN.md §1), as `get_params` gives them.
#[derive(Debug, Clone, PartialEq)]
struct InitParams {
    task: Task,
    n_estimators: usize,
    random_state: u64,
    categorical_features_indices: Option<Vec<usize>>,
    /// `None` where the file holds the model itself (a fine-tuned estimator's model specs).
    model_path: Option<ModelPath>,
    /// `inference_config` overrides, field by field.
    overrides: Option<Map<String, Json>>,
    ignore_pretraining_limits: bool,
}

impl InitParams {
    /// tabpfn's defaults (classifier.py / regressor.py `__init__`), for a bare checkpoint.
    fn defaults(task: Task) -> InitParams {
        InitParams {
            task,
            n_estimators: 8,
            random_state: 0,
            categorical_features_indices: None,
            model_path: None,
            overrides: None,
            ignore_pretraining_limits: false,
        }
    }

    /// `init_params.json`: `get_params(deep=False)` plus `__class_name__`. Absent params take
    /// tabpfn's defaults; those that change the result and cannot be reproduced are refused.
    fn from_json(json: &Json) -> Result<InitParams> {
        let Json::Object(f) = json else { bail!("is not a mapping of parameters") };
        let task = match f.get("__class_name__").and_then(Json::as_str) {
            Some("TabPFNClassifier") => Task::Classification,
            Some("TabPFNRegressor") => Task::Regression,
            Some(other) => bail!("__class_name__ is '{other}'; deepembed reads TabPFNClassifier and TabPFNRegressor"),
            None => bail!("__class_name__ is missing: not written by tabpfn's save_fitted_tabpfn_model"),
        };
        let mut p = InitParams::defaults(task);
        if let Some(v) = f.get("n_estimators") {
            p.n_estimators = v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n >= 1)
                .ok_or_else(|| anyhow!("n_estimators is {v}, not a positive integer"))?;
        }
        match f.get("random_state") {
            None => {}
            Some(Json::Null) => bail!(
                "random_state is null: tabpfn then seeds every fit afresh, so its embeddings cannot be reproduced; refit with an integer random_state (DeepTune uses 0)"
            ),
            Some(v) => {
                p.random_state =
                    v.as_u64().ok_or_else(|| anyhow!("random_state is {v}, not a non-negative 64-bit integer"))?
            }
        }
        match f.get("categorical_features_indices") {
            None | Some(Json::Null) => {}
            Some(Json::Array(items)) => {
                let indices = items.iter().map(|i| i.as_u64().and_then(|i| usize::try_from(i).ok()));
                p.categorical_features_indices = Some(indices.collect::<Option<_>>().ok_or_else(|| {
                    anyhow!("categorical_features_indices holds something other than column positions (non-negative integers)")
                })?);
            }
            Some(v) => bail!("categorical_features_indices is {v}, not a list of column positions"),
        }
        p.model_path = match f.get("model_path") {
            None => None,
            Some(Json::String(s)) if s == "auto" => Some(ModelPath::Auto),
            Some(Json::String(s)) => Some(ModelPath::File(s.clone())),
            Some(Json::Array(paths)) => match paths.as_slice() {
                [Json::String(s)] => Some(ModelPath::File(s.clone())),
                _ => bail!("model_path lists {} checkpoints; deepembed reads one", paths.len()),
            },
            Some(v) => bail!("model_path is {v}, not a path nor \"auto\""),
        };
        p.overrides = match f.get("inference_config") {
            None | Some(Json::Null) => None,
            Some(Json::Object(o)) => Some(o.clone()),
            Some(v) => bail!("inference_config is {v}, not a mapping of InferenceConfig fields"),
        };
        match f.get("inference_precision") {
            None => {}
            Some(Json::String(s)) if s == "auto" || s == "torch.float32" => {}
            // On a GPU, "auto" means float16 autocast in tabpfn; deepembed's float32 then
            // differs by about 1e-3 (docs/TABPFN.md §7), which the plugin's docs state.
            Some(v) => bail!(
                "inference_precision is {v}; deepembed computes in float32, which is tabpfn's \"auto\" on CPU and \"torch.float32\""
            ),
        }
        match f.get("ignore_pretraining_limits") {
            None => {}
            Some(Json::Bool(b)) => p.ignore_pretraining_limits = *b,
            Some(v) => bail!("ignore_pretraining_limits is {v}, not true or false"),
        }
        // "low_memory" preprocesses at predict time, with other random draws than a fit's.
        match f.get("fit_mode").and_then(Json::as_str) {
            None | Some("fit_preprocessors" | "fit_with_cache" | "batched") => {}
            Some(mode) => bail!(
                "fit_mode is \"{mode}\": tabpfn then preprocesses each prediction afresh, which deepembed does not reproduce; refit with fit_mode=\"fit_preprocessors\" (tabpfn's default)"
            ),
        }
        if f.get("differentiable_input").is_some_and(|v| v != &Json::Bool(false) && !v.is_null()) {
            bail!(
                "differentiable_input is set: tabpfn then preprocesses differently, which deepembed does not reproduce"
            );
        }
        Ok(p)
    }

    /// The checkpoint `model_path` names: as tabpfn reads it (a relative path from the current
    /// directory) or, failing that, relative to `origin`'s directory, or its file name there (the
    /// files were moved together). A missing file is an error: tabpfn would download one,
    /// deepembed never does.
    fn checkpoint_path(&self, origin: &Path) -> Result<PathBuf> {
        let file = origin.display();
        match &self.model_path {
            None => bail!("{file}: the estimator names no model_path"),
            Some(ModelPath::Auto) => {
                let default = default_checkpoint(self.task, &Environment::current())
                    .with_context(|| format!("{file}: model_path is \"auto\" (tabpfn's default checkpoint)"))?;
                if default.path.is_file() {
                    return Ok(default.path);
                }
                let repo = match (default.version, self.task) {
                    (ModelVersion::V2_5, _) => "Prior-Labs/tabpfn_2_5",
                    (ModelVersion::V2, Task::Classification) => "Prior-Labs/TabPFN-v2-clf",
                    (ModelVersion::V2, Task::Regression) => "Prior-Labs/TabPFN-v2-reg",
                };
                bail!(
                    "{file}: model_path is \"auto\", so tabpfn's default {} checkpoint is needed: {} does not exist (tabpfn's cache directory: {}). deepembed never downloads models: put the file there (tabpfn downloads it from Hugging Face's {repo} on first use), or set TABPFN_MODEL_CACHE_DIR to the directory that holds it",
                    match self.task {
                        Task::Classification => "classifier",
                        Task::Regression => "regressor",
                    },
                    default.path.display(),
                    default.reason
                )
            }
            Some(ModelPath::File(name)) => {
                // tabpfn's own reading first; then, for files moved together, beside `origin`.
                let given = PathBuf::from(name);
                let mut candidates = vec![given.clone()];
                if let Some(dir) = origin.parent() {
                    if given.is_relative() {
                        candidates.push(dir.join(&given));
                    }
                    if let Some(base) = given.file_name() {
                        candidates.push(dir.join(base));
                    }
                }
                candidates.dedup();
                if let Some(found) = candidates.iter().find(|p| p.is_file()) {
                    if found != &given {
                        log::warn!("{file}: its model_path {name} is not a file; using {} instead", found.display());
                    }
                    return Ok(found.clone());
                }
                let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
                bail!(
                    "{file}: its checkpoint model_path '{name}' is not a file (looked for {}); tabpfn would try to download it, deepembed does not: put the checkpoint there",
                    looked.join(" and ")
                )
            }
        }
    }
}

/// What kind of file `--model_weights` is, by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Fit,
    Checkpoint,
    Pickle,
}

fn file_kind(path: &Path) -> Result<FileKind> {
    let file = path.display();
    let mut magic = Vec::with_capacity(14);
    File::open(path).and_then(|f| f.take(14).read_to_end(&mut magic)).with_context(|| format!("cannot read {file}"))?;
    // torch's legacy format starts with a pickle (protocol 2, LONG1) of its magic number.
    if magic.starts_with(b"\x80\x02\x8a\x0a") && magic[4..] == legacy::MAGIC {
        bail!("{file} is a torch checkpoint in the legacy (before PyTorch 1.6) format, which deepembed does not read; re-save it with a current torch.save");
    }
    if magic.first() == Some(&0x80) {
        return Ok(FileKind::Pickle);
    }
    if !magic.starts_with(b"PK\x03\x04") {
        bail!(
            "{file} is neither a .tabpfn_fit, a torch checkpoint nor an uncompressed joblib dump (a joblib dumped with compress=... is not read: dump it without)"
        );
    }
    let archive = zip::ZipArchive::new(File::open(path).with_context(|| format!("cannot read {file}"))?)
        .with_context(|| format!("{file} is not a readable zip archive"))?;
    let names: Vec<String> = archive.file_names().filter_map(|n| n.ok().map(|n| n.into_owned())).collect();
    if names.iter().any(|n| n == "init_params.json") {
        Ok(FileKind::Fit)
    } else if names.iter().any(|n| n == "data.pkl" || n.ends_with("/data.pkl")) {
        Ok(FileKind::Checkpoint)
    } else {
        bail!("{file} is a zip archive with neither init_params.json (a .tabpfn_fit) nor data.pkl (a torch checkpoint)")
    }
}

/// `path`, or the one `*.tabpfn_fit` (`*.joblib` in fine-tuning mode) in the directory `path`.
fn locate(path: &Path, finetuning_mode: bool) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        bail!("--model_weights {}: no such file or directory", path.display());
    }
    let extension = if finetuning_mode { "joblib" } else { "tabpfn_fit" };
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            bail!("--model_weights {}: the directory holds no *.{extension} file; give the file itself", path.display())
        }
        n => bail!(
            "--model_weights {}: the directory holds {n} *.{extension} files; give the one to use",
            path.display()
        ),
    }
}

/// The largest `init_params.json` read: tabpfn writes well under a kilobyte, a few more with
/// inference overrides.
const MAX_INIT_PARAMS_BYTES: u64 = 16 << 20;

/// `init_params.json` of a `.tabpfn_fit`. The joblib members beside it are never opened: the
/// embeddings refit everything (docs/TABPFN.md §1), and they pickle arbitrary classes.
fn read_init_params(path: &Path) -> Result<Json> {
    let file = path.display();
    let mut archive = zip::ZipArchive::new(File::open(path).with_context(|| format!("cannot read {file}"))?)
        .with_context(|| format!("{file} is not a readable zip archive"))?;
    let entry = archive.by_name("init_params.json").with_context(|| format!("{file}: no init_params.json"))?;
    if entry.size() > MAX_INIT_PARAMS_BYTES {
        bail!("{file}: init_params.json is {} bytes, more than a tabpfn estimator's parameters take", entry.size());
    }
    let mut text = String::new();
    entry
        .take(MAX_INIT_PARAMS_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("{file}: cannot read init_params.json"))?;
    serde_json::from_str(&text).with_context(|| format!("{file}: init_params.json is not valid JSON"))
}

/// A torch checkpoint (model_loading.py `load_model`, l.740): `state_dict`, `config`, and the
/// inference config as `_get_inference_config_from_checkpoint` (l.802) picks it.
fn read_checkpoint(path: &Path) -> Result<Model> {
    let file = path.display();
    let checkpoint = Checkpoint::open(path)?;
    let root = checkpoint.root();
    if root.get("state_dict").and_then(Value::dict_entries).is_none() {
        bail!("{file} has no state_dict: not a tabpfn checkpoint");
    }
    let config = root.get("config").ok_or_else(|| anyhow!("{file} has no config: not a tabpfn checkpoint"))?;
    let architecture = pyjson::to_json(config, "config").with_context(|| format!("{file}"))?;
    if !architecture.is_object() {
        bail!("{file}: its config is not a mapping of ModelConfig fields");
    }
    let task = Task::of_architecture(&architecture).with_context(|| format!("{file}"))?;
    let architecture_name = match root.get("architecture_name") {
        None => None,
        Some(Value::Str(name)) if name == "base" => Some(name.as_str()),
        Some(other) => bail!(
            "{file}: architecture_name is {}; tabpfn 6.2 (and deepembed) know only 'base'",
            other.as_str().map_or_else(|| other.type_name(), |s| format!("'{s}'"))
        ),
    };
    let stored = match root.get("inference_config") {
        None => None,
        Some(v) => Some(pyjson::to_json(v, "inference_config").with_context(|| format!("{file}"))?),
    };
    let inference =
        checkpoint_inference(stored.as_ref(), architecture_name.is_some(), task).with_context(|| format!("{file}"))?;
    let weights = checkpoint.state_dict()?;
    Ok(Model { task, architecture, inference, weights })
}

/// `_get_inference_config_from_checkpoint`: the stored config when non-empty, else the v2.5
/// defaults when the checkpoint has an `architecture_name`, else (a v2 checkpoint) refused.
fn checkpoint_inference(stored: Option<&Json>, has_architecture_name: bool, task: Task) -> Result<InferenceConfig> {
    match stored {
        // Python's truthiness: None and an empty dict fall through to the defaults.
        None | Some(Json::Null) => {}
        Some(Json::Object(fields)) if fields.is_empty() => {}
        Some(Json::Object(fields)) => return InferenceConfig::from_fields(fields).context("its inference_config"),
        Some(other) => bail!("its inference_config is {other}, not a mapping of InferenceConfig fields"),
    }
    if has_architecture_name {
        return Ok(InferenceConfig::v2_5_default(task));
    }
    bail!(
        "it is a TabPFN v2 checkpoint (no architecture_name, no inference_config), whose default preprocessing deepembed does not reproduce; use a v2.5 checkpoint"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn init_params_read_as_deeptune_writes_them() {
        // out/cls-minimal.tabpfn_fit's init_params.json, keys as tabpfn writes them.
        let p = InitParams::from_json(&json!({
            "average_before_softmax": false, "categorical_features_indices": [0, 3], "device": "cpu",
            "differentiable_input": false, "fit_mode": "fit_preprocessors", "ignore_pretraining_limits": true,
            "inference_config": {"FINGERPRINT_FEATURE": false}, "inference_precision": "auto",
            "model_path": "out/tiny.ckpt", "n_estimators": 1, "random_state": 7, "softmax_temperature": 0.9,
            "__class_name__": "TabPFNRegressor"
        }))
        .unwrap();
        assert_eq!(p.task, Task::Regression);
        assert_eq!((p.n_estimators, p.random_state), (1, 7));
        assert_eq!(p.categorical_features_indices, Some(vec![0, 3]));
        assert_eq!(p.model_path, Some(ModelPath::File("out/tiny.ckpt".into())));
        assert_eq!(p.overrides.as_ref().and_then(|o| o.get("FINGERPRINT_FEATURE")), Some(&json!(false)));
        assert!(p.ignore_pretraining_limits);
        // Only the class name is required; the rest default as tabpfn's __init__ does.
        let d = InitParams::from_json(&json!({"__class_name__": "TabPFNClassifier", "model_path": "auto"})).unwrap();
        assert_eq!(d, InitParams { model_path: Some(ModelPath::Auto), ..InitParams::defaults(Task::Classification) });
    }

    #[test]
    fn unreproducible_init_params_are_refused_by_name() {
        let cases = [
            (json!({"random_state": null}), "random_state is null"),
            (json!({"random_state": -1}), "random_state is -1"),
            (json!({"n_estimators": 0}), "n_estimators is 0"),
            (json!({"inference_precision": "torch.float16"}), "inference_precision is \"torch.float16\""),
            (json!({"inference_precision": "autocast"}), "inference_precision"),
            (json!({"differentiable_input": true}), "differentiable_input"),
            (json!({"fit_mode": "low_memory"}), "fit_mode is \"low_memory\""),
            (json!({"categorical_features_indices": [1, -2]}), "categorical_features_indices"),
            (json!({"model_path": ["a.ckpt", "b.ckpt"]}), "lists 2 checkpoints"),
            (json!({"inference_config": [1]}), "inference_config is [1]"),
            (json!({"__class_name__": "TabPFNUnsupervisedModel"}), "__class_name__ is 'TabPFNUnsupervisedModel'"),
        ];
        for (overrides, expected) in cases {
            let mut params = json!({"__class_name__": "TabPFNClassifier", "model_path": "auto"});
            for (k, v) in overrides.as_object().unwrap() {
                params[k] = v.clone();
            }
            let err = InitParams::from_json(&params).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        assert!(InitParams::from_json(&json!({"n_estimators": 8}))
            .unwrap_err()
            .to_string()
            .contains("__class_name__ is missing"));
    }

    #[test]
    fn the_task_comes_from_max_num_classes() {
        assert_eq!(Task::of_architecture(&json!({"max_num_classes": 10})).unwrap(), Task::Classification);
        assert_eq!(Task::of_architecture(&json!({"max_num_classes": 2})).unwrap(), Task::Classification);
        assert_eq!(
            Task::of_architecture(&json!({"max_num_classes": 0, "num_buckets": 5000})).unwrap(),
            Task::Regression
        );
        assert!(Task::of_architecture(&json!({"max_num_classes": 1})).is_err());
        assert!(Task::of_architecture(&json!({"emsize": 192})).is_err());
    }

    #[test]
    fn the_inference_config_is_picked_as_tabpfn_picks_it() {
        let minimal = json!({"PREPROCESS_TRANSFORMS": [{"name": "none"}], "FINGERPRINT_FEATURE": false});
        // A stored config wins, with dataclass defaults for the rest.
        let c = checkpoint_inference(Some(&minimal), true, Task::Classification).unwrap();
        assert!(!c.fingerprint_feature);
        assert_eq!(c.max_number_of_features, 500);
        // Also in a checkpoint without architecture_name: it is then a post-v2.5 one.
        assert!(checkpoint_inference(Some(&minimal), false, Task::Regression).is_ok());
        // No (or an empty) stored config: v2.5 defaults, for the checkpoint's task.
        for stored in [None, Some(json!(null)), Some(json!({}))] {
            let c = checkpoint_inference(stored.as_ref(), true, Task::Regression).unwrap();
            assert_eq!(c, InferenceConfig::v2_5_default(Task::Regression));
            let err = checkpoint_inference(stored.as_ref(), false, Task::Regression).unwrap_err().to_string();
            assert!(err.contains("v2 checkpoint"), "{err}");
        }
    }

    #[test]
    fn overrides_apply_and_the_task_must_match() {
        let base = InferenceConfig::v2_5_default(Task::Classification);
        let model = |task| Model {
            task,
            architecture: json!({"max_num_classes": 10}),
            inference: base.clone(),
            weights: StateDict::new(PathBuf::from("m.ckpt"), Default::default()),
        };
        let mut params = InitParams::defaults(Task::Classification);
        params.overrides = Some(json!({"FINGERPRINT_FEATURE": false}).as_object().unwrap().clone());
        let saved = assemble(Path::new("m.tabpfn_fit"), params.clone(), model(Task::Classification)).unwrap();
        assert!(!saved.inference.fingerprint_feature);
        assert_eq!(saved.inference.preprocess_transforms, base.preprocess_transforms);
        let err = assemble(Path::new("m.tabpfn_fit"), params.clone(), model(Task::Regression)).err().unwrap();
        assert!(err.to_string().contains("trained as a TabPFNRegressor"), "{err}");
        params.overrides = Some(json!({"POLYNOMIAL_FEATURES": "all"}).as_object().unwrap().clone());
        let err = assemble(Path::new("m.tabpfn_fit"), params, model(Task::Classification)).err().unwrap();
        assert!(format!("{err:#}").contains("POLYNOMIAL_FEATURES"), "{err:#}");
    }

    #[test]
    fn files_are_told_apart_by_content() {
        let dir = std::env::temp_dir().join(format!("deepembed-tabpfn-kind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let zip_with = |name: &str, member: &str| {
            let path = dir.join(name);
            let mut z = zip::ZipWriter::new(File::create(&path).unwrap());
            z.start_file(member, zip::write::SimpleFileOptions::default()).unwrap();
            std::io::Write::write_all(&mut z, b"{}").unwrap();
            z.finish().unwrap();
            path
        };
        let raw = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        assert_eq!(file_kind(&zip_with("m.tabpfn_fit", "init_params.json")).unwrap(), FileKind::Fit);
        assert_eq!(file_kind(&zip_with("m.ckpt", "archive/data.pkl")).unwrap(), FileKind::Checkpoint);
        assert_eq!(file_kind(&raw("m.joblib", b"\x80\x04\x95")).unwrap(), FileKind::Pickle);
        let mut legacy_file = b"\x80\x02\x8a\x0a".to_vec();
        legacy_file.extend_from_slice(&legacy::MAGIC);
        let refused = [
            (raw("old.pt", &legacy_file), "legacy"),
            (raw("m.txt", b"hello"), "neither"),
            (zip_with("other.zip", "x.txt"), "neither init_params.json"),
        ];
        for (path, expected) in refused {
            let err = file_kind(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        // A directory stands for its one file of the mode's kind.
        assert_eq!(locate(&dir, true).unwrap(), dir.join("m.joblib"));
        assert_eq!(locate(&dir, false).unwrap(), dir.join("m.tabpfn_fit"));
        raw("n.joblib", b"\x80");
        assert!(locate(&dir, true).unwrap_err().to_string().contains("holds 2 *.joblib files"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_model_path_is_reported_where_it_was_looked_for() {
        let dir = std::env::temp_dir().join(format!("deepembed-tabpfn-saved-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let origin = dir.join("m.tabpfn_fit");
        let mut params = InitParams::defaults(Task::Classification);
        params.model_path = Some(ModelPath::File("nowhere-7f3a.ckpt".into()));
        let err = params.checkpoint_path(&origin).unwrap_err().to_string();
        assert!(
            err.contains("nowhere-7f3a.ckpt") && err.contains(&dir.join("nowhere-7f3a.ckpt").display().to_string()),
            "{err}"
        );
        // Found beside the .tabpfn_fit when not in the current directory.
        std::fs::write(dir.join("nowhere-7f3a.ckpt"), b"x").unwrap();
        assert_eq!(params.checkpoint_path(&origin).unwrap(), dir.join("nowhere-7f3a.ckpt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Compares [`SavedTabPfn::load`] with what tabpfn 6.2 itself reads from the same files:
    /// `saved/devcheck.py OUT FILE...` dumps it, then
    /// `TABPFN_SAVED_DEVCHECK=OUT cargo test --release -p deepembed-tabpfn devcheck -- --ignored`.
    /// Task, params, the resolved inference config, the architecture config and every weight
    /// (bit for bit) must agree.
    #[test]
    #[ignore = "needs dumps from tabpfn (saved/devcheck.py) named by TABPFN_SAVED_DEVCHECK"]
    fn devcheck_against_tabpfn() {
        let dir =
            PathBuf::from(std::env::var("TABPFN_SAVED_DEVCHECK").expect("TABPFN_SAVED_DEVCHECK=<devcheck.py's OUT>"));
        let manifest: Json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
        for entry in manifest.as_array().unwrap() {
            let input = PathBuf::from(entry["input"].as_str().unwrap());
            let dump = entry["dump"].as_str().unwrap();
            let expected: Json =
                serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{dump}.json"))).unwrap()).unwrap();
            let start = std::time::Instant::now();
            let saved = SavedTabPfn::load(&input, entry["finetuning"].as_bool().unwrap())
                .unwrap_or_else(|e| panic!("{}: {e:#}", input.display()));
            let what = input.display().to_string();
            let task = match saved.task {
                Task::Classification => "classifier",
                Task::Regression => "regressor",
            };
            assert_eq!(task, expected["task"], "{what}");
            assert_eq!(saved.n_estimators as u64, expected["n_estimators"].as_u64().unwrap(), "{what}");
            assert_eq!(saved.random_state, expected["random_state"].as_u64().unwrap(), "{what}");
            let cat: Option<Vec<usize>> =
                serde_json::from_value(expected["categorical_features_indices"].clone()).unwrap();
            assert_eq!(saved.categorical_features_indices, cat, "{what}");
            assert_eq!(Json::Bool(saved.ignore_pretraining_limits), expected["ignore_pretraining_limits"], "{what}");
            assert_eq!(Json::Object(saved.inference.to_fields()), expected["inference"], "{what}: inference config");
            assert_eq!(saved.architecture, expected["architecture"], "{what}: architecture config");
            let reference = StateDict::load(&dir.join(format!("{dump}.pt"))).unwrap();
            let names = |sd: &StateDict| sd.keys().cloned().collect::<Vec<_>>();
            assert_eq!(names(&saved.weights), names(&reference), "{what}: weight names");
            for name in reference.keys() {
                let (ours, t) = (saved.weights.tensor(name).unwrap(), reference.tensor(name).unwrap());
                assert_eq!((ours.size(), ours.kind()), (t.size(), t.kind()), "{what}: {name}");
                assert!(ours.equal(&t), "{what}: {name} differs");
            }
            println!("{what}: {} tensors agree ({:.2?})", reference.len(), start.elapsed());
        }
    }
}

//! `--finetuning-mode`: DeepTune's joblib dump of a fitted `TabPFNClassifier` /
//! `TabPFNRegressor` (docs/TABPFN.md §1), read as data. Its `model_path` is a `ClassifierModelSpecs` /
//! `RegressorModelSpecs` holding the fine-tuned `PerFeatureTransformer` itself, its
//! `ModelConfig` and the `InferenceConfig` resolved at fine-tuning time; the estimator's own
//! `__dict__` holds its init params. Nothing in the file is executed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::checkpoint::{read_pickle_file, Object, StateDict, Value};
use serde_json::{Map, Value as Json};
use tch::Tensor;

use super::inference::InferenceConfig;
use super::pyjson::{dataclass_fields, to_json};
use super::{legacy, InitParams, Task};

/// What the joblib gives: the estimator's init params and, when its `model_path` is a model
/// specs object, the model itself.
pub struct Finetuned {
    pub params: InitParams,
    /// `None` when `model_path` is a path (or "auto"), read like a `.tabpfn_fit`'s.
    pub model: Option<SpecsModel>,
}

/// The contents of a `ClassifierModelSpecs` / `RegressorModelSpecs`.
pub struct SpecsModel {
    pub architecture: Json,
    pub inference: InferenceConfig,
    pub weights: StateDict,
}

/// The estimator params read from its `__dict__` (the names `get_params` gives).
const PARAMS: [&str; 7] = [
    "n_estimators",
    "random_state",
    "categorical_features_indices",
    "inference_config",
    "inference_precision",
    "ignore_pretraining_limits",
    "differentiable_input",
];

pub fn read(path: &Path) -> Result<Finetuned> {
    let root = read_pickle_file(path)?;
    let file = path.display();
    let Value::Object(estimator) = &root else {
        bail!("{file} holds a {}, not a fitted TabPFNClassifier or TabPFNRegressor", root.type_name());
    };
    let task = match (estimator.module.as_str(), estimator.name.as_str()) {
        ("tabpfn.classifier", "TabPFNClassifier") => Task::Classification,
        ("tabpfn.regressor", "TabPFNRegressor") => Task::Regression,
        (module, name) => bail!(
            "{file} holds a {module}.{name}, not a fitted tabpfn TabPFNClassifier or TabPFNRegressor (what DeepTune's fine-tuning saves)"
        ),
    };
    let state =
        estimator.state.as_ref().filter(|s| s.dict_entries().is_some()).ok_or_else(|| {
            anyhow!("{file}: the {} has no attributes (was it pickled by joblib.dump?)", estimator.name)
        })?;
    let mut fields = Map::new();
    fields.insert("__class_name__".into(), Json::from(estimator.name.as_str()));
    for key in PARAMS {
        let Some(value) = state.get(key) else { continue };
        if key == "random_state" && matches!(value, Value::Object(_)) {
            bail!(
                "{file}: random_state is a {}, not an integer: its draws cannot be reproduced; refit with an integer random_state (DeepTune uses 0)",
                value.type_name()
            );
        }
        fields.insert(key.into(), to_json(value, key).with_context(|| format!("{file}"))?);
    }
    let model_path = state.get("model_path").ok_or_else(|| anyhow!("{file}: the estimator has no model_path"))?;
    let model = match model_path {
        Value::Object(specs) => Some(read_specs(specs, task, path).with_context(|| format!("{file}: model_path"))?),
        other => {
            fields.insert("model_path".into(), to_json(other, "model_path").with_context(|| format!("{file}"))?);
            None
        }
    };
    let params = InitParams::from_json(&Json::Object(fields)).with_context(|| format!("{file}"))?;
    Ok(Finetuned { params, model })
}

/// `ClassifierModelSpecs(model, architecture_config, inference_config)` /
/// `RegressorModelSpecs(..., norm_criterion)` (tabpfn/base.py).
fn read_specs(specs: &Object, task: Task, path: &Path) -> Result<SpecsModel> {
    let expected = match task {
        Task::Classification => "ClassifierModelSpecs",
        Task::Regression => "RegressorModelSpecs",
    };
    if specs.module != "tabpfn.base" || !matches!(specs.name.as_str(), "ClassifierModelSpecs" | "RegressorModelSpecs") {
        bail!("is a {}.{}, not a path nor tabpfn's model specs", specs.module, specs.name);
    }
    if specs.name != expected {
        // tabpfn raises a TypeError for this pairing.
        bail!("is a {} inside a {} estimator; tabpfn refuses that pairing", specs.name, task.estimator());
    }
    let get = |key: &str| {
        dataclass_fields(specs)
            .and_then(|f| f.iter().find(|(k, _)| k.as_str() == Some(key)))
            .map(|(_, v)| v)
            .ok_or_else(|| anyhow!("{} has no {key}", specs.name))
    };
    let architecture = match get("architecture_config")? {
        Value::Object(o) if o.name == "ModelConfig" => to_json(&Value::Object(o.clone()), "architecture_config")?,
        other => bail!("architecture_config is a {}, not tabpfn's ModelConfig", other.type_name()),
    };
    let inference = match to_json(get("inference_config")?, "inference_config")? {
        Json::Object(fields) => InferenceConfig::from_fields(&fields).context("inference_config")?,
        _ => bail!("inference_config is not an InferenceConfig"),
    };
    let model = match get("model")? {
        Value::Object(o) => o,
        other => bail!("model is a {}, not a PerFeatureTransformer", other.type_name()),
    };
    if model.module != "tabpfn.architectures.base.transformer" || model.name != "PerFeatureTransformer" {
        bail!("model is a {}.{}; deepembed reads tabpfn's base PerFeatureTransformer", model.module, model.name);
    }
    let mut tensors = BTreeMap::new();
    collect_module(model, "", &mut tensors).context("model")?;
    // The regressor's bar distribution, named as a checkpoint names it.
    if let Ok(Value::Object(criterion)) = get("norm_criterion") {
        collect_module(criterion, "criterion.", &mut tensors).context("norm_criterion")?;
    }
    Ok(SpecsModel { architecture, inference, weights: StateDict::new(path.to_path_buf(), tensors) })
}

/// A pickled `torch.nn.Module`'s `state_dict()`: its parameters, its persistent buffers, then
/// its submodules', depth first, each name prefixed by its path (`transformer_encoder.layers.0.`).
fn collect_module(module: &Object, prefix: &str, out: &mut BTreeMap<String, Tensor>) -> Result<()> {
    let state =
        module.state.as_ref().ok_or_else(|| anyhow!("{prefix}: the {} module has no attributes", module.name))?;
    let entries = |key: &str| state.get(key).and_then(Value::dict_entries).unwrap_or_default();
    let non_persistent: Vec<&str> = match state.get("_non_persistent_buffers_set") {
        Some(Value::Set(names) | Value::List(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let tensors =
        entries("_parameters").iter().map(|e| (e, true)).chain(entries("_buffers").iter().map(|e| (e, false)));
    for ((name, value), is_parameter) in tensors {
        let name = name.as_str().ok_or_else(|| anyhow!("{prefix}: a tensor of {} has no name", module.name))?;
        if matches!(value, Value::None) || (!is_parameter && non_persistent.contains(&name)) {
            continue;
        }
        let key = format!("{prefix}{name}");
        let tensor = match value {
            Value::Object(call) => legacy::rebuild_tensor(call).with_context(|| format!("tensor '{key}'"))?,
            other => bail!("tensor '{key}' is a {}, not a pickled tensor", other.type_name()),
        };
        out.insert(key, tensor);
    }
    for (name, child) in entries("_modules") {
        let name = name.as_str().ok_or_else(|| anyhow!("{prefix}: a submodule of {} has no name", module.name))?;
        match child {
            Value::None => {}
            Value::Object(child) => collect_module(child, &format!("{prefix}{name}."), out)?,
            other => bail!("submodule '{prefix}{name}' is a {}, not a module", other.type_name()),
        }
    }
    Ok(())
}

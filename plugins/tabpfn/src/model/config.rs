//! The architecture config of a tabpfn checkpoint (`architectures/base/config.py:ModelConfig`,
//! tabpfn 6.2): the checkpoint's `config` dict, already converted to JSON, passed through
//! `ModelConfig.upgrade_config` and filled with the dataclass defaults, keeping the fields the
//! forward pass needs. Settings the port does not reproduce are refused here, by name, before any
//! weight is read.

use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};

/// What the checkpoint was trained for, from `max_num_classes` (`>= 2`: a classifier; `0`: a
/// regressor with a bar-distribution head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Classification,
    Regression,
}

/// `ModelConfig.feature_positional_embedding`: what is added to each feature group's tokens so
/// the model can tell the groups apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionalEmbedding {
    /// `randn(groups, emsize/4)` through a learned `Linear(emsize/4, emsize)`.
    Subspace,
    /// `randn(groups, emsize)`.
    NormalRandVec,
    /// `2 * rand(groups, emsize) - 1`.
    UniRandVec,
    /// Rows `randint(0, 1000, (groups,))` of a learned `[1000, emsize]` table.
    Learned,
    /// JSON `null`: nothing is added.
    None,
}

/// The fields of tabpfn's `ModelConfig` that the forward pass up to the embedding depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub emsize: i64,
    pub nhead: i64,
    pub features_per_group: i64,
    pub nlayers: i64,
    /// The MLP's hidden width is `emsize * nhid_factor`.
    pub nhid_factor: i64,
    /// Seed of the generator the feature positional embedding is drawn from.
    pub seed: i64,
    pub num_thinking_rows: i64,
    pub feature_positional_embedding: PositionalEmbedding,
    /// Eval rows attend to the context with head 0's keys and values shared by all heads.
    pub multiquery_item_attention_for_test_set: bool,
    pub encoder_use_bias: bool,
    /// A parameterless (no-op) encoder step; it shifts the linear encoder's index by one.
    pub remove_duplicate_features: bool,
    pub max_num_classes: i64,
    pub num_buckets: i64,
}

/// The width of the learned table behind [`PositionalEmbedding::Learned`] (`nn.Embedding(1_000,
/// emsize)` in tabpfn).
pub const LEARNED_POSITIONS: i64 = 1000;

impl ModelConfig {
    /// Parses the checkpoint's `config` dict (as JSON) the way `architectures/base:parse_config`
    /// does: `upgrade_config`, then the dataclass with its defaults and validation. Keys the
    /// dataclass does not know are ignored, as tabpfn ignores them.
    pub fn from_json(value: &Value) -> Result<ModelConfig> {
        let Some(raw) = value.as_object() else {
            bail!("the checkpoint's config is not a dict (found {}); is this a tabpfn checkpoint?", kind_of(value));
        };
        let config = upgrade(raw)?;
        let c = Fields(&config);

        // Fields whose only allowed value is fixed (pydantic `Literal[...]`): tabpfn itself refuses
        // any other value, so a checkpoint carrying one was not made by the tabpfn we reproduce.
        for (name, want) in [
            ("nan_handling_enabled", true),
            ("nan_handling_y_encoder", true),
            ("normalize_by_used_features", true),
            ("normalize_on_train_only", true),
            ("normalize_x", true),
            ("remove_empty_features", true),
            ("normalize_to_ranking", false),
            ("remove_outliers", false),
            ("multiquery_item_attention", false),
        ] {
            let got = c.bool(name, want)?;
            if got != want {
                bail!("checkpoint config: '{name}' is {got}; tabpfn 6.2 only allows {want}");
            }
        }
        if c.bool("use_separate_decoder", false)? {
            bail!("checkpoint config: 'use_separate_decoder' is true; separate-decoder models are not supported");
        }
        for name in ["item_attention_type", "feature_attention_type"] {
            let got = c.string(name, "full")?;
            if got != "full" {
                bail!("checkpoint config: '{name}' is \"{got}\"; only \"full\" attention exists in tabpfn 6.2");
            }
        }
        match c.string("encoder_type", "linear")?.as_str() {
            "linear" => {}
            "mlp" => bail!(
                "checkpoint config: 'encoder_type' is \"mlp\"; only the linear input encoder is ported (an MLP encoder is not supported yet)"
            ),
            other => bail!("checkpoint config: 'encoder_type' is \"{other}\"; expected \"linear\" or \"mlp\""),
        }
        // tabpfn asserts dag_pos_enc_dim is None or 0 when no DAGs are given, which is always the
        // case for the estimators.
        if let Some(v) = config.get("dag_pos_enc_dim").filter(|v| !v.is_null()) {
            let dim = int_value("dag_pos_enc_dim", v)?;
            if dim != 0 {
                bail!("checkpoint config: 'dag_pos_enc_dim' is {dim}; DAG positional encodings are not supported");
            }
        }
        let feature_positional_embedding = match config.get("feature_positional_embedding") {
            None => PositionalEmbedding::Subspace,
            Some(Value::Null) => PositionalEmbedding::None,
            Some(Value::String(s)) => match s.as_str() {
                "subspace" => PositionalEmbedding::Subspace,
                "normal_rand_vec" => PositionalEmbedding::NormalRandVec,
                "uni_rand_vec" => PositionalEmbedding::UniRandVec,
                "learned" => PositionalEmbedding::Learned,
                other => bail!(
                    "checkpoint config: 'feature_positional_embedding' is \"{other}\"; expected \"subspace\", \"normal_rand_vec\", \"uni_rand_vec\", \"learned\" or null"
                ),
            },
            Some(other) => bail!("checkpoint config: 'feature_positional_embedding' is {}, expected a string or null", kind_of(other)),
        };

        let config = ModelConfig {
            emsize: c.int("emsize", 192)?,
            nhead: c.int("nhead", 6)?,
            features_per_group: c.int("features_per_group", 2)?,
            nlayers: c.int("nlayers", 12)?,
            nhid_factor: c.int("nhid_factor", 4)?,
            seed: c.int("seed", 0)?,
            num_thinking_rows: c.int("num_thinking_rows", 0)?,
            feature_positional_embedding,
            multiquery_item_attention_for_test_set: c.bool("multiquery_item_attention_for_test_set", true)?,
            encoder_use_bias: c.bool("encoder_use_bias", false)?,
            remove_duplicate_features: c.bool("remove_duplicate_features", false)?,
            max_num_classes: c.required_int("max_num_classes")?,
            num_buckets: c.required_int("num_buckets")?,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        for (name, value, min) in [
            ("emsize", self.emsize, 1),
            ("nhead", self.nhead, 1),
            ("features_per_group", self.features_per_group, 1),
            ("nlayers", self.nlayers, 0),
            ("nhid_factor", self.nhid_factor, 1),
            ("num_thinking_rows", self.num_thinking_rows, 0),
            ("num_buckets", self.num_buckets, 0),
        ] {
            if value < min {
                bail!("checkpoint config: '{name}' is {value}, expected at least {min}");
            }
        }
        if self.emsize % self.nhead != 0 {
            bail!("checkpoint config: 'emsize' {} is not divisible by 'nhead' {}", self.emsize, self.nhead);
        }
        if self.feature_positional_embedding == PositionalEmbedding::Subspace && self.emsize < 4 {
            bail!(
                "checkpoint config: 'emsize' {} is too small for the subspace positional embedding (emsize/4 = 0)",
                self.emsize
            );
        }
        self.task()?;
        Ok(())
    }

    /// Classification for `max_num_classes >= 2`, regression for `0`; tabpfn has no head for
    /// any other value.
    pub fn task(&self) -> Result<Task> {
        match self.max_num_classes {
            0 => Ok(Task::Regression),
            n if n >= 2 => Ok(Task::Classification),
            n => bail!("checkpoint config: 'max_num_classes' is {n}; tabpfn needs 0 (a regressor) or at least 2 (a classifier)"),
        }
    }

    /// `emsize / nhead`.
    pub fn head_dim(&self) -> i64 {
        self.emsize / self.nhead
    }

    /// The feature groups `n_features` columns make (the last one zero-padded).
    pub fn groups(&self, n_features: i64) -> i64 {
        (n_features + self.features_per_group - 1) / self.features_per_group
    }

    /// Index of the linear input encoder in `encoder.*`: after RemoveEmpty, [RemoveDuplicate],
    /// NanHandling, VariableNum (NaN indicators), InputNormalization, VariableNum.
    pub fn encoder_index(&self) -> usize {
        if self.remove_duplicate_features {
            6
        } else {
            5
        }
    }

    /// Index of the linear step in `y_encoder.*`: after NanHandling and, for a classifier, the
    /// MulticlassClassificationTargetEncoder.
    pub fn y_encoder_index(&self) -> usize {
        if self.max_num_classes >= 2 {
            2
        } else {
            1
        }
    }
}

/// `ModelConfig.upgrade_config`: renames and refusals for configs of older tabpfn versions.
fn upgrade(raw: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut config = raw.clone();
    config.remove("use_flash_attention");
    if let Some(kind) = config.remove("attention_type") {
        if config.contains_key("item_attention_type") || config.contains_key("feature_attention_type") {
            bail!("checkpoint config: has both the old 'attention_type' and the new 'item_attention_type'/'feature_attention_type'; tabpfn refuses such a config");
        }
        config.insert("item_attention_type".into(), kind.clone());
        config.insert("feature_attention_type".into(), kind);
    }
    // tabpfn tests `config.get(key, False) is not False`: anything but an explicit false (or
    // absence) is refused, null included.
    for key in ["canonical_y_encoder", "bias"] {
        if let Some(v) = config.get(key) {
            if *v != Value::Bool(false) {
                bail!("checkpoint config: '{key}' is {v}; tabpfn 6.2 only supports {key}=False");
            }
        }
    }
    if config.remove("two_sets_of_queries").is_some_and(|v| truthy(&v)) {
        bail!("checkpoint config: 'two_sets_of_queries' is set; tabpfn 6.2 no longer supports it");
    }
    Ok(config)
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dict",
    }
}

/// An integer field; an integral float (`192.0`) is accepted as pydantic accepts it.
fn int_value(name: &str, v: &Value) -> Result<i64> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(anyhow!("checkpoint config: '{name}' is {v}, expected an integer")),
    }
}

/// Typed lookups with tabpfn's defaults for absent keys.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn int(&self, name: &str, default: i64) -> Result<i64> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => int_value(name, v),
        }
    }

    fn required_int(&self, name: &str) -> Result<i64> {
        match self.0.get(name) {
            None => bail!("checkpoint config: has no '{name}' (tabpfn requires it)"),
            Some(v) => int_value(name, v),
        }
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.0.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            // pydantic's lax mode takes 0 and 1 for booleans.
            Some(v) if v.as_i64() == Some(0) => Ok(false),
            Some(v) if v.as_i64() == Some(1) => Ok(true),
            Some(v) => bail!("checkpoint config: '{name}' is {v}, expected true or false"),
        }
    }

    fn string(&self, name: &str, default: &str) -> Result<String> {
        match self.0.get(name) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => bail!("checkpoint config: '{name}' is {v}, expected a string"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_json(&v)
    }

    fn error(v: Value) -> String {
        format!("{:#}", parse(v).unwrap_err())
    }

    #[test]
    fn absent_keys_take_the_dataclass_defaults() {
        let c = parse(json!({"max_num_classes": 10, "num_buckets": 0})).unwrap();
        assert_eq!(
            c,
            ModelConfig {
                emsize: 192,
                nhead: 6,
                features_per_group: 2,
                nlayers: 12,
                nhid_factor: 4,
                seed: 0,
                num_thinking_rows: 0,
                feature_positional_embedding: PositionalEmbedding::Subspace,
                multiquery_item_attention_for_test_set: true,
                encoder_use_bias: false,
                remove_duplicate_features: false,
                max_num_classes: 10,
                num_buckets: 0,
            }
        );
        assert_eq!(c.task().unwrap(), Task::Classification);
        assert_eq!(c.head_dim(), 32);
        assert_eq!((c.encoder_index(), c.y_encoder_index()), (5, 2));
    }

    #[test]
    fn present_keys_override_and_unknown_keys_are_ignored() {
        let c = parse(json!({
            "max_num_classes": 0, "num_buckets": 5000, "emsize": 32.0, "nhead": 4, "features_per_group": 3,
            "nlayers": 2, "nhid_factor": 2, "seed": 42, "num_thinking_rows": 4,
            "feature_positional_embedding": null, "multiquery_item_attention_for_test_set": false,
            "encoder_use_bias": true, "remove_duplicate_features": true, "dropout": 0.1,
            "recompute_layer": false, "some_future_key": [1, 2],
        }))
        .unwrap();
        assert_eq!((c.emsize, c.nhead, c.features_per_group, c.nlayers, c.nhid_factor), (32, 4, 3, 2, 2));
        assert_eq!((c.seed, c.num_thinking_rows, c.num_buckets), (42, 4, 5000));
        assert_eq!(c.feature_positional_embedding, PositionalEmbedding::None);
        assert!(!c.multiquery_item_attention_for_test_set && c.encoder_use_bias && c.remove_duplicate_features);
        assert_eq!(c.task().unwrap(), Task::Regression);
        assert_eq!((c.encoder_index(), c.y_encoder_index()), (6, 1));
        assert_eq!(c.groups(7), 3);
        assert_eq!(c.groups(6), 2);
    }

    #[test]
    fn upgrade_config_renames_and_refuses_as_tabpfn_does() {
        let base =
            json!({"max_num_classes": 2, "num_buckets": 0, "use_flash_attention": true, "attention_type": "full"});
        assert!(parse(base).is_ok());
        let e = error(
            json!({"max_num_classes": 2, "num_buckets": 0, "attention_type": "full", "item_attention_type": "full"}),
        );
        assert!(e.contains("attention_type"), "{e}");
        let e = error(json!({"max_num_classes": 2, "num_buckets": 0, "attention_type": "linear"}));
        assert!(e.contains("item_attention_type") && e.contains("linear"), "{e}");
        for key in ["canonical_y_encoder", "bias"] {
            assert!(parse(json!({"max_num_classes": 2, "num_buckets": 0, key: false})).is_ok());
            let e = error(json!({"max_num_classes": 2, "num_buckets": 0, key: null}));
            assert!(e.contains(key), "{e}");
        }
        assert!(parse(json!({"max_num_classes": 2, "num_buckets": 0, "two_sets_of_queries": 0})).is_ok());
        let e = error(json!({"max_num_classes": 2, "num_buckets": 0, "two_sets_of_queries": true}));
        assert!(e.contains("two_sets_of_queries"), "{e}");
    }

    #[test]
    fn unported_settings_are_refused_by_name() {
        let cases = [
            (json!({"encoder_type": "mlp"}), "encoder_type"),
            (json!({"dag_pos_enc_dim": 4}), "dag_pos_enc_dim"),
            (json!({"use_separate_decoder": true}), "use_separate_decoder"),
            (json!({"nan_handling_enabled": false}), "nan_handling_enabled"),
            (json!({"remove_outliers": true}), "remove_outliers"),
            (json!({"feature_positional_embedding": "sinusoidal"}), "feature_positional_embedding"),
            (json!({"emsize": 30, "nhead": 4}), "divisible"),
            (json!({"features_per_group": 0}), "features_per_group"),
            (json!({"nhead": 2.5}), "nhead"),
            (json!({"seed": "0"}), "seed"),
        ];
        for (over, needle) in cases {
            let mut v = json!({"max_num_classes": 10, "num_buckets": 0});
            v.as_object_mut().unwrap().extend(over.as_object().unwrap().clone());
            let e = error(v);
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(parse(json!({"max_num_classes": 10, "num_buckets": 0, "dag_pos_enc_dim": 0})).is_ok());
        assert!(error(json!({"num_buckets": 0})).contains("max_num_classes"));
        assert!(error(json!({"max_num_classes": 1, "num_buckets": 0})).contains("max_num_classes"));
        assert!(error(json!([1, 2])).contains("not a dict"));
    }
}

//! tabpfn's `InferenceConfig` (tabpfn 6.2.0 `inference_config.py`) and `PreprocessorConfig`
//! (`preprocessing.py` l.107): the preprocessing settings a checkpoint or a fitted estimator
//! carries. Read from JSON-like fields as tabpfn's pydantic dataclass validates them (unknown
//! fields refused, numbers and strings coerced as pydantic's lax mode does), overridden field by
//! field as `InferenceConfig.override_with_user_input` does, and checked against what deepembed
//! reproduces of ensemble member 0.

use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value as Json};

use super::Task;

/// `PreprocessorConfig.name`'s allowed values (preprocessing.py l.131-172).
pub const PREPROCESSOR_NAMES: [&str; 39] = [
    "per_feature",
    "power",
    "safepower",
    "power_box",
    "safepower_box",
    "quantile_uni_coarse",
    "quantile_norm_coarse",
    "quantile_uni",
    "quantile_norm",
    "quantile_uni_fine",
    "quantile_norm_fine",
    "squashing_scaler_default",
    "squashing_scaler_max10",
    "robust",
    "kdi",
    "none",
    "kdi_random_alpha",
    "kdi_uni",
    "kdi_random_alpha_uni",
    "adaptive",
    "norm_and_kdi",
    "kdi_alpha_0.3_uni",
    "kdi_alpha_0.5_uni",
    "kdi_alpha_0.8_uni",
    "kdi_alpha_1.0_uni",
    "kdi_alpha_1.2_uni",
    "kdi_alpha_1.5_uni",
    "kdi_alpha_2.0_uni",
    "kdi_alpha_3.0_uni",
    "kdi_alpha_5.0_uni",
    "kdi_alpha_0.3",
    "kdi_alpha_0.5",
    "kdi_alpha_0.8",
    "kdi_alpha_1.0",
    "kdi_alpha_1.2",
    "kdi_alpha_1.5",
    "kdi_alpha_2.0",
    "kdi_alpha_3.0",
    "kdi_alpha_5.0",
];

/// The feature transforms deepembed reproduces for member 0 (docs/TABPFN.md §4); the others are refused.
pub const REPRODUCED_TRANSFORMS: [&str; 3] = ["none", "squashing_scaler_default", "quantile_uni_coarse"];

/// `PreprocessorConfig.categorical_name` (preprocessing.py l.173-188).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategoricalEncoding {
    None,
    Numeric,
    Onehot,
    Ordinal,
    OrdinalShuffled,
    OrdinalVeryCommonCategoriesShuffled,
}

impl CategoricalEncoding {
    const ALL: [CategoricalEncoding; 6] = [
        CategoricalEncoding::None,
        CategoricalEncoding::Numeric,
        CategoricalEncoding::Onehot,
        CategoricalEncoding::Ordinal,
        CategoricalEncoding::OrdinalShuffled,
        CategoricalEncoding::OrdinalVeryCommonCategoriesShuffled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CategoricalEncoding::None => "none",
            CategoricalEncoding::Numeric => "numeric",
            CategoricalEncoding::Onehot => "onehot",
            CategoricalEncoding::Ordinal => "ordinal",
            CategoricalEncoding::OrdinalShuffled => "ordinal_shuffled",
            CategoricalEncoding::OrdinalVeryCommonCategoriesShuffled => "ordinal_very_common_categories_shuffled",
        }
    }

    /// The encodings docs/TABPFN.md §4 describes; the others are refused.
    pub fn is_reproduced(self) -> bool {
        matches!(
            self,
            CategoricalEncoding::None
                | CategoricalEncoding::Numeric
                | CategoricalEncoding::OrdinalVeryCommonCategoriesShuffled
        )
    }
}

/// `PreprocessorConfig.global_transformer_name` (preprocessing.py l.191-198), when not None.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalTransformer {
    Scaler,
    Svd,
    SvdQuarterComponents,
}

impl GlobalTransformer {
    const ALL: [GlobalTransformer; 3] =
        [GlobalTransformer::Scaler, GlobalTransformer::Svd, GlobalTransformer::SvdQuarterComponents];

    pub fn as_str(self) -> &'static str {
        match self {
            GlobalTransformer::Scaler => "scaler",
            GlobalTransformer::Svd => "svd",
            GlobalTransformer::SvdQuarterComponents => "svd_quarter_components",
        }
    }
}

/// `PreprocessorConfig.append_original`: `bool | "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOriginal {
    No,
    Yes,
    /// True when there are fewer than 500 features and fewer than half of
    /// `max_features_per_estimator` (docs/TABPFN.md §4).
    Auto,
}

/// One entry of `PREPROCESS_TRANSFORMS`. Field defaults are the dataclass's (preprocessing.py
/// l.188-199).
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// One of [`PREPROCESSOR_NAMES`].
    pub name: String,
    pub categorical_name: CategoricalEncoding,
    pub append_original: AppendOriginal,
    pub max_features_per_estimator: i64,
    pub global_transformer_name: Option<GlobalTransformer>,
    pub differentiable: bool,
}

impl PreprocessorConfig {
    fn new(name: &str, categorical_name: CategoricalEncoding) -> PreprocessorConfig {
        PreprocessorConfig {
            name: name.to_string(),
            categorical_name,
            append_original: AppendOriginal::No,
            max_features_per_estimator: 500,
            global_transformer_name: None,
            differentiable: false,
        }
    }

    fn from_json(value: &Json, at: &str) -> Result<PreprocessorConfig> {
        let Json::Object(fields) = value else {
            bail!("{at} is {}, not a PreprocessorConfig (a mapping with a name)", describe(value));
        };
        let name = match fields.get("name") {
            None => bail!("{at}.name is missing: a PreprocessorConfig needs a name"),
            Some(v) => {
                let at = format!("{at}.name");
                let name = literal(v, &at, &PREPROCESSOR_NAMES.map(|n| (n, n)))?;
                name.to_string()
            }
        };
        let mut config = PreprocessorConfig::new(&name, CategoricalEncoding::None);
        for (key, v) in fields {
            let at = format!("{at}.{key}");
            match key.as_str() {
                "name" => {}
                "categorical_name" => {
                    config.categorical_name = literal(v, &at, &CategoricalEncoding::ALL.map(|c| (c.as_str(), c)))?
                }
                "append_original" => {
                    config.append_original = if v.as_str() == Some("auto") {
                        AppendOriginal::Auto
                    } else if boolean(v, &at).map_err(|_| {
                        anyhow!("{at} is {}; tabpfn accepts true, false or \"auto\"", describe(v))
                    })? {
                        AppendOriginal::Yes
                    } else {
                        AppendOriginal::No
                    }
                }
                "max_features_per_estimator" => config.max_features_per_estimator = int(v, &at)?,
                "global_transformer_name" => {
                    config.global_transformer_name = match v {
                        Json::Null => None,
                        _ => Some(literal(v, &at, &GlobalTransformer::ALL.map(|g| (g.as_str(), g)))?),
                    }
                }
                "differentiable" => config.differentiable = boolean(v, &at)?,
                _ => bail!(
                    "{at} is not a PreprocessorConfig field (name, categorical_name, append_original, max_features_per_estimator, global_transformer_name, differentiable)"
                ),
            }
        }
        Ok(config)
    }

    fn to_json(&self) -> Json {
        let mut fields = Map::new();
        fields.insert("name".into(), Json::from(self.name.as_str()));
        fields.insert("categorical_name".into(), Json::from(self.categorical_name.as_str()));
        fields.insert(
            "append_original".into(),
            match self.append_original {
                AppendOriginal::No => Json::Bool(false),
                AppendOriginal::Yes => Json::Bool(true),
                AppendOriginal::Auto => Json::from("auto"),
            },
        );
        fields.insert("max_features_per_estimator".into(), Json::from(self.max_features_per_estimator));
        fields.insert(
            "global_transformer_name".into(),
            self.global_transformer_name.map_or(Json::Null, |g| g.as_str().into()),
        );
        fields.insert("differentiable".into(), Json::Bool(self.differentiable));
        Json::Object(fields)
    }
}

/// `OUTLIER_REMOVAL_STD`: `float | None | "auto"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutlierRemovalStd {
    /// 12 for classification, none for regression (base.py l.543).
    Auto,
    Off,
    Std(f64),
}

/// `FEATURE_SHIFT_METHOD` / `CLASS_SHIFT_METHOD`, when not None.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShiftMethod {
    Shuffle,
    Rotate,
}

impl ShiftMethod {
    const ALL: [ShiftMethod; 2] = [ShiftMethod::Shuffle, ShiftMethod::Rotate];

    pub fn as_str(self) -> &'static str {
        match self {
            ShiftMethod::Shuffle => "shuffle",
            ShiftMethod::Rotate => "rotate",
        }
    }
}

/// `POLYNOMIAL_FEATURES`: `"no" | "all" | int`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolynomialFeatures {
    No,
    All,
    Max(i64),
}

/// `SUBSAMPLE_SAMPLES`, when not None: `int | float | list`.
#[derive(Debug, Clone, PartialEq)]
pub enum SubsampleSamples {
    Count(i64),
    Fraction(f64),
    /// Row indices per ensemble member.
    Indices(Vec<Vec<i64>>),
}

/// tabpfn's `InferenceConfig`, every field (inference_config.py l.45-175). Names are the Python
/// field names in snake case; `_REGRESSION_DEFAULT_OUTLIER_REMOVAL_STD` has no field, since
/// its type is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceConfig {
    pub preprocess_transforms: Vec<PreprocessorConfig>,
    pub max_unique_for_categorical_features: i64,
    pub min_unique_for_numerical_features: i64,
    pub min_number_samples_for_categorical_inference: i64,
    pub outlier_removal_std: OutlierRemovalStd,
    pub feature_shift_method: Option<ShiftMethod>,
    pub class_shift_method: Option<ShiftMethod>,
    pub fingerprint_feature: bool,
    pub polynomial_features: PolynomialFeatures,
    pub subsample_samples: Option<SubsampleSamples>,
    /// Target transform names (None: the identity), used in turn by regression members.
    pub regression_y_preprocess_transforms: Vec<Option<String>>,
    pub use_sklearn_16_decimal_precision: bool,
    pub max_number_of_classes: i64,
    pub max_number_of_features: i64,
    pub max_number_of_samples: i64,
    pub fix_nan_borders_after_target_transform: bool,
    pub classification_default_outlier_removal_std: f64,
}

/// The Python field names, in the dataclass's order.
const FIELDS: [&str; 18] = [
    "PREPROCESS_TRANSFORMS",
    "MAX_UNIQUE_FOR_CATEGORICAL_FEATURES",
    "MIN_UNIQUE_FOR_NUMERICAL_FEATURES",
    "MIN_NUMBER_SAMPLES_FOR_CATEGORICAL_INFERENCE",
    "OUTLIER_REMOVAL_STD",
    "FEATURE_SHIFT_METHOD",
    "CLASS_SHIFT_METHOD",
    "FINGERPRINT_FEATURE",
    "POLYNOMIAL_FEATURES",
    "SUBSAMPLE_SAMPLES",
    "REGRESSION_Y_PREPROCESS_TRANSFORMS",
    "USE_SKLEARN_16_DECIMAL_PRECISION",
    "MAX_NUMBER_OF_CLASSES",
    "MAX_NUMBER_OF_FEATURES",
    "MAX_NUMBER_OF_SAMPLES",
    "FIX_NAN_BORDERS_AFTER_TARGET_TRANSFORM",
    "_REGRESSION_DEFAULT_OUTLIER_REMOVAL_STD",
    "_CLASSIFICATION_DEFAULT_OUTLIER_REMOVAL_STD",
];

impl InferenceConfig {
    /// The dataclass defaults (inference_config.py l.63-175) around the given transforms: what
    /// `InferenceConfig(PREPROCESS_TRANSFORMS=...)` builds. Note the limits (500 features,
    /// 10 000 samples) differ from v2.5's.
    fn dataclass_defaults(preprocess_transforms: Vec<PreprocessorConfig>) -> InferenceConfig {
        InferenceConfig {
            preprocess_transforms,
            max_unique_for_categorical_features: 30,
            min_unique_for_numerical_features: 4,
            min_number_samples_for_categorical_inference: 100,
            outlier_removal_std: OutlierRemovalStd::Auto,
            feature_shift_method: Some(ShiftMethod::Shuffle),
            class_shift_method: Some(ShiftMethod::Shuffle),
            fingerprint_feature: true,
            polynomial_features: PolynomialFeatures::No,
            subsample_samples: None,
            regression_y_preprocess_transforms: vec![None, Some("safepower".into())],
            use_sklearn_16_decimal_precision: false,
            max_number_of_classes: 10,
            max_number_of_features: 500,
            max_number_of_samples: 10_000,
            fix_nan_borders_after_target_transform: true,
            classification_default_outlier_removal_std: 12.0,
        }
    }

    /// The v2.5 defaults, used for a checkpoint with an `architecture_name` and no
    /// `inference_config` (model_loading.py l.802): `_get_v2_5_config` (inference_config.py
    /// l.265-287) around `v2_5_classifier_preprocessor_configs` /
    /// `v2_5_regressor_preprocessor_configs` (preprocessing.py l.303-338).
    pub fn v2_5_default(task: Task) -> InferenceConfig {
        let transforms = match task {
            // preprocessing.py l.305-318
            Task::Classification => vec![
                PreprocessorConfig {
                    global_transformer_name: Some(GlobalTransformer::SvdQuarterComponents),
                    ..PreprocessorConfig::new(
                        "squashing_scaler_default",
                        CategoricalEncoding::OrdinalVeryCommonCategoriesShuffled,
                    )
                },
                PreprocessorConfig::new("none", CategoricalEncoding::Numeric),
            ],
            // preprocessing.py l.323-338
            Task::Regression => vec![
                PreprocessorConfig {
                    append_original: AppendOriginal::Auto,
                    ..PreprocessorConfig::new("quantile_uni_coarse", CategoricalEncoding::Numeric)
                },
                PreprocessorConfig {
                    global_transformer_name: Some(GlobalTransformer::SvdQuarterComponents),
                    ..PreprocessorConfig::new(
                        "squashing_scaler_default",
                        CategoricalEncoding::OrdinalVeryCommonCategoriesShuffled,
                    )
                },
            ],
        };
        // inference_config.py l.268-287: the dataclass defaults but for the limits.
        InferenceConfig {
            max_number_of_features: 2000,
            max_number_of_samples: 50_000,
            ..InferenceConfig::dataclass_defaults(transforms)
        }
    }

    /// `InferenceConfig(**fields)`: the fields given, the dataclass defaults for the others;
    /// `PREPROCESS_TRANSFORMS` is required and unknown fields are refused, as tabpfn's
    /// `extra="forbid"` does.
    pub fn from_fields(fields: &Map<String, Json>) -> Result<InferenceConfig> {
        let transforms = fields.get("PREPROCESS_TRANSFORMS").ok_or_else(|| {
            anyhow!("PREPROCESS_TRANSFORMS is missing: an InferenceConfig needs its list of preprocessors")
        })?;
        let Json::Array(items) = transforms else {
            bail!("PREPROCESS_TRANSFORMS is {}, not a list of PreprocessorConfig", describe(transforms));
        };
        let transforms = items
            .iter()
            .enumerate()
            .map(|(i, item)| PreprocessorConfig::from_json(item, &format!("PREPROCESS_TRANSFORMS.{i}")))
            .collect::<Result<Vec<_>>>()?;
        let mut c = InferenceConfig::dataclass_defaults(transforms);
        for (key, v) in fields {
            let at = key.as_str();
            match at {
                "PREPROCESS_TRANSFORMS" => {}
                "MAX_UNIQUE_FOR_CATEGORICAL_FEATURES" => c.max_unique_for_categorical_features = int(v, at)?,
                "MIN_UNIQUE_FOR_NUMERICAL_FEATURES" => c.min_unique_for_numerical_features = int(v, at)?,
                "MIN_NUMBER_SAMPLES_FOR_CATEGORICAL_INFERENCE" => {
                    c.min_number_samples_for_categorical_inference = int(v, at)?
                }
                "OUTLIER_REMOVAL_STD" => {
                    c.outlier_removal_std = match v {
                        Json::Null => OutlierRemovalStd::Off,
                        Json::String(s) if s == "auto" => OutlierRemovalStd::Auto,
                        _ => OutlierRemovalStd::Std(float(v, at).map_err(|_| {
                            anyhow!("{at} is {}; tabpfn accepts a number, null or \"auto\"", describe(v))
                        })?),
                    }
                }
                "FEATURE_SHIFT_METHOD" => c.feature_shift_method = shift(v, at)?,
                "CLASS_SHIFT_METHOD" => c.class_shift_method = shift(v, at)?,
                "FINGERPRINT_FEATURE" => c.fingerprint_feature = boolean(v, at)?,
                "POLYNOMIAL_FEATURES" => {
                    c.polynomial_features = match v.as_str() {
                        Some("no") => PolynomialFeatures::No,
                        Some("all") => PolynomialFeatures::All,
                        _ => PolynomialFeatures::Max(int(v, at).map_err(|_| {
                            anyhow!("{at} is {}; tabpfn accepts \"no\", \"all\" or an integer", describe(v))
                        })?),
                    }
                }
                "SUBSAMPLE_SAMPLES" => c.subsample_samples = subsample(v, at)?,
                "REGRESSION_Y_PREPROCESS_TRANSFORMS" => {
                    let Json::Array(items) = v else {
                        bail!("{at} is {}, not a list of transform names (or null)", describe(v));
                    };
                    c.regression_y_preprocess_transforms = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| match item {
                            Json::Null => Ok(None),
                            Json::String(s) => Ok(Some(s.clone())),
                            other => bail!("{at}.{i} is {}, not a transform name or null", describe(other)),
                        })
                        .collect::<Result<_>>()?;
                }
                "USE_SKLEARN_16_DECIMAL_PRECISION" => c.use_sklearn_16_decimal_precision = boolean(v, at)?,
                "MAX_NUMBER_OF_CLASSES" => c.max_number_of_classes = int(v, at)?,
                "MAX_NUMBER_OF_FEATURES" => c.max_number_of_features = int(v, at)?,
                "MAX_NUMBER_OF_SAMPLES" => c.max_number_of_samples = int(v, at)?,
                "FIX_NAN_BORDERS_AFTER_TARGET_TRANSFORM" => c.fix_nan_borders_after_target_transform = boolean(v, at)?,
                // Typed `None` in tabpfn: nothing else is valid.
                "_REGRESSION_DEFAULT_OUTLIER_REMOVAL_STD" => {
                    if !v.is_null() {
                        bail!("{at} is {}; tabpfn only accepts null there", describe(v));
                    }
                }
                "_CLASSIFICATION_DEFAULT_OUTLIER_REMOVAL_STD" => {
                    c.classification_default_outlier_removal_std = float(v, at)?
                }
                _ => bail!("{at} is not an InferenceConfig field (tabpfn 6.2 knows {})", FIELDS.join(", ")),
            }
        }
        Ok(c)
    }

    /// The fields as `dataclasses.asdict` gives them, the form [`InferenceConfig::from_fields`]
    /// reads back.
    pub fn to_fields(&self) -> Map<String, Json> {
        let mut f = Map::new();
        let mut put = |k: &str, v: Json| {
            f.insert(k.to_string(), v);
        };
        put("PREPROCESS_TRANSFORMS", Json::Array(self.preprocess_transforms.iter().map(|p| p.to_json()).collect()));
        put("MAX_UNIQUE_FOR_CATEGORICAL_FEATURES", self.max_unique_for_categorical_features.into());
        put("MIN_UNIQUE_FOR_NUMERICAL_FEATURES", self.min_unique_for_numerical_features.into());
        put("MIN_NUMBER_SAMPLES_FOR_CATEGORICAL_INFERENCE", self.min_number_samples_for_categorical_inference.into());
        put(
            "OUTLIER_REMOVAL_STD",
            match self.outlier_removal_std {
                OutlierRemovalStd::Auto => "auto".into(),
                OutlierRemovalStd::Off => Json::Null,
                OutlierRemovalStd::Std(s) => number(s),
            },
        );
        put("FEATURE_SHIFT_METHOD", self.feature_shift_method.map_or(Json::Null, |m| m.as_str().into()));
        put("CLASS_SHIFT_METHOD", self.class_shift_method.map_or(Json::Null, |m| m.as_str().into()));
        put("FINGERPRINT_FEATURE", self.fingerprint_feature.into());
        put(
            "POLYNOMIAL_FEATURES",
            match self.polynomial_features {
                PolynomialFeatures::No => "no".into(),
                PolynomialFeatures::All => "all".into(),
                PolynomialFeatures::Max(n) => n.into(),
            },
        );
        put(
            "SUBSAMPLE_SAMPLES",
            match &self.subsample_samples {
                None => Json::Null,
                Some(SubsampleSamples::Count(n)) => (*n).into(),
                Some(SubsampleSamples::Fraction(x)) => number(*x),
                Some(SubsampleSamples::Indices(lists)) => {
                    Json::Array(lists.iter().map(|l| Json::Array(l.iter().map(|&i| i.into()).collect())).collect())
                }
            },
        );
        put(
            "REGRESSION_Y_PREPROCESS_TRANSFORMS",
            Json::Array(
                self.regression_y_preprocess_transforms
                    .iter()
                    .map(|t| t.as_deref().map_or(Json::Null, Json::from))
                    .collect(),
            ),
        );
        put("USE_SKLEARN_16_DECIMAL_PRECISION", self.use_sklearn_16_decimal_precision.into());
        put("MAX_NUMBER_OF_CLASSES", self.max_number_of_classes.into());
        put("MAX_NUMBER_OF_FEATURES", self.max_number_of_features.into());
        put("MAX_NUMBER_OF_SAMPLES", self.max_number_of_samples.into());
        put("FIX_NAN_BORDERS_AFTER_TARGET_TRANSFORM", self.fix_nan_borders_after_target_transform.into());
        put("_REGRESSION_DEFAULT_OUTLIER_REMOVAL_STD", Json::Null);
        put("_CLASSIFICATION_DEFAULT_OUTLIER_REMOVAL_STD", number(self.classification_default_outlier_removal_std));
        f
    }

    /// `override_with_user_input(dict)`: `dataclasses.replace(self, **overrides)`, which
    /// validates the whole config again.
    pub fn with_overrides(&self, overrides: &Map<String, Json>) -> Result<InferenceConfig> {
        let mut fields = self.to_fields();
        for (k, v) in overrides {
            if !FIELDS.contains(&k.as_str()) {
                bail!("{k} is not an InferenceConfig field (tabpfn 6.2 knows {})", FIELDS.join(", "));
            }
            fields.insert(k.clone(), v.clone());
        }
        InferenceConfig::from_fields(&fields)
    }

    /// The outlier clipping the model's input normalisation applies, `"auto"` resolved as
    /// base.py l.543 does: 12 standard deviations for classification, none for regression.
    pub fn outlier_removal_std(&self, task: Task) -> Option<f64> {
        match (self.outlier_removal_std, task) {
            (OutlierRemovalStd::Auto, Task::Classification) => Some(self.classification_default_outlier_removal_std),
            (OutlierRemovalStd::Auto, Task::Regression) => None,
            (OutlierRemovalStd::Off, _) => None,
            (OutlierRemovalStd::Std(s), _) => Some(s),
        }
    }

    /// The preprocessor ensemble member 0 uses: the first entry, for both tasks (docs/TABPFN.md §3).
    pub fn member0(&self) -> &PreprocessorConfig {
        &self.preprocess_transforms[0]
    }

    /// Refuses, naming each setting, a config whose member 0 deepembed does not reproduce
    /// (docs/TABPFN.md §8). A config that passes has at least one preprocessor.
    pub fn check_reproducible(&self, task: Task) -> Result<()> {
        let mut problems = Vec::new();
        match self.preprocess_transforms.first() {
            None => problems.push("PREPROCESS_TRANSFORMS is empty (tabpfn itself fails on it)".to_string()),
            Some(p) => {
                if !REPRODUCED_TRANSFORMS.contains(&p.name.as_str()) {
                    problems.push(format!(
                        "member 0's preprocessor is '{}' (deepembed reproduces {})",
                        p.name,
                        REPRODUCED_TRANSFORMS.join(", ")
                    ));
                }
                if !p.categorical_name.is_reproduced() {
                    problems.push(format!(
                        "member 0's categorical encoding is '{}' (deepembed reproduces none, numeric and ordinal_very_common_categories_shuffled)",
                        p.categorical_name.as_str()
                    ));
                }
                if p.global_transformer_name == Some(GlobalTransformer::Scaler) {
                    problems.push(
                        "member 0's global transformer is 'scaler' (deepembed reproduces svd and svd_quarter_components)"
                            .into(),
                    );
                }
                if p.differentiable {
                    problems.push(
                        "member 0's preprocessor is differentiable (a z-normalisation deepembed does not reproduce)"
                            .into(),
                    );
                }
            }
        }
        let fields = self.to_fields();
        if self.polynomial_features != PolynomialFeatures::No {
            problems.push(format!(
                "POLYNOMIAL_FEATURES is {} (polynomial features), not \"no\"",
                fields["POLYNOMIAL_FEATURES"]
            ));
        }
        if self.subsample_samples.is_some() {
            problems.push(format!(
                "SUBSAMPLE_SAMPLES is {} (row subsampling), not null",
                describe(&fields["SUBSAMPLE_SAMPLES"])
            ));
        }
        if task == Task::Regression {
            match self.regression_y_preprocess_transforms.first() {
                None => problems.push("REGRESSION_Y_PREPROCESS_TRANSFORMS is empty (tabpfn itself fails on it)".into()),
                Some(Some(t)) => problems.push(format!("member 0's target transform is '{t}', not None")),
                Some(None) => {}
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        bail!(
            "its inference config asks for preprocessing deepembed does not reproduce: {}; the embeddings would not be tabpfn's, so nothing was computed",
            problems.join("; ")
        )
    }
}

fn number(x: f64) -> Json {
    serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
}

/// A short description of a JSON value for error messages.
fn describe(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) if s.len() <= 60 => format!("\"{s}\""),
        Json::String(_) => "a long string".into(),
        Json::Array(_) => "a list".into(),
        Json::Object(_) => "a mapping".into(),
    }
}

/// An int as pydantic's lax mode takes one: an integer, a float without fractional part, a
/// bool, or a string of digits.
fn int(v: &Json, at: &str) -> Result<i64> {
    let parsed = match v {
        Json::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
        }
        Json::Bool(b) => Some(*b as i64),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| anyhow!("{at} is {}, not an integer", describe(v)))
}

/// A float as pydantic's lax mode takes one: a number or a numeric string.
fn float(v: &Json, at: &str) -> Result<f64> {
    let parsed = match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| anyhow!("{at} is {}, not a number", describe(v)))
}

/// A bool as pydantic's lax mode takes one: a bool, 0 or 1, or one of its yes/no words.
fn boolean(v: &Json, at: &str) -> Result<bool> {
    let parsed = match v {
        Json::Bool(b) => Some(*b),
        Json::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Json::String(s) => match s.to_ascii_lowercase().as_str() {
            "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
            "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or_else(|| anyhow!("{at} is {}, not a boolean", describe(v)))
}

/// One of a `Literal`'s strings.
fn literal<T: Copy>(v: &Json, at: &str, options: &[(&str, T)]) -> Result<T> {
    if let Some(s) = v.as_str() {
        if let Some((_, t)) = options.iter().find(|(name, _)| *name == s) {
            return Ok(*t);
        }
    }
    let names: Vec<String> = options.iter().map(|(n, _)| format!("'{n}'")).collect();
    bail!("{at} is {}; tabpfn accepts {}", describe(v), names.join(", "))
}

fn shift(v: &Json, at: &str) -> Result<Option<ShiftMethod>> {
    match v {
        Json::Null => Ok(None),
        _ => literal(v, at, &ShiftMethod::ALL.map(|m| (m.as_str(), m)))
            .map(Some)
            .map_err(|_| anyhow!("{at} is {}; tabpfn accepts 'shuffle', 'rotate' or null", describe(v))),
    }
}

fn subsample(v: &Json, at: &str) -> Result<Option<SubsampleSamples>> {
    Ok(Some(match v {
        Json::Null => return Ok(None),
        Json::Number(n) => match n.as_i64() {
            Some(i) => SubsampleSamples::Count(i),
            None => SubsampleSamples::Fraction(float(v, at)?),
        },
        Json::Array(lists) => SubsampleSamples::Indices(
            lists
                .iter()
                .enumerate()
                .map(|(i, l)| match l {
                    Json::Array(ix) => ix.iter().map(|x| int(x, &format!("{at}.{i}"))).collect(),
                    other => bail!("{at}.{i} is {}, not a list of row indices", describe(other)),
                })
                .collect::<Result<_>>()?,
        ),
        other => bail!("{at} is {}; tabpfn accepts a count, a fraction, lists of row indices or null", describe(other)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Json) -> Map<String, Json> {
        match v {
            Json::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn v2_5_defaults_differ_from_the_dataclass_only_in_limits_and_transforms() {
        for task in [Task::Classification, Task::Regression] {
            let c = InferenceConfig::v2_5_default(task);
            assert_eq!((c.max_number_of_features, c.max_number_of_samples), (2000, 50_000));
            let plain = InferenceConfig::dataclass_defaults(c.preprocess_transforms.clone());
            assert_eq!((plain.max_number_of_features, plain.max_number_of_samples), (500, 10_000));
            assert_eq!(
                InferenceConfig { max_number_of_features: 500, max_number_of_samples: 10_000, ..c.clone() },
                plain
            );
            assert_eq!(c.preprocess_transforms.len(), 2);
            assert!(c.check_reproducible(task).is_ok(), "{task:?}");
        }
        let cls = InferenceConfig::v2_5_default(Task::Classification);
        assert_eq!(cls.member0().name, "squashing_scaler_default");
        assert_eq!(cls.member0().global_transformer_name, Some(GlobalTransformer::SvdQuarterComponents));
        let reg = InferenceConfig::v2_5_default(Task::Regression);
        assert_eq!(reg.member0().name, "quantile_uni_coarse");
        assert_eq!(reg.member0().append_original, AppendOriginal::Auto);
        assert_eq!(reg.member0().categorical_name, CategoricalEncoding::Numeric);
        assert_eq!(reg.regression_y_preprocess_transforms, vec![None, Some("safepower".to_string())]);
    }

    #[test]
    fn fields_round_trip() {
        for task in [Task::Classification, Task::Regression] {
            let c = InferenceConfig::v2_5_default(task);
            let f = c.to_fields();
            assert_eq!(f.len(), FIELDS.len());
            assert_eq!(InferenceConfig::from_fields(&f).unwrap(), c);
        }
        let odd = InferenceConfig {
            outlier_removal_std: OutlierRemovalStd::Std(3.5),
            feature_shift_method: None,
            class_shift_method: Some(ShiftMethod::Rotate),
            polynomial_features: PolynomialFeatures::Max(7),
            subsample_samples: Some(SubsampleSamples::Indices(vec![vec![3, 1], vec![]])),
            ..InferenceConfig::v2_5_default(Task::Regression)
        };
        assert_eq!(InferenceConfig::from_fields(&odd.to_fields()).unwrap(), odd);
    }

    #[test]
    fn a_checkpoint_config_takes_dataclass_defaults_for_what_it_leaves_out() {
        let c = InferenceConfig::from_fields(&fields(json!({
            "FINGERPRINT_FEATURE": false,
            "PREPROCESS_TRANSFORMS": [{"name": "none"}],
        })))
        .unwrap();
        assert!(!c.fingerprint_feature);
        assert_eq!(c.preprocess_transforms, vec![PreprocessorConfig::new("none", CategoricalEncoding::None)]);
        assert_eq!((c.max_number_of_features, c.max_number_of_samples), (500, 10_000));
        let err = InferenceConfig::from_fields(&fields(json!({"FINGERPRINT_FEATURE": false}))).unwrap_err();
        assert!(err.to_string().contains("PREPROCESS_TRANSFORMS is missing"), "{err}");
    }

    #[test]
    fn overrides_replace_fields_one_by_one() {
        let base = InferenceConfig::v2_5_default(Task::Classification);
        // gen_reference.py's MINIMAL, as DeepTune stores it in init_params.json.
        let minimal = fields(json!({
            "FINGERPRINT_FEATURE": false, "FEATURE_SHIFT_METHOD": null, "CLASS_SHIFT_METHOD": null,
            "POLYNOMIAL_FEATURES": "no",
            "PREPROCESS_TRANSFORMS": [{"name": "none", "categorical_name": "none", "append_original": false,
                "max_features_per_estimator": 500, "global_transformer_name": null, "differentiable": false}],
            "REGRESSION_Y_PREPROCESS_TRANSFORMS": [null],
        }));
        let c = base.with_overrides(&minimal).unwrap();
        assert!(!c.fingerprint_feature);
        assert_eq!((c.feature_shift_method, c.class_shift_method), (None, None));
        assert_eq!(c.preprocess_transforms, vec![PreprocessorConfig::new("none", CategoricalEncoding::None)]);
        assert_eq!(c.regression_y_preprocess_transforms, vec![None]);
        // What the overrides leave alone keeps the base's (v2.5) values, not the dataclass's.
        assert_eq!((c.max_number_of_features, c.max_number_of_samples), (2000, 50_000));
        assert_eq!(c.outlier_removal_std, OutlierRemovalStd::Auto);
        // An empty override changes nothing.
        assert_eq!(base.with_overrides(&Map::new()).unwrap(), base);
    }

    #[test]
    fn values_are_coerced_as_pydantic_does_and_bad_ones_named() {
        let base = InferenceConfig::v2_5_default(Task::Classification);
        let c = base
            .with_overrides(&fields(json!({
                "MAX_NUMBER_OF_CLASSES": 3.0, "MAX_NUMBER_OF_FEATURES": "40", "FINGERPRINT_FEATURE": "no",
                "OUTLIER_REMOVAL_STD": 5, "POLYNOMIAL_FEATURES": "3", "SUBSAMPLE_SAMPLES": 0.5,
                "PREPROCESS_TRANSFORMS": [{"name": "none", "append_original": 1}],
            })))
            .unwrap();
        assert_eq!((c.max_number_of_classes, c.max_number_of_features), (3, 40));
        assert!(!c.fingerprint_feature);
        assert_eq!(c.outlier_removal_std, OutlierRemovalStd::Std(5.0));
        assert_eq!(c.polynomial_features, PolynomialFeatures::Max(3));
        assert_eq!(c.subsample_samples, Some(SubsampleSamples::Fraction(0.5)));
        assert_eq!(c.member0().append_original, AppendOriginal::Yes);
        assert_eq!(
            base.with_overrides(&fields(json!({"SUBSAMPLE_SAMPLES": 5}))).unwrap().subsample_samples,
            Some(SubsampleSamples::Count(5))
        );
        let refused = [
            (json!({"BOGUS": 1}), "BOGUS is not an InferenceConfig field"),
            (json!({"MAX_NUMBER_OF_CLASSES": 3.5}), "MAX_NUMBER_OF_CLASSES is 3.5, not an integer"),
            (json!({"FEATURE_SHIFT_METHOD": "bad"}), "FEATURE_SHIFT_METHOD is \"bad\""),
            (json!({"PREPROCESS_TRANSFORMS": [{"name": "bad"}]}), "PREPROCESS_TRANSFORMS.0.name is \"bad\""),
            (
                json!({"PREPROCESS_TRANSFORMS": [{"categorical_name": "none"}]}),
                "PREPROCESS_TRANSFORMS.0.name is missing",
            ),
            (json!({"PREPROCESS_TRANSFORMS": [{"name": "none", "bogus": 1}]}), "PREPROCESS_TRANSFORMS.0.bogus is not"),
            (json!({"REGRESSION_Y_PREPROCESS_TRANSFORMS": "safepower"}), "REGRESSION_Y_PREPROCESS_TRANSFORMS is"),
            (json!({"_REGRESSION_DEFAULT_OUTLIER_REMOVAL_STD": 3}), "only accepts null"),
        ];
        for (overrides, expected) in refused {
            let err = format!("{:#}", base.with_overrides(&fields(overrides.clone())).unwrap_err());
            assert!(err.contains(expected), "{overrides}: {err}");
        }
    }

    #[test]
    fn auto_outlier_removal_depends_on_the_task() {
        let mut c = InferenceConfig::v2_5_default(Task::Classification);
        assert_eq!(c.outlier_removal_std(Task::Classification), Some(12.0));
        assert_eq!(c.outlier_removal_std(Task::Regression), None);
        c.classification_default_outlier_removal_std = 3.0;
        assert_eq!(c.outlier_removal_std(Task::Classification), Some(3.0));
        c.outlier_removal_std = OutlierRemovalStd::Std(4.0);
        assert_eq!(c.outlier_removal_std(Task::Regression), Some(4.0));
        c.outlier_removal_std = OutlierRemovalStd::Off;
        assert_eq!(c.outlier_removal_std(Task::Classification), None);
    }

    #[test]
    fn unreproduced_member0_settings_are_refused_by_name() {
        let cls = InferenceConfig::v2_5_default(Task::Classification);
        // Only member 0 matters: a second, unported preprocessor is fine.
        let mut two = cls.clone();
        two.preprocess_transforms[1] = PreprocessorConfig::new("kdi", CategoricalEncoding::Onehot);
        assert!(two.check_reproducible(Task::Classification).is_ok());
        let cases: Vec<(InferenceConfig, Task, &str)> = vec![
            (
                InferenceConfig { preprocess_transforms: vec![], ..cls.clone() },
                Task::Classification,
                "PREPROCESS_TRANSFORMS is empty",
            ),
            (
                InferenceConfig {
                    preprocess_transforms: vec![PreprocessorConfig::new("safepower", CategoricalEncoding::None)],
                    ..cls.clone()
                },
                Task::Classification,
                "preprocessor is 'safepower'",
            ),
            (
                InferenceConfig {
                    preprocess_transforms: vec![PreprocessorConfig::new("none", CategoricalEncoding::Onehot)],
                    ..cls.clone()
                },
                Task::Classification,
                "encoding is 'onehot'",
            ),
            (
                InferenceConfig { polynomial_features: PolynomialFeatures::All, ..cls.clone() },
                Task::Classification,
                "POLYNOMIAL_FEATURES",
            ),
            (
                InferenceConfig { subsample_samples: Some(SubsampleSamples::Count(10)), ..cls.clone() },
                Task::Classification,
                "SUBSAMPLE_SAMPLES",
            ),
            (
                InferenceConfig {
                    regression_y_preprocess_transforms: vec![Some("safepower".into()), None],
                    ..cls.clone()
                },
                Task::Regression,
                "target transform is 'safepower'",
            ),
        ];
        for (config, task, expected) in cases {
            let err = config.check_reproducible(task).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        // The target transform matters for regression only.
        let c = InferenceConfig { regression_y_preprocess_transforms: vec![Some("safepower".into())], ..cls };
        assert!(c.check_reproducible(Task::Classification).is_ok());
    }
}

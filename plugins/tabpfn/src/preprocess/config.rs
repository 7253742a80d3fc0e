//! Member 0's preprocessing settings, as tabpfn's inference config and RNG plan decide them,
//! with the names tabpfn spells them in (`PREPROCESS_TRANSFORMS[i].name`, ...). What the port
//! does not reproduce is refused here by name, before any data is read.

use anyhow::{bail, Result};

/// `PreprocessorConfig.name`: the per-feature transform of the reshape step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preprocessor {
    /// `"none"`: identity.
    None,
    /// `"squashing_scaler_default"`: robust scaling then soft clipping to (-3, 3).
    SquashingScalerDefault,
    /// `"quantile_uni_coarse"`: quantile transform to uniform, `n_train // 10` quantiles.
    QuantileUniCoarse,
}

impl Preprocessor {
    pub fn from_name(name: &str) -> Result<Preprocessor> {
        Ok(match name {
            "none" => Preprocessor::None,
            "squashing_scaler_default" => Preprocessor::SquashingScalerDefault,
            "quantile_uni_coarse" => Preprocessor::QuantileUniCoarse,
            other => bail!(
                "PREPROCESS_TRANSFORMS name '{other}' (member 0's feature transform) is not reproduced by deepembed; \
                 supported: none, squashing_scaler_default, quantile_uni_coarse (tabpfn 2.5's defaults)"
            ),
        })
    }
}

/// Which categorical columns an ordinal re-encoding keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategoryFilter {
    /// `"ordinal"`, `"ordinal_shuffled"`: every categorical column.
    All,
    /// `_very_common_categories`: columns whose rarest value occurs at least 10 times and
    /// with fewer distinct values than `n_train // 10`.
    VeryCommon,
}

/// `PreprocessorConfig.categorical_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategoricalEncoding {
    /// `"none"`: categorical columns pass through untransformed (and are placed first).
    None,
    /// `"numeric"`: categorical columns go through the feature transform like the others.
    Numeric,
    /// `"ordinal..."`: codes re-encoded by sorted value, optionally permuted (`_shuffled`).
    Ordinal { filter: CategoryFilter, shuffled: bool },
}

impl CategoricalEncoding {
    /// The names tabpfn's `PreprocessorConfig` accepts, less `onehot`.
    pub fn from_name(name: &str) -> Result<CategoricalEncoding> {
        use CategoryFilter::{All, VeryCommon};
        Ok(match name {
            "none" => CategoricalEncoding::None,
            "numeric" => CategoricalEncoding::Numeric,
            "ordinal" => CategoricalEncoding::Ordinal { filter: All, shuffled: false },
            "ordinal_shuffled" => CategoricalEncoding::Ordinal { filter: All, shuffled: true },
            "ordinal_very_common_categories_shuffled" => {
                CategoricalEncoding::Ordinal { filter: VeryCommon, shuffled: true }
            }
            other => bail!(
                "PREPROCESS_TRANSFORMS categorical_name '{other}' is not reproduced by deepembed; supported: none, \
                 numeric, ordinal, ordinal_shuffled, ordinal_very_common_categories_shuffled (onehot is not)"
            ),
        })
    }
}

/// `PreprocessorConfig.append_original`: keep the untransformed columns next to the transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOriginal {
    Yes,
    No,
    /// `"auto"`: append when fewer than 500 and fewer than `max_features_per_estimator / 2` columns.
    Auto,
}

/// `PreprocessorConfig.global_transformer_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalTransformer {
    None,
    /// `"svd"`: append `min(n_train/10 + 1, features/2)` SVD components.
    Svd,
    /// `"svd_quarter_components"`: append `min(n_train/10 + 1, features/4)` SVD components.
    SvdQuarterComponents,
}

impl GlobalTransformer {
    pub fn from_name(name: Option<&str>) -> Result<GlobalTransformer> {
        Ok(match name {
            None | Some("None") => GlobalTransformer::None,
            Some("svd") => GlobalTransformer::Svd,
            Some("svd_quarter_components") => GlobalTransformer::SvdQuarterComponents,
            Some(other) => bail!(
                "PREPROCESS_TRANSFORMS global_transformer_name '{other}' is not reproduced by deepembed; \
                 supported: None, svd, svd_quarter_components"
            ),
        })
    }
}

/// `FEATURE_SHIFT_METHOD` with member 0's shift count from the RNG plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureShift {
    /// `"shuffle"`: a random permutation of the final columns.
    Shuffle,
    /// `None`: the columns stay in order.
    None,
    /// `"rotate"`: `np.roll(arange(m), count)`.
    Rotate(usize),
}

impl FeatureShift {
    /// `count` is member 0's `feature_shift_count` (used by `"rotate"` only).
    pub fn from_name(name: Option<&str>, count: usize) -> Result<FeatureShift> {
        Ok(match name {
            Some("shuffle") => FeatureShift::Shuffle,
            None => FeatureShift::None,
            Some("rotate") => FeatureShift::Rotate(count),
            Some(other) => bail!("FEATURE_SHIFT_METHOD '{other}' is unknown; tabpfn accepts shuffle, rotate or None"),
        })
    }
}

/// The estimator-level inference-config values the preprocessing reads (tabpfn 2.5's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inference {
    /// `MAX_UNIQUE_FOR_CATEGORICAL_FEATURES`: a user-listed categorical column with more
    /// distinct values than this is treated as numeric.
    pub max_unique_for_categorical_features: usize,
    /// `MIN_UNIQUE_FOR_NUMERICAL_FEATURES`: fewer distinct values makes a column categorical...
    pub min_unique_for_numerical_features: usize,
    /// `MIN_NUMBER_SAMPLES_FOR_CATEGORICAL_INFERENCE`: ...when there are more train rows than this.
    pub min_number_samples_for_categorical_inference: usize,
    /// `MAX_NUMBER_OF_CLASSES`.
    pub max_number_of_classes: usize,
}

impl Default for Inference {
    fn default() -> Inference {
        Inference {
            max_unique_for_categorical_features: 30,
            min_unique_for_numerical_features: 4,
            min_number_samples_for_categorical_inference: 100,
            max_number_of_classes: 10,
        }
    }
}

/// Everything that decides member 0's preprocessing besides the data.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberConfig {
    pub preprocessor: Preprocessor,
    pub categorical: CategoricalEncoding,
    pub append_original: AppendOriginal,
    pub global_transformer: GlobalTransformer,
    /// `max_features_per_estimator` (500): more columns than this are subsampled.
    pub max_features_per_estimator: usize,
    /// `FINGERPRINT_FEATURE`.
    pub fingerprint: bool,
    pub feature_shift: FeatureShift,
    /// `POLYNOMIAL_FEATURES`: only `"no"` is reproduced.
    pub polynomial_features: String,
    /// The estimator's `categorical_features_indices` (input column positions).
    pub categorical_features_indices: Option<Vec<usize>>,
    pub inference: Inference,
    /// Member 0's seed `s0` (`seeds[0]` of the RNG plan): every random step starts from it.
    pub seed: u64,
    /// Member 0's class permutation (classification; `None` for the identity).
    pub class_permutation: Option<Vec<usize>>,
}

impl MemberConfig {
    /// tabpfn 2.5's classifier default for member 0: squashing scaler, very common categories
    /// re-encoded and shuffled, quarter SVD, fingerprint, shuffled columns.
    pub fn classifier_default(seed: u64, class_permutation: Option<Vec<usize>>) -> MemberConfig {
        MemberConfig {
            preprocessor: Preprocessor::SquashingScalerDefault,
            categorical: CategoricalEncoding::Ordinal { filter: CategoryFilter::VeryCommon, shuffled: true },
            append_original: AppendOriginal::No,
            global_transformer: GlobalTransformer::SvdQuarterComponents,
            class_permutation,
            ..MemberConfig::minimal(seed)
        }
        .with_defaults_shift()
    }

    /// tabpfn 2.5's regressor default for member 0: uniform quantiles appended to the
    /// original columns, categoricals transformed as numbers, fingerprint, shuffled columns.
    pub fn regressor_default(seed: u64) -> MemberConfig {
        MemberConfig {
            preprocessor: Preprocessor::QuantileUniCoarse,
            categorical: CategoricalEncoding::Numeric,
            append_original: AppendOriginal::Auto,
            ..MemberConfig::minimal(seed)
        }
        .with_defaults_shift()
    }

    /// No transform, no fingerprint, no shuffle (the reference generator's `MINIMAL`).
    pub fn minimal(seed: u64) -> MemberConfig {
        MemberConfig {
            preprocessor: Preprocessor::None,
            categorical: CategoricalEncoding::None,
            append_original: AppendOriginal::No,
            global_transformer: GlobalTransformer::None,
            max_features_per_estimator: 500,
            fingerprint: false,
            feature_shift: FeatureShift::None,
            polynomial_features: "no".to_string(),
            categorical_features_indices: None,
            inference: Inference::default(),
            seed,
            class_permutation: None,
        }
    }

    fn with_defaults_shift(self) -> MemberConfig {
        MemberConfig { fingerprint: true, feature_shift: FeatureShift::Shuffle, ..self }
    }

    /// Refuses the settings the port does not reproduce.
    pub fn check(&self) -> Result<()> {
        if self.polynomial_features != "no" {
            bail!(
                "POLYNOMIAL_FEATURES = '{}' is not reproduced by deepembed; only 'no' (the default) is",
                self.polynomial_features
            );
        }
        if self.max_features_per_estimator == 0 {
            bail!("max_features_per_estimator must be a positive integer");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Preprocessor::from_name("quantile_uni_coarse").unwrap(), Preprocessor::QuantileUniCoarse);
        let err = Preprocessor::from_name("safepower").unwrap_err().to_string();
        assert!(err.contains("'safepower'") && err.contains("squashing_scaler_default"), "{err}");
        assert_eq!(
            CategoricalEncoding::from_name("ordinal_very_common_categories_shuffled").unwrap(),
            CategoricalEncoding::Ordinal { filter: CategoryFilter::VeryCommon, shuffled: true }
        );
        assert_eq!(
            CategoricalEncoding::from_name("ordinal").unwrap(),
            CategoricalEncoding::Ordinal { filter: CategoryFilter::All, shuffled: false }
        );
        assert!(CategoricalEncoding::from_name("onehot").unwrap_err().to_string().contains("onehot"));
        assert!(CategoricalEncoding::from_name("ordinal_common_categories").is_err());
        assert_eq!(GlobalTransformer::from_name(Some("None")).unwrap(), GlobalTransformer::None);
        assert!(GlobalTransformer::from_name(Some("scaler")).is_err());
        assert_eq!(FeatureShift::from_name(Some("rotate"), 3).unwrap(), FeatureShift::Rotate(3));
    }

    #[test]
    fn polynomial_features_refused() {
        let cfg = MemberConfig { polynomial_features: "all".into(), ..MemberConfig::minimal(0) };
        assert!(cfg.check().unwrap_err().to_string().contains("POLYNOMIAL_FEATURES"));
        assert!(MemberConfig::classifier_default(1, None).check().is_ok());
    }
}

//! Ensemble member 0's settings, put together from the checkpoint's resolved inference config
//! (`saved`) and the draws of tabpfn's `fit` (`rng::member0_plan`), in the form the
//! preprocessing takes.

use anyhow::{bail, Result};

use crate::preprocess::{
    self, AppendOriginal, CategoricalEncoding, FeatureShift, GlobalTransformer, MemberConfig, Preprocessor,
};
use crate::rng::{self, ClassShift, Generator};
use crate::saved::{self, InferenceConfig, SavedTabPfn, ShiftMethod};

/// The preprocessing's numpy calls, on our port of numpy's Generator.
impl preprocess::Rng for Generator {
    fn integers(&mut self, low: i64, high: i64) -> i64 {
        Generator::integers(self, low, high)
    }

    fn permutation(&mut self, n: usize) -> Vec<usize> {
        Generator::permutation(self, n)
    }

    fn choice_without_replacement(&mut self, pop: usize, size: usize) -> Vec<usize> {
        Generator::choice_without_replacement(self, pop, size)
    }
}

/// Member 0's preprocessing settings for `saved`, with `n_classes` classes (classification).
pub fn member0(saved: &SavedTabPfn, n_classes: Option<usize>) -> Result<MemberConfig> {
    let inference = &saved.inference;
    inference.check_reproducible(saved.task)?;
    if saved.n_estimators == 0 {
        bail!("{}: n_estimators is 0; tabpfn needs at least one ensemble member", saved.source.display());
    }
    let class_shift = match inference.class_shift_method {
        Some(ShiftMethod::Shuffle) => ClassShift::Shuffle,
        Some(ShiftMethod::Rotate) => ClassShift::Rotate,
        None => ClassShift::None,
    };
    if n_classes == Some(0) {
        bail!("the training table has no class");
    }
    let plan = rng::member0_plan(saved.random_state, saved.n_estimators, n_classes, class_shift);
    let p = inference.member0();
    Ok(MemberConfig {
        preprocessor: Preprocessor::from_name(&p.name)?,
        categorical: CategoricalEncoding::from_name(p.categorical_name.as_str())?,
        append_original: match p.append_original {
            saved::AppendOriginal::Yes => AppendOriginal::Yes,
            saved::AppendOriginal::No => AppendOriginal::No,
            saved::AppendOriginal::Auto => AppendOriginal::Auto,
        },
        global_transformer: GlobalTransformer::from_name(p.global_transformer_name.map(|g| g.as_str()))?,
        max_features_per_estimator: usize::try_from(p.max_features_per_estimator).unwrap_or(0),
        fingerprint: inference.fingerprint_feature,
        feature_shift: FeatureShift::from_name(
            inference.feature_shift_method.map(|m| m.as_str()),
            plan.feature_shift_count,
        )?,
        polynomial_features: "no".into(),
        categorical_features_indices: saved.categorical_features_indices.clone(),
        inference: inference_limits(inference),
        seed: plan.seed,
        class_permutation: plan.class_permutation,
    })
}

fn inference_limits(inference: &InferenceConfig) -> preprocess::Inference {
    let size = |v: i64| usize::try_from(v).unwrap_or(0);
    preprocess::Inference {
        max_unique_for_categorical_features: size(inference.max_unique_for_categorical_features),
        min_unique_for_numerical_features: size(inference.min_unique_for_numerical_features),
        min_number_samples_for_categorical_inference: size(inference.min_number_samples_for_categorical_inference),
        max_number_of_classes: size(inference.max_number_of_classes),
    }
}

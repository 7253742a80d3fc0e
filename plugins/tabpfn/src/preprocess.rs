//! tabpfn 6.2's preprocessing for ensemble member 0, in float64, from the input columns to the
//! matrices the transformer reads (docs/TABPFN.md §2): the estimator-level categorical inference
//! and ordinal encoding, the label / target encoding, then member 0's pipeline. Everything but
//! the SVD components (and fingerprints hashing them) is bit-identical to tabpfn's
//! `executor_.X_trains[0]`, `y_trains[0]` and eval transform.
//!
//! [`fit`] learns everything from the train table and returns the train matrix;
//! [`Fitted::transform`] turns eval rows into the eval matrix, each row independently.
//!
//! Refused, by name: polynomial features, feature transforms other than `none`,
//! `squashing_scaler_default` and `quantile_uni_coarse`, one-hot categoricals, infinite values,
//! more than 100 000 or fewer than 2 train rows, constant regression targets, more classes than
//! `MAX_NUMBER_OF_CLASSES`, fractional or mixed-type class labels, all-missing text columns.
//! Where tabpfn 6.2 itself fails (an all-NaN column inferred categorical in a table with text
//! columns crashes its eval encoding) the numeric path's result is given instead.

mod config;
mod constant;
mod encode;
mod fingerprint;
mod member;
mod numpy;
mod ordinal;
mod quantile;
mod reshape;
mod shuffle;
mod squash;
mod svd;
mod targets;

use anyhow::{bail, Result};

pub use config::{
    AppendOriginal, CategoricalEncoding, CategoryFilter, FeatureShift, GlobalTransformer, Inference, MemberConfig,
    Preprocessor,
};
pub use encode::NA_PLACEHOLDER;

/// Most train rows the port accepts (tabpfn's quantile transform subsamples above this).
pub const MAX_TRAIN_ROWS: usize = 100_000;

/// One input column. Numbers hold NaN for missing values; text holds `None`.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Numbers(Vec<f64>),
    Text(Vec<Option<String>>),
}

/// The feature columns of a train or eval table (the target and grouper columns excluded).
/// An all-numeric table is tabpfn's float64-array path, one with a text column its object-array
/// path; the difference is handled inside (see encode.rs).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub names: Vec<String>,
    pub columns: Vec<Column>,
    pub rows: usize,
}

/// A class label as tabpfn's label encoder sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    Text(String),
    Number(f64),
}

/// The train targets: class labels (classification) or values (regression).
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    Classes(Vec<Label>),
    Values(Vec<f64>),
}

/// The numpy `Generator` calls the pipeline makes. Every random step starts a fresh generator
/// from member 0's seed (`rng_for(seed)`), as tabpfn's `default_rng(s0)` per step.
pub trait Rng {
    /// `integers(low, high)`: one draw from `[low, high)`.
    fn integers(&mut self, low: i64, high: i64) -> i64;
    /// `permutation(n)`.
    fn permutation(&mut self, n: usize) -> Vec<usize>;
    /// `choice(range(pop), size, replace=False)`, in the order drawn.
    fn choice_without_replacement(&mut self, pop: usize, size: usize) -> Vec<usize>;
}

/// What the model reads for the train rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Row-major `rows x m` train matrix.
    pub x_train: Vec<f64>,
    /// Per train row: the permuted class index (classification) or the z-scored value.
    pub y_train: Vec<f64>,
    /// Columns of the train and eval matrices.
    pub m: usize,
    /// Train rows.
    pub rows: usize,
    /// The sorted distinct labels (classification; empty for regression).
    pub classes: Vec<Label>,
}

/// Everything learnt from the train rows that eval rows need.
#[derive(Debug, Clone)]
pub struct Fitted {
    front: encode::Front,
    member: member::Member,
}

/// Fits member 0's preprocessing on the train table and targets.
pub fn fit<R: Rng>(
    train: &Table,
    targets: &Targets,
    cfg: &MemberConfig,
    rng_for: impl Fn(u64) -> R,
) -> Result<(Fitted, Prepared)> {
    cfg.check()?;
    if train.rows < 2 {
        bail!("{} train rows; tabpfn needs at least 2", train.rows);
    }
    if train.rows > MAX_TRAIN_ROWS {
        bail!(
            "{} train rows; deepembed reproduces tabpfn up to {MAX_TRAIN_ROWS} (above that tabpfn subsamples)",
            train.rows
        );
    }
    let (y_train, classes) =
        targets::prepare(targets, train.rows, cfg.inference.max_number_of_classes, cfg.class_permutation.as_deref())?;
    let (front, columns) = encode::Front::fit(train, cfg.categorical_features_indices.as_deref(), &cfg.inference)?;
    let (member, x_train) = member::Member::fit(columns, &front.categorical, cfg, &rng_for)?;
    let m = member.width();
    Ok((Fitted { front, member }, Prepared { x_train, y_train, m, rows: train.rows, classes }))
}

/// The classes of classification targets, checked as [`fit`] checks them; the RNG plan needs
/// their count before [`fit`] runs.
pub fn classes(targets: &Targets, max_classes: usize) -> Result<Vec<Label>> {
    match targets {
        Targets::Classes(labels) => targets::classes(labels, max_classes),
        Targets::Values(_) => Ok(Vec::new()),
    }
}

impl Fitted {
    /// The eval matrix, row-major `eval.rows x m`.
    pub fn transform(&self, eval: &Table) -> Result<Vec<f64>> {
        let columns = self.front.transform(eval)?;
        Ok(self.member.transform(columns))
    }

    /// Columns of the matrices.
    pub fn width(&self) -> usize {
        self.member.width()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stand-in for numpy's Generator: permutations reverse, integers give
    /// `low`, choices take the first `size`.
    struct Plain;
    impl Rng for Plain {
        fn integers(&mut self, low: i64, _: i64) -> i64 {
            low + 5
        }
        fn permutation(&mut self, n: usize) -> Vec<usize> {
            (0..n).rev().collect()
        }
        fn choice_without_replacement(&mut self, _: usize, size: usize) -> Vec<usize> {
            (0..size).collect()
        }
    }

    fn table(n: usize) -> Table {
        let num: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let constant = vec![2.0; n];
        let text: Vec<Option<String>> =
            (0..n).map(|i| (i % 5 != 0).then(|| ["a", "b", "c"][i % 3].to_string())).collect();
        Table {
            names: vec!["num".into(), "const".into(), "txt".into()],
            columns: vec![Column::Numbers(num), Column::Numbers(constant), Column::Text(text)],
            rows: n,
        }
    }

    #[test]
    fn minimal_pipeline_end_to_end() {
        let train = table(6);
        let targets =
            Targets::Classes(["x", "y", "x", "y", "y", "x"].iter().map(|s| Label::Text(s.to_string())).collect());
        let (fitted, prepared) = fit(&train, &targets, &MemberConfig::minimal(1), |_| Plain).unwrap();
        // encoded order [txt, num, const]. 6.2's quirk 2 writes NaN at input position 2 (the
        // text column's) of the reordered matrix, i.e. into `const` for the missing rows 0
        // and 5, so `const` is no longer constant and stays.
        assert_eq!(prepared.m, 3);
        assert_eq!(prepared.y_train, vec![0.0, 1.0, 0.0, 1.0, 1.0, 0.0]);
        assert_eq!(prepared.classes, vec![Label::Text("x".into()), Label::Text("y".into())]);
        // txt categories: __MISSING__ < a < b < c (by code point, '_' < 'a')
        let txt: Vec<f64> = (0..6).map(|i| prepared.x_train[3 * i]).collect();
        assert_eq!(txt, vec![0.0, 2.0, 3.0, 1.0, 2.0, 0.0]);
        assert_eq!(prepared.x_train[3..6], [2.0, (0.37f64).sin(), 2.0]);
        assert!(prepared.x_train[2].is_nan() && prepared.x_train[17].is_nan());
        let eval = fitted.transform(&table(2)).unwrap();
        // eval row 0 is missing text: -1, and no NaN is written elsewhere
        assert_eq!(eval, vec![-1.0, 0.0, 2.0, 2.0, (0.37f64).sin(), 2.0]);
    }

    #[test]
    fn default_pipelines_have_the_expected_width() {
        let train = table(30);
        let values: Vec<f64> = (0..30).map(f64::from).collect();
        let (fitted, prepared) =
            fit(&train, &Targets::Values(values), &MemberConfig::regressor_default(3), |_| Plain).unwrap();
        // 3 columns (quirk 2 keeps `const`), appended to their 3 quantile columns, fingerprint
        assert_eq!(prepared.m, 7);
        assert_eq!(prepared.x_train.len(), 30 * 7);
        assert_eq!(fitted.transform(&table(4)).unwrap().len(), 4 * 7);
        let labels = Targets::Classes((0..30).map(|i| Label::Number(f64::from(i % 3))).collect());
        let (_, prepared) =
            fit(&train, &labels, &MemberConfig::classifier_default(3, Some(vec![2, 1, 0])), |_| Plain).unwrap();
        // 3 squashed columns, 1 SVD component (3 // 4 = 0 -> 1), fingerprint
        assert_eq!(prepared.m, 5);
        assert_eq!(prepared.y_train[..3], [2.0, 1.0, 0.0]);
    }

    #[test]
    fn refusals() {
        let one = Table { names: vec!["a".into()], columns: vec![Column::Numbers(vec![1.0])], rows: 1 };
        let err = fit(&one, &Targets::Values(vec![1.0]), &MemberConfig::minimal(0), |_| Plain).unwrap_err();
        assert!(err.to_string().contains("at least 2"));
        let constant = Table { names: vec!["a".into()], columns: vec![Column::Numbers(vec![1.0, 1.0])], rows: 2 };
        let err = fit(&constant, &Targets::Values(vec![1.0, 2.0]), &MemberConfig::minimal(0), |_| Plain).unwrap_err();
        assert!(err.to_string().contains("constant"));
    }
}

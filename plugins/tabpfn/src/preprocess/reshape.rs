//! `ReshapeFeatureDistributionsStep` without its global transformer (svd.rs): the column
//! subsampling above `max_features_per_estimator`, the column layout (original columns
//! appended or categoricals first), and the per-feature transform.

use anyhow::{bail, Result};

use super::config::{AppendOriginal, CategoricalEncoding, MemberConfig, Preprocessor};
use super::{quantile, squash, Rng};

/// tabpfn's `APPEND_TO_ORIGINAL_THRESHOLD`.
const APPEND_THRESHOLD: usize = 500;

#[derive(Debug, Clone)]
enum Transform {
    None,
    Squash(Vec<squash::Scaling>),
    Quantile(Vec<quantile::Quantiles>),
}

/// The fitted reshape step.
#[derive(Debug, Clone)]
pub struct Reshape {
    /// The input columns used, in the order drawn (all of them, in order, without subsampling).
    used: Vec<usize>,
    /// Columns (of the used ones) copied unchanged in front: all of them when the original
    /// columns are appended, the categoricals when they bypass the transform, else none.
    passthrough: Vec<usize>,
    /// Columns (of the used ones) that go through the transform, in output order.
    transformed: Vec<usize>,
    transform: Transform,
}

/// What the fit hands to the next steps.
pub struct Reshaped {
    pub step: Reshape,
    pub columns: Vec<Vec<f64>>,
    pub categorical: Vec<usize>,
    /// The number of input features after subsampling (what the SVD's component count uses).
    pub features: usize,
}

pub fn fit<R: Rng>(
    columns: Vec<Vec<f64>>,
    categorical: &[usize],
    rows: usize,
    cfg: &MemberConfig,
    rng_for: &impl Fn(u64) -> R,
) -> Result<Reshaped> {
    let max = cfg.max_features_per_estimator;
    let (used, categorical) = if columns.len() > max {
        // `rng.choice(range(nf), max, replace=False)`, kept in the order drawn
        let used = rng_for(cfg.seed).choice_without_replacement(columns.len(), max);
        let categorical = used.iter().enumerate().filter(|(_, c)| categorical.contains(c)).map(|(k, _)| k).collect();
        (used, categorical)
    } else {
        ((0..columns.len()).collect(), categorical.to_vec())
    };
    let features = used.len();
    let numerical: Vec<usize> = (0..features).filter(|i| !categorical.contains(i)).collect();
    let apply_to_categorical = cfg.categorical == CategoricalEncoding::Numeric;
    let append = match cfg.append_original {
        AppendOriginal::Yes => true,
        AppendOriginal::No => false,
        AppendOriginal::Auto => features < APPEND_THRESHOLD && (features as f64) < max as f64 / 2.0,
    };
    let transformed: Vec<usize> =
        if apply_to_categorical { categorical.iter().chain(&numerical).copied().collect() } else { numerical };
    let (passthrough, categorical_after) = match (append, apply_to_categorical) {
        (true, _) => ((0..features).collect(), categorical),
        (false, true) => (Vec::new(), Vec::new()),
        (false, false) => (categorical.clone(), (0..categorical.len()).collect()),
    };
    let input = |i: usize| &columns[used[i]];
    let transform = match cfg.preprocessor {
        Preprocessor::None => Transform::None,
        Preprocessor::SquashingScalerDefault => {
            Transform::Squash(transformed.iter().map(|&i| squash::fit(input(i))).collect())
        }
        Preprocessor::QuantileUniCoarse => {
            if rows > quantile::MAX_ROWS {
                bail!(
                    "{rows} train rows: tabpfn's quantile transform subsamples above {} rows, which is not reproduced",
                    quantile::MAX_ROWS
                );
            }
            let references = quantile::references(rows);
            Transform::Quantile(transformed.iter().map(|&i| quantile::fit(input(i), &references)).collect())
        }
    };
    let step = Reshape { used, passthrough, transformed, transform };
    let columns = step.transform(columns);
    Ok(Reshaped { step, columns, categorical: categorical_after, features })
}

impl Reshape {
    /// Lays out and transforms `columns` (consumed: a column used once is moved, not copied).
    pub fn transform(&self, columns: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
        let mut slots: Vec<Option<Vec<f64>>> = columns.into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(self.passthrough.len() + self.transformed.len());
        for &i in &self.passthrough {
            let slot = &mut slots[self.used[i]];
            // a column that is also transformed is still needed below
            out.push(if self.transformed.contains(&i) { slot.clone() } else { slot.take() }.expect("used once"));
        }
        for (k, &i) in self.transformed.iter().enumerate() {
            let column = slots[self.used[i]].take().expect("used once");
            out.push(match &self.transform {
                Transform::None => column,
                Transform::Squash(scalings) => column.iter().map(|&x| squash::transform(&scalings[k], x)).collect(),
                Transform::Quantile(quantiles) => quantiles[k].transform_column(&column),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::config::CategoryFilter;

    /// An RNG that must not be used.
    struct NoRng;
    impl Rng for NoRng {
        fn integers(&mut self, _: i64, _: i64) -> i64 {
            unreachable!()
        }
        fn permutation(&mut self, _: usize) -> Vec<usize> {
            unreachable!()
        }
        fn choice_without_replacement(&mut self, _: usize, _: usize) -> Vec<usize> {
            unreachable!()
        }
    }

    /// Draws the last `size` columns in reverse order.
    struct Reverse;
    impl Rng for Reverse {
        fn integers(&mut self, _: i64, _: i64) -> i64 {
            unreachable!()
        }
        fn permutation(&mut self, _: usize) -> Vec<usize> {
            unreachable!()
        }
        fn choice_without_replacement(&mut self, pop: usize, size: usize) -> Vec<usize> {
            (pop - size..pop).rev().collect()
        }
    }

    fn columns(n: usize) -> Vec<Vec<f64>> {
        (0..n).map(|j| (0..4).map(|i| (i * (j + 1)) as f64).collect()).collect()
    }

    #[test]
    fn categoricals_first_without_append() {
        let cfg = MemberConfig::minimal(0);
        let r = fit(columns(4), &[2], 4, &cfg, &|_| NoRng).unwrap();
        assert_eq!(
            r.columns,
            vec![columns(4)[2].clone(), columns(4)[0].clone(), columns(4)[1].clone(), columns(4)[3].clone()]
        );
        assert_eq!(r.categorical, vec![0]);
    }

    #[test]
    fn append_keeps_the_original_in_front() {
        let cfg = MemberConfig {
            append_original: AppendOriginal::Auto,
            categorical: CategoricalEncoding::Numeric,
            ..MemberConfig::minimal(0)
        };
        let r = fit(columns(3), &[1], 4, &cfg, &|_| NoRng).unwrap();
        // original 3 columns, then the transformed ones with the categorical first
        assert_eq!(r.columns.len(), 6);
        assert_eq!(r.columns[3], columns(3)[1]);
        assert_eq!(r.columns[4], columns(3)[0]);
        assert_eq!(r.categorical, vec![1]);
        // "auto" with max 4: 3 features is not below 4 / 2, so nothing is appended
        let cfg = MemberConfig { max_features_per_estimator: 4, ..cfg };
        let r = fit(columns(3), &[1], 4, &cfg, &|_| NoRng).unwrap();
        assert_eq!(r.columns.len(), 3);
        assert!(r.categorical.is_empty());
    }

    #[test]
    fn subsampling_keeps_the_drawn_order() {
        let cfg = MemberConfig {
            max_features_per_estimator: 2,
            categorical: CategoricalEncoding::Ordinal { filter: CategoryFilter::All, shuffled: false },
            ..MemberConfig::minimal(0)
        };
        let r = fit(columns(4), &[3], 4, &cfg, &|_| Reverse).unwrap();
        // drawn [3, 2]: column 3 is categorical and stays first
        assert_eq!(r.columns, vec![columns(4)[3].clone(), columns(4)[2].clone()]);
        assert_eq!(r.features, 2);
        assert_eq!(r.categorical, vec![0]);
    }
}

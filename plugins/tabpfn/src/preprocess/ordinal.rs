//! `EncodeCategoricalFeaturesStep` for the `ordinal...` names: the selected categorical columns
//! are re-encoded by sorted value (NaN stays NaN, an unseen eval value becomes NaN), optionally
//! through a random permutation of the codes, and moved in front of the other columns.

use super::config::CategoryFilter;
use super::numpy::{category_index, distinct_and_least_count, unique_non_nan};
use super::Rng;

/// tabpfn's threshold for a "common" category: its rarest value occurs this often.
const COMMON_COUNT: usize = 10;

#[derive(Debug, Clone)]
struct Recode {
    column: usize,
    /// The sorted distinct non-NaN train values.
    categories: Vec<f64>,
    /// `perm[code]` replaces each code when shuffled.
    permutation: Option<Vec<usize>>,
}

/// The fitted step: which columns are re-encoded, and how.
#[derive(Debug, Clone)]
pub struct Ordinal {
    recodes: Vec<Recode>,
}

/// Fits on the train columns; returns the step and the re-encoded columns (selected first; the
/// categorical positions after it are `0..selected`, which nothing downstream reads).
pub fn fit<R: Rng>(
    columns: Vec<Vec<f64>>,
    categorical: &[usize],
    filter: CategoryFilter,
    shuffled: bool,
    seed: u64,
    rng_for: &impl Fn(u64) -> R,
) -> (Ordinal, Vec<Vec<f64>>) {
    let rows = columns.first().map_or(0, Vec::len);
    let selected: Vec<usize> = (0..columns.len())
        .filter(|j| categorical.contains(j))
        .filter(|&j| {
            let (distinct, least) = distinct_and_least_count(&columns[j]);
            match filter {
                CategoryFilter::All => true,
                CategoryFilter::VeryCommon => least >= COMMON_COUNT && distinct < rows / 10,
            }
        })
        .collect();
    let mut recodes: Vec<Recode> = selected
        .iter()
        .map(|&j| Recode { column: j, categories: unique_non_nan(&columns[j]), permutation: None })
        .collect();
    if shuffled && !recodes.is_empty() {
        // one generator for all columns, in order; NaN counts as a category of the permutation
        let mut rng = rng_for(seed);
        for (recode, &j) in recodes.iter_mut().zip(&selected) {
            let nan = usize::from(columns[j].iter().any(|v| v.is_nan()));
            recode.permutation = Some(rng.permutation(recode.categories.len() + nan));
        }
    }
    let step = Ordinal { recodes };
    let out = step.transform(columns);
    (step, out)
}

impl Ordinal {
    /// Re-encodes `columns` (consumed): the selected columns' codes first, the others after.
    pub fn transform(&self, columns: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
        let mut out: Vec<Vec<f64>> = self
            .recodes
            .iter()
            .map(|r| {
                columns[r.column]
                    .iter()
                    .map(|&v| match category_index(&r.categories, v) {
                        Some(code) => r.permutation.as_ref().map_or(code, |p| p[code]) as f64,
                        None => f64::NAN,
                    })
                    .collect()
            })
            .collect();
        for (j, column) in columns.into_iter().enumerate() {
            if !self.recodes.iter().any(|r| r.column == j) {
                out.push(column);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reverses: permutation(n) = [n-1, ..., 0].
    struct Reverse;
    impl Rng for Reverse {
        fn integers(&mut self, _: i64, _: i64) -> i64 {
            unreachable!()
        }
        fn permutation(&mut self, n: usize) -> Vec<usize> {
            (0..n).rev().collect()
        }
        fn choice_without_replacement(&mut self, _: usize, _: usize) -> Vec<usize> {
            unreachable!()
        }
    }

    #[test]
    fn very_common_columns_move_first_with_permuted_codes() {
        let nan = f64::NAN;
        let rows = 100;
        // column 1: values 5, 7 and NaN, each at least 30 times; 3 distinct < 100 / 10
        let common: Vec<f64> = (0..rows).map(|i| [7.0, 5.0, nan][i % 3]).collect();
        // column 2: categorical but one value occurs once
        let mut rare = vec![1.0; rows];
        rare[0] = 2.0;
        let plain: Vec<f64> = (0..rows).map(|i| i as f64).collect();
        let columns = vec![plain.clone(), common, rare.clone()];
        let (step, out) = fit(columns, &[1, 2], CategoryFilter::VeryCommon, true, 3, &|_| Reverse);
        assert_eq!(step.recodes.len(), 1);
        // categories [5, 7] (+ NaN): codes 7 -> 1, 5 -> 0, permuted by [2, 1, 0]
        assert_eq!(out[0][0], 1.0);
        assert_eq!(out[0][1], 2.0);
        assert!(out[0][2].is_nan());
        assert_eq!(out[1], plain);
        assert_eq!(out[2], rare);
        // eval: an unseen value becomes NaN
        let eval = step.transform(vec![vec![0.0, 0.0], vec![6.0, 7.0], vec![1.0, 1.0]]);
        assert!(eval[0][0].is_nan());
        assert_eq!(eval[0][1], 1.0);
    }

    #[test]
    fn unshuffled_codes_are_ranks() {
        let columns = vec![vec![3.0, 1.0, 3.0, 2.0]];
        let (_, out) = fit(columns, &[0], CategoryFilter::All, false, 0, &|_| Reverse);
        assert_eq!(out[0], vec![2.0, 0.0, 2.0, 1.0]);
    }
}

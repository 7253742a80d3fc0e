//! sklearn's `QuantileTransformer(output_distribution="uniform")` as tabpfn's
//! `quantile_uni_coarse` configures it: `max(n_train // 10, 2)` quantiles (at most n_train and
//! 20 000), each column mapped through numpy's `interp` averaged from both sides.

use deepembed_sdk::checkpoint::sklearn::QuantileColumn;

use super::numpy::{linspace_unit, maximum, percentile_sorted, sorted_non_nan};

/// tabpfn's quantile transformer subsamples above this many train rows (not reproduced).
pub const MAX_ROWS: usize = 100_000;

/// One column's fitted quantiles against the references shared by all columns.
#[derive(Debug, Clone)]
pub struct Quantiles(QuantileColumn);

/// `AdaptiveQuantileTransformer`'s effective quantile count for `rows` train rows.
pub fn count(rows: usize) -> usize {
    (rows / 10).max(2).min(rows).clamp(1, MAX_ROWS / 5)
}

pub fn fit(column: &[f64], references: &[f64]) -> Quantiles {
    let sorted = sorted_non_nan(column);
    // numpy's `nanpercentile(col, references * 100)` divides by 100 again inside
    let mut quantiles: Vec<f64> = references.iter().map(|&r| percentile_sorted(&sorted, r * 100.0)).collect();
    // `np.maximum.accumulate` down the column
    for i in 1..quantiles.len() {
        quantiles[i] = maximum(quantiles[i - 1], quantiles[i]);
    }
    Quantiles(QuantileColumn::new(quantiles, references.to_vec()))
}

/// The references for `rows` train rows: `np.linspace(0, 1, count(rows))`.
pub fn references(rows: usize) -> Vec<f64> {
    linspace_unit(count(rows))
}

impl Quantiles {
    /// Transforms a column: NaN stays, the bounds map exactly to 0 and 1.
    pub fn transform_column(&self, column: &[f64]) -> Vec<f64> {
        column.iter().map(|&x| if x.is_nan() { x } else { self.0.uniform(x) }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_counts() {
        assert_eq!(count(2), 2);
        assert_eq!(count(15), 2);
        assert_eq!(count(120), 12);
        assert_eq!(count(1_000_000), 20_000);
    }

    #[test]
    fn uniform_column_maps_linearly() {
        // 0..=10 with 11 references: quantiles are the values, so x maps to x / 10; the
        // reference 3 * 0.1 = 0.30000000000000004 lands just above rank 3, as in numpy
        let column: Vec<f64> = (0..=10).map(f64::from).collect();
        let refs = linspace_unit(11);
        let q = fit(&column, &refs);
        for (got, want) in q.0.quantiles().iter().zip(&column) {
            assert!((got - want).abs() < 1e-14, "{got} {want}");
        }
        assert!(q.0.quantiles()[3] > 3.0);
        let out = q.transform_column(&[0.0, 10.0, -3.0, 12.0, 2.5, f64::NAN]);
        assert_eq!(out[..4], [0.0, 1.0, 0.0, 1.0]);
        assert!((out[4] - 0.25).abs() < 1e-15);
        assert!(out[5].is_nan());
    }

    #[test]
    fn ties_average_both_sides() {
        // values 0, 1, 1, 1, 2 with 5 references: quantiles 0, 1, 1, 1, 2;
        // interp from the left lands on the last tie (0.75), from the right on the first (0.25)
        let refs = linspace_unit(5);
        let q = fit(&[0.0, 1.0, 1.0, 1.0, 2.0], &refs);
        assert_eq!(q.transform_column(&[1.0]), vec![0.5]);
    }
}

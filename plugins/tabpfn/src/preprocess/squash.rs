//! skrub's `SquashingScaler` as tabpfn ships it (`squashing_scaler_default`, B = 3): per
//! column a robust scaling (median, interquartile range), or a min-max scaling when the
//! quartiles coincide, or zeros when the column is constant apart from NaN; then the soft
//! clip `z / sqrt(1 + (z/B)^2)`. NaN passes through. The operations are numpy's, in order.

use super::numpy::{median_sorted, nan_max_min, percentile_sorted, sorted_non_nan};

/// The soft-clipping bound `max_absolute_value`.
const BOUND: f64 = 3.0;

/// One column's fitted scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaling {
    /// `nanmax == nanmin`: every finite value becomes 0.
    Zero,
    /// Quartiles equal: `scale * (x - median)`, `scale = 2 / (max - min + float32.tiny)`.
    MinMax { median: f64, scale: f64 },
    /// sklearn's `RobustScaler`: `(x - median) / (q75 - q25)`, the range replaced by 1 when
    /// below `10 * f64::EPSILON`.
    Robust { median: f64, scale: f64 },
}

pub fn fit(column: &[f64]) -> Scaling {
    let (max, min) = nan_max_min(column);
    if max == min {
        return Scaling::Zero;
    }
    let sorted = sorted_non_nan(column);
    let (q25, q75) = (percentile_sorted(&sorted, 25.0), percentile_sorted(&sorted, 75.0));
    let median = median_sorted(&sorted);
    if q25 == q75 {
        // numpy's float32 `tiny` added to a float64 difference
        let tiny = f64::from(f32::MIN_POSITIVE);
        Scaling::MinMax { median, scale: 2.0 / (max - min + tiny) }
    } else {
        let range = q75 - q25;
        Scaling::Robust { median, scale: if range < 10.0 * f64::EPSILON { 1.0 } else { range } }
    }
}

pub fn transform(scaling: &Scaling, x: f64) -> f64 {
    let z = match *scaling {
        Scaling::Zero => {
            if x.is_finite() {
                0.0
            } else {
                x
            }
        }
        Scaling::MinMax { median, scale } => scale * (x - median),
        Scaling::Robust { median, scale } => (x - median) / scale,
    };
    let t = z / BOUND;
    z / (1.0 + t * t).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_column_by_hand() {
        // 1, 2, 3, 4, 5 (+ NaN): median 3, quartiles 2 and 4, range 2
        let column = [5.0, 1.0, f64::NAN, 3.0, 2.0, 4.0];
        let scaling = fit(&column);
        assert_eq!(scaling, Scaling::Robust { median: 3.0, scale: 2.0 });
        // x = 9: z = 3, out = 3 / sqrt(2)
        assert_eq!(transform(&scaling, 9.0), 3.0 / 2f64.sqrt());
        // x = 3: z = 0
        assert_eq!(transform(&scaling, 3.0), 0.0);
        // x = 1: z = -1, out = -1 / sqrt(1 + 1/9)
        assert_eq!(transform(&scaling, 1.0), -1.0 / (1.0f64 + (1.0 / 3.0) * (1.0 / 3.0)).sqrt());
        assert!(transform(&scaling, f64::NAN).is_nan());
    }

    #[test]
    fn minmax_when_quartiles_tie() {
        // 0, 1, 1, 1, 2: quartiles both 1, median 1, range 2 -> scale 2 / 2 = 1
        let scaling = fit(&[0.0, 1.0, 1.0, 1.0, 2.0, f64::NAN]);
        let tiny = f64::from(f32::MIN_POSITIVE);
        assert_eq!(scaling, Scaling::MinMax { median: 1.0, scale: 2.0 / (2.0 + tiny) });
        // skrub's documented example: 0 -> -0.9486833 (= -1 / sqrt(10/9))
        assert!((transform(&scaling, 0.0) + 0.9486833).abs() < 1e-7);
    }

    #[test]
    fn zero_for_constant_apart_from_nan() {
        let scaling = fit(&[1.0, 1.0, f64::NAN]);
        assert_eq!(scaling, Scaling::Zero);
        assert_eq!(transform(&scaling, 7.0), 0.0);
        assert!(transform(&scaling, f64::NAN).is_nan());
        // an all-NaN column is not "zero": its statistics are NaN and so is every output
        let scaling = fit(&[f64::NAN, f64::NAN]);
        assert!(matches!(scaling, Scaling::Robust { .. }));
        assert!(transform(&scaling, 1.0).is_nan());
    }

    #[test]
    fn tiny_ranges_scale_by_one() {
        let column = [1.0, 1.0 + 2.0 * f64::EPSILON, 1.0 + 4.0 * f64::EPSILON, 1.0 + 6.0 * f64::EPSILON];
        match fit(&column) {
            Scaling::Robust { scale, .. } => assert_eq!(scale, 1.0),
            other => panic!("{other:?}"),
        }
    }
}

//! numpy's float64 primitives, operation for operation, so that results are bit-identical to
//! what tabpfn computes with numpy 2.x: `nanpercentile` (method "linear"), `nanmedian`,
//! `linspace`, `maximum`, `unique` and the pairwise summation behind a 1-D `sum`/`mean`/`std`.

use std::cmp::Ordering;

/// The non-NaN values of `column`, sorted ascending (numpy sorts before every quantile).
pub fn sorted_non_nan(column: &[f64]) -> Vec<f64> {
    let mut values: Vec<f64> = column.iter().copied().filter(|v| !v.is_nan()).collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    values
}

/// `np.nanpercentile(column, q_percent)` with `sorted` from [`sorted_non_nan`]: numpy divides
/// by 100 first, takes the virtual index `(n-1)*q` and interpolates with its `_lerp`, which
/// computes from the upper neighbour when the fraction is at least 0.5.
pub fn percentile_sorted(sorted: &[f64], q_percent: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let q = q_percent / 100.0;
    let virtual_index = (n - 1) as f64 * q;
    if virtual_index >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    if virtual_index < 0.0 {
        return sorted[0];
    }
    let previous = virtual_index.floor();
    let gamma = virtual_index - previous;
    let (a, b) = (sorted[previous as usize], sorted[previous as usize + 1]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

/// `np.nanmedian` of one column given its sorted non-NaN values: the middle value, or the mean
/// of the two middle values computed as `(lo + hi) / 2`.
pub fn median_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `np.nanmax` / `np.nanmin` of a column: NaN when the column holds no number.
pub fn nan_max_min(column: &[f64]) -> (f64, f64) {
    let mut finite = column.iter().copied().filter(|v| !v.is_nan()).peekable();
    if finite.peek().is_none() {
        return (f64::NAN, f64::NAN);
    }
    finite.fold((f64::NEG_INFINITY, f64::INFINITY), |(hi, lo), v| (hi.max(v), lo.min(v)))
}

/// `np.maximum(a, b)` for one pair: NaN wins, and equal values (0.0 and -0.0) give `b`.
pub fn maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || (!b.is_nan() && a > b) {
        a
    } else {
        b
    }
}

/// `np.linspace(0, 1, num)`: `i * (1 / (num - 1))`, the last element exactly 1.
pub fn linspace_unit(num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![0.0];
    }
    let step = 1.0 / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + 0.0).collect();
    values[num - 1] = 1.0;
    values
}

/// numpy's pairwise summation of a contiguous float64 array (`pairwise_sum_DOUBLE`): eight
/// running sums in blocks of at most 128 values, halves (rounded to multiples of 8) above.
fn pairwise_sum(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 8 {
        let mut sum = 0.0;
        for &v in values {
            sum += v;
        }
        sum
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&values[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += values[i + k];
            }
            i += 8;
        }
        let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &values[i..] {
            sum += v;
        }
        sum
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum(&values[..half]) + pairwise_sum(&values[half..])
    }
}

/// `np.sum` of a 1-D float64 array: the reduction starts from 0.0 and adds the pairwise sum.
pub fn sum(values: &[f64]) -> f64 {
    0.0 + pairwise_sum(values)
}

/// `np.mean(values)` and `np.std(values)` (ddof 0) of a 1-D float64 array, as numpy's
/// `_mean`/`_var` compute them: `sum/n`, then `sqrt(sum((x - mean)^2) / n)`.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = sum(values) / n;
    let squares: Vec<f64> = values
        .iter()
        .map(|&v| {
            let d = v - mean;
            d * d
        })
        .collect();
    (mean, (sum(&squares) / n).sqrt())
}

/// `np.unique(column, return_counts=True)` reduced to what tabpfn asks of it: the number of
/// distinct values and the smallest count (NaNs count as one value, as numpy's `equal_nan`).
pub fn distinct_and_least_count(column: &[f64]) -> (usize, usize) {
    let sorted = sorted_non_nan(column);
    let nan = column.len() - sorted.len();
    let mut distinct = usize::from(nan > 0);
    let mut least = if nan > 0 { nan } else { usize::MAX };
    let mut run = 0;
    for (i, v) in sorted.iter().enumerate() {
        run += 1;
        if i + 1 == sorted.len() || sorted[i + 1] != *v {
            distinct += 1;
            least = least.min(run);
            run = 0;
        }
    }
    (distinct, if distinct == 0 { 0 } else { least })
}

/// The sorted distinct non-NaN values of `column` (`np.unique` without its NaN entry).
pub fn unique_non_nan(column: &[f64]) -> Vec<f64> {
    let mut values = sorted_non_nan(column);
    values.dedup_by(|a, b| a == b);
    values
}

/// Position of `value` among sorted distinct `categories`, by float equality (3.0 == 3, -0.0 == 0.0).
pub fn category_index(categories: &[f64], value: f64) -> Option<usize> {
    let i = categories.partition_point(|&c| c < value);
    (i < categories.len() && categories[i] == value).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook linear percentile: rank `h = (n-1) q`, `v[floor h] + (h - floor h)(v[floor h + 1] - v[floor h])`.
    fn textbook(sorted: &[f64], q: f64) -> f64 {
        let h = (sorted.len() - 1) as f64 * q / 100.0;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(sorted.len() - 1);
        sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
    }

    #[test]
    fn percentiles_follow_the_linear_rule() {
        let sorted = sorted_non_nan(&[4.0, f64::NAN, 1.0, 3.0, 2.0]);
        assert_eq!(sorted, vec![1.0, 2.0, 3.0, 4.0]);
        // quartiles of 1..4: ranks 0.75 and 2.25
        assert_eq!(percentile_sorted(&sorted, 25.0), 1.75);
        assert_eq!(percentile_sorted(&sorted, 75.0), 3.25);
        assert_eq!(percentile_sorted(&sorted, 0.0), 1.0);
        assert_eq!(percentile_sorted(&sorted, 100.0), 4.0);
        // exactly representable cases agree with the textbook formula
        for q in [10.0, 50.0, 62.5, 90.0] {
            assert_eq!(percentile_sorted(&sorted, q), textbook(&sorted, q), "q={q}");
        }
        assert_eq!(percentile_sorted(&[7.0], 30.0), 7.0);
        assert!(percentile_sorted(&[], 30.0).is_nan());
    }

    #[test]
    fn percentile_upper_half_interpolates_from_above() {
        // numpy computes b - (b-a)(1-g) when g >= 0.5; for [0.2, 0.9] at 75 % that rounds
        // differently from a + (b-a)g, so the branch is observable.
        let sorted = [0.2, 0.9];
        let from_above = 0.9 - (0.9 - 0.2) * (1.0 - 0.75);
        let from_below = 0.2 + (0.9 - 0.2) * 0.75;
        assert_ne!(from_above, from_below);
        assert_eq!(percentile_sorted(&sorted, 75.0), from_above);
        assert_eq!(percentile_sorted(&sorted, 25.0), 0.2 + (0.9 - 0.2) * 0.25);
    }

    #[test]
    fn medians() {
        assert_eq!(median_sorted(&[1.0, 2.0, 10.0]), 2.0);
        assert_eq!(median_sorted(&[1.0, 2.0, 3.0, 10.0]), 2.5);
        assert!(median_sorted(&[]).is_nan());
    }

    #[test]
    fn linspace_ends_exactly() {
        assert_eq!(linspace_unit(5), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let ten = linspace_unit(11);
        assert_eq!(ten[3], 3.0 * (1.0 / 10.0));
        assert_eq!(ten[10], 1.0);
    }

    #[test]
    fn maximum_propagates_nan_and_prefers_the_second_of_equals() {
        assert!(maximum(f64::NAN, 1.0).is_nan());
        assert!(maximum(1.0, f64::NAN).is_nan());
        assert_eq!(maximum(2.0, 1.0), 2.0);
        assert!(maximum(-0.0, 0.0).is_sign_positive());
        assert!(maximum(0.0, -0.0).is_sign_negative());
    }

    #[test]
    fn pairwise_sum_blocks() {
        // 1e16 + 1 + ... sequentially loses every 1.0; the 8-way blocks keep some of them.
        let mut values = vec![1.0; 16];
        values[0] = 1e16;
        let sequential = values.iter().fold(0.0, |a, &b| a + b);
        assert_eq!(sequential, 1e16);
        // r[0] = 1e16 + 1 + 1 (both lost), r[1..8] = 2 each: ((1e16 + 2) + 4) + 8
        assert_eq!(sum(&values), 1e16 + 14.0);
        let (mean, std) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(mean, 2.5);
        assert_eq!(std, 1.25f64.sqrt());
    }

    #[test]
    fn unique_counts() {
        assert_eq!(distinct_and_least_count(&[1.0, 1.0, 2.0, f64::NAN, f64::NAN, 2.0, 2.0]), (3, 2));
        assert_eq!(distinct_and_least_count(&[]), (0, 0));
        assert_eq!(unique_non_nan(&[3.0, f64::NAN, 1.0, 3.0]), vec![1.0, 3.0]);
        assert_eq!(category_index(&[1.0, 3.0], 3.0), Some(1));
        assert_eq!(category_index(&[1.0, 3.0], 2.0), None);
        assert_eq!(category_index(&[-1.0, 0.0], -0.0), Some(1));
    }
}

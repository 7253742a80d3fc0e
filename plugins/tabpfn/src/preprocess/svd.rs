//! The reshape step's global transformer `svd` / `svd_quarter_components`: the reshaped
//! columns are mean-imputed and divided by their standard deviation (sklearn's `SimpleImputer`
//! and `StandardScaler(with_mean=False)`), and their top right singular vectors appended.
//!
//! tabpfn runs sklearn's `TruncatedSVD(algorithm="arpack")`, whose Lanczos iterations cannot be
//! reproduced bit for bit (docs/TABPFN.md §7). Here libtorch's float64 LAPACK SVD (`torch.svd`, reduced)
//! computes the same decomposition to about 1e-15: the top `k` right singular vectors in
//! descending singular value, signs fixed by sklearn's `svd_flip(u_based_decision=False)`
//! (each vector's largest-magnitude entry positive), train rows `U * Sigma`, eval rows
//! `Xs_eval @ V`. The fingerprint hashes these columns, so a row's fingerprint can differ from
//! tabpfn's when such a 1e-15 difference crosses a rounding boundary of the salted value.

use anyhow::{anyhow, Result};
use tch::{Kind, Tensor};

/// The fitted imputation, scaling and components.
#[derive(Debug, Clone)]
pub struct Svd {
    /// Per input column: the train mean of its present values (0 when it has none).
    fill: Vec<f64>,
    /// Per input column: the train standard deviation (1 for a near-constant column).
    scale: Vec<f64>,
    /// `k` right singular vectors, each of the input width.
    components: Vec<Vec<f64>>,
}

/// TruncatedSVD's component count: `max(1, min(rows // 10 + 1, features // divisor))`.
pub fn component_count(rows: usize, features: usize, divisor: usize) -> usize {
    (rows / 10 + 1).min(features / divisor).max(1)
}

/// Sum of a column as numpy reduces a C-ordered matrix along axis 0: in row order from 0.0.
fn column_sum(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |acc, v| acc + v)
}

/// Fits on the reshaped train columns; returns the step and the `k` train columns `U * Sigma`.
pub fn fit(columns: &[Vec<f64>], k: usize) -> Result<(Svd, Vec<Vec<f64>>)> {
    let rows = columns.first().map_or(0, Vec::len);
    let n = rows as f64;
    let mut fill = Vec::with_capacity(columns.len());
    let mut scale = Vec::with_capacity(columns.len());
    for column in columns {
        // SimpleImputer(strategy="mean", keep_empty_features=True)
        let present = column.iter().filter(|v| !v.is_nan()).count();
        let nansum = column_sum(column.iter().map(|&v| if v.is_nan() { 0.0 } else { v }));
        let mean = if present > 0 { nansum * 1.0 / present as f64 } else { 0.0 };
        // StandardScaler(with_mean=False): sklearn's corrected two-pass variance
        let filled = || column.iter().map(move |&v| if v.is_nan() { mean } else { v });
        let total = column_sum(filled());
        let column_mean = (0.0 + total) / n;
        let centre = total / n;
        let correction = column_sum(filled().map(|v| v - centre));
        let squares = column_sum(filled().map(|v| (v - centre) * (v - centre)));
        let variance = (squares - correction * correction / n) / n;
        let eps = f64::EPSILON;
        let bound = n * eps * variance + (n * column_mean * eps) * (n * column_mean * eps);
        fill.push(mean);
        scale.push(if variance <= bound { 1.0 } else { variance.sqrt() });
    }
    let step = Svd { fill, scale, components: Vec::new() };
    let scaled = step.prescale(columns);
    let width = columns.len();
    let mut flat = vec![0.0f64; rows * width];
    for (j, column) in scaled.iter().enumerate() {
        for (i, &v) in column.iter().enumerate() {
            flat[i * width + j] = v;
        }
    }
    let matrix = Tensor::from_slice(&flat).view([rows as i64, width as i64]);
    let (u, s, v) = {
        let _one = OneThread::new();
        matrix.f_svd(true, true).map_err(|e| anyhow!("SVD of the {rows} x {width} train matrix failed: {e}"))?
    };
    let u = to_rows(&u)?;
    let s: Vec<f64> = Vec::try_from(&s.to_kind(Kind::Double).contiguous()).map_err(|e| anyhow!("{e}"))?;
    let v = to_rows(&v)?;
    let k = k.min(s.len());
    let mut components = Vec::with_capacity(k);
    let mut train = Vec::with_capacity(k);
    for c in 0..k {
        let mut vector: Vec<f64> = v.iter().map(|row| row[c]).collect();
        // svd_flip(u_based_decision=False): the first largest |entry| becomes positive
        let mut largest = 0;
        for (i, x) in vector.iter().enumerate() {
            if x.abs() > vector[largest].abs() {
                largest = i;
            }
        }
        let sign = vector[largest].signum();
        vector.iter_mut().for_each(|x| *x *= sign);
        train.push(u.iter().map(|row| row[c] * sign * s[c]).collect());
        components.push(vector);
    }
    Ok((Svd { components, ..step }, train))
}

/// libtorch's LAPACK SVD gives last bits that change with the number of threads, and the
/// fingerprint hashes those bits: one thread makes the result the same on every machine (and
/// agreed with tabpfn's more often than two or eight did). Restores the thread count on drop.
struct OneThread(i32);

impl OneThread {
    fn new() -> OneThread {
        let threads = tch::get_num_threads();
        tch::set_num_threads(1);
        OneThread(threads)
    }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

fn to_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Vec::<Vec<f64>>::try_from(&t.to_kind(Kind::Double).contiguous()).map_err(|e| anyhow!("{e}"))
}

impl Svd {
    /// The imputed and scaled columns the SVD sees.
    fn prescale(&self, columns: &[Vec<f64>]) -> Vec<Vec<f64>> {
        columns
            .iter()
            .enumerate()
            .map(|(j, column)| {
                column.iter().map(|&v| if v.is_nan() { self.fill[j] } else { v } / self.scale[j]).collect()
            })
            .collect()
    }

    /// The component columns of rows not seen at fit: `prescaled @ components.T`.
    pub fn transform(&self, columns: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let scaled = self.prescale(columns);
        let rows = columns.first().map_or(0, Vec::len);
        self.components
            .iter()
            .map(|vector| {
                (0..rows)
                    .map(|i| scaled.iter().zip(vector).fold(0.0, |acc, (column, &w)| acc + column[i] * w))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_counts() {
        assert_eq!(component_count(120, 7, 4), 1);
        assert_eq!(component_count(120, 40, 4), 10);
        assert_eq!(component_count(30, 40, 4), 4);
        assert_eq!(component_count(30, 40, 2), 4);
        assert_eq!(component_count(300, 41, 2), 20);
    }

    #[test]
    fn rank_one_matrix() {
        // columns a*t and b*t (t centred): after scaling by the std both columns equal
        // t / std(t) up to sign, so the one right singular vector is (1, 1)/sqrt 2 (flipped
        // positive) and U*Sigma reproduces X_scaled @ v.
        let t = [-1.5, -0.5, 0.5, 1.5];
        let columns = vec![t.iter().map(|x| 2.0 * x).collect::<Vec<f64>>(), t.iter().map(|x| -3.0 * x).collect()];
        let (svd, train) = fit(&columns, 1).unwrap();
        let h = 0.5f64.sqrt();
        assert!((svd.components[0][0].abs() - h).abs() < 1e-12);
        assert!(svd.components[0].iter().any(|&x| x > 0.0));
        let eval = svd.transform(&columns);
        for i in 0..4 {
            assert!((train[0][i] - eval[0][i]).abs() < 1e-12, "{} {}", train[0][i], eval[0][i]);
        }
        // std of t is sqrt(1.25): scaled entries are +-t/sqrt(1.25), so |U Sigma| = sqrt 2 |t| / sqrt 1.25
        assert!((train[0][0].abs() - 2f64.sqrt() * 1.5 / 1.25f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn missing_values_take_the_mean_and_constant_columns_scale_by_one() {
        let nan = f64::NAN;
        let columns = vec![vec![1.0, nan, 3.0, 5.0], vec![4.0, 4.0, 4.0, 4.0], vec![nan, nan, nan, nan]];
        let (svd, _) = fit(&columns, 1).unwrap();
        assert_eq!(svd.fill, vec![3.0, 4.0, 0.0]);
        // column 0 imputed: 1, 3, 3, 5: population variance 2
        assert_eq!(svd.scale[0], 2f64.sqrt());
        assert_eq!(svd.scale[1], 1.0);
        assert_eq!(svd.scale[2], 1.0);
    }
}

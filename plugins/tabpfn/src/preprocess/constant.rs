//! `RemoveConstantFeaturesStep`: drops the columns whose train values all equal the first
//! train row's, by float64 equality (so NaN, unequal to itself, keeps a column).

use anyhow::{bail, Result};

/// The kept column positions, and the categorical positions renumbered among them.
pub fn fit(columns: &[Vec<f64>], categorical: &[usize]) -> Result<(Vec<usize>, Vec<usize>)> {
    let kept: Vec<usize> = (0..columns.len()).filter(|&j| columns[j].iter().any(|&v| !(v == columns[j][0]))).collect();
    if kept.is_empty() {
        bail!(
            "every feature column is constant over the train rows; tabpfn removes constant columns and cannot \
             embed rows with none left"
        );
    }
    let renumbered = kept.iter().enumerate().filter(|(_, j)| categorical.contains(j)).map(|(k, _)| k).collect();
    Ok((kept, renumbered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_columns_go_and_nan_keeps() {
        let nan = f64::NAN;
        let columns = vec![
            vec![1.0, 1.0, 1.0],
            vec![1.0, 2.0, 1.0],
            vec![nan, nan, nan],
            vec![0.0, -0.0, 0.0],
            vec![5.0, 5.0, nan],
        ];
        let (kept, categorical) = fit(&columns, &[0, 2, 4]).unwrap();
        // -0.0 == 0.0, so column 3 is constant
        assert_eq!(kept, vec![1, 2, 4]);
        assert_eq!(categorical, vec![1, 2]);
        assert!(fit(&[vec![2.0, 2.0]], &[]).is_err());
    }
}

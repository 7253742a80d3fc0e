//! The train targets as the model sees them (docs/TABPFN.md §2): class labels become their rank among
//! the sorted distinct labels (sklearn's `LabelEncoder`), then member 0's class permutation;
//! regression values are z-scored with numpy's mean and population std.

use std::cmp::Ordering;

use anyhow::{bail, Result};

use super::numpy::mean_std;
use super::{Label, Targets};

/// Orders labels as numpy sorts the array tabpfn holds: numbers numerically, text by code point.
fn compare(a: &Label, b: &Label) -> Ordering {
    match (a, b) {
        (Label::Number(a), Label::Number(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
        (Label::Text(a), Label::Text(b)) => a.cmp(b),
        // mixed labels are refused before sorting
        (Label::Number(_), Label::Text(_)) => Ordering::Less,
        (Label::Text(_), Label::Number(_)) => Ordering::Greater,
    }
}

fn describe(label: &Label) -> String {
    match label {
        Label::Number(v) => format!("{v}"),
        Label::Text(t) => format!("'{t}'"),
    }
}

/// The sorted distinct labels (`LabelEncoder.classes_`), checked: no missing label, numbers
/// whole, no mix of numbers and text, at most `max_classes` classes.
pub fn classes(labels: &[Label], max_classes: usize) -> Result<Vec<Label>> {
    if let Some(row) = labels.iter().position(|l| matches!(l, Label::Number(v) if !v.is_finite())) {
        bail!("target row {row} is {}; class labels must be present and finite", describe(&labels[row]));
    }
    // sklearn's check_classification_targets calls non-integral float labels continuous
    if let Some(row) = labels.iter().position(|l| matches!(l, Label::Number(v) if v.fract() != 0.0)) {
        bail!(
            "target row {row} is {}, not a whole number; tabpfn (sklearn) refuses such class labels as continuous: \
             embed for regression or give the classes as text",
            describe(&labels[row])
        );
    }
    let first_text = labels.iter().position(|l| matches!(l, Label::Text(_)));
    let first_number = labels.iter().position(|l| matches!(l, Label::Number(_)));
    if let (Some(t), Some(n)) = (first_text, first_number) {
        bail!(
            "the target column mixes text ({} in row {t}) and numbers ({} in row {n}); tabpfn cannot order such \
             labels: make them all text or all numbers",
            describe(&labels[t]),
            describe(&labels[n])
        );
    }
    let mut classes = labels.to_vec();
    classes.sort_by(compare);
    classes.dedup_by(|a, b| compare(a, b) == Ordering::Equal);
    if classes.len() > max_classes {
        bail!(
            "the target has {} classes; tabpfn supports at most {max_classes} (MAX_NUMBER_OF_CLASSES)",
            classes.len()
        );
    }
    Ok(classes)
}

/// The model's train targets and, for classification, the classes.
pub fn prepare(
    targets: &Targets,
    rows: usize,
    max_classes: usize,
    permutation: Option<&[usize]>,
) -> Result<(Vec<f64>, Vec<Label>)> {
    let len = match targets {
        Targets::Classes(labels) => labels.len(),
        Targets::Values(values) => values.len(),
    };
    if len != rows {
        bail!("{len} targets for {rows} train rows");
    }
    match targets {
        Targets::Classes(labels) => {
            let classes = classes(labels, max_classes)?;
            if let Some(p) = permutation {
                let mut sorted = p.to_vec();
                sorted.sort_unstable();
                if sorted != (0..classes.len()).collect::<Vec<_>>() {
                    bail!("the class permutation {p:?} is not a permutation of the {} classes", classes.len());
                }
            }
            let y = labels
                .iter()
                .map(|l| {
                    let code = classes.partition_point(|c| compare(c, l) == Ordering::Less);
                    permutation.map_or(code, |p| p[code]) as f64
                })
                .collect();
            Ok((y, classes))
        }
        Targets::Values(values) => {
            if let Some(row) = values.iter().position(|v| !v.is_finite()) {
                bail!("target row {row} is {}; regression targets must be present and finite", values[row]);
            }
            if values.iter().all(|&v| v == values[0]) {
                bail!(
                    "the regression target is constant ({}); tabpfn builds no model for a constant target",
                    values[0]
                );
            }
            let (mean, std) = mean_std(values);
            let scale = std + 1e-20;
            Ok((values.iter().map(|&v| (v - mean) / scale).collect(), Vec::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Label {
        Label::Text(t.to_string())
    }

    #[test]
    fn labels_rank_by_sorted_value() {
        let labels = vec![text("b"), text("B"), text("a"), text("b")];
        let (y, classes) = prepare(&Targets::Classes(labels), 4, 10, None).unwrap();
        assert_eq!(classes, vec![text("B"), text("a"), text("b")]);
        assert_eq!(y, vec![2.0, 0.0, 1.0, 2.0]);
        // numbers sort numerically (10 after 9), and 1 and 1.0 are one class
        let labels = vec![Label::Number(10.0), Label::Number(9.0), Label::Number(1.0)];
        let (y, _) = prepare(&Targets::Classes(labels), 3, 10, Some(&[2, 0, 1])).unwrap();
        // ranks 2, 1, 0 through the permutation [2, 0, 1]
        assert_eq!(y, vec![1.0, 0.0, 2.0]);
    }

    #[test]
    fn label_refusals() {
        let mixed = vec![text("a"), Label::Number(1.0)];
        assert!(prepare(&Targets::Classes(mixed), 2, 10, None).unwrap_err().to_string().contains("mixes"));
        let many: Vec<Label> = (0..11).map(|i| Label::Number(f64::from(i))).collect();
        assert!(prepare(&Targets::Classes(many), 11, 10, None).unwrap_err().to_string().contains("11 classes"));
        let half = vec![Label::Number(1.0), Label::Number(2.5)];
        assert!(prepare(&Targets::Classes(half), 2, 10, None).unwrap_err().to_string().contains("row 1 is 2.5"));
        let nan = vec![Label::Number(f64::NAN), Label::Number(1.0)];
        assert!(prepare(&Targets::Classes(nan), 2, 10, None).unwrap_err().to_string().contains("row 0"));
        let labels = vec![text("a"), text("b")];
        assert!(prepare(&Targets::Classes(labels), 2, 10, Some(&[0, 0])).is_err());
    }

    #[test]
    fn values_are_z_scored() {
        let (y, _) = prepare(&Targets::Values(vec![1.0, 3.0]), 2, 10, None).unwrap();
        // mean 2, population std 1
        assert_eq!(y, vec![-1.0, 1.0]);
        assert!(prepare(&Targets::Values(vec![5.0, 5.0]), 2, 10, None).unwrap_err().to_string().contains("constant"));
        assert!(prepare(&Targets::Values(vec![5.0]), 2, 10, None).unwrap_err().to_string().contains("1 targets"));
    }
}

//! Embeddings a downstream model cannot use: rows holding a NaN or an infinity, and, in fp16,
//! rows that are all zero (activations below fp16's smallest number, about 6e-8, become zero;
//! those above 65504 become infinite). They are written as they are, since a run may hold only
//! a few, and reported once at the end with the first such row and what to try.

use crate::Precision;

/// What a run's embeddings held that the user should hear about.
pub struct SuspectRows {
    precision: Precision,
    non_finite: Found,
    all_zero: Found,
}

#[derive(Default)]
struct Found {
    rows: u64,
    /// The first such input row (0-based).
    first: Option<u64>,
}

impl Found {
    fn note(&mut self, row: u64) {
        self.rows += 1;
        self.first = Some(self.first.map_or(row, |first| first.min(row)));
    }
}

impl SuspectRows {
    pub fn new(precision: Precision) -> SuspectRows {
        SuspectRows { precision, non_finite: Found::default(), all_zero: Found::default() }
    }

    /// Checks input row `row`'s embedding.
    pub fn check(&mut self, row: u64, embedding: &[f32]) {
        if embedding.iter().any(|v| !v.is_finite()) {
            self.non_finite.note(row);
        } else if self.precision == Precision::Fp16 && embedding.iter().all(|&v| v == 0.0) {
            self.all_zero.note(row);
        }
    }

    /// The run's warnings, if any (also logged by [`SuspectRows::report`]).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let half = self.precision != Precision::Fp32;
        if let Some(first) = self.non_finite.first {
            let what = format!(
                "{} row(s) have NaN or infinite embedding values (the first: input row {first})",
                self.non_finite.rows
            );
            warnings.push(if half {
                format!(
                    "{what}; in half precision, values beyond its range overflow: run again with --precision fp32{}",
                    if self.precision == Precision::Fp16 { " or bf16" } else { "" }
                )
            } else {
                format!("{what}: the model computed them; check the checkpoint and that row's input")
            });
        }
        if let Some(first) = self.all_zero.first {
            warnings.push(format!(
                "{} row(s) have embeddings that are all zero (the first: input row {first}); in fp16, values below \
                 about 6e-8 become zero: run again with --precision bf16 or fp32",
                self.all_zero.rows
            ));
        }
        warnings
    }

    pub fn report(&self) {
        for warning in self.warnings() {
            log::warn!("{warning}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_rows_are_counted_in_any_precision_with_the_first_row() {
        let mut rows = SuspectRows::new(Precision::Fp32);
        rows.check(7, &[1.0, f32::NAN]);
        rows.check(3, &[f32::INFINITY, 0.0]);
        rows.check(4, &[0.0, 0.0]);
        rows.check(5, &[1.0, 2.0]);
        let warnings = rows.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("2 row(s) have NaN or infinite") && warnings[0].contains("input row 3"));
        assert!(warnings[0].contains("the model computed them"), "{}", warnings[0]);
    }

    #[test]
    fn all_zero_rows_are_reported_in_fp16_only() {
        for (precision, expected) in [(Precision::Fp16, 1), (Precision::Bf16, 0), (Precision::Fp32, 0)] {
            let mut rows = SuspectRows::new(precision);
            rows.check(0, &[0.5, 0.0]);
            rows.check(9, &[0.0, -0.0]);
            let warnings = rows.warnings();
            assert_eq!(warnings.len(), expected, "{precision:?}: {warnings:?}");
            if expected == 1 {
                assert!(warnings[0].contains("input row 9") && warnings[0].contains("--precision bf16 or fp32"));
            }
        }
        let mut rows = SuspectRows::new(Precision::Fp16);
        rows.check(2, &[f32::NEG_INFINITY]);
        assert!(rows.warnings()[0].contains("--precision fp32 or bf16"));
        assert!(SuspectRows::new(Precision::Fp16).warnings().is_empty());
    }
}

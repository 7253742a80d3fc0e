//! The estimator-level input handling that runs before any ensemble member (docs/TABPFN.md §2):
//! which columns are categorical, and tabpfn 6.2's ordinal encoder with its column order and
//! its two quirks. The output is the float64 matrix every member starts from.
//!
//! tabpfn sees a float64 array when every column is numeric, an object array otherwise. The
//! two paths differ in what reaches the encoder: a text column is a pandas `string` column,
//! filled with `"__MISSING__"` before encoding, unless it is categorical, when it is a
//! `category` column whose missing values stay missing. Numeric columns behave alike in both.

use std::collections::{BTreeSet, HashSet};

use anyhow::{bail, Result};

use super::numpy::{category_index, unique_non_nan};
use super::{Column, Inference, Table};

/// What tabpfn 6.2 writes for a missing text value before encoding.
pub const NA_PLACEHOLDER: &str = "__MISSING__";

/// How one encoded column maps values to codes.
#[derive(Debug, Clone)]
enum Codes {
    /// A text column tabpfn holds as pandas `string`: at fit, missing values are filled with
    /// `"__MISSING__"` (which becomes a category); at eval, missing is unknown (-1).
    Text { categories: Vec<String> },
    /// A text column that is categorical, held as pandas `category`: missing stays missing
    /// (NaN, a category of its own when the train rows had one). At eval the column is a
    /// `category` again only if the user listed it in `categorical_features_indices`; otherwise
    /// pandas' `NA` reaches the encoder as an unknown value (-1).
    TextCategory { categories: Vec<String>, missing_is_nan_at_eval: bool },
    /// A numeric categorical column: sorted values, NaN a category of its own if the train
    /// rows had one (encoded as NaN); at eval NaN is NaN when it was a category, -1 otherwise.
    Numbers { categories: Vec<f64>, missing_category: bool },
}

#[derive(Debug, Clone)]
struct Encoded {
    /// Input column position.
    column: usize,
    codes: Codes,
}

/// The fitted estimator-level encoder.
#[derive(Debug, Clone)]
pub struct Front {
    names: Vec<String>,
    /// The encoded columns, in output order (they come first).
    encoded: Vec<Encoded>,
    /// The numeric columns passed through, after the encoded ones.
    rest: Vec<usize>,
    /// The categorical column indices as tabpfn infers them: *input* positions, which later
    /// steps apply to the reordered matrix (6.2's quirk 1).
    pub categorical: Vec<usize>,
}

/// Distinct values of a column with missing counted as one (`nunique(dropna=False)`).
fn distinct_with_missing(column: &Column) -> usize {
    match column {
        Column::Numbers(values) => unique_non_nan(values).len() + usize::from(values.iter().any(|v| v.is_nan())),
        Column::Text(values) => {
            let distinct: HashSet<&str> = values.iter().flatten().map(String::as_str).collect();
            distinct.len() + usize::from(values.iter().any(Option::is_none))
        }
    }
}

/// `infer_categorical_features`: listed columns with at most `max_unique` values, and, with
/// more than `min_samples` train rows, unlisted columns with fewer than `min_unique_numerical`.
fn infer_categorical(train: &Table, listed: Option<&[usize]>, limits: &Inference) -> Vec<usize> {
    let enough_rows = train.rows > limits.min_number_samples_for_categorical_inference;
    (0..train.columns.len())
        .filter(|&ix| {
            let distinct = distinct_with_missing(&train.columns[ix]);
            if listed.is_some_and(|listed| listed.contains(&ix)) {
                distinct <= limits.max_unique_for_categorical_features
            } else {
                enough_rows && distinct < limits.min_unique_for_numerical_features
            }
        })
        .collect()
}

/// Checks a table's shape and values: names and columns agree, every column has `rows`
/// values, no infinity (tabpfn's numeric path refuses it; its squashing of infinity in the
/// object path is not reproduced).
pub fn check_table(table: &Table, what: &str) -> Result<()> {
    if table.names.len() != table.columns.len() {
        bail!("{what}: {} column names for {} columns", table.names.len(), table.columns.len());
    }
    for (name, column) in table.names.iter().zip(&table.columns) {
        let len = match column {
            Column::Numbers(values) => values.len(),
            Column::Text(values) => values.len(),
        };
        if len != table.rows {
            bail!("{what}: column '{name}' has {len} values for {} rows", table.rows);
        }
        if let Column::Numbers(values) = column {
            if let Some(row) = values.iter().position(|v| v.is_infinite()) {
                bail!(
                    "{what}: column '{name}' row {row} is {}; tabpfn's embeddings of infinite values are not \
                     reproduced; replace them (e.g. by missing values) first",
                    values[row]
                );
            }
        }
    }
    Ok(())
}

impl Front {
    /// Fits the encoder on the train table and returns the encoded train matrix, column by column.
    pub fn fit(train: &Table, listed: Option<&[usize]>, limits: &Inference) -> Result<(Front, Vec<Vec<f64>>)> {
        check_table(train, "train table")?;
        if train.columns.is_empty() {
            bail!("train table: no feature column; tabpfn needs at least one");
        }
        if let Some(&ix) = listed.and_then(|listed| listed.iter().find(|&&ix| ix >= train.columns.len())) {
            bail!(
                "categorical_features_indices lists column {ix}, but the table has {} feature columns",
                train.columns.len()
            );
        }
        for (name, column) in train.names.iter().zip(&train.columns) {
            if let Column::Text(values) = column {
                if values.iter().all(Option::is_none) {
                    bail!("train table: text column '{name}' has no value in any row; drop it (tabpfn cannot type it)");
                }
            }
        }
        let categorical = infer_categorical(train, listed, limits);
        let mut encoded = Vec::new();
        let mut rest = Vec::new();
        for (ix, column) in train.columns.iter().enumerate() {
            let is_categorical = categorical.contains(&ix);
            let codes = match column {
                // sorted by code point, as Python sorts str (and Rust UTF-8 bytes)
                Column::Text(values) if !is_categorical => {
                    let set: BTreeSet<&str> = values.iter().map(|v| v.as_deref().unwrap_or(NA_PLACEHOLDER)).collect();
                    Codes::Text { categories: set.into_iter().map(String::from).collect() }
                }
                Column::Text(values) => {
                    let set: BTreeSet<&str> = values.iter().flatten().map(String::as_str).collect();
                    let categories = set.into_iter().map(String::from).collect();
                    let missing = values.iter().any(Option::is_none);
                    let listed_here = listed.is_some_and(|listed| listed.contains(&ix));
                    Codes::TextCategory { categories, missing_is_nan_at_eval: missing && listed_here }
                }
                Column::Numbers(values) if is_categorical => Codes::Numbers {
                    categories: unique_non_nan(values),
                    missing_category: values.iter().any(|v| v.is_nan()),
                },
                Column::Numbers(_) => {
                    rest.push(ix);
                    continue;
                }
            };
            encoded.push(Encoded { column: ix, codes });
        }
        let front = Front { names: train.names.clone(), encoded, rest, categorical };
        let mut matrix = front.encode(train, true)?;
        // 6.2's quirk 2 (`process_text_na_dataframe`): for each text column held as `string`,
        // the rows that were missing (or literally "__MISSING__") get NaN at that column's
        // *input* position of the reordered matrix, whichever column now sits there.
        for e in &front.encoded {
            if let (Codes::Text { .. }, Column::Text(values)) = (&e.codes, &train.columns[e.column]) {
                for (row, value) in values.iter().enumerate() {
                    if value.as_deref().is_none_or(|v| v == NA_PLACEHOLDER) {
                        matrix[e.column][row] = f64::NAN;
                    }
                }
            }
        }
        Ok((front, matrix))
    }

    /// Number of output columns.
    pub fn width(&self) -> usize {
        self.encoded.len() + self.rest.len()
    }

    /// Encodes eval rows (`get_embeddings`' path: no placeholder fill, no quirk 2).
    pub fn transform(&self, eval: &Table) -> Result<Vec<Vec<f64>>> {
        check_table(eval, "eval table")?;
        if eval.names != self.names {
            let differs = (0..self.names.len().max(eval.names.len()))
                .find(|&i| self.names.get(i) != eval.names.get(i))
                .unwrap_or(0);
            bail!(
                "eval table: feature column {differs} is {:?} where the train table has {:?}; the eval table \
                 needs the train table's feature columns in the same order",
                eval.names.get(differs),
                self.names.get(differs)
            );
        }
        self.encode(eval, false)
    }

    fn encode(&self, table: &Table, train: bool) -> Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(self.width());
        for e in &self.encoded {
            let name = &self.names[e.column];
            let column = &table.columns[e.column];
            let codes = match &e.codes {
                Codes::Text { categories } => {
                    let values = text_values(column, name, table.rows)?;
                    let index = |v: &str| categories.binary_search_by(|c| c.as_str().cmp(v)).ok();
                    values
                        .iter()
                        .map(|v| match (v, train) {
                            (None, true) => index(NA_PLACEHOLDER),
                            (None, false) => None,
                            (Some(v), _) => index(v),
                        })
                        .map(|code| code.map_or(-1.0, |c| c as f64))
                        .collect()
                }
                Codes::TextCategory { categories, missing_is_nan_at_eval } => {
                    let values = text_values(column, name, table.rows)?;
                    values
                        .iter()
                        .map(|v| match v {
                            None if train || *missing_is_nan_at_eval => f64::NAN,
                            None => -1.0,
                            Some(v) => categories.binary_search(v).map_or(-1.0, |c| c as f64),
                        })
                        .collect()
                }
                Codes::Numbers { categories, missing_category } => {
                    let values = number_values(column, name, table.rows)?;
                    values
                        .iter()
                        .map(|&v| {
                            if v.is_nan() {
                                if *missing_category {
                                    f64::NAN
                                } else {
                                    -1.0
                                }
                            } else {
                                category_index(categories, v).map_or(-1.0, |c| c as f64)
                            }
                        })
                        .collect()
                }
            };
            out.push(codes);
        }
        for &ix in &self.rest {
            out.push(number_values(&table.columns[ix], &self.names[ix], table.rows)?.into_owned());
        }
        Ok(out)
    }
}

/// A text column's values; an all-missing numeric column (how an empty text column may
/// arrive) counts as all missing.
fn text_values<'a>(column: &'a Column, name: &str, rows: usize) -> Result<std::borrow::Cow<'a, [Option<String>]>> {
    match column {
        Column::Text(values) => Ok(std::borrow::Cow::Borrowed(values)),
        Column::Numbers(values) if values.iter().all(|v| v.is_nan()) => Ok(std::borrow::Cow::Owned(vec![None; rows])),
        Column::Numbers(_) => bail!("column '{name}' holds numbers here but text in the train table"),
    }
}

/// A numeric column's values; an all-missing text column counts as all NaN.
fn number_values<'a>(column: &'a Column, name: &str, rows: usize) -> Result<std::borrow::Cow<'a, [f64]>> {
    match column {
        Column::Numbers(values) => Ok(std::borrow::Cow::Borrowed(values)),
        Column::Text(values) if values.iter().all(Option::is_none) => Ok(std::borrow::Cow::Owned(vec![f64::NAN; rows])),
        Column::Text(_) => bail!("column '{name}' holds text here but numbers in the train table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(values: &[Option<&str>]) -> Column {
        Column::Text(values.iter().map(|v| v.map(str::to_string)).collect())
    }

    fn table(columns: Vec<(&str, Column)>, rows: usize) -> Table {
        let (names, columns) = columns.into_iter().map(|(n, c)| (n.to_string(), c)).unzip();
        Table { names, columns, rows }
    }

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    #[test]
    fn encoded_columns_come_first_with_code_point_order_and_the_missing_placeholder() {
        let nan = f64::NAN;
        let t = table(
            vec![
                ("x", Column::Numbers(vec![0.5, 1.5, 2.5, 3.5])),
                ("s", text(&[Some("b"), None, Some("B"), Some("a")])),
                ("y", Column::Numbers(vec![1.0, 2.0, nan, 4.0])),
            ],
            4,
        );
        let (front, m) = Front::fit(&t, None, &Inference::default()).unwrap();
        // 4 rows <= 100: nothing inferred categorical; the text column is encoded and first.
        assert!(front.categorical.is_empty());
        // "B" < "__MISSING__" < "a" < "b" by code point
        // quirk 2: the missing row gets NaN at input position 1, now column x
        assert!(same(&m[0], &[3.0, 1.0, 0.0, 2.0]));
        assert!(same(&m[1], &[0.5, nan, 2.5, 3.5]));
        assert!(same(&m[2], &[1.0, 2.0, nan, 4.0]));
        // eval: missing and unseen are -1, no NaN written elsewhere
        let e = table(
            vec![
                ("x", Column::Numbers(vec![9.0, 8.0])),
                ("s", text(&[None, Some("zz")])),
                ("y", Column::Numbers(vec![nan, 0.0])),
            ],
            2,
        );
        let me = front.transform(&e).unwrap();
        assert!(same(&me[0], &[-1.0, -1.0]));
        assert!(same(&me[1], &[9.0, 8.0]));
        assert!(same(&me[2], &[nan, 0.0]));
    }

    #[test]
    fn inferred_categoricals_keep_input_indices_and_missing_as_nan() {
        let nan = f64::NAN;
        let n = 120;
        let cat: Vec<f64> = (0..n).map(|i| [2.0, 1.0, nan][i % 3]).collect();
        let tx: Vec<Option<&str>> = (0..n).map(|i| [Some("q"), None][i % 2]).collect();
        let num: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let t = table(vec![("num", Column::Numbers(num)), ("cat", Column::Numbers(cat)), ("tx", text(&tx))], n);
        let (front, m) = Front::fit(&t, None, &Inference::default()).unwrap();
        // cat has 3 distinct values counting NaN, tx 2: both categorical (n > 100), by input index
        assert_eq!(front.categorical, vec![1, 2]);
        // order: cat, tx (encoded), then num
        assert!(same(&m[0][..3], &[1.0, 0.0, nan]));
        // a categorical text column keeps missing as NaN and has no placeholder category
        assert!(same(&m[1][..2], &[0.0, nan]));
        assert_eq!(m[2][5], 5.0);
        let e = table(
            vec![
                ("num", Column::Numbers(vec![0.0, 0.0, 0.0])),
                ("cat", Column::Numbers(vec![nan, 3.0, 2.0])),
                ("tx", text(&[None, Some("q"), Some("r")])),
            ],
            3,
        );
        let me = front.transform(&e).unwrap();
        assert!(same(&me[0], &[nan, -1.0, 1.0]));
        // not listed by the user: missing reaches the encoder as pandas NA, unknown
        assert!(same(&me[1], &[-1.0, 0.0, -1.0]));
    }

    #[test]
    fn listed_text_categorical_keeps_missing_at_eval() {
        let t =
            table(vec![("tx", text(&[Some("a"), None, Some("b")])), ("n", Column::Numbers(vec![1.0, 2.0, 3.0]))], 3);
        let (front, _) = Front::fit(&t, Some(&[0]), &Inference::default()).unwrap();
        assert_eq!(front.categorical, vec![0]);
        let e = table(vec![("tx", text(&[None])), ("n", Column::Numbers(vec![1.0]))], 1);
        assert!(front.transform(&e).unwrap()[0][0].is_nan());
    }

    #[test]
    fn listed_columns_with_too_many_values_stay_numeric() {
        let values: Vec<f64> = (0..40).map(f64::from).collect();
        let t = table(vec![("n", Column::Numbers(values))], 40);
        let (front, _) = Front::fit(&t, Some(&[0]), &Inference::default()).unwrap();
        assert!(front.categorical.is_empty());
        assert!(Front::fit(&t, Some(&[3]), &Inference::default()).unwrap_err().to_string().contains("column 3"));
    }

    #[test]
    fn refusals_name_the_column() {
        let t = table(vec![("a", Column::Numbers(vec![1.0, f64::INFINITY]))], 2);
        let err = Front::fit(&t, None, &Inference::default()).unwrap_err().to_string();
        assert!(err.contains("'a'") && err.contains("row 1"), "{err}");
        let t = table(vec![("s", text(&[None, None]))], 2);
        assert!(Front::fit(&t, None, &Inference::default()).unwrap_err().to_string().contains("'s'"));
        let t = table(vec![("a", Column::Numbers(vec![1.0, 2.0]))], 2);
        let (front, _) = Front::fit(&t, None, &Inference::default()).unwrap();
        let e = table(vec![("b", Column::Numbers(vec![1.0]))], 1);
        assert!(front.transform(&e).unwrap_err().to_string().contains("\"b\""));
    }
}

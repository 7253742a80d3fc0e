//! The per-column part of tabpfn's input encoder (`architectures/base/encoders.py`), fitted on
//! the train rows and then applied to any batch of rows: NaN handling
//! (`NanHandlingEncoderStep`), outlier clipping and normalisation
//! (`InputNormalizationEncoderStep`), plus the two per-column flags that the steps which look at
//! *all* rows need (`RemoveEmptyFeaturesEncoderStep`, `VariableNumFeaturesEncoderStep`).
//!
//! tabpfn runs these steps once over train and eval rows together; every statistic comes from
//! the train rows only, so each step is elementwise per column once fitted. The exceptions are the
//! two "does this column ever differ from row 0" tests, which see every eval row too
//! (docs/TABPFN.md §6): [`ColumnFlags`] OR-reduces them over whatever batches [`InputEncoder::observe`] is
//! given, so that eval rows can later stream through the transformer in any batch size and still
//! match tabpfn's single call.
//!
//! The operations are libtorch's, in the order tabpfn applies them, in f32 on the CPU: the
//! statistics and the equality tests then come out as tabpfn's do.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::config::Task;

/// Added to the std before dividing (`normalize_data`).
const STD_EPSILON: f64 = 1e-16;
/// `normalize_data(clip=True)` clips normalised values to this magnitude.
const CLIP: f64 = 100.0;

/// Per feature column, over every row observed so far (train and eval): whether some row's raw
/// f32 value differs from row 0's (NaN always differs), and whether some row's normalised value
/// differs from row 0's. Row 0 is the first train row.
///
/// tabpfn removes a column whose raw values never differ (`RemoveEmptyFeaturesEncoderStep`) and
/// rescales each feature group by how many of its columns' normalised values do
/// (`VariableNumFeaturesEncoderStep`); both tests run over train + all eval rows of the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnFlags {
    raw_differs: Vec<bool>,
    normalized_differs: Vec<bool>,
    rows: u64,
}

impl ColumnFlags {
    pub fn raw_differs(&self) -> &[bool] {
        &self.raw_differs
    }

    pub fn normalized_differs(&self) -> &[bool] {
        &self.normalized_differs
    }

    /// Rows observed, train rows included (a row observed twice counts twice).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn n_features(&self) -> usize {
        self.raw_differs.len()
    }
}

/// The input encoder's per-column statistics, fitted on the train rows (`n_train x n_features`,
/// the member-0 preprocessed matrix).
#[derive(Debug)]
pub struct InputEncoder {
    task: Task,
    n_train: i64,
    n_features: i64,
    /// Mean of each column's finite train values (0 when there are none): what NaN and ±inf
    /// become.
    nan_fill: Tensor,
    /// Outlier clipping bounds `(lower, upper)`, when clipping is on.
    clip: Option<(Tensor, Tensor)>,
    mean: Tensor,
    /// The train std (1 where it is 0), plus `STD_EPSILON` as tabpfn adds it.
    std: Tensor,
    /// Row 0, raw and normalised, each `[n_features]`.
    row0: Tensor,
    row0_normalized: Tensor,
    /// The flags over the train rows alone.
    train_flags: ColumnFlags,
}

impl InputEncoder {
    /// Fits the statistics on `x_train` (`[n_train, n_features]`, any float dtype; values are
    /// rounded to f32 first, as tabpfn feeds the model). `outlier_sigma` is the inference config's
    /// `OUTLIER_REMOVAL_STD` after "auto" was resolved (12 for classification, none for
    /// regression); it must be above 1 (tabpfn asserts that). `task` is recorded so that the model
    /// can refuse an encoder fitted for the other kind of checkpoint.
    pub fn fit(x_train: &Tensor, task: Task, outlier_sigma: Option<f64>) -> Result<InputEncoder> {
        if let Some(sigma) = outlier_sigma {
            if !sigma.is_finite() || sigma <= 1.0 {
                bail!("the outlier removal std (OUTLIER_REMOVAL_STD) is {sigma}; tabpfn needs a value above 1");
            }
        }
        let size = x_train.size();
        if size.len() != 2 {
            bail!("the train matrix has shape {size:?}; expected [rows, features]");
        }
        let (n_train, n_features) = (size[0], size[1]);
        if n_train == 0 || n_features == 0 {
            bail!("the train matrix is {n_train} x {n_features}; tabpfn needs at least one row and one feature");
        }
        let _guard = tch::no_grad_guard();
        let raw = as_f32(x_train);
        let x = raw.shallow_clone();

        let bad = x.isnan().logical_or(&x.isinf());
        let nan_fill = nan_mean(&x, &bad);
        let x = fill(&x, &bad, &nan_fill);

        let clip = outlier_sigma.map(|sigma| {
            let bounds = |data: &Tensor| {
                let cut = nan_std(data) * sigma;
                let mean = nan_mean(data, &data.isnan());
                (&mean - &cut, &mean + &cut)
            };
            let (lower, upper) = bounds(&x);
            let outside = x.gt_tensor(&upper).logical_or(&x.lt_tensor(&lower));
            let kept = x.full_like(f64::NAN).where_self(&outside, &x);
            bounds(&kept)
        });
        let x = match &clip {
            Some((lower, upper)) => clip_outliers(&x, lower, upper),
            None => x,
        };

        let mean = nan_mean(&x, &x.isnan());
        let std = nan_std(&x);
        let std = std.ones_like().where_self(&std.eq(0.0), &std);
        // normalize_data: a single normalisation row means std 1.
        let std = if n_train == 1 { std.ones_like() } else { std };
        let std = std + STD_EPSILON;

        let raw0 = raw.narrow(0, 0, 1);
        let mut encoder = InputEncoder {
            task,
            n_train,
            n_features,
            nan_fill,
            clip,
            mean,
            std,
            row0: raw0.squeeze_dim(0),
            row0_normalized: Tensor::zeros([n_features], (Kind::Float, Device::Cpu)),
            train_flags: ColumnFlags {
                raw_differs: vec![false; n_features as usize],
                normalized_differs: vec![false; n_features as usize],
                rows: 0,
            },
        };
        encoder.row0_normalized = encoder.normalize(&raw0).squeeze_dim(0);
        let mut flags = encoder.train_flags.clone();
        encoder.observe(&mut flags, x_train)?;
        encoder.train_flags = flags;
        Ok(encoder)
    }

    pub fn task(&self) -> Task {
        self.task
    }

    pub fn n_train(&self) -> i64 {
        self.n_train
    }

    pub fn n_features(&self) -> i64 {
        self.n_features
    }

    /// Flags with the train rows already observed; observe every eval row into them (in any
    /// batches, in any order) before building the model's context. Observing train rows again
    /// changes nothing.
    pub fn flags(&self) -> ColumnFlags {
        self.train_flags.clone()
    }

    /// ORs `rows` (`[b, n_features]`, any float dtype) into `flags`.
    pub fn observe(&self, flags: &mut ColumnFlags, rows: &Tensor) -> Result<()> {
        if flags.n_features() != self.n_features as usize {
            bail!(
                "the column flags cover {} features but the input encoder was fitted on {}; use the encoder's own flags()",
                flags.n_features(),
                self.n_features
            );
        }
        let x = self.checked_rows(rows, "observed")?;
        if x.size()[0] == 0 {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        // ne is true when either side is NaN, as `!(a == b)` in tabpfn's count.
        let raw = Vec::<bool>::try_from(x.ne_tensor(&self.row0).any_dim(0, false))?;
        let normalized = Vec::<bool>::try_from(self.normalize(&x).ne_tensor(&self.row0_normalized).any_dim(0, false))?;
        for (flag, differs) in flags.raw_differs.iter_mut().zip(raw) {
            *flag |= differs;
        }
        for (flag, differs) in flags.normalized_differs.iter_mut().zip(normalized) {
            *flag |= differs;
        }
        flags.rows += x.size()[0] as u64;
        Ok(())
    }

    /// `rows` (`[b, n_features]`) to `(normalised values, NaN indicators)`, both `[b,
    /// n_features]` f32 on the CPU: the NaN indicator is -2 for NaN, 2 for +inf, 4 for -inf, else
    /// 0, and the value is the column's fill for those, then clipped and normalised.
    pub(crate) fn encode(&self, rows: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.checked_rows(rows, "encoded")?;
        let _guard = tch::no_grad_guard();
        let inf = x.isinf();
        let indicator = x.isnan().to_kind(Kind::Float) * -2.0
            + inf.logical_and(&x.gt(0.0)).to_kind(Kind::Float) * 2.0
            + inf.logical_and(&x.lt(0.0)).to_kind(Kind::Float) * 4.0;
        Ok((self.normalize(&x), indicator))
    }

    /// A shallow copy (the tensors are shared, never written).
    pub(crate) fn share(&self) -> InputEncoder {
        InputEncoder {
            task: self.task,
            n_train: self.n_train,
            n_features: self.n_features,
            nan_fill: self.nan_fill.shallow_clone(),
            clip: self.clip.as_ref().map(|(l, u)| (l.shallow_clone(), u.shallow_clone())),
            mean: self.mean.shallow_clone(),
            std: self.std.shallow_clone(),
            row0: self.row0.shallow_clone(),
            row0_normalized: self.row0_normalized.shallow_clone(),
            train_flags: self.train_flags.clone(),
        }
    }

    /// NaN handling, outlier clipping, normalisation, for f32 rows.
    fn normalize(&self, x: &Tensor) -> Tensor {
        let bad = x.isnan().logical_or(&x.isinf());
        let x = fill(x, &bad, &self.nan_fill);
        let x = match &self.clip {
            Some((lower, upper)) => clip_outliers(&x, lower, upper),
            None => x,
        };
        ((x - &self.mean) / &self.std).clamp(-CLIP, CLIP)
    }

    fn checked_rows(&self, rows: &Tensor, what: &str) -> Result<Tensor> {
        let size = rows.size();
        if size.len() != 2 || size[1] != self.n_features {
            bail!(
                "the rows {what} have shape {size:?}, but the input encoder was fitted on {} features; expected [rows, {}]",
                self.n_features,
                self.n_features
            );
        }
        if !rows.is_floating_point() {
            bail!("the rows {what} have dtype {:?}; expected floating point values", rows.kind());
        }
        Ok(as_f32(rows))
    }
}

fn as_f32(x: &Tensor) -> Tensor {
    x.to_device(Device::Cpu).to_kind(Kind::Float)
}

/// `x` with the masked entries replaced by `fill` (per column).
fn fill(x: &Tensor, mask: &Tensor, fill: &Tensor) -> Tensor {
    fill.unsqueeze(0).expand_as(x).where_self(mask, x)
}

/// `torch_nanmean` over dim 0: the mean of the unmasked entries, 0 when a column has none.
fn nan_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    let count = x.zeros_like().where_self(mask, &x.ones_like()).sum_dim_intlist(0, false, None::<Kind>);
    let total = x.zeros_like().where_self(mask, x).sum_dim_intlist(0, false, None::<Kind>);
    total / count.clamp_min(1.0)
}

/// `torch_nanstd` over dim 0: the unbiased std of the non-NaN entries (denominator at least 1).
fn nan_std(x: &Tensor) -> Tensor {
    let nan = x.isnan();
    let count = x.zeros_like().where_self(&nan, &x.ones_like()).sum_dim_intlist(0, false, None::<Kind>);
    let mean = x.zeros_like().where_self(&nan, x).sum_dim_intlist(0, false, None::<Kind>) / count.clamp_min(1.0);
    let squares = (mean.unsqueeze(0) - x).square();
    let squares = squares.zeros_like().where_self(&squares.isnan(), &squares);
    (squares.sum_dim_intlist(0, false, None::<Kind>) / (count - 1.0).clamp_min(1.0)).sqrt()
}

/// `remove_outliers`' transform: values beyond the bounds are pulled back logarithmically.
fn clip_outliers(x: &Tensor, lower: &Tensor, upper: &Tensor) -> Tensor {
    let x = ((x.abs() + 1.0).log().neg() + lower).maximum(x);
    ((x.abs() + 1.0).log() + upper).minimum(&x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: &[&[f64]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).reshape([rows.len() as i64, rows[0].len() as i64])
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn statistics_follow_the_train_rows() {
        // Column 0: 1, 2, 3, NaN -> fill 2, then mean 2, unbiased std sqrt(2/3).
        // Column 1: constant 5 -> std 0 becomes 1.
        let x = matrix(&[&[1.0, 5.0], &[2.0, 5.0], &[3.0, 5.0], &[f64::NAN, 5.0]]);
        let enc = InputEncoder::fit(&x, Task::Regression, None).unwrap();
        let (norm, ind) = enc.encode(&matrix(&[&[f64::NAN, 7.0], &[f64::INFINITY, f64::NEG_INFINITY]])).unwrap();
        let s = (2.0f64 / 3.0).sqrt();
        let expected = [0.0, 2.0, 0.0, 0.0];
        for (got, want) in values(&norm).iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        let first = enc.encode(&matrix(&[&[3.0, 5.0]])).unwrap().0;
        assert!((values(&first)[0] as f64 - 1.0 / s).abs() < 1e-6);
        assert_eq!(values(&ind), vec![-2.0, 0.0, 2.0, 4.0]);
    }

    #[test]
    fn normalised_values_are_clipped_to_100() {
        let x = matrix(&[&[0.0], &[1.0], &[0.0], &[1.0]]);
        let enc = InputEncoder::fit(&x, Task::Regression, None).unwrap();
        let (norm, _) = enc.encode(&matrix(&[&[1e9], &[-1e9]])).unwrap();
        assert_eq!(values(&norm), vec![100.0, -100.0]);
    }

    #[test]
    fn outliers_are_pulled_back_logarithmically() {
        // 399 rows of 0/1 and one of 1000: the first pass's bounds exclude 1000 (its z-score is
        // about 20), so the second pass's statistics are those of the 0/1 rows alone.
        let mut rows: Vec<f64> = (0..399).map(|i| (i % 2) as f64).collect();
        rows.push(1000.0);
        let x = Tensor::from_slice(&rows).reshape([400, 1]);
        let enc = InputEncoder::fit(&x, Task::Classification, Some(12.0)).unwrap();
        let (lower, upper) = enc.clip.as_ref().unwrap();
        let (ones, zeros) = (199.0f64, 200.0f64);
        let m = ones / (ones + zeros);
        let var = (ones * (1.0 - m) * (1.0 - m) + zeros * m * m) / (ones + zeros - 1.0);
        let (lo, hi) = (m - 12.0 * var.sqrt(), m + 12.0 * var.sqrt());
        assert!((values(lower)[0] as f64 - lo).abs() < 1e-5, "{lower} vs {lo}");
        assert!((values(upper)[0] as f64 - hi).abs() < 1e-5, "{upper} vs {hi}");
        let clipped =
            values(&clip_outliers(&Tensor::from_slice(&[1000.0f32, 0.5, -1000.0]).reshape([3, 1]), lower, upper));
        assert!((clipped[0] as f64 - (1001f64.ln() + hi)).abs() < 1e-4);
        assert_eq!(clipped[1], 0.5);
        // -1000 is first raised to lower - log(1001), which is then within the upper bound.
        assert!((clipped[2] as f64 - (lo - 1001f64.ln())).abs() < 1e-4);
    }

    #[test]
    fn flags_see_every_observed_row() {
        // col 0: constant 5 on train apart from a NaN (raw differs, normalised does not);
        // col 1: constant; col 2: varies on train.
        let train = matrix(&[&[5.0, 1.0, 0.0], &[f64::NAN, 1.0, 1.0], &[5.0, 1.0, 2.0]]);
        let enc = InputEncoder::fit(&train, Task::Regression, None).unwrap();
        let mut flags = enc.flags();
        assert_eq!(flags.raw_differs(), &[true, false, true]);
        assert_eq!(flags.normalized_differs(), &[false, false, true]);
        assert_eq!(flags.rows(), 3);
        enc.observe(&mut flags, &matrix(&[&[5.0, 1.0, 0.0]])).unwrap();
        assert_eq!(flags.normalized_differs(), &[false, false, true]);
        // An eval 6 in column 0 and a NaN in column 1 (which normalises to the fill, 1).
        enc.observe(&mut flags, &matrix(&[&[6.0, f64::NAN, 0.0]])).unwrap();
        assert_eq!(flags.raw_differs(), &[true, true, true]);
        assert_eq!(flags.normalized_differs(), &[true, false, true]);
        assert_eq!(flags.rows(), 5);
        // Empty batches are fine; a width mismatch is not.
        enc.observe(&mut flags, &Tensor::zeros([0, 3], (Kind::Double, Device::Cpu))).unwrap();
        let e = enc.observe(&mut flags, &matrix(&[&[1.0, 2.0]])).unwrap_err().to_string();
        assert!(e.contains("[1, 2]") && e.contains("3 features"), "{e}");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let x = matrix(&[&[1.0], &[2.0]]);
        assert!(InputEncoder::fit(&x, Task::Classification, Some(1.0)).unwrap_err().to_string().contains("above 1"));
        assert!(InputEncoder::fit(&Tensor::from_slice(&[1.0f64]), Task::Regression, None).is_err());
        let empty = Tensor::zeros([0, 2], (Kind::Float, Device::Cpu));
        assert!(InputEncoder::fit(&empty, Task::Regression, None).unwrap_err().to_string().contains("0 x 2"));
        let enc = InputEncoder::fit(&x, Task::Regression, None).unwrap();
        let ints = Tensor::from_slice(&[1i64]).reshape([1, 1]);
        assert!(enc.encode(&ints).unwrap_err().to_string().contains("floating point"));
    }
}

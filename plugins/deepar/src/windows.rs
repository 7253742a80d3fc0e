//! Each row's window: the `max_encoder_length` (L) hourly steps of its own series that end at it,
//! as pytorch-forecasting's `TimeSeriesDataSet` cuts a sample and DeepAR feeds its RNN.
//!
//! A row at hour `t` has a window when its series has a row at hour `t - L` exactly (the
//! sample's first encoder step). The RNN then runs over hours `t - L + 1 ..= t`: each step holds
//! that hour's inputs, except the targets' slots, which hold the previous hour's normalised
//! targets (DeepAR's teacher forcing): normalised per row, or, for an `EncoderNormalizer`, all
//! `L` of them (hours `t - L .. t - 1`, the sample's encoder) together. Missing hours take the
//! latest earlier row's inputs (pytorch-forecasting's forward fill with
//! `allow_missing_timesteps`), or the constants of a `constant_fill_strategy` for the variables
//! it names; the time index input, when the model has one, counts every hour. Rows without a
//! window are padded.
//!
//! A model trained with `min_encoder_length` m < L also gives a row without a full window a
//! shorter one, from its series' earliest row after `t - L`, of at least m hours, where
//! pytorch-forecasting's index has that sample: when no row between the previous row's `t' - L`
//! (excluded) and `t - L` could start a longer one, when the next row lies more than L hours
//! after the window's start, or when the row is its series' last. That depends on the next row,
//! so such rows are placed one row late.
//!
//! A lagged input (pytorch-forecasting's `lags`) holds its variable's value `lag` rows earlier
//! in the series (rows, not hours), taken as each row arrives; a series' first `max_lag` rows
//! have no such values, and, as pytorch-forecasting drops them, start no window.

use std::collections::VecDeque;

use anyhow::{bail, Result};

use crate::encode::SeriesIds;
use crate::fill::ConstantFill;
use crate::normaliser::{EncoderNormaliser, WindowFit};
use crate::record::{Layout, Record};
use crate::time::{TimeAxis, TimeKind};

/// How windows are cut and filled, for one run.
pub struct Windowing {
    pub length: i64,
    /// The shortest window (`min_encoder_length`); `length` when every window is full.
    pub min_length: i64,
    pub allow_gaps: bool,
    /// The targets' slots, each with its normaliser when that is fitted on each window (the
    /// records' target slots then hold prepared values; otherwise they are already normalised).
    pub targets: Vec<TargetSlot>,
    /// The time index input's slot and scaling, when the model reads the time index.
    pub time_slot: Option<(usize, f64, f64)>,
    pub layout: Layout,
    /// Where rows fall on the time index.
    pub axis: TimeAxis,
    /// The other inputs normalised on each window (an `EncoderNormalizer` among the scalers),
    /// by slot; the records hold their prepared values.
    pub per_window_inputs: Vec<(usize, EncoderNormaliser)>,
    /// The other inputs pytorch-forecasting fills in per sample, by slot.
    pub derived: Vec<(usize, Derived)>,
    /// The lagged inputs, and the largest lag of the training (a lagged category's counts too,
    /// though no embedding reads it).
    pub lagged: Vec<LaggedInput>,
    pub max_lag: usize,
    /// The constants of filled hours, for the variables the training named.
    pub fill: ConstantFill,
}

/// A target's slot, and its normaliser when it is fitted on each window.
pub struct TargetSlot {
    pub slot: usize,
    pub per_window: Option<EncoderNormaliser>,
}

/// A lagged input: slot `slot` takes slot `of` of the series' row `lag` rows back. For a variable
/// normalised on each window, the value is its prepared one, normalised with the variable's fit.
#[derive(Debug, Clone, Copy)]
pub struct LaggedInput {
    pub slot: usize,
    pub of: usize,
    pub lag: usize,
}

/// An input pytorch-forecasting computes for each sample rather than reads.
#[derive(Debug, Clone, Copy)]
pub enum Derived {
    /// `relative_time_idx`: `arange(-L, 1) / max_encoder_length` in float32, the step's place
    /// relative to the predicted one.
    RelativeTimeIndex {
        max_encoder_length: i64,
    },
    /// `encoder_length`: `(L - max / 2) / max * 2`.
    EncoderLength {
        max_encoder_length: i64,
    },
    /// A target's per-window normaliser's center or scale, through its `StandardScaler`, as
    /// scikit-learn applies one to float32 values.
    WindowCenter {
        target: usize,
        center: f64,
        scale: f64,
    },
    WindowScale {
        target: usize,
        center: f64,
        scale: f64,
    },
}

impl Derived {
    /// The value at a window's step `step` (1..=L, the last the predicted one).
    fn value(&self, step: i64, length: i64, fits: &[Option<WindowFit>]) -> f32 {
        let fit = |target: usize| fits.get(target).and_then(Option::as_ref);
        let standardised = |x: f32, center: f64, scale: f64| ((f64::from(x) - center) as f32 as f64 / scale) as f32;
        match *self {
            Derived::RelativeTimeIndex { max_encoder_length } => (step - length) as f32 / max_encoder_length as f32,
            Derived::EncoderLength { max_encoder_length } => {
                let max = max_encoder_length as f64;
                ((length as f64 - 0.5 * max) / max * 2.0) as f32
            }
            Derived::WindowCenter { target, center, scale } => {
                fit(target).map_or(0.0, |f| standardised(f.center, center, scale))
            }
            Derived::WindowScale { target, center, scale } => {
                fit(target).map_or(0.0, |f| standardised(f.scale, center, scale))
            }
        }
    }
}

/// What one series keeps for later rows: its rows of the last `L + 1` hours, and the lagged
/// variables' values at its last `max_lag` rows.
#[derive(Default)]
pub struct History {
    recent: VecDeque<Held>,
    /// How many rows of the series came so far.
    rows: usize,
    /// Per row, oldest first: the value each lagged input takes from it.
    earlier: VecDeque<Vec<f32>>,
    /// With short windows, the latest row (the last in `recent`) waits to be placed until the
    /// next one (or the series' end) comes.
    pending: Option<Pending>,
}

/// What placing the waiting row needs besides `recent`.
struct Pending {
    /// Whether no row between the previous row's `t' - L` (excluded) and this row's `t - L`
    /// (included) could start a longer sample: then a short window ends here whatever follows.
    no_longer_start: bool,
}

/// A row of the series, with its hour and its place in the series (0 for the first row).
struct Held {
    hour: i64,
    place: usize,
    record: Record,
}

impl Held {
    /// Whether pytorch-forecasting's index has the row: lags drop a series' first `max_lag`.
    fn kept(&self, max_lag: usize) -> bool {
        self.place >= max_lag
    }
}

/// A row, placed in its series.
pub struct Placed {
    pub row: u64,
    /// The row's own targets, as written to the output.
    pub targets: Vec<f32>,
    pub window: Option<Window>,
}

/// One window's model inputs, step-major: `steps x reals` values and `steps x categoricals`
/// codes.
pub struct Window {
    pub steps: usize,
    pub reals: Vec<f32>,
    pub codes: Vec<i64>,
}

impl Windowing {
    /// Whether rows are placed one row late (short windows depend on the next row).
    pub fn places_late(&self) -> bool {
        self.min_length < self.length
    }

    /// Adds `record`, the next row of its series in time order, and returns its placed row: this
    /// one, or with short windows the previous one (see [`Windowing::finish`] for the last).
    pub fn push(&self, history: &mut History, record: Record, series: &SeriesIds) -> Result<Option<Placed>> {
        let hour = self.axis.index(record.time);
        if let Some(Held { hour: last_hour, record: last, .. }) = history.recent.back() {
            let gap = hour - last_hour;
            if gap == 0 {
                match self.axis.kind {
                    TimeKind::Timestamps => bail!(
                        "rows {} and {} of series {} fall in the same hour (time index {hour}); DeepAR's index is hourly, so aggregate sub-hourly rows first",
                        last.row,
                        record.row,
                        describe(series, record.series)
                    ),
                    TimeKind::Integers => bail!(
                        "rows {} and {} of series {} have the same time index {hour}",
                        last.row,
                        record.row,
                        describe(series, record.series)
                    ),
                }
            }
            if gap > 1 && !self.allow_gaps {
                bail!(
                    "series {}: rows {} and {} are {gap} {} apart, and the checkpoint was trained with allow_missing_timesteps=False, so pytorch-forecasting refuses gaps",
                    describe(series, record.series),
                    last.row,
                    record.row,
                    self.axis.kind.steps()
                );
            }
        }
        let previous = history.pending.take().map(|pending| self.place(&history.recent, pending, Some(hour)));
        let mut record = record;
        self.fill_lags(history, &mut record);
        let pending = Pending { no_longer_start: self.places_late() && self.no_longer_start(&history.recent, hour) };
        let place = history.rows;
        history.rows += 1;
        history.recent.push_back(Held { hour, place, record });
        let start = hour - self.length;
        while history.recent.front().is_some_and(|h| h.hour < start) {
            history.recent.pop_front();
        }
        if self.places_late() {
            history.pending = Some(pending);
            return Ok(previous);
        }
        Ok(Some(self.place(&history.recent, pending, None)))
    }

    /// The series' last row, when rows are placed late.
    pub fn finish(&self, history: &mut History) -> Option<Placed> {
        history.pending.take().map(|pending| self.place(&history.recent, pending, None))
    }

    /// For a row at `hour` arriving after the rows in `recent`: pytorch-forecasting's index
    /// closed the samples starting at or before the previous row's `t' - L`, and one starting
    /// after it but at or before `t - L` would be longer than a short window ending here.
    fn no_longer_start(&self, recent: &VecDeque<Held>, hour: i64) -> bool {
        let previous = recent.iter().rev().find(|h| h.kept(self.max_lag)).map(|h| h.hour);
        previous.is_some_and(|p| {
            !recent.iter().any(|h| h.kept(self.max_lag) && h.hour > p - self.length && h.hour <= hour - self.length)
        })
    }

    /// Places the latest row in `recent`, given the hour of the series' next row (`None` for its
    /// last): its full window, or else a short one (see the module's comment).
    fn place(&self, recent: &VecDeque<Held>, pending: Pending, next: Option<i64>) -> Placed {
        let row = recent.back().expect("the row being placed is in recent");
        let start = row.hour - self.length;
        // The earliest row of the index at or after `t - L`, other than the row itself.
        let first = recent.iter().position(|h| h.kept(self.max_lag) && h.hour >= start && h.hour < row.hour);
        let window = first.filter(|_| row.kept(self.max_lag)).and_then(|first| {
            let from = recent[first].hour;
            let length = row.hour - from;
            let full = from == start;
            let short = length >= self.min_length
                && (pending.no_longer_start || next.is_none_or(|next| next - from > self.length));
            (full || short).then(|| self.window(recent, first, length))
        });
        Placed { row: row.record.row, targets: row.record.targets.clone(), window }
    }

    /// Fills `record`'s lagged inputs from the series' earlier rows (left 0 for its first rows,
    /// which start no window), then keeps what later rows take from it.
    fn fill_lags(&self, history: &mut History, record: &mut Record) {
        if self.lagged.is_empty() {
            return;
        }
        let earlier = history.earlier.len();
        for (i, input) in self.lagged.iter().enumerate() {
            if let Some(at) = earlier.checked_sub(input.lag) {
                record.reals[input.slot] = history.earlier[at][i];
            }
        }
        history.earlier.push_back(self.lagged.iter().map(|input| record.reals[input.of]).collect());
        if history.earlier.len() > self.max_lag {
            history.earlier.pop_front();
        }
    }

    /// The `length` steps after the hour of `recent[first]`, the window's first row.
    fn window(&self, recent: &VecDeque<Held>, first: usize, length: i64) -> Window {
        let start = recent[first].hour;
        let steps = length as usize;
        let mut reals = Vec::with_capacity(steps * self.layout.reals);
        let mut codes = Vec::with_capacity(steps * self.layout.categoricals);
        // `current` is the latest row at or before the step's hour; `previous` the one before
        // the step's hour (forward fill).
        let mut current = first;
        // Whether the previous step's hour was filled (the window's first hour has its row).
        let mut previous_filled = false;
        // Per target, its prepared values at the steps' previous hours: the encoder a per-window
        // normaliser fits.
        let mut encoders: Vec<Vec<f32>> =
            self.targets.iter().map(|t| Vec::with_capacity(if t.per_window.is_some() { steps } else { 0 })).collect();
        // The prepared values of the per-window normalised inputs at hours `start ..= start + L`.
        let mut inputs: Vec<Vec<f32>> = self
            .per_window_inputs
            .iter()
            .map(|(slot, _)| {
                let mut values = Vec::with_capacity(steps + 1);
                values.push(recent[first].record.reals[*slot]);
                values
            })
            .collect();
        for step in 1..=length {
            let hour = start + step;
            let previous = current;
            while current + 1 < recent.len() && recent[current + 1].hour <= hour {
                current += 1;
            }
            let filled = recent[current].hour < hour;
            let row = &recent[current].record;
            let first = reals.len();
            reals.extend_from_slice(&row.reals);
            for (k, (target, encoder)) in self.targets.iter().zip(&mut encoders).enumerate() {
                reals[first + target.slot] = match self.fill.targets.get(k).copied().flatten() {
                    Some(constant) if previous_filled => constant,
                    _ => recent[previous].record.reals[target.slot],
                };
                if target.per_window.is_some() {
                    encoder.push(reals[first + target.slot]);
                }
            }
            let first_code = codes.len();
            codes.extend(row.codes.iter().map(|&c| i64::from(c)));
            if filled {
                for &(slot, constant) in &self.fill.reals {
                    reals[first + slot] = constant;
                }
                for &(input, code) in &self.fill.codes {
                    codes[first_code + input] = i64::from(code);
                }
            }
            previous_filled = filled;
            for ((slot, _), values) in self.per_window_inputs.iter().zip(&mut inputs) {
                values.push(row.reals[*slot]);
            }
            if let Some((slot, center, scale)) = self.time_slot {
                reals[first + slot] = ((hour as f64 - center) / scale) as f32;
            }
        }
        let width = self.layout.reals;
        // A variable's lagged inputs are normalised with the variable's fit on the window.
        let normalise_lagged = |reals: &mut [f32], of: usize, normaliser: &EncoderNormaliser, fit: &WindowFit| {
            for input in self.lagged.iter().filter(|input| input.of == of) {
                for step in 0..steps {
                    let value = &mut reals[step * width + input.slot];
                    *value = normaliser.apply(fit, *value);
                }
            }
        };
        // The target's encoder is fitted on and fed (shifted by one hour); another input's is
        // fitted on and the window's last L hours fed.
        let mut fits = Vec::with_capacity(self.targets.len());
        for (target, encoder) in self.targets.iter().zip(&encoders) {
            fits.push(target.per_window.as_ref().map(|normaliser| {
                let fit = normaliser.fit(encoder);
                for (step, &y) in encoder.iter().enumerate() {
                    reals[step * width + target.slot] = normaliser.apply(&fit, y);
                }
                normalise_lagged(&mut reals, target.slot, normaliser, &fit);
                fit
            }));
        }
        for ((slot, normaliser), values) in self.per_window_inputs.iter().zip(&inputs) {
            let input_fit = normaliser.fit(&values[..steps]);
            for step in 0..steps {
                reals[step * width + slot] = normaliser.apply(&input_fit, values[step + 1]);
            }
            normalise_lagged(&mut reals, *slot, normaliser, &input_fit);
        }
        for (slot, derived) in &self.derived {
            for step in 0..length {
                reals[step as usize * width + slot] = derived.value(step + 1, length, &fits);
            }
        }
        Window { steps, reals, codes }
    }
}

fn describe(series: &SeriesIds, id: u32) -> String {
    let key = series.describe(id);
    if key.is_empty() {
        "(the single series)".to_string()
    } else {
        format!("'{key}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    fn windowing(length: i64, allow_gaps: bool) -> Windowing {
        Windowing {
            length,
            min_length: length,
            allow_gaps,
            targets: vec![TargetSlot { slot: 0, per_window: None }],
            time_slot: Some((1, 0.0, 1.0)),
            layout: Layout { targets: 1, reals: 2, categoricals: 1 },
            axis: TimeAxis { kind: TimeKind::Timestamps, earliest: 0 },
            per_window_inputs: Vec::new(),
            derived: Vec::new(),
            lagged: Vec::new(),
            max_lag: 0,
            fill: ConstantFill::default(),
        }
    }

    fn record(row: u64, hour: i64) -> Record {
        Record {
            row,
            series: 0,
            time: hour * HOUR + 17,
            targets: vec![row as f32],
            reals: vec![row as f32 * 10.0, -1.0],
            codes: vec![row as u32],
        }
    }

    fn series() -> SeriesIds {
        let mut ids = SeriesIds::default();
        crate::encode::tests_support::add(&mut ids, "");
        ids
    }

    #[test]
    fn pads_until_a_row_sits_exactly_l_hours_back() {
        let w = windowing(2, true);
        let (mut history, ids) = (History::default(), series());
        let windows: Vec<bool> = [0, 1, 2, 3]
            .iter()
            .map(|&h| w.push(&mut history, record(h as u64, h), &ids).unwrap().unwrap().window.is_some())
            .collect();
        assert_eq!(windows, [false, false, true, true]);
    }

    #[test]
    fn teacher_forces_the_target_and_forward_fills_gaps() {
        let w = windowing(3, true);
        let (mut history, ids) = (History::default(), series());
        // Hours 0, 2, 3: hour 1 is missing and takes hour 0's row.
        w.push(&mut history, record(0, 0), &ids).unwrap();
        w.push(&mut history, record(1, 2), &ids).unwrap();
        let window = w.push(&mut history, record(2, 3), &ids).unwrap().unwrap().window.expect("a window");
        // Steps are hours 1, 2, 3: inputs of rows 0 (filled), 1, 2; targets of hours 0, 1, 2
        // (rows 0, 0, 1); the time index counts hours.
        assert_eq!(window.reals, vec![0.0, 1.0, 0.0, 2.0, 10.0, 3.0]);
        assert_eq!(window.codes, vec![0, 1, 2]);
    }

    #[test]
    fn lags_count_rows_and_the_first_max_lag_rows_start_no_window() {
        // Slot 2 holds the target one row back; the training's largest lag is 2.
        let w = Windowing {
            layout: Layout { targets: 1, reals: 3, categoricals: 1 },
            lagged: vec![LaggedInput { slot: 2, of: 0, lag: 1 }],
            max_lag: 2,
            ..windowing(2, true)
        };
        let (mut history, ids) = (History::default(), series());
        let row = |row: u64, hour: i64| Record { reals: vec![row as f32 * 10.0, -1.0, 0.0], ..record(row, hour) };
        // Hours 0, 2, 3, 4, 5: the row at hour 2 (the series' second) is where hour 4's window
        // would start, but lags drop it.
        let windows: Vec<Option<Window>> = [(0, 0), (1, 2), (2, 3), (3, 4), (4, 5)]
            .iter()
            .map(|&(r, h)| w.push(&mut history, row(r, h), &ids).unwrap().unwrap().window)
            .collect();
        assert!(windows[..4].iter().all(Option::is_none));
        // Hours 4 and 5 (rows 3 and 4): targets of hours 3 and 4, the time index, and each row's
        // previous row's target (rows 2 and 3, across the gap it does not count).
        assert_eq!(windows[4].as_ref().expect("a window").reals, vec![20.0, 4.0, 20.0, 30.0, 5.0, 30.0]);
    }

    #[test]
    fn filled_hours_take_the_constants_of_the_fill_strategy() {
        // Slot 2 is a scaled input; the category and the target have constants too.
        let w = Windowing {
            layout: Layout { targets: 1, reals: 3, categoricals: 1 },
            fill: ConstantFill { reals: vec![(2, 9.0)], codes: vec![(0, 7)], targets: vec![Some(-5.0)] },
            ..windowing(2, true)
        };
        let (mut history, ids) = (History::default(), series());
        let row = |row: u64, hour: i64| Record {
            reals: vec![row as f32 * 10.0, -1.0, row as f32 * 100.0],
            ..record(row, hour)
        };
        w.push(&mut history, row(0, 0), &ids).unwrap();
        let window = w.push(&mut history, row(1, 2), &ids).unwrap().unwrap().window.expect("a window");
        // Hour 1 is filled: its input and category are the constants, and hour 2's target slot
        // (hour 1's target) is the target's; hour 1's target slot is hour 0's own.
        assert_eq!(window.reals, vec![0.0, 1.0, 9.0, -5.0, 2.0, 100.0]);
        assert_eq!(window.codes, vec![7, 1]);
    }

    #[test]
    fn short_windows_where_pytorch_forecastings_index_has_them() {
        // L = 4, m = 2: rows at hours 0, 1, 2, 5, 6, 7, 9, 14, 15.
        let w = Windowing { min_length: 2, ..windowing(4, true) };
        let (mut history, ids) = (History::default(), series());
        let mut placed = Vec::new();
        for (r, h) in [0, 1, 2, 5, 6, 7, 9, 14, 15].into_iter().enumerate() {
            placed.extend(w.push(&mut history, record(r as u64, h), &ids).unwrap());
        }
        placed.extend(w.finish(&mut history));
        let steps: Vec<Option<usize>> = placed.iter().map(|p| p.window.as_ref().map(|w| w.steps)).collect();
        // Hour 0: no earlier row; 1: one hour (< m); 2: from hour 0; 5: from hour 1 (full);
        // 6: from hour 2 (full); 7: from hour 5 (nothing since hour 2 - 4 could start longer);
        // 9: from hour 5 (full); 14: none between hours 10 and 14; 15: from 14, one hour (< m).
        assert_eq!(steps, [None, None, Some(2), Some(4), Some(4), Some(2), Some(4), None, None]);
        assert_eq!(placed.iter().map(|p| p.row).collect::<Vec<_>>(), (0..9).collect::<Vec<_>>());
        // The window of hour 7 runs over hours 6 and 7 from the row at hour 5: the targets of
        // hours 5 and 6, the time index.
        let window = placed[5].window.as_ref().unwrap();
        assert_eq!(window.reals, vec![30.0, 6.0, 40.0, 7.0]);
    }

    #[test]
    fn derived_inputs_follow_pytorch_forecasting() {
        // A window of 4 steps (positions 1..=4 of arange(-4, 1)), trained with windows of 5.
        let relative = Derived::RelativeTimeIndex { max_encoder_length: 5 };
        let values: Vec<f32> = (1..=4).map(|step| relative.value(step, 4, &[])).collect();
        assert_eq!(values, [-3.0 / 5.0, -2.0 / 5.0, -1.0 / 5.0, 0.0]);
        let length = Derived::EncoderLength { max_encoder_length: 5 };
        assert_eq!(length.value(1, 5, &[]), 1.0);
        assert_eq!(length.value(1, 4, &[]), 0.6);
        let fits = [None, Some(WindowFit { center: 3.0, scale: 0.5 })];
        assert_eq!(Derived::WindowCenter { target: 1, center: 1.0, scale: 4.0 }.value(1, 4, &fits), 0.5);
        assert_eq!(Derived::WindowScale { target: 1, center: 1.0, scale: 0.25 }.value(1, 4, &fits), -2.0);
    }

    #[test]
    fn refuses_duplicate_hours_and_gaps_when_not_allowed() {
        let ids = series();
        let w = windowing(2, true);
        let mut history = History::default();
        w.push(&mut history, record(0, 0), &ids).unwrap();
        let err = w.push(&mut history, record(1, 0), &ids).err().unwrap().to_string();
        assert!(err.contains("rows 0 and 1") && err.contains("same hour"), "{err}");
        let w = windowing(2, false);
        let mut history = History::default();
        w.push(&mut history, record(0, 0), &ids).unwrap();
        let err = w.push(&mut history, record(1, 5), &ids).err().unwrap().to_string();
        assert!(err.contains("5 hours apart"), "{err}");
    }
}

//! The time column and the model's time index. Timestamps give the hourly index DeepTune derives:
//! `pd.to_datetime(column)` (a Parquet timestamp or date, or ISO 8601 text), then
//! `time_idx = (t - min t).total_seconds() // 3600` over the whole input. An integer column is
//! pytorch-forecasting's own `time_idx`, taken as it is.

use std::sync::Arc;

use anyhow::{bail, Result};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Date32Type, Date64Type, TimeUnit};

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_DAY: i64 = 86_400 * NANOS_PER_SECOND;

/// What the time column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeKind {
    /// Timestamps, as nanoseconds: rows go on an hourly index from the input's earliest.
    Timestamps,
    /// Integers: the time index itself.
    Integers,
}

impl TimeKind {
    pub fn of(data_type: &DataType) -> TimeKind {
        if data_type.is_integer() {
            TimeKind::Integers
        } else {
            TimeKind::Timestamps
        }
    }

    /// What one step of the index is called in messages.
    pub fn steps(self) -> &'static str {
        match self {
            TimeKind::Timestamps => "hours",
            TimeKind::Integers => "time steps",
        }
    }
}

/// How a run places rows on the model's time index.
#[derive(Debug, Clone, Copy)]
pub struct TimeAxis {
    pub kind: TimeKind,
    /// The input's earliest time: hour 0 of a timestamp column's index.
    pub earliest: i64,
}

impl TimeAxis {
    pub fn index(&self, time: i64) -> i64 {
        match self.kind {
            TimeKind::Timestamps => hour_index(time, self.earliest),
            TimeKind::Integers => time,
        }
    }
}

/// Per row of the time column: nanoseconds since 1970-01-01 UTC (pandas' `datetime64[ns]`) for
/// timestamps, the value for integers; or why a row has none. Text with a UTC offset is converted
/// to UTC; text without one is taken as it is, as pandas does.
pub fn column_times(column: &ArrayRef, name: &str) -> Result<Vec<Result<i64, String>>> {
    let n = column.len();
    let missing = |i: usize| column.is_null(i);
    let scaled = |values: &dyn Fn(usize) -> i64, per: i64| -> Vec<Result<i64, String>> {
        (0..n)
            .map(|i| {
                if missing(i) {
                    return Err(format!("column '{name}': missing timestamp"));
                }
                values(i).checked_mul(per).ok_or_else(|| format!("column '{name}': timestamp out of range"))
            })
            .collect()
    };
    Ok(match column.data_type() {
        DataType::Timestamp(unit, _) => {
            let per = match unit {
                TimeUnit::Second => NANOS_PER_SECOND,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            let cast = arrow::compute::cast(column, &DataType::Int64)?;
            let values = cast.as_primitive::<arrow::datatypes::Int64Type>();
            scaled(&|i| values.value(i), per)
        }
        kind if kind.is_integer() => {
            let cast = arrow::compute::cast_with_options(
                column,
                &DataType::Int64,
                &arrow::compute::CastOptions { safe: false, ..Default::default() },
            )
            .map_err(|e| anyhow::anyhow!("--time_idx_column {name}: {e}"))?;
            let values = cast.as_primitive::<arrow::datatypes::Int64Type>();
            (0..n)
                .map(|i| if missing(i) { Err(format!("column '{name}': missing time index")) } else { Ok(values.value(i)) })
                .collect()
        }
        DataType::Date32 => {
            let values = column.as_primitive::<Date32Type>();
            scaled(&|i| i64::from(values.value(i)), NANOS_PER_DAY)
        }
        DataType::Date64 => {
            let values = column.as_primitive::<Date64Type>();
            scaled(&|i| values.value(i), 1_000_000)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
            let text = arrow::compute::cast(column, &DataType::Utf8)
                .map_err(|_| anyhow::anyhow!("column '{name}' ({}) holds no text timestamps", column.data_type()))?;
            let text = text.as_string::<i32>();
            let mut offsets = OffsetStyle::default();
            (0..n)
                .map(|i| {
                    if text.is_null(i) {
                        return Err(format!("column '{name}': missing timestamp"));
                    }
                    parse_timestamp(text.value(i), &mut offsets).map_err(|e| format!("column '{name}': {e}"))
                })
                .collect()
        }
        other => bail!(
            "--time_idx_column {name}: the column is {other}; give a timestamp or date column, text timestamps such as 2024-03-01 14:00:00, or pytorch-forecasting's integer time index"
        ),
    })
}

/// Whether the text timestamps seen so far carried a UTC offset: pandas refuses a column that
/// mixes both, and so do we.
#[derive(Default)]
struct OffsetStyle {
    seen: Option<bool>,
}

/// ISO 8601 text as `pd.to_datetime` reads it ([`deepembed_sdk::iso8601`]), in nanoseconds
/// since the epoch in UTC.
fn parse_timestamp(text: &str, offsets: &mut OffsetStyle) -> Result<i64, String> {
    let bad = || format!("cannot read '{text}' as a timestamp (expected ISO 8601, e.g. 2024-03-01 14:00:00)");
    let parsed = deepembed_sdk::iso8601::parse(text).ok_or_else(bad)?;
    let has_offset = parsed.offset_minutes.is_some();
    if *offsets.seen.get_or_insert(has_offset) != has_offset {
        return Err(format!(
            "'{text}': the column mixes timestamps with and without a UTC offset, which pandas refuses"
        ));
    }
    parsed.utc_nanos().ok_or_else(bad)
}

/// The hourly index of `nanos` given the input's earliest timestamp, exactly as pandas and
/// Python compute `(t - min).dt.total_seconds() // 3600`: seconds as a float64, then Python's
/// float floor division.
pub fn hour_index(nanos: i64, earliest: i64) -> i64 {
    let seconds = (nanos - earliest) as f64 / NANOS_PER_SECOND as f64;
    python_floor_div(seconds, 3600.0) as i64
}

/// Python's `float.__floordiv__` (CPython's `float_floor_div`), which can differ from
/// `floor(a / b)` in the last place.
fn python_floor_div(a: f64, b: f64) -> f64 {
    let modulo = a % b;
    let mut div = (a - modulo) / b;
    if modulo != 0.0 && ((b < 0.0) != (modulo < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let floor = div.floor();
        if div - floor > 0.5 {
            floor + 1.0
        } else {
            floor
        }
    } else {
        0.0f64.copysign(a / b)
    }
}

/// A column's values as text for messages and keys (group ids); `None` where null.
pub fn text_values(column: &ArrayRef) -> Result<Arc<arrow::array::StringArray>> {
    let text = arrow::compute::cast(column, &DataType::Utf8)?;
    Ok(Arc::new(text.as_string::<i32>().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<i64, String> {
        parse_timestamp(text, &mut OffsetStyle::default())
    }

    #[test]
    fn reads_iso_text_as_pandas_does() {
        let hour = 3600 * NANOS_PER_SECOND;
        let base = parse("2024-03-01").unwrap();
        assert_eq!(parse("2024-03-01 00:00:00").unwrap(), base);
        assert_eq!(parse("2024-03-01T02:00").unwrap(), base + 2 * hour);
        assert_eq!(parse("2024/03/01 02:30:00.5").unwrap(), base + 2 * hour + 1800 * NANOS_PER_SECOND + 500_000_000);
        assert_eq!(parse("2024-03-01T02:00:00+02:00").unwrap(), base);
        assert_eq!(parse("2024-03-01 02:00:00Z").unwrap(), base + 2 * hour);
        assert_eq!(parse("2024-03-01 10").unwrap(), base + 10 * hour);
        for bad in ["yesterday", "2024-13-01", "2024-03-01 25:00", "01/03/2024", "2024-03-01 1"] {
            assert!(parse(bad).is_err(), "{bad} was read");
        }
        let mut style = OffsetStyle::default();
        parse_timestamp("2024-03-01 00:00:00Z", &mut style).unwrap();
        assert!(parse_timestamp("2024-03-01 00:00:00", &mut style).unwrap_err().contains("mixes"));
    }

    #[test]
    fn hour_index_floors_like_python() {
        let hour = 3600 * NANOS_PER_SECOND;
        assert_eq!(hour_index(0, 0), 0);
        assert_eq!(hour_index(hour - 1, 0), 0);
        assert_eq!(hour_index(hour, 0), 1);
        assert_eq!(hour_index(5 * hour + 17 * 60 * NANOS_PER_SECOND, 0), 5);
        assert_eq!(python_floor_div(7.0, 2.0), 3.0);
        assert_eq!(python_floor_div(-7.0, 2.0), -4.0);
    }
}

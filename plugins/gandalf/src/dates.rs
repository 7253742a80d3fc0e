//! pytorch-tabular's date columns (`date_columns`, with `encode_date_columns`): each date becomes
//! calendar parts, chosen by the column's frequency, that the model takes as categories
//! (`add_datepart`: `visit_Month`, `visit_Is_month_start`, ...). The date is read as pandas reads
//! it (`to_datetime` with the column's format, or a Parquet timestamp or date), in its own local
//! time (a timestamp's zone: a fixed offset or an IANA name, through chrono-tz).

use anyhow::{anyhow, bail, Result};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Date32Type, Date64Type, Int64Type, TimeUnit};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Timelike};
use serde_yaml_ng::Value as Yaml;

/// One calendar part, as pandas' `.dt` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Month,
    Quarter,
    IsQuarterEnd,
    IsQuarterStart,
    IsYearEnd,
    IsYearStart,
    IsMonthStart,
    /// `.dt.weekday`, Monday 0.
    WeekDay,
    /// `.dt.dayofweek`, the same.
    DayOfWeek,
    DayOfYear,
    Hour,
    Minute,
    /// The ISO week, `.dt.isocalendar().week`.
    Week,
}

impl Part {
    /// pytorch-tabular's name of the part, the suffix of its column.
    fn name(self) -> &'static str {
        match self {
            Part::Month => "Month",
            Part::Quarter => "Quarter",
            Part::IsQuarterEnd => "Is_quarter_end",
            Part::IsQuarterStart => "Is_quarter_start",
            Part::IsYearEnd => "Is_year_end",
            Part::IsYearStart => "Is_year_start",
            Part::IsMonthStart => "Is_month_start",
            Part::WeekDay => "WeekDay",
            Part::DayOfWeek => "Dayofweek",
            Part::DayOfYear => "Dayofyear",
            Part::Hour => "Hour",
            Part::Minute => "Minute",
            Part::Week => "Week",
        }
    }

    /// The part of a date; `None` for a missing date (pandas' NaN), except the `Is_*` parts,
    /// which pandas gives as false.
    pub fn of(self, t: Option<NaiveDateTime>) -> Option<i64> {
        let is = |b: bool| Some(i64::from(b));
        let Some(t) = t else {
            return matches!(
                self,
                Part::IsQuarterEnd | Part::IsQuarterStart | Part::IsYearEnd | Part::IsYearStart | Part::IsMonthStart
            )
            .then_some(0);
        };
        let (month, day) = (t.month(), t.day());
        let last_of_month = t.date().succ_opt().is_none_or(|next| next.month() != month);
        match self {
            Part::Month => Some(i64::from(month)),
            Part::Quarter => Some(i64::from((month - 1) / 3 + 1)),
            Part::IsQuarterEnd => is(month % 3 == 0 && last_of_month),
            Part::IsQuarterStart => is(month % 3 == 1 && day == 1),
            Part::IsYearEnd => is(month == 12 && day == 31),
            Part::IsYearStart => is(month == 1 && day == 1),
            Part::IsMonthStart => is(day == 1),
            Part::WeekDay | Part::DayOfWeek => Some(i64::from(t.weekday().num_days_from_monday())),
            Part::DayOfYear => Some(i64::from(t.ordinal())),
            Part::Hour => Some(i64::from(t.hour())),
            Part::Minute => Some(i64::from(t.minute())),
            Part::Week => Some(i64::from(t.iso_week().week())),
        }
    }
}

/// The parts `time_features_from_frequency_str` gives a pandas frequency string (`"D"`, `"12h"`,
/// `"W-SUN"`, `"MS"`, ...), in the order pytorch-tabular adds their columns (the week last).
fn parts_for_frequency(frequency: &str) -> Result<Vec<Part>> {
    use Part::*;
    let alias = frequency.trim().trim_start_matches(|c: char| c.is_ascii_digit());
    let base = alias.split('-').next().unwrap_or("");
    let month = [Month, Quarter, IsQuarterEnd, IsQuarterStart, IsYearEnd, IsYearStart];
    let day = [&month[..], &[IsMonthStart, WeekDay, DayOfWeek, DayOfYear]].concat();
    Ok(match base {
        "Y" | "YE" | "A" | "YS" | "AS" => vec![],
        "M" | "ME" | "MS" => month.to_vec(),
        "W" => [&month[..], &[IsMonthStart, Week]].concat(),
        "D" | "d" | "B" => day,
        "H" | "h" => [&day[..], &[Hour]].concat(),
        "T" | "min" => [&day[..], &[Hour, Minute]].concat(),
        _ => bail!(
            "date frequency '{frequency}' is not one pytorch-tabular derives parts for (Y, M, W, D, B, h, min and their variants)"
        ),
    })
}

/// One date column and the category columns it becomes.
#[derive(Debug, Clone)]
pub struct DateColumn {
    pub column: String,
    /// `to_datetime`'s format for text: a strftime pattern, `ISO8601` or `mixed`.
    format: String,
    /// The derived columns, `<prefix>_<part>`, with their parts.
    pub parts: Vec<(String, Part)>,
}

impl DateColumn {
    /// The config's `date_columns` entries: `[name, frequency, format]` (format `ISO8601` when
    /// left out).
    pub fn read_all(entries: &[Yaml]) -> Result<Vec<DateColumn>> {
        entries.iter().map(DateColumn::read).collect()
    }

    fn read(entry: &Yaml) -> Result<DateColumn> {
        let fields: Option<Vec<&str>> =
            entry.as_sequence().map(|items| items.iter().map(Yaml::as_str).collect::<Option<_>>()).unwrap_or(None);
        let (column, frequency, format) = match fields.as_deref() {
            Some([column, frequency]) => (*column, *frequency, "ISO8601"),
            Some([column, frequency, format]) => (*column, *frequency, *format),
            _ => bail!("config.yml: a date_columns entry is not [column, frequency, format]: {entry:?}"),
        };
        // add_datepart's prefix: the name without a trailing "date" or "Date".
        let prefix = column.strip_suffix("date").or_else(|| column.strip_suffix("Date")).unwrap_or(column);
        let parts = parts_for_frequency(frequency).map_err(|e| anyhow!("config.yml: date column '{column}': {e}"))?;
        Ok(DateColumn {
            column: column.to_string(),
            format: format.to_string(),
            parts: parts.into_iter().map(|part| (format!("{prefix}_{}", part.name()), part)).collect(),
        })
    }

    /// The input column's dates, in their own local time: `Ok(None)` for a missing one, `Err`
    /// for text `to_datetime` would refuse.
    pub fn dates(&self, array: &ArrayRef) -> Result<Vec<Result<Option<NaiveDateTime>, String>>> {
        let name = &self.column;
        let n = array.len();
        let valid = |i: usize| array.is_valid(i);
        Ok(match array.data_type() {
            DataType::Timestamp(unit, tz) => {
                let zone = match tz {
                    None => Zone::Fixed(0),
                    Some(tz) => {
                        Zone::of(tz).ok_or_else(|| anyhow!("date column '{name}': unknown time zone '{tz}'"))?
                    }
                };
                let per_second = match unit {
                    TimeUnit::Second => 1,
                    TimeUnit::Millisecond => 1_000,
                    TimeUnit::Microsecond => 1_000_000,
                    TimeUnit::Nanosecond => 1_000_000_000,
                };
                let values = arrow::compute::cast(array, &DataType::Int64)?;
                let values = values.as_primitive::<Int64Type>();
                (0..n)
                    .map(|i| {
                        if !valid(i) {
                            return Ok(None);
                        }
                        let v = values.value(i);
                        let nanos = (v.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
                        DateTime::from_timestamp(v.div_euclid(per_second), nanos)
                            .map(|t| Some(zone.local(t.naive_utc())))
                            .ok_or_else(|| format!("column '{name}': timestamp {v} out of range"))
                    })
                    .collect()
            }
            DataType::Date32 => {
                let values = array.as_primitive::<Date32Type>();
                (0..n).map(|i| Ok(valid(i).then(|| days_since_epoch(i64::from(values.value(i)))).flatten())).collect()
            }
            DataType::Date64 => {
                let values = array.as_primitive::<Date64Type>();
                (0..n)
                    .map(|i| {
                        Ok(valid(i)
                            .then(|| DateTime::from_timestamp_millis(values.value(i)))
                            .flatten()
                            .map(|t| t.naive_utc()))
                    })
                    .collect()
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
                let text = arrow::compute::cast(array, &DataType::Utf8)
                    .map_err(|_| anyhow!("date column '{name}' ({}) holds no dates", array.data_type()))?;
                let text = text.as_string::<i32>();
                (0..n)
                    .map(|i| {
                        if text.is_null(i) {
                            return Ok(None);
                        }
                        self.parse(text.value(i)).map(Some).ok_or_else(|| {
                            let format = match self.format.as_str() {
                                "mixed" => "'mixed' (deepembed reads such values in ISO 8601 only)".to_string(),
                                other => format!("'{other}'"),
                            };
                            format!("column '{name}': cannot read '{}' as a date with format {format}", text.value(i))
                        })
                    })
                    .collect()
            }
            other => bail!("date column '{name}' is {other}; give dates, timestamps or text dates"),
        })
    }

    /// Text as `to_datetime(text, format=...)` reads it, in the text's own local time.
    fn parse(&self, text: &str) -> Option<NaiveDateTime> {
        let text = text.trim();
        // "mixed" reads each value by its own format; deepembed reads those in ISO 8601 (the
        // error for another names the format).
        if self.format == "ISO8601" || self.format == "mixed" {
            return parse_iso8601(text);
        }
        let parsed = if self.format.contains("%z") {
            DateTime::parse_from_str(text, &self.format).ok().map(|t| t.naive_local())
        } else {
            NaiveDateTime::parse_from_str(text, &self.format)
                .ok()
                .or_else(|| NaiveDate::parse_from_str(text, &self.format).ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
        };
        // A two-digit year: Python (and so pandas) reads 69-99 as 19xx, chrono reads 69 as 2069.
        // 2069 comes only from "69", and every day of 2069 exists in 1969 (neither is a leap year).
        match parsed {
            Some(t) if self.format.contains("%y") && t.year() == 2069 => t.with_year(1969),
            other => other,
        }
    }
}

/// A Parquet timestamp's zone, whose local time pandas' `.dt` parts are in.
enum Zone {
    /// Seconds east of UTC.
    Fixed(i64),
    Named(chrono_tz::Tz),
}

impl Zone {
    /// A fixed offset (`UTC`, `+02:00`) or an IANA name (`Europe/Berlin`).
    fn of(tz: &str) -> Option<Zone> {
        fixed_offset(tz).map(Zone::Fixed).or_else(|| tz.parse().ok().map(Zone::Named))
    }

    fn local(&self, utc: NaiveDateTime) -> NaiveDateTime {
        match self {
            Zone::Fixed(offset) => utc + TimeDelta::seconds(*offset),
            Zone::Named(tz) => tz.from_utc_datetime(&utc).naive_local(),
        }
    }
}

fn days_since_epoch(days: i64) -> Option<NaiveDateTime> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(TimeDelta::days(days))?.and_hms_opt(0, 0, 0)
}

/// Seconds east of UTC of a fixed zone: `UTC`, `Z`, `+HH:MM`, `-HHMM`, `+HH`.
fn fixed_offset(tz: &str) -> Option<i64> {
    if matches!(tz, "UTC" | "Z" | "Etc/UTC" | "utc") {
        return Some(0);
    }
    let sign = match tz.chars().next()? {
        '+' => 1,
        '-' => -1,
        _ => return None,
    };
    let digits: String = tz[1..].chars().filter(|c| *c != ':').collect();
    if !matches!(digits.len(), 2 | 4) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = if digits.len() == 4 { digits[2..].parse().ok()? } else { 0 };
    Some(sign * (hours * 3600 + minutes * 60))
}

/// ISO 8601 as pandas' `format="ISO8601"` reads it, in the text's own local time.
fn parse_iso8601(text: &str) -> Option<NaiveDateTime> {
    deepembed_sdk::iso8601::parse(text).map(|t| t.local)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{StringArray, TimestampSecondArray};

    use super::*;

    fn at(text: &str) -> Option<NaiveDateTime> {
        Some(NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap())
    }

    #[test]
    fn parts_follow_pandas() {
        // 2024-03-31 is a Sunday, the last day of a quarter, in ISO week 13.
        let t = at("2024-03-31 17:45");
        let parts = [
            (Part::Month, 3),
            (Part::Quarter, 1),
            (Part::IsQuarterEnd, 1),
            (Part::IsQuarterStart, 0),
            (Part::IsMonthStart, 0),
            (Part::WeekDay, 6),
            (Part::DayOfYear, 91),
            (Part::Hour, 17),
            (Part::Minute, 45),
            (Part::Week, 13),
        ];
        for (part, want) in parts {
            assert_eq!(part.of(t), Some(want), "{part:?}");
        }
        // 2021-01-01 falls in ISO week 53 of 2020; a missing date has no month but is no month start.
        assert_eq!(Part::Week.of(at("2021-01-01 00:00")), Some(53));
        assert_eq!(Part::IsYearStart.of(at("2021-01-01 00:00")), Some(1));
        assert_eq!((Part::Month.of(None), Part::IsMonthStart.of(None)), (None, Some(0)));
    }

    #[test]
    fn two_digit_years_pivot_as_pythons() {
        let entry: Yaml = serde_yaml_ng::from_str("[d, D, '%d/%m/%y']").unwrap();
        let column = DateColumn::read(&entry).unwrap();
        let text: ArrayRef =
            Arc::new(StringArray::from(vec!["01/02/68", "01/02/69", "01/02/70", "31/12/99", "01/01/00"]));
        let years: Vec<i32> = column.dates(&text).unwrap().into_iter().map(|d| d.unwrap().unwrap().year()).collect();
        assert_eq!(years, [2068, 1969, 1970, 1999, 2000]);
    }

    #[test]
    fn frequencies_choose_the_parts_and_names() {
        let entry: Yaml = serde_yaml_ng::from_str("[visit_date, 12h, '%d/%m/%Y %H:%M']").unwrap();
        let column = DateColumn::read(&entry).unwrap();
        let names: Vec<&str> = column.parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"visit__Month"));
        assert_eq!(names.last(), Some(&"visit__Hour"));
        assert_eq!(names.len(), 11);
        assert_eq!(parts_for_frequency("W-SUN").unwrap().last(), Some(&Part::Week));
        assert!(parts_for_frequency("YS").unwrap().is_empty());
        assert!(parts_for_frequency("s").unwrap_err().to_string().contains("'s'"));
    }

    #[test]
    fn dates_are_read_in_their_local_time() {
        let entry: Yaml = serde_yaml_ng::from_str("[d, D, '%d/%m/%Y %H:%M']").unwrap();
        let column = DateColumn::read(&entry).unwrap();
        let text: ArrayRef = Arc::new(StringArray::from(vec![Some("31/03/2024 17:45"), None, Some("2024-03-31")]));
        let dates = column.dates(&text).unwrap();
        assert_eq!(dates[0], Ok(at("2024-03-31 17:45")));
        assert_eq!(dates[1], Ok(None));
        assert!(dates[2].as_ref().unwrap_err().contains("'2024-03-31'"));
        // 2024-03-31 23:30 UTC is 2024-04-01 01:30 at +02:00.
        let stamps: ArrayRef = Arc::new(TimestampSecondArray::from(vec![1_711_927_800]).with_timezone("+02:00"));
        assert_eq!(column.dates(&stamps).unwrap()[0], Ok(at("2024-04-01 01:30")));
        // Berlin is at +01:00 until 2024-03-31 01:00 UTC, then at +02:00.
        let berlin: ArrayRef =
            Arc::new(TimestampSecondArray::from(vec![1_711_845_000, 1_711_927_800]).with_timezone("Europe/Berlin"));
        assert_eq!(column.dates(&berlin).unwrap(), vec![Ok(at("2024-03-31 01:30")), Ok(at("2024-04-01 01:30"))]);
        let mars: ArrayRef = Arc::new(TimestampSecondArray::from(vec![0]).with_timezone("Mars/Olympus"));
        assert!(column.dates(&mars).unwrap_err().to_string().contains("'Mars/Olympus'"));
        let iso = DateColumn { format: "ISO8601".into(), ..column };
        let text: ArrayRef = Arc::new(StringArray::from(vec!["2024-03-31T17:45:00+05:00", "2024-03-31"]));
        assert_eq!(iso.dates(&text).unwrap(), vec![Ok(at("2024-03-31 17:45")), Ok(at("2024-03-31 00:00"))]);
    }
}

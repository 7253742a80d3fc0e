//! ISO 8601 text as pandas reads it (`to_datetime(format="ISO8601")`, and the format it infers
//! for ISO-looking text): the rules of the ISO parser pandas vendors from numpy, measured against
//! pandas 2.3 by `tests/python/gen_timeseries.py`.
//!
//! - Leading whitespace is skipped. The date is `YYYY`, `YYYY<s>M[M]`, `YYYY<s>M[M]<s>D[D]` with
//!   one separator `<s>` among `- . / \ space`, used twice alike, or `YYYYMMDD` (digits only,
//!   two for month and day).
//! - Then `T` or one space, and the time: `H[H]`, `:M[M]`, `:S[S]` with colons (one digit
//!   allowed, the hour alone needing two), or `HH`, `HHMM`, `HHMMSS` without. Seconds may have
//!   a `.` and up to 18 digits, of which nanoseconds keep the first 9.
//! - Then, after optional spaces, `Z` or `+`/`-` with a 1- or 2-digit hour and an optional
//!   (`:`) 1- or 2-digit minute; then only whitespace.
//!
//! The result keeps the text's local time and its offset (pandas keeps both in a tz-aware
//! timestamp); a value out of range (`02-30`, `25:00`) is not a date.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

/// A timestamp as written: its local date and time, and its UTC offset in minutes if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub local: NaiveDateTime,
    pub offset_minutes: Option<i32>,
}

impl Timestamp {
    /// Nanoseconds since the Unix epoch in UTC (the local time, for text without an offset).
    pub fn utc_nanos(&self) -> Option<i64> {
        let local = self.local.and_utc().timestamp_nanos_opt()?;
        local.checked_sub(i64::from(self.offset_minutes.unwrap_or(0)) * 60_000_000_000)
    }
}

/// The timestamp `text` holds, or `None` when pandas would not read it as ISO 8601.
pub fn parse(text: &str) -> Option<Timestamp> {
    let mut c = Cursor { s: text.as_bytes(), i: 0 };
    c.skip_spaces();
    let negative = c.peek() == Some(b'-');
    if negative {
        c.i += 1;
    }
    if c.done() {
        return None;
    }
    let mut year = 0i32;
    if (0..4).all(|k| c.digit_at(k)) {
        year = (0..4).fold(0, |y, k| y * 10 + c.value_at(k) as i32);
        c.i += 4;
    }
    if negative && text.starts_with('-') {
        year = -year;
    }
    let date = |month: u32, day: u32| NaiveDate::from_ymd_opt(year, month, day);
    if c.done() {
        return Some(naive(date(1, 1)?, NaiveTime::MIN));
    }

    // The month, after a separator, which the day's must repeat.
    let mut separator = None;
    if !c.digit_at(0) {
        let s = c.peek()?;
        if !matches!(s, b'-' | b'.' | b'/' | b'\\' | b' ') {
            return None;
        }
        separator = Some(s);
        c.i += 1;
        if !c.digit_at(0) {
            return None;
        }
    }
    let month = c.one_or_two(separator.is_some())?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if c.done() {
        // YYYYMM is not a date here.
        separator?;
        return Some(naive(date(month, 1)?, NaiveTime::MIN));
    }
    if let Some(s) = separator {
        if c.peek() != Some(s) || c.remaining() == 1 {
            return None;
        }
        c.i += 1;
    }
    if !c.digit_at(0) {
        return None;
    }
    let day = c.one_or_two(separator.is_some())?;
    let day = date(month, day)?;
    if c.done() {
        return Some(naive(day, NaiveTime::MIN));
    }
    if !matches!(c.peek(), Some(b'T' | b' ')) || c.remaining() == 1 {
        return None;
    }
    c.i += 1;

    let (time, offset_minutes) = c.time()?;
    Some(Timestamp { local: day.and_time(time), offset_minutes })
}

fn naive(date: NaiveDate, time: NaiveTime) -> Timestamp {
    Timestamp { local: date.and_time(time), offset_minutes: None }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn remaining(&self) -> usize {
        self.s.len().saturating_sub(self.i)
    }

    fn digit_at(&self, k: usize) -> bool {
        self.s.get(self.i + k).is_some_and(u8::is_ascii_digit)
    }

    fn value_at(&self, k: usize) -> u32 {
        u32::from(self.s[self.i + k] - b'0')
    }

    /// C's `isspace`: space, tab, newline, vertical tab, form feed, carriage return.
    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')) {
            self.i += 1;
        }
    }

    /// A field of one or two digits (the first one here): two are required without a
    /// separator.
    fn one_or_two(&mut self, separated: bool) -> Option<u32> {
        let mut value = self.value_at(0);
        self.i += 1;
        if self.digit_at(0) {
            value = value * 10 + self.value_at(0);
            self.i += 1;
        } else if !separated {
            return None;
        }
        Some(value)
    }

    /// The time after the date's `T` or space, and the offset after it.
    fn time(&mut self) -> Option<(NaiveTime, Option<i32>)> {
        if !self.digit_at(0) {
            return None;
        }
        let mut hour = self.value_at(0);
        self.i += 1;
        let two_digit_hour = self.digit_at(0);
        if two_digit_hour {
            hour = hour * 10 + self.value_at(0);
            self.i += 1;
        }
        let clock = 'clock: {
            if self.done() {
                if !two_digit_hour {
                    return None;
                }
                break 'clock NaiveTime::from_hms_opt(hour, 0, 0)?;
            }
            let colons = self.peek() == Some(b':');
            if colons {
                self.i += 1;
                if !self.digit_at(0) {
                    return None;
                }
            } else if !self.digit_at(0) {
                if !two_digit_hour {
                    return None;
                }
                break 'clock NaiveTime::from_hms_opt(hour, 0, 0)?;
            }
            let minute = self.one_or_two(colons)?;
            if self.done() {
                break 'clock NaiveTime::from_hms_opt(hour, minute, 0)?;
            }
            if colons && self.peek() == Some(b':') {
                self.i += 1;
                if !self.digit_at(0) {
                    return None;
                }
            } else if colons || !self.digit_at(0) {
                break 'clock NaiveTime::from_hms_opt(hour, minute, 0)?;
            }
            let second = self.one_or_two(colons)?;
            let mut nanos = 0;
            if self.peek() == Some(b'.') {
                self.i += 1;
                let mut digits = 0;
                while digits < 18 && self.digit_at(0) {
                    if digits < 9 {
                        nanos = nanos * 10 + self.value_at(0);
                    }
                    digits += 1;
                    self.i += 1;
                }
                nanos *= 10u32.pow(9 - digits.min(9));
            }
            NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?
        };
        let offset = self.offset()?;
        self.skip_spaces();
        self.done().then_some((clock, offset))
    }

    /// `Z`, `+HH[:MM]` (one or two digits each), or nothing; `None` when malformed.
    fn offset(&mut self) -> Option<Option<i32>> {
        self.skip_spaces();
        match self.peek() {
            None => Some(None),
            Some(b'Z') => {
                self.i += 1;
                Some(Some(0))
            }
            Some(sign @ (b'+' | b'-')) => {
                self.i += 1;
                let hours = self.offset_field(24)?;
                let mut minutes = 0;
                if !self.done() {
                    if self.peek() == Some(b':') {
                        self.i += 1;
                    }
                    minutes = self.offset_field(60)?;
                }
                let minutes = (hours * 60 + minutes) as i32;
                Some(Some(if sign == b'-' { -minutes } else { minutes }))
            }
            // Anything else is left for the caller's end-of-text check.
            Some(_) => Some(None),
        }
    }

    /// One or two digits, a two-digit value below `limit`.
    fn offset_field(&mut self, limit: u32) -> Option<u32> {
        if self.digit_at(0) && self.digit_at(1) {
            let value = self.value_at(0) * 10 + self.value_at(1);
            self.i += 2;
            (value < limit).then_some(value)
        } else if self.digit_at(0) {
            let value = self.value_at(0);
            self.i += 1;
            Some(value)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_pandas_reads_and_refuses() {
        let at = |t: &str| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        let cases = [
            ("2024-03-01", Some((at("2024-03-01 00:00:00"), None))),
            ("2024.3.1 2:05", Some((at("2024-03-01 02:05:00"), None))),
            ("20240301T020000", Some((at("2024-03-01 02:00:00"), None))),
            ("2024-03-01T02Z", Some((at("2024-03-01 02:00:00"), Some(0)))),
            ("2024-03-01 02:00:00.1234567891 +2", Some((at("2024-03-01 02:00:00.123456789"), Some(120)))),
            ("2024-03-01T02:00-02:30", Some((at("2024-03-01 02:00:00"), Some(-150)))),
            ("2024-03", Some((at("2024-03-01 00:00:00"), None))),
            ("202403", None),
            ("2024-03/01", None),
            ("2024-03-01 ", None),
            ("2024-03-01T2", None),
            ("2024-02-30", None),
            ("2024-03-01T24:00", None),
            ("2024-03-01T02:00:00+24", None),
            ("2024-03-01Z", None),
            ("2024-03-01T02:00:00UTC", None),
        ];
        for (text, want) in cases {
            let got = parse(text).map(|t| (t.local, t.offset_minutes));
            assert_eq!(got, want, "{text}");
        }
    }
}

//! One encoded input row, and its fixed-size byte form for the temporary files a run reads back
//! (the input in compact form, and sorted runs when rows are out of time order).

/// The order rows are windowed in: series, time, then row number.
pub type SortKey = (u32, i64, u64);

/// How many targets, continuous and categorical inputs each record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub targets: usize,
    pub reals: usize,
    pub categoricals: usize,
}

impl Layout {
    /// Bytes per record: row, series, time, targets, then the inputs.
    pub fn record_bytes(&self) -> usize {
        8 + 4 + 8 + 4 * self.targets + 4 * self.reals + 4 * self.categoricals
    }
}

/// An input row as the model sees it, before windowing.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The row's number in the input file.
    pub row: u64,
    pub series: u32,
    /// Nanoseconds since 1970 (UTC when the input said so).
    pub time: i64,
    /// The row's own targets, as written to the output.
    pub targets: Vec<f32>,
    /// Continuous inputs in the model's order, already scaled; the targets' slots hold this
    /// row's normalised targets. Inputs normalised per window hold their prepared values (see
    /// `EncoderNormaliser::prepare`), and those derived per window (the time index) or lagged 0
    /// until windowing fills them.
    pub reals: Vec<f32>,
    /// Category codes, in the model's order.
    pub codes: Vec<u32>,
}

impl Record {
    /// The order rows are windowed in: by series, then time (then input order, so ties are
    /// stable and reported in order).
    pub fn sort_key(&self) -> SortKey {
        (self.series, self.time, self.row)
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.row.to_le_bytes());
        out.extend_from_slice(&self.series.to_le_bytes());
        out.extend_from_slice(&self.time.to_le_bytes());
        for x in self.targets.iter().chain(&self.reals) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for c in &self.codes {
            out.extend_from_slice(&c.to_le_bytes());
        }
    }

    /// Reads a record written by [`Record::write_to`]; `bytes` is exactly one record.
    pub fn read_from(bytes: &[u8], layout: Layout) -> Record {
        let mut at = 0;
        let mut take = |n: usize| {
            let slice = &bytes[at..at + n];
            at += n;
            slice
        };
        let row = u64::from_le_bytes(take(8).try_into().expect("8 bytes"));
        let series = u32::from_le_bytes(take(4).try_into().expect("4 bytes"));
        let time = i64::from_le_bytes(take(8).try_into().expect("8 bytes"));
        let mut floats = |n: usize| -> Vec<f32> {
            (0..n).map(|_| f32::from_le_bytes(take(4).try_into().expect("4 bytes"))).collect()
        };
        let targets = floats(layout.targets);
        let reals = floats(layout.reals);
        let codes =
            (0..layout.categoricals).map(|_| u32::from_le_bytes(take(4).try_into().expect("4 bytes"))).collect();
        Record { row, series, time, targets, reals, codes }
    }

    /// [`Record::sort_key`] of a record's bytes, without decoding the rest.
    pub fn key_of(bytes: &[u8]) -> SortKey {
        let row = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let series = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let time = i64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        (series, time, row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keys() {
        let layout = Layout { targets: 2, reals: 2, categoricals: 1 };
        let record =
            Record { row: 7, series: 3, time: -5, targets: vec![1.5, 3.0], reals: vec![0.25, -2.0], codes: vec![9] };
        let mut bytes = Vec::new();
        record.write_to(&mut bytes);
        assert_eq!(bytes.len(), layout.record_bytes());
        assert_eq!(Record::read_from(&bytes, layout), record);
        assert_eq!(Record::key_of(&bytes), record.sort_key());
    }
}

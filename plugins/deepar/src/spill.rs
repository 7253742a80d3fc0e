//! Temporary files, so memory stays bounded whatever the input's size and row order:
//! the input's records in input order ([`Spill`]), and an external sort of them by (series,
//! time) in runs that fit a memory budget, merged back as one stream ([`sorted`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::record::{Layout, Record, SortKey};

/// A private directory under the system's temporary directory (`TMPDIR`), removed with
/// everything in it when dropped, whether the run succeeded or not.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("deepembed-deepar-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| {
            format!("cannot create a temporary directory {} (set TMPDIR to another place)", path.display())
        })?;
        Ok(TempDir { path })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Records appended to a file, read back in the same order.
pub struct Spill {
    path: PathBuf,
    writer: BufWriter<File>,
    layout: Layout,
    buffer: Vec<u8>,
    records: u64,
}

impl Spill {
    pub fn create(path: PathBuf, layout: Layout) -> Result<Spill> {
        let file = File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Spill { path, writer: BufWriter::with_capacity(1 << 20, file), layout, buffer: Vec::new(), records: 0 })
    }

    pub fn push(&mut self, record: &Record) -> Result<()> {
        self.buffer.clear();
        record.write_to(&mut self.buffer);
        self.writer.write_all(&self.buffer).with_context(|| format!("writing {}", self.path.display()))?;
        self.records += 1;
        Ok(())
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Ends writing; the records can then be read back in order.
    pub fn finish(mut self) -> Result<Spilled> {
        self.writer.flush().with_context(|| format!("writing {}", self.path.display()))?;
        Ok(Spilled { path: self.path, layout: self.layout, records: self.records })
    }
}

/// A finished [`Spill`].
pub struct Spilled {
    path: PathBuf,
    layout: Layout,
    records: u64,
}

impl Spilled {
    /// The records in the order they were written.
    pub fn read(&self) -> Result<RecordReader> {
        RecordReader::open(&self.path, self.layout)
    }
}

/// Records read one by one from a file of them.
pub struct RecordReader {
    reader: BufReader<File>,
    layout: Layout,
    buffer: Vec<u8>,
}

impl RecordReader {
    fn open(path: &Path, layout: Layout) -> Result<RecordReader> {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(RecordReader {
            reader: BufReader::with_capacity(1 << 20, file),
            layout,
            buffer: vec![0; layout.record_bytes()],
        })
    }

    fn next_bytes(&mut self) -> Result<bool> {
        match self.reader.read_exact(&mut self.buffer) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e).context("reading a temporary file"),
        }
    }
}

impl Iterator for RecordReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        match self.next_bytes() {
            Ok(true) => Some(Ok(Record::read_from(&self.buffer, self.layout))),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// The spilled records by (series, time, row): runs of at most `budget` bytes are sorted in
/// memory and written to `dir`, then merged. A single run is never written back.
pub fn sorted(spilled: &Spilled, dir: &TempDir, budget: usize) -> Result<Box<dyn Iterator<Item = Result<Record>>>> {
    let size = spilled.layout.record_bytes();
    // At most MAX_RUNS files are open at once in the merge; a huge input with a small budget
    // gets larger runs rather than running out of file handles.
    let per_run = (budget / size).max(1).max(spilled.records.div_ceil(MAX_RUNS) as usize);
    let mut input = File::open(&spilled.path).with_context(|| format!("cannot read {}", spilled.path.display()))?;
    let mut runs = Vec::new();
    let mut left = spilled.records;
    let mut chunk = Vec::new();
    while left > 0 {
        let n = per_run.min(left as usize);
        chunk.resize(n * size, 0);
        input.read_exact(&mut chunk).context("reading a temporary file")?;
        left -= n as u64;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&i| Record::key_of(&chunk[i * size..(i + 1) * size]));
        if runs.is_empty() && left == 0 {
            // Everything fit in memory: no run file.
            let layout = spilled.layout;
            return Ok(Box::new(
                order.into_iter().map(move |i| Ok(Record::read_from(&chunk[i * size..(i + 1) * size], layout))),
            ));
        }
        let path = dir.file(&format!("run-{}", runs.len()));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        for i in order {
            out.write_all(&chunk[i * size..(i + 1) * size])?;
        }
        out.flush()?;
        runs.push(path);
    }
    log::info!("sorted {} rows by series and time in {} runs on disk", spilled.records, runs.len());
    let readers = runs.iter().map(|p| RecordReader::open(p, spilled.layout)).collect::<Result<Vec<_>>>()?;
    Ok(Box::new(Merge::new(readers)?))
}

/// The most sorted runs merged at once.
const MAX_RUNS: u64 = 256;

/// A k-way merge of sorted runs.
struct Merge {
    runs: Vec<RecordReader>,
    /// The next key of each run that has one, smallest first.
    heap: BinaryHeap<Reverse<(SortKey, usize)>>,
}

impl Merge {
    fn new(mut runs: Vec<RecordReader>) -> Result<Merge> {
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (i, run) in runs.iter_mut().enumerate() {
            if run.next_bytes()? {
                heap.push(Reverse((Record::key_of(&run.buffer), i)));
            }
        }
        Ok(Merge { runs, heap })
    }

    fn pop(&mut self) -> Result<Option<Record>> {
        let Some(Reverse((_, i))) = self.heap.pop() else { return Ok(None) };
        let run = &mut self.runs[i];
        let record = Record::read_from(&run.buffer, run.layout);
        if run.next_bytes()? {
            self.heap.push(Reverse((Record::key_of(&run.buffer), i)));
        }
        Ok(Some(record))
    }
}

impl Iterator for Merge {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        self.pop().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_across_runs_on_disk() {
        let dir = TempDir::new().unwrap();
        let layout = Layout { targets: 1, reals: 1, categoricals: 0 };
        let mut spill = Spill::create(dir.file("in"), layout).unwrap();
        let mut expected = Vec::new();
        for row in 0..1000u64 {
            let series = (row * 7919 % 13) as u32;
            let time = (row * 104_729 % 997) as i64;
            let record =
                Record { row, series, time, targets: vec![row as f32], reals: vec![row as f32], codes: vec![] };
            expected.push(record.sort_key());
            spill.push(&record).unwrap();
        }
        expected.sort_unstable();
        let spilled = spill.finish().unwrap();
        for budget in [usize::MAX / 2, 10 * layout.record_bytes(), 1] {
            // 1 byte: one record per run, capped at MAX_RUNS runs.
            let keys: Vec<_> = sorted(&spilled, &dir, budget).unwrap().map(|r| r.unwrap().sort_key()).collect();
            assert_eq!(keys, expected, "budget {budget}");
        }
    }
}

//! An input table, opened and checked before the run, then read as a stream of record batches
//! of at most `batch_size` rows.
//!
//! `--df` (or any input flag) names a Parquet file, a directory of them (read recursively, as
//! Hive-style `key=value/` datasets and the output of img2dataset-like tools are laid out), or a
//! glob pattern (`shards/part-*.parquet`, `data/**/*.parquet`). Several files are read in sorted
//! path order as one table: their columns must match by name and type, and a column nullable in
//! any file is nullable in the table. Hive partition values (`key=value` folder names) are not
//! added as columns. Files whose names start with `.` or `_` (`_SUCCESS`, `_metadata`) are not
//! data and are skipped, as Spark and pyarrow skip them.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};

use crate::read_ahead::ReadAhead;
use crate::shard::Shard;

pub struct Input {
    /// Rows read: the whole table's, or the shard's, less those skipped to resume a run.
    pub rows: u64,
    /// The whole table's rows, and the first row read (0 unless a shard starts later or a
    /// resumed run continues after its committed rows).
    pub table_rows: u64,
    pub first_row: u64,
    /// The run's rows `[start, end)`: the whole table, or the shard's range.
    pub range: (u64, u64),
    /// The files read, in order (one for a plain file).
    pub files: Vec<PathBuf>,
    pub reader: Box<dyn RecordBatchReader + Send>,
}

/// Opens the table the user named with `--<flag>`, all of it or `shard`'s rows, less the first
/// `skip` of them (a resumed run's committed rows).
pub fn open(spec: &Path, flag: &str, batch_size: usize, shard: Option<Shard>, skip: u64) -> Result<Input> {
    let files = resolve(spec, flag)?;
    let mut schema: Option<Schema> = None;
    // Per file: its footer (read once, kept for the reader), its first row in the table and its
    // row groups' sizes.
    let mut layout: Vec<(ArrowReaderMetadata, u64, Vec<u64>)> = Vec::with_capacity(files.len());
    let mut table_rows = 0u64;
    for file in &files {
        let metadata = footer(file, flag)?;
        let groups: Vec<u64> = metadata.metadata().row_groups().iter().map(|g| g.num_rows().max(0) as u64).collect();
        let rows = groups.iter().sum::<u64>();
        schema = Some(match schema {
            None => metadata.schema().as_ref().clone(),
            Some(table) => merge(&table, metadata.schema(), &files[0], file, flag)?,
        });
        layout.push((metadata, table_rows, groups));
        table_rows += rows;
    }
    let schema = Arc::new(schema.expect("at least one file"));
    let (start, end) = match shard {
        None => (0, table_rows),
        Some(shard) => {
            let mut boundaries = vec![0];
            for (_, first, groups) in &layout {
                let mut at = *first;
                for g in groups {
                    at += g;
                    boundaries.push(at);
                }
            }
            shard.range(table_rows, &boundaries)
        }
    };
    let first_row = (start + skip).min(end);
    let mut pending = VecDeque::new();
    for (file, (metadata, first, groups)) in files.iter().zip(layout) {
        if let Some(part) = Part::of(file, metadata, first, &groups, first_row, end) {
            pending.push_back(part);
        }
    }
    let files_reader = Files { schema, pending, current: None, batch_size, flag: flag.into() };
    let reader = Box::new(ReadAhead::new(Box::new(files_reader)).context("starting the thread that reads the input")?);
    Ok(Input { rows: end - first_row, table_rows, first_row, range: (start, end), files, reader })
}

/// The rows of one file that a run reads: whole row groups, and within them a selection when
/// the range starts or ends inside a group.
struct Part {
    file: PathBuf,
    metadata: ArrowReaderMetadata,
    row_groups: Vec<usize>,
    selection: Option<RowSelection>,
}

impl Part {
    /// The part of `file` (its footer, its first row in the table, its row groups' sizes) within
    /// the table's rows `[start, end)`, if any.
    fn of(
        file: &Path,
        metadata: ArrowReaderMetadata,
        first: u64,
        groups: &[u64],
        start: u64,
        end: u64,
    ) -> Option<Part> {
        let mut row_groups = Vec::new();
        let (mut skip_before, mut read) = (0u64, 0u64);
        let mut at = first;
        for (i, &n) in groups.iter().enumerate() {
            let (lo, hi) = (at.max(start), (at + n).min(end));
            if lo < hi {
                if row_groups.is_empty() {
                    skip_before = lo - at;
                }
                row_groups.push(i);
                read += hi - lo;
            }
            at += n;
        }
        if row_groups.is_empty() {
            return None;
        }
        let whole: u64 = row_groups.iter().map(|&i| groups[i]).sum();
        let selection = (read != whole).then(|| {
            let after = whole - skip_before - read;
            RowSelection::from(vec![
                RowSelector::skip(skip_before as usize),
                RowSelector::select(read as usize),
                RowSelector::skip(after as usize),
            ])
        });
        Some(Part { file: file.to_path_buf(), metadata, row_groups, selection })
    }
}

/// The Parquet files `spec` names, in the order they are read.
pub fn resolve(spec: &Path, flag: &str) -> Result<Vec<PathBuf>> {
    let text = spec.to_string_lossy();
    let mut files = if text.contains(['*', '?', '[', '{']) {
        matching(&text, flag)?
    } else if spec.is_dir() {
        let mut files = Vec::new();
        walk(spec, &mut |p| p.extension().is_some_and(|e| e == "parquet"), &mut files)
            .with_context(|| format!("cannot list {} (--{flag})", spec.display()))?;
        if files.is_empty() {
            bail!("--{flag} {}: the directory holds no .parquet files", spec.display());
        }
        files
    } else if spec.exists() {
        vec![spec.to_path_buf()]
    } else {
        bail!("input file {} does not exist (--{flag})", spec.display());
    };
    files.sort();
    Ok(files)
}

/// The files under the pattern's fixed leading directories that match it.
fn matching(pattern: &str, flag: &str) -> Result<Vec<PathBuf>> {
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| anyhow!("--{flag} {pattern}: not a valid glob pattern: {e}"))?
        .compile_matcher();
    // Walk from the deepest directory the pattern fixes, e.g. `data/` for `data/**/*.parquet`.
    let base: PathBuf = Path::new(pattern)
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[', '{']))
        .collect();
    // A pattern without a fixed directory is matched against paths relative to here.
    let (root, relative) = if base.as_os_str().is_empty() { (PathBuf::from("."), true) } else { (base, false) };
    let mut files = Vec::new();
    if root.is_dir() {
        let mut keep = |p: &Path| glob.is_match(if relative { p.strip_prefix(".").unwrap_or(p) } else { p });
        walk(&root, &mut keep, &mut files).with_context(|| format!("cannot list {} (--{flag})", root.display()))?;
    }
    if files.is_empty() {
        bail!("--{flag} {pattern}: no files match the pattern");
    }
    Ok(files)
}

/// Files under `dir`, recursively, that `keep` accepts; names starting with `.` or `_` are not
/// data (`_SUCCESS`, `_metadata`, `.crc` files, hidden folders).
fn walk(dir: &Path, keep: &mut dyn FnMut(&Path) -> bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        if entry.file_type()?.is_dir() || (path.is_dir() && entry.file_type()?.is_symlink()) {
            walk(&path, keep, out)?;
        } else if keep(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn open_file(file: &Path, flag: &str) -> Result<File> {
    File::open(file).with_context(|| format!("cannot open input file {} (--{flag})", file.display()))
}

/// The file's footer: its row groups and Arrow schema.
fn footer(file: &Path, flag: &str) -> Result<ArrowReaderMetadata> {
    ArrowReaderMetadata::load(&open_file(file, flag)?, ArrowReaderOptions::default())
        .with_context(|| format!("{} is not a readable Parquet file (--{flag})", file.display()))
}

/// The table's schema widened by `file`'s: the same columns in the same order and of the same
/// types, nullable where either is.
fn merge(table: &Schema, schema: &Schema, first: &Path, file: &Path, flag: &str) -> Result<Schema> {
    let names = |s: &Schema| s.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
    if names(table) != names(schema) {
        bail!(
            "--{flag}: {} has columns {:?}, but {} has {:?}; the files of one table must have the same columns",
            file.display(),
            names(schema),
            first.display(),
            names(table)
        );
    }
    let mut fields: Vec<Field> = Vec::with_capacity(table.fields().len());
    for (a, b) in table.fields().iter().zip(schema.fields()) {
        if a.data_type() != b.data_type() {
            bail!(
                "--{flag}: column '{}' is {} in {} but {} in {}",
                a.name(),
                b.data_type(),
                file.display(),
                a.data_type(),
                first.display()
            );
        }
        fields.push(a.as_ref().clone().with_nullable(a.is_nullable() || b.is_nullable()));
    }
    Ok(Schema::new_with_metadata(fields, table.metadata().clone()))
}

/// The files' batches in order, under the table's schema.
struct Files {
    schema: SchemaRef,
    pending: VecDeque<Part>,
    current: Option<ParquetRecordBatchReader>,
    batch_size: usize,
    flag: String,
}

impl Files {
    fn next_file(&mut self) -> Result<bool> {
        let Some(part) = self.pending.pop_front() else { return Ok(false) };
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(open_file(&part.file, &self.flag)?, part.metadata)
                .with_batch_size(self.batch_size.max(1))
                .with_row_groups(part.row_groups);
        if let Some(selection) = part.selection {
            builder = builder.with_row_selection(selection);
        }
        self.current = Some(builder.build()?);
        Ok(true)
    }
}

impl Iterator for Files {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(batch) = self.current.as_mut().and_then(Iterator::next) {
                // The same columns, possibly a narrower nullability: re-labelled, not copied.
                return Some(batch.and_then(|b| RecordBatch::try_new(self.schema.clone(), b.columns().to_vec())));
            }
            match self.next_file() {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => return Some(Err(ArrowError::ExternalError(e.into()))),
            }
        }
    }
}

impl RecordBatchReader for Files {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

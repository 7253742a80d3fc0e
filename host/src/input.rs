//! An input Parquet table, opened and checked before the run, then read as a stream of record
//! batches of `batch_size` rows.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use arrow::record_batch::RecordBatchReader;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub struct Input {
    pub rows: u64,
    pub reader: Box<dyn RecordBatchReader + Send>,
}

/// Opens the table the user named with `--<flag>`.
pub fn open(path: &Path, flag: &str, batch_size: usize) -> Result<Input> {
    if !path.exists() {
        bail!("input file {} does not exist (--{flag})", path.display());
    }
    if path.is_dir() {
        bail!("--{flag} {} is a directory; name a Parquet file", path.display());
    }
    let file = File::open(path).with_context(|| format!("cannot open input file {} (--{flag})", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file (--{flag})", path.display()))?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let reader = builder.with_batch_size(batch_size.max(1)).build()?;
    Ok(Input { rows, reader: Box::new(reader) })
}

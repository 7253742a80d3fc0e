//! DeepTune's output layout, written so that nothing half-written looks complete:
//!
//! `<out>/embed_output_<MODEL_STR>_<YYYYMMDD>_<HHMM>[_N]/` holding
//! `<file_name>` (streamed under a temporary name, renamed when complete),
//! `cli_arguments.json`, `embedding_details.json` and, when rows were skipped, `skipped_rows.json`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

/// Creates a new output directory. An existing one is never reused: a second run in the same
/// minute gets `_2`, `_3`, ...
pub fn create_run_dir(out: &Path, model_str: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output directory {} (--out)", out.display()))?;
    let stamp = chrono::Local::now().format("%Y%m%d_%H%M");
    let base = format!("embed_output_{model_str}_{stamp}");
    for n in 1..10_000 {
        let name = if n == 1 { base.clone() } else { format!("{base}_{n}") };
        let dir = out.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("too many output directories named {base}_* in {}", out.display())
}

/// Encoded bytes that close a Parquet row group: large enough for efficient reads, small enough
/// to keep memory flat (the writer's buffers take several times this; measured: 1M rows of 33
/// columns grew peak RSS by 165 MiB at 64 MiB groups and by 12 MiB at 16 MiB ones).
const ROW_GROUP_BYTES: usize = 16 << 20;

/// The embeddings file, written batch by batch.
pub struct ParquetSink {
    final_path: PathBuf,
    temp_path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    pub rows: u64,
}

impl ParquetSink {
    pub fn new(dir: &Path, file_name: &str) -> ParquetSink {
        ParquetSink {
            final_path: dir.join(file_name),
            temp_path: dir.join(format!(".{file_name}.partial")),
            writer: None,
            rows: 0,
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.writer.is_none() {
            let file =
                File::create(&self.temp_path).with_context(|| format!("cannot create {}", self.temp_path.display()))?;
            // Snappy, as pandas writes by default: every reader downstream handles it.
            let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
            // No dictionary for float columns: embeddings hardly repeat a value, so the
            // dictionary is built, found useless and thrown away, page after page. Measured on
            // 10,240 rows of 2048 random floats: 3,550 rows/s and 115 MB with it, 15,000-23,000
            // rows/s and 86 MB without (docs/BENCHMARKS.md).
            for field in batch.schema().fields() {
                if matches!(field.data_type(), DataType::Float16 | DataType::Float32 | DataType::Float64) {
                    props = props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
                }
            }
            let props = props.build();
            self.writer = Some(ArrowWriter::try_new(file, batch.schema(), Some(props))?);
        }
        let writer = self.writer.as_mut().expect("writer was just created");
        writer.write(batch).context("writing the embeddings file")?;
        // The writer buffers a whole row group (up to a million rows) before writing it; close
        // row groups by size instead, so memory stays bounded whatever the row count.
        if writer.in_progress_size() >= ROW_GROUP_BYTES {
            writer.flush().context("writing the embeddings file")?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the file, syncs it to disk and moves it to its final name.
    pub fn finish(mut self) -> Result<PathBuf> {
        match self.writer.take() {
            Some(writer) => {
                writer.into_inner().context("finishing the embeddings file")?.sync_all()?;
            }
            None => bail!("the plugin produced no output rows"),
        }
        std::fs::rename(&self.temp_path, &self.final_path)
            .with_context(|| format!("cannot move the finished file to {}", self.final_path.display()))?;
        Ok(self.final_path.clone())
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        // Unfinished: leave nothing behind that could pass for output.
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

/// `files`' row groups, in order, into `target`: column chunks are copied as they are
/// (compressed pages, statistics), not decoded. `target` is removed if anything fails; the
/// caller renames it into place.
pub fn concat_parquet(files: &[PathBuf], target: &Path) -> Result<u64> {
    let inputs = files
        .iter()
        .map(|path| {
            let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let metadata = ParquetMetaDataReader::new()
                .parse_and_finish(&file)
                .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
            Ok((path, file, metadata))
        })
        .collect::<Result<Vec<_>>>()?;
    let (first_path, _, first) = &inputs[0];
    for (path, _, metadata) in &inputs[1..] {
        if metadata.file_metadata().schema() != first.file_metadata().schema() {
            bail!("{} and {} have different columns", first_path.display(), path.display());
        }
    }
    let written = (|| -> Result<u64> {
        // The Arrow schema travels in the key-value metadata: keep it, so readers see the same
        // types (and nullability) as in the pieces.
        let props = WriterProperties::builder()
            .set_key_value_metadata(first.file_metadata().key_value_metadata().cloned())
            .build();
        let schema = first.file_metadata().schema_descr().root_schema_ptr();
        let mut writer = SerializedFileWriter::new(File::create(target)?, schema, Arc::new(props))?;
        let mut rows = 0u64;
        for (_, file, metadata) in &inputs {
            for group in metadata.row_groups() {
                let mut out = writer.next_row_group()?;
                for column in group.columns() {
                    let chunk = ColumnCloseResult {
                        bytes_written: column.compressed_size() as u64,
                        rows_written: group.num_rows() as u64,
                        metadata: column.clone(),
                        bloom_filter: None,
                        column_index: None,
                        offset_index: None,
                    };
                    out.append_column(file, chunk)?;
                }
                out.close()?;
                rows += group.num_rows() as u64;
            }
        }
        writer.into_inner()?.sync_all()?;
        Ok(rows)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(target);
        e.context("writing the embeddings file")
    })
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

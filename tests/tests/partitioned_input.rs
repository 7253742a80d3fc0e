//! `--df` as a directory of Parquet files (Hive-style folders, `_SUCCESS` markers) or a glob:
//! read in sorted path order as one table, with the same output as the single file; files
//! whose columns disagree are refused, naming both files.

use std::path::Path;

use arrow::array::RecordBatch;
use deepembed_tests::*;

/// The vision run's output table for `--df df`.
fn embed(df: &Path, out: &Path) -> RecordBatch {
    read_parquet(&output_parquet(&embed_resnet18(df, out, &["--batch_size", "4"])))
}

/// `batch` cut into `parts` files under `root`, in folders that sort in row order.
fn split(batch: &RecordBatch, root: &Path, parts: usize) {
    let per = batch.num_rows().div_ceil(parts);
    for p in 0..parts {
        let dir = root.join(format!("part={p}"));
        std::fs::create_dir_all(&dir).unwrap();
        let start = (p * per).min(batch.num_rows());
        let len = per.min(batch.num_rows() - start);
        write_parquet(&dir.join(format!("chunk-{p:03}.parquet")), &batch.slice(start, len));
    }
    // Not data: a marker and a hidden file, as Spark and editors leave them.
    std::fs::write(root.join("_SUCCESS"), b"").unwrap();
    std::fs::write(root.join(".part=0.crc"), b"x").unwrap();
}

#[test]
fn a_directory_or_a_glob_reads_as_the_single_file() {
    let input = fixtures().join("vision").join("images.parquet");
    let table = read_parquet(&input);
    assert!(table.num_rows() >= 6, "the fixture has too few rows to split");
    let work = scratch("partitioned");
    let dataset = work.join("dataset");
    split(&table, &dataset, 3);

    let whole = embed(&input, &work.join("out-file"));
    let from_dir = embed(&dataset, &work.join("out-dir"));
    assert_eq!(from_dir, whole, "a directory of parts must embed as the file they were cut from");
    let pattern = dataset.join("part=*").join("*.parquet");
    let from_glob = embed(&pattern, &work.join("out-glob"));
    assert_eq!(from_glob, whole, "a glob over the parts must embed as the file they were cut from");

    // Only the parts that match are read.
    let some = dataset.join("part={0,2}").join("*.parquet");
    let partial = embed(&some, &work.join("out-some"));
    let per = table.num_rows().div_ceil(3);
    assert_eq!(partial.num_rows(), table.num_rows() - per);
}

#[test]
fn parts_with_other_columns_are_refused_naming_both_files() {
    let table = read_parquet(&fixtures().join("vision").join("images.parquet"));
    let work = scratch("partitioned-mismatch");
    let dataset = work.join("dataset");
    split(&table, &dataset, 2);
    let renamed = table.project(&(0..table.num_columns() - 1).collect::<Vec<_>>()).unwrap();
    let odd = dataset.join("part=1").join("chunk-001.parquet");
    write_parquet(&odd, &renamed.slice(0, 2));
    let out = work.join("out");
    let output = run_resnet18(&dataset, &out, &[]);
    let err = stderr(&output);
    assert!(!output.status.success(), "mismatched parts were accepted:\n{err}");
    assert!(err.contains("--df") && err.contains("chunk-000.parquet") && err.contains("chunk-001.parquet"), "{err}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "a refused run left output behind");

    let missing = dataset.join("nothing-*.parquet");
    let output = deepembed(&["embed", "vision", "--df", missing.to_str().unwrap(), "--model_version", "resnet18"]);
    let err = stderr(&output);
    assert!(!output.status.success() && err.contains("no files match"), "{err}");
}

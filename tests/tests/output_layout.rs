//! DeepTune's output layout, and that downstream readers (pandas, polars) read our Parquet.

use deepembed_tests::*;

fn run_once(out: &std::path::Path) -> std::path::PathBuf {
    let dir = fixtures().join("vision");
    embed_ok(
        &[
            "vision",
            "--df",
            dir.join("images.parquet").to_str().unwrap(),
            "--model_version",
            "resnet18",
            "--out",
            out.to_str().unwrap(),
            "--grouper",
            "site",
        ],
        &[("TORCH_HOME", dir.join("torch_home").to_str().unwrap())],
    )
}

#[test]
fn layout_json_files_and_no_overwrite_within_a_minute() {
    let out = scratch("layout");
    let first = run_once(&out);
    let second = run_once(&out);
    assert_ne!(first, second, "a second run must not reuse the first run's directory");
    for dir in [&first, &second] {
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("embed_output_PRETRAINED-resnet18_"), "{name}");
        let mut files: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(
            files,
            ["PRETRAINED-resnet18_cls_embeddings.parquet", "cli_arguments.json", "embedding_details.json"]
        );
    }
    // The second directory carries a suffix when both ran in the same minute.
    let (a, b) = (first.file_name().unwrap().to_str().unwrap(), second.file_name().unwrap().to_str().unwrap());
    if a.len() == b.len() - 2 {
        assert!(b.starts_with(a) && b.ends_with("_2"), "{a} {b}");
    }

    let details: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("embedding_details.json")).unwrap()).unwrap();
    assert_eq!(details["epochs"], 1);
    assert!(details["total_duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(details["rows"], 22);
    assert_eq!(details["dims"], 512);
    assert_eq!(details["device"], "cpu");
    assert_eq!(details["plugin"], "vision");
    assert!(details["plugin_version"].is_string());
    assert!(details["rows_per_second"].as_f64().unwrap() > 0.0);

    let args: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("cli_arguments.json")).unwrap()).unwrap();
    let df = args["df"].as_str().unwrap();
    assert!(std::path::Path::new(df).is_absolute(), "paths are recorded absolute: {df}");
    assert!(std::path::Path::new(args["out"].as_str().unwrap()).is_absolute());
    assert_eq!(args["model_version"], "resnet18");
    assert_eq!(args["batch_size"], 32);
    assert_eq!(args["grouper"], "site");
    assert!(args.as_object().unwrap().contains_key("embed_size"), "every argument is recorded, unset ones as null");
}

#[test]
fn pandas_and_polars_read_the_output() {
    let out = scratch("readers");
    let dir = run_once(&out);
    let file = output_parquet(&dir);
    let script = r#"
import sys, pandas as pd, polars as pl
f = sys.argv[1]
a = pd.read_parquet(f)
b = pl.read_parquet(f)
assert a.shape == (22, 516), a.shape
assert b.shape == (22, 516), b.shape
assert list(a.columns[:2]) == ["0", "1"] and a.columns[512] == "label"
assert str(a["0"].dtype) == "float32"
assert (a["511"].to_numpy() == b["511"].to_numpy()).all()
print("ok")
"#;
    let output = std::process::Command::new(python()).args(["-c", script, file.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// df-analyze, the downstream tool DeepTune feeds, runs a classification on our output.
#[test]
fn df_analyze_reads_the_output() {
    let dir = fixtures().join("vision");
    let out = scratch("df-analyze");
    // A fine-tuned model with a 64-wide embedding layer keeps df-analyze's tuning short.
    let checkpoint = dir.join("finetuned/finetuned-resnet18-a2-cls/model_weights.pth");
    let run_dir = embed_ok(
        &[
            "vision",
            "--df",
            dir.join("images_120.parquet").to_str().unwrap(),
            "--model_version",
            "resnet18",
            "--use_case",
            "finetuned",
            "--model_weights",
            checkpoint.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let file = output_parquet(&run_dir);
    let df_analyze = python().parent().unwrap().join("df-analyze");
    let report = out.join("df-analyze");
    let output = std::process::Command::new(&df_analyze)
        .args([
            "--df",
            file.to_str().unwrap(),
            "--target",
            "label",
            "--mode",
            "classify",
            "--classifiers",
            "lr",
            "dummy",
        ])
        .args([
            "--feat-select",
            "none",
            "--embed-select",
            "none",
            "--htune-trials",
            "5",
            "--outdir",
            report.to_str().unwrap(),
        ])
        .env("MPLBACKEND", "Agg")
        .output()
        .expect("running df-analyze");
    assert!(
        output.status.success(),
        "df-analyze failed on our Parquet:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let produced: Vec<_> = walk(&report);
    assert!(
        produced.iter().any(|p| p.to_string_lossy().contains("final_performances")),
        "no df-analyze results in {}: {produced:?}",
        report.display()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The images fixture with its `labels` replaced: full in the first batch of 4, null in row 4.
fn images_with_a_late_null_label(dir: &std::path::Path) -> std::path::PathBuf {
    use arrow::array::{Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    let images = read_parquet(&fixtures().join("vision").join("images.parquet"));
    let labels: Int64Array = (0..images.num_rows() as i64).map(|i| (i != 4).then_some(i % 3)).collect();
    let mut fields: Vec<Field> = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in images.schema().fields().iter().zip(images.columns()) {
        if field.name() == "labels" {
            continue;
        }
        fields.push(field.as_ref().clone());
        columns.push(column.clone());
    }
    fields.push(Field::new("labels", DataType::Int64, true));
    columns.push(std::sync::Arc::new(labels) as std::sync::Arc<dyn Array>);
    let batch = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).unwrap();
    let path = dir.join("late-null-label.parquet");
    write_parquet(&path, &batch);
    path
}

/// The output schema is fixed from the input's before the first row: a null label in the
/// second batch, after a first batch without nulls, is written and read back as null.
#[test]
fn a_null_label_after_a_full_first_batch_is_written_and_read_back() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    let work = scratch("late-null-label");
    let df = images_with_a_late_null_label(&work);
    let dir = fixtures().join("vision");
    let run_dir = embed_ok(
        &[
            "vision",
            "--df",
            df.to_str().unwrap(),
            "--model_version",
            "resnet18",
            "--batch_size",
            "4",
            "--out",
            work.join("out").to_str().unwrap(),
        ],
        &[("TORCH_HOME", dir.join("torch_home").to_str().unwrap())],
    );
    let out = read_parquet(&output_parquet(&run_dir));
    let label = out.column_by_name("label").unwrap().as_primitive::<Int64Type>();
    assert_eq!(label.len(), 22);
    assert!(label.is_null(4), "row 4's label is null");
    assert_eq!(label.null_count(), 1);
    assert_eq!((label.value(3), label.value(5)), (0, 2));
}

/// SIGTERM (what Slurm sends) or SIGINT mid-run leaves no run directory and no .partial file.
#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    let work = scratch("interrupted");
    // Enough rows that the run is still embedding when the signal comes.
    let images = read_parquet(&fixtures().join("vision").join("images.parquet"));
    let many: Vec<_> = (0..40).map(|_| images.clone()).collect();
    let big = work.join("many.parquet");
    write_parquet(&big, &arrow::compute::concat_batches(&images.schema(), &many).unwrap());
    let dir = fixtures().join("vision");
    let out = work.join("out");
    for signal in ["TERM", "INT"] {
        let child = std::process::Command::new(binary())
            .args(["embed", "vision", "--df", big.to_str().unwrap(), "--model_version", "resnet18"])
            .args(["--batch_size", "4", "--device", "cpu", "--quiet", "--out", out.to_str().unwrap()])
            .env("TORCH_HOME", dir.join("torch_home"))
            .env_remove("LD_LIBRARY_PATH")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the run directory exists, then interrupt.
        let started = std::time::Instant::now();
        while std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0) == 0 {
            assert!(started.elapsed().as_secs() < 120, "the run never created its directory");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let killed =
            std::process::Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let output = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        // The pipeline stops at the next window, so nothing runs beneath libtorch's exit.
        assert_eq!(output.status.code(), Some(130), "SIG{signal}: {err}");
        assert!(err.contains("interrupted") && !err.contains("panicked"), "SIG{signal}: {err}");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "SIG{signal} left {left:?} behind");
    }
}

/// At DEEPEMBED_LOG=debug the log is the run's timeline: every line starts with the seconds since
/// the command started, never going back, through the milestones the benchmarks read.
#[test]
fn a_debug_log_is_a_timeline_of_the_run() {
    let out = scratch("timeline");
    let df = fixtures().join("vision").join("images.parquet");
    let run = run_resnet18(&df, &out, &[("DEEPEMBED_LOG", "debug")]);
    let log = stderr(&run);
    assert!(run.status.success(), "{log}");
    let mut last = 0.0f64;
    const MILESTONES: [&str; 6] = [
        "plugin(s) loaded",
        "rows from",
        "pipeline: starting",
        "first window prepared",
        "first chunk read back",
        "exiting",
    ];
    let mut seen = Vec::new();
    for line in log.lines() {
        let (seconds, rest) = line.trim_start().split_once(" s [").unwrap_or_else(|| panic!("no time on: {line}"));
        let seconds: f64 = seconds.parse().unwrap_or_else(|_| panic!("not seconds: {line}"));
        assert!(seconds >= last, "time goes back at: {line}");
        last = seconds;
        for milestone in MILESTONES {
            if rest.contains(milestone) {
                seen.push(milestone);
            }
        }
    }
    assert_eq!(seen, MILESTONES, "{log}");

    // At the default level, no times.
    let plain = run_resnet18(&df, &out, &[]);
    assert!(plain.status.success());
    assert!(stderr(&plain).lines().all(|l| l.starts_with('[') || l.starts_with("warning")), "{}", stderr(&plain));
}

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

//! The tabpfn plugin against tabpfn 6.2 itself (tests/python/gen_tabpfn.py): tiny random TabPFN
//! checkpoints made with tabpfn's own classes, fitted, saved and embedded exactly as DeepTune
//! does (`save_fitted_tabpfn_model`, `load_fitted_tabpfn_model`,
//! `TabPFNEmbedding(n_fold=0).get_embeddings(..., data_source="test")[0]`), for classification
//! and regression, the default v2.5 inference config (8 members, fingerprint, shuffles, SVD) and
//! a minimal one, `.tabpfn_fit` files, bare checkpoints and `--finetuning-mode` joblib files.
//!
//! Step by step: member 0's float64 training matrix must be bit-identical to tabpfn's
//! (`executor_.X_trains[0]`) except the SVD columns, which no port can make bit-exact (ARPACK;
//! docs/TABPFN.md), within 1e-12; the evaluation matrix likewise; the targets exactly. End to
//! end: the embeddings within 1e-4 of tabpfn's (the tolerance; measured about 1e-6: the
//! same libtorch kernels on the same float32 inputs, summed in other orders).

use std::path::{Path, PathBuf};

use deepembed_tabpfn::preprocess;
use deepembed_tabpfn::rng::Generator;
use deepembed_tabpfn::saved::SavedTabPfn;
use deepembed_tabpfn::table::{feature_columns, table_of, targets};
use deepembed_tests::*;

fn case_dir(name: &str) -> PathBuf {
    fixtures().join("tabpfn").join(name)
}

fn cases() -> Vec<String> {
    let cases = fixture_cases("tabpfn");
    cases.as_object().unwrap().keys().cloned().collect()
}

fn args(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(case_dir(name).join("args.json")).unwrap()).unwrap()
}

fn info(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(case_dir(name).join("info.json")).unwrap()).unwrap()
}

fn read_f64(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// The deepembed command line of a case, from its args.json (paths relative to its folder).
fn command(name: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let args = args(name);
    let mut cmd = vec!["tabpfn".to_string()];
    for (key, value) in args.as_object().unwrap() {
        if extra.contains(&format!("--{key}").as_str()) {
            continue;
        }
        match value {
            serde_json::Value::Bool(true) => cmd.push(format!("--{key}")),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::String(v) if ["train_df", "eval_df", "model_weights"].contains(&key.as_str()) => {
                cmd.extend([format!("--{key}"), case_dir(name).join(v).display().to_string()]);
            }
            other => cmd.extend([format!("--{key}"), other.as_str().map_or(other.to_string(), str::to_string)]),
        }
    }
    cmd.extend(["--out".to_string(), out.display().to_string()]);
    cmd.extend(extra.iter().map(|s| s.to_string()));
    cmd
}

/// The environment a case runs in: tabpfn's own copy of its column-embedding table, for the
/// models that read it.
fn case_env(name: &str) -> Vec<(&'static str, String)> {
    match info(name)["column_table"].as_str() {
        Some(path) => vec![("DEEPEMBED_TABPFN_COL_EMBEDDING", path.to_string())],
        None => Vec::new(),
    }
}

fn run(name: &str, out: &Path, extra: &[&str]) -> (PathBuf, arrow::array::RecordBatch) {
    let cmd = command(name, out, extra);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let env = case_env(name);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = embed_ok(&cmd, &env);
    let file = output_parquet(&dir);
    (file.clone(), read_parquet(&file))
}

/// Member 0's matrices and targets, computed by our preprocessing from the case's tables and
/// model, against tabpfn's; then the embeddings end to end.
///
/// The fingerprint column hashes each row's float64 bytes, SVD columns included, so an SVD
/// column a few ulps off ARPACK's flips some rows' fingerprints (docs/TABPFN.md measures how
/// often): those rows may differ in that one column, and the embeddings of a case with a flipped
/// training row only within 1e-2 (each flipped context row moves every embedding slightly).
#[test]
fn member0_and_embeddings_match_tabpfn() {
    for name in cases() {
        let flips = check_preprocessing(&name);
        let out = scratch(&format!("tabpfn-{name}"));
        let (file, ours) = run(&name, &out, &["--batch_size", "7"]);
        let expected = read_parquet(&case_dir(&name).join("expected.parquet"));
        let dims = expected.num_columns();
        // DeepTune's layout: the directory says TRAINED or FINETUNED, the file only the mode.
        let kind = if args(&name)["finetuning_mode"].as_bool().unwrap_or(false) { "FINETUNED" } else { "TRAINED" };
        let mode = args(&name)["mode"].as_str().unwrap().to_string();
        assert_eq!(file.file_name().unwrap().to_str().unwrap(), format!("TABPFN_{mode}_embeddings.parquet"));
        let dir_name = file.parent().unwrap().file_name().unwrap().to_str().unwrap().to_string();
        assert!(dir_name.starts_with(&format!("embed_output_{kind}_TABPFN_embeddings_")), "{dir_name}");
        let details: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file.parent().unwrap().join("embedding_details.json")).unwrap())
                .unwrap();
        assert_eq!(details["epochs"], "We only track total time for embedding", "{name}");
        let names: Vec<String> = ours.schema().fields().iter().map(|f| f.name().clone()).collect();
        let mut want: Vec<String> = (0..dims).map(|d| d.to_string()).collect();
        want.extend(["label".to_string(), "patient_id".to_string()]);
        assert_eq!(names, want, "{name}: columns");
        let eval = read_parquet(&case_dir(&name).join("eval.parquet"));
        assert_eq!(
            ours.column_by_name("patient_id").unwrap().as_ref(),
            eval.column_by_name("patient_id").unwrap().as_ref(),
            "{name}: grouper"
        );
        let (worst, at) = max_abs_diff(&embedding_matrix(&ours, dims), &embedding_matrix(&expected, dims));
        let tolerance = if flips.train == 0 { 1e-4 } else { 1e-2 };
        eprintln!(
            "{name}: max abs diff {worst:e} ({} training, {} evaluation fingerprints flipped)",
            flips.train, flips.eval
        );
        assert!(worst <= tolerance, "{name}: max abs diff {worst} at row {} (tolerance {tolerance})", at / dims);
    }
}

/// Rows whose fingerprint differs from tabpfn's (through the SVD columns).
struct Flips {
    train: usize,
    eval: usize,
}

fn check_preprocessing(name: &str) -> Flips {
    let args = args(name);
    let info = info(name);
    let finetuning = args["finetuning_mode"].as_bool().unwrap_or(false);
    let saved = SavedTabPfn::load(&case_dir(name).join(args["model_weights"].as_str().unwrap()), finetuning)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let train = read_parquet(&case_dir(name).join("train.parquet"));
    let eval = read_parquet(&case_dir(name).join("eval.parquet"));
    let target = args["target_column"].as_str().unwrap();
    let features = feature_columns(&train.schema(), target, args["grouper"].as_str()).unwrap();
    let classification = args["mode"] == "cls";
    let y = targets(train.column_by_name(target).unwrap(), target, classification).unwrap();
    let classes = preprocess::classes(&y, 10).unwrap();
    let member = deepembed_tabpfn::member::member0(&saved, classification.then_some(classes.len())).unwrap();
    // (The column-embedding table only enters the forward, not the preprocessing checked here.)
    assert_eq!(member.seed, info["s0"].as_u64().unwrap(), "{name}: member 0's seed");
    let (fitted, prepared) =
        preprocess::fit(&table_of(&train, &features, "train").unwrap(), &y, &member, Generator::new)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert_eq!(prepared.y_train, read_f64(&case_dir(name).join("y_train.f64")), "{name}: targets");
    let ours_eval = fitted.transform(&table_of(&eval, &features, "eval").unwrap()).unwrap();
    let m = prepared.m;
    // Where the fingerprint (the last column before the shuffle) ended up.
    let fingerprint = info["salt"].as_u64().map(|_| {
        let permutation: Vec<u64> =
            info["feature_permutation"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        permutation.iter().position(|&c| c as usize == m - 1).unwrap_or(m - 1)
    });
    let mut flips = Flips { train: 0, eval: 0 };
    for (what, ours, file) in [("train", &prepared.x_train, "x_train.f64"), ("eval", &ours_eval, "x_eval.f64")] {
        let theirs = read_f64(&case_dir(name).join(file));
        assert_eq!(ours.len(), theirs.len(), "{name}: {what} matrix size");
        let mut flipped = 0;
        for (r, (a_row, b_row)) in ours.chunks(m).zip(theirs.chunks(m)).enumerate() {
            for (c, (a, b)) in a_row.iter().zip(b_row).enumerate() {
                let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12;
                if !same && Some(c) == fingerprint {
                    flipped += 1;
                } else {
                    assert!(same, "{name}: {what} row {r} column {c}: ours {a:e}, tabpfn {b:e}");
                }
            }
        }
        // ARPACK against LAPACK flips a few percent of rows at most (docs/TABPFN.md).
        let rows = ours.len() / m;
        assert!(flipped * 100 <= rows * 3, "{name}: {flipped} of {rows} {what} fingerprints differ");
        if what == "train" {
            flips.train = flipped;
        } else {
            flips.eval = flipped;
        }
    }
    flips
}

/// Batching the evaluation rows changes nothing, even where a column is constant in the
/// training rows and varies only among evaluation rows (cls_medium_minimal's `flag`): the first
/// pass over the evaluation table fixes the column tests every row takes part in.
#[test]
fn batch_size_changes_nothing() {
    let name = "cls_medium_minimal";
    let expected = read_parquet(&case_dir(name).join("expected.parquet"));
    let dims = expected.num_columns();
    for batch in ["1", "64", "1000"] {
        let out = scratch(&format!("tabpfn-batch-{batch}"));
        let (_, ours) = run(name, &out, &["--batch_size", batch]);
        let (worst, _) = max_abs_diff(&embedding_matrix(&ours, dims), &embedding_matrix(&expected, dims));
        assert!(worst <= 1e-4, "batch {batch}: {worst}");
    }
}

/// A bare checkpoint is read with tabpfn's default estimator settings (8 members, seed 0).
#[test]
fn a_bare_checkpoint_uses_tabpfn_defaults() {
    let mut checked = 0;
    for name in cases() {
        if info(&name)["bare_checkpoint_equivalent"].as_bool() != Some(true) {
            continue;
        }
        let out = scratch(&format!("tabpfn-bare-{name}"));
        let ckpt = case_dir(&name).join("model.ckpt");
        let (_, ours) = run(&name, &out, &["--model_weights", ckpt.to_str().unwrap()]);
        let expected = read_parquet(&case_dir(&name).join("expected.parquet"));
        let dims = expected.num_columns();
        let (worst, _) = max_abs_diff(&embedding_matrix(&ours, dims), &embedding_matrix(&expected, dims));
        // As in member0_and_embeddings_match_tabpfn: looser where the SVD flipped a fingerprint.
        let tolerance = if check_preprocessing(&name).train == 0 { 1e-4 } else { 1e-2 };
        assert!(worst <= tolerance, "{name}: {worst}");
        checked += 1;
    }
    assert!(checked > 0, "no case is marked bare_checkpoint_equivalent");
}

#[test]
fn mode_and_columns_are_checked() {
    let out = scratch("tabpfn-errors");
    let cmd = |extra: &[&str]| {
        let mut c = vec!["embed".to_string()];
        c.extend(command("cls_default", &out, extra));
        c
    };
    let wrong_mode = cmd(&["--mode", "reg"]);
    let output = deepembed(&wrong_mode.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!output.status.success() && stderr(&output).contains("--mode reg"), "{}", stderr(&output));
    let wrong_target = cmd(&["--target_column", "nothing"]);
    let output = deepembed(&wrong_target.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!output.status.success() && stderr(&output).contains("nothing"), "{}", stderr(&output));
}

/// A model of the released width and seed needs tabpfn's packaged table; without it the run is
/// refused, naming the file and the variable that points at it.
#[test]
fn the_column_table_is_required_and_named() {
    let name = "cls_released_minimal";
    let out = scratch("tabpfn-no-table");
    let mut cmd = vec!["embed".to_string()];
    cmd.extend(command(name, &out, &[]));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let output = deepembed_env(&cmd, &[("DEEPEMBED_TABPFN_COL_EMBEDDING", "/nonexistent/tabpfn_col_embedding.pt")]);
    let err = stderr(&output);
    assert!(!output.status.success() && err.contains("DEEPEMBED_TABPFN_COL_EMBEDDING"), "{err}");
}

//! The plugin boundary, with plugins built outside the host's workspace against the SDK only
//! (tests/plugins, built by `cargo xtask test`): discovery through --plugin-path and
//! DEEPEMBED_PLUGIN_PATH, runs through an unchanged host, refusal of incompatible plugins, and a
//! panicking plugin turned into a clean error.

use std::path::{Path, PathBuf};

use arrow::array::{AsArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::Float32Type;
use deepembed_tests::*;

/// A fresh plugin directory holding the named third-party plugin libraries.
fn plugin_dir(name: &str, plugins: &[&str]) -> Scratch {
    let built = std::env::var_os("DEEPEMBED_THIRD_PARTY_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| binary().parent().unwrap().to_path_buf());
    let dir = scratch(name);
    for p in plugins {
        let file = format!("libthirdparty_{}.so", p.replace('-', "_"));
        let src = built.join(&file);
        assert!(src.is_file(), "{} missing: `cargo xtask test` builds tests/plugins", src.display());
        std::fs::copy(&src, dir.join(&file)).unwrap();
    }
    dir
}

fn numbers_parquet(dir: &Path) -> PathBuf {
    let path = dir.join("numbers.parquet");
    let values = Float64Array::from(vec![1.5, -2.0, 0.25, 10.0, 3.0]);
    let names = StringArray::from(vec!["a", "b", "c", "d", "e"]);
    let batch = RecordBatch::try_from_iter([
        ("value", std::sync::Arc::new(values) as _),
        ("name", std::sync::Arc::new(names) as _),
    ])
    .unwrap();
    write_parquet(&path, &batch);
    path
}

#[test]
fn the_workspace_does_not_contain_the_third_party_plugins() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml")).unwrap();
    assert!(!manifest.contains("tests/plugins"), "third-party plugins must stay outside the host's workspace");
}

#[test]
fn an_outside_plugin_is_discovered_and_run_by_the_unchanged_host() {
    let plugins = plugin_dir("tp-echo", &["echo"]);
    let work = scratch("tp-echo-run");
    let df = numbers_parquet(&work);
    let out = work.join("out");

    let listing = deepembed(&["plugins", "--json", "--plugin-path", plugins.to_str().unwrap()]);
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let echo = listing["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "echo").expect("echo listed");
    assert_eq!(echo["version"], "0.3.1");
    assert_eq!(echo["sdk_abi_version"], deepembed_sdk::SDK_ABI_VERSION);
    assert!(echo["path"].as_str().unwrap().starts_with(plugins.to_str().unwrap()));

    // Its flag exists without a host rebuild, in both spellings.
    let help = deepembed(&["embed", "echo", "--help", "--plugin-path", plugins.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--column"));

    let args = [
        "embed",
        "echo",
        "--df",
        df.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--column",
        "value",
        "--device",
        "cpu",
        "--batch_size",
        "2",
    ];
    let output = deepembed_env(&args, &[("DEEPEMBED_PLUGIN_PATH", plugins.to_str().unwrap())]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("[echo] echo saw 5 rows"),
        "the plugin's log reaches the host's stderr under its name:\n{}",
        stderr(&output)
    );
    let dirs: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1);
    let batch = read_parquet(&dirs[0].join("ECHO_embeddings.parquet"));
    let x: Vec<f32> = batch.column_by_name("0").unwrap().as_primitive::<Float32Type>().values().to_vec();
    let y: Vec<f32> = batch.column_by_name("1").unwrap().as_primitive::<Float32Type>().values().to_vec();
    assert_eq!(x, [1.5, -2.0, 0.25, 10.0, 3.0]);
    assert_eq!(y, [3.0, -4.0, 0.5, 20.0, 6.0]);
    assert_eq!(batch.column_by_name("name").unwrap().as_string::<i32>().value(4), "e");
}

#[test]
fn incompatible_plugins_are_reported_and_not_loaded() {
    let plugins = plugin_dir("tp-bad", &["echo", "bad-abi", "old-torch"]);
    let listing = deepembed(&["plugins", "--json", "--plugin-path", plugins.to_str().unwrap()]);
    assert!(listing.status.success());
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let names: Vec<&str> = listing["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"echo") && !names.contains(&"badabi") && !names.contains(&"oldtorch"), "{names:?}");
    let reasons: Vec<String> =
        listing["not_loaded"].as_array().unwrap().iter().map(|r| format!("{} {}", r["path"], r["reason"])).collect();
    let bad = reasons.iter().find(|r| r.contains("bad_abi")).expect("bad-abi reported");
    let speaks = format!("version {}", deepembed_sdk::SDK_ABI_VERSION);
    assert!(bad.contains("SDK ABI version 999") && bad.contains(&speaks), "{bad}");
    let old = reasons.iter().find(|r| r.contains("old_torch")).expect("old-torch reported");
    assert!(old.contains("libtorch 1.13.1") && old.contains("2.11"), "{old}");

    // Asking for one names the versions and every directory searched.
    let output = deepembed(&["embed", "badabi", "--df", "x.parquet", "--plugin-path", plugins.to_str().unwrap()]);
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(
        err.contains("unknown plugin 'badabi'")
            && err.contains("SDK ABI version 999")
            && err.contains(plugins.to_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("[user data directory]") && err.contains("[beside the binary]"), "{err}");

    // The text listing says the same.
    let text = deepembed(&["plugins", "--plugin-path", plugins.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("not loaded:") && text.contains("SDK ABI version 999"), "{text}");
}

#[test]
fn a_panicking_plugin_is_a_clean_error() {
    let plugins = plugin_dir("tp-panic", &["panicky"]);
    let work = scratch("tp-panic-run");
    let df = numbers_parquet(&work);
    let out = work.join("out");
    let output = deepembed(&[
        "embed",
        "panicky",
        "--df",
        df.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--plugin-path",
        plugins.to_str().unwrap(),
    ]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "a clean exit, not an abort:\n{err}");
    assert!(err.contains("plugin 'panicky' failed") && err.contains("panicked") && err.contains("boom"), "{err}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "nothing left behind");
}

/// A plugin declares two input tables; the host makes a flag of each, checks and streams both,
/// the evaluation table twice (the plugin declared two passes over it).
#[test]
fn a_plugin_declares_several_input_tables() {
    let plugins = plugin_dir("tp-context", &["context"]);
    let work = scratch("tp-context-run");
    let train = numbers_parquet(&work);
    let eval_dir = work.join("eval");
    std::fs::create_dir_all(&eval_dir).unwrap();
    let eval = numbers_parquet(&eval_dir);
    let out = work.join("out");
    let path = plugins.to_str().unwrap();

    let help = deepembed(&["embed", "context", "--help", "--plugin-path", path]);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("--train_df") && help.contains("--eval_df") && !help.contains("--df "), "{help}");

    let run = |train: &str, extra: &[&str]| {
        let mut args = vec!["embed", "context", "--plugin-path", path, "--train_df", train];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", out.to_str().unwrap(), "--device", "cpu", "--batch_size", "2"]);
        deepembed(&args)
    };
    let output = run(train.to_str().unwrap(), &["--eval_df", eval.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dirs: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    let batch = read_parquet(&dirs[0].join("CONTEXT_embeddings.parquet"));
    let x: Vec<f32> = batch.column_by_name("0").unwrap().as_primitive::<Float32Type>().values().to_vec();
    let mean: Vec<f32> = batch.column_by_name("1").unwrap().as_primitive::<Float32Type>().values().to_vec();
    assert_eq!(x, [1.5, -2.0, 0.25, 10.0, 3.0]);
    assert!(mean.iter().all(|&m| (m - 2.55).abs() < 1e-6), "{mean:?}");
    let eval_max: Vec<f32> = batch.column_by_name("2").unwrap().as_primitive::<Float32Type>().values().to_vec();
    assert_eq!(eval_max, [10.0; 5]);

    let missing = run(train.to_str().unwrap(), &[]);
    assert!(!missing.status.success() && stderr(&missing).contains("--eval_df"), "{}", stderr(&missing));
    let absent = work.join("absent.parquet");
    let absent = run(absent.to_str().unwrap(), &["--eval_df", eval.to_str().unwrap()]);
    let err = stderr(&absent);
    assert!(!absent.status.success() && err.contains("absent.parquet") && err.contains("(--train_df)"), "{err}");
}

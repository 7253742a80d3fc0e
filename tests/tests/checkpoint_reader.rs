//! The SDK's checkpoint reader against what PyTorch and safetensors wrote (tests/python/
//! gen_checkpoints.py): every dtype, views with offsets and strides, shared storages, nested and
//! Lightning-style checkpoints, and pickles that would run code under Python.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use deepembed_sdk::checkpoint::{Checkpoint, StateDict, Value};
use deepembed_tests::fixtures;

fn dir() -> PathBuf {
    fixtures().join("checkpoints")
}

/// Compares a loaded state dict with the generator's expectations: names, dtypes, shapes and
/// every value exactly (each dtype converts to f64 without loss).
fn check_against_expected(file: &Path) {
    let sd = StateDict::load(file).unwrap_or_else(|e| panic!("{}: {e:#}", file.display()));
    let expected_path = PathBuf::from(format!("{}.expected.json", file.display()));
    let expected: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(expected_path).unwrap()).unwrap();
    let names: Vec<&String> = sd.keys().collect();
    let wanted: Vec<&String> = expected.keys().collect();
    assert_eq!(names, wanted, "{}", file.display());
    for (name, want) in &expected {
        let t = sd.tensor(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        // What the state dict says before reading must be what the read gives.
        assert_eq!(sd.shape(name), Some(t.size()), "{name}: shape before reading");
        assert_eq!(sd.kind(name), Some(t.kind()), "{name}: dtype before reading");
        let kind = format!("{:?}", t.kind());
        let dtype = want["dtype"].as_str().unwrap();
        let kind_ok = matches!(
            (dtype, kind.as_str()),
            ("float32", "Float")
                | ("float16", "Half")
                | ("bfloat16", "BFloat16")
                | ("float64", "Double")
                | ("int64", "Int64")
                | ("int32", "Int")
                | ("int16", "Int16")
                | ("int8", "Int8")
                | ("uint8", "Uint8")
                | ("bool", "Bool")
        );
        assert!(kind_ok, "{name}: dtype {dtype} loaded as {kind}");
        let shape: Vec<i64> = want["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(t.size(), shape, "{name}: shape");
        let values: Vec<f64> = want["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let ours = Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap_or_default();
        let ours = if shape.is_empty() { vec![t.to_kind(tch::Kind::Double).double_value(&[])] } else { ours };
        assert_eq!(ours, values, "{name}: values");
    }
}

#[test]
fn every_dtype_loads_exactly() {
    check_against_expected(&dir().join("dtypes.pth"));
}

#[test]
fn archives_saved_under_any_name_length_load() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("names"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pth"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 21, "{files:?}");
    for file in files {
        check_against_expected(&file);
    }
}

#[test]
fn views_offsets_strides_and_shared_storages() {
    check_against_expected(&dir().join("views.pth"));
}

#[test]
fn nested_training_checkpoint_is_flattened() {
    check_against_expected(&dir().join("nested.pth"));
}

#[test]
fn lightning_checkpoint_uses_its_state_dict_and_keeps_other_objects_inert() {
    let file = dir().join("lightning.ckpt");
    check_against_expected(&file);
    let ckpt = Checkpoint::open(&file).unwrap();
    let root = ckpt.root();
    assert_eq!(root.get("epoch"), Some(&Value::Int(1)));
    assert_eq!(root.get("pytorch-lightning_version").and_then(Value::as_str), Some("2.5.0"));
    match root.get("hyper_parameters").and_then(|h| h.get("args")) {
        Some(Value::Object(o)) => {
            assert_eq!((o.module.as_str(), o.name.as_str()), ("argparse", "Namespace"));
            // The Namespace's attributes are data we can read.
            let lr = o.state.as_ref().and_then(|s| s.get("lr")).and_then(Value::as_f64);
            assert_eq!(lr, Some(0.1));
        }
        other => panic!("argparse.Namespace should load as an inert object, got {other:?}"),
    }
    // A parent/child cycle is cut where it closes.
    let tree = root.get("hyper_parameters").and_then(|h| h.get("tree")).expect("tree");
    let Some(Value::Object(tree)) = Some(tree) else { panic!("{tree:?}") };
    let children = tree.state.as_ref().and_then(|s| s.get("children"));
    let Some(Value::List(children)) = children else { panic!("{children:?}") };
    assert_eq!(children.len(), 2);
    assert_eq!(children[0].get("name").and_then(Value::as_str), Some("leaf"));
    assert_eq!(children[0].get("parent"), Some(&Value::Cycle));
    assert!(matches!(root.get("big_int"), Some(Value::BigInt(_))));
    assert!(matches!(root.get("set"), Some(Value::Set(items)) if items.len() == 2));
    assert_eq!(root.get("bytes"), Some(&Value::Bytes(vec![0, 1])));
    assert_eq!(root.get("none"), Some(&Value::None));
}

#[test]
fn safetensors_files_load() {
    check_against_expected(&dir().join("weights.safetensors"));
}

#[test]
fn a_pickle_that_would_run_a_shell_command_runs_nothing() {
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(dir().join("evil.json")).unwrap()).unwrap();
    let marker = PathBuf::from(info["marker"].as_str().unwrap());
    let _ = std::fs::remove_file(&marker);

    // Alone: it loads as an inert description of the call, and holds no weights.
    let ckpt = Checkpoint::open(&dir().join("evil.pth")).expect("the reader treats the call as data");
    match ckpt.root() {
        Value::Object(o) => {
            assert_eq!(o.name, "system");
            assert!(o.module == "posix" || o.module == "os", "{}", o.module);
        }
        other => panic!("expected an inert object, got {other:?}"),
    }
    let err = ckpt.state_dict().err().expect("no tensors in it").to_string();
    assert!(err.contains("holds no tensors"), "{err}");

    // Beside real weights: the weights load, the payload stays inert.
    let sd = StateDict::load(&dir().join("evil_with_weights.pth")).unwrap();
    assert_eq!(sd.keys().collect::<Vec<_>>(), ["weight"]);

    assert!(!marker.exists(), "the shell command ran");
}

#[test]
fn truncated_and_foreign_files_fail_cleanly() {
    let scratch = deepembed_tests::scratch("bad-checkpoints");
    let good = std::fs::read(dir().join("dtypes.pth")).unwrap();
    std::fs::write(scratch.join("truncated.pth"), &good[..good.len() / 2]).unwrap();
    std::fs::write(scratch.join("text.pth"), b"this is not a checkpoint at all").unwrap();
    for name in ["truncated.pth", "text.pth"] {
        let err = StateDict::load(&scratch.join(name)).err().unwrap_or_else(|| panic!("{name} loaded"));
        assert!(format!("{err:#}").contains(name), "error should name the file: {err:#}");
    }
}

/// numpy arrays in plain pickles (protocols 2, 4 and 5) and in a joblib file, against numpy's own
/// values: dtypes, shapes, Fortran order, big-endian data, strings and object arrays, a scalar.
#[test]
fn numpy_arrays_in_pickles_and_joblib_files() {
    let expected: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir().join("numpy.expected.json")).unwrap()).unwrap();
    for file in ["numpy_p2.pkl", "numpy_p4.pkl", "numpy_p5.pkl", "numpy.joblib"] {
        let root =
            deepembed_sdk::checkpoint::read_pickle_file(&dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        for (name, want) in &expected {
            let array = root
                .get(name)
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{file}: {name} is not an array: {:?}", root.get(name)));
            let shape: Vec<usize> =
                want["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert_eq!(array.shape, shape, "{file}: {name} shape");
            if let Some(values) = want.get("values") {
                let values: Vec<f64> = values.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                assert_eq!(array.to_f64().unwrap(), values, "{file}: {name} values");
            } else {
                let strings: Vec<&str> =
                    want["strings"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
                assert_eq!(array.to_strings().unwrap(), strings, "{file}: {name} strings");
            }
        }
    }
}

/// A tensor in a plain pickle (its storage a nested legacy torch.save) loads as an inert object
/// without failing the rest of the file.
#[test]
fn a_plain_pickled_tensor_stays_inert() {
    let root = deepembed_sdk::checkpoint::read_pickle_file(&dir().join("plain_pickle_tensor.pkl")).unwrap();
    assert_eq!(root.get("patience"), Some(&Value::Int(3)));
    assert!(matches!(root.get("best_score"), Some(Value::Object(_))), "{:?}", root.get("best_score"));
}

/// pandas frames (interleaved dtypes, a category mapping, a float index, a MultiIndex, an empty
/// frame) and series, fitted StandardScalers and RobustScalers and quantile and power transforms,
/// against pandas' and scikit-learn's own values, in plain pickles and a joblib file; a
/// categorical column is refused by name.
#[test]
fn pandas_frames_and_sklearn_transforms_in_pickles_and_joblib_files() {
    use deepembed_sdk::checkpoint::pandas::{DataFrame, Series};
    use deepembed_sdk::checkpoint::sklearn::{FeatureTransform, StandardScaler};
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("pandas.expected.json")).unwrap()).unwrap();
    fn json(values: &[Value]) -> Vec<serde_json::Value> {
        values
            .iter()
            .map(|v| match v {
                Value::Int(i) => serde_json::json!(i),
                Value::Float(f) => serde_json::json!(f),
                Value::Str(s) => serde_json::json!(s),
                Value::Bool(b) => serde_json::json!(b),
                Value::None => serde_json::Value::Null,
                Value::Tuple(items) => serde_json::Value::Array(json(items)),
                other => panic!("unexpected value {other:?}"),
            })
            .collect()
    }
    for file in ["pandas_p2.pkl", "pandas_p5.pkl", "pandas.joblib"] {
        let root =
            deepembed_sdk::checkpoint::read_pickle_file(&dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        for (name, want) in expected["frames"].as_object().unwrap() {
            let frame = DataFrame::from_value(root.get("frames").unwrap().get(name).unwrap())
                .unwrap_or_else(|e| panic!("{file}: {name}: {e:#}"));
            assert_eq!(json(&frame.index.values), want["index"].as_array().unwrap().clone(), "{file}: {name} index");
            let labels: Vec<Value> = frame.columns.iter().map(|(l, _)| l.clone()).collect();
            assert_eq!(json(&labels), want["labels"].as_array().unwrap().clone(), "{file}: {name} labels");
            for ((label, values), want) in frame.columns.iter().zip(want["columns"].as_array().unwrap()) {
                assert_eq!(json(values), want.as_array().unwrap().clone(), "{file}: {name} column {label:?}");
            }
        }
        for (name, want) in expected["series"].as_object().unwrap() {
            let series = Series::from_value(root.get("series").unwrap().get(name).unwrap())
                .unwrap_or_else(|e| panic!("{file}: {name}: {e:#}"));
            assert_eq!(json(std::slice::from_ref(&series.name))[0], want["name"], "{file}: {name} name");
            assert_eq!(json(&series.index.values), want["index"].as_array().unwrap().clone(), "{file}: {name} index");
            assert_eq!(json(&series.values), want["values"].as_array().unwrap().clone(), "{file}: {name} values");
        }
        for (name, want) in expected["scalers"].as_object().unwrap() {
            let value = root.get(name).unwrap();
            let scaler = if name.starts_with("robust") {
                StandardScaler::from_robust_scaler(value)
            } else {
                StandardScaler::from_value(value)
            }
            .unwrap_or_else(|e| panic!("{file}: {name}: {e:#}"));
            let probe = want["probe"].as_array().unwrap();
            for (row, out) in probe.iter().zip(want["transformed"].as_array().unwrap()) {
                for (i, (x, y)) in row.as_array().unwrap().iter().zip(out.as_array().unwrap()).enumerate() {
                    assert_eq!(
                        scaler.transform(i, x.as_f64().unwrap()),
                        y.as_f64().unwrap(),
                        "{file}: {name} feature {i}"
                    );
                }
            }
            if let Some(names) = want.get("feature_names") {
                let names: Vec<String> = serde_json::from_value(names.clone()).unwrap();
                assert_eq!(scaler.feature_names.as_ref(), Some(&names), "{file}: {name} feature names");
            }
        }
        for (name, want) in expected["transforms"].as_object().unwrap() {
            let value = root.get("transforms").unwrap().get(name).unwrap();
            let transform = FeatureTransform::from_value(value).unwrap_or_else(|e| panic!("{file}: {name}: {e:#}"));
            let rows = want["probe"].as_array().unwrap().iter().zip(want["transformed"].as_array().unwrap());
            for (row, out) in rows {
                for (i, (x, y)) in row.as_array().unwrap().iter().zip(out.as_array().unwrap()).enumerate() {
                    // null stands for NaN, which JSON cannot hold
                    let x = x.as_f64().unwrap_or(f64::NAN);
                    let got = transform.transform(i, x).unwrap_or_else(|r| panic!("{file}: {name}: {x} {r}"));
                    match y.as_f64() {
                        None => assert!(got.is_nan(), "{file}: {name} feature {i}: {x} gave {got}, not NaN"),
                        // numpy's SIMD log1p/expm1 may differ from libm's in the last bit
                        Some(y) => assert!(
                            (got - y).abs() <= 1e-12 * y.abs().max(1.0),
                            "{file}: {name} feature {i}: {x} gave {got}, scikit-learn {y}"
                        ),
                    }
                }
            }
        }
        let err = DataFrame::from_value(root.get("categorical").unwrap()).unwrap_err();
        assert!(
            format!("{err:#}").contains("Categorical"),
            "{file}: the refusal should name the extension array: {err:#}"
        );
    }
}

//! A plain or joblib pickle file (pytorch-tabular's datamodule.sav), then what deepembed reads
//! from one: numpy arrays, pandas frames and series, a fitted StandardScaler, a fitted quantile or
//! power transform (and its transform of a few values).

#![no_main]
#![forbid(unsafe_code)]

use deepembed_checkpoint::pandas::{DataFrame, Index, Series};
use deepembed_checkpoint::sklearn::{FeatureTransform, StandardScaler};
use deepembed_checkpoint::{read_pickle_bytes, Value};
use libfuzzer_sys::fuzz_target;

/// Every interpretation, on the value and on what it contains (two levels: the datamodule's
/// attributes hold the frames, the scaler and the transform).
fn interpret(value: &Value, depth: usize) {
    let _ = DataFrame::from_value(value).map(|f| f.column("value").map(<[Value]>::len));
    let _ = Series::from_value(value).map(|s| deepembed_checkpoint::pandas::series_lookup(&s).map(|m| m.len()));
    let _ = Index::from_value(value);
    let _ = StandardScaler::from_value(value);
    if let Ok(transform) = FeatureTransform::from_value(value) {
        for i in 0..transform.n_features().min(4) {
            for x in [f64::NAN, -1.0, 0.0, 0.5, 1e300, f64::INFINITY] {
                let _ = transform.transform(i, x);
            }
        }
    }
    if let Some(array) = value.as_array() {
        let _ = array.to_f64();
        let _ = array.to_strings();
        let _ = array.to_values();
    }
    if depth > 0 {
        for (k, v) in value.dict_entries().unwrap_or_default() {
            interpret(k, depth - 1);
            interpret(v, depth - 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = read_pickle_bytes(data) {
        interpret(&value, 2);
    }
});

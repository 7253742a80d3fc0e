//! Plain pickled data as JSON: the checkpoint's `config` and `inference_config` dicts, and the
//! dataclass objects (`ModelConfig`, `InferenceConfig`, `PreprocessorConfig`) a fitted
//! estimator's pickle holds, so that one reader parses them whichever file they came from.

use anyhow::{bail, Result};
use deepembed_sdk::checkpoint::{Object, Value};
use serde_json::{Map, Value as Json};

/// `value` as JSON. A dataclass (an object rebuilt from its class with no arguments and a
/// `__dict__` state) becomes the mapping of its fields; a class or function named as a value
/// (`torch.float32`) becomes its dotted name. `at` names the value in errors.
pub fn to_json(value: &Value, at: &str) -> Result<Json> {
    Ok(match value {
        Value::None => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::BigInt(bytes) => match big_to_u64(bytes) {
            Some(u) => Json::from(u),
            None => bail!("{at} is an integer too large for deepembed"),
        },
        Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None => bail!("{at} is {f}, which deepembed does not read here"),
        },
        Value::Str(s) => Json::from(s.as_str()),
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
            Json::Array(items.iter().enumerate().map(|(i, v)| to_json(v, &format!("{at}.{i}"))).collect::<Result<_>>()?)
        }
        Value::Dict(entries) => mapping(entries, at)?,
        Value::Object(object) => match dataclass_fields(object) {
            Some(entries) => mapping(entries, at)?,
            None => bail!("{at} is a {}.{} object, not plain data", object.module, object.name),
        },
        Value::Global { module, name } => Json::from(format!("{module}.{name}")),
        Value::Array(array) => {
            let values = array.to_values().map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            let items =
                values.iter().enumerate().map(|(i, v)| to_json(v, &format!("{at}.{i}"))).collect::<Result<Vec<_>>>()?;
            match (array.shape.is_empty(), items.len()) {
                (true, 1) => items.into_iter().next().unwrap_or(Json::Null),
                (true, _) => bail!("{at} is a numpy scalar without a value"),
                // Only flat arrays (lists of indices) are expected here.
                (false, _) if array.shape.len() == 1 => Json::Array(items),
                (false, _) => bail!("{at} is a {}-dimensional numpy array, not plain data", array.shape.len()),
            }
        }
        other => bail!("{at} is a {}, not plain data", other.type_name()),
    })
}

/// The fields of a pickled dataclass: `copyreg.__newobj__(cls)` then BUILD with its
/// `__dict__`.
pub fn dataclass_fields(object: &Object) -> Option<&[(Value, Value)]> {
    match &object.state {
        Some(Value::Dict(entries)) if object.args.is_empty() => Some(entries),
        _ => None,
    }
}

fn mapping(entries: &[(Value, Value)], at: &str) -> Result<Json> {
    let mut map = Map::new();
    for (k, v) in entries {
        let key = match k {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => bail!("{at} has a {} key, not a name", other.type_name()),
        };
        let value = to_json(v, &format!("{at}.{key}"))?;
        map.insert(key, value);
    }
    Ok(Json::Object(map))
}

/// A pickled non-negative integer of up to 64 bits (little-endian two's complement).
fn big_to_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.last().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    let significant = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if significant > 8 {
        return None;
    }
    let mut le = [0u8; 8];
    le[..significant].copy_from_slice(&bytes[..significant]);
    Some(u64::from_le_bytes(le))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dataclass(name: &str, fields: Vec<(&str, Value)>) -> Value {
        Value::Object(Box::new(Object {
            module: "m".into(),
            name: name.into(),
            args: vec![],
            state: Some(Value::Dict(fields.into_iter().map(|(k, v)| (Value::Str(k.into()), v)).collect())),
            list_items: vec![],
            dict_items: vec![],
        }))
    }

    #[test]
    fn dataclasses_become_mappings_and_tuples_lists() {
        let pc = dataclass(
            "PreprocessorConfig",
            vec![("name", Value::Str("none".into())), ("append_original", Value::Bool(false))],
        );
        let ic = dataclass(
            "InferenceConfig",
            vec![
                ("PREPROCESS_TRANSFORMS", Value::List(vec![pc])),
                ("REGRESSION_Y_PREPROCESS_TRANSFORMS", Value::Tuple(vec![Value::None, Value::Str("safepower".into())])),
                ("OUTLIER_REMOVAL_STD", Value::Float(12.0)),
                ("precision", Value::Global { module: "torch".into(), name: "float32".into() }),
            ],
        );
        assert_eq!(
            to_json(&ic, "x").unwrap(),
            json!({
                "PREPROCESS_TRANSFORMS": [{"name": "none", "append_original": false}],
                "REGRESSION_Y_PREPROCESS_TRANSFORMS": [null, "safepower"],
                "OUTLIER_REMOVAL_STD": 12.0,
                "precision": "torch.float32",
            })
        );
    }

    #[test]
    fn what_is_not_data_is_named() {
        let call = Value::Object(Box::new(Object {
            module: "os".into(),
            name: "system".into(),
            args: vec![Value::Str("rm".into())],
            state: None,
            list_items: vec![],
            dict_items: vec![],
        }));
        let nested = Value::Dict(vec![(Value::Str("a".into()), Value::List(vec![Value::None, call]))]);
        let err = to_json(&nested, "cfg").unwrap_err().to_string();
        assert!(err.contains("cfg.a.1 is a os.system object"), "{err}");
        assert!(to_json(&Value::Float(f64::NAN), "x").is_err());
    }

    #[test]
    fn big_integers_fit_when_they_are_u64() {
        assert_eq!(big_to_u64(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]), Some(u64::MAX));
        assert_eq!(big_to_u64(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Some(1));
        assert_eq!(big_to_u64(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(big_to_u64(&[0xff]), None);
    }
}

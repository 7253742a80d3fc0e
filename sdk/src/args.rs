//! The arguments of one run as a plugin sees them: a JSON object keyed by snake_case name,
//! holding host flags (`df`, `batch_size`, `on_error`, ...) and the plugin's own.

use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default)]
pub struct Args {
    values: Map<String, Value>,
}

impl Args {
    pub fn from_json(text: &str) -> Result<Args> {
        match serde_json::from_str(text)? {
            Value::Object(values) => Ok(Args { values }),
            _ => bail!("run arguments are not a JSON object"),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).filter(|v| !v.is_null())
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    pub fn require_str(&self, name: &str) -> Result<&str> {
        self.str(name).ok_or_else(|| anyhow!("missing required argument --{name}"))
    }

    /// An integer flag; the host already checked it parses.
    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| anyhow!("--{name}: {n} is not an integer")),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| anyhow!("--{name}: '{s}' is not an integer")),
            Some(other) => bail!("--{name}: {other} is not an integer"),
        }
    }

    pub fn float(&self, name: &str) -> Result<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| anyhow!("--{name}: '{s}' is not a number")),
            Some(other) => bail!("--{name}: {other} is not a number"),
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Bool(true)))
    }

    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        match self.get(name)? {
            Value::Array(items) => Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
            Value::String(s) => Some(vec![s.clone()]),
            _ => None,
        }
    }

    pub fn to_json(&self) -> String {
        Value::Object(self.values.clone()).to_string()
    }

    pub fn insert(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_string(), value);
    }
}

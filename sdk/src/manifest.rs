//! What a plugin declares about itself: the host builds `deepembed plugins` and each plugin's
//! command line from this, so a new plugin gets its flags without a host rebuild.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The name users type: `deepembed embed <name>`.
    pub name: String,
    pub version: String,
    /// "image", "text", "tabular" or "timeseries".
    pub modality: String,
    pub description: String,
    /// Model versions the plugin offers (`--model_version` values, or model kinds).
    pub models: Vec<String>,
    pub args: Vec<ArgSpec>,
}

/// One plugin argument. `name` is the snake_case spelling (DeepTune's); the host also accepts
/// the kebab-case one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArgSpec {
    pub name: String,
    pub kind: ArgKind,
    pub help: String,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub choices: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgKind {
    String,
    Int,
    Float,
    /// A file or directory; the host records it as an absolute path.
    Path,
    /// A flag without a value.
    Bool,
    /// One or more strings (`--categorical_cols a b c`).
    List,
}

impl ArgSpec {
    pub fn new(name: &str, kind: ArgKind, help: &str) -> ArgSpec {
        ArgSpec { name: name.into(), kind, help: help.into(), default: None, required: false, choices: vec![] }
    }
    pub fn default(mut self, value: &str) -> ArgSpec {
        self.default = Some(value.into());
        self
    }
    pub fn required(mut self) -> ArgSpec {
        self.required = true;
        self
    }
    pub fn choices(mut self, choices: &[&str]) -> ArgSpec {
        self.choices = choices.iter().map(|c| c.to_string()).collect();
        self
    }
}

/// What a plugin tells the host before its first batch: where the output goes and what it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputPlan {
    /// DeepTune's MODEL_STR, e.g. `PRETRAINED-resnet18`; names the output directory.
    pub model_str: String,
    /// The Parquet file name, e.g. `PRETRAINED-resnet18_cls_embeddings.parquet`.
    pub file_name: String,
    /// Width of the embedding.
    pub dims: usize,
    /// Extra keys for `embedding_details.json`.
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

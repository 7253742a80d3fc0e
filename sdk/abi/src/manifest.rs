//! What a plugin declares about itself, as JSON: the host builds `deepembed plugins` and each
//! plugin's command line from it, so a new plugin gets its flags without a host rebuild.

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
    /// The plugin's own flags (the host adds its own: `--out`, `--batch_size`, `--device`, ...).
    pub args: Vec<ArgSpec>,
    /// The Parquet tables the plugin reads, each a path flag the host opens, checks and streams.
    /// Most plugins read one, `--df`.
    #[serde(default = "InputSpec::default_inputs")]
    pub inputs: Vec<InputSpec>,
}

/// One input table. The host turns it into a required path flag `--<name>`, checks that the
/// file is readable Parquet before the run, and hands the plugin a stream of its record batches
/// (`batch_size` rows each, in file order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The flag's snake_case name, e.g. `df`, `train_df`.
    pub name: String,
    pub help: String,
    /// Whether this is the table whose rows are embedded: the progress bar counts its rows.
    /// When no input says so, the first one is.
    #[serde(default)]
    pub embedded: bool,
    /// How many times the plugin reads the table from the start: each pass is a stream of its
    /// own (one per `RunContext::take_input` call), so a plugin that must see every row before
    /// it can embed any (statistics over the whole table) reads it twice instead of holding it.
    #[serde(default = "one_pass")]
    pub passes: u32,
    /// Whether each row's embedding depends on that row alone (and the model), so the table can
    /// be cut into row ranges (`--shard I/N`) whose outputs, put together, are the whole run's.
    /// False for a plugin that reads a row's neighbours (a series' history) or statistics over
    /// the whole table.
    ///
    /// It also lets the host commit the output in pieces for `--resume`, so a plugin that
    /// declares it must report rows (`progress`) only once they are emitted or skipped, in input
    /// order, as the SDK's pipeline does: the host commits everything emitted before a report.
    #[serde(default)]
    pub rows_independent: bool,
}

fn one_pass() -> u32 {
    1
}

impl InputSpec {
    pub fn new(name: &str, help: &str) -> InputSpec {
        InputSpec { name: name.into(), help: help.into(), embedded: false, passes: 1, rows_independent: false }
    }

    pub fn embedded(mut self) -> InputSpec {
        self.embedded = true;
        self
    }

    /// Declares that the plugin reads this table `passes` times.
    pub fn passes(mut self, passes: u32) -> InputSpec {
        self.passes = passes.max(1);
        self
    }

    /// Declares that each row is embedded on its own (see [`InputSpec::rows_independent`]).
    pub fn rows_independent(mut self) -> InputSpec {
        self.rows_independent = true;
        self
    }

    /// The single input most plugins read: `--df`.
    pub fn df() -> InputSpec {
        InputSpec::new("df", "Input Parquet file.").embedded()
    }

    pub fn default_inputs() -> Vec<InputSpec> {
        vec![InputSpec::df()]
    }

    /// Of `inputs`, the one whose rows are embedded.
    pub fn embedded_of(inputs: &[InputSpec]) -> Option<&InputSpec> {
        inputs.iter().find(|i| i.embedded).or(inputs.first())
    }
}

/// One plugin flag. `name` is the snake_case spelling (DeepTune's); the host also accepts the
/// kebab-case one.
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
    /// Bounds of an integer flag, checked by the host.
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
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
        ArgSpec {
            name: name.into(),
            kind,
            help: help.into(),
            default: None,
            required: false,
            choices: vec![],
            min: None,
            max: None,
        }
    }
    /// A default value; a flag with one is never required.
    pub fn default(mut self, value: &str) -> ArgSpec {
        self.default = Some(value.into());
        self.required = false;
        self
    }
    pub fn min(mut self, min: i64) -> ArgSpec {
        self.min = Some(min);
        self
    }
    pub fn max(mut self, max: i64) -> ArgSpec {
        self.max = Some(max);
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

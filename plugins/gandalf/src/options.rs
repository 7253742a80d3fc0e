//! The gandalf plugin's arguments, as declared to the host and as read back for a run.

use std::path::PathBuf;

use anyhow::Result;
use deepembed_sdk::{ArgKind, ArgSpec, Args};

#[derive(Debug, Clone)]
pub struct GandalfOptions {
    pub model_weights: PathBuf,
    /// The column written out as `label`; the saved config's target when not given.
    pub target_column: Option<String>,
    /// When given, must agree with the saved config.
    pub categorical_cols: Option<Vec<String>>,
    pub continuous_cols: Option<Vec<String>>,
    pub grouper: Option<String>,
}

pub fn arg_specs() -> Vec<ArgSpec> {
    vec![
        ArgSpec::new("model_weights", ArgKind::Path, "The directory TabularModel.save_model wrote (config.yml, model.ckpt, datamodule.sav), or its parent holding GANDALF_model/ as DeepTune expects.").required(),
        ArgSpec::new("tabular_target_column", ArgKind::String, "The target column, written out as `label` when the input has it (default: the saved config's target)."),
        ArgSpec::new("categorical_cols", ArgKind::List, "Categorical columns; they come from the saved config, and when given must agree with it."),
        ArgSpec::new("continuous_cols", ArgKind::List, "Continuous columns; they come from the saved config, and when given must agree with it."),
        ArgSpec::new("grouper", ArgKind::String, "A column to carry into the output (it must exist)."),
    ]
}

impl GandalfOptions {
    pub fn from_args(args: &Args) -> Result<GandalfOptions> {
        Ok(GandalfOptions {
            model_weights: PathBuf::from(args.require_str("model_weights")?),
            target_column: args.str("tabular_target_column").map(str::to_string),
            categorical_cols: args.list("categorical_cols"),
            continuous_cols: args.list("continuous_cols"),
            grouper: args.str("grouper").map(str::to_string),
        })
    }
}

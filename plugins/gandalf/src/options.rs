//! The gandalf plugin's flags, declared once: read back for a run and listed for the host.

use std::path::PathBuf;

use deepembed_sdk::options;

options! {
    pub struct GandalfOptions {
        /// The directory TabularModel.save_model wrote (config.yml, model.ckpt, datamodule.sav),
        /// or its parent holding GANDALF_model/ as DeepTune expects.
        pub model_weights: PathBuf,
        /// The target column, written out as `label` when the input has it (default: the saved
        /// config's target).
        pub tabular_target_column: Option<String>,
        /// Categorical columns; they come from the saved config, and when given must agree with it.
        pub categorical_cols: Option<Vec<String>>,
        /// Continuous columns; they come from the saved config, and when given must agree with it.
        pub continuous_cols: Option<Vec<String>>,
        /// A column to carry into the output (it must exist).
        pub grouper: Option<String>,
    }
}

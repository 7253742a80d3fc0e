//! The deepar plugin's flags, DeepTune's `_add_timeseries_args` spelled the same way, declared
//! once: read back for a run and listed for the host.

use std::path::PathBuf;

use deepembed_sdk::options;

options! {
    pub struct DeepArOptions {
        /// The pytorch-forecasting DeepAR checkpoint: a Lightning `.ckpt` file, or a directory
        /// whose first `*.ckpt` (by name) is taken, as DeepTune does.
        pub model_weights: PathBuf,
        /// The timestamp column (a Parquet timestamp or date, or text pandas.to_datetime reads):
        /// rows are placed on an hourly index, whole hours since the input's earliest timestamp.
        /// Or an integer column: pytorch-forecasting's own time index, taken as it is.
        #[arg(default = "labels")]
        pub time_idx_column: String,
        /// The target column (default: the checkpoint's target; one of them, for a model of
        /// several, which all go to the output).
        pub target_column: Option<String>,
        /// The columns that tell series apart (default: the checkpoint's; DeepTune's constant
        /// `group` column when the input has none).
        pub group_ids: Option<Vec<String>>,
        /// Rows of history each embedding sees (default: the checkpoint's max_encoder_length).
        #[arg(min = 1)]
        pub max_encoder_length: Option<i64>,
        /// Accepted for DeepTune's command lines: each row's embedding is its one-step-ahead
        /// state whatever this is (checked against the checkpoint when given).
        #[arg(min = 1)]
        pub max_prediction_length: Option<i64>,
        /// Checked against the checkpoint's list (the model's inputs come from the checkpoint).
        pub static_categoricals: Option<Vec<String>>,
        /// Checked against the checkpoint's list.
        pub static_reals: Option<Vec<String>>,
        /// Checked against the checkpoint's list.
        pub time_varying_known_categoricals: Option<Vec<String>>,
        /// Checked against the checkpoint's list.
        pub time_varying_unknown_categoricals: Option<Vec<String>>,
        /// Checked against the checkpoint's list.
        pub time_varying_known_reals: Option<Vec<String>>,
        /// Checked against the checkpoint's list (without the target, which DeepTune adds).
        pub time_varying_unknown_reals: Option<Vec<String>>,
        /// Memory for sorting input whose rows are not in time order within each series, in
        /// MiB; beyond it the sort spills to disk.
        #[arg(default = "512", min = 1)]
        pub sort_memory_mb: i64,
    }
}

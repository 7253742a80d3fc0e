//! The tabpfn plugin's flags, DeepTune's `_add_tabpfn_embed_args` spelled the same way, declared
//! once: read back for a run and listed for the host. `--train_df` and `--eval_df` are the
//! plugin's declared inputs (see `lib.rs`).

use std::path::PathBuf;

use deepembed_sdk::{choice, options};

choice! {
    /// DeepTune's `--mode`: a TabPFNClassifier or a TabPFNRegressor.
    pub enum Mode {
        Cls = "cls",
        Reg = "reg",
    }
}

options! {
    pub struct TabPfnOptions {
        /// The target column. Training rows need it; in the evaluation table it is optional and
        /// written out as `label`.
        pub target_column: String,
        /// cls (TabPFNClassifier) or reg (TabPFNRegressor); must match the model.
        pub mode: Mode,
        /// The fitted model: a `.tabpfn_fit` file (save_fitted_tabpfn_model; the checkpoint it
        /// names is read), a TabPFN checkpoint (`.ckpt`, tabpfn's default settings), or with
        /// --finetuning-mode the joblib file of DeepTune's fine-tuned estimator.
        pub model_weights: PathBuf,
        /// A column to carry into the output. It is not a feature (DeepTune feeds it to the
        /// model; deepembed does not).
        pub grouper: Option<String>,
        /// --model_weights is DeepTune's fine-tuned estimator (a joblib file), read as data.
        pub finetuning_mode: bool,
    }
}

//! The mbert plugin's flags, declared once: read back for a run and listed for the host.

use std::path::PathBuf;

use deepembed_sdk::options;
use deepembed_sdk::options::{HeadOptions, TextInput, UseCase};

options! {
    pub struct MbertOptions {
        /// pretrained: a Hugging Face BERT directory; finetuned/peft: DeepTune's fine-tuned BERT
        /// directory.
        #[arg(default = "pretrained")]
        pub use_case: UseCase,
        /// pretrained: a Hugging Face BERT model directory (config.json, model.safetensors or
        /// pytorch_model.bin, tokenizer files); finetuned/peft: DeepTune's output directory
        /// (model_config.json, bert_model/, tokenizer/, model_weights.pth).
        pub model_weights: PathBuf,
        #[serde(flatten)]
        pub head: HeadOptions,
        /// peft: LoRA alpha (default: bert_model/adapter_config.json, else DeepTune's 32).
        pub lora_alpha: Option<f64>,
        /// A BERT config.json, for directories that lack one (DeepTune's peft bert_model/ holds
        /// only the adapter).
        pub bert_config: Option<PathBuf>,
        #[serde(flatten)]
        pub text: TextInput,
    }
}

impl MbertOptions {
    /// DeepTune's MODEL_STR.
    pub fn model_str(&self) -> String {
        format!("{}_BERT", self.use_case.upper())
    }
}

//! The gpt2 plugin's flags, declared once: read back for a run and listed for the host.

use std::path::PathBuf;

use anyhow::{bail, Result};
use deepembed_sdk::options;
use deepembed_sdk::options::{TextInput, UseCase};

options! {
    pub struct Gpt2Options {
        /// pretrained: a Hugging Face GPT-2 directory (mean of the last hidden state over real
        /// tokens); finetuned: DeepTune's fine-tuned GPT-2 directory (its convolutional head).
        /// peft is refused: DeepTune has no PEFT for GPT-2.
        #[arg(default = "pretrained")]
        pub use_case: UseCase,
        /// pretrained: a Hugging Face GPT-2 directory (config.json, model.safetensors or
        /// pytorch_model.bin, tokenizer files); finetuned: DeepTune's output directory
        /// (model_config.json, gpt2_model/, tokenizer/, model_weights.pth).
        pub model_weights: PathBuf,
        #[serde(flatten)]
        pub text: TextInput,
    }
}

impl Gpt2Options {
    /// Refuses what DeepTune cannot produce, saying why.
    pub fn check(&self) -> Result<()> {
        if self.use_case == UseCase::Peft {
            bail!("--use_case peft: PEFT is not supported for GPT-2 (DeepTune cannot fine-tune GPT-2 with PEFT, so no such checkpoint exists); use pretrained or finetuned");
        }
        Ok(())
    }

    /// DeepTune's MODEL_STR.
    pub fn model_str(&self) -> &'static str {
        match self.use_case {
            UseCase::Finetuned => "FINETUNED_GPT2",
            _ => "pretrained_GPT2",
        }
    }
}

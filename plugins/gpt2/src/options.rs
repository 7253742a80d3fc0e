//! The gpt2 plugin's arguments, as declared to the host and as read back for a run.

use std::path::PathBuf;

use anyhow::{bail, Result};
use deepembed_sdk::{ArgKind, ArgSpec, Args};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseCase {
    Pretrained,
    Finetuned,
}

#[derive(Debug, Clone)]
pub struct TextOptions {
    pub use_case: UseCase,
    pub model_weights: PathBuf,
    pub text_column: String,
    pub label_column: String,
    pub max_length: usize,
    pub pad_to_longest: bool,
}

pub fn arg_specs() -> Vec<ArgSpec> {
    vec![
        ArgSpec::new("use_case", ArgKind::String, "pretrained: a Hugging Face GPT-2 directory (mean of the last hidden state over real tokens); finetuned: DeepTune's fine-tuned GPT-2 directory (its convolutional head). peft is refused: DeepTune has no PEFT for GPT-2.")
            .default("pretrained")
            .choices(&["pretrained", "finetuned", "peft"]),
        ArgSpec::new("model_weights", ArgKind::Path, "pretrained: a Hugging Face GPT-2 directory (config.json, model.safetensors or pytorch_model.bin, tokenizer files); finetuned: DeepTune's output directory (model_config.json, gpt2_model/, tokenizer/, model_weights.pth).").required(),
        ArgSpec::new("text_column", ArgKind::String, "Column holding the texts.").default("text"),
        ArgSpec::new("label_column", ArgKind::String, "Column holding labels, written out as `labels` (optional).").default("labels"),
        ArgSpec::new("max_length", ArgKind::Int, "Tokens per text; longer texts are truncated. The finetuned head always sees this many positions.").default("256"),
        ArgSpec::new("padding", ArgKind::String, "pretrained: longest pads each batch to its longest text (same embeddings, less work), max_length always pads to --max_length as DeepTune. The finetuned head max-pools over padding too, so it always uses max_length.")
            .default("longest")
            .choices(&["longest", "max_length"]),
    ]
}

impl TextOptions {
    pub fn from_args(args: &Args) -> Result<TextOptions> {
        let use_case = match args.str("use_case").unwrap_or("pretrained") {
            "pretrained" => UseCase::Pretrained,
            "finetuned" => UseCase::Finetuned,
            "peft" => bail!("--use_case peft: PEFT is not supported for GPT-2 (DeepTune cannot fine-tune GPT-2 with PEFT, so no such checkpoint exists); use pretrained or finetuned"),
            other => bail!("--use_case {other} is not one of pretrained, finetuned"),
        };
        let max_length = args.int("max_length")?.unwrap_or(256);
        if !(1..=100_000).contains(&max_length) {
            bail!("--max_length must be positive, got {max_length}");
        }
        Ok(TextOptions {
            use_case,
            model_weights: PathBuf::from(args.require_str("model_weights")?),
            text_column: args.str("text_column").unwrap_or("text").to_string(),
            label_column: args.str("label_column").unwrap_or("labels").to_string(),
            max_length: max_length as usize,
            pad_to_longest: args.str("padding") != Some("max_length"),
        })
    }

    /// DeepTune's MODEL_STR.
    pub fn model_str(&self) -> &'static str {
        match self.use_case {
            UseCase::Pretrained => "pretrained_GPT2",
            UseCase::Finetuned => "FINETUNED_GPT2",
        }
    }
}

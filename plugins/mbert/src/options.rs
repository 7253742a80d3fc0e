//! The mbert plugin's arguments, as declared to the host and as read back for a run.

use std::path::PathBuf;

use anyhow::{bail, Result};
use deepembed_sdk::{ArgKind, ArgSpec, Args};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseCase {
    Pretrained,
    Finetuned,
    Peft,
}

impl UseCase {
    pub fn name(self) -> &'static str {
        match self {
            UseCase::Pretrained => "pretrained",
            UseCase::Finetuned => "finetuned",
            UseCase::Peft => "peft",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TextOptions {
    pub use_case: UseCase,
    pub model_weights: PathBuf,
    pub added_layers: Option<i64>,
    pub embed_size: Option<i64>,
    pub num_classes: Option<i64>,
    pub lora_alpha: Option<f64>,
    pub bert_config: Option<PathBuf>,
    pub text_column: String,
    pub label_column: String,
    pub max_length: usize,
    /// Pad each batch to its longest text (true) or always to `max_length` (DeepTune's shapes).
    pub pad_to_longest: bool,
}

pub fn arg_specs() -> Vec<ArgSpec> {
    vec![
        ArgSpec::new("use_case", ArgKind::String, "pretrained: a Hugging Face BERT directory; finetuned/peft: DeepTune's fine-tuned BERT directory.")
            .default("pretrained")
            .choices(&["pretrained", "finetuned", "peft"]),
        ArgSpec::new("model_weights", ArgKind::Path, "pretrained: a Hugging Face BERT model directory (config.json, model.safetensors or pytorch_model.bin, tokenizer files); finetuned/peft: DeepTune's output directory (model_config.json, bert_model/, tokenizer/, model_weights.pth).").required(),
        ArgSpec::new("added_layers", ArgKind::Int, "Layers DeepTune added (1 or 2; with 2 the CLS vector goes through `additional`). Default: from the checkpoint."),
        ArgSpec::new("embed_size", ArgKind::Int, "Width of DeepTune's `additional` layer. Default: from the checkpoint."),
        ArgSpec::new("num_classes", ArgKind::Int, "Classes of the fine-tuned classifier. Default: from the checkpoint."),
        ArgSpec::new("lora_alpha", ArgKind::Float, "peft: LoRA alpha (default: bert_model/adapter_config.json, else DeepTune's 32)."),
        ArgSpec::new("bert_config", ArgKind::Path, "A BERT config.json, for directories that lack one (DeepTune's peft bert_model/ holds only the adapter)."),
        ArgSpec::new("text_column", ArgKind::String, "Column holding the texts.").default("text"),
        ArgSpec::new("label_column", ArgKind::String, "Column holding labels, written out as `labels` (optional).").default("labels"),
        ArgSpec::new("max_length", ArgKind::Int, "Tokens per text, [CLS] and [SEP] included; longer texts are truncated.").default("256"),
        ArgSpec::new("padding", ArgKind::String, "longest: pad each batch to its longest text (same embeddings, less work); max_length: always pad to --max_length, as DeepTune.")
            .default("longest")
            .choices(&["longest", "max_length"]),
    ]
}

impl TextOptions {
    pub fn from_args(args: &Args) -> Result<TextOptions> {
        let use_case = match args.str("use_case").unwrap_or("pretrained") {
            "pretrained" => UseCase::Pretrained,
            "finetuned" => UseCase::Finetuned,
            "peft" => UseCase::Peft,
            other => bail!("--use_case {other} is not one of pretrained, finetuned, peft"),
        };
        let added_layers = args.int("added_layers")?;
        if let Some(n) = added_layers {
            if n != 1 && n != 2 {
                bail!("--added_layers must be 1 or 2, got {n}");
            }
        }
        let max_length = args.int("max_length")?.unwrap_or(256);
        if !(2..=100_000).contains(&max_length) {
            bail!("--max_length must be at least 2 ([CLS] and [SEP]), got {max_length}");
        }
        Ok(TextOptions {
            use_case,
            model_weights: PathBuf::from(args.require_str("model_weights")?),
            added_layers,
            embed_size: args.int("embed_size")?,
            num_classes: args.int("num_classes")?,
            lora_alpha: args.float("lora_alpha")?,
            bert_config: args.str("bert_config").map(PathBuf::from),
            text_column: args.str("text_column").unwrap_or("text").to_string(),
            label_column: args.str("label_column").unwrap_or("labels").to_string(),
            max_length: max_length as usize,
            pad_to_longest: args.str("padding") != Some("max_length"),
        })
    }

    /// DeepTune's MODEL_STR.
    pub fn model_str(&self) -> &'static str {
        match self.use_case {
            UseCase::Pretrained => "PRETRAINED_BERT",
            UseCase::Finetuned => "FINETUNED_BERT",
            UseCase::Peft => "PEFT_BERT",
        }
    }
}

//! The vision plugin's arguments, as declared to the host and as read back for a run.

use std::path::PathBuf;

use anyhow::{bail, Result};
use deepembed_sdk::{ArgKind, ArgSpec, Args};

use crate::models;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseCase {
    Pretrained,
    Finetuned,
    Peft,
}

impl UseCase {
    /// DeepTune's MODEL_STR prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            UseCase::Pretrained => "PRETRAINED",
            UseCase::Finetuned => "FINETUNED",
            UseCase::Peft => "PEFT",
        }
    }
}

#[derive(Debug, Clone)]
pub struct VisionOptions {
    pub use_case: UseCase,
    pub model_version: String,
    pub model_weights: Option<PathBuf>,
    pub added_layers: Option<i64>,
    pub embed_size: Option<i64>,
    pub num_classes: Option<i64>,
    /// `cls` or `reg`.
    pub mode: String,
    pub lora_alpha: f64,
    pub image_column: String,
    pub label_column: String,
    pub grouper: Option<String>,
}

pub fn arg_specs() -> Vec<ArgSpec> {
    let versions: Vec<&str> = models::ARCHITECTURES.iter().map(|a| a.version).collect();
    vec![
        ArgSpec::new("use_case", ArgKind::String, "pretrained: torchvision ImageNet weights; finetuned: a DeepTune checkpoint; peft: a DeepTune LoRA checkpoint.")
            .default("pretrained")
            .choices(&["pretrained", "finetuned", "peft"]),
        ArgSpec::new("model_version", ArgKind::String, "Model version, e.g. resnet50.").required().choices(&versions),
        ArgSpec::new("model_weights", ArgKind::Path, "pretrained: a torchvision weights file (default: $TORCH_HOME/hub/checkpoints/<torchvision file name>); finetuned/peft: a DeepTune .pth checkpoint or a directory holding one."),
        ArgSpec::new("added_layers", ArgKind::Int, "Layers DeepTune added on the backbone (1 or 2). Default: read from the checkpoint."),
        ArgSpec::new("embed_size", ArgKind::Int, "Width of the added embedding layer (added_layers 2) or LoRA rank (peft). Default: read from the checkpoint."),
        ArgSpec::new("num_classes", ArgKind::Int, "Classes of the fine-tuned head. Default: read from the checkpoint."),
        ArgSpec::new("mode", ArgKind::String, "Task the model was fine-tuned for: cls or reg.").default("cls").choices(&["cls", "reg"]),
        ArgSpec::new("lora_alpha", ArgKind::Float, "LoRA alpha used in training (DeepTune uses 16); LoRA updates are scaled by alpha / r.").default("16"),
        ArgSpec::new("image_column", ArgKind::String, "Column holding encoded image bytes (JPEG or PNG).").default("images"),
        ArgSpec::new("label_column", ArgKind::String, "Column holding labels, written out as `label` (optional).").default("labels"),
        ArgSpec::new("grouper", ArgKind::String, "A column to carry into the output (it must exist)."),
    ]
}

impl VisionOptions {
    pub fn from_args(args: &Args) -> Result<VisionOptions> {
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
        for name in ["embed_size", "num_classes"] {
            if let Some(n) = args.int(name)? {
                if n < 1 {
                    bail!("--{name} must be positive, got {n}");
                }
            }
        }
        let lora_alpha = args.float("lora_alpha")?.unwrap_or(16.0);
        Ok(VisionOptions {
            use_case,
            model_version: args.require_str("model_version")?.to_string(),
            model_weights: args.str("model_weights").map(PathBuf::from),
            added_layers,
            embed_size: args.int("embed_size")?,
            num_classes: args.int("num_classes")?,
            mode: args.str("mode").unwrap_or("cls").to_string(),
            lora_alpha,
            image_column: args.str("image_column").unwrap_or("images").to_string(),
            label_column: args.str("label_column").unwrap_or("labels").to_string(),
            grouper: args.str("grouper").map(str::to_string),
        })
    }

    /// DeepTune's MODEL_STR, e.g. `FINETUNED-resnet50`.
    pub fn model_str(&self) -> String {
        format!("{}-{}", self.use_case.prefix(), self.model_version)
    }
}

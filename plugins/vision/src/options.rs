//! The vision plugin's flags, declared once: read back for a run and listed for the host.

use std::path::PathBuf;

use deepembed_image::decode::Limits;
use deepembed_sdk::options::{HeadOptions, UseCase};
use deepembed_sdk::{choice, options};

use crate::models;

choice! {
    /// The task a DeepTune model was fine-tuned for.
    pub enum Mode {
        Cls = "cls",
        Reg = "reg",
    }
}

choice! {
    /// Where images are decoded and resized.
    pub enum Decode {
        Cpu = "cpu",
        Gpu = "gpu",
    }
}

options! {
    pub struct VisionOptions {
        /// pretrained: torchvision ImageNet weights; finetuned: a DeepTune checkpoint; peft: a
        /// DeepTune LoRA checkpoint.
        #[arg(default = "pretrained")]
        pub use_case: UseCase,
        /// Model version, e.g. resnet50, vit_b_16, siglip (widths per use case: see below).
        #[arg(choices = &models::versions())]
        pub model_version: String,
        /// pretrained: a torchvision weights file (default:
        /// $TORCH_HOME/hub/checkpoints/<torchvision file name>); finetuned/peft: a DeepTune .pth
        /// checkpoint or a directory holding one. siglip: a Hugging Face directory (pretrained),
        /// DeepTune's custom_siglip_model.pt or its directory (finetuned/peft).
        pub model_weights: Option<PathBuf>,
        #[serde(flatten)]
        pub head: HeadOptions,
        /// Task the model was fine-tuned for: cls or reg.
        #[arg(default = "cls")]
        pub mode: Mode,
        /// LoRA alpha used in training; LoRA updates are scaled by alpha / r. Default: DeepTune's,
        /// 16 for the torchvision families, 32 for siglip.
        pub lora_alpha: Option<f64>,
        /// Column holding encoded image bytes (JPEG, PNG, BMP, GIF, TIFF or WebP).
        #[arg(default = "images")]
        pub image_column: String,
        /// Column holding labels, written out as `label` (optional).
        #[arg(default = "labels")]
        pub label_column: String,
        /// A column to carry into the output (it must exist).
        pub grouper: Option<String>,
        /// Images with more pixels are refused before decoding (per row: --on_error skip keeps
        /// the run going); the default is Pillow's decompression-bomb limit. 0: no limit.
        #[arg(default = "178956970", min = 0)]
        pub max_image_pixels: u64,
        /// cpu: libjpeg-turbo and Pillow's resize on CPU threads, the reference's pixels to the
        /// bit. gpu (CUDA, opt-in): baseline JPEGs decoded by nvJPEG and resized on the device,
        /// other images on the CPU; nvJPEG's pixels differ slightly from libjpeg's (drift:
        /// docs/BENCHMARKS.md).
        #[arg(default = "cpu")]
        pub decode: Decode,
    }
}

impl VisionOptions {
    /// DeepTune's MODEL_STR, e.g. `FINETUNED-resnet50`.
    pub fn model_str(&self) -> String {
        format!("{}-{}", self.use_case.upper(), self.model_version)
    }

    pub fn image_limits(&self) -> Limits {
        Limits { max_pixels: (self.max_image_pixels > 0).then_some(self.max_image_pixels) }
    }
}

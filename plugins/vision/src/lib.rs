//! deepembed's vision plugin: image embeddings from torchvision models and from DeepTune's
//! fine-tuned and LoRA checkpoints, with DeepTune's preprocessing reproduced to the bit.

pub use deepembed_image as image;
pub mod model;
pub mod models;
pub mod options;
mod pipeline;
pub mod weights;

use anyhow::Result;
use deepembed_sdk::{Manifest, Plugin, RunContext};

use crate::options::VisionOptions;

#[derive(Default)]
pub struct VisionPlugin;

impl Plugin for VisionPlugin {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: "vision".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            modality: "image".into(),
            description: "Image embeddings from torchvision and DeepTune vision models".into(),
            models: models::ARCHITECTURES.iter().map(|a| a.version.to_string()).collect(),
            args: options::arg_specs(),
        }
    }

    fn run(&self, ctx: &mut RunContext) -> Result<()> {
        let opts = VisionOptions::from_args(ctx.args())?;
        pipeline::run(ctx, &opts)
    }
}

deepembed_sdk::export_plugin!(VisionPlugin);

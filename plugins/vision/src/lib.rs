//! deepembed's vision plugin: image embeddings from torchvision models and from DeepTune's
//! fine-tuned and LoRA checkpoints, with DeepTune's preprocessing reproduced to the bit.
//!
//! An rlib; `cdylib/` exports it as a plugin library.

#![forbid(unsafe_code)]

pub use deepembed_image as image;
mod buffer_pool;
pub mod device_buffers;
pub mod device_resize;
pub mod gpu_decode;
pub mod model;
pub mod models;
pub mod normalize;
pub mod options;
mod pipeline;
pub mod weights;
pub mod window_buffers;
pub mod window_decode;

use anyhow::Result;
use deepembed_sdk::{Manifest, Options, Plugin, RunContext};

use crate::options::VisionOptions;

#[derive(Default)]
pub struct VisionPlugin;

impl Plugin for VisionPlugin {
    type Options = VisionOptions;

    fn manifest(&self) -> Manifest {
        Manifest {
            name: "vision".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            modality: "image".into(),
            description: "Image embeddings from torchvision and DeepTune vision models".into(),
            models: models::all_versions().into_iter().map(|(f, v)| models::describe(f, v)).collect(),
            args: VisionOptions::arg_specs(),
            inputs: vec![deepembed_sdk::InputSpec::df().rows_independent()],
        }
    }

    fn run(&self, options: VisionOptions, ctx: &mut RunContext<'_>) -> Result<()> {
        pipeline::run(ctx, &options)
    }
}

//! deepembed's gandalf plugin: embeddings from pytorch-tabular GANDALF models, with the model's
//! own saved preprocessing (category codes, scaler), for every input row.

pub mod gandalf;
pub mod options;
mod pipeline;
pub mod preprocessing;
pub mod saved_model;

use anyhow::Result;
use deepembed_sdk::{Manifest, Plugin, RunContext};

use crate::options::GandalfOptions;

#[derive(Default)]
pub struct GandalfPlugin;

impl Plugin for GandalfPlugin {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: "gandalf".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            modality: "tabular".into(),
            description: "Tabular embeddings from pytorch-tabular GANDALF models (the backbone output)".into(),
            models: vec!["GANDALF".into()],
            args: options::arg_specs(),
        }
    }

    fn run(&self, ctx: &mut RunContext) -> Result<()> {
        let opts = GandalfOptions::from_args(ctx.args())?;
        pipeline::run(ctx, &opts)
    }
}

deepembed_sdk::export_plugin!(GandalfPlugin);

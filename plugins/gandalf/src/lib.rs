//! deepembed's gandalf plugin: embeddings from pytorch-tabular GANDALF models, with the model's
//! own saved preprocessing (category codes, scaler), for every input row.
//!
//! An rlib; `cdylib/` exports it as a plugin library.

#![forbid(unsafe_code)]

pub mod dates;
pub mod gandalf;
pub mod options;
mod pipeline;
pub mod preprocessing;
pub mod saved_model;

use anyhow::Result;
use deepembed_sdk::{InputSpec, Manifest, Options, Plugin, RunContext};

use crate::options::GandalfOptions;

#[derive(Default)]
pub struct GandalfPlugin;

impl Plugin for GandalfPlugin {
    type Options = GandalfOptions;

    fn manifest(&self) -> Manifest {
        Manifest {
            name: "gandalf".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            modality: "tabular".into(),
            description: "Tabular embeddings from pytorch-tabular GANDALF models (the backbone output)".into(),
            models: vec!["GANDALF".into()],
            args: GandalfOptions::arg_specs(),
            inputs: vec![InputSpec::df().rows_independent()],
        }
    }

    fn run(&self, options: GandalfOptions, ctx: &mut RunContext<'_>) -> Result<()> {
        pipeline::run(ctx, &options)
    }
}

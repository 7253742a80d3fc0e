//! deepembed's deepar plugin: one embedding per input row from a pytorch-forecasting DeepAR
//! checkpoint, with the checkpoint's own normalisers and encoders, in input order.
//!
//! An rlib; `cdylib/` exports it as a plugin library.

#![forbid(unsafe_code)]

pub mod encode;
pub mod fill;
pub mod network;
pub mod normaliser;
pub mod options;
pub mod output;
pub mod record;
mod run;
pub mod saved;
pub mod spill;
pub mod time;
pub mod windows;

use anyhow::Result;
use deepembed_sdk::{InputSpec, Manifest, Options, Plugin, RunContext};

use crate::options::DeepArOptions;

#[derive(Default)]
pub struct DeepArPlugin;

impl Plugin for DeepArPlugin {
    type Options = DeepArOptions;

    fn manifest(&self) -> Manifest {
        Manifest {
            name: "deepar".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            modality: "timeseries".into(),
            description: "Per-row time-series embeddings from pytorch-forecasting DeepAR checkpoints (the RNN's state at each row)".into(),
            models: vec!["DeepAR".into()],
            args: DeepArOptions::arg_specs(),
            inputs: InputSpec::default_inputs(),
        }
    }

    fn run(&self, options: DeepArOptions, ctx: &mut RunContext<'_>) -> Result<()> {
        run::run(ctx, &options)
    }
}

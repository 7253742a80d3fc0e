//! deepembed's tabpfn plugin: in-context embeddings of evaluation rows given training rows,
//! reproducing tabpfn 6.2's ensemble member 0 (preprocessing included) from a checkpoint read as
//! data. docs/TABPFN.md follows each step to its tabpfn source.
//!
//! An rlib; `cdylib/` exports it as a plugin library.

#![forbid(unsafe_code)]

pub mod member;
pub mod model;
pub mod options;
pub mod preprocess;
pub mod rng;
mod run;
pub mod saved;
pub mod table;

use anyhow::Result;
use deepembed_sdk::{InputSpec, Manifest, Options, Plugin, RunContext};

use crate::options::TabPfnOptions;

#[derive(Default)]
pub struct TabPfnPlugin;

impl Plugin for TabPfnPlugin {
    type Options = TabPfnOptions;

    fn manifest(&self) -> Manifest {
        Manifest {
            name: "tabpfn".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            modality: "tabular".into(),
            description:
                "In-context embeddings of evaluation rows from TabPFN checkpoints (tabpfn 6.2, ensemble member 0)"
                    .into(),
            models: vec!["TabPFN".into()],
            args: TabPfnOptions::arg_specs(),
            inputs: vec![
                InputSpec::new("train_df", "The training table: the rows the model sees in context."),
                // Read twice: a first pass for the column tests every evaluation row takes part in.
                InputSpec::new("eval_df", "The table whose rows are embedded.").embedded().passes(2),
            ],
        }
    }

    fn run(&self, options: TabPfnOptions, ctx: &mut RunContext<'_>) -> Result<()> {
        run::run(ctx, &options)
    }
}

//! deepembed's mbert plugin: text embeddings from BERT-architecture models (multilingual BERT,
//! MiniLM, any `BertModel` checkpoint) and from DeepTune's fine-tuned and LoRA BERT directories.
//!
//! An rlib; `cdylib/` exports it as a plugin library.

#![forbid(unsafe_code)]

pub mod bert;
pub mod model;
pub mod options;
mod pipeline;
pub mod tokenizer;

use anyhow::Result;
use deepembed_sdk::{InputSpec, Manifest, Options, Plugin, RunContext};

use crate::options::MbertOptions;

#[derive(Default)]
pub struct MbertPlugin;

impl Plugin for MbertPlugin {
    type Options = MbertOptions;

    fn manifest(&self) -> Manifest {
        Manifest {
            name: "mbert".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            modality: "text".into(),
            description: "Text embeddings ([CLS]) from BERT models and DeepTune's fine-tuned BERT".into(),
            models: vec![
                "bert-base-multilingual-cased".into(),
                "bert-base-multilingual-uncased".into(),
                "any BertModel directory".into(),
            ],
            args: MbertOptions::arg_specs(),
            inputs: vec![InputSpec::df().rows_independent()],
        }
    }

    fn run(&self, options: MbertOptions, ctx: &mut RunContext<'_>) -> Result<()> {
        pipeline::run(ctx, &options)
    }
}

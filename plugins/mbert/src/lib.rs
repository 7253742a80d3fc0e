//! deepembed's mbert plugin: text embeddings from BERT-architecture models (multilingual BERT,
//! MiniLM, any `BertModel` checkpoint) and from DeepTune's fine-tuned and LoRA BERT directories.

pub mod bert;
pub mod model;
pub mod options;
mod pipeline;
pub mod tokenizer;

use anyhow::Result;
use deepembed_sdk::{Manifest, Plugin, RunContext};

use crate::options::TextOptions;

#[derive(Default)]
pub struct MbertPlugin;

impl Plugin for MbertPlugin {
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
            args: options::arg_specs(),
        }
    }

    fn run(&self, ctx: &mut RunContext) -> Result<()> {
        let opts = TextOptions::from_args(ctx.args())?;
        pipeline::run(ctx, &opts)
    }
}

deepembed_sdk::export_plugin!(MbertPlugin);

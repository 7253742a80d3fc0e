//! deepembed's gpt2 plugin: text embeddings from GPT-2 models and DeepTune's fine-tuned GPT-2.
//!
//! An rlib; `cdylib/` exports it as a plugin library.

#![forbid(unsafe_code)]

pub mod gpt2;
pub mod model;
pub mod options;
pub mod tokenizer;

use anyhow::Result;
use deepembed_sdk::output::EmbeddingNames;
use deepembed_sdk::text;
use deepembed_sdk::{InputSpec, Manifest, Options, OutputPlan, Plugin, RunContext};

use crate::model::TextModel;
use crate::options::Gpt2Options;

#[derive(Default)]
pub struct Gpt2Plugin;

impl Plugin for Gpt2Plugin {
    type Options = Gpt2Options;

    fn manifest(&self) -> Manifest {
        Manifest {
            name: "gpt2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            modality: "text".into(),
            description: "Text embeddings from GPT-2 models and DeepTune's fine-tuned GPT-2".into(),
            models: vec!["gpt2".into(), "any GPT2Model directory".into()],
            args: Gpt2Options::arg_specs(),
            inputs: vec![InputSpec::df().rows_independent()],
        }
    }

    fn run(&self, opts: Gpt2Options, ctx: &mut RunContext<'_>) -> Result<()> {
        opts.check()?;
        text::check_text_column(ctx.input_schema("df")?, &opts.text.text_column)?;
        let model = TextModel::load(&opts, ctx.tch_device())?;
        let tokenizer = tokenizer::load(&model.tokenizer_dir, opts.text.max_length)?;
        let model_str = opts.model_str();
        let plan = OutputPlan {
            model_str: model_str.to_string(),
            file_name: format!("{model_str}_embeddings.parquet"),
            dims: model.dims as usize,
            details: model.details.clone(),
        };
        text::run(ctx, &opts.text, &plan, EmbeddingNames::Index, (tokenizer, &model.tokenizer_dir), &model)
    }
}

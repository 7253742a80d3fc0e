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
use deepembed_sdk::text::{self, TextLayout};
use deepembed_sdk::{InputSpec, Manifest, Options, OutputPlan, Plugin, RunContext};

use crate::model::TextModel;
use crate::options::Gpt2Options;
use crate::tokenizer::Gpt2Tokenizer;

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
            inputs: InputSpec::default_inputs(),
        }
    }

    fn run(&self, opts: Gpt2Options, ctx: &mut RunContext<'_>) -> Result<()> {
        opts.check()?;
        text::check_text_column(ctx.input_schema("df")?, &opts.text.text_column)?;
        let model = TextModel::load(&opts, ctx.tch_device())?;
        let tokenizer = Gpt2Tokenizer::load(&model.tokenizer_dir, opts.text.max_length)?;
        text::check_fits(
            opts.text.max_length,
            model.max_positions(),
            tokenizer.vocab_size(),
            model.vocab_size(),
            &model.tokenizer_dir,
        )?;
        let model_str = opts.model_str();
        ctx.begin(&OutputPlan {
            model_str: model_str.to_string(),
            file_name: format!("{model_str}_embeddings.parquet"),
            dims: model.dims as usize,
            details: model.details.clone(),
        })?;
        // Mean pooling over real tokens ignores padding (causal attention: real tokens never see
        // the padding after them); the fine-tuned head max-pools over every position, padding
        // included, so it keeps DeepTune's fixed length.
        let layout = TextLayout {
            names: EmbeddingNames::Index,
            dims: model.dims as usize,
            pad_id: tokenizer.pad_id,
            padding_is_ignored: !model.has_head(),
        };
        text::run(ctx, &opts.text, &layout, tokenizer, &model)
    }
}

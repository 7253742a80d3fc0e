//! deepembed's gpt2 plugin: text embeddings from GPT-2 models and DeepTune's fine-tuned GPT-2.

pub mod gpt2;
pub mod model;
pub mod options;
pub mod tokenizer;

use anyhow::Result;
use deepembed_sdk::columns::EmbeddingNames;
use deepembed_sdk::text::{self, Padding, TextLayout};
use deepembed_sdk::{Manifest, OutputPlan, Plugin, RunContext};

use crate::model::TextModel;
use crate::options::TextOptions;
use crate::tokenizer::Gpt2Tokenizer;

#[derive(Default)]
pub struct Gpt2Plugin;

impl Plugin for Gpt2Plugin {
    fn manifest(&self) -> Manifest {
        Manifest {
            name: "gpt2".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            modality: "text".into(),
            description: "Text embeddings from GPT-2 models and DeepTune's fine-tuned GPT-2".into(),
            models: vec!["gpt2".into(), "any GPT2Model directory".into()],
            args: options::arg_specs(),
        }
    }

    fn run(&self, ctx: &mut RunContext) -> Result<()> {
        let opts = TextOptions::from_args(ctx.args())?;
        text::check_text_column(ctx.input_schema(), &opts.text_column)?;
        let model = TextModel::load(&opts, ctx.device().to_tch())?;
        let tokenizer = Gpt2Tokenizer::load(&model.tokenizer_dir, opts.max_length)?;
        text::check_fits(
            opts.max_length,
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
        let padding =
            if opts.pad_to_longest && !model.has_head() { Padding::Longest } else { Padding::Fixed(opts.max_length) };
        let layout = TextLayout {
            text_column: &opts.text_column,
            label_column: &opts.label_column,
            label_output: "labels",
            names: EmbeddingNames::Index,
            dims: model.dims as usize,
            pad_id: tokenizer.pad_id,
            padding,
        };
        text::run(ctx, &layout, tokenizer, &model)
    }
}

deepembed_sdk::export_plugin!(Gpt2Plugin);

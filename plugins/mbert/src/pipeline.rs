//! A run: load the model and tokenizer, then the SDK's text loop. BERT's [CLS] vector does not
//! depend on padding (padded keys are masked), so batches are padded only to their longest text
//! unless `--padding max_length` asks for DeepTune's fixed shapes.

use anyhow::Result;
use deepembed_sdk::columns::EmbeddingNames;
use deepembed_sdk::text::{self, Padding, TextLayout};
use deepembed_sdk::{OutputPlan, RunContext};

use crate::model::TextModel;
use crate::options::TextOptions;
use crate::tokenizer::BertTokenizer;

pub fn run(ctx: &mut RunContext, opts: &TextOptions) -> Result<()> {
    text::check_text_column(ctx.input_schema(), &opts.text_column)?;
    let model = TextModel::load(opts, ctx.device().to_tch())?;
    let tokenizer = BertTokenizer::load(&model.tokenizer_dir, opts.max_length)?;
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
        file_name: format!("{model_str}_{}_embeddings.parquet", opts.use_case.name()),
        dims: model.dims as usize,
        details: model.details.clone(),
    })?;
    let layout = TextLayout {
        text_column: &opts.text_column,
        label_column: &opts.label_column,
        label_output: "labels",
        names: EmbeddingNames::Embed4,
        dims: model.dims as usize,
        pad_id: tokenizer.pad_id,
        padding: if opts.pad_to_longest { Padding::Longest } else { Padding::Fixed(opts.max_length) },
    };
    text::run(ctx, &layout, tokenizer, &model)
}

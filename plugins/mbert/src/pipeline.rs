//! A run: load the model and tokenizer, then the SDK's text pipeline. BERT's [CLS] vector does
//! not depend on padding (padded keys are masked), so batches are padded only to their longest
//! text unless `--padding max_length` asks for DeepTune's fixed shapes.

use anyhow::{bail, Result};
use deepembed_sdk::output::EmbeddingNames;
use deepembed_sdk::text;
use deepembed_sdk::{OutputPlan, RunContext};

use crate::model::TextModel;
use crate::options::MbertOptions;
use crate::tokenizer;

pub fn run(ctx: &mut RunContext<'_>, opts: &MbertOptions) -> Result<()> {
    if opts.text.max_length < 2 {
        bail!("--max_length must be at least 2 ([CLS] and [SEP]), got {}", opts.text.max_length);
    }
    text::check_text_column(ctx.input_schema("df")?, &opts.text.text_column)?;
    let model = TextModel::load(opts, ctx.tch_device())?;
    let tokenizer = tokenizer::load(&model.tokenizer_dir, opts.text.max_length)?;
    let model_str = opts.model_str();
    let plan = OutputPlan {
        file_name: format!("{model_str}_{}_embeddings.parquet", opts.use_case),
        model_str,
        dims: model.dims as usize,
        details: model.details.clone(),
    };
    text::run(ctx, &opts.text, &plan, EmbeddingNames::Embed4, (tokenizer, &model.tokenizer_dir), &model)
}

//! GPT-2's byte-level BPE tokenizer through HF `tokenizers`, from `tokenizer.json` or from
//! `vocab.json` + `merges.txt`. GPT-2 adds no special tokens; DeepTune pads with the
//! end-of-text token (pad = eos), which the attention mask then hides.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use deepembed_sdk::text::HfTokenizer;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

const END_OF_TEXT: &str = "<|endoftext|>";

/// The tokenizer in `dir`, truncating to `max_length` tokens.
pub fn load(dir: &Path, max_length: usize) -> Result<HfTokenizer> {
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    let inner = match HfTokenizer::json_in(dir)? {
        Some(inner) => inner,
        None if vocab.is_file() && merges.is_file() => from_vocab_merges(dir, &vocab, &merges)?,
        None => bail!("{} holds no tokenizer.json, nor vocab.json with merges.txt", dir.display()),
    };
    let pad_id = inner
        .token_to_id(END_OF_TEXT)
        .map(i64::from)
        .ok_or_else(|| anyhow!("the tokenizer in {} has no {END_OF_TEXT} token to pad with", dir.display()))?;
    HfTokenizer::new(inner, max_length, pad_id)
}

/// `GPT2Tokenizer(vocab.json, merges.txt)` with `tokenizer_config.json`'s `add_prefix_space`
/// (a space before the first word) and `add_bos_token` (the begin-of-text token first), both
/// off by default as in transformers.
fn from_vocab_merges(dir: &Path, vocab: &Path, merges: &Path) -> Result<Tokenizer> {
    let config = deepembed_sdk::text::tokenizer_config(dir)?;
    let add_prefix_space = config["add_prefix_space"].as_bool().unwrap_or(false);
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| anyhow!("cannot read {} and {}: {e}", vocab.display(), merges.display()))?;
    let mut t = Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, true, true)));
    t.with_decoder(Some(ByteLevel::default()));
    // The end-of-text marker is one token, also when it appears in a text.
    t.add_special_tokens(vec![AddedToken::from(END_OF_TEXT, true)]).map_err(|e| anyhow!("{e}"))?;
    if config["add_bos_token"].as_bool() == Some(true) {
        // The token may be saved as text or as an AddedToken's fields.
        let bos =
            config["bos_token"].as_str().or_else(|| config["bos_token"]["content"].as_str()).unwrap_or(END_OF_TEXT);
        let id = t
            .token_to_id(bos)
            .ok_or_else(|| anyhow!("{}: bos_token {bos} is not in the vocabulary", vocab.display()))?;
        let template = TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .and_then(|b| b.special_tokens(vec![(bos.to_string(), id)]).build().map_err(|e| e.to_string()))
            .map_err(|e| anyhow!("add_bos_token: {e}"))?;
        t.with_post_processor(Some(template));
    }
    Ok(t)
}

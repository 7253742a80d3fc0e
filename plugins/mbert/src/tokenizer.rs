//! BERT's WordPiece tokenizer through HF `tokenizers` (the library transformers' tokenizers run),
//! from `tokenizer.json`, or from `vocab.txt` with `tokenizer_config.json`'s options.

use std::path::Path;

use anyhow::{anyhow, Result};
use deepembed_sdk::text::HfTokenizer;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Model, Tokenizer};

/// The tokenizer in `dir`, truncating to `max_length` tokens ([CLS] and [SEP] included), as
/// transformers' `truncation=True, max_length=...` does. Padding is ours.
pub fn load(dir: &Path, max_length: usize) -> Result<HfTokenizer> {
    let vocab = dir.join("vocab.txt");
    let inner = match HfTokenizer::json_in(dir)? {
        Some(inner) => inner,
        None if vocab.is_file() => from_vocab(dir, &vocab)?,
        None => anyhow::bail!("{} holds no tokenizer.json or vocab.txt", dir.display()),
    };
    let pad_id = inner.token_to_id("[PAD]").map(i64::from).unwrap_or(0);
    HfTokenizer::new(inner, max_length, pad_id)
}

/// `BertTokenizer(vocab.txt)` with `tokenizer_config.json`'s `do_lower_case` (default true),
/// `strip_accents` (default: follow lower-casing) and `tokenize_chinese_chars` (default true).
fn from_vocab(dir: &Path, vocab: &Path) -> Result<Tokenizer> {
    let config = deepembed_sdk::text::tokenizer_config(dir)?;
    let lowercase = config["do_lower_case"].as_bool().unwrap_or(true);
    let strip_accents = config["strip_accents"].as_bool();
    let chinese = config["tokenize_chinese_chars"].as_bool().unwrap_or(true);
    let token = |key: &str, default: &str| config[key].as_str().unwrap_or(default).to_string();
    let (unk, cls, sep) = (token("unk_token", "[UNK]"), token("cls_token", "[CLS]"), token("sep_token", "[SEP]"));
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token(unk.clone())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| anyhow!("cannot read {}: {e}", vocab.display()))?;
    let cls_id = model.get_vocab().get(&cls).copied().ok_or_else(|| anyhow!("{} has no {cls}", vocab.display()))?;
    let sep_id = model.get_vocab().get(&sep).copied().ok_or_else(|| anyhow!("{} has no {sep}", vocab.display()))?;
    // The special tokens are whole tokens also where a text spells them out ("[CLS]" is one id,
    // not "[", "cl", "##s", "]"), matched before normalisation, as transformers does.
    let specials: Vec<AddedToken> =
        [unk.clone(), sep.clone(), token("pad_token", "[PAD]"), cls.clone(), token("mask_token", "[MASK]")]
            .into_iter()
            .filter(|t| model.get_vocab().contains_key(t))
            .map(|t| AddedToken::from(t, true))
            .collect();
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, chinese, strip_accents, lowercase)))
        .map_err(|e| anyhow!("{e}"))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.add_special_tokens(specials).map_err(|e| anyhow!("{e}"))?;
    tokenizer.with_post_processor(Some(BertProcessing::new((sep, sep_id), (cls, cls_id))));
    Ok(tokenizer)
}

//! BERT's WordPiece tokenizer through HF `tokenizers` (the library transformers' tokenizers run),
//! from `tokenizer.json`, or from `vocab.txt` with `tokenizer_config.json`'s options.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Model, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub struct BertTokenizer {
    inner: Tokenizer,
    pub pad_id: i64,
}

impl BertTokenizer {
    /// Loads the tokenizer in `dir`, truncating to `max_length` tokens ([CLS] and [SEP]
    /// included), as transformers' `truncation=True, max_length=...` does. Padding is ours.
    pub fn load(dir: &Path, max_length: usize) -> Result<BertTokenizer> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let mut inner = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| anyhow!("cannot load {}: {e}", json.display()))?
        } else if vocab.is_file() {
            from_vocab(dir, &vocab)?
        } else {
            anyhow::bail!("{} holds no tokenizer.json or vocab.txt", dir.display());
        };
        // A tokenizer.json may carry its own fixed padding and truncation (MiniLM's pads to 128);
        // transformers ignores them when called with explicit arguments, and so do we.
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow!("{e}"))?;
        let pad_id = inner.token_to_id("[PAD]").map(i64::from).unwrap_or(0);
        Ok(BertTokenizer { inner, pad_id })
    }
}

impl deepembed_sdk::text::Tokenize for BertTokenizer {
    /// Token ids of each text, with [CLS] and [SEP].
    fn encode(&self, texts: Vec<&str>) -> Result<Vec<Vec<i64>>> {
        let encodings = self.inner.encode_batch(texts, true).map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(encodings.iter().map(|e| e.get_ids().iter().map(|&id| i64::from(id)).collect()).collect())
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn pad_id(&self) -> i64 {
        self.pad_id
    }
}

/// `BertTokenizer(vocab.txt)` with `tokenizer_config.json`'s `do_lower_case` (default true),
/// `strip_accents` (default: follow lower-casing) and `tokenize_chinese_chars` (default true).
fn from_vocab(dir: &Path, vocab: &Path) -> Result<Tokenizer> {
    let config: serde_json::Value = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
        Ok(text) => serde_json::from_str(&text).context("tokenizer_config.json is not JSON")?,
        Err(_) => serde_json::Value::Null,
    };
    let lowercase = config["do_lower_case"].as_bool().unwrap_or(true);
    let strip_accents = config["strip_accents"].as_bool();
    let chinese = config["tokenize_chinese_chars"].as_bool().unwrap_or(true);
    let token = |key: &str, default: &str| config[key].as_str().unwrap_or(default).to_string();
    let (unk, cls, sep) = (token("unk_token", "[UNK]"), token("cls_token", "[CLS]"), token("sep_token", "[SEP]"));
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token(unk)
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| anyhow!("cannot read {}: {e}", vocab.display()))?;
    let cls_id = model.get_vocab().get(&cls).copied().ok_or_else(|| anyhow!("{} has no {cls}", vocab.display()))?;
    let sep_id = model.get_vocab().get(&sep).copied().ok_or_else(|| anyhow!("{} has no {sep}", vocab.display()))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, chinese, strip_accents, lowercase)))
        .map_err(|e| anyhow!("{e}"))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new((sep, sep_id), (cls, cls_id))));
    Ok(tokenizer)
}

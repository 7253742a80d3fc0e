//! GPT-2's byte-level BPE tokenizer through HF `tokenizers`, from `tokenizer.json` or from
//! `vocab.json` + `merges.txt`. GPT-2 adds no special tokens; DeepTune pads with the
//! end-of-text token (pad = eos), which the attention mask then hides.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

const END_OF_TEXT: &str = "<|endoftext|>";

pub struct Gpt2Tokenizer {
    inner: Tokenizer,
    pub pad_id: i64,
}

impl Gpt2Tokenizer {
    /// Loads the tokenizer in `dir`, truncating to `max_length` tokens.
    pub fn load(dir: &Path, max_length: usize) -> Result<Gpt2Tokenizer> {
        let json = dir.join("tokenizer.json");
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        let mut inner = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| anyhow!("cannot load {}: {e}", json.display()))?
        } else if vocab.is_file() && merges.is_file() {
            let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                .build()
                .map_err(|e| anyhow!("cannot read {} and {}: {e}", vocab.display(), merges.display()))?;
            let mut t = Tokenizer::new(bpe);
            t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            t.with_decoder(Some(ByteLevel::default()));
            // The end-of-text marker is one token, also when it appears in a text.
            t.add_special_tokens(vec![AddedToken::from(END_OF_TEXT, true)]).map_err(|e| anyhow!("{e}"))?;
            t
        } else {
            bail!("{} holds no tokenizer.json, nor vocab.json with merges.txt", dir.display());
        };
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow!("{e}"))?;
        let pad_id = inner
            .token_to_id(END_OF_TEXT)
            .map(i64::from)
            .ok_or_else(|| anyhow!("the tokenizer in {} has no {END_OF_TEXT} token to pad with", dir.display()))?;
        Ok(Gpt2Tokenizer { inner, pad_id })
    }
}

impl deepembed_sdk::text::Tokenize for Gpt2Tokenizer {
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

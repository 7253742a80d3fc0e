//! GPT-2 byte-level BPE ids against transformers: tokenizer.json and vocab.json + merges.txt.

use deepembed_sdk::text::Tokenize;
use deepembed_tests::*;

#[test]
fn gpt2_token_ids_are_transformers_ids() {
    check_token_ids("gpt2", |dir, texts| deepembed_gpt2::tokenizer::load(dir, 256).unwrap().encode(texts).unwrap());
}

//! BERT WordPiece ids against transformers: tokenizer.json (uncased), vocab.txt (cased) and the
//! real MiniLM tokenizer.

use deepembed_sdk::text::Tokenize;
use deepembed_tests::*;

#[test]
fn bert_token_ids_are_transformers_ids() {
    check_token_ids("bert", |dir, texts| deepembed_mbert::tokenizer::load(dir, 256).unwrap().encode(texts).unwrap());
}

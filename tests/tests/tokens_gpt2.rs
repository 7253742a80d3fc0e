//! GPT-2 byte-level BPE ids against transformers: tokenizer.json and vocab.json + merges.txt.

use std::path::Path;

use arrow::array::AsArray;
use deepembed_sdk::text::Tokenize;
use deepembed_tests::*;

/// Our tokenizers give transformers' ids, id for id, truncated at 256, on the hard texts.
/// (One test binary per plugin crate: each plugin library exports the same root-module symbol.)
fn check_token_ids(kind: &str, tokenize: impl Fn(&Path, Vec<&str>) -> Vec<Vec<i64>>) {
    let dir = fixtures().join("text");
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("token_ids.json")).unwrap()).unwrap();
    let input = read_parquet(&dir.join("texts.parquet"));
    let column = arrow::compute::cast(input.column_by_name("text").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
    let texts: Vec<&str> = column.as_string::<i32>().iter().map(|t| t.unwrap()).collect();
    let mut checked = 0;
    for (name, entry) in expected.as_object().unwrap().iter().filter(|(n, _)| n.starts_with(kind) || (kind == "bert" && n.as_str() == "minilm")) {
        let ours = tokenize(Path::new(entry["dir"].as_str().unwrap()), texts.clone());
        let theirs: Vec<Vec<i64>> = entry["ids"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()).collect();
        assert_eq!(ours.len(), theirs.len());
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "{name}: text {i} ({:?}) tokenizes differently", texts[i]);
        }
        checked += 1;
    }
    assert!(checked >= 2, "too few {kind} tokenizers checked");
}

#[test]
fn gpt2_token_ids_are_transformers_ids() {
    check_token_ids("gpt2", |dir, texts| deepembed_gpt2::tokenizer::Gpt2Tokenizer::load(dir, 256).unwrap().encode(texts).unwrap());
}

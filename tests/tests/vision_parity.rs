//! Embeddings from the `deepembed` binary against PyTorch's on the same images and weights,
//! for every case the generator wrote (pretrained, DeepTune finetuned and peft checkpoints).
//!
//! Tolerance: 1e-4 max abs, scaled by the embedding's magnitude when that exceeds 1. Both sides
//! run the same libtorch kernels on identical inputs (preprocessing is bit-identical, see
//! preprocess_parity.rs); what remains is float32 summation order, which batch composition and
//! our merged LoRA weights (W + BA*s, where PyTorch adds the LoRA branch's output) can change.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use deepembed_tests::*;

const TOLERANCE: f32 = 1e-4;

#[test]
fn every_generated_case_matches_pytorch() {
    let dir = fixtures().join("vision");
    let cases = fixture_cases("vision");
    let input = dir.join("images.parquet");
    let torch_home = dir.join("torch_home");
    let out = scratch("vision-parity");
    let mut failures = Vec::new();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "generator wrote too few cases");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let dims = case["dims"].as_u64().unwrap() as usize;
        let case_args: Vec<String> =
            case["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        let mut args =
            vec!["vision", "--df", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--batch_size", "5"];
        args.extend(case_args.iter().map(String::as_str));
        let run_dir = embed_ok(&args, &[("TORCH_HOME", torch_home.to_str().unwrap())]);
        let batch = read_parquet(&output_parquet(&run_dir));
        let ours = embedding_matrix(&batch, dims);
        let reference = read_f32(&dir.join(case["ref"].as_str().unwrap()));
        let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
        let (diff, at) = max_abs_diff(&ours, &reference);
        eprintln!("{name}: max abs diff {diff:e} (largest |value| {scale})");
        if diff.is_nan() || diff > TOLERANCE * scale {
            failures.push(format!(
                "{name}: max abs diff {diff} at row {} dim {} exceeds {}",
                at / dims,
                at % dims,
                TOLERANCE * scale
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn output_columns_follow_deeptune_and_pass_everything_through_in_order() {
    let dir = fixtures().join("vision");
    let input = read_parquet(&dir.join("images.parquet"));
    let out = scratch("vision-columns");
    let torch_home = dir.join("torch_home");
    let run_dir = embed_ok(
        &[
            "vision",
            "--df",
            dir.join("images.parquet").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--model_version",
            "resnet18",
            "--batch_size",
            "7",
        ],
        &[("TORCH_HOME", torch_home.to_str().unwrap())],
    );
    let file = output_parquet(&run_dir);
    assert_eq!(file.file_name().unwrap().to_str().unwrap(), "PRETRAINED-resnet18_cls_embeddings.parquet");
    assert!(run_dir.file_name().unwrap().to_str().unwrap().starts_with("embed_output_PRETRAINED-resnet18_"));
    let batch = read_parquet(&file);
    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut expected: Vec<String> = (0..512).map(|i| i.to_string()).collect();
    expected.extend(["label", "patient_id", "site", "age"].map(String::from));
    assert_eq!(names, expected);
    assert_eq!(batch.num_rows(), input.num_rows());
    // Labels and pass-through columns are the input's, row for row.
    let labels = batch.column_by_name("label").unwrap().as_primitive::<Int64Type>();
    let input_labels = input.column_by_name("labels").unwrap().as_primitive::<Int64Type>();
    assert_eq!(labels, input_labels);
    for col in ["patient_id", "site", "age"] {
        assert_eq!(
            batch.column_by_name(col).unwrap().to_data(),
            input.column_by_name(col).unwrap().to_data(),
            "column {col}"
        );
    }
}

//! `--precision bf16` on the CPU: libtorch's autocast to bfloat16, as
//! `torch.autocast("cpu", dtype=torch.bfloat16)`, for any plugin (the pipeline opens the region).
//!
//! The embeddings must differ from the float32 run's (else autocast never switched on) and stay
//! close to them: every row's cosine similarity at least 0.999. bfloat16 keeps 8 bits of
//! mantissa, so each input to a product is off by up to 2^-9 relatively; measured on these
//! fixtures, the lowest row is at 0.99977 (ResNet-18) and above 0.99998 (MiniLM, GPT-2), while a
//! model run in the wrong type entirely (float16 ranges, a missed cast back) falls far below.

use deepembed_tests::*;

const MIN_COSINE: f64 = 0.999;

/// The smallest per-row cosine similarity between two row-major matrices, and the largest
/// absolute difference.
fn compare(a: &[f32], b: &[f32], dims: usize) -> (f64, f32) {
    assert_eq!(a.len(), b.len());
    let mut min_cos = f64::INFINITY;
    for (x, y) in a.chunks(dims).zip(b.chunks(dims)) {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        min_cos = min_cos.min(dot / (norm(x) * norm(y)));
    }
    (min_cos, max_abs_diff(a, b).0)
}

fn assert_close_but_not_equal(what: &str, fp32: &[f32], bf16: &[f32], dims: usize) {
    let (min_cos, diff) = compare(fp32, bf16, dims);
    eprintln!("{what}: bf16 against fp32: min cosine {min_cos:.6}, max abs diff {diff:e}");
    assert!(diff > 1e-6, "{what}: bf16 gave the float32 embeddings exactly: autocast did not switch on");
    assert!(min_cos >= MIN_COSINE, "{what}: bf16 drifted to a cosine similarity of {min_cos} (< {MIN_COSINE})");
}

#[test]
fn bf16_on_the_cpu_autocasts_a_vision_model() {
    let df = fixtures().join("vision").join("images.parquet");
    let out = scratch("precision-vision");
    let fp32 = read_parquet(&output_parquet(&embed_resnet18(&df, &out, &["--batch_size", "4"])));
    let bf16 = read_parquet(&output_parquet(&embed_resnet18(&df, &out, &["--batch_size", "4", "--precision", "bf16"])));
    assert_eq!(fp32.num_rows(), bf16.num_rows());
    assert_close_but_not_equal("resnet18", &embedding_matrix(&fp32, 512), &embedding_matrix(&bf16, 512), 512);
    // Written as float32, like every run.
    assert_eq!(bf16.column_by_name("0").unwrap().data_type(), &arrow::datatypes::DataType::Float32);
}

#[test]
fn bf16_on_the_cpu_autocasts_a_text_model() {
    let dir = fixtures().join("text");
    let cases = fixture_cases("text");
    let out = scratch("precision-text");
    for name in ["minilm-real", "gpt2-pretrained-tokenizer-json"] {
        let case = cases["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
        let dims = case["dims"].as_u64().unwrap() as usize;
        let df = dir.join(case["df"].as_str().unwrap());
        let mut args =
            vec![case["plugin"].as_str().unwrap(), "--df", df.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(case["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()));
        let run = |extra: &[&str]| {
            let batch = read_parquet(&output_parquet(&embed_ok(&[&args[..], extra].concat(), &[])));
            // The embedding columns: all Float32 ones, in order (embed0000... or "0"...).
            let names: Vec<String> = batch
                .schema()
                .fields()
                .iter()
                .filter(|f| f.data_type() == &arrow::datatypes::DataType::Float32)
                .map(|f| f.name().clone())
                .collect();
            assert_eq!(names.len(), dims, "{name}: expected {dims} float32 columns, found {names:?}");
            named_matrix(&batch, &names)
        };
        assert_close_but_not_equal(name, &run(&[]), &run(&["--precision", "bf16"]), dims);
    }
}

/// Embeddings no downstream model can use are reported, not passed over in silence: a ResNet-18
/// whose last BatchNorm has a negative running variance in three channels (torchvision's own
/// model gives NaN there too) writes NaN in those three columns of every row, and the run ends
/// with one warning counting the rows and naming the first.
#[test]
fn rows_with_nan_embeddings_are_counted_in_a_warning() {
    let out = scratch("precision-nan");
    let weights = out.join("resnet18-nan.pth");
    let made = std::process::Command::new(python())
        .args([
            "-c",
            "import sys, torch, torchvision\n\
             torch.manual_seed(0)\n\
             state = torchvision.models.resnet18(weights=None).state_dict()\n\
             state['layer4.1.bn2.running_var'][:3] = -1.0\n\
             torch.save(state, sys.argv[1])",
            weights.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let df = fixtures().join("vision").join("images.parquet");
    let run = deepembed(&[
        "embed",
        "vision",
        "--df",
        df.to_str().unwrap(),
        "--model_version",
        "resnet18",
        "--use_case",
        "pretrained",
        "--model_weights",
        weights.to_str().unwrap(),
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--quiet",
    ]);
    let log = stderr(&run);
    assert!(run.status.success(), "{log}");
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let batch = read_parquet(&output_parquet(std::path::Path::new(summary["output_dir"].as_str().unwrap())));
    let embeddings = embedding_matrix(&batch, 512);
    let nan_columns: Vec<usize> = (0..512).filter(|&d| embeddings.chunks(512).all(|row| row[d].is_nan())).collect();
    assert_eq!(nan_columns, [0, 1, 2], "NaN where the variance is negative, and only there");
    let rows = batch.num_rows();
    let warning = format!("{rows} row(s) have NaN or infinite embedding values (the first: input row 0)");
    assert!(log.contains(&warning), "expected '{warning}' in:\n{log}");
}

//! Bad input gets a clear error naming the row, column, file or parameter, a non-zero exit, and
//! leaves no output directory behind.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Schema;
use deepembed_tests::*;
use std::path::Path;

fn vision_dir() -> std::path::PathBuf {
    fixtures().join("vision")
}

/// Runs a failing command and returns its stderr, checking that nothing was left in `out`.
fn fails(args: &[&str], out: &Path) -> String {
    let output = deepembed_env(args, &[("TORCH_HOME", vision_dir().join("torch_home").to_str().unwrap())]);
    let err = stderr(&output);
    assert!(!output.status.success(), "expected failure for {args:?}, got success:\n{err}");
    assert_eq!(output.status.code(), Some(1), "exit code for {args:?}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(out).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "a failed run left {leftovers:?} behind");
    err
}

/// `embed vision --df DF --model_version resnet18 ARGS... --out OUT`, where ARGS may name
/// another --model_version.
fn vision_args<'a>(df: &'a Path, args: &[&'a str], out: &'a Path) -> Vec<&'a str> {
    let mut all = vec!["embed", "vision", "--df", df.to_str().unwrap()];
    if !args.contains(&"--model_version") {
        all.extend_from_slice(&["--model_version", "resnet18"]);
    }
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().unwrap()]);
    all
}

/// [`fails`] for [`vision_args`].
fn vision_fails(df: &Path, args: &[&str], out: &Path) -> String {
    fails(&vision_args(df, args, out), out)
}

#[test]
fn missing_input_file_is_named() {
    let out = scratch("err-missing-input");
    let err = vision_fails(Path::new("/nonexistent/data.parquet"), &[], &out);
    assert!(err.contains("/nonexistent/data.parquet") && err.contains("does not exist"), "{err}");
}

#[test]
fn missing_image_column_lists_the_columns_found() {
    let out = scratch("err-missing-column");
    let df = vision_dir().join("images.parquet");
    let err = vision_fails(&df, &["--image_column", "pictures"], &out);
    assert!(err.contains("'pictures'") && err.contains("patient_id, images, labels, site, age"), "{err}");
}

#[test]
fn undecodable_image_names_the_row() {
    let out = scratch("err-decode");
    let df = vision_dir().join("bad_images.parquet");
    let err = vision_fails(&df, &[], &out);
    assert!(err.contains("row 3") && err.contains("--on_error skip"), "{err}");
}

#[test]
fn on_error_skip_records_skipped_rows() {
    let out = scratch("skip");
    let df = vision_dir().join("bad_images.parquet");
    let torch_home = vision_dir().join("torch_home");
    let args = vision_args(&df, &["--on_error", "skip", "--batch_size", "3"], &out);
    // `embed_ok` adds the `embed`.
    let dir = embed_ok(&args[1..], &[("TORCH_HOME", torch_home.to_str().unwrap())]);
    let batch = read_parquet(&output_parquet(&dir));
    assert_eq!(batch.num_rows(), 6, "8 rows minus the 2 bad ones");
    let skipped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("skipped_rows.json")).unwrap()).unwrap();
    let rows: Vec<u64> = skipped.as_array().unwrap().iter().map(|s| s["row"].as_u64().unwrap()).collect();
    assert_eq!(rows, vec![3, 5]);
    assert!(skipped[1]["reason"].as_str().unwrap().contains("null"));
    let details: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("embedding_details.json")).unwrap()).unwrap();
    assert_eq!(details["skipped_rows"], 2);
    assert_eq!(details["rows"], 6);
    // The surviving rows keep their pass-through values, in order.
    let ids = batch.column_by_name("patient_id").unwrap();
    let ids: Vec<String> = (0..6).map(|i| arrow::util::display::array_value_to_string(ids, i).unwrap()).collect();
    assert_eq!(ids, ["P000", "P001", "P002", "P004", "P006", "P007"]);
}

/// Rows left out of a batch leave gaps in the batch the model gets (a window's images go to the
/// model's device together, from the first usable one to the last, and the bad ones are dropped
/// there): each surviving row must get its own image's embedding, as in a run without the bad
/// rows. The input's first 8 images, with rows 0, 2 and 5 made null, in one batch of 8: gaps at
/// the batch's start and in its middle.
#[test]
fn skipped_rows_leave_the_other_rows_embeddings_as_they_were() {
    let (gaps_out, whole_out) = (scratch("skip-gaps"), scratch("skip-gaps-whole"));
    let images = read_parquet(&vision_dir().join("images.parquet")).slice(0, 8);
    let bad = [0, 2, 5];
    let column = images.column_by_name("images").unwrap().as_binary::<i32>();
    let holed: arrow::array::BinaryArray =
        (0..8).map(|i| (!bad.contains(&i)).then(|| column.value(i).to_vec())).collect();
    let schema = images.schema();
    let position = schema.index_of("images").unwrap();
    let mut columns = images.columns().to_vec();
    columns[position] = std::sync::Arc::new(holed);
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(f.is_nullable() || f.name() == "images"))
        .collect();
    let input = gaps_out.join("holed.parquet");
    write_parquet(&input, &RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).unwrap());

    let with_gaps = embed_resnet18(&input, &gaps_out, &["--on_error", "skip", "--batch_size", "8"]);
    let whole = embed_resnet18(&vision_dir().join("images.parquet"), &whole_out, &["--batch_size", "8"]);
    let dims = 512;
    let got = embedding_matrix(&read_parquet(&output_parquet(&with_gaps)), dims);
    let all = embedding_matrix(&read_parquet(&output_parquet(&whole)), dims);
    let kept: Vec<usize> = (0..8).filter(|i| !bad.contains(i)).collect();
    assert_eq!(got.len(), kept.len() * dims);
    for (k, &row) in kept.iter().enumerate() {
        let (ours, theirs) = (&got[k * dims..(k + 1) * dims], &all[row * dims..(row + 1) * dims]);
        // The same images in batches of another size: libtorch's CPU convolutions may block a
        // batch differently, so the last bits may differ; another image's embedding differs by
        // far more.
        let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5, "row {row} (output row {k}) differs by {worst} from the run without bad rows");
    }
}

#[test]
fn missing_pretrained_weights_say_which_file_to_put_where() {
    let out = scratch("err-no-weights");
    let df = vision_dir().join("images.parquet");
    let empty_home = scratch("empty-torch-home");
    let args = vision_args(&df, &["--model_version", "resnet50"], &out);
    let output = deepembed_env(&args, &[("TORCH_HOME", empty_home.to_str().unwrap())]);
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(
        err.contains("resnet50-0676ba61.pth")
            && err.contains(&empty_home.join("hub/checkpoints").display().to_string()),
        "{err}"
    );
}

#[test]
fn weights_of_another_model_version_are_refused() {
    let out = scratch("err-wrong-version");
    let df = vision_dir().join("images.parquet");
    let r18 = vision_dir().join("torch_home/hub/checkpoints/resnet18-f37072fd.pth");
    let err = vision_fails(&df, &["--model_version", "resnet34", "--model_weights", r18.to_str().unwrap()], &out);
    assert!(err.contains("not a torchvision resnet34 weights file") && err.contains("missing weights"), "{err}");
    // The message names both versions: the one asked for and the one the file holds.
    assert!(err.contains("--model_version is resnet34 but the weights are a resnet18"), "{err}");
}

#[test]
fn head_flags_that_contradict_the_checkpoint_name_flag_value_and_shape() {
    let out = scratch("err-head");
    let df = vision_dir().join("images.parquet");
    let ckpt = vision_dir().join("finetuned/finetuned-resnet18-a2-cls/model_weights.pth");
    let with = |extra: &[&str]| -> String {
        let args = [&["--use_case", "finetuned", "--model_weights", ckpt.to_str().unwrap()], extra].concat();
        vision_fails(&df, &args, &out)
    };
    let err = with(&["--embed_size", "100"]);
    assert!(err.contains("--embed_size 100") && err.contains("[64, 512]"), "{err}");
    let err = with(&["--num_classes", "9"]);
    assert!(err.contains("--num_classes 9") && err.contains("fc2.weight") && err.contains("[4, 64]"), "{err}");
    let err = with(&["--added_layers", "1"]);
    assert!(err.contains("--added_layers 1") && err.contains("fc2"), "{err}");
    let err = with(&["--model_version", "resnet50"]);
    assert!(err.contains("fc1.weight has shape [64, 512]") && err.contains("--model_version"), "{err}");
}

#[test]
fn unknown_plugin_lists_the_known_ones() {
    let output = deepembed(&["embed", "audio", "--df", "x.parquet"]);
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(
        err.contains("unknown plugin 'audio'")
            && err.contains("known plugins: deepar, gandalf, gpt2, mbert, tabpfn, vision")
            && err.contains("searched:"),
        "{err}"
    );
}

#[test]
fn an_impossible_cuda_request_says_why() {
    let out = scratch("err-cuda");
    let df = vision_dir().join("images.parquet");
    let output = deepembed(&vision_args(&df, &["--device", "cuda:7"], &out));
    let err = stderr(&output);
    if output.status.success() {
        panic!("a machine with 8 CUDA devices? {err}");
    }
    assert!(err.contains("--device cuda:7"), "{err}");
}

#[test]
fn a_bad_batch_size_is_an_error_naming_the_flag() {
    let out = scratch("err-batch-size");
    let df = vision_dir().join("images.parquet");
    for bad in ["0", "x", "-1"] {
        // Not `fails`: a value clap refuses exits with clap's status, 2.
        let output = deepembed(&vision_args(&df, &["--batch_size", bad], &out));
        let err = stderr(&output);
        assert!(!output.status.success(), "--batch_size {bad} was accepted");
        assert!(err.contains("--batch_size") && err.contains(bad), "--batch_size {bad}: {err}");
        assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    }
}

/// Weights of the wrong rank or shape, written by torch itself, fail at load with one line
/// naming the file and key, never a panic or a libtorch backtrace.
#[test]
fn a_weight_of_the_wrong_shape_is_one_line_naming_file_and_key() {
    let out = scratch("err-shape");
    let df = vision_dir().join("images.parquet");
    let good = vision_dir().join("finetuned/finetuned-resnet18-a2-cls/model_weights.pth");
    let script = r#"
import sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
sd[sys.argv[2]] = torch.tensor(1.5) if sys.argv[3] == "scalar" else torch.zeros(int(sys.argv[3]))
torch.save(sd, sys.argv[4])
"#;
    for (key, replacement, expected) in [
        ("fc2.weight", "scalar", "fc2.weight has shape [], expected [_, 64]"),
        ("fc1.bias", "7", "fc1.bias has shape [7], expected [64]"),
        ("model.layer1.0.conv1.weight", "3", "layer1.0.conv1.weight"),
    ] {
        let bad = out.with_file_name(format!("bad-{key}.pth"));
        let made = std::process::Command::new(python())
            .args(["-c", script, good.to_str().unwrap(), key, replacement, bad.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let err = vision_fails(&df, &["--use_case", "finetuned", "--model_weights", bad.to_str().unwrap()], &out);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{key}: one error line:\n{err}");
        assert!(errors[0].contains(expected) && errors[0].contains(bad.to_str().unwrap()), "{key}: {err}");
        // libtorch's own errors carry a C++ backtrace starting so.
        assert!(!err.contains("Exception raised from"), "{key}: {err}");
    }
}

/// A decompression bomb (a small PNG whose header claims 30000x30000 pixels) is refused from
/// its header as a bad row: it fails the run naming the row, or with --on_error skip is left out
/// while the other rows are embedded.
#[test]
fn a_decompression_bomb_is_a_bad_row() {
    let out = scratch("bomb");
    let df = out.with_file_name("bomb.parquet");
    let script = r#"
import struct, sys, zlib, pandas as pd
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
row = zlib.compress(b"\0" * (1 + 3 * 30000))
bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", row) + chunk(b"IEND", b"")
images = pd.read_parquet(sys.argv[1]).head(4)
images.loc[2, "images"] = bomb
images.to_parquet(sys.argv[2])
"#;
    let made = std::process::Command::new(python())
        .args(["-c", script, vision_dir().join("images.parquet").to_str().unwrap(), df.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let err = vision_fails(&df, &[], &out);
    assert!(err.contains("row 2") && err.contains("30000x30000") && err.contains("--max_image_pixels"), "{err}");
    let skipping = vision_args(&df, &["--on_error", "skip"], &out);
    // `embed_ok` adds the `embed`.
    let dir = embed_ok(&skipping[1..], &[("TORCH_HOME", vision_dir().join("torch_home").to_str().unwrap())]);
    assert_eq!(read_parquet(&output_parquet(&dir)).num_rows(), 3);
    let skipped = std::fs::read_to_string(dir.join("skipped_rows.json")).unwrap();
    assert!(skipped.contains("\"row\": 2") && skipped.contains("decompression-bomb"), "{skipped}");
}

/// Weights of another family fail naming both models: a DeepTune resnet18 checkpoint given as
/// densenet121, and torchvision's vgg11 file given as efficientnet_b0.
#[test]
fn weights_of_another_family_name_both_models() {
    let out = scratch("err-wrong-family");
    let df = vision_dir().join("images.parquet");
    let resnet = vision_dir().join("finetuned/finetuned-resnet18-a2-cls/model_weights.pth");
    let vgg = vision_dir().join("torch_home/hub/checkpoints/vgg11-8a719046.pth");
    for (use_case, version, weights, found) in
        [("finetuned", "densenet121", &resnet, "resnet18"), ("pretrained", "efficientnet_b0", &vgg, "vgg11")]
    {
        let args = ["--use_case", use_case, "--model_version", version, "--model_weights", weights.to_str().unwrap()];
        let err = vision_fails(&df, &args, &out);
        let expected = format!("--model_version is {version} but the weights are a {found}");
        assert!(err.contains(&expected), "{version}: {err}");
    }
}

/// SigLIP with one added layer: DeepTune's "embedding" would be the class logits; refused.
#[test]
fn siglip_with_one_added_layer_is_refused_as_class_logits() {
    let out = scratch("err-siglip-a1");
    let df = vision_dir().join("images.parquet");
    let ckpt = vision_dir().join("siglip/finetuned-a1");
    let args = ["--use_case", "finetuned", "--model_version", "siglip", "--model_weights", ckpt.to_str().unwrap()];
    let err = vision_fails(&df, &args, &out);
    assert!(err.contains("class logits"), "{err}");
}

/// float16 is a CUDA feature: on the CPU it is refused before anything runs, naming the flag and
/// what to use instead (bf16 runs there: tests/precision.rs).
#[test]
fn fp16_on_the_cpu_is_refused_naming_the_flag() {
    let out = scratch("err-precision");
    let df = vision_dir().join("images.parquet");
    let err = vision_fails(&df, &["--device", "cpu", "--precision", "fp16"], &out);
    assert!(err.contains("--precision fp16") && err.contains("needs a CUDA device"), "{err}");
    assert!(err.contains("--precision bf16") && err.contains("--precision fp32"), "{err}");
}

/// GPU decoding is a CUDA feature too: on the CPU it is refused before anything runs, naming the
/// flag and what to do instead.
#[test]
fn decode_gpu_on_the_cpu_is_refused_naming_the_flag() {
    let out = scratch("err-decode-gpu");
    let df = vision_dir().join("images.parquet");
    let err = vision_fails(&df, &["--device", "cpu", "--decode", "gpu"], &out);
    assert!(err.contains("--decode gpu needs a CUDA device") && err.contains("leave --decode at cpu"), "{err}");
}

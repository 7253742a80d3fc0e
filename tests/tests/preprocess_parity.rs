//! Our preprocessing against torchvision + Pillow on the generated images: identical floats.

use arrow::array::{Array, AsArray};
use deepembed_tests::*;
use deepembed_vision::image::{preprocess, PIXELS};

#[test]
fn preprocessed_tensors_are_identical_to_pillow_and_torchvision() {
    let dir = fixtures().join("vision");
    let batch = read_parquet(&dir.join("images.parquet"));
    let reference = read_f32(&dir.join("preprocessed.f32"));
    let images = batch.column_by_name("images").unwrap().as_binary::<i32>();
    assert_eq!(reference.len(), images.len() * PIXELS);
    let mut failures = Vec::new();
    for (i, bytes) in images.iter().enumerate() {
        let ours = preprocess(bytes.unwrap()).unwrap();
        let theirs = &reference[i * PIXELS..(i + 1) * PIXELS];
        let differing = ours.iter().zip(theirs).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        if differing > 0 {
            let (max, _) = max_abs_diff(&ours, theirs);
            failures.push(format!("image {i}: {differing} values differ, max {max}"));
        }
    }
    assert!(failures.is_empty(), "preprocessing differs from the reference:\n{}", failures.join("\n"));
}

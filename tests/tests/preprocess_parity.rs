//! Our preprocessing against torchvision + Pillow on the generated images: identical floats,
//! both from the CPU path (`preprocess`) and from the plugin's path (bytes resized on the CPU,
//! into a window buffer, then normalised by libtorch as on the model's device); and on the other
//! formats Pillow opens (BMP, GIF, TIFF, WebP, CMYK JPEG), with the variants we refuse named.

use arrow::array::{Array, AsArray};
use deepembed_sdk::Precision;
use deepembed_tests::*;
use deepembed_vision::image::{preprocess, resize_into, Limits, Transform, PIXELS, SIZE};
use deepembed_vision::normalize::Normalizer;
use deepembed_vision::window_buffers::WindowBuffers;

/// Values of `ours` whose bits differ from the reference image `i`'s, as a failure line.
fn compare(i: usize, path: &str, ours: &[f32], reference: &[f32], failures: &mut Vec<String>) {
    let theirs = &reference[i * PIXELS..(i + 1) * PIXELS];
    let differing = ours.iter().zip(theirs).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    if differing > 0 {
        let (max, _) = max_abs_diff(ours, theirs);
        failures.push(format!("image {i} ({path}): {differing} values differ, max {max}"));
    }
}

#[test]
fn preprocessed_tensors_are_identical_to_pillow_and_torchvision() {
    let dir = fixtures().join("vision");
    let batch = read_parquet(&dir.join("images.parquet"));
    let reference = read_f32(&dir.join("preprocessed.f32"));
    let images = batch.column_by_name("images").unwrap().as_binary::<i32>();
    assert_eq!(reference.len(), images.len() * PIXELS);
    let normalizer = Normalizer::new(&Transform::IMAGENET, tch::Device::Cpu, Precision::Fp32);
    // Half precision hands the model channels-last floats: another layout, the same values.
    let channels_last = Normalizer::new(&Transform::IMAGENET, tch::Device::Cpu, Precision::Bf16);
    let buffers = WindowBuffers::new(tch::Device::Cpu);
    let mut failures = Vec::new();
    for (i, bytes) in images.iter().enumerate() {
        let bytes = bytes.unwrap();
        compare(i, "cpu", &preprocess(bytes).unwrap(), &reference, &mut failures);
        // As a run does it: resized into a window's buffer, which hands the model a view.
        let mut window = buffers.take(PIXELS);
        resize_into(bytes, window.bytes_mut(), &Limits::default(), &Transform::IMAGENET).unwrap();
        let resized = window.to_device(0..PIXELS).view([1, SIZE as i64, SIZE as i64, 3]);
        let device = Vec::<f32>::try_from(normalizer.apply(&resized).view([-1])).unwrap();
        compare(i, "device", &device, &reference, &mut failures);
        let nhwc = channels_last.apply(&resized);
        assert_eq!(nhwc.stride()[1], 1, "channels-last input has channels as its innermost dimension");
        let nhwc = Vec::<f32>::try_from(nhwc.contiguous().view([-1])).unwrap();
        compare(i, "device, channels-last", &nhwc, &reference, &mut failures);
    }
    assert!(failures.is_empty(), "preprocessing differs from the reference:\n{}", failures.join("\n"));
}

/// BMP, GIF, TIFF (uncompressed, LZW, deflate, PackBits; grey, 16-bit grey, RGBA, 1-bit, CMYK),
/// WebP (lossless and lossy, with alpha) and CMYK JPEG: the same floats as Pillow + torchvision.
#[test]
fn other_image_formats_are_identical_to_pillow() {
    let dir = fixtures().join("vision");
    let batch = read_parquet(&dir.join("formats.parquet"));
    let reference = read_f32(&dir.join("formats_preprocessed.f32"));
    let images = batch.column_by_name("images").unwrap().as_binary::<i32>();
    let formats = batch.column_by_name("format").unwrap().as_string::<i32>();
    assert_eq!(reference.len(), images.len() * PIXELS);
    assert!(images.len() >= 15, "the generator wrote {} images", images.len());
    let mut failures = Vec::new();
    for (i, bytes) in images.iter().enumerate() {
        match preprocess(bytes.unwrap()) {
            Ok(ours) => compare(i, formats.value(i), &ours, &reference, &mut failures),
            Err(e) => failures.push(format!("image {i} ({}): {e:#}", formats.value(i))),
        }
    }
    assert!(failures.is_empty(), "these formats differ from Pillow's:\n{}", failures.join("\n"));
}

/// A JPEG-compressed TIFF would go through another JPEG decoder than Pillow's, and a palette
/// TIFF is not read: each refused, saying what to do instead.
#[test]
fn tiffs_we_do_not_read_as_pillow_are_refused_with_what_to_do() {
    let batch = read_parquet(&fixtures().join("vision").join("formats_refused.parquet"));
    let images = batch.column_by_name("images").unwrap().as_binary::<i32>();
    let err = format!("{:#}", preprocess(images.value(0)).unwrap_err());
    assert!(err.contains("TIFF") && err.contains("JPEG-compressed") && err.contains("LZW"), "{err}");
    let err = format!("{:#}", preprocess(images.value(1)).unwrap_err());
    assert!(err.contains("palette TIFF is not supported") && err.contains("save the image as RGB"), "{err}");
}

//! The plugin's preprocessing on a device against the reference: each JPEG resized on the CPU,
//! normalised on `--device` exactly as a run does (`WindowBuffers`, `Normalizer`), read back and
//! compared bit for bit with torchvision + Pillow's floats. The parity test does this on the CPU; this is the same
//! check for a GPU (the GPU check runs it), where libtorch's kernels are different code.
//!
//!   device_preprocess --images DIR --reference preprocessed.f32 [--device cuda:0]
//!
//! DIR holds the images as files whose sorted order is the reference's order; the reference is
//! the test generator's `preprocessed.f32` (N x 3 x 224 x 224 little-endian f32). Prints one line
//! of JSON on stdout and exits non-zero when any value differs.

use std::path::PathBuf;

mod common;

use anyhow::{bail, Context, Result};
use common::parse_device;
use deepembed_sdk::Precision;
use deepembed_vision::image::{resize_into, Limits, Transform, PIXELS, SIZE};
use deepembed_vision::normalize::Normalizer;
use deepembed_vision::window_buffers::WindowBuffers;
use tch::Device;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut images, mut reference, mut device) = (None, None, Device::Cuda(0));
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--images" => images = Some(PathBuf::from(value)),
            "--reference" => reference = Some(PathBuf::from(value)),
            "--device" => device = parse_device(&value)?,
            other => bail!("unknown flag {other}"),
        }
    }
    let images = images.context("--images is required")?;
    let reference = reference.context("--reference is required")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&images)
        .with_context(|| format!("reading {}", images.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let reference: Vec<f32> = std::fs::read(&reference)
        .with_context(|| format!("reading {}", reference.display()))?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if reference.len() != files.len() * PIXELS {
        bail!("the reference holds {} values; {} images need {}", reference.len(), files.len(), files.len() * PIXELS);
    }

    // One batch of every image, as a window reaches the device: resized into a window buffer
    // (pinned memory on CUDA) and copied from it.
    let mut resized = WindowBuffers::new(device).take(files.len() * PIXELS);
    for (file, out) in files.iter().zip(resized.bytes_mut().chunks_exact_mut(PIXELS)) {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        resize_into(&bytes, out, &Limits::default(), &Transform::IMAGENET)
            .with_context(|| format!("preprocessing {}", file.display()))?;
    }
    let batch = resized.to_device(0..files.len() * PIXELS).view([files.len() as i64, SIZE as i64, SIZE as i64, 3]);
    let normalized = Normalizer::new(&Transform::IMAGENET, device, Precision::Fp32).apply(&batch);
    let ours = Vec::<f32>::try_from(normalized.to_device(Device::Cpu).view([-1]))?;

    let differing: Vec<usize> = (0..files.len())
        .filter(|&i| {
            let range = i * PIXELS..(i + 1) * PIXELS;
            ours[range.clone()].iter().zip(&reference[range]).any(|(a, b)| a.to_bits() != b.to_bits())
        })
        .collect();
    let values = ours.iter().zip(&reference).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    println!(
        "{}",
        serde_json::json!({"device": format!("{device:?}"), "images": files.len(), "values": ours.len(),
                           "differing_values": values, "differing_images": differing})
    );
    if values > 0 {
        bail!("{values} values in {} images differ from the reference", differing.len());
    }
    Ok(())
}

//! Image preprocessing, bit-identical to the reference pipelines: Pillow decode and
//! `convert('RGB')`, a Pillow resize to a square, then to float in [0, 1] and normalised per
//! channel. [`Transform::IMAGENET`] is DeepTune's torchvision transform: `Resize((224, 224))`
//! (bilinear), `ToTensor`, `Normalize(ImageNet mean, std)`.
//!
//! Images larger than [`Limits`] allows are refused from their header, before decoding.

#![forbid(unsafe_code)]

pub mod decode;
pub mod jpeg_frame;
pub mod resize;

use anyhow::Result;

pub use decode::{Limits, RgbImage, PILLOW_MAX_IMAGE_PIXELS};
pub use resize::Filter;

/// DeepTune's input side for the torchvision families.
pub const SIZE: usize = 224;
/// Floats per preprocessed image under [`Transform::IMAGENET`] (3 x 224 x 224).
pub const PIXELS: usize = 3 * SIZE * SIZE;

/// How an image becomes a model input: resized to `size` x `size` with `filter`, then
/// `(x / 255 - mean) / std` per channel, CHW.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    pub size: usize,
    pub filter: Filter,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Transform {
    /// torchvision's ImageNet normalisation at 224 x 224, bilinear.
    pub const IMAGENET: Transform =
        Transform { size: SIZE, filter: Filter::Bilinear, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

    /// The same transform at another side length (ViT weights trained at 384 or 518).
    pub const fn imagenet(size: usize) -> Transform {
        Transform { size, ..Transform::IMAGENET }
    }

    /// Floats per preprocessed image.
    pub const fn pixels(&self) -> usize {
        3 * self.size * self.size
    }
}

/// [`preprocess_into_with`] under the default (Pillow's) [`Limits`] and [`Transform::IMAGENET`].
pub fn preprocess_into(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    preprocess_into_with(bytes, out, &Limits::default(), &Transform::IMAGENET)
}

/// Decodes and preprocesses one image into `out` (CHW, `transform.pixels()` floats), refusing
/// images over `limits`.
pub fn preprocess_into_with(bytes: &[u8], out: &mut [f32], limits: &Limits, transform: &Transform) -> Result<()> {
    if out.len() != transform.pixels() {
        anyhow::bail!("the output buffer holds {} floats; it must hold {}", out.len(), transform.pixels());
    }
    let mut resized = vec![0u8; transform.pixels()];
    resize_into(bytes, &mut resized, limits, transform)?;
    normalize_into(&resized, out, transform);
    Ok(())
}

/// Decodes one image and resizes it into `out` (`transform.pixels()` bytes, row-major RGB,
/// HWC): the preprocessing before the conversion to floats, which a model may do on its device.
pub fn resize_into(bytes: &[u8], out: &mut [u8], limits: &Limits, transform: &Transform) -> Result<()> {
    if out.len() != transform.pixels() {
        anyhow::bail!("the output buffer holds {} bytes; it must hold {}", out.len(), transform.pixels());
    }
    let image = decode::decode(bytes, limits)?;
    if image.width == 0 || image.height == 0 {
        anyhow::bail!("the image has no pixels ({}x{})", image.width, image.height);
    }
    resize::resize_into(&image, transform.size, transform.size, transform.filter, out);
    Ok(())
}

/// Resized RGB bytes (HWC) to the model's floats (CHW): `(x / 255 - mean) / std`, the same f32
/// operations in the same order as torchvision's `ToTensor` then `Normalize`.
pub fn normalize_into(resized: &[u8], out: &mut [f32], transform: &Transform) {
    let plane = transform.size * transform.size;
    for c in 0..3 {
        let (mean, std) = (transform.mean[c], transform.std[c]);
        for (v, rgb) in out[c * plane..][..plane].iter_mut().zip(resized.chunks_exact(3)) {
            let x = rgb[c] as f32 / 255.0;
            *v = (x - mean) / std;
        }
    }
}

/// [`preprocess_into`] returning a fresh buffer.
pub fn preprocess(bytes: &[u8]) -> Result<Vec<f32>> {
    preprocess_with(bytes, &Limits::default(), &Transform::IMAGENET)
}

/// [`preprocess_into_with`] returning a fresh buffer.
pub fn preprocess_with(bytes: &[u8], limits: &Limits, transform: &Transform) -> Result<Vec<f32>> {
    let mut out = vec![0f32; transform.pixels()];
    preprocess_into_with(bytes, &mut out, limits, transform)?;
    Ok(out)
}

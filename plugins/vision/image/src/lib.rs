//! Image preprocessing, bit-identical to DeepTune's: Pillow decode and `convert('RGB')`,
//! `Resize((224, 224))` with Pillow bilinear, `ToTensor`, `Normalize(ImageNet mean, std)`.
//!
//! Images larger than [`Limits`] allows are refused from their header, before decoding.

#![forbid(unsafe_code)]

pub mod decode;
pub mod resize;

use anyhow::Result;

pub use decode::{Limits, RgbImage, PILLOW_MAX_IMAGE_PIXELS};

pub const SIZE: usize = 224;
/// Floats per preprocessed image (3 x 224 x 224).
pub const PIXELS: usize = 3 * SIZE * SIZE;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// [`preprocess_into_with`] under the default (Pillow's) [`Limits`].
pub fn preprocess_into(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    preprocess_into_with(bytes, out, &Limits::default())
}

/// Decodes and preprocesses one image into `out` (CHW, `PIXELS` floats), refusing images over
/// `limits`.
pub fn preprocess_into_with(bytes: &[u8], out: &mut [f32], limits: &Limits) -> Result<()> {
    if out.len() != PIXELS {
        anyhow::bail!("the output buffer holds {} floats; it must hold {PIXELS}", out.len());
    }
    let image = decode::decode(bytes, limits)?;
    if image.width == 0 || image.height == 0 {
        anyhow::bail!("the image has no pixels ({}x{})", image.width, image.height);
    }
    let resized = resize::resize_bilinear(&image, SIZE, SIZE);
    for c in 0..3 {
        let plane = &mut out[c * SIZE * SIZE..][..SIZE * SIZE];
        for (i, v) in plane.iter_mut().enumerate() {
            // The same f32 operations, in the same order, as ToTensor then Normalize.
            let x = resized.pixels[i * 3 + c] as f32 / 255.0;
            *v = (x - MEAN[c]) / STD[c];
        }
    }
    Ok(())
}

/// [`preprocess_into`] returning a fresh buffer.
pub fn preprocess(bytes: &[u8]) -> Result<Vec<f32>> {
    preprocess_with(bytes, &Limits::default())
}

/// [`preprocess_into_with`] returning a fresh buffer.
pub fn preprocess_with(bytes: &[u8], limits: &Limits) -> Result<Vec<f32>> {
    let mut out = vec![0f32; PIXELS];
    preprocess_into_with(bytes, &mut out, limits)?;
    Ok(out)
}

//! Encoded image bytes to 8-bit RGB pixels, as Pillow's `Image.open(...).convert('RGB')` gives.
//!
//! - [`jpeg`]: libjpeg-turbo (what Pillow uses), RGB and CMYK;
//! - [`png`]: the `png` crate, each colour type converted as Pillow converts its mode;
//! - [`others`]: BMP, GIF, TIFF and WebP through image-rs's decoders.
//!
//! Each reads the header first and refuses images over [`Limits::max_pixels`] before allocating
//! anything the size of the image, as Pillow's decompression-bomb check does.

mod jpeg;
mod others;
mod png;

use anyhow::{anyhow, bail, Context, Result};

/// Pillow's `Image.MAX_IMAGE_PIXELS`: it warns above this many pixels, and refuses above twice it.
pub const PILLOW_MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Progressive JPEGs with more scans than this are refused (Pillow has no such limit; no encoder
/// writes anywhere near it).
pub const MAX_JPEG_SCANS: u32 = 500;

/// Bounds on what [`decode`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Images with more pixels (width x height) than this are refused before they are decoded;
    /// those with more than half of it are decoded with a warning. `None`: no limit, no warning.
    ///
    /// The default, `2 * PILLOW_MAX_IMAGE_PIXELS`, makes both thresholds Pillow's defaults.
    pub max_pixels: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_pixels: Some(2 * PILLOW_MAX_IMAGE_PIXELS) }
    }
}

impl Limits {
    /// No limit: any size the header claims is allocated.
    pub const NONE: Limits = Limits { max_pixels: None };

    /// Refuses a `width` x `height` image over the limit; `Ok(true)` when it is over the warning
    /// threshold (half the limit) but still accepted.
    pub fn check(&self, width: u64, height: u64) -> Result<bool> {
        let Some(max) = self.max_pixels else { return Ok(false) };
        // Cannot overflow from a PNG or JPEG header (32 and 16 bits a side), but saturate anyway.
        let pixels = width.saturating_mul(height);
        if pixels > max {
            bail!(
                "the image is {width}x{height} = {pixels} pixels, over the limit of {max} pixels \
                 (a decompression-bomb guard, as Pillow's); if the image is legitimate, raise the \
                 limit with --max_image_pixels {pixels} or more"
            );
        }
        Ok(pixels > max / 2)
    }
}

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Decodes a JPEG, PNG, BMP, GIF, TIFF or WebP image within `limits`.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        jpeg::decode_jpeg(bytes, limits).context("cannot decode JPEG")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        png::decode_png(bytes, limits).context("cannot decode PNG")
    } else if let Some(format) = others::format_of(bytes) {
        others::decode_other(bytes, format, limits).with_context(|| format!("cannot decode {}", others::name(format)))
    } else if bytes.is_empty() {
        bail!("the image is empty (0 bytes)")
    } else {
        bail!("not a JPEG, PNG, BMP, GIF, TIFF or WebP image (starts with {:02x?})", &bytes[..bytes.len().min(8)])
    }
}

/// Pillow's CMYK to RGB (`cmyk2rgb`): each channel `(255 - k) - c (255 - k) / 255`, the
/// product rounded as Pillow's `MULDIV255`.
fn cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let nk = 255 - u32::from(k);
    let muldiv255 = |a: u8| {
        let t = u32::from(a) * nk + 128;
        ((t >> 8) + t) >> 8
    };
    [c, m, y].map(|v| (nk - muldiv255(v)) as u8)
}

/// Refuses a `width` x `height` image over `limits`, and warns above half of them, as Pillow
/// does; from the header, before anything the image's size is allocated.
pub fn check_size(width: usize, height: usize, limits: &Limits) -> Result<()> {
    if limits.check(width as u64, height as u64)? {
        log::warn!(
            "decoding a {width}x{height} image, over Pillow's {PILLOW_MAX_IMAGE_PIXELS}-pixel warning threshold; \
             it may be a decompression bomb"
        );
    }
    Ok(())
}

/// `width * height * 3` bytes, or an error rather than an overflow.
fn rgb_len(width: usize, height: usize) -> Result<usize> {
    width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(3))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| anyhow!("a {width}x{height} image does not fit in memory"))
}

//! BMP, GIF, TIFF and WebP through image-rs's decoders (lossless formats and lossy VP8 alike
//! decode to the pixels Pillow's decoders give), each colour type converted to RGB as Pillow
//! converts its mode. Some TIFF variants take their own path: 8-bit CMYK, whose conversion
//! image-rs rounds differently from Pillow, and grey with alpha and 32-bit float or integer
//! grey, which image-rs does not read, are converted from their raw samples here;
//! JPEG-compressed TIFF, whose JPEG decoder is not libjpeg, is refused.

use std::io::Cursor;

use anyhow::{bail, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat};

use super::{check_size, cmyk_to_rgb, Limits, RgbImage};

/// The format of `bytes` by its signature, if it is one decoded here.
pub(super) fn format_of(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(b"BM") {
        Some(ImageFormat::Bmp)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(ImageFormat::Tiff)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some(ImageFormat::WebP)
    } else {
        None
    }
}

/// The format's usual name, for messages.
pub(super) fn name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Bmp => "BMP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::WebP => "WebP",
        _ => "image",
    }
}

pub(super) fn decode_other(bytes: &[u8], format: ImageFormat, limits: &Limits) -> Result<RgbImage> {
    if format == ImageFormat::Tiff {
        // Pillow's TIFF reader (alone among its formats) applies the Orientation tag on load.
        let orientation = tiff::decoder::Decoder::new(Cursor::new(bytes))?
            .find_tag_unsigned::<u16>(tiff::tags::Tag::Orientation)?
            .unwrap_or(1);
        let image = match decode_tiff_variant(bytes, limits)? {
            Some(image) => image,
            None => decode_with_image_rs(bytes, format, limits)?,
        };
        return Ok(oriented(image, orientation));
    }
    decode_with_image_rs(bytes, format, limits)
}

fn decode_with_image_rs(bytes: &[u8], format: ImageFormat, limits: &Limits) -> Result<RgbImage> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    // The pixel limit below is Pillow's. image-rs's own allocation cap (512 MiB) would refuse
    // images Pillow opens, so it becomes what the largest image allowed needs (8 bytes a pixel
    // at 16-bit RGBA), still a bound on what a header can make it allocate.
    let mut image_limits = image::Limits::no_limits();
    image_limits.max_alloc = limits.max_pixels.map(|pixels| pixels.saturating_mul(8));
    reader.limits(image_limits);
    let decoder = reader.into_decoder()?;
    let (width, height) = decoder.dimensions();
    check_size(width as usize, height as usize, limits)?;
    let image = DynamicImage::from_decoder(decoder)?;
    Ok(RgbImage { width: width as usize, height: height as usize, pixels: to_rgb(image)? })
}

/// The image as `ImageOps.exif_transpose` turns it for a TIFF Orientation tag (1-8; others
/// leave it as it is): flips, quarter turns, and the two diagonal mirrors.
fn oriented(image: RgbImage, orientation: u16) -> RgbImage {
    let (w, h) = (image.width, image.height);
    let swaps = (5..=8).contains(&orientation);
    // For an output pixel (x, y), the input pixel it takes.
    let source: fn(usize, usize, usize, usize) -> (usize, usize) = match orientation {
        2 => |x, y, w, _| (w - 1 - x, y),
        3 => |x, y, w, h| (w - 1 - x, h - 1 - y),
        4 => |x, y, _, h| (x, h - 1 - y),
        5 => |x, y, _, _| (y, x),
        6 => |x, y, _, h| (y, h - 1 - x),
        7 => |x, y, w, h| (w - 1 - y, h - 1 - x),
        8 => |x, y, w, _| (w - 1 - y, x),
        _ => return image,
    };
    let (out_w, out_h) = if swaps { (h, w) } else { (w, h) };
    let mut pixels = Vec::with_capacity(image.pixels.len());
    for y in 0..out_h {
        for x in 0..out_w {
            let (sx, sy) = source(x, y, w, h);
            let at = 3 * (sy * w + sx);
            pixels.extend_from_slice(&image.pixels[at..at + 3]);
        }
    }
    RgbImage { width: out_w, height: out_h, pixels }
}

/// Pillow's `convert('RGB')` of each mode: grey replicated, alpha dropped (not composited),
/// the high byte of 16-bit colour samples, 16-bit grey ("I;16") clipped to 255.
fn to_rgb(image: DynamicImage) -> Result<Vec<u8>> {
    let high = |v: u16| (v >> 8) as u8;
    Ok(match image {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect(),
        DynamicImage::ImageLuma8(b) => b.pixels().flat_map(|p| [p[0]; 3]).collect(),
        DynamicImage::ImageLumaA8(b) => b.pixels().flat_map(|p| [p[0]; 3]).collect(),
        DynamicImage::ImageLuma16(b) => b.pixels().flat_map(|p| [p[0].min(255) as u8; 3]).collect(),
        DynamicImage::ImageLumaA16(b) => b.pixels().flat_map(|p| [high(p[0]); 3]).collect(),
        DynamicImage::ImageRgb16(b) => b.pixels().flat_map(|p| [high(p[0]), high(p[1]), high(p[2])]).collect(),
        DynamicImage::ImageRgba16(b) => b.pixels().flat_map(|p| [high(p[0]), high(p[1]), high(p[2])]).collect(),
        other => bail!("{:?} samples are not supported; save the image with 8-bit samples", other.color()),
    })
}

/// The TIFFs image-rs would decode differently from Pillow, or not at all, read with one parse
/// of the header: JPEG-compressed ones (compression 6 or 7: another JPEG decoder than Pillow's
/// libjpeg, a level off in places) are refused; the [`TiffVariant`]s are converted here from
/// their raw samples. `None`: image-rs decodes it.
fn decode_tiff_variant(bytes: &[u8], limits: &Limits) -> Result<Option<RgbImage>> {
    let mut tiff = tiff::decoder::Decoder::new(Cursor::new(bytes))?;
    let compression = tiff.find_tag_unsigned::<u16>(tiff::tags::Tag::Compression)?.unwrap_or(1);
    if matches!(compression, 6 | 7) {
        bail!("JPEG-compressed TIFF is not supported; save the image uncompressed, LZW or deflate, or as a JPEG file");
    }
    let photometric = tiff.find_tag_unsigned::<u16>(tiff::tags::Tag::PhotometricInterpretation)?;
    if photometric == Some(3) {
        bail!("palette TIFF is not supported; save the image as RGB (in Pillow: image.convert('RGB'))");
    }
    // Greyscale as Pillow reads it: black is zero (Pillow ignores "white is zero" for float
    // samples, and inverts 8-bit ones, which image-rs does too).
    let black_is_zero = photometric == Some(1);
    // A colour type the tiff crate does not know is left to image-rs, which words the refusal.
    let variant = match tiff.colortype() {
        Ok(tiff::ColorType::CMYK(8)) => TiffVariant::Cmyk,
        // The tiff crate calls grey with alpha two bands; Pillow reads it (as LA) when the
        // second is unassociated alpha.
        Ok(tiff::ColorType::Multiband { bit_depth: 8, num_samples: 2 })
            if black_is_zero && unassociated_alpha(&mut tiff)? =>
        {
            TiffVariant::GreyAlpha
        }
        Ok(tiff::ColorType::Gray(32)) if black_is_zero => TiffVariant::Grey32,
        _ => return Ok(None),
    };
    let (width, height) = tiff.dimensions()?;
    check_size(width as usize, height as usize, limits)?;
    // The size is within the pixel limit; the buffer is the image's samples, at most 4 bytes a
    // pixel in every variant.
    let mut tiff_limits = tiff::decoder::Limits::default();
    tiff_limits.decoding_buffer_size = (width as usize).saturating_mul(height as usize).saturating_mul(4);
    let mut tiff = tiff.with_limits(tiff_limits);
    if variant != TiffVariant::Grey32
        && tiff.find_tag_unsigned::<u16>(tiff::tags::Tag::PlanarConfiguration)?.unwrap_or(1) != 1
    {
        bail!("planar {} TIFF is not supported; save the image with interleaved samples", variant.name());
    }
    use tiff::decoder::DecodingResult;
    let pixels: Vec<u8> = match (variant, tiff.read_image()?) {
        (TiffVariant::Cmyk, DecodingResult::U8(samples)) => {
            samples.chunks_exact(4).flat_map(|p| cmyk_to_rgb([p[0], p[1], p[2], p[3]])).collect()
        }
        // Pillow's LA to RGB: grey replicated, alpha dropped.
        (TiffVariant::GreyAlpha, DecodingResult::U8(samples)) => {
            samples.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect()
        }
        // Pillow's F to L (`f2l`): 0 at or below zero, 255 at or above 255, else the integer
        // part; a NaN becomes 0. Rust's saturating cast is exactly that.
        (TiffVariant::Grey32, DecodingResult::F32(samples)) => samples.iter().flat_map(|&v| [v as u8; 3]).collect(),
        // Pillow's I to L: clipped to 0..=255.
        (TiffVariant::Grey32, DecodingResult::I32(samples)) => {
            samples.iter().flat_map(|&v| [v.clamp(0, 255) as u8; 3]).collect()
        }
        (variant, _) => bail!(
            "{} TIFF with these samples is not supported; save the image with {}",
            variant.name(),
            variant.supported()
        ),
    };
    if pixels.len() != width as usize * height as usize * 3 {
        bail!("the {} TIFF holds {} pixels' samples for {width}x{height} pixels", variant.name(), pixels.len() / 3);
    }
    Ok(Some(RgbImage { width: width as usize, height: height as usize, pixels }))
}

/// Whether the TIFF's one extra sample is unassociated alpha (`ExtraSamples` = 2).
fn unassociated_alpha(tiff: &mut tiff::decoder::Decoder<Cursor<&[u8]>>) -> Result<bool> {
    let extra = tiff.find_tag(tiff::tags::Tag::ExtraSamples)?.map(|v| v.into_u16_vec()).transpose()?;
    Ok(extra.as_deref() == Some(&[2]))
}

/// The TIFFs read from their raw samples here rather than by image-rs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TiffVariant {
    /// 8-bit CMYK, whose conversion image-rs rounds differently from Pillow (not inverted, as
    /// TIFF stores it, through Pillow's CMYK to RGB).
    Cmyk,
    /// 8-bit grey with alpha (Pillow's LA), which image-rs does not read.
    GreyAlpha,
    /// 32-bit float or signed integer grey (Pillow's F and I: microscopy, scientific imaging),
    /// which image-rs does not read.
    Grey32,
}

impl TiffVariant {
    fn name(self) -> &'static str {
        match self {
            TiffVariant::Cmyk => "CMYK",
            TiffVariant::GreyAlpha => "grey-with-alpha",
            TiffVariant::Grey32 => "32-bit greyscale",
        }
    }

    fn supported(self) -> &'static str {
        match self {
            TiffVariant::Cmyk | TiffVariant::GreyAlpha => "8-bit samples",
            TiffVariant::Grey32 => "float or signed integer samples",
        }
    }
}

//! Encoded image bytes to 8-bit RGB pixels, as Pillow's `Image.open(...).convert('RGB')` gives.
//!
//! JPEG goes through libjpeg-turbo (what Pillow uses), which decodes to the same pixels.
//! PNG goes through the `png` crate; the conversions below follow Pillow's for each PNG mode.
//!
//! Both read the header first and refuse images over [`Limits::max_pixels`] before allocating
//! anything the size of the image, as Pillow's decompression-bomb check does.

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

/// Decodes a JPEG or PNG within `limits`.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes, limits).context("cannot decode JPEG")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, limits).context("cannot decode PNG")
    } else if bytes.is_empty() {
        bail!("the image is empty (0 bytes)")
    } else {
        bail!("not a JPEG or PNG image (starts with {:02x?})", &bytes[..bytes.len().min(8)])
    }
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

fn decode_jpeg(bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    let mut decompressor = turbojpeg::Decompressor::new()?;
    // Each progressive scan revisits the whole image, so a small file of many empty scans over a
    // large image takes minutes (libjpeg-turbo's "TwoIssueswiththeJPEGStandard" report).
    // Encoders write about ten; libjpeg-turbo's own fuzzers stop at 500.
    decompressor.set_scan_limit(MAX_JPEG_SCANS)?;
    let header = decompressor.read_header(bytes)?;
    if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) {
        bail!("CMYK JPEGs are not supported; convert the image to RGB");
    }
    let (width, height) = (header.width, header.height);
    check_size(width, height, limits)?;
    let mut pixels = vec![0u8; rgb_len(width, height)?];
    let image = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    // Default flags: accurate integer IDCT and fancy upsampling, as Pillow's libjpeg settings.
    decompressor.decompress(bytes, image)?;
    Ok(RgbImage { width, height, pixels })
}

fn decode_png(bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    // Palette to RGB, low-bit grey to 8 bits (scaled, as Pillow's unpackers do), tRNS to alpha.
    decoder.set_transformations(png::Transformations::EXPAND);
    // IHDR only, so the size is checked before anything else is read or allocated.
    let (width, height) = decoder.read_header_info()?.size();
    check_size(width as usize, height as usize, limits)?;
    let mut reader = decoder.read_info()?;
    // At most 8 bytes a pixel (16-bit RGBA), so the limit bounds this buffer too.
    let size = reader.output_buffer_size().ok_or_else(|| anyhow!("a {width}x{height} PNG does not fit in memory"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf)?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let data = &buf[..frame.buffer_size()];
    let wide = frame.bit_depth == png::BitDepth::Sixteen;
    let channels = frame.color_type.samples();
    let sample_bytes = if wide { 2 } else { 1 };
    let stride = frame.line_size;
    let mut pixels = Vec::with_capacity(rgb_len(width, height)?);
    for y in 0..height {
        let row = &data[y * stride..];
        for x in 0..width {
            let px = &row[x * channels * sample_bytes..];
            // 16-bit samples are big-endian. Pillow keeps the high byte of colour samples, but
            // clips 16-bit grey ("I;16") to 255 when converting to RGB.
            let sample = |c: usize| px[c * sample_bytes];
            let grey = || -> u8 {
                if wide {
                    u16::from_be_bytes([px[0], px[1]]).min(255) as u8
                } else {
                    px[0]
                }
            };
            match frame.color_type {
                png::ColorType::Grayscale => {
                    let g = grey();
                    pixels.extend_from_slice(&[g, g, g]);
                }
                // Pillow's LA;16B keeps the high byte; alpha is dropped, not composited.
                png::ColorType::GrayscaleAlpha => {
                    let g = sample(0);
                    pixels.extend_from_slice(&[g, g, g]);
                }
                png::ColorType::Rgb | png::ColorType::Rgba => {
                    pixels.extend_from_slice(&[sample(0), sample(1), sample(2)]);
                }
                png::ColorType::Indexed => bail!("palette PNG was not expanded"),
            }
        }
    }
    Ok(RgbImage { width, height, pixels })
}

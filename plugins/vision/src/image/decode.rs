//! Encoded image bytes to 8-bit RGB pixels, as Pillow's `Image.open(...).convert('RGB')` gives.
//!
//! JPEG goes through libjpeg-turbo (what Pillow uses), which decodes to the same pixels.
//! PNG goes through the `png` crate; the conversions below follow Pillow's for each PNG mode.

use anyhow::{anyhow, bail, Context, Result};

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

pub fn decode(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes).context("cannot decode JPEG")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes).context("cannot decode PNG")
    } else if bytes.is_empty() {
        bail!("the image is empty (0 bytes)")
    } else {
        bail!("not a JPEG or PNG image (starts with {:02x?})", &bytes[..bytes.len().min(8)])
    }
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage> {
    let mut decompressor = turbojpeg::Decompressor::new()?;
    let header = decompressor.read_header(bytes)?;
    if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) {
        bail!("CMYK JPEGs are not supported; convert the image to RGB");
    }
    let (width, height) = (header.width, header.height);
    let mut pixels = vec![0u8; width * height * 3];
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

fn decode_png(bytes: &[u8]) -> Result<RgbImage> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    // Palette to RGB, low-bit grey to 8 bits (scaled, as Pillow's unpackers do), tRNS to alpha.
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or_else(|| anyhow!("PNG is too large"))?];
    let frame = reader.next_frame(&mut buf)?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let data = &buf[..frame.buffer_size()];
    let wide = frame.bit_depth == png::BitDepth::Sixteen;
    let channels = frame.color_type.samples();
    let sample_bytes = if wide { 2 } else { 1 };
    let stride = frame.line_size;
    let mut pixels = Vec::with_capacity(width * height * 3);
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

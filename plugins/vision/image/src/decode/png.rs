//! PNG through the `png` crate, each colour type converted to RGB as Pillow converts its mode.

use anyhow::{anyhow, bail, Result};

use super::{check_size, rgb_len, Limits, RgbImage};

pub(super) fn decode_png(bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
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

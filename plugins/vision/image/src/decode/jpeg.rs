//! JPEG through libjpeg-turbo, the library Pillow decodes with: the same pixels.

use anyhow::Result;

use super::{check_size, cmyk_to_rgb, rgb_len, Limits, RgbImage, MAX_JPEG_SCANS};

pub(super) fn decode_jpeg(bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    let mut decompressor = turbojpeg::Decompressor::new()?;
    // Each progressive scan revisits the whole image, so a small file of many empty scans over a
    // large image takes minutes (libjpeg-turbo's "TwoIssueswiththeJPEGStandard" report).
    // Encoders write about ten; libjpeg-turbo's own fuzzers stop at 500.
    decompressor.set_scan_limit(MAX_JPEG_SCANS)?;
    let header = decompressor.read_header(bytes)?;
    let (width, height) = (header.width, header.height);
    check_size(width, height, limits)?;
    if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) {
        return decode_cmyk(&mut decompressor, bytes, width, height);
    }
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

/// A CMYK (or YCCK) JPEG as Pillow reads it: libjpeg's CMYK samples, inverted (Pillow assumes
/// Adobe's convention, as Photoshop and Pillow itself write them), then Pillow's CMYK to RGB.
fn decode_cmyk(
    decompressor: &mut turbojpeg::Decompressor,
    bytes: &[u8],
    width: usize,
    height: usize,
) -> Result<RgbImage> {
    let cmyk_len = rgb_len(width, height)? / 3 * 4;
    let mut cmyk = vec![0u8; cmyk_len];
    let image = turbojpeg::Image {
        pixels: cmyk.as_mut_slice(),
        width,
        pitch: width * 4,
        height,
        format: turbojpeg::PixelFormat::CMYK,
    };
    decompressor.decompress(bytes, image)?;
    let pixels =
        cmyk.chunks_exact(4).flat_map(|p| cmyk_to_rgb([255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]])).collect();
    Ok(RgbImage { width, height, pixels })
}

//! Decompression bombs: tiny files whose headers claim huge images are refused from the header,
//! quickly and without allocating the image. The allocator below aborts the test binary on any
//! allocation past its ceiling, so "no big allocation" is checked, not assumed.

#![forbid(unsafe_code)]

use std::alloc::System;
use std::time::{Duration, Instant};

use cap::Cap;
use deepembed_image::{decode::decode, preprocess, Limits, PILLOW_MAX_IMAGE_PIXELS, PIXELS};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, 256 << 20);

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn small_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i * 7) as u8).collect();
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    out
}

/// A valid small PNG whose IHDR is rewritten (CRC included) to claim `width` x `height`.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = small_png(4, 4);
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn small_jpeg(width: usize, height: usize) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i * 7) as u8).collect();
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2).unwrap().to_vec()
}

/// A valid small JPEG whose start-of-frame is rewritten to claim `width` x `height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = small_jpeg(16, 16);
    let sof = jpeg.windows(2).position(|w| w[0] == 0xff && (0xc0..=0xc2).contains(&w[1])).expect("a SOF marker");
    // Marker (2), length (2), precision (1), then height and width.
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

fn assert_refused_quickly(bytes: &[u8], claimed: &str) {
    let start = Instant::now();
    let err = format!("{:#}", decode(bytes, &Limits::default()).err().expect("the bomb must be refused"));
    assert!(start.elapsed() < Duration::from_secs(1), "refusing took {:?}", start.elapsed());
    assert!(err.contains(claimed), "{err}");
    assert!(err.contains("--max_image_pixels"), "{err}");
    assert!(err.contains(&(2 * PILLOW_MAX_IMAGE_PIXELS).to_string()), "{err}");
}

#[test]
fn png_bomb_is_refused_from_its_header() {
    let bomb = png_claiming(30_000, 30_000);
    assert!(bomb.len() < 200);
    assert_refused_quickly(&bomb, "30000x30000");
}

#[test]
fn png_larger_than_memory_is_refused_even_without_a_limit() {
    // 4G x 4G pixels: no limit, but the buffer size overflows or cannot be allocated.
    let bomb = png_claiming(0x7fff_ffff, 0x7fff_ffff);
    assert!(decode(&bomb, &Limits::NONE).is_err());
}

#[test]
fn jpeg_bomb_is_refused_from_its_header() {
    assert_refused_quickly(&jpeg_claiming(30_000, 30_000), "30000x30000");
    assert_refused_quickly(&jpeg_claiming(65_000, 65_000), "65000x65000");
}

/// A BMP header (BITMAPINFOHEADER, 24-bit) claiming `width` x `height`, with no pixels.
fn bmp_claiming(width: i32, height: i32) -> Vec<u8> {
    let mut bmp = b"BM".to_vec();
    for v in [54u32, 0, 54, 40] {
        bmp.extend_from_slice(&v.to_le_bytes());
    }
    bmp.extend_from_slice(&width.to_le_bytes());
    bmp.extend_from_slice(&height.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp
}

/// A GIF whose screen and one frame claim `width` x `height`, with an empty image.
fn gif_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&width.to_le_bytes());
    gif.extend_from_slice(&height.to_le_bytes());
    gif.extend_from_slice(&[0, 0, 0, 0x2c, 0, 0, 0, 0]);
    gif.extend_from_slice(&width.to_le_bytes());
    gif.extend_from_slice(&height.to_le_bytes());
    gif.extend_from_slice(&[0, 2, 0, 0x3b]);
    gif
}

/// A lossless WebP header (VP8L) claiming `width` x `height` (at most 16384 a side).
fn webp_claiming(width: u32, height: u32) -> Vec<u8> {
    let bits = (width - 1) | ((height - 1) << 14);
    let mut chunk = b"VP8L".to_vec();
    chunk.extend_from_slice(&5u32.to_le_bytes());
    chunk.push(0x2f);
    chunk.extend_from_slice(&bits.to_le_bytes());
    chunk.push(0);
    let mut webp = b"RIFF".to_vec();
    webp.extend_from_slice(&(4 + chunk.len() as u32).to_le_bytes());
    webp.extend_from_slice(b"WEBP");
    webp.extend_from_slice(&chunk);
    webp
}

/// A little-endian TIFF of one 8-bit grey strip claiming `width` x `height`, with no pixels.
fn tiff_claiming(width: u32, height: u32) -> Vec<u8> {
    // (tag, type, count, value): 3 SHORT, 4 LONG
    let entries: [(u16, u16, u32, u32); 9] = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, 0),
    ];
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&kind.to_le_bytes());
        tiff.extend_from_slice(&count.to_le_bytes());
        tiff.extend_from_slice(&value.to_le_bytes());
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff
}

#[test]
fn bombs_in_the_other_formats_are_refused_from_their_headers() {
    assert_refused_quickly(&bmp_claiming(30_000, 30_000), "30000x30000");
    assert_refused_quickly(&gif_claiming(30_000, 30_000), "30000x30000");
    // image-webp finds this header's sizes inconsistent before it reports them: refused anyway,
    // quickly and within the allocator's cap.
    let start = Instant::now();
    assert!(decode(&webp_claiming(16_384, 16_384), &Limits::default()).is_err());
    assert!(start.elapsed() < Duration::from_secs(1), "refusing took {:?}", start.elapsed());
    assert_refused_quickly(&tiff_claiming(30_000, 30_000), "30000x30000");
}

#[test]
fn images_under_the_limit_decode() {
    let png = decode(&small_png(32, 24), &Limits::default()).unwrap();
    assert_eq!((png.width, png.height, png.pixels.len()), (32, 24, 32 * 24 * 3));
    let jpeg = decode(&small_jpeg(40, 30), &Limits::default()).unwrap();
    assert_eq!((jpeg.width, jpeg.height, jpeg.pixels.len()), (40, 30, 40 * 30 * 3));
    assert_eq!(preprocess(&small_jpeg(300, 200)).unwrap().len(), PIXELS);
    let mut compressor = turbojpeg::Compressor::new().unwrap();
    compressor.set_progressive(true).unwrap();
    let pixels: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7) as u8).collect();
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: 64,
        pitch: 64 * 3,
        height: 48,
        format: turbojpeg::PixelFormat::RGB,
    };
    let progressive = compressor.compress_to_vec(image).unwrap();
    assert_eq!(decode(&progressive, &Limits::default()).unwrap().width, 64);
    // No limit at all still decodes ordinary images.
    assert!(decode(&small_png(8, 8), &Limits::NONE).is_ok());
}

#[test]
fn a_custom_limit_applies_to_both_formats() {
    let tight = Limits { max_pixels: Some(32 * 24 - 1) };
    for bytes in [small_png(32, 24), small_jpeg(32, 24)] {
        let err = format!("{:#}", decode(&bytes, &tight).err().expect("over a custom limit"));
        assert!(err.contains("32x24 = 768 pixels") && err.contains("limit of 767"), "{err}");
    }
    assert!(decode(&small_png(32, 24), &Limits { max_pixels: Some(32 * 24) }).is_ok());
}

#[test]
fn thresholds_are_pillows() {
    let limits = Limits::default();
    // Pillow warns above MAX_IMAGE_PIXELS and raises above twice it.
    assert!(!limits.check(1, PILLOW_MAX_IMAGE_PIXELS).unwrap());
    assert!(limits.check(1, PILLOW_MAX_IMAGE_PIXELS + 1).unwrap());
    assert!(limits.check(1, 2 * PILLOW_MAX_IMAGE_PIXELS).unwrap());
    assert!(limits.check(1, 2 * PILLOW_MAX_IMAGE_PIXELS + 1).is_err());
    assert!(!Limits::NONE.check(u64::MAX, u64::MAX).unwrap());
}

#[test]
fn progressive_jpeg_with_too_many_scans_is_refused() {
    let mut compressor = turbojpeg::Compressor::new().unwrap();
    compressor.set_progressive(true).unwrap();
    let pixels: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7) as u8).collect();
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: 64,
        pitch: 64 * 3,
        height: 48,
        format: turbojpeg::PixelFormat::RGB,
    };
    let jpeg = compressor.compress_to_vec(image).unwrap();
    // Repeat the last scan (from its SOS marker to the EOI) until there are far too many.
    let last_sos = jpeg.windows(2).rposition(|w| w == [0xff, 0xda]).unwrap();
    let scan = &jpeg[last_sos..jpeg.len() - 2];
    let mut many = jpeg[..jpeg.len() - 2].to_vec();
    for _ in 0..600 {
        many.extend_from_slice(scan);
    }
    many.extend_from_slice(&[0xff, 0xd9]);
    let start = Instant::now();
    let err = format!("{:#}", decode(&many, &Limits::default()).err().expect("too many scans"));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(err.to_lowercase().contains("scan"), "{err}");
}

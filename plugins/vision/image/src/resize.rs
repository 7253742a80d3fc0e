//! Pillow's bilinear and bicubic resize (`Image.resize(size, Image.BILINEAR | Image.BICUBIC)`),
//! ported from its `Resample.c` so results match to the bit: coefficients in double precision,
//! turned into 22-bit fixed point, a horizontal pass then a vertical pass over 8-bit samples.
//!
//! Pillow before 12.2 always runs the horizontal pass first (12.2 and later run the vertical one
//! first for images much taller than wide); DeepTune pins Pillow 9.1, and the tests pin 11.3.

use crate::decode::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: the first input index, the tap count, and fixed-point weights.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

/// A Pillow resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BILINEAR` (torchvision's `Resize` default).
    Bilinear,
    /// `Image.BICUBIC` (a = -0.5, as Pillow has it), e.g. SigLIP's processor.
    Bicubic,
}

impl Filter {
    /// The filter's support at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear if x < 1.0 => 1.0 - x,
            Filter::Bilinear => 0.0,
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

fn coefficients(filter: Filter, in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    // The support is widened when shrinking, which is Pillow's antialiasing.
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero; so does `as`.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k[..xmax].iter_mut().enumerate() {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (kx, weight) in k[..xmax].iter_mut().zip(&mut weights[xx * ksize..][..xmax]) {
            if ww != 0.0 {
                *kx /= ww;
            }
            let v = *kx * (1u32 << PRECISION_BITS) as f64;
            *weight = if v < 0.0 { (v - 0.5) as i32 } else { (v + 0.5) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Coefficients { bounds, ksize, weights }
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes an RGB image to `out_w` x `out_h` with Pillow's bilinear filter.
pub fn resize_bilinear(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    resize(img, out_w, out_h, Filter::Bilinear)
}

/// Resizes an RGB image to `out_w` x `out_h` as Pillow does with `filter`.
pub fn resize(img: &RgbImage, out_w: usize, out_h: usize, filter: Filter) -> RgbImage {
    if img.width == out_w && img.height == out_h {
        return RgbImage { width: out_w, height: out_h, pixels: img.pixels.clone() };
    }
    let vertical = coefficients(filter, img.height, out_h);
    // The horizontal pass only needs the input rows the vertical pass will read.
    let first_row = vertical.bounds.first().map_or(0, |b| b.0);
    let last_row = vertical.bounds.last().map_or(0, |b| b.0 + b.1);
    let horizontal_needed = img.width != out_w;
    let rows = if horizontal_needed {
        horizontal_pass(img, filter, out_w, first_row, last_row)
    } else {
        RgbImage {
            width: img.width,
            height: last_row - first_row,
            pixels: img.pixels[first_row * img.width * 3..last_row * img.width * 3].to_vec(),
        }
    };
    if img.height == out_h {
        return rows;
    }
    vertical_pass(&rows, &vertical, first_row, out_h)
}

fn horizontal_pass(img: &RgbImage, filter: Filter, out_w: usize, first_row: usize, last_row: usize) -> RgbImage {
    let c = coefficients(filter, img.width, out_w);
    let height = last_row - first_row;
    let mut out = vec![0u8; out_w * height * 3];
    for y in 0..height {
        let line = &img.pixels[(y + first_row) * img.width * 3..][..img.width * 3];
        let out_line = &mut out[y * out_w * 3..][..out_w * 3];
        for (xx, &(xmin, xmax)) in c.bounds.iter().enumerate() {
            let k = &c.weights[xx * c.ksize..][..xmax];
            for ch in 0..3 {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (x, &w) in k.iter().enumerate() {
                    ss += line[(xmin + x) * 3 + ch] as i32 * w;
                }
                out_line[xx * 3 + ch] = clip8(ss);
            }
        }
    }
    RgbImage { width: out_w, height, pixels: out }
}

fn vertical_pass(rows: &RgbImage, c: &Coefficients, first_row: usize, out_h: usize) -> RgbImage {
    let width = rows.width;
    let mut out = vec![0u8; width * out_h * 3];
    for (yy, &(ymin, ymax)) in c.bounds.iter().enumerate() {
        let k = &c.weights[yy * c.ksize..][..ymax];
        let ymin = ymin - first_row;
        for i in 0..width * 3 {
            let mut ss: i32 = 1 << (PRECISION_BITS - 1);
            for (y, &w) in k.iter().enumerate() {
                ss += rows.pixels[(ymin + y) * width * 3 + i] as i32 * w;
            }
            out[yy * width * 3 + i] = clip8(ss);
        }
    }
    RgbImage { width, height: out_h, pixels: out }
}

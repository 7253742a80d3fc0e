//! Pillow's bilinear and bicubic resize (`Image.resize(size, Image.BILINEAR | Image.BICUBIC)`),
//! ported from its `Resample.c` so results match to the bit: coefficients in double precision,
//! turned into 22-bit fixed point, a horizontal pass then a vertical pass over 8-bit samples.
//!
//! Pillow before 12.2 always runs the horizontal pass first (12.2 and later run the vertical one
//! first for images much taller than wide); DeepTune pins Pillow 9.1, and the tests pin 11.3.

use std::rc::Rc;

use crate::decode::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: the first input index, the tap count, and fixed-point weights.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

/// A Pillow resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    let mut pixels = vec![0u8; out_w * out_h * 3];
    resize_into(img, out_w, out_h, filter, &mut pixels);
    RgbImage { width: out_w, height: out_h, pixels }
}

/// [`resize`] into `out` (`out_w * out_h * 3` bytes, row-major RGB). Coefficients are cached per
/// thread and the intermediate image reuses a per-thread buffer, so a decoding thread that
/// resizes images of a few sizes allocates nothing per image.
pub fn resize_into(img: &RgbImage, out_w: usize, out_h: usize, filter: Filter, out: &mut [u8]) {
    assert_eq!(out.len(), out_w * out_h * 3, "the output buffer must hold out_w * out_h * 3 bytes");
    if img.width == out_w && img.height == out_h {
        out.copy_from_slice(&img.pixels);
        return;
    }
    let vertical = cached_coefficients(filter, img.height, out_h);
    // The horizontal pass only needs the input rows the vertical pass will read.
    let first_row = vertical.bounds.first().map_or(0, |b| b.0);
    let last_row = vertical.bounds.last().map_or(0, |b| b.0 + b.1);
    SCRATCH.with_borrow_mut(|scratch| {
        if img.width == out_w {
            let input = &img.pixels[first_row * out_w * 3..last_row * out_w * 3];
            vertical_pass(input, out_w, &vertical, first_row, &mut scratch.row, out);
            return;
        }
        let horizontal = cached_coefficients(filter, img.width, out_w);
        let input = &img.pixels[first_row * img.width * 3..last_row * img.width * 3];
        if img.height == out_h {
            horizontal_pass(input, img.width, &horizontal, out);
            return;
        }
        scratch.between.clear();
        scratch.between.resize(out_w * (last_row - first_row) * 3, 0);
        horizontal_pass(input, img.width, &horizontal, &mut scratch.between);
        vertical_pass(&scratch.between, out_w, &vertical, first_row, &mut scratch.row, out);
    });
}

/// Per-thread buffers of [`resize_into`], reused across images.
#[derive(Default)]
struct Scratch {
    /// The horizontal pass's output: the vertical pass's input.
    between: Vec<u8>,
    /// The vertical pass's accumulators, one output row's worth.
    row: Vec<i32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    /// Recently used coefficients: a dataset has few distinct image sizes, and a resize to a
    /// fixed side needs them per (input size, output size).
    static COEFFICIENTS: std::cell::RefCell<Vec<(CoefficientsKey, Rc<Coefficients>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

type CoefficientsKey = (Filter, usize, usize);

/// Sizes kept per thread; beyond, the least recently used is dropped.
const CACHED_SIZES: usize = 16;

fn cached_coefficients(filter: Filter, in_size: usize, out_size: usize) -> Rc<Coefficients> {
    let key = (filter, in_size, out_size);
    COEFFICIENTS.with_borrow_mut(|cache| {
        if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
            // Most recent last.
            let entry = cache.remove(i);
            let c = entry.1.clone();
            cache.push(entry);
            return c;
        }
        if cache.len() == CACHED_SIZES {
            cache.remove(0);
        }
        let c = Rc::new(coefficients(filter, in_size, out_size));
        cache.push((key, c.clone()));
        c
    })
}

/// Each row of `input` (`in_w` RGB pixels wide) to `c.bounds.len()` pixels.
fn horizontal_pass(input: &[u8], in_w: usize, c: &Coefficients, out: &mut [u8]) {
    let out_w = c.bounds.len();
    for (line, out_line) in input.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
        for ((&(xmin, n), k), px) in
            c.bounds.iter().zip(c.weights.chunks_exact(c.ksize)).zip(out_line.chunks_exact_mut(3))
        {
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for (src, &w) in line[xmin * 3..(xmin + n) * 3].chunks_exact(3).zip(&k[..n]) {
                ss[0] += src[0] as i32 * w;
                ss[1] += src[1] as i32 * w;
                ss[2] += src[2] as i32 * w;
            }
            px[0] = clip8(ss[0]);
            px[1] = clip8(ss[1]);
            px[2] = clip8(ss[2]);
        }
    }
}

/// `rows` (the input rows from `first_row` on, `width` RGB pixels wide) to `c.bounds.len()`
/// rows. Accumulates a whole output row in `acc` one tap at a time, which the compiler vectorises.
fn vertical_pass(rows: &[u8], width: usize, c: &Coefficients, first_row: usize, acc: &mut Vec<i32>, out: &mut [u8]) {
    let stride = width * 3;
    acc.resize(stride, 0);
    for ((&(ymin, n), k), out_row) in
        c.bounds.iter().zip(c.weights.chunks_exact(c.ksize)).zip(out.chunks_exact_mut(stride))
    {
        acc.fill(1 << (PRECISION_BITS - 1));
        for (y, &w) in k[..n].iter().enumerate() {
            let row = &rows[(ymin - first_row + y) * stride..][..stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(acc.iter()) {
            *o = clip8(a);
        }
    }
}

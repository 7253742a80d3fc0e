//! Pillow's bilinear and bicubic resize (`Image.resize(size, Image.BILINEAR | Image.BICUBIC)`),
//! ported from its `Resample.c` so results match to the bit: coefficients in double precision,
//! turned into 22-bit fixed point, a horizontal pass then a vertical pass over 8-bit samples.
//!
//! Both passes run with AVX2 where the CPU has it (`resize/avx2.rs`, chosen at run time), and
//! scalar elsewhere: integer sums do not depend on their order, so both give Pillow's bytes.
//!
//! Pillow before 12.2 always runs the horizontal pass first (12.2 and later run the vertical one
//! first for images much taller than wide); DeepTune pins Pillow 9.1, and the tests pin 11.3.

use std::rc::Rc;

use crate::decode::RgbImage;

#[cfg(target_arch = "x86_64")]
mod avx2;

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: the first input index, the tap count, and fixed-point weights.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
    /// The same weights with every pixel's taps widened to one common count, for the horizontal
    /// pass.
    padded: Padded,
}

/// Every output pixel's taps as one fixed count (`taps`, the most any pixel has): the window
/// starts earlier where it would run past the input's end, and the taps it gains weigh zero.
/// Adding zeros changes no sum, so the result is Pillow's to the bit, and a loop of a count
/// known when compiling unrolls into straight-line code with no per-pixel loop overhead (decoding
/// and resizing together 10% faster per core, docs/BENCHMARKS.md).
struct Padded {
    starts: Vec<usize>,
    taps: usize,
    weights: Vec<i32>,
    /// The same weights laid out for the AVX2 pass.
    #[cfg(target_arch = "x86_64")]
    pair_weights: Vec<[i32; 8]>,
}

impl Padded {
    fn new(bounds: &[(usize, usize)], ksize: usize, weights: &[i32], in_size: usize) -> Padded {
        // Each window holds at most `in_size` taps, so the widest fits in the input.
        let taps = bounds.iter().map(|b| b.1).max().unwrap_or(1);
        let mut starts = Vec::with_capacity(bounds.len());
        let mut padded = vec![0i32; bounds.len() * taps];
        for ((&(xmin, n), k), out) in bounds.iter().zip(weights.chunks_exact(ksize)).zip(padded.chunks_exact_mut(taps))
        {
            let start = xmin.min(in_size - taps);
            out[xmin - start..][..n].copy_from_slice(&k[..n]);
            starts.push(start);
        }
        Padded {
            starts,
            taps,
            #[cfg(target_arch = "x86_64")]
            pair_weights: avx2::pair_weights(taps, &padded),
            weights: padded,
        }
    }
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
    let padded = Padded::new(&bounds, ksize, &weights, in_size);
    Coefficients { bounds, ksize, weights, padded }
}

/// One pass's fixed-point taps: per output pixel, its first input and the weights of it and the
/// inputs after it, so that `clamp(floor((taps . samples + ROUNDING) / SCALE), 0, 255)` with
/// [`FIXED_POINT_ROUNDING`] and [`FIXED_POINT_SCALE`] is Pillow's `clip8` of its sum. Equal sizes
/// give the identity (one tap of the scale): Pillow skips such a pass, and the taps then give
/// the samples back. For resizing on a device (the vision plugin's `--decode gpu`).
pub fn pass_taps(filter: Filter, in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    if in_size == out_size {
        return (0..out_size).map(|i| (i, vec![1 << PRECISION_BITS])).collect();
    }
    let c = cached_coefficients(filter, in_size, out_size);
    c.bounds.iter().zip(c.weights.chunks_exact(c.ksize)).map(|(&(xmin, n), k)| (xmin, k[..n].to_vec())).collect()
}

/// What Pillow adds to a pass's sum before dropping the fraction: half of [`FIXED_POINT_SCALE`].
pub const FIXED_POINT_ROUNDING: f64 = (1u32 << (PRECISION_BITS - 1)) as f64;
/// The fixed-point weights' scale, 2^22.
pub const FIXED_POINT_SCALE: f64 = (1u32 << PRECISION_BITS) as f64;

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Which passes [`resize_into`] runs on this CPU, for benchmark reports: "with AVX2" or
/// "scalar" (the same results either way).
pub fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if avx2::detect().is_some() {
        return "with AVX2";
    }
    "scalar"
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

/// Each row of `input` (`in_w` RGB pixels wide) to `c.bounds.len()` pixels: with AVX2 where
/// the CPU has it, else [`horizontal_pass_scalar`].
fn horizontal_pass(input: &[u8], in_w: usize, c: &Coefficients, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = avx2::detect() {
        return avx2::horizontal_pass(simd, input, in_w, &c.padded, out);
    }
    horizontal_pass_scalar(input, in_w, c, out)
}

/// The horizontal pass one sample at a time, with the tap count a constant for the common counts.
fn horizontal_pass_scalar(input: &[u8], in_w: usize, c: &Coefficients, out: &mut [u8]) {
    let p = &c.padded;
    macro_rules! with_taps {
        ($($n:literal)*) => {
            match p.taps {
                $($n => horizontal_pass_taps::<$n>(input, in_w, p, out),)*
                _ => horizontal_pass_taps::<0>(input, in_w, p, out),
            }
        };
    }
    with_taps!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

/// The horizontal pass with `TAPS` taps per pixel; `TAPS == 0` reads the count at run time
/// (counts above the unrolled ones: shrinking by more than about 7x bilinear, 3.5x bicubic).
fn horizontal_pass_taps<const TAPS: usize>(input: &[u8], in_w: usize, p: &Padded, out: &mut [u8]) {
    let taps = if TAPS == 0 { p.taps } else { TAPS };
    let out_w = p.starts.len();
    for (line, out_line) in input.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
        for ((&start, k), px) in p.starts.iter().zip(p.weights.chunks_exact(taps)).zip(out_line.chunks_exact_mut(3)) {
            let src = &line[start * 3..][..taps * 3];
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for t in 0..taps {
                ss[0] += src[t * 3] as i32 * k[t];
                ss[1] += src[t * 3 + 1] as i32 * k[t];
                ss[2] += src[t * 3 + 2] as i32 * k[t];
            }
            px[0] = clip8(ss[0]);
            px[1] = clip8(ss[1]);
            px[2] = clip8(ss[2]);
        }
    }
}

/// `rows` (the input rows from `first_row` on, `width` RGB pixels wide) to `c.bounds.len()`
/// rows: with AVX2 where the CPU has it, else [`vertical_pass_scalar`].
fn vertical_pass(rows: &[u8], width: usize, c: &Coefficients, first_row: usize, acc: &mut Vec<i32>, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = avx2::detect() {
        return avx2::vertical_pass(simd, rows, width, c, first_row, out);
    }
    vertical_pass_scalar(rows, width, c, first_row, acc, out)
}

/// The vertical pass accumulating a whole output row in `acc` one tap at a time, which the
/// compiler vectorises for the portable target.
fn vertical_pass_scalar(
    rows: &[u8],
    width: usize,
    c: &Coefficients,
    first_row: usize,
    acc: &mut Vec<i32>,
    out: &mut [u8],
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pillow's horizontal loop as written in `Resample.c`: each pixel's own taps, no padding.
    fn horizontal_as_pillow(input: &[u8], in_w: usize, c: &Coefficients) -> Vec<u8> {
        let out_w = c.bounds.len();
        let mut out = vec![0u8; input.len() / (in_w * 3) * out_w * 3];
        for (line, out_line) in input.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
            for ((&(xmin, n), k), px) in
                c.bounds.iter().zip(c.weights.chunks_exact(c.ksize)).zip(out_line.chunks_exact_mut(3))
            {
                for (ch, v) in px.iter_mut().enumerate() {
                    let mut ss = 1i32 << (PRECISION_BITS - 1);
                    for (x, &w) in k[..n].iter().enumerate() {
                        ss += line[(xmin + x) * 3 + ch] as i32 * w;
                    }
                    *v = clip8(ss);
                }
            }
        }
        out
    }

    /// Pillow's vertical loop as written in `Resample.c`, one sample at a time.
    fn vertical_as_pillow(rows: &[u8], width: usize, c: &Coefficients) -> Vec<u8> {
        let stride = width * 3;
        let mut out = vec![0u8; c.bounds.len() * stride];
        for ((&(ymin, n), k), out_row) in
            c.bounds.iter().zip(c.weights.chunks_exact(c.ksize)).zip(out.chunks_exact_mut(stride))
        {
            for (x, v) in out_row.iter_mut().enumerate() {
                let mut ss = 1i32 << (PRECISION_BITS - 1);
                for (y, &w) in k[..n].iter().enumerate() {
                    ss += rows[(ymin + y) * stride + x] as i32 * w;
                }
                *v = clip8(ss);
            }
        }
        out
    }

    /// Random bytes (xorshift), so every sample value and sharp edges that clip occur.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect()
    }

    /// Shrinking by 1x to 40x (tap counts unrolled and not), enlarging, and one-pixel images.
    const SIZES: [(usize, usize); 11] = [
        (500, 224),
        (375, 224),
        (224, 224),
        (640, 224),
        (4100, 224),
        (3000, 100),
        (7, 224),
        (1, 224),
        (224, 1),
        (2, 3),
        (19, 5),
    ];

    type HorizontalPass = fn(&[u8], usize, &Coefficients, &mut [u8]);

    /// The horizontal passes this build has: the scalar one, and AVX2 where the CPU has it.
    fn horizontal_passes() -> Vec<(&'static str, HorizontalPass)> {
        // Only pushed to on x86-64.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut passes: Vec<(&'static str, HorizontalPass)> = vec![("scalar", horizontal_pass_scalar)];
        #[cfg(target_arch = "x86_64")]
        if avx2::detect().is_some() {
            passes.push(("avx2", |input, in_w, c, out| {
                avx2::horizontal_pass(avx2::detect().unwrap(), input, in_w, &c.padded, out)
            }));
        }
        passes
    }

    /// A vertical pass over all of `rows` (`width` pixels wide).
    type VerticalPass = fn(&[u8], usize, &Coefficients, &mut [u8]);

    /// The vertical passes this build has: the scalar one, and AVX2 where the CPU has it.
    fn vertical_passes() -> Vec<(&'static str, VerticalPass)> {
        // Only pushed to on x86-64.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut passes: Vec<(&'static str, VerticalPass)> =
            vec![("scalar", |rows, width, c, out| vertical_pass_scalar(rows, width, c, 0, &mut Vec::new(), out))];
        #[cfg(target_arch = "x86_64")]
        if avx2::detect().is_some() {
            passes.push(("avx2", |rows, width, c, out| {
                avx2::vertical_pass(avx2::detect().unwrap(), rows, width, c, 0, out)
            }));
        }
        passes
    }

    #[test]
    fn horizontal_passes_give_pillows_sums() {
        let pixels = noise(4100 * 3 * 3);
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for &(in_w, out_w) in &SIZES {
                // Three rows, so loads run from one row into the next and the last row's end is met.
                let input = &pixels[..in_w * 3 * 3];
                let c = coefficients(filter, in_w, out_w);
                let expected = horizontal_as_pillow(input, in_w, &c);
                for (name, pass) in horizontal_passes() {
                    let mut ours = vec![0u8; out_w * 3 * 3];
                    pass(input, in_w, &c, &mut ours);
                    assert!(ours == expected, "{name}: {filter:?} {in_w} -> {out_w} (taps {})", c.padded.taps);
                }
            }
        }
    }

    /// 300 size pairs drawn at random (1 to 1200 pixels in, 1 to 400 out, so shrinking up to
    /// 1200x and enlarging up to 400x), both filters, both passes, every pass this build has.
    #[test]
    fn passes_give_pillows_sums_at_random_sizes() {
        let pixels = noise(1200 * 7 * 3);
        let mut state = 0x9e37_79b9_u32;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            1 + state as usize % bound
        };
        for _ in 0..300 {
            let (in_size, out_size) = (next(1200), next(400));
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                let c = coefficients(filter, in_size, out_size);
                let rows = &pixels[..in_size * 3 * 3];
                let expected = horizontal_as_pillow(rows, in_size, &c);
                for (name, pass) in horizontal_passes() {
                    let mut ours = vec![0u8; out_size * 3 * 3];
                    pass(rows, in_size, &c, &mut ours);
                    assert!(ours == expected, "horizontal {name}: {filter:?} {in_size} -> {out_size}");
                }
                // The same coefficients down 7 columns: a 16-sample block and a remainder per row.
                let columns = &pixels[..in_size * 7 * 3];
                let expected = vertical_as_pillow(columns, 7, &c);
                for (name, pass) in vertical_passes() {
                    let mut ours = vec![0u8; out_size * 7 * 3];
                    pass(columns, 7, &c, &mut ours);
                    assert!(ours == expected, "vertical {name}: {filter:?} {in_size} -> {out_size}");
                }
            }
        }
    }

    /// `pass_taps` as sums in exact integers, then Pillow's rounding: Pillow's horizontal pass,
    /// or the samples themselves where the sizes are equal (no pass).
    #[test]
    fn pass_taps_give_pillows_sums() {
        let pixels = noise(4100 * 3 * 2);
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for &(in_w, out_w) in &SIZES {
                let input = &pixels[..in_w * 3 * 2];
                let taps = pass_taps(filter, in_w, out_w);
                let expected = if in_w == out_w {
                    input.to_vec()
                } else {
                    horizontal_as_pillow(input, in_w, &coefficients(filter, in_w, out_w))
                };
                let mut ours = Vec::new();
                for line in input.chunks_exact(in_w * 3) {
                    for (first, weights) in &taps {
                        for ch in 0..3 {
                            let sum: i64 = weights
                                .iter()
                                .enumerate()
                                .map(|(k, &w)| line[(first + k) * 3 + ch] as i64 * w as i64)
                                .sum();
                            let v = ((sum as f64 + FIXED_POINT_ROUNDING) / FIXED_POINT_SCALE).floor();
                            ours.push(v.clamp(0.0, 255.0) as u8);
                        }
                    }
                }
                assert!(ours == expected, "{filter:?} {in_w} -> {out_w}");
            }
        }
    }

    #[test]
    fn vertical_passes_give_pillows_sums() {
        let pixels = noise(4100 * 7 * 3);
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for &(in_h, out_h) in &SIZES {
                // 7 pixels wide: one 16-sample block and a remainder of 5 per row.
                let width = 7;
                let rows = &pixels[..in_h * width * 3];
                let c = coefficients(filter, in_h, out_h);
                let expected = vertical_as_pillow(rows, width, &c);
                for (name, pass) in vertical_passes() {
                    let mut ours = vec![0u8; out_h * width * 3];
                    pass(rows, width, &c, &mut ours);
                    assert!(ours == expected, "{name}: {filter:?} {in_h} -> {out_h}");
                }
            }
        }
    }
}

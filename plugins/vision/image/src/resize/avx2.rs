//! Both resize passes with AVX2, for x86-64 CPUs that have it (checked at run time, so the
//! portable build uses it too). Same fixed-point arithmetic as the scalar passes: each output
//! sample is `clip8((2^21 + sum of sample * weight) >> 22)` over 32-bit integers. Integer addition
//! does not depend on its order, so adding eight lanes at a time gives Pillow's sums to the bit;
//! the unit tests compare these passes with the scalar ones and the parity tests with Pillow.
//!
//! The intrinsics come from `pulp`, whose token (`V3`) proves the CPU has the features, so this
//! file needs no `unsafe`.

use std::arch::x86_64::{__m128i, __m256i};
use std::sync::OnceLock;

use pulp::x86::V3;

use super::{clip8, Coefficients, Padded, PRECISION_BITS};

/// The AVX2 token if this CPU has AVX2 (and the rest of x86-64-v3), detected once, unless
/// `DEEPEMBED_RESIZE=scalar` asks for the scalar passes (to compare them, or to rule them out).
pub(super) fn detect() -> Option<V3> {
    static SCALAR: OnceLock<bool> = OnceLock::new();
    if *SCALAR.get_or_init(|| std::env::var_os("DEEPEMBED_RESIZE").is_some_and(|v| v == "scalar")) {
        return None;
    }
    V3::try_new()
}

/// The horizontal weights as the AVX2 pass reads them: per output pixel, per pair of taps, one
/// 256-bit vector `[k0, k0, k0, k0, k1, k1, k1, k1]` (a tap's weight for R, G, B and a spare lane,
/// then the next tap's). An odd tap count gets a last tap of weight zero.
pub(super) fn pair_weights(taps: usize, weights: &[i32]) -> Vec<[i32; 8]> {
    let pairs = taps.div_ceil(2);
    let mut out = Vec::with_capacity(weights.len() / taps.max(1) * pairs);
    for k in weights.chunks_exact(taps) {
        for pair in 0..pairs {
            let k0 = k[2 * pair];
            let k1 = k.get(2 * pair + 1).copied().unwrap_or(0);
            out.push([k0, k0, k0, k0, k1, k1, k1, k1]);
        }
    }
    out
}

/// Byte shuffles that spread two adjacent RGB pixels of a 16-byte load into 32-bit lanes: the
/// low half of the vector gets the first pixel, the high half the second (`-128` writes a zero).
/// `FIRST_PAIR` takes pixels 0 and 1 of the load (bytes 0-5), `SECOND_PAIR` pixels 2 and 3.
const Z: i8 = -128;
#[rustfmt::skip]
const FIRST_PAIR: [i8; 32] = [
    0, Z, Z, Z, 1, Z, Z, Z, 2, Z, Z, Z, Z, Z, Z, Z,
    3, Z, Z, Z, 4, Z, Z, Z, 5, Z, Z, Z, Z, Z, Z, Z,
];
#[rustfmt::skip]
const SECOND_PAIR: [i8; 32] = [
    6, Z, Z, Z, 7, Z, Z, Z, 8, Z, Z, Z, Z, Z, Z, Z,
    9, Z, Z, Z, 10, Z, Z, Z, 11, Z, Z, Z, Z, Z, Z, Z,
];

/// [`super::horizontal_pass`] with AVX2, the pair count a constant for the common counts.
pub(super) fn horizontal_pass(simd: V3, input: &[u8], in_w: usize, p: &Padded, out: &mut [u8]) {
    macro_rules! with_pairs {
        ($($n:literal)*) => {
            match p.taps.div_ceil(2) {
                $($n => simd.vectorize(Horizontal::<$n> { simd, input, in_w, p, out }),)*
                _ => simd.vectorize(Horizontal::<0> { simd, input, in_w, p, out }),
            }
        };
    }
    with_pairs!(1 2 3 4 5 6 7 8)
}

/// A pass and its arguments, for `V3::vectorize`, which compiles what it calls with AVX2 enabled
/// only where that code is inlined into it. A closure's body is inlined only when LLVM finds it
/// small enough (when it was not, every intrinsic became a function call and the pass ran 5x
/// slower than the scalar one), so these calls are `inline(always)` all the way down.
struct Horizontal<'a, const PAIRS: usize> {
    simd: V3,
    input: &'a [u8],
    in_w: usize,
    p: &'a Padded,
    out: &'a mut [u8],
}

impl<const PAIRS: usize> pulp::NullaryFnOnce for Horizontal<'_, PAIRS> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        horizontal_pass_pairs::<PAIRS>(self.simd, self.input, self.in_w, self.p, self.out)
    }
}

/// Each output pixel: one 16-byte load per four taps, each pair of taps shuffled into eight
/// 32-bit lanes, multiplied by its weights and added up; the two halves are then summed into R, G,
/// B. `PAIRS == 0` reads the count at run time.
#[inline(always)]
fn horizontal_pass_pairs<const PAIRS: usize>(simd: V3, input: &[u8], in_w: usize, p: &Padded, out: &mut [u8]) {
    let pairs = if PAIRS == 0 { p.taps.div_ceil(2) } else { PAIRS };
    let loads = pairs.div_ceil(2);
    // The last load starts 12 bytes (four pixels) after the one before, and reads 16.
    let reach = (loads - 1) * 12 + 16;
    let stride = in_w * 3;
    let out_w = p.starts.len();
    let first_pair: __m256i = pulp::cast(FIRST_PAIR);
    let second_pair: __m256i = pulp::cast(SECOND_PAIR);
    let rounding = simd.sse2._mm_set1_epi32(1 << (PRECISION_BITS - 1));
    for (row, out_line) in out.chunks_exact_mut(out_w * 3).enumerate() {
        // The rest of the input from this row on: a load may run into the next row, whose bytes
        // meet only zero weights or lanes the shuffles leave out.
        let rest = &input[row * stride..];
        for (((&start, k), w), px) in p
            .starts
            .iter()
            .zip(p.weights.chunks_exact(p.taps))
            .zip(p.pair_weights.chunks_exact(pairs))
            .zip(out_line.chunks_exact_mut(3))
        {
            let base = start * 3;
            if base + reach > rest.len() {
                // The last row's last pixels: too close to the end of the input for a full load.
                scalar_pixel(&rest[base..][..p.taps * 3], k, px);
                continue;
            }
            let mut sums = simd.avx._mm256_setzero_si256();
            for load in 0..loads {
                let bytes: [u8; 16] = rest[base + load * 12..][..16].try_into().expect("16 bytes");
                let pixels = simd.avx2._mm256_broadcastsi128_si256(pulp::cast::<[u8; 16], __m128i>(bytes));
                for (half, shuffle) in [first_pair, second_pair].into_iter().enumerate() {
                    let pair = 2 * load + half;
                    if pair < pairs {
                        let samples = simd.avx2._mm256_shuffle_epi8(pixels, shuffle);
                        let weights: __m256i = pulp::cast(w[pair]);
                        sums = simd.avx2._mm256_add_epi32(sums, simd.avx2._mm256_mullo_epi32(samples, weights));
                    }
                }
            }
            let rgb = simd.sse2._mm_add_epi32(
                simd.avx2._mm256_extracti128_si256::<0>(sums),
                simd.avx2._mm256_extracti128_si256::<1>(sums),
            );
            let bytes = clip8x4(simd, simd.sse2._mm_add_epi32(rgb, rounding));
            px.copy_from_slice(&bytes.to_le_bytes()[..3]);
        }
    }
}

/// One output pixel the scalar way (`k.len()` taps over `src`, 3 bytes a tap).
fn scalar_pixel(src: &[u8], k: &[i32], px: &mut [u8]) {
    for (c, v) in px.iter_mut().enumerate() {
        let mut ss = 1i32 << (PRECISION_BITS - 1);
        for (t, &w) in k.iter().enumerate() {
            ss += src[t * 3 + c] as i32 * w;
        }
        *v = clip8(ss);
    }
}

/// [`clip8`] of four 32-bit sums (rounding included), as four bytes in a `u32`: an arithmetic
/// shift, then saturating packs, which give 0 below zero and 255 from `255 << 22` up.
#[inline(always)]
fn clip8x4(simd: V3, sums: __m128i) -> u32 {
    let shifted = simd.sse2._mm_srai_epi32::<{ PRECISION_BITS as i32 }>(sums);
    let words = simd.sse2._mm_packs_epi32(shifted, shifted);
    simd.sse2._mm_cvtsi128_si32(simd.sse2._mm_packus_epi16(words, words)) as u32
}

/// [`super::vertical_pass`] with AVX2: sixteen samples of an output row at a time, each tap's
/// input row widened to 32 bits, multiplied by the tap's weight and added in registers.
pub(super) fn vertical_pass(simd: V3, rows: &[u8], width: usize, c: &Coefficients, first_row: usize, out: &mut [u8]) {
    simd.vectorize(Vertical { simd, rows, width, c, first_row, out })
}

/// [`vertical_pass`]'s arguments, for `V3::vectorize` (see [`Horizontal`]).
struct Vertical<'a> {
    simd: V3,
    rows: &'a [u8],
    width: usize,
    c: &'a Coefficients,
    first_row: usize,
    out: &'a mut [u8],
}

impl pulp::NullaryFnOnce for Vertical<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Vertical { simd, rows, width, c, first_row, out } = self;
        let stride = width * 3;
        let rounding = simd.avx._mm256_set1_epi32(1 << (PRECISION_BITS - 1));
        for ((&(ymin, n), k), out_row) in
            c.bounds.iter().zip(c.weights.chunks_exact(c.ksize)).zip(out.chunks_exact_mut(stride))
        {
            let k = &k[..n];
            let src = &rows[(ymin - first_row) * stride..][..n * stride];
            let mut x = 0;
            while x + 16 <= stride {
                let (mut low, mut high) = (rounding, rounding);
                for (y, &w) in k.iter().enumerate() {
                    let bytes: [u8; 16] = src[y * stride + x..][..16].try_into().expect("16 bytes");
                    let samples: __m128i = pulp::cast(bytes);
                    let weight = simd.avx._mm256_set1_epi32(w);
                    let low_samples = simd.avx2._mm256_cvtepu8_epi32(samples);
                    let high_samples = simd.avx2._mm256_cvtepu8_epi32(simd.sse2._mm_srli_si128::<8>(samples));
                    low = simd.avx2._mm256_add_epi32(low, simd.avx2._mm256_mullo_epi32(low_samples, weight));
                    high = simd.avx2._mm256_add_epi32(high, simd.avx2._mm256_mullo_epi32(high_samples, weight));
                }
                out_row[x..x + 16].copy_from_slice(&clip8x16(simd, low, high));
                x += 16;
            }
            for (xx, o) in out_row.iter_mut().enumerate().skip(x) {
                let mut ss = 1i32 << (PRECISION_BITS - 1);
                for (y, &w) in k.iter().enumerate() {
                    ss += src[y * stride + xx] as i32 * w;
                }
                *o = clip8(ss);
            }
        }
    }
}

/// [`clip8`] of sixteen sums (rounding included), in order: `low` holds samples 0-7, `high` 8-15.
#[inline(always)]
fn clip8x16(simd: V3, low: __m256i, high: __m256i) -> [u8; 16] {
    let low = simd.avx2._mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(low);
    let high = simd.avx2._mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(high);
    // The packs work within 128-bit halves: [low 0-3, high 0-3 | low 4-7, high 4-7], so the
    // 64-bit quarters are put back in order after each.
    let words = simd.avx2._mm256_permute4x64_epi64::<0b11_01_10_00>(simd.avx2._mm256_packs_epi32(low, high));
    let bytes = simd.avx2._mm256_packus_epi16(words, words);
    let bytes = simd.avx2._mm256_permute4x64_epi64::<0b00_00_10_00>(bytes);
    let all: [u8; 32] = pulp::cast(bytes);
    all[..16].try_into().expect("16 bytes")
}

//! numpy's `np.random.default_rng(seed)` (SeedSequence → PCG64 → Generator), bit for bit, for the
//! calls tabpfn 6.2 makes on its way to ensemble member 0, and [`member0_plan`], the draw sequence
//! of `fit` that yields member 0's seed and class permutation (docs/TABPFN.md §3).
//!
//! Every method names the numpy C or Cython function it mirrors (numpy 2.4:
//! `numpy/random/bit_generator.pyx`, `_pcg64.pyx` with `src/pcg64/pcg64.h`,
//! `src/distributions/distributions.c`, `_generator.pyx`). Only integer arithmetic is involved,
//! apart from the final `u53 / 2^53` of `random`, which is exact.

use std::collections::HashSet;

/// `bit_generator.pyx` constants of SeedSequence's hash (Melissa O'Neill's `seed_seq_fe`).
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// `PCG_DEFAULT_MULTIPLIER_128` of `pcg64.h`.
const PCG_MULT: u128 = 0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645;

/// tabpfn's `np.iinfo(np.int32).max`, the exclusive bound of every seed it draws.
const I32_MAX: i64 = i32::MAX as i64;
/// `MAXIMUM_FEATURE_SHIFT` of tabpfn's preprocessing.py: the exclusive bound of `start`.
const MAXIMUM_FEATURE_SHIFT: i64 = 1000;
/// `CLASS_SHUFFLE_OVERESTIMATE_FACTOR`: rows of noise per estimator for the class shuffles.
const CLASS_SHUFFLE_OVERESTIMATE_FACTOR: usize = 3;

/// numpy's `SeedSequence(entropy)` without spawn keys: the entropy hashed into a pool of four
/// 32-bit words (`mix_entropy`), from which `generate_state` draws any number of words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

impl SeedSequence {
    /// `SeedSequence(entropy)` for a non-negative Python int. The int becomes little-endian 32-bit
    /// words (`_coerce_to_uint32_array`, 0 → `[0]`). An int below 2^128 has at most four words,
    /// and the pool pads missing words with zeros, so its high zero words change nothing.
    pub fn new(entropy: u128) -> SeedSequence {
        let words: [u32; POOL_SIZE] = std::array::from_fn(|i| (entropy >> (32 * i)) as u32);
        let mut hash_const = INIT_A;
        let mut hashmix = |value: u32| {
            let mut value = value ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_A);
            value = value.wrapping_mul(hash_const);
            value ^ (value >> XSHIFT)
        };
        let mix = |x: u32, y: u32| {
            let r = MIX_MULT_L.wrapping_mul(x).wrapping_sub(MIX_MULT_R.wrapping_mul(y));
            r ^ (r >> XSHIFT)
        };
        let mut pool = [0u32; POOL_SIZE];
        for (slot, &word) in pool.iter_mut().zip(&words) {
            *slot = hashmix(word);
        }
        for src in 0..POOL_SIZE {
            for dst in 0..POOL_SIZE {
                if src != dst {
                    let hashed = hashmix(pool[src]);
                    pool[dst] = mix(pool[dst], hashed);
                }
            }
        }
        // No entropy words beyond the pool size: `mix_entropy`'s last loop never runs.
        SeedSequence { pool }
    }

    /// `generate_state(n_words, np.uint32)`.
    pub fn generate_state_u32(&self, n_words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        (0..n_words)
            .map(|i| {
                let mut value = self.pool[i % POOL_SIZE] ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                value = value.wrapping_mul(hash_const);
                value ^ (value >> XSHIFT)
            })
            .collect()
    }

    /// `generate_state(n_words, np.uint64)`: twice as many 32-bit words, paired little-endian.
    pub fn generate_state_u64(&self, n_words: usize) -> Vec<u64> {
        let words = self.generate_state_u32(2 * n_words);
        words.chunks_exact(2).map(|pair| u64::from(pair[0]) | (u64::from(pair[1]) << 32)).collect()
    }
}

/// `np.random.Generator(PCG64(seed))`: PCG64 (XSL-RR 128/64) plus the `has_uint32` / `uinteger`
/// buffer of `pcg64_next32`, which carries across calls just as in numpy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generator {
    state: u128,
    inc: u128,
    /// The high half of the last 64-bit draw, waiting to be the next 32-bit draw.
    buffered_u32: Option<u32>,
}

impl Generator {
    /// `np.random.default_rng(seed)` for a non-negative int seed.
    pub fn new(seed: u64) -> Generator {
        Generator::from_seed_sequence(&SeedSequence::new(u128::from(seed)))
    }

    /// `PCG64(seed_seq)`: `generate_state(4, np.uint64)` gives `[state_hi, state_lo, seq_hi,
    /// seq_lo]`, seeded by `pcg64_set_seed` → `pcg_setseq_128_srandom_r`.
    pub fn from_seed_sequence(seed_seq: &SeedSequence) -> Generator {
        let s = seed_seq.generate_state_u64(4);
        let init_state = (u128::from(s[0]) << 64) | u128::from(s[1]);
        let init_seq = (u128::from(s[2]) << 64) | u128::from(s[3]);
        let mut generator = Generator { state: 0, inc: (init_seq << 1) | 1, buffered_u32: None };
        generator.step();
        generator.state = generator.state.wrapping_add(init_state);
        generator.step();
        generator
    }

    /// `pcg_setseq_128_step_r`.
    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// `pcg64_next64`: step, then `pcg_output_xsl_rr_128_64` of the new state. Leaves the 32-bit
    /// buffer alone (numpy's `random_raw` is this).
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let rotation = (self.state >> 122) as u32;
        (((self.state >> 64) as u64) ^ (self.state as u64)).rotate_right(rotation)
    }

    /// `pcg64_next32`: the buffered high half if there is one, else the low half of a fresh 64-bit
    /// draw, buffering its high half.
    pub fn next_u32(&mut self) -> u32 {
        if let Some(high) = self.buffered_u32.take() {
            return high;
        }
        let draw = self.next_u64();
        self.buffered_u32 = Some((draw >> 32) as u32);
        draw as u32
    }

    /// `Generator.random()`: `next_double` of `pcg64.h`, `(next_uint64 >> 11) / 2^53`, in [0, 1).
    pub fn random(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `Generator.random(n)` (`random_standard_uniform_fill`): `n` calls of [`Generator::random`].
    pub fn random_n(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.random()).collect()
    }

    /// `random_bounded_uint64(state, 0, range, 0, use_masked=false)` of distributions.c: uniform
    /// in `[0, range]` (closed). Ranges that fit 32 bits use `buffered_bounded_lemire_uint32`
    /// (whose buffer arguments are unused: only PCG64's own 32-bit buffer matters), wider ones
    /// `bounded_lemire_uint64`; the full ranges return raw draws.
    fn bounded(&mut self, range: u64) -> u64 {
        if range == 0 {
            return 0;
        }
        if range <= u64::from(u32::MAX) {
            if range == u64::from(u32::MAX) {
                return u64::from(self.next_u32());
            }
            let range_excl = range + 1;
            let mut m = u64::from(self.next_u32()) * range_excl;
            let mut leftover = m as u32;
            if u64::from(leftover) < range_excl {
                let threshold = (u64::from(u32::MAX) - range) % range_excl;
                while u64::from(leftover) < threshold {
                    m = u64::from(self.next_u32()) * range_excl;
                    leftover = m as u32;
                }
            }
            return m >> 32;
        }
        if range == u64::MAX {
            return self.next_u64();
        }
        let range_excl = u128::from(range) + 1;
        let mut m = u128::from(self.next_u64()) * range_excl;
        let mut leftover = m as u64;
        if u128::from(leftover) < range_excl {
            let threshold = (u64::MAX - range) % (range + 1);
            while leftover < threshold {
                m = u128::from(self.next_u64()) * range_excl;
                leftover = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// `Generator.integers(low, high)` with the default int64 dtype: uniform in `[low, high)`,
    /// via `_rand_int64` → `random_bounded_uint64_fill(off=low, rng=high-1-low, masked=false)`.
    ///
    /// # Panics
    /// If `low >= high` (numpy's `ValueError: low >= high`).
    pub fn integers(&mut self, low: i64, high: i64) -> i64 {
        assert!(low < high, "Generator.integers: low ({low}) >= high ({high})");
        // The range as numpy's uint64 `rng`, and `off + value` wrapping as its uint64 sum does.
        let range = (i128::from(high) - 1 - i128::from(low)) as u64;
        (low as u64).wrapping_add(self.bounded(range)) as i64
    }

    /// `Generator.integers(low, high, size=n)`: the same draws as `n` single calls (the fill
    /// loop of `random_bounded_uint64_fill` keeps no state of its own between elements).
    pub fn integers_n(&mut self, low: i64, high: i64, n: usize) -> Vec<i64> {
        (0..n).map(|_| self.integers(low, high)).collect()
    }

    /// `random_interval(state, max)` of distributions.c: uniform in `[0, max]` by rejection of
    /// draws masked to the smallest all-ones mask covering `max` (32-bit draws while `max` fits).
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        if max <= u64::from(u32::MAX) {
            loop {
                let value = u64::from(self.next_u32()) & mask;
                if value <= max {
                    return value;
                }
            }
        }
        loop {
            let value = self.next_u64() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// `Generator.shuffle(x)` for a 1-d array (`_shuffle_raw`): Fisher-Yates from the last
    /// element down to index 1, swapping `i` with `random_interval(i)`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u64) as usize;
            items.swap(i, j);
        }
    }

    /// `Generator.permutation(n)`: `arange(n)` shuffled by [`Generator::shuffle`].
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut items: Vec<usize> = (0..n).collect();
        self.shuffle(&mut items);
        items
    }

    /// `Generator.choice(pop, size)` with replacement and no `p`: `integers(0, pop, size)`,
    /// as indices into `arange(pop)`.
    ///
    /// # Panics
    /// If `pop` is 0 while `size` is not (numpy's "a cannot be empty unless no samples are taken").
    pub fn choice(&mut self, pop: usize, size: usize) -> Vec<usize> {
        if size == 0 {
            return Vec::new();
        }
        assert!(pop > 0, "Generator.choice: cannot take {size} samples from an empty population");
        (0..size).map(|_| self.bounded(pop as u64 - 1) as usize).collect()
    }

    /// `Generator.choice(pop, size, replace=False)` with no `p` and `shuffle=True`, as indices
    /// into `arange(pop)`. For `pop > 10000` and `size > pop // 50`, numpy shuffles the tail of
    /// `arange(pop)` (`_shuffle_int(pop, max(pop - size, 1))`) and keeps its last `size` items;
    /// otherwise it runs Floyd's algorithm and shuffles the result with `_shuffle_int(size, 1)`.
    /// Both shuffles draw with `random_bounded_uint64` (Lemire), not `random_interval`.
    ///
    /// # Panics
    /// If `size > pop` (numpy's "Cannot take a larger sample than population").
    pub fn choice_without_replacement(&mut self, pop: usize, size: usize) -> Vec<usize> {
        assert!(size <= pop, "Generator.choice: cannot take {size} distinct samples from a population of {pop}");
        if pop > 10_000 && size > pop / 50 {
            let mut idx: Vec<usize> = (0..pop).collect();
            for i in (pop.saturating_sub(size).max(1)..pop).rev() {
                let j = self.bounded(i as u64) as usize;
                idx.swap(i, j);
            }
            return idx.split_off(pop - size);
        }
        // Floyd: each step draws from [0, j]; a value already taken is replaced by j itself,
        // which cannot have been taken since every earlier draw was below j. numpy's open-
        // addressing hash set is only a membership test, so any set gives the same result.
        let mut idx = Vec::with_capacity(size);
        let mut chosen = HashSet::with_capacity(size);
        for j in pop - size..pop {
            let mut value = self.bounded(j as u64) as usize;
            if !chosen.insert(value) {
                value = j;
                chosen.insert(value);
            }
            idx.push(value);
        }
        for i in (1..size).rev() {
            let k = self.bounded(i as u64) as usize;
            idx.swap(i, k);
        }
        idx
    }
}

/// tabpfn's `CLASS_SHIFT_METHOD` inference-config value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassShift {
    /// `"shuffle"`: permutations from argsorted noise, balanced over the estimators.
    Shuffle,
    /// `"rotate"`: rotations of `arange(n_classes)`.
    Rotate,
    /// `None`: no class permutation, and no draws.
    None,
}

/// What `fit`'s draws decide for ensemble member 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member0Plan {
    /// `s0`: member 0's entry of `fit_preprocessing`'s per-member seeds; every stochastic step
    /// of member 0's pipeline makes its own `default_rng(s0)` (or `RandomState(s0)`).
    pub seed: u64,
    /// Member 0's `class_permutation` (`y' = perm[y]`), for a classifier whose
    /// `CLASS_SHIFT_METHOD` is not None.
    pub class_permutation: Option<Vec<usize>>,
    /// Member 0's `feature_shift_count` (`featshifts[0]`): unused by `FEATURE_SHIFT_METHOD`
    /// "shuffle" and None, it is the roll of the columns under "rotate".
    pub feature_shift_count: usize,
}

/// Replays the draws of tabpfn 6.2's `fit` on `default_rng(random_state)` (docs/TABPFN.md §3):
/// `EnsembleConfig.generate_for_classification` / `generate_for_regression`, then
/// `fit_preprocessing`. `n_classes` is `Some` for a classifier and `None` for a regressor (which
/// makes no class draws, whatever `class_shift` says). Sample subsampling (`SUBSAMPLE_SAMPLES`)
/// would draw from a separate generator and is not modelled.
///
/// # Panics
/// If `n_estimators` is 0, or a classifier with a class shift has no classes: tabpfn itself
/// cannot fit either, so the caller must refuse them first.
pub fn member0_plan(
    random_state: u64,
    n_estimators: usize,
    n_classes: Option<usize>,
    class_shift: ClassShift,
) -> Member0Plan {
    assert!(n_estimators > 0, "member0_plan: n_estimators must be at least 1");
    let mut rng = Generator::new(random_state);
    // 1. `infer_random_state(rng)` in generate_for_*: static_seed, only used for subsampling.
    rng.integers(0, I32_MAX);
    // 2-3. The feature shifts: `choice(arange(start, start + N), N, replace=False)`.
    let start = rng.integers(0, MAXIMUM_FEATURE_SHIFT) as usize;
    let feature_shift_count = start + rng.choice_without_replacement(n_estimators, n_estimators)[0];
    // 4. Classifier only.
    let class_permutation = match (n_classes, class_shift) {
        (None, _) | (Some(_), ClassShift::None) => None,
        (Some(n_classes), shift) => {
            assert!(n_classes > 0, "member0_plan: a classifier needs at least one class");
            Some(match shift {
                ClassShift::Shuffle => shuffled_classes(&mut rng, n_estimators, n_classes),
                _ => rotated_classes(&mut rng, n_estimators, n_classes),
            })
        }
    };
    // 5. `infer_random_state(rng)` in fit_preprocessing; the value is discarded.
    rng.integers(0, I32_MAX);
    // 6. The per-member seeds; member 0 takes the first.
    let seed = rng.integers_n(0, I32_MAX, n_estimators)[0] as u64;
    Member0Plan { seed, class_permutation, feature_shift_count }
}

/// `class_shift_method == "shuffle"`: `argsort` of each row of `random((3N, C))`, the distinct
/// rows sorted lexicographically (`np.unique(axis=0)`), each repeated `N // len` times
/// (`balance`), then `N % len` more picked by `choice(len, N % len)`. Member 0's is the first.
fn shuffled_classes(rng: &mut Generator, n_estimators: usize, n_classes: usize) -> Vec<usize> {
    let noise = rng.random_n(CLASS_SHUFFLE_OVERESTIMATE_FACTOR * n_estimators * n_classes);
    let mut uniqs: Vec<Vec<usize>> = noise
        .chunks_exact(n_classes)
        .map(|row| {
            // numpy's default argsort is not stable, but the draws are distinct multiples of
            // 2^-53: two equal values in a row have probability about C^2 / 2^54, so any correct
            // sort gives numpy's answer. Ties would go to the lower index.
            let mut order: Vec<usize> = (0..n_classes).collect();
            order.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
            order
        })
        .collect();
    uniqs.sort_unstable();
    uniqs.dedup();
    let balance_count = n_estimators / uniqs.len();
    let rand_count = n_estimators % uniqs.len();
    // The draws happen whenever `rand_count > 0`, even when member 0 is already a balanced one.
    let picks = if rand_count > 0 { rng.choice(uniqs.len(), rand_count) } else { Vec::new() };
    let first = if balance_count > 0 { 0 } else { picks[0] };
    uniqs.swap_remove(first)
}

/// `class_shift_method == "rotate"`: `shifts = permutation(C)`, then member 0 takes
/// `roll(arange(C), shifts[k])` for the first `k` of `choice(C, N)`.
fn rotated_classes(rng: &mut Generator, n_estimators: usize, n_classes: usize) -> Vec<usize> {
    let shifts = rng.permutation(n_classes);
    let shift = shifts[rng.choice(n_classes, n_estimators)[0]];
    // np.roll(a, s)[i] == a[(i - s) mod C].
    (0..n_classes).map(|i| (i + n_classes - shift) % n_classes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: [u64; 5] = [0, 1, 42, (1 << 31) - 2, u64::MAX];

    fn is_permutation(values: &[usize], n: usize) -> bool {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        sorted == (0..n).collect::<Vec<_>>()
    }

    /// Melissa O'Neill's C++ `seed_seq_fe` reference vectors, as numpy's test_seed_sequence.py
    /// (`test_reference_data`) quotes them from https://gist.github.com/imneme/540829265469e673d045.
    #[test]
    fn seed_sequence_matches_the_cpp_reference() {
        let cases: [([u32; 4], [u32; 4], [u64; 2]); 3] = [
            (
                [3735928559, 195939070, 229505742, 305419896],
                [3914649087, 576849849, 3593928901, 2229911004],
                [2477551240072187391, 9577394838764454085],
            ),
            (
                [3668361503, 4165561550, 1661411377, 3634257570],
                [2240804226, 3691353228, 1365957195, 2654016646],
                [15854241394484835714, 11398914698975566411],
            ),
            (
                [2766103236, 2883057919, 4029656435, 862374500],
                [296367413, 4262059219, 13109864, 3283683422],
                [18305404959516669237, 14103312907920476776],
            ),
        ];
        for (input, words, words64) in cases {
            let entropy = input.iter().rev().fold(0u128, |acc, &w| (acc << 32) | u128::from(w));
            let seq = SeedSequence::new(entropy);
            assert_eq!(seq.generate_state_u32(4), words);
            assert_eq!(seq.generate_state_u64(2), words64);
        }
    }

    /// The first raw outputs of numpy's own PCG64 known-answer file
    /// (numpy/random/tests/data/pcg64-testset-1.csv, `seed, 0xdeadbeaf`).
    #[test]
    fn pcg64_matches_numpy_known_answers() {
        let mut rng = Generator::new(0xdeadbeaf);
        for expected in [0x60d24054e17a0698u64, 0xd5e79d89856e4f12, 0xd254972fe64bd782, 0xf1e3072a53c72571] {
            assert_eq!(rng.next_u64(), expected);
        }
    }

    #[test]
    fn u32_draws_are_the_halves_of_a_u64_low_first_and_survive_other_calls() {
        for seed in SEEDS {
            let mut reference = Generator::new(seed);
            let first = reference.next_u64();
            let second = reference.next_u64();
            let mut rng = Generator::new(seed);
            assert_eq!(rng.next_u32(), first as u32);
            // random() takes a fresh 64-bit draw and leaves the buffered high half in place.
            assert_eq!(rng.random(), (second >> 11) as f64 / (1u64 << 53) as f64);
            assert_eq!(rng.next_u32(), (first >> 32) as u32);
            assert_eq!(rng, reference);
        }
    }

    #[test]
    fn same_seed_same_draws_different_seed_different_draws() {
        let draws = |seed| {
            let mut rng = Generator::new(seed);
            (rng.integers_n(0, I32_MAX, 4), rng.permutation(10), rng.random_n(3))
        };
        for seed in SEEDS {
            assert_eq!(draws(seed), draws(seed));
        }
        for pair in SEEDS.windows(2) {
            assert_ne!(draws(pair[0]), draws(pair[1]));
        }
        // Seeds of different word lengths must not collide through the zero padding.
        assert_ne!(draws(1 << 32), draws(1));
    }

    #[test]
    fn integers_stay_in_bounds() {
        let bounds: [(i64, i64); 8] =
            [(0, 1), (0, 2), (-5, 3), (0, 1000), (0, I32_MAX), (0, 1 << 32), (7, (1 << 40) + 3), (i64::MIN, i64::MAX)];
        for seed in SEEDS {
            let mut rng = Generator::new(seed);
            for (low, high) in bounds {
                for value in rng.integers_n(low, high, 200) {
                    assert!((low..high).contains(&value), "{value} outside [{low}, {high})");
                }
            }
        }
    }

    #[test]
    fn power_of_two_ranges_take_the_top_bits() {
        // Lemire with a range of 2^k never rejects and returns the draw's top k bits.
        for seed in SEEDS {
            let mut reference = Generator::new(seed);
            let mut rng = Generator::new(seed);
            assert_eq!(rng.integers(0, 1 << 16), i64::from(reference.next_u32() >> 16));
            assert_eq!(rng.integers(10, 10 + (1 << 32)), 10 + i64::from(reference.next_u32()));
            assert_eq!(rng.integers(0, 1 << 40), (reference.next_u64() >> 24) as i64);
            assert_eq!(rng, reference);
        }
    }

    #[test]
    fn one_value_ranges_and_trivial_shuffles_draw_nothing() {
        let mut rng = Generator::new(3);
        assert_eq!(rng.integers(5, 6), 5);
        assert_eq!(rng.permutation(1), vec![0]);
        assert_eq!(rng.permutation(0), Vec::<usize>::new());
        assert_eq!(rng.choice_without_replacement(4, 0), Vec::<usize>::new());
        assert_eq!(rng.choice_without_replacement(1, 1), vec![0]);
        assert_eq!(rng, Generator::new(3));
    }

    #[test]
    fn integers_are_roughly_uniform() {
        // 60000 draws in 6 bins: each count is 10000 with a standard deviation of about 91.
        let mut rng = Generator::new(42);
        let mut counts = [0usize; 6];
        for value in rng.integers_n(0, 6, 60_000) {
            counts[value as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c.abs_diff(10_000) < 500), "{counts:?}");
    }

    #[test]
    fn random_is_a_multiple_of_2_pow_minus_53_in_unit_interval() {
        let mut rng = Generator::new(1);
        for value in rng.random_n(1000) {
            assert!((0.0..1.0).contains(&value));
            assert_eq!((value * (1u64 << 53) as f64).fract(), 0.0);
        }
    }

    #[test]
    fn permutations_are_permutations() {
        for seed in SEEDS {
            let mut rng = Generator::new(seed);
            for n in [2, 3, 9, 300, 70_000] {
                let perm = rng.permutation(n);
                assert!(is_permutation(&perm, n), "n = {n}");
                if n >= 9 {
                    // The identity has probability 1/9! or less.
                    assert_ne!(perm, (0..n).collect::<Vec<_>>(), "n = {n} left in order");
                }
            }
        }
    }

    #[test]
    fn choice_without_replacement_is_distinct_and_in_range() {
        // (600, 500) and (20000, 300) run Floyd; (20000, 500) and (20000, 20000) the tail shuffle.
        for seed in SEEDS {
            let mut rng = Generator::new(seed);
            for (pop, size) in [(8, 8), (13, 5), (600, 500), (20_000, 300), (20_000, 500), (20_000, 20_000)] {
                let picked = rng.choice_without_replacement(pop, size);
                assert_eq!(picked.len(), size);
                assert!(picked.iter().all(|&i| i < pop), "({pop}, {size})");
                let distinct: HashSet<_> = picked.iter().collect();
                assert_eq!(distinct.len(), size, "({pop}, {size})");
            }
            assert!(is_permutation(&rng.choice_without_replacement(20_000, 20_000), 20_000));
        }
    }

    #[test]
    fn choice_with_replacement_draws_as_integers() {
        for seed in SEEDS {
            let mut rng = Generator::new(seed);
            let mut reference = Generator::new(seed);
            let picked = rng.choice(7, 50);
            let expected: Vec<usize> = reference.integers_n(0, 7, 50).into_iter().map(|v| v as usize).collect();
            assert_eq!(picked, expected);
        }
    }

    #[test]
    fn regressor_plan_is_the_spec_draw_sequence() {
        for seed in SEEDS {
            let mut rng = Generator::new(seed);
            rng.integers(0, I32_MAX);
            let start = rng.integers(0, 1000) as usize;
            let shift = start + rng.choice_without_replacement(8, 8)[0];
            rng.integers(0, I32_MAX);
            let s0 = rng.integers_n(0, I32_MAX, 8)[0] as u64;
            let expected = Member0Plan { seed: s0, class_permutation: None, feature_shift_count: shift };
            assert_eq!(member0_plan(seed, 8, None, ClassShift::Shuffle), expected);
            // A classifier without a class shift draws exactly the same.
            assert_eq!(member0_plan(seed, 8, Some(3), ClassShift::None), expected);
            assert!(s0 < I32_MAX as u64);
            assert!((start..start + 8).contains(&shift));
        }
    }

    #[test]
    fn class_permutations_are_permutations_and_consume_draws() {
        for seed in SEEDS {
            let plain = member0_plan(seed, 8, Some(5), ClassShift::None).seed;
            for (n_estimators, n_classes) in [(8, 2), (8, 3), (8, 5), (8, 10), (1, 2), (4, 7), (3, 1)] {
                for shift in [ClassShift::Shuffle, ClassShift::Rotate] {
                    let plan = member0_plan(seed, n_estimators, Some(n_classes), shift);
                    let perm = plan.class_permutation.expect("a classifier with a class shift has a permutation");
                    assert!(is_permutation(&perm, n_classes), "{shift:?} ({n_estimators}, {n_classes}): {perm:?}");
                    if shift == ClassShift::Rotate {
                        let s = (n_classes - perm[0]) % n_classes;
                        assert!((0..n_classes).all(|i| perm[i] == (i + n_classes - s) % n_classes), "{perm:?}");
                    }
                    if n_estimators == 8 {
                        assert_ne!(plan.seed, plain, "{shift:?} ({n_estimators}, {n_classes}) drew nothing");
                    }
                }
            }
        }
    }

    #[test]
    fn two_classes_shuffled_over_eight_estimators_start_with_the_identity() {
        // 24 rows of noise show both orders (all alike: chance 2^-23), so the sorted uniques are
        // [[0, 1], [1, 0]], each taken 4 times, and member 0 gets [0, 1] without a choice draw.
        for seed in SEEDS {
            let plan = member0_plan(seed, 8, Some(2), ClassShift::Shuffle);
            assert_eq!(plan.class_permutation, Some(vec![0, 1]));
        }
    }
}

//! `ShuffleFeaturesStep`: the final column order. Output column `i` is input column `perm[i]`.

use super::config::FeatureShift;
use super::Rng;

/// The permutation of `width` columns for `shift`.
pub fn permutation<R: Rng>(shift: FeatureShift, width: usize, seed: u64, rng_for: &impl Fn(u64) -> R) -> Vec<usize> {
    match shift {
        FeatureShift::Shuffle => rng_for(seed).permutation(width),
        FeatureShift::None => (0..width).collect(),
        // np.roll(arange(width), count): position i holds i - count (mod width)
        FeatureShift::Rotate(count) => {
            (0..width).map(|i| (i as i64 - count as i64).rem_euclid(width as i64) as usize).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<usize>);
    impl Rng for Fixed {
        fn integers(&mut self, _: i64, _: i64) -> i64 {
            unreachable!()
        }
        fn permutation(&mut self, n: usize) -> Vec<usize> {
            assert_eq!(n, self.0.len());
            self.0.clone()
        }
        fn choice_without_replacement(&mut self, _: usize, _: usize) -> Vec<usize> {
            unreachable!()
        }
    }

    #[test]
    fn rotate_matches_np_roll() {
        // np.roll([0, 1, 2, 3, 4], 2) == [3, 4, 0, 1, 2]; shifts wrap around
        let none = |_| Fixed(vec![]);
        assert_eq!(permutation(FeatureShift::Rotate(2), 5, 0, &none), vec![3, 4, 0, 1, 2]);
        assert_eq!(permutation(FeatureShift::Rotate(12), 5, 0, &none), vec![3, 4, 0, 1, 2]);
        assert_eq!(permutation(FeatureShift::None, 3, 0, &none), vec![0, 1, 2]);
        let drawn = |_| Fixed(vec![2, 0, 1]);
        assert_eq!(permutation(FeatureShift::Shuffle, 3, 0, &drawn), vec![2, 0, 1]);
    }
}

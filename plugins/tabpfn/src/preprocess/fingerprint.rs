//! `AddFingerprintFeaturesStep`: a last column holding a hash of each row, so that the model
//! can tell identical rows apart. The hash is SHA-256 of the row's float64 bytes after adding a
//! random salt, read as a big-endian integer, `mod 10^12 / 10^12`. Train rows that collide with
//! an earlier train row are rehashed with `+1`, `+2`, ... added; eval rows get the salt added
//! twice (tabpfn 6.2 adds it before its loop and again inside) and no collision handling.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::Rng;

/// The hash modulus `10^12`.
const MODULUS: u128 = 1_000_000_000_000;

/// The salt, `default_rng(s0).integers(0, 2**16)`.
pub fn salt<R: Rng>(rng: &mut R) -> f64 {
    rng.integers(0, 1 << 16) as f64
}

/// The integer `k` of `k / 10^12` for one row; NaNs hash as numpy's `0x7ff8000000000000`.
fn hash_integer(row: impl Iterator<Item = f64>) -> u64 {
    let mut hasher = Sha256::new();
    for v in row {
        let bits = if v.is_nan() { 0x7ff8_0000_0000_0000u64 } else { v.to_bits() };
        hasher.update(bits.to_le_bytes());
    }
    let remainder = hasher.finalize().iter().fold(0u128, |r, &byte| (r * 256 + u128::from(byte)) % MODULUS);
    remainder as u64
}

/// `k / 10^12`: both exact in float64, so the division is correctly rounded, as Python's.
fn as_fraction(k: u64) -> f64 {
    k as f64 / MODULUS as f64
}

/// The fingerprints of the train rows of a column-major matrix.
pub fn train(columns: &[Vec<f64>], salt: f64) -> Vec<f64> {
    let rows = columns.first().map_or(0, Vec::len);
    let mut seen = HashSet::with_capacity(rows);
    (0..rows)
        .map(|i| {
            let salted: Vec<f64> = columns.iter().map(|c| c[i] + salt).collect();
            let mut k = hash_integer(salted.iter().copied());
            // a row that is all NaN keeps its (colliding) hash
            let all_nan = salted.iter().all(|v| v.is_nan());
            let mut add = 0.0;
            while seen.contains(&k) && !all_nan {
                add += 1.0;
                k = hash_integer(salted.iter().map(|&v| v + add));
            }
            seen.insert(k);
            as_fraction(k)
        })
        .collect()
}

/// The fingerprints of eval rows of a column-major matrix: `hash((row + salt) + salt)`.
pub fn eval(columns: &[Vec<f64>], salt: f64) -> Vec<f64> {
    let rows = columns.first().map_or(0, Vec::len);
    (0..rows).map(|i| as_fraction(hash_integer(columns.iter().map(|c| (c[i] + salt) + salt)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_modulus_of_known_input() {
        // SHA-256 of no bytes (FIPS 180-2 test vector) e3b0c442...7852b855, reduced mod 10^12
        // independently: N = hi * 2^128 + lo, so N mod m = (hi mod m)(2^128 mod m) + lo mod m.
        let hi: u128 = 0xe3b0c44298fc1c149afbf4c8996fb924;
        let lo: u128 = 0x27ae41e4649b934ca495991b7852b855;
        let two_128 = ((u128::MAX % MODULUS) + 1) % MODULUS;
        let expected = ((hi % MODULUS) * two_128 % MODULUS + lo % MODULUS) % MODULUS;
        assert_eq!(u128::from(hash_integer(std::iter::empty())), expected);
    }

    #[test]
    fn nan_payloads_hash_alike() {
        let other_nan = f64::from_bits(0xfff8_0000_0000_0001);
        assert!(other_nan.is_nan());
        assert_eq!(hash_integer([1.0, f64::NAN].into_iter()), hash_integer([1.0, other_nan].into_iter()));
        assert_ne!(hash_integer([1.0, 2.0].into_iter()), hash_integer([2.0, 1.0].into_iter()));
    }

    #[test]
    fn duplicate_train_rows_get_distinct_fingerprints() {
        // three identical rows (1, 2), column-major
        let h = train(&[vec![1.0; 3], vec![2.0; 3]], 7.0);
        assert_eq!(h[0], as_fraction(hash_integer([8.0, 9.0].into_iter())));
        // the second is rehashed with +1, the third with +1 (taken) then +2
        assert_eq!(h[1], as_fraction(hash_integer([9.0, 10.0].into_iter())));
        assert_eq!(h[2], as_fraction(hash_integer([10.0, 11.0].into_iter())));
        // all-NaN rows keep colliding
        let nan = f64::NAN;
        let h = train(&[vec![nan, nan]], 7.0);
        assert_eq!(h[0], h[1]);
    }

    #[test]
    fn eval_adds_the_salt_twice() {
        // (0.001 + 3) + 3 rounds differently from 0.001 + 6
        let (x, salt) = (0.001, 3.0);
        assert_ne!((x + salt) + salt, x + 2.0 * salt);
        assert_eq!(eval(&[vec![x]], salt), vec![as_fraction(hash_integer([(x + salt) + salt].into_iter()))]);
        assert_ne!(eval(&[vec![x]], salt)[0], as_fraction(hash_integer([x + 2.0 * salt].into_iter())));
        // and differs from the train fingerprint of the same row
        assert_ne!(eval(&[vec![1.0]], salt), train(&[vec![1.0]], salt));
    }
}

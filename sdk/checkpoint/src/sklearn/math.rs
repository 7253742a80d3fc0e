//! The float64 functions behind scikit-learn's transforms, as numpy and scipy compute them:
//! numpy's `interp`, scipy's `ndtri` (`stats.norm.ppf`, Cephes' rational approximations),
//! `special.boxcox` and `stats.yeojohnson`'s transform.

/// `np.interp(x, xp, fp)` as numpy's C loop computes it (`arr_interp`): `xp` ascending (ties
/// allowed), the left/right values `fp[0]`/`fp[-1]`, the slope of the bracketing interval, an
/// exact hit on a knot returning its `fp`, and numpy's fallbacks when the formula gives NaN.
pub fn interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let n = xp.len();
    if n == 1 {
        // numpy's single-knot branch has no NaN test: everything maps to fp[0]
        return fp[0];
    }
    if x.is_nan() {
        return x;
    }
    // numpy's binary search: j such that xp[j] <= x < xp[j+1]; -1 left of xp[0]; n right of
    // xp[n-1]; n-1 when x == xp[n-1].
    let j = if x < xp[0] {
        -1
    } else if x > xp[n - 1] {
        n as isize
    } else {
        xp.partition_point(|&knot| knot <= x) as isize - 1
    };
    if j < 0 {
        fp[0]
    } else if j as usize >= n {
        fp[n - 1]
    } else {
        let j = j as usize;
        if j == n - 1 || xp[j] == x {
            return fp[j];
        }
        let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
        let mut result = slope * (x - xp[j]) + fp[j];
        if result.is_nan() {
            result = slope * (x - xp[j + 1]) + fp[j + 1];
            if result.is_nan() && fp[j] == fp[j + 1] {
                result = fp[j];
            }
        }
        result
    }
}

/// The inverse of the standard normal CDF (scipy's `ndtri`, which `stats.norm.ppf` calls):
/// -inf at 0, +inf at 1, NaN outside [0, 1]. Cephes' three rational approximations: around the
/// centre in `y - 0.5`, and in the tails in `1 / sqrt(-2 log y)` for y down to exp(-32) and
/// below.
// The constants as Cephes publishes them, with more digits than a float64 holds: the compiler
// rounds them to the same float64s as scipy's C compiler does.
#[allow(clippy::excessive_precision)]
pub fn ndtri(y0: f64) -> f64 {
    // sqrt(2 pi)
    const S2PI: f64 = 2.506_628_274_631_000_502_42;
    // exp(-2)
    const EXP_M2: f64 = 0.135_335_283_236_612_691_89;
    // Centre, |y - 0.5| <= 3/8.
    const P0: [f64; 5] = [
        -5.996_335_010_141_078_952_67E1,
        9.800_107_541_859_996_615_36E1,
        -5.667_628_574_690_702_934_39E1,
        1.393_126_093_872_796_795_03E1,
        -1.239_165_838_673_812_580_16E0,
    ];
    const Q0: [f64; 8] = [
        1.954_488_583_381_417_598_34E0,
        4.676_279_128_988_815_384_53E0,
        8.636_024_213_908_905_905_75E1,
        -2.254_626_878_541_193_705_27E2,
        2.002_602_123_800_606_603_59E2,
        -8.203_722_561_683_333_399_12E1,
        1.590_562_251_262_116_955_15E1,
        -1.183_316_211_213_300_031_42E0,
    ];
    // Tails with sqrt(-2 log y) between 2 and 8.
    const P1: [f64; 9] = [
        4.055_448_923_059_624_199_23E0,
        3.152_510_945_998_938_661_54E1,
        5.716_281_922_464_212_881_62E1,
        4.408_050_738_932_008_347_00E1,
        1.468_495_619_288_580_240_14E1,
        2.186_633_068_507_902_675_39E0,
        -1.402_560_791_713_544_958_75E-1,
        -3.504_246_268_278_482_034_18E-2,
        -8.574_567_851_546_854_136_11E-4,
    ];
    const Q1: [f64; 8] = [
        1.577_998_832_564_667_497_31E1,
        4.539_076_351_288_792_105_84E1,
        4.131_720_382_546_720_304_40E1,
        1.504_253_856_929_075_034_08E1,
        2.504_649_462_083_094_159_79E0,
        -1.421_829_228_547_877_885_74E-1,
        -3.808_064_076_915_782_771_94E-2,
        -9.332_594_808_954_574_273_72E-4,
    ];
    // Tails with sqrt(-2 log y) between 8 and 64.
    const P2: [f64; 9] = [
        3.237_748_917_769_460_359_70E0,
        6.915_228_890_689_842_116_95E0,
        3.938_810_252_924_744_434_15E0,
        1.333_034_608_158_075_423_89E0,
        2.014_853_895_491_790_815_38E-1,
        1.237_166_348_178_200_213_58E-2,
        3.015_815_535_082_354_160_07E-4,
        2.658_069_746_867_375_508_32E-6,
        6.239_745_391_849_832_937_30E-9,
    ];
    const Q2: [f64; 8] = [
        6.024_270_393_647_420_142_55E0,
        3.679_835_638_561_608_594_03E0,
        1.377_020_994_890_813_302_71E0,
        2.162_369_935_944_966_358_90E-1,
        1.342_040_060_885_431_890_37E-2,
        3.280_144_646_821_277_391_04E-4,
        2.892_478_647_453_806_839_36E-6,
        6.790_194_080_099_812_744_25E-9,
    ];

    if y0 == 0.0 {
        return f64::NEG_INFINITY;
    }
    if y0 == 1.0 {
        return f64::INFINITY;
    }
    if !(0.0..=1.0).contains(&y0) {
        return f64::NAN;
    }
    let mut y = y0;
    let mut lower_tail = true;
    if y > 1.0 - EXP_M2 {
        y = 1.0 - y;
        lower_tail = false;
    }
    if y > EXP_M2 {
        let y = y - 0.5;
        let y2 = y * y;
        let x = y + y * (y2 * polynomial(y2, &P0) / monic_polynomial(y2, &Q0));
        return x * S2PI;
    }
    let x = (-2.0 * y.ln()).sqrt();
    let x0 = x - x.ln() / x;
    let z = 1.0 / x;
    let x1 = if x < 8.0 {
        z * polynomial(z, &P1) / monic_polynomial(z, &Q1)
    } else {
        z * polynomial(z, &P2) / monic_polynomial(z, &Q2)
    };
    let x = x0 - x1;
    if lower_tail {
        -x
    } else {
        x
    }
}

/// Horner's rule over `coefficients`, highest degree first (Cephes' `polevl`).
fn polynomial(x: f64, coefficients: &[f64]) -> f64 {
    coefficients[1..].iter().fold(coefficients[0], |acc, &c| acc * x + c)
}

/// The same with an implicit leading coefficient 1 (Cephes' `p1evl`).
fn monic_polynomial(x: f64, coefficients: &[f64]) -> f64 {
    coefficients[1..].iter().fold(x + coefficients[0], |acc, &c| acc * x + c)
}

/// scipy's `special.boxcox(x, lmbda)`: `log(x)` for a lambda within 1e-19 of 0, otherwise
/// `expm1(lmbda log x) / lmbda`, rearranged where `lmbda log x` would overflow `expm1`.
pub fn boxcox(x: f64, lmbda: f64) -> f64 {
    let log_x = x.ln();
    if lmbda.abs() < 1e-19 {
        log_x
    } else if lmbda * log_x < 709.78 {
        (lmbda * log_x).exp_m1() / lmbda
    } else {
        1f64.copysign(lmbda) * (lmbda * log_x - lmbda.abs().ln()).exp() - 1.0 / lmbda
    }
}

/// scipy's `stats.yeojohnson(x, lmbda)` for one value: `expm1(lmbda log1p(x)) / lmbda` for
/// x >= 0 (`log1p(x)` when lambda is within machine epsilon of 0), and
/// `-expm1((2 - lmbda) log1p(-x)) / (2 - lmbda)` below 0 (`-log1p(-x)` when lambda is 2).
/// NaN goes the negative way and stays NaN.
pub fn yeojohnson(x: f64, lmbda: f64) -> f64 {
    let eps = f64::EPSILON;
    if x >= 0.0 {
        if lmbda.abs() < eps {
            x.ln_1p()
        } else {
            (lmbda * x.ln_1p()).exp_m1() / lmbda
        }
    } else if (lmbda - 2.0).abs() > eps {
        -((2.0 - lmbda) * (-x).ln_1p()).exp_m1() / (2.0 - lmbda)
    } else {
        -(-x).ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_matches_numpy_rules() {
        let xp = [0.0, 1.0, 1.0, 3.0];
        let fp = [0.0, 0.25, 0.5, 1.0];
        assert_eq!(interp(-1.0, &xp, &fp), 0.0);
        assert_eq!(interp(4.0, &xp, &fp), 1.0);
        assert_eq!(interp(3.0, &xp, &fp), 1.0);
        // on a tied knot numpy takes the last of the ties
        assert_eq!(interp(1.0, &xp, &fp), 0.5);
        assert_eq!(interp(0.5, &xp, &fp), 0.125);
        assert_eq!(interp(2.0, &xp, &fp), 0.75);
        assert!(interp(f64::NAN, &xp, &fp).is_nan());
    }

    #[test]
    fn ndtri_inverts_known_quantiles() {
        assert_eq!(ndtri(0.5), 0.0);
        assert_eq!(ndtri(0.0), f64::NEG_INFINITY);
        assert_eq!(ndtri(1.0), f64::INFINITY);
        assert!(ndtri(1.5).is_nan() && ndtri(-0.1).is_nan() && ndtri(f64::NAN).is_nan());
        // Φ⁻¹ of 0.975, 0.8413447460685429 (Φ(1)), 1e-10 and 1e-20, to 15 digits.
        for (p, z) in [
            (0.975, 1.959_963_984_540_054),
            (0.841_344_746_068_542_9, 1.0),
            (1e-10, -6.361_340_902_404_056),
            (1e-20, -9.262_340_089_798_408),
        ] {
            let got = ndtri(p);
            assert!((got - z).abs() <= 1e-14 * z.abs().max(1.0), "ndtri({p}) = {got}, want {z}");
        }
        // Symmetric in the tails: the upper tail is computed from 1 - y.
        assert!((ndtri(0.9) + ndtri(0.1)).abs() < 1e-15);
    }

    #[test]
    fn power_transforms_at_their_special_lambdas() {
        assert_eq!(boxcox(std::f64::consts::E, 0.0), 1.0);
        assert!((boxcox(4.0, 0.5) - 2.0).abs() < 1e-15);
        // Yeo-Johnson is the identity at lambda 1 on both sides, log1p at 0, -log1p(-x) at 2.
        for x in [-3.0, -0.5, 0.0, 0.5, 3.0] {
            assert!((yeojohnson(x, 1.0) - x).abs() < 1e-15, "{x}");
        }
        assert_eq!(yeojohnson(2.0, 0.0), 2f64.ln_1p());
        assert_eq!(yeojohnson(-2.0, 2.0), -(2f64.ln_1p()));
        assert!(yeojohnson(f64::NAN, 0.7).is_nan());
    }
}

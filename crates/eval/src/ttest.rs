//! Paired two-tailed Student t-test over per-user metrics, and the special functions behind it.
//!
//! The Student-t tail comes from the regularized incomplete beta function,
//! `P(|T| > t) = I_x(ν/2, 1/2)` with `x = ν / (ν + t²)`, evaluated by Lentz's continued fraction
//! (Numerical Recipes §6.4) with `ln Γ` from the Lanczos approximation (g = 7, 9 terms). Relative accuracy
//! is about 1e-13 for moderate parameters and stays near 1e-10 for degrees of freedom up to 1e5.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::evaluate::EvalResult;

/// The outcome of a paired t-test of `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TTest {
    /// `mean(d) / (sd(d) / √n)` with `d = a − b` and the sample standard deviation (n − 1).
    pub t: f64,
    /// Degrees of freedom, `n − 1`.
    pub df: f64,
    /// Two-tailed p-value, `P(|T_df| ≥ |t|)`.
    pub p_value: f64,
    /// `mean(a − b)`: positive when `a` is larger.
    pub mean_diff: f64,
    /// Number of pairs.
    pub n: usize,
}

/// Two-tailed paired t-test of `a` against `b` (pair `i` is `(a[i], b[i])`).
///
/// Errors when the lengths differ, when there are fewer than 2 pairs, or on a non-finite value. When the
/// differences have zero variance (all equal), the statistic is degenerate: `t = ±∞, p = 0` when their mean
/// is non-zero (a consistent difference), and `t = 0, p = 1` when every pair is equal.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Result<TTest> {
    if a.len() != b.len() {
        return Err(Error::LengthMismatch { a: a.len(), b: b.len() });
    }
    let n = a.len();
    if n < 2 {
        return Err(Error::TooFewPairs(n));
    }
    for (sample, values) in [("a", a), ("b", b)] {
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite { sample, index, value });
        }
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let df = (n - 1) as f64;
    if d.iter().all(|&x| x == d[0]) {
        let mean_diff = d[0];
        let (t, p_value) = if mean_diff == 0.0 { (0.0, 1.0) } else { (mean_diff.signum() * f64::INFINITY, 0.0) };
        return Ok(TTest { t, df, p_value, mean_diff, n });
    }
    let mean_diff = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean_diff).powi(2)).sum::<f64>() / df;
    let t = mean_diff / (var / n as f64).sqrt();
    Ok(TTest { t, df, p_value: student_t_two_tailed(t, df), mean_diff, n })
}

/// Paired t-test of metric `metric` (a per-user name such as `"ndcg@20"`) of `a` against `b`.
///
/// Both results must cover the same users; `recall_micro@K` has no per-user values and is an error.
pub fn compare(a: &EvalResult, b: &EvalResult, metric: &str) -> Result<TTest> {
    if a.users != b.users {
        let position =
            a.users.iter().zip(&b.users).position(|(x, y)| x != y).unwrap_or(a.users.len().min(b.users.len()));
        return Err(Error::MismatchedUsers { a: a.users.len(), b: b.users.len(), position });
    }
    paired_t_test(per_user_values(a, metric)?, per_user_values(b, metric)?)
}

fn per_user_values<'a>(r: &'a EvalResult, metric: &str) -> Result<&'a [f64]> {
    r.per_user.get(metric).map(Vec::as_slice).ok_or_else(|| Error::UnknownMetric {
        name: metric.to_string(),
        available: r.per_user.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}

/// `ln |Γ(x)|` by the Lanczos approximation (g = 7, 9 coefficients), with the reflection formula below 1/2.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Γ(x) Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin().abs()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEF[0];
    for (i, &c) in COEF.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 ≤ x ≤ 1` (NaN outside).
pub fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    inc_beta(a, b, x, 1.0 - x)
}

/// `I_x(a, b)` with `y = 1 − x` supplied by the caller, so that a `y` near 0 keeps its precision.
fn inc_beta(a: f64, b: f64, x: f64, y: f64) -> f64 {
    if a.is_nan() || b.is_nan() || x.is_nan() || a <= 0.0 || b <= 0.0 || !(0.0..=1.0).contains(&x) {
        return f64::NAN;
    }
    if x == 0.0 {
        return 0.0;
    }
    if y <= 0.0 {
        return 1.0;
    }
    let ln_front = a * x.ln() + b * y.ln() - (ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b));
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); otherwise use I_x(a, b) = 1 − I_y(b, a).
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(b, a, y) / b
    }
}

/// Continued fraction of the incomplete beta function by the modified Lentz method (Numerical Recipes `betacf`).
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const MAX_ITER: usize = 100_000;
    const EPS: f64 = 1e-16;
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=MAX_ITER {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step.
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        // Odd step.
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// `P(|T| > |t|)` for Student's t with `df` degrees of freedom: `I_x(df/2, 1/2)`, `x = df / (df + t²)`.
fn student_t_two_tailed(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    // r = t² / df, formed so that it overflows only for astronomically large |t|.
    let r = (t.abs() / df.sqrt()).powi(2);
    if r == 0.0 {
        return 1.0;
    }
    if r.is_infinite() {
        return 0.0;
    }
    inc_beta(0.5 * df, 0.5, 1.0 / (1.0 + r), r / (1.0 + r)).min(1.0)
}

/// Survival function `P(T > t)` of Student's t with `df > 0` degrees of freedom (NaN otherwise).
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    let half_tail = 0.5 * student_t_two_tailed(t, df);
    if t > 0.0 {
        half_tail
    } else {
        1.0 - half_tail
    }
}

/// Cumulative distribution `P(T ≤ t)` of Student's t with `df > 0` degrees of freedom (NaN otherwise).
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let half_tail = 0.5 * student_t_two_tailed(t, df);
    if t > 0.0 {
        1.0 - half_tail
    } else {
        half_tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::f64::consts::PI;

    fn close(got: f64, want: f64, tol: f64) {
        assert!((got - want).abs() <= tol * want.abs().max(1.0), "got {got:e}, want {want:e}");
    }

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        let mut fact = 1.0f64;
        for n in 1..=30u32 {
            // Γ(n) = (n − 1)!
            close(ln_gamma(f64::from(n)), fact.ln(), 1e-13);
            fact *= f64::from(n);
        }
        close(ln_gamma(0.5), PI.sqrt().ln(), 1e-14);
        close(ln_gamma(1.5), (PI.sqrt() / 2.0).ln(), 1e-14);
        // Γ(0.1) = 9.513507698668731836 (Abramowitz & Stegun table 6.1 via Γ(1.1) / 0.1).
        close(ln_gamma(0.1), 9.513_507_698_668_732f64.ln(), 1e-14);
        // Stirling with 1/(12x) − 1/(360x³) is exact to ~1e-17 at x = 1000.
        let x = 1000.0f64;
        let stirling = (x - 0.5) * x.ln() - x + 0.5 * (2.0 * PI).ln() + 1.0 / (12.0 * x) - 1.0 / (360.0 * x.powi(3));
        close(ln_gamma(x), stirling, 1e-14);
    }

    #[test]
    fn incomplete_beta_matches_closed_forms() {
        for i in 0..=20 {
            let x = f64::from(i) / 20.0;
            close(regularized_incomplete_beta(1.0, 1.0, x), x, 1e-12);
            for a in [0.3, 2.0, 7.5] {
                close(regularized_incomplete_beta(a, 1.0, x), x.powf(a), 1e-12);
                close(regularized_incomplete_beta(1.0, a, x), 1.0 - (1.0 - x).powf(a), 1e-12);
            }
            close(regularized_incomplete_beta(2.0, 2.0, x), 3.0 * x * x - 2.0 * x.powi(3), 1e-12);
            close(regularized_incomplete_beta(0.5, 0.5, x), 2.0 / PI * x.sqrt().asin(), 1e-12);
            // Symmetry I_x(a, b) = 1 − I_{1−x}(b, a).
            let (a, b) = (3.7, 12.2);
            close(regularized_incomplete_beta(a, b, x), 1.0 - regularized_incomplete_beta(b, a, 1.0 - x), 1e-12);
        }
        assert!(regularized_incomplete_beta(-1.0, 1.0, 0.5).is_nan());
        assert!(regularized_incomplete_beta(1.0, 1.0, 1.5).is_nan());
    }

    /// Closed forms of the two-tailed tail `P(|T| > t)`, θ = atan(t / √ν):
    /// ν = 1: 1 − 2θ/π; ν = 2: 1 − t/√(2 + t²); ν = 3: 1 − (2/π)(θ + sinθ cosθ); ν = 4: 1 − sinθ(1 + cos²θ/2).
    #[test]
    fn student_t_matches_closed_forms() {
        for t in [0.0, 0.1, 0.5, 1.0, 2.138_089_935, 3.0, 10.0, 100.0, 1e4] {
            let th = |nu: f64| (t / nu.sqrt()).atan();
            let want = [
                (1.0, 1.0 - 2.0 * th(1.0) / PI),
                (2.0, 1.0 - t / (2.0 + t * t).sqrt()),
                (3.0, 1.0 - 2.0 / PI * (th(3.0) + th(3.0).sin() * th(3.0).cos())),
                (4.0, 1.0 - th(4.0).sin() * (1.0 + th(4.0).cos().powi(2) / 2.0)),
            ];
            for (nu, p) in want {
                close(2.0 * student_t_sf(t, nu), p, 1e-10);
                close(student_t_cdf(-t, nu), p / 2.0, 1e-10);
                close(student_t_cdf(t, nu) + student_t_sf(t, nu), 1.0, 1e-15);
            }
        }
        // Far tail without cancellation: ν = 1 gives P(T > t) = atan(1/t)/π ≈ 1/(πt).
        close(student_t_sf(1e8, 1.0), (1e-8f64).atan() / PI, 1e-10);
        // ν = 2: P(T > t) = (1 − t/√(2 + t²)) / 2 = 1 / (√(2 + t²) (√(2 + t²) + t)).
        let t = 1e3f64;
        close(student_t_sf(t, 2.0), 1.0 / ((2.0 + t * t).sqrt() * ((2.0 + t * t).sqrt() + t)), 1e-10);
        assert_eq!(student_t_sf(f64::INFINITY, 5.0), 0.0);
        assert_eq!(student_t_cdf(f64::NEG_INFINITY, 5.0), 0.0);
        assert!(student_t_sf(1.0, 0.0).is_nan());
        // A large ν: P(T > t) = Q(t) + φ(t)(t³ + t)/(4ν) + O(ν⁻²) (Fisher's expansion; the next term is ~6e-11
        // here). `python3 -c "import math; t=1.96; print(0.5*math.erfc(t/2**0.5)
        // + math.exp(-t*t/2)/math.sqrt(2*math.pi)*(t**3+t)/4e5)"` → 0.02499928159183325.
        close(student_t_sf(1.96, 1e5), 0.024_999_281_591_833_25, 2e-10);
    }

    /// a = [1, 2, 3, 4, 5], b = [2, 2, 4, 4, 7]: d = a − b = [−1, 0, −1, 0, −2], mean −0.8,
    /// Σ(d − mean)² = 0.04 + 0.64 + 0.04 + 0.64 + 1.44 = 2.8, s² = 2.8 / 4 = 0.7,
    /// t = −0.8 / √(0.7 / 5) = −0.8 / √0.14 = −2.138089935299395, df = 4.
    /// p from the ν = 4 closed form: θ = atan(|t| / 2), p = 1 − sinθ (1 + cos²θ / 2) = 0.0993006832137...
    /// (`python3 -c "import math; t=0.8/math.sqrt(0.14); th=math.atan(t/2); print(t, 1-math.sin(th)*(1+math.cos(th)**2/2))"`
    /// → 2.138089935299395 0.09930068321372676; Simpson integration of the ν = 4 density agrees.)
    #[test]
    fn paired_t_test_textbook_example() {
        let r = paired_t_test(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 2.0, 4.0, 4.0, 7.0]).unwrap();
        assert_eq!((r.n, r.df), (5, 4.0));
        close(r.mean_diff, -0.8, 1e-12);
        close(r.t, -2.138_089_935_299_395, 1e-9);
        close(r.p_value, 0.099_300_683_213_726_76, 1e-10);
        // Swapping the samples flips t only.
        let s = paired_t_test(&[2.0, 2.0, 4.0, 4.0, 7.0], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        close(s.t, 2.138_089_935_299_395, 1e-9);
        close(s.p_value, r.p_value, 1e-12);
    }

    /// d = [1, 3]: mean 2, s² = 2, t = 2 / √(2 / 2) = 2, df = 1, p = 1 − 2 atan(2)/π = 0.2951672353008665.
    /// d = [1, 2, 6]: mean 3, s² = (4 + 1 + 9) / 2 = 7, t = 3 / √(7/3) = 1.963961012123931, df = 2,
    /// p = 1 − t/√(2 + t²) = 0.18849732879931091.
    #[test]
    fn paired_t_test_small_df_closed_forms() {
        let r = paired_t_test(&[1.0, 3.0], &[0.0, 0.0]).unwrap();
        close(r.t, 2.0, 1e-12);
        close(r.p_value, 1.0 - 2.0 * 2f64.atan() / PI, 1e-10);
        let r = paired_t_test(&[2.0, 2.0, 7.0], &[1.0, 0.0, 1.0]).unwrap();
        let t = 3.0 / (7.0f64 / 3.0).sqrt();
        close(r.t, t, 1e-12);
        close(r.p_value, 1.0 - t / (2.0 + t * t).sqrt(), 1e-10);
    }

    #[test]
    fn paired_t_test_degenerate_and_bad_input() {
        let same = paired_t_test(&[0.3, 0.5, 0.9], &[0.3, 0.5, 0.9]).unwrap();
        assert_eq!((same.t, same.p_value, same.mean_diff), (0.0, 1.0, 0.0));
        let shifted = paired_t_test(&[1.5, 2.5, 3.5], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((shifted.t, shifted.p_value, shifted.mean_diff), (f64::INFINITY, 0.0, 0.5));
        let below = paired_t_test(&[0.0, 1.0], &[0.25, 1.25]).unwrap();
        assert_eq!((below.t, below.p_value), (f64::NEG_INFINITY, 0.0));
        assert!(matches!(paired_t_test(&[1.0, 2.0], &[1.0]), Err(Error::LengthMismatch { a: 2, b: 1 })));
        assert!(matches!(paired_t_test(&[1.0], &[2.0]), Err(Error::TooFewPairs(1))));
        assert!(matches!(
            paired_t_test(&[1.0, 2.0], &[0.0, f64::NAN]),
            Err(Error::NonFinite { sample: "b", index: 1, .. })
        ));
    }

    fn result(users: Vec<u32>, ndcg: Vec<f64>) -> EvalResult {
        let per_user = BTreeMap::from([("ndcg@20".to_string(), ndcg)]);
        EvalResult { users, per_user, summary: BTreeMap::new(), ndcg_form: Default::default(), ks: vec![20] }
    }

    #[test]
    fn compare_aligns_users_and_names() {
        let a = result(vec![0, 3, 4, 7, 9], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let b = result(vec![0, 3, 4, 7, 9], vec![2.0, 2.0, 4.0, 4.0, 7.0]);
        let r = compare(&a, &b, "ndcg@20").unwrap();
        close(r.t, -2.138_089_935_299_395, 1e-9);
        assert!(matches!(compare(&a, &b, "recall_micro@20"), Err(Error::UnknownMetric { .. })));
        let other = result(vec![0, 3, 5, 7, 9], vec![2.0, 2.0, 4.0, 4.0, 7.0]);
        assert!(matches!(compare(&a, &other, "ndcg@20"), Err(Error::MismatchedUsers { a: 5, b: 5, position: 2 })));
        let fewer = result(vec![0, 3], vec![2.0, 2.0]);
        assert!(matches!(compare(&a, &fewer, "ndcg@20"), Err(Error::MismatchedUsers { a: 5, b: 2, position: 2 })));
    }
}

//! The report's statistics: mean ± sample std over seeds, relative improvement, and the two-tailed paired
//! t-tests of the paper's `*` — over test users (each user's metric averaged over the seeds both cells
//! finished) and over seeds (each seed's mean, paired by seed). The t-test itself is `mmkd_eval::paired_t_test`.

use std::collections::BTreeMap;

use crate::error::{bail, Context};
use mmkd_eval::TTest;
use serde::Deserialize;

/// The significance level of the paper's `*`.
pub const ALPHA: f64 = 0.05;

/// Per-user metric vectors of one test evaluation (`test_per_user.json`; other fields are ignored).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PerUser {
    /// Evaluated users, in the order of every vector.
    pub users: Vec<u32>,
    /// `metric → value per user`.
    pub per_user: BTreeMap<String, Vec<f64>>,
}

/// Mean and sample standard deviation (n − 1) of `values`; the deviation of a single value is 0. `None` when
/// empty.
pub fn mean_std(values: &[f64]) -> Option<(f64, f64)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some((mean, 0.0));
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some((mean, var.sqrt()))
}

/// `(a − b) / b` in percent: how much `a` improves on `b` (the paper's "Improv."); `None` when `b` is 0.
pub fn relative_improvement(a: f64, b: f64) -> Option<f64> {
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| (a - b) / b * 100.0)
}

/// The per-user values of `metric` averaged over `runs` (one per seed), which must list the same users.
pub fn per_user_mean(runs: &[&PerUser], metric: &str) -> crate::Result<(Vec<u32>, Vec<f64>)> {
    let Some(first) = runs.first() else { bail!("no runs to average") };
    let mut sum = vec![0.0; first.users.len()];
    for run in runs {
        if run.users != first.users {
            bail!("the runs evaluate different users ({} and {})", first.users.len(), run.users.len());
        }
        let values = run.per_user.get(metric).with_context(|| {
            format!("no per-user `{metric}` (has {})", run.per_user.keys().cloned().collect::<Vec<_>>().join(", "))
        })?;
        if values.len() != sum.len() {
            bail!("per-user `{metric}` has {} values for {} users", values.len(), sum.len());
        }
        for (s, v) in sum.iter_mut().zip(values) {
            *s += v;
        }
    }
    let n = runs.len() as f64;
    Ok((first.users.clone(), sum.into_iter().map(|s| s / n).collect()))
}

/// Paired t-test over users of `a` against `b`: `a[i]` and `b[i]` are the same seed's evaluations; each
/// user's value is averaged over the seeds first.
pub fn p_over_users(a: &[&PerUser], b: &[&PerUser], metric: &str) -> crate::Result<TTest> {
    if a.len() != b.len() {
        bail!("{} seeds against {}", a.len(), b.len());
    }
    let (users_a, values_a) = per_user_mean(a, metric)?;
    let (users_b, values_b) = per_user_mean(b, metric)?;
    if users_a != users_b {
        bail!("the two cells evaluate different users ({} and {})", users_a.len(), users_b.len());
    }
    Ok(mmkd_eval::paired_t_test(&values_a, &values_b)?)
}

/// Paired t-test over seeds: `a[i]`, `b[i]` are the same seed's summary values (at least 2 seeds).
pub fn p_over_seeds(a: &[f64], b: &[f64]) -> crate::Result<TTest> {
    Ok(mmkd_eval::paired_t_test(a, b)?)
}

/// The paper's `*`: significant (p < 0.05) and in favour of `a`.
pub fn star(test: Option<&TTest>) -> bool {
    test.is_some_and(|t| t.p_value < ALPHA && t.mean_diff > 0.0)
}

/// A p-value as the report prints it: `0.0123`, `3.1e-7`, `< 1e-300`.
pub fn format_p(p: f64) -> String {
    if p == 0.0 {
        "< 1e-300".into()
    } else if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    fn run(users: &[u32], values: &[f64]) -> PerUser {
        PerUser { users: users.to_vec(), per_user: BTreeMap::from([("recall@20".to_string(), values.to_vec())]) }
    }

    /// [1, 2, 3, 4]: mean 2.5, Σ(x − 2.5)² = 5, s = √(5/3) = 1.2909944487358056.
    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        close(m, 2.5);
        close(s, (5.0f64 / 3.0).sqrt());
        assert_eq!(mean_std(&[0.3]), Some((0.3, 0.0)));
        assert_eq!(mean_std(&[]), None);
        // The paper's Improv. of SGFD_GRCN on Office Recall: 13.88 / 13.20 − 1 = 5.15 %.
        assert_eq!(format!("{:.2}", relative_improvement(13.88, 13.20).unwrap()), "5.15");
        assert_eq!(relative_improvement(1.0, 0.0), None);
    }

    /// a: seed 0 [1, 2, 3], seed 1 [3, 4, 5] → per-user means [2, 3, 4]; b: [1, 1, 1], [1, 1, 3] → [1, 1, 2].
    /// d = [1, 2, 2], mean 5/3, s² = (4/9 + 1/9 + 1/9) / 2 = 1/3, t = (5/3) / √(1/9) = 5, df = 2,
    /// p = 1 − t / √(2 + t²) = 1 − 5/√27 = 0.037749551350623 (the ν = 2 closed form).
    #[test]
    fn users_are_averaged_over_seeds_then_paired() {
        let users = [4, 7, 9];
        let a = [run(&users, &[1.0, 2.0, 3.0]), run(&users, &[3.0, 4.0, 5.0])];
        let b = [run(&users, &[1.0, 1.0, 1.0]), run(&users, &[1.0, 1.0, 3.0])];
        let (ra, rb): (Vec<&PerUser>, Vec<&PerUser>) = (a.iter().collect(), b.iter().collect());
        assert_eq!(per_user_mean(&ra, "recall@20").unwrap(), (users.to_vec(), vec![2.0, 3.0, 4.0]));
        let t = p_over_users(&ra, &rb, "recall@20").unwrap();
        close(t.t, 5.0);
        assert!((t.p_value - (1.0 - 5.0 / 27f64.sqrt())).abs() < 1e-10, "{}", t.p_value);
        assert!(star(Some(&t)));
        // Reversed, the same p but no star: the paper's `*` marks improvements only.
        assert!(!star(Some(&p_over_users(&rb, &ra, "recall@20").unwrap())));
        // Different users, a missing metric and unequal seed counts are errors.
        let other = [run(&[4, 7, 8], &[1.0, 1.0, 1.0])];
        assert!(p_over_users(&ra[..1], &other.iter().collect::<Vec<_>>(), "recall@20").is_err());
        assert!(p_over_users(&ra, &rb, "ndcg@20").unwrap_err().to_string().contains("recall@20"));
        assert!(p_over_users(&ra, &rb[..1], "recall@20").is_err());
    }

    /// Seeds: a = [0.30, 0.32, 0.31], b = [0.28, 0.29, 0.30]: d = [0.02, 0.03, 0.01], mean 0.02, s² = 1e-4,
    /// t = 0.02 / √(1e-4 / 3) = 2√3 = 3.4641016, df = 2, p = 1 − t/√(2 + t²) = 1 − 2√3/√14 = 0.0741799.
    #[test]
    fn seeds_are_paired_by_seed() {
        let t = p_over_seeds(&[0.30, 0.32, 0.31], &[0.28, 0.29, 0.30]).unwrap();
        assert!((t.t - 2.0 * 3f64.sqrt()).abs() < 1e-9, "{}", t.t);
        let want = 1.0 - 2.0 * 3f64.sqrt() / 14f64.sqrt();
        assert!((t.p_value - want).abs() < 1e-9, "{} vs {want}", t.p_value);
        assert!(!star(Some(&t)));
        assert!(p_over_seeds(&[0.3], &[0.2]).is_err());
        assert_eq!(format_p(0.01234), "0.0123");
        assert_eq!(format_p(3.14e-7), "3.1e-7");
    }
}

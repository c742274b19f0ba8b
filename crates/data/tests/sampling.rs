//! Negative sampling and the holdout split.
// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mmkd_data::{Csr, Dataset, Error, NegativeSampler};
use rand::Rng;

/// 4 users × 50 items: a sparse user, a dense user (> 90% of items, the enumerating fallback),
/// a user with every item, and a user with none.
fn train() -> Csr {
    let sparse: Vec<u32> = (0..50).filter(|i| i % 3 == 0).collect(); // 17 items.
    let dense: Vec<u32> = (0..50).filter(|&i| !matches!(i, 4 | 17 | 31 | 49)).collect(); // 46 items.
    Csr::from_rows(50, &[sparse, dense, (0..50).collect(), Vec::new()])
}

#[test]
fn never_returns_a_train_item() {
    let train = train();
    let mut sampler = NegativeSampler::new(&train, 1);
    for user in [0u32, 1, 3] {
        for _ in 0..10_000 {
            let item = sampler.sample(user).unwrap();
            assert!((item as usize) < 50 && !train.contains(user as usize, item), "user {user} got {item}");
        }
    }
}

#[test]
fn reproducible_by_seed() {
    let train = train();
    let draw = |seed| {
        let mut sampler = NegativeSampler::new(&train, seed);
        let mut out = Vec::new();
        sampler.sample_n(0, 100, &mut out).unwrap();
        let mut dense = Vec::new();
        sampler.sample_n(1, 100, &mut dense).unwrap();
        out.extend(dense);
        out
    };
    assert_eq!(draw(5), draw(5));
    assert_ne!(draw(5), draw(6));
    assert_eq!(draw(5).len(), 200);
}

/// Pearson's chi-square of draws against the uniform distribution over `support`.
fn chi_square(draws: &[u32], support: &[u32]) -> f64 {
    let expected = draws.len() as f64 / support.len() as f64;
    support
        .iter()
        .map(|s| {
            let observed = draws.iter().filter(|&&d| d == *s).count() as f64;
            (observed - expected).powi(2) / expected
        })
        .sum()
}

#[test]
fn roughly_uniform_over_the_complement() {
    let train = train();
    let mut sampler = NegativeSampler::new(&train, 42);
    let mut draws = Vec::new();
    // Sparse user: 33 free items, df = 32. The 99.99% quantile of chi²(32) is about 70.
    sampler.sample_n(0, 20_000, &mut draws).unwrap();
    let free: Vec<u32> = (0..50).filter(|i| i % 3 != 0).collect();
    let chi2 = chi_square(&draws, &free);
    assert!(chi2 < 70.0, "sparse user chi² = {chi2}");
    // Dense user: 4 free items, df = 3. The 99.99% quantile of chi²(3) is about 21.
    sampler.sample_n(1, 20_000, &mut draws).unwrap();
    let chi2 = chi_square(&draws, &[4, 17, 31, 49]);
    assert!(chi2 < 21.0, "dense user chi² = {chi2}");
}

#[test]
fn a_user_with_every_item_is_an_error_not_a_panic() {
    let train = train();
    let mut sampler = NegativeSampler::new(&train, 0);
    let err = sampler.sample(2).unwrap_err();
    assert!(matches!(err, Error::NoNegatives { user: 2, n_items: 50 }), "{err:?}");
    let err = sampler.sample(4).unwrap_err();
    assert!(matches!(err, Error::UserOutOfRange { user: 4, n_users: 4 }), "{err:?}");
    let empty = Csr::empty(1, 0);
    let err = NegativeSampler::new(&empty, 0).sample(0).unwrap_err();
    assert!(matches!(err, Error::NoNegatives { .. }), "{err:?}");
}

/// 200 users with 1..=30 distinct train items each, some test items.
fn random_dataset() -> Dataset {
    let mut rng = mmkd_data::stream(9, "fixture");
    let mut train = Vec::new();
    let mut test = Vec::new();
    for u in 0..200u32 {
        let n = rng.random_range(1..=30);
        for _ in 0..n {
            train.push((u, rng.random_range(0..100)));
        }
        test.push((u, rng.random_range(0..100)));
    }
    Dataset::from_pairs("random", 200, 100, &train, &[], &test, None).unwrap()
}

#[test]
fn holdout_keeps_a_train_item_is_disjoint_and_moves_about_frac() {
    let d = random_dataset();
    let h = d.with_holdout(0.2, 7);
    let mut moved = 0;
    for u in 0..d.n_users {
        let (before, train, valid) = (d.train.row(u), h.train.row(u), h.valid.row(u));
        assert!(!train.is_empty(), "user {u} kept no train item");
        assert!(valid.iter().all(|i| !train.contains(i)), "user {u}: train and valid overlap");
        let mut union: Vec<u32> = train.iter().chain(valid).copied().collect();
        union.sort_unstable();
        assert_eq!(union, before, "user {u}: holdout must partition the train row");
        let n = before.len();
        let expected = ((0.2 * n as f64).round() as usize).min(n - 1);
        assert_eq!(valid.len(), expected, "user {u} with {n} train items");
        moved += valid.len();
    }
    let share = moved as f64 / d.train.nnz() as f64;
    assert!((share - 0.2).abs() < 0.03, "moved share {share}");
    assert_eq!(h.train_by_item, h.train.transpose());
    assert_eq!(h.test, d.test);
    assert_eq!(h.valid.nnz() + h.train.nnz(), d.train.nnz());
}

#[test]
fn holdout_is_reproducible_and_seeded() {
    let d = random_dataset();
    let a = d.with_holdout(0.3, 11);
    let b = d.with_holdout(0.3, 11);
    let c = d.with_holdout(0.3, 12);
    assert_eq!((&a.train, &a.valid), (&b.train, &b.valid));
    assert_ne!(a.valid, c.valid);
    // Users with a single train item keep it even at frac = 1.
    let all = d.with_holdout(1.0, 0);
    assert!((0..d.n_users).all(|u| all.train.degree(u) == 1));
}

#[test]
fn from_pairs_validates_ranges() {
    let err = Dataset::from_pairs("x", 2, 3, &[(0, 0), (1, 3)], &[], &[], None).unwrap_err();
    assert!(matches!(err, Error::PairOutOfRange { split: "train", index: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("(1, 3)"), "{err}");
    let err = Dataset::from_pairs("x", 2, 3, &[], &[], &[(2, 0)], None).unwrap_err();
    assert!(matches!(err, Error::PairOutOfRange { split: "test", .. }), "{err:?}");
    let labels = mmkd_data::Labels::from_values(&[1, 2]);
    let err = Dataset::from_pairs("x", 2, 3, &[], &[], &[], Some(labels)).unwrap_err();
    assert!(matches!(err, Error::LabelsLength { found: 2, n_items: 3, .. }), "{err:?}");
}

//! Rankings that learn nothing, as floors for every model: item popularity and uniform random scores.

use candle_core::{Device, Tensor};
use mmkd_data::Csr;
use rand::Rng;

use crate::error::Result;
use crate::evaluate::{evaluate, EvalConfig, EvalResult};

/// Popularity score of every item: its number of train interactions, `(n_items,)`.
pub fn popularity_scores(train: &Csr) -> Vec<f32> {
    let mut counts = vec![0f32; train.n_cols()];
    for &i in train.indices() {
        counts[i as usize] += 1.0;
    }
    counts
}

/// Evaluates the popularity ranking (the same scores for every user, train items masked).
pub fn popularity(train: &Csr, test: &Csr, cfg: &EvalConfig, device: &Device) -> Result<EvalResult> {
    let pop = Tensor::new(popularity_scores(train).as_slice(), device)?.unsqueeze(0)?; // (1, n_items)
    evaluate(|users| pop.broadcast_as((users.len(), train.n_cols()))?.contiguous(), train, test, cfg)
}

/// Evaluates uniform random scores, drawn per user from the stream `random-baseline` of `seed`, in
/// evaluation order (so the result depends on the seed only).
pub fn random(train: &Csr, test: &Csr, cfg: &EvalConfig, device: &Device, seed: u64) -> Result<EvalResult> {
    let mut rng = mmkd_data::stream(seed, "random-baseline");
    let n_items = train.n_cols();
    evaluate(
        |users| {
            let values: Vec<f32> = (0..users.len() * n_items).map(|_| rng.random::<f32>()).collect();
            Tensor::from_vec(values, (users.len(), n_items), device) // (b, n_items)
        },
        train,
        test,
        cfg,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn popularity_counts_and_beats_random_on_a_skewed_graph() {
        // 60 users; item 0..4 popular in train, and each user's test item is a popular one they have not seen.
        let n_items = 40;
        let mut train_rows = Vec::new();
        let mut test_rows = Vec::new();
        for u in 0..60u32 {
            let held = u % 5;
            train_rows.push((0..5).filter(|&i| i != held).chain([5 + u % 35]).collect::<Vec<u32>>());
            test_rows.push(vec![held]);
        }
        let train = Csr::from_rows(n_items, &train_rows);
        let test = Csr::from_rows(n_items, &test_rows);
        let scores = popularity_scores(&train);
        assert_eq!(scores[0], 48.0); // every user but those holding item 0 out (u % 5 == 0: 12 users)
        let cfg = EvalConfig { ks: vec![5], ..Default::default() };
        let pop = popularity(&train, &test, &cfg, &Device::Cpu).unwrap();
        let rnd = random(&train, &test, &cfg, &Device::Cpu, 3).unwrap();
        assert_eq!(pop.summary["recall@5"], 1.0);
        assert!(rnd.summary["recall@5"] < 0.5, "{:?}", rnd.summary);
        assert_eq!(random(&train, &test, &cfg, &Device::Cpu, 3).unwrap(), rnd);
    }
}

//! The sequential generator: order matters (category transitions, item bigrams), one seed gives
//! byte-identical files, `tiny-seq` has the sizes asked for, and the files load as a 5-core through
//! `mmkd_data::sequential`.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions unwrap too.

use std::fs;
use std::path::PathBuf;

use mmkd_data::sequential::{load_sequential, SeqDataset, SeqStats};
use mmkd_synth::sequential::{generate_sequential, SeqGenerated, SeqPreset};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-synth-seq-test-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn tiny(seed: u64) -> (SeqGenerated, SeqDataset) {
    let preset = SeqPreset::by_name("tiny-seq").unwrap();
    let generated = generate_sequential(&preset, seed).unwrap();
    let data = SeqDataset::from_interactions(&generated.rows, &preset.seq_options()).unwrap();
    (generated, data)
}

/// Category of each item id of `data` (index 0, padding, gets `usize::MAX`).
fn categories(generated: &SeqGenerated, data: &SeqDataset) -> Vec<usize> {
    data.item_raw.iter().map(|&raw| generated.labels.get(raw as usize).map_or(usize::MAX, |&c| c as usize)).collect()
}

/// Accuracy on the test instances of (a) predicting the target's category as the most frequent successor of
/// the previous item's category in the train parts, and (b) as the user's most frequent train category.
fn category_accuracies(data: &SeqDataset, cat: &[usize], n_labels: usize) -> (f64, f64) {
    let mut transitions = vec![vec![0usize; n_labels]; n_labels];
    for (seq, &cut) in data.sequences.iter().zip(&data.cut) {
        for w in seq[..cut].windows(2) {
            transitions[cat[w[0] as usize]][cat[w[1] as usize]] += 1;
        }
    }
    let argmax = |counts: &[usize]| (0..counts.len()).max_by_key(|&k| (counts[k], std::cmp::Reverse(k))).unwrap();
    let successor: Vec<usize> = transitions.iter().map(|row| argmax(row)).collect();
    let favourite: Vec<usize> = data
        .sequences
        .iter()
        .zip(&data.cut)
        .map(|(seq, &cut)| {
            let mut counts = vec![0usize; n_labels];
            seq[..cut].iter().for_each(|&i| counts[cat[i as usize]] += 1);
            argmax(&counts)
        })
        .collect();
    let test = data.test_instances();
    let (mut by_transition, mut by_favourite) = (0usize, 0usize);
    for &inst in &test {
        let target = cat[data.target(inst) as usize];
        let prev = cat[*data.input(inst).last().unwrap() as usize];
        by_transition += usize::from(successor[prev] == target);
        by_favourite += usize::from(favourite[inst.user as usize] == target);
    }
    (by_transition as f64 / test.len() as f64, by_favourite as f64 / test.len() as f64)
}

/// HR@k over the test instances of `scores(instance) → scores of items 0..=n_items` (item 0 is skipped; ties
/// are broken towards the lower id).
fn hit_rate(data: &SeqDataset, k: usize, scores: impl Fn(&[u32]) -> Vec<f64>) -> f64 {
    let test = data.test_instances();
    let mut hits = 0usize;
    for &inst in &test {
        let s = scores(data.input(inst));
        let t = data.target(inst) as usize;
        let rank = (1..s.len()).filter(|&j| s[j] > s[t] || (s[j] == s[t] && j < t)).count() + 1;
        hits += usize::from(rank <= k);
    }
    hits as f64 / test.len() as f64
}

/// (popularity HR@20, item-bigram + popularity HR@20): bigram counts of the train parts, ties broken by
/// train popularity.
fn bigram_and_popularity(data: &SeqDataset) -> (f64, f64) {
    let pop: Vec<f64> = data.train_item_counts().iter().map(|&c| f64::from(c)).collect();
    let n = data.n_items + 1;
    let mut bigram = vec![0f64; n * n];
    for (seq, &cut) in data.sequences.iter().zip(&data.cut) {
        for w in seq[..cut].windows(2) {
            bigram[w[0] as usize * n + w[1] as usize] += 1.0;
        }
    }
    let scale = pop.iter().copied().fold(0.0, f64::max) + 1.0;
    let by_pop = hit_rate(data, 20, |_| pop.clone());
    let by_bigram = hit_rate(data, 20, |input| {
        let prev = *input.last().unwrap() as usize;
        (0..n).map(|j| bigram[prev * n + j] * scale + pop[j]).collect()
    });
    (by_pop, by_bigram)
}

/// The planted order is there: the previous item's category predicts the next one's better than the user's
/// favourite category, and item bigrams beat popularity. On the order-free shuffle of the train parts, the
/// transition advantage vanishes.
#[test]
fn order_matters_on_tiny_seq() {
    for seed in 0..4 {
        let (generated, data) = tiny(seed);
        let cat = categories(&generated, &data);
        let n_labels = generated.preset.base.n_labels;
        let (by_transition, by_favourite) = category_accuracies(&data, &cat, n_labels);
        let (by_pop, by_bigram) = bigram_and_popularity(&data);
        let shuffled = data.shuffled(seed);
        let (shuffled_transition, shuffled_favourite) = category_accuracies(&shuffled, &cat, n_labels);
        println!(
            "seed {seed}: category accuracy transition {by_transition:.3} vs favourite {by_favourite:.3} \
             (train parts shuffled: {shuffled_transition:.3} vs {shuffled_favourite:.3}); \
             HR@20 bigram {by_bigram:.3} vs popularity {by_pop:.3}"
        );
        assert!(by_transition > by_favourite + 0.1, "seed {seed}: {by_transition} vs {by_favourite}");
        assert!(shuffled_transition < by_transition - 0.1, "seed {seed}: {shuffled_transition} vs {by_transition}");
        assert!(by_bigram > by_pop + 0.1, "seed {seed}: {by_bigram} vs {by_pop}");
    }
}

/// Sizes of `tiny-seq` as asked for, every user and item at least 5 times, dims and labels as in the preset.
#[test]
fn tiny_seq_has_the_preset_shape() {
    let (generated, data) = tiny(0);
    let p = &generated.preset.base;
    let s = &generated.stats;
    assert_eq!(s, &data.stats());
    assert_eq!((s.n_users, s.n_items), (p.n_users, p.n_items));
    let within = |x: usize, target: usize, tol: f64| (x as f64 - target as f64).abs() <= tol * target as f64;
    assert!(within(s.n_interactions, p.n_interactions, 0.05), "{s}");
    assert!((150..=250).contains(&s.n_users) && (150..=300).contains(&s.n_items) && s.n_interactions >= 1500, "{s}");
    assert!(s.min_seq_len >= 5 && s.min_item_count >= 5, "{s}");
    assert_eq!(generated.labels.len(), p.n_items);
    assert_eq!(generated.visual.len(), p.n_items * p.visual_dim);
    assert_eq!(generated.text.len(), p.n_items * p.text_dim);
    let mut hist = vec![0usize; p.n_labels];
    generated.labels.iter().for_each(|&c| hist[c as usize] += 1);
    assert!(hist.iter().all(|&h| h > 0) && hist[0] > 3 * hist[p.n_labels - 1], "{hist:?}");
    // Rows: user by user, timestamps non-decreasing, no repeated (user, item), some same-day ties.
    let mut ties = 0;
    for w in generated.rows.windows(2) {
        assert!(w[0].0 <= w[1].0);
        if w[0].0 == w[1].0 {
            assert!(w[0].2 <= w[1].2);
            ties += usize::from(w[0].2 == w[1].2);
        }
    }
    assert!(ties > 0);
    let mut pairs: Vec<(u32, u32)> = generated.rows.iter().map(|r| (r.0, r.1)).collect();
    pairs.sort_unstable();
    assert!(pairs.windows(2).all(|w| w[0] != w[1]), "a user repeats an item");
    println!("{s}");
}

/// Writing twice with one seed gives byte-identical files and nothing else; the folder loads through
/// `mmkd_data::sequential` as a 5-core that removes nothing, with the manifest's statistics.
#[test]
fn files_are_deterministic_and_load_as_a_five_core() {
    let preset = SeqPreset::by_name("tiny-seq").unwrap();
    let a = generate_sequential(&preset, 7).unwrap();
    let b = generate_sequential(&preset, 7).unwrap();
    assert_eq!(a, b);
    let (dir_a, dir_b) = (temp_dir("a"), temp_dir("b"));
    a.write(&dir_a).unwrap();
    b.write(&dir_b).unwrap();
    let files = [
        "interactions.csv",
        "FeatureImage_normal.npy",
        "FeatureText_normal.npy",
        "MetaData_normal.npy",
        "manifest.json",
    ];
    for name in files {
        let (fa, fb) = (fs::read(dir_a.join(name)).unwrap(), fs::read(dir_b.join(name)).unwrap());
        assert!(!fa.is_empty() && fa == fb, "{name} differs between two writes of one seed");
    }
    let mut left: Vec<String> =
        fs::read_dir(&dir_a).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    let mut expected: Vec<String> = files.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(left, expected, "no `.tmp` left behind");

    let loaded = load_sequential(&dir_a, &preset.seq_options()).unwrap();
    assert_eq!(loaded, SeqDataset::from_interactions(&a.rows, &preset.seq_options()).unwrap());
    assert_eq!(loaded.n_interactions(), a.rows.len(), "the 5-core removed rows");
    assert_eq!(loaded.stats(), a.stats);
    // The loaded order is the generated order (same-day ties included).
    let mut generated_order = vec![Vec::new(); loaded.n_users];
    a.rows.iter().for_each(|&(u, i, _)| generated_order[u as usize].push(i + 1));
    assert_eq!(loaded.sequences, generated_order);

    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(dir_a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["generator"], "mmkd-synth");
    assert_eq!(manifest["layout"], "sequential");
    assert_eq!(manifest["seed"], 7);
    assert_eq!(manifest["preset"]["base"]["name"], "tiny-seq");
    assert_eq!(manifest["preset"]["p_order"], preset.p_order);
    let stats: SeqStats = serde_json::from_value(manifest["stats"].clone()).unwrap();
    assert_eq!(stats, loaded.stats());

    let c = generate_sequential(&preset, 8).unwrap();
    assert_ne!(c.rows, a.rows);
    assert_ne!(c.visual, a.visual);
    fs::remove_dir_all(&dir_a).unwrap();
    fs::remove_dir_all(&dir_b).unwrap();
}

/// Beauty-shaped data: the sizes of KDSR Table 1 within 5%.
#[test]
#[ignore = "slow: generates the full Beauty-shaped data set (198,502 interactions), about 5 s in a debug build on 2 cores; run with `cargo test -p mmkd-synth --test sequential -- --ignored`"]
fn beauty_has_the_table_one_sizes() {
    let preset = SeqPreset::by_name("beauty").unwrap();
    let started = std::time::Instant::now();
    let generated = generate_sequential(&preset, 0).unwrap();
    let s = &generated.stats;
    println!("beauty in {:.1}s:\n{s}", started.elapsed().as_secs_f64());
    let within = |x: usize, target: usize| (x as f64 - target as f64).abs() <= 0.05 * target as f64;
    assert!(within(s.n_users, 22_363) && within(s.n_items, 12_101) && within(s.n_interactions, 198_502), "{s}");
    assert!(s.min_seq_len >= 5 && s.min_item_count >= 5, "{s}");
}

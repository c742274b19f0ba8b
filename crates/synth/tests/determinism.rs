//! One seed gives the same data and byte-identical files; another seed gives other data.

use std::fs;
use std::path::PathBuf;

use mmkd_synth::{generate, Preset};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-synth-test-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

const FILES: [&str; 6] = [
    "train.csv",
    "test.csv",
    "FeatureImage_normal.npy",
    "FeatureText_normal.npy",
    "MetaData_normal.npy",
    "manifest.json",
];

#[test]
fn same_seed_gives_identical_data_and_files() {
    let preset = Preset::by_name("tiny").unwrap();
    let a = generate(&preset, 7).unwrap();
    let b = generate(&preset, 7).unwrap();
    assert_eq!(a.train, b.train);
    assert_eq!(a.test, b.test);
    assert_eq!(a.labels, b.labels);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.visual), bits(&b.visual));
    assert_eq!(bits(&a.text), bits(&b.text));
    assert_eq!(a.stats, b.stats);

    let (dir_a, dir_b) = (temp_dir("a"), temp_dir("b"));
    a.write_sgfd(&dir_a).unwrap();
    b.write_sgfd(&dir_b).unwrap();
    for name in FILES {
        let fa = fs::read(dir_a.join(name)).unwrap();
        let fb = fs::read(dir_b.join(name)).unwrap();
        assert!(!fa.is_empty(), "{name} is empty");
        assert!(fa == fb, "{name} differs between two writes of one seed");
    }
    // Nothing but the six files is left behind (no `.tmp`).
    let mut left: Vec<String> =
        fs::read_dir(&dir_a).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    let mut expected: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(left, expected);
    fs::remove_dir_all(&dir_a).unwrap();
    fs::remove_dir_all(&dir_b).unwrap();
}

#[test]
fn different_seeds_give_different_data() {
    let preset = Preset::by_name("tiny").unwrap();
    let a = generate(&preset, 1).unwrap();
    let b = generate(&preset, 2).unwrap();
    assert_ne!(a.train, b.train);
    assert_ne!(a.labels, b.labels);
    assert_ne!(a.visual, b.visual);
    assert_ne!(a.text, b.text);
}

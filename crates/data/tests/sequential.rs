//! The sequential layout on disk: `interactions.csv` read through polars, errors that name file and line,
//! and item ids checked against the feature and label files present.
// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use mmkd_data::sequential::{is_sequential, load_sequential, SeqDataset, SeqOptions, SEQ_INTERACTIONS};
use mmkd_data::Error;
use npyz::WriterBuilder;

/// A fresh folder under the system temp dir, unique per test and process.
fn fixture_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-data-seq-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_csv(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join(SEQ_INTERACTIONS);
    std::fs::write(&path, text).unwrap();
    path
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
    let out = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::<T>::new().default_dtype().shape(shape).writer(out).begin_nd().unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn keep_all() -> SeqOptions {
    SeqOptions { min_count: 1, ..SeqOptions::default() }
}

/// The same rows in memory and on disk give the same data set; extra columns are ignored.
#[test]
fn loads_the_same_as_from_interactions() {
    let dir = fixture_dir("roundtrip");
    assert!(!is_sequential(&dir));
    write_csv(&dir, "userID,itemID,timestamp,rating\n3,10,200,5\n3,11,100,4\n1,10,50,3\n3,12,200,1\n1,12,60,2\n");
    assert!(is_sequential(&dir));
    let loaded = load_sequential(&dir, &keep_all()).unwrap();
    let rows = [(3, 10, 200), (3, 11, 100), (1, 10, 50), (3, 12, 200), (1, 12, 60)];
    assert_eq!(loaded, SeqDataset::from_interactions(&rows, &keep_all()).unwrap());
    assert_eq!(loaded.user_raw, vec![1, 3]);
    assert_eq!(loaded.item_raw, vec![u32::MAX, 10, 11, 12]);
    assert_eq!(loaded.sequences, vec![vec![1, 3], vec![2, 1, 3]]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each bad cell names the file, its 1-based line (header = line 1), the column and what it expects.
#[test]
fn bad_cells_name_file_line_and_expectation() {
    let dir = fixture_dir("bad-cells");
    let cases = [
        (
            "userID,itemID,timestamp\n0,1,5\n0,x,6\n",
            "interactions.csv:3: column `itemID` must be a non-negative integer",
        ),
        ("userID,itemID,timestamp\n0,1,5\n0,2,6\n-4,1,1\n", ":4: column `userID` must be a non-negative integer"),
        ("userID,itemID,timestamp\n0,1,-5\n", ":2: column `timestamp` must be a non-negative integer"),
        ("userID,itemID,timestamp\n0,1,5\n0,2,1.5\n", ":3: column `timestamp` must be a non-negative integer"),
        ("userID,itemID,timestamp\n0,1,\n", ":2: column `timestamp`"),
        ("userID,itemID,timestamp\n0,4294967295,3\n", ":2: column `itemID`"),
    ];
    for (text, expected) in cases {
        let path = write_csv(&dir, text);
        let err = load_sequential(&dir, &keep_all()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(expected), "{text:?}: {message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
    write_csv(&dir, "userID,itemID,time\n0,1,5\n");
    let err = load_sequential(&dir, &keep_all()).unwrap_err();
    assert!(matches!(err, Error::MissingColumn { column: "timestamp", .. }), "{err}");
    assert!(err.to_string().contains("`time`"), "{err}");
    write_csv(&dir, "userID,itemID,timestamp\n");
    assert!(matches!(load_sequential(&dir, &keep_all()), Err(Error::Empty { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(load_sequential(&dir, &keep_all()), Err(Error::Io { .. })));
}

/// Rows that no user or item survives the 5-core: an error that says so.
#[test]
fn nothing_surviving_the_filter_is_an_error() {
    let dir = fixture_dir("filtered-out");
    write_csv(&dir, "userID,itemID,timestamp\n0,1,5\n0,2,6\n1,1,7\n");
    let message = load_sequential(&dir, &SeqOptions::default()).unwrap_err().to_string();
    assert!(
        message.contains("interactions.csv: nothing survives the iterated 5-core filter (3 rows read)"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Item ids are rows of the feature files; the labels have one entry per row.
#[test]
fn item_ids_are_checked_against_features_and_labels() {
    let dir = fixture_dir("features");
    write_csv(&dir, "userID,itemID,timestamp\n0,1,5\n0,2,6\n0,3,7\n");
    write_npy(&dir.join("FeatureImage_normal.npy"), &[3, 2], &[0f32; 6]);
    let err = load_sequential(&dir, &keep_all()).unwrap_err();
    assert!(matches!(err, Error::ItemOutOfRange { line: 4, item: 3, n_items: 3, .. }), "{err}");

    write_npy(&dir.join("FeatureImage_normal.npy"), &[4, 2], &[0f32; 8]);
    write_npy(&dir.join("FeatureText_normal.npy"), &[5, 2], &[0f32; 10]);
    let err = load_sequential(&dir, &keep_all()).unwrap_err();
    assert!(matches!(err, Error::FeatureRows { first_rows: 4, other_rows: 5, .. }), "{err}");

    write_npy(&dir.join("FeatureText_normal.npy"), &[4, 3], &[0f32; 12]);
    write_npy(&dir.join("MetaData_normal.npy"), &[3], &[0i64, 1, 1]);
    let err = load_sequential(&dir, &keep_all()).unwrap_err();
    assert!(matches!(err, Error::LabelsLength { found: 3, n_items: 4, .. }), "{err}");

    write_npy(&dir.join("MetaData_normal.npy"), &[4], &[0i64, 1, 1, 2]);
    let d = load_sequential(&dir, &keep_all()).unwrap();
    assert_eq!(d.item_raw, vec![u32::MAX, 1, 2, 3]);

    // Without features, labels must cover every item id.
    std::fs::remove_file(dir.join("FeatureImage_normal.npy")).unwrap();
    std::fs::remove_file(dir.join("FeatureText_normal.npy")).unwrap();
    write_npy(&dir.join("MetaData_normal.npy"), &[3], &[0i64, 1, 1]);
    let err = load_sequential(&dir, &keep_all()).unwrap_err();
    assert!(matches!(err, Error::LabelsLength { found: 3, n_items: 4, .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Loader tests on hand-written fixtures in a temporary folder, and on the real interaction files when present.
// Helpers outside `#[test]` fns are not covered by clippy.toml's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use mmkd_data::{detect_layout, load, load_sgfd, npy_rows, read_labels, Error, Layout, LoadOptions, SGFD_LABELS};
use npyz::WriterBuilder;

/// A fresh folder under the system temp dir, unique per test and process.
fn fixture_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-data-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// A float feature matrix of shape (rows, cols).
fn write_features(dir: &Path, file: &str, rows: u64, cols: u64) -> PathBuf {
    let path = dir.join(file);
    let out = BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(&[rows, cols]).writer(out).begin_nd().unwrap();
    w.extend((0..rows * cols).map(|x| x as f32)).unwrap();
    w.finish().unwrap();
    path
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], data: &[T]) {
    let out = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::<T>::new().default_dtype().shape(shape).writer(out).begin_nd().unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

const TRAIN: &str = "itemID,userID,reviewerID,asin\n0,0,A,x\n1,0,A,y\n2,1,B,z\n0,2,C,x\n";
const TEST: &str = "userID,itemID\n0,3\n2,1\n";

fn sgfd_fixture(test: &str) -> PathBuf {
    let dir = fixture_dir(test);
    write(&dir, "train.csv", TRAIN);
    write(&dir, "test.csv", TEST);
    dir
}

fn load_err(dir: &Path) -> (Error, String) {
    let err = load(dir, &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn sgfd_round_trip_by_column_name() {
    let dir = sgfd_fixture("sgfd_round_trip");
    write(&dir, "valid.csv", "itemID,userID\n2,0\n");
    assert_eq!(detect_layout(&dir).unwrap(), Layout::Sgfd);
    let d = load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(d.layout, Layout::Sgfd);
    assert_eq!(d.name, format!("mmkd-data-{}-sgfd_round_trip", std::process::id()));
    assert_eq!((d.n_users, d.n_items), (3, 4));
    assert_eq!(d.train.row(0), &[0, 1]);
    assert_eq!(d.train.row(1), &[2]);
    assert_eq!(d.train.row(2), &[0]);
    assert_eq!(d.valid.row(0), &[2]);
    assert_eq!(d.test.row(0), &[3]);
    assert_eq!(d.test.row(2), &[1]);
    assert_eq!(d.train_by_item, d.train.transpose());
    assert_eq!(d.test_users(), vec![0, 2]);
    assert!(d.labels.is_none() && d.feature_files.is_empty());
    assert!(d.findings.is_empty(), "{:?}", d.findings);
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = fixture_dir("missing_file");
    write(&dir, "train.csv", TRAIN);
    let (err, msg) = load_err(&dir);
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(msg.contains("test.csv"), "{msg}");
}

#[test]
fn missing_column_names_the_columns_found() {
    let dir = sgfd_fixture("missing_column");
    let path = write(&dir, "test.csv", "user,itemID\n0,3\n");
    let (err, msg) = load_err(&dir);
    assert!(matches!(err, Error::MissingColumn { column: "userID", .. }), "{err:?}");
    assert!(msg.contains(&format!("{}:1:", path.display())), "{msg}");
    assert!(msg.contains("`user`") && msg.contains("`itemID`"), "{msg}");
}

#[test]
fn non_integer_ids_give_bad_id_with_line() {
    for (i, (cell, line)) in [("3.5", 3), ("abc", 4), ("", 2)].into_iter().enumerate() {
        let dir = sgfd_fixture(&format!("bad_id_{i}"));
        let mut rows = ["0,0".to_string(), "1,0".to_string(), "2,1".to_string()];
        rows[line - 2] = format!("{cell},1");
        let path = write(&dir, "train.csv", &format!("itemID,userID\n{}\n", rows.join("\n")));
        let (err, msg) = load_err(&dir);
        assert!(matches!(err, Error::BadId { column: "itemID", .. }), "{cell:?}: {err:?}");
        assert!(msg.contains(&format!("{}:{line}:", path.display())), "{msg}");
        assert!(msg.contains(&format!("found `{cell}`")), "{msg}");
    }
}

#[test]
fn negative_id_gives_its_line() {
    let dir = sgfd_fixture("negative_id");
    let path = write(&dir, "test.csv", "userID,itemID\n0,3\n-1,2\n");
    let (err, msg) = load_err(&dir);
    assert!(matches!(err, Error::NegativeId { column: "userID", line: 3, .. }), "{err:?}");
    assert!(msg.contains(&format!("{}:3:", path.display())) && msg.contains("-1"), "{msg}");
}

#[test]
fn item_beyond_feature_rows_names_the_feature_file() {
    let dir = sgfd_fixture("item_out_of_range");
    write_features(&dir, "FeatureImage_normal.npy", 3, 2);
    write_features(&dir, "FeatureText_normal.npy", 3, 5);
    let (err, msg) = load_err(&dir);
    // Item 3 of test.csv line 2 is beyond the 3 feature rows.
    assert!(matches!(err, Error::ItemOutOfRange { line: 2, item: 3, n_items: 3, .. }), "{err:?}");
    assert!(msg.contains(&format!("{}:2:", dir.join("test.csv").display())), "{msg}");
    assert!(msg.contains("FeatureImage_normal.npy (3 rows)"), "{msg}");
}

#[test]
fn features_set_the_item_count_and_are_listed_in_order() {
    let dir = sgfd_fixture("features_ok");
    let text = write_features(&dir, "FeatureText_normal.npy", 6, 5);
    let image = write_features(&dir, "FeatureImage_normal.npy", 6, 2);
    assert_eq!(npy_rows(&image).unwrap(), (6, 2));
    let d = load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(d.n_items, 6);
    assert_eq!(d.feature_files, vec![("visual".to_string(), image), ("text".to_string(), text)]);
    assert_eq!(d.stats().items_without_train, 3); // Train has items 0, 1, 2; items 3, 4, 5 have none.
}

#[test]
fn n_items_option_overrides_and_is_checked() {
    let dir = sgfd_fixture("n_items_option");
    let d = load(&dir, &LoadOptions { n_items: Some(10) }).unwrap();
    assert_eq!(d.n_items, 10);
    let err = load(&dir, &LoadOptions { n_items: Some(3) }).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ItemOutOfRange { item: 3, .. }), "{err:?}");
    assert!(msg.contains("`n_items` option (3)") && msg.contains("test.csv:2:"), "{msg}");
}

#[test]
fn feature_files_disagreeing_is_an_error() {
    let dir = sgfd_fixture("feature_rows");
    write_features(&dir, "FeatureImage_normal.npy", 4, 2);
    write_features(&dir, "FeatureText_normal.npy", 5, 2);
    let (err, msg) = load_err(&dir);
    assert!(matches!(err, Error::FeatureRows { first_rows: 4, other_rows: 5, .. }), "{err:?}");
    assert!(msg.contains("FeatureImage_normal.npy") && msg.contains("FeatureText_normal.npy"), "{msg}");
}

#[test]
fn header_only_and_zero_byte_files_are_empty() {
    for (i, text) in ["itemID,userID\n", ""].into_iter().enumerate() {
        let dir = sgfd_fixture(&format!("empty_{i}"));
        let path = write(&dir, "test.csv", text);
        let (err, msg) = load_err(&dir);
        assert!(matches!(err, Error::Empty { .. }), "{text:?}: {err:?}");
        assert!(msg.contains(&path.display().to_string()) && msg.contains("no data rows"), "{msg}");
    }
}

#[test]
fn duplicates_are_dropped_counted_and_reported() {
    let dir = sgfd_fixture("duplicates");
    let path = write(&dir, "train.csv", "itemID,userID\n0,0\n1,0\n0,0\n2,1\n0,0\n0,2\n");
    let d = load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(d.train.nnz(), 4);
    let f = d.findings.iter().find(|f| f.message.contains("duplicate")).expect("a duplicate finding");
    assert_eq!(f.path.as_deref(), Some(path.as_path()));
    assert!(f.message.contains("2 duplicate"), "{f}");
    assert!(f.to_string().contains("train.csv"), "{f}");
}

#[test]
fn train_test_overlap_and_cold_users_are_findings() {
    let dir = sgfd_fixture("overlap");
    // (0, 1) is in train and test; user 3 has only a test row.
    write(&dir, "test.csv", "userID,itemID\n0,1\n3,2\n");
    let d = load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(d.n_users, 4);
    assert!(d.test.contains(0, 1) && d.train.contains(0, 1), "overlapping pairs are kept");
    let overlap = d.findings.iter().find(|f| f.message.contains("both train and test")).expect("overlap finding");
    assert!(overlap.message.starts_with("1 "), "{overlap}");
    let cold = d.findings.iter().find(|f| f.message.contains("no train interaction")).expect("cold finding");
    assert!(cold.message.contains("1 of 4 users") && cold.message.contains("first: 3"), "{cold}");
}

#[test]
fn sgfd_labels_are_read_remapped_and_length_checked() {
    let dir = sgfd_fixture("labels_ok");
    write_npy(&dir.join(SGFD_LABELS), &[5], &[7i64, 3, 7, 100, 3]);
    let d = load(&dir, &LoadOptions::default()).unwrap();
    // Five labels, four items in the interactions: the labels define n_items.
    assert_eq!(d.n_items, 5);
    let labels = d.labels.as_ref().unwrap();
    assert_eq!(labels.per_item, vec![1, 0, 1, 2, 0]);
    assert_eq!(d.stats().label_histogram, Some(vec![2, 2, 1]));

    let dir = sgfd_fixture("labels_short");
    let path = dir.join(SGFD_LABELS);
    write_npy(&path, &[3], &[1u8, 2, 3]);
    let (err, msg) = load_err(&dir);
    assert!(matches!(err, Error::LabelsLength { found: 3, n_items: 4, .. }), "{err:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    let dir = sgfd_fixture("labels_vs_features");
    write_features(&dir, "FeatureImage_normal.npy", 4, 2);
    write_npy(&dir.join(SGFD_LABELS), &[5], &[1u8, 2, 3, 4, 5]);
    let (err, msg) = load_err(&dir);
    assert!(matches!(err, Error::LabelsLength { found: 5, n_items: 4, .. }), "{err:?}");
    assert!(msg.contains("FeatureImage_normal.npy (4 rows)"), "{msg}");
}

#[test]
fn label_remap_across_integer_dtypes() {
    let dir = fixture_dir("label_dtypes");
    let raw = [7i64, 3, 7, 100];
    let i32_path = dir.join("i32.npy");
    write_npy(&i32_path, &[4], &raw.map(|v| v as i32));
    let i64_path = dir.join("i64.npy");
    write_npy(&i64_path, &[4], &raw);
    let u8_path = dir.join("u8.npy");
    write_npy(&u8_path, &[4], &raw.map(|v| v as u8));
    let column_path = dir.join("column.npy");
    write_npy(&column_path, &[4, 1], &raw.map(|v| v as u16));
    for path in [i32_path, i64_path, u8_path, column_path] {
        let labels = read_labels(&path).unwrap();
        assert_eq!(labels.per_item, vec![1, 0, 1, 2], "{}", path.display());
        assert_eq!(labels.values, vec![3, 7, 100]);
        assert_eq!(labels.n_labels, 3);
    }
}

#[test]
fn labels_of_wrong_dtype_or_shape_are_errors() {
    let dir = fixture_dir("label_errors");
    let float_path = dir.join("float.npy");
    write_npy(&float_path, &[3], &[1.0f32, 2.0, 3.0]);
    let err = read_labels(&float_path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::LabelsDtype { .. }), "{err:?}");
    assert!(msg.contains("float.npy") && msg.contains("f4"), "{msg}");

    let wide_path = dir.join("wide.npy");
    write_npy(&wide_path, &[2, 2], &[1i32, 2, 3, 4]);
    let err = read_labels(&wide_path).unwrap_err();
    assert!(matches!(err, Error::NpyShape { ref found, .. } if found == &[2, 2]), "{err:?}");
    assert!(err.to_string().contains("wide.npy"));

    let err = npy_rows(&dir.join("float.npy")).unwrap_err();
    assert!(matches!(err, Error::NpyShape { .. }), "a 1-D array has no (rows, cols): {err:?}");
    let garbage = write(&dir, "garbage.npy", "not an npy file");
    let err = npy_rows(&garbage).unwrap_err();
    assert!(matches!(err, Error::Npy { .. }) && err.to_string().contains("garbage.npy"), "{err:?}");
}

const INTER: &str = "userID\titemID\trating\ttimestamp\tx_label\n\
0\t0\t5\t100\t0\n0\t1\t4\t101\t0\n1\t2\t3\t102\t0\n0\t2\t5\t103\t1\n1\t0\t2\t104\t2\n2\t1\t5\t105\t0\n2\t3\t1\t106\t2\n";

#[test]
fn mmrec_round_trip() {
    let dir = fixture_dir("mmrec_round_trip");
    write(&dir, "baby.inter", INTER);
    let image = write_features(&dir, "image_feat.npy", 5, 3);
    let text = write_features(&dir, "text_feat.npy", 5, 4);
    assert_eq!(detect_layout(&dir).unwrap(), Layout::MmRec { name: "baby".to_string() });
    let d = load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(d.name, "baby");
    assert_eq!(d.layout, Layout::MmRec { name: "baby".to_string() });
    assert_eq!((d.n_users, d.n_items), (3, 5));
    assert_eq!(d.train.pairs(), vec![(0, 0), (0, 1), (1, 2), (2, 1)]);
    assert_eq!(d.valid.pairs(), vec![(0, 2)]);
    assert_eq!(d.test.pairs(), vec![(1, 0), (2, 3)]);
    assert_eq!(d.feature_files, vec![("visual".to_string(), image), ("text".to_string(), text)]);
    assert!(d.findings.is_empty(), "{:?}", d.findings);
}

#[test]
fn mmrec_bad_x_label_gives_its_line() {
    let dir = fixture_dir("mmrec_bad_x_label");
    let path = write(&dir, "toy.inter", "userID\titemID\tx_label\n0\t0\t0\n0\t1\t3\n");
    let (err, msg) = load_err(&dir);
    assert!(matches!(err, Error::BadSplitLabel { line: 3, .. }), "{err:?}");
    assert!(msg.contains(&format!("{}:3:", path.display())) && msg.contains("`3`"), "{msg}");

    let dir = fixture_dir("mmrec_missing_x_label");
    write(&dir, "toy.inter", "userID\titemID\n0\t0\n");
    let (err, msg) = load_err(&dir);
    assert!(matches!(err, Error::MissingColumn { column: "x_label", .. }), "{err:?}");
    assert!(msg.contains("toy.inter:1:"), "{msg}");
}

#[test]
fn layout_detection_errors_name_the_folder() {
    let dir = fixture_dir("layout_none");
    write(&dir, "readme.txt", "nothing here");
    let err = detect_layout(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Layout { .. }), "{err:?}");
    assert!(msg.contains(&dir.display().to_string()) && msg.contains("train.csv") && msg.contains(".inter"), "{msg}");

    write(&dir, "a.inter", INTER);
    write(&dir, "b.inter", INTER);
    let msg = detect_layout(&dir).unwrap_err().to_string();
    assert!(msg.contains("2 `*.inter` files (a.inter, b.inter)"), "{msg}");

    let err = detect_layout(&dir.join("does-not-exist")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

/// The real Office files: the counts measured in the eval-protocol spec §2.
#[test]
fn real_office_interactions() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/office-interactions"));
    if !dir.join("train.csv").exists() {
        eprintln!("note: {} not found; skipping the real-data test", dir.display());
        return;
    }
    let d = load_sgfd(dir, &LoadOptions::default()).unwrap();
    assert_eq!((d.n_users, d.n_items), (4_874, 2_406));
    assert_eq!((d.train.nnz(), d.valid.nnz(), d.test.nnz()), (37_027, 0, 15_930));
    let s = d.stats();
    assert_eq!(s.users_with_test, 4_512);
    assert_eq!(s.users_without_train, 0);
    assert_eq!(s.min_user_degree, 5);
    assert_eq!(d.test_users().len(), 4_512);
    // No duplicates and no train/test overlap: nothing to report.
    assert!(d.findings.is_empty(), "{:?}", d.findings);
}

/// The real Toys & Games files: every line is one unique pair, and the counts are self-consistent.
#[test]
fn real_toysgames_interactions() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/toysgames-interactions"));
    if !dir.join("train.csv").exists() {
        eprintln!("note: {} not found; skipping the real-data test", dir.display());
        return;
    }
    let lines = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap().lines().filter(|l| !l.is_empty()).count();
    let d = load(dir, &LoadOptions::default()).unwrap();
    assert_eq!(d.train.nnz(), lines("train.csv") - 1);
    assert_eq!(d.test.nnz(), lines("test.csv") - 1);
    assert!(!d.findings.iter().any(|f| f.message.contains("duplicate")), "{:?}", d.findings);
    assert!(!d.findings.iter().any(|f| f.message.contains("both train and test")), "{:?}", d.findings);
    assert_eq!(d.train_by_item, d.train.transpose());
    let s = d.stats();
    assert_eq!(s.n_interactions, d.train.nnz() + d.test.nnz());
    assert_eq!((s.n_users, s.n_items), (18_748, 11_673), "SOURCE.md's counts");
    assert_eq!((d.train.nnz(), d.test.nnz()), (113_014, 48_639));
    // Observed (and cross-checked with Python's csv module): every user has train rows, 16,907 have test
    // rows, 6 items occur only in test, user degrees range over 5..=541.
    assert_eq!((s.users_without_train, s.users_with_test, s.items_without_train), (0, 16_907, 6));
    assert_eq!((s.min_user_degree, s.max_user_degree), (5, 541));
}

#[test]
fn blank_lines_are_skipped_and_interior_ones_reported() {
    let dir = sgfd_fixture("blank_lines");
    write(&dir, "test.csv", "userID,itemID\n0,3\n2,1\n\n\n");
    let path = write(&dir, "train.csv", "itemID,userID\n0,0\n\n1,0\n2,1\nx,2\n");
    let (err, msg) = load_err(&dir);
    // The blank line 3 still counts, so the bad cell is reported on its true line.
    assert!(matches!(err, Error::BadId { line: 6, .. }), "{err:?}");
    assert!(msg.contains(&format!("{}:6:", path.display())), "{msg}");
    write(&dir, "train.csv", "itemID,userID\n0,0\n\n1,0\n2,1\n0,2\n\n");
    let d = load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!((d.train.nnz(), d.test.nnz()), (4, 2));
    assert_eq!(d.findings.len(), 1, "{:?}", d.findings);
    assert_eq!(d.findings[0].path.as_deref(), Some(path.as_path()));
    assert!(d.findings[0].message.contains("1 blank lines skipped (first: line 3)"), "{}", d.findings[0]);
}

//! Dataset loaders: IDX images/labels and CSV files read back what was written, every malformed
//! file is refused with the right `DataError` naming the file and the position, and the shared
//! benchmark data (MNIST 10k, the five density-estimation datasets) loads with the published shapes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pc_runtime::Evidence;
use pc_runtime::dataset::{
    DataError, load_evidence, read_binary_csv, read_csv_auto, read_idx_images, read_idx_labeled, read_idx_labels, read_int_csv, write_csv, write_idx_images,
    write_idx_labels,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The message must name the file so a user knows which of their files is broken.
fn assert_names(err: &DataError, path: &Path, parts: &[&str]) {
    let msg = err.to_string();
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(name), "message {msg:?} does not name the file {name}");
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} does not contain {p:?}");
    }
}

fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b
}

// ------------------------------------------------------------------------------------------
// Round trips
// ------------------------------------------------------------------------------------------

#[test]
fn idx_images_and_labels_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (count, rows, cols) = (3, 4, 5);
    let pixels: Vec<u8> = (0..count * rows * cols).map(|i| ((i * 37 + 11) % 256) as u8).collect();
    let img = dir.path().join("imgs-idx3-ubyte");
    write_idx_images(&img, &pixels, count, rows, cols).unwrap();
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 16 + pixels.len() as u64);

    let (ev, shape) = read_idx_images(&img).unwrap();
    assert_eq!(shape, [rows, cols]);
    assert_eq!(ev.num_vars, rows * cols);
    assert_eq!(ev.num_samples(), count);
    assert!(ev.missing.is_none());
    let back: Vec<u8> = ev.values.iter().map(|&x| x as u8).collect();
    assert_eq!(back, pixels);
    assert!(ev.values.iter().all(|x| x.fract() == 0.0));

    // Image 1, row 2, col 3 sits at row-major offset (1*4 + 2)*5 + 3.
    assert_eq!(ev.value(1, 2 * cols + 3), pixels[(rows + 2) * cols + 3] as f32);

    let labels = vec![7u8, 0, 9];
    let lab = dir.path().join("labs-idx1-ubyte");
    write_idx_labels(&lab, &labels).unwrap();
    assert_eq!(read_idx_labels(&lab).unwrap(), labels);
    let (ev2, lab2, shape2) = read_idx_labeled(&img, &lab).unwrap();
    assert_eq!((ev2, lab2, shape2), (ev.clone(), labels, [rows, cols]));

    // load_evidence recognizes IDX by content, whatever the name.
    let renamed = dir.path().join("whatever.bin");
    std::fs::copy(&img, &renamed).unwrap();
    assert_eq!(load_evidence(&renamed).unwrap(), ev);
}

#[test]
fn write_idx_refuses_wrong_pixel_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad-idx3-ubyte");
    let err = write_idx_images(&p, &[0u8; 10], 2, 2, 2).unwrap_err();
    assert!(matches!(err, DataError::InvalidArgument { .. }), "{err:?}");
    assert_names(&err, &p, &["10"]);
    assert!(!p.exists(), "a refused write must not leave a file behind");
}

#[test]
fn csv_with_missing_values_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ev = Evidence::with_missing(
        3,
        vec![0.0, 4.0, 0.0, 2.0, 0.0, 16_777_216.0, 1.0, 1.0, 0.0],
        Some(vec![false, false, true, false, true, false, true, true, true]),
    )
    .unwrap();
    let p = dir.path().join("ints.csv");
    write_csv(&p, &ev, "?").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "0,4,?\n2,?,16777216\n?,?,?\n");

    // Missing entries read back with value 0, so compare against the canonical form.
    let mut canon = ev.clone();
    for (x, &m) in canon.values.iter_mut().zip(canon.missing.as_ref().unwrap()) {
        if m {
            *x = 0.0;
        }
    }
    assert_eq!(read_int_csv(&p, "?").unwrap(), canon);
    assert_eq!(read_csv_auto(&p, "?").unwrap(), canon);
    assert_eq!(load_evidence(&p).unwrap(), canon);

    // Another marker, and an empty field also counts as missing.
    let p2 = dir.path().join("ints-na.csv");
    write_csv(&p2, &ev, "NA").unwrap();
    assert_eq!(read_int_csv(&p2, "NA").unwrap(), canon);
    let p3 = write(dir.path(), "empty-fields.csv", b"0,4,\n2,,16777216\n,,\n");
    assert_eq!(read_int_csv(&p3, "?").unwrap(), canon);

    // Fully observed data has no mask at all.
    let full = Evidence::new(2, vec![3.0, 1.0, 0.0, 2.0]).unwrap();
    let p4 = dir.path().join("full.csv");
    write_csv(&p4, &full, "?").unwrap();
    assert_eq!(read_int_csv(&p4, "?").unwrap(), full);
}

#[test]
fn real_valued_csv_round_trips_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let vals = vec![0.1f32, -3.25, 1e-7, 1.0e20, 123_456.79, -0.0, 7.0, f32::MAX, f32::MIN_POSITIVE, -2.5e-3, 1e15, 3.0e7];
    let mut missing = vec![false; vals.len()];
    missing[3] = true;
    let ev = Evidence::with_missing(4, vals, Some(missing)).unwrap();
    let p = dir.path().join("reals.csv");
    write_csv(&p, &ev, "?").unwrap();
    let back = read_csv_auto(&p, "?").unwrap();
    assert_eq!(back.num_vars, 4);
    assert_eq!(back.missing, ev.missing);
    for (i, (a, b)) in ev.values.iter().zip(&back.values).enumerate() {
        if !ev.missing.as_ref().unwrap()[i] {
            assert_eq!(a.abs().to_bits(), b.abs().to_bits(), "value {i}: wrote {a}, read {b}");
        }
    }
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.starts_with("0.1,-3.25,1e-7,?\n"), "{text}");
    assert!(text.contains(",7,"), "integral values are written without decimals: {text}");
}

#[test]
fn write_csv_refuses_nan_and_unreadable_markers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.csv");
    let ev = Evidence::new(2, vec![1.0, 2.0, f32::NAN, 0.0]).unwrap();
    let err = write_csv(&p, &ev, "?").unwrap_err();
    assert!(matches!(err, DataError::NonFinite { sample: 1, var: 0, .. }), "{err:?}");
    assert_names(&err, &p, &["sample 1", "variable 0"]);

    let ev = Evidence::with_missing(2, vec![1.0, 2.0], Some(vec![true, false])).unwrap();
    for marker in ["a,b", "0", " ?"] {
        let err = write_csv(&p, &ev, marker).unwrap_err();
        assert!(matches!(err, DataError::InvalidArgument { .. }), "marker {marker:?}: {err:?}");
    }
    assert!(!p.exists());
}

#[test]
fn binary_csv_tolerates_crlf_blanks_and_trailing_empty_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "crlf.data", b"0,1,1\r\n1, 0 ,0  \r\n1,1,1\t\r\n\r\n\n");
    let ev = read_binary_csv(&p).unwrap();
    assert_eq!(ev, Evidence::new(3, vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap());
    // No final newline at all.
    let p = write(dir.path(), "nonl.data", b"1,0\n0,1");
    assert_eq!(read_binary_csv(&p).unwrap().values, vec![1.0, 0.0, 0.0, 1.0]);
    // A binary file is a valid integer / real file too.
    assert_eq!(read_int_csv(&p, "?").unwrap().values, vec![1.0, 0.0, 0.0, 1.0]);
}

// ------------------------------------------------------------------------------------------
// Rejections: exact variant, file name and position in the message
// ------------------------------------------------------------------------------------------

#[test]
fn idx_bad_magic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_header(0x0000_0801, &[1, 2, 2]);
    bytes.extend_from_slice(&[0; 4]);
    let p = write(dir.path(), "labels-not-images", &bytes);
    let err = read_idx_images(&p).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { expected: 0x803, found: 0x801, .. }), "{err:?}");
    assert_names(&err, &p, &["0x00000801", "0x00000803"]);

    // And the other way round: an image file is not a label file.
    let mut img = idx_header(0x0000_0803, &[1, 1, 1]);
    img.push(0);
    let q = write(dir.path(), "images-not-labels", &img);
    let err = read_idx_labels(&q).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { expected: 0x801, found: 0x803, .. }), "{err:?}");
    assert_names(&err, &q, &[]);
}

#[test]
fn idx_truncated_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = idx_header(0x0000_0803, &[10, 28]); // the cols dimension is cut off
    let p = write(dir.path(), "short-header-idx3-ubyte", &bytes);
    let err = read_idx_images(&p).unwrap_err();
    assert!(matches!(err, DataError::Truncated { expected_bytes: 16, found_bytes: 12, .. }), "{err:?}");
    assert_names(&err, &p, &["16", "12"]);

    // Even the magic number is incomplete.
    let q = write(dir.path(), "two-bytes", &[0, 0]);
    let err = read_idx_images(&q).unwrap_err();
    assert!(matches!(err, DataError::Truncated { found_bytes: 2, .. }), "{err:?}");
    assert_names(&err, &q, &[]);

    let r = write(dir.path(), "short-labels", &[0, 0, 8, 1, 0]);
    let err = read_idx_labels(&r).unwrap_err();
    assert!(matches!(err, DataError::Truncated { expected_bytes: 8, found_bytes: 5, .. }), "{err:?}");
}

#[test]
fn idx_truncated_pixels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_header(0x0000_0803, &[3, 28, 28]);
    bytes.extend(std::iter::repeat_n(7u8, 2 * 784 + 100)); // the third image is cut off
    let p = write(dir.path(), "cut-idx3-ubyte", &bytes);
    let err = read_idx_images(&p).unwrap_err();
    let (expected, found) = (16 + 3 * 784, 16 + 2 * 784 + 100);
    assert!(
        matches!(err, DataError::Truncated { expected_bytes, found_bytes, .. }
            if expected_bytes == expected && found_bytes == found),
        "{err:?}"
    );
    assert_names(&err, &p, &[&expected.to_string(), &found.to_string()]);

    // Labels too.
    let mut lab = idx_header(0x0000_0801, &[10]);
    lab.extend_from_slice(&[1, 2, 3]);
    let q = write(dir.path(), "cut-idx1-ubyte", &lab);
    let err = read_idx_labels(&q).unwrap_err();
    assert!(matches!(err, DataError::Truncated { expected_bytes: 18, found_bytes: 11, .. }), "{err:?}");
    assert_names(&err, &q, &[]);
}

#[test]
fn idx_with_trailing_bytes_or_zero_dims_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_header(0x0000_0803, &[1, 2, 2]);
    bytes.extend_from_slice(&[0; 5]);
    let p = write(dir.path(), "long-idx3-ubyte", &bytes);
    let err = read_idx_images(&p).unwrap_err();
    assert!(matches!(err, DataError::TrailingBytes { expected_bytes: 20, found_bytes: 21, .. }), "{err:?}");
    assert_names(&err, &p, &[]);

    let q = write(dir.path(), "zero-idx3-ubyte", &idx_header(0x0000_0803, &[5, 0, 28]));
    let err = read_idx_images(&q).unwrap_err();
    assert!(matches!(err, DataError::BadHeader { .. }), "{err:?}");
    assert_names(&err, &q, &["0x28"]);

    // Huge dimensions in a tiny file: an error, not an overflow or a giant allocation.
    let r = write(dir.path(), "huge-idx3-ubyte", &idx_header(0x0000_0803, &[u32::MAX, u32::MAX, u32::MAX]));
    let err = read_idx_images(&r).unwrap_err();
    assert!(matches!(err, DataError::Truncated { expected_bytes: u64::MAX, found_bytes: 16, .. }), "{err:?}");
}

#[test]
fn images_and_labels_of_different_lengths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("i-idx3-ubyte");
    let lab = dir.path().join("l-idx1-ubyte");
    write_idx_images(&img, &[0; 12], 3, 2, 2).unwrap();
    write_idx_labels(&lab, &[1, 2]).unwrap();
    let err = read_idx_labeled(&img, &lab).unwrap_err();
    assert!(matches!(err, DataError::LabelMismatch { num_images: 3, num_labels: 2, .. }), "{err:?}");
    assert_names(&err, &img, &["l-idx1-ubyte"]);
}

#[test]
fn binary_csv_with_a_two_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.train.data", b"0,0,0,0,0,0\n1,1,1,1,1,1\n0,1,0,1,2,1\n0,0,0,0,0,0\n");
    let err = read_binary_csv(&p).unwrap_err();
    assert!(matches!(&err, DataError::OutOfRange { line: 3, column: 5, value, .. } if value == "2"), "{err:?}");
    assert_names(&err, &p, &["line 3", "column 5", "`2`", "0 or 1"]);

    // A missing marker is not allowed in the binary format either.
    let q = write(dir.path(), "q.data", b"0,1\n?,1\n");
    let err = read_binary_csv(&q).unwrap_err();
    assert!(matches!(err, DataError::OutOfRange { line: 2, column: 1, .. }), "{err:?}");
}

#[test]
fn ragged_csv_row_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "ragged.data", b"0,1,0\n1,1,0\n1,0\n0,0,0\n");
    let err = read_binary_csv(&p).unwrap_err();
    assert!(matches!(err, DataError::Ragged { line: 3, expected: 3, found: 2, .. }), "{err:?}");
    assert_names(&err, &p, &["line 3", "2 fields", "3"]);

    let q = write(dir.path(), "wide.csv", b"0,1\n1,1\n1,0\n0,0,0\n");
    let err = read_int_csv(&q, "?").unwrap_err();
    assert!(matches!(err, DataError::Ragged { line: 4, expected: 2, found: 3, .. }), "{err:?}");
    assert_names(&err, &q, &["line 4"]);
}

#[test]
fn non_integer_field_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "ints.csv", b"1,2,3\n4,5,6\n7,8.5,9\n");
    let err = read_int_csv(&p, "?").unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 3, column: 2, .. }), "{err:?}");
    assert_names(&err, &p, &["line 3", "column 2", "8.5"]);
    // The same file is fine as real-valued data.
    assert_eq!(read_csv_auto(&p, "?").unwrap().values[7], 8.5);

    let q = write(dir.path(), "word.csv", b"1,2\n3,abc\n");
    let err = read_int_csv(&q, "?").unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 2, column: 2, .. }), "{err:?}");
    let err = read_csv_auto(&q, "?").unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 2, column: 2, .. }), "{err:?}");
    assert_names(&err, &q, &["abc"]);

    // A header line is refused at line 1 rather than silently shifting the data.
    let h = write(dir.path(), "header.csv", b"a,b\n1,2\n");
    assert!(matches!(read_int_csv(&h, "?").unwrap_err(), DataError::Malformed { line: 1, column: 1, .. }));
}

#[test]
fn negative_and_huge_integers_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "neg.csv", b"1,2\n3,-4\n");
    let err = read_int_csv(&p, "?").unwrap_err();
    assert!(matches!(err, DataError::OutOfRange { line: 2, column: 2, .. }), "{err:?}");
    assert_names(&err, &p, &["line 2", "column 2", "-4"]);
    // Negative reals are fine as real data.
    assert_eq!(read_csv_auto(&p, "?").unwrap().values[3], -4.0);

    let q = write(dir.path(), "big.csv", b"16777216\n16777217\n");
    let err = read_int_csv(&q, "?").unwrap_err();
    assert!(matches!(err, DataError::OutOfRange { line: 2, column: 1, .. }), "{err:?}");
    let r = write(dir.path(), "overflow.csv", b"99999999999999999999999999\n");
    assert!(matches!(read_int_csv(&r, "?").unwrap_err(), DataError::OutOfRange { line: 1, column: 1, .. }));
}

#[test]
fn nan_and_infinity_text_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("nan.csv", "1.5,NaN\n"), ("inf.csv", "1.5,inf\n"), ("ovf.csv", "1.5,1e39\n")] {
        let p = write(dir.path(), name, format!("0,0\n{text}").as_bytes());
        let err = read_csv_auto(&p, "?").unwrap_err();
        assert!(matches!(err, DataError::Malformed { line: 2, column: 2, .. }), "{name}: {err:?}");
        assert_names(&err, &p, &["line 2", "column 2"]);
    }
}

#[test]
fn empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("empty.data", &b""[..]), ("blank.data", &b"\n \r\n\n"[..])] {
        let p = write(dir.path(), name, bytes);
        for err in [read_binary_csv(&p).unwrap_err(), read_int_csv(&p, "?").unwrap_err(), load_evidence(&p).unwrap_err()] {
            assert!(matches!(err, DataError::Empty { .. }), "{name}: {err:?}");
            assert_names(&err, &p, &["no samples"]);
        }
    }
}

#[test]
fn blank_line_between_samples_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "gap.data", b"0,1\n1,0\n\n1,1\n");
    let err = read_binary_csv(&p).unwrap_err();
    assert!(matches!(err, DataError::Malformed { line: 3, .. }), "{err:?}");
    assert_names(&err, &p, &["line 3"]);
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.csv");
    let err = read_csv_auto(&p, "?").unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert_names(&err, &p, &[]);
}

// ------------------------------------------------------------------------------------------
// The shared benchmark data
// ------------------------------------------------------------------------------------------

/// `../shared/data` beside the checkout. Missing: a failure under CI (the data must be there), a
/// skip elsewhere (a fresh clone on a user's machine has no `../shared`).
fn shared_data() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("../shared/data is missing (looked at {}); CI=true requires it", dir.display());
    }
    eprintln!("note: ../shared/data is missing ({}); skipping this test", dir.display());
    None
}

#[test]
fn mnist10k_loads() {
    let Some(data) = shared_data() else { return };
    let dir = data.join("mnist10k");
    let t = Instant::now();
    let (ev, lab, shape) = read_idx_labeled(&dir.join("images-idx3-ubyte"), &dir.join("labels-idx1-ubyte")).unwrap();
    eprintln!("mnist10k: {} images in {:?}", ev.num_samples(), t.elapsed());
    assert_eq!(shape, [28, 28]);
    assert_eq!(ev.num_vars, 784);
    assert_eq!(ev.num_samples(), 10_000);
    assert!(ev.missing.is_none());
    assert!(ev.values.iter().all(|&x| x.fract() == 0.0 && (0.0..=255.0).contains(&x)));
    assert_eq!(ev.values.iter().cloned().fold(0.0f32, f32::max), 255.0);
    // Known contents (computed independently from the raw bytes): the mean grey level, the first
    // image's total ink and middle row, the top row of every image is blank, the class counts.
    let mean = ev.values.iter().map(|&x| x as f64).sum::<f64>() / ev.values.len() as f64;
    assert!((mean - 33.437_066).abs() < 1e-4, "mean pixel {mean}");
    assert_eq!(ev.values[..784].iter().sum::<f32>(), 15849.0);
    let row14: Vec<f32> = ev.values[14 * 28..15 * 28].to_vec();
    let mut expect = vec![0.0f32; 28];
    expect[11..14].copy_from_slice(&[132.0, 224.0, 85.0]);
    assert_eq!(row14, expect);
    for s in 0..ev.num_samples() {
        assert!((0..28).all(|c| ev.value(s, c) == 0.0), "image {s} has ink in its top row");
    }
    assert_eq!(&lab[..10], &[3, 8, 1, 0, 4, 0, 9, 3, 4, 9]);
    let mut counts = [0usize; 10];
    for &l in &lab {
        assert!(l < 10, "label {l}");
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
    assert_eq!(load_evidence(&dir.join("images-idx3-ubyte")).unwrap(), ev);
}

#[test]
fn nltcs_train_loads() {
    let Some(data) = shared_data() else { return };
    let p = data.join("density/nltcs/nltcs.train.data");
    let t = Instant::now();
    let ev = read_binary_csv(&p).unwrap();
    eprintln!("nltcs.train: {} x {} in {:?}", ev.num_samples(), ev.num_vars, t.elapsed());
    assert_eq!((ev.num_samples(), ev.num_vars), (16181, 16));
    assert!(ev.missing.is_none());
    assert!(ev.values[..16].iter().all(|&x| x == 0.0));
    let second: Vec<f32> = [0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1].iter().map(|&x| x as f32).collect();
    assert_eq!(&ev.values[16..32], &second[..]);
    // The general readers agree with the binary one.
    assert_eq!(read_int_csv(&p, "?").unwrap(), ev);
    assert_eq!(load_evidence(&p).unwrap(), ev);
}

#[test]
fn all_density_datasets_have_the_published_shapes() {
    let Some(data) = shared_data() else { return };
    let table: [(&str, usize, [usize; 3]); 5] = [
        ("nltcs", 16, [16181, 2157, 3236]),
        ("plants", 69, [17412, 2321, 3482]),
        ("baudio", 100, [15000, 2000, 3000]),
        ("jester", 100, [9000, 1000, 4116]),
        ("bnetflix", 100, [15000, 2000, 3000]),
    ];
    let t = Instant::now();
    for (name, vars, counts) in table {
        for (split, rows) in ["train", "valid", "test"].into_iter().zip(counts) {
            let p = data.join(format!("density/{name}/{name}.{split}.data"));
            let ev = read_binary_csv(&p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((ev.num_samples(), ev.num_vars), (rows, vars), "{name}.{split}");
            assert!(ev.missing.is_none());
            // Cross-check against a naive count of the file's non-blank lines and ones.
            let text = std::fs::read_to_string(&p).unwrap();
            let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
            assert_eq!(lines, rows, "{name}.{split}: line count");
            let ones = text.bytes().filter(|&b| b == b'1').count();
            assert_eq!(ev.values.iter().filter(|&&x| x == 1.0).count(), ones, "{name}.{split}: ones");
        }
    }
    eprintln!("15 density files (with naive cross-checks) in {:?}", t.elapsed());
}

/// More variables than `MAX_VARIABLES` are refused from the first line or the header, before
/// anything is allocated for them (issue 15: a CSV of 2,000,000 columns went on to ask structure
/// learning for a 2,000,000² matrix).
#[test]
fn too_many_variables_are_refused_before_allocating() {
    use pc_runtime::dataset::MAX_VARIABLES;
    let dir = tempfile::tempdir().unwrap();
    let line = vec!["1"; MAX_VARIABLES + 1].join(",");
    let p = write(dir.path(), "wide.csv", format!("{line}\n{line}\n").as_bytes());
    let err = read_csv_auto(&p, "?").unwrap_err();
    assert!(matches!(err, DataError::TooManyColumns { line: 1, found, .. } if found == MAX_VARIABLES + 1), "{err}");
    assert_names(&err, &p, &["1048577 columns", "limit"]);
    let p = write(dir.path(), "huge-ubyte", &idx_header(0x803, &[0, 65536, 65536]));
    let err = read_idx_images(&p).unwrap_err();
    assert_names(&err, &p, &["65536x65536", "limit"]);
}

/// One rule tells IDX from CSV for every reader (CLI, `load_evidence`, the deployment binary):
/// a leading NUL byte; bytes in memory parse as either through `evidence_from_bytes`.
#[test]
fn idx_or_csv_is_decided_in_one_place() {
    use pc_runtime::dataset::{evidence_from_bytes, is_idx};
    assert!(is_idx(&[0, 0, 8, 3]) && is_idx(&[0]) && !is_idx(b"0,1\n") && !is_idx(b""));
    let (ev, shape) = evidence_from_bytes(std::path::Path::new("x.csv"), b"0,1\n1,?\n", "?").unwrap();
    assert_eq!((ev.num_vars, ev.num_samples(), shape), (2, 2, None));
    // An IDX file of 2 images of 1 x 2 pixels.
    let idx = [0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 7, 0, 255, 1];
    let (ev, shape) = evidence_from_bytes(std::path::Path::new("x"), &idx, "?").unwrap();
    assert_eq!((ev.num_vars, ev.num_samples(), shape), (2, 2, Some([1, 2])));
    assert_eq!(ev.values, vec![7.0, 0.0, 255.0, 1.0]);
}

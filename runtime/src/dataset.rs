//! Dataset files: MNIST-style IDX images and labels, and comma-separated sample files (the binary
//! density-estimation benchmarks, integer data with missing values, real-valued data).
//!
//! Every loader turns a file into [`Evidence`] (row-major `[num_samples, num_vars]`), and every
//! problem comes back as a [`DataError`] that names the file and, for text files, the 1-based line
//! and column (field index) of the offending value, so a user can fix the file without a debugger.
//!
//! The readers load the whole file into memory once and scan its bytes without allocating per line
//! or per field: a 20,000 x 100 CSV or 10,000 MNIST images load in milliseconds.
//!
//! Writers go through [`crate::atomic_write`], so an interrupted write never leaves a half-written
//! dataset behind, and what they write reads back bit-for-bit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::RuntimeError;
use crate::data::Evidence;

/// IDX magic number of an unsigned-byte, three-dimensional array (`[count, rows, cols]` images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic number of an unsigned-byte, one-dimensional array (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Integers above this are not all representable in `f32` (the type [`Evidence`] stores), so the
/// integer reader refuses them instead of silently rounding a category index.
pub const MAX_EXACT_INT: u64 = 1 << 24;

/// Most variables (CSV columns, IDX pixels per image) a data file may have: checked on the first
/// line or the header, before anything is allocated for them (a two-line CSV of 2,000,000 columns
/// otherwise went on to ask structure learning for a 2,000,000² matrix).
pub const MAX_VARIABLES: usize = 1 << 20;

const IDX_IMAGES_HEADER: usize = 16;
const IDX_LABELS_HEADER: usize = 8;

/// Everything that can go wrong reading or writing a dataset file. Each variant names the file and,
/// where one exists, the position (1-based line, and 1-based column = field index for CSV).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A text field or line that cannot be parsed (not a number, a stray blank line, ...).
    #[error("{path}, line {line}, column {column}: {detail}")]
    Malformed { path: PathBuf, line: usize, column: usize, detail: String },
    /// A well-formed value outside what the format allows (a `2` in a binary file, a negative
    /// category).
    #[error("{path}, line {line}, column {column}: value `{value}` is out of range (allowed: {allowed})")]
    OutOfRange { path: PathBuf, line: usize, column: usize, value: String, allowed: String },
    /// A binary file whose magic number says it is not the expected kind of IDX file.
    #[error("{path} is not the expected kind of IDX file: magic number 0x{found:08x}, expected 0x{expected:08x}")]
    BadMagic { path: PathBuf, expected: u32, found: u32 },
    /// A binary file shorter than its header says (cut-off download, wrong file).
    #[error("{path} is truncated: it should hold {expected_bytes} bytes but has only {found_bytes}")]
    Truncated { path: PathBuf, expected_bytes: u64, found_bytes: u64 },
    /// A binary file longer than its header says: the dimensions in the header are probably wrong.
    #[error("{path} has {found_bytes} bytes but its header describes {expected_bytes}: the header's dimensions are wrong")]
    TrailingBytes { path: PathBuf, expected_bytes: u64, found_bytes: u64 },
    /// A binary header whose dimensions cannot describe samples (zero rows or columns).
    #[error("{path} has an invalid header: {detail}")]
    BadHeader { path: PathBuf, detail: String },
    /// A first line with more fields than [`MAX_VARIABLES`].
    #[error("{path}, line {line}: {found} columns, more than the limit of {limit} variables")]
    TooManyColumns { path: PathBuf, line: usize, found: usize, limit: usize },
    /// A CSV row with a different number of fields than the first row.
    #[error("{path}, line {line}: {found} fields, but the first line has {expected}")]
    Ragged { path: PathBuf, line: usize, expected: usize, found: usize },
    /// A file without a single sample (so not even the number of variables is known).
    #[error("{path} holds no samples")]
    Empty { path: PathBuf },
    /// An image file and a label file that do not describe the same number of samples.
    #[error("{images} holds {num_images} images but {labels} holds {num_labels} labels")]
    LabelMismatch { images: PathBuf, labels: PathBuf, num_images: usize, num_labels: usize },
    /// A writer was handed data it cannot represent in the file (wrong length, dimensions beyond
    /// the format, a missing-value marker that would not read back).
    #[error("cannot write {path}: {detail}")]
    InvalidArgument { path: PathBuf, detail: String },
    /// A writer was handed a NaN or infinite value (positions are 0-based, like [`Evidence`]'s).
    #[error("cannot write {path}: sample {sample}, variable {var} is NaN or infinite (mark it missing instead)")]
    NonFinite { path: PathBuf, sample: usize, var: usize },
}

fn io_err(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io { path: path.to_path_buf(), source }
}

/// `atomic_write` reports `RuntimeError`; datasets report `DataError` (the runtime's error type is
/// not extended for datasets so the two stay independent).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    crate::atomic_write(path, bytes).map_err(|e| match e {
        RuntimeError::Io { path, source } => DataError::Io { path, source },
        other => DataError::Io { path: path.to_path_buf(), source: std::io::Error::other(other.to_string()) },
    })
}

fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| io_err(path, e))
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Check the magic number and the exact length of an unsigned-byte IDX file with `ndims`
/// dimensions (header: magic + one big-endian `u32` per dimension). Returns the dimensions.
fn check_idx(path: &Path, bytes: &[u8], magic: u32, ndims: usize) -> Result<Vec<usize>, DataError> {
    let header = 4 + 4 * ndims;
    let found_bytes = bytes.len() as u64;
    if bytes.len() < 4 {
        return Err(DataError::Truncated { path: path.to_path_buf(), expected_bytes: header as u64, found_bytes });
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::BadMagic { path: path.to_path_buf(), expected: magic, found });
    }
    if bytes.len() < header {
        return Err(DataError::Truncated { path: path.to_path_buf(), expected_bytes: header as u64, found_bytes });
    }
    let dims: Vec<u32> = (0..ndims).map(|d| be_u32(bytes, 4 + 4 * d)).collect();
    // u128: three u32 dimensions cannot overflow it; saturate into the u64 the error reports.
    let payload: u128 = dims.iter().map(|&d| d as u128).product();
    let expected = u64::try_from(header as u128 + payload).unwrap_or(u64::MAX);
    if found_bytes < expected {
        return Err(DataError::Truncated { path: path.to_path_buf(), expected_bytes: expected, found_bytes });
    }
    if found_bytes > expected {
        return Err(DataError::TrailingBytes { path: path.to_path_buf(), expected_bytes: expected, found_bytes });
    }
    Ok(dims.into_iter().map(|d| d as usize).collect())
}

fn parse_idx_images(path: &Path, bytes: &[u8]) -> Result<(Evidence, [usize; 2]), DataError> {
    let dims = check_idx(path, bytes, IDX_IMAGES_MAGIC, 3)?;
    let (rows, cols) = (dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::BadHeader { path: path.to_path_buf(), detail: format!("images of {rows}x{cols} pixels have no variables") });
    }
    if rows.saturating_mul(cols) > MAX_VARIABLES {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            detail: format!("images of {rows}x{cols} pixels have more than the limit of {MAX_VARIABLES} variables"),
        });
    }
    let values: Vec<f32> = bytes[IDX_IMAGES_HEADER..].iter().map(|&b| b as f32).collect();
    Ok((Evidence { num_vars: rows * cols, values, missing: None, soft: None }, [rows, cols]))
}

/// Read MNIST-style IDX3 images (magic `0x00000803`, big-endian `u32` count, rows, cols, then
/// row-major `u8` pixels). Each image is one sample of `rows * cols` variables holding the grey
/// levels 0..=255 as `f32` (ready for 256-category leaves); no value is missing. Also returns
/// `[rows, cols]` so structures that need the image layout (PD, HCLT on pixels) can rebuild it.
///
/// The file's length must match its header exactly: a short file is [`DataError::Truncated`], a
/// long one [`DataError::TrailingBytes`] (both usually mean a damaged or wrong file).
pub fn read_idx_images(path: &Path) -> Result<(Evidence, [usize; 2]), DataError> {
    parse_idx_images(path, &read_all(path)?)
}

/// Read IDX1 labels (magic `0x00000801`, big-endian `u32` count, then one `u8` per sample).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = read_all(path)?;
    check_idx(path, &bytes, IDX_LABELS_MAGIC, 1)?;
    Ok(bytes[IDX_LABELS_HEADER..].to_vec())
}

/// Read an image file and its label file together, checking that they describe the same number
/// of samples (a mismatch usually means the two files come from different splits).
pub fn read_idx_labeled(images: &Path, labels: &Path) -> Result<(Evidence, Vec<u8>, [usize; 2]), DataError> {
    let (ev, shape) = read_idx_images(images)?;
    let lab = read_idx_labels(labels)?;
    if lab.len() != ev.num_samples() {
        return Err(DataError::LabelMismatch {
            images: images.to_path_buf(),
            labels: labels.to_path_buf(),
            num_images: ev.num_samples(),
            num_labels: lab.len(),
        });
    }
    Ok((ev, lab, shape))
}

fn dim_u32(path: &Path, what: &str, d: usize) -> Result<u32, DataError> {
    u32::try_from(d)
        .map_err(|_| DataError::InvalidArgument { path: path.to_path_buf(), detail: format!("{what} {d} does not fit the IDX format's 32-bit dimensions") })
}

/// Write `count` images of `rows x cols` `u8` pixels (row-major, `images.len()` must be
/// `count * rows * cols`) as an IDX3 file, atomically. Used to save generated samples in the
/// format every MNIST tool reads, and by tests to build files with known contents.
pub fn write_idx_images(path: &Path, images: &[u8], count: usize, rows: usize, cols: usize) -> Result<(), DataError> {
    let dims = [dim_u32(path, "image count", count)?, dim_u32(path, "row count", rows)?, dim_u32(path, "column count", cols)?];
    if rows == 0 || cols == 0 {
        return Err(DataError::InvalidArgument { path: path.to_path_buf(), detail: format!("images of {rows}x{cols} pixels have no variables") });
    }
    let expected = count.checked_mul(rows).and_then(|n| n.checked_mul(cols));
    if expected != Some(images.len()) {
        return Err(DataError::InvalidArgument {
            path: path.to_path_buf(),
            detail: format!("{} pixel bytes given for {count} images of {rows}x{cols}", images.len()),
        });
    }
    let mut bytes = Vec::with_capacity(IDX_IMAGES_HEADER + images.len());
    bytes.extend_from_slice(&IDX_IMAGES_MAGIC.to_be_bytes());
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(images);
    write_atomic(path, &bytes)
}

/// Write IDX1 labels atomically (the counterpart of [`read_idx_labels`]).
pub fn write_idx_labels(path: &Path, labels: &[u8]) -> Result<(), DataError> {
    let count = dim_u32(path, "label count", labels.len())?;
    let mut bytes = Vec::with_capacity(IDX_LABELS_HEADER + labels.len());
    bytes.extend_from_slice(&IDX_LABELS_MAGIC.to_be_bytes());
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes.extend_from_slice(labels);
    write_atomic(path, &bytes)
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// What a CSV field may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Exactly `0` or `1`; nothing is missing.
    Binary,
    /// Non-negative integers up to [`MAX_EXACT_INT`], or the missing marker.
    Int,
    /// Finite real numbers, or the missing marker.
    Real,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_blank(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_blank(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// A field as text for an error message, cut short so a binary file read as CSV does not produce
/// a megabyte of message.
fn show(field: &[u8]) -> String {
    const MAX: usize = 40;
    let text = String::from_utf8_lossy(&field[..field.len().min(MAX)]);
    let mut s: String = text.chars().flat_map(char::escape_debug).collect();
    if field.len() > MAX {
        s.push_str("...");
    }
    s
}

/// Parse an all-digit field; `None` on overflow of `u64` (the caller reports it as out of range).
fn parse_digits(field: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &b in field {
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

struct Csv<'a> {
    path: &'a Path,
    kind: Kind,
    marker: &'a [u8],
    any_missing: bool,
}

impl Csv<'_> {
    fn malformed(&self, line: usize, column: usize, detail: String) -> DataError {
        DataError::Malformed { path: self.path.to_path_buf(), line, column, detail }
    }

    fn out_of_range(&self, line: usize, column: usize, field: &[u8], allowed: &str) -> DataError {
        DataError::OutOfRange { path: self.path.to_path_buf(), line, column, value: show(field), allowed: allowed.to_string() }
    }

    /// One trimmed field -> (value, missing).
    #[inline]
    fn field(&mut self, f: &[u8], line: usize, column: usize) -> Result<(f32, bool), DataError> {
        match self.kind {
            Kind::Binary => match f {
                b"0" => Ok((0.0, false)),
                b"1" => Ok((1.0, false)),
                _ => Err(self.out_of_range(line, column, f, "0 or 1")),
            },
            Kind::Int | Kind::Real => {
                if f.is_empty() || f == self.marker {
                    self.any_missing = true;
                    return Ok((0.0, true));
                }
                if f.iter().all(u8::is_ascii_digit) {
                    return match parse_digits(f) {
                        Some(n) if n <= MAX_EXACT_INT => Ok((n as f32, false)),
                        // Real data may hold big integers; f32 rounding is expected there.
                        _ if self.kind == Kind::Real => self.real(f, line, column),
                        _ => Err(self.out_of_range(line, column, f, "integers 0..=16777216 (larger ones are not exact in f32)")),
                    };
                }
                if self.kind == Kind::Real {
                    return self.real(f, line, column);
                }
                if let [b'-', digits @ ..] = f
                    && !digits.is_empty()
                    && digits.iter().all(u8::is_ascii_digit)
                {
                    if digits.iter().all(|&d| d == b'0') {
                        return Ok((0.0, false)); // "-0" is zero
                    }
                    return Err(self.out_of_range(line, column, f, "non-negative integers"));
                }
                Err(self.malformed(line, column, format!("`{}` is not a non-negative integer (use read_csv_auto for real-valued data)", show(f))))
            }
        }
    }

    fn real(&self, f: &[u8], line: usize, column: usize) -> Result<(f32, bool), DataError> {
        let parsed = std::str::from_utf8(f).ok().and_then(|s| s.parse::<f32>().ok());
        match parsed {
            Some(x) if x.is_finite() => Ok((x, false)),
            Some(_) => Err(self.malformed(
                line,
                column,
                format!("`{}` is not a finite number (NaN, infinities and overflow are refused; mark the value missing instead)", show(f)),
            )),
            None => Err(self.malformed(line, column, format!("`{}` is not a number", show(f)))),
        }
    }

    fn parse(mut self, bytes: &[u8]) -> Result<Evidence, DataError> {
        let path = self.path;
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes); // UTF-8 byte-order mark
        if bytes.starts_with(&[0x1f, 0x8b]) {
            return Err(self.malformed(1, 1, "the file is gzip-compressed; decompress it first".into()));
        }
        if bytes.starts_with(&[0, 0, 8]) {
            return Err(self.malformed(1, 1, "this is a binary IDX file, not CSV; read it with read_idx_images".into()));
        }
        let mut values: Vec<f32> = Vec::new();
        let mut mask: Vec<bool> = Vec::new();
        let mut num_vars = 0usize;
        let mut blank_line: Option<usize> = None;
        let mut line_no = 0usize;
        let mut rest = bytes;
        while !rest.is_empty() {
            line_no += 1;
            let (raw, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            let line = trim(raw);
            if line.is_empty() {
                blank_line.get_or_insert(line_no);
                continue;
            }
            if let Some(b) = blank_line {
                return Err(self.malformed(b, 1, "blank line between samples (only trailing blank lines are allowed)".into()));
            }
            if num_vars == 0 {
                let found = line.iter().filter(|&&b| b == b',').count() + 1;
                if found > MAX_VARIABLES {
                    return Err(DataError::TooManyColumns { path: path.to_path_buf(), line: line_no, found, limit: MAX_VARIABLES });
                }
            }
            let mut fields = 0usize;
            for f in line.split(|&b| b == b',') {
                fields += 1;
                let (x, miss) = self.field(trim(f), line_no, fields)?;
                values.push(x);
                mask.push(miss);
            }
            if num_vars == 0 {
                num_vars = fields;
                // Reserve for the rest of the file from the first line's length (one allocation).
                let est = bytes.len() / (raw.len() + 1) + 1;
                values.reserve(est.saturating_mul(num_vars));
                mask.reserve(est.saturating_mul(num_vars));
            } else if fields != num_vars {
                return Err(DataError::Ragged { path: path.to_path_buf(), line: line_no, expected: num_vars, found: fields });
            }
        }
        if num_vars == 0 {
            return Err(DataError::Empty { path: path.to_path_buf() });
        }
        let missing = self.any_missing.then_some(mask);
        Ok(Evidence { num_vars, values, missing, soft: None })
    }
}

fn parse_csv(path: &Path, bytes: &[u8], kind: Kind, marker: &str) -> Result<Evidence, DataError> {
    Csv { path, kind, marker: marker.trim().as_bytes(), any_missing: false }.parse(bytes)
}

/// Read the density-estimation benchmark format (nltcs, plants, baudio, jester, bnetflix...): one
/// sample per line, comma-separated `0`/`1`. CRLF line ends, blanks around fields and trailing
/// blank lines are tolerated; any other value is [`DataError::OutOfRange`] at its line and column,
/// a row of a different width is [`DataError::Ragged`], an empty file is [`DataError::Empty`]. No
/// value is missing (the mask is `None`).
pub fn read_binary_csv(path: &Path) -> Result<Evidence, DataError> {
    parse_csv(path, &read_all(path)?, Kind::Binary, "")
}

/// Read comma-separated non-negative integers (category indices). A field equal to
/// `missing_marker` (for example `"?"`) or an empty field is missing: its mask entry is `true` and
/// its stored value 0. Text that is not an integer is [`DataError::Malformed`]; negative or too
/// large integers (beyond 2^24, where `f32` stops being exact) are [`DataError::OutOfRange`].
/// The mask is `None` when nothing is missing, so fully observed data takes the engines' fast path.
pub fn read_int_csv(path: &Path, missing_marker: &str) -> Result<Evidence, DataError> {
    parse_csv(path, &read_all(path)?, Kind::Int, missing_marker)
}

/// Like [`read_int_csv`] but also accepts real numbers (Gaussian variables), parsed as `f32`
/// (correctly rounded). `NaN`, `inf` and values that overflow `f32` are refused as
/// [`DataError::Malformed`]: a missing value must be marked missing, not smuggled in as NaN.
pub fn read_csv_auto(path: &Path, missing_marker: &str) -> Result<Evidence, DataError> {
    parse_csv(path, &read_all(path)?, Kind::Real, missing_marker)
}

/// [`read_csv_auto`] of bytes already in memory (for example read from stdin); `name` stands for
/// the file in error messages (e.g. `<stdin>`).
pub fn csv_auto_from_bytes(name: &Path, bytes: &[u8], missing_marker: &str) -> Result<Evidence, DataError> {
    parse_csv(name, bytes, Kind::Real, missing_marker)
}

/// [`read_idx_images`] of bytes already in memory (for example read from stdin); `name` stands for
/// the file in error messages.
pub fn idx_images_from_bytes(name: &Path, bytes: &[u8]) -> Result<(Evidence, [usize; 2]), DataError> {
    parse_idx_images(name, bytes)
}

/// Whether data starting with `prefix` is an IDX file rather than CSV: no text file starts with a
/// NUL byte, every IDX file does (its magic number's first two bytes are 0). The one rule every
/// reader of "IDX or CSV" uses (the CLI, [`load_evidence`], the deployment binary).
pub fn is_idx(prefix: &[u8]) -> bool {
    prefix.first() == Some(&0)
}

/// A dataset from bytes already in memory: IDX images ([`is_idx`]), with their image shape, or
/// CSV of numbers with `missing_marker` (or an empty field) marking missing values.
pub fn evidence_from_bytes(name: &Path, bytes: &[u8], missing_marker: &str) -> Result<(Evidence, Option<[usize; 2]>), DataError> {
    if is_idx(bytes) {
        return parse_idx_images(name, bytes).map(|(ev, shape)| (ev, Some(shape)));
    }
    parse_csv(name, bytes, Kind::Real, missing_marker).map(|ev| (ev, None))
}

/// Read a dataset whatever its format: an IDX image file (recognized by its magic number, or by a
/// name ending in `ubyte`) gives its images; anything else is read as CSV of numbers with `?`
/// (or an empty field) marking missing values, as [`read_csv_auto`] does.
pub fn load_evidence(path: &Path) -> Result<Evidence, DataError> {
    let bytes = read_all(path)?;
    let idx_name = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("ubyte"));
    if is_idx(&bytes) || idx_name {
        return parse_idx_images(path, &bytes).map(|(ev, _)| ev);
    }
    parse_csv(path, &bytes, Kind::Real, "?")
}

fn invalid(path: &Path, detail: impl Into<String>) -> DataError {
    DataError::InvalidArgument { path: path.to_path_buf(), detail: detail.into() }
}

/// Write `ev` as comma-separated values, one sample per line, atomically. Integral values are
/// written without decimals (so discrete data reads back with [`read_int_csv`]), others in the
/// shortest form that reads back to the same `f32`; missing values are written as
/// `missing_marker`. Refuses NaN/infinite observed values and markers that would not read back as
/// missing (containing a comma or line break, surrounded by blanks, or themselves a number).
pub fn write_csv(path: &Path, ev: &Evidence, missing_marker: &str) -> Result<(), DataError> {
    let n = ev.num_vars;
    if n == 0 || !ev.values.len().is_multiple_of(n) {
        return Err(invalid(path, format!("{} values are not whole samples of {n} variables", ev.values.len())));
    }
    if let Some(m) = &ev.missing
        && m.len() != ev.values.len()
    {
        return Err(invalid(path, format!("the missing mask has {} entries for {} values", m.len(), ev.values.len())));
    }
    let marker = missing_marker;
    let any_missing = ev.missing.as_ref().is_some_and(|m| m.iter().any(|&b| b));
    if any_missing {
        if marker.bytes().any(|b| b == b',' || b == b'\n' || b == b'\r') || marker.trim() != marker {
            return Err(invalid(path, format!("missing-value marker {marker:?} would not read back as one field")));
        }
        if marker.parse::<f32>().is_ok() {
            return Err(invalid(path, format!("missing-value marker {marker:?} is a number and would read back as data")));
        }
        if marker.is_empty() && n == 1 {
            return Err(invalid(path, "an empty missing-value marker cannot mark a sample of one variable (it would be a blank line)"));
        }
    }
    let mut out = String::with_capacity(ev.values.len() * 2 + 16);
    for (s, row) in ev.values.chunks_exact(n).enumerate() {
        for (v, &x) in row.iter().enumerate() {
            if v > 0 {
                out.push(',');
            }
            if ev.is_missing(s, v) {
                out.push_str(marker);
            } else if !x.is_finite() {
                return Err(DataError::NonFinite { path: path.to_path_buf(), sample: s, var: v });
            } else if x.fract() == 0.0 && x.abs() < 1e15 {
                // `as i64` also turns -0.0 into "0", which the integer reader accepts.
                let _ = write!(out, "{}", x as i64);
            } else if x != 0.0 && (x.abs() >= 1e15 || x.abs() < 1e-5) {
                let _ = write!(out, "{x:e}"); // shortest round-trip form, without 30 zeros
            } else {
                let _ = write!(out, "{x}"); // shortest round-trip form
            }
        }
        out.push('\n');
    }
    write_atomic(path, out.as_bytes())
}

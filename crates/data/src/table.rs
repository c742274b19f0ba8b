//! Reading delimited interaction tables with polars. Every column is read as text, so a bad cell becomes
//! a [`Error::BadId`] with its line number instead of a polars type-inference error.

use std::path::Path;

use polars::prelude::{CsvReadOptions, DataFrame, SerReader, StringChunked};

use crate::error::{Error, Result};

/// One interaction row: ids and the 1-based line of the file it came from (header = line 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    pub user: u32,
    pub item: u32,
    pub line: usize,
    /// MMRec `x_label` (0 train, 1 valid, 2 test); 0 when the table has no such column.
    pub split: u8,
}

/// The rows of a table, and the lines skipped because every id cell on them was empty.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    pub rows: Vec<Row>,
    /// Blank lines between data rows (polars reads a blank line as a row of nulls). Blank lines after the
    /// last data row are dropped without a mention.
    pub blank_lines: Vec<usize>,
}

/// Reads `userID`, `itemID` (and `x_label` when `with_split`) by name; other columns are ignored.
///
/// Line numbers assume one record per line, which holds for the id tables we read (no quoted newlines).
pub(crate) fn read_rows(path: &Path, separator: u8, with_split: bool) -> Result<Table> {
    // Open it ourselves first so that a missing file is an `Io` error carrying the OS reason.
    std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let csv_err = |e: polars::error::PolarsError| Error::Csv { path: path.to_path_buf(), message: e.to_string() };
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0)) // Some(0): every column is read as String.
        .with_raise_if_empty(false)
        .map_parse_options(|p| p.with_separator(separator))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .map_err(csv_err)?
        .finish()
        .map_err(csv_err)?;
    if df.width() == 0 {
        return Err(Error::Empty { path: path.to_path_buf() });
    }
    let users = column(&df, path, "userID")?;
    let items = column(&df, path, "itemID")?;
    let splits = if with_split { Some(column(&df, path, "x_label")?) } else { None };
    let mut rows = Vec::with_capacity(df.height());
    let mut blank_lines = Vec::new();
    let mut split_iter = splits.map(|s| s.iter());
    for (i, (u, it)) in users.iter().zip(items.iter()).enumerate() {
        let line = i + 2;
        let split_cell = split_iter.as_mut().and_then(|iter| iter.next().flatten());
        if u.is_none() && it.is_none() && split_cell.is_none() {
            blank_lines.push(line);
            continue;
        }
        let user = parse_id(path, line, "userID", u)?;
        let item = parse_id(path, line, "itemID", it)?;
        let split = if with_split { parse_split(path, line, split_cell)? } else { 0 };
        rows.push(Row { user, item, line, split });
    }
    let last_line = rows.last().map_or(0, |r| r.line);
    blank_lines.retain(|&l| l < last_line);
    if rows.is_empty() {
        return Err(Error::Empty { path: path.to_path_buf() });
    }
    Ok(Table { rows, blank_lines })
}

pub(crate) fn column<'a>(df: &'a DataFrame, path: &Path, name: &'static str) -> Result<&'a StringChunked> {
    let missing = || Error::MissingColumn {
        path: path.to_path_buf(),
        column: name,
        found: df.get_column_names().iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "),
    };
    let col = df.column(name).map_err(|_| missing())?;
    col.str().map_err(|e| Error::Csv { path: path.to_path_buf(), message: e.to_string() })
}

/// Parses a non-negative id below `u32::MAX` (so that `id + 1` still counts in `u32`).
pub(crate) fn parse_id(path: &Path, line: usize, column: &'static str, cell: Option<&str>) -> Result<u32> {
    let text = cell.unwrap_or("").trim();
    match text.parse::<i64>() {
        Ok(v) if v < 0 => Err(Error::NegativeId { path: path.to_path_buf(), line, column, found: text.to_string() }),
        Ok(v) if v < i64::from(u32::MAX) => Ok(v as u32),
        _ => Err(Error::BadId { path: path.to_path_buf(), line, column, found: text.to_string() }),
    }
}

fn parse_split(path: &Path, line: usize, cell: Option<&str>) -> Result<u8> {
    let text = cell.unwrap_or("").trim();
    match text {
        "0" => Ok(0),
        "1" => Ok(1),
        "2" => Ok(2),
        _ => Err(Error::BadSplitLabel { path: path.to_path_buf(), line, found: text.to_string() }),
    }
}

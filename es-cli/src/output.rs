//! Readable tables and JSON documents on standard output.

use std::io::Write as _;

use serde::Serialize;

use crate::error::CliError;

/// A table printed with aligned columns.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    #[must_use]
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per header; line breaks become spaces).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|cell| cell.replace(['\n', '\r', '\t'], " "))
                .collect(),
        );
    }

    /// The table as text, each column as wide as its widest cell.
    #[must_use]
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let headers = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                let pad = width - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        if self.rows.is_empty() {
            text.push_str("(none)\n");
        }
        text
    }

    /// Prints the table.
    ///
    /// # Errors
    ///
    /// When standard output cannot be written.
    pub fn print(&self) -> Result<(), CliError> {
        print(&self.render())
    }
}

/// Prints `text` as it is.
///
/// # Errors
///
/// When standard output cannot be written.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints `value` as one pretty JSON document.
///
/// # Errors
///
/// When standard output cannot be written.
pub fn json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    print(&format!("{text}\n"))
}

/// Prints `value` as one line of JSON.
///
/// # Errors
///
/// When standard output cannot be written.
pub fn json_line<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string(value).map_err(std::io::Error::other)?;
    print(&format!("{text}\n"))
}

/// `value`, or `-` when absent.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let mut table = Table::new(&["NAME", "N"]);
        table.row(vec!["orders".into(), "12".into()]);
        table.row(vec!["a\nb".into(), "3".into()]);
        assert_eq!(table.render(), "NAME    N\norders  12\na b     3\n");
    }
}

//! Where a problem is: byte offsets to line and column, dotted field paths to their span in
//! the TOML document, and the one error listing every problem of a file without a value.

use super::*;

/// 1-based line and column of a byte offset.
pub(super) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, col)
}

/// Turns problems into one error naming the file and, for each problem, line, column and
/// field — never the value (a pasted secret must not reach a terminal, a log or, in shared
/// mode, another uid's client).
pub(super) fn invalid(file: &Path, src: &str, mut problems: Vec<Problem>) -> Error {
    // In document order (tables are not visited in order); unlocated ones last.
    problems.sort_by_key(|p| p.at.unwrap_or(usize::MAX));
    let described: Vec<String> = problems
        .iter()
        .map(|p| {
            let mut s = String::new();
            if let Some(at) = p.at {
                let (line, col) = line_col(src, at);
                s.push_str(&format!("line {line}, column {col}: "));
            }
            if !p.field.is_empty() {
                s.push_str(&format!("field `{}`: ", p.field));
            }
            s.push_str(&p.message);
            s
        })
        .collect();
    let mut message = match described.as_slice() {
        [one] => one.clone(),
        many => format!("{} problems:\n  {}", many.len(), many.join("\n  ")),
    };
    if problems.len() >= MAX_PROBLEMS {
        message.push_str(&format!("\n  (stopped after {MAX_PROBLEMS} problems)"));
    }
    Error::InvalidConfig {
        file: file.to_path_buf(),
        message,
    }
}

/// A cross-field error as a [`Problem`], located at its field's key.
pub(super) fn locate(src: &str, fe: &FieldError) -> Problem {
    Problem {
        at: field_span(src, fe.field),
        field: fe.field.to_string(),
        message: fe.message.clone(),
    }
}

/// Locates a dotted field in the document (via toml's spanned parse) for a message.
pub(super) fn located_error(file: &Path, src: &str, fe: &FieldError) -> Error {
    invalid(file, src, vec![locate(src, fe)])
}

pub(super) fn field_span(src: &str, path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(src).ok()?;
    let mut table = doc.get_ref();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        if parts.peek().is_none() {
            return Some(key.span().start);
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return Some(key.span().start),
        }
    }
    None
}

/// How many problems one file reports before stopping (each costs a re-parse).
pub(super) const MAX_PROBLEMS: usize = 20;

/// One problem found in a config file: where (byte span), which field (dotted path) and what.
/// Never holds the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    /// Byte offset the problem is reported at, if known.
    pub(super) at: Option<usize>,
    /// Dotted field path, e.g. `role.arn` or `shared.allow[1].user`; empty for syntax errors.
    pub(super) field: String,
    /// What is wrong (no config values).
    pub(super) message: String,
}

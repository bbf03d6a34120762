//! Bundle entry names: a newtype that only holds a safe, flat name (no `/`, no `..`, no
//! control characters or terminal escapes), so a name can never leave a directory or forge a
//! log line.

use std::fmt;

use crate::Error;

pub const MAX_NAME: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryName(String);

impl EntryName {
    pub fn new(s: &str) -> Result<EntryName, Error> {
        let bad = |why: &str| Err(Error::BadEntry { name: escape(s), why: why.to_string() });
        if s.is_empty() {
            return bad("empty name");
        }
        if s.len() > MAX_NAME {
            return bad("name longer than 100 bytes");
        }
        if s == "." || s == ".." || s.starts_with('.') {
            return bad("name starts with `.`");
        }
        if s.contains('/') {
            return bad("name holds `/` (bundles are flat)");
        }
        if !s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._+-".contains(&c)) {
            return bad("name has characters outside A-Z a-z 0-9 . _ + -");
        }
        Ok(EntryName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Renders untrusted bytes for a message: printable ASCII as is, the rest escaped, at most 120
/// characters — never a newline or an escape sequence in a log.
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(120) {
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    if s.chars().count() > 120 {
        out.push('…');
    }
    out
}

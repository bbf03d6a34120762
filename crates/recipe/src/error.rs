//! Recipe and lock errors: every one names its file and, where it can, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a recipe or lock file, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// Turns a byte span start into line and column within `src`.
    pub fn from_offset(path: &Path, src: &str, offset: usize) -> Location {
        let offset = offset.min(src.len());
        let before = &src.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        Location { path: path.to_path_buf(), line, col }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.col)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, duplicate keys, unknown fields, wrong types.
    #[error("{at}: {message}")]
    Parse { at: Location, message: String },
    /// A value that parses but is not acceptable.
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    /// A required field that no file in the `extends` chain sets.
    #[error("{}: missing field `{field}`: set it in this recipe or in the recipe it extends", path.display())]
    Missing { path: PathBuf, field: &'static str },
    /// The lock does not belong to the recipe any more.
    #[error(
        "{}: lock is older than its recipe {}: {changes}. Resolve it again with `cargo xtask lock {}` (online); on an offline builder, run that and `cargo xtask fetch {}` then `cargo xtask store export DIR` on a connected machine, and `cargo xtask store import DIR` here",
        lock.display(), recipe.display(), recipe.display(), recipe.display()
    )]
    StaleLock { lock: PathBuf, recipe: PathBuf, changes: String },
    #[error("{}: no lock file: run `cargo xtask lock {}` (online, once) to resolve the recipe's packages", lock.display(), recipe.display())]
    NoLock { lock: PathBuf, recipe: PathBuf },
}

impl Error {
    /// The location, for errors that have one (tests assert on it).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Parse { at, .. } | Error::Invalid { at, .. } => Some(at),
            _ => None,
        }
    }
}

//! Build errors: each names the file, package or tool concerned and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Recipe(#[from] recipe::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Release(#[from] release::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {message}")]
    Tool { what: String, message: String },
    #[error("missing host tools: {}; run `cargo xtask deps` (as root) to install them", .0.join(", "))]
    MissingTools(Vec<String>),
    #[error("{}: {why}", path.display())]
    Overlay { path: PathBuf, why: String },
    #[error("{}", .0)]
    Invalid(String),
    /// A check refused the build's inputs or outputs (exit code 1).
    #[error("{}", .0)]
    Rejected(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

pub(crate) fn tool_err(what: impl Into<String>) -> impl FnOnce(xshell::Error) -> Error {
    let what = what.into();
    move |e| Error::Tool { what, message: e.to_string() }
}

//! The file side of trust and bundles, for the release engineer's tools (`cargo xtask`): the
//! `trust` and `bundle` crates do no I/O; this crate reads and writes their files.
//!
//! - `files`: opening untrusted files once, bounded reads, atomic writes;
//! - `sigfiles`: the detached signatures beside a file (`FILE.KEYID.minisig`);
//! - `fields`: product, version and channel of a build or bundle manifest (bounded);
//! - `policy`: the verifier's choice of trust policy (never the artefact's), and the rotation
//!   chain from version 1 kept in `history/`;
//! - `sign`, `verify`: one file, streamed;
//! - `assemble`: a bundle from a build directory, once its signatures meet the policy;
//! - `provenance`: DSSE signatures of the provenance statement, the envelope, its verification.

pub mod assemble;
pub mod fields;
pub mod files;
pub mod policy;
pub mod provenance;
pub mod sigfiles;
pub mod sign;
pub mod verify;

use std::path::{Path, PathBuf};

pub use assemble::{Assembled, BUNDLE_MANIFEST, assemble};
pub use fields::{Fields, Kind};
pub use policy::{Chain, LoadedPolicy, PolicySource, rotate};
pub use sign::sign_file;
pub use verify::{FileReport, verify_file};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A check failed: bad or missing signatures, a refused rotation, a dev key where a
    /// release belongs. Exit code 1.
    #[error("{0}")]
    Rejected(String),
    /// Bad input or a bad invocation. Exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_path_buf(), source }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Rejected(_) => 1,
            _ => 2,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

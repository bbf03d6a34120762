//! Update bundles (`NAME-VERSION.airlock`): a strict tar subset — signed manifest, its
//! signatures, zstd payloads — and the streaming reader that bounds every size before trusting
//! it and hands out payload bytes only after they matched the signed manifest. Pure: reads
//! `impl Read`, writes `impl Write`, no filesystem or network I/O of its own.

mod manifest;
mod name;
mod reader;
pub mod tar;
mod writer;

pub use manifest::{DEFAULT_CHUNK, FORMAT, MAX_MANIFEST, MAX_PAYLOAD_SIZE, MAX_PAYLOADS, Manifest, Payload, Target};
pub use name::{EntryName, escape};
pub use reader::{MANIFEST_ENTRY, MAX_SIGNATURES, MAX_WINDOW_LOG, PayloadReader, VerifiedBundle, open};
pub use writer::{ZSTD_LEVEL, ZSTD_WORKERS, compress_payload, write_bundle};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("truncated at byte {offset}: the bundle ends inside the {what}")]
    Truncated { offset: u64, what: String },
    #[error("tar header at byte {offset}: {why}")]
    Tar { offset: u64, why: String },
    #[error("entry `{name}`: {why}")]
    BadEntry { name: String, why: String },
    #[error("unexpected entry `{}` where `{}` belongs", escape(name), escape(expected))]
    Unexpected { name: String, expected: String },
    #[error("entry `{}` appears twice", escape(.0))]
    Duplicate(String),
    #[error("entry `{}` is not declared by the signed manifest", escape(.0))]
    Undeclared(String),
    #[error("{what} is {size} bytes, more than the {max} accepted")]
    TooLarge { what: String, size: u64, max: u64 },
    #[error("{what}: the signed manifest declares {declared} bytes, the bundle holds {actual}")]
    SizeMismatch { what: String, declared: u64, actual: u64 },
    #[error("{what}: {}", match chunk { Some(c) => format!("chunk {c} does not match its signed hash"), None => "does not match its signed sha256".to_string() })]
    HashMismatch { what: String, chunk: Option<usize> },
    #[error("{what}: corrupt compressed data: {why}")]
    Corrupt { what: String, why: String },
    #[error("{} byte(s) after the end of the bundle (from byte {offset})", 1)]
    TrailingData { offset: u64 },
    #[error("signatures do not meet the trust policy: {}", summary(.0))]
    Rejected(Box<trust::Report>),
    #[error("bundle is for product `{}`, this device is `{}`", escape(bundle), escape(device))]
    WrongProduct { bundle: String, device: String },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("read error: {0}")]
    Io(String),
}

fn summary(r: &trust::Report) -> String {
    let roles: Vec<String> =
        r.roles.iter().map(|x| format!("{} {}/{}", x.role.as_str(), x.valid, x.threshold)).collect();
    let reasons: Vec<String> =
        r.signers.iter().filter_map(|s| s.reason.as_ref().map(|why| format!("{}: {why}", escape(&s.file)))).collect();
    if r.signers.is_empty() {
        format!("no signatures ({})", roles.join(", "))
    } else if reasons.is_empty() {
        roles.join(", ")
    } else {
        format!("{} ({})", roles.join(", "), reasons.join("; "))
    }
}

impl Error {
    /// A stable reason code for audit records and `--json`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Truncated { .. } => "truncated",
            Error::Tar { .. } | Error::BadEntry { .. } => "bad-tar",
            Error::Unexpected { .. } | Error::Undeclared(_) => "undeclared-entry",
            Error::Duplicate(_) => "duplicate-entry",
            Error::TooLarge { .. } => "too-large",
            Error::SizeMismatch { .. } => "size-mismatch",
            Error::HashMismatch { .. } => "hash-mismatch",
            Error::Corrupt { .. } => "corrupt-payload",
            Error::TrailingData { .. } => "trailing-data",
            Error::Rejected(_) => "bad-signature",
            Error::WrongProduct { .. } => "wrong-product",
            Error::Manifest(_) => "bad-manifest",
            Error::Io(_) => "io",
        }
    }
}

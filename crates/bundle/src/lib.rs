//! Update bundles (`NAME-VERSION.airlock`): a strict tar subset — signed manifest, its
//! signatures, zstd payloads — and the streaming reader that bounds every size before trusting
//! it and hands out payload bytes only after they matched the signed manifest. Pure: reads
//! `impl Read`, writes `impl Write`, no filesystem or network I/O of its own.

mod kinds;
mod manifest;
mod name;
mod reader;
mod report;
pub mod tar;
mod verity;
mod writer;

pub use kinds::{INITRD_FILE, KERNEL_FILE, PAYLOAD_KINDS, PayloadKind, Placement, boot_files, esp_name, kind};
pub use manifest::{
    DEFAULT_CHUNK, FORMAT, MAX_CMDLINE, MAX_MANIFEST, MAX_PAYLOAD_SIZE, MAX_PAYLOADS, MIN_FORMAT, Manifest, PROVENANCE,
    Payload, Target, valid_cmdline,
};
pub use name::{EntryName, escape};
pub use reader::{
    MANIFEST_ENTRY, MAX_SIGNATURES, MAX_WINDOW_LOG, PayloadReader, VerifiedBundle, open, statement_names,
};
pub use report::{
    BundleFacts, MAX_SIGNER_LINES, RoleLine, SignerLine, VerifyReport, roles_line, signer_lines, verify_stream,
};
pub use verity::{
    HASHOFFSET_WORD, ROOTHASH_WORD, VERITY_BLOCK, VERITY_FILE, VERITY_HASH, Verity, check as check_verity,
    cmdline_words, is_verity_word, max_tree_size, slot_cmdline,
};
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
    #[error("{count} {what}, more than the {max} accepted")]
    TooMany { what: String, count: u64, max: u64 },
    #[error("{what}: the signed manifest declares {declared} bytes, the bundle holds {actual}")]
    SizeMismatch { what: String, declared: u64, actual: u64 },
    #[error("{what}: {}", match chunk { Some(c) => format!("chunk {c} does not match its signed hash"), None => "does not match its signed sha256".to_string() })]
    HashMismatch { what: String, chunk: Option<usize> },
    #[error("{what}: corrupt compressed data: {why}")]
    Corrupt { what: String, why: String },
    #[error("data after the end of the bundle (from byte {offset}): a bundle ends at its end-of-archive marker")]
    TrailingData { offset: u64 },
    #[error("signatures do not meet the trust policy: {}", summary(.0))]
    Rejected(Box<trust::Report>),
    #[error("the provenance's DSSE signatures do not meet the trust policy: {}", summary(.0))]
    ProvenanceRejected(Box<trust::Report>),
    #[error("the provenance statement does not describe this bundle's image (no subject has sha256 {image})")]
    ProvenanceElsewhere { image: String },
    #[error("bundle is for product `{}`, this device is `{}`", escape(bundle), escape(device))]
    WrongProduct { bundle: String, device: String },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("payload `{}` is empty: a bundle installs something or is refused", escape(.0))]
    EmptyPayload(String),
    #[error("read error: {0}")]
    Io(String),
}

fn summary(r: &trust::Report) -> String {
    let roles = report::roles_line(r);
    let reasons: Vec<String> =
        r.signers().iter().filter_map(|s| s.reason.as_ref().map(|why| format!("{}: {why}", escape(&s.file)))).collect();
    if r.signers().is_empty() {
        format!("no signatures ({roles})")
    } else if reasons.is_empty() {
        roles
    } else {
        format!("{roles} ({})", reasons.join("; "))
    }
}

/// An enum of stable codes, its `ALL` list and its names from one table: a variant cannot be
/// left out of the list that README's and SECURITY.md's tests walk (no hand list to forget).
#[macro_export]
macro_rules! stable_codes {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $code:literal,)* }) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every code, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The stable name (audit records, `--json`, README).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)*
                }
            }
        }
    };
}

stable_codes! {
    /// Why a bundle was refused, as a stable code for audit records and `--json` (README lists
    /// each one).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Code {
        Truncated => "truncated",
        BadTar => "bad-tar",
        UndeclaredEntry => "undeclared-entry",
        DuplicateEntry => "duplicate-entry",
        TooLarge => "too-large",
        SizeMismatch => "size-mismatch",
        HashMismatch => "hash-mismatch",
        CorruptPayload => "corrupt-payload",
        TrailingData => "trailing-data",
        BadSignature => "bad-signature",
        WrongProduct => "wrong-product",
        BadManifest => "bad-manifest",
        EmptyPayload => "empty-payload",
        Io => "io",
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The stable reason code of this refusal.
    pub fn code(&self) -> Code {
        match self {
            Error::Truncated { .. } => Code::Truncated,
            Error::Tar { .. } | Error::BadEntry { .. } => Code::BadTar,
            Error::Unexpected { .. } | Error::Undeclared(_) => Code::UndeclaredEntry,
            Error::Duplicate(_) => Code::DuplicateEntry,
            Error::TooMany { .. } => Code::TooLarge,
            Error::TooLarge { .. } => Code::TooLarge,
            Error::SizeMismatch { .. } => Code::SizeMismatch,
            Error::HashMismatch { .. } | Error::ProvenanceElsewhere { .. } => Code::HashMismatch,
            Error::Corrupt { .. } => Code::CorruptPayload,
            Error::TrailingData { .. } => Code::TrailingData,
            Error::Rejected(_) | Error::ProvenanceRejected(_) => Code::BadSignature,
            Error::WrongProduct { .. } => Code::WrongProduct,
            Error::Manifest(_) => Code::BadManifest,
            Error::EmptyPayload(_) => Code::EmptyPayload,
            Error::Io(_) => Code::Io,
        }
    }
}

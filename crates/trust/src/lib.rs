//! The trust layer: minisign-format ed25519 keys and signatures, the trust policy with m-of-n
//! roles, revocation and rotation. Pure: it reads from `&str` and `impl Read`, never from the
//! filesystem or the network, and no decision depends on a clock. Making keys and signatures
//! sits behind the `sign` feature, which the on-device agent does not link.
//!
//! The code that decides whether bytes are trusted is `SignatureFile::verify` (sig.rs) and
//! `Policy::verify` / `Policy::require` (policy.rs).

pub mod dsse;
mod key;
mod policy;
mod sig;
#[cfg(feature = "sign")]
mod signing;

pub use key::{KeyId, MAX_KEY_FILE, PublicKey};
pub use policy::{
    Accepted, DEV_PUBLIC_KEY, Expect, MAX_KEYS_PER_ROLE, MAX_POLICY_FILE, Policy, PolicyKey, Rejected, Report, Role,
    RolePolicy, RoleReport, SignerReport, dev_approval_public_key, dev_public_key, is_dev_key,
};
pub use product::Channel;
pub use sig::{MAX_SIG_FILE, MAX_TRUSTED_COMMENT, Prehash, SignatureFile};
#[cfg(feature = "sign")]
pub use signing::{DEFAULT_MEMLIMIT, DEFAULT_OPSLIMIT, Kdf, SecretKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("key {0} is a weak (small-order or all-zero) ed25519 public key: refused")]
    WeakKey(KeyId),
    #[error("malleable signature: {0}")]
    Malleable(String),
    #[error("signature by key {0} does not match the file (wrong file, or file or signature altered)")]
    BadSignature(KeyId),
    #[error("trusted comment of the signature by key {0} was altered (global signature does not match)")]
    BadTrustedComment(KeyId),
    #[error("signature was made by key {signed_by}, not by key {key}")]
    KeyMismatch { signed_by: KeyId, key: KeyId },
    #[error("key {0} is not in the trust policy")]
    UnknownKey(KeyId),
    #[error("key {0} is revoked by the trust policy")]
    Revoked(KeyId),
    #[error("the INSECURE dev key is never trusted by a release policy")]
    DevKeyInRelease,
    #[error("trust policy: {0}")]
    Policy(String),
    #[error("rotation refused: {0}")]
    Rotation(String),
    #[error("{0}")]
    Expectation(String),
    #[error("this secret key is encrypted: give its passphrase")]
    PassphraseNeeded,
    #[error("wrong passphrase for this secret key")]
    WrongPassphrase,
}

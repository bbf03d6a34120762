//! Public keys in minisign's format (`Ed` + key id + ed25519 key), so the stock `minisign`
//! tool verifies with Airlock's keys and the other way round. Secret keys are in `signing.rs`,
//! behind the `sign` feature.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::VerifyingKey;

use crate::Error;

/// Largest key file accepted, in bytes (a minisign key file is under 400).
pub const MAX_KEY_FILE: usize = 4096;

pub(crate) const SIG_ALG: [u8; 2] = *b"Ed";

/// The 8-byte key id minisign puts in keys and signatures, shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub(crate) [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl KeyId {
    pub const fn new(bytes: [u8; 8]) -> KeyId {
        KeyId(bytes)
    }

    pub fn bytes(&self) -> [u8; 8] {
        self.0
    }

    pub fn parse_hex(s: &str) -> Option<KeyId> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(|v| KeyId(v.to_le_bytes()))
    }
}

/// A public key that passed every check: right length, decodable point, not of small order.
/// Its identity is its 32 key bytes; the id is only a label that minisign puts beside it.
#[derive(Clone, Copy)]
pub struct PublicKey {
    pub(crate) id: KeyId,
    pub(crate) key: VerifyingKey,
}

/// Two public keys are the same key when their key bytes are equal, whatever their ids.
impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.key.as_bytes() == other.key.as_bytes()
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

/// The text lines of a small file: the length is bounded before anything else is looked at.
pub(crate) fn bounded_lines(text: &str, max: usize, what: &str) -> Result<Vec<String>, Error> {
    if text.len() > max {
        return Err(Error::Malformed(format!("{what} is {} bytes, more than the {max} a {what} can be", text.len())));
    }
    Ok(text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect())
}

pub(crate) fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>, Error> {
    B64.decode(s.trim()).map_err(|e| Error::Malformed(format!("{what} is not valid base64: {e}")))
}

impl PublicKey {
    /// The 8-byte label minisign writes beside the key and into each signature.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key itself: what identifies it.
    pub fn bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The same key under another id (a key can be listed under an alias).
    pub fn with_id(&self, id: KeyId) -> PublicKey {
        PublicKey { id, key: self.key }
    }

    /// Verifies a plain ed25519 signature over `msg` (DSSE envelopes): canonical S, strict.
    pub fn verify_raw(&self, msg: &[u8], sig: &[u8; 64]) -> Result<(), Error> {
        if !crate::sig::s_is_canonical(&sig[32..]) {
            return Err(Error::Malleable(format!("signature of key {} has S ≥ L (non-canonical, malleable)", self.id)));
        }
        let s = ed25519_dalek::Signature::from_bytes(sig);
        self.key.verify_strict(msg, &s).map_err(|_| Error::BadSignature(self.id))
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Parses the base64 line of a public key (`RWQ…`): 42 bytes, `Ed`, key id, key.
    pub fn from_base64(s: &str) -> Result<PublicKey, Error> {
        let raw = decode_b64(s, "public key")?;
        if raw.len() != 42 {
            return Err(Error::Malformed(format!("public key is {} bytes, a minisign public key is 42", raw.len())));
        }
        if raw[..2] != SIG_ALG {
            return Err(Error::Malformed("public key algorithm is not Ed (ed25519)".into()));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&raw[10..42]);
        Self::from_parts(KeyId(id), &pk)
    }

    pub fn from_parts(id: KeyId, pk: &[u8; 32]) -> Result<PublicKey, Error> {
        if pk.iter().all(|&b| b == 0) {
            return Err(Error::WeakKey(id));
        }
        let key = VerifyingKey::from_bytes(pk)
            .map_err(|_| Error::Malformed(format!("public key {id} is not a valid ed25519 point")))?;
        if key.is_weak() {
            return Err(Error::WeakKey(id));
        }
        Ok(PublicKey { id, key })
    }

    /// Parses a public key file as `minisign -G` writes it (comment line, base64 line).
    pub fn parse(text: &str) -> Result<PublicKey, Error> {
        let lines = bounded_lines(text, MAX_KEY_FILE, "public key file")?;
        let b64 = match lines.as_slice() {
            [c, k, ..] if c.starts_with("untrusted comment:") => k,
            // The key line alone (blank lines after it allowed).
            [k, rest @ ..] if rest.iter().all(|l| l.is_empty()) => k,
            _ => {
                return Err(Error::Malformed(
                    "a public key file is an `untrusted comment:` line and a base64 line".into(),
                ));
            }
        };
        Self::from_base64(b64)
    }

    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(&SIG_ALG);
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(self.key.as_bytes());
        B64.encode(raw)
    }

    /// The public key file text, as minisign writes it.
    pub fn to_file(&self) -> String {
        format!("untrusted comment: minisign public key {}\n{}\n", self.id, self.to_base64())
    }
}

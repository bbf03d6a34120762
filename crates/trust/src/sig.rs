//! Detached signatures in minisign's prehashed format (`ED`): an ed25519 signature over the
//! BLAKE2b-512 of the file, and a global signature over that signature and the trusted
//! comment. Verified with `verify_strict`: no small-order keys or R, no S ≥ L.

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signature as EdSignature;
#[cfg(feature = "sign")]
use ed25519_dalek::Signer;

use crate::Error;
use crate::key::{KeyId, PublicKey, bounded_lines, decode_b64};
#[cfg(feature = "sign")]
use crate::signing::SecretKey;

/// Largest signature file accepted, in bytes.
pub const MAX_SIG_FILE: usize = 4096;
/// Largest trusted comment accepted, in bytes (minisign's own limit is 1024).
pub const MAX_TRUSTED_COMMENT: usize = 1024;

const ALG_PREHASHED: [u8; 2] = *b"ED";
const ALG_LEGACY: [u8; 2] = *b"Ed";

/// The group order L of ed25519, little-endian: a canonical S is below it.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

pub(crate) fn s_is_canonical(s: &[u8]) -> bool {
    // Compare little-endian numbers from the most significant byte down.
    for i in (0..32).rev() {
        if s[i] != L[i] {
            return s[i] < L[i];
        }
    }
    false
}

/// A parsed signature file; not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    key_id: KeyId,
    signature: [u8; 64],
    trusted_comment: String,
    global_signature: [u8; 64],
}

/// BLAKE2b-512 of a message, streamed: the prehash minisign signs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Prehash(pub [u8; 64]);

impl std::fmt::Debug for Prehash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prehash({})", hex::encode(&self.0[..8]))
    }
}

impl Prehash {
    pub fn of_reader(mut r: impl Read) -> std::io::Result<Prehash> {
        let mut st = blake2b_simd::State::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            st.update(&buf[..n]);
        }
        let mut out = [0u8; 64];
        out.copy_from_slice(st.finalize().as_bytes());
        Ok(Prehash(out))
    }

    pub fn of_bytes(b: &[u8]) -> Prehash {
        let mut out = [0u8; 64];
        out.copy_from_slice(blake2b_simd::blake2b(b).as_bytes());
        Prehash(out)
    }
}

fn sig64(raw: &[u8], what: &str) -> Result<[u8; 64], Error> {
    raw.try_into().map_err(|_| Error::Malformed(format!("{what} is {} bytes, an ed25519 signature is 64", raw.len())))
}

impl SignatureFile {
    /// The key id the signature names (a label: the key is found by the verifier's policy).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// The same signature under another key id label (tests of aliasing: the id is not signed).
    pub fn relabelled(&self, id: KeyId) -> SignatureFile {
        SignatureFile { key_id: id, ..self.clone() }
    }

    /// The raw signature and global signature, for tests that build hostile variants.
    pub fn signature(&self) -> [u8; 64] {
        self.signature
    }

    pub fn global_signature(&self) -> [u8; 64] {
        self.global_signature
    }

    /// A signature file from its parts (nothing is checked until [`SignatureFile::verify`]).
    pub fn from_parts(key_id: KeyId, signature: [u8; 64], trusted_comment: &str, global_signature: [u8; 64]) -> Self {
        SignatureFile { key_id, signature, trusted_comment: trusted_comment.to_string(), global_signature }
    }

    /// Parses a signature file's bytes: bounded first, then UTF-8, then the four lines.
    pub fn parse_bytes(bytes: &[u8]) -> Result<SignatureFile, Error> {
        if bytes.len() > MAX_SIG_FILE {
            return Err(Error::Malformed(format!(
                "signature file is {} bytes, more than the {MAX_SIG_FILE} a signature file can be",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::Malformed(format!("signature file is not UTF-8 text (byte {})", e.valid_up_to())))?;
        SignatureFile::parse(text)
    }

    pub fn parse(text: &str) -> Result<SignatureFile, Error> {
        let lines = bounded_lines(text, MAX_SIG_FILE, "signature file")?;
        if !text.ends_with('\n') {
            return Err(Error::Malformed("signature file is truncated (no final newline)".into()));
        }
        let (sig_line, tc_line, global_line) = match lines.as_slice() {
            [c, s, t, g, rest @ ..] if c.starts_with("untrusted comment:") && rest.iter().all(|l| l.is_empty()) => {
                (s, t, g)
            }
            _ => {
                return Err(Error::Malformed(
                    "a signature file has 4 lines: untrusted comment, signature, trusted comment, global signature"
                        .into(),
                ));
            }
        };
        let raw = decode_b64(sig_line, "signature")?;
        if raw.len() != 74 {
            return Err(Error::Malformed(format!("signature is {} bytes, a minisign signature is 74", raw.len())));
        }
        if raw[..2] == ALG_LEGACY {
            return Err(Error::Malformed(
                "legacy (not prehashed) signature: it needs the whole file in memory; sign again with minisign 0.8 or later (prehashed is its default)".into(),
            ));
        }
        if raw[..2] != ALG_PREHASHED {
            return Err(Error::Malformed("signature algorithm is not ED (ed25519 over BLAKE2b-512)".into()));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let signature = sig64(&raw[10..74], "signature")?;
        let trusted_comment = tc_line
            .strip_prefix("trusted comment: ")
            .ok_or_else(|| Error::Malformed("third line must start with `trusted comment: `".into()))?
            .to_string();
        if trusted_comment.len() > MAX_TRUSTED_COMMENT {
            return Err(Error::Malformed(format!("trusted comment longer than {MAX_TRUSTED_COMMENT} bytes")));
        }
        let global_signature = sig64(&decode_b64(global_line, "global signature")?, "global signature")?;
        Ok(SignatureFile { key_id: KeyId::new(id), signature, trusted_comment, global_signature })
    }

    /// Verifies against `key` and the message's prehash: the signature and the global
    /// signature over signature + trusted comment, both with `verify_strict`.
    pub fn verify(&self, key: &PublicKey, prehash: &Prehash) -> Result<(), Error> {
        if self.key_id != key.id() {
            return Err(Error::KeyMismatch { signed_by: self.key_id, key: key.id() });
        }
        for (s, what) in [(&self.signature, "signature"), (&self.global_signature, "global signature")] {
            if !s_is_canonical(&s[32..]) {
                return Err(Error::Malleable(format!(
                    "{what} of key {} has S ≥ L (non-canonical, malleable)",
                    self.key_id
                )));
            }
        }
        let sig = EdSignature::from_bytes(&self.signature);
        key.verifying_key().verify_strict(&prehash.0, &sig).map_err(|_| Error::BadSignature(self.key_id))?;
        let mut global_msg = Vec::with_capacity(64 + self.trusted_comment.len());
        global_msg.extend_from_slice(&self.signature);
        global_msg.extend_from_slice(self.trusted_comment.as_bytes());
        let global = EdSignature::from_bytes(&self.global_signature);
        key.verifying_key().verify_strict(&global_msg, &global).map_err(|_| Error::BadTrustedComment(self.key_id))?;
        Ok(())
    }

    /// Signs a prehash with `key`, binding `trusted_comment` (no newlines).
    #[cfg(feature = "sign")]
    pub fn sign(key: &SecretKey, prehash: &Prehash, trusted_comment: &str) -> Result<SignatureFile, Error> {
        if trusted_comment.contains(['\n', '\r']) || trusted_comment.len() > MAX_TRUSTED_COMMENT {
            return Err(Error::Malformed("trusted comment must be one line of at most 1024 bytes".into()));
        }
        let signature = key.signing.sign(&prehash.0).to_bytes();
        let mut global_msg = Vec::with_capacity(64 + trusted_comment.len());
        global_msg.extend_from_slice(&signature);
        global_msg.extend_from_slice(trusted_comment.as_bytes());
        let global_signature = key.signing.sign(&global_msg).to_bytes();
        Ok(SignatureFile {
            key_id: key.id(),
            signature,
            trusted_comment: trusted_comment.to_string(),
            global_signature,
        })
    }

    pub fn to_file(&self) -> String {
        let mut raw = Vec::with_capacity(74);
        raw.extend_from_slice(&ALG_PREHASHED);
        raw.extend_from_slice(&self.key_id.bytes());
        raw.extend_from_slice(&self.signature);
        format!(
            "untrusted comment: signature from airlock secret key {}\n{}\ntrusted comment: {}\n{}\n",
            self.key_id,
            B64.encode(raw),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }

    /// `key=value` fields of the trusted comment (`airlock product=… version=… role=…`).
    pub fn comment_field(&self, key: &str) -> Option<&str> {
        self.trusted_comment.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }
}

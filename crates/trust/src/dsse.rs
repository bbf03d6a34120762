//! DSSE, the Dead Simple Signing Envelope (in-toto's signature wrapper): a payload, its type,
//! and signatures that are plain ed25519 over the pre-authentication encoding
//! `DSSEv1 SP LEN(type) SP type SP LEN(payload) SP payload`. Airlock signs provenance this way
//! with the same keys and policy as its manifests; the key id is the minisign key id in hex.
//! The JSON form is read and written by the callers; this module holds the bytes that are
//! signed and checked.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::Error;

/// The payload type of an in-toto Statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// Largest envelope payload accepted (a provenance statement is a few KiB).
pub const MAX_PAYLOAD: usize = 4 << 20;
/// Largest envelope read (its payload at the bound is a third larger in base64).
pub const MAX_ENVELOPE: usize = 2 * MAX_PAYLOAD;
/// Most signatures one envelope carries.
pub const MAX_ENVELOPE_SIGNATURES: usize = 16;

/// One signature of an envelope: `keyid` (16 hex digits) and `sig` (standard base64).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub keyid: String,
    pub sig: String,
}

/// DSSE's pre-authentication encoding: what a signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    m.extend_from_slice(payload);
    m
}

pub(crate) fn decode_sig(s: &str) -> Result<[u8; 64], Error> {
    let raw = B64.decode(s.trim()).map_err(|e| Error::Malformed(format!("DSSE signature is not base64: {e}")))?;
    raw.try_into().map_err(|r: Vec<u8>| Error::Malformed(format!("DSSE signature is {} bytes, ed25519 is 64", r.len())))
}

/// A key id as a message shows it (untrusted: escaped and cut).
pub(crate) fn shown(s: &str) -> String {
    s.chars().take(32).flat_map(char::escape_default).collect()
}

/// Signs `payload` of `payload_type` with `key`: the envelope signature.
#[cfg(feature = "sign")]
pub fn sign(key: &crate::SecretKey, payload_type: &str, payload: &[u8]) -> Signature {
    Signature { keyid: key.id().to_string(), sig: B64.encode(key.sign_raw(&pae(payload_type, payload))) }
}

/// A DSSE envelope as in-toto tools read it (`{"payload", "payloadType", "signatures"}`, in
/// that order, which is also the order of sorted keys).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Envelope {
    /// The payload, standard base64.
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

impl Envelope {
    pub fn new(payload_type: &str, payload: &[u8], signatures: Vec<Signature>) -> Envelope {
        Envelope { payload: B64.encode(payload), payload_type: payload_type.to_string(), signatures }
    }

    /// The payload's bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, Error> {
        B64.decode(self.payload.trim()).map_err(|e| Error::Malformed(format!("DSSE payload is not base64: {e}")))
    }

    /// An envelope's JSON read back, bounded and strict (the one reader of the format: the
    /// release tools' `verify`, the agent's kept provenance): at most [`MAX_ENVELOPE`] bytes,
    /// [`MAX_ENVELOPE_SIGNATURES`] signatures and a payload of [`MAX_PAYLOAD`]; no unknown
    /// field. Returns the envelope and its payload's bytes.
    pub fn parse(text: &[u8]) -> Result<(Envelope, Vec<u8>), Error> {
        if text.len() > MAX_ENVELOPE {
            return Err(Error::Malformed(format!(
                "the envelope is {} bytes, more than the {MAX_ENVELOPE} accepted",
                text.len()
            )));
        }
        let env: Envelope =
            serde_json::from_slice(text).map_err(|e| Error::Malformed(format!("not a DSSE envelope: {e}")))?;
        if env.signatures.len() > MAX_ENVELOPE_SIGNATURES {
            return Err(Error::Malformed(format!(
                "{} signatures, at most {MAX_ENVELOPE_SIGNATURES}",
                env.signatures.len()
            )));
        }
        let payload = env.payload_bytes()?;
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::Malformed(format!(
                "the payload is {} bytes, more than the {MAX_PAYLOAD} accepted",
                payload.len()
            )));
        }
        Ok((env, payload))
    }
}

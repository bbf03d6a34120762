//! Secret keys in minisign's format, optionally encrypted with scrypt as `minisign -G` writes
//! them. Only the signing tools compile this (the `sign` feature); the agent never links it.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;

use crate::Error;
use crate::key::{KeyId, MAX_KEY_FILE, PublicKey, SIG_ALG, bounded_lines, decode_b64};

const KDF_SCRYPT: [u8; 2] = *b"Sc";
const KDF_NONE: [u8; 2] = [0, 0];
const CHK_ALG: [u8; 2] = *b"B2";
const SK_BLOB_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 104;

/// minisign's scrypt cost (libsodium's "sensitive" limits): N = 2^20, r = 8, p = 1, 1 GiB.
pub const DEFAULT_OPSLIMIT: u64 = 33_554_432;
pub const DEFAULT_MEMLIMIT: u64 = 1_073_741_824;

/// A secret key, decrypted. Never printed: `Debug` shows the key id only.
pub struct SecretKey {
    id: KeyId,
    pub(crate) signing: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, redacted)", self.id)
    }
}

/// How a new secret key file is protected.
#[derive(Debug, Clone, Copy)]
pub struct Kdf<'a> {
    pub passphrase: &'a [u8],
    pub salt: [u8; 32],
    pub opslimit: u64,
    pub memlimit: u64,
}

/// libsodium's `pickparams`: scrypt (log2 N, r, p) from minisign's opslimit and memlimit.
fn scrypt_params(opslimit: u64, memlimit: u64) -> Result<(u8, u32, u32), Error> {
    let opslimit = opslimit.max(32_768);
    let r: u64 = 8;
    let (n_log2, p);
    // The smallest n ≥ 1 with 2^n > max_n / 2 (libsodium's loop), at most 63: one more than
    // the highest set bit of max_n / 2. Written with the bit count, not a loop, so that no
    // mutant of a loop bound is left equivalent.
    let pick = |max_n: u64| -> u8 { (u64::BITS - (max_n / 2).leading_zeros()).clamp(1, 63) as u8 };
    if opslimit < memlimit / 32 {
        p = 1;
        n_log2 = pick(opslimit / (r * 4));
    } else {
        n_log2 = pick(memlimit / (r * 128));
        let maxrp = ((opslimit / 4) / (1u64 << n_log2)).min(0x3fff_ffff);
        p = maxrp / r;
    }
    // Refuse what would need more than 4 GiB or absurd time: a hostile key file must not
    // make the tool allocate without bound.
    if n_log2 > 22 || p == 0 || p > 16 {
        return Err(Error::Malformed(format!(
            "secret key asks for scrypt N=2^{n_log2}, p={p}: outside the accepted range"
        )));
    }
    Ok((n_log2, r as u32, p as u32))
}

fn scrypt_stream(passphrase: &[u8], salt: &[u8], opslimit: u64, memlimit: u64) -> Result<[u8; 104], Error> {
    let (log_n, r, p) = scrypt_params(opslimit, memlimit)?;
    let params = scrypt::Params::new(log_n, r, p).map_err(|_| Error::Malformed("invalid scrypt parameters".into()))?;
    let mut out = [0u8; 104];
    scrypt::scrypt(passphrase, salt, &params, &mut out).map_err(|_| Error::Malformed("scrypt failed".into()))?;
    Ok(out)
}

fn checksum(id: &KeyId, sk: &[u8; 64]) -> [u8; 32] {
    let mut st = blake2b_simd::Params::new().hash_length(32).to_state();
    st.update(&SIG_ALG);
    st.update(&id.0);
    st.update(sk);
    let mut out = [0u8; 32];
    out.copy_from_slice(st.finalize().as_bytes());
    out
}

impl SecretKey {
    /// The key id written into the key file and every signature it makes.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The same key under another id: the id is a label, the key stays the key (used to show
    /// that a relabelled key is still recognised by its bytes).
    pub fn with_id(&self, id: KeyId) -> SecretKey {
        SecretKey { id, signing: self.signing.clone() }
    }

    /// A new key from 32 random bytes and an 8-byte random key id (the caller brings the
    /// randomness: this crate does no I/O).
    pub fn from_seed(seed: [u8; 32], id: [u8; 8]) -> SecretKey {
        SecretKey { id: KeyId(id), signing: SigningKey::from_bytes(&seed) }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { id: self.id, key: self.signing.verifying_key() }
    }

    /// A plain ed25519 signature over `msg` (DSSE envelopes; minisign files use [`crate::SignatureFile`]).
    pub fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(msg).to_bytes()
    }

    /// Whether a secret key file is passphrase-protected, without decrypting it.
    pub fn is_encrypted(text: &str) -> Result<bool, Error> {
        let raw = Self::blob(text)?;
        Ok(raw[2..4] == KDF_SCRYPT)
    }

    fn blob(text: &str) -> Result<Vec<u8>, Error> {
        let lines = bounded_lines(text, MAX_KEY_FILE, "secret key file")?;
        let b64 = match lines.as_slice() {
            [c, k, ..] if c.starts_with("untrusted comment:") => k,
            _ => {
                return Err(Error::Malformed(
                    "a secret key file is an `untrusted comment:` line and a base64 line".into(),
                ));
            }
        };
        let raw = decode_b64(b64, "secret key")?;
        if raw.len() != SK_BLOB_LEN {
            return Err(Error::Malformed(format!(
                "secret key is {} bytes, a minisign secret key is {SK_BLOB_LEN}",
                raw.len()
            )));
        }
        if raw[..2] != SIG_ALG || raw[4..6] != CHK_ALG {
            return Err(Error::Malformed("secret key algorithm is not Ed with a B2 checksum".into()));
        }
        if raw[2..4] != KDF_SCRYPT && raw[2..4] != KDF_NONE {
            return Err(Error::Malformed("secret key KDF is neither scrypt nor none".into()));
        }
        Ok(raw)
    }

    /// Reads a secret key file; `passphrase` is needed when it is encrypted.
    pub fn parse(text: &str, passphrase: Option<&[u8]>) -> Result<SecretKey, Error> {
        let raw = Self::blob(text)?;
        let mut keynum = [0u8; 104];
        keynum.copy_from_slice(&raw[54..158]);
        if raw[2..4] == KDF_SCRYPT {
            let pass = passphrase.ok_or(Error::PassphraseNeeded)?;
            let ops = u64::from_le_bytes(raw[38..46].try_into().map_err(|_| Error::Malformed("opslimit".into()))?);
            let mem = u64::from_le_bytes(raw[46..54].try_into().map_err(|_| Error::Malformed("memlimit".into()))?);
            let stream = scrypt_stream(pass, &raw[6..38], ops, mem)?;
            for (k, s) in keynum.iter_mut().zip(stream.iter()) {
                *k ^= s;
            }
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&keynum[..8]);
        let id = KeyId(id);
        let mut sk = [0u8; 64];
        sk.copy_from_slice(&keynum[8..72]);
        // minisign 0.11 writes no checksum (all zeros) for a key made with `-W` (no password);
        // such a key is still checked below: its secret half must give its public half.
        let unchecked = raw[2..4] == KDF_NONE && keynum[72..104].iter().all(|&b| b == 0);
        if !unchecked && checksum(&id, &sk) != keynum[72..104] {
            return Err(if raw[2..4] == KDF_SCRYPT {
                Error::WrongPassphrase
            } else {
                Error::Malformed("secret key checksum does not match".into())
            });
        }
        let signing = SigningKey::from_keypair_bytes(&sk)
            .map_err(|_| Error::Malformed("secret and public halves of the key disagree".into()))?;
        Ok(SecretKey { id, signing })
    }

    /// The secret key file text (encrypted when `kdf` is given), readable by `minisign -S`.
    pub fn to_file(&self, kdf: Option<Kdf<'_>>) -> Result<String, Error> {
        let mut sk = [0u8; 64];
        sk[..32].copy_from_slice(&self.signing.to_bytes());
        sk[32..].copy_from_slice(self.signing.verifying_key().as_bytes());
        let mut keynum = [0u8; 104];
        keynum[..8].copy_from_slice(&self.id.0);
        keynum[8..72].copy_from_slice(&sk);
        keynum[72..].copy_from_slice(&checksum(&self.id, &sk));
        let mut raw = Vec::with_capacity(SK_BLOB_LEN);
        raw.extend_from_slice(&SIG_ALG);
        match kdf {
            Some(k) => {
                raw.extend_from_slice(&KDF_SCRYPT);
                raw.extend_from_slice(&CHK_ALG);
                raw.extend_from_slice(&k.salt);
                raw.extend_from_slice(&k.opslimit.to_le_bytes());
                raw.extend_from_slice(&k.memlimit.to_le_bytes());
                let stream = scrypt_stream(k.passphrase, &k.salt, k.opslimit, k.memlimit)?;
                for (b, s) in keynum.iter_mut().zip(stream.iter()) {
                    *b ^= s;
                }
            }
            None => {
                raw.extend_from_slice(&KDF_NONE);
                raw.extend_from_slice(&CHK_ALG);
                raw.extend_from_slice(&[0u8; 48]);
            }
        }
        raw.extend_from_slice(&keynum);
        let comment =
            if kdf.is_some() { "minisign encrypted secret key" } else { "minisign secret key (not encrypted)" };
        Ok(format!("untrusted comment: {comment}\n{}\n", B64.encode(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::scrypt_params;

    /// libsodium's pickparams, worked by hand for each case (r is always 8).
    #[test]
    fn scrypt_parameters_follow_libsodium_and_are_bounded() {
        type Params = Option<(u8, u32, u32)>;
        let cases: &[(u64, u64, Params)] = &[
            // minisign's defaults ("sensitive"): N = 2^20, p = 1.
            (33_554_432, 1 << 30, Some((20, 8, 1))),
            // "interactive".
            (524_288, 1 << 24, Some((14, 8, 1))),
            // opslimit below 32768 is raised to it; then the opslimit branch: N = 32768/32 → 2^10.
            (1000, 1 << 30, Some((10, 8, 1))),
            (1 << 24, 1 << 40, Some((19, 8, 1))),
            (33_554_432, 1 << 40, Some((20, 8, 1))),
            // memlimit branch: N from memory, p from what time is left.
            (1 << 22, 1 << 24, Some((14, 8, 8))),
            (1 << 23, 1 << 24, Some((14, 8, 16))),
            (8_912_896, 1 << 24, None), // p = 17: refused
            (67_108_864, 1 << 31, Some((21, 8, 1))),
            (1 << 27, 1 << 32, Some((22, 8, 1))),
            (1 << 28, 1 << 33, None), // N = 2^23: refused
        ];
        for &(ops, mem, want) in cases {
            assert_eq!(scrypt_params(ops, mem).ok(), want, "opslimit {ops}, memlimit {mem}");
        }
    }

    /// libsodium's own loop, the judge of the bit-count form: every power of two and its
    /// neighbours, in both branches.
    #[test]
    fn n_is_what_libsodiums_loop_gives() {
        let pick = |max_n: u64| -> u8 {
            let mut n = 1u8;
            while n < 63 {
                if (1u64 << n) > max_n / 2 {
                    break;
                }
                n += 1;
            }
            n
        };
        let reference = |ops: u64, mem: u64| {
            let ops = ops.max(32_768);
            if ops < mem / 32 {
                (pick(ops / 32), 1)
            } else {
                let n = pick(mem / 1024);
                (n, ((ops / 4) / (1u64 << n)).min(0x3fff_ffff) / 8)
            }
        };
        for k in 0..64u32 {
            for v in [1u64 << k, (1u64 << k).saturating_sub(1), (1u64 << k).saturating_add(1)] {
                for (ops, mem) in [(v, u64::MAX), (1 << 40, v.max(1))] {
                    let (n, p) = reference(ops, mem);
                    let want = (n <= 22 && p != 0 && p <= 16).then_some((n, 8, p as u32));
                    assert_eq!(scrypt_params(ops, mem).ok(), want, "opslimit {ops}, memlimit {mem}");
                }
            }
        }
    }
}

//! Integration tests of the trust layer: the "Keys and signatures" corpus of SECURITY.md, each case
//! asserting its exact error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bounds;
mod dsse;
mod policy;
mod roles;
mod sig;

use trust::{KeyId, Policy, Prehash, PublicKey, SecretKey, SignatureFile};

/// A deterministic test key.
pub fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32], [n, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, n])
}

pub fn sign(k: &SecretKey, msg: &[u8], comment: &str) -> String {
    SignatureFile::sign(k, &Prehash::of_bytes(msg), comment).unwrap().to_file()
}

pub fn policy_text(channel: &str, version: u64, threshold: i64, keys: &[&PublicKey], revoked: &[KeyId]) -> String {
    let keys: Vec<String> =
        keys.iter().enumerate().map(|(i, k)| format!("{{ name = \"k{i}\", key = \"{}\" }}", k.to_base64())).collect();
    let revoked: Vec<String> = revoked.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "version = {version}\nchannel = \"{channel}\"\nrevoked = [{}]\n\n[release]\nthreshold = {threshold}\nkeys = [{}]\n",
        revoked.join(", "),
        keys.join(", ")
    )
}

pub fn policy(threshold: i64, keys: &[&PublicKey]) -> Policy {
    Policy::parse(&policy_text("release", 1, threshold, keys, &[])).unwrap()
}

#[test]
fn a_passwordless_minisign_key_without_a_checksum_loads_only_if_its_halves_agree() {
    // keys/dev/dev-approval.key was made by `minisign -G -W` (0.11): its checksum is all zeros.
    let text = include_str!("../../../../keys/dev/dev-approval.key");
    let k = trust::SecretKey::parse(text, None).unwrap();
    assert_eq!(k.public(), trust::dev_approval_public_key());
    assert!(trust::is_dev_key(&k.public()));
    // The same blob with one bit of the public half flipped is refused.
    let lines: Vec<&str> = text.lines().collect();
    let mut raw = base64_decode(lines[1]);
    raw[54 + 8 + 40] ^= 1;
    let bad = format!("{}\n{}\n", lines[0], base64_encode(&raw));
    assert!(trust::SecretKey::parse(&bad, None).is_err());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn a_passwordless_key_whose_checksum_is_wrong_is_refused_even_when_its_halves_agree() {
    // keys/dev/dev.key has no passphrase and carries its checksum.
    let text = include_str!("../../../../keys/dev/dev.key");
    trust::SecretKey::parse(text, None).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut raw = base64_decode(lines[1]);
    assert_eq!(&raw[2..4], [0, 0], "no KDF");
    assert!(raw[54 + 72..54 + 104].iter().any(|&b| b != 0), "a checksum is present");
    raw[54 + 72 + 5] ^= 1;
    let bad = format!("{}\n{}\n", lines[0], base64_encode(&raw));
    assert_eq!(
        trust::SecretKey::parse(&bad, None).unwrap_err().to_string(),
        "malformed: secret key checksum does not match"
    );
}

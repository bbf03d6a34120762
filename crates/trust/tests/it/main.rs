//! Integration tests of the trust layer: the "Keys and signatures" corpus of SECURITY.md, each case
//! asserting its exact error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

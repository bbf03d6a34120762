//! The trust policy (`keys/trust.toml`): roles with keys and m-of-n thresholds, revoked keys,
//! and rotation to version N+1 signed by a threshold of version N's release keys. No check
//! depends on a clock.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::Error;
use crate::key::{KeyId, PublicKey};
use crate::sig::{Prehash, SignatureFile};

/// Largest policy file accepted, in bytes; most keys per role.
pub const MAX_POLICY_FILE: usize = 64 * 1024;
pub const MAX_KEYS_PER_ROLE: usize = 64;

/// The INSECURE development public key committed under `keys/dev/`: never trusted by a
/// release policy.
pub const DEV_PUBLIC_KEY: &str = include_str!("../../../keys/dev/dev.pub");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Release,
    Approval,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Release => "release",
            Role::Approval => "approval",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChannel {
    Dev,
    Release,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: u64,
    channel: String,
    #[serde(default)]
    revoked: Vec<String>,
    release: RawRole,
    approval: Option<RawRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    threshold: i64,
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePolicy {
    pub threshold: usize,
    /// Distinct keys (by ed25519 key bytes), each with the names it was listed under.
    pub keys: Vec<(PublicKey, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub version: u64,
    pub channel: PolicyChannel,
    pub revoked: BTreeSet<KeyId>,
    pub release: RolePolicy,
    pub approval: Option<RolePolicy>,
}

fn dev_key() -> Option<PublicKey> {
    PublicKey::parse(DEV_PUBLIC_KEY).ok()
}

fn role(raw: RawRole, name: &str, revoked: &BTreeSet<KeyId>) -> Result<RolePolicy, Error> {
    if raw.keys.len() > MAX_KEYS_PER_ROLE {
        return Err(Error::Policy(format!("role `{name}` lists {} keys, at most {MAX_KEYS_PER_ROLE}", raw.keys.len())));
    }
    let mut keys: Vec<(PublicKey, Vec<String>)> = Vec::new();
    for k in raw.keys {
        let pk = PublicKey::from_base64(&k.key)
            .map_err(|e| Error::Policy(format!("role `{name}`, key `{}`: {e}", k.name)))?;
        if revoked.contains(&pk.id) {
            return Err(Error::Policy(format!(
                "role `{name}` lists key `{}` ({}), which this policy revokes",
                k.name, pk.id
            )));
        }
        // A key counts once, however often and under whatever names or ids it is listed.
        match keys.iter_mut().find(|(p, _)| p.key == pk.key) {
            Some((_, names)) => names.push(k.name),
            None => keys.push((pk, vec![k.name])),
        }
    }
    let threshold = usize::try_from(raw.threshold)
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| Error::Policy(format!("role `{name}`: threshold {} must be at least 1", raw.threshold)))?;
    if threshold > keys.len() {
        return Err(Error::Policy(format!(
            "role `{name}`: threshold {threshold} is more than its {} distinct key(s): it could never be met",
            keys.len()
        )));
    }
    Ok(RolePolicy { threshold, keys })
}

impl Policy {
    pub fn parse(text: &str) -> Result<Policy, Error> {
        if text.len() > MAX_POLICY_FILE {
            return Err(Error::Policy(format!("policy is {} bytes, at most {MAX_POLICY_FILE}", text.len())));
        }
        let raw: RawPolicy = toml::from_str(text).map_err(|e| Error::Policy(e.to_string().trim().to_string()))?;
        let channel = match raw.channel.as_str() {
            "dev" => PolicyChannel::Dev,
            "release" => PolicyChannel::Release,
            other => {
                return Err(Error::Policy(format!("channel `{}`: use \"dev\" or \"release\"", other.escape_debug())));
            }
        };
        let mut revoked = BTreeSet::new();
        for r in &raw.revoked {
            revoked.insert(KeyId::parse_hex(r).ok_or_else(|| {
                Error::Policy(format!("revoked `{}` is not a 16-hex-digit key id", r.escape_debug()))
            })?);
        }
        let release = role(raw.release, "release", &revoked)?;
        let approval = raw.approval.map(|a| role(a, "approval", &revoked)).transpose()?;
        let policy = Policy { version: raw.version, channel, revoked, release, approval };
        if channel == PolicyChannel::Release
            && let Some(dev) = dev_key()
            && policy.roles().any(|(_, r)| r.keys.iter().any(|(k, _)| k.key == dev.key))
        {
            return Err(Error::DevKeyInRelease);
        }
        Ok(policy)
    }

    pub fn roles(&self) -> impl Iterator<Item = (Role, &RolePolicy)> {
        std::iter::once((Role::Release, &self.release)).chain(self.approval.as_ref().map(|a| (Role::Approval, a)))
    }

    /// The roles a key id holds, and its key.
    pub fn find(&self, id: KeyId) -> Option<(PublicKey, Vec<Role>)> {
        let mut found = None;
        let mut roles = Vec::new();
        for (role, r) in self.roles() {
            if let Some((k, _)) = r.keys.iter().find(|(k, _)| k.id == id) {
                found = Some(*k);
                roles.push(role);
            }
        }
        found.map(|k| (k, roles))
    }

    /// Checks every signature and each role's threshold. Never fails early: the report says
    /// per signer what was verified and what was not.
    pub fn verify(&self, prehash: &Prehash, signatures: &[(String, &str)], expect: &Expect<'_>) -> Report {
        let mut signers = Vec::new();
        let mut counted: BTreeMap<Role, BTreeSet<[u8; 32]>> = BTreeMap::new();
        for (name, text) in signatures {
            let mut s =
                SignerReport { file: name.clone(), key_id: None, roles: Vec::new(), verified: false, reason: None };
            let result = SignatureFile::parse(text).and_then(|sig| {
                s.key_id = Some(sig.key_id);
                if self.revoked.contains(&sig.key_id) {
                    return Err(Error::Revoked(sig.key_id));
                }
                if self.channel == PolicyChannel::Release && dev_key().is_some_and(|d| d.id == sig.key_id) {
                    return Err(Error::DevKeyInRelease);
                }
                let (key, roles) = self.find(sig.key_id).ok_or(Error::UnknownKey(sig.key_id))?;
                sig.verify(&key, prehash)?;
                expect.check(&sig)?;
                if let Some(claimed) = sig.comment_field("role")
                    && !roles.iter().any(|r| r.as_str() == claimed)
                {
                    return Err(Error::Expectation(format!(
                        "signature claims role `{claimed}`, but key {} holds no such role",
                        sig.key_id
                    )));
                }
                Ok((key, roles))
            });
            match result {
                Ok((key, roles)) => {
                    for r in &roles {
                        counted.entry(*r).or_default().insert(key.key.to_bytes());
                    }
                    s.roles = roles;
                    s.verified = true;
                }
                Err(e) => s.reason = Some(e.to_string()),
            }
            signers.push(s);
        }
        let roles: Vec<RoleReport> = self
            .roles()
            .map(|(role, r)| {
                let valid = counted.get(&role).map_or(0, BTreeSet::len);
                RoleReport { role, threshold: r.threshold, valid, met: valid >= r.threshold }
            })
            .collect();
        let accepted = roles.iter().all(|r| r.met);
        Report { signers, roles, accepted }
    }

    /// Accepts `new_text` as the next policy: version exactly one more, signed by a threshold
    /// of this policy's release keys (keys the new policy revokes do not count).
    pub fn rotate(&self, new_text: &str, signatures: &[(String, &str)]) -> Result<Policy, Error> {
        let new = Policy::parse(new_text)?;
        if new.version == self.version {
            return Err(Error::Rotation(format!("new policy repeats version {}", self.version)));
        }
        if new.version != self.version + 1 {
            return Err(Error::Rotation(format!(
                "new policy is version {}, expected {} (versions cannot be skipped or go back)",
                new.version,
                self.version + 1
            )));
        }
        if new.channel != self.channel {
            return Err(Error::Rotation("a rotation cannot change the policy's channel".into()));
        }
        let mut signing_policy = self.clone();
        signing_policy.approval = None;
        signing_policy.revoked.extend(new.revoked.iter().copied());
        signing_policy.release.keys.retain(|(k, _)| !new.revoked.contains(&k.id));
        let report = signing_policy.verify(&Prehash::of_bytes(new_text.as_bytes()), signatures, &Expect::default());
        let valid = report.roles.first().map_or(0, |r| r.valid);
        if valid < self.release.threshold {
            return Err(Error::Rotation(format!(
                "new policy is signed by {valid} of version {}'s release keys, its threshold is {}",
                self.version, self.release.threshold
            )));
        }
        Ok(new)
    }
}

/// What the trusted comment must say (empty fields are not checked).
#[derive(Debug, Default, Clone, Copy)]
pub struct Expect<'a> {
    pub product: Option<&'a str>,
    pub version: Option<&'a str>,
}

impl Expect<'_> {
    fn check(&self, sig: &SignatureFile) -> Result<(), Error> {
        for (k, want) in [("product", self.product), ("version", self.version)] {
            if let Some(want) = want {
                let got = sig.comment_field(k).unwrap_or("");
                if got != want {
                    return Err(Error::Expectation(format!("trusted comment says {k}={got:?}, expected {want:?}")));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerReport {
    pub file: String,
    pub key_id: Option<KeyId>,
    pub roles: Vec<Role>,
    pub verified: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleReport {
    pub role: Role,
    pub threshold: usize,
    /// Distinct keys of this role with a valid signature.
    pub valid: usize,
    pub met: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub signers: Vec<SignerReport>,
    pub roles: Vec<RoleReport>,
    pub accepted: bool,
}

//! The trust policy (`keys/trust.toml`): who may sign what. Roles — `release` (the vendor's
//! signers) and `approval` (the asset owner's) — each hold keys and an m-of-n threshold.
//! The rules, each enforced once, in [`Policy::parse`]:
//! - a key is its 32 key bytes; an id is a label that names one key: one id naming two
//!   different keys is refused, naming both entries;
//! - a key holds one role at most, so vendor release and owner approval stay two parties;
//! - revoked keys (by id or by key) hold no role; a release policy never holds the dev key.
//!
//! A signature counts for a role only when it verifies under that role's own key; no check
//! depends on a clock. Rotation to version N+1 needs a threshold of version N's release keys.

use std::collections::{BTreeMap, BTreeSet};

use product::Channel;
use serde::Deserialize;

use crate::Error;
use crate::key::{KeyId, PublicKey};
use crate::sig::{Prehash, SignatureFile};

/// Largest policy file accepted, in bytes; most keys per role.
pub const MAX_POLICY_FILE: usize = 64 * 1024;
pub const MAX_KEYS_PER_ROLE: usize = 64;

/// The INSECURE development public key committed under `keys/dev/`: never trusted by a
/// release policy, recognised by its key bytes.
pub const DEV_PUBLIC_KEY: &str = include_str!("../../../keys/dev/dev.pub");

/// The dev key, parsed.
pub fn dev_public_key() -> PublicKey {
    match PublicKey::parse(DEV_PUBLIC_KEY) {
        Ok(k) => k,
        // The file is committed and checked by a test; an unparsable one is a build defect.
        Err(e) => panic!("keys/dev/dev.pub is not a public key: {e}"),
    }
}

/// The INSECURE development approval key (the "asset owner" of dev builds and dev site
/// profiles), committed beside the dev key and refused by release policies just the same.
pub const DEV_APPROVAL_PUBLIC_KEY: &str = include_str!("../../../keys/dev/dev-approval.pub");

/// The dev approval key, parsed.
pub fn dev_approval_public_key() -> PublicKey {
    match PublicKey::parse(DEV_APPROVAL_PUBLIC_KEY) {
        Ok(k) => k,
        Err(e) => panic!("keys/dev/dev-approval.pub is not a public key: {e}"),
    }
}

/// True when `key` is one of the INSECURE dev keys (compared by key bytes, never by id).
pub fn is_dev_key(key: &PublicKey) -> bool {
    *key == dev_public_key() || *key == dev_approval_public_key()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Release,
    Approval,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Release, Role::Approval];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Release => "release",
            Role::Approval => "approval",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: u64,
    channel: Channel,
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

/// One distinct key of a role, with every id and name it was listed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyKey {
    public: PublicKey,
    ids: Vec<KeyId>,
    names: Vec<String>,
}

impl PolicyKey {
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
    pub fn ids(&self) -> &[KeyId] {
        &self.ids
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePolicy {
    threshold: usize,
    keys: Vec<PolicyKey>,
}

impl RolePolicy {
    pub fn threshold(&self) -> usize {
        self.threshold
    }
    /// Distinct keys (by key bytes).
    pub fn keys(&self) -> &[PolicyKey] {
        &self.keys
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    version: u64,
    channel: Channel,
    revoked_ids: BTreeSet<KeyId>,
    revoked_keys: Vec<PublicKey>,
    release: RolePolicy,
    approval: Option<RolePolicy>,
}

/// Where an entry was listed, for messages: ``release` entry `vendor-1``.
fn entry(role: Role, name: &str) -> String {
    format!("`{role}` entry `{}`", name.escape_debug())
}

fn parse_role(raw: RawRole, role: Role, policy: &Policy) -> Result<RolePolicy, Error> {
    if raw.keys.len() > MAX_KEYS_PER_ROLE {
        return Err(Error::Policy(format!("role `{role}` lists {} keys, at most {MAX_KEYS_PER_ROLE}", raw.keys.len())));
    }
    let mut keys: Vec<PolicyKey> = Vec::new();
    for k in raw.keys {
        let pk = PublicKey::from_base64(&k.key).map_err(|e| Error::Policy(format!("{}: {e}", entry(role, &k.name))))?;
        if policy.is_revoked(&pk) {
            return Err(Error::Policy(format!(
                "{} ({}) is a key this policy revokes: remove it from the role",
                entry(role, &k.name),
                pk.id()
            )));
        }
        // A key counts once, however often and under whatever names or ids it is listed.
        match keys.iter_mut().find(|p| p.public == pk) {
            Some(p) => {
                if !p.ids.contains(&pk.id()) {
                    p.ids.push(pk.id());
                }
                p.names.push(k.name);
            }
            None => keys.push(PolicyKey { public: pk, ids: vec![pk.id()], names: vec![k.name] }),
        }
    }
    let threshold = usize::try_from(raw.threshold)
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| Error::Policy(format!("role `{role}`: threshold {} must be at least 1", raw.threshold)))?;
    if threshold > keys.len() {
        return Err(Error::Policy(format!(
            "role `{role}`: threshold {threshold} is more than its {} distinct key(s): it could never be met",
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
        let mut policy = Policy {
            version: raw.version,
            channel: raw.channel,
            revoked_ids: BTreeSet::new(),
            revoked_keys: Vec::new(),
            release: RolePolicy { threshold: 0, keys: Vec::new() },
            approval: None,
        };
        for r in &raw.revoked {
            if let Some(id) = KeyId::parse_hex(r) {
                policy.revoked_ids.insert(id);
            } else if let Ok(k) = PublicKey::from_base64(r) {
                policy.revoked_keys.push(k);
            } else {
                return Err(Error::Policy(format!(
                    "revoked `{}` is neither a 16-hex-digit key id nor a public key (`RWQ…`)",
                    r.escape_debug()
                )));
            }
        }
        policy.release = parse_role(raw.release, Role::Release, &policy)?;
        policy.approval = raw.approval.map(|a| parse_role(a, Role::Approval, &policy)).transpose()?;

        // One id names one key; one key holds one role.
        let mut by_id: BTreeMap<KeyId, (Role, &PolicyKey, &str)> = BTreeMap::new();
        let mut by_key: Vec<(Role, &PolicyKey)> = Vec::new();
        for (role, r) in policy.roles() {
            for k in &r.keys {
                let name = k.names[0].as_str();
                for id in &k.ids {
                    if let Some((other_role, other, other_name)) = by_id.get(id)
                        && other.public != k.public
                    {
                        return Err(Error::Policy(format!(
                            "key id {id} names two different keys: {} and {}; a key is its key bytes, so each key needs its own id (`cargo xtask keygen` makes a new one)",
                            entry(*other_role, other_name),
                            entry(role, name)
                        )));
                    }
                    by_id.entry(*id).or_insert((role, k, name));
                }
                if let Some((other_role, other)) = by_key.iter().find(|(_, o)| o.public == k.public) {
                    return Err(Error::Policy(format!(
                        "{} and {} are the same key: a key holds one role, so that vendor release and owner approval stay two parties",
                        entry(*other_role, &other.names[0]),
                        entry(role, &k.names[0])
                    )));
                }
                by_key.push((role, k));
            }
        }
        if policy.channel == Channel::Release && policy.trusts_dev_key() {
            return Err(Error::DevKeyInRelease);
        }
        Ok(policy)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn channel(&self) -> Channel {
        self.channel
    }

    pub fn role(&self, role: Role) -> Option<&RolePolicy> {
        match role {
            Role::Release => Some(&self.release),
            Role::Approval => self.approval.as_ref(),
        }
    }

    pub fn roles(&self) -> impl Iterator<Item = (Role, &RolePolicy)> {
        std::iter::once((Role::Release, &self.release)).chain(self.approval.as_ref().map(|a| (Role::Approval, a)))
    }

    /// Revoked key ids and revoked keys.
    pub fn revoked(&self) -> (&BTreeSet<KeyId>, &[PublicKey]) {
        (&self.revoked_ids, &self.revoked_keys)
    }

    pub fn is_revoked(&self, key: &PublicKey) -> bool {
        self.revoked_ids.contains(&key.id()) || self.revoked_keys.contains(key)
    }

    /// True when any role holds the INSECURE dev key (only a dev policy may).
    pub fn trusts_dev_key(&self) -> bool {
        self.roles().any(|(_, r)| r.keys.iter().any(|k| is_dev_key(&k.public)))
    }

    /// The role and key a signature's key id names (ids are unique across the policy).
    fn key_for_id(&self, id: KeyId) -> Option<(Role, &PolicyKey)> {
        self.roles().find_map(|(role, r)| r.keys.iter().find(|k| k.ids.contains(&id)).map(|k| (role, k)))
    }

    /// Why a signature that names no key of this policy is refused: a revoked key, the dev
    /// key under a release policy (both recognised by verifying under their key bytes), or a
    /// stranger.
    fn unknown(&self, sig: &SignatureFile, prehash: &Prehash) -> Error {
        let id = sig.key_id();
        let made_by = |k: &PublicKey| sig.verify(&k.with_id(id), prehash).is_ok();
        if self.revoked_keys.iter().any(made_by) {
            Error::Revoked(id)
        } else if self.channel == Channel::Release
            && (made_by(&dev_public_key()) || made_by(&dev_approval_public_key()))
        {
            Error::DevKeyInRelease
        } else {
            Error::UnknownKey(id)
        }
    }

    fn check_one<'p>(
        &'p self,
        text: &[u8],
        prehash: &Prehash,
        expect: &Expect<'_>,
        key_id: &mut Option<KeyId>,
    ) -> Result<(Role, &'p PolicyKey), Error> {
        let sig = SignatureFile::parse_bytes(text)?;
        let id = sig.key_id();
        *key_id = Some(id);
        if self.revoked_ids.contains(&id) {
            return Err(Error::Revoked(id));
        }
        let Some((role, key)) = self.key_for_id(id) else {
            return Err(self.unknown(&sig, prehash));
        };
        // Verified under this role's own key: the id only told us which one to try.
        sig.verify(&key.public.with_id(id), prehash)?;
        expect.check(&sig)?;
        if let Some(claimed) = sig.comment_field("role")
            && claimed != role.as_str()
        {
            return Err(Error::Expectation(format!(
                "signature claims role `{}`, but key {id} holds the `{role}` role in this policy",
                claimed.escape_debug()
            )));
        }
        Ok((role, key))
    }

    /// Checks every signature and each role's threshold. Never fails early: the report says
    /// per signer what was verified and what was not.
    pub fn verify<N: AsRef<str>, B: AsRef<[u8]>>(
        &self,
        prehash: &Prehash,
        signatures: &[(N, B)],
        expect: &Expect<'_>,
    ) -> Report {
        self.tally(signatures.iter().map(|(file, text)| {
            let mut key_id = None;
            let r = self.check_one(text.as_ref(), prehash, expect, &mut key_id);
            (file.as_ref().to_string(), key_id, r)
        }))
    }

    /// Checks the signatures of a DSSE envelope (ed25519 over the pre-authentication encoding
    /// of `payload_type` and `payload`), each named by its key id, and each role's threshold:
    /// the same policy, roles and counting as minisign-format signatures.
    pub fn verify_dsse(&self, payload_type: &str, payload: &[u8], signatures: &[crate::dsse::Signature]) -> Report {
        let msg = crate::dsse::pae(payload_type, payload);
        self.tally(signatures.iter().enumerate().map(|(i, s)| {
            let file = format!("signature {i} (keyid {})", crate::dsse::shown(&s.keyid));
            let id = KeyId::parse_hex(&s.keyid);
            let r = (|| {
                let id = id.ok_or_else(|| Error::Malformed("keyid is not 16 hex digits".into()))?;
                let sig = crate::dsse::decode_sig(&s.sig)?;
                if self.revoked_ids.contains(&id) {
                    return Err(Error::Revoked(id));
                }
                let Some((role, key)) = self.key_for_id(id) else {
                    let made_by = |k: &PublicKey| k.verify_raw(&msg, &sig).is_ok();
                    return Err(if self.revoked_keys.iter().any(made_by) {
                        Error::Revoked(id)
                    } else if self.channel == Channel::Release
                        && (made_by(&dev_public_key()) || made_by(&dev_approval_public_key()))
                    {
                        Error::DevKeyInRelease
                    } else {
                        Error::UnknownKey(id)
                    });
                };
                key.public.with_id(id).verify_raw(&msg, &sig)?;
                Ok((role, key))
            })();
            (file, id, r)
        }))
    }

    /// Counts what verified, per role: a key counts once per role, whatever ids or files its
    /// signatures come in.
    fn tally<'p>(
        &'p self,
        items: impl Iterator<Item = (String, Option<KeyId>, Result<(Role, &'p PolicyKey), Error>)>,
    ) -> Report {
        let mut signers = Vec::new();
        let mut counted: BTreeMap<Role, BTreeSet<[u8; 32]>> = BTreeMap::new();
        for (file, key_id, r) in items {
            let mut s = SignerReport { file, key_id, role: None, key_name: None, reason: None };
            match r {
                Ok((role, key)) => {
                    counted.entry(role).or_default().insert(key.public.bytes());
                    s.role = Some(role);
                    s.key_name = key.names.first().cloned();
                }
                Err(e) => s.reason = Some(e.to_string()),
            }
            signers.push(s);
        }
        let roles = self
            .roles()
            .map(|(role, r)| {
                let valid = counted.get(&role).map_or(0, BTreeSet::len);
                RoleReport { role, threshold: r.threshold, valid, met: valid >= r.threshold }
            })
            .collect();
        Report { signers, roles }
    }

    /// Verifies and decides: [`Accepted`] only when every role's threshold is met.
    pub fn require<N: AsRef<str>, B: AsRef<[u8]>>(
        &self,
        prehash: &Prehash,
        signatures: &[(N, B)],
        expect: &Expect<'_>,
    ) -> Result<Accepted, Rejected> {
        let report = self.verify(prehash, signatures, expect);
        if report.roles.iter().all(|r| r.met) { Ok(Accepted(report)) } else { Err(Rejected(report)) }
    }

    /// Verifies a DSSE envelope's signatures and decides, as [`Policy::require`] does for
    /// minisign signatures: [`Accepted`] only when every role's threshold is met.
    pub fn require_dsse(
        &self,
        payload_type: &str,
        payload: &[u8],
        signatures: &[crate::dsse::Signature],
    ) -> Result<Accepted, Rejected> {
        let report = self.verify_dsse(payload_type, payload, signatures);
        if report.roles.iter().all(|r| r.met) { Ok(Accepted(report)) } else { Err(Rejected(report)) }
    }

    /// Verifies and decides for one role alone (a site profile: the asset owner's `approval`
    /// role): [`Accepted`] only when that role exists and its threshold is met. Signatures by
    /// other roles' keys are reported but never count for it.
    pub fn require_role<N: AsRef<str>, B: AsRef<[u8]>>(
        &self,
        role: Role,
        prehash: &Prehash,
        signatures: &[(N, B)],
        expect: &Expect<'_>,
    ) -> Result<Accepted, Rejected> {
        let mut report = self.verify(prehash, signatures, expect);
        report.roles.retain(|r| r.role == role);
        if report.roles.first().is_some_and(|r| r.met) { Ok(Accepted(report)) } else { Err(Rejected(report)) }
    }

    /// Accepts `new_text` as the next policy: version exactly one more, same channel, signed by
    /// a threshold of this policy's release keys (keys the new policy revokes do not count).
    pub fn rotate<N: AsRef<str>, B: AsRef<[u8]>>(
        &self,
        new_text: &str,
        signatures: &[(N, B)],
    ) -> Result<Policy, Error> {
        let new = Policy::parse(new_text)?;
        if new.version == self.version {
            return Err(Error::Rotation(format!("new policy repeats version {}", self.version)));
        }
        if Some(new.version) != self.version.checked_add(1) {
            return Err(Error::Rotation(format!(
                "new policy is version {}, expected {} (versions cannot be skipped or go back)",
                new.version,
                self.version.saturating_add(1)
            )));
        }
        if new.channel != self.channel {
            return Err(Error::Rotation("a rotation cannot change the policy's channel".into()));
        }
        let mut signing = self.clone();
        signing.approval = None;
        signing.revoked_ids.extend(new.revoked_ids.iter().copied());
        signing.revoked_keys.extend(new.revoked_keys.iter().copied());
        signing
            .release
            .keys
            .retain(|k| !new.is_revoked(&k.public) && !k.ids.iter().any(|i| new.revoked_ids.contains(i)));
        let report = signing.verify(&Prehash::of_bytes(new_text.as_bytes()), signatures, &Expect::default());
        let valid = report.role(Role::Release).map_or(0, |r| r.valid);
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
                    return Err(Error::Expectation(format!(
                        "trusted comment says {k}={:?}, expected {want:?}",
                        got.escape_debug().to_string()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// One signature file: which key and role it counted for, or why it did not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerReport {
    pub file: String,
    pub key_id: Option<KeyId>,
    /// The role it counted for (`None` when it did not count).
    pub role: Option<Role>,
    /// The policy's name for the key.
    pub key_name: Option<String>,
    pub reason: Option<String>,
}

impl SignerReport {
    pub fn verified(&self) -> bool {
        self.role.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleReport {
    pub role: Role,
    pub threshold: usize,
    /// Distinct keys of this role with a valid signature.
    pub valid: usize,
    pub met: bool,
}

/// The outcome of [`Policy::verify`]: only this crate makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    signers: Vec<SignerReport>,
    roles: Vec<RoleReport>,
}

impl Report {
    pub fn signers(&self) -> &[SignerReport] {
        &self.signers
    }
    pub fn roles(&self) -> &[RoleReport] {
        &self.roles
    }
    pub fn role(&self, role: Role) -> Option<&RoleReport> {
        self.roles.iter().find(|r| r.role == role)
    }
    /// Every role's threshold met.
    pub fn accepted(&self) -> bool {
        self.roles.iter().all(|r| r.met)
    }
    /// `release 2/2 met; approval 0/1 not met`.
    pub fn summary(&self) -> String {
        self.roles
            .iter()
            .map(|r| format!("{} {}/{} {}", r.role, r.valid, r.threshold, if r.met { "met" } else { "not met" }))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Signatures that met every role's threshold. Made only by [`Policy::require`].
#[derive(Debug, Clone)]
pub struct Accepted(Report);

impl Accepted {
    pub fn report(&self) -> &Report {
        &self.0
    }
}

/// Signatures that did not.
#[derive(Debug, Clone)]
pub struct Rejected(Report);

impl Rejected {
    pub fn report(&self) -> &Report {
        &self.0
    }
    pub fn into_report(self) -> Report {
        self.0
    }
}

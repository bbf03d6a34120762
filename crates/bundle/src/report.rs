//! The one report of a bundle verification, shared by `cargo xtask verify X.airlock` and the
//! agent's `sideload verify` (text and `--json`): what was checked, by which policy, who
//! signed, and either what the bundle is or why it was refused. Every string that came from
//! the bundle is escaped before it lands here.

use std::io::Read;

use serde::Serialize;
use trust::{Expect, Policy, Report};

use crate::{Error, escape};

/// Signature lines shown in text (JSON has them all).
pub const MAX_SIGNER_LINES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignerLine {
    pub file: String,
    pub key_id: Option<String>,
    pub role: Option<String>,
    pub key_name: Option<String>,
    pub verified: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleLine {
    pub role: String,
    pub threshold: usize,
    pub valid: usize,
    pub met: bool,
}

/// What a verified bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleFacts {
    pub product: String,
    pub version: String,
    pub security_version: u64,
    pub channel: String,
    /// `sha256:…` of the signed manifest bytes.
    pub manifest: String,
    /// Uncompressed payload bytes checked chunk by chunk (0 when payloads were not read).
    pub payload_bytes: u64,
    /// The provenance statement's DSSE signatures, per role (`release 2/2, approval 1/1`),
    /// once it was read and they met the policy; `None` when the bundle carries none.
    pub provenance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub file: String,
    /// Where the trust policy came from (the verifier's choice, never the bundle's).
    pub policy: String,
    pub policy_version: u64,
    /// How the verifier's policy is reached from version 1 (when the verifier checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_chain: Option<String>,
    /// The policy trusts the INSECURE dev key: the result proves nothing about who built it.
    pub insecure_dev_key: bool,
    /// The verdict, made only from the parts below: the whole bundle read to its end and
    /// checked, and no refusal recorded ([`VerifyReport::accepted`]).
    accepted: bool,
    /// Every chunk and the end of the bundle were read and checked.
    #[serde(skip)]
    finished: bool,
    /// Stable reason code when refused.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub bundle: Option<BundleFacts>,
    pub signers: Vec<SignerLine>,
    pub roles: Vec<RoleLine>,
}

pub fn signer_lines(r: &Report) -> (Vec<SignerLine>, Vec<RoleLine>) {
    let signers = r
        .signers()
        .iter()
        .map(|s| SignerLine {
            file: escape(&s.file),
            key_id: s.key_id.map(|k| k.to_string()),
            role: s.role.map(|r| r.as_str().to_string()),
            key_name: s.key_name.as_deref().map(escape),
            verified: s.verified(),
            reason: s.reason.as_deref().map(escape),
        })
        .collect();
    let roles = r
        .roles()
        .iter()
        .map(|r| RoleLine { role: r.role.as_str().to_string(), threshold: r.threshold, valid: r.valid, met: r.met })
        .collect();
    (signers, roles)
}

/// Each role's count, `release 2/2, approval 1/1`.
pub fn roles_line(r: &Report) -> String {
    r.roles().iter().map(|x| format!("{} {}/{}", x.role.as_str(), x.valid, x.threshold)).collect::<Vec<_>>().join(", ")
}

impl VerifyReport {
    pub fn new(file: &str, policy_label: &str, policy: &Policy) -> VerifyReport {
        VerifyReport {
            file: escape(file),
            policy: escape(policy_label),
            policy_version: policy.version(),
            policy_chain: None,
            insecure_dev_key: policy.trusts_dev_key(),
            accepted: false,
            finished: false,
            reason: None,
            message: None,
            bundle: None,
            signers: Vec::new(),
            roles: Vec::new(),
        }
    }

    /// Marks the report refused with `code` and `message` (kept if already refused).
    pub fn refuse(&mut self, code: &str, message: &str) {
        if self.reason.is_none() {
            self.reason = Some(code.to_string());
            self.message = Some(escape(message));
        }
        self.settle();
    }

    /// Accepted: the whole bundle was read and checked, and nothing refused it.
    pub fn accepted(&self) -> bool {
        self.accepted
    }

    fn settle(&mut self) {
        self.accepted = self.finished && self.reason.is_none();
    }

    /// The human form: one line per signer and role, then the verdict.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let dev = if self.insecure_dev_key { " — INSECURE DEV KEY: anyone can sign with it" } else { "" };
        out.push_str(&format!("{} (policy {} version {}{dev})\n", self.file, self.policy, self.policy_version));
        if let Some(c) = &self.policy_chain {
            out.push_str(&format!("  policy: {c}\n"));
        }
        for s in self.signers.iter().take(MAX_SIGNER_LINES) {
            let id = s.key_id.as_deref().unwrap_or("?");
            match (&s.role, &s.reason) {
                (Some(role), _) => out.push_str(&format!(
                    "  verified  {id}  {role}{}  ({})\n",
                    s.key_name.as_deref().map(|n| format!(" `{n}`")).unwrap_or_default(),
                    s.file
                )),
                (None, r) => out.push_str(&format!("  REJECTED  {id}  {}: {}\n", s.file, r.as_deref().unwrap_or("?"))),
            }
        }
        if self.signers.is_empty() && !self.roles.is_empty() {
            out.push_str("  no signatures\n");
        }
        if self.signers.len() > MAX_SIGNER_LINES {
            out.push_str(&format!("  …and {} more signature files\n", self.signers.len() - MAX_SIGNER_LINES));
        }
        for r in &self.roles {
            out.push_str(&format!(
                "  role {:<9} {} of {} needed: {}\n",
                r.role,
                r.valid,
                r.threshold,
                if r.met { "met" } else { "NOT met" }
            ));
        }
        if let Some(b) = &self.bundle {
            out.push_str(&format!(
                "  {} {} security_version {} channel {}; manifest {}; {} payload bytes verified chunk by chunk\n",
                b.product, b.version, b.security_version, b.channel, b.manifest, b.payload_bytes
            ));
            if let Some(p) = &b.provenance {
                out.push_str(&format!("  provenance (in-toto statement) signed: {p}\n"));
            }
        }
        match (&self.reason, &self.message) {
            (Some(code), Some(m)) => out.push_str(&format!("rejected ({code}): {m}")),
            (Some(code), None) => out.push_str(&format!("rejected ({code})")),
            _ if self.insecure_dev_key => out.push_str("accepted — INSECURE DEV KEY"),
            _ => out.push_str("accepted"),
        }
        out
    }
}

/// Verifies a whole bundle from `r` against `policy`: signatures, then every payload chunk,
/// then the end of the archive. Returns the report and, when accepted, the manifest.
pub fn verify_stream<R: Read>(
    r: R,
    file: &str,
    policy_label: &str,
    policy: &Policy,
    expect: Expect<'_>,
) -> (VerifyReport, Option<crate::Manifest>) {
    let mut report = VerifyReport::new(file, policy_label, policy);
    let mut vb = match crate::open(r, policy, expect) {
        Ok(vb) => vb,
        Err(e) => {
            if let Error::Rejected(r) = &e {
                (report.signers, report.roles) = signer_lines(r);
            }
            report.refuse(e.code().as_str(), &e.to_string());
            return (report, None);
        }
    };
    (report.signers, report.roles) = signer_lines(vb.report());
    let m = vb.manifest().clone();
    report.bundle = Some(BundleFacts {
        product: m.product.clone(),
        version: m.version.to_string(),
        security_version: m.security_version,
        channel: m.channel.to_string(),
        manifest: vb.digest().to_string(),
        payload_bytes: 0,
        provenance: None,
    });
    let mut buf = Vec::new();
    let mut bytes = 0u64;
    let mut vb_provenance = None;
    let result = (|| -> Result<(), Error> {
        while let Some(mut p) = vb.next_payload()? {
            while p.next_chunk(&mut buf)? {}
            bytes += p.verified();
        }
        vb_provenance = vb.provenance().map(|(_, r)| roles_line(r));
        vb.finish()
    })();
    if let Some(b) = report.bundle.as_mut() {
        b.payload_bytes = bytes;
        b.provenance = vb_provenance;
    }
    match result {
        Ok(()) => {
            report.finished = true;
            report.settle();
            (report, Some(m))
        }
        Err(e) => {
            report.refuse(e.code().as_str(), &e.to_string());
            (report, None)
        }
    }
}

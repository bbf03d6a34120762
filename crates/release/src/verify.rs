//! Verifying one file from disk against the verifier's policy: the file is streamed (its
//! BLAKE2b prehash in 1 MiB pieces, so memory does not grow with its size), its signatures
//! beside it are each read once and bounded, and a manifest's own product and version are
//! what the trusted comments must name.

use std::path::Path;

use serde::Serialize;
use trust::{Expect, Prehash};

use crate::files::open_regular;
use crate::policy::LoadedPolicy;
use crate::sigfiles::read_signatures;
use crate::{Error, Result, fields};

use bundle::MAX_SIGNER_LINES;

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: String,
    pub policy: String,
    pub policy_version: u64,
    pub policy_chain: String,
    /// The policy trusts the INSECURE dev key: acceptance proves nothing about who signed.
    pub insecure_dev_key: bool,
    /// The verdict, made only from the signatures' report and the policy chain
    /// ([`FileReport::accepted`]).
    accepted: bool,
    /// `build manifest`, `bundle manifest`, `trust policy`, or none.
    pub kind: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub signers: Vec<bundle::SignerLine>,
    pub roles: Vec<bundle::RoleLine>,
    /// What each unmet role needs.
    pub hints: Vec<String>,
    #[serde(skip)]
    report: trust::Report,
    /// Why the verifier's policy cannot be trusted as the root (a broken rotation chain).
    #[serde(skip)]
    chain_problem: Option<String>,
}

pub fn verify_file(path: &Path, lp: &LoadedPolicy) -> Result<FileReport> {
    let f = open_regular(path)?;
    let prehash = Prehash::of_reader(f).map_err(Error::io(path))?;
    let fields = fields::read(path)?;
    let sigs = read_signatures(path)?;
    let expect = Expect {
        product: fields.as_ref().and_then(|f| f.product.as_deref()),
        version: fields.as_ref().filter(|f| f.kind != fields::Kind::TrustPolicy).and_then(|f| f.version.as_deref()),
    };
    let report = lp.policy.verify(&prehash, &sigs, &expect);
    let (signers, roles) = bundle::signer_lines(&report);
    Ok(FileReport {
        file: bundle::escape(&path.display().to_string()),
        policy: lp.label(),
        policy_version: lp.policy.version(),
        policy_chain: lp.chain.describe(),
        insecure_dev_key: lp.policy.trusts_dev_key(),
        accepted: report.accepted(),
        kind: fields.as_ref().map(|f| f.kind.as_str().to_string()),
        product: fields.as_ref().and_then(|f| f.product.clone()),
        version: fields.as_ref().and_then(|f| f.version.clone()),
        signers,
        roles,
        hints: crate::policy::hints(&report, path),
        report,
        chain_problem: None,
    })
}

impl FileReport {
    /// Every role's threshold met, under a policy reached by an unbroken chain.
    pub fn accepted(&self) -> bool {
        self.accepted
    }

    /// What the signatures proved.
    pub fn report(&self) -> &trust::Report {
        &self.report
    }

    /// The verifier's policy is not reached by its rotation chain: nothing it says counts.
    pub fn refuse_chain(&mut self, why: &str) {
        self.chain_problem = Some(why.to_string());
        self.accepted = false;
    }

    pub fn render_text(&self) -> String {
        let dev = if self.insecure_dev_key { " — INSECURE DEV KEY: anyone can sign with it" } else { "" };
        let mut out = format!("{} (policy {} version {}{dev})\n", self.file, self.policy, self.policy_version);
        out.push_str(&format!("  policy: {}\n", self.policy_chain));
        if self.signers.is_empty() {
            out.push_str(&format!("  no signature files ({}.*.minisig)\n", self.file));
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
        for h in &self.hints {
            out.push_str(&format!("  {h}\n"));
        }
        out.push_str(match (self.accepted, self.insecure_dev_key) {
            (true, true) => "accepted — INSECURE DEV KEY",
            (true, false) => "accepted",
            (false, _) => "rejected",
        });
        out
    }
}

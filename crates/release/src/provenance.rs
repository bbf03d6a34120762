//! Provenance on disk: the signers' DSSE signatures of `provenance.json` (one
//! `provenance.json.KEYID.dsse` file each, `{"keyid", "sig"}`), the envelope assembled from
//! them (`provenance.intoto.json`, what in-toto tools read), and its verification against the
//! verifier's policy — the signatures, and each subject's digest against the file of that
//! name beside the envelope (streamed).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use sha2::{Digest, Sha256};
use trust::SecretKey;
use trust::dsse::{IN_TOTO, MAX_ENVELOPE, MAX_PAYLOAD, Signature};

use crate::files::{open_regular, read_bounded, write_atomic};
use crate::{Error, LoadedPolicy, Result};

pub const STATEMENT: &str = "provenance.json";
pub const ENVELOPE: &str = "provenance.intoto.json";

pub(crate) fn dsse_paths(statement: &Path) -> Result<Vec<PathBuf>> {
    let dir = statement.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = statement.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix(&format!("{base}."))
                .and_then(|r| r.strip_suffix(".dsse"))
                .is_some_and(|id| id.len() == 16 && id.bytes().all(|c| c.is_ascii_hexdigit()))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn statement_bytes(statement: &Path) -> Result<Vec<u8>> {
    read_bounded(statement, MAX_PAYLOAD as u64)?.ok_or_else(|| {
        Error::Usage(format!("{}: larger than {MAX_PAYLOAD} bytes: not a provenance statement", statement.display()))
    })
}

/// Signs the statement with `key`: writes `STATEMENT.KEYID.dsse`.
pub fn sign(statement: &Path, key: &SecretKey) -> Result<PathBuf> {
    let payload = statement_bytes(statement)?;
    let s = trust::dsse::sign(key, IN_TOTO, &payload);
    let out = statement.with_file_name(format!(
        "{}.{}.dsse",
        statement.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        key.id()
    ));
    let text = serde_json::to_string(&s).map_err(|e| Error::Usage(e.to_string()))?;
    write_atomic(&out, format!("{text}\n").as_bytes())?;
    Ok(out)
}

/// Assembles the envelope when at least one signature file is beside the statement; returns
/// the signature files used.
pub fn assemble_if_signed(dir: &Path) -> Result<Vec<PathBuf>> {
    let sigs = dsse_paths(&dir.join(STATEMENT))?;
    if !sigs.is_empty() {
        assemble(dir)?;
    }
    Ok(sigs)
}

/// Assembles the envelope from the statement and every signature file beside it.
pub fn assemble(dir: &Path) -> Result<PathBuf> {
    let statement = dir.join(STATEMENT);
    let payload = statement_bytes(&statement)?;
    let mut sigs = Vec::new();
    for p in dsse_paths(&statement)? {
        let Some(b) = read_bounded(&p, 4096)? else { continue };
        let s: Signature = serde_json::from_slice(&b)
            .map_err(|e| Error::Rejected(format!("{}: not a DSSE signature: {e}", p.display())))?;
        sigs.push(s);
    }
    let env = serde_json::json!({
        "payloadType": IN_TOTO,
        "payload": B64.encode(&payload),
        "signatures": sigs,
    });
    let mut text = serde_json::to_string_pretty(&env).map_err(|e| Error::Usage(e.to_string()))?;
    text.push('\n');
    let out = dir.join(ENVELOPE);
    write_atomic(&out, text.as_bytes())?;
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub name: String,
    pub sha256: String,
    /// `ok`, `differs (…)`, `missing`.
    pub check: String,
    /// The file beside the envelope is this subject, or absent (not checked); false when it
    /// differs or the name is not a file name.
    #[serde(skip)]
    pub holds: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvelopeReport {
    pub file: String,
    pub policy: String,
    /// The verdict, made only from its parts: the signatures met the policy, the statement
    /// names subjects and every one present holds, and the policy chain is unbroken
    /// ([`EnvelopeReport::accepted`]).
    accepted: bool,
    #[serde(skip)]
    signatures_met: bool,
    #[serde(skip)]
    chain_ok: bool,
    pub summary: String,
    pub signers: Vec<String>,
    pub subjects: Vec<Subject>,
    pub insecure_dev_key: bool,
}

impl EnvelopeReport {
    pub fn accepted(&self) -> bool {
        self.accepted
    }

    fn settle(&mut self) {
        self.accepted =
            self.signatures_met && self.chain_ok && !self.subjects.is_empty() && self.subjects.iter().all(|s| s.holds);
    }

    /// The verifier's policy is not reached by its rotation chain: nothing it says counts.
    pub fn refuse_chain(&mut self) {
        self.chain_ok = false;
        self.settle();
    }

    pub fn render_text(&self) -> String {
        let mut s = format!(
            "{} (policy {}{})\n  signatures: {}\n",
            self.file,
            self.policy,
            if self.insecure_dev_key { " — INSECURE DEV KEY: anyone can sign with it" } else { "" },
            self.summary
        );
        for l in &self.signers {
            s.push_str(&format!("  {l}\n"));
        }
        for sub in &self.subjects {
            s.push_str(&format!("  subject {:<22} {}\n", sub.name, sub.check));
        }
        s.push_str(if self.accepted { "accepted" } else { "REJECTED" });
        s
    }
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut f = open_regular(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Verifies an envelope: its signatures against the policy (every role's threshold), its
/// payload type and statement type, and each subject's digest against the file beside it.
pub fn verify(path: &Path, lp: &LoadedPolicy) -> Result<EnvelopeReport> {
    let bytes = read_bounded(path, MAX_ENVELOPE as u64)?
        .ok_or_else(|| Error::Rejected(format!("{}: larger than {MAX_ENVELOPE} bytes", path.display())))?;
    let (env, payload) =
        trust::dsse::Envelope::parse(&bytes).map_err(|e| Error::Rejected(format!("{}: {e}", path.display())))?;
    if env.payload_type != IN_TOTO {
        return Err(Error::Rejected(format!(
            "{}: payload type `{}` is not an in-toto statement",
            path.display(),
            env.payload_type.escape_debug()
        )));
    }
    let verdict = lp.policy.require_dsse(IN_TOTO, &payload, &env.signatures);
    let signatures_met = verdict.is_ok();
    let report = match verdict {
        Ok(a) => a.report().clone(),
        Err(r) => r.into_report(),
    };
    let signers: Vec<String> = report
        .signers()
        .iter()
        .map(|s| match (&s.role, &s.reason) {
            (Some(r), _) => format!(
                "verified  {} ({r}{})",
                s.key_id.map(|k| k.to_string()).unwrap_or_default(),
                s.key_name.as_deref().map(|n| format!(" `{n}`")).unwrap_or_default()
            ),
            (None, why) => format!("refused   {}: {}", s.file, why.as_deref().unwrap_or("?")),
        })
        .collect();
    // Only a statement whose signatures met the policy is read.
    let mut subjects = Vec::new();
    if signatures_met {
        let st: serde_json::Value = serde_json::from_slice(&payload)
            .map_err(|e| Error::Rejected(format!("{}: the signed statement is not JSON: {e}", path.display())))?;
        if st["_type"] != "https://in-toto.io/Statement/v1" {
            return Err(Error::Rejected(format!(
                "{}: the signed payload is not an in-toto Statement v1",
                path.display()
            )));
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        for s in st["subject"].as_array().into_iter().flatten().take(4096) {
            let name = s["name"].as_str().unwrap_or("").to_string();
            let want = s["digest"]["sha256"].as_str().unwrap_or("").to_string();
            let flat = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
            let (check, holds) = if !flat {
                ("refused: a subject name must be a file name beside the envelope".to_string(), false)
            } else if !dir.join(&name).exists() {
                ("not here (only the files present are checked)".to_string(), true)
            } else {
                let got = sha256_of(&dir.join(&name))?;
                if got == want {
                    ("ok".to_string(), true)
                } else {
                    (format!("DIFFERS: the file's sha256 is {got}"), false)
                }
            };
            subjects.push(Subject { name, sha256: want, check, holds });
        }
    }
    let mut r = EnvelopeReport {
        file: path.display().to_string(),
        policy: lp.label(),
        accepted: false,
        signatures_met,
        chain_ok: true,
        summary: report.summary(),
        signers,
        subjects,
        insecure_dev_key: lp.policy.trusts_dev_key(),
    };
    r.settle();
    Ok(r)
}

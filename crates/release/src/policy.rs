//! The trust root is chosen by whoever verifies, never by the artefact: `keys/trust.toml` by
//! default, the INSECURE dev policy only when asked for (`--dev`), or a policy file named by
//! the caller. Rotation keeps its evidence: every accepted policy and the signatures that
//! authorised it go to `history/` beside the policy (`trust-vN.toml`,
//! `trust-vN.toml.KEYID.minisig`), and the chain from version 1 to the policy in use is
//! checked whenever a policy is loaded — a hand-edited policy is reported as such (TUF's root
//! chain, offline).

use std::fs;
use std::path::{Path, PathBuf};

use trust::Policy;

use crate::files::{read_bounded, write_atomic};
use crate::sigfiles::read_signatures;
use crate::{Error, Result};

pub const RELEASE_POLICY: &str = "keys/trust.toml";
pub const DEV_POLICY: &str = "keys/dev/trust.toml";

/// Where the verifier's policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `keys/trust.toml`.
    Default,
    /// `keys/dev/trust.toml`: trusts the INSECURE dev key.
    Dev,
    File(PathBuf),
}

impl PolicySource {
    /// The policy of a channel's builds: the INSECURE dev policy for dev, the repository's
    /// `keys/trust.toml` for release — the one place the channel chooses a trust root (the
    /// build bakes it into the image, `bundle` and `build` verify against it).
    pub fn for_channel(channel: product::Channel) -> PolicySource {
        match channel {
            product::Channel::Dev => PolicySource::Dev,
            product::Channel::Release => PolicySource::Default,
        }
    }

    /// The file it names, in the checkout at `root`.
    pub fn path(&self, root: &Path) -> PathBuf {
        match self {
            PolicySource::Default => root.join(RELEASE_POLICY),
            PolicySource::Dev => root.join(DEV_POLICY),
            PolicySource::File(p) => p.clone(),
        }
    }
}

/// How the policy in use is reached from version 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// Version 1, the root of its own chain.
    Root,
    /// Every rotation from version 1 to this one was signed by a threshold of the version
    /// before.
    Unbroken { from: u64, to: u64 },
    /// Not reached: why.
    Broken(String),
}

impl Chain {
    pub fn is_ok(&self) -> bool {
        !matches!(self, Chain::Broken(_))
    }

    pub fn describe(&self) -> String {
        match self {
            Chain::Root => "version 1 (the root)".into(),
            Chain::Unbroken { from, to } => format!("unbroken chain from version {from} to {to}"),
            Chain::Broken(why) => format!("NOT reached by an unbroken chain from version 1: {why}"),
        }
    }
}

pub struct LoadedPolicy {
    pub policy: Policy,
    pub path: PathBuf,
    pub chain: Chain,
}

impl LoadedPolicy {
    pub fn label(&self) -> String {
        self.path.display().to_string()
    }
}

fn read_policy_text(path: &Path) -> Result<String> {
    let bytes = read_bounded(path, trust::MAX_POLICY_FILE as u64)?.ok_or_else(|| {
        Error::Usage(format!("{}: larger than {} bytes: not a trust policy", path.display(), trust::MAX_POLICY_FILE))
    })?;
    String::from_utf8(bytes).map_err(|_| Error::Usage(format!("{}: not UTF-8 text", path.display())))
}

/// Loads the verifier's policy. A policy that does not parse is a usage error (exit 2).
pub fn load(root: &Path, src: &PolicySource) -> Result<LoadedPolicy> {
    let path = src.path(root);
    let text = read_policy_text(&path)?;
    let policy = Policy::parse(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
    let chain = chain(&path, &text, &policy);
    Ok(LoadedPolicy { policy, path, chain })
}

/// `history/` beside a policy file.
pub fn history_dir(policy_path: &Path) -> PathBuf {
    policy_path.parent().unwrap_or(Path::new(".")).join("history")
}

fn history_file(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("trust-v{version}.toml"))
}

/// Checks that the policy in use (`text`) is reached from version 1 through `history/`.
pub fn chain(policy_path: &Path, text: &str, policy: &Policy) -> Chain {
    let dir = history_dir(policy_path);
    let n = policy.version();
    let newest = (1..=n + 64).take_while(|v| history_file(&dir, *v).exists()).last();
    if newest.is_none() {
        return if n == 1 {
            Chain::Root
        } else {
            Chain::Broken(format!(
                "version {n} is in use but {} holds no chain from version 1 (a hand-edited policy, or one whose rotations were not kept): rotate with `cargo xtask rotate`",
                dir.display()
            ))
        };
    }
    let mut prev: Option<Policy> = None;
    for v in 1..=n {
        let file = history_file(&dir, v);
        let Ok(t) = read_policy_text(&file) else {
            return Chain::Broken(format!("{} is missing: the chain is cut before version {v}", file.display()));
        };
        let next = match &prev {
            None => match Policy::parse(&t) {
                Ok(p) => p,
                Err(e) => return Chain::Broken(format!("{}: {e}", file.display())),
            },
            Some(p) => {
                let sigs = match read_signatures(&file) {
                    Ok(s) => s,
                    Err(e) => return Chain::Broken(e.to_string()),
                };
                match p.rotate(&t, &sigs) {
                    Ok(p) => p,
                    Err(e) => return Chain::Broken(format!("{}: {e}", file.display())),
                }
            }
        };
        if v == n && t != text {
            return Chain::Broken(format!(
                "the policy in use differs from {}, the version {n} its rotation accepted: a hand-edited policy",
                file.display()
            ));
        }
        prev = Some(next);
    }
    if let Some(m) = newest.filter(|m| *m > n) {
        return Chain::Broken(format!(
            "{} goes to version {m}, the policy in use is version {n}: it went back",
            dir.display()
        ));
    }
    if n == 1 { Chain::Root } else { Chain::Unbroken { from: 1, to: n } }
}

/// What `rotate` did.
pub struct Rotated {
    pub policy: Policy,
    /// Files written into `history/`.
    pub history: Vec<PathBuf>,
}

/// Accepts `new_path` as the next version of the policy at `current_path` when a threshold of
/// the current release keys signed it (`NEW.KEYID.minisig` beside it), records both in
/// `history/` with those signatures, then puts the new policy in place.
pub fn rotate(current_path: &Path, new_path: &Path) -> Result<Rotated> {
    let current_text = read_policy_text(current_path)?;
    let current = Policy::parse(&current_text).map_err(|e| Error::Usage(format!("{}: {e}", current_path.display())))?;
    if let Chain::Broken(why) = chain(current_path, &current_text, &current) {
        return Err(Error::Rejected(format!(
            "{}: the policy in use is not reached by an unbroken chain, so nothing can rotate from it: {why}",
            current_path.display()
        )));
    }
    let new_text = read_policy_text(new_path)?;
    let sigs = read_signatures(new_path)?;
    let next = current.rotate(&new_text, &sigs).map_err(|e| Error::Rejected(format!("{}: {e}", new_path.display())))?;
    let dir = history_dir(current_path);
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let mut written = Vec::new();
    let root = history_file(&dir, current.version());
    if !root.exists() {
        write_atomic(&root, current_text.as_bytes())?;
        written.push(root);
    }
    let dest = history_file(&dir, next.version());
    let dest_name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let new_name = new_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for (name, bytes) in &sigs {
        let renamed = dir.join(name.replacen(&new_name, &dest_name, 1));
        write_atomic(&renamed, bytes)?;
        written.push(renamed);
    }
    write_atomic(&dest, new_text.as_bytes())?;
    written.push(dest);
    write_atomic(current_path, new_text.as_bytes())?;
    Ok(Rotated { policy: next, history: written })
}

/// What each unmet role needs, as commands a signer can paste.
pub fn hints(report: &trust::Report, file: &Path) -> Vec<String> {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    report
        .roles()
        .iter()
        .filter(|r| !r.met)
        .map(|r| match r.role {
            trust::Role::Release => format!(
                "release {}/{}: each vendor signer runs `cargo xtask sign {name} --key THEIR.key` on the offline signing machine",
                r.valid, r.threshold
            ),
            trust::Role::Approval => format!(
                "approval {}/{}: the asset owner signs with `cargo xtask sign {name} --key OWNER.key --role approval`",
                r.valid, r.threshold
            ),
        })
        .collect()
}

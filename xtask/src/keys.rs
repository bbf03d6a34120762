//! `keygen`, `sign`, `verify`, `rotate`: flags in, calls into `release` (the file side of
//! trust), a report out. Secret keys live outside the repository, mode 0600; the tools refuse
//! one that group or others can read (except the committed INSECURE dev key, recognised by its
//! key bytes). Passphrases are asked on the terminal without echo, as minisign does;
//! `--passphrase-file` and `$AIRLOCK_PASSPHRASE` are for automation.

use std::fs;
use std::io::{IsTerminal, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use release::PolicySource;
use trust::{Kdf, SecretKey};

use crate::{Ctx, Exit, out};

pub const DEV_KEY: &str = "keys/dev/dev.key";
/// The committed INSECURE dev approval key: the "asset owner" of dev builds and site profiles.
pub const DEV_APPROVAL_KEY: &str = "keys/dev/dev-approval.key";

/// A signing role, as given on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    /// The vendor's release signers.
    Release,
    /// The asset owner's approval.
    Approval,
}

impl From<RoleArg> for trust::Role {
    fn from(r: RoleArg) -> trust::Role {
        match r {
            RoleArg::Release => trust::Role::Release,
            RoleArg::Approval => trust::Role::Approval,
        }
    }
}

/// Default home of secret keys: `$XDG_CONFIG_HOME/airlock/keys` or `~/.config/airlock/keys`.
fn secret_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("airlock/keys");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".config/airlock/keys")
}

/// The passphrase: `--passphrase-file`, else `$AIRLOCK_PASSPHRASE`, else asked on the
/// terminal without echo (twice when `confirm`); `None` with no terminal.
fn passphrase(file: &Option<PathBuf>, what: &str, confirm: bool) -> Result<Option<Vec<u8>>> {
    if let Some(f) = file {
        let text = fs::read_to_string(f).with_context(|| format!("reading passphrase file {}", f.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").as_bytes().to_vec()));
    }
    if let Some(p) = std::env::var("AIRLOCK_PASSPHRASE").ok().filter(|s| !s.is_empty()) {
        return Ok(Some(p.into_bytes()));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let first = rpassword::prompt_password(format!("Passphrase for {what}: "))?;
    if confirm {
        let again = rpassword::prompt_password("Passphrase (again): ")?;
        if again != first {
            bail!("the passphrases do not match: nothing was written");
        }
    }
    Ok(Some(first.into_bytes()))
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(b)
}

/// Reads a secret key, refusing a file that group or others can read — unless it is the
/// INSECURE dev key, which protects nothing and is public in the repository.
pub fn load_secret(path: &Path, pass_file: &Option<PathBuf>) -> Result<SecretKey> {
    let mut text = String::new();
    fs::File::open(path)
        .with_context(|| format!("secret key {}", path.display()))?
        .take(trust::MAX_KEY_FILE as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading secret key {}", path.display()))?;
    let encrypted = SecretKey::is_encrypted(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if !encrypted
        && let Ok(k) = SecretKey::parse(&text, None)
        && trust::is_dev_key(&k.public())
    {
        return Ok(k);
    }
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Exit(
            2,
            format!(
                "{}: secret key is readable by group or others (mode {mode:04o}): refused; run `chmod 600 {}` and check who could have copied it",
                path.display(),
                path.display()
            ),
        )
        .into());
    }
    let pass = if encrypted { passphrase(pass_file, &path.display().to_string(), false)? } else { None };
    SecretKey::parse(&text, pass.as_deref()).map_err(|e| match e {
        trust::Error::PassphraseNeeded => anyhow::anyhow!(
            "{}: {e}: run it on a terminal, or give --passphrase-file FILE or $AIRLOCK_PASSPHRASE",
            path.display()
        ),
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })
}

/// The committed INSECURE dev key (read as it is: no chmod, no permission check).
/// Both committed dev keys with their roles: what signs dev manifests and bundles, so that
/// the dev policy's two roles are met the way a release's are, by two keys.
pub fn dev_secrets(root: &Path) -> Result<Vec<(trust::Role, SecretKey)>> {
    Ok(vec![
        (trust::Role::Release, load_secret(&root.join(DEV_KEY), &None)?),
        (trust::Role::Approval, load_secret(&root.join(DEV_APPROVAL_KEY), &None)?),
    ])
}

#[derive(Args, Debug)]
pub struct Keygen {
    /// Key name: writes keys/NAME.pub and the secret key outside the repository.
    pub name: String,
    /// Directory for the secret key (default: ~/.config/airlock/keys).
    #[arg(long)]
    pub secret_dir: Option<PathBuf>,
    /// Directory for the public key (default: keys/).
    #[arg(long)]
    pub public_dir: Option<PathBuf>,
    /// Encrypt the secret key with the passphrase in this file (or $AIRLOCK_PASSPHRASE, or
    /// asked twice on the terminal).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Leave the secret key unencrypted (not for release keys).
    #[arg(long)]
    pub no_passphrase: bool,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

impl Keygen {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || self.name.starts_with('.')
        {
            bail!("key name `{}`: use letters, digits, - _ .", self.name.escape_debug());
        }
        let sdir = self.secret_dir.as_deref().map(|d| ctx.path(d)).unwrap_or_else(secret_dir);
        let pdir = self.public_dir.as_deref().map(|d| ctx.path(d)).unwrap_or_else(|| ctx.root.join("keys"));
        let sk_path = sdir.join(format!("{}.key", self.name));
        let pk_path = pdir.join(format!("{}.pub", self.name));
        // Resolve the directory as it will be (relative paths and symlinks included) before
        // deciding whether it lies inside the repository.
        let resolved = sdir.canonicalize().unwrap_or_else(|_| sdir.clone());
        let repo = ctx.root.canonicalize().unwrap_or_else(|_| ctx.root.clone());
        if resolved.starts_with(&repo) && !(resolved.ends_with("keys/dev") && self.name.starts_with("dev")) {
            bail!(
                "{}: secret keys are never kept in the repository (only the INSECURE dev key, in keys/dev/)",
                sk_path.display()
            );
        }
        for p in [&sk_path, &pk_path] {
            if p.exists() && !self.force {
                bail!("{} exists: pass --force to replace it", p.display());
            }
        }
        let pass = if self.no_passphrase { None } else { passphrase(&self.passphrase_file, "the new key", true)? };
        if pass.is_none() && !self.no_passphrase {
            bail!(
                "no passphrase: run it on a terminal (asked twice, not echoed), give --passphrase-file FILE or $AIRLOCK_PASSPHRASE, or --no-passphrase for an unencrypted key"
            );
        }
        let key = SecretKey::from_seed(random::<32>()?, random::<8>()?);
        let kdf = match pass.as_deref() {
            Some(p) => Some(Kdf {
                passphrase: p,
                salt: random::<32>()?,
                opslimit: trust::DEFAULT_OPSLIMIT,
                memlimit: trust::DEFAULT_MEMLIMIT,
            }),
            None => None,
        };
        let text = key.to_file(kdf)?;
        fs::create_dir_all(&sdir).with_context(|| format!("creating {}", sdir.display()))?;
        fs::set_permissions(&sdir, fs::Permissions::from_mode(0o700)).ok();
        write_secret(&sk_path, text.as_bytes())?;
        fs::create_dir_all(&pdir).with_context(|| format!("creating {}", pdir.display()))?;
        let public = key.public();
        release::files::write_atomic(&pk_path, public.to_file().as_bytes())?;
        if ctx.json {
            out!(
                "{}",
                serde_json::json!({"ok": true, "key_id": public.id().to_string(), "public_key": pk_path, "secret_key": sk_path, "encrypted": pass.is_some(), "key": public.to_base64()})
            );
            return Ok(());
        }
        out!("key id      {}", public.id());
        out!("public key  {}", pk_path.display());
        out!(
            "secret key  {} (mode 0600{})",
            sk_path.display(),
            if pass.is_some() { ", encrypted" } else { ", NOT encrypted" }
        );
        out!(
            "add to keys/trust.toml, under [release] or [approval]:\n  {{ name = \"{}\", key = \"{}\" }},",
            self.name,
            public.to_base64()
        );
        Ok(())
    }
}

/// Writes a secret key file 0600 from the start (never briefly world-readable).
fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("key.part");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    release::files::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct Sign {
    /// The file to sign (a build manifest, a bundle manifest, a trust policy…).
    pub path: PathBuf,
    /// The secret key.
    #[arg(long)]
    pub key: PathBuf,
    /// The role this signature is made in.
    #[arg(long, value_enum, default_value_t = RoleArg::Release)]
    pub role: RoleArg,
    /// Product id for the trusted comment (default: from the build or bundle manifest).
    #[arg(long)]
    pub product: Option<String>,
    /// Version for the trusted comment (default: from the build or bundle manifest).
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

impl Sign {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let path = ctx.path(&self.path);
        let key = load_secret(&ctx.path(&self.key), &self.passphrase_file)?;
        let role = trust::Role::from(self.role);
        let sig = release::sign_file(&path, &key, role, self.product.as_deref(), self.version.as_deref())?;
        if ctx.json {
            out!(
                "{}",
                serde_json::json!({"ok": true, "file": path, "key_id": key.id().to_string(), "role": role.as_str(), "signature": sig})
            );
        } else {
            out!("signed {} with key {} ({role}): {}", path.display(), key.id(), sig.display());
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct Verify {
    /// The signed file (its signatures FILE.KEYID.minisig beside it), or a .airlock bundle.
    pub path: PathBuf,
    /// Trust policy to verify against (default: keys/trust.toml). The file being verified
    /// never chooses it.
    #[arg(long, conflicts_with = "dev")]
    pub trust: Option<PathBuf>,
    /// Verify against the INSECURE dev policy (keys/dev/trust.toml): proves nothing about who
    /// signed, since the dev secret key is public.
    #[arg(long)]
    pub dev: bool,
}

impl Verify {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let src = match (&self.trust, self.dev) {
            (Some(t), _) => PolicySource::File(ctx.path(t)),
            (None, true) => PolicySource::Dev,
            (None, false) => PolicySource::Default,
        };
        let lp = release::policy::load(&ctx.root, &src)?;
        // The caller's own policy file is the root they chose; the repository's policy must be
        // reached by its rotation chain.
        let chain_required = !matches!(src, PolicySource::File(_));
        let chain_broken = chain_required && !lp.chain.is_ok();
        let path = ctx.path(&self.path);
        let is_envelope = path.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".intoto.json"));
        let (accepted, text, json) = if is_envelope {
            let mut r = release::provenance::verify(&path, &lp)?;
            if chain_broken {
                r.refuse_chain();
            }
            (r.accepted(), r.render_text(), serde_json::to_value(&r)?)
        } else if path.extension().is_some_and(|x| x == "airlock") {
            let f = release::files::open_regular(&path)?;
            let (mut report, _) = bundle::verify_stream(
                std::io::BufReader::with_capacity(1 << 20, f),
                &path.display().to_string(),
                &lp.label(),
                &lp.policy,
                trust::Expect::default(),
            );
            report.policy_chain = Some(lp.chain.describe());
            if chain_broken {
                report.refuse("policy-chain", &lp.chain.describe());
            }
            (report.accepted(), report.render_text(), serde_json::to_value(&report)?)
        } else {
            let mut report = release::verify_file(&path, &lp)?;
            if chain_broken {
                report.refuse_chain(&lp.chain.describe());
            }
            (report.accepted(), report.render_text(), serde_json::to_value(&report)?)
        };
        if ctx.json {
            out!("{json}");
        } else {
            out!("{text}");
        }
        if accepted { Ok(()) } else { Err(Exit(1, String::new()).into()) }
    }
}

#[derive(Args, Debug)]
pub struct Rotate {
    /// The next trust policy (version N+1), with its signatures `NEW.KEYID.minisig` beside it,
    /// made by a threshold of the current policy's release keys.
    pub new: PathBuf,
    /// The current policy (default: keys/trust.toml); replaced by NEW when the rotation is
    /// accepted, both kept in history/ beside it.
    #[arg(long)]
    pub trust: Option<PathBuf>,
}

impl Rotate {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let current = self
            .trust
            .as_deref()
            .map(|p| ctx.path(p))
            .unwrap_or_else(|| ctx.root.join(release::policy::RELEASE_POLICY));
        let r = release::rotate(&current, &ctx.path(&self.new))?;
        let (ids, keys) = r.policy.revoked();
        if ctx.json {
            out!(
                "{}",
                serde_json::json!({"ok": true, "policy": current, "version": r.policy.version(), "history": r.history})
            );
            return Ok(());
        }
        let release_role = r.policy.role(trust::Role::Release);
        out!(
            "{}: now version {} ({} release key(s), threshold {}; {} revoked)",
            current.display(),
            r.policy.version(),
            release_role.map_or(0, |x| x.keys().len()),
            release_role.map_or(0, |x| x.threshold()),
            ids.len() + keys.len()
        );
        for h in &r.history {
            out!("  kept {}", h.display());
        }
        Ok(())
    }
}

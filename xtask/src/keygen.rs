//! `keygen NAME`: a signing keypair — the public key in keys/, the secret key outside the
//! repository (mode 0600, scrypt-encrypted as `minisign -G` does it).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use trust::{Kdf, SecretKey};

use crate::keys::{passphrase, random, secret_dir};
use crate::{Ctx, out};

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

//! What `keygen`, `sign`, `build` and `bundle` share about secret keys: where they live
//! (outside the repository, mode 0600; one that group or others can read is refused, except
//! the committed INSECURE dev key, recognised by its key bytes), passphrases (asked on the
//! terminal without echo, as minisign does; `--passphrase-file` and `$AIRLOCK_PASSPHRASE` are
//! for automation), the role flag, and the dev keys.

use std::fs;
use std::io::{IsTerminal, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use trust::SecretKey;

use crate::Exit;

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
pub(crate) fn secret_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("airlock/keys");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".config/airlock/keys")
}

/// The passphrase: `--passphrase-file`, else `$AIRLOCK_PASSPHRASE`, else asked on the
/// terminal without echo (twice when `confirm`); `None` with no terminal.
pub(crate) fn passphrase(file: &Option<PathBuf>, what: &str, confirm: bool) -> Result<Option<Vec<u8>>> {
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

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
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

//! `keygen`, `sign`, `verify`: the file side of the trust layer (the `trust` crate itself does
//! no I/O). Secret keys live outside the repository, mode 0600; the tools refuse one that
//! group or others can read.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use trust::{Expect, Kdf, Policy, Prehash, PublicKey, SecretKey, SignatureFile};

use crate::{Exit, repo_root};

pub const DEV_KEY: &str = "keys/dev/dev.key";
const DEV_TRUST: &str = "keys/dev/trust.toml";
const RELEASE_TRUST: &str = "keys/trust.toml";

/// Default home of secret keys: `$XDG_CONFIG_HOME/airlock/keys` or `~/.config/airlock/keys`.
fn secret_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("airlock/keys");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".config/airlock/keys")
}

/// The passphrase from `--passphrase-file` or `$AIRLOCK_PASSPHRASE`, if any.
fn passphrase(file: &Option<PathBuf>) -> Result<Option<Vec<u8>>> {
    if let Some(f) = file {
        let text = fs::read_to_string(f).with_context(|| format!("reading passphrase file {}", f.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").as_bytes().to_vec()));
    }
    Ok(std::env::var("AIRLOCK_PASSPHRASE").ok().filter(|s| !s.is_empty()).map(String::into_bytes))
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(b)
}

/// Reads a secret key, refusing a file that group or others can read.
pub fn load_secret(path: &Path, pass_file: &Option<PathBuf>) -> Result<SecretKey> {
    let meta = fs::metadata(path).with_context(|| format!("secret key {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
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
    let text = fs::read_to_string(path).with_context(|| format!("reading secret key {}", path.display()))?;
    let pass = if SecretKey::is_encrypted(&text).with_context(|| path.display().to_string())? {
        passphrase(pass_file)?
    } else {
        None
    };
    SecretKey::parse(&text, pass.as_deref()).map_err(|e| match e {
        trust::Error::PassphraseNeeded => {
            anyhow::anyhow!("{}: {e} (--passphrase-file FILE or $AIRLOCK_PASSPHRASE)", path.display())
        }
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })
}

/// The committed INSECURE dev key, made 0600 first (git checks files out 0644).
pub fn dev_secret() -> Result<SecretKey> {
    let p = repo_root().join(DEV_KEY);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).with_context(|| format!("chmod 600 {}", p.display()))?;
    load_secret(&p, &None)
}

/// Signature files of `file`: `FILE.minisig` and `FILE.<KEYID>.minisig`, sorted.
pub fn signature_files(file: &Path) -> Result<Vec<PathBuf>> {
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = file.file_name().context("not a file path")?.to_string_lossy().into_owned();
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            n.starts_with(&format!("{base}.")) && n.ends_with(".minisig")
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The signatures of `file`, as (file name, text); a signature file that is not a small
/// regular file is kept as unparsable text, so the report names it and nothing large is read.
pub fn read_signatures(file: &Path) -> Result<Vec<(String, String)>> {
    let mut sigs = Vec::new();
    for p in signature_files(file)? {
        let meta = fs::symlink_metadata(&p)?;
        let text = if meta.is_file() && meta.len() <= trust::MAX_SIG_FILE as u64 {
            fs::read_to_string(&p).unwrap_or_default()
        } else {
            String::from("(not a small regular file)")
        };
        sigs.push((p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), text));
    }
    Ok(sigs)
}

/// The borrowed form `trust::Policy::verify` takes.
pub fn sig_refs(sigs: &[(String, String)]) -> Vec<(String, &str)> {
    sigs.iter().map(|(n, t)| (n.clone(), t.as_str())).collect()
}

/// The default trust policy for a channel: the dev policy for dev, keys/trust.toml otherwise.
pub fn default_policy(dev: bool) -> PathBuf {
    repo_root().join(if dev { DEV_TRUST } else { RELEASE_TRUST })
}

/// Reads and parses a trust policy; a bad policy is a usage error (exit 2).
pub fn load_policy(path: &Path) -> Result<Policy> {
    let text = fs::read_to_string(path).with_context(|| format!("reading trust policy {}", path.display()))?;
    Ok(Policy::parse(&text).map_err(|e| Exit(2, format!("{}: {e}", path.display())))?)
}

/// Product and version when `file` is a build manifest.
fn manifest_fields(file: &Path) -> Option<(String, String, String)> {
    let text = fs::read_to_string(file).ok()?;
    let v: toml::Table = toml::from_str(&text).ok()?;
    let img = v.get("image")?.as_table()?;
    Some((
        img.get("product")?.as_str()?.to_string(),
        img.get("version")?.as_str()?.to_string(),
        img.get("channel")?.as_str()?.to_string(),
    ))
}

/// Signs `file` with `key`, writing `FILE.<KEYID>.minisig` atomically. Returns its path.
pub fn sign_file(file: &Path, key: &SecretKey, role: &str, product: &str, version: &str) -> Result<PathBuf> {
    let f = fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let prehash = Prehash::of_reader(f).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let safe = |s: &str| s.chars().all(|c| c.is_ascii_graphic() && c != '=');
    if !safe(product) || !safe(version) || !safe(&name) {
        bail!(
            "product, version and file name must be printable ASCII without spaces or `=` to go into a trusted comment"
        );
    }
    let comment = format!("airlock product={product} version={version} role={role} file={name}");
    let sig = SignatureFile::sign(key, &prehash, &comment)?;
    let out = file.with_file_name(format!("{name}.{}.minisig", key.id));
    store::write_atomic(&out, sig.to_file().as_bytes())?;
    Ok(out)
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
    /// Encrypt the secret key with the passphrase in this file (or $AIRLOCK_PASSPHRASE).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Leave the secret key unencrypted even without a passphrase (not for release keys).
    #[arg(long)]
    pub no_passphrase: bool,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

impl Keygen {
    pub fn run(self) -> Result<()> {
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || self.name.starts_with('.')
        {
            bail!("key name `{}`: use letters, digits, - _ .", self.name.escape_debug());
        }
        let sdir = self.secret_dir.clone().unwrap_or_else(secret_dir);
        let pdir = self.public_dir.clone().unwrap_or_else(|| repo_root().join("keys"));
        let sk_path = sdir.join(format!("{}.key", self.name));
        let pk_path = pdir.join(format!("{}.pub", self.name));
        // Resolve the directory as it will be (relative paths and symlinks included) before
        // deciding whether it lies inside the repository.
        let abs = std::env::current_dir()?.join(&sdir);
        let resolved = abs.canonicalize().unwrap_or(abs);
        let repo = repo_root().canonicalize().unwrap_or_else(|_| repo_root());
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
        let pass = passphrase(&self.passphrase_file)?;
        if pass.is_none() && !self.no_passphrase {
            bail!(
                "give a passphrase (--passphrase-file FILE or $AIRLOCK_PASSPHRASE), or --no-passphrase for an unencrypted key"
            );
        }
        let key = SecretKey::from_seed(random::<32>()?, random::<8>()?);
        let kdf = pass.as_deref().map(|p| -> Result<Kdf<'_>> {
            Ok(Kdf {
                passphrase: p,
                salt: random::<32>()?,
                opslimit: trust::DEFAULT_OPSLIMIT,
                memlimit: trust::DEFAULT_MEMLIMIT,
            })
        });
        let text = key.to_file(kdf.transpose()?)?;
        fs::create_dir_all(&sdir).with_context(|| format!("creating {}", sdir.display()))?;
        fs::set_permissions(&sdir, fs::Permissions::from_mode(0o700)).ok();
        write_secret(&sk_path, text.as_bytes())?;
        fs::create_dir_all(&pdir).with_context(|| format!("creating {}", pdir.display()))?;
        let public = key.public();
        store::write_atomic(&pk_path, public.to_file().as_bytes())?;
        println!("key id      {}", public.id);
        println!("public key  {}", pk_path.display());
        println!(
            "secret key  {} (mode 0600{})",
            sk_path.display(),
            if pass.is_some() { ", encrypted" } else { ", NOT encrypted" }
        );
        println!("add to keys/trust.toml:\n  {{ name = \"{}\", key = \"{}\" }},", self.name, public.to_base64());
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
    store::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct Sign {
    /// The file to sign (a build manifest, a trust policy, a bundle manifest…).
    pub path: PathBuf,
    /// The secret key.
    #[arg(long)]
    pub key: PathBuf,
    /// The role this signature is made in: release (vendor) or approval (asset owner).
    #[arg(long, default_value = "release")]
    pub role: String,
    /// Product id for the trusted comment (default: from the build manifest).
    #[arg(long)]
    pub product: Option<String>,
    /// Version for the trusted comment (default: from the build manifest).
    #[arg(long)]
    pub version: Option<String>,
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

impl Sign {
    pub fn run(self) -> Result<()> {
        if !matches!(self.role.as_str(), "release" | "approval") {
            bail!("--role must be release or approval");
        }
        let key = load_secret(&self.key, &self.passphrase_file)?;
        let fields = manifest_fields(&self.path);
        if let Some((_, _, channel)) = &fields {
            let dev = PublicKey::parse(trust::DEV_PUBLIC_KEY)?;
            if channel == "release" && key.id == dev.id {
                return Err(Exit(
                    1,
                    format!("{}: a release manifest is never signed with the INSECURE dev key", self.path.display()),
                )
                .into());
            }
        }
        let product = self.product.or_else(|| fields.as_ref().map(|f| f.0.clone())).unwrap_or_else(|| "-".into());
        let version = self.version.or_else(|| fields.as_ref().map(|f| f.1.clone())).unwrap_or_else(|| "-".into());
        let out = sign_file(&self.path, &key, &self.role, &product, &version)?;
        println!("signed {} with key {} ({}): {}", self.path.display(), key.id, self.role, out.display());
        Ok(())
    }
}

/// The channel a bundle's (not yet verified) manifest claims: only picks the default policy.
fn peek_channel(path: &Path) -> Option<String> {
    let mut f = std::io::BufReader::new(fs::File::open(path).ok()?);
    let h = bundle::tar::read_header(&mut f, 0).ok()??;
    if h.size > 1 << 20 {
        return None;
    }
    let mut buf = vec![0u8; h.size as usize];
    std::io::Read::read_exact(&mut f, &mut buf).ok()?;
    let v: toml::Table = toml::from_str(std::str::from_utf8(&buf).ok()?).ok()?;
    v.get("channel")?.as_str().map(str::to_string)
}

impl Verify {
    /// Verifies a bundle fully offline: signatures, then every payload chunk, then the end.
    fn verify_bundle(&self) -> Result<()> {
        let trust_path =
            self.trust.clone().unwrap_or_else(|| default_policy(peek_channel(&self.path).is_some_and(|c| c == "dev")));
        let policy = load_policy(&trust_path)?;
        let f = fs::File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let result = (|| -> Result<(bundle::Manifest, String, u64), bundle::Error> {
            let mut vb = bundle::open(std::io::BufReader::with_capacity(1 << 20, f), &policy, Expect::default())?;
            let mut buf = Vec::new();
            let mut bytes = 0;
            while let Some(mut p) = vb.next_payload()? {
                while p.next_chunk(&mut buf)? {}
                bytes += p.verified();
            }
            let (m, d) = (vb.manifest.clone(), vb.digest.clone());
            vb.finish()?;
            Ok((m, d, bytes))
        })();
        match result {
            Ok((m, digest, bytes)) => {
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({"file": self.path, "policy": trust_path, "accepted": true, "product": m.product, "version": m.version, "security_version": m.security_version, "channel": m.channel, "manifest": digest, "payload_bytes": bytes})
                    );
                } else {
                    println!("{}: accepted (policy {})", self.path.display(), trust_path.display());
                    println!(
                        "  {} {} security_version {} channel {}; {bytes} payload bytes verified chunk by chunk",
                        m.product, m.version, m.security_version, m.channel
                    );
                }
                Ok(())
            }
            Err(e) => {
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({"file": self.path, "policy": trust_path, "accepted": false, "reason": e.code(), "message": e.to_string()})
                    );
                } else {
                    println!("{}: rejected ({}): {e}", self.path.display(), e.code());
                }
                Err(Exit(1, String::new()).into())
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct Verify {
    /// The signed file; its signatures are FILE.minisig and FILE.<KEYID>.minisig beside it.
    pub path: PathBuf,
    /// Trust policy (default: keys/dev/trust.toml for a dev build manifest, else keys/trust.toml).
    #[arg(long)]
    pub trust: Option<PathBuf>,
    /// Print the report as JSON (schema in README.md).
    #[arg(long)]
    pub json: bool,
}

impl Verify {
    pub fn run(self) -> Result<()> {
        if self.path.extension().is_some_and(|x| x == "airlock") {
            return self.verify_bundle();
        }
        let fields = manifest_fields(&self.path);
        let trust_path =
            self.trust.clone().unwrap_or_else(|| default_policy(fields.as_ref().is_some_and(|f| f.2 == "dev")));
        let policy = load_policy(&trust_path)?;
        let f = fs::File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let prehash = Prehash::of_reader(f).with_context(|| format!("reading {}", self.path.display()))?;
        let sigs = read_signatures(&self.path)?;
        let refs = sig_refs(&sigs);
        let expect =
            Expect { product: fields.as_ref().map(|f| f.0.as_str()), version: fields.as_ref().map(|f| f.1.as_str()) };
        let report = policy.verify(&prehash, &refs, &expect);
        if self.json {
            let j = serde_json::json!({
                "file": self.path,
                "policy": trust_path,
                "policy_version": policy.version,
                "accepted": report.accepted,
                "signers": report.signers.iter().map(|s| serde_json::json!({
                    "file": s.file,
                    "key_id": s.key_id.map(|k| k.to_string()),
                    "roles": s.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "verified": s.verified,
                    "reason": s.reason,
                })).collect::<Vec<_>>(),
                "roles": report.roles.iter().map(|r| serde_json::json!({
                    "role": r.role.as_str(), "threshold": r.threshold, "valid": r.valid, "met": r.met,
                })).collect::<Vec<_>>(),
            });
            println!("{j}");
        } else {
            println!("{} (policy {} version {})", self.path.display(), trust_path.display(), policy.version);
            if report.signers.is_empty() {
                println!("  no signature files ({}.*.minisig)", self.path.display());
            }
            for s in &report.signers {
                let id = s.key_id.map(|k| k.to_string()).unwrap_or_else(|| "?".into());
                match &s.reason {
                    None => println!(
                        "  verified  {id}  {}  ({})",
                        s.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join("+"),
                        s.file
                    ),
                    Some(r) => println!("  REJECTED  {id}  {}: {r}", s.file),
                }
            }
            for r in &report.roles {
                println!(
                    "  role {:<9} {} of {} needed: {}",
                    r.role.as_str(),
                    r.valid,
                    r.threshold,
                    if r.met { "met" } else { "NOT met" }
                );
            }
            println!("{}", if report.accepted { "accepted" } else { "rejected" });
        }
        if report.accepted { Ok(()) } else { Err(Exit(1, String::new()).into()) }
    }
}

#[derive(Args, Debug)]
pub struct Rotate {
    /// The next trust policy (version N+1), with its signatures `NEW.KEYID.minisig` beside it,
    /// made by a threshold of the current policy's release keys.
    pub new: PathBuf,
    /// The current policy (default: keys/trust.toml); replaced by NEW when the rotation is
    /// accepted.
    #[arg(long)]
    pub trust: Option<PathBuf>,
}

impl Rotate {
    pub fn run(self) -> Result<()> {
        let current_path = self.trust.clone().unwrap_or_else(|| default_policy(false));
        let current = load_policy(&current_path)?;
        let new_text = fs::read_to_string(&self.new).with_context(|| format!("reading {}", self.new.display()))?;
        let sigs = read_signatures(&self.new)?;
        let next =
            current.rotate(&new_text, &sig_refs(&sigs)).map_err(|e| Exit(1, format!("{}: {e}", self.new.display())))?;
        store::write_atomic(&current_path, new_text.as_bytes())?;
        println!(
            "{}: now version {} ({} release key(s), threshold {}; {} revoked)",
            current_path.display(),
            next.version,
            next.release.keys.len(),
            next.release.threshold,
            next.revoked.len()
        );
        Ok(())
    }
}

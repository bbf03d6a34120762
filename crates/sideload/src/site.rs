//! Site profiles on the device, and the firewall made from them.
//!
//! A profile arrives on a stick as `site-profile.toml` with its `site-profile.toml.KEYID.minisig`
//! signatures. It is read once and bounded, verified under the `approval` role of the device's
//! own policy (the asset owner's keys; a vendor's release key never counts), checked against
//! this image's zones and conduits, compiled into the firewall by the same `zones` crate the
//! builder uses, and checked with `nft -c` — all before anything changes. Then its files are
//! stored by digest, the state records it with one commit, and the new ruleset is loaded with
//! one `nft -f` (one kernel transaction: the old rules stay until the new ones are whole).
//!
//! At every boot, [`firewall`] compiles the ruleset again from this slot's model and the
//! recorded profile (verified again: a profile that no longer verifies or fits is ignored and
//! said so) and loads it before any interface comes up. If the site's ruleset does not load,
//! the image's defaults are loaded; if nothing loads, the command fails, and so does
//! nftables.service, and the network never comes up: closed, never open.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};
use trust::{Expect, Prehash, Role};
use zones::{Model, Origin, SiteProfile};

use crate::agent::{run_tool, shown};
use crate::audit::{Event, record};
use crate::decide;
use crate::device::Device;
use crate::fsutil::{fsync_dir, open_regular, write_atomic};
use crate::reason::Reason;
use crate::state::{self, SiteRecord};
use crate::{Error, failpoint};
use bundle::escape;

/// The profile's file name on a stick.
pub const PROFILE: &str = "site-profile.toml";
/// Largest model file read (`zones.toml`).
const MAX_MODEL: u64 = 1 << 20;

/// A profile and its signature files, as read (nothing verified yet).
pub struct Files {
    pub text: Vec<u8>,
    pub sigs: Vec<(String, Vec<u8>)>,
}

/// A profile whose signatures met the approval role and whose text parsed.
pub struct Verified {
    pub profile: SiteProfile,
    /// `sha256:…` of the profile bytes.
    pub digest: String,
    pub signers: Vec<String>,
    pub files: Files,
}

fn refused(r: Reason, m: impl Into<String>) -> Error {
    Error::Refused(r, m.into())
}

fn read_bounded(f: File, path: &Path, max: u64, what: &str) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > max {
        return Err(refused(
            Reason::Bundle(bundle::Code::TooLarge),
            format!("{what} is larger than the {max} bytes accepted"),
        ));
    }
    Ok(buf)
}

fn open_file(path: &Path, what: &str) -> Result<File, Error> {
    open_regular(path)?.map_err(|why| refused(Reason::NotAFile, format!("{what} {}: {why}", shown(path))))
}

/// Reads the profile in `dir` and its signatures; `None` when there is no profile.
pub fn read_files(dir: &Path) -> Result<Option<Files>, Error> {
    let path = dir.join(PROFILE);
    if fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let text = read_bounded(open_file(&path, "site profile")?, &path, zones::MAX_PROFILE as u64, "the site profile")?;
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let n = e.map_err(|e| Error::io(dir, e))?.file_name();
        let b = n.as_bytes();
        if let Some(id) = b.strip_prefix(b"site-profile.toml.").and_then(|r| r.strip_suffix(b".minisig"))
            && id.len() == 16
            && id.iter().all(u8::is_ascii_hexdigit)
        {
            names.push(String::from_utf8_lossy(b).into_owned());
        }
    }
    names.sort();
    if names.len() > bundle::MAX_SIGNATURES {
        return Err(refused(
            Reason::Bundle(bundle::Code::TooLarge),
            format!("{} site profile signatures, more than the {} accepted", names.len(), bundle::MAX_SIGNATURES),
        ));
    }
    let mut sigs = Vec::new();
    for n in names {
        let p = dir.join(&n);
        let b = read_bounded(open_file(&p, "signature")?, &p, trust::MAX_SIG_FILE as u64, &format!("signature {n}"))?;
        sigs.push((n, b));
    }
    Ok(Some(Files { text, sigs }))
}

/// Verifies a profile's signatures under the device's approval role, then parses it.
pub fn verify(dev: &Device, files: Files) -> Result<Verified, Error> {
    if dev.policy.role(Role::Approval).is_none() {
        return Err(refused(
            Reason::Bundle(bundle::Code::BadSignature),
            "this device's trust policy has no `approval` role: a site profile is signed by the asset owner's approval keys, and this device cannot accept one",
        ));
    }
    let expect = Expect { product: Some(&dev.config.product), version: None };
    let prehash = Prehash::of_bytes(&files.text);
    let accepted = dev.policy.require_role(Role::Approval, &prehash, &files.sigs, &expect).map_err(|r| {
        let rep = r.into_report();
        let role =
            rep.role(Role::Approval).map(|r| format!("approval {}/{}", r.valid, r.threshold)).unwrap_or_default();
        let why: Vec<String> = rep
            .signers()
            .iter()
            .filter_map(|s| {
                s.reason.as_ref().map(|w| format!("{}: {w}", bundle::escape(&s.file))).or_else(|| {
                    (s.role != Some(Role::Approval)).then(|| {
                        format!(
                            "{}: a {} key does not count for a site profile",
                            bundle::escape(&s.file),
                            s.role.map_or("?", |r| r.as_str())
                        )
                    })
                })
            })
            .collect();
        let detail = if rep.signers().is_empty() { "no signatures".to_string() } else { why.join("; ") };
        refused(
            Reason::Bundle(bundle::Code::BadSignature),
            format!("site profile signatures do not meet the approval role: {role} ({detail})"),
        )
    })?;
    let signers = accepted
        .report()
        .signers()
        .iter()
        .filter(|s| s.role == Some(Role::Approval))
        .map(|s| s.key_name.clone().unwrap_or_else(|| s.key_id.map(|k| k.to_string()).unwrap_or_default()))
        .collect();
    let profile = SiteProfile::parse(&files.text).map_err(|e| refused(Reason::BadSiteProfile, e))?;
    if profile.product != dev.config.product {
        return Err(refused(
            Reason::Bundle(bundle::Code::WrongProduct),
            format!(
                "site profile is for product `{}`, this device is `{}`",
                bundle::escape(&profile.product),
                dev.config.product
            ),
        ));
    }
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&files.text)));
    Ok(Verified { profile, digest, signers, files })
}

/// This slot's zones and conduits.
pub fn model(dev: &Device) -> Result<Model, Error> {
    let f = File::open(&dev.zones).map_err(|e| Error::io(&dev.zones, e))?;
    let mut text = String::new();
    f.take(MAX_MODEL).read_to_string(&mut text).map_err(|e| Error::io(&dev.zones, e))?;
    Model::parse(&text).map_err(|e| Error::State(format!("{}: {e}", dev.zones.display())))
}

fn image_label(dev: &Device) -> String {
    let v = dev.config.version.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    format!("{} {v}", dev.config.product)
}

/// The model with the profile's facts, and the ruleset they compile to.
pub fn compile(dev: &Device, model: &Model, profile: Option<&SiteProfile>) -> Result<(Model, String), Error> {
    let (m, site) = match profile {
        Some(p) => (
            p.apply(model, &dev.config.product).map_err(|ps| {
                refused(Reason::BadSiteProfile, format!("site profile does not fit this image: {}", ps.join("; ")))
            })?,
            format!("site {}, serial {}", p.site, p.serial),
        ),
        None => (model.clone(), String::new()),
    };
    let rules = zones::ruleset(&m, &Origin { image: image_label(dev), site });
    Ok((m, rules))
}

/// Runs `nft ARGS FILE`; Err with nft's own words.
fn nft(args: &[&str], file: &Path) -> Result<(), String> {
    let o = Command::new("nft").args(args).arg(file).output().map_err(|e| format!("nft: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().chars().take(2000).collect())
    }
}

/// Checks a ruleset with `nft -c` (live devices only; a simulated one has no firewall).
pub fn check(dev: &Device, rules: &str) -> Result<(), Error> {
    if !dev.live.nft {
        return Ok(());
    }
    fs::create_dir_all(&dev.run).map_err(|e| Error::io(&dev.run, e))?;
    // The device lock is held: one checker at a time, so a per-process name is unique.
    let tmp = dev.run.join(format!(".nftables.check.{}", std::process::id()));
    fs::write(&tmp, rules).map_err(|e| Error::io(&tmp, e))?;
    let r = nft(&["-c", "-f"], &tmp);
    let _ = fs::remove_file(&tmp);
    r.map_err(|e| refused(Reason::RulesetRefused, format!("nft -c refused the ruleset: {e}")))
}

fn site_dir(dev: &Device) -> PathBuf {
    dev.data.join("site")
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Stores a verified profile's files by digest (nothing points at them yet).
pub fn store(dev: &Device, v: &Verified) -> Result<(), Error> {
    let dir = site_dir(dev);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let hex = hex_of(&v.digest);
    for (name, bytes) in &v.files.sigs {
        let id = name.trim_start_matches("site-profile.toml.").trim_end_matches(".minisig");
        write_atomic(&dir.join(format!("{hex}.{id}.minisig")), bytes)?;
    }
    write_atomic(&dir.join(format!("{hex}.toml")), &v.files.text)?;
    fsync_dir(&dir)
}

/// Removes stored profiles other than `keep`.
pub fn prune(dev: &Device, keep: &str) {
    let dir = site_dir(dev);
    let Ok(rd) = fs::read_dir(&dir) else { return };
    for e in rd.flatten() {
        let n = e.file_name();
        if !n.as_bytes().starts_with(hex_of(keep).as_bytes()) {
            let _ = fs::remove_file(e.path());
        }
    }
    let _ = fsync_dir(&dir);
}

/// The recorded profile, read back and verified again (a profile that was edited on the data
/// partition, or that the current policy no longer accepts, is refused).
pub fn recorded(dev: &Device, rec: &SiteRecord) -> Result<Verified, Error> {
    let dir = site_dir(dev);
    let hex = hex_of(&rec.digest);
    let path = dir.join(format!("{hex}.toml"));
    let text = read_bounded(
        open_file(&path, "stored site profile")?,
        &path,
        zones::MAX_PROFILE as u64,
        "the stored site profile",
    )?;
    let mut sigs = Vec::new();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{hex}.")) && n.ends_with(".minisig"))
        .collect();
    names.sort();
    for n in names.into_iter().take(bundle::MAX_SIGNATURES) {
        let p = dir.join(&n);
        let b = read_bounded(open_file(&p, "stored signature")?, &p, trust::MAX_SIG_FILE as u64, "a stored signature")?;
        let id = n.trim_start_matches(&format!("{hex}.")).trim_end_matches(".minisig").to_string();
        sigs.push((format!("site-profile.toml.{id}.minisig"), b));
    }
    let v = verify(dev, Files { text, sigs })?;
    if v.digest != rec.digest {
        return Err(refused(
            Reason::Bundle(bundle::Code::HashMismatch),
            format!("stored site profile {} does not match its record", path.display()),
        ));
    }
    Ok(v)
}

/// What [`activate`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Activated {
    /// `site S, serial N`, or `image defaults`.
    pub ruleset: String,
    pub loaded: bool,
    pub notes: Vec<String>,
}

/// Writes the box's interface configuration for `m` (one systemd-networkd file per zone bound
/// to interfaces) and removes the generated files of an earlier model.
fn write_network(dev: &Device, m: &Model, origin: &str) -> Result<(), Error> {
    let dir = &dev.network;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let files = zones::networkd(m, origin);
    for (name, text) in &files {
        write_atomic(&dir.join(name), text.as_bytes())?;
    }
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(zones::NETWORK_PREFIX) && n.ends_with(".network") && !files.iter().any(|(f, _)| *f == n) {
            fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), err))?;
        }
    }
    fsync_dir(dir)
}

/// Writes the runtime files for a compiled model (ruleset, interface configuration, NTP
/// sources, broker credentials and ACL), and on a live device loads the ruleset and tells the
/// services.
pub fn activate(dev: &Device, m: &Model, rules: &str, profile: Option<&SiteProfile>) -> Result<Activated, Error> {
    let run = &dev.run;
    for d in [run.clone(), run.join("chrony"), run.join("mqtt"), run.join("api")] {
        fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    let label =
        profile.map_or_else(|| "image defaults".to_string(), |p| format!("site {}, serial {}", p.site, p.serial));
    let sources = profile
        .map_or_else(|| "# Airlock: no site profile: no NTP servers yet.\n".to_string(), SiteProfile::chrony_sources);
    write_atomic(&run.join("chrony/site.sources"), sources.as_bytes())?;
    write_atomic(&run.join("mqtt/devices"), profile.map(SiteProfile::mosquitto_passwd).unwrap_or_default().as_bytes())?;
    let acl = profile
        .map_or_else(|| zones::field_acl(&[], "the image's defaults (no site profile)"), SiteProfile::mosquitto_acl);
    write_atomic(&run.join("mqtt/devices.acl"), acl.as_bytes())?;
    // The operators who may write through the parking controller's API (read at each write).
    write_atomic(&run.join("api/operators"), profile.map(SiteProfile::operators_file).unwrap_or_default().as_bytes())?;
    write_network(dev, m, &label)?;
    let file = run.join("nftables.conf");
    write_atomic(&file, rules.as_bytes())?;
    let mut notes = Vec::new();
    let mut loaded = false;
    if dev.live.nft {
        nft(&["-f"], &file).map_err(|e| Error::State(format!("nft -f {}: {e}", file.display())))?;
        loaded = true;
    }
    if dev.live.system {
        if let Some(p) = profile
            && let Err(e) = rustix::system::sethostname(p.hostname.as_bytes())
        {
            notes.push(format!("hostname {}: {e}", p.hostname));
        }
        // chronyd and mosquitto read their new files (when they run: at boot they start later
        // and read them then).
        let mut cmds: Vec<(&str, Command)> = Vec::new();
        if Path::new("/run/chrony/chronyd.sock").exists() {
            let mut c = Command::new("chronyc");
            c.args(["reload", "sources"]);
            cmds.push(("chronyc reload sources", c));
        }
        let mut c = Command::new("systemctl");
        c.args(["--no-block", "try-reload-or-restart", "mosquitto.service"]);
        cmds.push(("systemctl try-reload-or-restart mosquitto", c));
        // systemd-networkd reads the new interface configuration (when it runs: at boot it
        // starts after the firewall and reads it then).
        if Path::new("/run/systemd/netif/state").exists() {
            let mut c = Command::new("networkctl");
            c.arg("reload");
            cmds.push(("networkctl reload", c));
        }
        notes.extend(cmds.into_iter().filter_map(|(what, mut c)| failed(what, &mut c)));
    }
    Ok(Activated { ruleset: label, loaded, notes })
}

/// What went wrong running `c` (None when it exited 0), for a note.
fn failed(what: &str, c: &mut Command) -> Option<String> {
    match c.output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("{what}: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!("{what}: {e}")),
    }
}

/// At boot (and on `systemctl reload nftables`): the firewall from this slot's model and the
/// recorded profile, falling back to the image's defaults; Err only when nothing loads.
pub fn firewall(dev: &Device) -> Result<(Activated, Vec<String>), Error> {
    let mut warnings = Vec::new();
    let model = model(dev)?;
    let state = crate::state::load(&dev.data).ok().flatten();
    let site = match state.and_then(|s| s.site) {
        None => None,
        Some(rec) => match recorded(dev, &rec).and_then(|v| compile(dev, &model, Some(&v.profile)).map(|c| (v, c))) {
            Ok(x) => Some(x),
            Err(e) => {
                warnings.push(format!(
                    "site profile {} (serial {}) is not used: {e}; the image's defaults apply",
                    rec.site, rec.serial
                ));
                None
            }
        },
    };
    if let Some((v, (m, rules))) = &site {
        match activate(dev, m, rules, Some(&v.profile)) {
            Ok(a) => return Ok((a, warnings)),
            Err(e) => warnings.push(format!("the site's ruleset did not load: {e}; loading the image's defaults")),
        }
    }
    let (m, rules) = compile(dev, &model, None)?;
    match activate(dev, &m, &rules, None) {
        Ok(a) => Ok((a, warnings)),
        // Nothing loaded: every reason goes with the error (the warnings are not printed then).
        Err(e) => {
            let either = if warnings.is_empty() { "" } else { " either" };
            warnings.push(format!("the image's defaults did not load{either}: {e}"));
            Err(Error::State(format!("no firewall loaded: {}", warnings.join("; "))))
        }
    }
}

/// The audit fields of an installed profile.
pub fn audit_fields(v: &Verified, m: &Model) -> serde_json::Value {
    json!({
        "site": v.profile.site,
        "serial": v.profile.serial,
        "digest": v.digest,
        "signers": v.signers,
        "hostname": v.profile.hostname,
        "zones": m.zones.iter().map(|z| json!({"name": z.name, "ranges": z.ranges.iter().map(|r| r.to_string()).collect::<Vec<_>>(), "interfaces": z.interfaces})).collect::<Vec<_>>(),
        "devices": v.profile.devices.len(),
        "operators": v.profile.operators.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
    })
}

/// The site profile on a stick, applied by the agent holding the device: this surface calls
/// the agent's core (the site decision, one commit), the core never calls it.
impl crate::agent::Agent {
    /// Verifies, checks and applies the site profile in `dir` (a stick): `Ok(None)` when there
    /// is none. Every refusal is audited and changes nothing; the profile in force and the
    /// running ruleset stay as they were.
    pub fn install_site(&mut self, dir: &Path) -> Result<Option<String>, Error> {
        let name = shown(&dir.join(PROFILE));
        match self.try_install_site(dir) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.refused(&name, &e, "install-site")?;
                Err(e)
            }
        }
    }

    fn try_install_site(&mut self, dir: &Path) -> Result<Option<String>, Error> {
        let Some(files) = read_files(dir)? else { return Ok(None) };
        let v = verify(self.dev(), files)?;
        let p = &v.profile;
        let change = decide::site_change(self.state(), &p.site, p.serial, p.resite_from.as_deref(), &v.digest)?;
        if change == decide::SiteChange::AlreadyInForce {
            return Ok(Some(format!("site profile {} serial {} is already in force", p.site, p.serial)));
        }
        let model = model(self.dev())?;
        let (m, rules) = compile(self.dev(), &model, Some(&v.profile))?;
        check(self.dev(), &rules)?;
        failpoint("site-before-store");
        store(self.dev(), &v)?;
        let mut next = self.state().clone();
        let previous = next.site.replace(state::SiteRecord {
            site: v.profile.site.clone(),
            serial: v.profile.serial,
            digest: v.digest.clone(),
        });
        if let Some(prev) = &previous {
            let seen = next.site_serials.entry(prev.site.clone()).or_insert(0);
            *seen = (*seen).max(prev.serial);
        }
        let seen = next.site_serials.entry(v.profile.site.clone()).or_insert(0);
        *seen = (*seen).max(v.profile.serial);
        let mut fields = audit_fields(&v, &m);
        if let decide::SiteChange::Resite { from } = &change {
            fields["resited_from"] = json!(from);
        }
        self.commit(next, &[record(Event::SiteProfileInstalled, fields)])?;
        failpoint("site-after-commit");
        if previous.is_some() {
            prune(self.dev(), &v.digest);
        }
        let how = if self.dev().live.via_systemd {
            // The agent may run in a private network namespace (the USB service): the firewall
            // is loaded by nftables.service, in the appliance's own.
            if let Err(why) = run_tool(&["systemctl", "reload", "nftables.service"])? {
                self.commit(
                    self.state().clone(),
                    &[record(Event::SiteProfileNotLoaded, json!({"digest": v.digest, "message": escape(&why)}))],
                )?;
                return Err(Error::State(format!(
                    "site profile recorded, but reloading the firewall failed: {why} (the previous rules stay loaded)"
                )));
            }
            "loaded by nftables.service".to_string()
        } else {
            let a = activate(self.dev(), &m, &rules, Some(&v.profile))?;
            if a.loaded {
                "loaded".to_string()
            } else {
                format!("written to {}", self.dev().run.join("nftables.conf").display())
            }
        };
        Ok(Some(format!(
            "site profile {} serial {} installed (signed by {}): {} zone(s), {} conduit(s), {} field device(s); firewall {how}",
            v.profile.site,
            v.profile.serial,
            v.signers.join(", "),
            m.zones.len(),
            m.conduits.len(),
            v.profile.devices.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_service_that_did_not_take_its_new_files_leaves_a_note_with_its_words() {
        let sh = |script: &str| {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        };
        assert_eq!(failed("reload", &mut sh("echo fine; exit 0")), None);
        assert_eq!(failed("reload", &mut sh("echo ' no broker ' >&2; exit 3")).as_deref(), Some("reload: no broker"));
        let missing = failed("chronyc", &mut Command::new("/nonexistent/chronyc")).unwrap();
        assert!(missing.starts_with("chronyc: ") && missing.len() > "chronyc: ".len(), "{missing}");
    }
}

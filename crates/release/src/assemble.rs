//! A bundle from a build directory: the provenance statement, `root.img` (and the slot's
//! kernel and initrd when the build made them) compressed and chunk-hashed, a bundle manifest,
//! its signatures and the statement's DSSE signatures, then `NAME-VERSION.airlock` — written
//! only once both sets of signatures meet the policy. A bundle
//! manifest that already has signatures is never replaced by other bytes.

use std::fs;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use bundle::Target;
use sha2::Digest;
use trust::{Expect, Prehash, Role, SecretKey};

use crate::files::{open_regular, read_bounded, sync_dir, write_atomic};
use crate::sigfiles::{read_signatures, signature_paths};
use crate::{Error, Result, sign_file};

pub const BUNDLE_MANIFEST: &str = "bundle-manifest.toml";
pub const BUILD_MANIFEST: &str = schema::MANIFEST_NAME;

/// The payloads a bundle carries, in order, when the build directory holds them: the
/// provenance statement first (its signatures are checked before a slot byte is written).

#[derive(Debug)]
pub enum Assembled {
    Written {
        path: PathBuf,
        manifest: PathBuf,
        report: trust::Report,
        /// The provenance statement's DSSE signatures (when the build made one).
        provenance: Option<trust::Report>,
    },
    /// The signatures (of the bundle manifest, or of the provenance statement the bundle
    /// carries) do not meet the policy yet.
    Waiting { manifest: PathBuf, report: trust::Report, provenance: Option<trust::Report> },
}

/// The provenance statement's DSSE signatures beside it (`provenance.json.KEYID.dsse`) and
/// what they prove against `policy`: (entry name, file text) of each that verified, and the
/// report. The statement read here is checked against the digest the manifest holds.
fn provenance_signatures(
    dir: &Path,
    policy: &trust::Policy,
    sha256: &str,
) -> Result<(Vec<(String, String)>, trust::Report)> {
    let statement = dir.join(bundle::PROVENANCE);
    let payload = read_bounded(&statement, trust::dsse::MAX_PAYLOAD as u64)?
        .ok_or_else(|| Error::Usage(format!("{}: too large to be a provenance statement", statement.display())))?;
    if hex::encode(sha2::Sha256::digest(&payload)) != sha256 {
        return Err(Error::Usage(format!("{}: changed while the bundle was made", statement.display())));
    }
    let mut files = Vec::new();
    for p in crate::provenance::dsse_paths(&statement)? {
        let Some(b) = read_bounded(&p, trust::MAX_SIG_FILE as u64)? else { continue };
        if let Ok(sig) = serde_json::from_slice::<trust::dsse::Signature>(&b) {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.push((name, String::from_utf8_lossy(&b).into_owned(), sig));
        }
    }
    let sigs: Vec<trust::dsse::Signature> = files.iter().map(|(_, _, s)| s.clone()).collect();
    let report = policy.verify_dsse(trust::dsse::IN_TOTO, &payload, &sigs);
    let counted = files
        .into_iter()
        .zip(report.signers())
        .filter(|(_, s)| s.verified())
        .map(|((name, text, _), _)| (name, text))
        .collect();
    Ok((counted, report))
}

struct BuildInfo {
    name: String,
    version: product::Version,
    product: String,
    channel: product::Channel,
    security_version: u64,
}

/// The sha256 the build manifest lists for output `name`.
fn output_sha(bm_text: &str, name: &str) -> Option<String> {
    schema::BuildFacts::parse(bm_text).ok()?.output_sha256(name).map(str::to_string)
}

/// The slot's kernel command line the build recorded (`settings."cmdline.a"`), without the
/// `root=` that names slot a: what the agent writes into whichever slot it installs.
fn build_cmdline(bm_text: &str) -> Option<String> {
    let facts = schema::BuildFacts::parse(bm_text).ok()?;
    let full = facts.cmdline_a()?;
    let tail: Vec<&str> = full.split(' ').filter(|w| !w.starts_with("root=")).collect();
    Some(tail.join(" ")).filter(|t| bundle::valid_cmdline(t).is_ok())
}

/// The slot's dm-verity table the build recorded (`[verity]`), signed again in the bundle.
fn build_verity(bm_text: &str) -> Option<bundle::Verity> {
    schema::BuildFacts::parse(bm_text).ok()?.verity
}

fn build_info(text: &str, path: &Path) -> Result<BuildInfo> {
    let bad = |why: &str| Error::Usage(format!("{}: {why}", path.display()));
    let img = schema::BuildFacts::parse(text).map_err(|e| bad(&format!("not a build manifest: {e}")))?.image;
    Ok(BuildInfo {
        version: product::Version::parse(&img.version).map_err(|e| bad(&e.to_string()))?,
        channel: img.channel.parse().map_err(|e: String| bad(&e))?,
        name: img.name,
        product: img.product,
        security_version: img.security_version,
    })
}

/// The bundle already written for exactly this build, when nothing changed: its signed
/// manifest is the one beside it, names this build manifest and the previous release, its
/// payloads are the build's outputs by digest, and its signatures still meet the policy.
/// Reads only the bundle's first entries (no payload is compressed again).
fn up_to_date(
    dir: &Path,
    info: &BuildInfo,
    bm_text: &str,
    previous_manifest: &str,
    policy: &trust::Policy,
) -> Result<Option<Assembled>> {
    let path = dir.join(format!("{}-{}.airlock", info.name, info.version));
    let mpath = dir.join(BUNDLE_MANIFEST);
    let (Ok(f), Some(beside)) = (open_regular(&path), read_bounded(&mpath, bundle::MAX_MANIFEST).ok().flatten()) else {
        return Ok(None);
    };
    let version = info.version.to_string();
    let expect = Expect { product: Some(&info.product), version: Some(&version) };
    let Ok(vb) = bundle::open(BufReader::new(f), policy, expect) else { return Ok(None) };
    let output_sha = |name: &str| output_sha(bm_text, name);
    let m = vb.manifest();
    let same = toml::to_string(m).is_ok()
        && m.build_manifest == format!("sha256:{}", hex::encode(sha2::Sha256::digest(bm_text.as_bytes())))
        && m.previous_manifest == previous_manifest
        && m.verity == build_verity(bm_text)
        && m.payloads.iter().all(|p| output_sha(&p.name).as_deref() == Some(p.sha256.as_str()))
        && vb.digest() == format!("sha256:{}", hex::encode(sha2::Sha256::digest(&beside)));
    if !same {
        return Ok(None);
    }
    let report = vb.report().clone();
    let provenance = match m.payloads.iter().find(|p| p.target == Target::Provenance) {
        Some(p) => Some(provenance_signatures(dir, policy, &p.sha256)?.1),
        None => None,
    };
    Ok(Some(Assembled::Written { path, manifest: mpath, report, provenance }))
}

/// Assembles the bundle of the build in `dir`. `dev_keys` sign dev bundles; release bundles
/// wait for the offline signers' `bundle-manifest.toml.KEYID.minisig` files. `force` allows
/// replacing a signed bundle manifest that differs (its signatures are deleted).
pub fn assemble(
    dir: &Path,
    previous: Option<&Path>,
    policy: &trust::Policy,
    dev_keys: &[(Role, &SecretKey)],
    force: bool,
) -> Result<Assembled> {
    let bm_path = dir.join(BUILD_MANIFEST);
    let bm_text =
        read_bounded(&bm_path, bundle::MAX_MANIFEST)?.and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| {
            Error::Usage(format!(
                "{}: missing, too large or not text: run `cargo xtask build` first",
                bm_path.display()
            ))
        })?;
    let info = build_info(&bm_text, &bm_path)?;
    let previous_manifest = match previous {
        Some(p) => {
            let bytes = read_bounded(p, bundle::MAX_MANIFEST)?
                .ok_or_else(|| Error::Usage(format!("{}: too large to be a bundle manifest", p.display())))?;
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
        }
        None => String::new(),
    };

    if let Some(done) = up_to_date(dir, &info, &bm_text, &previous_manifest, policy)? {
        return Ok(done);
    }

    // Compress each payload into a scratch file beside the output, hashing chunk by chunk.
    let mut scratch = Vec::new();
    let mut payloads = Vec::new();
    for k in bundle::PAYLOAD_KINDS {
        let (name, target) = (k.name, &k.target);
        let src = dir.join(name);
        if !src.exists() {
            if *target == Target::Root {
                return Err(Error::Usage(format!("{}: no root.img to bundle", dir.display())));
            }
            continue;
        }
        let tmp = tempfile::Builder::new().prefix(&format!(".{name}.zst.")).tempfile_in(dir).map_err(Error::io(dir))?;
        let out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let p = bundle::compress_payload(
            name,
            *target,
            BufReader::with_capacity(1 << 20, open_regular(&src)?),
            out,
            bundle::DEFAULT_CHUNK,
        )
        .map_err(|e| Error::Usage(format!("{}: {e}", src.display())))?;
        if let Some(listed) = output_sha(&bm_text, name).filter(|l| *l != p.sha256) {
            return Err(Error::Usage(format!(
                "{}: sha256 {} differs from the {listed} that {BUILD_MANIFEST} lists: the file changed after the build; build again",
                src.display(),
                p.sha256
            )));
        }
        payloads.push(p);
        scratch.push(tmp);
    }
    let manifest = bundle::Manifest {
        format: bundle::FORMAT,
        product: info.product.clone(),
        version: info.version.clone(),
        security_version: info.security_version,
        channel: info.channel,
        previous_manifest,
        build_manifest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(bm_text.as_bytes()))),
        hash: "sha256".into(),
        chunk_size: bundle::DEFAULT_CHUNK,
        cmdline: build_cmdline(&bm_text),
        verity: build_verity(&bm_text),
        payloads,
    };
    let mtext = manifest.to_toml().map_err(|e| Error::Usage(e.to_string()))?;
    let mpath = dir.join(BUNDLE_MANIFEST);
    let existing = read_bounded(&mpath, bundle::MAX_MANIFEST).ok().flatten();
    if existing.as_deref() != Some(mtext.as_bytes()) {
        let old_sigs = signature_paths(&mpath)?;
        if existing.is_some() && !old_sigs.is_empty() {
            if !force {
                return Err(Error::Usage(format!(
                    "{}: exists with {} signature(s) over other bytes; a signed manifest is never replaced silently: bump image.version, or pass --force to delete those signatures",
                    mpath.display(),
                    old_sigs.len()
                )));
            }
            for s in old_sigs {
                eprintln!("deleting {} (it signs the previous bundle manifest)", s.display());
                fs::remove_file(&s).map_err(Error::io(&s))?;
            }
        }
        write_atomic(&mpath, mtext.as_bytes())?;
    }
    for (role, k) in dev_keys {
        sign_file(&mpath, k, *role, Some(&info.product), Some(&info.version.to_string()))?;
    }
    // Inside the bundle, `bundle-manifest.toml.KEYID.minisig` is `manifest.toml.KEYID.minisig`.
    let sigs: Vec<(String, Vec<u8>)> = read_signatures(&mpath)?
        .into_iter()
        .filter(|(name, _)| name != &format!("{BUNDLE_MANIFEST}.minisig"))
        .map(|(name, bytes)| (name.replacen(BUNDLE_MANIFEST, bundle::MANIFEST_ENTRY, 1), bytes))
        .collect();
    let version = info.version.to_string();
    let expect = Expect { product: Some(&info.product), version: Some(&version) };
    let report = policy.verify(&Prehash::of_bytes(mtext.as_bytes()), &sigs, &expect);
    let (dsse, provenance) = match manifest.payloads.iter().find(|p| p.target == Target::Provenance) {
        Some(p) => {
            let (files, r) = provenance_signatures(dir, policy, &p.sha256)?;
            (files, Some(r))
        }
        None => (Vec::new(), None),
    };
    if !report.accepted() || provenance.as_ref().is_some_and(|r| !r.accepted()) {
        return Ok(Assembled::Waiting { manifest: mpath, report, provenance });
    }
    // Only signatures that counted go into the bundle (a stale or foreign one would make
    // every device log a refusal).
    let counted: Vec<(String, String)> = sigs
        .iter()
        .filter(|(name, _)| report.signers().iter().any(|s| &s.file == name && s.verified()))
        .map(|(n, b)| (n.clone(), String::from_utf8_lossy(b).into_owned()))
        .chain(dsse)
        .collect();
    let name = format!("{}-{}.airlock", info.name, info.version);
    let dest = dir.join(&name);
    let out = tempfile::Builder::new().prefix(&format!(".{name}.")).tempfile_in(dir).map_err(Error::io(dir))?;
    {
        let w = BufWriter::with_capacity(1 << 20, out.as_file());
        let mut readers: Vec<fs::File> =
            scratch.iter().map(|t| t.reopen()).collect::<std::io::Result<_>>().map_err(Error::io(dir))?;
        let mut parts: Vec<(&bundle::Payload, &mut dyn std::io::Read)> =
            manifest.payloads.iter().zip(readers.iter_mut()).map(|(p, r)| (p, r as &mut dyn std::io::Read)).collect();
        bundle::write_bundle(w, mtext.as_bytes(), &counted, &mut parts).map_err(|e| Error::Usage(e.to_string()))?;
    }
    out.as_file().sync_all().map_err(Error::io(&dest))?;
    {
        use std::os::unix::fs::PermissionsExt;
        out.as_file().set_permissions(fs::Permissions::from_mode(0o644)).map_err(Error::io(&dest))?;
    }
    out.persist(&dest).map_err(|e| Error::Io { path: dest.clone(), source: e.error })?;
    sync_dir(dir)?;
    Ok(Assembled::Written { path: dest, manifest: mpath, report, provenance })
}

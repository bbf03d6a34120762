//! The security officer's evidence of a built image, made again from the image directory
//! alone (a USB copy of it is enough): the provenance envelope assembled from the signatures
//! beside `provenance.json`, then `report.html` and `report.json` — built from the shipped
//! files themselves (the signed build manifest, the SBOM, the image's own zones model, ruleset
//! and trust root read out of `rootfs.tar.zst`), every digest checked first. `build`,
//! `bundle`, `repro` and `evidence DIR` all call [`make`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use release::LoadedPolicy;

use crate::error::{Error, Result, io_err};

/// Files read out of the image's root filesystem archive.
fn from_rootfs(tar_zst: &Path, want: &[&str]) -> Result<BTreeMap<String, Vec<u8>>> {
    let io = io_err(tar_zst);
    let read = || -> std::io::Result<BTreeMap<String, Vec<u8>>> {
        let f = std::fs::File::open(tar_zst)?;
        let dec = zstd::stream::read::Decoder::new(f)?;
        let mut a = tar::Archive::new(dec);
        let mut out = BTreeMap::new();
        for e in a.entries()? {
            let mut e = e?;
            let p = e.path()?.to_string_lossy().trim_start_matches("./").trim_start_matches('/').to_string();
            if want.contains(&p.as_str()) && e.header().entry_type().is_file() && e.size() <= 4 << 20 {
                let mut b = Vec::new();
                e.read_to_end(&mut b)?;
                out.insert(p, b);
            }
        }
        Ok(out)
    };
    read().map_err(io)
}

pub struct Made {
    pub report_html: PathBuf,
    pub envelope: Option<PathBuf>,
    pub accepted: bool,
    pub lines: Vec<String>,
}

/// Makes the envelope (when signatures exist) and the report of the image in `dir`.
pub fn make(dir: &Path, lp: &LoadedPolicy, reproducibility: Option<String>) -> Result<Made> {
    let manifest_path = dir.join(crate::MANIFEST_NAME);
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| Error::Invalid(format!("{}: not a built image directory: {e}", manifest_path.display())))?;
    let manifest: crate::manifest::BuildManifest = toml::from_str(&manifest_text)
        .map_err(|e| Error::Invalid(format!("{}: {}", manifest_path.display(), e.message())))?;
    let mut lines = Vec::new();
    // Every output present is checked against the (signed) manifest before it is used.
    let mut outputs = Vec::new();
    for (name, o) in &manifest.outputs {
        let p = dir.join(name);
        if !p.exists() {
            lines.push(format!("{name}: not in this directory (not checked)"));
            continue;
        }
        let (sha, size) = store::sha256_file(&p)?;
        if sha != o.sha256 || size != o.size {
            return Err(Error::Invalid(format!(
                "{}: sha256 {sha} does not match the build manifest's {}: refusing to report on altered files",
                p.display(),
                o.sha256
            )));
        }
        outputs.push(evidence::OutputFile { name: name.clone(), sha256: sha, size });
    }
    let build_round = release::verify_file(&manifest_path, lp)?;
    let mut rounds = vec![round(&build_round)];
    let bm = dir.join(release::BUNDLE_MANIFEST);
    if bm.exists() {
        rounds.push(round(&release::verify_file(&bm, lp)?));
    }
    let mut envelope = None;
    if dir.join(evidence::STATEMENT_NAME).exists() && !release::provenance::assemble_if_signed(dir)?.is_empty() {
        let env = dir.join(evidence::ENVELOPE_NAME);
        let r = release::provenance::verify(&env, lp)?;
        rounds.push(evidence::report::Round {
            file: evidence::ENVELOPE_NAME.into(),
            accepted: r.accepted(),
            summary: r.summary.clone(),
            signers: r.signers.clone(),
        });
        envelope = Some(env);
    }
    let sbom_path = dir.join(evidence::SPDX_NAME);
    let sbom_bytes = std::fs::read(&sbom_path).map_err(io_err(&sbom_path))?;
    let sbom = evidence::sbom::summarize_spdx(&sbom_bytes).map_err(Error::Invalid)?;
    let files = from_rootfs(
        &dir.join(crate::ROOTFS_NAME),
        &["etc/airlock/zones.toml", "etc/nftables.conf", "etc/airlock/trust.toml"],
    )?;
    let text = |k: &str| String::from_utf8_lossy(files.get(k).map(Vec::as_slice).unwrap_or_default()).into_owned();
    let model = zones::Model::parse(&text("etc/airlock/zones.toml")).unwrap_or_default();
    let ruleset = text("etc/nftables.conf");
    let baked = trust::Policy::parse(&text("etc/airlock/trust.toml"))
        .map_err(|e| Error::Invalid(format!("the image's /etc/airlock/trust.toml: {e}")))?;
    let policy = evidence::report::PolicySummary {
        path: "/etc/airlock/trust.toml (baked into the image)".into(),
        version: baked.version(),
        channel: baked.channel().to_string(),
        roles: baked
            .roles()
            .map(|(role, r)| evidence::report::PolicyRole {
                role: role.to_string(),
                threshold: r.threshold(),
                keys: r
                    .keys()
                    .iter()
                    .map(|k| format!("{} ({})", k.names().first().cloned().unwrap_or_default(), k.public().id()))
                    .collect(),
            })
            .collect(),
        revoked: baked.revoked().0.len() + baked.revoked().1.len(),
        chain: vec![format!("the verifier's policy: {}", lp.chain.describe())],
        insecure_dev_key: baked.trusts_dev_key(),
    };
    let accepted = rounds.iter().all(|r| r.accepted);
    let input = evidence::report::Input {
        name: &manifest.image.name,
        version: &manifest.image.version,
        product: &manifest.image.product,
        channel: &manifest.image.channel,
        build_key: &manifest.build_key,
        recipe: &manifest.inputs.recipe,
        outputs: &outputs,
        rounds: &rounds,
        policy: &policy,
        reproducibility: reproducibility.as_deref(),
        sbom: &sbom,
        zones: &model,
        ruleset: &ruleset,
    };
    let html = dir.join(evidence::REPORT_HTML);
    store::write_atomic(&html, evidence::report::html(&input).as_bytes())?;
    store::write_atomic(&dir.join(evidence::REPORT_JSON), evidence::report::json(&input).as_bytes())?;
    lines.push(format!(
        "SBOM: {} Debian packages, {} crates, {} artifact(s); {} zone(s), {} conduit(s)",
        sbom.debian_packages,
        sbom.crates,
        sbom.artifacts,
        model.zones.len(),
        model.conduits.len()
    ));
    for r in &rounds {
        lines.push(format!("{}: {}", r.file, r.summary));
    }
    Ok(Made { report_html: html, envelope, accepted, lines })
}

fn round(r: &release::FileReport) -> evidence::report::Round {
    let (signers, _) = bundle::signer_lines(r.report());
    evidence::report::Round {
        file: Path::new(&r.file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        accepted: r.accepted(),
        summary: r.report().summary(),
        signers: signers
            .iter()
            .map(|s| match (&s.role, s.verified) {
                (Some(role), true) => format!(
                    "verified {} ({role}{})",
                    s.key_id.clone().unwrap_or_default(),
                    s.key_name.as_deref().map(|n| format!(" `{n}`")).unwrap_or_default()
                ),
                _ => format!("refused {}: {}", s.file, s.reason.clone().unwrap_or_default()),
            })
            .collect(),
    }
}

/// The reproducibility record beside a build, when `repro` wrote one for this very build (its
/// build key is the signed build manifest's): an unsigned claim, which the report marks as
/// such. A record of another build (or none that parses) is not shown at all.
pub fn reproducibility(dir: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("reproducibility.json")).ok()?).ok()?;
    let manifest: crate::manifest::BuildManifest =
        toml::from_str(&std::fs::read_to_string(dir.join(crate::MANIFEST_NAME)).ok()?).ok()?;
    if v["build_key"].as_str() != Some(manifest.build_key.as_str())
        || v["reproducible"] != serde_json::Value::Bool(true)
    {
        return None;
    }
    Some(v["summary"].as_str()?.chars().take(2000).collect())
}

//! The facts the evidence documents are made from, read from what the build really used and
//! made: the image's own dpkg database and copyright files (what is installed, read from the
//! built tree), the lock (each .deb's digest), `cargo metadata` over the stack crates (every
//! crate compiled into the image's binaries, normal dependencies only, with Cargo.lock's
//! checksums), the recipe's artifacts, and the outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use evidence::{Artifact, Crate, Deb, OutputFile, Sbom};
use recipe::{Lock, Recipe};
use xshell::{Shell, cmd};

use crate::error::{Error, Result, io_err, tool_err};

/// Reads a file of the image tree only if it is a regular file (a symlink in the image is never
/// followed out of it).
fn read_in_root(root: &Path, rel: &str, max: u64) -> Option<String> {
    let p = root.join(rel);
    let m = fs::symlink_metadata(&p).ok()?;
    if !m.is_file() || m.len() > max {
        return None;
    }
    fs::read_to_string(p).ok()
}

/// The installed Debian packages of the image tree, with the lock's digests and the licenses
/// their copyright files state. Every installed package must be in the lock.
pub fn debs(root: &Path, lock: &Lock) -> Result<Vec<Deb>> {
    let status_path = root.join("var/lib/dpkg/status");
    let status = fs::read_to_string(&status_path).map_err(io_err(&status_path))?;
    let by_key: BTreeMap<(String, String, String), String> = lock
        .packages
        .iter()
        .map(|p| ((p.name.clone(), p.version.clone(), p.architecture.clone()), p.sha256.clone()))
        .collect();
    let mut out = Vec::new();
    for e in evidence::sbom::parse_dpkg_status(&status).into_iter().filter(|e| e.installed) {
        let sha = by_key.get(&(e.name.clone(), e.version.clone(), e.arch.clone())).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "the image has {}={} ({}) installed, which the lock does not pin: the SBOM would not match the inputs",
                e.name, e.version, e.arch
            ))
        })?;
        let source = e.source.as_deref().map(|s| evidence::sbom::source_of(s, &e.version));
        let license = read_in_root(root, &format!("usr/share/doc/{}/copyright", e.name), 4 << 20)
            .and_then(|t| evidence::license::debian_copyright(&t));
        out.push(Deb { name: e.name, version: e.version, arch: e.arch, sha256: sha, source, license });
    }
    Ok(out)
}

/// Every crate compiled into the stack crates' binaries (normal dependencies, for the image's
/// target), with Cargo.lock's checksums and each crate's declared license.
pub fn crates(repo_root: &Path, stack: &[String], offline: bool) -> Result<Vec<Crate>> {
    if stack.is_empty() {
        return Ok(Vec::new());
    }
    let sh = Shell::new().map_err(tool_err("shell"))?;
    sh.change_dir(repo_root);
    let off: &[&str] = if offline { &["--offline"] } else { &[] };
    let out =
        cmd!(sh, "cargo metadata --format-version 1 --locked {off...} --filter-platform x86_64-unknown-linux-gnu")
            .quiet()
            .read()
            .map_err(tool_err("cargo metadata (the SBOM's crates)"))?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| Error::Invalid(format!("cargo metadata: {e}")))?;
    let lock_path = repo_root.join("Cargo.lock");
    let lock_text = fs::read_to_string(&lock_path).map_err(io_err(&lock_path))?;
    let lock: toml::Table = toml::from_str(&lock_text).map_err(|e| Error::Invalid(format!("Cargo.lock: {e}")))?;
    let mut checksums = BTreeMap::new();
    for p in lock.get("package").and_then(|p| p.as_array()).into_iter().flatten() {
        if let (Some(n), Some(ver), Some(c)) = (
            p.get("name").and_then(|x| x.as_str()),
            p.get("version").and_then(|x| x.as_str()),
            p.get("checksum").and_then(|x| x.as_str()),
        ) {
            checksums.insert((n.to_string(), ver.to_string()), c.to_string());
        }
    }
    let packages: BTreeMap<&str, &serde_json::Value> =
        v["packages"].as_array().into_iter().flatten().filter_map(|p| Some((p["id"].as_str()?, p))).collect();
    let nodes: BTreeMap<&str, &serde_json::Value> =
        v["resolve"]["nodes"].as_array().into_iter().flatten().filter_map(|n| Some((n["id"].as_str()?, n))).collect();
    let mut todo: Vec<&str> = packages
        .iter()
        .filter(|(_, p)| p["name"].as_str().is_some_and(|n| stack.iter().any(|s| s == n)) && p["source"].is_null())
        .map(|(id, _)| *id)
        .collect();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for d in nodes.get(id).and_then(|n| n["deps"].as_array()).into_iter().flatten() {
            let normal = d["dep_kinds"].as_array().is_some_and(|k| k.iter().any(|k| k["kind"].is_null()));
            if normal && let Some(pkg) = d["pkg"].as_str() {
                todo.push(pkg);
            }
        }
    }
    let mut out: Vec<Crate> = seen
        .iter()
        .filter_map(|id| packages.get(id))
        .map(|p| {
            let name = p["name"].as_str().unwrap_or("").to_string();
            let version = p["version"].as_str().unwrap_or("").to_string();
            let workspace = p["source"].is_null();
            Crate {
                checksum: checksums.get(&(name.clone(), version.clone())).cloned(),
                source: if workspace { "workspace".into() } else { "crates.io".into() },
                license: p["license"].as_str().map(str::to_string),
                name,
                version,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(out)
}

/// The SBOM model of a build (outputs added by the caller once they exist).
pub fn sbom(recipe: &Recipe, debs: Vec<Deb>, crates: Vec<Crate>) -> Sbom {
    Sbom {
        name: recipe.name.clone(),
        version: recipe.version.clone(),
        product: recipe.product.clone(),
        channel: recipe.channel.to_string(),
        source_date_epoch: recipe.source_date_epoch,
        tool: format!("airlock {}", env!("CARGO_PKG_VERSION")),
        suite: recipe.base.suite.clone(),
        debs,
        crates,
        artifacts: recipe
            .artifacts
            .iter()
            .map(|a| Artifact { name: a.name.clone(), dest: a.dest.clone(), sha256: a.sha256.clone() })
            .collect(),
        outputs: Vec::new(),
    }
}

/// Outputs as the SBOM lists them.
pub fn outputs(map: &BTreeMap<String, crate::manifest::Output>) -> Vec<OutputFile> {
    map.iter().map(|(n, o)| OutputFile { name: n.clone(), sha256: o.sha256.clone(), size: o.size }).collect()
}

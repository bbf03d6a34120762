//! Debian packages in and out of the store: `apt-get download` with the host's configured
//! sources (fetch), and a flat apt repository made from store objects (build).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use recipe::{Lock, LockedPackage};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::{Error, Result, Store, Wanted, io_err};

/// The registry no longer serves versions the lock pins.
#[derive(Debug, thiserror::Error)]
#[error(
    "the configured apt sources no longer serve {}: the lock pins versions the registry has moved on from; run `cargo xtask lock --update` to pin what it serves now (or import a store export that holds them)",
    packages.join(", ")
)]
pub struct NotServed {
    pub packages: Vec<String>,
}

pub fn wanted(p: &LockedPackage) -> Wanted {
    Wanted { what: format!("{}={} ({})", p.name, p.version, p.architecture), sha256: p.sha256.clone() }
}

/// Downloads the given packages with `apt-get download` and puts them into the store,
/// hash-checked against the lock. Returns how many were downloaded.
pub fn fetch_debs(store: &Store, packages: &[&LockedPackage]) -> Result<usize> {
    if packages.is_empty() {
        return Ok(0);
    }
    let tmp_root = store.root().join("tmp");
    let dir = tempfile::tempdir_in(&tmp_root).map_err(io_err(&tmp_root))?;
    let sh = Shell::new().map_err(|e| Error::Tool { what: "shell".into(), message: e.to_string() })?;
    sh.change_dir(dir.path());
    let specs: Vec<String> = packages.iter().map(|p| format!("{}:{}={}", p.name, p.architecture, p.version)).collect();
    let out = cmd!(sh, "apt-get download -q -o APT::Sandbox::User=root {specs...}")
        .ignore_status()
        .output()
        .map_err(|e| Error::Tool { what: "apt-get download".into(), message: format!("{e} (is apt installed?)") })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let not_served: Vec<String> = packages
            .iter()
            .filter(|p| {
                stderr.lines().any(|l| {
                    l.starts_with("E:")
                        && (l.contains(&format!("'{}'", p.name))
                            || l.contains(&format!("'{}:{}'", p.name, p.architecture)))
                })
            })
            .map(|p| format!("{}={}", p.name, p.version))
            .collect();
        if !not_served.is_empty() {
            return Err(NotServed { packages: not_served }.into());
        }
        return Err(Error::Tool { what: "apt-get download".into(), message: stderr.trim().to_string() });
    }
    for p in packages {
        let file = dir.path().join(p.file_name());
        store.insert(&file, &wanted(p).what, Some(&p.sha256))?;
    }
    Ok(packages.len())
}

/// Writes a flat apt repository of the lock's packages into `dir`: the .debs (hard links to
/// verified store objects), `Packages` with the archive's priorities, and `Release`.
pub fn write_apt_repo(store: &Store, lock: &Lock, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let sh = Shell::new().map_err(|e| Error::Tool { what: "shell".into(), message: e.to_string() })?;
    let mut packages = lock.packages.clone();
    packages.sort();
    let mut index = String::new();
    for p in &packages {
        let src = store.verified(&wanted(p))?;
        let dest = dir.join(p.file_name());
        if fs::hard_link(&src, &dest).is_err() {
            fs::copy(&src, &dest).map_err(io_err(&dest))?;
        }
        let control = cmd!(sh, "dpkg-deb -f {dest}")
            .read()
            .map_err(|e| Error::Tool { what: format!("dpkg-deb -f {}", dest.display()), message: e.to_string() })?;
        let mut skipping = false;
        for line in control.lines() {
            if line.starts_with([' ', '\t']) {
                if !skipping {
                    index.push_str(line);
                    index.push('\n');
                }
                continue;
            }
            skipping = line.starts_with("Priority:") || line.starts_with("Section:");
            if !skipping {
                index.push_str(line);
                index.push('\n');
            }
        }
        let _ = writeln!(index, "Priority: {}\nSection: {}", p.priority, p.section);
        let _ = writeln!(index, "Filename: ./{}\nSize: {}\nSHA256: {}\n", p.file_name(), p.size, p.sha256);
    }
    crate::write_atomic(&dir.join("Packages"), index.as_bytes())?;
    let digest = hex::encode(Sha256::digest(index.as_bytes()));
    let release = format!(
        "Origin: airlock-store\nLabel: airlock-store\nSuite: {s}\nCodename: {s}\nArchitectures: {a} all\nSHA256:\n {digest} {} Packages\n",
        index.len(),
        s = lock.suite,
        a = lock.architecture,
    );
    crate::write_atomic(&dir.join("Release"), release.as_bytes())
}

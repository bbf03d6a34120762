//! The normaliser: removes what makes two builds differ or leaks the build host (machine-id,
//! host keys, random seeds, logs, apt lists and caches, ld.so aux-cache, host resolv.conf and
//! hostname), and checks that no secret key is left anywhere in the tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result, io_err};

/// Directories whose contents are emptied (the directory itself stays).
const EMPTIED: &[&str] = &["var/log", "var/cache/debconf/tmp", "var/tmp", "tmp", "run", "var/cache/man"];

/// Directories removed whole: apt re-creates them (with its `_apt`-owned `partial/`) when used.
const REMOVED_DIRS: &[&str] = &["var/cache/apt", "var/lib/apt/lists"];

/// Files removed when present.
const REMOVED: &[&str] = &[
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/random-seed",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
    "etc/passwd-",
    "etc/group-",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/subuid-",
    "etc/subgid-",
];

fn write_file(root: &Path, rel: &str, content: &str, mode: u32) -> Result<()> {
    let p = root.join(rel);
    if let Ok(m) = fs::symlink_metadata(&p)
        && !m.is_file()
    {
        fs::remove_file(&p).map_err(io_err(&p))?;
    }
    fs::write(&p, content).map_err(io_err(&p))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io_err(&p))?;
    std::os::unix::fs::lchown(&p, Some(0), Some(0)).map_err(io_err(&p))
}

fn empty_dir(dir: &Path) -> Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd {
        let e = e.map_err(io_err(dir))?;
        let p = e.path();
        let ft = e.file_type().map_err(io_err(&p))?;
        if ft.is_dir() {
            // Keep the directory skeleton (e.g. var/log/apt, lists/partial) packages expect.
            empty_dir(&p)?;
        } else {
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    Ok(())
}

pub fn normalise(root: &Path, hostname: &str) -> Result<()> {
    for d in EMPTIED {
        empty_dir(&root.join(d))?;
    }
    for d in REMOVED_DIRS {
        let p = root.join(d);
        if p.is_dir() {
            fs::remove_dir_all(&p).map_err(io_err(&p))?;
        }
    }
    for f in REMOVED {
        let p = root.join(f);
        if fs::symlink_metadata(&p).is_ok() {
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    // SSH host keys: first boot makes new ones.
    let ssh = root.join("etc/ssh");
    if let Ok(rd) = fs::read_dir(&ssh) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            }
        }
    }
    // Empty machine-id: systemd makes a transient one on a read-only root.
    write_file(root, "etc/machine-id", "", 0o444)?;
    write_file(root, "etc/hostname", &format!("{hostname}\n"), 0o644)?;
    write_file(root, "etc/resolv.conf", "", 0o644)?;
    write_file(root, "etc/apt/sources.list", "", 0o644)?;
    empty_dir(&root.join("etc/apt/sources.list.d"))?;
    Ok(())
}

/// Fails if any file in the tree looks like a secret key (checked after normalising).
pub fn check_no_secrets(root: &Path) -> Result<()> {
    for (rel, m) in crate::overlay::walk(root)? {
        if m.is_file() && m.len() > 0 {
            let p = root.join(&rel);
            if crate::overlay::looks_secret(&p)? && !allowed_secret_lookalike(&rel) {
                return Err(Error::Overlay {
                    path: p,
                    why: "the image would hold a secret key: find what put it there (overlay, package or stack) and remove it".into(),
                });
            }
        }
    }
    Ok(())
}

/// Files that mention key markers without holding a key (documentation, tools' own code).
fn allowed_secret_lookalike(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s.starts_with("usr/bin/")
        || s.starts_with("usr/sbin/")
        || s.starts_with("usr/lib/")
        || s.starts_with("usr/libexec/")
        || s.starts_with("usr/share/perl")
        || s.starts_with("usr/share/doc/")
}

/// What makes the tree an appliance with a read-only root: the mount points of the ESP and the
/// data partition (a read-only root cannot create them at boot), and the image's identity in
/// os-release (`IMAGE_ID`, `IMAGE_VERSION`: what the parking controller reports as its version).
pub fn appliance(root: &Path, name: &str, version: &str) -> Result<()> {
    for d in ["boot/efi", "data"] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(io_err(&p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).map_err(io_err(&p))?;
    }
    // /etc/os-release is a symlink to ../usr/lib/os-release on Debian: edit the file itself.
    let rel = "usr/lib/os-release";
    let p = root.join(rel);
    let text = fs::read_to_string(&p).map_err(io_err(&p))?;
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("IMAGE_ID=") && !l.starts_with("IMAGE_VERSION="))
        .map(str::to_string)
        .collect();
    lines.push(format!("IMAGE_ID={name}"));
    lines.push(format!("IMAGE_VERSION={version}"));
    write_file(root, rel, &(lines.join("\n") + "\n"), 0o644)
}

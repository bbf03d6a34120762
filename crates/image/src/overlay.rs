//! Putting files into the image root without ever leaving it: overlays (trees copied in recipe
//! order), stack files and artifacts. A symlink in an overlay is copied as a symlink, never
//! followed; a destination whose parent is a symlink in the image is refused, so nothing is
//! written through `lib -> usr/lib`-style links onto the host.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result, io_err};

/// Markers of secret keys that must never be baked into an image.
const SECRET_MARKERS: &[&[u8]] = &[
    b"minisign encrypted secret key",
    b"minisign secret key",
    b"PRIVATE KEY-----",
    b"BEGIN OPENSSH PRIVATE KEY",
    b"BEGIN PGP PRIVATE KEY BLOCK",
];

/// True when the first 64 KiB of `path` look like a secret key.
pub fn looks_secret(path: &Path) -> Result<bool> {
    let mut buf = Vec::with_capacity(64 * 1024);
    fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_end(&mut buf)).map_err(io_err(path))?;
    Ok(SECRET_MARKERS.iter().any(|m| buf.windows(m.len()).any(|w| w == *m)))
}

/// Entries of an overlay tree, sorted, with their relative paths.
pub fn walk(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    let mut out = Vec::new();
    walk_into(dir, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_into(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) -> Result<()> {
    let full = dir.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&full)
        .map_err(io_err(&full))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(io_err(&full))?;
    entries.sort();
    for name in entries {
        let r = rel.join(&name);
        let p = dir.join(&r);
        let m = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        let is_dir = m.is_dir();
        out.push((r.clone(), m));
        if is_dir {
            walk_into(dir, &r, out)?;
        }
    }
    Ok(())
}

/// A digest of an overlay tree: paths, kinds, exec bits, contents and link targets.
pub fn digest_tree(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for (rel, m) in walk(dir)? {
        let p = dir.join(&rel);
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        if m.is_dir() {
            h.update(b"d");
        } else if m.file_type().is_symlink() {
            h.update(b"l");
            h.update(fs::read_link(&p).map_err(io_err(&p))?.as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            h.update(if m.mode() & 0o111 != 0 { b"x" } else { b"f" });
            let (d, _) = store::sha256_file(&p)?;
            h.update(d.as_bytes());
        } else {
            h.update(b"?");
        }
        h.update([0]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Creates the parent directories of `rel` inside `root`, refusing to pass through a symlink.
fn safe_parent(root: &Path, rel: &Path, what: &Path) -> Result<PathBuf> {
    let mut cur = root.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        let Component::Normal(c) = c else {
            return Err(Error::Overlay {
                path: what.to_path_buf(),
                why: format!("path `{}` leaves the image root", rel.display()),
            });
        };
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&cur).map_err(io_err(&cur))?;
                return Err(Error::Overlay {
                    path: what.to_path_buf(),
                    why: format!(
                        "destination /{} passes through the image's symlink /{} -> {}: write to the real directory instead",
                        rel.display(),
                        cur.strip_prefix(root).unwrap_or(&cur).display(),
                        target.display()
                    ),
                });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Overlay {
                    path: what.to_path_buf(),
                    why: format!(
                        "/{} is a file in the image, not a directory",
                        cur.strip_prefix(root).unwrap_or(&cur).display()
                    ),
                });
            }
            Err(_) => {
                fs::create_dir(&cur).map_err(io_err(&cur))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).map_err(io_err(&cur))?;
            }
        }
    }
    Ok(cur)
}

/// Removes whatever is at `dest` unless it is a directory (never replaced by a non-directory).
fn clear_for_file(dest: &Path, what: &Path) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Err(Error::Overlay {
            path: what.to_path_buf(),
            why: format!("would replace the directory {} with a file or link", dest.display()),
        }),
        Ok(_) => fs::remove_file(dest).map_err(io_err(dest)),
        Err(_) => Ok(()),
    }
}

/// Copies one regular file to `/dest` in the image, owned by root, with `mode`.
pub fn place_file(root: &Path, dest: &str, src: &Path, mode: u32) -> Result<()> {
    let rel = Path::new(dest.strip_prefix('/').unwrap_or(""));
    if !recipe::is_plain_relative(rel) {
        return Err(Error::Overlay {
            path: src.to_path_buf(),
            why: format!("destination `{dest}` is not a plain absolute path"),
        });
    }
    if looks_secret(src)? {
        return Err(Error::Overlay {
            path: src.to_path_buf(),
            why: "this file holds a secret key: it must never be put into an image; remove it".into(),
        });
    }
    let dir = safe_parent(root, rel, src)?;
    let target = dir.join(rel.file_name().unwrap_or_default());
    clear_for_file(&target, src)?;
    fs::copy(src, &target).map_err(io_err(&target))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io_err(&target))?;
    std::os::unix::fs::lchown(&target, Some(0), Some(0)).map_err(io_err(&target))?;
    Ok(())
}

/// Applies one overlay tree onto the image root.
pub fn apply(root: &Path, overlay: &Path) -> Result<usize> {
    let mut n = 0;
    for (rel, m) in walk(overlay)? {
        let src = overlay.join(&rel);
        let name = rel.to_string_lossy();
        if name.chars().any(char::is_control) {
            return Err(Error::Overlay { path: src, why: "file name holds a control character".into() });
        }
        let ft = m.file_type();
        if ft.is_dir() {
            let dir = safe_parent(root, &rel.join("x"), &src)?;
            let _ = dir;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(io_err(&src))?;
            let dir = safe_parent(root, &rel, &src)?;
            let dest = dir.join(rel.file_name().unwrap_or_default());
            clear_for_file(&dest, &src)?;
            symlink(&target, &dest).map_err(io_err(&dest))?;
            std::os::unix::fs::lchown(&dest, Some(0), Some(0)).map_err(io_err(&dest))?;
        } else if ft.is_file() {
            let mode = if m.mode() & 0o111 != 0 { 0o755 } else { 0o644 };
            place_file(root, &format!("/{}", rel.display()), &src, mode)?;
        } else {
            return Err(Error::Overlay {
                path: src,
                why:
                    "only regular files, directories and symlinks may be in an overlay (found a device, FIFO or socket)"
                        .into(),
            });
        }
        n += 1;
    }
    Ok(n)
}

//! The deterministic rootfs tar: a sorted walk, every header written explicitly (mode, numeric
//! owner, clamped mtime, no user or group names), hard links kept as links, compressed with a
//! pinned zstd level and worker count while it is hashed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use crate::error::{Error, Result, io_err};

/// zstd workers: pinned, since zstd's multithreaded output is the same for any number of
/// workers ≥ 1 but differs from single-threaded mode (recorded in the build manifest).
pub const ZSTD_WORKERS: u32 = 2;

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), len: 0 }
    }
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Every entry below `root`, depth-first, siblings sorted by their bytes.
pub fn sorted_walk(root: &Path) -> Result<Vec<PathBuf>> {
    fn go(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let dir = root.join(rel);
        let mut names: Vec<OsString> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io_err(&dir))?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for n in names {
            let r = rel.join(&n);
            let is_dir = fs::symlink_metadata(root.join(&r)).map_err(io_err(&root.join(&r)))?.is_dir();
            out.push(r.clone());
            if is_dir {
                go(root, &r, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(root, Path::new(""), &mut out)?;
    Ok(out)
}

/// Writes the tree at `root` as a tar stream to `out`, mtimes clamped to `clamp`.
pub fn write_tar<W: Write>(root: &Path, out: W, clamp: u64) -> Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let mut links: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let root_meta = fs::symlink_metadata(root).map_err(io_err(root))?;
    let mut dot = header(&root_meta, clamp, EntryType::Directory, 0);
    b.append_data(&mut dot, "./", io::empty()).map_err(io_err(root))?;
    for rel in sorted_walk(root)? {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        let ft = m.file_type();
        let name = Path::new(".").join(&rel);
        let res = if ft.is_dir() {
            let mut h = header(&m, clamp, EntryType::Directory, 0);
            b.append_data(&mut h, format!("{}/", name.display()), io::empty())
        } else if ft.is_symlink() {
            let target = fs::read_link(&p).map_err(io_err(&p))?;
            let mut h = header(&m, clamp, EntryType::Symlink, 0);
            b.append_link(&mut h, &name, &target)
        } else if ft.is_file() {
            let key = (m.dev(), m.ino());
            if m.nlink() > 1 {
                if let Some(first) = links.get(&key) {
                    let mut h = header(&m, clamp, EntryType::Link, 0);
                    b.append_link(&mut h, &name, first).map_err(io_err(&p))?;
                    continue;
                }
                links.insert(key, name.clone());
            }
            let mut h = header(&m, clamp, EntryType::Regular, m.len());
            let f = fs::File::open(&p).map_err(io_err(&p))?;
            b.append_data(&mut h, &name, f)
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() { EntryType::Char } else { EntryType::Block };
            let mut h = header(&m, clamp, kind, 0);
            let rdev = m.rdev();
            let (major, minor) =
                (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff), ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff));
            h.set_device_major(major as u32).map_err(io_err(&p))?;
            h.set_device_minor(minor as u32).map_err(io_err(&p))?;
            b.append_data(&mut h, &name, io::empty())
        } else if ft.is_fifo() {
            let mut h = header(&m, clamp, EntryType::Fifo, 0);
            b.append_data(&mut h, &name, io::empty())
        } else {
            return Err(Error::Overlay {
                path: p,
                why: "a socket in the image tree: remove it before archiving".into(),
            });
        };
        res.map_err(io_err(&p))?;
    }
    b.into_inner().map_err(io_err(root))
}

fn header(m: &fs::Metadata, clamp: u64, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(u64::from(m.uid()));
    h.set_gid(u64::from(m.gid()));
    let mtime = u64::try_from(m.mtime()).unwrap_or(0).min(clamp);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// Writes `root` as `dest` (tar + zstd at `level`), returning (sha256, size) of the file.
pub fn write_tar_zst(root: &Path, dest: &Path, level: i32, clamp: u64) -> Result<(String, u64)> {
    let file = fs::File::create(dest).map_err(io_err(dest))?;
    let hashing = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file));
    let mut enc = zstd::stream::Encoder::new(hashing, level).map_err(io_err(dest))?;
    enc.multithread(ZSTD_WORKERS).map_err(io_err(dest))?;
    enc.include_checksum(true).map_err(io_err(dest))?;
    let enc = write_tar(root, enc, clamp)?;
    let hashing = enc.finish().map_err(io_err(dest))?;
    let (buf, sha, len) = hashing.finish();
    let file = buf.into_inner().map_err(|e| Error::Io { path: dest.to_path_buf(), source: e.into_error() })?;
    file.sync_all().map_err(io_err(dest))?;
    Ok((sha, len))
}

/// Every entry of a `.tar.zst` with its mode, owner, mtime and content digest, by path: what
/// `repro` compares when two rootfs archives differ.
pub fn entry_digests(p: &Path) -> Result<BTreeMap<String, String>> {
    let read = || -> io::Result<BTreeMap<String, String>> {
        let dec = zstd::stream::Decoder::new(fs::File::open(p)?)?;
        let mut ar = tar::Archive::new(dec);
        let mut map = BTreeMap::new();
        for e in ar.entries()? {
            let mut e = e?;
            let path = e.path()?.display().to_string();
            let h = e.header();
            let meta = format!("mode {:o} uid {} gid {} mtime {}", h.mode()?, h.uid()?, h.gid()?, h.mtime()?);
            let mut buf = Vec::new();
            io::Read::read_to_end(&mut e, &mut buf)?;
            map.insert(path, format!("{meta} sha256 {}", hex::encode(Sha256::digest(&buf))));
        }
        Ok(map)
    };
    read().map_err(io_err(p))
}

/// The entries whose header or content differ between two `.tar.zst` archives, one line each.
pub fn diff(a: &Path, b: &Path) -> Result<Vec<String>> {
    let ea = entry_digests(a)?;
    let eb = entry_digests(b)?;
    let mut out = Vec::new();
    for (k, va) in &ea {
        match eb.get(k) {
            None => out.push(format!("{k}: only in build a")),
            Some(vb) if vb != va => out.push(format!("{k}: a {va} / b {vb}")),
            _ => {}
        }
    }
    out.extend(eb.keys().filter(|k| !ea.contains_key(*k)).map(|k| format!("{k}: only in build b")));
    Ok(out)
}

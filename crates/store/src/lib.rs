//! The input store: every build input (.deb, vendor artifact) kept under its sha256, outside
//! the repository, filled online once (`fetch`) or carried across the air gap
//! (`export` / `import`). Every object is hash-checked when it enters and when it is used.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

mod apt;

pub use apt::{NotServed, fetch_debs, wanted, write_apt_repo};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: {what} is tampered with or corrupt: expected sha256 {expected}, found {actual}; delete it and run `cargo xtask fetch` (or import a good copy)",
        path.display()
    )]
    Tampered { path: PathBuf, what: String, expected: String, actual: String },
    #[error(
        "{} input(s) missing from the store {} and --offline forbids fetching:\n{}\nrun `cargo xtask fetch` on a connected machine, or `cargo xtask store import DIR` from a stick",
        missing.len(), store.display(), capped(missing, 10)
    )]
    MissingOffline { store: PathBuf, missing: Vec<String> },
    #[error(transparent)]
    NotServed(#[from] NotServed),
    #[error("{what} failed: {message}")]
    Tool { what: String, message: String },
    #[error("{}: not a store export: {why}", path.display())]
    BadExport { path: PathBuf, why: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One item per line, at most `max`, then "…and N more".
pub fn capped(items: &[String], max: usize) -> String {
    let mut v: Vec<String> = items.iter().take(max).map(|i| format!("  {i}")).collect();
    if items.len() > max {
        v.push(format!("  …and {} more", items.len() - max));
    }
    v.join("\n")
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// One input to make sure of: what to call it in messages, and its pinned digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub what: String,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// sha256 of a reader, as lowercase hex, and the number of bytes read.
pub fn sha256_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).map_err(io_err(path))?;
    sha256_reader(f).map_err(io_err(path))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// fsyncs a directory so that a rename inside it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    durable::sync_dir(dir, &durable::Unwitnessed).map_err(|f| Error::Io { path: f.path, source: f.source })
}

impl Store {
    /// `--store DIR`, else `$AIRLOCK_STORE`, else `$XDG_CACHE_HOME/airlock/store`, else
    /// `~/.cache/airlock/store`.
    pub fn default_root() -> PathBuf {
        if let Some(p) = std::env::var_os("AIRLOCK_STORE").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
            return PathBuf::from(p).join("airlock/store");
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        home.join(".cache/airlock/store")
    }

    pub fn open(root: &Path) -> Result<Store> {
        for d in ["sha256", "tmp"] {
            fs::create_dir_all(root.join(d)).map_err(io_err(&root.join(d)))?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    pub fn contains(&self, sha256: &str) -> bool {
        self.object_path(sha256).is_file()
    }

    /// The object's path after checking its bytes against its name.
    pub fn verified(&self, w: &Wanted) -> Result<PathBuf> {
        let path = self.object_path(&w.sha256);
        let (actual, _) = sha256_file(&path)?;
        if actual != w.sha256 {
            return Err(Error::Tampered { path, what: w.what.clone(), expected: w.sha256.clone(), actual });
        }
        Ok(path)
    }

    /// Checks every wanted object; names all missing ones at once.
    pub fn verify_all(&self, wanted: &[Wanted]) -> Result<Vec<PathBuf>> {
        let missing: Vec<String> =
            wanted.iter().filter(|w| !self.contains(&w.sha256)).map(|w| w.what.clone()).collect();
        if !missing.is_empty() {
            return Err(Error::MissingOffline { store: self.root.clone(), missing });
        }
        wanted.iter().map(|w| self.verified(w)).collect()
    }

    pub fn missing<'a>(&self, wanted: &'a [Wanted]) -> Vec<&'a Wanted> {
        wanted.iter().filter(|w| !self.contains(&w.sha256)).collect()
    }

    /// Copies `src` into the store, hashing as it copies. With `expected`, a mismatch is
    /// refused and nothing enters the store. Returns the digest.
    pub fn insert(&self, src: &Path, what: &str, expected: Option<&str>) -> Result<String> {
        let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
        if !meta.file_type().is_file() {
            return Err(Error::Io {
                path: src.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file (symlinks are not followed)"),
            });
        }
        let mut input = File::open(src).map_err(io_err(src))?;
        let tmp_dir = self.root.join("tmp");
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(io_err(&tmp_dir))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = input.read(&mut buf).map_err(io_err(src))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            tmp.write_all(&buf[..k]).map_err(io_err(tmp.path()))?;
        }
        let actual = hex::encode(h.finalize());
        if let Some(expected) = expected
            && actual != expected
        {
            return Err(Error::Tampered {
                path: src.to_path_buf(),
                what: what.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        let mut perms = tmp.as_file().metadata().map_err(io_err(tmp.path()))?.permissions();
        perms.set_readonly(true);
        tmp.as_file().set_permissions(perms).map_err(io_err(tmp.path()))?;
        let dest = self.object_path(&actual);
        tmp.persist(&dest).map_err(|e| Error::Io { path: dest.clone(), source: e.error })?;
        sync_dir(&self.root.join("sha256"))?;
        Ok(actual)
    }

    /// Every object in the store, sorted.
    pub fn objects(&self) -> Result<Vec<String>> {
        list_objects(&self.root.join("sha256"))
    }

    /// Copies every object to `dir/sha256/` with an `INDEX` of digests and sizes, for a USB
    /// stick. Returns the number of objects and bytes.
    pub fn export(&self, dir: &Path) -> Result<(usize, u64)> {
        let objects = dir.join("sha256");
        fs::create_dir_all(&objects).map_err(io_err(&objects))?;
        let mut index = String::new();
        let mut total = 0;
        let all = self.objects()?;
        for sha in &all {
            let src = self.verified(&Wanted { what: format!("store object {sha}"), sha256: sha.clone() })?;
            let dest = objects.join(sha);
            let tmp = objects.join(format!(".{sha}.part"));
            let n = fs::copy(&src, &tmp).map_err(io_err(&tmp))?;
            File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err(&tmp))?;
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            index.push_str(&format!("{sha} {n}\n"));
            total += n;
        }
        sync_dir(&objects)?;
        write_atomic(&dir.join("INDEX"), index.as_bytes())?;
        Ok((all.len(), total))
    }

    /// Imports an export: every file's bytes are checked against its name and the INDEX
    /// before any enters the store; one bad file refuses the whole import.
    pub fn import(&self, dir: &Path) -> Result<(usize, u64)> {
        let objects = dir.join("sha256");
        let index_path = dir.join("INDEX");
        let index = fs::read_to_string(&index_path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::BadExport {
                path: dir.to_path_buf(),
                why: "no INDEX file (make it with `cargo xtask store export DIR`)".into(),
            },
            _ => Error::Io { path: index_path.clone(), source },
        })?;
        let mut listed = std::collections::BTreeMap::new();
        for (i, line) in index.lines().enumerate() {
            let bad = |why: &str| Error::BadExport { path: index_path.clone(), why: format!("line {}: {why}", i + 1) };
            let (sha, size) = line.split_once(' ').ok_or_else(|| bad("expected `SHA256 SIZE`"))?;
            if !is_sha256_hex(sha) {
                return Err(bad("not a sha256 digest"));
            }
            let size: u64 = size.parse().map_err(|_| bad("size is not a number"))?;
            listed.insert(sha.to_string(), size);
        }
        let present = list_objects(&objects)?;
        if let Some(extra) = present.iter().find(|s| !listed.contains_key(*s)) {
            return Err(Error::BadExport { path: objects.join(extra), why: "file not listed in INDEX".into() });
        }
        // Pass 1: check everything, import nothing.
        let mut total = 0;
        for (sha, size) in &listed {
            let path = objects.join(sha);
            let (actual, n) = sha256_file(&path)?;
            if actual != *sha || n != *size {
                return Err(Error::Tampered {
                    path,
                    what: "exported object".into(),
                    expected: format!("{sha} ({size} bytes)"),
                    actual: format!("{actual} ({n} bytes)"),
                });
            }
            total += n;
        }
        // Pass 2: copy in, hashing again (the stick could change under us).
        for sha in listed.keys() {
            if !self.contains(sha) {
                self.insert(&objects.join(sha), "imported object", Some(sha))?;
            }
        }
        Ok((listed.len(), total))
    }
}

fn list_objects(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if !is_sha256_hex(&name) || !e.file_type().map_err(io_err(&e.path()))?.is_file() {
            return Err(Error::BadExport {
                path: e.path(),
                why: "not a store object (a regular file named by its sha256)".into(),
            });
        }
        out.push(name);
    }
    out.sort();
    Ok(out)
}

/// Writes `bytes` to `path` through a temp file in the same directory: fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    durable::write_atomic(path, bytes, &durable::Unwitnessed).map_err(|f| Error::Io { path: f.path, source: f.source })
}

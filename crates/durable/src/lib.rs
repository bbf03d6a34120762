//! Durable writes and untrusted opens, one implementation for every crate that makes them
//! (the agent, the release tools, the store): [`write_atomic`] replaces a file so that a
//! power cut leaves either the old bytes or the new (a temp file unique to the process and the
//! call, in the same directory; fsync; rename; fsync the directory), and [`open_regular`]
//! opens an untrusted path once — no symlink followed, a FIFO or device cannot block the open,
//! and only a regular file is kept, checked on the descriptor itself.
//!
//! Errors name the path that failed ([`Failed`]); each caller turns them into its own error.
//! A [`Witness`] hears every fsync: the agent's power-loss simulation keeps only what was
//! made durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An I/O error and the path it happened on.
#[derive(Debug)]
pub struct Failed {
    pub path: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> Failed + '_ {
    move |source| Failed { path: path.to_path_buf(), source }
}

/// Hears each fsync as it completes (what has become durable).
pub trait Witness {
    fn file_synced(&self, _path: &Path) {}
    fn dir_synced(&self, _dir: &Path) {}
}

/// Nobody listens.
pub struct Unwitnessed;

impl Witness for Unwitnessed {}

/// fsyncs a file's data and metadata.
pub fn sync_file(f: &File, path: &Path, w: &dyn Witness) -> Result<(), Failed> {
    f.sync_all().map_err(at(path))?;
    w.file_synced(path);
    Ok(())
}

/// fsyncs a directory, so that the names created or renamed in it survive a power cut.
pub fn sync_dir(dir: &Path, w: &dyn Witness) -> Result<(), Failed> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))?;
    w.dir_synced(dir);
    Ok(())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` (mode 0644) atomically and durably. The temp file's name is
/// unique to this process and call, so two writers never share one; on failure it is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], w: &dyn Witness) -> Result<(), Failed> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp).map_err(at(&tmp))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.set_permissions(fs::Permissions::from_mode(0o644)))
        .map_err(at(&tmp))
        .and_then(|()| sync_file(&f, &tmp, w));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Failed { path: path.to_path_buf(), source: e });
    }
    sync_dir(dir, w)
}

/// What an untrusted path turned out to be when opened.
#[derive(Debug)]
pub enum Opened {
    File(File),
    /// Anything but a regular file, named for the message (`a symlink`, `a FIFO`…).
    NotRegular(&'static str),
}

/// Opens an untrusted path once for reading (see the module's comment); everything after
/// reads through the returned handle.
pub fn open_regular(path: &Path) -> Result<Opened, Failed> {
    let flags = (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32;
    let f = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        // ELOOP: the last component is a symlink.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Ok(Opened::NotRegular("a symlink"));
        }
        Err(e) => return Err(Failed { path: path.to_path_buf(), source: e }),
    };
    let ft = f.metadata().map_err(at(path))?.file_type();
    Ok(if ft.is_file() {
        Opened::File(f)
    } else if ft.is_dir() {
        Opened::NotRegular("a directory")
    } else if ft.is_fifo() {
        Opened::NotRegular("a FIFO")
    } else if ft.is_block_device() || ft.is_char_device() {
        Opened::NotRegular("a device")
    } else if ft.is_socket() {
        Opened::NotRegular("a socket")
    } else {
        Opened::NotRegular("not a regular file")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Heard(std::cell::RefCell<Vec<String>>);
    impl Witness for Heard {
        fn file_synced(&self, p: &Path) {
            self.0.borrow_mut().push(format!("file {}", p.file_name().unwrap().to_string_lossy()));
        }
        fn dir_synced(&self, _: &Path) {
            self.0.borrow_mut().push("dir".into());
        }
    }

    #[test]
    fn a_file_is_replaced_whole_with_its_file_then_its_directory_synced() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.toml");
        fs::write(&p, b"old").unwrap();
        let heard = Heard(Default::default());
        write_atomic(&p, b"new", &heard).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        let h = heard.0.borrow();
        assert_eq!(h.len(), 2);
        assert!(h[0].starts_with("file .state.toml.") && h[0].ends_with(".tmp") && h[1] == "dir", "{h:?}");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no temp file left");
        // A directory where the file should go: the error names it, nothing is left behind.
        fs::create_dir(d.path().join("dir")).unwrap();
        fs::write(d.path().join("dir/x"), b"").unwrap();
        let e = write_atomic(&d.path().join("dir"), b"x", &Unwitnessed).unwrap_err();
        assert_eq!(e.path, d.path().join("dir"));
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2, "a temp file was left");
    }

    #[test]
    fn only_a_regular_file_is_opened_and_every_other_kind_is_named() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(open_regular(&file).unwrap(), Opened::File(_)));
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let sock = d.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for (path, kind) in [(link.as_path(), "a symlink"), (d.path(), "a directory")] {
            assert!(matches!(open_regular(path).unwrap(), Opened::NotRegular(k) if k == kind), "{kind}");
        }
        // A socket cannot even be opened (ENXIO): never a file all the same.
        assert!(!matches!(open_regular(&sock), Ok(Opened::File(_))));
        assert!(matches!(open_regular(Path::new("/dev/null")).unwrap(), Opened::NotRegular("a device")));
        let e = open_regular(&d.path().join("missing")).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().ends_with("missing: No such file or directory (os error 2)"), "{e}");
    }
}

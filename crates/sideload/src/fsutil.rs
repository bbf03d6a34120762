//! Every write the agent makes durable goes through here: atomic replacement (unique temp
//! file in the same directory, fsync, rename, fsync the directory), file and directory fsync,
//! and opening an untrusted path exactly once. On a simulated device with power-loss
//! simulation on, each fsync also tells `simfs` what has become durable.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, simfs};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// fsync a file's data and metadata.
pub fn fsync_file(f: &File, path: &Path) -> Result<(), Error> {
    f.sync_all().map_err(|e| Error::io(path, e))?;
    simfs::synced_file(path);
    Ok(())
}

/// fsync a directory, so that the names created or renamed in it survive a power cut.
pub fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    simfs::synced_dir(dir);
    Ok(())
}

/// Replaces `path` with `bytes` atomically: after a power cut it holds either the old or the
/// new bytes. The temp file's name is unique to this process and call, so two agents (or two
/// writes) never share one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let written = f.write_all(bytes).map_err(|e| Error::io(&tmp, e)).and_then(|()| fsync_file(&f, &tmp));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    fsync_dir(dir)
}

/// Opens an untrusted path once: no symlink is followed, a FIFO or device cannot block the
/// open, and only a regular file is accepted (checked on the descriptor itself, so nothing
/// can be swapped in between). Everything after reads through the returned handle.
pub fn open_regular(path: &Path) -> Result<Result<File, String>, Error> {
    let nofollow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    let f = match OpenOptions::new().read(true).custom_flags(nofollow | nonblock).open(path) {
        Ok(f) => f,
        // ELOOP: the last component is a symlink.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Ok(Err("a symlink (refused: only regular files are read)".into()));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let m = f.metadata().map_err(|e| Error::io(path, e))?;
    let ft = m.file_type();
    let kind = if ft.is_file() {
        return Ok(Ok(f));
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Ok(Err(format!("{kind} (refused: only regular files are read)")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::open_regular;

    #[test]
    fn only_a_regular_file_is_opened_and_every_other_kind_is_named() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file).unwrap().is_ok());
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = d.path().join("p");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let sock = d.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for (path, kind) in [
            (link.as_path(), "a symlink"),
            (d.path(), "a directory"),
            (fifo.as_path(), "a FIFO"),
            (std::path::Path::new("/dev/null"), "a device"),
        ] {
            let got = open_regular(path).unwrap().unwrap_err();
            assert_eq!(got, format!("{kind} (refused: only regular files are read)"), "{}", path.display());
        }
        // A socket cannot even be opened (ENXIO): refused all the same.
        assert!(!matches!(open_regular(&sock), Ok(Ok(_))));
        let e = open_regular(&d.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}

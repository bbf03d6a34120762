//! Every write the agent makes durable goes through here: atomic replacement (unique temp
//! file in the same directory, fsync, rename, fsync the directory), file and directory fsync,
//! and opening an untrusted path exactly once. On a simulated device with power-loss
//! simulation on, each fsync also tells `simfs` what has become durable.

use std::fs::File;
use std::path::Path;

use crate::{Error, simfs};

/// The power-loss simulation hears every fsync (on a real device it does nothing).
struct Simfs;

impl durable::Witness for Simfs {
    fn file_synced(&self, path: &Path) {
        simfs::synced_file(path);
    }
    fn dir_synced(&self, dir: &Path) {
        simfs::synced_dir(dir);
    }
}

fn err(f: durable::Failed) -> Error {
    Error::io(&f.path, f.source)
}

/// fsync a file's data and metadata.
pub fn fsync_file(f: &File, path: &Path) -> Result<(), Error> {
    durable::sync_file(f, path, &Simfs).map_err(err)
}

/// fsync a directory, so that the names created or renamed in it survive a power cut.
pub fn fsync_dir(dir: &Path) -> Result<(), Error> {
    durable::sync_dir(dir, &Simfs).map_err(err)
}

/// Replaces `path` with `bytes` atomically: after a power cut it holds either the old or the
/// new bytes (`durable::write_atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    durable::write_atomic(path, bytes, &Simfs).map_err(err)
}

/// Opens an untrusted path once (`durable::open_regular`): `Ok(Err(why))` for anything but a
/// regular file. Everything after reads through the returned handle.
pub fn open_regular(path: &Path) -> Result<Result<File, String>, Error> {
    match durable::open_regular(path).map_err(err)? {
        durable::Opened::File(f) => Ok(Ok(f)),
        durable::Opened::NotRegular(kind) => Ok(Err(format!("{kind} (refused: only regular files are read)"))),
    }
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

//! Files the release tools read and write: an untrusted file is opened once (no symlink
//! followed, nothing that could block, only a regular file), small files are read with a
//! bound, and every write is atomic (temp file in the same directory, fsync, rename, fsync
//! the directory).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{Error, Result};

/// Opens `path` for reading: a symlink, FIFO, device or directory is refused, on the
/// descriptor itself.
pub fn open_regular(path: &Path) -> Result<File> {
    let flags = (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32;
    let f = OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            Error::Usage(format!("{}: a symlink; only regular files are read", path.display()))
        } else {
            Error::Io { path: path.to_path_buf(), source: e }
        }
    })?;
    let m = f.metadata().map_err(Error::io(path))?;
    if !m.is_file() {
        return Err(Error::Usage(format!("{}: not a regular file", path.display())));
    }
    Ok(f)
}

/// Reads at most `max` bytes of a regular file; `None` when it is larger.
pub fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    let f = open_regular(path)?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf).map_err(Error::io(path))?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}

/// Replaces `path` with `bytes` atomically (mode 0644).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(Error::io(dir))?;
    tmp.write_all(bytes).map_err(Error::io(path))?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644)).map_err(Error::io(path))?;
    tmp.as_file().sync_all().map_err(Error::io(path))?;
    tmp.persist(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e.error })?;
    sync_dir(dir)
}

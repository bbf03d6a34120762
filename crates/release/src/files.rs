//! Files the release tools read and write: an untrusted file is opened once (no symlink
//! followed, nothing that could block, only a regular file), small files are read with a
//! bound, and every write is atomic (temp file in the same directory, fsync, rename, fsync
//! the directory).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Opens `path` for reading: a symlink, FIFO, device or directory is refused, on the
/// descriptor itself.
pub fn open_regular(path: &Path) -> Result<File> {
    match durable::open_regular(path).map_err(|f| Error::Io { path: f.path, source: f.source })? {
        durable::Opened::File(f) => Ok(f),
        durable::Opened::NotRegular("a symlink") => {
            Err(Error::Usage(format!("{}: a symlink; only regular files are read", path.display())))
        }
        durable::Opened::NotRegular(_) => Err(Error::Usage(format!("{}: not a regular file", path.display()))),
    }
}

/// Reads at most `max` bytes of a regular file; `None` when it is larger.
pub fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    let f = open_regular(path)?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf).map_err(Error::io(path))?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    durable::sync_dir(dir, &durable::Unwitnessed).map_err(|f| Error::Io { path: f.path, source: f.source })
}

/// Replaces `path` with `bytes` atomically (mode 0644).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    durable::write_atomic(path, bytes, &durable::Unwitnessed).map_err(|f| Error::Io { path: f.path, source: f.source })
}

//! Writing a slot: verified chunks streamed into the inactive slot on a second thread (so
//! decompressing and hashing overlap with the write, at most 4 chunks in flight), fsync, then
//! a parallel read-back of every chunk against its signed hash.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::fsutil::fsync_file;
use crate::{Error, failpoint};

/// Streams every verified chunk of `p` into `out`, then fsyncs it. `progress` sees the bytes
/// written so far.
pub fn stream_to_slot<R: Read>(
    p: &mut bundle::PayloadReader<'_, R>,
    mut out: File,
    path: &Path,
    chunk: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(), Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<(), Error> {
            for buf in rx {
                out.write_all(&buf).map_err(|e| Error::io(path, e))?;
                let _ = back_tx.send(buf);
            }
            failpoint("before-sync");
            fsync_file(&out, path)
        });
        let mut first = true;
        let produced = (|| -> Result<(), Error> {
            loop {
                let mut buf = back_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(chunk));
                if !p.next_chunk(&mut buf)? {
                    return Ok(());
                }
                if tx.send(buf).is_err() {
                    return Ok(()); // the writer failed: its error is reported below
                }
                progress(p.verified());
                if first {
                    failpoint("mid-write");
                    first = false;
                }
            }
        })();
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| Err(Error::State("slot writer panicked".into())));
        produced.and(written)
    })
}

/// Writes a verified payload (a slot's kernel or initrd) as `dir/name`: a unique temp file,
/// fsync, then renamed over the old one only once every chunk and the whole digest matched.
pub fn write_boot_file<R: Read>(p: &mut bundle::PayloadReader<'_, R>, dir: &Path, name: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut buf = Vec::new();
        while p.next_chunk(&mut buf)? {
            f.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
        }
        fsync_file(&f, &tmp)?;
        std::fs::rename(&tmp, dir.join(name)).map_err(|e| Error::io(&dir.join(name), e))?;
        crate::fsutil::fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the slot back and checks every chunk against its signed hash, on two threads.
pub fn read_back_matches(path: &Path, chunks: &[String], chunk: u64, size: u64) -> Result<bool, Error> {
    let check = |first: usize, step: usize| -> Result<bool, Error> {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut buf = vec![0u8; chunk as usize];
        for (i, want) in chunks.iter().enumerate().skip(first).step_by(step) {
            let start = i as u64 * chunk;
            let len = chunk.min(size - start) as usize;
            f.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, e))?;
            f.read_exact(&mut buf[..len]).map_err(|e| Error::io(path, e))?;
            if hex::encode(Sha256::digest(&buf[..len])) != *want {
                return Ok(false);
            }
        }
        Ok(true)
    };
    std::thread::scope(|s| {
        let other = s.spawn(|| check(1, 2));
        let mine = check(0, 2)?;
        let theirs = other.join().unwrap_or_else(|_| Err(Error::State("read-back thread panicked".into())))?;
        Ok(mine && theirs)
    })
}

/// Size of a slot: a file's length or a block device's size.
pub fn slot_len(p: &Path) -> Result<u64, Error> {
    let mut f = File::open(p).map_err(|e| Error::io(p, e))?;
    f.seek(SeekFrom::End(0)).map_err(|e| Error::io(p, e))
}

/// sha256 of the first `n` bytes of a slot, and how many there were.
pub fn hash_prefix(p: &Path, n: u64) -> Result<(String, u64), Error> {
    let mut r = File::open(p).map_err(|e| Error::io(p, e))?.take(n);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(|e| Error::io(p, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        got += k as u64;
    }
    Ok((hex::encode(h.finalize()), got))
}

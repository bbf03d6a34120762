//! Writing bundles: payloads are compressed once into a scratch writer while their chunk
//! hashes are computed (the manifest needs them before it is signed), then the bundle is laid
//! out as manifest, signatures, payloads, end marker.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::Error;
use crate::manifest::{Payload, Target};
use crate::name::EntryName;
use crate::reader::MANIFEST_ENTRY;
use crate::tar;

/// zstd settings of bundle payloads: level 3, 2 workers (the output does not depend on the
/// worker count), window within what the reader accepts.
pub const ZSTD_LEVEL: i32 = 3;
pub const ZSTD_WORKERS: u32 = 2;

/// Counts what passes through.
struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses `input` into `out` and describes it for the manifest.
pub fn compress_payload(
    name: &str,
    target: Target,
    mut input: impl Read,
    out: impl Write,
    chunk_size: u64,
) -> Result<Payload, Error> {
    EntryName::new(&format!("{name}.zst"))?;
    let counting = CountingWriter { inner: out, n: 0 };
    let mut enc = zstd::stream::Encoder::new(counting, ZSTD_LEVEL).map_err(|e| Error::Io(e.to_string()))?;
    enc.multithread(ZSTD_WORKERS).map_err(|e| Error::Io(e.to_string()))?;
    enc.window_log(22).map_err(|e| Error::Io(e.to_string()))?;
    enc.include_checksum(false).map_err(|e| Error::Io(e.to_string()))?;
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; chunk_size as usize];
    let mut size = 0u64;
    loop {
        let mut got = 0;
        while got < buf.len() {
            match input.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e.to_string())),
            }
        }
        if got == 0 {
            break;
        }
        whole.update(&buf[..got]);
        chunks.push(hex::encode(Sha256::digest(&buf[..got])));
        enc.write_all(&buf[..got]).map_err(|e| Error::Io(e.to_string()))?;
        size += got as u64;
        if got < buf.len() {
            break;
        }
    }
    let mut counting = enc.finish().map_err(|e| Error::Io(e.to_string()))?;
    // The caller's writer may buffer: a write error at its last flush (a full disk) must be
    // an error here, not lost when a buffer is dropped.
    counting.flush().map_err(|e| Error::Io(e.to_string()))?;
    Ok(Payload {
        name: name.to_string(),
        target,
        compression: "zstd".into(),
        size,
        compressed_size: counting.n,
        sha256: hex::encode(whole.finalize()),
        chunks,
    })
}

/// Lays out a bundle: `manifest` (its exact signed bytes), the signature files (name, text),
/// then each payload's compressed bytes in manifest order.
pub fn write_bundle(
    mut out: impl Write,
    manifest: &[u8],
    signatures: &[(String, String)],
    payloads: &mut [(&Payload, &mut dyn Read)],
) -> Result<(), Error> {
    let io = |e: io::Error| Error::Io(e.to_string());
    let name = EntryName::new(MANIFEST_ENTRY)?;
    tar::write_header(&mut out, &name, manifest.len() as u64).map_err(io)?;
    out.write_all(manifest).map_err(io)?;
    tar::write_padding(&mut out, manifest.len() as u64).map_err(io)?;
    for (n, text) in signatures {
        let name = EntryName::new(n)?;
        tar::write_header(&mut out, &name, text.len() as u64).map_err(io)?;
        out.write_all(text.as_bytes()).map_err(io)?;
        tar::write_padding(&mut out, text.len() as u64).map_err(io)?;
    }
    for (p, r) in payloads.iter_mut() {
        let name = EntryName::new(&p.entry_name())?;
        tar::write_header(&mut out, &name, p.compressed_size).map_err(io)?;
        let n = io::copy(&mut r.take(p.compressed_size), &mut out).map_err(io)?;
        if n != p.compressed_size {
            return Err(Error::SizeMismatch { what: p.entry_name(), declared: p.compressed_size, actual: n });
        }
        tar::write_padding(&mut out, p.compressed_size).map_err(io)?;
    }
    tar::write_end(&mut out).map_err(io)?;
    out.flush().map_err(io)
}

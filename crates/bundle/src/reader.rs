//! The streaming bundle reader. Order of trust, top to bottom:
//! 1. the manifest entry and the signature entries, each bounded in size before it is read;
//! 2. the signatures checked against the device's trust policy — a [`VerifiedBundle`] exists
//!    only past this point, and only then is the manifest parsed;
//! 3. each payload, decompressed with a bounded window, handed out one chunk at a time and only
//!    after that chunk's hash matched the signed manifest;
//! 4. the end-of-archive marker, then nothing: trailing bytes are refused.

use std::io::{self, Read};

use sha2::{Digest, Sha256};
use trust::{Expect, Policy, Prehash, Report};

use crate::Error;
use crate::manifest::{MAX_MANIFEST, Manifest, Payload};
use crate::tar::{self, BLOCK, Header, read_full};

pub const MANIFEST_ENTRY: &str = "manifest.toml";
pub const MAX_SIGNATURES: usize = 16;
/// zstd window accepted, log2: 2^24 = 16 MiB of decoder memory at most.
pub const MAX_WINDOW_LOG: u32 = 24;

/// Counts the bytes read, for error offsets, and remembers whether the input ended. An
/// interrupted read (EINTR) is retried here, once for every reader above it: zstd's decoder
/// would pass it up as an error, and a signal is not a corrupt bundle.
pub struct Counting<R> {
    inner: R,
    pub offset: u64,
    pub eof: bool,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.offset += n as u64;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

fn skip(r: &mut Counting<impl Read>, n: u64, what: &str) -> Result<(), Error> {
    let mut buf = [0u8; BLOCK];
    let mut left = n;
    while left > 0 {
        let k = left.min(BLOCK as u64) as usize;
        let at = r.offset;
        read_full(r, &mut buf[..k], at, what)?;
        if buf[..k].iter().any(|&b| b != 0) {
            return Err(Error::Tar { offset: at, why: format!("non-zero {what}") });
        }
        left -= k as u64;
    }
    Ok(())
}

fn next_header(r: &mut Counting<impl Read>) -> Result<Option<Header>, Error> {
    let at = r.offset;
    tar::read_header(r, at)
}

/// Reads the manifest and signatures, verifies them, and only then parses the manifest.
pub fn open<R: Read>(r: R, policy: &Policy, expect: Expect<'_>) -> Result<VerifiedBundle<R>, Error> {
    let mut r = Counting { inner: r, offset: 0, eof: false };
    let first = next_header(&mut r)?.ok_or(Error::Truncated { offset: 0, what: "manifest (empty archive)".into() })?;
    if first.name.as_str() != MANIFEST_ENTRY {
        return Err(Error::Unexpected { name: first.name.to_string(), expected: MANIFEST_ENTRY.into() });
    }
    if first.size > MAX_MANIFEST {
        return Err(Error::TooLarge { what: "manifest".into(), size: first.size, max: MAX_MANIFEST });
    }
    let mut manifest_bytes = vec![0u8; first.size as usize];
    let at = r.offset;
    read_full(&mut r, &mut manifest_bytes, at, "manifest")?;
    skip(&mut r, tar::padding(first.size), "padding")?;

    let mut signatures: Vec<(String, Vec<u8>)> = Vec::new();
    let pending = loop {
        let Some(h) = next_header(&mut r)? else { break None };
        let name = h.name.as_str();
        let Some(id) = name.strip_prefix("manifest.toml.").and_then(|n| n.strip_suffix(".minisig")) else {
            break Some(h);
        };
        if id.len() != 16 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Unexpected { name: name.to_string(), expected: "manifest.toml.KEYID.minisig".into() });
        }
        if signatures.len() == MAX_SIGNATURES {
            return Err(Error::TooMany {
                what: "signatures".into(),
                count: MAX_SIGNATURES as u64 + 1,
                max: MAX_SIGNATURES as u64,
            });
        }
        if signatures.iter().any(|(n, _)| n == name) {
            return Err(Error::Duplicate(name.to_string()));
        }
        if h.size > trust::MAX_SIG_FILE as u64 {
            return Err(Error::TooLarge {
                what: format!("signature {name}"),
                size: h.size,
                max: trust::MAX_SIG_FILE as u64,
            });
        }
        let mut buf = vec![0u8; h.size as usize];
        let at = r.offset;
        read_full(&mut r, &mut buf, at, "signature")?;
        skip(&mut r, tar::padding(h.size), "padding")?;
        signatures.push((name.to_string(), buf));
    };

    let accepted = policy
        .require(&Prehash::of_bytes(&manifest_bytes), &signatures, &expect)
        .map_err(|rejected| Error::Rejected(Box::new(rejected.into_report())))?;
    let report = accepted.report().clone();
    // Trusted from here on.
    let manifest = Manifest::parse(&manifest_bytes)?;
    if let Some(p) = expect.product.filter(|p| *p != manifest.product) {
        return Err(Error::WrongProduct { bundle: manifest.product.clone(), device: p.to_string() });
    }
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest_bytes)));
    Ok(VerifiedBundle { r, manifest, digest, report, pending, next: 0, ended: false })
}

/// A bundle whose manifest signatures met the policy. The only way to get one is [`open`].
pub struct VerifiedBundle<R> {
    r: Counting<R>,
    pub manifest: Manifest,
    /// `sha256:…` of the manifest bytes.
    pub digest: String,
    pub report: Report,
    pending: Option<Header>,
    next: usize,
    ended: bool,
}

impl<R: Read> VerifiedBundle<R> {
    /// The next payload, as the manifest lists them; `None` after the last one.
    pub fn next_payload(&mut self) -> Result<Option<PayloadReader<'_, R>>, Error> {
        if self.next == self.manifest.payloads.len() {
            return Ok(None);
        }
        if self.next > 0 && !self.ended {
            return Err(Error::Manifest("the previous payload was not read to its end".into()));
        }
        self.ended = false;
        let want = self.manifest.payloads[self.next].clone();
        let h = match self.pending.take() {
            Some(h) => h,
            None => next_header(&mut self.r)?.ok_or_else(|| Error::Truncated {
                offset: self.r.offset,
                what: format!("payload {}", want.entry_name()),
            })?,
        };
        if h.name.as_str() != want.entry_name() {
            let dup = h.name.as_str() == MANIFEST_ENTRY
                || self.manifest.payloads[..self.next].iter().any(|p| p.entry_name() == h.name.as_str());
            if dup {
                return Err(Error::Duplicate(h.name.to_string()));
            }
            return Err(Error::Unexpected { name: h.name.to_string(), expected: want.entry_name() });
        }
        if h.size != want.compressed_size {
            return Err(Error::SizeMismatch {
                what: want.entry_name(),
                declared: want.compressed_size,
                actual: h.size,
            });
        }
        self.next += 1;
        let take = (&mut self.r).take(h.size);
        let mut dec = zstd::stream::read::Decoder::new(take).map_err(|e| Error::Io(e.to_string()))?;
        dec.window_log_max(MAX_WINDOW_LOG).map_err(|e| Error::Io(e.to_string()))?;
        Ok(Some(PayloadReader {
            dec: Some(dec),
            chunk_size: self.manifest.chunk_size,
            payload: want,
            chunk: 0,
            done: 0,
            whole: Sha256::new(),
            ended: &mut self.ended,
        }))
    }

    /// After the last payload: the end-of-archive marker, then end of input.
    pub fn finish(mut self) -> Result<(), Error> {
        if self.next != self.manifest.payloads.len() || !self.ended {
            return Err(Error::Manifest("finish before every payload was read to its end".into()));
        }
        if let Some(h) = self.pending.take() {
            return Err(Error::Unexpected { name: h.name.to_string(), expected: "end of archive".into() });
        }
        if let Some(h) = next_header(&mut self.r)? {
            let dup = self.manifest.payloads.iter().any(|p| p.entry_name() == h.name.as_str());
            return Err(if dup { Error::Duplicate(h.name.to_string()) } else { Error::Undeclared(h.name.to_string()) });
        }
        let mut one = [0u8; 1];
        match self.r.read(&mut one) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Error::TrailingData { offset: self.r.offset - 1 }),
            Err(e) => Err(Error::Io(e.to_string())),
        }
    }
}

type PayloadDecoder<'a, R> = zstd::stream::read::Decoder<'static, io::BufReader<io::Take<&'a mut Counting<R>>>>;

/// Sorts out a read from the decoder: an input that ended before its entry is a truncated
/// bundle, whatever zstd says; any other error is corrupt data.
fn classify<R: Read>(dec: &PayloadDecoder<'_, R>, r: io::Result<usize>, name: &str) -> Result<usize, Error> {
    let take = dec.get_ref().get_ref();
    let input_ended_early = take.limit() > 0 && take.get_ref().eof;
    match r {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) | Err(_) if input_ended_early => {
            Err(Error::Truncated { offset: take.get_ref().offset, what: format!("payload {name}") })
        }
        Ok(n) => Ok(n),
        Err(e) => Err(Error::Corrupt { what: name.to_string(), why: e.to_string() }),
    }
}

/// A payload being streamed: each call to [`PayloadReader::next_chunk`] yields one chunk of
/// uncompressed bytes that already matched its signed hash.
pub struct PayloadReader<'a, R: Read> {
    dec: Option<PayloadDecoder<'a, R>>,
    chunk_size: u64,
    pub payload: Payload,
    chunk: usize,
    done: u64,
    /// sha256 of every verified byte so far: the signed whole-payload digest is checked too.
    whole: Sha256,
    ended: &'a mut bool,
}

impl<R: Read> PayloadReader<'_, R> {
    /// Fills `buf` with the next verified chunk; `Ok(false)` when the payload is complete:
    /// every chunk checked, the whole-payload sha256 checked (a signed manifest whose chunks
    /// and whole digest disagree is refused), its compressed entry fully consumed.
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<bool, Error> {
        let name = self.payload.entry_name();
        let Some(dec) = self.dec.as_mut() else { return Ok(false) };
        if self.done == self.payload.size {
            // Nothing may follow the declared size, in the stream or in the entry.
            let mut one = [0u8; 1];
            let r = dec.read(&mut one);
            if classify(dec, r, &name)? > 0 {
                return Err(Error::SizeMismatch {
                    what: name,
                    declared: self.payload.size,
                    actual: self.payload.size + 1,
                });
            }
            let Some(dec) = self.dec.take() else { return Ok(false) };
            let buffered = dec.finish();
            let left = buffered.buffer().len() as u64 + buffered.get_ref().limit();
            if left != 0 {
                return Err(Error::Corrupt { what: name, why: format!("{left} bytes after the compressed stream") });
            }
            let mut take = buffered.into_inner();
            let r = take.get_mut();
            let pad = tar::padding(self.payload.compressed_size);
            skip(r, pad, "padding")?;
            let whole = hex::encode(std::mem::take(&mut self.whole).finalize());
            if whole != self.payload.sha256 {
                return Err(Error::HashMismatch { what: name, chunk: None });
            }
            *self.ended = true;
            return Ok(false);
        }
        let want = (self.payload.size - self.done).min(self.chunk_size) as usize;
        buf.clear();
        buf.resize(want, 0);
        let mut got = 0;
        while got < want {
            let r = dec.read(&mut buf[got..]);
            match classify(dec, r, &name)? {
                0 => {
                    return Err(Error::SizeMismatch {
                        what: name,
                        declared: self.payload.size,
                        actual: self.done + got as u64,
                    });
                }
                n => got += n,
            }
        }
        let h = hex::encode(Sha256::digest(&buf[..]));
        if h != self.payload.chunks[self.chunk] {
            return Err(Error::HashMismatch { what: name, chunk: Some(self.chunk) });
        }
        self.whole.update(&buf[..]);
        self.chunk += 1;
        self.done += want as u64;
        Ok(true)
    }

    /// Bytes verified so far.
    pub fn verified(&self) -> u64 {
        self.done
    }
}

//! The streaming bundle reader. Order of trust, top to bottom:
//! 1. the manifest entry and the signature entries, each bounded in size before it is read;
//! 2. the signatures checked against the device's trust policy — a [`VerifiedBundle`] exists
//!    only past this point, and only then is the manifest parsed;
//! 3. each payload, decompressed with a bounded window, handed out one chunk at a time and only
//!    after that chunk's hash matched the signed manifest;
//! 4. the end-of-archive marker, then nothing: trailing bytes are refused.

use std::io::{self, Read};

use sha2::{Digest, Sha256};
use trust::dsse::{Envelope, IN_TOTO, Signature};
use trust::{Expect, Policy, Prehash, Report};

use crate::Error;
use crate::manifest::{MAX_MANIFEST, Manifest, PROVENANCE, Payload, Target};
use crate::tar::{self, BLOCK, Header, read_full};

pub const MANIFEST_ENTRY: &str = "manifest.toml";
pub const MAX_SIGNATURES: usize = 16;
/// The DSSE signature entries are `PROVENANCE.KEYID.dsse`.
const DSSE_PREFIX: &str = "provenance.json.";
const _: () = assert!(DSSE_PREFIX.len() == PROVENANCE.len() + 1);
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

    // The manifest's signatures, then (format 2) the provenance statement's DSSE signatures.
    let mut signatures: Vec<(String, Vec<u8>)> = Vec::new();
    let mut dsse: Vec<(String, Vec<u8>)> = Vec::new();
    let pending = loop {
        let Some(h) = next_header(&mut r)? else { break None };
        let name = h.name.as_str();
        let minisig = name.strip_prefix("manifest.toml.").and_then(|n| n.strip_suffix(".minisig"));
        let envelope_sig = name.strip_prefix(DSSE_PREFIX).and_then(|n| n.strip_suffix(".dsse"));
        let (id, list, pattern) = match (minisig, envelope_sig) {
            (Some(_), _) if !dsse.is_empty() => {
                return Err(Error::Unexpected {
                    name: name.to_string(),
                    expected: "provenance.json.KEYID.dsse (the manifest's signatures come first)".into(),
                });
            }
            (Some(id), _) => (id, &mut signatures, "manifest.toml.KEYID.minisig"),
            (None, Some(id)) => (id, &mut dsse, "provenance.json.KEYID.dsse"),
            (None, None) => break Some(h),
        };
        if id.len() != 16 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Unexpected { name: name.to_string(), expected: pattern.into() });
        }
        if list.len() == MAX_SIGNATURES {
            return Err(Error::TooMany {
                what: if pattern.ends_with(".dsse") { "provenance signatures" } else { "signatures" }.into(),
                count: MAX_SIGNATURES as u64 + 1,
                max: MAX_SIGNATURES as u64,
            });
        }
        if list.iter().any(|(n, _)| n == name) {
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
        list.push((name.to_string(), buf));
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
    let provenance = match manifest.payloads.iter().any(|p| p.target == Target::Provenance) {
        true => Some(Provenance {
            policy: policy.clone(),
            signatures: dsse.iter().map(|(name, bytes)| dsse_signature(name, bytes)).collect(),
            statement: Vec::new(),
            report: None,
            image: manifest
                .payloads
                .iter()
                .find(|p| p.target == Target::Root)
                .map(|p| p.sha256.clone())
                .unwrap_or_default(),
        }),
        false => match dsse.first() {
            Some((name, _)) => return Err(Error::Undeclared(name.clone())),
            None => None,
        },
    };
    Ok(VerifiedBundle { r, manifest, digest, report, pending, next: 0, ended: false, provenance })
}

/// The DSSE signature in a `provenance.json.KEYID.dsse` entry (`{"keyid", "sig"}`, as
/// `cargo xtask sign provenance.json` writes it). One that does not parse, or whose key id
/// differs from its name's, still goes to the policy, which counts it as a refused signer
/// with the reason, as it does a malformed minisig file.
fn dsse_signature(name: &str, bytes: &[u8]) -> Signature {
    let named = name.strip_prefix(DSSE_PREFIX).and_then(|n| n.strip_suffix(".dsse")).unwrap_or_default();
    match serde_json::from_slice::<Signature>(bytes) {
        Ok(s) if s.keyid.eq_ignore_ascii_case(named) => s,
        Ok(s) => {
            Signature { keyid: named.to_string(), sig: format!("(key id {} in an entry named for {named})", s.keyid) }
        }
        Err(_) => Signature { keyid: named.to_string(), sig: "(not a DSSE signature)".into() },
    }
}

/// The provenance statement being read, and what its signatures proved once it was whole.
struct Provenance {
    policy: Policy,
    signatures: Vec<Signature>,
    statement: Vec<u8>,
    report: Option<Report>,
    /// The sha256 of the root payload the statement must name among its subjects.
    image: String,
}

/// The statement names `image` (a sha256 in hex) among its subjects: it describes the image
/// this bundle installs, not another build's.
pub fn statement_names(statement: &[u8], image: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(statement).ok().is_some_and(|v| {
        v["subject"].as_array().is_some_and(|subjects| {
            !image.is_empty() && subjects.iter().any(|s| s["digest"]["sha256"].as_str() == Some(image))
        })
    })
}

/// A bundle whose manifest signatures met the policy. The only way to get one is [`open`].
///
/// Its verified facts are read through accessors and cannot be edited: the chunk list the
/// reader checks against, the security version the agent decides on, the digest it records
/// are the signed manifest's, from `open` to `finish` (cf. tough's `Repository`).
pub struct VerifiedBundle<R> {
    r: Counting<R>,
    manifest: Manifest,
    /// `sha256:…` of the manifest bytes.
    digest: String,
    report: Report,
    pending: Option<Header>,
    next: usize,
    ended: bool,
    provenance: Option<Provenance>,
}

impl<R: Read> VerifiedBundle<R> {
    /// The signed manifest, as verified.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// `sha256:…` of the signed manifest's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// What the manifest's signatures proved under the verifier's policy.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The provenance envelope (the statement and the DSSE signatures that verified), once
    /// its payload was read to its end and its signatures met the policy; `None` before that
    /// or when the bundle carries no provenance.
    pub fn provenance(&self) -> Option<(Envelope, &Report)> {
        let p = self.provenance.as_ref()?;
        let report = p.report.as_ref()?;
        let counted = p
            .signatures
            .iter()
            .zip(report.signers())
            .filter(|(_, s)| s.verified())
            .map(|(sig, _)| sig.clone())
            .collect();
        Some((Envelope::new(IN_TOTO, &p.statement, counted), report))
    }

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
        let provenance = match want.target {
            Target::Provenance => self.provenance.as_mut(),
            _ => None,
        };
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
            provenance,
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
    /// The provenance statement's bytes are kept (at most `dsse::MAX_PAYLOAD`, the manifest
    /// checked) and its signatures checked once it is whole.
    provenance: Option<&'a mut Provenance>,
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
            if let Some(p) = self.provenance.as_deref_mut() {
                let report = match p.policy.require_dsse(IN_TOTO, &p.statement, &p.signatures) {
                    Ok(a) => a.report().clone(),
                    Err(r) => return Err(Error::ProvenanceRejected(Box::new(r.into_report()))),
                };
                if !statement_names(&p.statement, &p.image) {
                    return Err(Error::ProvenanceElsewhere { image: p.image.clone() });
                }
                p.report = Some(report);
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
        if let Some(p) = self.provenance.as_deref_mut() {
            p.statement.extend_from_slice(buf);
        }
        self.chunk += 1;
        self.done += want as u64;
        Ok(true)
    }

    /// Bytes verified so far.
    pub fn verified(&self) -> u64 {
        self.done
    }
}

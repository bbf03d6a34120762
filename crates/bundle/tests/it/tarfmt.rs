//! The bundle's tar subset against an independent implementation (the `tar` crate): what the
//! writer makes, a general tar reader reads entry for entry; what a general ustar writer makes
//! (in the subset), this reader reads. Then the header fields one by one, the writer's chunking
//! and flushing, and the verification report an operator or officer reads.

use std::io::{self, Read, Write};

use bundle::{Code, EntryName, Target};
use trust::Expect;

use super::{CHUNK, bytes, image, made, policy};

#[test]
fn a_bundle_is_a_tar_archive_any_reader_reads_entry_for_entry() {
    let img = image(150_000);
    let m = made(&img);
    let b = bytes(&m.manifest, &m.payload_zst);
    let mut a = tar::Archive::new(&b[..]);
    let mut seen = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        assert_eq!(e.header().entry_type(), tar::EntryType::Regular);
        assert_eq!(e.header().mode().unwrap(), 0o644);
        seen.push((name, body.len()));
        if seen.len() == 3 {
            assert_eq!(body, m.payload_zst, "the payload entry holds the compressed stream");
        }
    }
    assert_eq!(seen[0].0, "manifest.toml");
    assert!(seen[1].0.starts_with("manifest.toml.") && seen[1].0.ends_with(".minisig"));
    assert_eq!(seen[2], ("root.img.zst".to_string(), m.payload_zst.len()));
    assert_eq!(seen.len(), 3);
    assert_eq!(b.len() % 512, 0);
}

/// A ustar entry made by the `tar` crate, in the bundle subset.
fn foreign(name: &str, body: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(body.len() as u64);
    h.set_mode(0o640);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = Vec::new();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn a_ustar_header_from_another_writer_is_read_with_its_size_and_padding() {
    for size in [0usize, 1, 511, 512, 513, 1500] {
        let body = vec![7u8; size];
        let mut ar = foreign("root.img.zst", &body);
        ar.extend_from_slice(&foreign("next", b"x"));
        let mut r = &ar[..];
        let h = bundle::tar::read_header(&mut r, 0).unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.size), ("root.img.zst", size as u64));
        assert_eq!(bundle::tar::padding(h.size) as usize, (512 - size % 512) % 512, "{size}");
        let mut skip = vec![0u8; size + bundle::tar::padding(h.size) as usize];
        r.read_exact(&mut skip).unwrap();
        let next = bundle::tar::read_header(&mut r, 512 + skip.len() as u64).unwrap().unwrap();
        assert_eq!(next.name.as_str(), "next", "{size}: the padding was skipped exactly");
    }
}

fn header(name: &str, size: u64) -> [u8; 512] {
    let mut v = Vec::new();
    bundle::tar::write_header(&mut v, &EntryName::new(name).unwrap(), size).unwrap();
    v.try_into().unwrap()
}

/// Sets a field and the checksum again (a header a hostile writer could make).
fn with(mut h: [u8; 512], at: usize, bytes: &[u8]) -> [u8; 512] {
    h[at..at + bytes.len()].copy_from_slice(bytes);
    let sum: u64 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn read(h: &[u8]) -> Result<Option<bundle::tar::Header>, bundle::Error> {
    let mut r = h;
    bundle::tar::read_header(&mut r, 1024)
}

#[test]
fn every_header_field_is_checked() {
    let h = header("a", 10);
    assert_eq!(read(&h).unwrap().unwrap().size, 10);
    // Size and mode fields: octal digits only, at most 12, spaces around allowed.
    assert_eq!(read(&with(h, 124, b"   00000012 \0")).unwrap().unwrap().size, 10);
    assert_eq!(read(&with(h, 124, b"777777777777")).unwrap().unwrap().size, (1 << 36) - 1, "12 digits, no NUL");
    for bad in [&b"00000000018\0"[..], b"0000000001x\0", b"\0\0\0\0\0\0\0\0\0\0\0\0"] {
        let e = read(&with(h, 124, bad)).unwrap_err().to_string();
        assert!(e.contains("size field is not octal") || e.contains("not a POSIX ustar"), "{bad:?}: {e}");
    }
    // The checksum must match, and is checked as an octal number of the whole header.
    let mut broken = h;
    broken[0] ^= 1;
    let e = read(&broken).unwrap_err().to_string();
    assert!(e.starts_with("tar header at byte 1024: header checksum"), "{e}");
    let zeros = with(h, 148, b"0000000\0");
    assert!(read(&with(zeros, 0, b"a")).is_ok(), "with() recomputes it");
    // Magic and version: POSIX ustar only (GNU's `ustar  \0` is refused).
    assert!(read(&with(h, 257, b"ustar  \0")).unwrap_err().to_string().contains("not a POSIX ustar"));
    assert!(read(&with(h, 263, b"  ")).unwrap_err().to_string().contains("not a POSIX ustar"));
    // A prefix field, or bytes after the name's NUL.
    assert!(read(&with(h, 345, b"dir")).unwrap_err().to_string().contains("prefix field"));
    assert!(read(&with(h, 50, b"x")).unwrap_err().to_string().contains("bytes after the name"));
    assert!(read(&with(h, 157, b"target")).unwrap_err().to_string().contains("link name"));
    assert!(read(&with(h, 100, b"0004644\0")).unwrap_err().to_string().contains("setuid"));
    // The end marker: two zero blocks; one zero block then the end is a truncation there.
    let e = read(&[0u8; 512]).unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        (Code::Truncated, "truncated at byte 1536: the bundle ends inside the end-of-archive marker".into())
    );
    assert!(read(&[0u8; 1024]).unwrap().is_none());
    // Entry sizes up to the 12-digit field's limit.
    let mut sink = Vec::new();
    let n = EntryName::new("a").unwrap();
    assert!(bundle::tar::write_header(&mut sink, &n, (1 << 36) - 1).is_ok());
    assert!(bundle::tar::write_header(&mut sink, &n, 1 << 36).is_err());
    assert_eq!(read(&sink[..512]).unwrap().unwrap().size, (1 << 36) - 1);
}

/// A reader that is interrupted before every read and hands out odd-sized pieces.
struct Jittery<'a>(&'a [u8], bool);

impl Read for Jittery<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.1 = !self.1;
        if self.1 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let n = buf.len().min(self.0.len()).min(777);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// A writer that keeps bytes only when flushed (a buffered device).
#[derive(Default)]
struct NeedsFlush {
    pending: Vec<u8>,
    kept: Vec<u8>,
}

impl Write for &mut NeedsFlush {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.kept.append(&mut self.pending);
        Ok(())
    }
}

#[test]
fn compress_payload_chunks_exactly_survives_interrupted_reads_and_flushes() {
    for size in [1usize, CHUNK as usize - 1, CHUNK as usize, CHUNK as usize + 1, 3 * CHUNK as usize] {
        let img = image(size);
        let mut out = NeedsFlush::default();
        let p = bundle::compress_payload("root.img", Target::Root, Jittery(&img, false), &mut out, CHUNK).unwrap();
        assert_eq!(p.size, size as u64);
        assert_eq!(p.chunks.len(), size.div_ceil(CHUNK as usize), "{size}");
        assert!(out.pending.is_empty(), "{size}: everything written was flushed");
        assert_eq!(p.compressed_size, out.kept.len() as u64);
        assert_eq!(zstd::stream::decode_all(&out.kept[..]).unwrap(), img, "{size}");
        let whole = hex_sha(&img);
        assert_eq!(p.sha256, whole);
        assert_eq!(p.chunks[0], hex_sha(&img[..size.min(CHUNK as usize)]));
    }
    // A read error that is not an interruption stops it.
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("device gone"))
        }
    }
    let e = bundle::compress_payload("root.img", Target::Root, Broken, Vec::new(), CHUNK).unwrap_err();
    assert_eq!(e.to_string(), "read error: device gone");
}

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn the_verify_report_says_each_signer_each_role_and_the_verdict() {
    let img = image(150_000);
    let m = made(&img);
    let good = bytes(&m.manifest, &m.payload_zst);
    let (r, manifest) = bundle::verify_stream(&good[..], "b.airlock", "policy.toml", &policy(), Expect::default());
    assert!(r.accepted() && manifest.is_some());
    assert_eq!(r.bundle.as_ref().unwrap().payload_bytes, 150_000, "every payload byte counted");
    let text = r.render_text();
    assert!(text.starts_with("b.airlock (policy policy.toml version 1)\n"), "{text}");
    assert!(
        text.contains("  verified  0807060504030201  release `v`  (manifest.toml.0807060504030201.minisig)"),
        "{text}"
    );
    assert!(text.contains("  role release   1 of 1 needed: met\n"), "{text}");
    assert!(text.contains("150000 payload bytes verified chunk by chunk"), "{text}");
    assert!(text.ends_with("\naccepted"), "{text}");
    let (signers, roles) = (r.signers.clone(), r.roles.clone());
    assert_eq!((signers.len(), roles.len()), (1, 1));
    assert!(signers[0].verified && roles[0].met);

    // Refused: the reason code and message end the text; a second refusal keeps the first.
    let mut bad = good.clone();
    let at = good.len() - 1024 - 600;
    bad[at] ^= 0xff;
    let (mut r, m2) = bundle::verify_stream(&bad[..], "b.airlock", "policy.toml", &policy(), Expect::default());
    assert!(!r.accepted() && m2.is_none());
    let code = r.reason.clone().unwrap();
    assert!(["hash-mismatch", "corrupt-payload"].contains(&code.as_str()), "{code}");
    r.refuse("other", "later");
    assert_eq!(r.reason.as_deref(), Some(code.as_str()));
    assert!(r.render_text().lines().last().unwrap().starts_with(&format!("rejected ({code}): ")));
    r.message = None;
    assert_eq!(r.render_text().lines().last().unwrap(), format!("rejected ({code})"));

    // No signatures at all: said so, before the roles.
    let text = toml::to_string(&m.manifest).unwrap();
    let mut unsigned = Vec::new();
    let mut rd: &[u8] = &m.payload_zst;
    bundle::write_bundle(&mut unsigned, text.as_bytes(), &[], &mut [(&m.manifest.payloads[0], &mut rd)]).unwrap();
    let (r, _) = bundle::verify_stream(&unsigned[..], "u.airlock", "p", &policy(), Expect::default());
    let t = r.render_text();
    assert!(t.contains("  no signatures\n  role release   0 of 1 needed: NOT met\n"), "{t}");
    assert!(
        t.ends_with("rejected (bad-signature): signatures do not meet the trust policy: no signatures (release 0/1)"),
        "{t}"
    );
}

#[test]
fn a_dev_policy_says_insecure_in_the_verdict() {
    let dev = trust::Policy::parse(include_str!("../../../../keys/dev/trust.toml")).unwrap();
    let img = image(70_000);
    let m = made(&img);
    let (r, _) = bundle::verify_stream(&bytes(&m.manifest, &m.payload_zst)[..], "b", "dev", &dev, Expect::default());
    assert!(r.insecure_dev_key);
    let t = r.render_text();
    assert!(t.lines().next().unwrap().ends_with("— INSECURE DEV KEY: anyone can sign with it)"), "{t}");
    assert!(t.lines().last().unwrap().starts_with("rejected"), "not signed by the dev keys: {t}");
}

#[test]
fn a_short_stream_is_a_size_mismatch_naming_what_it_holds() {
    let img = image(3 * CHUNK as usize);
    let mut m = made(&img[..2 * CHUNK as usize + 5]);
    // Declares 3 chunks' worth; the stream holds 2 chunks and 5 bytes.
    let full = made(&img).manifest;
    m.manifest.payloads[0].size = full.payloads[0].size;
    m.manifest.payloads[0].chunks = full.payloads[0].chunks.clone();
    m.manifest.payloads[0].sha256 = full.payloads[0].sha256.clone();
    let (_, r) = super::read_all(&bytes(&m.manifest, &m.payload_zst));
    let e = r.unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        (
            Code::SizeMismatch,
            format!(
                "root.img.zst: the signed manifest declares {} bytes, the bundle holds {}",
                3 * CHUNK,
                2 * CHUNK + 5
            )
        )
    );
}

#[test]
fn a_payload_reader_counts_its_verified_bytes() {
    let img = image(150_000);
    let m = made(&img);
    let b = bytes(&m.manifest, &m.payload_zst);
    let mut vb = bundle::open(&b[..], &policy(), Expect::default()).unwrap();
    let mut p = vb.next_payload().unwrap().unwrap();
    let mut buf = Vec::new();
    assert_eq!(p.verified(), 0);
    assert!(p.next_chunk(&mut buf).unwrap());
    assert_eq!(p.verified(), CHUNK);
    while p.next_chunk(&mut buf).unwrap() {}
    assert_eq!(p.verified(), 150_000);
}

/// A bundle of `m` signed by the dev release key and the dev approval key (as a dev build is).
fn dev_signed(m: &bundle::Manifest, zst: &[u8]) -> Vec<u8> {
    let text = toml::to_string(m).unwrap();
    let mut sigs = Vec::new();
    for (key, role) in [
        (include_str!("../../../../keys/dev/dev.key"), "release"),
        (include_str!("../../../../keys/dev/dev-approval.key"), "approval"),
    ] {
        let k = trust::SecretKey::parse(key, None).unwrap();
        let s = trust::SignatureFile::sign(
            &k,
            &trust::Prehash::of_bytes(text.as_bytes()),
            &format!("airlock product=p version=2.0.0 role={role}"),
        )
        .unwrap();
        sigs.push((format!("manifest.toml.{}.minisig", k.id()), s.to_file()));
    }
    let mut out = Vec::new();
    let mut r: &[u8] = zst;
    bundle::write_bundle(&mut out, text.as_bytes(), &sigs, &mut [(&m.payloads[0], &mut r)]).unwrap();
    out
}

#[test]
fn a_bundle_the_dev_keys_signed_is_accepted_and_labelled_insecure_to_the_last_line() {
    let dev = trust::Policy::parse(include_str!("../../../../keys/dev/trust.toml")).unwrap();
    let m = made(&image(70_000));
    let (r, manifest) =
        bundle::verify_stream(&dev_signed(&m.manifest, &m.payload_zst)[..], "b", "dev", &dev, Expect::default());
    assert!(r.accepted() && manifest.is_some(), "{}", r.render_text());
    let t = r.render_text();
    assert_eq!(t.lines().last().unwrap(), "accepted — INSECURE DEV KEY", "{t}");
    assert!(!t.contains("no signatures"), "{t}");
    // The same bytes under a release policy: refused, and no dev label anywhere.
    let (r, _) =
        bundle::verify_stream(&dev_signed(&m.manifest, &m.payload_zst)[..], "b", "p", &policy(), Expect::default());
    assert!(!r.accepted() && !r.insecure_dev_key, "{}", r.render_text());
    assert!(!r.render_text().contains("INSECURE DEV KEY"), "{}", r.render_text());
}

#[test]
fn no_signatures_is_said_only_when_signatures_were_looked_for_and_none_found() {
    let m = made(&image(70_000));
    let good = bytes(&m.manifest, &m.payload_zst);
    let (r, _) = bundle::verify_stream(&good[..], "b", "p", &policy(), Expect::default());
    assert!(r.accepted() && !r.render_text().contains("no signatures"), "{}", r.render_text());
    // Refused before any signature was read (the manifest entry is cut short): no roles, no
    // signers, and nothing said about signatures.
    let (r, _) = bundle::verify_stream(&good[..700], "b", "p", &policy(), Expect::default());
    assert!(!r.accepted() && r.signers.is_empty() && r.roles.is_empty(), "{r:?}");
    assert!(!r.render_text().contains("no signatures"), "{}", r.render_text());
}

#[test]
fn at_most_twenty_signer_lines_then_a_count_of_the_rest() {
    let m = made(&image(70_000));
    let (mut r, _) =
        bundle::verify_stream(&bytes(&m.manifest, &m.payload_zst)[..], "b", "p", &policy(), Expect::default());
    let one = r.signers[0].clone();
    r.signers = vec![one.clone(); bundle::MAX_SIGNER_LINES];
    let t = r.render_text();
    assert_eq!(t.lines().filter(|l| l.starts_with("  verified  ")).count(), 20, "{t}");
    assert!(!t.contains("more signature files"), "exactly twenty are all shown: {t}");
    r.signers.push(one);
    let t = r.render_text();
    assert_eq!(t.lines().filter(|l| l.starts_with("  verified  ")).count(), 20, "{t}");
    assert!(t.contains("  …and 1 more signature files\n"), "{t}");
}

/// A reader that is interrupted (EINTR) before every read that would give bytes.
struct Interrupting<'a> {
    inner: &'a [u8],
    next_fails: bool,
}

impl Read for Interrupting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.next_fails = !self.next_fails;
        if self.next_fails {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        self.inner.read(buf)
    }
}

#[test]
fn an_interrupted_read_is_retried_not_refused() {
    let img = image(150_000);
    let m = made(&img);
    let good = bytes(&m.manifest, &m.payload_zst);
    let (r, manifest) = bundle::verify_stream(
        Interrupting { inner: &good[..], next_fails: false },
        "b",
        "p",
        &policy(),
        Expect::default(),
    );
    assert!(r.accepted() && manifest.is_some(), "{}", r.render_text());
}

#[test]
fn a_header_read_through_interruptions_is_the_same_header() {
    let ar = foreign("root.img.zst", b"abc");
    let mut r = Interrupting { inner: &ar[..], next_fails: false };
    let h = bundle::tar::read_header(&mut r, 0).unwrap().unwrap();
    assert_eq!((h.name.as_str(), h.size), ("root.img.zst", 3));
}

/// Gives its parts one after the other, with an end of input (`Ok(0)`) between them: a file
/// that grows while it is read.
struct Growing(Vec<Vec<u8>>);

impl Read for Growing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(part) = self.0.first_mut() else { return Ok(0) };
        if part.is_empty() {
            self.0.remove(0);
            return Ok(0);
        }
        let n = part.len().min(buf.len());
        buf[..n].copy_from_slice(&part[..n]);
        part.drain(..n);
        Ok(n)
    }
}

#[test]
fn a_payload_is_what_its_input_held_up_to_its_first_end() {
    let img = image(1000);
    let input = Growing(vec![img.clone(), vec![9u8; 500]]);
    let mut out = Vec::new();
    let p = bundle::compress_payload("root.img", Target::Root, input, &mut out, CHUNK).unwrap();
    assert_eq!((p.size, p.chunks.len()), (1000, 1), "nothing read after the input ended");
    assert_eq!(zstd::stream::decode_all(&out[..]).unwrap(), img);
}

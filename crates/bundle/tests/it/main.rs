//! The bundle reader on its own: a good bundle streams every chunk and ends cleanly; a
//! payload swapped under a valid manifest is refused at its first bad chunk, and no byte of
//! that chunk is handed out; a whole-payload digest that disagrees with the chunks, an empty
//! payload, every truncation on a block boundary and every bit flip of the manifest are
//! refused with their reason codes. (The agent's corpus in crates/sideload covers the rest of
//! SECURITY.md against a device.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, clippy::disallowed_types)]

mod manifest;
mod provenance;
mod structure;
mod tarfmt;

use bundle::{Code, Manifest, Payload, Target};
use trust::{Expect, Policy, Prehash, SecretKey, SignatureFile};

const CHUNK: u64 = 64 << 10;

fn key() -> SecretKey {
    SecretKey::from_seed([5; 32], [1, 2, 3, 4, 5, 6, 7, 8])
}

fn policy() -> Policy {
    Policy::parse(&format!(
        "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"v\", key = \"{}\" }}]\n",
        key().public().to_base64()
    ))
    .unwrap()
}

fn image(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i as u64).wrapping_mul(2654435761).to_le_bytes()[3]).collect()
}

struct Made {
    manifest: Manifest,
    payload_zst: Vec<u8>,
}

fn made(img: &[u8]) -> Made {
    let mut z = Vec::new();
    let p: Payload = bundle::compress_payload("root.img", Target::Root, img, &mut z, CHUNK).unwrap();
    let manifest = Manifest {
        format: 1,
        product: "p".into(),
        version: product::Version::parse("2.0.0").unwrap(),
        security_version: 2,
        channel: product::Channel::Release,
        previous_manifest: String::new(),
        build_manifest: format!("sha256:{}", "0".repeat(64)),
        hash: "sha256".into(),
        chunk_size: CHUNK,
        cmdline: None,
        verity: None,
        payloads: vec![p],
    };
    Made { manifest, payload_zst: z }
}

/// Lays out a bundle with `m` signed as given (not re-checked: hostile manifests too).
fn bytes(m: &Manifest, zst: &[u8]) -> Vec<u8> {
    let text = toml::to_string(m).unwrap();
    let sig = SignatureFile::sign(
        &key(),
        &Prehash::of_bytes(text.as_bytes()),
        "airlock product=p version=2.0.0 role=release",
    )
    .unwrap();
    let mut out = Vec::new();
    let mut r: &[u8] = zst;
    bundle::write_bundle(
        &mut out,
        text.as_bytes(),
        &[(format!("manifest.toml.{}.minisig", key().id()), sig.to_file())],
        &mut [(&m.payloads[0], &mut r)],
    )
    .unwrap();
    out
}

/// Reads a bundle to its end; returns the verified bytes handed out, and the outcome.
fn read_all(b: &[u8]) -> (Vec<u8>, Result<(), bundle::Error>) {
    let mut out = Vec::new();
    let r = (|| {
        let mut vb = bundle::open(b, &policy(), Expect::default())?;
        let mut buf = Vec::new();
        while let Some(mut p) = vb.next_payload()? {
            while p.next_chunk(&mut buf)? {
                out.extend_from_slice(&buf);
            }
        }
        vb.finish()
    })();
    (out, r)
}

#[test]
fn a_good_bundle_streams_every_verified_byte_and_ends_cleanly() {
    let img = image(300_000);
    let m = made(&img);
    let (got, r) = read_all(&bytes(&m.manifest, &m.payload_zst));
    r.unwrap();
    assert_eq!(got, img);
}

#[test]
fn a_payload_swapped_under_a_valid_manifest_stops_at_its_first_bad_chunk() {
    let img = image(300_000);
    let m = made(&img);
    // Another image whose third chunk differs, compressed to the same declared size.
    let mut other = img.clone();
    other[2 * CHUNK as usize + 17] ^= 0xff;
    let mut z = Vec::new();
    let p = bundle::compress_payload("root.img", Target::Root, &other[..], &mut z, CHUNK).unwrap();
    let mut manifest = m.manifest.clone();
    manifest.payloads[0].compressed_size = p.compressed_size;
    let (got, r) = read_all(&bytes(&manifest, &z));
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::HashMismatch);
    assert_eq!(e.to_string(), "root.img.zst: chunk 2 does not match its signed hash");
    assert_eq!(got, img[..2 * CHUNK as usize], "exactly the two good chunks were handed out, nothing of the third");
}

#[test]
fn a_whole_payload_digest_that_disagrees_with_the_chunks_is_refused() {
    let img = image(200_000);
    let mut m = made(&img);
    m.manifest.payloads[0].sha256 = "a".repeat(64);
    let (_, r) = read_all(&bytes(&m.manifest, &m.payload_zst));
    let e = r.unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        (Code::HashMismatch, "root.img.zst: does not match its signed sha256".into())
    );
}

#[test]
fn an_empty_payload_is_refused() {
    let m = made(&[]);
    let (_, r) = read_all(&bytes(&m.manifest, &m.payload_zst));
    let e = r.unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        (Code::EmptyPayload, "payload `root.img` is empty: a bundle installs something or is refused".into())
    );
}

#[test]
fn every_truncation_on_a_block_boundary_is_refused_as_truncated() {
    let m = made(&image(150_000));
    let good = bytes(&m.manifest, &m.payload_zst);
    for n in (0..good.len()).step_by(512) {
        let (_, r) = read_all(&good[..n]);
        assert_eq!(r.unwrap_err().code(), Code::Truncated, "cut at {n}");
    }
}

#[test]
fn every_bit_flip_of_the_signed_manifest_is_refused_before_it_is_parsed() {
    let m = made(&image(70_000));
    let good = bytes(&m.manifest, &m.payload_zst);
    let len = toml::to_string(&m.manifest).unwrap().len();
    for i in 512..512 + len {
        for bit in 0..8 {
            let mut b = good.clone();
            b[i] ^= 1 << bit;
            let (_, r) = read_all(&b);
            assert_eq!(r.unwrap_err().code(), Code::BadSignature, "flip of manifest byte {} bit {bit}", i - 512);
        }
    }
}

/// A reader whose device goes away after `left` bytes (a USB stick pulled out): EIO.
struct Vanishing<'a> {
    bytes: &'a [u8],
    left: usize,
}

impl std::io::Read for Vanishing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        let n = buf.len().min(self.left).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn an_io_error_mid_read_is_refused_as_io_and_nothing_unverified_is_handed_out() {
    let img = image(300_000);
    let m = made(&img);
    let good = bytes(&m.manifest, &m.payload_zst);
    for cut in [100, 700, 2000, good.len() / 2, good.len() - 600] {
        let mut out = Vec::new();
        let r = (|| {
            let mut vb = bundle::open(Vanishing { bytes: &good, left: cut }, &policy(), Expect::default())?;
            let mut buf = Vec::new();
            while let Some(mut p) = vb.next_payload()? {
                while p.next_chunk(&mut buf)? {
                    out.extend_from_slice(&buf);
                }
            }
            vb.finish()
        })();
        let e = r.unwrap_err();
        assert!(matches!(e.code(), Code::Io | Code::CorruptPayload), "cut at {cut}: {e}");
        assert_eq!(&img[..out.len()], &out[..], "only verified bytes were handed out");
        assert!(out.len() % CHUNK as usize == 0 || out.len() == img.len(), "whole chunks only");
    }
}

#[test]
fn a_manifest_entry_is_bounded_from_its_header_before_a_byte_is_read() {
    // A header that declares one byte more than the limit and nothing behind it: refused for its
    // size, not for the missing bytes.
    let name = bundle::EntryName::new("manifest.toml").unwrap();
    for (size, code) in [(bundle::MAX_MANIFEST + 1, Code::TooLarge), (bundle::MAX_MANIFEST, Code::Truncated)] {
        let mut b = Vec::new();
        bundle::tar::write_header(&mut b, &name, size).unwrap();
        let (_, r) = read_all(&b);
        let e = r.unwrap_err();
        assert_eq!(e.code(), code, "{size}: {e}");
        if code == Code::Truncated {
            assert_eq!(e.to_string(), "truncated at byte 512: the bundle ends inside the manifest");
        }
    }
}

#[test]
fn truncation_names_the_byte_offset_where_the_bundle_ends() {
    let m = made(&image(150_000));
    let good = bytes(&m.manifest, &m.payload_zst);
    let (_, r) = read_all(&good[..700]);
    assert_eq!(r.unwrap_err().to_string(), "truncated at byte 700: the bundle ends inside the manifest");
    let cut = good.len() - 1024 - 100;
    let (_, r) = read_all(&good[..cut]);
    let e = r.unwrap_err();
    assert!(e.to_string().starts_with(&format!("truncated at byte {cut}")), "{e}");
}

#[test]
fn an_unsigned_or_wrongly_signed_bundle_says_which_role_is_short_and_why() {
    let m = made(&image(70_000));
    let text = toml::to_string(&m.manifest).unwrap();
    let unsigned = |sigs: &[(String, String)]| {
        let mut out = Vec::new();
        let mut r: &[u8] = &m.payload_zst;
        bundle::write_bundle(&mut out, text.as_bytes(), sigs, &mut [(&m.manifest.payloads[0], &mut r)]).unwrap();
        out
    };
    let (_, r) = read_all(&unsigned(&[]));
    let e = r.unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        (Code::BadSignature, "signatures do not meet the trust policy: no signatures (release 0/1)".into())
    );
    let other = SecretKey::from_seed([9; 32], [9, 9, 9, 9, 9, 9, 9, 9]);
    let sig = SignatureFile::sign(&other, &Prehash::of_bytes(text.as_bytes()), "x").unwrap();
    let (_, r) = read_all(&unsigned(&[(format!("manifest.toml.{}.minisig", other.id()), sig.to_file())]));
    let e = r.unwrap_err().to_string();
    assert!(e.starts_with("signatures do not meet the trust policy: release 0/1 (manifest.toml."), "{e}");
    assert!(e.contains(".minisig: "), "each signer's reason is named: {e}");
    let good = SignatureFile::sign(&key(), &Prehash::of_bytes(text.as_bytes()), "x").unwrap();
    let (_, r) = read_all(&unsigned(&[(format!("manifest.toml.{}.minisig", key().id()), good.to_file())]));
    r.unwrap();
}

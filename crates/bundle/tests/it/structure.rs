//! The archive's structure, entry by entry: what may come where, how many, how big, and what
//! is refused when a hostile stick lays it out otherwise. Every archive here is written by
//! hand, header by header, so that layouts the writer never makes can be tried.

use bundle::{Code, EntryName, Manifest, Target};
use trust::{Expect, Prehash, SignatureFile};

use super::{CHUNK, image, key, made, policy};

/// A tar archive of these entries, in this order, with or without its end marker.
fn raw(entries: &[(&str, &[u8])], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, body) in entries {
        bundle::tar::write_header(&mut out, &EntryName::new(name).unwrap(), body.len() as u64).unwrap();
        out.extend_from_slice(body);
        bundle::tar::write_padding(&mut out, body.len() as u64).unwrap();
    }
    if end {
        bundle::tar::write_end(&mut out).unwrap();
    }
    out
}

fn sig_name() -> String {
    format!("manifest.toml.{}.minisig", key().id())
}

fn signed(m: &Manifest) -> (String, String) {
    let text = toml::to_string(m).unwrap();
    let sig =
        SignatureFile::sign(&key(), &Prehash::of_bytes(text.as_bytes()), "airlock product=p version=2.0.0").unwrap();
    (text, sig.to_file())
}

fn open_err(b: &[u8], expect: Expect<'_>) -> bundle::Error {
    match bundle::open(b, &policy(), expect) {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    }
}

#[test]
fn signature_entries_are_named_by_a_16_digit_hex_key_id() {
    let m = made(&image(70_000));
    let (text, sig) = signed(&m.manifest);
    for bad in [
        "manifest.toml.zzzzzzzzzzzzzzzz.minisig",
        "manifest.toml.0123456789abcde.minisig",
        "manifest.toml.0123456789abcdef0.minisig",
    ] {
        let b = raw(&[("manifest.toml", text.as_bytes()), (bad, sig.as_bytes())], true);
        let e = open_err(&b, Expect::default());
        assert_eq!(
            (e.code(), e.to_string()),
            (Code::UndeclaredEntry, format!("unexpected entry `{bad}` where `manifest.toml.KEYID.minisig` belongs"))
        );
    }
}

#[test]
fn at_most_16_signatures_each_named_once_each_at_most_4_kib() {
    let m = made(&image(70_000));
    let (text, sig) = signed(&m.manifest);
    let names: Vec<String> = (0..17).map(|i| format!("manifest.toml.{i:016x}.minisig")).collect();
    let build = |n: usize, body: &[u8]| {
        let mut e: Vec<(&str, &[u8])> = vec![("manifest.toml", text.as_bytes())];
        e.extend(names[..n].iter().map(|s| (s.as_str(), body)));
        raw(&e, true)
    };
    let e = open_err(&build(17, b"x"), Expect::default());
    assert_eq!((e.code(), e.to_string()), (Code::TooLarge, "17 signatures, more than the 16 accepted".into()));
    // Sixteen are read, and judged by the policy (none of these verifies).
    assert_eq!(open_err(&build(16, b"x"), Expect::default()).code(), Code::BadSignature);

    let b =
        raw(&[("manifest.toml", text.as_bytes()), (&sig_name(), sig.as_bytes()), (&sig_name(), sig.as_bytes())], true);
    let e = open_err(&b, Expect::default());
    assert_eq!((e.code(), e.to_string()), (Code::DuplicateEntry, format!("entry `{}` appears twice", sig_name())));

    let max = trust::MAX_SIG_FILE;
    let big = vec![b'a'; max + 1];
    let e = open_err(&build(1, &big), Expect::default());
    assert_eq!(
        (e.code(), e.to_string()),
        (Code::TooLarge, format!("signature {} is 4097 bytes, more than the 4096 accepted", names[0]))
    );
    assert_eq!(open_err(&build(1, &big[..max]), Expect::default()).code(), Code::BadSignature, "4096 bytes are read");
}

#[test]
fn a_bundle_for_another_product_is_refused_after_its_signatures_hold() {
    // Signed (by a trusted key) with a comment that claims product q; the manifest says p.
    let m = made(&image(70_000));
    let text = toml::to_string(&m.manifest).unwrap();
    let sig = SignatureFile::sign(&key(), &Prehash::of_bytes(text.as_bytes()), "airlock product=q version=2.0.0")
        .unwrap()
        .to_file();
    let b = raw(
        &[("manifest.toml", text.as_bytes()), (&sig_name(), sig.as_bytes()), ("root.img.zst", &m.payload_zst)],
        true,
    );
    let e = open_err(&b, Expect { product: Some("q"), version: None });
    assert_eq!((e.code(), e.to_string()), (Code::WrongProduct, "bundle is for product `p`, this device is `q`".into()));
    let (text, sig) = signed(&m.manifest);
    let b = raw(
        &[("manifest.toml", text.as_bytes()), (&sig_name(), sig.as_bytes()), ("root.img.zst", &m.payload_zst)],
        true,
    );
    assert!(bundle::open(&b[..], &policy(), Expect { product: Some("p"), version: None }).is_ok());
}

/// A signed two-payload bundle (root, kernel) and its pieces.
fn two() -> (Manifest, Vec<u8>, Vec<u8>, Vec<u8>) {
    let root = image(150_000);
    let kernel = image(90_000);
    let mut m = made(&root);
    let mut kz = Vec::new();
    let kp = bundle::compress_payload("vmlinuz", Target::Kernel, &kernel[..], &mut kz, CHUNK).unwrap();
    m.manifest.payloads.push(kp);
    let (text, sig) = signed(&m.manifest);
    let b = raw(
        &[
            ("manifest.toml", text.as_bytes()),
            (&sig_name(), sig.as_bytes()),
            ("root.img.zst", &m.payload_zst),
            ("vmlinuz.zst", &kz),
        ],
        true,
    );
    (m.manifest, b, m.payload_zst, kz)
}

#[test]
fn payloads_are_read_in_order_each_to_its_end() {
    let (_, b, _, _) = two();
    let mut vb = bundle::open(&b[..], &policy(), Expect::default()).unwrap();
    let mut buf = Vec::new();
    {
        let mut p = vb.next_payload().unwrap().unwrap();
        assert!(p.next_chunk(&mut buf).unwrap(), "one chunk read, not the whole payload");
    }
    let e = match vb.next_payload() {
        Err(e) => e,
        Ok(_) => panic!("a payload was skipped"),
    };
    assert_eq!(e.to_string(), "manifest: the previous payload was not read to its end");
    let mut vb = bundle::open(&b[..], &policy(), Expect::default()).unwrap();
    {
        let _p = vb.next_payload().unwrap().unwrap();
    }
    assert_eq!(vb.finish().unwrap_err().to_string(), "manifest: finish before every payload was read to its end");
    let mut vb = bundle::open(&b[..], &policy(), Expect::default()).unwrap();
    let mut p = vb.next_payload().unwrap().unwrap();
    while p.next_chunk(&mut buf).unwrap() {}
    assert_eq!(vb.finish().unwrap_err().to_string(), "manifest: finish before every payload was read to its end");
}

fn read_to_end(b: &[u8]) -> Result<(), bundle::Error> {
    let mut vb = bundle::open(b, &policy(), Expect::default())?;
    let mut buf = Vec::new();
    while let Some(mut p) = vb.next_payload()? {
        while p.next_chunk(&mut buf)? {}
    }
    vb.finish()
}

#[test]
fn an_entry_out_of_place_is_a_duplicate_or_undeclared_by_its_name() {
    let (m, _, rz, kz) = two();
    let (text, sig) = signed(&m);
    let sn = sig_name();
    let head: Vec<(&str, &[u8])> = vec![("manifest.toml", text.as_bytes()), (&sn, sig.as_bytes())];
    type Entries<'a> = Vec<(&'a str, &'a [u8])>;
    let cases: Vec<(Entries, Code, String)> = vec![
        (vec![("manifest.toml", text.as_bytes())], Code::DuplicateEntry, "entry `manifest.toml` appears twice".into()),
        (
            vec![("root.img.zst", &rz), ("root.img.zst", &rz)],
            Code::DuplicateEntry,
            "entry `root.img.zst` appears twice".into(),
        ),
        (
            vec![("other.zst", &rz)],
            Code::UndeclaredEntry,
            "unexpected entry `other.zst` where `root.img.zst` belongs".into(),
        ),
        (
            vec![("vmlinuz.zst", &kz), ("root.img.zst", &rz)],
            Code::UndeclaredEntry,
            "unexpected entry `vmlinuz.zst` where `root.img.zst` belongs".into(),
        ),
        (
            vec![("root.img.zst", &rz), ("vmlinuz.zst", &kz), ("vmlinuz.zst", &kz)],
            Code::DuplicateEntry,
            "entry `vmlinuz.zst` appears twice".into(),
        ),
        (
            vec![("root.img.zst", &rz), ("vmlinuz.zst", &kz), ("root.img.zst", &rz)],
            Code::DuplicateEntry,
            "entry `root.img.zst` appears twice".into(),
        ),
        (
            vec![("root.img.zst", &rz), ("vmlinuz.zst", &kz), ("extra", b"x")],
            Code::UndeclaredEntry,
            "entry `extra` is not declared by the signed manifest".into(),
        ),
    ];
    for (tail, code, msg) in cases {
        let mut e = head.clone();
        e.extend(tail);
        let err = read_to_end(&raw(&e, true)).unwrap_err();
        assert_eq!((err.code(), err.to_string()), (code, msg));
    }
    let mut e = head.clone();
    e.extend([("root.img.zst", &rz[..]), ("vmlinuz.zst", &kz[..])]);
    read_to_end(&raw(&e, true)).unwrap();
}

#[test]
fn trailing_data_names_its_first_byte() {
    let (_, b, _, _) = two();
    let mut t = b.clone();
    t.push(0);
    let err = read_to_end(&t).unwrap_err();
    assert_eq!(
        (err.code(), err.to_string()),
        (
            Code::TrailingData,
            format!(
                "data after the end of the bundle (from byte {}): a bundle ends at its end-of-archive marker",
                b.len()
            )
        )
    );
}

/// A signed one-payload bundle around `zst` (any bytes), declaring `size` and the chunk hashes
/// of `img[..size]`.
fn with_stream(img: &[u8], size: usize, zst: &[u8]) -> Vec<u8> {
    let mut m = made(&img[..size]).manifest;
    m.payloads[0].compressed_size = zst.len() as u64;
    let (text, sig) = signed(&m);
    raw(&[("manifest.toml", text.as_bytes()), (&sig_name(), sig.as_bytes()), ("root.img.zst", zst)], true)
}

fn zstd_frame(b: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(b, 3).unwrap()
}

#[test]
fn a_stream_longer_than_its_declared_size_is_a_size_mismatch() {
    let img = image(200_000);
    let e = read_to_end(&with_stream(&img, 199_999, &zstd_frame(&img))).unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        (Code::SizeMismatch, "root.img.zst: the signed manifest declares 199999 bytes, the bundle holds 200000".into())
    );
}

#[test]
fn bytes_after_the_compressed_stream_inside_the_entry_are_refused() {
    // The decoder reads the entry to its end: what follows the frame is read as a frame, and
    // refused as corrupt data.
    let img = image(100_000);
    let mut zst = zstd_frame(&img);
    zst.extend_from_slice(&[0u8; 7]);
    let e = read_to_end(&with_stream(&img, img.len(), &zst)).unwrap_err();
    assert_eq!(e.code(), Code::CorruptPayload, "{e}");
}

#[test]
fn a_bundle_cut_between_two_zstd_frames_is_truncated_and_hands_out_only_verified_chunks() {
    // Two frames: the first holds exactly the first chunk. Cut right after it: the decoder ends
    // cleanly there, but the entry is not complete — truncated, never a short payload.
    let img = image(3 * CHUNK as usize);
    let mut zst = zstd_frame(&img[..CHUNK as usize]);
    let first = zst.len();
    zst.extend_from_slice(&zstd_frame(&img[CHUNK as usize..]));
    let b = with_stream(&img, img.len(), &zst);
    read_to_end(&b).unwrap();
    let header = b.len() - 1024 - crate_padding(zst.len()) - zst.len();
    let cut = &b[..header + first];
    let mut out = Vec::new();
    let r = (|| {
        let mut vb = bundle::open(cut, &policy(), Expect::default())?;
        let mut buf = Vec::new();
        while let Some(mut p) = vb.next_payload()? {
            while p.next_chunk(&mut buf)? {
                out.extend_from_slice(&buf);
            }
        }
        vb.finish()
    })();
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::Truncated, "{e}");
    assert_eq!(
        e.to_string(),
        format!("truncated at byte {}: the bundle ends inside the payload root.img.zst", header + first)
    );
    assert_eq!(out, img[..CHUNK as usize], "the first chunk, complete and verified, and nothing else");
}

fn crate_padding(n: usize) -> usize {
    bundle::tar::padding(n as u64) as usize
}

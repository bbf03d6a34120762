//! Format 2: the provenance statement travels in the bundle as its first payload (bound by the
//! signed manifest), with its DSSE signatures as `provenance.json.KEYID.dsse` entries after the
//! manifest's. The reader hands out the envelope only once the statement is whole and its
//! signatures met the verifier's policy; otherwise the bundle is refused before a byte of the
//! root payload is read.

use bundle::{Code, EntryName, Manifest, PROVENANCE, Target};
use trust::dsse::{IN_TOTO, Signature};
use trust::{Expect, Prehash, SecretKey, SignatureFile};

use super::{CHUNK, image, key, policy};

/// An in-toto statement whose subject is `img` (the bundle's root payload).
fn statement(img: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"root.img","digest":{{"sha256":"{}"}}}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{{}}}}"#,
        hex::encode(sha2::Sha256::digest(img))
    )
    .into_bytes()
}

fn stranger() -> SecretKey {
    SecretKey::from_seed([9; 32], [9, 9, 9, 9, 9, 9, 9, 9])
}

struct P {
    manifest: Manifest,
    zst: Vec<Vec<u8>>,
}

fn with_provenance(statement: &[u8], img: &[u8]) -> P {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let p = bundle::compress_payload(PROVENANCE, Target::Provenance, statement, &mut a, CHUNK).unwrap();
    let r = bundle::compress_payload("root.img", Target::Root, img, &mut b, CHUNK).unwrap();
    let manifest = Manifest {
        format: 2,
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
        payloads: vec![p, r],
    };
    manifest.check().unwrap();
    P { manifest, zst: vec![a, b] }
}

fn dsse_entry(k: &SecretKey, statement: &[u8]) -> (String, String) {
    let s = trust::dsse::sign(k, IN_TOTO, statement);
    (format!("{PROVENANCE}.{}.dsse", k.id()), serde_json::to_string(&s).unwrap())
}

/// The bundle: manifest, its signature, then `extra` signature entries as given.
fn bytes(p: &P, extra: &[(String, String)]) -> Vec<u8> {
    let text = toml::to_string(&p.manifest).unwrap();
    let sig = SignatureFile::sign(&key(), &Prehash::of_bytes(text.as_bytes()), "airlock product=p version=2.0.0")
        .unwrap()
        .to_file();
    let mut sigs = vec![(format!("manifest.toml.{}.minisig", key().id()), sig)];
    sigs.extend(extra.iter().cloned());
    let mut out = Vec::new();
    let (mut a, mut b): (&[u8], &[u8]) = (&p.zst[0], &p.zst[1]);
    bundle::write_bundle(
        &mut out,
        text.as_bytes(),
        &sigs,
        &mut [(&p.manifest.payloads[0], &mut a), (&p.manifest.payloads[1], &mut b)],
    )
    .unwrap();
    out
}

#[test]
fn the_envelope_is_handed_out_once_the_statement_is_whole_and_its_signatures_met_the_policy() {
    let img = image(200_000);
    let stmt = statement(&img);
    let stmt_ref = &stmt[..];
    let p = with_provenance(stmt_ref, &img);
    // One good signature, and one by a key the policy does not hold (it does not count and
    // does not go into the envelope).
    let b = bytes(&p, &[dsse_entry(&key(), stmt_ref), dsse_entry(&stranger(), stmt_ref)]);
    let mut vb = bundle::open(&b[..], &policy(), Expect::default()).unwrap();
    assert!(vb.provenance().is_none(), "an envelope before its statement was read");
    let mut buf = Vec::new();
    let mut statement = Vec::new();
    {
        let mut first = vb.next_payload().unwrap().unwrap();
        assert_eq!(first.payload.target, Target::Provenance);
        while first.next_chunk(&mut buf).unwrap() {
            statement.extend_from_slice(&buf);
        }
    }
    assert_eq!(statement, stmt_ref);
    let (env, report) = vb.provenance().unwrap();
    assert_eq!(bundle::roles_line(report), "release 1/1");
    assert_eq!(env.payload_type, IN_TOTO);
    assert_eq!(env.payload_bytes().unwrap(), stmt_ref);
    assert_eq!(env.signatures.len(), 1, "only the signature that counted");
    assert_eq!(env.signatures[0].keyid, key().id().to_string());
    // The envelope stands on its own: the same policy accepts it.
    assert!(policy().verify_dsse(IN_TOTO, &env.payload_bytes().unwrap(), &env.signatures).accepted());
    let mut root = Vec::new();
    while let Some(mut x) = vb.next_payload().unwrap() {
        while x.next_chunk(&mut buf).unwrap() {
            root.extend_from_slice(&buf);
        }
    }
    assert_eq!(root, img);
    vb.finish().unwrap();

    // `verify` says what signed the provenance.
    let (report, m) = bundle::verify_stream(&b[..], "b.airlock", "trust.toml", &policy(), Expect::default());
    assert!(m.is_some(), "{}", report.render_text());
    assert_eq!(report.bundle.as_ref().unwrap().provenance.as_deref(), Some("release 1/1"));
    assert!(report.render_text().contains("  provenance (in-toto statement) signed: release 1/1\n"));
    // Any tar reader sees the statement and its signatures as files.
    let names: Vec<String> = tar::Archive::new(&b[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "manifest.toml".to_string(),
            format!("manifest.toml.{}.minisig", key().id()),
            format!("provenance.json.{}.dsse", key().id()),
            format!("provenance.json.{}.dsse", stranger().id()),
            "provenance.json.zst".into(),
            "root.img.zst".into(),
        ]
    );
}

/// Reads `b` to its end: the root bytes handed out, and the outcome.
fn read_all(b: &[u8]) -> (Vec<u8>, Result<(), bundle::Error>) {
    let mut root = Vec::new();
    let r = (|| {
        let mut vb = bundle::open(b, &policy(), Expect::default())?;
        let mut buf = Vec::new();
        while let Some(mut p) = vb.next_payload()? {
            let is_root = p.payload.target == Target::Root;
            while p.next_chunk(&mut buf)? {
                if is_root {
                    root.extend_from_slice(&buf);
                }
            }
        }
        vb.finish()
    })();
    (root, r)
}

#[test]
fn provenance_signatures_short_of_the_policy_refuse_the_bundle_before_the_root_payload() {
    let img = image(100_000);
    let stmt = statement(&img);
    let stmt_ref = &stmt[..];
    let p = with_provenance(stmt_ref, &img);
    let good = dsse_entry(&key(), stmt_ref);
    let name = good.0.clone();
    let mut other = stmt_ref.to_vec();
    other[10] ^= 1;
    type Entries = Vec<(String, String)>;
    let cases: Vec<(&str, Entries, &str)> = vec![
        ("none", vec![], "no signatures (release 0/1)"),
        ("a stranger's", vec![dsse_entry(&stranger(), stmt_ref)], "is not in the trust policy"),
        ("over other bytes", vec![(name.clone(), dsse_entry(&key(), &other).1)], "release 0/1"),
        ("not JSON", vec![(name.clone(), "not json".into())], "release 0/1"),
        (
            "named for another key",
            vec![(format!("{PROVENANCE}.{}.dsse", stranger().id()), good.1.clone())],
            "release 0/1",
        ),
        (
            "the manifest's minisig format",
            vec![(name.clone(), SignatureFile::sign(&key(), &Prehash::of_bytes(stmt_ref), "x").unwrap().to_file())],
            "release 0/1",
        ),
    ];
    for (what, extra, says) in cases {
        let (root, r) = read_all(&bytes(&p, &extra));
        let e = r.expect_err(what);
        assert_eq!(e.code(), Code::BadSignature, "{what}: {e}");
        let msg = e.to_string();
        assert!(msg.starts_with("the provenance's DSSE signatures do not meet the trust policy: "), "{what}: {msg}");
        assert!(msg.contains(says), "{what}: {msg}");
        assert!(root.is_empty(), "{what}: root bytes were handed out before the provenance was checked");
    }
    // The same statement and signature pass: the cases above differ by the signatures alone.
    let (root, r) = read_all(&bytes(&p, &[good]));
    r.unwrap();
    assert_eq!(root, img);
}

#[test]
fn a_statement_swapped_under_its_signatures_is_a_hash_mismatch() {
    let stmt = statement(&image(70_000));
    let stmt_ref = &stmt[..];
    let p = with_provenance(stmt_ref, &image(70_000));
    let mut other = stmt_ref.to_vec();
    other[20] ^= 0x20;
    let q = with_provenance(&other, &image(70_000));
    let mut swapped = P { manifest: p.manifest.clone(), zst: vec![q.zst[0].clone(), p.zst[1].clone()] };
    swapped.manifest.payloads[0].compressed_size = q.manifest.payloads[0].compressed_size;
    // Signed over the swapped statement, so only the manifest's digest can catch it.
    let (_, r) = read_all(&bytes(&swapped, &[dsse_entry(&key(), &other)]));
    assert_eq!(r.unwrap_err().code(), Code::HashMismatch);
}

fn raw(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, body) in entries {
        bundle::tar::write_header(&mut out, &EntryName::new(name).unwrap(), body.len() as u64).unwrap();
        out.extend_from_slice(body);
        bundle::tar::write_padding(&mut out, body.len() as u64).unwrap();
    }
    bundle::tar::write_end(&mut out).unwrap();
    out
}

fn open_err(b: &[u8]) -> bundle::Error {
    match bundle::open(b, &policy(), Expect::default()) {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    }
}

#[test]
fn provenance_signature_entries_are_bounded_named_ordered_and_declared() {
    let stmt = statement(&image(70_000));
    let stmt_ref = &stmt[..];
    let p = with_provenance(stmt_ref, &image(70_000));
    let text = toml::to_string(&p.manifest).unwrap();
    let minisig = (
        format!("manifest.toml.{}.minisig", key().id()),
        SignatureFile::sign(&key(), &Prehash::of_bytes(text.as_bytes()), "x").unwrap().to_file().into_bytes(),
    );
    let manifest = ("manifest.toml".to_string(), text.clone().into_bytes());
    let (dname, dtext) = dsse_entry(&key(), stmt_ref);
    let dsse = (dname.clone(), dtext.clone().into_bytes());
    let check = |entries: Vec<(String, Vec<u8>)>, code: Code, msg: &str| {
        let e = open_err(&raw(&entries));
        assert_eq!((e.code(), e.to_string()), (code, msg.to_string()));
    };

    // The manifest's signatures come first.
    check(
        vec![manifest.clone(), dsse.clone(), minisig.clone()],
        Code::UndeclaredEntry,
        &format!(
            "unexpected entry `{}` where `provenance.json.KEYID.dsse (the manifest's signatures come first)` belongs",
            minisig.0
        ),
    );
    // Named by a 16-digit key id.
    for bad in ["provenance.json.xyz.dsse", "provenance.json.0123456789ABCDEFG.dsse", "provenance.json..dsse"] {
        check(
            vec![manifest.clone(), minisig.clone(), (bad.into(), dtext.clone().into_bytes())],
            Code::UndeclaredEntry,
            &format!("unexpected entry `{bad}` where `provenance.json.KEYID.dsse` belongs"),
        );
    }
    // Once each, at most 16, at most 4 KiB each.
    check(
        vec![manifest.clone(), minisig.clone(), dsse.clone(), dsse.clone()],
        Code::DuplicateEntry,
        &format!("entry `{dname}` appears twice"),
    );
    let mut many = vec![manifest.clone(), minisig.clone()];
    for i in 0..17u64 {
        many.push((format!("provenance.json.{i:016X}.dsse"), b"{}".to_vec()));
    }
    check(many, Code::TooLarge, "17 provenance signatures, more than the 16 accepted");
    let mut sixteen = vec![manifest.clone(), minisig.clone()];
    for i in 0..16u64 {
        sixteen.push((format!("provenance.json.{i:016X}.dsse"), b"{}".to_vec()));
    }
    assert!(bundle::open(&raw(&sixteen)[..], &policy(), Expect::default()).is_ok(), "16 signatures pass the count");
    check(
        vec![manifest.clone(), minisig.clone(), (dname.clone(), vec![b' '; 4097])],
        Code::TooLarge,
        &format!("signature {dname} is 4097 bytes, more than the 4096 accepted"),
    );

    // A bundle without a provenance payload carries no provenance signatures.
    let mut m1 = super::made(&image(70_000)).manifest;
    m1.format = 1;
    let t1 = toml::to_string(&m1).unwrap();
    let s1 = SignatureFile::sign(&key(), &Prehash::of_bytes(t1.as_bytes()), "x").unwrap().to_file();
    check(
        vec![
            ("manifest.toml".into(), t1.into_bytes()),
            (format!("manifest.toml.{}.minisig", key().id()), s1.into_bytes()),
            dsse.clone(),
        ],
        Code::UndeclaredEntry,
        &format!("entry `{dname}` is not declared by the signed manifest"),
    );
}

#[test]
fn a_dsse_signature_entry_is_the_file_sign_writes() {
    // `cargo xtask sign provenance.json` writes `{"keyid", "sig"}`; the entry holds the same.
    let (_, text) = dsse_entry(&key(), &statement(b"x"));
    let s: Signature = serde_json::from_str(&text).unwrap();
    assert_eq!(s.keyid, key().id().to_string());
}

#[test]
fn a_validly_signed_statement_of_another_image_is_refused_before_the_root_payload() {
    // Signed by the vendor, for another build: it does not name this bundle's image.
    let img = image(100_000);
    let elsewhere = statement(&image(90_000));
    let p = with_provenance(&elsewhere, &img);
    let (root, r) = read_all(&bytes(&p, &[dsse_entry(&key(), &elsewhere)]));
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::HashMismatch, "{e}");
    assert!(e.to_string().starts_with("the provenance statement does not describe this bundle's image"), "{e}");
    assert!(root.is_empty(), "root bytes were handed out");
    // A statement that is not JSON, or names no subject, describes nothing.
    for bad in [&b"not json"[..], br#"{"subject":[]}"#, br#"{"subject":[{"digest":{"sha256":7}}]}"#] {
        assert!(!bundle::statement_names(bad, "ab"), "{}", String::from_utf8_lossy(bad));
    }
    assert!(!bundle::statement_names(&statement(b""), ""), "no image to name: nothing matches");
}

//! Every size bound of the trust layer, one byte either side; the small accessors the rest of
//! Airlock reads reports through; and the libsodium rule that turns a secret key's scrypt
//! limits into parameters (what makes stock minisign keys load).

use trust::{Expect, KeyId, Policy, Prehash, PublicKey, Role, SecretKey, SignatureFile};

use crate::{key, policy, sign};

#[test]
fn a_prehash_streamed_equals_the_prehash_of_the_bytes() {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    // A reader that hands out small, uneven pieces.
    struct Dribble<'a>(&'a [u8], usize);
    impl std::io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 += 1;
            let n = buf.len().min(self.0.len()).min(1 + self.1 % 7919);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    assert_eq!(Prehash::of_reader(Dribble(&data, 0)).unwrap(), Prehash::of_bytes(&data));
    assert_ne!(Prehash::of_bytes(&data), Prehash::of_bytes(&data[1..]));
    let p = Prehash::of_bytes(b"");
    assert_eq!(format!("{p:?}"), format!("Prehash({})", hex_head(&p.0)));
}

fn hex_head(b: &[u8]) -> String {
    b[..8].iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_signature_file_is_read_up_to_4_kib_and_its_trusted_comment_up_to_1_kib() {
    let k = key(1);
    let msg = b"payload";
    // 1024 bytes of trusted comment: signed and read back; 1025: refused on both sides.
    let tc = "t".repeat(trust::MAX_TRUSTED_COMMENT);
    let s = SignatureFile::sign(&k, &Prehash::of_bytes(msg), &tc).unwrap();
    let parsed = SignatureFile::parse(&s.to_file()).unwrap();
    assert_eq!(parsed.trusted_comment(), tc);
    assert_eq!((parsed.signature(), parsed.global_signature()), (s.signature(), s.global_signature()));
    assert_ne!(parsed.signature(), parsed.global_signature());
    parsed.verify(&k.public(), &Prehash::of_bytes(msg)).unwrap();
    assert!(SignatureFile::sign(&k, &Prehash::of_bytes(msg), &format!("{tc}t")).is_err());
    let long = s.to_file().replace(&format!("trusted comment: {tc}"), &format!("trusted comment: {tc}t"));
    assert!(SignatureFile::parse(&long).unwrap_err().to_string().contains("trusted comment longer than 1024 bytes"));
    for bad in ["a\rb", "a\nb"] {
        assert!(SignatureFile::sign(&k, &Prehash::of_bytes(msg), bad).is_err(), "{bad:?}");
    }
    // A whole file of exactly 4096 bytes (a long untrusted comment) is read; 4097 is not.
    let text = sign(&k, msg, "c");
    let pad = trust::MAX_SIG_FILE - text.len();
    let exact = text.replacen("untrusted comment: ", &format!("untrusted comment: {}", "u".repeat(pad)), 1);
    assert_eq!(exact.len(), trust::MAX_SIG_FILE);
    SignatureFile::parse_bytes(exact.as_bytes()).unwrap().verify(&k.public(), &Prehash::of_bytes(msg)).unwrap();
    let over = exact.replacen("untrusted comment: ", "untrusted comment: u", 1);
    let e = SignatureFile::parse_bytes(over.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("4097 bytes, more than the 4096"), "{e}");
}

#[test]
fn a_public_key_file_may_be_the_bare_key_line_and_is_bounded() {
    let pk = key(2).public();
    let b64 = pk.to_base64();
    assert_eq!(PublicKey::parse(&b64).unwrap(), pk, "the key line alone");
    assert_eq!(PublicKey::parse(&format!("{b64}\n\n\n")).unwrap(), pk, "followed by empty lines");
    assert!(PublicKey::parse(&format!("{b64}\njunk\n")).is_err(), "followed by something else");
    assert!(PublicKey::parse(&format!("comment without the marker\n{b64}\n")).is_err());
    assert_eq!(PublicKey::parse(&pk.to_file()).unwrap(), pk);
    let file = pk.to_file();
    let exact = format!("{file}{}", "\n".repeat(trust::MAX_KEY_FILE - file.len()));
    assert_eq!(exact.len(), trust::MAX_KEY_FILE);
    assert_eq!(PublicKey::parse(&exact).unwrap(), pk, "4096 bytes are read");
    let e = PublicKey::parse(&format!("{exact}\n")).unwrap_err().to_string();
    assert!(e.contains("4097 bytes"), "{e}");
    assert_eq!(format!("{pk:?}"), format!("PublicKey({})", pk.id()));
    assert_eq!(format!("{:?}", pk.id()), format!("KeyId({})", pk.id()));
}

#[test]
fn secret_key_files_say_whether_they_are_encrypted_and_check_their_algorithms() {
    let k = key(3);
    let plain = k.to_file(None).unwrap();
    assert!(!SecretKey::is_encrypted(&plain).unwrap());
    let kdf = trust::Kdf { passphrase: b"pw", salt: [4; 32], opslimit: 1 << 20, memlimit: 1 << 24 };
    let enc = k.to_file(Some(kdf)).unwrap();
    assert!(SecretKey::is_encrypted(&enc).unwrap());
    assert_eq!(SecretKey::parse(&enc, Some(b"pw")).unwrap().public(), k.public());
    assert!(matches!(SecretKey::parse(&enc, Some(b"px")), Err(trust::Error::WrongPassphrase)));
    // The checksum algorithm and the signature algorithm are both checked.
    let lines: Vec<&str> = plain.lines().collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (at, what) in [(0usize, "signature algorithm"), (4, "checksum algorithm")] {
        let mut raw = b64.decode(lines[1]).unwrap();
        raw[at] ^= 0x20;
        let bad = format!("{}\n{}\n", lines[0], b64.encode(&raw));
        let e = SecretKey::parse(&bad, None).unwrap_err().to_string();
        assert!(e.contains("not Ed with a B2 checksum"), "{what}: {e}");
    }
    let e = SecretKey::parse(&format!("no marker\n{}\n", lines[1]), None).unwrap_err().to_string();
    assert!(e.contains("`untrusted comment:` line"), "{e}");
}

#[test]
fn role_names_parse_both_ways() {
    for r in Role::ALL {
        assert_eq!(Role::parse(r.as_str()), Some(r));
    }
    assert_eq!(Role::parse("Release"), None);
    assert_eq!(Role::parse(""), None);
}

#[test]
fn a_role_lists_at_most_64_keys_and_a_policy_is_at_most_64_kib() {
    let keys: Vec<PublicKey> = (0..65u8).map(|i| key(i.wrapping_add(10)).public()).collect();
    let refs: Vec<&PublicKey> = keys.iter().collect();
    let p = policy(64, &refs[..64]);
    assert_eq!(p.role(Role::Release).unwrap().threshold(), 64);
    assert_eq!(p.role(Role::Release).unwrap().keys().len(), 64);
    let text = crate::policy_text("release", 1, 1, &refs, &[]);
    let e = Policy::parse(&text).unwrap_err().to_string();
    assert!(e.contains("lists 65 keys, at most 64"), "{e}");
    let small = crate::policy_text("release", 1, 1, &refs[..1], &[]);
    let exact = format!("{small}{}\n", "#".repeat(trust::MAX_POLICY_FILE - small.len() - 1));
    assert_eq!(exact.len(), trust::MAX_POLICY_FILE);
    Policy::parse(&exact).unwrap();
    let e = Policy::parse(&format!("{exact}#")).unwrap_err().to_string();
    assert!(e.contains("at most 65536"), "{e}");
}

#[test]
fn one_key_under_two_ids_keeps_both_ids_and_names_once_each() {
    let k = key(30);
    let pk = k.public();
    let alias = pk.with_id(KeyId::new([9, 9, 9, 9, 9, 9, 9, 9]));
    let text = format!(
        "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"a\", key = \"{}\" }}, {{ name = \"b\", key = \"{}\" }}, {{ name = \"c\", key = \"{}\" }}]\n",
        pk.to_base64(),
        alias.to_base64(),
        pk.to_base64()
    );
    let p = Policy::parse(&text).unwrap();
    let r = p.role(Role::Release).unwrap();
    assert_eq!(r.keys().len(), 1);
    assert_eq!(r.keys()[0].ids(), &[pk.id(), alias.id()]);
    assert_eq!(r.keys()[0].names(), &["a".to_string(), "b".to_string(), "c".to_string()]);
    assert_eq!(r.keys()[0].public(), &pk);
}

#[test]
fn a_rotation_that_revokes_an_alias_id_of_a_key_does_not_count_that_key() {
    let (k1, k2) = (key(40), key(41));
    let alias = k1.public().with_id(KeyId::new([7; 8]));
    let current = Policy::parse(&format!(
        "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"k1\", key = \"{}\" }}, {{ name = \"k1-alias\", key = \"{}\" }}, {{ name = \"k2\", key = \"{}\" }}]\n",
        k1.public().to_base64(),
        alias.to_base64(),
        k2.public().to_base64()
    ))
    .unwrap();
    // Version 2 revokes only the alias id; k1 signs with its own id: it must not count.
    let next = format!(
        "version = 2\nchannel = \"release\"\nrevoked = [\"{}\"]\n[release]\nthreshold = 1\nkeys = [{{ name = \"k2\", key = \"{}\" }}]\n",
        alias.id(),
        k2.public().to_base64()
    );
    let sig = sign(&k1, next.as_bytes(), "rotate");
    let e = current.rotate(&next, &[("n.minisig", sig.as_bytes())]).unwrap_err().to_string();
    assert!(e.contains("signed by 0 of version 1's release keys"), "{e}");
    let sig = sign(&k2, next.as_bytes(), "rotate");
    current.rotate(&next, &[("n.minisig", sig.as_bytes())]).unwrap();
}

#[test]
fn a_signer_that_did_not_count_is_not_verified() {
    let (k, stranger) = (key(50), key(51));
    let p = policy(1, &[&k.public()]);
    let msg = b"m";
    let good = sign(&k, msg, "x");
    let bad = sign(&stranger, msg, "x");
    let r = p.verify(&Prehash::of_bytes(msg), &[("g", good.as_bytes()), ("b", bad.as_bytes())], &Expect::default());
    assert_eq!(r.signers().iter().map(|s| s.verified()).collect::<Vec<_>>(), [true, false]);
}

#[test]
fn the_signature_accessors_give_the_bytes_of_the_file() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let k = crate::key(94);
    let s = SignatureFile::sign(&k, &trust::Prehash::of_bytes(b"m"), "c").unwrap();
    let text = s.to_file();
    let lines: Vec<&str> = text.lines().collect();
    let sig = b64.decode(lines[1]).unwrap();
    assert_eq!(sig.len(), 74);
    assert_eq!(s.signature()[..], sig[10..]);
    assert_eq!(s.global_signature()[..], b64.decode(lines[3]).unwrap()[..]);
}

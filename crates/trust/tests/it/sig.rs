//! Signatures: round trips, every byte flip and truncation, malformed, weak and malleable input.

use trust::{Error, Expect, KeyId, Prehash, PublicKey, SecretKey, SignatureFile};

use crate::{key, policy, sign};

const MSG: &[u8] = b"format = 1\n[image]\nname = \"parking-controller\"\nversion = \"1.0.0\"\n";

fn accepted(p: &trust::Policy, msg: &[u8], sig: impl AsRef<[u8]>) -> bool {
    p.verify(&Prehash::of_bytes(msg), &[("s.minisig", sig.as_ref())], &Expect::default()).accepted()
}

#[test]
fn a_signature_verifies_and_round_trips_through_its_file() {
    let k = key(1);
    let text = sign(&k, MSG, "airlock product=p version=1 role=release file=m");
    let parsed = SignatureFile::parse(&text).unwrap();
    assert_eq!(parsed.to_file(), text);
    parsed.verify(&k.public(), &Prehash::of_bytes(MSG)).unwrap();
    assert_eq!(parsed.comment_field("product"), Some("p"));
    assert!(accepted(&policy(1, &[&k.public()]), MSG, &text));
}

#[test]
fn public_and_secret_keys_round_trip() {
    let k = key(2);
    let pk = PublicKey::parse(&k.public().to_file()).unwrap();
    assert_eq!(pk, k.public());
    let sk = SecretKey::parse(&k.to_file(None).unwrap(), None).unwrap();
    assert_eq!(sk.public(), k.public());
}

#[test]
fn an_encrypted_secret_key_needs_its_passphrase() {
    let k = key(3);
    // Small scrypt cost for the test; the format and the parameter rule are minisign's.
    let kdf = trust::Kdf { passphrase: b"pw", salt: [7; 32], opslimit: 32768, memlimit: 1 << 24 };
    let text = k.to_file(Some(kdf)).unwrap();
    assert!(SecretKey::is_encrypted(&text).unwrap());
    assert_eq!(SecretKey::parse(&text, None).unwrap_err(), Error::PassphraseNeeded);
    assert_eq!(SecretKey::parse(&text, Some(b"wrong")).unwrap_err(), Error::WrongPassphrase);
    assert_eq!(SecretKey::parse(&text, Some(b"pw")).unwrap().public(), k.public());
    // A secret key's Debug never shows the key.
    assert_eq!(format!("{k:?}"), format!("SecretKey({}, redacted)", k.id()));
}

#[test]
fn every_single_byte_flip_of_the_signed_file_is_rejected() {
    let k = key(4);
    let p = policy(1, &[&k.public()]);
    let sig = sign(&k, MSG, "c");
    for i in 0..MSG.len() {
        for bit in 0..8 {
            let mut m = MSG.to_vec();
            m[i] ^= 1 << bit;
            assert!(!accepted(&p, &m, &sig), "flip of byte {i} bit {bit} accepted");
        }
    }
}

#[test]
fn every_truncation_of_the_signed_file_is_rejected() {
    let k = key(5);
    let p = policy(1, &[&k.public()]);
    let sig = sign(&k, MSG, "c");
    for n in 0..MSG.len() {
        assert!(!accepted(&p, &MSG[..n], &sig), "truncation to {n} bytes accepted");
    }
    let mut longer = MSG.to_vec();
    longer.push(b'\n');
    assert!(!accepted(&p, &longer, &sig), "an appended byte was accepted");
}

/// The untrusted comment is, by minisign's design, not signed: flips inside its free text are
/// the only ones that do not change what is verified (its text never reaches a decision), so
/// there the test asserts the opposite. Every bit of every other byte is flipped, including
/// the flips that make the file invalid UTF-8.
#[test]
fn every_single_bit_flip_of_a_signature_file_is_rejected() {
    let k = key(6);
    let p = policy(1, &[&k.public()]);
    let sig = sign(&k, MSG, "airlock product=p version=1 role=release file=m");
    let free_text = "untrusted comment:".len()..sig.find('\n').unwrap();
    let mut tried = 0;
    for i in 0..sig.len() {
        for bit in 0..8 {
            let mut b = sig.clone().into_bytes();
            b[i] ^= 1 << bit;
            let ok = accepted(&p, MSG, &b);
            // A flip inside the free text keeps the signature valid only while it stays UTF-8
            // and does not become a newline.
            let harmless = free_text.contains(&i) && std::str::from_utf8(&b).is_ok() && b[i] != b'\n' && b[i] != b'\r';
            assert_eq!(ok, harmless, "flip of signature byte {i} bit {bit}: accepted={ok}");
            tried += 1;
        }
    }
    assert_eq!(tried, sig.len() * 8);
}

#[test]
fn every_truncation_of_a_signature_file_is_rejected() {
    let k = key(7);
    let p = policy(1, &[&k.public()]);
    let sig = sign(&k, MSG, "c");
    for n in 0..sig.len() {
        assert!(!accepted(&p, MSG, &sig[..n]), "truncation of the signature file to {n} bytes accepted");
    }
}

#[test]
fn an_altered_trusted_comment_is_rejected() {
    let k = key(8);
    let sig = sign(&k, MSG, "airlock product=p version=1 role=release");
    let forged = sig.replace("version=1", "version=9");
    let err = SignatureFile::parse(&forged).unwrap().verify(&k.public(), &Prehash::of_bytes(MSG)).unwrap_err();
    assert_eq!(err, Error::BadTrustedComment(k.id()));
}

#[test]
fn malformed_public_keys_are_refused() {
    let cases = [
        ("RWQ=", "malformed: public key is 2 bytes, a minisign public key is 42"),
        ("not base64!", "malformed: public key is not valid base64: Invalid symbol 32, offset 3."),
        ("", "malformed: public key is 0 bytes, a minisign public key is 42"),
    ];
    for (b64, want) in cases {
        assert_eq!(PublicKey::from_base64(b64).unwrap_err().to_string(), want, "{b64}");
    }
    let mut raw = key(9).public().to_base64();
    raw.replace_range(0..3, "RWU"); // algorithm "Ed" -> "Ee"
    assert_eq!(
        PublicKey::from_base64(&raw).unwrap_err().to_string(),
        "malformed: public key algorithm is not Ed (ed25519)"
    );
}

#[test]
fn all_zero_and_small_order_public_keys_are_refused() {
    let id = KeyId::new([1; 8]);
    let mut identity = [0u8; 32];
    identity[0] = 1; // y = 1: the neutral element, order 1
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec; // y = -1: order 2
    minus_one[31] = 0x7f;
    for pk in [[0u8; 32], identity, minus_one] {
        assert_eq!(PublicKey::from_parts(id, &pk).unwrap_err(), Error::WeakKey(id), "{pk:?}");
    }
}

/// L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

#[test]
fn a_malleable_signature_with_s_plus_l_is_refused() {
    let k = key(10);
    let s = SignatureFile::sign(&k, &Prehash::of_bytes(MSG), "c").unwrap();
    let mut raw = s.signature();
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let v = u16::from(raw[32 + i]) + u16::from(*l) + carry;
        raw[32 + i] = v as u8;
        carry = v >> 8;
    }
    let s = SignatureFile::from_parts(s.key_id(), raw, s.trusted_comment(), s.global_signature());
    let err = s.verify(&k.public(), &Prehash::of_bytes(MSG)).unwrap_err();
    assert_eq!(err, Error::Malleable(format!("signature of key {} has S ≥ L (non-canonical, malleable)", k.id())));
}

#[test]
fn a_non_canonical_or_small_order_r_is_refused() {
    let k = key(11);
    let good = SignatureFile::sign(&k, &Prehash::of_bytes(MSG), "c").unwrap();
    let with_r = |r: [u8; 32]| {
        let mut raw = good.signature();
        raw[..32].copy_from_slice(&r);
        SignatureFile::from_parts(good.key_id(), raw, good.trusted_comment(), good.global_signature())
    };
    // R = the neutral element, written with y = p + 1 (a non-canonical encoding).
    let mut r = [0xffu8; 32];
    r[0] = 0xee;
    r[31] = 0x7f;
    assert_eq!(with_r(r).verify(&k.public(), &Prehash::of_bytes(MSG)).unwrap_err(), Error::BadSignature(k.id()));
    let mut one = [0u8; 32];
    one[0] = 1;
    assert_eq!(with_r(one).verify(&k.public(), &Prehash::of_bytes(MSG)).unwrap_err(), Error::BadSignature(k.id()));
}

#[test]
fn a_legacy_unprehashed_signature_is_refused_with_advice() {
    let k = key(12);
    let sig = sign(&k, MSG, "c");
    let lines: Vec<&str> = sig.lines().collect();
    use base64::Engine;
    let mut raw = base64::engine::general_purpose::STANDARD.decode(lines[1]).unwrap();
    raw[1] = b'd';
    let legacy = format!(
        "{}\n{}\n{}\n{}\n",
        lines[0],
        base64::engine::general_purpose::STANDARD.encode(raw),
        lines[2],
        lines[3]
    );
    let err = SignatureFile::parse(&legacy).unwrap_err();
    assert!(err.to_string().starts_with("malformed: legacy (not prehashed) signature"), "{err}");
}

#[test]
fn an_oversized_signature_file_is_refused_before_parsing() {
    let big = "x".repeat(trust::MAX_SIG_FILE + 1);
    assert_eq!(
        SignatureFile::parse(&big).unwrap_err().to_string(),
        format!("malformed: signature file is {} bytes, more than the 4096 a signature file can be", big.len())
    );
}

#[test]
fn a_public_key_file_is_a_comment_and_a_key_or_the_key_alone() {
    let k = key(10).public();
    let b64 = k.to_base64();
    for ok in [k.to_file(), b64.clone(), format!("{b64}\n"), format!("{b64}\n\n\n")] {
        assert_eq!(PublicKey::parse(&ok).unwrap(), k, "{ok:?}");
    }
    // A key line followed by anything but blank lines is not a key file.
    for bad in [format!("{b64}\nsomething else\n"), format!("{b64}\n\n{b64}\n"), format!("comment\n{b64}\n")] {
        assert_eq!(
            PublicKey::parse(&bad).unwrap_err().to_string(),
            "malformed: a public key file is an `untrusted comment:` line and a base64 line",
            "{bad:?}"
        );
    }
}

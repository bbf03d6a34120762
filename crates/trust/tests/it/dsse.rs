//! DSSE envelopes under the same policy as minisign files: ed25519 over the pre-authentication
//! encoding, each signature named by key id, counted per role by key bytes; the payload type
//! is part of what is signed.

use trust::dsse::{self, IN_TOTO, Signature};
use trust::{KeyId, Policy, Role};

use crate::{key, policy};

#[test]
fn the_pre_authentication_encoding_is_dsse_v1() {
    assert_eq!(dsse::pae("t", b"hello"), b"DSSEv1 1 t 5 hello");
    assert_eq!(dsse::pae(IN_TOTO, b""), format!("DSSEv1 28 {IN_TOTO} 0 ").into_bytes());
}

#[test]
fn a_dsse_signature_counts_like_a_minisign_signature() {
    let (a, b, stranger) = (key(60), key(61), key(62));
    let p = policy(2, &[&a.public(), &b.public()]);
    let payload = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;
    let sa = dsse::sign(&a, IN_TOTO, payload);
    let sb = dsse::sign(&b, IN_TOTO, payload);
    assert!(p.verify_dsse(IN_TOTO, payload, &[sa.clone(), sb.clone()]).accepted());
    let r = p.verify_dsse(IN_TOTO, payload, &[sa.clone(), sa.clone()]);
    assert_eq!((r.accepted(), r.role(Role::Release).unwrap().valid), (false, 1), "one key counts once");
    // Another payload, another type, a stranger, a malformed id or signature: each refused.
    assert!(!p.verify_dsse(IN_TOTO, b"{}", &[sa.clone(), sb.clone()]).accepted());
    assert!(!p.verify_dsse("text/plain", payload, &[sa.clone(), sb.clone()]).accepted());
    let r = p.verify_dsse(IN_TOTO, payload, &[sa.clone(), dsse::sign(&stranger, IN_TOTO, payload)]);
    assert!(r.signers()[1].reason.as_deref().unwrap().contains("is not in the trust policy"), "{r:?}");
    let bad_id = Signature { keyid: "zz".into(), sig: sb.sig.clone() };
    assert!(
        p.verify_dsse(IN_TOTO, payload, &[sa.clone(), bad_id]).signers()[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("keyid")
    );
    let short = Signature { keyid: sb.keyid.clone(), sig: "AAAA".into() };
    assert!(
        p.verify_dsse(IN_TOTO, payload, &[sa.clone(), short]).signers()[1].reason.as_deref().unwrap().contains("64")
    );
    // b's signature relabelled as a's id: verified under a's key, it fails.
    let relabelled = Signature { keyid: sa.keyid.clone(), sig: sb.sig.clone() };
    assert!(!p.verify_dsse(IN_TOTO, payload, &[relabelled, sb.clone()]).accepted());
    // A revoked key, by id.
    let text = crate::policy_text("release", 1, 1, &[&b.public()], &[a.public().id()]);
    let revoking = Policy::parse(&text).unwrap();
    let r = revoking.verify_dsse(IN_TOTO, payload, &[sa]);
    assert!(r.signers()[0].reason.as_deref().unwrap().contains("revoked"), "{r:?}");
    let _ = KeyId::new([0; 8]);
}

#[test]
fn a_non_canonical_dsse_signature_is_refused() {
    let a = key(63);
    let p = policy(1, &[&a.public()]);
    let s = dsse::sign(&a, IN_TOTO, b"x");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(&s.sig).unwrap();
    raw[63] |= 0xf0; // S far above L
    let m = Signature { keyid: s.keyid.clone(), sig: b64.encode(&raw) };
    let r = p.verify_dsse(IN_TOTO, b"x", &[m]);
    assert!(r.signers()[0].reason.as_deref().unwrap().contains("malleable"), "{r:?}");
}

#[test]
fn each_envelope_signature_is_named_by_its_place_and_its_keyid_escaped_and_cut() {
    let a = key(64);
    let p = policy(1, &[&a.public()]);
    let s = dsse::sign(&a, IN_TOTO, b"x");
    let hostile = Signature { keyid: format!("\u{1b}[2J{}", "f".repeat(100)), sig: s.sig.clone() };
    let r = p.verify_dsse(IN_TOTO, b"x", &[s.clone(), hostile]);
    assert_eq!(r.signers()[0].file, format!("signature 0 (keyid {})", s.keyid));
    // 32 characters at most, control characters escaped.
    assert_eq!(r.signers()[1].file, format!("signature 1 (keyid \\u{{1b}}[2J{})", "f".repeat(28)));
}

#[test]
fn an_envelope_payload_is_bounded_at_four_mebibytes() {
    assert_eq!(dsse::MAX_PAYLOAD, 4 * 1024 * 1024);
}

#[test]
fn an_envelope_is_read_back_bounded_and_strict_by_its_one_reader() {
    let k = key(1);
    let payload = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;
    let env = dsse::Envelope::new(IN_TOTO, payload, vec![dsse::sign(&k, IN_TOTO, payload)]);
    let text = serde_json::to_vec(&env).unwrap();
    let (back, bytes) = dsse::Envelope::parse(&text).unwrap();
    assert_eq!((back, bytes.as_slice()), (env.clone(), &payload[..]));
    let err = |t: &[u8]| dsse::Envelope::parse(t).unwrap_err().to_string();
    assert!(err(b"{\"payload\": 3}").contains("not a DSSE envelope"));
    let mut extra: serde_json::Value = serde_json::from_slice(&text).unwrap();
    extra["surprise"] = true.into();
    assert!(err(&serde_json::to_vec(&extra).unwrap()).contains("unknown field"));
    // 16 signatures pass, 17 do not.
    let many = |n: usize| {
        let e = dsse::Envelope::new(IN_TOTO, payload, vec![dsse::sign(&k, IN_TOTO, payload); n]);
        serde_json::to_vec(&e).unwrap()
    };
    assert!(dsse::Envelope::parse(&many(dsse::MAX_ENVELOPE_SIGNATURES)).is_ok());
    assert!(err(&many(dsse::MAX_ENVELOPE_SIGNATURES + 1)).contains("17 signatures, at most 16"));
    // The envelope's bound, in bytes: exactly it is read, one byte more is not.
    let pad = |n: usize| {
        let mut t = text.clone();
        t.extend(std::iter::repeat_n(b' ', n - text.len()));
        t
    };
    assert!(dsse::Envelope::parse(&pad(dsse::MAX_ENVELOPE)).is_ok());
    assert!(err(&pad(dsse::MAX_ENVELOPE + 1)).contains("more than the 8388608 accepted"));
    // A payload over its own bound, even inside the envelope's.
    let big = vec![b'x'; dsse::MAX_PAYLOAD + 1];
    let e = dsse::Envelope::new(IN_TOTO, &big, vec![]);
    assert!(err(&serde_json::to_vec(&e).unwrap()).contains("payload is 4194305 bytes"));
}

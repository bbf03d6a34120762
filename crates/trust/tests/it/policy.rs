//! Trust policy: thresholds, duplicate keys, revocation, rotation, the dev key.

use trust::{DEV_PUBLIC_KEY, Error, Expect, KeyId, Policy, Prehash, PublicKey, SignatureFile};

use crate::{key, policy, policy_text, sign};

const MSG: &[u8] = b"payload";

fn sigs(texts: &[String]) -> Vec<(String, &str)> {
    texts.iter().enumerate().map(|(i, t)| (format!("s{i}.minisig"), t.as_str())).collect()
}

#[test]
fn two_of_three_needs_two_distinct_keys() {
    let (a, b, c) = (key(1), key(2), key(3));
    let p = policy(2, &[&a.public(), &b.public(), &c.public()]);
    let one = [sign(&a, MSG, "c")];
    let r = p.verify(&Prehash::of_bytes(MSG), &sigs(&one), &Expect::default());
    assert!(!r.accepted());
    assert_eq!((r.roles()[0].valid, r.roles()[0].threshold, r.roles()[0].met), (1, 2, false));
    let two = [sign(&a, MSG, "c"), sign(&c, MSG, "c")];
    assert!(p.verify(&Prehash::of_bytes(MSG), &sigs(&two), &Expect::default()).accepted());
}

#[test]
fn the_same_signature_twice_counts_once() {
    let (a, b) = (key(1), key(2));
    let p = policy(2, &[&a.public(), &b.public()]);
    let twice = [sign(&a, MSG, "c"), sign(&a, MSG, "other comment")];
    let r = p.verify(&Prehash::of_bytes(MSG), &sigs(&twice), &Expect::default());
    assert!(!r.accepted());
    assert_eq!(r.roles()[0].valid, 1);
}

#[test]
fn the_same_key_listed_twice_counts_once_and_cannot_meet_a_threshold_of_two() {
    let a = key(1);
    let text = policy_text("release", 1, 2, &[&a.public(), &a.public()], &[]);
    assert_eq!(
        Policy::parse(&text).unwrap_err(),
        Error::Policy("role `release`: threshold 2 is more than its 1 distinct key(s): it could never be met".into())
    );
}

#[test]
fn the_same_key_under_two_ids_counts_once() {
    let (a, b) = (key(1), key(2));
    // The key id is not covered by the signature: list a's key again under another id.
    let alias = a.public().with_id(KeyId::new([9; 8]));
    let p = Policy::parse(&policy_text("release", 1, 2, &[&a.public(), &alias, &b.public()], &[])).unwrap();
    assert_eq!(p.role(trust::Role::Release).unwrap().keys().len(), 2, "the alias is the same key");
    let sig = sign(&a, MSG, "c");
    let forged = SignatureFile::parse(&sig).unwrap().relabelled(alias.id());
    let both = [sig, forged.to_file()];
    let r = p.verify(&Prehash::of_bytes(MSG), &sigs(&both), &Expect::default());
    assert!(!r.accepted(), "one key reached a threshold of two");
    assert_eq!(r.roles()[0].valid, 1);
}

#[test]
fn threshold_zero_or_above_the_key_count_is_refused() {
    let a = key(1);
    assert_eq!(
        Policy::parse(&policy_text("release", 1, 0, &[&a.public()], &[])).unwrap_err(),
        Error::Policy("role `release`: threshold 0 must be at least 1".into())
    );
    assert_eq!(
        Policy::parse(&policy_text("release", 1, -1, &[&a.public()], &[])).unwrap_err(),
        Error::Policy("role `release`: threshold -1 must be at least 1".into())
    );
    assert_eq!(
        Policy::parse(&policy_text("release", 1, 2, &[&a.public()], &[])).unwrap_err(),
        Error::Policy("role `release`: threshold 2 is more than its 1 distinct key(s): it could never be met".into())
    );
}

#[test]
fn a_revoked_key_is_refused_in_roles_and_in_signatures() {
    let (a, b) = (key(1), key(2));
    assert_eq!(
        Policy::parse(&policy_text("release", 1, 1, &[&a.public()], &[a.id()])).unwrap_err(),
        Error::Policy(format!(
            "`release` entry `k0` ({}) is a key this policy revokes: remove it from the role",
            a.id()
        ))
    );
    let p = Policy::parse(&policy_text("release", 2, 1, &[&b.public()], &[a.id()])).unwrap();
    let s = [sign(&a, MSG, "c")];
    let r = p.verify(&Prehash::of_bytes(MSG), &sigs(&s), &Expect::default());
    assert!(!r.accepted());
    assert_eq!(
        r.signers()[0].reason.as_deref(),
        Some(format!("key {} is revoked by the trust policy", a.id()).as_str())
    );
}

#[test]
fn an_unknown_key_is_reported_per_signer() {
    let (a, b) = (key(1), key(2));
    let p = policy(1, &[&a.public()]);
    let s = [sign(&b, MSG, "c"), sign(&a, MSG, "c")];
    let r = p.verify(&Prehash::of_bytes(MSG), &sigs(&s), &Expect::default());
    assert!(r.accepted());
    assert_eq!(r.signers()[0].reason.as_deref(), Some(format!("key {} is not in the trust policy", b.id()).as_str()));
    assert!(r.signers()[1].verified());
}

#[test]
fn the_dev_key_is_never_trusted_by_a_release_policy() {
    let dev = PublicKey::parse(DEV_PUBLIC_KEY).unwrap();
    assert_eq!(Policy::parse(&policy_text("release", 1, 1, &[&dev], &[])).unwrap_err(), Error::DevKeyInRelease);
    // Under a dev policy it is fine.
    Policy::parse(&policy_text("dev", 1, 1, &[&dev], &[])).unwrap();
}

#[test]
fn the_trusted_comment_must_name_the_expected_product_and_version() {
    let a = key(1);
    let p = policy(1, &[&a.public()]);
    let s = [sign(&a, MSG, "airlock product=other version=1.0.0 role=release")];
    let expect = Expect { product: Some("airlock.parking-controller.x86_64"), version: Some("1.0.0") };
    let r = p.verify(&Prehash::of_bytes(MSG), &sigs(&s), &expect);
    assert!(!r.accepted());
    assert_eq!(
        r.signers()[0].reason.as_deref(),
        Some("trusted comment says product=\"other\", expected \"airlock.parking-controller.x86_64\"")
    );
}

#[test]
fn a_claimed_role_the_key_does_not_hold_is_refused() {
    let a = key(1);
    let p = policy(1, &[&a.public()]);
    let s = [sign(&a, MSG, "airlock role=approval")];
    let r = p.verify(&Prehash::of_bytes(MSG), &sigs(&s), &Expect::default());
    assert!(!r.accepted());
    assert_eq!(
        r.signers()[0].reason.as_deref(),
        Some(
            format!("signature claims role `approval`, but key {} holds the `release` role in this policy", a.id())
                .as_str()
        )
    );
}

#[test]
fn rotation_needs_the_next_version_and_the_old_threshold() {
    let (a, b, c) = (key(1), key(2), key(3));
    let v1 = Policy::parse(&policy_text("release", 1, 2, &[&a.public(), &b.public()], &[])).unwrap();
    let v2 = policy_text("release", 2, 1, &[&c.public()], &[]);
    let good = [sign(&a, v2.as_bytes(), "c"), sign(&b, v2.as_bytes(), "c")];
    let rotated = v1.rotate(&v2, &sigs(&good)).unwrap();
    assert_eq!(rotated.version(), 2);

    let only_one = [sign(&a, v2.as_bytes(), "c")];
    assert_eq!(
        v1.rotate(&v2, &sigs(&only_one)).unwrap_err(),
        Error::Rotation("new policy is signed by 1 of version 1's release keys, its threshold is 2".into())
    );
    let by_new_key = [sign(&c, v2.as_bytes(), "c"), sign(&a, v2.as_bytes(), "c")];
    assert!(v1.rotate(&v2, &sigs(&by_new_key)).is_err(), "the new key cannot vouch for itself");

    let v3 = policy_text("release", 3, 1, &[&c.public()], &[]);
    let s3 = [sign(&a, v3.as_bytes(), "c"), sign(&b, v3.as_bytes(), "c")];
    assert_eq!(
        v1.rotate(&v3, &sigs(&s3)).unwrap_err(),
        Error::Rotation("new policy is version 3, expected 2 (versions cannot be skipped or go back)".into())
    );
    let again = policy_text("release", 1, 1, &[&c.public()], &[]);
    let s1 = [sign(&a, again.as_bytes(), "c"), sign(&b, again.as_bytes(), "c")];
    assert_eq!(v1.rotate(&again, &sigs(&s1)).unwrap_err(), Error::Rotation("new policy repeats version 1".into()));
}

#[test]
fn a_key_revoked_by_the_rotation_does_not_count_towards_it() {
    let (a, b, c) = (key(1), key(2), key(3));
    let v1 = Policy::parse(&policy_text("release", 1, 1, &[&a.public(), &b.public()], &[])).unwrap();
    let v2 = policy_text("release", 2, 1, &[&b.public(), &c.public()], &[a.id()]);
    let by_revoked = [sign(&a, v2.as_bytes(), "c")];
    assert!(v1.rotate(&v2, &sigs(&by_revoked)).is_err());
    let by_b = [sign(&b, v2.as_bytes(), "c")];
    assert!(v1.rotate(&v2, &sigs(&by_b)).unwrap().revoked().0.contains(&a.id()));
}

#[test]
fn unknown_fields_and_oversized_policies_are_refused() {
    let a = key(1);
    let text = policy_text("release", 1, 1, &[&a.public()], &[]).replace("version = 1", "version = 1\nexpires = 2030");
    assert!(Policy::parse(&text).unwrap_err().to_string().contains("unknown field `expires`"));
    let big = "#".repeat(trust::MAX_POLICY_FILE + 1);
    assert_eq!(
        Policy::parse(&big).unwrap_err(),
        Error::Policy(format!("policy is {} bytes, at most 65536", big.len()))
    );
}

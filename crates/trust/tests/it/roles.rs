//! Roles: every role signs; thresholds from 1-of-1 to 3-of-5 in each role; two-party control
//! (vendor release + owner approval) cannot be met by one party; ids that collide within and
//! across roles are refused at parse time, naming both entries; the dev key is recognised by
//! its bytes under any id.

use trust::{Error, Expect, KeyId, Policy, Prehash, PublicKey, Role, SecretKey, SignatureFile};

use crate::{key, sign};

const MSG: &[u8] = b"[image]\nproduct = \"p\"\nversion = \"1.0.0\"\n";

fn entries(keys: &[(&str, &PublicKey)]) -> String {
    keys.iter()
        .map(|(n, k)| format!("{{ name = \"{n}\", key = \"{}\" }}", k.to_base64()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn two_roles(release: (usize, &[(&str, &PublicKey)]), approval: (usize, &[(&str, &PublicKey)])) -> String {
    format!(
        "version = 1\nchannel = \"release\"\n[release]\nthreshold = {}\nkeys = [{}]\n[approval]\nthreshold = {}\nkeys = [{}]\n",
        release.0,
        entries(release.1),
        approval.0,
        entries(approval.1)
    )
}

fn signed_by(keys: &[&SecretKey], role: &str) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| {
            let comment = format!("airlock product=p version=1.0.0 role={role} file=m");
            (format!("m.{}.minisig", k.id()), sign(k, MSG, &comment))
        })
        .collect()
}

fn report(p: &Policy, sigs: &[(String, String)]) -> trust::Report {
    p.verify(&Prehash::of_bytes(MSG), sigs, &Expect { product: Some("p"), version: Some("1.0.0") })
}

#[test]
fn every_threshold_from_one_of_one_to_three_of_five_in_each_role() {
    for n in 1..=5u8 {
        for m in 1..=n.min(3) {
            let vendors: Vec<SecretKey> = (0..n).map(|i| key(10 + i)).collect();
            let owners: Vec<SecretKey> = (0..n).map(|i| key(40 + i)).collect();
            let vp: Vec<PublicKey> = vendors.iter().map(SecretKey::public).collect();
            let op: Vec<PublicKey> = owners.iter().map(SecretKey::public).collect();
            let vn: Vec<String> = (0..n).map(|i| format!("vendor-{i}")).collect();
            let on: Vec<String> = (0..n).map(|i| format!("owner-{i}")).collect();
            let ve: Vec<(&str, &PublicKey)> = vn.iter().map(String::as_str).zip(vp.iter()).collect();
            let oe: Vec<(&str, &PublicKey)> = on.iter().map(String::as_str).zip(op.iter()).collect();
            let p = Policy::parse(&two_roles((m as usize, &ve), (m as usize, &oe))).unwrap();
            let m = m as usize;
            for (v, o) in [(m, m), (m - 1, m), (m, m - 1), (n as usize, n as usize)] {
                let mut sigs = signed_by(&vendors.iter().take(v).collect::<Vec<_>>(), "release");
                sigs.extend(signed_by(&owners.iter().take(o).collect::<Vec<_>>(), "approval"));
                let r = report(&p, &sigs);
                let (rel, app) = (r.role(Role::Release).unwrap(), r.role(Role::Approval).unwrap());
                assert_eq!((rel.valid, app.valid), (v, o), "{m}-of-{n}");
                assert_eq!(r.accepted(), v >= m && o >= m, "{m}-of-{n} with {v} vendor and {o} owner signatures");
                assert!(r.signers().iter().all(|s| s.verified()), "{:?}", r.signers());
                assert_eq!(p.require(&Prehash::of_bytes(MSG), &sigs, &Expect::default()).is_ok(), v >= m && o >= m);
            }
        }
    }
}

#[test]
fn the_asset_owner_alone_cannot_meet_the_release_role() {
    let (vendor, owner) = (key(1), key(2));
    let p =
        Policy::parse(&two_roles((1, &[("vendor", &vendor.public())]), (1, &[("owner", &owner.public())]))).unwrap();
    // The owner signs twice, once claiming each role.
    let mut sigs = signed_by(&[&owner], "approval");
    sigs.extend(signed_by(&[&owner], "release").into_iter().map(|(n, t)| (format!("again-{n}"), t)));
    let r = report(&p, &sigs);
    assert!(!r.accepted());
    assert_eq!(r.summary(), "release 0/1 not met; approval 1/1 met");
    assert_eq!(
        r.signers()[1].reason.as_deref(),
        Some(
            format!("signature claims role `release`, but key {} holds the `approval` role in this policy", owner.id())
                .as_str()
        )
    );
    // The vendor alone cannot meet approval either.
    let r = report(&p, &signed_by(&[&vendor], "release"));
    assert_eq!(r.summary(), "release 1/1 met; approval 0/1 not met");
}

#[test]
fn an_approval_key_that_reuses_a_release_key_id_is_refused_naming_both_entries() {
    let vendor = key(1);
    // The owner's key carries the vendor's id (ids are labels anyone can choose).
    let impostor = SecretKey::from_seed([2; 32], vendor.id().bytes());
    let text = two_roles((1, &[("vendor-1", &vendor.public())]), (1, &[("owner", &impostor.public())]));
    assert_eq!(
        Policy::parse(&text).unwrap_err(),
        Error::Policy(format!(
            "key id {} names two different keys: `release` entry `vendor-1` and `approval` entry `owner`; a key is its key bytes, so each key needs its own id (`cargo xtask keygen` makes a new one)",
            vendor.id()
        ))
    );
}

#[test]
fn two_keys_under_one_id_within_a_role_are_refused() {
    let a = key(1);
    let b = SecretKey::from_seed([2; 32], a.id().bytes());
    let text = two_roles((1, &[("a", &a.public()), ("b", &b.public())]), (1, &[("owner", &key(3).public())]));
    let err = Policy::parse(&text).unwrap_err().to_string();
    assert!(err.contains("names two different keys: `release` entry `a` and `release` entry `b`"), "{err}");
}

#[test]
fn one_key_in_both_roles_is_refused() {
    let a = key(1);
    // The same key bytes under another id in the approval role.
    let alias = a.public().with_id(KeyId::new([7; 8]));
    let text = two_roles((1, &[("vendor", &a.public())]), (1, &[("owner", &alias)]));
    assert_eq!(
        Policy::parse(&text).unwrap_err(),
        Error::Policy(
            "`release` entry `vendor` and `approval` entry `owner` are the same key: a key holds one role, so that vendor release and owner approval stay two parties".into()
        )
    );
}

#[test]
fn a_signature_counts_only_under_its_own_roles_key() {
    let (vendor, owner, stranger) = (key(1), key(2), key(3));
    let p =
        Policy::parse(&two_roles((1, &[("vendor", &vendor.public())]), (1, &[("owner", &owner.public())]))).unwrap();
    // A stranger's signature relabelled with the vendor's id is verified under the vendor's
    // key, and fails.
    let forged =
        SignatureFile::parse(&sign(&stranger, MSG, "airlock role=release")).unwrap().relabelled(vendor.id()).to_file();
    let mut sigs = vec![("forged.minisig".to_string(), forged)];
    sigs.extend(signed_by(&[&owner], "approval"));
    let r = report(&p, &sigs);
    assert!(!r.accepted());
    assert_eq!(
        r.signers()[0].reason.as_deref(),
        Some(
            format!(
                "signature by key {} does not match the file (wrong file, or file or signature altered)",
                vendor.id()
            )
            .as_str()
        )
    );
}

#[test]
fn the_dev_key_relabelled_with_another_id_is_still_the_dev_key() {
    let dev_secret =
        SecretKey::parse(include_str!("../../../../keys/dev/dev.key"), None).expect("the committed dev key");
    assert!(trust::is_dev_key(&dev_secret.public()));
    assert!(trust::is_dev_key(&dev_secret.public().with_id(KeyId::new([1; 8]))), "recognised by bytes, not id");
    // Listed under another id in a release policy: refused.
    let relabelled = dev_secret.public().with_id(KeyId::new([1; 8]));
    let text = format!(
        "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{}]\n",
        entries(&[("innocent", &relabelled)])
    );
    assert_eq!(Policy::parse(&text).unwrap_err(), Error::DevKeyInRelease);
    // Its signature, relabelled, offered to a release policy: named as the dev key.
    let vendor = key(1);
    let p = Policy::parse(&format!(
        "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{}]\n",
        entries(&[("vendor", &vendor.public())])
    ))
    .unwrap();
    let sig = SignatureFile::parse(&sign(&dev_secret, MSG, "c")).unwrap().relabelled(KeyId::new([5; 8])).to_file();
    let r = p.verify(&Prehash::of_bytes(MSG), &[("d.minisig", sig.as_str())], &Expect::default());
    assert_eq!(r.signers()[0].reason.as_deref(), Some("the INSECURE dev key is never trusted by a release policy"));
}

#[test]
fn a_key_revoked_by_its_bytes_is_refused_under_any_id() {
    let (a, b) = (key(1), key(2));
    let text = format!(
        "version = 2\nchannel = \"release\"\nrevoked = [\"{}\"]\n[release]\nthreshold = 1\nkeys = [{}]\n",
        a.public().to_base64(),
        entries(&[("b", &b.public())])
    );
    let p = Policy::parse(&text).unwrap();
    let sig = SignatureFile::parse(&sign(&a, MSG, "c")).unwrap().relabelled(KeyId::new([3; 8])).to_file();
    let r = p.verify(&Prehash::of_bytes(MSG), &[("a.minisig", sig.as_str())], &Expect::default());
    assert_eq!(r.signers()[0].reason.as_deref(), Some("key 0303030303030303 is revoked by the trust policy"));
    // And it cannot be listed in a role, under any id.
    let relisted = format!(
        "version = 2\nchannel = \"release\"\nrevoked = [\"{}\"]\n[release]\nthreshold = 1\nkeys = [{}]\n",
        a.public().to_base64(),
        entries(&[("again", &a.public().with_id(KeyId::new([4; 8])))])
    );
    assert!(Policy::parse(&relisted).unwrap_err().to_string().contains("is a key this policy revokes"));
}

#[test]
fn require_role_looks_at_that_role_alone() {
    let (v, o) = (key(90), key(91));
    let p = Policy::parse(&two_roles((1, &[("vendor", &v.public())]), (1, &[("owner", &o.public())]))).unwrap();
    let expect = Expect { product: Some("p"), version: Some("1.0.0") };
    let pre = Prehash::of_bytes(MSG);
    // The vendor alone: release met, approval not. A site profile needs approval.
    let vendor = signed_by(&[&v], "release");
    let r = p.require_role(Role::Approval, &pre, &vendor, &expect).unwrap_err();
    assert_eq!(r.report().roles().iter().map(|r| (r.role, r.met)).collect::<Vec<_>>(), [(Role::Approval, false)]);
    assert!(p.require_role(Role::Release, &pre, &vendor, &expect).is_ok());
    // The owner alone: the other way round.
    let owner = signed_by(&[&o], "approval");
    assert!(p.require_role(Role::Approval, &pre, &owner, &expect).is_ok());
    assert!(p.require_role(Role::Release, &pre, &owner, &expect).is_err());
}

#[test]
fn an_envelope_signed_by_either_dev_key_is_refused_as_such_by_a_release_policy() {
    let v = key(92);
    let release =
        Policy::parse(&two_roles((1, &[("vendor", &v.public())]), (1, &[("owner", &key(93).public())]))).unwrap();
    let payload = b"{}";
    for text in [include_str!("../../../../keys/dev/dev.key"), include_str!("../../../../keys/dev/dev-approval.key")] {
        let dev = SecretKey::parse(text, None).unwrap();
        let s = trust::dsse::sign(&dev, trust::dsse::IN_TOTO, payload);
        let r = release.verify_dsse(trust::dsse::IN_TOTO, payload, std::slice::from_ref(&s));
        assert_eq!(r.signers()[0].reason.as_deref(), Some(Error::DevKeyInRelease.to_string().as_str()), "{r:?}");
        // Under a dev-channel policy that does not list it, it is only an unknown key.
        let dev_channel = Policy::parse(&crate::policy_text("dev", 1, 1, &[&v.public()], &[])).unwrap();
        let r = dev_channel.verify_dsse(trust::dsse::IN_TOTO, payload, &[s]);
        assert!(r.signers()[0].reason.as_deref().unwrap().contains("is not in the trust policy"), "{r:?}");
    }
}

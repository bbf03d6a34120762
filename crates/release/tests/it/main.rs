//! The file side of trust and bundles, on temporary directories: signing from either manifest
//! kind, the dev key refused by its bytes, streamed verification with the manifest's own
//! expectations, signature files read once and bounded, the verifier's choice of policy, the
//! rotation chain (root, unbroken, cut, hand-edited, gone back), rotation with history, and
//! bundle assembly (dev signs; release waits; a signed manifest is never replaced silently).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod edges;

use std::fs;
use std::path::{Path, PathBuf};

use release::{Assembled, Chain, PolicySource};
use trust::{Role, SecretKey};

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32], [n, 1, 2, 3, 4, 5, 6, n])
}

fn dev_key() -> SecretKey {
    SecretKey::parse(include_str!("../../../../keys/dev/dev.key"), None).unwrap()
}

fn dev_approval_key() -> SecretKey {
    SecretKey::parse(include_str!("../../../../keys/dev/dev-approval.key"), None).unwrap()
}

fn policy_text(
    version: u64,
    release: &[&SecretKey],
    threshold: usize,
    approval: &[&SecretKey],
    revoked: &[&SecretKey],
) -> String {
    let list = |ks: &[&SecretKey], p: &str| {
        ks.iter()
            .enumerate()
            .map(|(i, k)| format!("{{ name = \"{p}{i}\", key = \"{}\" }}", k.public().to_base64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let revoked: Vec<String> = revoked.iter().map(|k| format!("\"{}\"", k.id())).collect();
    let mut t = format!(
        "version = {version}\nchannel = \"release\"\nrevoked = [{}]\n[release]\nthreshold = {threshold}\nkeys = [{}]\n",
        revoked.join(", "),
        list(release, "v")
    );
    if !approval.is_empty() {
        t.push_str(&format!("[approval]\nthreshold = 1\nkeys = [{}]\n", list(approval, "o")));
    }
    t
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn load(p: &Path) -> release::LoadedPolicy {
    release::policy::load(Path::new("/nonexistent"), &PolicySource::File(p.to_path_buf())).unwrap()
}

const BUILD: &str = "[image]\nname = \"pc\"\nproduct = \"airlock.pc\"\nversion = \"1.2.0\"\nchannel = \"release\"\nsecurity_version = 2\n";

#[test]
fn sign_takes_product_and_version_from_the_manifest_and_verify_expects_them() {
    let d = tempfile::tempdir().unwrap();
    let m = write(d.path(), "build-manifest.toml", BUILD);
    let k = key(1);
    let sig = release::sign_file(&m, &k, Role::Release, None, None).unwrap();
    assert_eq!(sig, d.path().join(format!("build-manifest.toml.{}.minisig", k.id())));
    let text = fs::read_to_string(&sig).unwrap();
    assert!(
        text.contains(
            "trusted comment: airlock product=airlock.pc version=1.2.0 role=release file=build-manifest.toml"
        ),
        "{text}"
    );
    let p = write(d.path(), "trust.toml", &policy_text(1, &[&k], 1, &[], &[]));
    let r = release::verify_file(&m, &load(&p)).unwrap();
    assert!(r.accepted(), "{}", r.render_text());
    assert_eq!(
        (r.kind.as_deref(), r.product.as_deref(), r.version.as_deref()),
        (Some("build manifest"), Some("airlock.pc"), Some("1.2.0"))
    );
    assert!(r.render_text().ends_with("\naccepted"), "{}", r.render_text());

    // A signature made for another version of the same bytes' product does not count.
    let other = write(d.path(), "other.toml", BUILD);
    release::sign_file(&other, &k, Role::Release, None, Some("9.9.9")).unwrap();
    let r = release::verify_file(&other, &load(&p)).unwrap();
    assert!(!r.accepted());
    assert_eq!(r.signers[0].reason.as_deref(), Some("trusted comment says version=\"9.9.9\", expected \"1.2.0\""));
    assert_eq!(
        r.hints,
        [
            "release 0/1: each vendor signer runs `cargo xtask sign other.toml --key THEIR.key` on the offline signing machine"
        ]
    );
    assert!(r.render_text().ends_with("\nrejected"));
}

#[test]
fn the_dev_key_never_signs_anything_of_the_release_channel() {
    let d = tempfile::tempdir().unwrap();
    let relabelled = dev_key().with_id(trust::KeyId::new([9; 8]));
    for (name, text) in [
        ("b.toml", BUILD),
        (
            "m.toml",
            "format = 1\nproduct = \"p\"\nversion = \"1.0.0\"\nchannel = \"release\"\n[[payload]]\nname = \"root.img\"\n",
        ),
        ("t.toml", "version = 2\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = []\n"),
    ] {
        let f = write(d.path(), name, text);
        for k in [dev_key(), relabelled.with_id(trust::KeyId::new([9; 8]))] {
            let e = release::sign_file(&f, &k, Role::Release, None, None).unwrap_err();
            assert_eq!(e.exit_code(), 1);
            assert!(e.to_string().ends_with("is never signed with the INSECURE dev key"), "{e}");
        }
    }
    // A dev manifest, or a plain file, it signs.
    let f = write(d.path(), "dev.toml", &BUILD.replace("\"release\"", "\"dev\""));
    release::sign_file(&f, &dev_key(), Role::Release, None, None).unwrap();
    let f = write(d.path(), "plain.bin", "x");
    release::sign_file(&f, &dev_key(), Role::Release, None, None).unwrap();
}

#[test]
fn a_trusted_comment_cannot_carry_spaces_or_equals_signs() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "f", "x");
    for bad in ["a b", "a=b", ""] {
        let e = release::sign_file(&f, &key(1), Role::Release, Some(bad), None).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn signature_files_are_read_once_bounded_and_only_when_regular() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "f", "x");
    let k = key(1);
    release::sign_file(&f, &k, Role::Release, None, None).unwrap();
    write(d.path(), "f.minisig", &"x".repeat(trust::MAX_SIG_FILE * 4));
    std::os::unix::fs::symlink("/etc/passwd", d.path().join("f.0000000000000001.minisig")).unwrap();
    write(d.path(), "f.notasig.minisig", "ignored");
    write(d.path(), "g.minisig", "ignored");
    let sigs = release::sigfiles::read_signatures(&f).unwrap();
    let names: Vec<&str> = sigs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let big = sigs.iter().find(|(n, _)| n == "f.minisig").unwrap();
    assert_eq!(big.1.len(), trust::MAX_SIG_FILE + 1, "read no further than the bound");
    let link = sigs.iter().find(|(n, _)| n == "f.0000000000000001.minisig").unwrap();
    assert!(link.1.is_empty(), "a symlink is not followed");
    let p = write(d.path(), "trust.toml", &policy_text(1, &[&k], 1, &[], &[]));
    let r = release::verify_file(&f, &load(&p)).unwrap();
    assert!(r.accepted());
    assert_eq!(r.signers.iter().filter(|s| !s.verified).count(), 2);
}

#[test]
fn the_verifier_chooses_the_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let release_policy = release::policy::load(&root, &PolicySource::Default).unwrap();
    assert!(release_policy.path.ends_with("keys/trust.toml"));
    assert!(!release_policy.policy.trusts_dev_key());
    let dev = release::policy::load(&root, &PolicySource::Dev).unwrap();
    assert!(dev.path.ends_with("keys/dev/trust.toml") && dev.policy.trusts_dev_key());
    let e = release::policy::load(&root, &PolicySource::File(root.join("README.md"))).err().unwrap();
    assert_eq!(e.exit_code(), 2);
}

/// A history directory with version 1..=n of a policy, each rotation signed by `signer`.
fn history(dir: &Path, n: u64, signer: &SecretKey) -> Vec<String> {
    let h = dir.join("history");
    fs::create_dir_all(&h).unwrap();
    let mut texts = Vec::new();
    for v in 1..=n {
        let t = policy_text(v, &[signer, &key(7)], 1, &[], &[]);
        let p = write(&h, &format!("trust-v{v}.toml"), &t);
        if v > 1 {
            release::sign_file(&p, signer, Role::Release, None, None).unwrap();
        }
        texts.push(t);
    }
    texts
}

#[test]
fn the_rotation_chain_is_checked_from_version_1() {
    let d = tempfile::tempdir().unwrap();
    let k = key(1);
    let texts = history(d.path(), 3, &k);
    let policy = write(d.path(), "trust.toml", &texts[2]);
    assert_eq!(load(&policy).chain, Chain::Unbroken { from: 1, to: 3 });
    // Hand-edited: same version, other bytes.
    fs::write(&policy, texts[2].replace("threshold = 1", "threshold = 2")).unwrap();
    let Chain::Broken(why) = load(&policy).chain else { panic!("a hand-edited policy passed") };
    assert!(why.contains("a hand-edited policy"), "{why}");
    // Gone back: the history holds a newer version.
    fs::write(&policy, &texts[1]).unwrap();
    let Chain::Broken(why) = load(&policy).chain else { panic!("a policy that went back passed") };
    assert!(why.contains("goes to version 3, the policy in use is version 2: it went back"), "{why}");
    // A rotation whose signature is gone: cut.
    fs::write(&policy, &texts[2]).unwrap();
    let sig = d.path().join(format!("history/trust-v2.toml.{}.minisig", k.id()));
    fs::remove_file(&sig).unwrap();
    let Chain::Broken(why) = load(&policy).chain else { panic!("an unsigned rotation passed") };
    assert!(why.contains("trust-v2.toml: rotation refused: new policy is signed by 0"), "{why}");
    // A missing version in the middle.
    fs::remove_file(d.path().join("history/trust-v2.toml")).unwrap();
    assert!(!load(&policy).chain.is_ok());
    // No history at all: version 1 is its own root, a later version is not reached.
    let e = tempfile::tempdir().unwrap();
    assert_eq!(load(&write(e.path(), "trust.toml", &texts[0])).chain, Chain::Root);
    let Chain::Broken(why) = load(&write(e.path(), "trust.toml", &texts[1])).chain else { panic!() };
    assert!(why.contains("holds no chain from version 1"), "{why}");
    assert!(Chain::Root.is_ok() && Chain::Unbroken { from: 1, to: 2 }.is_ok());
    assert_eq!(Chain::Unbroken { from: 1, to: 2 }.describe(), "unbroken chain from version 1 to 2");
}

#[test]
fn rotate_keeps_the_history_and_refuses_what_the_old_policy_did_not_sign() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, c) = (key(1), key(2), key(3));
    let current = write(d.path(), "trust.toml", &policy_text(1, &[&a, &b], 1, &[], &[]));
    let v2 = write(d.path(), "trust-v2.toml", &policy_text(2, &[&b, &c], 1, &[], &[&a]));
    // Signed only by the key it revokes: refused, nothing written.
    release::sign_file(&v2, &a, Role::Release, None, None).unwrap();
    let e = release::rotate(&current, &v2).err().unwrap();
    assert_eq!(e.exit_code(), 1);
    assert!(!d.path().join("history").exists());
    release::sign_file(&v2, &b, Role::Release, None, None).unwrap();
    let r = release::rotate(&current, &v2).unwrap();
    assert_eq!(r.policy.version(), 2);
    assert_eq!(fs::read_to_string(&current).unwrap(), fs::read_to_string(&v2).unwrap());
    let h = d.path().join("history");
    for f in ["trust-v1.toml".to_string(), "trust-v2.toml".to_string(), format!("trust-v2.toml.{}.minisig", b.id())] {
        assert!(h.join(&f).is_file(), "{f}");
        assert!(r.history.contains(&h.join(&f)), "{f}");
    }
    assert_eq!(load(&current).chain, Chain::Unbroken { from: 1, to: 2 });
    // A current policy that is not reached cannot rotate.
    fs::write(&current, fs::read_to_string(&current).unwrap().replace("threshold = 1", "threshold = 2")).unwrap();
    let v3 = write(d.path(), "trust-v3.toml", &policy_text(3, &[&b, &c], 1, &[], &[&a]));
    release::sign_file(&v3, &b, Role::Release, None, None).unwrap();
    let e = release::rotate(&current, &v3).err().unwrap();
    assert!(e.to_string().contains("not reached by an unbroken chain"), "{e}");
}

fn build_dir(channel: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "build-manifest.toml", &BUILD.replace("\"release\"", &format!("\"{channel}\"")));
    let img: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    fs::write(d.path().join("root.img"), img).unwrap();
    d
}

#[test]
fn a_dev_bundle_is_signed_with_the_dev_key_and_written() {
    let d = build_dir("dev");
    let dev_policy = trust::Policy::parse(include_str!("../../../../keys/dev/trust.toml")).unwrap();
    let r = release::assemble(
        d.path(),
        None,
        &dev_policy,
        &[(Role::Release, &dev_key()), (Role::Approval, &dev_approval_key())],
        false,
    )
    .unwrap();
    let Assembled::Written { path, report, .. } = r else { panic!("not written: {r:?}") };
    assert!(path.ends_with("pc-1.2.0.airlock"));
    assert!(report.accepted());
    // The bundle verifies in full against the dev policy.
    let (rep, m) =
        bundle::verify_stream(fs::File::open(&path).unwrap(), "b", "dev", &dev_policy, trust::Expect::default());
    assert!(rep.accepted(), "{}", rep.render_text());
    assert_eq!(m.unwrap().payloads[0].size, 200_000);
    // Nothing left behind but the outputs.
    let mut names: Vec<String> =
        fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    // build manifest, root.img, bundle manifest, its two signatures (release, approval), bundle
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn a_release_bundle_waits_for_its_signers_and_a_signed_manifest_is_never_replaced() {
    let d = build_dir("release");
    let (v1, v2, owner) = (key(1), key(2), key(3));
    let policy = trust::Policy::parse(&policy_text(1, &[&v1, &v2], 2, &[&owner], &[])).unwrap();
    let r = release::assemble(d.path(), None, &policy, &[], false).unwrap();
    let Assembled::Waiting { manifest, report, .. } = r else { panic!("a release bundle was written unsigned") };
    assert_eq!(report.summary(), "release 0/2 not met; approval 0/1 not met");
    assert!(!d.path().join("pc-1.2.0.airlock").exists());
    release::sign_file(&manifest, &v1, Role::Release, None, None).unwrap();
    release::sign_file(&manifest, &v2, Role::Release, None, None).unwrap();
    // A stranger's signature lies beside them: it is not carried into the bundle.
    release::sign_file(&manifest, &key(9), Role::Release, None, None).unwrap();
    let Assembled::Waiting { report, .. } = release::assemble(d.path(), None, &policy, &[], false).unwrap() else {
        panic!()
    };
    assert_eq!(report.summary(), "release 2/2 met; approval 0/1 not met");
    release::sign_file(&manifest, &owner, Role::Approval, None, None).unwrap();
    let Assembled::Written { path, .. } = release::assemble(d.path(), None, &policy, &[], false).unwrap() else {
        panic!()
    };
    let listing = std::process::Command::new("tar").arg("-tf").arg(&path).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(listing.lines().filter(|l| l.ends_with(".minisig")).count(), 3, "{listing}");
    assert!(!listing.contains(&key(9).id().to_string()), "{listing}");

    // Other payload bytes under the same version: the signed manifest would change. Refused.
    fs::write(d.path().join("root.img"), b"other bytes").unwrap();
    let e = release::assemble(d.path(), None, &policy, &[], false).unwrap_err();
    assert!(e.to_string().contains("exists with 4 signature(s) over other bytes"), "{e}");
    assert_eq!(
        fs::read_dir(d.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".minisig"))
            .count(),
        4
    );
    // --force deletes them (and says so) and waits for new ones.
    let Assembled::Waiting { report, .. } = release::assemble(d.path(), None, &policy, &[], true).unwrap() else {
        panic!()
    };
    assert_eq!(report.summary(), "release 0/2 not met; approval 0/1 not met");
}

/// A release build directory that made a provenance statement, with the build manifest
/// listing both outputs by digest (as `cargo xtask build` writes it).
fn build_dir_with_provenance() -> tempfile::TempDir {
    let d = build_dir("release");
    let sha = |n: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(fs::read(d.path().join(n)).unwrap()));
    let statement = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"root.img","digest":{{"sha256":"{}"}}}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{{}}}}"#,
        sha("root.img")
    );
    fs::write(d.path().join("provenance.json"), statement).unwrap();
    let bm = format!(
        "{BUILD}\n[outputs.\"provenance.json\"]\nsha256 = \"{}\"\n\n[outputs.\"root.img\"]\nsha256 = \"{}\"\n",
        sha("provenance.json"),
        sha("root.img")
    );
    write(d.path(), "build-manifest.toml", &bm);
    d
}

#[cfg(unix)]
fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).unwrap().ino()
}

#[test]
fn a_bundle_carries_the_provenance_once_its_dsse_signatures_meet_the_policy_too() {
    let d = build_dir_with_provenance();
    let (v1, v2, owner) = (key(1), key(2), key(3));
    let policy = trust::Policy::parse(&policy_text(1, &[&v1, &v2], 2, &[&owner], &[])).unwrap();
    let statement = d.path().join("provenance.json");
    let Assembled::Waiting { manifest, provenance, .. } =
        release::assemble(d.path(), None, &policy, &[], false).unwrap()
    else {
        panic!("written unsigned")
    };
    assert_eq!(provenance.unwrap().summary(), "release 0/2 not met; approval 0/1 not met");
    // The manifest signed in full: still waiting for the statement's signatures.
    for (k, role) in [(&v1, Role::Release), (&v2, Role::Release), (&owner, Role::Approval)] {
        release::sign_file(&manifest, k, role, None, None).unwrap();
    }
    let Assembled::Waiting { report, provenance, .. } = release::assemble(d.path(), None, &policy, &[], false).unwrap()
    else {
        panic!("a bundle was written with unsigned provenance")
    };
    assert!(report.accepted());
    assert_eq!(provenance.unwrap().summary(), "release 0/2 not met; approval 0/1 not met");
    assert!(!d.path().join("pc-1.2.0.airlock").exists());
    // The same round of signers signs the statement (DSSE); a stranger's lies beside them.
    for (k, role) in [(&v1, Role::Release), (&v2, Role::Release), (&owner, Role::Approval), (&key(9), Role::Release)] {
        let sig = release::sign_file(&statement, k, role, None, None).unwrap();
        assert!(sig.to_string_lossy().ends_with(&format!("provenance.json.{}.dsse", k.id())));
    }
    let Assembled::Written { path, provenance, .. } = release::assemble(d.path(), None, &policy, &[], false).unwrap()
    else {
        panic!("not written")
    };
    assert_eq!(provenance.unwrap().summary(), "release 2/2 met; approval 1/1 met");
    let listing = std::process::Command::new("tar").arg("-tf").arg(&path).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let dsse: Vec<&str> = listing.lines().filter(|l| l.ends_with(".dsse")).collect();
    assert_eq!(dsse.len(), 3, "{listing}");
    assert!(!listing.contains(&key(9).id().to_string()), "a signature that does not count was carried: {listing}");
    let payloads: Vec<&str> = listing.lines().filter(|l| l.ends_with(".zst")).collect();
    assert_eq!(payloads, ["provenance.json.zst", "root.img.zst"]);
    let (rep, m) = bundle::verify_stream(fs::File::open(&path).unwrap(), "b", "t", &policy, trust::Expect::default());
    assert!(rep.accepted(), "{}", rep.render_text());
    assert_eq!(m.unwrap().format, bundle::FORMAT);
    assert_eq!(rep.bundle.unwrap().provenance.as_deref(), Some("release 2/2, approval 1/1"));

    // Nothing changed: the bundle is up to date and not written again (same file).
    let ino = inode(&path);
    let Assembled::Written { path: again, provenance, .. } =
        release::assemble(d.path(), None, &policy, &[], false).unwrap()
    else {
        panic!()
    };
    assert_eq!((again.as_path(), inode(&again)), (path.as_path(), ino), "an up-to-date bundle was made again");
    assert!(provenance.unwrap().accepted());
    // Chained to a previous release now: the manifest changes, so does the bundle (its
    // signatures are over other bytes, so it waits with --force).
    let prev = write(d.path(), "prev.toml", "previous manifest bytes");
    let Assembled::Waiting { report, .. } = release::assemble(d.path(), Some(&prev), &policy, &[], true).unwrap()
    else {
        panic!("an up-to-date bundle was claimed for another previous release")
    };
    assert!(!report.accepted());
}

#[test]
fn an_up_to_date_bundle_is_kept_only_while_every_input_is_the_same() {
    let d = build_dir_with_provenance();
    let dev_policy = trust::Policy::parse(include_str!("../../../../keys/dev/trust.toml")).unwrap();
    let statement = d.path().join("provenance.json");
    let bm = d.path().join("build-manifest.toml");
    fs::write(&bm, fs::read_to_string(&bm).unwrap().replace("\"release\"", "\"dev\"")).unwrap();
    for (role, k) in [(Role::Release, dev_key()), (Role::Approval, dev_approval_key())] {
        release::sign_file(&statement, &k, role, None, None).unwrap();
    }
    let keys = [(Role::Release, &dev_key()), (Role::Approval, &dev_approval_key())];
    let assemble = |prev: Option<&Path>| {
        let dk: Vec<(Role, &SecretKey)> = keys.iter().map(|(r, k)| (*r, *k)).collect();
        // --force: each change below makes a new manifest, whose dev signatures replace the old.
        match release::assemble(d.path(), prev, &dev_policy, &dk, true).unwrap() {
            Assembled::Written { path, .. } => path,
            r => panic!("not written: {r:?}"),
        }
    };
    let path = assemble(None);
    let ino = inode(&path);
    assert_eq!(inode(&assemble(None)), ino, "made again with nothing changed");
    // Another previous release: made again.
    let prev = write(d.path(), "prev.toml", "previous manifest bytes");
    let p2 = assemble(Some(&prev));
    assert_ne!(inode(&p2), ino, "kept though the previous release changed");
    let ino = inode(&p2);
    assert_eq!(inode(&assemble(Some(&prev))), ino);
    // A build manifest with other bytes: made again.
    fs::write(&bm, format!("{}\n# rebuilt\n", fs::read_to_string(&bm).unwrap())).unwrap();
    let p3 = assemble(Some(&prev));
    assert_ne!(inode(&p3), ino, "kept though the build manifest changed");
    let ino = inode(&p3);
    // root.img rebuilt (its new digest in the build manifest): made again.
    let listed = |n: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(fs::read(d.path().join(n)).unwrap()));
    let old = listed("root.img");
    fs::write(d.path().join("root.img"), b"other root").unwrap();
    fs::write(&bm, fs::read_to_string(&bm).unwrap().replace(&old, &listed("root.img"))).unwrap();
    let p4 = assemble(Some(&prev));
    assert_ne!(inode(&p4), ino, "kept though the payload changed");
    // root.img changed behind the build manifest's back: the bundle made from the listed bytes
    // stands; none is made from other bytes.
    fs::write(d.path().join("root.img"), b"tampered").unwrap();
    let ino = inode(&p4);
    assert_eq!(inode(&assemble(Some(&prev))), ino);
    fs::remove_file(&p4).unwrap();
    let dk: Vec<(Role, &SecretKey)> = keys.iter().map(|(r, k)| (*r, *k)).collect();
    let e = release::assemble(d.path(), Some(&prev), &dev_policy, &dk, true).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("root.img: sha256 "), "{e}");
    assert!(
        e.to_string().contains("that build-manifest.toml lists: the file changed after the build; build again"),
        "{e}"
    );
    assert!(!p4.exists());
}

#[test]
fn a_previous_release_is_chained_by_its_manifest_digest() {
    let d = build_dir("dev");
    let dev_policy = trust::Policy::parse(include_str!("../../../../keys/dev/trust.toml")).unwrap();
    let prev = write(d.path(), "prev.toml", "previous manifest bytes");
    release::assemble(
        d.path(),
        Some(&prev),
        &dev_policy,
        &[(Role::Release, &dev_key()), (Role::Approval, &dev_approval_key())],
        false,
    )
    .unwrap();
    let m = fs::read_to_string(d.path().join("bundle-manifest.toml")).unwrap();
    use sha2::Digest;
    let want = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"previous manifest bytes")));
    assert!(m.contains(&format!("previous_manifest = \"{want}\"")), "{m}");
}

//! The release crate's edges, each written against a mutant cargo-mutants left alive: the
//! provenance envelope's verification branch by branch, which files are a statement's
//! signatures, bounded reads at their bound, files that are not regular, what a file says it
//! is, and the report lines.

use std::fs;
use std::path::Path;

use release::files::{open_regular, read_bounded, write_atomic};
use release::provenance::{self, ENVELOPE, STATEMENT};
use trust::{Role, SecretKey};

use super::{key, load, policy_text, write};

fn statement(subjects: &[(&str, &str)]) -> String {
    let subs: Vec<serde_json::Value> =
        subjects.iter().map(|(n, d)| serde_json::json!({"name": n, "digest": {"sha256": d}})).collect();
    serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subs,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"externalParameters": {"image": {"channel": "dev"}}}},
    })
    .to_string()
}

fn sha(p: &Path) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(fs::read(p).unwrap()))
}

/// A directory with `root.img`, a statement of `subjects`, signed by `signers`, and the
/// envelope assembled; the policy trusts key 1 (threshold 1).
fn signed_dir(subjects: &[(&str, &str)], signers: &[&SecretKey]) -> (tempfile::TempDir, release::LoadedPolicy) {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("root.img"), b"root bytes").unwrap();
    fs::write(d.path().join(STATEMENT), statement(subjects)).unwrap();
    for k in signers {
        release::sign_file(&d.path().join(STATEMENT), k, Role::Release, None, None).unwrap();
    }
    provenance::assemble(d.path()).unwrap();
    let lp = load(&write(d.path(), "trust.toml", &policy_text(1, &[&key(1)], 1, &[], &[])));
    (d, lp)
}

#[test]
fn an_envelope_is_checked_subject_by_subject_against_the_files_beside_it() {
    let root_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"root bytes"));
    let (d, lp) = signed_dir(&[("root.img", &root_sha), ("disk.img", &"0".repeat(64))], &[&key(1)]);
    let env = d.path().join(ENVELOPE);
    let r = provenance::verify(&env, &lp).unwrap();
    assert!(r.accepted(), "{}", r.render_text());
    assert_eq!(r.policy, d.path().join("trust.toml").display().to_string(), "the policy is named by its path");
    let checks: Vec<(&str, &str)> = r.subjects.iter().map(|s| (s.name.as_str(), s.check.as_str())).collect();
    assert_eq!(checks, [("root.img", "ok"), ("disk.img", "not here (only the files present are checked)")]);
    let text = r.render_text();
    assert!(
        text.starts_with(&format!("{} (policy {})\n  signatures: release 1/1 met\n", env.display(), r.policy)),
        "{text}"
    );
    assert!(text.contains(&format!("  verified  {} (release `v0`)\n", key(1).id())), "{text}");
    assert!(text.contains("  subject root.img               ok\n"), "{text}");
    assert!(text.ends_with("\naccepted"), "{text}");

    // The file changed beside its envelope: named, with the digest it has now.
    fs::write(d.path().join("root.img"), b"other bytes").unwrap();
    let r = provenance::verify(&env, &lp).unwrap();
    assert!(!r.accepted());
    assert_eq!(r.subjects[0].check, format!("DIFFERS: the file's sha256 is {}", sha(&d.path().join("root.img"))));
    assert!(r.render_text().ends_with("\nREJECTED"));
}

#[test]
fn subjects_must_be_plain_names_and_a_statement_must_name_some() {
    for bad in ["../root.img", "sub/root.img", ".", "..", ""] {
        let (d, lp) = signed_dir(&[(bad, &"0".repeat(64))], &[&key(1)]);
        let r = provenance::verify(&d.path().join(ENVELOPE), &lp).unwrap();
        assert!(!r.accepted(), "{bad:?}");
        assert_eq!(r.subjects[0].check, "refused: a subject name must be a file name beside the envelope", "{bad:?}");
    }
    let (d, lp) = signed_dir(&[], &[&key(1)]);
    let r = provenance::verify(&d.path().join(ENVELOPE), &lp).unwrap();
    assert!(!r.accepted(), "a statement of nothing proves nothing");
}

#[test]
fn only_a_statement_whose_signatures_met_the_policy_is_read() {
    // Signed by a key the policy does not hold: not accepted, and its subjects not read.
    let (d, lp) = signed_dir(&[("root.img", "00")], &[&key(2)]);
    let r = provenance::verify(&d.path().join(ENVELOPE), &lp).unwrap();
    assert!(!r.accepted());
    assert!(r.subjects.is_empty());
    assert!(r.signers[0].starts_with("refused   signature 0"), "{:?}", r.signers);
    // Signed, but not an in-toto statement, or not JSON.
    for (body, want) in [
        (
            r#"{"_type":"https://in-toto.io/Statement/v0.1","subject":[]}"#,
            "the signed payload is not an in-toto Statement v1",
        ),
        ("not json", "the signed statement is not JSON"),
    ] {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(STATEMENT), body).unwrap();
        release::sign_file(&d.path().join(STATEMENT), &key(1), Role::Release, None, None).unwrap();
        provenance::assemble(d.path()).unwrap();
        let lp = load(&write(d.path(), "trust.toml", &policy_text(1, &[&key(1)], 1, &[], &[])));
        let e = provenance::verify(&d.path().join(ENVELOPE), &lp).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        assert_eq!(e.exit_code(), 1);
    }
}

#[test]
fn an_envelope_is_bounded_typed_and_holds_at_most_16_signatures() {
    let root_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"root bytes"));
    let (d, lp) = signed_dir(&[("root.img", &root_sha)], &[&key(1)]);
    let env = d.path().join(ENVELOPE);
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&env).unwrap()).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut w = v.clone();
        f(&mut w);
        fs::write(&env, serde_json::to_string(&w).unwrap()).unwrap();
        provenance::verify(&env, &lp)
    };
    let e = with(&|w| w["payloadType"] = "text/plain".into()).unwrap_err();
    assert!(e.to_string().contains("payload type `text/plain` is not an in-toto statement"), "{e}");
    let sig = v["signatures"][0].clone();
    let e = with(&|w| w["signatures"] = serde_json::Value::Array(vec![sig.clone(); 17])).unwrap_err();
    assert!(e.to_string().contains("17 signatures, at most 16"), "{e}");
    // 16 copies of one signature: read, and the key counts once.
    let r = with(&|w| w["signatures"] = serde_json::Value::Array(vec![sig.clone(); 16])).unwrap();
    assert!(r.accepted(), "{}", r.render_text());
    // Larger than twice the largest statement: refused before it is parsed.
    fs::write(&env, vec![b' '; 2 * trust::dsse::MAX_PAYLOAD + 1]).unwrap();
    assert!(provenance::verify(&env, &lp).unwrap_err().to_string().contains("larger than"));
}

#[test]
fn a_statement_of_3_mib_is_signed_assembled_and_verified() {
    // Its envelope (base64) is over 4 MiB: the envelope's bound is twice the statement's.
    let d = tempfile::tempdir().unwrap();
    let mut st: serde_json::Value = serde_json::from_str(&statement(&[])).unwrap();
    st["predicate"]["padding"] = "x".repeat(3 << 20).into();
    fs::write(d.path().join("root.img"), b"r").unwrap();
    st["subject"] = serde_json::json!([{"name": "root.img", "digest": {"sha256": sha(&d.path().join("root.img"))}}]);
    fs::write(d.path().join(STATEMENT), st.to_string()).unwrap();
    release::sign_file(&d.path().join(STATEMENT), &key(1), Role::Release, None, None).unwrap();
    let env = provenance::assemble(d.path()).unwrap();
    assert!(fs::metadata(&env).unwrap().len() > 4 << 20);
    let lp = load(&write(d.path(), "trust.toml", &policy_text(1, &[&key(1)], 1, &[], &[])));
    assert!(provenance::verify(&env, &lp).unwrap().accepted());
    // A statement over the bound is not signed.
    fs::write(d.path().join(STATEMENT), vec![b' '; trust::dsse::MAX_PAYLOAD + 1]).unwrap();
    let e = release::sign_file(&d.path().join(STATEMENT), &key(1), Role::Release, None, None).unwrap_err();
    assert!(e.to_string().contains("larger than 4194304 bytes: not a provenance statement"), "{e}");
}

#[test]
fn a_statements_signatures_are_exactly_its_key_id_named_dsse_files() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join(STATEMENT);
    fs::write(&st, statement(&[])).unwrap();
    // None yet: nothing assembled, nothing written.
    assert!(provenance::assemble_if_signed(d.path()).unwrap().is_empty());
    assert!(!d.path().join(ENVELOPE).exists());
    let sig = release::sign_file(&st, &key(1), Role::Release, None, None).unwrap();
    assert_eq!(sig, d.path().join(format!("provenance.json.{}.dsse", key(1).id())));
    let s: trust::dsse::Signature = serde_json::from_str(&fs::read_to_string(&sig).unwrap()).unwrap();
    assert_eq!(s.keyid, key(1).id().to_string());
    // Files that look alike but are not its signatures.
    for other in [
        "provenance.json.xyz.dsse".to_string(),
        "provenance.json.0123456789ABCDEF0.dsse".into(),
        format!("provenance.json.{}.dsse.bak", key(2).id()),
        format!("other.json.{}.dsse", key(2).id()),
        format!("provenance.json.{}.minisig", key(2).id()),
    ] {
        fs::write(d.path().join(other), "{}").unwrap();
    }
    assert_eq!(provenance::assemble_if_signed(d.path()).unwrap(), std::slice::from_ref(&sig));
    let env: serde_json::Value = serde_json::from_str(&fs::read_to_string(d.path().join(ENVELOPE)).unwrap()).unwrap();
    assert_eq!(env["signatures"].as_array().unwrap().len(), 1);
    let back = trust::dsse::Envelope::new(trust::dsse::IN_TOTO, statement(&[]).as_bytes(), vec![s]);
    assert_eq!(env["payload"], back.payload, "the statement's own bytes, base64");
}

#[test]
fn reads_are_bounded_at_their_bound_and_only_regular_files_are_opened() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "f", "12345");
    assert_eq!(read_bounded(&f, 5).unwrap().as_deref(), Some(&b"12345"[..]));
    assert_eq!(read_bounded(&f, 4).unwrap(), None);
    assert_eq!(read_bounded(&f, 6).unwrap().as_deref(), Some(&b"12345"[..]));
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&f, &link).unwrap();
    assert_eq!(
        open_regular(&link).unwrap_err().to_string(),
        format!("{}: a symlink; only regular files are read", link.display())
    );
    assert_eq!(open_regular(d.path()).unwrap_err().to_string(), format!("{}: not a regular file", d.path().display()));
    let missing = d.path().join("missing");
    assert_eq!(open_regular(&missing).unwrap_err().exit_code(), 2);
    assert!(release::files::sync_dir(&missing).is_err(), "syncing a directory that is not there");
    // A FIFO is refused without blocking on it (no writer ever comes).
    let fifo = d.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    assert_eq!(open_regular(&fifo).unwrap_err().to_string(), format!("{}: not a regular file", fifo.display()));
}

#[test]
fn an_atomic_write_makes_its_temp_file_beside_the_target() {
    // On a file system other than the working directory's (tmpfs), a temp file made anywhere
    // else could not be renamed into place.
    let shm = Path::new("/dev/shm");
    let d = if shm.is_dir() { tempfile::tempdir_in(shm).unwrap() } else { tempfile::tempdir().unwrap() };
    let p = d.path().join("out.toml");
    write_atomic(&p, b"one").unwrap();
    write_atomic(&p, b"two").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"two");
    let names: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["out.toml"], "a temp file was left behind");
}

#[test]
fn a_file_says_what_it_is_only_with_every_field_that_kind_needs() {
    use release::fields::parse;
    let k = |t: &str| parse(t).map(|f| f.kind);
    assert_eq!(k("payload = []\nproduct = \"p\"\n"), Some(release::Kind::BundleManifest));
    assert_eq!(k("product = \"p\"\n"), None, "a product alone is no bundle manifest");
    assert_eq!(k("payload = []\n"), None);
    assert_eq!(k("site = \"s\"\nproduct = \"p\"\nserial = 3\n"), Some(release::Kind::SiteProfile));
    assert_eq!(k("site = \"s\"\nproduct = \"p\"\nserial = \"3\"\n"), None);
    assert_eq!(k("site = \"s\"\nserial = 3\n"), None);
    assert_eq!(k("product = \"p\"\nserial = 3\n"), None);
    assert_eq!(k("release = {}\nversion = 2\n"), Some(release::Kind::TrustPolicy));
    assert_eq!(k("release = {}\nversion = \"2\"\n"), None);
    assert_eq!(k("version = 2\n"), None);
    let f = parse("site = \"s\"\nproduct = \"p\"\nserial = 3\n").unwrap();
    assert_eq!((f.product.as_deref(), f.version.as_deref()), (Some("p"), Some("serial-3")));
}

#[test]
fn a_stale_unsigned_bundle_manifest_is_replaced_without_force() {
    let d = super::build_dir("release");
    let policy = trust::Policy::parse(&policy_text(1, &[&key(1)], 1, &[], &[])).unwrap();
    fs::write(d.path().join(release::BUNDLE_MANIFEST), "stale, never signed\n").unwrap();
    let r = release::assemble(d.path(), None, &policy, &[], false).unwrap();
    assert!(matches!(r, release::Assembled::Waiting { .. }), "{r:?}");
    assert!(fs::read_to_string(d.path().join(release::BUNDLE_MANIFEST)).unwrap().starts_with("format = 4\n"));
}

#[test]
fn a_provenance_statement_of_the_release_channel_is_never_signed_with_the_dev_key() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join(STATEMENT);
    let release_st = statement(&[]).replace("\"channel\":\"dev\"", "\"channel\":\"release\"");
    assert!(release_st.contains("\"channel\":\"release\""), "{release_st}");
    fs::write(&st, &release_st).unwrap();
    let e = release::sign_file(&st, &super::dev_key(), Role::Release, None, None).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("a release provenance statement is never signed with the INSECURE dev key"), "{e}");
    // A vendor key signs it; the dev key signs a dev statement.
    release::sign_file(&st, &key(1), Role::Release, None, None).unwrap();
    fs::write(&st, statement(&[])).unwrap();
    release::sign_file(&st, &super::dev_key(), Role::Release, None, None).unwrap();
}

#[test]
fn a_site_profile_is_signed_only_in_the_approval_role_and_comments_stay_one_token_each() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "site-profile.toml", "format = 1\nproduct = \"p\"\nsite = \"s\"\nserial = 3\n");
    let e = release::sign_file(&p, &key(1), Role::Release, None, None).unwrap_err();
    assert!(e.to_string().contains("a site profile is the asset owner's: sign it with `--role approval`"), "{e}");
    let sig = release::sign_file(&p, &key(1), Role::Approval, None, None).unwrap();
    assert!(
        fs::read_to_string(sig).unwrap().contains("product=p version=serial-3 role=approval file=site-profile.toml")
    );
    let m = write(d.path(), "m.toml", super::BUILD);
    for (product, version) in [(Some("a b"), None), (None, Some("1 0")), (Some("a=b"), None), (Some(""), None)] {
        let e = release::sign_file(&m, &key(1), Role::Release, product, version).unwrap_err();
        assert!(
            e.to_string().contains("must be printable ASCII without spaces or `=`"),
            "{product:?} {version:?}: {e}"
        );
    }
}

#[test]
fn a_report_shows_20_signers_and_counts_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let m = write(d.path(), "build-manifest.toml", super::BUILD);
    let lp = load(&write(d.path(), "trust.toml", &policy_text(1, &[&key(1)], 1, &[], &[])));
    for n in 1..=20u8 {
        release::sign_file(&m, &key(n), Role::Release, None, None).unwrap();
    }
    let text = release::verify_file(&m, &lp).unwrap().render_text();
    assert!(!text.contains("more signature files"), "{text}");
    release::sign_file(&m, &key(21), Role::Release, None, None).unwrap();
    let text = release::verify_file(&m, &lp).unwrap().render_text();
    assert!(text.contains("  …and 1 more signature files\n"), "{text}");
}

#[test]
fn a_history_that_goes_past_the_policy_in_use_names_how_far_it_looked() {
    // The scan looks at most 64 versions past the one in use.
    let d = tempfile::tempdir().unwrap();
    let text = policy_text(1, &[&key(1)], 1, &[], &[]);
    let current = write(d.path(), "trust.toml", &text);
    let h = d.path().join("history");
    fs::create_dir(&h).unwrap();
    fs::write(h.join("trust-v1.toml"), &text).unwrap();
    for v in 2..=70 {
        fs::write(h.join(format!("trust-v{v}.toml")), "version = 0\n").unwrap();
    }
    let lp = load(&current);
    let release::Chain::Broken(why) = lp.chain else { panic!("{:?}", lp.chain) };
    assert!(why.ends_with("goes to version 65, the policy in use is version 1: it went back"), "{why}");
}

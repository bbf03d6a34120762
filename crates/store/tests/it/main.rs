//! The input store: tampered objects are refused on insert, use and import; nothing is
//! half-imported; missing inputs are named.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use recipe::LockedPackage;
use sha2::{Digest, Sha256};
use store::{Error, Store, Wanted};

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("store")).unwrap();
    (d, s)
}

fn put(s: &Store, dir: &Path, name: &str, bytes: &[u8]) -> Wanted {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    let digest = s.insert(&p, name, Some(&sha(bytes))).unwrap();
    Wanted { what: name.into(), sha256: digest }
}

#[test]
fn an_insert_with_the_wrong_digest_is_refused_and_leaves_nothing() {
    let (d, s) = store();
    let p = d.path().join("pkg.deb");
    fs::write(&p, b"real bytes").unwrap();
    let want = sha(b"other bytes");
    let e = s.insert(&p, "pkg=1.0 (amd64)", Some(&want)).unwrap_err();
    assert!(matches!(&e, Error::Tampered { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: pkg=1.0 (amd64) is tampered with or corrupt: expected sha256 {want}, found {}; delete it and run `cargo xtask fetch` (or import a good copy)",
            p.display(),
            sha(b"real bytes")
        )
    );
    assert!(s.objects().unwrap().is_empty());
    assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0, "no temp file left");
}

#[test]
fn a_tampered_object_is_refused_when_used() {
    let (d, s) = store();
    let w = put(&s, d.path(), "a.deb", b"aaaa");
    let obj = s.root().join("sha256").join(&w.sha256);
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&obj, b"evil").unwrap();
    let e = s.verify_all(std::slice::from_ref(&w)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: a.deb is tampered with or corrupt: expected sha256 {}, found {}; delete it and run `cargo xtask fetch` (or import a good copy)",
            obj.display(),
            w.sha256,
            sha(b"evil")
        )
    );
}

#[test]
fn missing_inputs_are_all_named() {
    let (d, s) = store();
    let have = put(&s, d.path(), "have.deb", b"x");
    let gone1 = Wanted { what: "chrony=4.3-2 (amd64)".into(), sha256: "1".repeat(64) };
    let gone2 = Wanted { what: "udev=252 (amd64)".into(), sha256: "2".repeat(64) };
    let e = s.verify_all(&[have, gone1, gone2]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "2 input(s) missing from the store {} and --offline forbids fetching:\n  chrony=4.3-2 (amd64)\n  udev=252 (amd64)\nrun `cargo xtask fetch` on a connected machine, or `cargo xtask store import DIR` from a stick",
            s.root().display()
        )
    );
}

#[test]
fn export_then_import_carries_every_object() {
    let (d, s) = store();
    let a = put(&s, d.path(), "a", b"alpha");
    let b = put(&s, d.path(), "b", b"beta");
    let stick = d.path().join("stick");
    assert_eq!(s.export(&stick).unwrap(), (2, 9));
    let other = Store::open(&d.path().join("other")).unwrap();
    assert_eq!(other.import(&stick).unwrap(), (2, 9));
    other.verify_all(&[a, b]).unwrap();
}

#[test]
fn a_tampered_export_is_refused_whole_and_nothing_is_imported() {
    let (d, s) = store();
    let a = put(&s, d.path(), "a", b"alpha");
    put(&s, d.path(), "b", b"beta");
    let stick = d.path().join("stick");
    s.export(&stick).unwrap();
    let victim = stick.join("sha256").join(&a.sha256);
    fs::write(&victim, b"alphA").unwrap();
    let other = Store::open(&d.path().join("other")).unwrap();
    let e = other.import(&stick).unwrap_err();
    assert!(matches!(e, Error::Tampered { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("{}: exported object is tampered with or corrupt", victim.display())));
    assert!(other.objects().unwrap().is_empty(), "nothing half-imported");
}

#[test]
fn an_export_with_a_stray_file_or_no_index_is_refused() {
    let (d, s) = store();
    put(&s, d.path(), "a", b"alpha");
    let stick = d.path().join("stick");
    s.export(&stick).unwrap();
    fs::write(stick.join("sha256").join("evil.sh"), b"#!/bin/sh").unwrap();
    let other = Store::open(&d.path().join("other")).unwrap();
    let e = other.import(&stick).unwrap_err().to_string();
    assert!(e.ends_with("evil.sh: not a store export: not a store object (a regular file named by its sha256)"), "{e}");
    fs::remove_file(stick.join("INDEX")).unwrap();
    let e = other.import(&stick).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{}: not a store export: no INDEX file (make it with `cargo xtask store export DIR`)", stick.display())
    );
}

#[test]
fn a_symlink_is_never_followed_into_the_store() {
    let (d, s) = store();
    let link = d.path().join("link.deb");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    let e = s.insert(&link, "link", None).unwrap_err().to_string();
    assert!(e.ends_with("not a regular file (symlinks are not followed)"), "{e}");
}

#[test]
fn a_version_the_registry_no_longer_serves_points_to_lock_update() {
    let (_d, s) = store();
    let gone = LockedPackage {
        name: "busybox".into(),
        version: "0.0-airlock-never-served".into(),
        architecture: "amd64".into(),
        sha256: "3".repeat(64),
        size: 1,
        priority: "optional".into(),
        section: "utils".into(),
    };
    let e = store::fetch_debs(&s, &[&gone]).unwrap_err();
    assert!(matches!(e, Error::NotServed(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "the configured apt sources no longer serve busybox=0.0-airlock-never-served: the lock pins versions the registry has moved on from; run `cargo xtask lock --update` to pin what it serves now (or import a store export that holds them)"
    );
}

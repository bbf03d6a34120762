//! The release flow as README describes it, run from a copy of the checkout (so the
//! repository's own keys are never touched, and to prove that a copied checkout acts on
//! itself): two vendor keys and one approval key, `recipes/release.toml`, build, both signing
//! rounds on a separate "offline" directory (one signer with stock minisign), bundle, verify
//! by Airlock and by stock minisign, tar and zstd; rotation to version 2 revoking a key; a
//! dev build of the same version beside it; a published version never replaced.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::keys::{key_line, keygen};
use crate::{repo, run};

/// Copies the tracked files of the checkout (and the lock files cargo needs) into `dest`.
pub fn copy_checkout(dest: &Path) {
    let out = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success());
    for f in String::from_utf8_lossy(&out.stdout).split('\0').filter(|f| !f.is_empty()) {
        let from = repo().join(f);
        let Ok(meta) = fs::symlink_metadata(&from) else { continue };
        let to = dest.join(f);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else {
            fs::copy(&from, &to).unwrap();
        }
    }
}

/// The xtask binary, run in `dir`.
pub fn xtask_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(dir);
    c
}

/// The stack's cargo target directory the other tests' builds use: the copied checkout's
/// crates are compiled again (another path), their crates.io dependencies are not.
fn shared_stack_target() -> [std::ffi::OsString; 2] {
    ["--stack-target-dir".into(), repo().join("target/airlock-stack").into()]
}

fn key_id(pubkey: &Path) -> String {
    trust::PublicKey::parse(&fs::read_to_string(pubkey).unwrap()).unwrap().id().to_string()
}

fn sign(co: &Path, file: &Path, key: &Path, pass: &Path, approval: bool) {
    let mut c = xtask_in(co);
    c.arg("sign").arg(file).arg("--key").arg(key).arg("--passphrase-file").arg(pass);
    if approval {
        c.args(["--role", "approval"]);
    }
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
#[ignore = "system: needs root, mmdebstrap, minisign and the store filled by `cargo xtask fetch`; run by `cargo xtask test`"]
fn the_whole_release_flow_from_the_readme() {
    crate::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let co = tmp.path().join("checkout");
    copy_checkout(&co);
    let offline = tmp.path().join("offline-signing-machine");
    fs::create_dir_all(&offline).unwrap();
    let images = tmp.path().join("images");

    // Keys: three vendor signers and the asset owner, each with a passphrase.
    let mut keys = Vec::new();
    for name in ["vendor-1", "vendor-2", "vendor-3", "site-owner"] {
        let (sk, pk) = keygen(&offline, name, Some(&format!("{name} passphrase")));
        // The public key goes into the checkout's keys/ as `keygen` would put it there.
        fs::copy(&pk, co.join("keys").join(format!("{name}.pub"))).unwrap();
        keys.push((sk, pk, offline.join(format!("{name}.pass"))));
    }
    let entry = |i: usize, name: &str| format!("{{ name = \"{name}\", key = \"{}\" }}", key_line(&keys[i].1));
    let v1 = format!(
        "version = 1\nchannel = \"release\"\nrevoked = []\n\n[release]\nthreshold = 2\nkeys = [{}, {}, {}]\n\n[approval]\nthreshold = 1\nkeys = [{}]\n",
        entry(0, "vendor-1"),
        entry(1, "vendor-2"),
        entry(2, "vendor-3"),
        entry(3, "site-owner")
    );
    fs::write(co.join("keys/trust.toml"), &v1).unwrap();

    // Build: outputs complete, waiting for both rounds of signatures (exit 1, with what to do).
    let build = |extra: &[&str]| {
        run(xtask_in(&co)
            .args(["build", "recipes/release.toml", "--offline", "--out"])
            .arg(&images)
            .args(shared_stack_target())
            .args(extra))
    };
    let (code, out, err) = build(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("build-manifest.toml: release 0/2 not met; approval 0/1 not met"), "{out}");
    assert!(
        out.contains(
            "the asset owner signs with `cargo xtask sign bundle-manifest.toml --key OWNER.key --role approval`"
        ),
        "{out}"
    );
    let dir = images.join("parking-controller/release/1.0.0");
    assert!(dir.join("root.img").is_file() && dir.join("bundle-manifest.toml").is_file());
    assert!(!dir.join("parking-controller-1.0.0.airlock").exists(), "an unsigned release bundle was written");
    // The same state gives the same exit code from `bundle`.
    let (code, out, _) = run(xtask_in(&co).args(["bundle", "recipes/release.toml", "--out"]).arg(&images));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bundle-manifest.toml: release 0/2 not met; approval 0/1 not met"), "{out}");

    // Both rounds on the offline machine: vendor-1 with Airlock, vendor-2 with stock minisign
    // (the README's line), the owner with --role approval.
    let bring_back = |name: &str| {
        for e in fs::read_dir(&offline).unwrap() {
            let p = e.unwrap().path();
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            if n.starts_with(&format!("{name}.")) && (n.ends_with(".minisig") || n.ends_with(".dsse")) {
                fs::copy(&p, dir.join(&n)).unwrap();
            }
        }
    };
    for name in ["build-manifest.toml", "bundle-manifest.toml"] {
        let there = offline.join(name);
        fs::copy(dir.join(name), &there).unwrap();
        sign(&co, &there, &keys[0].0, &keys[0].2, false);
        let comment =
            format!("airlock product=airlock.parking-controller.x86_64 version=1.0.0 role=release file={name}");
        let sig = offline.join(format!("{name}.{}.minisig", key_id(&keys[1].1)));
        let mut m = Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&keys[1].0)
            .arg("-m")
            .arg(&there)
            .arg("-x")
            .arg(&sig)
            .args(["-t", &comment])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        m.stdin.take().unwrap().write_all(b"vendor-2 passphrase\n").unwrap();
        assert!(m.wait().unwrap().success());
        sign(&co, &there, &keys[3].0, &keys[3].2, true);
        bring_back(name);
    }
    // Both manifests signed, the provenance statement not yet: the bundle, which carries the
    // statement, waits for its DSSE signatures.
    let (code, out, _) = run(xtask_in(&co).args(["bundle", "recipes/release.toml", "--out"]).arg(&images));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bundle-manifest.toml: release 2/2 met; approval 1/1 met"), "{out}");
    assert!(out.contains("provenance.json: release 0/2 not met; approval 0/1 not met"), "{out}");
    assert!(!dir.join("parking-controller-1.0.0.airlock").exists());
    // The statement's DSSE signatures (not a minisign format: every party uses Airlock here).
    let there = offline.join("provenance.json");
    fs::copy(dir.join("provenance.json"), &there).unwrap();
    for (k, approval) in [(0, false), (1, false), (3, true)] {
        sign(&co, &there, &keys[k].0, &keys[k].2, approval);
    }
    bring_back("provenance.json");
    let (code, out, err) = run(xtask_in(&co).args(["bundle", "recipes/release.toml", "--out"]).arg(&images));
    assert_eq!(code, 0, "{out}{err}");
    let bundle = dir.join("parking-controller-1.0.0.airlock");
    assert!(bundle.is_file(), "{out}");
    // Building again changes nothing and keeps every signature.
    let sigs_before = fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".minisig"))
        .count();
    let (code, out, err) = build(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let sigs_after = fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".minisig"))
        .count();
    assert_eq!((sigs_before, sigs_after), (6, 6));
    let dsse = fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".dsse"))
        .count();
    assert_eq!(dsse, 3);

    // Verify with Airlock: the manifest and the whole bundle.
    for f in [dir.join("build-manifest.toml"), bundle.clone()] {
        let (code, out, err) = run(xtask_in(&co).arg("--json").arg("verify").arg(&f));
        assert_eq!(code, 0, "{}: {out}{err}", f.display());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!((v["accepted"].as_bool(), v["insecure_dev_key"].as_bool()), (Some(true), Some(false)));
    }
    // And with nothing but tar, minisign, zstd and sha256sum.
    let x = tmp.path().join("extracted");
    fs::create_dir(&x).unwrap();
    assert!(Command::new("tar").arg("-xf").arg(&bundle).arg("-C").arg(&x).status().unwrap().success());
    for i in [0, 1] {
        let sig = x.join(format!("manifest.toml.{}.minisig", key_id(&keys[i].1)));
        let (code, out, err) = run(Command::new("minisign")
            .arg("-Vm")
            .arg(x.join("manifest.toml"))
            .arg("-x")
            .arg(&sig)
            .arg("-p")
            .arg(&keys[i].1));
        assert_eq!(code, 0, "{out}{err}");
    }
    assert!(
        Command::new("zstd")
            .args(["-q", "-d"])
            .arg(x.join("root.img.zst"))
            .arg("-o")
            .arg(x.join("root.img"))
            .status()
            .unwrap()
            .success()
    );
    let sum = Command::new("sha256sum").arg(x.join("root.img")).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout).split_whitespace().next().unwrap().to_string();
    assert!(fs::read_to_string(x.join("manifest.toml")).unwrap().contains(&format!("sha256 = \"{sum}\"")));
    // The bundle carries the provenance statement (the build's, byte for byte) and the three
    // DSSE signatures that met the policy.
    assert!(Command::new("zstd").args(["-q", "-d"]).arg(x.join("provenance.json.zst")).status().unwrap().success());
    assert_eq!(fs::read(x.join("provenance.json")).unwrap(), fs::read(dir.join("provenance.json")).unwrap());
    for k in [0, 1, 3] {
        assert!(x.join(format!("provenance.json.{}.dsse", key_id(&keys[k].1))).is_file());
    }

    // Rotation to version 2, revoking vendor-3, signed by vendor-1 and vendor-2.
    let v2 = v1
        .replace("version = 1", "version = 2")
        .replace("revoked = []", &format!("revoked = [\"{}\"]", key_id(&keys[2].1)))
        .replace(&format!(", {}]", entry(2, "vendor-3")), "]");
    let v2_path = offline.join("trust-v2.toml");
    fs::write(&v2_path, &v2).unwrap();
    sign(&co, &v2_path, &keys[0].0, &keys[0].2, false);
    sign(&co, &v2_path, &keys[1].0, &keys[1].2, false);
    let (code, out, err) = run(xtask_in(&co).arg("rotate").arg(&v2_path));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fs::read_to_string(co.join("keys/trust.toml")).unwrap(), v2);
    let (code, out, _) = run(xtask_in(&co).arg("verify").arg(dir.join("build-manifest.toml")));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("version 2") && out.contains("policy: unbroken chain from version 1 to 2"), "{out}");

    // A dev build of the same version lives beside it.
    let (code, out, err) =
        run(xtask_in(&co).args(["build", "--offline", "--out"]).arg(&images).args(shared_stack_target()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(images.join("parking-controller/1.0.0/parking-controller-1.0.0.airlock").is_file());
    assert!(bundle.is_file());

    // Other inputs under the same version: refused, everything published kept.
    let chrony = co.join("overlays/base/etc/chrony/chrony.conf");
    fs::write(&chrony, fs::read_to_string(&chrony).unwrap() + "# a change\n").unwrap();
    let (code, _, err) = build(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("version 1.0.0 already exists with another build key"), "{err}");
    assert!(err.contains("Bump image.version"), "{err}");
    let names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(bundle.is_file(), "the bundle was kept");
    assert_eq!(names.iter().filter(|n| n.ends_with(".minisig")).count(), 6, "the 6 signatures were kept: {names:?}");
    let manifest = fs::read_to_string(dir.join("build-manifest.toml")).unwrap();
    for n in manifest.lines().filter_map(|l| l.strip_prefix("[outputs.\"").and_then(|r| r.strip_suffix("\"]"))) {
        assert!(names.iter().any(|x| x == n), "output {n} was kept: {names:?}");
    }
    // --force says what it deletes.
    let (code, _, err) = build(&["--force"]);
    assert_eq!(code, 1, "the forced rebuild waits for signatures again: {err}");
    assert!(err.contains("--force: deleting") && err.contains("6 signature(s)"), "{err}");
    assert!(!bundle.exists());
}

#[test]
#[ignore = "system: needs root for `unshare -n`; run by `cargo xtask test`"]
fn offline_never_installs_a_missing_tool_and_names_only_the_recipes() {
    crate::require_root();
    let tmp = tempfile::tempdir().unwrap();
    // A PATH without mksquashfs and mkfs.erofs: every other tool of /usr/bin stays.
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    for e in fs::read_dir("/usr/bin").unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        if n != "mksquashfs" && n != "mkfs.erofs" {
            let _ = std::os::unix::fs::symlink(&p, bin.join(&n));
        }
    }
    let path = bin.display().to_string();
    let o = Command::new("unshare")
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["build", "--offline", "--out"])
        .arg(tmp.path().join("images"))
        .env("PATH", &path)
        .current_dir(repo())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`mksquashfs` is missing"), "{err}");
    assert!(err.contains("--offline installs nothing: run `apt-get install -y squashfs-tools` as root"), "{err}");
    assert!(!err.contains("mkfs.erofs"), "a squashfs recipe asked for erofs: {err}");
    assert!(!err.contains("apt-get update") && !err.contains("installing"), "it tried to install: {err}");
    assert!(!tmp.path().join("images").exists(), "nothing is built");
}

#[test]
#[ignore = "system: needs the host's apt lists (`apt-get update`); run by `cargo xtask test`"]
fn a_misspelt_package_is_named_with_a_suggestion_before_resolving() {
    let tmp = tempfile::tempdir().unwrap();
    let co = tmp.path().join("checkout");
    copy_checkout(&co);
    let recipe = co.join("recipes/typo.toml");
    let text =
        fs::read_to_string(co.join("recipes/parking-controller.toml")).unwrap().replace("\"nftables\"", "\"nftabels\"");
    fs::write(&recipe, &text).unwrap();
    let line = text.lines().position(|l| l.contains("nftabels")).unwrap() + 1;
    let t = std::time::Instant::now();
    let (code, _, err) =
        run(xtask_in(&co).args(["lock", "recipes/typo.toml", "--lock"]).arg(tmp.path().join("typo.lock")));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "recipes/typo.toml:{line}:6: package `nftabels` not found in bookworm/amd64 (did you mean `nftables`?)"
        )),
        "{err}"
    );
    assert!(t.elapsed().as_secs() < 30, "the name check must come before a minute of resolving");
}

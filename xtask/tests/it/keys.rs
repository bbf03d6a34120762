//! keygen, sign, verify and rotate as a user runs them: roles and thresholds, the verifier's
//! own choice of policy, the dev key by its bytes, streamed verification, passphrases on a
//! terminal, rotation history, and interoperability with Debian's minisign.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{repo, run, xtask};

/// keygen into `dir` (secret and public both there); returns (secret, public) paths.
pub fn keygen(dir: &Path, name: &str, pass: Option<&str>) -> (PathBuf, PathBuf) {
    let mut c = xtask();
    c.args(["keygen", name, "--secret-dir"]).arg(dir).arg("--public-dir").arg(dir);
    match pass {
        Some(p) => {
            let f = dir.join(format!("{name}.pass"));
            fs::write(&f, p).unwrap();
            c.arg("--passphrase-file").arg(f);
        }
        None => {
            c.arg("--no-passphrase");
        }
    }
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 0, "{out}{err}");
    let sk = dir.join(format!("{name}.key"));
    assert_eq!(fs::metadata(&sk).unwrap().permissions().mode() & 0o777, 0o600);
    (sk, dir.join(format!("{name}.pub")))
}

pub fn key_line(p: &Path) -> String {
    fs::read_to_string(p).unwrap().lines().nth(1).unwrap().to_string()
}

/// A release policy with a `release` role (and an `approval` role when `approvers` is not
/// empty), written to `dir/trust.toml`.
pub fn policy_for(dir: &Path, vendors: &[&Path], threshold: usize, approvers: &[&Path]) -> PathBuf {
    let entries = |pubs: &[&Path], prefix: &str| -> String {
        pubs.iter()
            .enumerate()
            .map(|(i, p)| format!("{{ name = \"{prefix}{i}\", key = \"{}\" }}", key_line(p)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "version = 1\nchannel = \"release\"\n[release]\nthreshold = {threshold}\nkeys = [{}]\n",
        entries(vendors, "vendor-")
    );
    if !approvers.is_empty() {
        text.push_str(&format!("[approval]\nthreshold = 1\nkeys = [{}]\n", entries(approvers, "owner-")));
    }
    let p = dir.join("trust.toml");
    fs::write(&p, text).unwrap();
    p
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not one JSON document ({e}): {out}"))
}

#[test]
fn a_secret_key_readable_by_others_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (sk, _) = keygen(d.path(), "loose", None);
    fs::set_permissions(&sk, fs::Permissions::from_mode(0o644)).unwrap();
    let file = d.path().join("f");
    fs::write(&file, b"x").unwrap();
    let (code, _, err) = run(xtask().arg("sign").arg(&file).arg("--key").arg(&sk));
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{}: secret key is readable by group or others (mode 0644): refused; run `chmod 600",
            sk.display()
        )),
        "{err}"
    );
    assert!(fs::read_dir(d.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".minisig")));
}

#[test]
fn two_of_two_vendors_and_the_owner_sign_then_verify_with_exit_codes_and_json() {
    let d = tempfile::tempdir().unwrap();
    let (sk1, pk1) = keygen(d.path(), "vendor-1", None);
    let (sk2, pk2) = keygen(d.path(), "vendor-2", None);
    let (sko, pko) = keygen(d.path(), "owner", None);
    let policy = policy_for(d.path(), &[&pk1, &pk2], 2, &[&pko]);
    let file = d.path().join("release.bin");
    fs::write(&file, b"the release").unwrap();
    let verify = || run(xtask().arg("--json").arg("verify").arg(&file).arg("--trust").arg(&policy));

    assert_eq!(run(xtask().arg("sign").arg(&file).arg("--key").arg(&sk1)).0, 0);
    let (code, out, _) = verify();
    assert_eq!(code, 1, "one of two is not enough: {out}");
    let v = json(&out);
    assert_eq!(v["accepted"], false);
    assert_eq!((v["roles"][0]["role"].as_str(), v["roles"][0]["valid"].as_u64()), (Some("release"), Some(1)));

    assert_eq!(run(xtask().arg("sign").arg(&file).arg("--key").arg(&sk2)).0, 0);
    let (code, out, _) = verify();
    assert_eq!(code, 1, "the owner has not approved: {out}");
    assert!(json(&out)["hints"][0].as_str().unwrap().contains("--role approval"), "{out}");

    // The owner signing as a vendor does not count; as the approver it does.
    assert_eq!(run(xtask().arg("sign").arg(&file).arg("--key").arg(&sko)).0, 0);
    let (code, out, _) = verify();
    assert_eq!(code, 1, "{out}");
    assert_eq!(run(xtask().args(["sign", "--role", "approval"]).arg(&file).arg("--key").arg(&sko)).0, 0);
    let (code, out, _) = verify();
    assert_eq!(code, 0, "{out}");
    let v = json(&out);
    assert_eq!(v["accepted"], true);
    assert_eq!(v["insecure_dev_key"], false);
    let roles: Vec<(String, u64)> = v["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["role"].as_str().unwrap().into(), r["valid"].as_u64().unwrap()))
        .collect();
    assert_eq!(roles, [("release".into(), 2), ("approval".into(), 1)]);

    fs::write(&file, b"the releasE").unwrap();
    let (code, out, _) = run(xtask().arg("verify").arg(&file).arg("--trust").arg(&policy));
    assert_eq!(code, 1);
    assert!(out.contains("does not match the file"), "{out}");
    assert!(out.trim_end().ends_with("rejected"), "{out}");

    let (code, out, err) =
        run(xtask().args(["--json", "verify"]).arg(d.path().join("absent")).arg("--trust").arg(&policy));
    assert_eq!(code, 2, "{err}");
    let v = json(&out);
    assert_eq!((v["ok"].as_bool(), v["exit_code"].as_u64()), (Some(false), Some(2)), "a JSON error object");
}

/// A file that claims `channel = "dev"` and is signed with the public dev key.
fn dev_claiming_manifest(dir: &Path) -> PathBuf {
    let m = dir.join("build-manifest.toml");
    fs::write(&m, "[image]\nproduct = \"airlock.parking-controller.x86_64\"\nversion = \"9.9.9\"\nchannel = \"dev\"\n")
        .unwrap();
    for (key, role) in [("keys/dev/dev.key", "release"), ("keys/dev/dev-approval.key", "approval")] {
        let (code, _, err) = run(xtask().arg("sign").arg(&m).arg("--key").arg(repo().join(key)).args(["--role", role]));
        assert_eq!(code, 0, "{err}");
    }
    m
}

#[test]
fn the_file_never_chooses_its_own_trust_root() {
    let d = tempfile::tempdir().unwrap();
    let m = dev_claiming_manifest(d.path());
    // Default: keys/trust.toml, whatever the file says about itself.
    let (code, out, _) = run(xtask().arg("verify").arg(&m));
    assert_eq!(code, 1, "a file claiming to be a dev build got the dev policy: {out}");
    assert!(out.contains("the INSECURE dev key is never trusted by a release policy"), "{out}");
    assert!(out.contains(&format!("policy {}", repo().join("keys/trust.toml").display())), "{out}");
    // Only when the verifier asks for it, and then it says so.
    let (code, out, _) = run(xtask().args(["verify", "--dev"]).arg(&m));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("INSECURE DEV KEY"), "{out}");
    let (code, out, _) = run(xtask().args(["--json", "verify", "--dev"]).arg(&m));
    assert_eq!(code, 0);
    assert_eq!(json(&out)["insecure_dev_key"], true);
}

#[test]
fn the_dev_key_is_known_by_its_bytes_and_never_signs_a_release_manifest() {
    let d = tempfile::tempdir().unwrap();
    // Loaded as it is checked out (0644): it protects nothing, so its mode is not checked.
    let dev = repo().join("keys/dev/dev.key");
    let f = d.path().join("f");
    fs::write(&f, b"x").unwrap();
    assert_eq!(run(xtask().arg("sign").arg(&f).arg("--key").arg(&dev)).0, 0);
    let (code, out, _) = run(xtask().arg("verify").arg(&f).arg("--trust").arg(repo().join("keys/trust.toml")));
    assert_eq!(code, 1);
    assert!(out.contains("the INSECURE dev key is never trusted by a release policy"), "{out}");

    // The dev key relabelled with another id, unencrypted, 0600: still the dev key.
    let dev_key = trust::SecretKey::parse(&fs::read_to_string(&dev).unwrap(), None).unwrap();
    let relabelled = d.path().join("innocent.key");
    fs::write(&relabelled, dev_key.with_id(trust::KeyId::new([7; 8])).to_file(None).unwrap()).unwrap();
    fs::set_permissions(&relabelled, fs::Permissions::from_mode(0o600)).unwrap();
    for (name, text) in [
        ("build-manifest.toml", "[image]\nproduct = \"p\"\nversion = \"1.0.0\"\nchannel = \"release\"\n"),
        (
            "bundle-manifest.toml",
            "format = 1\nproduct = \"p\"\nversion = \"1.0.0\"\nchannel = \"release\"\n[[payload]]\nname = \"root.img\"\n",
        ),
        ("trust-v2.toml", "version = 2\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = []\n"),
    ] {
        let m = d.path().join(name);
        fs::write(&m, text).unwrap();
        for key in [&dev, &relabelled] {
            let (code, _, err) = run(xtask().arg("sign").arg(&m).arg("--key").arg(key));
            assert_eq!(code, 1, "{name} signed with {}: {err}", key.display());
            assert!(err.contains("is never signed with the INSECURE dev key"), "{err}");
        }
    }
}

#[test]
fn sign_reads_product_and_version_from_either_manifest_kind() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = keygen(d.path(), "v", None);
    let m = d.path().join("bundle-manifest.toml");
    fs::write(&m, "format = 1\nproduct = \"airlock.x\"\nversion = \"2.1.0\"\nchannel = \"release\"\n[[payload]]\nname = \"root.img\"\n").unwrap();
    assert_eq!(run(xtask().arg("sign").arg(&m).arg("--key").arg(&sk)).0, 0);
    let id = trust::PublicKey::parse(&fs::read_to_string(&pk).unwrap()).unwrap().id();
    let sig = fs::read_to_string(d.path().join(format!("bundle-manifest.toml.{id}.minisig"))).unwrap();
    assert!(
        sig.contains("trusted comment: airlock product=airlock.x version=2.1.0 role=release file=bundle-manifest.toml"),
        "{sig}"
    );
    // verify checks that comment against the manifest: both agree, so it is accepted.
    let policy = policy_for(d.path(), &[&pk], 1, &[]);
    let (code, out, _) = run(xtask().arg("verify").arg(&m).arg("--trust").arg(&policy));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn verify_streams_a_large_file_in_constant_memory() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = keygen(d.path(), "v", None);
    let policy = policy_for(d.path(), &[&pk], 1, &[]);
    let big = d.path().join("big.img");
    fs::File::create(&big).unwrap().set_len(512 << 20).unwrap();
    assert_eq!(run(xtask().arg("sign").arg(&big).arg("--key").arg(&sk)).0, 0);
    let o = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .arg("verify")
        .arg(&big)
        .arg("--trust")
        .arg(&policy)
        .current_dir(repo())
        .output()
        .expect("GNU time (/usr/bin/time) is installed by `cargo xtask test`");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kib: u64 = String::from_utf8_lossy(&o.stderr).lines().last().unwrap().trim().parse().unwrap();
    assert!(kib < 32 * 1024, "verifying 512 MiB peaked at {kib} KiB");
}

#[test]
#[ignore = "system: needs Debian's minisign; run by `cargo xtask test`"]
fn signatures_interoperate_with_stock_minisign_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = keygen(d.path(), "interop", Some("s3cret passphrase"));
    let policy = policy_for(d.path(), &[&pk], 1, &[]);
    let file = d.path().join("payload.bin");
    fs::write(&file, vec![7u8; 3 << 20]).unwrap();

    // Airlock signs (encrypted key), minisign verifies.
    let mut c = xtask();
    c.arg("sign").arg(&file).arg("--key").arg(&sk).arg("--passphrase-file").arg(d.path().join("interop.pass"));
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 0, "{out}{err}");
    let sig = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".minisig"))
        .unwrap();
    let (code, out, err) = run(Command::new("minisign").arg("-Vm").arg(&file).arg("-x").arg(&sig).arg("-p").arg(&pk));
    assert_eq!(code, 0, "minisign rejected Airlock's signature: {out}{err}");
    assert!(out.contains("Trusted comment: airlock product=- version=- role=release file=payload.bin"), "{out}");
    fs::remove_file(&sig).unwrap();

    // minisign signs with Airlock's encrypted key, Airlock verifies.
    let mut m = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(&sk)
        .arg("-m")
        .arg(&file)
        .args(["-t", "airlock role=release"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    m.stdin.take().unwrap().write_all(b"s3cret passphrase\n").unwrap();
    let o = m.wait_with_output().unwrap();
    assert!(o.status.success(), "minisign -S: {}", String::from_utf8_lossy(&o.stderr));
    assert!(d.path().join("payload.bin.minisig").exists());
    let (code, out, err) = run(xtask().arg("verify").arg(&file).arg("--trust").arg(&policy));
    assert_eq!(code, 0, "Airlock rejected minisign's signature: {out}{err}");

    // minisign's own key, made by minisign -G, verifies in Airlock too.
    let mk = d.path().join("mk");
    let o = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(mk.with_extension("pub"))
        .arg("-s")
        .arg(mk.with_extension("key"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::remove_file(d.path().join("payload.bin.minisig")).unwrap();
    let o = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(mk.with_extension("key"))
        .arg("-m")
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let policy = policy_for(d.path(), &[&mk.with_extension("pub")], 1, &[]);
    let (code, out, err) = run(xtask().arg("verify").arg(&file).arg("--trust").arg(&policy));
    assert_eq!(code, 0, "{out}{err}");

    // And Airlock signs with minisign's passwordless key (minisign 0.11 leaves its checksum
    // empty; the key's two halves must still agree).
    fs::remove_file(d.path().join("payload.bin.minisig")).unwrap();
    let (code, out, err) = run(xtask().arg("sign").arg(&file).arg("--key").arg(mk.with_extension("key")));
    assert_eq!(code, 0, "Airlock could not sign with a minisign -W key: {out}{err}");
    let (code, out, err) = run(xtask().arg("verify").arg(&file).arg("--trust").arg(&policy));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn rotation_keeps_its_evidence_and_verify_checks_the_chain() {
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("keys");
    fs::create_dir(&keys).unwrap();
    let (sk1, pk1) = keygen(&keys, "old", None);
    let (sk2, pk2) = keygen(&keys, "new", None);
    let policy = |v: u32, pks: &[&Path], revoked: &str| {
        let keys: Vec<String> = pks
            .iter()
            .enumerate()
            .map(|(i, pk)| format!("{{ name = \"k{i}\", key = \"{}\" }}", key_line(pk)))
            .collect();
        format!(
            "version = {v}\nchannel = \"release\"\nrevoked = [{revoked}]\n[release]\nthreshold = 1\nkeys = [{}]\n",
            keys.join(", ")
        )
    };
    let current = keys.join("trust.toml");
    fs::write(&current, policy(1, &[&pk1, &pk2], "")).unwrap();
    let old_id = trust::PublicKey::parse(&fs::read_to_string(&pk1).unwrap()).unwrap().id();
    let new_id = trust::PublicKey::parse(&fs::read_to_string(&pk2).unwrap()).unwrap().id();

    // v2 revokes the old key. Signed by the old key only: a key cannot vouch for the policy
    // that revokes it. Refused, nothing changes.
    let v2 = d.path().join("trust-v2.toml");
    fs::write(&v2, policy(2, &[&pk2], &format!("\"{old_id}\""))).unwrap();
    assert_eq!(run(xtask().arg("sign").arg(&v2).arg("--key").arg(&sk1)).0, 0);
    let (code, _, err) = run(xtask().arg("rotate").arg(&v2).arg("--trust").arg(&current));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("new policy is signed by 0 of version 1's release keys, its threshold is 1"), "{err}");
    assert_eq!(fs::read_to_string(&current).unwrap(), policy(1, &[&pk1, &pk2], ""));
    assert!(!keys.join("history").exists());

    // Signed by the other version-1 key: accepted, put in place, both versions kept with the
    // signatures.
    assert_eq!(run(xtask().arg("sign").arg(&v2).arg("--key").arg(&sk2)).0, 0);
    let (code, out, err) = run(xtask().arg("rotate").arg(&v2).arg("--trust").arg(&current));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fs::read_to_string(&current).unwrap(), fs::read_to_string(&v2).unwrap());
    let history = keys.join("history");
    assert!(history.join("trust-v1.toml").is_file() && history.join("trust-v2.toml").is_file());
    assert!(history.join(format!("trust-v2.toml.{new_id}.minisig")).is_file());
    let m = d.path().join("m");
    fs::write(&m, b"x").unwrap();
    assert_eq!(run(xtask().arg("sign").arg(&m).arg("--key").arg(&sk2)).0, 0);
    let (code, out, _) = run(xtask().arg("verify").arg(&m).arg("--trust").arg(&current));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("policy: unbroken chain from version 1 to 2"), "{out}");
    // The revoked key's signature no longer counts.
    fs::remove_file(m.with_file_name(format!("m.{new_id}.minisig"))).unwrap();
    assert_eq!(run(xtask().arg("sign").arg(&m).arg("--key").arg(&sk1)).0, 0);
    let (code, out, _) = run(xtask().arg("verify").arg(&m).arg("--trust").arg(&current));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is revoked by the trust policy"), "{out}");

    // A hand-edited policy (one more key, same version) is reported as not reached.
    let (_, pk3) = keygen(&keys, "sneaky", None);
    let edited = fs::read_to_string(&current)
        .unwrap()
        .replace("keys = [", &format!("keys = [{{ name = \"x\", key = \"{}\" }}, ", key_line(&pk3)));
    fs::write(&current, edited).unwrap();
    let (_, out, _) = run(xtask().arg("verify").arg(&m).arg("--trust").arg(&current));
    assert!(out.contains("NOT reached by an unbroken chain from version 1"), "{out}");
    assert!(out.contains("a hand-edited policy"), "{out}");

    // Skipping a version is refused even with the right key.
    fs::write(&current, fs::read_to_string(history.join("trust-v2.toml")).unwrap()).unwrap();
    let v4 = d.path().join("trust-v4.toml");
    fs::write(&v4, policy(4, &[&pk2], "")).unwrap();
    assert_eq!(run(xtask().arg("sign").arg(&v4).arg("--key").arg(&sk2)).0, 0);
    let (code, _, err) = run(xtask().arg("rotate").arg(&v4).arg("--trust").arg(&current));
    assert_eq!(code, 1);
    assert!(err.contains("new policy is version 4, expected 3"), "{err}");
}

#[test]
fn keygen_never_puts_a_secret_key_in_the_repository() {
    let d = tempfile::tempdir().unwrap();
    for dir in ["keys", "recipes/../keys", "overlays/base"] {
        let (code, _, err) =
            run(xtask().args(["keygen", "leak", "--no-passphrase", "--secret-dir", dir, "--public-dir"]).arg(d.path()));
        assert_eq!(code, 2, "{dir}: {err}");
        assert!(err.contains("secret keys are never kept in the repository"), "{err}");
        assert!(!repo().join(dir).join("leak.key").exists());
    }
}

/// Runs `cmd` under a pseudo-terminal (util-linux `script`), typing `input`.
fn on_a_terminal(cmd: &str, input: &str) -> (i32, String) {
    let mut c = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script");
    {
        use std::io::Write;
        let mut stdin = c.stdin.take().unwrap();
        for line in input.lines() {
            std::thread::sleep(std::time::Duration::from_millis(300));
            stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let o = c.wait_with_output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn passphrases_are_asked_on_the_terminal_twice_and_not_echoed() {
    let d = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_xtask");
    let dir = d.path().display();
    let (code, screen) = on_a_terminal(
        &format!("{exe} keygen tty --secret-dir {dir} --public-dir {dir}"),
        "correct horse\ncorrect horse\n",
    );
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Passphrase for the new key:") && screen.contains("Passphrase (again):"), "{screen}");
    assert!(!screen.contains("correct horse"), "the passphrase was echoed: {screen}");
    let sk = d.path().join("tty.key");
    assert!(trust::SecretKey::is_encrypted(&fs::read_to_string(&sk).unwrap()).unwrap());
    // Two different answers: nothing is written.
    let (code, screen) =
        on_a_terminal(&format!("{exe} keygen tty2 --secret-dir {dir} --public-dir {dir}"), "one\ntwo\n");
    assert_ne!(code, 0);
    assert!(screen.contains("the passphrases do not match"), "{screen}");
    assert!(!d.path().join("tty2.key").exists());
}

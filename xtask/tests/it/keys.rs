//! keygen, sign and verify as a user runs them, and interoperability with Debian's minisign.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{repo, run, xtask};

/// keygen into `dir` (secret and public both there); returns (secret, public) paths.
fn keygen(dir: &Path, name: &str, pass: Option<&str>) -> (std::path::PathBuf, std::path::PathBuf) {
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

fn policy_for(dir: &Path, pubs: &[&Path], threshold: usize) -> std::path::PathBuf {
    let keys: Vec<String> = pubs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let line = fs::read_to_string(p).unwrap().lines().nth(1).unwrap().to_string();
            format!("{{ name = \"k{i}\", key = \"{line}\" }}")
        })
        .collect();
    let p = dir.join("trust.toml");
    fs::write(
        &p,
        format!(
            "version = 1\nchannel = \"release\"\n[release]\nthreshold = {threshold}\nkeys = [{}]\n",
            keys.join(", ")
        ),
    )
    .unwrap();
    p
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
    assert!(!d.path().join("f.minisig").exists());
}

#[test]
fn two_of_two_signers_then_verify_with_exit_codes_and_json() {
    let d = tempfile::tempdir().unwrap();
    let (sk1, pk1) = keygen(d.path(), "vendor-1", None);
    let (sk2, pk2) = keygen(d.path(), "vendor-2", None);
    let policy = policy_for(d.path(), &[&pk1, &pk2], 2);
    let file = d.path().join("release.bin");
    fs::write(&file, b"the release").unwrap();
    let verify = || run(xtask().arg("verify").arg(&file).arg("--trust").arg(&policy).arg("--json"));

    assert_eq!(run(xtask().arg("sign").arg(&file).arg("--key").arg(&sk1)).0, 0);
    let (code, out, _) = verify();
    assert_eq!(code, 1, "one of two is not enough: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], false);
    assert_eq!(v["roles"][0]["valid"], 1);
    assert_eq!(v["roles"][0]["threshold"], 2);

    assert_eq!(run(xtask().arg("sign").arg(&file).arg("--key").arg(&sk2)).0, 0);
    let (code, out, _) = verify();
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], true);
    assert_eq!(v["signers"].as_array().unwrap().len(), 2);
    assert!(v["signers"].as_array().unwrap().iter().all(|s| s["verified"] == true && s["roles"][0] == "release"));

    fs::write(&file, b"the releasE").unwrap();
    let (code, out, _) = run(xtask().arg("verify").arg(&file).arg("--trust").arg(&policy));
    assert_eq!(code, 1);
    assert!(out.contains("does not match the file"), "{out}");
    assert!(out.trim_end().ends_with("rejected"), "{out}");

    let (code, _, err) = run(xtask().arg("verify").arg(d.path().join("absent")).arg("--trust").arg(&policy));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn the_dev_key_never_passes_a_release_policy() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("f");
    fs::write(&file, b"x").unwrap();
    assert_eq!(run(xtask().arg("sign").arg(&file).arg("--key").arg(repo().join("keys/dev/dev.key"))).0, 0);
    let (code, out, _) = run(xtask().arg("verify").arg(&file).arg("--trust").arg(repo().join("keys/trust.toml")));
    assert_eq!(code, 1);
    assert!(out.contains("the INSECURE dev key is never trusted by a release policy"), "{out}");

    let manifest = d.path().join("build-manifest.toml");
    fs::write(&manifest, "[image]\nproduct = \"p\"\nversion = \"1\"\nchannel = \"release\"\n").unwrap();
    let (code, _, err) = run(xtask().arg("sign").arg(&manifest).arg("--key").arg(repo().join("keys/dev/dev.key")));
    assert_eq!(code, 1);
    assert!(err.contains("a release manifest is never signed with the INSECURE dev key"), "{err}");
}

#[test]
#[ignore = "system: needs Debian's minisign; run by `cargo xtask test`"]
fn signatures_interoperate_with_stock_minisign_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = keygen(d.path(), "interop", Some("s3cret passphrase"));
    let policy = policy_for(d.path(), &[&pk], 1);
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
    let policy = policy_for(d.path(), &[&mk.with_extension("pub")], 1);
    let (code, out, err) = run(xtask().arg("verify").arg(&file).arg("--trust").arg(&policy));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn rotate_accepts_the_next_policy_only_with_the_old_threshold() {
    let d = tempfile::tempdir().unwrap();
    let (sk1, pk1) = keygen(d.path(), "old", None);
    let (sk2, pk2) = keygen(d.path(), "new", None);
    let key_line = |p: &Path| fs::read_to_string(p).unwrap().lines().nth(1).unwrap().to_string();
    let policy = |v: u32, pk: &Path| {
        format!(
            "version = {v}\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"k\", key = \"{}\" }}]\n",
            key_line(pk)
        )
    };
    let current = d.path().join("trust.toml");
    fs::write(&current, policy(1, &pk1)).unwrap();

    // v2 signed by the new key only: refused, nothing changes.
    let v2 = d.path().join("trust-v2.toml");
    fs::write(&v2, policy(2, &pk2)).unwrap();
    assert_eq!(run(xtask().arg("sign").arg(&v2).arg("--key").arg(&sk2)).0, 0);
    let (code, _, err) = run(xtask().arg("rotate").arg(&v2).arg("--trust").arg(&current));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("new policy is signed by 0 of version 1's release keys, its threshold is 1"), "{err}");
    assert_eq!(fs::read_to_string(&current).unwrap(), policy(1, &pk1));

    // Signed by the old key: accepted and put in place.
    assert_eq!(run(xtask().arg("sign").arg(&v2).arg("--key").arg(&sk1)).0, 0);
    let (code, out, err) = run(xtask().arg("rotate").arg(&v2).arg("--trust").arg(&current));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fs::read_to_string(&current).unwrap(), policy(2, &pk2));

    // Skipping a version is refused even with the right key.
    let v4 = d.path().join("trust-v4.toml");
    fs::write(&v4, policy(4, &pk2)).unwrap();
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

//! The agent as an operator and an attacker meet it: one agent at a time (a paused install,
//! natural races), read-only commands that change nothing, an audit log that stays cheap and
//! notices a cut or edited tail, untrusted names escaped, a bundle swapped after it was
//! checked, the version order on a stick, an operator's rollback that stands, channels apart,
//! and a console an operator can read.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::powercut::{boot, sideload, status};
use crate::{Dev, bundle_bytes, image, parts};

fn spawn(dev: &Dev, args: &[&str], failpoint: Option<&str>) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sideload"));
    c.arg("--root").arg(dev.root()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    match failpoint {
        Some(f) => c.env("AIRLOCK_FAILPOINT", f),
        None => c.env_remove("AIRLOCK_FAILPOINT"),
    };
    c.spawn().unwrap()
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success());
}

/// Every file of the device folder and its bytes (what "changes nothing" compares).
fn snapshot(dev: &Dev) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dev.root()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.strip_prefix(dev.root()).unwrap().display().to_string(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_paused_install_holds_the_device_a_second_agent_waits_then_is_refused() {
    let dev = Dev::new();
    let a = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &image("2.0.0", 300_000)));
    let b = dev.write_bundle("v3.airlock", &bundle_bytes("3.0.0", 3, &image("3.0.0", 300_000)));
    let mut first = spawn(&dev, &["install", a.to_str().unwrap()], Some("mid-write:stop"));
    let pid = first.id();
    crate::wait_stopped(&mut first);

    // status while it is paused: read-only, says who is working, shows the slot being written.
    let before = snapshot(&dev);
    let (code, out, _) = sideload(&dev, &["status"], None);
    assert_eq!(code, Some(0));
    assert!(out.contains(&format!("another sideload is working right now (pid {pid})")), "{out}");
    assert!(out.contains("slot b  2.0.0") && out.contains("writing"), "{out}");
    let s = status(&dev);
    assert_eq!(
        (s["busy"].as_str(), s["slots"]["b"]["status"].as_str()),
        (Some(pid.to_string().as_str()), Some("writing"))
    );
    assert_eq!(snapshot(&dev), before, "status changed the device during an install");

    // A second install waits (bounded), then is refused naming the first one.
    let t = Instant::now();
    let (code, out, err) = sideload(&dev, &["--wait", "1", "install", b.to_str().unwrap(), "--json"], None);
    assert!(t.elapsed() >= Duration::from_secs(1), "it did not wait");
    assert_eq!(code, Some(1), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reason"], "busy");
    assert!(err.contains(&format!("another sideload is running (pid {pid})")), "{err}");
    assert_eq!(snapshot(&dev), before, "the refused agent changed the device");

    // The first one goes on and completes.
    signal(pid, "CONT");
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(crate::slot_holds(&dev.slot("b"), &image("2.0.0", 300_000)));
    assert_eq!(dev.boot().trial.map(|t| t.slot), Some(sideload::Slot::B));
}

#[test]
fn racing_installs_never_arm_a_slot_that_does_not_hold_its_record() {
    let v2 = image("2.0.0", 400_000);
    let v3 = image("3.0.0", 400_000);
    for round in 0..6 {
        let dev = Dev::new();
        let a = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &v2));
        let b = dev.write_bundle("v3.airlock", &bundle_bytes("3.0.0", 3, &v3));
        let (pa, pb) = (a.to_str().unwrap().to_string(), b.to_str().unwrap().to_string());
        let one = spawn(&dev, &["--wait", "30", "install", &pa], None);
        let two = spawn(&dev, &["--wait", "30", "install", &pb], None);
        let (o1, o2) = (one.wait_with_output().unwrap(), two.wait_with_output().unwrap());
        // One installs; the other then finds a trial armed (or the same slot in use) and is
        // refused — never both writing at once.
        let codes = (o1.status.code(), o2.status.code());
        assert!(matches!(codes, (Some(0), Some(0 | 1)) | (Some(1), Some(0))), "round {round}: {codes:?}");
        let st = dev.state();
        let boot = dev.boot();
        let trial = boot.trial.expect("a trial is armed");
        let rec = st.slot(trial.slot);
        assert_eq!(rec.status, sideload::SlotStatus::Written, "round {round}");
        let (sha, _) = sideload::hash_prefix(&dev.root().join("slots/root-b"), rec.size).unwrap();
        assert_eq!(sha, rec.sha256, "round {round}: the armed slot does not hold what its record says");
        let leftovers: Vec<String> = fs::read_dir(dev.root().join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: temp files left: {leftovers:?}");
        dev.audit();
    }
}

#[test]
fn read_only_commands_change_nothing_even_with_a_reconciliation_pending() {
    let dev = Dev::new();
    let b = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &image("2.0.0", 1000)));
    // Cut mid-write: the next mutating command will record "interrupted".
    let (code, _, _) = sideload(&dev, &["install", b.to_str().unwrap()], Some("mid-write"));
    assert_eq!(code, None);
    dev.power_on();
    let before = snapshot(&dev);
    for args in
        [&["status"][..], &["status", "--json"], &["verify", b.to_str().unwrap()], &["audit"], &["audit", "--json"]]
    {
        let (code, _, err) = sideload(&dev, args, None);
        assert!(code.is_some(), "{args:?}: {err}");
        assert_eq!(snapshot(&dev), before, "`{}` wrote to the device", args.join(" "));
    }
    assert_eq!(status(&dev)["pending"][0], "interrupted");
    boot(&dev);
    assert!(dev.audit().iter().any(|r| r["event"] == "interrupted"));
}

#[test]
fn the_audit_log_is_appended_in_constant_memory_and_its_tail_is_watched() {
    let dev = Dev::new();
    // Grow the log to 100 MiB of valid records (what years of refusals would make).
    {
        let mut agent = dev.agent();
        let _ = &mut agent;
    }
    let junk = dev.write_bundle("junk.airlock", b"not a bundle");
    let big_line = "x".repeat(1000);
    let state = sideload::state::load(&dev.root().join("data")).unwrap().unwrap();
    let records: Vec<_> =
        (0..100_000).map(|i| ("filler".to_string(), serde_json::json!({"i": i, "pad": big_line}))).collect();
    let head = audit::Audit::at(dev.root().join("data/audit.jsonl")).append(&state.audit, &records).unwrap();
    let mut st = state.clone();
    st.audit = head;
    sideload::state::save(&dev.root().join("data"), &st).unwrap();
    assert!(fs::metadata(dev.root().join("data/audit.jsonl")).unwrap().len() > 100 << 20);

    // A refusal with that log: peak RSS stays small.
    let rss = |args: &[&str]| -> u64 {
        let o = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(env!("CARGO_BIN_EXE_sideload"))
            .arg("--root")
            .arg(dev.root())
            .args(args)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stderr).lines().last().unwrap().trim().parse().unwrap()
    };
    let kib = rss(&["install", junk.to_str().unwrap()]);
    assert!(kib < 32 * 1024, "a refusal with a 100 MiB log peaked at {kib} KiB");
    let kib = rss(&["audit"]);
    assert!(kib < 32 * 1024, "`audit` of a 100 MiB log peaked at {kib} KiB");
    let (code, _, err) = sideload(&dev, &["audit", "--json"], None);
    assert_eq!(code, Some(0), "{err}");

    // Cut the tail: the next command records it, and `audit` reports the break.
    let log = dev.root().join("data/audit.jsonl");
    let text = fs::read(&log).unwrap();
    let cut = text[..text.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    fs::write(&log, &text[..cut]).unwrap();
    let (code, _, err) = sideload(&dev, &["audit"], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("audit chain broken") && err.contains("its tail was cut or edited"), "{err}");
    let (code, _, _) = sideload(&dev, &["install", junk.to_str().unwrap()], None);
    assert_eq!(code, Some(1));
    let (_, out, _) = sideload(&dev, &["audit", "--json"], None);
    let tampered: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "audit-tampered")
        .collect();
    assert_eq!(tampered.len(), 1, "{tampered:?}");
    assert_eq!(tampered[0]["why"], "the log is shorter than recorded: its tail was cut");
}

#[test]
fn an_edited_last_record_is_detected_and_a_torn_one_repaired() {
    let dev = Dev::new();
    let junk = dev.write_bundle("junk.airlock", b"not a bundle");
    sideload(&dev, &["install", junk.to_str().unwrap()], None);
    let log = dev.root().join("data/audit.jsonl");
    // A torn line, as a power cut mid-append leaves it: dropped, recorded, chain intact.
    let mut text = fs::read(&log).unwrap();
    text.extend_from_slice(b"{\"seq\":99,\"event\":\"bles");
    fs::write(&log, &text).unwrap();
    sideload(&dev, &["install", junk.to_str().unwrap()], None);
    let events: Vec<String> = dev.audit().iter().map(|r| r["event"].as_str().unwrap().to_string()).collect();
    assert!(events.contains(&"audit-repaired".to_string()), "{events:?}");
    // An edited last record (same length): detected.
    let text = fs::read_to_string(&log).unwrap();
    let edited = text.replacen("\"reason\":\"bad-tar\"", "\"reason\":\"bad-ta_\"", 1);
    let last_start = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    let edited = format!("{}{}", &text[..last_start], edited[last_start..].replace("junk.airlock", "junk.airlocK"));
    fs::write(&log, edited).unwrap();
    let (code, _, err) = sideload(&dev, &["audit"], None);
    assert_eq!(code, Some(1), "{err}");
    sideload(&dev, &["install", junk.to_str().unwrap()], None);
    let (_, out, _) = sideload(&dev, &["audit", "--json"], None);
    assert!(out.contains("\"why\":\"the last record was edited\""), "{out}");
}

#[test]
fn untrusted_names_never_reach_the_console_raw() {
    let dev = Dev::new();
    let stick = dev.dir.path().join("stick");
    fs::create_dir(&stick).unwrap();
    let evil = "x\nsideload: installed 9.9.9 into slot b\x1b[2J.airlock";
    fs::write(stick.join(evil), b"junk").unwrap();
    fs::write(stick.join("y\x1b]0;owned\x07.airlock"), b"junk").unwrap();
    let (code, out, err) = sideload(&dev, &["install-dir", stick.to_str().unwrap()], None);
    assert_eq!(code, Some(1));
    for text in [&out, &err] {
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "a raw escape reached the console: {text:?}");
        assert!(!text.lines().any(|l| l.starts_with("sideload: installed")), "a forged line: {text}");
    }
    assert!(err.contains("\\u{1b}"), "{err}");
    let raw = fs::read_to_string(dev.root().join("data/audit.jsonl")).unwrap();
    assert!(!raw.contains('\x1b'));
    assert_eq!(raw.lines().count(), dev.audit().len(), "one line per record");
}

#[test]
fn a_bundle_swapped_after_it_was_checked_is_not_what_gets_installed() {
    let dev = Dev::new();
    let stick = dev.dir.path().join("stick");
    fs::create_dir(&stick).unwrap();
    let good = image("2.0.0", 200_000);
    fs::write(stick.join("p-2.0.0.airlock"), bundle_bytes("2.0.0", 2, &good)).unwrap();
    let mut child = spawn(&dev, &["install-dir", stick.to_str().unwrap()], Some("after-check:stop"));
    crate::wait_stopped(&mut child);
    // Between the check and the install: the path now names a FIFO (which would hang a
    // reader that opens it again).
    fs::remove_file(stick.join("p-2.0.0.airlock")).unwrap();
    assert!(Command::new("mkfifo").arg(stick.join("p-2.0.0.airlock")).status().unwrap().success());
    signal(child.id(), "CONT");
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(crate::slot_holds(&dev.slot("b"), &good), "the bundle checked is the bundle installed");
}

#[test]
fn on_a_stick_the_release_beats_its_candidates_in_both_spellings() {
    let dev = Dev::new();
    let stick = dev.dir.path().join("stick");
    fs::create_dir(&stick).unwrap();
    for v in ["1.1.0-rc1", "1.1.0~rc2", "1.1.0", "1.0.5"] {
        fs::write(stick.join(format!("p-{v}.airlock")), bundle_bytes(v, 1, &image(v, 1000))).unwrap();
    }
    let a = dev.agent().install_dir(&stick, sideload::InstallOptions::default(), &mut sideload::NoProgress).unwrap();
    assert_eq!(a.version, "1.1.0");
    // Once 1.1.0 runs, its candidates are older.
    boot(&dev);
    sideload(&dev, &["mark-good"], None);
    let rc = dev.write_bundle("rc.airlock", &bundle_bytes("1.1.0~rc2", 1, &image("rc", 1000)));
    let (code, _, err) = sideload(&dev, &["install", rc.to_str().unwrap()], None);
    assert_eq!(code, Some(1));
    assert!(err.contains("refused (older-version): version 1.1.0~rc2 is older than the running 1.1.0"), "{err}");
}

#[test]
fn an_operators_rollback_during_a_trial_stands() {
    let dev = Dev::new();
    let b = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &image("2.0.0", 1000)));
    assert_eq!(sideload(&dev, &["install", b.to_str().unwrap()], None).0, Some(0));
    boot(&dev);
    assert_eq!(status(&dev)["booted"], "b");
    let (code, out, err) = sideload(&dev, &["rollback"], None);
    assert_eq!(code, Some(0), "{out}{err}");
    // The health check then runs mark-good on the still-booted slot b: refused.
    let (code, _, err) = sideload(&dev, &["mark-good"], None);
    assert_eq!(code, Some(1));
    assert!(err.contains("refused (not-on-trial)"), "{err}");
    let s = status(&dev);
    assert_eq!((s["default"].as_str(), s["security_floor"].as_u64()), (Some("a"), Some(1)), "the floor did not rise");
    assert_eq!(s["slots"]["b"]["status"], "failed");
    boot(&dev);
    assert_eq!(status(&dev)["booted"], "a");
    let events: Vec<String> = dev.audit().iter().map(|r| r["event"].as_str().unwrap().to_string()).collect();
    assert!(events.ends_with(&["rolled-back".into(), "refused".into(), "booted".into()]), "{events:?}");
}

#[test]
fn a_release_device_never_takes_a_dev_policy() {
    let dev = Dev::new();
    let dev_policy = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../keys/dev/trust.toml")).unwrap();
    // At init.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("trust.toml");
    fs::write(&p, &dev_policy).unwrap();
    fs::write(d.path().join("img"), b"x").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sideload"))
        .arg("--root")
        .arg(d.path().join("dev"))
        .args(["init", "--product", "p", "--channel", "release", "--trust"])
        .arg(&p)
        .args(["--slot-size", "4096", "--image"])
        .arg(d.path().join("img"))
        .args(["--version", "1.0.0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("follows the `release` channel but its trust policy is a `dev` policy")
    );
    // At load.
    fs::write(dev.root().join("trust.toml"), &dev_policy).unwrap();
    let (code, _, err) = sideload(&dev, &["status"], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("a device trusts only its own channel's keys"), "{err}");
}

#[test]
fn the_console_speaks_to_operators_and_json_to_machines() {
    let dev = Dev::new();
    let (code, out, _) = sideload(&dev, &["--version"], None);
    assert_eq!((code, out.trim()), (Some(0), format!("sideload {}", env!("CARGO_PKG_VERSION")).as_str()));
    let (_, out, _) = sideload(&dev, &["status"], None);
    for want in [
        "Airlock appliance airlock.test.x86_64 — channel release",
        "slot a  1.0.0",
        "good",
        "(booted, default)",
        "next boot       slot a",
        "security floor  1",
        "recent audit records:",
        "#1 initialised",
    ] {
        assert!(out.contains(want), "status lacks `{want}`:\n{out}");
    }
    // Every outcome in JSON, refusals included.
    let junk = dev.write_bundle("junk.airlock", b"junk");
    for args in [
        vec!["install", junk.to_str().unwrap(), "--json"],
        vec!["verify", junk.to_str().unwrap(), "--json"],
        vec!["rollback", "--json"],
        vec!["install", "/nonexistent", "--json"],
    ] {
        let (code, out, _) = sideload(&dev, &args, None);
        let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"));
        assert!(code != Some(0), "{args:?}");
        assert!(v["reason"].is_string(), "{args:?}: {v}");
    }
    // `audit --json` is pure JSON Lines.
    let (code, out, _) = sideload(&dev, &["audit", "--json"], None);
    assert_eq!(code, Some(0));
    assert!(out.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{out}");
    // `install` says what it does, one line per phase, in a log.
    let b = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &image("2.0.0", 1000)));
    let (code, _, err) = sideload(&dev, &["install", b.to_str().unwrap()], None);
    assert_eq!(code, Some(0));
    for phase in [
        "sideload: verifying v2.airlock",
        "sideload: writing 2.0.0 into slot b",
        "sideload: reading the slot back",
        "sideload: trial boot of slot b armed (3 tries)",
    ] {
        assert!(err.contains(phase), "{err}");
    }
}

#[test]
fn every_flag_a_message_names_exists() {
    let src: String = ["agent.rs", "decide.rs", "device.rs", "console.rs", "main.rs"]
        .iter()
        .map(|f| fs::read_to_string(format!("{}/src/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap())
        .collect();
    let help: String = ["--help", "install --help", "init --help"]
        .iter()
        .map(|a| {
            let o = Command::new(env!("CARGO_BIN_EXE_sideload")).args(a.split(' ')).output().unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect();
    let mut named = 0;
    for (i, _) in src.match_indices("(use --") {
        let flag: String = src[i + 5..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        assert!(help.contains(&flag), "a message names `{flag}`, which sideload does not have");
        named += 1;
    }
    assert!(named >= 2);
}

#[test]
fn the_fifo_and_other_non_files_on_a_stick_are_refused_without_hanging() {
    let dev = Dev::new();
    let stick = dev.dir.path().join("stick");
    fs::create_dir(&stick).unwrap();
    assert!(Command::new("mkfifo").arg(stick.join("a.airlock")).status().unwrap().success());
    std::os::unix::fs::symlink("/dev/zero", stick.join("b.airlock")).unwrap();
    fs::create_dir(stick.join("c.airlock")).unwrap();
    let secret = stick.join("d.airlock");
    fs::write(&secret, bundle_bytes("2.0.0", 2, &image("2.0.0", 1000))).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let (code, _, err) = sideload(&dev, &["install-dir", stick.to_str().unwrap()], None);
    // d is unreadable only for a non-root user; as root it installs.
    assert!(code == Some(0) || code == Some(1), "{err}");
    let refusals: Vec<Value> =
        dev.audit().into_iter().filter(|r| r["event"] == "refused" && r["action"] == "install-dir").collect();
    let not_files = refusals.iter().filter(|r| r["reason"] == "not-a-file").count();
    assert_eq!(not_files, 3, "{refusals:?}");
    let _ = parts;
}

/// `sideload CMD --json`: exit code and the JSON it printed.
fn run_json(dev: &Dev, cmd: &str) -> (Option<i32>, Value) {
    let (code, out, err) = sideload(dev, &[cmd, "--json"], None);
    (code, serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd}: {e}: {out} {err}")))
}

fn last(dev: &Dev, event: &str) -> Value {
    dev.audit().into_iter().rfind(|r| r["event"] == event).unwrap_or_else(|| panic!("no {event} record"))
}

#[test]
fn the_boot_record_and_a_failed_health_check_say_whether_the_booted_slot_is_on_trial() {
    let dev = Dev::new();
    dev.install(&bundle_bytes("2.0.0", 2, &image("2.0.0", 200_000))).unwrap();
    // Slot b's trial is armed, but slot a (blessed) is still the one running.
    let (code, j) = run_json(&dev, "booted");
    assert_eq!(code, Some(0), "{j}");
    assert_eq!(j["message"], "booted slot a (1.0.0, good)");
    let r = last(&dev, "booted");
    assert_eq!((r["slot"].as_str(), r["trial"].as_bool(), r["tries_left"].is_null()), (Some("a"), Some(false), true));
    let (code, j) = run_json(&dev, "health-failed");
    assert_eq!((code, j["on_trial"].as_bool()), (Some(1), Some(false)), "{j}");
    let r = last(&dev, "health-failed");
    assert_eq!(
        (r["slot"].as_str(), r["on_trial"].as_bool(), r["tries_left"].is_null()),
        (Some("a"), Some(false), true)
    );

    // Power on: slot b comes up on its trial, one try spent.
    dev.power_on();
    let left = dev.boot().trial.unwrap().tries_left;
    let (code, j) = run_json(&dev, "booted");
    assert_eq!(code, Some(0), "{j}");
    assert_eq!(j["message"], format!("booted slot b (2.0.0) on trial, {left} tries left"));
    let r = last(&dev, "booted");
    assert_eq!(
        (r["slot"].as_str(), r["trial"].as_bool(), r["tries_left"].as_u64()),
        (Some("b"), Some(true), Some(left.into()))
    );
    let (code, j) = run_json(&dev, "health-failed");
    assert_eq!((code, j["on_trial"].as_bool()), (Some(0), Some(true)), "{j}");
    let r = last(&dev, "health-failed");
    assert_eq!(
        (r["slot"].as_str(), r["on_trial"].as_bool(), r["tries_left"].as_u64()),
        (Some("b"), Some(true), Some(left.into()))
    );
}

#[test]
fn a_stick_with_more_acceptable_bundles_than_the_agent_weighs_refuses_the_rest_and_says_so() {
    let dev = Dev::new();
    let stick = dev.dir.path().join("stick");
    fs::create_dir(&stick).unwrap();
    let n = sideload::agent::MAX_CANDIDATES + 1;
    // In name order, version 2.0.i: the last one read is the newest, and the one too many.
    for i in 1..=n {
        let v = format!("2.0.{i}");
        fs::write(stick.join(format!("p-{i:03}.airlock")), bundle_bytes(&v, 2, &image(&v, 1000))).unwrap();
    }
    let a = dev.agent().install_dir(&stick, sideload::InstallOptions::default(), &mut sideload::NoProgress).unwrap();
    assert_eq!(a.version, format!("2.0.{}", n - 1), "the newest of those weighed is installed");
    let refused: Vec<Value> = dev.audit().into_iter().filter(|r| r["event"] == "refused").collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["reason"], "too-large");
    assert!(refused[0]["bundle"].as_str().unwrap().contains(&format!("p-{n:03}.airlock")), "{}", refused[0]);
    assert!(
        refused[0]["message"].as_str().unwrap().contains(&format!("more than {} acceptable bundles", n - 1)),
        "{}",
        refused[0]
    );
}

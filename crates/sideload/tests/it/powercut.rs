//! The power-cut matrix: the real `sideload` binary killed (a failpoint aborts it, no cleanup)
//! at each phase of an update, then the power cut simulated (every write that was not fsynced
//! is lost) and the device started again. Each time: it boots a verified slot, the audit chain
//! is intact and says what happened, the floor has not risen, and the update can be completed.

use std::process::Command;

use serde_json::Value;

use crate::{Dev, bundle_bytes, image};

pub fn sideload(dev: &Dev, args: &[&str], failpoint: Option<&str>) -> (Option<i32>, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sideload"));
    c.arg("--root").arg(dev.root()).args(args);
    match failpoint {
        Some(f) => c.env("AIRLOCK_FAILPOINT", f),
        None => c.env_remove("AIRLOCK_FAILPOINT"),
    };
    let o = c.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

pub fn status(dev: &Dev) -> Value {
    let (code, out, err) = sideload(dev, &["status", "--json"], None);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Power comes back: the boot loader picks a slot and the boot is recorded.
pub fn boot(dev: &Dev) {
    dev.power_on();
    let (code, _, err) = sideload(dev, &["booted"], None);
    assert_eq!(code, Some(0), "{err}");
}

/// The booted slot holds exactly what the agent recorded for it, and that record is good or
/// freshly written and read back.
fn assert_boots_a_verified_slot(dev: &Dev, phase: &str) -> String {
    let s = status(dev);
    let booted = s["booted"].as_str().unwrap().to_string();
    let rec = &s["slots"][&booted];
    let st = rec["status"].as_str().unwrap();
    assert!(st == "good" || st == "written", "{phase}: booted slot {booted} is {st}");
    let size = rec["size"].as_u64().unwrap();
    let (sha, _) = sideload::hash_prefix(&dev.root().join(format!("slots/root-{booted}")), size).unwrap();
    assert_eq!(sha, rec["sha256"].as_str().unwrap(), "{phase}: slot {booted} does not hold what was verified");
    booted
}

const INSTALL_PHASES: &[&str] =
    &["verify", "accepted", "write-start", "mid-write", "before-sync", "after-sync", "before-arm", "after-arm"];

#[test]
fn power_cut_at_each_install_phase_leaves_a_bootable_verified_device() {
    let v2 = image("2.0.0", 260_000);
    for phase in INSTALL_PHASES {
        let dev = Dev::new();
        let b = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &v2));
        let b = b.to_str().unwrap();
        let (code, _, err) = sideload(&dev, &["install", b], Some(phase));
        assert_eq!(code, None, "{phase}: the failpoint did not cut the agent: {err}");

        boot(&dev);
        let booted = assert_boots_a_verified_slot(&dev, phase);
        let audit = dev.audit();
        let events: Vec<&str> = audit.iter().map(|r| r["event"].as_str().unwrap()).collect();
        match *phase {
            "verify" => assert_eq!(events, ["initialised", "booted"], "{phase}"),
            "accepted" | "write-start" | "mid-write" | "before-sync" | "after-sync" => {
                assert_eq!(events, ["initialised", "accepted", "interrupted", "booted"], "{phase}")
            }
            "before-arm" => assert_eq!(events, ["initialised", "accepted", "installed", "booted"], "{phase}"),
            _ => assert_eq!(events, ["initialised", "accepted", "installed", "trial-armed", "booted"], "{phase}"),
        }
        assert_eq!(status(&dev)["security_floor"], 1, "{phase}: the floor rose before a good boot");

        // Finish the update: install again if the old slot booted, then boot and bless.
        if booted == "a" {
            let (code, out, err) = sideload(&dev, &["install", b], None);
            assert_eq!(code, Some(0), "{phase}: retry failed: {out}{err}");
            boot(&dev);
        }
        assert_eq!(status(&dev)["booted"], "b", "{phase}");
        let (code, _, err) = sideload(&dev, &["mark-good"], None);
        assert_eq!(code, Some(0), "{phase}: {err}");
        boot(&dev);
        let s = status(&dev);
        assert_eq!((s["booted"].as_str(), s["security_floor"].as_u64()), (Some("b"), Some(2)), "{phase}");
        assert_eq!(assert_boots_a_verified_slot(&dev, phase), "b");
        let (code, out, err) = sideload(&dev, &["audit", "--json"], None);
        assert_eq!(code, Some(0), "{phase}: audit chain broken: {err}");
        assert!(out.lines().any(|l| l.contains("\"event\":\"blessed\"")), "{phase}");
    }
}

/// An update armed but not yet booted, then a newer one written over the same slot: the slot
/// leaves the boot rotation before a byte of it changes, so a cut anywhere in the second write
/// boots the old slot, never the half-written one.
#[test]
fn power_cut_writing_over_an_armed_slot_never_boots_it() {
    let (v2, v3) = (image("2.0.0", 1000), image("3.0.0", 260_000));
    for phase in ["accepted", "write-start", "mid-write", "before-sync", "after-sync"] {
        let dev = Dev::new();
        let b2 = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &v2));
        let b3 = dev.write_bundle("v3.airlock", &bundle_bytes("3.0.0", 3, &v3));
        let (code, out, err) = sideload(&dev, &["install", b2.to_str().unwrap()], None);
        assert_eq!(code, Some(0), "{phase}: {out}{err}");
        assert_eq!(status(&dev)["next_boot"], "b", "{phase}: version 2 is armed");
        let (code, _, err) = sideload(&dev, &["install", b3.to_str().unwrap()], Some(phase));
        assert_eq!(code, None, "{phase}: the failpoint did not cut the agent: {err}");

        boot(&dev);
        assert_eq!(assert_boots_a_verified_slot(&dev, phase), "a", "{phase}: booted the slot being written");
        let s = status(&dev);
        assert_eq!(
            (s["slots"]["b"]["status"].as_str(), s["next_boot"].as_str()),
            (Some("empty"), Some("a")),
            "{phase}"
        );
        let events: Vec<String> = dev.audit().iter().map(|r| r["event"].as_str().unwrap().to_string()).collect();
        assert_eq!(events[events.len() - 3..], ["accepted", "interrupted", "booted"], "{phase}");
    }
}

#[test]
fn power_cut_while_blessing_is_completed_at_the_next_start() {
    let dev = Dev::new();
    let b = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &image("2.0.0", 1000)));
    assert_eq!(sideload(&dev, &["install", b.to_str().unwrap()], None).0, Some(0));
    boot(&dev);
    let (code, _, _) = sideload(&dev, &["mark-good"], Some("mid-bless"));
    assert_eq!(code, None);
    boot(&dev);
    assert_eq!(assert_boots_a_verified_slot(&dev, "mid-bless"), "b");
    let s = status(&dev);
    assert_eq!(s["security_floor"], 2, "the interrupted bless was completed");
    assert_eq!(s["slots"]["b"]["status"], "good");
    let blessed = dev.audit().into_iter().find(|r| r["event"] == "blessed").unwrap();
    assert_eq!(blessed["recovered"], true);
}

#[test]
fn a_slot_that_fails_its_trial_falls_back_and_the_floor_stays() {
    let dev = Dev::new();
    let b = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &image("2.0.0", 1000)));
    assert_eq!(sideload(&dev, &["install", b.to_str().unwrap()], None).0, Some(0));
    // Three boots of the new slot, each cut before its health check passes.
    for _ in 0..3 {
        assert_eq!(dev.power_on().booted, sideload::Slot::B);
    }
    // Out of tries: the boot loader falls back to the old slot.
    assert_eq!(dev.power_on().booted, sideload::Slot::A);
    let (code, _, err) = sideload(&dev, &["booted"], None);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(assert_boots_a_verified_slot(&dev, "fallback"), "a");
    let s = status(&dev);
    assert_eq!(s["slots"]["b"]["status"], "failed");
    assert_eq!(s["security_floor"], 1);
    assert_eq!(s["default"], "a");
    let events: Vec<String> = dev.audit().iter().map(|r| r["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events[events.len() - 2..], ["fell-back", "booted"]);
    // The same bundle is not installed again by itself (a stick left in would loop), only
    // when asked.
    let (code, _, err) = sideload(&dev, &["install", b.to_str().unwrap()], None);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("refused (failed-before): version 2.0.0 already failed its trial boot on this device"),
        "{err}"
    );
    assert_eq!(sideload(&dev, &["install", "--reinstall", b.to_str().unwrap()], None).0, Some(0));
}

#[test]
fn verify_and_exit_codes() {
    let dev = Dev::new();
    let good = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &image("2.0.0", 1000)));
    let (code, out, _) = sideload(&dev, &["verify", good.to_str().unwrap(), "--json"], None);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["bundle"]["version"], "2.0.0");
    assert_eq!(v["accepted"], true);
    let mut bad = std::fs::read(&good).unwrap();
    bad.truncate(700);
    let badp = dev.write_bundle("bad.airlock", &bad);
    let (code, out, _) = sideload(&dev, &["verify", badp.to_str().unwrap()], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("rejected (truncated)"), "{out}");
    let (code, _, _) = sideload(&dev, &["verify", "/nonexistent.airlock"], None);
    assert_eq!(code, Some(2));
}

#[test]
fn a_first_boot_adopts_the_running_slot_from_the_image_it_declares() {
    let dev = Dev::new();
    let data = dev.root().join("data");
    std::fs::remove_file(data.join("state.toml")).unwrap();
    std::fs::remove_file(data.join("audit.jsonl")).unwrap();
    let cfg = std::fs::read_to_string(dev.root().join("device.toml")).unwrap();
    std::fs::write(dev.root().join("device.toml"), format!("{cfg}version = \"1.0.0\"\nsecurity_version = 1\n"))
        .unwrap();
    // A read-only command shows what will be adopted, and writes nothing.
    let s = status(&dev);
    assert_eq!(s["slots"]["a"]["status"], "good");
    assert_eq!(s["pending"][0], "initialised");
    assert!(!data.join("state.toml").exists(), "status wrote the state");
    let (code, _, err) = sideload(&dev, &["booted"], None);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(status(&dev)["security_floor"], 1);
    assert_eq!(dev.audit()[0]["first_boot"], true);
}

#[test]
fn mark_good_and_rollback_answer_in_json() {
    let dev = Dev::new();
    let b = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &image("2.0.0", 1000)));
    assert_eq!(sideload(&dev, &["install", b.to_str().unwrap(), "--json"], None).0, Some(0));
    boot(&dev);
    let (code, out, err) = sideload(&dev, &["mark-good", "--json"], None);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["default"].as_str(), v["security_floor"].as_u64()), (Some("b"), Some(2)));
    // Slot a (security_version 1) is now below the floor: rollback is refused, in JSON too.
    let (code, out, err) = sideload(&dev, &["rollback", "--json"], None);
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["ok"].as_bool(), v["reason"].as_str()), (Some(false), Some("rollback")));
    assert!(err.contains("refused (rollback): slot a has security_version 1, below the floor 2"), "{err}");
}

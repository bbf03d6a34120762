//! The appliance end to end, in QEMU (OVMF; KVM when it really works here, else TCG — timeouts
//! are sized for TCG on two cores). One machine, booted again and again, so that the
//! scenarios share their boots:
//! a. a fresh disk boots: the health endpoint answers version 1 from slot a;
//! d. version 2 on a USB stick, the VM killed while the agent writes slot b: the next boot runs
//!    slot a, and the same stick (left in) then installs; the operator pulls it out once the
//!    install is armed, as each stick below;
//! e. on that stick too, a bundle signed by an untrusted key and one for another product:
//!    refused, the console says why;
//! b. the install reboots into slot b: version 2 runs, blessed, the floor raised;
//! c. version 3, whose controller never becomes healthy: its tries run out and the machine is
//!    back on slot b by itself.
//! Then the data partition is read from the disk, outside the VM: the audit chain is intact
//! and says all of that, and slot b keeps the provenance envelope its bundle carried.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{repo, run, xtask};

const BOOT: Duration = Duration::from_secs(300);

fn build(recipe: &str, images: &Path) -> PathBuf {
    let (code, out, err) = run(xtask().args(["--json", "build", recipe, "--offline", "--out"]).arg(images));
    assert_eq!(code, 0, "build {recipe}: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    PathBuf::from(v["out_dir"].as_str().unwrap())
}

/// A copy of a build directory without its bundle and signatures, for hostile variants.
fn copy_build(dir: &Path, dest: &Path, edit: impl Fn(String) -> String) {
    fs::create_dir_all(dest).unwrap();
    // Every payload the build made but its provenance (signed for the build, not the copy).
    for k in bundle::PAYLOAD_KINDS.iter().filter(|k| k.target != bundle::Target::Provenance) {
        fs::copy(dir.join(k.name), dest.join(k.name)).unwrap();
    }
    let m = fs::read_to_string(dir.join("build-manifest.toml")).unwrap();
    fs::write(dest.join("build-manifest.toml"), edit(m)).unwrap();
}

/// Version 9.0.0, signed by a key the appliance does not trust.
fn untrusted_bundle(v2: &Path, tmp: &Path) -> PathBuf {
    let d = tmp.join("untrusted");
    copy_build(v2, &d, |m| m.replacen("version = \"2.0.0\"", "version = \"9.0.0\"", 1));
    let stranger = trust::SecretKey::from_seed([0x5a; 32], [0x5a; 8]);
    let policy = trust::Policy::parse(&format!(
        "version = 1\nchannel = \"dev\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"stranger\", key = \"{}\" }}]\n",
        stranger.public().to_base64()
    ))
    .unwrap();
    let Ok(release::Assembled::Written { path, .. }) =
        release::assemble(&d, None, &policy, &[(trust::Role::Release, &stranger)], false)
    else {
        panic!("the untrusted bundle was not written")
    };
    let dest = tmp.join("evil-9.0.0.airlock");
    fs::rename(path, &dest).unwrap();
    dest
}

/// Version 2.0.0 of another product, signed with the (trusted) dev key.
fn other_product_bundle(v2: &Path, tmp: &Path) -> PathBuf {
    let d = tmp.join("other");
    copy_build(v2, &d, |m| m.replace("airlock.parking-controller.x86_64", "airlock.other-product.x86_64"));
    let key =
        |f: &str| trust::SecretKey::parse(&fs::read_to_string(repo().join("keys/dev").join(f)).unwrap(), None).unwrap();
    let (dev, approval) = (key("dev.key"), key("dev-approval.key"));
    let policy = trust::Policy::parse(&fs::read_to_string(repo().join("keys/dev/trust.toml")).unwrap()).unwrap();
    let keys = [(trust::Role::Release, &dev), (trust::Role::Approval, &approval)];
    let Ok(release::Assembled::Written { path, .. }) = release::assemble(&d, None, &policy, &keys, false) else {
        panic!("the other product's bundle was not written")
    };
    let dest = tmp.join("other-product-2.0.0.airlock");
    fs::rename(path, &dest).unwrap();
    dest
}

fn health(port: u16) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(10))
        .expect("the operator API through the forwarded port");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    serde_json::from_str(buf.split_once("\r\n\r\n").unwrap().1.trim()).unwrap()
}

/// The VM's whole disk as a raw file at `raw`.
fn raw_disk(workdir: &Path, raw: &Path) {
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(workdir.join("disk-overlay.qcow2"))
        .arg(raw)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The audit records and state on a VM's data partition, the chain checked.
fn audit_of(workdir: &Path, layout: image::disk::Layout) -> (sideload::AgentState, Vec<serde_json::Value>, String) {
    let (state, audit, provenance) = data_partition(workdir, layout);
    let log = workdir.join("audit.jsonl");
    fs::write(&log, &audit).unwrap();
    let st: sideload::AgentState = toml::from_str(&state).unwrap_or_else(|e| panic!("state.toml: {e}\n{state}"));
    let mut events = Vec::new();
    let checked = sideload::audit::check(&log, Some(&st.audit), |_, v| events.push(v.clone())).unwrap();
    assert_eq!(checked.broken, None, "the audit chain on the appliance is broken");
    (st, events, provenance)
}

/// The data partition of the VM's disk, read outside the VM: (state.toml, audit.jsonl, slot
/// b's provenance envelope).
fn data_partition(workdir: &Path, layout: image::disk::Layout) -> (String, String, String) {
    let raw = workdir.join("final.raw");
    raw_disk(workdir, &raw);
    let data = workdir.join("data.img");
    let mut src = fs::File::open(&raw).unwrap();
    let mut dst = fs::File::create(&data).unwrap();
    use std::io::{Read, Seek};
    src.seek(std::io::SeekFrom::Start(layout.data.0)).unwrap();
    std::io::copy(&mut src.take(layout.data.1), &mut dst).unwrap();
    // A fsync makes a record durable in the ext4 journal: replay it, as a mount would.
    let st = Command::new("e2fsck").args(["-y", "-E", "journal_only"]).arg(&data).status().unwrap();
    assert!(st.code().is_some_and(|c| c <= 1), "e2fsck -E journal_only: {st}");
    let cat = |p: &str| {
        let o = Command::new("debugfs").args(["-R", &format!("cat {p}")]).arg(&data).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    (
        cat("/var/upper/lib/airlock/state.toml"),
        cat("/var/upper/lib/airlock/audit.jsonl"),
        cat("/var/upper/lib/airlock/evidence/b/provenance.intoto.json"),
    )
}

#[test]
#[ignore = "system: needs root, QEMU with OVMF and the store filled by `cargo xtask fetch`; run by `cargo xtask test`"]
fn the_appliance_boots_updates_from_a_stick_survives_a_power_cut_and_falls_back_by_itself() {
    crate::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let v1 = build("recipes/parking-controller.toml", &images);
    let v2 = build("recipes/e2e-v2.toml", &images);
    let v3 = build("recipes/e2e-v3-unhealthy.toml", &images);
    let stick1 = tmp.path().join("stick1.img");
    vm::make_stick(
        &[
            v2.join("parking-controller-2.0.0.airlock"),
            untrusted_bundle(&v2, tmp.path()),
            other_product_bundle(&v2, tmp.path()),
        ],
        &stick1,
    )
    .unwrap();
    let stick2 = tmp.path().join("stick2.img");
    vm::make_stick(&[v3.join("parking-controller-3.0.0.airlock")], &stick2).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let workdir = tmp.path().join("vm");
    let accel = if vm::kvm_works(tmp.path()) { vm::Accel::Kvm } else { vm::Accel::Tcg };
    eprintln!("appliance test: QEMU with {}", accel.as_str());
    let mut opts = vm::Options {
        disk: v1.join("disk.qcow2"),
        workdir: workdir.clone(),
        resume: false,
        accel,
        memory_mib: 1024,
        cpus: 2,
        forward: Some(port),
        usb: None,
        interactive: false,
    };

    // a. A fresh disk: first boot adopts slot a, healthy, version 1.
    let mut m = vm::Vm::start(&opts).unwrap();
    let at = m.wait_for("slot a (1.0.0) is already good", 0, BOOT).unwrap();
    let healthy_after = m.elapsed();
    let h = health(port);
    assert_eq!((h["version"].as_str(), h["slot"].as_str()), (Some("1.0.0"), Some("a")), "{h}");

    // d. Version 2 on a stick; the power is cut while the agent writes slot b.
    m.plug_usb(&stick1).unwrap();
    let at = m.wait_for("sideload: writing 2.0.0 into slot b", at, BOOT).unwrap();
    let _ = at;
    m.power_cut().unwrap();

    // Power on again, the stick still in: the last good slot boots, then the same stick installs.
    opts.resume = true;
    opts.usb = Some(stick1.clone());
    let mut m = vm::Vm::start(&opts).unwrap();
    let at = m.wait_for("booted slot a (1.0.0, good)", 0, BOOT).unwrap();
    // e. The untrusted and the other product's bundles are refused, saying why.
    let console = |m: &vm::Vm| m.console();
    let at = m.wait_for("installed into slot b; trial boot armed", at, BOOT).unwrap();
    // The operator pulls the stick out once the install is done (before the firmware runs
    // again: OVMF under TCG was seen to hang in a reset with a USB stick in).
    m.unplug_usb("stick0").unwrap();
    let text = console(&m);
    assert!(
        text.contains("skipping evil-9.0.0.airlock: refused (bad-signature)"),
        "the console does not say why:\n{text}"
    );
    assert!(text.contains("skipping other-product-2.0.0.airlock: refused (bad-signature)"), "{text}");
    assert!(
        text.contains("product=\"airlock.other-product.x86_64\", expected \"airlock.parking-controller.x86_64\""),
        "{text}"
    );

    // b. It reboots into slot b on trial: healthy, blessed, the floor raised.
    let at = m.wait_for("slot b (2.0.0) blessed; security floor 2", at, BOOT).unwrap();
    let _ = at;
    let h = health(port);
    assert_eq!((h["version"].as_str(), h["slot"].as_str()), (Some("2.0.0"), Some("b")), "{h}");
    let text = console(&m);
    assert!(
        text.contains("airlock-verity: slot b verified against root hash"),
        "slot b was not opened through dm-verity"
    );

    // f. (booted at the end) A copy of this disk — b blessed, a the old good slot — with one
    // byte of slot b's filesystem changed, as someone with the disk for a minute would.
    m.power_cut().unwrap();
    let recipe = recipe::Recipe::load(&repo().join("recipes/parking-controller.toml"), &repo()).unwrap();
    let layout = image::disk::Layout::of(&recipe);
    let tampered = tmp.path().join("tampered");
    fs::create_dir_all(&tampered).unwrap();
    let tampered_disk = tampered.join("disk.raw");
    raw_disk(&workdir, &tampered_disk);
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().read(true).write(true).open(&tampered_disk).unwrap();
        let at = layout.root_b.0 + 10 * 4096 + 17;
        let mut byte = [0u8];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut byte).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[byte[0] ^ 0x01]).unwrap();
        f.sync_all().unwrap();
    }
    opts.usb = None;
    let mut m = vm::Vm::start(&opts).unwrap();
    let at = m.wait_for("slot b (2.0.0) is already good", 0, BOOT).unwrap();

    // c. Version 3, never healthy: three tries, then back on slot b by itself.
    let stick = m.plug_usb(&stick2).unwrap();
    let at = m.wait_for("installed into slot a; trial boot armed", at, BOOT).unwrap();
    m.unplug_usb(&stick).unwrap();
    let fallback_started = Instant::now();
    let at = m.wait_for("booted slot b (2.0.0, good)", at, Duration::from_secs(900)).unwrap();
    let fallback = fallback_started.elapsed();
    let tail = &console(&m)[at..];
    let _ = tail;
    let at = m.wait_for("slot b (2.0.0) is already good", at, BOOT).unwrap();
    let _ = at;
    let h = health(port);
    assert_eq!((h["version"].as_str(), h["slot"].as_str()), (Some("2.0.0"), Some("b")), "{h}");
    let text = console(&m);
    assert_eq!(text.matches("airlock-health: unhealthy after").count(), 3, "three failed tries of version 3");
    let hung_resets = m.hung_resets;
    m.power_cut().unwrap();
    eprintln!(
        "appliance test ({}): healthy {:.0} s after QEMU started; fallback after a bad update {:.0} s; guest resets that hung and were reset: {hung_resets}",
        accel.as_str(),
        healthy_after.as_secs_f64(),
        fallback.as_secs_f64()
    );

    // Outside the VM: the audit log on the data partition is intact and tells the story.
    let (st, events, provenance) = audit_of(&workdir, layout);
    // Slot b keeps the provenance its bundle carried, verified by the appliance's own policy:
    // byte for byte the envelope the build directory holds.
    assert_eq!(
        provenance,
        fs::read_to_string(v2.join("provenance.intoto.json")).unwrap(),
        "slot b's provenance on the appliance"
    );
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for want in [
        "initialised",
        "accepted",
        "interrupted",
        "refused",
        "installed",
        "trial-armed",
        "blessed",
        "health-failed",
        "fell-back",
    ] {
        assert!(names.contains(&want), "no `{want}` record in {names:?}");
    }
    assert_eq!(st.security_floor, 2, "version 3 never raised the floor");
    assert_eq!(st.slot(sideload::Slot::A).status, sideload::SlotStatus::Failed);
    assert_eq!(st.slot(sideload::Slot::B).status, sideload::SlotStatus::Good);
    let fell = events.iter().find(|e| e["event"] == "fell-back").unwrap();
    assert!(fell["reason"].as_str().unwrap().contains("never passed its health check"), "{fell}");

    // f. The tampered copy: the initrd checks slot b against its signed root hash, refuses it
    // before anything of it runs, and the box falls back to slot a by itself; the audit log
    // says why.
    let topts =
        vm::Options { disk: tampered_disk.clone(), workdir: tampered.join("vm"), resume: false, usb: None, ..opts };
    let started = Instant::now();
    let mut m = vm::Vm::start(&topts).unwrap();
    let at = m.wait_for("airlock-verity: slot b refused: dm-verity", 0, BOOT).unwrap();
    let at = m.wait_for("booted slot a (1.0.0, good)", at, BOOT).unwrap();
    let _ = m.wait_for("slot a (1.0.0) is already good", at, BOOT).unwrap();
    let fell_back_after = started.elapsed();
    let h = health(port);
    assert_eq!((h["version"].as_str(), h["slot"].as_str()), (Some("1.0.0"), Some("a")), "{h}");
    assert!(!m.console().contains("booted slot b"), "slot b ran:\n{}", m.console());
    m.power_cut().unwrap();
    let (st, events, _) = audit_of(&topts.workdir, layout);
    let rec = events.iter().find(|e| e["event"] == "integrity-failed").expect("an integrity-failed record");
    assert_eq!((rec["slot"].as_str(), rec["booted"].as_str()), (Some("b"), Some("a")), "{rec}");
    assert!(rec["reason"].as_str().unwrap().starts_with("dm-verity: its blocks do not match"), "{rec}");
    assert_eq!(st.slot(sideload::Slot::B).status, sideload::SlotStatus::Failed);
    assert_eq!(st.slot(sideload::Slot::A).status, sideload::SlotStatus::Good);
    eprintln!(
        "appliance test: a changed byte in slot b: back on slot a, healthy, {:.0} s after QEMU started",
        fell_back_after.as_secs_f64()
    );
}

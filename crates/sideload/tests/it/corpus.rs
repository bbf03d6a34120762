//! One fixture per attack of SECURITY.md (bundles, manifests, tar, compression), each asserting
//! its exact reason code and message, an unchanged active slot, unchanged device state and
//! boot state, and a `refused` audit record.

use std::fs;

use bundle::tar::BLOCK;
use sideload::{Error, InstallOptions, NoProgress};

use crate::{CHUNK, Dev, PRODUCT, bundle_bytes, image, parts};

/// Installs `bytes` and checks everything that must not change: refused with `code`, the
/// active slot, the device state and the boot state unchanged, no trial armed, a `refused`
/// audit record with that code — and `sideload verify` of the same bytes exits 1 with the same
/// reason. Returns the message.
pub fn refused(dev: &Dev, bytes: &[u8], code: &str) -> String {
    let (slot_a, state, boot) = (dev.slot("a"), dev.state(), dev.boot());
    let records = dev.audit().len();
    let err = dev.install(bytes).expect_err("accepted a hostile bundle");
    let Error::Refused(got, msg) = &err else { panic!("not a refusal: {err}") };
    assert_eq!(got.as_str(), code, "{msg}");
    assert_eq!(dev.slot("a"), slot_a, "the active slot changed");
    assert_eq!(dev.state(), state, "the device state changed");
    assert_eq!(dev.boot(), boot, "the boot state changed");
    let audit = dev.audit();
    // `refused`, after `accepted` when the bytes failed while being written.
    let new: Vec<&str> = audit[records..].iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert!(new == ["refused"] || new == ["accepted", "refused"], "{new:?}");
    let last = audit.last().unwrap();
    assert_eq!(last["event"], "refused");
    assert_eq!(last["reason"], code);
    // The read-only verifier says the same, and changes nothing.
    let path = dev.write_bundle("verify.airlock", bytes);
    let (exit, out, _) = crate::powercut::sideload(dev, &["verify", path.to_str().unwrap(), "--json"], None);
    assert_eq!(exit, Some(1), "verify accepted what install refused: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["reason"], code, "verify gave another reason: {out}");
    assert_eq!(dev.audit().len(), audit.len(), "verify wrote an audit record");
    msg.clone()
}

fn v2() -> Vec<u8> {
    image("2.0.0", 250_000)
}

/// A raw ustar header with any field a test wants wrong.
fn raw_header(name: &[u8], size: u64, typeflag: u8, mode: u64, magic: &[u8; 8], prefix: &[u8], link: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = typeflag;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..265].copy_from_slice(magic);
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    let sum: u64 = b.iter().enumerate().map(|(i, &x)| if (148..156).contains(&i) { 32 } else { u64::from(x) }).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

const USTAR: &[u8; 8] = b"ustar\x0000";

fn entry(name: &[u8], data: &[u8], typeflag: u8, mode: u64) -> Vec<u8> {
    let mut v = raw_header(name, data.len() as u64, typeflag, mode, USTAR, b"", b"");
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(BLOCK) * BLOCK, 0);
    v
}

/// The signed manifest and signature entries of a good v2 bundle, then `rest`.
fn signed_prefix_then(rest: &[u8]) -> Vec<u8> {
    let p = parts("2.0.0", 2, &v2());
    let mut out = entry(b"manifest.toml", &p.manifest_bytes, b'0', 0o644);
    for (n, t) in &p.sigs {
        out.extend(entry(n.as_bytes(), t.as_bytes(), b'0', 0o644));
    }
    out.extend_from_slice(rest);
    out
}

#[test]
fn a_good_bundle_installs_and_arms_a_trial() {
    let dev = Dev::new();
    let a = dev.install(&bundle_bytes("2.0.0", 2, &v2())).unwrap();
    assert_eq!(a.version, "2.0.0");
    assert!(crate::slot_holds(&dev.slot("b"), &v2()));
    assert!(crate::slot_holds(&dev.slot("a"), &dev.v1), "the active slot is untouched");
    let boot = dev.boot();
    assert_eq!(boot.trial, Some(sideload::Trial { slot: sideload::Slot::B, tries_left: 3, tries_done: 0 }));
    let events: Vec<String> = dev.audit().iter().map(|r| r["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events, ["initialised", "accepted", "installed", "trial-armed"]);
}

#[test]
fn truncated_anywhere_is_refused() {
    let dev = Dev::new();
    let good = bundle_bytes("2.0.0", 2, &v2());
    let sig_start = good.windows(14).position(|w| w == b"manifest.toml.").unwrap();
    let cases = [
        (0, "truncated at byte 0: the bundle ends inside the tar header"),
        (100, "truncated at byte 100: the bundle ends inside the tar header"),
        (600, "truncated at byte 600: the bundle ends inside the manifest"),
        (sig_start + 512 + 10, ""),
        (good.len() - 3000, ""),
        (good.len() - 1024, ""),
    ];
    for (n, want) in cases {
        let msg = refused(&dev, &good[..n], "truncated");
        if !want.is_empty() {
            assert_eq!(msg, want, "cut at {n}");
        }
    }
}

#[test]
fn extra_bytes_appended_are_refused() {
    let dev = Dev::new();
    let mut b = bundle_bytes("2.0.0", 2, &v2());
    let n = b.len();
    b.extend_from_slice(b"x");
    assert_eq!(
        refused(&dev, &b, "trailing-data"),
        format!("data after the end of the bundle (from byte {n}): a bundle ends at its end-of-archive marker")
    );
    let mut b = bundle_bytes("2.0.0", 2, &v2());
    b.extend_from_slice(&[0u8; 1024]);
    refused(&dev, &b, "trailing-data");
}

/// The reasons a flip at `i` may give: where the byte lies decides them.
fn flip_reason(i: usize, sig_start: usize, payload_start: usize, end: usize) -> &'static [&'static str] {
    if i < 512 {
        &["bad-tar", "truncated", "too-large", "undeclared-entry"]
    } else if i < sig_start {
        &["bad-signature"]
    } else if i < payload_start {
        &["bad-signature", "bad-tar", "truncated", "too-large", "undeclared-entry", "duplicate-entry"]
    } else if i < payload_start + 512 {
        &["bad-tar", "size-mismatch", "undeclared-entry", "duplicate-entry", "truncated"]
    } else if i < end {
        &["corrupt-payload", "hash-mismatch", "size-mismatch", "truncated", "trailing-data", "bad-tar"]
    } else {
        &["bad-tar", "trailing-data", "undeclared-entry", "duplicate-entry", "truncated"]
    }
}

#[test]
fn every_bit_position_flipped_anywhere_is_refused_with_its_reason_and_nothing_changes() {
    let dev = Dev::new();
    let p = parts("2.0.0", 2, &v2());
    let good = p.bytes();
    let sig_start = 512 + p.manifest_bytes.len().div_ceil(BLOCK) * BLOCK;
    let payload_start = good.len() - 2 * BLOCK - p.payload.len().div_ceil(BLOCK) * BLOCK - BLOCK;
    let end = good.len() - 2 * BLOCK;
    let mut tried = 0;
    // Every bit position class at offsets spread over every region: headers, the manifest,
    // the signatures, the payload, the end marker.
    for i in (0..good.len()).step_by(1021).chain([0, 100, 156, 257, 512, sig_start, payload_start, end, good.len() - 1])
    {
        let bit = tried % 8;
        tried += 1;
        let mut b = good.clone();
        b[i] ^= 1 << bit;
        let (slot_a, state) = (dev.slot("a"), dev.state());
        let e = dev.install(&b).expect_err("a flipped bundle was accepted");
        let allowed = flip_reason(i, sig_start, payload_start, end);
        assert!(allowed.contains(&e.code()), "flip at {i} bit {bit}: {} ({e})", e.code());
        assert_eq!((dev.slot("a"), dev.state()), (slot_a, state), "flip at {i} bit {bit} changed the device");
        assert_eq!(dev.boot().trial, None, "flip at {i} bit {bit} armed a trial");
        let last = dev.audit().pop().unwrap();
        assert_eq!((last["event"].as_str(), last["reason"].as_str()), (Some("refused"), Some(e.code())));
    }
    assert!(tried > 60);
}

#[test]
fn a_payload_swapped_under_a_valid_manifest_never_reaches_the_slot() {
    let dev = Dev::new();
    let good = v2();
    let mut p = parts("2.0.0", 2, &good);
    // Another image, differing in its third chunk, under the manifest of the first.
    let mut other = good.clone();
    let bad_at = 2 * CHUNK as usize + 5;
    other[bad_at] ^= 0xff;
    let mut z = Vec::new();
    let q = bundle::compress_payload("root.img", bundle::Target::Root, &other[..], &mut z, CHUNK).unwrap();
    p.manifest.payloads[0].compressed_size = q.compressed_size;
    p.payload = z;
    p.resign();
    let msg = refused(&dev, &p.bytes(), "hash-mismatch");
    assert_eq!(msg, "root.img.zst: chunk 2 does not match its signed hash");
    let b = dev.slot("b");
    let chunk = 2 * CHUNK as usize..3 * CHUNK as usize;
    assert!(b[chunk].iter().all(|&x| x == 0), "a byte of the bad chunk reached the inactive slot");
}

#[test]
fn a_whole_payload_digest_that_disagrees_with_its_chunks_is_refused_before_arming() {
    let dev = Dev::new();
    let mut p = parts("2.0.0", 2, &v2());
    p.manifest.payloads[0].sha256 = "b".repeat(64);
    p.resign();
    assert_eq!(refused(&dev, &p.bytes(), "hash-mismatch"), "root.img.zst: does not match its signed sha256");
    assert_eq!(dev.state().slot(sideload::Slot::B).status, sideload::SlotStatus::Empty);
}

#[test]
fn an_empty_payload_is_refused() {
    let dev = Dev::new();
    let p = parts("2.0.0", 2, &[]);
    assert_eq!(
        refused(&dev, &p.bytes(), "empty-payload"),
        "payload `root.img` is empty: a bundle installs something or is refused"
    );
}

#[test]
fn the_stick_vanishing_mid_read_leaves_the_slot_discarded_and_nothing_armed() {
    let dev = Dev::with_slot_size(8 << 20);
    let img = image("2.0.0", 6 << 20);
    let path = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &img));
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sideload"));
    c.arg("--root")
        .arg(dev.root())
        .args(["install", path.to_str().unwrap()])
        .env("AIRLOCK_FAILPOINT", "mid-write:stop");
    let mut child = c.stderr(std::process::Stdio::piped()).spawn().unwrap();
    crate::wait_stopped(&mut child);
    // The stick goes away: the rest of the file is gone.
    fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(3 << 20).unwrap();
    std::process::Command::new("kill").args(["-CONT", &child.id().to_string()]).status().unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused (truncated)"));
    assert_eq!(
        dev.state().slot(sideload::Slot::B).status,
        sideload::SlotStatus::Empty,
        "the half-written slot is recorded empty"
    );
    assert_eq!(dev.boot().trial, None);
    assert!(crate::slot_holds(&dev.slot("a"), &dev.v1));
}

#[test]
fn a_stick_of_junk_files_is_scanned_in_one_pass_and_every_bundle_file_recorded() {
    let dev = Dev::new();
    let stick = dev.dir.path().join("stick");
    fs::create_dir(&stick).unwrap();
    for i in 0..2000 {
        fs::write(stick.join(format!("junk-{i:04}.airlock")), b"junk").unwrap();
        fs::write(stick.join(format!("photo-{i:04}.jpg")), b"x").unwrap();
    }
    fs::write(stick.join("zz-2.0.0.airlock"), bundle_bytes("2.0.0", 2, &v2())).unwrap();
    let a = dev.agent().install_dir(&stick, InstallOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(a.version, "2.0.0");
    let refusals = dev.audit().iter().filter(|r| r["event"] == "refused").count();
    assert_eq!(refusals, 2000);
}

#[test]
fn a_valid_signature_for_another_product_is_refused() {
    let dev = Dev::new();
    let mut p = parts("2.0.0", 2, &v2());
    p.manifest.product = "airlock.other-product".into();
    p.resign();
    let msg = refused(&dev, &p.bytes(), "bad-signature");
    assert!(
        msg.contains("trusted comment says product=\"airlock.other-product\", expected \"airlock.test.x86_64\""),
        "{msg}"
    );
    // Signed for this product in the comment, another in the manifest.
    let mut p = parts("2.0.0", 2, &v2());
    p.manifest.product = "airlock.other-product".into();
    p.manifest_bytes = toml::to_string(&p.manifest).unwrap().into_bytes();
    p.sign(&crate::key(), PRODUCT, "2.0.0");
    assert_eq!(
        refused(&dev, &p.bytes(), "wrong-product"),
        "bundle is for product `airlock.other-product`, this device is `airlock.test.x86_64`"
    );
}

#[test]
fn unsigned_or_wrongly_signed_bundles_are_refused() {
    let dev = Dev::new();
    let mut p = parts("2.0.0", 2, &v2());
    p.sigs.clear();
    assert_eq!(
        refused(&dev, &p.bytes(), "bad-signature"),
        "signatures do not meet the trust policy: no signatures (release 0/1)"
    );
    let stranger = trust::SecretKey::from_seed([9; 32], [9; 8]);
    p.sign(&stranger, PRODUCT, "2.0.0");
    let msg = refused(&dev, &p.bytes(), "bad-signature");
    assert!(msg.contains(&format!("key {} is not in the trust policy", stranger.id())), "{msg}");
}

#[test]
fn older_and_same_versions_are_refused_and_the_floor_rises_only_after_mark_good() {
    let dev = Dev::new();
    assert_eq!(
        refused(&dev, &bundle_bytes("0.9.0", 0, &image("0.9.0", 1000)), "rollback"),
        "security_version 0 is below this device's floor 1"
    );
    assert_eq!(
        refused(&dev, &bundle_bytes("1.0.0", 1, &image("x", 1000)), "same-version"),
        "version 1.0.0 is already running (use --reinstall)"
    );
    assert!(
        refused(&dev, &bundle_bytes("0.9.1", 1, &image("y", 1000)), "older-version")
            .starts_with("version 0.9.1 is older")
    );

    dev.install(&bundle_bytes("2.0.0", 2, &v2())).unwrap();
    assert_eq!(dev.state().security_floor, 1, "the floor must not rise before the new slot is good");
    dev.power_on();
    dev.agent().mark_good().unwrap();
    assert_eq!(dev.state().security_floor, 2);
    // v1.5 with security_version 1 is now below the floor, even with --downgrade.
    let p = dev.write_bundle("old.airlock", &bundle_bytes("1.5.0", 1, &image("1.5", 1000)));
    let e = dev.agent().install(&p, InstallOptions { reinstall: false, downgrade: true }, &mut NoProgress).unwrap_err();
    assert_eq!(e.to_string(), "refused (rollback): security_version 1 is below this device's floor 2");
}

#[test]
fn a_payload_larger_than_the_slot_is_refused() {
    let dev = Dev::new();
    let big = image("2.0.0", crate::SLOT_SIZE as usize + 1);
    assert_eq!(
        refused(&dev, &bundle_bytes("2.0.0", 2, &big), "too-large-for-slot"),
        format!("payload root.img is {} bytes, slot b holds {}", crate::SLOT_SIZE + 1, crate::SLOT_SIZE)
    );
}

#[test]
fn a_declared_size_that_disagrees_with_the_entry_is_refused() {
    let dev = Dev::new();
    // The entry holds one byte more than the compressed stream.
    let mut p = parts("2.0.0", 2, &v2());
    p.manifest.payloads[0].compressed_size += 1;
    p.payload.push(0x42);
    p.resign();
    let msg = refused(&dev, &p.bytes(), "corrupt-payload");
    assert!(msg.starts_with("root.img.zst: corrupt compressed data"), "{msg}");

    let mut p = parts("2.0.0", 2, &v2());
    p.manifest.payloads[0].size -= 10;
    p.manifest.payloads[0].chunks = recompute_chunks(&v2()[..v2().len() - 10]);
    p.resign();
    assert_eq!(
        refused(&dev, &p.bytes(), "size-mismatch"),
        "root.img.zst: the signed manifest declares 249990 bytes, the bundle holds 249991"
    );
}

fn recompute_chunks(data: &[u8]) -> Vec<String> {
    use sha2::Digest;
    data.chunks(CHUNK as usize).map(|c| hex::encode(sha2::Sha256::digest(c))).collect()
}

#[test]
fn a_manifest_of_absurd_size_or_unknown_format_is_refused() {
    let dev = Dev::new();
    let mut b = raw_header(b"manifest.toml", 3 << 20, b'0', 0o644, USTAR, b"", b"");
    b.extend(vec![b'#'; 4096]);
    assert_eq!(refused(&dev, &b, "too-large"), "manifest is 3145728 bytes, more than the 2097152 accepted");

    let mut p = parts("2.0.0", 2, &v2());
    let text = String::from_utf8(p.manifest_bytes).unwrap();
    assert!(text.contains("format = 1\n"), "{text}");
    p.manifest_bytes = text.replace("format = 1\n", "format = 5\n").into_bytes();
    p.sign(&crate::key(), PRODUCT, "2.0.0");
    assert_eq!(
        refused(&dev, &p.bytes(), "bad-manifest"),
        "manifest: format 5 is not known (this agent reads formats 1 to 4)"
    );

    let mut p = parts("2.0.0", 2, &v2());
    p.manifest.hash = "md5".into();
    p.resign();
    assert_eq!(refused(&dev, &p.bytes(), "bad-manifest"), "manifest: hash algorithm `md5` is not known (sha256 is)");

    let mut p = parts("2.0.0", 2, &v2());
    p.manifest.payloads[0].sha256 = p.manifest.payloads[0].sha256.to_uppercase();
    p.resign();
    assert_eq!(
        refused(&dev, &p.bytes(), "bad-manifest"),
        "manifest: payload `root.img`: digests must be 64 lowercase hex digits"
    );
    let mut p = parts("2.0.0", 2, &v2());
    p.manifest.payloads[0].chunks[0].pop();
    p.resign();
    refused(&dev, &p.bytes(), "bad-manifest");

    let mut p = parts("2.0.0", 2, &v2());
    let deep = format!("{}{}", "x = ".to_string() + &"[".repeat(5000), "]".repeat(5000));
    p.manifest_bytes = format!("{}\n{deep}\n", String::from_utf8(p.manifest_bytes).unwrap()).into_bytes();
    p.sign(&crate::key(), PRODUCT, "2.0.0");
    refused(&dev, &p.bytes(), "bad-manifest");
}

#[test]
fn a_bundle_path_that_is_not_a_regular_file_is_refused() {
    let dev = Dev::new();
    let good = dev.write_bundle("good.airlock", &bundle_bytes("2.0.0", 2, &v2()));
    let link = dev.dir.path().join("link.airlock");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let fifo = dev.dir.path().join("fifo.airlock");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for p in [link, fifo, dev.dir.path().to_path_buf(), "/dev/zero".into()] {
        let e = dev.agent().install(&p, InstallOptions::default(), &mut NoProgress).unwrap_err();
        assert_eq!(e.code(), "not-a-file", "{}: {e}", p.display());
    }
    assert!(crate::slot_holds(&dev.slot("a"), &dev.v1));
}

#[test]
fn entry_names_with_newlines_or_escapes_cannot_forge_log_lines() {
    let dev = Dev::new();
    let b = signed_prefix_then(&entry(b"root.img.zst\n{\"event\":\"blessed\"}", b"x", b'0', 0o644));
    let msg = refused(&dev, &b, "bad-tar");
    assert!(!msg.contains('\n'), "{msg}");
    let b = signed_prefix_then(&entry(b"\x1b[2Jroot", b"x", b'0', 0o644));
    let msg = refused(&dev, &b, "bad-tar");
    assert!(!msg.contains('\x1b') && msg.contains("\\u{1b}"), "{msg}");
    let raw = fs::read_to_string(dev.root().join("data/audit.jsonl")).unwrap();
    assert!(!raw.contains('\x1b'));
    assert_eq!(raw.lines().count(), dev.audit().len(), "one line per record");
}

#[test]
fn hostile_tar_entries_are_refused() {
    let dev = Dev::new();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (entry(b"../x", b"x", b'0', 0o644), "name starts with `.`"),
        (entry(b"/abs", b"x", b'0', 0o644), "name holds `/`"),
        (entry(b"a/../../x", b"x", b'0', 0o644), "name holds `/`"),
        (entry(b".", b"", b'0', 0o644), "name starts with `.`"),
        (raw_header(b"s", 0, b'2', 0o777, USTAR, b"", b"/"), "link entry refused"),
        (raw_header(b"h", 0, b'1', 0o644, USTAR, b"", b"/etc/passwd"), "link entry refused"),
        (raw_header(b"dev", 0, b'3', 0o644, USTAR, b"", b""), "device node refused"),
        (raw_header(b"fifo", 0, b'6', 0o644, USTAR, b"", b""), "FIFO refused"),
        (raw_header(b"sock", 0, b'7', 0o644, USTAR, b"", b""), "entry type '7' refused"),
        (entry(b"root.img.zst", b"x", b'0', 0o4755), "setuid, setgid or sticky bit"),
        (entry(b"pax", b"30 path=root.img.zst\n", b'x', 0o644), "PAX extended header refused"),
        (entry(b"././@LongLink", b"root.img.zst", b'L', 0o644), "GNU long-name header refused"),
        (raw_header(b"root.img.zst", 0, b'S', 0o644, USTAR, b"", b""), "sparse entry refused"),
        (raw_header(b"root.img.zst", 0, b'0', 0o644, b"ustar  \0", b"", b""), "not a POSIX ustar header"),
        (raw_header(b"zst", 0, b'0', 0o644, USTAR, b"root.img.", b""), "a prefix field"),
    ];
    for (hostile, want) in cases {
        let msg = refused(&dev, &signed_prefix_then(&hostile), "bad-tar");
        assert!(msg.contains(want), "{want}: {msg}");
    }
    // The same at the very start, where the manifest belongs.
    let msg = refused(&dev, &raw_header(b"s", 0, b'2', 0o777, USTAR, b"", b"/"), "bad-tar");
    assert!(msg.contains("link entry refused"), "{msg}");
}

#[test]
fn duplicate_and_undeclared_entries_are_refused() {
    let dev = Dev::new();
    let p = parts("2.0.0", 2, &v2());
    let good = p.bytes();
    let end = good.len() - 2 * BLOCK;
    // A second manifest where the payload belongs.
    let b = signed_prefix_then(&entry(b"manifest.toml", b"format = 1", b'0', 0o644));
    assert_eq!(refused(&dev, &b, "duplicate-entry"), "entry `manifest.toml` appears twice");
    // The payload twice.
    let payload_entry = &good[good.len() - 2 * BLOCK - (p.payload.len().div_ceil(BLOCK) * BLOCK) - BLOCK..end];
    let mut b = good[..end].to_vec();
    b.extend_from_slice(payload_entry);
    b.extend_from_slice(&[0u8; 2 * BLOCK]);
    assert_eq!(refused(&dev, &b, "duplicate-entry"), "entry `root.img.zst` appears twice");
    // An extra, undeclared file.
    let mut b = good[..end].to_vec();
    b.extend(entry(b"evil.sh", b"#!/bin/sh\n", b'0', 0o755));
    b.extend_from_slice(&[0u8; 2 * BLOCK]);
    assert_eq!(refused(&dev, &b, "undeclared-entry"), "entry `evil.sh` is not declared by the signed manifest");
}

#[test]
fn a_zstd_bomb_or_a_huge_window_is_refused() {
    let dev = Dev::new();
    // Declares 1000 bytes, expands to 100 MB of zeros.
    let mut p = parts("2.0.0", 2, &v2());
    let bomb = zstd::bulk::compress(&vec![0u8; 100 << 20], 19).unwrap();
    let zeros = vec![0u8; 1000];
    p.manifest.payloads[0].size = 1000;
    p.manifest.payloads[0].compressed_size = bomb.len() as u64;
    p.manifest.payloads[0].sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&zeros));
    p.manifest.payloads[0].chunks = recompute_chunks(&zeros);
    p.payload = bomb;
    p.resign();
    assert_eq!(
        refused(&dev, &p.bytes(), "size-mismatch"),
        "root.img.zst: the signed manifest declares 1000 bytes, the bundle holds 1001"
    );

    // A frame that asks for a 2 GiB window.
    let data = v2();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.window_log(31).unwrap();
    enc.long_distance_matching(true).unwrap();
    std::io::Write::write_all(&mut enc, &data).unwrap();
    let huge = enc.finish().unwrap();
    let mut p = parts("2.0.0", 2, &data);
    p.manifest.payloads[0].compressed_size = huge.len() as u64;
    p.payload = huge;
    p.resign();
    let msg = refused(&dev, &p.bytes(), "corrupt-payload");
    assert!(msg.contains("Frame requires too much memory"), "{msg}");
}

#[test]
fn several_bundles_on_a_stick_the_newest_acceptable_wins_and_bad_ones_never_block() {
    let dev = Dev::new();
    let stick = dev.dir.path().join("stick");
    fs::create_dir(&stick).unwrap();
    fs::write(stick.join("a-2.0.0.airlock"), bundle_bytes("2.0.0", 2, &v2())).unwrap();
    fs::write(stick.join("b-3.0.0.airlock"), bundle_bytes("3.0.0", 3, &image("3.0.0", 1000))).unwrap();
    let mut evil = bundle_bytes("9.0.0", 9, &image("9", 1000));
    let n = evil.len();
    evil[n / 2] ^= 1;
    fs::write(stick.join("c-9.0.0.airlock"), &evil).unwrap();
    let mut forged = parts("8.0.0", 8, &image("8", 1000));
    forged.sign(&trust::SecretKey::from_seed([7; 32], [7; 8]), PRODUCT, "8.0.0");
    fs::write(stick.join("d-8.0.0.airlock"), forged.bytes()).unwrap();
    fs::write(stick.join("notes.txt"), b"ignored").unwrap();
    let a = dev.agent().install_dir(&stick, InstallOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(a.version, "3.0.0");
    assert!(crate::slot_holds(&dev.slot("b"), &image("3.0.0", 1000)));
    let refusals = dev.audit().iter().filter(|r| r["event"] == "refused").count();
    assert_eq!(refusals, 2, "the forged and the corrupt bundle are recorded");
}

#[test]
fn a_bundle_of_another_channel_is_refused() {
    let dev = Dev::new();
    let mut p = parts("2.0.0", 2, &v2());
    p.manifest.channel = product::Channel::Dev;
    p.resign();
    assert_eq!(
        refused(&dev, &p.bytes(), "wrong-channel"),
        "bundle is for channel `dev`, this device follows `release`"
    );
}

#[test]
fn nothing_installs_while_the_booted_slot_is_on_trial() {
    let dev = Dev::new();
    dev.install(&bundle_bytes("2.0.0", 2, &v2())).unwrap();
    dev.power_on();
    let msg = refused(&dev, &bundle_bytes("3.0.0", 3, &image("3.0.0", 1000)), "trial-in-progress");
    assert!(msg.starts_with("slot b is on a trial boot"), "{msg}");
}

#[test]
fn a_rollback_with_nothing_good_to_go_back_to_is_refused() {
    let dev = Dev::new();
    let (slot_a, state, boot) = (dev.slot("a"), dev.state(), dev.boot());
    let e = dev.agent().rollback().unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        ("no-good-slot", "refused (no-good-slot): slot b is empty: nothing good to roll back to".into())
    );
    assert_eq!((dev.slot("a"), dev.state(), dev.boot()), (slot_a, state, boot));
    let last = dev.audit().pop().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["reason"].as_str(), last["action"].as_str()),
        (Some("refused"), Some("no-good-slot"), Some("rollback"))
    );
}

#[test]
fn a_stick_with_no_acceptable_bundle_is_refused_as_a_whole() {
    let dev = Dev::new();
    let stick = dev.dir.path().join("stick");
    fs::create_dir(&stick).unwrap();
    fs::write(stick.join("old.airlock"), bundle_bytes("0.5.0", 0, &image("0.5", 1000))).unwrap();
    fs::write(stick.join("junk.airlock"), b"junk").unwrap();
    fs::write(stick.join("notes.txt"), b"not a bundle").unwrap();
    fs::write(stick.join("airlock"), b"not a bundle either").unwrap();
    let (slot_a, state) = (dev.slot("a"), dev.state());
    let e = dev.agent().install_dir(&stick, InstallOptions::default(), &mut NoProgress).unwrap_err();
    assert_eq!(e.code(), "no-acceptable-bundle");
    assert!(e.to_string().contains("(2 bundle file(s) refused, 2 other file(s) ignored)"), "{e}");
    assert_eq!((dev.slot("a"), dev.state()), (slot_a, state));
    let reasons: Vec<String> = dev
        .audit()
        .iter()
        .filter(|r| r["event"] == "refused")
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["truncated", "rollback", "no-acceptable-bundle"]);
}

#[test]
fn a_slot_that_reads_back_differently_is_never_armed() {
    let dev = Dev::new();
    let path = dev.write_bundle("v2.airlock", &bundle_bytes("2.0.0", 2, &v2()));
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sideload"));
    c.arg("--root")
        .arg(dev.root())
        .args(["install", path.to_str().unwrap()])
        .env("AIRLOCK_FAILPOINT", "after-sync:stop");
    let mut child = c.stderr(std::process::Stdio::piped()).spawn().unwrap();
    crate::wait_stopped(&mut child);
    // The disk lies: one written byte is not what comes back.
    let slot = dev.root().join("slots/root-b");
    let mut bytes = fs::read(&slot).unwrap();
    bytes[70_000] ^= 1;
    fs::write(&slot, bytes).unwrap();
    std::process::Command::new("kill").args(["-CONT", &child.id().to_string()]).status().unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("refused (readback-mismatch): slot b reads back differently from what was written"), "{err}");
    assert_eq!(dev.boot().trial, None, "a slot that reads back wrong was armed");
    assert_eq!(dev.state().slot(sideload::Slot::B).status, sideload::SlotStatus::Empty);
    assert_eq!(dev.audit().pop().unwrap()["reason"], "readback-mismatch");
}

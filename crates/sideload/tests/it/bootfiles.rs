//! A bundle with the slot's own kernel and initrd: both land beside the slot's boot entry on
//! the ESP, byte for byte, and the audit record says what was written; a payload exactly the
//! size of the slot fits.

use std::fs;

use bundle::{Manifest, Target};
use trust::{Prehash, SignatureFile};

use crate::{CHUNK, Dev, PRODUCT, SLOT_SIZE, image, key};

/// A signed bundle of `parts` (name, target, bytes), in order.
fn bundle_of(version: &str, parts: &[(&str, Target, &[u8])]) -> Vec<u8> {
    bundle_with(version, parts, None)
}

/// The same, format 3 with the slot's kernel command line when `cmdline` is given.
fn bundle_with(version: &str, parts: &[(&str, Target, &[u8])], cmdline: Option<&str>) -> Vec<u8> {
    signed_bundle(version, if cmdline.is_some() { 3 } else { 2 }, parts, cmdline, None)
}

/// A signed bundle of format `format`: `parts` in order, the slot's command line and verity
/// table as given (what the release assembly writes, made here without its checks of a build).
pub fn signed_bundle(
    version: &str,
    format: u32,
    parts: &[(&str, Target, &[u8])],
    cmdline: Option<&str>,
    verity: Option<bundle::Verity>,
) -> Vec<u8> {
    let mut zst = Vec::new();
    let mut payloads = Vec::new();
    for (name, target, bytes) in parts {
        let mut z = Vec::new();
        payloads.push(bundle::compress_payload(name, *target, *bytes, &mut z, CHUNK).unwrap());
        zst.push(z);
    }
    let m = Manifest {
        format,
        product: PRODUCT.into(),
        version: product::Version::parse(version).unwrap(),
        security_version: 2,
        channel: product::Channel::Release,
        previous_manifest: String::new(),
        build_manifest: format!("sha256:{}", "0".repeat(64)),
        hash: "sha256".into(),
        chunk_size: CHUNK,
        cmdline: cmdline.map(str::to_string),
        verity,
        payloads,
    };
    let text = m.to_toml().unwrap();
    let comment = format!("airlock product={PRODUCT} version={version} role=release file=manifest.toml");
    let sig = SignatureFile::sign(&key(), &Prehash::of_bytes(text.as_bytes()), &comment).unwrap();
    let mut out = Vec::new();
    let mut readers: Vec<&[u8]> = zst.iter().map(|z| &z[..]).collect();
    let mut list: Vec<(&bundle::Payload, &mut dyn std::io::Read)> =
        m.payloads.iter().zip(readers.iter_mut()).map(|(p, r)| (p, r as &mut dyn std::io::Read)).collect();
    bundle::write_bundle(
        &mut out,
        text.as_bytes(),
        &[(format!("manifest.toml.{}.minisig", key().id()), sig.to_file())],
        &mut list,
    )
    .unwrap();
    out
}

#[test]
fn the_slots_kernel_and_initrd_land_beside_its_boot_entry() {
    let dev = Dev::new();
    let (root, kernel, initrd) = (image("2.0.0", 300_000), image("kernel", 150_000), image("initrd", 90_000));
    let b = bundle_of(
        "2.0.0",
        &[
            ("root.img", Target::Root, &root),
            ("vmlinuz", Target::Kernel, &kernel),
            ("initrd.img", Target::Initrd, &initrd),
        ],
    );
    dev.install(&b).unwrap();
    let esp = dev.root().join("esp/b");
    assert_eq!(fs::read(esp.join("vmlinuz")).unwrap(), kernel);
    assert_eq!(fs::read(esp.join("initrd.img")).unwrap(), initrd);
    assert!(!dev.root().join("esp/a/vmlinuz").exists(), "the running slot's boot files were touched");
    let names: Vec<String> =
        fs::read_dir(&esp).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "a temp file was left: {names:?}");
    let installed = dev.audit().into_iter().rfind(|r| r["event"] == "installed").unwrap();
    assert_eq!(
        (installed["boot_files"].as_u64(), installed["provenance"].as_bool()),
        (Some(2), Some(false)),
        "{installed}"
    );

    // A root-only bundle writes no boot file, and says so.
    let dev = Dev::new();
    dev.install(&bundle_of("2.0.0", &[("root.img", Target::Root, &root)])).unwrap();
    let installed = dev.audit().into_iter().rfind(|r| r["event"] == "installed").unwrap();
    assert_eq!(installed["boot_files"].as_u64(), Some(0), "{installed}");
    assert!(!dev.root().join("esp/b/vmlinuz").exists());
}

#[test]
fn a_payload_exactly_the_size_of_the_slot_fits_and_one_byte_more_does_not() {
    let dev = Dev::new();
    let root = image("2.0.0", SLOT_SIZE as usize);
    dev.install(&bundle_of("2.0.0", &[("root.img", Target::Root, &root)])).unwrap();
    assert_eq!(dev.slot("b"), root);
    let dev = Dev::new();
    let over = image("2.0.0", SLOT_SIZE as usize + 1);
    let msg =
        crate::corpus::refused(&dev, &bundle_of("2.0.0", &[("root.img", Target::Root, &over)]), "too-large-for-slot");
    assert!(msg.contains(&format!("{} bytes", SLOT_SIZE + 1)), "{msg}");
}

#[test]
fn a_device_that_boots_each_slots_own_kernel_refuses_a_bundle_without_both_before_anything_changes() {
    let (root, kernel, initrd) = (image("2.0.0", 300_000), image("kernel", 150_000), image("initrd", 90_000));
    let appliance = || {
        let dev = Dev::new();
        fs::write(dev.root().join(sideload::device::SLOT_KERNELS), b"").unwrap();
        dev
    };
    type Parts<'a> = Vec<(&'a str, Target, &'a [u8])>;
    let cases: [(&str, Parts); 3] = [
        ("the root alone", vec![("root.img", Target::Root, &root)]),
        ("no initrd", vec![("root.img", Target::Root, &root), ("vmlinuz", Target::Kernel, &kernel)]),
        ("no kernel", vec![("root.img", Target::Root, &root), ("initrd.img", Target::Initrd, &initrd)]),
    ];
    for (what, parts) in cases {
        let dev = appliance();
        let msg = crate::corpus::refused(&dev, &bundle_of("2.0.0", &parts), "bad-manifest");
        assert!(msg.contains("must carry both"), "{what}: {msg}");
        assert!(!dev.root().join("esp/b/vmlinuz").exists() && !dev.root().join("esp/b/initrd.img").exists(), "{what}");
    }
    let dev = appliance();
    dev.install(&bundle_of(
        "2.0.0",
        &[
            ("root.img", Target::Root, &root),
            ("vmlinuz", Target::Kernel, &kernel),
            ("initrd.img", Target::Initrd, &initrd),
        ],
    ))
    .unwrap();
    assert_eq!(fs::read(dev.root().join("esp/b/vmlinuz")).unwrap(), kernel);
}

#[test]
fn a_slot_larger_than_its_payload_takes_it_and_keeps_the_rest() {
    let dev = Dev::new();
    let root = image("2.0.0", SLOT_SIZE as usize / 2 + 1);
    dev.install(&bundle_of("2.0.0", &[("root.img", Target::Root, &root)])).unwrap();
    let slot = dev.slot("b");
    assert_eq!(slot.len() as u64, SLOT_SIZE, "the slot keeps its size");
    assert_eq!(&slot[..root.len()], &root[..]);
    let installed = dev.audit().into_iter().rfind(|r| r["event"] == "installed").unwrap();
    assert_eq!(installed["size"].as_u64(), Some(root.len() as u64), "{installed}");
}

#[test]
fn an_install_writes_the_slots_whole_boot_entry_and_every_run_puts_back_what_was_edited() {
    let dev = Dev::new();
    let entries = dev.root().join("esp/loader/entries");
    let (root, kernel, initrd) = (image("2.0.0", 300_000), image("kernel", 150_000), image("initrd", 90_000));
    let parts = |root: &[u8]| -> Vec<u8> {
        bundle_with(
            "2.0.0",
            &[
                ("root.img", Target::Root, root),
                ("vmlinuz", Target::Kernel, &kernel),
                ("initrd.img", Target::Initrd, &initrd),
            ],
            Some("rootfstype=squashfs ro quiet panic=10"),
        )
    };
    // Slot b's entry edited on the ESP before the update: a root shell, slot a's kernel.
    fs::create_dir_all(&entries).unwrap();
    fs::write(
        entries.join("slot-b+0.conf"),
        "title b\nversion 0\nlinux /a/vmlinuz\ninitrd /b/initrd.img\noptions root=PARTLABEL=root-b ro init=/bin/sh\n",
    )
    .unwrap();
    dev.install(&parts(&root)).unwrap();
    let entry = fs::read_to_string(entries.join("slot-b+0.conf")).unwrap();
    let body: Vec<&str> = entry
        .lines()
        .filter(|l| !l.starts_with("title ") && !l.starts_with("sort-key ") && !l.starts_with("version "))
        .collect();
    assert_eq!(
        body,
        [
            "linux /b/vmlinuz",
            "initrd /b/initrd.img",
            "options root=PARTLABEL=root-b rootfstype=squashfs ro quiet panic=10"
        ],
        "the edited entry survived the update:\n{entry}"
    );
    let installed = dev.audit().into_iter().rfind(|r| r["event"] == "installed").unwrap();
    assert_eq!(installed["boot_entry"], true, "{installed}");
    let st = dev.state();
    let rec = st.slot(sideload::Slot::B).boot.unwrap();
    assert_eq!(rec.cmdline, "rootfstype=squashfs ro quiet panic=10");
    assert_eq!(rec.kernel, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&kernel)));

    // Edited again after the install: the next run of the agent writes it whole again, and
    // says what it found.
    let edited = entry.replace("panic=10", "panic=10 init=/bin/sh");
    fs::write(entries.join("slot-b+0.conf"), &edited).unwrap();
    let (code, _, err) = crate::powercut::sideload(&dev, &["booted"], None);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fs::read_to_string(entries.join("slot-b+0.conf")).unwrap(), entry);
    let restored = dev.audit().into_iter().rfind(|r| r["event"] == "boot-entry-restored").unwrap();
    assert_eq!(restored["slot"], "b");
    assert!(restored["found"].to_string().contains("init=/bin/sh"), "{restored}");
    // Read-only commands change nothing, however the ESP looks.
    fs::write(entries.join("slot-b+0.conf"), &edited).unwrap();
    let (code, _, _) = crate::powercut::sideload(&dev, &["status"], None);
    assert_eq!(code, Some(0));
    assert_eq!(fs::read_to_string(entries.join("slot-b+0.conf")).unwrap(), edited);
    // A second entry for the slot is an edit too.
    fs::write(entries.join("slot-b+3.conf"), "linux /b/vmlinuz\noptions init=/bin/sh\n").unwrap();
    crate::powercut::sideload(&dev, &["booted"], None);
    let mut names: Vec<String> =
        fs::read_dir(&entries).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["slot-b+0.conf"]);
    assert_eq!(fs::read_to_string(entries.join("slot-b+0.conf")).unwrap(), entry);

    // The kernel swapped on the ESP: it cannot be put back, so the slot leaves the rotation.
    fs::write(dev.root().join("esp/b/vmlinuz"), b"evil kernel").unwrap();
    let (code, _, err) = crate::powercut::sideload(&dev, &["booted"], None);
    assert_eq!(code, Some(0), "{err}");
    let tampered = dev.audit().into_iter().rfind(|r| r["event"] == "boot-files-tampered").unwrap();
    assert_eq!(
        (&tampered["slot"], &tampered["file"]),
        (&serde_json::json!("b"), &serde_json::json!("vmlinuz")),
        "{tampered}"
    );
    assert_eq!(dev.state().slot(sideload::Slot::B).status, sideload::SlotStatus::Failed);
    let (code, out, _) = crate::powercut::sideload(&dev, &["--json", "status"], None);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"failed\""), "{out}");

    // Booted into a slot whose initrd was swapped: put back from the running image's own /boot.
    let dev = Dev::new();
    dev.install(&parts(&root)).unwrap();
    crate::powercut::boot(&dev);
    let own = dev.root().join("own-boot");
    fs::create_dir_all(&own).unwrap();
    fs::write(own.join("vmlinuz-6.1.0-x"), &kernel).unwrap();
    fs::write(own.join("initrd.img-6.1.0-x"), &initrd).unwrap();
    fs::write(dev.root().join("esp/b/initrd.img"), b"evil initrd").unwrap();
    let (code, _, err) = crate::powercut::sideload(&dev, &["booted"], None);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fs::read(dev.root().join("esp/b/initrd.img")).unwrap(), initrd);
    let restored = dev.audit().into_iter().rfind(|r| r["event"] == "boot-files-restored").unwrap();
    assert_eq!((&restored["slot"], &restored["file"]), (&serde_json::json!("b"), &serde_json::json!("initrd.img")));
}

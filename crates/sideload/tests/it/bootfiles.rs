//! A bundle with the slot's own kernel and initrd: both land beside the slot's boot entry on
//! the ESP, byte for byte, and the audit record says what was written; a payload exactly the
//! size of the slot fits.

use std::fs;

use bundle::{Manifest, Target};
use trust::{Prehash, SignatureFile};

use crate::{CHUNK, Dev, PRODUCT, SLOT_SIZE, image, key};

/// A signed bundle of `parts` (name, target, bytes), in order.
fn bundle_of(version: &str, parts: &[(&str, Target, &[u8])]) -> Vec<u8> {
    let mut zst = Vec::new();
    let mut payloads = Vec::new();
    for (name, target, bytes) in parts {
        let mut z = Vec::new();
        payloads.push(bundle::compress_payload(name, *target, *bytes, &mut z, CHUNK).unwrap());
        zst.push(z);
    }
    let m = Manifest {
        format: 2,
        product: PRODUCT.into(),
        version: product::Version::parse(version).unwrap(),
        security_version: 2,
        channel: product::Channel::Release,
        previous_manifest: String::new(),
        build_manifest: format!("sha256:{}", "0".repeat(64)),
        hash: "sha256".into(),
        chunk_size: CHUNK,
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

//! dm-verity on a simulated device (real `veritysetup` on the slot files): a device that boots
//! only verified slots writes the tree after the filesystem at the signed offset and checks the
//! whole slot against the signed root hash before it arms a trial; a tree or root that does not
//! match is never armed, a bundle without a tree never written; and the note the initrd leaves
//! when it refuses a slot at boot fails that slot, with the initrd's reason in the audit log.

use std::fs;
use std::process::Command;

use bundle::{Target, Verity};
use sideload::{Error, Reason, SlotStatus};

use crate::{Dev, image, parts};

/// A root of 100 blocks (400 KiB) for `version`, its tree and table as `veritysetup format`
/// makes them.
fn root_and_tree(version: &str) -> (Vec<u8>, Vec<u8>, Verity) {
    let d = tempfile::tempdir().unwrap();
    let root = image(version, 100 * 4096);
    let (img, tree) = (d.path().join("root.img"), d.path().join("root.verity"));
    fs::write(&img, &root).unwrap();
    fs::write(&tree, b"").unwrap();
    let (salt, uuid) = ("5a".repeat(32), "01234567-89ab-4cde-8f01-23456789abcd");
    let out = Command::new("veritysetup")
        .args(["format", "--hash=sha256", "--data-block-size=4096", "--hash-block-size=4096"])
        .arg(format!("--salt={salt}"))
        .arg(format!("--uuid={uuid}"))
        .arg(&img)
        .arg(&tree)
        .output()
        .expect("veritysetup (cryptsetup-bin) runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let root_hash = text.lines().find_map(|l| l.strip_prefix("Root hash:")).unwrap().trim().to_string();
    let v = Verity {
        root_hash,
        hash_offset: root.len() as u64,
        hash: "sha256".into(),
        block_size: 4096,
        salt,
        uuid: uuid.into(),
    };
    (root, fs::read(&tree).unwrap(), v)
}

/// A signed format-4 bundle: `root`, then `tree` with the table `v`.
fn verity_bundle(version: &str, root: &[u8], tree: &[u8], v: &Verity) -> Vec<u8> {
    verity_bundle_with(version, &[("root.img", Target::Root, root), ("root.verity", Target::Verity, tree)], v, None)
}

/// The same with any payloads, and the slot's kernel command line.
fn verity_bundle_with(version: &str, parts: &[(&str, Target, &[u8])], v: &Verity, cmdline: Option<&str>) -> Vec<u8> {
    crate::bootfiles::signed_bundle(version, 4, parts, cmdline, Some(v.clone()))
}

fn reason(r: Result<sideload::Accepted, Error>) -> (Reason, String) {
    match r {
        Err(Error::Refused(reason, msg)) => (reason, msg),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_verified_device_writes_the_tree_after_the_root_and_arms_only_a_matching_slot() {
    let dev = Dev::verified();
    let (root, tree, v) = root_and_tree("2.0.0");
    dev.install(&verity_bundle("2.0.0", &root, &tree, &v)).unwrap();
    let slot = dev.slot("b");
    assert_eq!(&slot[..root.len()], &root[..]);
    assert_eq!(&slot[root.len()..root.len() + tree.len()], &tree[..], "the tree is not at hash_offset");
    assert_eq!(dev.boot().trial.map(|t| t.slot), Some(sideload::Slot::B));
    assert_eq!(dev.state().slot(sideload::Slot::B).status, SlotStatus::Written);
    let events: Vec<String> = dev.audit().iter().map(|r| r["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events[events.len() - 3..], ["accepted", "installed", "trial-armed"]);
}

#[test]
fn a_tree_or_root_that_does_not_match_the_signed_root_hash_is_never_armed() {
    let (root, tree, v) = root_and_tree("2.0.0");
    // Every byte is signed (the reader checks them): what does not match is the tree against
    // the table's root hash — a tree block changed, a data block changed, another root hash.
    let mut bad_tree = tree.clone();
    bad_tree[4096 + 7] ^= 1;
    let mut bad_root = root.clone();
    bad_root[40 * 4096 + 3] ^= 0x80;
    let other = Verity { root_hash: "ab".repeat(32), ..v.clone() };
    for (what, r, t, table) in [
        ("a tree block", &root, &bad_tree, &v),
        ("a data block", &bad_root, &tree, &v),
        ("the root hash", &root, &tree, &other),
    ] {
        let dev = Dev::verified();
        let (code, msg) = reason(dev.install(&verity_bundle("2.0.0", r, t, table)));
        assert_eq!(code, Reason::VerityMismatch, "{what}: {msg}");
        assert!(msg.contains(&table.root_hash), "{what}: {msg}");
        assert_eq!(dev.boot().trial, None, "{what}: a trial was armed");
        assert_ne!(dev.state().slot(sideload::Slot::B).status, SlotStatus::Written, "{what}");
        let last = dev.audit().pop().unwrap();
        assert_eq!((last["event"].as_str(), last["reason"].as_str()), (Some("refused"), Some("verity-mismatch")));
        // The slot that runs is untouched, and stays the one that boots.
        assert!(crate::slot_holds(&dev.slot("a"), &dev.v1), "{what}");
        assert_eq!(dev.power_on().booted, sideload::Slot::A, "{what}");
    }
}

#[test]
fn a_verified_device_refuses_a_bundle_without_a_tree_before_writing_a_byte() {
    let dev = Dev::verified();
    let p = parts("2.0.0", 2, &image("2.0.0", 300_000));
    let (code, msg) = reason(dev.install(&p.bytes()));
    assert_eq!(code, Reason::UnverifiedSlot, "{msg}");
    assert!(msg.contains("no verity tree"), "{msg}");
    assert!(dev.slot("b").iter().all(|&b| b == 0), "the slot was written");
    assert!(dev.audit().iter().all(|r| r["event"] != "accepted"));
    // A device that does not require it still takes the old format.
    let plain = Dev::new();
    plain.install(&p.bytes()).unwrap();
}

#[test]
fn the_initrds_note_fails_the_slot_it_refused_and_the_audit_says_why() {
    let dev = Dev::verified();
    let (root, tree, v) = root_and_tree("2.0.0");
    dev.install(&verity_bundle("2.0.0", &root, &tree, &v)).unwrap();
    // The initrd refused slot b at its trial boot (as the image's local-top script does: a
    // note on the ESP, the entry out of the rotation) and slot a booted again.
    let notes = dev.root().join("esp/airlock");
    fs::create_dir_all(&notes).unwrap();
    let said = format!("dm-verity: its blocks do not match the signed root hash {}", v.root_hash);
    fs::write(notes.join("integrity-b"), format!("{said}\n")).unwrap();
    fs::write(notes.join("integrity-a"), "refused once\n").unwrap();
    drop(dev.agent());
    let st = dev.state();
    assert_eq!(st.slot(sideload::Slot::B).status, SlotStatus::Failed);
    assert_eq!(st.slot(sideload::Slot::A).status, SlotStatus::Good, "the booted slot's old note failed it");
    assert_eq!(dev.boot().trial.filter(|t| t.tries_left > 0), None, "slot b is still in the rotation");
    let recs: Vec<serde_json::Value> = dev.audit().into_iter().filter(|r| r["event"] == "integrity-failed").collect();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(
        (recs[0]["slot"].as_str(), recs[0]["action"].as_str()),
        (Some("a"), Some("none: the slot booted verified since"))
    );
    assert_eq!((recs[1]["slot"].as_str(), recs[1]["reason"].as_str()), (Some("b"), Some(said.as_str())));
    assert_eq!(recs[1]["version"], "2.0.0");
    assert!(!notes.join("integrity-b").exists() && !notes.join("integrity-a").exists(), "the notes stay");
    // Read once: the next start records nothing more, and a power-on boots slot a.
    drop(dev.agent());
    assert_eq!(dev.audit().iter().filter(|r| r["event"] == "integrity-failed").count(), 2);
    assert_eq!(dev.power_on().booted, sideload::Slot::A);
}

#[test]
fn the_slots_boot_entry_opens_it_with_the_signed_root_hash_and_a_new_install_clears_an_old_note() {
    let dev = Dev::verified();
    let (root, tree, v) = root_and_tree("2.0.0");
    let (kernel, initrd) = (image("kernel", 50_000), image("initrd", 30_000));
    let b = verity_bundle_with(
        "2.0.0",
        &[
            ("root.img", Target::Root, &root),
            ("root.verity", Target::Verity, &tree),
            ("vmlinuz", Target::Kernel, &kernel),
            ("initrd.img", Target::Initrd, &initrd),
        ],
        &v,
        Some("rootfstype=squashfs ro panic=10"),
    );
    // A note about slot b's old contents lands while the agent runs (it read the notes when
    // it opened): the install into slot b supersedes it, and it is never recorded.
    let mut agent = dev.agent();
    let notes = dev.root().join("esp/airlock");
    fs::create_dir_all(&notes).unwrap();
    fs::write(notes.join("integrity-b"), "dm-verity: its blocks do not match the signed root hash 00\n").unwrap();
    let path = dev.write_bundle("v.airlock", &b);
    agent.install(&path, sideload::InstallOptions::default(), &mut sideload::NoProgress).unwrap();
    drop(agent);
    assert!(!notes.join("integrity-b").exists(), "the note of the slot's old contents stayed");
    let entries = dev.root().join("esp/loader/entries");
    let names: Vec<String> =
        fs::read_dir(&entries).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let entry = names.iter().find(|n| n.starts_with("slot-b")).expect("slot b's entry");
    let text = fs::read_to_string(entries.join(entry)).unwrap();
    let want = format!(
        "options root=PARTLABEL=root-b airlock.roothash={} airlock.hashoffset={} rootfstype=squashfs ro panic=10\n",
        v.root_hash,
        root.len()
    );
    assert!(text.contains(&want), "{text}");
    drop(dev.agent());
    assert!(dev.audit().iter().all(|r| r["event"] != "integrity-failed"), "a superseded note was recorded");
    assert_eq!(dev.state().slot(sideload::Slot::B).status, SlotStatus::Written);
    assert_eq!(dev.boot().trial.map(|t| (t.slot, t.tries_left)), Some((sideload::Slot::B, 3)));
}

#[test]
fn the_slot_must_hold_the_root_and_its_tree() {
    let (root, tree, v) = root_and_tree("2.0.0");
    let b = verity_bundle("2.0.0", &root, &tree, &v);
    let exact = (root.len() + tree.len()) as u64;
    let small = Dev::made_with(exact - 4096, true);
    let (code, msg) = reason(small.install(&b));
    assert_eq!(code, Reason::TooLargeForSlot, "{msg}");
    assert!(small.slot("b").iter().all(|&x| x == 0), "the slot was written");
    Dev::made_with(exact, true).install(&b).unwrap();
}

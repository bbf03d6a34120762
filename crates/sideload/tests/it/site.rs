//! Site profiles on a simulated device: applied only when signed by the approval role, newer
//! than the one in force, and fitting this image's zones; everything else refused with its
//! reason, audited, and changing nothing — neither the state nor the generated ruleset. At
//! boot the recorded profile is verified again; one edited on the data partition is ignored
//! (the image's defaults apply) and said so; a model that does not parse loads nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sideload::{Agent, Device, DeviceConfig};
use trust::{Prehash, SecretKey, SignatureFile};

use crate::{PRODUCT, key};

const MODEL: &str = r#"
[[zone]]
name = "parking-field"
description = "Field devices"
security_level = "SL2"
ranges = ["10.20.0.0/24"]

[[zone]]
name = "management"
description = "OT management"
security_level = "SL3"
ranges = ["169.254.0.0/16"]

[[zone]]
name = "plant-dmz"
description = "Time servers"
security_level = "SL3"
ranges = ["10.99.0.0/24"]

[[conduit]]
name = "field-mqtt"
from = "parking-field"
to = "appliance"
protocol = "tcp"
ports = [1883]
purpose = "Sensors publish"

[[conduit]]
name = "time"
from = "appliance"
to = "plant-dmz"
protocol = "udp"
ports = [123]
purpose = "NTP"
"#;

fn owner() -> SecretKey {
    SecretKey::from_seed([7; 32], [7, 7, 7, 7, 1, 2, 3, 4])
}

fn policy(with_approval: bool) -> String {
    let mut p = format!(
        "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"vendor\", key = \"{}\" }}]\n",
        key().public().to_base64()
    );
    if with_approval {
        p.push_str(&format!(
            "[approval]\nthreshold = 1\nkeys = [{{ name = \"asset-owner\", key = \"{}\" }}]\n",
            owner().public().to_base64()
        ));
    }
    p
}

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(with_approval: bool) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v1.img");
        fs::write(&img, vec![1u8; 4096]).unwrap();
        let cfg = DeviceConfig {
            product: PRODUCT.into(),
            channel: product::Channel::Release,
            tries: 3,
            version: None,
            security_version: None,
        };
        Device::init_simulated(
            &dir.path().join("dev"),
            &cfg,
            &policy(with_approval),
            8192,
            &img,
            "1.0.0",
            1,
            false,
            Some(MODEL),
            false,
        )
        .unwrap();
        Site { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("dev")
    }
    fn agent(&self) -> Agent {
        Agent::open(Device::simulated(&self.root()).unwrap(), std::time::Duration::from_secs(5)).unwrap()
    }
    /// A stick with `text` as the profile, signed by `keys` with these trusted comments.
    fn stick(&self, name: &str, text: &str, keys: &[(&SecretKey, &str)]) -> PathBuf {
        let d = self.dir.path().join(name);
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("site-profile.toml"), text).unwrap();
        for (k, comment) in keys {
            let sig = SignatureFile::sign(k, &Prehash::of_bytes(text.as_bytes()), comment).unwrap();
            fs::write(d.join(format!("site-profile.toml.{}.minisig", k.id())), sig.to_file()).unwrap();
        }
        d
    }
    fn signed(&self, name: &str, text: &str) -> PathBuf {
        let c = format!("airlock product={PRODUCT} version=serial-x role=approval file=site-profile.toml");
        self.stick(name, text, &[(&owner(), &c)])
    }
    fn rules(&self) -> Option<String> {
        fs::read_to_string(self.root().join("run/nftables.conf")).ok()
    }
    fn sideload(&self, args: &[&str]) -> (i32, String) {
        let o =
            Command::new(env!("CARGO_BIN_EXE_sideload")).arg("--root").arg(self.root()).args(args).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        )
    }
}

fn profile(serial: u64, field: &str) -> String {
    format!(
        "format = 1\nproduct = \"{PRODUCT}\"\nsite = \"terminal-7\"\nserial = {serial}\nhostname = \"parking-t7\"\nntp = [\"10.99.0.10\"]\n\n[zone.parking-field]\nranges = [\"{field}\"]\n\n[[device]]\nname = \"bay-001\"\npassword_hash = \"$7$101$c2FsdHNhbHQ=$aGFzaGhhc2g=\"\n"
    )
}

fn reason(e: &sideload::Error) -> &'static str {
    e.code()
}

#[test]
fn a_profile_signed_by_the_asset_owner_is_applied_recorded_and_audited() {
    let s = Site::new(true);
    let (code, out) = s.sideload(&["firewall"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("image defaults"), "{out}");
    assert!(s.rules().unwrap().contains("10.20.0.0/24"));
    let stick = s.signed("s1", &profile(1, "192.168.50.0/24"));
    let msg = s.agent().install_site(&stick).unwrap().unwrap();
    assert!(msg.starts_with("site profile terminal-7 serial 1 installed (signed by asset-owner): 3 zone(s), 2 conduit(s), 1 field device(s)"), "{msg}");
    let rules = s.rules().unwrap();
    assert!(rules.contains("192.168.50.0/24") && !rules.contains("10.20.0.0/24"), "{rules}");
    assert!(rules.contains("# Site: site terminal-7, serial 1."));
    assert_eq!(
        fs::read_to_string(s.root().join("run/chrony/site.sources")).unwrap().lines().last(),
        Some("server 10.99.0.10 iburst")
    );
    assert!(fs::read_to_string(s.root().join("run/mqtt/devices")).unwrap().starts_with("bay-001:$7$101$"));
    let st = sideload::state::load(&s.root().join("data")).unwrap().unwrap();
    assert_eq!(st.site.as_ref().map(|r| (r.site.as_str(), r.serial)), Some(("terminal-7", 1)));
    // The same profile again: in force already, nothing recorded.
    let msg = s.agent().install_site(&stick).unwrap().unwrap();
    assert!(msg.contains("already in force"), "{msg}");
    // A boot compiles it again from the stored, re-verified files.
    fs::remove_file(s.root().join("run/nftables.conf")).unwrap();
    let (code, out) = s.sideload(&["firewall"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("firewall written (simulated device: not loaded): site terminal-7, serial 1"), "{out}");
    assert_eq!(s.rules().unwrap(), rules);
    // A newer one replaces it, and the older files go.
    let stick2 = s.signed("s2", &profile(2, "192.168.60.0/24"));
    s.agent().install_site(&stick2).unwrap().unwrap();
    assert!(s.rules().unwrap().contains("192.168.60.0/24"));
    assert_eq!(fs::read_dir(s.root().join("data/site")).unwrap().count(), 2, "one profile and its one signature");
    let (code, audit) = s.sideload(&["audit"]);
    assert_eq!(code, 0);
    assert_eq!(audit.matches("site-profile-installed").count(), 2, "{audit}");
}

#[test]
fn every_bad_profile_is_refused_with_its_reason_and_changes_nothing() {
    let s = Site::new(true);
    s.agent().install_site(&s.signed("good", &profile(5, "192.168.50.0/24"))).unwrap();
    let rules = s.rules().unwrap();
    let state_now = || {
        let mut st = sideload::state::load(&s.root().join("data")).unwrap().unwrap();
        st.audit = Default::default();
        st
    };
    let state = state_now();
    let vendor_claims_approval = format!("airlock product={PRODUCT} version=x role=approval file=site-profile.toml");
    let owner_c = format!("airlock product={PRODUCT} version=x role=approval file=site-profile.toml");
    let other_product = "airlock product=airlock.other version=x role=approval file=site-profile.toml";
    let stranger = SecretKey::from_seed([9; 32], [9; 8]);
    let cases: Vec<(&str, PathBuf, &str, &str)> = vec![
        (
            "unsigned",
            s.stick("a", &profile(6, "192.168.70.0/24"), &[]),
            "bad-signature",
            "approval 0/1 (no signatures)",
        ),
        (
            "signed by the vendor's release key",
            s.stick("b", &profile(6, "192.168.70.0/24"), &[(&key(), &vendor_claims_approval)]),
            "bad-signature",
            "holds the `release` role",
        ),
        (
            "signed by a stranger",
            s.stick("c", &profile(6, "192.168.70.0/24"), &[(&stranger, &owner_c)]),
            "bad-signature",
            "approval 0/1",
        ),
        (
            "signed for another product",
            s.stick("d", &profile(6, "192.168.70.0/24"), &[(&owner(), other_product)]),
            "bad-signature",
            "trusted comment says product=\"airlock.other\"",
        ),
        (
            "an older serial",
            s.signed("e", &profile(4, "192.168.70.0/24")),
            "site-rollback",
            "serial 4 is not newer than serial 5",
        ),
        (
            "the same serial, other bytes",
            s.signed("f", &profile(5, "192.168.71.0/24")),
            "site-rollback",
            "serial 5 is not newer",
        ),
        (
            "a zone the image does not have",
            s.signed("g", &profile(6, "192.168.70.0/24").replace("[zone.parking-field]", "[zone.office]")),
            "bad-site-profile",
            "zone.office: this image has no such zone",
        ),
        (
            "ranges that overlap another zone's",
            s.signed("h", &profile(6, "10.99.0.0/25")),
            "bad-site-profile",
            "overlaps range 10.99.0.0/25 of zone `parking-field`",
        ),
        (
            "another product's profile",
            s.signed("i", &profile(6, "192.168.70.0/24").replace(PRODUCT, "airlock.other")),
            "wrong-product",
            "site profile is for product `airlock.other`",
        ),
        (
            "a hostname with shell syntax",
            s.signed("j", &profile(6, "192.168.70.0/24").replace("parking-t7", "$(reboot)")),
            "bad-site-profile",
            "hostname `$(reboot)`",
        ),
        (
            "a profile larger than 256 KiB",
            s.signed("k", &format!("{}#{}\n", profile(6, "192.168.70.0/24"), "x".repeat(300 << 10))),
            "too-large",
            "larger than the 262144 bytes accepted",
        ),
    ];
    for (what, stick, code, words) in &cases {
        let e = s.agent().install_site(stick).unwrap_err();
        assert_eq!(reason(&e), *code, "{what}: {e}");
        assert!(e.to_string().contains(words), "{what}: {e}");
        assert_eq!(s.rules().unwrap(), rules, "{what}: the ruleset changed");
        assert_eq!(state_now(), state, "{what}: the state changed beyond the audit head");
    }
    let (_, audit) = s.sideload(&["audit"]);
    assert_eq!(audit.matches("action=install-site").count(), cases.len(), "{audit}");
    // A symlinked profile is never followed.
    let d = s.dir.path().join("link");
    fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::symlink(s.dir.path().join("good/site-profile.toml"), d.join("site-profile.toml")).unwrap();
    assert_eq!(reason(&s.agent().install_site(&d).unwrap_err()), "not-a-file");
}

#[test]
fn a_device_whose_policy_has_no_approval_role_accepts_no_profile() {
    let s = Site::new(false);
    let e = s.agent().install_site(&s.signed("a", &profile(1, "192.168.50.0/24"))).unwrap_err();
    assert_eq!(reason(&e), "bad-signature");
    assert!(e.to_string().contains("has no `approval` role"), "{e}");
}

#[test]
fn at_boot_an_edited_stored_profile_is_ignored_and_a_broken_model_loads_nothing() {
    let s = Site::new(true);
    s.agent().install_site(&s.signed("a", &profile(1, "192.168.50.0/24"))).unwrap();
    let stored: Vec<PathBuf> = fs::read_dir(s.root().join("data/site"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    let text = fs::read_to_string(&stored[0]).unwrap();
    fs::write(&stored[0], text.replace("192.168.50.0/24", "0.0.0.0/0")).unwrap();
    let (code, out) = s.sideload(&["firewall"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("site profile terminal-7 (serial 1) is not used"), "{out}");
    assert!(out.contains("image defaults"), "{out}");
    assert!(s.rules().unwrap().contains("10.20.0.0/24"));
    // No model, no ruleset: the command fails (and on the box, the network stays down).
    fs::write(s.root().join("zones.toml"), "[[zone]]\nname = \"x\"\n").unwrap();
    fs::remove_file(s.root().join("run/nftables.conf")).unwrap();
    let (code, out) = s.sideload(&["firewall"]);
    assert_eq!(code, 2, "{out}");
    assert!(s.rules().is_none());
}

#[test]
fn a_stick_with_only_a_profile_exits_3_no_reboot_needed() {
    let s = Site::new(true);
    let stick = s.signed("a", &profile(1, "192.168.50.0/24"));
    let (code, out) = s.sideload(&["install-dir", stick.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("no bundle on the stick: no reboot needed"), "{out}");
    // A refused profile and no bundle: refused, exit 1.
    let bad = s.stick("b", &profile(2, "192.168.50.0/24"), &[]);
    let (code, out) = s.sideload(&["install-dir", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let _ = Path::new("");
}

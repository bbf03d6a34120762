//! Site profiles on a simulated device: applied only when signed by the approval role, newer
//! than the one in force, and fitting this image's zones; everything else refused with its
//! reason, audited, and changing nothing — neither the state nor the generated ruleset. At
//! boot the recorded profile is verified again; one edited on the data partition is ignored
//! (the image's defaults apply) and said so; a model that does not parse loads nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
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
interfaces = ["eth1"]
dhcp = "ipv4"

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
        Site::make(with_approval, false)
    }
    /// A device that loads its firewall with nft for real (run it in a [`Netns`]).
    fn live() -> Site {
        Site::make(true, true)
    }
    fn make(with_approval: bool, live: bool) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v1.img");
        fs::write(&img, vec![1u8; 4096]).unwrap();
        let cfg = DeviceConfig {
            product: PRODUCT.into(),
            channel: product::Channel::Release,
            tries: 3,
            version: Some(product::Version::parse("1.0.0").unwrap()),
            security_version: Some(1),
            cmdline: None,
            verity: false,
        };
        let policy = policy(with_approval);
        Device::init_simulated(
            &dir.path().join("dev"),
            &sideload::Simulated {
                config: &cfg,
                policy: &policy,
                slot_size: 8192,
                image: &img,
                version: "1.0.0",
                security_version: 1,
                power_loss: false,
                zones: Some(MODEL),
                live_firewall: live,
            },
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
        output(Command::new(env!("CARGO_BIN_EXE_sideload")).arg("--root").arg(self.root()).args(args))
    }
    /// The agent in `ns`, with or without CAP_NET_ADMIN (without it, nft can neither check
    /// nor load a ruleset: a kernel or a sandbox that refuses it).
    fn sideload_in(&self, ns: &Netns, net_admin: bool, args: &[&str]) -> (i32, String) {
        let mut c = ns.exec(!net_admin, Path::new(env!("CARGO_BIN_EXE_sideload")));
        output(c.arg("--root").arg(self.root()).args(args))
    }
}

/// Exit code, and stdout then stderr.
fn output(c: &mut Command) -> (i32, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

/// A network namespace of its own (nothing of the host's network is touched), alive while
/// `holder` runs. Root makes it directly; anyone else inside a user namespace of their own,
/// where they are root.
struct Netns {
    holder: Child,
    userns: bool,
}

impl Netns {
    fn new() -> Netns {
        let userns = !rustix::process::geteuid().is_root();
        let mut c = Command::new("unshare");
        if userns {
            c.args(["--user", "--map-root-user"]);
        }
        let holder = c
            .args(["--net", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare (util-linux): `cargo xtask test` installs it");
        let ns = Netns { holder, userns };
        let ours = fs::read_link("/proc/self/ns/net").unwrap();
        let t = Instant::now();
        while fs::read_link(format!("/proc/{}/ns/net", ns.holder.id())).is_ok_and(|n| n == ours) {
            assert!(t.elapsed() < Duration::from_secs(30), "unshare never made its network namespace");
            std::thread::sleep(Duration::from_millis(10));
        }
        ns
    }
    /// `prog` inside the namespace, as its root (with every capability, CAP_NET_ADMIN
    /// included, unless `no_net_admin`).
    fn exec(&self, no_net_admin: bool, prog: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["--target", &self.holder.id().to_string(), "--net"]);
        if self.userns {
            c.args(["--user", "--preserve-credentials"]);
        }
        c.arg("--");
        if no_net_admin {
            c.args(["setpriv", "--bounding-set", "-net_admin"]);
        }
        c.arg(prog);
        c
    }
    fn ruleset(&self) -> String {
        let o = self.exec(false, Path::new("nft")).args(["list", "ruleset"]).output().unwrap();
        assert!(
            o.status.success(),
            "nft list ruleset (nftables: `cargo xtask test` installs it): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn profile(serial: u64, field: &str) -> String {
    format!(
        "format = 1\nproduct = \"{PRODUCT}\"\nsite = \"terminal-7\"\nserial = {serial}\nhostname = \"parking-t7\"\nntp = [\"10.99.0.10\"]\n\n[zone.parking-field]\nranges = [\"{field}\"]\n\n[[device]]\nname = \"bay-001\"\nkind = \"bay\"\npassword_hash = \"$7$101$c2FsdHNhbHQ=$aGFzaGhhc2g=\"\n"
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
    assert!(
        rules.contains(&format!("\n# Airlock firewall, generated from the zones and conduits of {PRODUCT} 1.0.0.\n")),
        "{rules}"
    );
    let st = sideload::state::load(&s.root().join("data")).unwrap().unwrap();
    assert_eq!(st.site.as_ref().map(|r| (r.site.as_str(), r.serial)), Some(("terminal-7", 1)));
    // The audit record says what was installed, by whom, and the zones it gives.
    let (code, audit) = s.sideload(&["audit", "--json"]);
    assert_eq!(code, 0, "{audit}");
    let rec: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .find(|r: &serde_json::Value| r["event"] == "site-profile-installed")
        .unwrap();
    let digest = &st.site.as_ref().unwrap().digest;
    assert_eq!(
        (&rec["site"], &rec["serial"], &rec["digest"], &rec["signers"], &rec["hostname"], &rec["devices"]),
        (&json!("terminal-7"), &json!(1), &json!(digest), &json!(["asset-owner"]), &json!("parking-t7"), &json!(1)),
        "{rec}"
    );
    assert_eq!(
        rec["zones"],
        json!([
            {"name": "parking-field", "ranges": ["192.168.50.0/24"], "interfaces": []},
            {"name": "management", "ranges": ["169.254.0.0/16"], "interfaces": ["eth1"]},
            {"name": "plant-dmz", "ranges": ["10.99.0.0/24"], "interfaces": []},
        ]),
        "{rec}"
    );
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
    let no_role = format!("airlock product={PRODUCT} version=x file=site-profile.toml");
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
            "signed by the vendor's release key, claiming no role",
            s.stick("b2", &profile(6, "192.168.70.0/24"), &[(&key(), &no_role)]),
            "bad-signature",
            "approval 0/1 (site-profile.toml.0807060504030201.minisig: a release key does not count for a site profile)",
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
            "a host name longer than the kernel takes (65 bytes, valid RFC 1123)",
            s.signed(
                "j2",
                &profile(6, "192.168.70.0/24").replace("parking-t7", &format!("{}.{}", "a".repeat(32), "b".repeat(32))),
            ),
            "bad-site-profile",
            "64 in all (the kernel's limit)",
        ),
        (
            "a profile of another site (same owner, higher serial)",
            s.signed("j3", &profile(6, "192.168.70.0/24").replace("terminal-7", "airport-p3")),
            "wrong-site",
            "site profile is for site `airport-p3`, and this box is at site `terminal-7`",
        ),
        (
            "a re-siting of another box (it leaves a site this box is not at)",
            s.signed(
                "j4",
                &profile(6, "192.168.70.0/24")
                    .replace("terminal-7", "airport-p3")
                    .replace("serial = 6", "serial = 6\nresite_from = \"depot-2\""),
            ),
            "wrong-site",
            "re-sites a box from `depot-2` to `airport-p3`, and this box is at site `terminal-7`",
        ),
        (
            "a device of no kind",
            s.signed("j5", &profile(6, "192.168.70.0/24").replace("kind = \"bay\"\n", "")),
            "bad-site-profile",
            "missing field `kind`",
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
fn a_profile_and_its_signatures_are_read_within_their_bounds_and_only_by_their_names() {
    let s = Site::new(true);
    let c = format!("airlock product={PRODUCT} version=x role=approval file=site-profile.toml");
    // A profile of exactly 256 KiB is read; one byte more is refused.
    let sized = |serial: u64, n: usize| {
        let p = profile(serial, "192.168.50.0/24");
        format!("{p}#{}\n", "x".repeat(n - p.len() - 2))
    };
    let e = s.agent().install_site(&s.signed("big", &sized(1, (256 << 10) + 1))).unwrap_err();
    assert_eq!((reason(&e), e.to_string().contains("larger than the 262144 bytes")), ("too-large", true), "{e}");
    let msg = s.agent().install_site(&s.signed("max", &sized(1, 256 << 10))).unwrap().unwrap();
    assert!(msg.contains("serial 1 installed (signed by asset-owner)"), "{msg}");
    // At boot the stored profile is read back the same way: its signature files are its
    // signatures, never the profile itself (which, far larger than a signature, would refuse it).
    let (code, out) = s.sideload(&["firewall"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "firewall written (simulated device: not loaded): site terminal-7, serial 1");

    // Sixteen signature files are read (the asset owner's and fifteen strangers'): the owner's
    // counts, and only the owner is named.
    let strangers: Vec<SecretKey> =
        (0..16u8).map(|i| SecretKey::from_seed([100 + i; 32], [i, 1, 2, 3, 4, 5, 6, 7])).collect();
    let owner_key = owner();
    let mut keys: Vec<(&SecretKey, &str)> = vec![(&owner_key, &c)];
    keys.extend(strangers.iter().take(15).map(|k| (k, c.as_str())));
    let text = profile(2, "192.168.50.0/24");
    let stick = s.stick("sixteen", &text, &keys);
    // Files whose names are not `site-profile.toml.<16 hex digits>.minisig` are not signatures:
    // not read, not counted.
    let sig = fs::read(stick.join(format!("site-profile.toml.{}.minisig", owner_key.id()))).unwrap();
    for n in [
        "site-profile.toml.0123456789abcde.minisig",
        "site-profile.toml.0123456789abcdef0.minisig",
        "site-profile.toml.0123456789abcdeg.minisig",
        "site-profile.toml.0123456789abcdef.sig",
        "other.toml.0123456789abcdef.minisig",
    ] {
        fs::write(stick.join(n), &sig).unwrap();
    }
    let msg = s.agent().install_site(&stick).unwrap().unwrap();
    assert!(msg.contains("serial 2 installed (signed by asset-owner)"), "{msg}");
    // Seventeen: refused before any is checked.
    keys.push((&strangers[15], &c));
    let stick = s.stick("seventeen", &profile(3, "192.168.50.0/24"), &keys);
    let e = s.agent().install_site(&stick).unwrap_err();
    assert_eq!(reason(&e), "too-large", "{e}");
    assert!(e.to_string().contains("17 site profile signatures, more than the 16 accepted"), "{e}");

    // What is stored is the profile in force and its sixteen signatures, named by its digest;
    // the older profile's files are gone.
    let digest = sideload::state::load(&s.root().join("data")).unwrap().unwrap().site.unwrap().digest;
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();
    let stored: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(s.root().join("data/site"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(stored.len(), 17, "{stored:?}");
    assert!(stored.iter().all(|n| n.starts_with(&format!("{hex}."))), "{stored:?}");
    assert!(stored.contains(&format!("{hex}.toml")) && stored.contains(&format!("{hex}.{}.minisig", owner_key.id())));
    // And at boot the stored files verify again, the sixteen signatures with them.
    fs::remove_file(s.root().join("run/nftables.conf")).unwrap();
    let (code, out) = s.sideload(&["firewall"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("site terminal-7, serial 2") && !out.contains("not used"), "{out}");
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

#[test]
fn a_live_device_checks_then_loads_its_ruleset_and_with_nothing_loaded_it_stays_closed() {
    let s = Site::live();
    let ns = Netns::new();
    assert_eq!(ns.ruleset(), "", "a new network namespace has no rules");
    let (code, out) = s.sideload_in(&ns, true, &["firewall"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("firewall loaded: image defaults"), "{out}");
    let defaults = ns.ruleset();
    assert!(defaults.contains("table inet airlock") && defaults.contains("10.20.0.0/24"), "{defaults}");

    // nft cannot check the site's ruleset: refused before anything is stored or recorded, and
    // the running rules stay.
    let stick = s.signed("a", &profile(1, "192.168.50.0/24"));
    let (code, out) = s.sideload_in(&ns, false, &["--json", "install-site", stick.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let j: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(j["reason"], "ruleset-refused", "{out}");
    assert!(j["message"].as_str().unwrap().contains("nft -c refused the ruleset: "), "{out}");
    assert_eq!(ns.ruleset(), defaults, "a ruleset nft could not check changed the running rules");
    assert_eq!(sideload::state::load(&s.root().join("data")).unwrap().unwrap().site, None);
    assert!(!s.root().join("data/site").exists() || fs::read_dir(s.root().join("data/site")).unwrap().count() == 0);
    assert!(
        fs::read_dir(s.root().join("run")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("check"))
    );

    // nft can: checked, recorded, loaded in one transaction.
    let (code, out) = s.sideload_in(&ns, true, &["install-site", stick.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("serial 1 installed (signed by asset-owner)") && out.contains("firewall loaded"), "{out}");
    let site = ns.ruleset();
    assert!(site.contains("192.168.50.0/24") && !site.contains("10.20.0.0/24"), "{site}");
    let (_, audit) = s.sideload(&["audit"]);
    assert_eq!(
        (audit.matches("reason=ruleset-refused").count(), audit.matches("site-profile-installed").count()),
        (1, 1),
        "{audit}"
    );

    // At boot the site's ruleset loads again, from the stored profile.
    let (code, out) = s.sideload_in(&ns, true, &["firewall"]);
    assert_eq!((code, out.trim()), (0, "firewall loaded: site terminal-7, serial 1"));
    assert_eq!(ns.ruleset(), site);
    // Where no ruleset loads (no CAP_NET_ADMIN) the command fails (nftables.service with it: the network never comes up),
    // saying why for each.
    let (code, out) = s.sideload_in(&ns, false, &["firewall"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("the site's ruleset did not load") && out.contains("the image's defaults did not load either"),
        "{out}"
    );
    assert_eq!(ns.ruleset(), site, "a failed load changed the running rules");
}

#[test]
fn a_box_keeps_its_site_until_the_owner_signs_a_resiting_and_an_old_resiting_is_never_replayed() {
    let s = Site::new(true);
    // The first profile makes the box a terminal-7 box.
    s.agent().install_site(&s.signed("t7-1", &profile(1, "192.168.50.0/24"))).unwrap().unwrap();
    let to_p3 = |serial: u64, from: &str| {
        profile(serial, "192.168.80.0/24")
            .replace("terminal-7", "airport-p3")
            .replace(&format!("serial = {serial}"), &format!("serial = {serial}\nresite_from = \"{from}\""))
    };
    // Another site's profile, validly signed and newer: refused by its reason, nothing changes.
    let e = s
        .agent()
        .install_site(&s.signed("p3-plain", &profile(9, "192.168.80.0/24").replace("terminal-7", "airport-p3")))
        .unwrap_err();
    assert_eq!(reason(&e), "wrong-site", "{e}");
    assert!(s.rules().unwrap().contains("192.168.50.0/24"));
    // A re-siting names the site it leaves; one that leaves itself is malformed.
    let e = s.agent().install_site(&s.signed("p3-self", &to_p3(1, "airport-p3"))).unwrap_err();
    assert_eq!(reason(&e), "bad-site-profile", "{e}");
    assert!(e.to_string().contains("resite_from = `airport-p3` is the profile's own site"), "{e}");
    // The owner moves the box: accepted, audited with where it came from.
    let resite = s.signed("p3-1", &to_p3(1, "terminal-7"));
    let msg = s.agent().install_site(&resite).unwrap().unwrap();
    assert!(msg.starts_with("site profile airport-p3 serial 1 installed"), "{msg}");
    assert!(s.rules().unwrap().contains("192.168.80.0/24"));
    let (_, audit) = s.sideload(&["audit", "--json"]);
    let rec: serde_json::Value = audit
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|r: &serde_json::Value| r["event"] == "site-profile-installed")
        .unwrap();
    assert_eq!((&rec["site"], &rec["resited_from"]), (&json!("airport-p3"), &json!("terminal-7")), "{rec}");
    // Now terminal-7's newer profiles are another site's.
    let e = s.agent().install_site(&s.signed("t7-2", &profile(2, "192.168.50.0/24"))).unwrap_err();
    assert_eq!(reason(&e), "wrong-site", "{e}");
    // Moved back by a new re-siting (terminal-7's serial must beat the 1 it had)...
    let back = profile(2, "192.168.50.0/24").replace("serial = 2", "serial = 2\nresite_from = \"airport-p3\"");
    s.agent().install_site(&s.signed("t7-back", &back)).unwrap().unwrap();
    // ...the old re-siting to airport-p3 replayed is refused: airport-p3 had serial 1 already.
    let e = s.agent().install_site(&resite).unwrap_err();
    assert_eq!(reason(&e), "site-rollback", "{e}");
    assert!(
        e.to_string().contains("serial 1 is not newer than serial 1 this box already had for site airport-p3"),
        "{e}"
    );
    assert!(s.rules().unwrap().contains("192.168.50.0/24"));
    let st = sideload::state::load(&s.root().join("data")).unwrap().unwrap();
    assert_eq!(st.site.as_ref().map(|r| (r.site.as_str(), r.serial)), Some(("terminal-7", 2)));
    assert_eq!(st.site_serials.get("airport-p3"), Some(&1));
}

#[test]
fn the_box_interface_configuration_and_the_broker_acl_follow_the_zones_and_devices_in_force() {
    let s = Site::new(true);
    let (code, out) = s.sideload(&["firewall"]);
    assert_eq!(code, 0, "{out}");
    // Image defaults: the management zone's interface by DHCP; nothing else configured, no
    // field device may write anything.
    let net = s.root().join("run/network");
    let names = |d: &Path| {
        let mut v: Vec<String> =
            fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&net), vec!["50-airlock-management.network"]);
    let m = fs::read_to_string(net.join("50-airlock-management.network")).unwrap();
    assert!(
        m.contains("[Match]\nName=eth1\n") && m.contains("DHCP=ipv4\n") && m.contains("LinkLocalAddressing=no\n"),
        "{m}"
    );
    let acl = fs::read_to_string(s.root().join("run/mqtt/devices.acl")).unwrap();
    assert!(
        !acl.lines().any(|l| l.starts_with("user ") || l.starts_with("topic ") || l.starts_with("pattern ")),
        "{acl}"
    );
    // A profile binds the field to its interface with a static address, and lists a bay, a
    // barrier and a camera: each gets the one topic of its kind.
    let text = profile(1, "192.168.50.0/24").replace(
        "[zone.parking-field]\nranges = [\"192.168.50.0/24\"]\n",
        "[zone.parking-field]\nranges = [\"192.168.50.0/24\"]\ninterfaces = [\"eth2\"]\naddresses = [\"192.168.50.1/24\"]\n",
    ) + "\n[[device]]\nname = \"gate-1\"\nkind = \"barrier\"\npassword_hash = \"$7$101$c2FsdHNhbHQ=$aGFzaGhhc2g=\"\n\n[[device]]\nname = \"cam-1\"\nkind = \"camera\"\npassword_hash = \"$7$101$c2FsdHNhbHQ=$aGFzaGhhc2g=\"\n";
    s.agent().install_site(&s.signed("s1", &text)).unwrap().unwrap();
    assert_eq!(names(&net), vec!["50-airlock-management.network", "50-airlock-parking-field.network"]);
    let f = fs::read_to_string(net.join("50-airlock-parking-field.network")).unwrap();
    assert!(f.contains("Name=eth2\n") && f.contains("DHCP=no\n") && f.contains("Address=192.168.50.1/24\n"), "{f}");
    let acl = fs::read_to_string(s.root().join("run/mqtt/devices.acl")).unwrap();
    let body: Vec<&str> = acl.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert_eq!(
        body,
        [
            "user bay-001",
            "topic write parking/bays/bay-001/state",
            "user gate-1",
            "topic write parking/barriers/gate-1/event",
            "user cam-1",
            "topic write parking/cameras/cam-1/read",
        ]
    );
    // The next profile drops the field's interface: its generated file goes.
    s.agent().install_site(&s.signed("s2", &profile(2, "192.168.50.0/24"))).unwrap().unwrap();
    assert_eq!(names(&net), vec!["50-airlock-management.network"]);
}

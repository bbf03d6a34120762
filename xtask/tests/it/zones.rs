//! Zones and conduits with real packets. One network namespace per zone — the parking field,
//! the OT management network, the plant DMZ — joined by veth pairs to an appliance namespace
//! where the update agent (a simulated device with a live firewall) loads the ruleset compiled
//! from the default recipe's model, and where the real broker (Debian's mosquitto, with the
//! image's own configuration, ACLs and credential script) and the real parking controller run.
//!
//! Every conduit's flow goes through end to end (a sensor and a barrier publish, occupancy
//! changes, the operator API answers from the management zone over IPv4 and IPv6 link-local,
//! the appliance reaches the DMZ's time server), and every other flow tried is dropped and
//! counted (other ports, other zones, the reverse direction, IPv6 from the field, the broker
//! from management, the API from the field, forwarding between zones). Then a site profile,
//! signed by the asset owner, moves the zones to the site's own ranges: the same holds with the
//! new addresses and the old ones are dropped. Unsigned, vendor-signed, older and misfitting
//! profiles are refused with their reason and leave the running ruleset byte for byte alone.
//!
//! And the attacks that once got through, from every zone: a source address of another zone
//! (spoofed, with and without a route back through the sender's link), IPv6 link-local on
//! every link (the API and ICMPv6 echo at the box's `fe80::` address), DHCP in and out where
//! the box does not take its address by it, a bay sensor's credentials on a barrier's topic,
//! and a field device asking for the controller's MQTT client id.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::{Ns, http_get, tcp_open, udp_ask, veth};

use crate::{repo, require_root, run, xtask};

const SHORT: Duration = Duration::from_millis(800);

/// Children killed when the test ends, whatever the way.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
    target.join("debug").join(name)
}

fn build_binaries() {
    let o = Command::new(env!("CARGO"))
        .args(["build", "--locked", "-p", "sideload", "-p", "parking-controller"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ok(ns: &Ns, args: &[&str]) {
    ns.ip(args).unwrap_or_else(|e| panic!("{e}"));
}

/// `sideload --root DEV ARGS` inside the appliance namespace: (exit code, stdout, stderr).
fn sideload(appl: &Ns, dev: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = appl.exec(bin("sideload").to_str().unwrap());
    c.arg("--root").arg(dev).args(args);
    run(&mut c)
}

fn ruleset(appl: &Ns) -> String {
    let o = appl.exec("nft").args(["list", "ruleset"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Packet counters of the ruleset: (chain, comment or chain name) → packets.
fn counters(appl: &Ns) -> std::collections::BTreeMap<String, u64> {
    let o = appl.exec("nft").args(["-j", "list", "ruleset"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for item in v["nftables"].as_array().unwrap() {
        let Some(rule) = item.get("rule") else { continue };
        let chain = rule["chain"].as_str().unwrap_or("");
        for e in rule["expr"].as_array().into_iter().flatten() {
            if let Some(c) = e.get("counter") {
                let label = rule.get("comment").and_then(|c| c.as_str()).unwrap_or(chain);
                *out.entry(format!("{chain}/{label}")).or_insert(0) += c["packets"].as_u64().unwrap_or(0);
            }
        }
    }
    out
}

fn mosquitto_hash(name: &str, password: &str, dir: &Path) -> String {
    let f = dir.join(format!("{name}.pw"));
    fs::write(&f, "").unwrap();
    let o = Command::new("mosquitto_passwd").arg("-b").arg(&f).arg(name).arg(password).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::write(dir.join(format!("{name}.secret")), format!("{password}\n")).unwrap();
    fs::read_to_string(&f).unwrap().trim().split_once(':').unwrap().1.to_string()
}

/// A field device's name, kind and password hash.
type Dev = (String, &'static str, String);

fn profile(serial: u64, field: &[&str], field_ifs: &[&str], mgmt: &[&str], hashes: &[Dev]) -> String {
    let list = |v: &[&str]| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    let mut t = format!(
        "format = 1\nproduct = \"airlock.parking-controller.x86_64\"\nsite = \"terminal-7\"\nserial = {serial}\nhostname = \"parking-t7\"\nntp = [\"10.99.0.10\"]\n\n[zone.parking-field]\nranges = [{}]\n",
        list(field)
    );
    if !field_ifs.is_empty() {
        t.push_str(&format!("interfaces = [{}]\n", list(field_ifs)));
    }
    t.push_str(&format!("\n[zone.management]\nranges = [{}]\n", list(mgmt)));
    for (n, kind, h) in hashes {
        t.push_str(&format!("\n[[device]]\nname = \"{n}\"\nkind = \"{kind}\"\npassword_hash = \"{h}\"\n"));
    }
    t
}

/// A stick holding `text` as site-profile.toml, signed with the given dev keys and roles.
fn stick(dir: &Path, text: &str, keys: &[(&str, &str)]) -> PathBuf {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let f = dir.join("site-profile.toml");
    fs::write(&f, text).unwrap();
    for (key, role) in keys {
        let (code, out, err) =
            run(xtask().arg("sign").arg(&f).arg("--key").arg(repo().join(key)).args(["--role", role]));
        assert_eq!(code, 0, "{out}{err}");
    }
    dir.to_path_buf()
}

fn publish(ns: &Ns, broker: &str, user: &str, secrets: &Path, kind: &str, name: &str, value: &str) -> (i32, String) {
    publish_as(ns, broker, user, secrets, None, kind, name, value)
}

#[allow(clippy::too_many_arguments)]
fn publish_as(
    ns: &Ns,
    broker: &str,
    user: &str,
    secrets: &Path,
    client_id: Option<&str>,
    kind: &str,
    name: &str,
    value: &str,
) -> (i32, String) {
    let mut c = ns.exec(bin("parking-controller").to_str().unwrap());
    c.args(["simulate", "--broker", broker, "--user", user, "--password-file"])
        .arg(secrets.join(format!("{user}.secret")));
    if let Some(id) = client_id {
        c.args(["--client-id", id]);
    }
    c.args([kind, name, value]);
    let (code, out, err) = run(&mut c);
    (code, format!("{out}{err}"))
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("waited {secs} s for {what}");
}

/// The broker's password files as the image makes them (the image's own script).
fn mqtt_setup(state: &Path, run_dir: &Path) {
    let o = Command::new(repo().join("overlays/base/usr/lib/airlock/mqtt-setup"))
        .env("AIRLOCK_MQTT_STATE", state)
        .env("AIRLOCK_RUN", run_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "mqtt-setup: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
#[ignore = "system: needs root, nftables, iproute2, mosquitto; run by `cargo xtask test`"]
fn zones_and_conduits_hold_with_real_packets_before_and_after_a_site_profile() {
    require_root();
    build_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // mosquitto drops to its own user before it reads its password and ACL files.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(t, fs::Permissions::from_mode(0o755)).unwrap();
    let id = std::process::id() % 100_000;
    let (appl, field, mgmt, dmz) = (
        Ns::new(&format!("al{id}a")).unwrap(),
        Ns::new(&format!("al{id}f")).unwrap(),
        Ns::new(&format!("al{id}m")).unwrap(),
        Ns::new(&format!("al{id}d")).unwrap(),
    );
    veth(&appl, "f0", &field, "f1").unwrap();
    // The appliance's management link carries the name the image's model gives it (its
    // reference machine's first NIC): the zone is bound to that interface.
    veth(&appl, "enp0s1", &mgmt, "m1").unwrap();
    veth(&appl, "d0", &dmz, "d1").unwrap();
    for (ns, ifname, addrs) in [
        (&appl, "f0", &["10.20.0.1/24", "fd00:20::1/64"][..]),
        (&field, "f1", &["10.20.0.10/24", "fd00:20::10/64"]),
        (&appl, "enp0s1", &["169.254.1.1/16"]),
        (&mgmt, "m1", &["169.254.1.10/16"]),
        (&appl, "d0", &["10.99.0.1/24"]),
        (&dmz, "d1", &["10.99.0.10/24"]),
    ] {
        for a in addrs {
            let mut args = vec!["addr", "add", a, "dev", ifname];
            if a.contains(':') {
                args.push("nodad");
            }
            ok(ns, &args);
        }
    }
    appl.sysctl("net.ipv4.ip_forward=1").unwrap();
    ok(&field, &["route", "add", "default", "via", "10.20.0.1"]);
    ok(&dmz, &["route", "add", "default", "via", "10.99.0.1"]);
    ok(&mgmt, &["route", "add", "default", "via", "169.254.1.1"]);
    // IPv6 link-local addresses come up with the links (no DAD wait on veth with nodad on the
    // others; give the kernel a moment).
    std::thread::sleep(Duration::from_secs(2));

    // The simulated device, with this image's model and a firewall loaded for real.
    let dev = t.join("dev");
    let (code, model, err) = run(xtask().args(["zones", "--model"]));
    assert_eq!(code, 0, "{err}");
    fs::write(t.join("zones.toml"), &model).unwrap();
    fs::write(t.join("root.img"), vec![0u8; 4096]).unwrap();
    let (code, out, err) = sideload(
        &appl,
        &dev,
        &[
            "init",
            "--product",
            "airlock.parking-controller.x86_64",
            "--trust",
            repo().join("keys/dev/trust.toml").to_str().unwrap(),
            "--slot-size",
            "8192",
            "--image",
            t.join("root.img").to_str().unwrap(),
            "--version",
            "1.0.0",
            "--zones",
            t.join("zones.toml").to_str().unwrap(),
            "--live-firewall",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(ruleset(&appl).is_empty(), "nothing loaded before the agent's firewall step");
    let (code, out, err) = sideload(&appl, &dev, &["firewall"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("firewall loaded: image defaults"), "{out}");
    assert!(ruleset(&appl).contains("table inet airlock"));

    // The broker (the image's configuration, on this host's mosquitto) and the controller.
    let secrets = t.join("secrets");
    fs::create_dir_all(&secrets).unwrap();
    let mqtt_state = t.join("mqtt-state");
    let run_dir = dev.join("run");
    mqtt_setup(&mqtt_state, &run_dir);
    let etc = t.join("etc-mosquitto");
    fs::create_dir_all(&etc).unwrap();
    for f in ["mosquitto.conf", "airlock-controller.acl"] {
        fs::copy(repo().join("overlays/base/etc/mosquitto").join(f), etc.join(f)).unwrap();
    }
    let conf = fs::read_to_string(etc.join("mosquitto.conf"))
        .unwrap()
        .replace("/run/airlock/mqtt/", &format!("{}/mqtt/", run_dir.display()))
        .replace("/etc/mosquitto/", &format!("{}/", etc.display()));
    fs::write(t.join("mosquitto.conf"), conf).unwrap();
    let mut procs = Procs(Vec::new());
    let broker = appl
        .exec("mosquitto")
        .arg("-c")
        .arg(t.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(t.join("mosquitto.log")).unwrap())
        .spawn()
        .unwrap();
    let broker_pid = broker.id();
    procs.0.push(broker);
    fs::write(
        t.join("controller.toml"),
        format!(
            "listen = \"[::]:8080\"\nsite = \"terminal-7\"\ncapacity = 50\nstate_dir = \"{}\"\nslot = \"a\"\n[mqtt]\nbroker = \"127.0.0.1:1884\"\nuser = \"controller\"\npassword_file = \"{}\"\n",
            t.join("controller-state").display(),
            mqtt_state.join("controller.secret").display()
        ),
    )
    .unwrap();
    procs.0.push(
        appl.exec(bin("parking-controller").to_str().unwrap())
            .arg("--config")
            .arg(t.join("controller.toml"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(t.join("controller.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let api = |ns: &Ns, at: &str, path: &str| http_get(ns, sa(at), path, Duration::from_secs(3));
    wait_until("the controller to be healthy from the management zone (its broker link up)", 30, || {
        api(&mgmt, "169.254.1.1:8080", "/health").is_ok_and(|(s, _)| s == 200)
    });

    // Defaults, no profile: no field device has credentials yet.
    let hashes: Vec<Dev> =
        [("bay-001", "bay", "s1-secret"), ("bay-002", "bay", "s2-secret"), ("gate-1", "barrier", "g1-secret")]
            .iter()
            .map(|(n, k, p)| (n.to_string(), *k, mosquitto_hash(n, p, &secrets)))
            .collect();
    let (code, out) = publish(&field, "10.20.0.1:1883", "bay-001", &secrets, "bay", "bay-001", "occupied");
    assert_ne!(code, 0, "no profile, no credentials: {out}");
    assert!(out.contains("refused") || out.contains("NotAuthorized") || out.contains("BadUserNamePassword"), "{out}");

    // Profile serial 1: the default ranges, the site's devices and NTP server.
    let v1 = profile(1, &["10.20.0.0/24"], &[], &["169.254.0.0/16", "fe80::/10"], &hashes);
    let s1 = stick(&t.join("stick1"), &v1, &[("keys/dev/dev-approval.key", "approval")]);
    let (code, out, err) = sideload(&appl, &dev, &["install-site", s1.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("site profile terminal-7 serial 1 installed (signed by dev-approval)"), "{out}");
    assert!(out.contains("3 field device(s); firewall loaded"), "{out}");
    // What the box's mosquitto reload does: the credentials script, then SIGHUP.
    mqtt_setup(&mqtt_state, &run_dir);
    Command::new("kill").args(["-HUP", &broker_pid.to_string()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fs::read_to_string(run_dir.join("chrony/site.sources")).unwrap().lines().last(),
        Some("server 10.99.0.10 iburst")
    );

    let ntp = netns::UdpResponder::start(&dmz, sa("10.99.0.10:123"), b"ntp-answer").unwrap();
    check_phase(&Phase {
        appl: &appl,
        field: &field,
        mgmt: &mgmt,
        dmz: &dmz,
        appl_field: "10.20.0.1",
        appl_field6: "[fd00:20::1]",
        appl_mgmt: "169.254.1.1",
        mgmt_v6_scope: Some(netns::ifindex(&mgmt, "m1").unwrap()),
        secrets: &secrets,
        expect_bays: 1,
    });
    assert!(ntp.served.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    attacks_from_every_zone(&appl, &field, &mgmt, &dmz, &secrets, &t.join("controller.log"));

    // Refusals leave the running ruleset byte for byte alone, each with its reason.
    let before = ruleset(&appl);
    // (The DMZ pinned to its interface too: every zone is bound to where it may arrive from.)
    let v2 = profile(2, &["192.168.50.0/24"], &["f0"], &["10.1.2.0/24"], &hashes)
        + "\n[zone.plant-dmz]\ninterfaces = [\"d0\"]\n";
    for (what, text, keys, reason) in [
        ("unsigned", v2.clone(), vec![], "bad-signature"),
        // The vendor's key claiming the approval role: it holds `release` in the policy, so it
        // never counts for a site profile.
        ("signed by the vendor's release key", v2.clone(), vec![("keys/dev/dev.key", "approval")], "bad-signature"),
        (
            "an older serial",
            v1.replace("gate-1", "gate-9"),
            vec![("keys/dev/dev-approval.key", "approval")],
            "site-rollback",
        ),
        (
            "a zone this image does not have",
            v2.replace("[zone.management]", "[zone.office]"),
            vec![("keys/dev/dev-approval.key", "approval")],
            "bad-site-profile",
        ),
        (
            "an NTP server outside every zone",
            v2.replace("10.99.0.10", "10.98.0.10"),
            vec![("keys/dev/dev-approval.key", "approval")],
            "bad-site-profile",
        ),
    ] {
        let s = stick(&t.join("bad"), &text, &keys);
        let (code, out, err) = sideload(&appl, &dev, &["--json", "install-site", s.to_str().unwrap()]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(j["reason"], reason, "{what}: {out}");
        assert_eq!(ruleset(&appl), before, "{what}: the running ruleset changed");
    }
    let (code, audit, _) = sideload(&appl, &dev, &["audit"]);
    assert_eq!(code, 0);
    assert_eq!(audit.matches("install-site").count(), 5, "{audit}");
    let before = ruleset(&appl);

    // Profile serial 2: the site's own ranges (the field also pinned to its interface).
    let s2 = stick(&t.join("stick2"), &v2, &[("keys/dev/dev-approval.key", "approval")]);
    // First where nft cannot check it (an agent without CAP_NET_ADMIN: a kernel or a sandbox
    // that refuses the ruleset): refused, nothing recorded, the running rules untouched.
    let mut c = appl.exec("setpriv");
    c.args(["--bounding-set", "-net_admin"]).arg(bin("sideload")).arg("--root").arg(&dev);
    c.args(["--json", "install-site"]).arg(&s2);
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 1, "{out}{err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["reason"], "ruleset-refused", "{out}");
    assert!(j["message"].as_str().unwrap().contains("nft -c refused the ruleset"), "{out}");
    assert_eq!(ruleset(&appl), before, "a ruleset nft could not check changed the running rules");
    let (code, out, err) = sideload(&appl, &dev, &["install-site", s2.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let rules = ruleset(&appl);
    assert!(
        rules.contains("192.168.50.0/24") && rules.contains("10.1.2.0/24") && !rules.contains("169.254.0.0/16"),
        "{rules}"
    );
    for (ns, ifname, a) in [
        (&appl, "f0", "192.168.50.1/24"),
        (&field, "f1", "192.168.50.10/24"),
        (&appl, "enp0s1", "10.1.2.1/24"),
        (&mgmt, "m1", "10.1.2.10/24"),
    ] {
        ok(ns, &["addr", "add", a, "dev", ifname]);
    }
    ok(&field, &["route", "replace", "default", "via", "192.168.50.1"]);
    ok(&mgmt, &["route", "replace", "default", "via", "10.1.2.1"]);
    check_phase(&Phase {
        appl: &appl,
        field: &field,
        mgmt: &mgmt,
        dmz: &dmz,
        appl_field: "192.168.50.1",
        appl_field6: "[fd00:20::1]",
        appl_mgmt: "10.1.2.1",
        mgmt_v6_scope: None,
        secrets: &secrets,
        expect_bays: 1,
    });
    // Every zone bound to its interface: a spoofed source is refused even with a route back
    // through the sender's own link (the reverse path then passes; the interface does not).
    for (what, ns, link, lan_gw, spoofed, to) in [
        ("the field posing as management", &field, "f1", "192.168.50.10", "10.1.2.77", "192.168.50.1:8080"),
        ("the DMZ posing as management", &dmz, "d1", "10.99.0.10", "10.1.2.78", "10.99.0.1:8080"),
        ("management posing as the field", &mgmt, "m1", "10.1.2.10", "192.168.50.77", "10.1.2.1:1883"),
        ("the DMZ posing as the field", &dmz, "d1", "10.99.0.10", "192.168.50.78", "10.99.0.1:1883"),
    ] {
        let back = format!("{spoofed}/32");
        let appl_if = match link {
            "f1" => "f0",
            "d1" => "d0",
            _ => "enp0s1",
        };
        ok(&appl, &["route", "add", &back, "via", lan_gw, "dev", appl_if]);
        let before = counters(&appl);
        assert!(!spoof_tcp(ns, link, spoofed, sa(to)), "{what} ({spoofed} -> {to}) got through with a route back");
        let after = counters(&appl);
        let grew = |k: &str| after.get(k).copied().unwrap_or(0) > before.get(k).copied().unwrap_or(0);
        assert!(
            !grew("conduit_operator_api/conduit_operator_api") && !grew("conduit_field_mqtt/conduit_field_mqtt"),
            "{what}: a conduit counted it"
        );
        assert!(grew("input/dropped: no conduit"), "{what}: not counted as dropped: {after:?}");
        ok(&appl, &["route", "del", &back]);
    }
    // The old ranges are no zone any more: the field's old address and the management zone's
    // link-local one are dropped.
    ok(&field, &["route", "replace", "default", "via", "10.20.0.1"]);
    assert!(!tcp_open(&field, sa("10.20.0.1:1883"), SHORT), "the field's old range reaches the broker");
    assert!(!tcp_open(&mgmt, sa("169.254.1.1:8080"), SHORT), "link-local management still reaches the API");
    // A boot reloads the same ruleset from the recorded profile (verified again).
    let (code, out, err) = sideload(&appl, &dev, &["firewall"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("firewall loaded: site terminal-7, serial 2"), "{out}");
    drop(procs);
    drop(ntp);
}

/// `ns` gives its link `ifname` the address `spoofed` (another zone's) and opens TCP from it
/// to `to`: whether it connected.
fn spoof_tcp(ns: &Ns, ifname: &str, spoofed: &str, to: SocketAddr) -> bool {
    let a = format!("{spoofed}/32");
    ok(ns, &["addr", "add", &a, "dev", ifname]);
    let r = netns::tcp_open_from(ns, sa(&format!("{spoofed}:0")), to, SHORT);
    ok(ns, &["addr", "del", &a, "dev", ifname]);
    r
}

/// The attacks that once got through, each from the zone it comes from, with the default
/// zones' addresses and profile serial 1 in force (devices with credentials).
fn attacks_from_every_zone(appl: &Ns, field: &Ns, mgmt: &Ns, dmz: &Ns, secrets: &Path, controller_log: &Path) {
    let api = |ns: &Ns, at: &str, path: &str| http_get(ns, sa(at), path, Duration::from_secs(3));
    let grew_by = |before: &std::collections::BTreeMap<String, u64>, k: &str| {
        counters(appl).get(k).copied().unwrap_or(0).saturating_sub(before.get(k).copied().unwrap_or(0))
    };

    // 1. A source of another zone, no route back through the sender: the reverse-path check
    //    drops it before any conduit sees it; from every zone.
    for (what, ns, link, spoofed, to) in [
        ("the field posing as management", field, "f1", "169.254.1.77", "10.20.0.1:8080"),
        ("the DMZ posing as management", dmz, "d1", "169.254.1.78", "10.99.0.1:8080"),
        ("management posing as the field", mgmt, "m1", "10.20.0.77", "169.254.1.1:1883"),
        ("the DMZ posing as the field", dmz, "d1", "10.20.0.78", "10.99.0.1:1883"),
        ("the field posing as the DMZ", field, "f1", "10.99.0.77", "10.20.0.1:1883"),
    ] {
        let before = counters(appl);
        assert!(!spoof_tcp(ns, link, spoofed, sa(to)), "{what} ({spoofed} -> {to}) got through");
        assert!(
            grew_by(&before, "prerouting/spoofed: the source is not routed back through its interface") >= 1,
            "{what}: not dropped as spoofed: {:?}",
            counters(appl)
        );
        for k in ["conduit_operator_api/conduit_operator_api", "conduit_field_mqtt/conduit_field_mqtt"] {
            assert_eq!(grew_by(&before, k), 0, "{what}: conduit {k} counted a spoofed packet");
        }
    }
    // The management zone is bound to its interface as well: with a route back through the
    // field's link (the reverse path passes), the field still cannot pose as management.
    ok(appl, &["route", "add", "169.254.1.79/32", "via", "10.20.0.10", "dev", "f0"]);
    assert!(!spoof_tcp(field, "f1", "169.254.1.79", sa("10.20.0.1:8080")), "the field reached the API as management");
    ok(appl, &["route", "del", "169.254.1.79/32"]);

    // 2. IPv6 link-local is each link's own: the box's fe80:: address answers the API and
    //    echo on the management link only.
    for (what, ns, link, appl_if, allowed) in [
        ("management", mgmt, "m1", "enp0s1", true),
        ("the field", field, "f1", "f0", false),
        ("the DMZ", dmz, "d1", "d0", false),
    ] {
        let ll = link_local(appl, appl_if);
        let scope = netns::ifindex(ns, link).unwrap();
        let to = SocketAddr::V6(std::net::SocketAddrV6::new(ll, 8080, 0, scope));
        assert_eq!(tcp_open(ns, to, SHORT), allowed, "{what}: the API at {ll}%{link}");
        assert_eq!(netns::ping(ns, &format!("{ll}%{link}"), None), allowed, "{what}: ICMPv6 echo to {ll}%{link}");
    }
    assert!(netns::ping(mgmt, "169.254.1.1", None), "operator-ping from management");
    assert!(!netns::ping(field, "10.20.0.1", None), "echo from the field");
    assert!(!netns::ping(dmz, "10.99.0.1", None), "echo from the DMZ");

    // 3. DHCP only where the box takes its address by it (management, DHCPv4): the box's
    //    requests go out there alone, and servers' replies come in there alone.
    let servers: Vec<(&str, &Ns, netns::UdpResponder)> =
        [("field", field, "10.20.0.10"), ("dmz", dmz, "10.99.0.10"), ("management", mgmt, "169.254.1.10")]
            .into_iter()
            .map(|(w, ns, at)| (w, ns, netns::UdpResponder::start(ns, sa(&format!("{at}:67")), b"dhcp-offer").unwrap()))
            .collect();
    for (what, from, to, allowed) in [
        ("into the field", "10.20.0.1:68", "10.20.0.10:67", false),
        ("into the DMZ", "10.99.0.1:68", "10.99.0.10:67", false),
        ("into management", "169.254.1.1:68", "169.254.1.10:67", true),
    ] {
        let got = netns::udp_ask_from(appl, sa(from), sa(to), b"dhcp-discover", SHORT);
        assert_eq!(got.is_some(), allowed, "a DHCP request {what}");
    }
    for (w, _, r) in &servers {
        let served = r.served.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(served > 0, *w == "management", "the {w} DHCP server heard the box {served} times");
    }
    drop(servers);
    let client = netns::UdpResponder::start(appl, sa("0.0.0.0:68"), b"dhcp-request").unwrap();
    for (what, ns, from, to, allowed) in [
        ("from the DMZ", dmz, "10.99.0.10:67", "10.99.0.1:68", false),
        ("from the field", field, "10.20.0.10:67", "10.20.0.1:68", false),
        ("from management", mgmt, "169.254.1.10:67", "169.254.1.1:68", true),
    ] {
        let got = netns::udp_ask_from(ns, sa(from), sa(to), b"dhcp-offer", SHORT);
        assert_eq!(got.is_some(), allowed, "a DHCP reply {what} reached the box's client port");
    }
    assert_eq!(client.served.load(std::sync::atomic::Ordering::Relaxed), 1, "only management's offer reached the box");
    drop(client);

    // 4. A bay sensor's credentials on a barrier's topic: the broker's ACL follows the kind.
    let occupied = || {
        let (_, body) = api(mgmt, "169.254.1.1:8080", "/api/v1/occupancy").unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["occupied"].as_u64().unwrap()
    };
    let before = occupied();
    for _ in 0..3 {
        let (code, out) = publish(field, "10.20.0.1:1883", "bay-001", secrets, "barrier", "bay-001", "entry");
        assert_eq!(code, 0, "QoS 1 is acknowledged even when the ACL drops it: {out}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(occupied(), before, "a bay sensor moved the car count");
    // The barrier itself still does.
    let (code, out) = publish(field, "10.20.0.1:1883", "gate-1", secrets, "barrier", "gate-1", "entry");
    assert_eq!(code, 0, "{out}");
    wait_until("the barrier's entry to count", 10, || occupied() == before + 1);

    // 5. A field device asking for the controller's client id takes nobody's session: the
    //    broker names each client after its user.
    let log_before = fs::read_to_string(controller_log).unwrap_or_default().len();
    for id in ["controller", "parking-controller"] {
        let (code, out) = publish_as(field, "10.20.0.1:1883", "gate-1", secrets, Some(id), "barrier", "gate-1", "exit");
        assert_eq!(code, 0, "{out}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let (s, health) = api(mgmt, "169.254.1.1:8080", "/health").unwrap();
    assert_eq!(s, 200, "{health}");
    assert!(health.contains("\"mqtt\":\"connected\""), "{health}");
    let log = fs::read_to_string(controller_log).unwrap_or_default();
    assert!(
        !log[log_before..].contains("mqtt:"),
        "the controller's broker session was disturbed: {}",
        &log[log_before..]
    );
}

struct Phase<'a> {
    appl: &'a Ns,
    field: &'a Ns,
    mgmt: &'a Ns,
    dmz: &'a Ns,
    appl_field: &'a str,
    appl_field6: &'a str,
    appl_mgmt: &'a str,
    mgmt_v6_scope: Option<u32>,
    secrets: &'a Path,
    expect_bays: usize,
}

fn check_phase(p: &Phase) {
    let api = |ns: &Ns, at: String, path: &str| http_get(ns, sa(&at), path, Duration::from_secs(3));
    let before = counters(p.appl);
    let broker = format!("{}:1883", p.appl_field);

    // Every conduit, end to end.
    let (code, out) = publish(p.field, &broker, "bay-001", p.secrets, "bay", "bay-001", "occupied");
    assert_eq!(code, 0, "field-mqtt: {out}");
    let (code, out) = publish(p.field, &broker, "gate-1", p.secrets, "barrier", "gate-1", "entry");
    assert_eq!(code, 0, "field-mqtt: {out}");
    // A device writes only its own topic (the broker's ACL): bay-001 posing as bay-002.
    let (code, out) = publish(p.field, &broker, "bay-001", p.secrets, "bay", "bay-002", "occupied");
    assert_eq!(code, 0, "QoS 1 is acknowledged even when the ACL drops it: {out}");
    // A wrong password is refused by the broker.
    fs::write(p.secrets.join("intruder.secret"), "guess\n").unwrap();
    let (code, out) = publish(p.field, &broker, "intruder", p.secrets, "bay", "intruder", "free");
    assert_ne!(code, 0, "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let (s, bays) = api(p.mgmt, format!("{}:8080", p.appl_mgmt), "/api/v1/bays").unwrap();
    assert_eq!(s, 200);
    let bays: serde_json::Value = serde_json::from_str(&bays).unwrap();
    assert_eq!(bays["bay-001"], true, "{bays}");
    assert!(bays.get("bay-002").is_none(), "the ACL let bay-001 write bay-002's topic: {bays}");
    assert!(bays.get("intruder").is_none());
    assert_eq!(bays.as_object().unwrap().len(), p.expect_bays);
    let (s, occ) = api(p.mgmt, format!("{}:8080", p.appl_mgmt), "/api/v1/occupancy").unwrap();
    assert_eq!(s, 200);
    assert!(occ.contains("\"occupied\":"), "{occ}");
    if let Some(scope) = p.mgmt_v6_scope {
        // The API over IPv6 link-local, from the management side of the link.
        let appl_ll = link_local(p.appl, "enp0s1");
        let to = SocketAddr::V6(std::net::SocketAddrV6::new(appl_ll, 8080, 0, scope));
        let (s, body) = http_get(p.mgmt, to, "/health", Duration::from_secs(3)).unwrap();
        assert_eq!(s, 200, "{body}");
    }
    let ntp = udp_ask(p.appl, sa("10.99.0.10:123"), b"ntp-query", Duration::from_secs(2));
    assert_eq!(ntp.as_deref(), Some(&b"ntp-answer"[..]), "time: appliance to the DMZ's NTP server");

    // Everything else: dropped and counted.
    let f = p.appl_field;
    let m = p.appl_mgmt;
    let drops: Vec<(&str, &Ns, String)> = vec![
        ("the API from the field", p.field, format!("{f}:8080")),
        ("another port from the field", p.field, format!("{f}:22")),
        ("the broker from management", p.mgmt, format!("{m}:1883")),
        ("the controller's loopback listener from management", p.mgmt, format!("{m}:1884")),
        ("the API from the DMZ", p.dmz, "10.99.0.1:8080".into()),
        ("the broker over IPv6 from the field", p.field, format!("{}:1883", p.appl_field6)),
        ("forwarding from the field to the DMZ", p.field, "10.99.0.10:80".into()),
    ];
    for (what, ns, to) in &drops {
        assert!(!tcp_open(ns, sa(to), SHORT), "{what} ({to}) got through");
    }
    assert!(udp_ask(p.dmz, sa("10.99.0.1:123"), b"x", SHORT).is_none(), "the reverse of the time conduit got through");
    assert!(
        !tcp_open(p.appl, sa("10.99.0.10:80"), SHORT),
        "the appliance opened a connection to the DMZ off the conduit"
    );

    let after = counters(p.appl);
    let grew = |k: &str| after.get(k).copied().unwrap_or(0) > before.get(k).copied().unwrap_or(0);
    for k in [
        "input/dropped: no conduit",
        "forward/dropped: no conduit",
        "output/dropped: no conduit",
        "conduit_field_mqtt/conduit_field_mqtt",
        "conduit_operator_api/conduit_operator_api",
        "conduit_time/conduit_time",
    ] {
        assert!(grew(k), "counter {k} did not grow: {after:?}");
    }
}

fn link_local(ns: &Ns, ifname: &str) -> std::net::Ipv6Addr {
    let o = Command::new("ip")
        .args(["-n", &ns.name, "-6", "-o", "addr", "show", "dev", ifname, "scope", "link"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let a = text
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address on {ifname}: {text}"));
    a.split('/').next().unwrap().parse().unwrap()
}

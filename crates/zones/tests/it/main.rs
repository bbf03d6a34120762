//! The zone model, the site profile and the ruleset they compile to: every validation rule
//! with the item and field it names, nothing from a name or text reaching the ruleset as a
//! statement, and (as root, as CI runs) every generated ruleset accepted by `nft -c`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod edges;
mod perimeter;

use zones::{Field, Item, Model, Origin, SiteProfile};

const DEFAULT: &str = r#"
[[zone]]
name = "parking-field"
description = "Car park field devices"
security_level = "SL2"
ranges = ["10.20.0.0/24"]

[[zone]]
name = "management"
description = "OT management"
security_level = "SL3"
ranges = ["169.254.0.0/16", "fe80::/10"]
interfaces = ["mgmt0"]
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
name = "operator-api"
from = "management"
to = "appliance"
protocol = "tcp"
ports = [8080]
purpose = "Operators read occupancy"

[[conduit]]
name = "time"
from = "appliance"
to = "plant-dmz"
protocol = "udp"
ports = [123]
purpose = "NTP"
"#;

pub(crate) fn model() -> Model {
    Model::parse(DEFAULT).unwrap()
}

pub(crate) fn problems(m: &Model) -> Vec<(Item, Field, String)> {
    m.check().expect_err("must be refused").into_iter().map(|p| (p.item, p.field, p.message)).collect()
}

pub(crate) fn origin() -> Origin {
    Origin { image: "test 1.0.0".into(), site: String::new() }
}

#[test]
fn the_default_model_is_valid_and_round_trips() {
    let m = model();
    assert_eq!(Model::parse(&m.to_toml()).unwrap(), m);
}

#[test]
fn conduits_name_declared_zones() {
    let mut m = model();
    m.conduits[0].from = "parking".into();
    let p = problems(&m);
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].0, p[0].1), (Item::Conduit(0), Field::From));
    assert_eq!(
        p[0].2,
        "conduit `field-mqtt`: from = `parking` is not a declared zone (zones: appliance, parking-field, management, plant-dmz)"
    );
    let mut m = model();
    m.conduits[2].to = "appliance".into();
    assert_eq!(problems(&m)[0].2, "conduit `time` goes from `appliance` to itself");
}

#[test]
fn ranges_of_two_zones_never_overlap_and_host_bits_are_refused() {
    let mut m = model();
    m.zones[2].ranges = vec!["10.20.0.128/25".parse().unwrap()];
    let p = problems(&m);
    assert_eq!((p[0].0, p[0].1), (Item::Zone(2), Field::Range(0)));
    assert!(p[0].2.contains("overlaps range 10.20.0.0/24 of zone `parking-field`"), "{}", p[0].2);
    let mut m = model();
    m.zones[0].ranges = vec!["10.20.0.1/24".parse().unwrap()];
    assert_eq!(problems(&m)[0].2, "range 10.20.0.1/24 has host bits set: did you mean 10.20.0.0/24?");
    let mut m = model();
    m.zones[1].ranges.push("fe80::/10".parse().unwrap());
    assert_eq!(problems(&m)[0].2, "range fe80::/10 is listed twice");
}

#[test]
fn any_source_or_port_range_needs_an_exception_with_a_reason() {
    let mut m = model();
    m.zones[0].ranges.clear();
    let p = problems(&m);
    assert_eq!((p[0].0, p[0].1), (Item::Conduit(0), Field::From));
    assert!(p[0].2.contains("matches any host"), "{}", p[0].2);
    m.conduits[0].exception = Some("commissioning: field addresses not known yet".into());
    m.check().unwrap();

    let mut m = model();
    m.zones[0].ranges = vec!["0.0.0.0/0".parse().unwrap()];
    let p = problems(&m);
    assert!(p.iter().any(|p| p.2.contains("matches any host")), "{p:?}");
    assert!(p.iter().any(|p| p.2.contains("overlaps")), "a /0 overlaps every other zone: {p:?}");

    let mut m = model();
    m.conduits[1].ports = vec![zones::Port::Range("8000-8100".into())];
    assert_eq!(problems(&m)[0].2, "conduit `operator-api`: the port range 8000-8100 needs `exception = \"why\"`");
    let mut m = model();
    m.conduits[1].ports.clear();
    assert!(problems(&m)[0].2.contains("no ports means every port"));
    for bad in ["0", "9-8", "x", "1-2-3", "70000"] {
        let mut m = model();
        m.conduits[1].ports = vec![zones::Port::Range(bad.into())];
        m.conduits[1].exception = Some("range".into());
        assert_eq!(problems(&m)[0].1, Field::Port(0), "{bad}");
    }
}

#[test]
fn names_and_texts_cannot_carry_nft_syntax() {
    let hostile = [
        "a\"; flush ruleset; \"",
        "x } chain evil { type filter hook input priority -500; policy accept; }",
        "ok\naccept",
        "Upper",
        "9starts-with-digit",
        "under_score",
        "a-very-long-name-that-exceeds-31-chars",
        "",
    ];
    for h in hostile {
        let mut m = model();
        m.zones[0].name = h.into();
        m.conduits[0].from = h.into();
        assert!(problems(&m).iter().any(|p| p.0 == Item::Zone(0) && p.1 == Field::Name), "zone name {h:?}");
        let mut m = model();
        m.conduits[0].name = h.into();
        assert!(problems(&m).iter().any(|p| p.0 == Item::Conduit(0) && p.1 == Field::Name), "conduit name {h:?}");
    }
    for h in ["say \"hi\"", "back\\slash", "new\nline", "", "   ", &"x".repeat(201), "tab\there", "é"] {
        let mut m = model();
        m.conduits[0].purpose = h.into();
        assert!(problems(&m).iter().any(|p| p.1 == Field::Purpose), "purpose {h:?}");
        let mut m = model();
        m.zones[0].description = h.into();
        assert!(problems(&m).iter().any(|p| p.1 == Field::Description), "description {h:?}");
    }
    m_interface_names();
}

fn m_interface_names() {
    for (ifname, ok) in [
        ("eth0", true),
        ("enp0s31f6.100", true),
        ("a23456789012345", true),
        ("a234567890123456", false),
        ("eth\"0", false),
        ("eth*", false),
        ("..", false),
        ("", false),
    ] {
        let mut m = model();
        m.zones[0].interfaces = vec![ifname.into()];
        assert_eq!(m.check().is_ok(), ok, "{ifname:?}");
    }
}

#[test]
fn zone_names_are_unique_and_appliance_is_reserved() {
    let mut m = model();
    m.zones[1].name = "parking-field".into();
    m.zones[1].ranges.clear();
    m.zones[1].interfaces = vec!["eth1".into()];
    assert!(problems(&m).iter().any(|p| p.2 == "zone `parking-field` is declared twice"));
    let mut m = model();
    m.zones[0].name = "appliance".into();
    assert!(problems(&m).iter().any(|p| p.2.contains("is the appliance itself")));
    let mut m = model();
    m.conduits[1].name = "field-mqtt".into();
    assert!(problems(&m).iter().any(|p| p.2 == "conduit `field-mqtt` is declared twice"));
}

#[test]
fn the_ruleset_is_deterministic_default_drop_and_one_chain_per_conduit() {
    let m = model();
    let r = zones::ruleset(&m, &origin());
    assert_eq!(r, zones::ruleset(&m.clone(), &origin()));
    assert!(r.contains("flush ruleset"));
    assert!(r.contains("table inet airlock {"));
    for hook in ["input", "forward", "output"] {
        assert!(r.contains(&format!("type filter hook {hook} priority filter; policy drop;")), "{hook}");
        assert!(r.contains(&format!("log prefix \"airlock drop {hook}: \"")), "{hook}");
    }
    assert_eq!(r.matches("counter comment \"dropped: no conduit\"").count(), 3);
    for c in &m.conduits {
        let chain = format!("chain conduit_{} {{", c.name.replace('-', "_"));
        assert_eq!(r.matches(&chain).count(), 1, "{chain}");
        assert!(r.contains(&format!("log prefix \"airlock conduit {}: \"", c.name)));
    }
    assert!(r.contains("ip saddr @zone_parking_field_v4 meta l4proto 6 th dport { 1883 } jump conduit_field_mqtt"));
    assert!(r.contains("ip6 saddr @zone_management_v6 meta l4proto 6 th dport { 8080 } jump conduit_operator_api"));
    assert!(r.contains("ip daddr @zone_plant_dmz_v4 meta l4proto 17 th dport { 123 } jump conduit_time"));
    assert!(!r.contains("zone_parking_field_v6"), "no empty set for a family the zone has no range in");
    // The field zone has IPv4 only: no IPv6 path to the broker.
    assert!(!r.contains("ip6 saddr @zone_parking_field"), "{r}");
}

#[test]
fn a_conduit_between_two_zones_goes_through_forward_with_both_sides_matched() {
    let mut m = model();
    m.conduits.push(zones::Conduit {
        name: "cameras-to-dmz".into(),
        from: "parking-field".into(),
        to: "plant-dmz".into(),
        protocol: zones::Protocol::Tcp,
        ports: vec![zones::Port::One(443)],
        purpose: "ANPR uploads".into(),
        exception: None,
    });
    m.zones[0].interfaces = vec!["eth1".into()];
    let r = zones::ruleset(&m, &origin());
    assert!(
        r.contains("iifname { \"eth1\" } ip saddr @zone_parking_field_v4 ip daddr @zone_plant_dmz_v4 meta l4proto 6 th dport { 443 } jump conduit_cameras_to_dmz"),
        "{r}"
    );
}

#[test]
fn long_texts_are_clipped_to_what_nft_keeps() {
    let mut m = model();
    m.zones[0].description = "d".repeat(200);
    m.conduits[0].purpose = "p".repeat(200);
    let r = zones::ruleset(&m, &origin());
    for line in r.lines().filter(|l| l.trim_start().starts_with("comment \"")) {
        assert!(line.trim().len() <= "comment \"\"".len() + 120, "{line}");
    }
}

const SITE: &str = r#"
format = 1
product = "p"
site = "terminal-7"
serial = 3
hostname = "parking-t7"
ntp = ["10.99.0.10"]

[zone.parking-field]
ranges = ["192.168.50.0/24", "fd00:50::/64"]
interfaces = ["eth1"]

[zone.management]
ranges = ["10.1.2.0/24"]
"#;

#[test]
fn a_site_profile_places_zones_and_keeps_the_conduits() {
    let s = SiteProfile::parse(SITE.as_bytes()).unwrap();
    let m = s.apply(&model(), "p").unwrap();
    assert_eq!(m.conduits, model().conduits);
    assert_eq!(m.zone("parking-field").unwrap().interfaces, vec!["eth1".to_string()]);
    assert_eq!(
        m.zone("plant-dmz").unwrap().ranges,
        model().zone("plant-dmz").unwrap().ranges,
        "unlisted zones keep their defaults"
    );
    let r = zones::ruleset(&m, &Origin { image: "x".into(), site: "site terminal-7, serial 3".into() });
    assert!(r.contains("elements = { 192.168.50.0/24 }"));
    assert!(r.contains("iifname { \"eth1\" } ip6 saddr @zone_parking_field_v6"));
    assert!(!r.contains("169.254.0.0/16"), "the site replaced the link-local default");
    assert_eq!(SiteProfile::parse(s.to_toml().as_bytes()).unwrap(), s);
}

#[test]
fn a_site_profile_cannot_add_zones_break_the_model_or_point_time_nowhere() {
    let s = SiteProfile::parse(SITE.replace("[zone.management]", "[zone.office]").as_bytes()).unwrap();
    let e = s.apply(&model(), "p").unwrap_err();
    assert!(e[0].starts_with("zone.office: this image has no such zone"), "{e:?}");
    let s = SiteProfile::parse(SITE.replace("10.1.2.0/24", "192.168.50.0/25").as_bytes()).unwrap();
    let e = s.apply(&model(), "p").unwrap_err();
    assert!(e.iter().any(|p| p.contains("overlaps")), "{e:?}");
    let s = SiteProfile::parse(SITE.replace("10.99.0.10", "10.98.0.10").as_bytes()).unwrap();
    let e = s.apply(&model(), "p").unwrap_err();
    assert_eq!(
        e,
        [
            "ntp: server 10.98.0.10 is in no zone the appliance may reach on udp 123 (add it to the zone of the time conduit's `to`)"
        ]
    );
    let s = SiteProfile::parse(SITE.as_bytes()).unwrap();
    assert_eq!(s.apply(&model(), "q").unwrap_err(), ["product: the profile is for `p`, this image is `q`"]);
    let s = SiteProfile::parse(SITE.replace("[zone.management]", "[zone.appliance]").as_bytes()).unwrap();
    assert!(s.apply(&model(), "p").unwrap_err()[0].starts_with("zone.appliance:"));
}

#[test]
fn a_hostile_site_profile_is_refused_before_it_is_used() {
    let cases = [
        (SITE.replace("format = 1", "format = 2"), "format 2 is not known"),
        (SITE.replace("parking-t7", "Parking_T7"), "hostname `Parking_T7`"),
        (SITE.replace("parking-t7", "-x"), "hostname `-x`"),
        (SITE.replace("parking-t7", "a\\nb"), "hostname `a\\nb`"),
        (SITE.replace("serial = 3", "serial = 0"), "serial: starts at 1"),
        (SITE.replace("serial = 3", "serial = -1"), "site profile (byte"),
        (SITE.replace("\"eth1\"", "\"eth1234567890abcd\""), "longer than 15 bytes"),
        (SITE.replace("\"eth1\"", "\"eth\\\" accept\""), "zone.parking-field"),
        (SITE.replace("terminal-7", "terminal 7; drop"), "site: 1 to 64 characters"),
        (SITE.replace("[zone.management]", "[zone.\"Bad Name\"]"), "zone `Bad Name`: not a zone name"),
        (format!("{SITE}\nsurprise = 1\n"), "unknown field `surprise`"),
        (SITE.replace("10.1.2.0/24", "10.1.2.0/33"), "site profile (byte"),
    ];
    for (text, want) in cases {
        let r = SiteProfile::parse(text.as_bytes()).and_then(|s| s.apply(&model(), "p").map_err(|e| e.join("; ")));
        let e = r.expect_err(want);
        assert!(e.contains(want), "want {want:?}, got {e:?}");
    }
    let big = format!("{SITE}#{}\n", "x".repeat(zones::MAX_PROFILE));
    assert!(SiteProfile::parse(big.as_bytes()).unwrap_err().contains("more than the 262144 accepted"));
    assert!(SiteProfile::parse(b"\xff\xfe").unwrap_err().contains("not UTF-8"));
}

/// Every ruleset here goes through the real `nft -c`, in a network namespace of its own.
#[test]
#[ignore = "system: needs root and nftables; run by `cargo xtask test`"]
fn every_generated_ruleset_is_accepted_by_nft() {
    assert!(
        is_root(),
        "this system test needs root (unshare --net, nft -c): run `cargo xtask test` as root, as CI does"
    );
    let site = SiteProfile::parse(SITE.as_bytes()).unwrap().apply(&model(), "p").unwrap();
    let mut big = model();
    for i in 0..200u16 {
        big.zones.push(zones::Zone {
            name: format!("z{i}"),
            description: "synthetic".into(),
            security_level: zones::SecurityLevel::SL2,
            interfaces: vec![],
            dhcp: zones::Dhcp::No,
            addresses: vec![],
            ranges: vec![
                format!("10.{}.{}.0/24", 100 + i / 250, i % 250).parse().unwrap(),
                format!("fd00:{i:x}::/64").parse().unwrap(),
            ],
        });
        big.conduits.push(zones::Conduit {
            name: format!("c{i}"),
            from: format!("z{i}"),
            to: if i % 2 == 0 { "appliance".into() } else { "plant-dmz".into() },
            protocol: if i % 3 == 0 { zones::Protocol::Udp } else { zones::Protocol::Tcp },
            ports: vec![zones::Port::One(1000 + i)],
            purpose: "synthetic".into(),
            exception: None,
        });
    }
    big.check().unwrap();
    for (what, m) in [("default", model()), ("site", site), ("200 conduits", big)] {
        let r = zones::ruleset(&m, &origin());
        let dir = std::env::temp_dir().join(format!("zones-test-{}-{}", std::process::id(), what.replace(' ', "-")));
        std::fs::write(&dir, &r).unwrap();
        let o = std::process::Command::new("unshare")
            .args(["--net", "nft", "-c", "-f"])
            .arg(&dir)
            .output()
            .expect("unshare nft (apt-get install -y nftables)");
        std::fs::remove_file(&dir).ok();
        assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

//! Every bound and branch of the model, the site profile and the ruleset, at its edge: the
//! largest accepted and the first refused, each field's own message, each hook's own rules.
//! (Written against the mutants cargo-mutants left alive: each assertion here fails when one
//! comparison or match arm in `zones` is changed.)

use zones::{Conduit, Field, Item, Model, Port, Protocol, SecurityLevel, SiteProfile, Zone};

use super::{SITE, model, origin, problems};

/// The text of one base chain (`input`, `forward`, `output`) or conduit chain of a ruleset.
fn chain<'a>(r: &'a str, name: &str) -> &'a str {
    let start = r.find(&format!("\tchain {name} {{\n")).unwrap_or_else(|| panic!("no chain {name}:\n{r}"));
    let rest = &r[start..];
    &rest[..rest.find("\n\t}\n").unwrap()]
}

#[test]
fn names_of_levels_protocols_and_ports_print_as_the_recipe_writes_them() {
    let levels = [SecurityLevel::SL1, SecurityLevel::SL2, SecurityLevel::SL3, SecurityLevel::SL4];
    assert_eq!(levels.map(|l| l.to_string()), ["SL1", "SL2", "SL3", "SL4"]);
    assert_eq!([Protocol::Tcp, Protocol::Udp, Protocol::Icmp].map(Protocol::as_str), ["tcp", "udp", "icmp"]);
    assert_eq!(Port::One(1883).to_string(), "1883");
    assert_eq!(Port::Range("8000-8100".into()).to_string(), "8000-8100");
}

#[test]
fn describe_lists_every_zone_and_conduit_for_people() {
    let mut m = model();
    m.conduits[0].exception = Some("legacy sensors".into());
    m.zones[0].interfaces = vec!["eth1".into()];
    let d = m.describe();
    assert_eq!(d[0], "zones (IEC 62443):");
    assert!(d[1].starts_with("  parking-field  SL2  10.20.0.0/24, dev eth1"), "{d:?}");
    assert!(d[1].ends_with("  Car park field devices"), "{d:?}");
    assert!(d[2].starts_with("  management     SL3  169.254.0.0/16, fe80::/10"), "{d:?}");
    assert!(d[4].starts_with("  appliance      --   this box"), "{d:?}");
    assert!(d[4].ends_with("the appliance itself"), "{d:?}");
    assert_eq!(d[5], "conduits (everything else is dropped and counted):");
    assert!(d[6].starts_with("  field-mqtt    parking-field -> appliance"), "{d:?}");
    assert!(d[6].contains("tcp 1883") && d[6].ends_with("Sensors publish"), "{d:?}");
    assert_eq!(d[7].trim(), "exception: legacy sensors");
    assert!(d[9].starts_with("  time          appliance -> plant-dmz") && d[9].contains("udp 123"), "{d:?}");
    assert_eq!(d.len(), 10, "{d:?}");
    // A zone with neither ranges nor interfaces is any host.
    m.zones[2].ranges.clear();
    assert!(m.describe()[3].contains("any host"), "{:?}", m.describe());
}

fn zone(i: usize) -> Zone {
    let mut z = model().zones[0].clone();
    z.name = format!("z{i}");
    z.ranges = vec![format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap()];
    z
}

#[test]
fn at_most_256_zones_and_256_conduits() {
    let limit = "at most 256 zones and 256 conduits";
    let has_limit = |m: &Model| m.check().err().into_iter().flatten().any(|p| p.message == limit);
    let mut m = model();
    m.zones = (0..256).map(zone).collect();
    m.conduits.clear();
    m.check().unwrap();
    m.zones.push(zone(256));
    assert!(has_limit(&m));
    let mut m = model();
    let c = m.conduits[0].clone();
    m.conduits = (0..256).map(|i| Conduit { name: format!("c{i}"), ..c.clone() }).collect();
    assert!(!has_limit(&m));
    m.conduits.push(Conduit { name: "c256".into(), ..c });
    assert!(has_limit(&m));
}

#[test]
fn icmp_takes_no_ports_and_needs_none_and_an_exception_must_be_plain_text() {
    let mut m = model();
    m.conduits.push(Conduit {
        name: "ping".into(),
        from: "management".into(),
        to: "appliance".into(),
        protocol: Protocol::Icmp,
        ports: vec![],
        purpose: "Operators ping the box".into(),
        exception: None,
    });
    m.check().unwrap();
    m.conduits[3].ports = vec![Port::One(7)];
    assert_eq!(problems(&m), [(Item::Conduit(3), Field::Ports, "conduit `ping`: ICMP has no ports".to_string())]);
    // A TCP conduit without ports needs an exception, whose reason is plain text.
    let mut m = model();
    m.conduits[0].ports.clear();
    assert_eq!(problems(&m)[0].1, Field::Ports);
    m.conduits[0].exception = Some("every port of the legacy broker".into());
    m.check().unwrap();
    for bad in ["quote \" here", "back\\slash", "", "new\nline"] {
        m.conduits[0].exception = Some(bad.into());
        let p = problems(&m);
        assert_eq!(p.len(), 1, "{bad:?}: {p:?}");
        assert_eq!(p[0].1, Field::Exception, "{bad:?}");
        assert!(p[0].2.starts_with("conduit `field-mqtt`: the exception's reason must be 1 to"), "{p:?}");
    }
}

#[test]
fn each_conduit_jumps_from_its_own_hook_and_each_hook_keeps_its_own_housekeeping() {
    let r = zones::ruleset(&model(), &origin());
    let (input, forward, output) = (chain(&r, "input"), chain(&r, "forward"), chain(&r, "output"));
    assert!(input.contains("jump conduit_field_mqtt") && input.contains("jump conduit_operator_api"), "{input}");
    assert!(output.contains("jump conduit_time"), "{output}");
    assert!(!forward.contains("jump"), "{forward}");
    assert!(!input.contains("jump conduit_time") && !output.contains("jump conduit_field_mqtt"));
    assert!(input.contains("\t\tiif \"lo\" accept\n") && !input.contains("oif \"lo\""), "{input}");
    assert!(output.contains("\t\toif \"lo\" accept\n") && !output.contains("iif \"lo\""), "{output}");
    assert!(!forward.contains("\"lo\""), "{forward}");
    assert!(input.contains("udp sport 67 udp dport 68 accept") && input.contains("hoplimit 255 accept"), "{input}");
    assert!(output.contains("udp sport 68 udp dport 67 accept") && output.contains("143 } accept"), "{output}");
    assert!(!forward.contains("DHCP") && !forward.contains("neighbour"), "{forward}");
    assert!(!input.contains("DHCPv4 requests") && !output.contains("DHCPv4 replies"));
}

#[test]
fn a_conduit_between_zones_pairs_addresses_of_one_family_only() {
    let mut m = model();
    // management has v4 and v6; the DMZ gets both too: two rules, never a v4 → v6 one.
    m.zones[2].ranges.push("fd99::/64".parse().unwrap());
    m.conduits.push(Conduit {
        name: "mgmt-to-dmz".into(),
        from: "management".into(),
        to: "plant-dmz".into(),
        protocol: Protocol::Tcp,
        ports: vec![Port::One(22)],
        purpose: "Jump host".into(),
        exception: None,
    });
    let r = zones::ruleset(&m, &origin());
    let forward = chain(&r, "forward");
    let jumps: Vec<&str> = forward.lines().filter(|l| l.contains("jump conduit_mgmt_to_dmz")).collect();
    assert_eq!(jumps.len(), 2, "{forward}");
    assert!(jumps.iter().any(|l| l.contains("ip saddr @zone_management_v4 ip daddr @zone_plant_dmz_v4")));
    assert!(jumps.iter().any(|l| l.contains("ip6 saddr @zone_management_v6 ip6 daddr @zone_plant_dmz_v6")));
}

#[test]
fn a_comment_is_kept_whole_up_to_120_bytes_and_cut_with_an_ellipsis_beyond() {
    let mut m = model();
    let fixed = "zone parking-field (SL2): ".len();
    m.zones[0].description = "d".repeat(120 - fixed);
    let r = zones::ruleset(&m, &origin());
    assert!(r.contains(&format!("comment \"zone parking-field (SL2): {}\"", "d".repeat(120 - fixed))), "{r}");
    m.zones[0].description = "d".repeat(121 - fixed);
    let r = zones::ruleset(&m, &origin());
    assert!(r.contains(&format!("comment \"zone parking-field (SL2): {}...\"", "d".repeat(117 - fixed))), "{r}");
}

#[test]
fn field_device_names_are_mqtt_topic_levels() {
    use zones::valid_device_name as ok;
    for good in ["a", "9", "bay-0042", "0a", "controller2", &"a".repeat(64)] {
        assert!(ok(good), "{good:?}");
    }
    for bad in ["", "-a", "A", "a_b", "a b", "a/b", "a+", "controller", "é", &"a".repeat(65), "bay#1"] {
        assert!(!ok(bad), "{bad:?}");
    }
}

#[test]
fn password_hashes_are_what_mosquitto_passwd_writes() {
    use zones::valid_password_hash as ok;
    let b = |n: usize| "A".repeat(n);
    for good in [
        "$6$salt$hash".to_string(),
        "$7$101$c2FsdA==$aGFzaA+/".into(),
        format!("$7${}$s$h", "9".repeat(9)),
        format!("$6${}${}", b(128), b(128)),
    ] {
        assert!(ok(&good), "{good:?}");
    }
    for bad in [
        "".to_string(),
        "$5$s$h".into(),
        "$6$s".into(),
        "6$s$h".into(),
        "$6$$h".into(),
        "$6$s$".into(),
        "$6$s.x$h".into(),
        "$6$s$h$x".into(),
        "$7$$s$h".into(),
        "$7$1a$s$h".into(),
        "$7$101$$h".into(),
        "$7$101$s$".into(),
        "$7$101$s$h\n".into(),
        format!("$7${}$s$h", "9".repeat(10)),
        format!("$6${}$h", b(129)),
        format!("$6$s${}", b(129)),
        format!("$7$1${}$h", b(129)),
        format!("$7$1$s${}", b(129)),
    ] {
        assert!(!ok(&bad), "{bad:?}");
    }
}

fn with(extra: &str) -> Result<SiteProfile, String> {
    SiteProfile::parse(format!("{SITE}{extra}").as_bytes())
}

fn devices(n: usize) -> String {
    (0..n)
        .map(|i| format!("\n[[device]]\nname = \"bay-{i}\"\nkind = \"bay\"\npassword_hash = \"$6$s$h{i}\"\n"))
        .collect()
}

#[test]
fn a_site_profile_at_each_bound_and_one_past_it() {
    // Exactly the largest profile accepted.
    let pad = zones::MAX_PROFILE - SITE.len() - 2;
    let text = format!("{SITE}#{}\n", "x".repeat(pad));
    assert_eq!(text.len(), zones::MAX_PROFILE);
    SiteProfile::parse(text.as_bytes()).unwrap();
    // NTP servers: 8, not 9.
    let ntp = |n: usize| {
        let list: Vec<String> = (0..n).map(|i| format!("\"10.99.0.{}\"", i + 1)).collect();
        SITE.replace("ntp = [\"10.99.0.10\"]", &format!("ntp = [{}]", list.join(", ")))
    };
    SiteProfile::parse(ntp(8).as_bytes()).unwrap();
    assert_eq!(SiteProfile::parse(ntp(9).as_bytes()).unwrap_err(), "ntp: 9 servers, at most 8");
    // Devices: 2000, not 2001; each named and hashed, once.
    with(&devices(zones::MAX_DEVICES)).unwrap();
    assert_eq!(with(&devices(zones::MAX_DEVICES + 1)).unwrap_err(), "device: 2001 devices, at most 2000");
    let one = "\n[[device]]\nname = \"bay-1\"\nkind = \"bay\"\npassword_hash = \"$6$s$h\"\n";
    assert_eq!(
        with(&one.replace("bay-1", "Bay 1")).unwrap_err(),
        "device[0].name `Bay 1`: a-z 0-9 -, at most 64 characters, not `controller`"
    );
    assert_eq!(
        with(&one.replace("$6$s$h", "plain")).unwrap_err(),
        "device[0] (bay-1): password_hash is not a mosquitto_passwd hash ($7$… or $6$…)"
    );
    assert_eq!(with(&format!("{one}{one}")).unwrap_err(), "device[1]: `bay-1` is listed twice");
    let p = with(&format!("{one}{}", one.replace("bay-1", "bay-2").replace("$h", "$g"))).unwrap();
    assert_eq!(p.mosquitto_passwd(), "bay-1:$6$s$h\nbay-2:$6$s$g\n");
    assert_eq!(
        p.chrony_sources(),
        "# Airlock: NTP servers of site terminal-7 (site profile serial 3).\nserver 10.99.0.10 iburst\n"
    );
    // The site's name: 64 characters, not 65.
    let site = |n: usize| SITE.replace("site = \"terminal-7\"", &format!("site = \"{}\"", "s".repeat(n)));
    SiteProfile::parse(site(64).as_bytes()).unwrap();
    assert_eq!(SiteProfile::parse(site(65).as_bytes()).unwrap_err(), "site: 1 to 64 characters of A-Z a-z 0-9 . _ -");
    assert!(SiteProfile::parse(site(0).as_bytes()).is_err());
    // Per zone: 64 ranges and 64 interfaces, not 65.
    let zone = |ranges: usize, ifaces: usize| {
        let r: Vec<String> = (0..ranges).map(|i| format!("\"10.50.{i}.0/24\"")).collect();
        let f: Vec<String> = (0..ifaces).map(|i| format!("\"eth{i}\"")).collect();
        format!(
            "{}\n[zone.plant-dmz]\nranges = [{}]\ninterfaces = [{}]\n",
            SITE.replace("[zone.management]\nranges = [\"10.1.2.0/24\"]\n", ""),
            r.join(", "),
            f.join(", ")
        )
    };
    SiteProfile::parse(zone(64, 64).as_bytes()).unwrap();
    for (r, i) in [(65, 1), (1, 65)] {
        assert_eq!(
            SiteProfile::parse(zone(r, i).as_bytes()).unwrap_err(),
            "zone.plant-dmz: at most 64 ranges, 64 interfaces and 64 addresses"
        );
    }
    // Zones: as many as a model holds (256), not one more.
    let zones_n = |n: usize| {
        let mut t = SITE.replace("[zone.management]\nranges = [\"10.1.2.0/24\"]\n", "");
        t = t.replace(
            "[zone.parking-field]\nranges = [\"192.168.50.0/24\", \"fd00:50::/64\"]\ninterfaces = [\"eth1\"]\n",
            "",
        );
        for i in 0..n {
            t.push_str(&format!("\n[zone.z{i}]\n"));
        }
        t
    };
    SiteProfile::parse(zones_n(256).as_bytes()).unwrap();
    assert_eq!(SiteProfile::parse(zones_n(257).as_bytes()).unwrap_err(), "too many zones");
}

#[test]
fn only_a_conduit_that_covers_port_123_carries_time() {
    // A time conduit on another UDP port does not make an NTP server reachable.
    let mut m = model();
    m.conduits[2].ports = vec![Port::One(514)];
    let s = SiteProfile::parse(SITE.as_bytes()).unwrap();
    assert_eq!(
        s.apply(&m, "p").unwrap_err(),
        [
            "ntp: server 10.99.0.10 is in no zone the appliance may reach on udp 123 (add it to the zone of the time conduit's `to`)"
        ]
    );
    // Port 100 alone: below 123.
    m.conduits[2].ports = vec![Port::One(100)];
    assert!(s.apply(&m, "p").is_err());
    // TCP 123 does not carry NTP either.
    let mut m = model();
    m.conduits[2].protocol = Protocol::Tcp;
    assert!(s.apply(&m, "p").is_err());
    // A conduit into the appliance does not carry the appliance's own requests out.
    let mut m = model();
    m.conduits[2].from = "plant-dmz".into();
    m.conduits[2].to = "appliance".into();
    assert!(s.apply(&m, "p").is_err());
    // A range that covers 123 does (with its exception).
    let mut m = model();
    m.conduits[2].ports = vec![Port::Range("100-200".into())];
    m.conduits[2].exception = Some("chrony on a range".into());
    s.apply(&m, "p").unwrap();
}

#[test]
fn an_interface_name_of_15_bytes_is_the_kernels_longest() {
    let with_iface = |n: usize| SITE.replace("\"eth1\"", &format!("\"{}\"", "e".repeat(n)));
    SiteProfile::parse(with_iface(15).as_bytes()).unwrap();
    let e = SiteProfile::parse(with_iface(16).as_bytes()).unwrap_err();
    assert_eq!(
        e,
        format!("zone.parking-field.interfaces: `{}` is longer than 15 bytes (the kernel's limit)", "e".repeat(16))
    );
}

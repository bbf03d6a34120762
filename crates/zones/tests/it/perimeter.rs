//! Where a zone may arrive from: the holes found by attacking the perimeter, each as the rule
//! that closes it. A source range counts only on the zone's interfaces when it has some, and
//! never against the reverse path; link-local ranges count only on the zone's own
//! interfaces; "any" written as halves is any; DHCP only where the box takes its address.

use zones::{Coverage, Dhcp, Field, Item, Model, SiteProfile};

use crate::{model, origin, problems};

fn rules(m: &Model) -> String {
    zones::ruleset(m, &origin())
}

fn chain<'a>(rules: &'a str, name: &str) -> &'a str {
    let start = rules.find(&format!("\tchain {name} {{")).unwrap_or_else(|| panic!("no chain {name}:\n{rules}"));
    let end = rules[start..].find("\n\t}").unwrap() + start;
    &rules[start..end]
}

#[test]
fn every_packet_passes_a_strict_reverse_path_check_before_any_conduit() {
    let r = rules(&model());
    let pre = chain(&r, "prerouting");
    assert!(pre.contains("type filter hook prerouting priority raw; policy accept;"), "{pre}");
    let rpf = pre.lines().position(|l| l.contains("fib saddr . iif oif missing counter drop")).expect("rpf");
    // Only loopback, DHCP offers on the zones that take their address by DHCP, and IPv6's
    // unaddressed DAD/MLD come before it.
    let before: Vec<&str> = pre.lines().skip(2).take(rpf - 2).map(str::trim).collect();
    assert_eq!(
        before,
        [
            "iif \"lo\" accept",
            "iifname { \"mgmt0\" } meta l4proto 17 udp sport 67 udp dport 68 accept comment \"DHCPv4 replies before an address, zone management\"",
            "ip6 saddr :: meta l4proto 58 icmpv6 type { 135, 143 } ip6 hoplimit 255 accept comment \"IPv6 duplicate address detection\"",
            "ip6 saddr :: meta l4proto 58 icmpv6 type 143 accept comment \"MLDv2 reports before an address\"",
        ]
    );
}

#[test]
fn link_local_ranges_count_only_on_the_zone_own_interfaces() {
    let mut m = model();
    let mgmt = m.zones.iter().position(|z| z.name == "management").unwrap();
    // Bound to its interface: every match of the zone names it.
    let r = rules(&m);
    for l in r.lines().filter(|l| l.contains("@zone_management_v")) {
        assert!(l.trim_start().starts_with("iifname { \"mgmt0\" } "), "{l}");
    }
    // Without interfaces, a link-local range is refused, v4 and v6 alike, naming the range.
    m.zones[mgmt].interfaces.clear();
    m.zones[mgmt].dhcp = Dhcp::No;
    let p = problems(&m);
    assert_eq!(
        p.iter().map(|(i, f, _)| (*i, *f)).collect::<Vec<_>>(),
        [(Item::Zone(mgmt), Field::Range(0)), (Item::Zone(mgmt), Field::Range(1))]
    );
    assert!(p[1].2.contains("range fe80::/10 is link-local"), "{}", p[1].2);
    // A narrower link-local range is link-local too.
    m.zones[mgmt].ranges = vec!["fe80::/64".parse().unwrap()];
    assert!(problems(&m)[0].2.contains("range fe80::/64 is link-local"));
    // A zone with no interface whose range holds link-local space leaves that space out.
    let mut m = model();
    let dmz = m.zones.iter().position(|z| z.name == "plant-dmz").unwrap();
    m.zones[dmz].ranges = vec!["169.0.0.0/8".parse().unwrap()];
    m.zones[mgmt].ranges.retain(|r| !r.to_string().starts_with("169."));
    m.check().unwrap();
    let r = rules(&m);
    let time = r.lines().find(|l| l.contains("jump conduit_time")).unwrap();
    assert!(time.contains("ip daddr @zone_plant_dmz_v4 ip daddr != 169.254.0.0/16 "), "{time}");
    // …and the same in a site profile: link-local without interfaces cannot be placed.
    let site = "format = 1\nproduct = \"p\"\nsite = \"s\"\nserial = 1\nhostname = \"h\"\n[zone.management]\nranges = [\"fe80::/10\"]\ninterfaces = []\n";
    let e = SiteProfile::parse(site.as_bytes()).unwrap().apply(&model(), "p").unwrap_err();
    assert!(
        e.iter().any(|p| p.starts_with("zone.management: zone `management`: range fe80::/10 is link-local")),
        "{e:?}"
    );
}

#[test]
fn any_written_in_pieces_is_any_and_needs_an_exception() {
    let field = 0;
    for (ranges, broad) in [
        (&["0.0.0.0/1", "128.0.0.0/1"][..], true),
        (&["::/1", "8000::/1"], true),
        (&["10.0.0.0/8"], false),
        (&["10.0.0.0/8", "11.0.0.0/24"], true),
        // Overlaps count once: a /8 and a /9 inside it are a /8.
        (&["10.0.0.0/8", "10.0.0.0/9", "10.128.0.0/9"], false),
        (&["2001:db8::/32"], false),
        (&["2001:db8::/32", "2001:db9::/48"], true),
        (&["fd00::/31"], true),
    ] {
        // The field zone and its conduit alone (a whole half overlaps every other zone).
        let mut m = model();
        m.zones.truncate(1);
        m.conduits.retain(|c| c.from == "parking-field");
        m.zones[field].ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
        let cov = Coverage::of(&m.zones[field].ranges);
        assert_eq!(cov.too_broad(), broad, "{ranges:?}: {cov:?}");
        if broad {
            let p = problems(&m);
            assert_eq!((p[0].0, p[0].1), (Item::Conduit(0), Field::From), "{ranges:?}: {p:?}");
            assert!(p[0].2.contains("all its ranges together"), "{}", p[0].2);
            m.conduits[0].exception = Some("the field is the whole plant".into());
            m.check().unwrap();
        } else {
            m.check().unwrap_or_else(|p| panic!("{ranges:?}: {p:?}"));
        }
    }
    assert_eq!(Coverage::of(&["0.0.0.0/1".parse().unwrap(), "128.0.0.0/1".parse().unwrap()]).v4, 1 << 32);
    assert_eq!(Coverage::of(&["::/0".parse().unwrap()]).v6, u128::MAX);
    // The bound itself: a /8 of IPv4 and a /32 of IPv6 are allowed, one address more is not.
    assert_eq!(zones::MAX_ZONE_V4, 1 << 24);
    assert_eq!(zones::MAX_ZONE_V6, 1 << 96);
}

#[test]
fn dhcp_goes_only_through_the_interfaces_of_the_zones_that_take_their_address_by_it() {
    let r = rules(&model());
    let dhcp: Vec<&str> =
        r.lines().filter(|l| l.contains("sport 67") || l.contains("sport 68")).map(str::trim).collect();
    assert_eq!(
        dhcp,
        [
            "iifname { \"mgmt0\" } meta l4proto 17 udp sport 67 udp dport 68 accept comment \"DHCPv4 replies before an address, zone management\"",
            "iifname { \"mgmt0\" } meta l4proto 17 udp sport 67 udp dport 68 accept comment \"DHCPv4 replies, zone management\"",
            "oifname { \"mgmt0\" } meta l4proto 17 udp sport 68 udp dport 67 accept comment \"DHCPv4 requests, zone management\"",
        ]
    );
    assert!(!r.contains("sport 547") && !r.contains("sport 546"), "no DHCPv6 where none is taken");
    // No zone takes its address by DHCP: no DHCP at all.
    let mut m = model();
    for z in &mut m.zones {
        z.dhcp = Dhcp::No;
    }
    let r = rules(&m);
    assert!(!r.contains("udp sport 67") && !r.contains("udp sport 68"), "{r}");
    // DHCPv6 too, on its zone alone; DHCP needs interfaces.
    let mut m = model();
    m.zones[1].dhcp = Dhcp::Both;
    let r = rules(&m);
    assert!(r.contains("iifname { \"mgmt0\" } meta l4proto 17 udp sport 547 udp dport 546 accept"), "{r}");
    assert!(r.contains("oifname { \"mgmt0\" } meta l4proto 17 udp sport 546 udp dport 547 accept"), "{r}");
    m.zones[0].dhcp = Dhcp::Ipv4;
    let p = problems(&m);
    assert_eq!((p[0].0, p[0].1), (Item::Zone(0), Field::Dhcp));
    assert!(p[0].2.contains("dhcp needs `interfaces`"), "{}", p[0].2);
}

#[test]
fn the_box_interface_configuration_is_generated_per_zone_from_the_same_model() {
    let mut m = model();
    m.zones[0].interfaces = vec!["eth2".into()];
    m.zones[0].addresses = vec!["10.20.0.1/24".parse().unwrap()];
    m.check().unwrap();
    let files = zones::networkd(&m, "the image's defaults");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["50-airlock-parking-field.network", "50-airlock-management.network"]);
    assert_eq!(
        files[0].1,
        "# Airlock: zone parking-field (SL2), generated from the image's defaults. Do not edit: change the recipe or the site profile.\n[Match]\nName=eth2\n\n[Network]\nDHCP=no\nLinkLocalAddressing=no\nIPv6AcceptRA=no\nAddress=10.20.0.1/24\n"
    );
    assert!(files[1].1.contains("Name=mgmt0\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=ipv6\n"), "{}", files[1].1);
    // An address outside the zone's ranges, or with no interface, is refused.
    m.zones[0].addresses = vec!["10.30.0.1/24".parse().unwrap()];
    assert!(problems(&m)[0].2.contains("the box's address 10.30.0.1/24 is in none of the zone's ranges"));
    m.zones[0].interfaces.clear();
    assert!(problems(&m)[0].2.contains("needs `interfaces`"));
}

#[test]
fn a_site_profile_field_is_bounded_by_what_its_consumer_takes() {
    let base = "format = 1\nproduct = \"p\"\nsite = \"s\"\nserial = 1\nhostname = \"HOST\"\n";
    let host = |h: &str| SiteProfile::parse(base.replace("HOST", h).as_bytes());
    // sethostname(2) takes 64 bytes: RFC 1123 allows 253, the kernel does not.
    let at = |n: usize| format!("{}.{}", "a".repeat(63), "b".repeat(n - 64));
    host(&at(64 + 1)).unwrap_err();
    host(&"a".repeat(63)).unwrap();
    host(&format!("{}.b", "a".repeat(62))).unwrap();
    let e = host(&format!("{}.bb", "a".repeat(62))).unwrap_err();
    assert!(e.contains("64 in all (the kernel's limit)"), "{e}");
    assert!(!zones::valid_hostname(&"a".repeat(64)), "a label is 63 at most");
    // A re-siting names another, valid site.
    let resite =
        |from: &str| SiteProfile::parse(format!("{}resite_from = \"{from}\"\n", base.replace("HOST", "h")).as_bytes());
    resite("terminal-7").unwrap();
    assert!(resite("s").unwrap_err().contains("is the profile's own site"));
    assert!(resite("bad site").unwrap_err().starts_with("resite_from:"));
    // A device says what it is; the ACL follows its kind, one topic each, no pattern.
    let dev = |kind: &str| {
        SiteProfile::parse(
            format!(
                "{}[[device]]\nname = \"d-1\"\nkind = \"{kind}\"\npassword_hash = \"$6$s$h\"\n",
                base.replace("HOST", "h")
            )
            .as_bytes(),
        )
    };
    assert!(dev("gate").unwrap_err().contains("unknown variant `gate`"));
    for (kind, topic) in [
        ("bay", "parking/bays/d-1/state"),
        ("barrier", "parking/barriers/d-1/event"),
        ("camera", "parking/cameras/d-1/read"),
    ] {
        let acl = dev(kind).unwrap().mosquitto_acl();
        let body: Vec<&str> = acl.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
        assert_eq!(body, ["user d-1".to_string(), format!("topic write {topic}")], "{kind}");
    }
}

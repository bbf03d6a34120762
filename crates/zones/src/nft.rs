//! The model compiled into one nftables ruleset: table `inet airlock` (IPv4 and IPv6 alike),
//! one interval set per zone and family, base chains input/forward/output with policy drop,
//! and one chain per conduit (a counter, a rate-limited log line with its name, accept).
//! Everything that goes into the text passed [`Model::check`]: names are `a-z0-9-`, free text
//! has no quotes or backslashes, addresses and ports are parsed values; so nothing a recipe or
//! a site profile says can become a statement of its own. Deterministic: the same model gives
//! the same bytes.

use std::fmt::Write;

use ipnet::IpNet;

use crate::model::{APPLIANCE, Conduit, LINK_LOCAL_V4, LINK_LOCAL_V6, Model, Protocol, Zone, touches_link_local};

/// The one table Airlock owns.
pub const RULESET_TABLE: &str = "airlock";

/// Protocol numbers (a minimal image may have no /etc/protocols: FIELD-NOTES.md).
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Identifier form of a checked name: `-` becomes `_` (names hold no `_`, so this is one-to-one).
fn ident(name: &str) -> String {
    name.replace('-', "_")
}

/// nft keeps at most 128 bytes of a comment; checked text is ASCII, so cutting is safe.
fn clip(s: &str) -> String {
    if s.len() <= 120 { s.to_string() } else { format!("{}...", &s[..117]) }
}

fn set_name(zone: &str, v6: bool) -> String {
    format!("zone_{}_{}", ident(zone), if v6 { "v6" } else { "v4" })
}

fn chain_name(conduit: &str) -> String {
    format!("conduit_{}", ident(conduit))
}

/// One side of a flow, as match expressions, per address family.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

/// The ways a zone can be matched on one side (`saddr`/`iifname` or `daddr`/`oifname`): one
/// entry per address family it has ranges in, or one family-free entry if it has none; an
/// empty list for the appliance or an "any" zone, meaning "no condition".
fn side(zone: Option<&Zone>, source: bool) -> Vec<(Family, String)> {
    let Some(z) = zone.filter(|z| !z.is_any()) else { return vec![(Family::Any, String::new())] };
    let dir = if source { "saddr" } else { "daddr" };
    let ifs = if z.interfaces.is_empty() { String::new() } else { format!("{} ", ifset(z, source)) };
    let has = |v6: bool| z.ranges.iter().any(|r| matches!(r, IpNet::V6(_)) == v6);
    if z.ranges.is_empty() {
        return vec![(Family::Any, ifs)];
    }
    // A zone bound to no interface never takes a link-local address for its own (every link
    // has those): a range that holds link-local space leaves it out (`Model::check` refuses
    // link-local ranges there outright).
    let not_ll = |v6: bool| {
        let (ll, fam) = if v6 { (LINK_LOCAL_V6, "ip6") } else { (LINK_LOCAL_V4, "ip") };
        let holds = z.ranges.iter().any(|r| matches!(r, IpNet::V6(_)) == v6 && touches_link_local(r));
        if z.interfaces.is_empty() && holds { format!("{fam} {dir} != {ll} ") } else { String::new() }
    };
    let mut out = Vec::new();
    if has(false) {
        out.push((Family::V4, format!("{ifs}ip {dir} @{} {}", set_name(&z.name, false), not_ll(false))));
    }
    if has(true) {
        out.push((Family::V6, format!("{ifs}ip6 {dir} @{} {}", set_name(&z.name, true), not_ll(true))));
    }
    out
}

/// `iifname { "a", "b" }` (or `oifname`) for a zone's interfaces.
fn ifset(z: &Zone, input: bool) -> String {
    let names: Vec<String> = z.interfaces.iter().map(|i| format!("\"{i}\"")).collect();
    format!("{} {{ {} }}", if input { "iifname" } else { "oifname" }, names.join(", "))
}

/// The DHCP the box's own interface configuration runs, per zone: (hook, rule). Nothing for a
/// zone that does not take its address by DHCP.
fn dhcp_rules(m: &Model) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for z in m.zones.iter().filter(|z| !z.interfaces.is_empty()) {
        let d = z.dhcp;
        let (i, o) = (ifset(z, true), ifset(z, false));
        if d.v4() {
            out.push((
                "input",
                format!(
                    "{i} meta l4proto {UDP} udp sport 67 udp dport 68 accept comment \"DHCPv4 replies, zone {}\"",
                    z.name
                ),
            ));
            out.push((
                "output",
                format!(
                    "{o} meta l4proto {UDP} udp sport 68 udp dport 67 accept comment \"DHCPv4 requests, zone {}\"",
                    z.name
                ),
            ));
        }
        if d.v6() {
            out.push((
                "input",
                format!(
                    "{i} meta l4proto {UDP} udp sport 547 udp dport 546 accept comment \"DHCPv6 replies, zone {}\"",
                    z.name
                ),
            ));
            out.push((
                "output",
                format!(
                    "{o} meta l4proto {UDP} udp sport 546 udp dport 547 accept comment \"DHCPv6 requests, zone {}\"",
                    z.name
                ),
            ));
        }
    }
    out
}

fn ports(c: &Conduit) -> String {
    let mut p: Vec<(u16, u16)> = c.ports.iter().filter_map(|p| p.bounds()).collect();
    p.sort_unstable();
    p.dedup();
    let items: Vec<String> = p.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    items.join(", ")
}

/// The protocol (and port) part of a conduit's rule, for a family.
fn proto(c: &Conduit, family: Family) -> Vec<String> {
    let num = match c.protocol {
        Protocol::Tcp => TCP,
        Protocol::Udp => UDP,
        Protocol::Icmp => {
            return match family {
                Family::V4 => vec![format!("meta l4proto {ICMP} ")],
                Family::V6 => vec![format!("meta l4proto {ICMPV6} ")],
                Family::Any => vec![format!("meta l4proto {{ {ICMP}, {ICMPV6} }} ")],
            };
        }
    };
    if c.ports.is_empty() {
        vec![format!("meta l4proto {num} ")]
    } else {
        vec![format!("meta l4proto {num} th dport {{ {} }} ", ports(c))]
    }
}

/// The rules that send a conduit's new flows to its chain, and the base chain they go in.
fn jumps(m: &Model, c: &Conduit) -> (&'static str, Vec<String>) {
    let from = (c.from != APPLIANCE).then(|| m.zone(&c.from)).flatten();
    let to = (c.to != APPLIANCE).then(|| m.zone(&c.to)).flatten();
    let hook = if c.to == APPLIANCE {
        "input"
    } else if c.from == APPLIANCE {
        "output"
    } else {
        "forward"
    };
    let src = if c.from == APPLIANCE { vec![(Family::Any, String::new())] } else { side(from, true) };
    let dst = if c.to == APPLIANCE { vec![(Family::Any, String::new())] } else { side(to, false) };
    let mut out = Vec::new();
    for (fs, s) in &src {
        for (fd, d) in &dst {
            let family = match (fs, fd) {
                (Family::Any, f) | (f, Family::Any) => *f,
                (a, b) if a == b => *a,
                _ => continue,
            };
            for p in proto(c, family) {
                out.push(format!("{s}{d}{p}jump {}", chain_name(&c.name)));
            }
        }
    }
    (hook, out)
}

/// Where the ruleset came from, for its header comment.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// e.g. `parking-controller 1.0.0`.
    pub image: String,
    /// e.g. `site terminal-7, serial 4`, or empty for the image's defaults.
    pub site: String,
}

/// The ruleset, as `nft -f` reads it. `flush ruleset` first: the file replaces whatever was
/// loaded, in one transaction (all or nothing).
pub fn ruleset(m: &Model, origin: &Origin) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "#!/usr/sbin/nft -f");
    let _ = writeln!(w, "# Airlock firewall, generated from the zones and conduits of {}.", origin.image);
    if origin.site.is_empty() {
        let _ = writeln!(w, "# Site: the image's defaults (no site profile installed).");
    } else {
        let _ = writeln!(w, "# Site: {}.", origin.site);
    }
    let _ = writeln!(
        w,
        "# Do not edit: change the recipe or the site profile; this file is generated again at every boot."
    );
    let _ = writeln!(w, "flush ruleset\n");
    let _ = writeln!(w, "table inet {RULESET_TABLE} {{");
    for z in &m.zones {
        for v6 in [false, true] {
            let els: Vec<String> =
                z.ranges.iter().filter(|r| matches!(r, IpNet::V6(_)) == v6).map(|r| r.to_string()).collect();
            if els.is_empty() {
                continue;
            }
            let _ = writeln!(w, "\tset {} {{", set_name(&z.name, v6));
            let _ = writeln!(w, "\t\ttype {}", if v6 { "ipv6_addr" } else { "ipv4_addr" });
            let _ = writeln!(w, "\t\tflags interval");
            let _ = writeln!(w, "\t\tauto-merge");
            let _ = writeln!(
                w,
                "\t\tcomment \"{}\"",
                clip(&format!("zone {} ({}): {}", z.name, z.security_level, z.description))
            );
            let _ = writeln!(w, "\t\telements = {{ {} }}", els.join(", "));
            let _ = writeln!(w, "\t}}\n");
        }
    }

    let mut by_hook: [(&str, Vec<(String, String)>); 3] = [("input", vec![]), ("forward", vec![]), ("output", vec![])];
    for c in &m.conduits {
        let (hook, rules) = jumps(m, c);
        if let Some((_, v)) = by_hook.iter_mut().find(|(h, _)| *h == hook) {
            v.extend(rules.into_iter().map(|r| (r, c.name.clone())));
        }
    }
    let dhcp = dhcp_rules(m);

    // Before any other hook: a packet whose source the box would not route back out of the
    // interface it came in on is spoofed (a field device sending with a management address),
    // whatever its range (strict reverse-path filtering). DHCPv4 replies on the zones that
    // take their address by DHCP come before it: the box has no route yet when the first
    // offer arrives. IPv6 duplicate-address detection and MLD come from `::`.
    let _ = writeln!(w, "\tchain prerouting {{");
    let _ = writeln!(w, "\t\ttype filter hook prerouting priority raw; policy accept;");
    let _ = writeln!(w, "\t\tiif \"lo\" accept");
    for z in m.zones.iter().filter(|z| !z.interfaces.is_empty() && z.dhcp.v4()) {
        let _ = writeln!(
            w,
            "\t\t{} meta l4proto {UDP} udp sport 67 udp dport 68 accept comment \"DHCPv4 replies before an address, zone {}\"",
            ifset(z, true),
            z.name
        );
    }
    let _ = writeln!(
        w,
        "\t\tip6 saddr :: meta l4proto {ICMPV6} icmpv6 type {{ 135, 143 }} ip6 hoplimit 255 accept comment \"IPv6 duplicate address detection\""
    );
    let _ = writeln!(
        w,
        "\t\tip6 saddr :: meta l4proto {ICMPV6} icmpv6 type 143 accept comment \"MLDv2 reports before an address\""
    );
    let _ = writeln!(
        w,
        "\t\tfib saddr . iif oif missing counter drop comment \"spoofed: the source is not routed back through its interface\""
    );
    let _ = writeln!(w, "\t}}\n");

    for (hook, rules) in &by_hook {
        let _ = writeln!(w, "\tchain {hook} {{");
        let _ = writeln!(w, "\t\ttype filter hook {hook} priority filter; policy drop;");
        match *hook {
            "input" => {
                let _ = writeln!(w, "\t\tiif \"lo\" accept");
            }
            "output" => {
                let _ = writeln!(w, "\t\toif \"lo\" accept");
            }
            _ => {}
        }
        let _ = writeln!(w, "\t\tct state invalid counter drop comment \"invalid state\"");
        let _ = writeln!(w, "\t\tct state established,related accept");
        match *hook {
            "input" => {
                let _ = writeln!(
                    w,
                    "\t\tmeta l4proto {ICMPV6} icmpv6 type {{ 133, 134, 135, 136 }} ip6 hoplimit 255 accept comment \"IPv6 neighbour discovery\""
                );
            }
            "output" => {
                let _ = writeln!(
                    w,
                    "\t\tmeta l4proto {ICMPV6} icmpv6 type {{ 133, 135, 136, 143 }} accept comment \"IPv6 neighbour discovery, MLDv2\""
                );
            }
            _ => {}
        }
        for (h, r) in &dhcp {
            if h == hook {
                let _ = writeln!(w, "\t\t{r}");
            }
        }
        for (r, name) in rules {
            let _ = writeln!(w, "\t\t{r} comment \"conduit {name}\"");
        }
        let _ =
            writeln!(w, "\t\tlimit rate 10/second burst 20 packets log prefix \"airlock drop {hook}: \" level warn");
        let _ = writeln!(w, "\t\tcounter comment \"dropped: no conduit\"");
        let _ = writeln!(w, "\t}}\n");
    }
    for c in &m.conduits {
        let _ = writeln!(w, "\tchain {} {{", chain_name(&c.name));
        let _ = writeln!(w, "\t\tcomment \"{}\"", clip(&format!("{} -> {}: {}", c.from, c.to, c.purpose)));
        let _ = writeln!(
            w,
            "\t\tct state new limit rate 10/second burst 20 packets log prefix \"airlock conduit {}: \" level info",
            c.name
        );
        let _ = writeln!(w, "\t\tcounter accept");
        let _ = writeln!(w, "\t}}\n");
    }
    o.truncate(o.trim_end().len());
    o.push_str("\n}\n");
    o
}

//! The zone model and its validation. A zone is a set of hosts (address ranges and/or
//! interfaces) with a target security level; a conduit is the only way traffic crosses from one
//! zone to another: a direction, a protocol, ports and a purpose. The appliance itself is the
//! implicit zone `appliance`.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The implicit zone of the appliance itself.
pub const APPLIANCE: &str = "appliance";
const MAX_NAME: usize = 31;
const MAX_TEXT: usize = 200;
/// The kernel's limit on interface names (IFNAMSIZ 16, with its NUL).
pub const MAX_IFNAME: usize = 15;
pub(crate) const MAX_ITEMS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SecurityLevel {
    SL1,
    SL2,
    SL3,
    SL4,
}

impl fmt::Display for SecurityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

/// A port, or a range `"8000-8100"` (a range needs an exception with its reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Port {
    One(u16),
    Range(String),
}

impl std::fmt::Display for Port {
    /// As the recipe wrote it: `1883`, or the range's text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Port::One(n) => write!(f, "{n}"),
            Port::Range(r) => f.write_str(r),
        }
    }
}

impl Port {
    /// (first, last), when well formed.
    pub fn bounds(&self) -> Option<(u16, u16)> {
        match self {
            Port::One(p) => Some((*p, *p)),
            Port::Range(r) => {
                let (a, b) = r.split_once('-')?;
                Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
            }
        }
    }
}

/// How the appliance takes its own addresses on a zone's interfaces: the only DHCP the
/// firewall lets through (replies in, requests out, on those interfaces alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dhcp {
    /// No DHCP on the zone's interfaces (the default).
    #[default]
    No,
    Ipv4,
    Ipv6,
    Both,
}

impl Dhcp {
    pub fn is_no(&self) -> bool {
        *self == Dhcp::No
    }
    pub fn v4(self) -> bool {
        matches!(self, Dhcp::Ipv4 | Dhcp::Both)
    }
    pub fn v6(self) -> bool {
        matches!(self, Dhcp::Ipv6 | Dhcp::Both)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Dhcp::No => "no",
            Dhcp::Ipv4 => "ipv4",
            Dhcp::Ipv6 => "ipv6",
            Dhcp::Both => "both",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    pub description: String,
    pub security_level: SecurityLevel,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<IpNet>,
    /// The appliance takes its address on this zone's interfaces by DHCP (needs interfaces).
    #[serde(default, skip_serializing_if = "Dhcp::is_no")]
    pub dhcp: Dhcp,
    /// The appliance's own static addresses on this zone's interfaces (`10.20.0.1/24`: the
    /// address and its network; needs interfaces; each inside one of the zone's ranges).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpNet>,
}

/// The link-local networks: every directly attached link has them, so a link-local source
/// says nothing of where a packet came from unless the interface is named too.
pub const LINK_LOCAL_V4: &str = "169.254.0.0/16";
pub const LINK_LOCAL_V6: &str = "fe80::/10";

const LINK_LOCAL: [IpNet; 2] = [
    IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(169, 254, 0, 0), 16)),
    IpNet::V6(ipnet::Ipv6Net::new_assert(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)),
];

fn link_local_nets() -> [IpNet; 2] {
    LINK_LOCAL
}

/// `net` lies within a link-local network.
pub fn is_link_local(net: &IpNet) -> bool {
    link_local_nets().iter().any(|ll| ll.contains(net))
}

/// `net` shares addresses with a link-local network (it lies in one, or holds one).
pub fn touches_link_local(net: &IpNet) -> bool {
    link_local_nets().iter().any(|ll| overlaps(ll, net))
}

/// The most of each address space a zone may cover, all its ranges together, before the
/// conduits that use it need an exception: a /8 of IPv4 (16.7 million hosts, a whole
/// private 10/8 plant network), a /32 of IPv6 (a registry allocation: far more than a site's
/// /48). Beyond that a zone is "any host" in all but name.
pub const MAX_ZONE_V4: u64 = 1 << 24;
pub const MAX_ZONE_V6: u128 = 1 << 96;

/// How many addresses of each family a zone's ranges cover, overlaps counted once (IPv6
/// saturates at `u128::MAX`, which stands for all 2^128). Link-local ranges do not count:
/// they hold the hosts of the zone's own links only (and without interfaces, none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    pub v4: u64,
    pub v6: u128,
}

impl Coverage {
    pub fn of(ranges: &[IpNet]) -> Coverage {
        let mut c = Coverage { v4: 0, v6: 0 };
        let routable: Vec<IpNet> = ranges.iter().filter(|r| !is_link_local(r)).copied().collect();
        for r in IpNet::aggregate(&routable) {
            match r {
                IpNet::V4(n) => c.v4 += 1u64 << (32 - u32::from(n.prefix_len())),
                IpNet::V6(n) => {
                    let size = 1u128.checked_shl(128 - u32::from(n.prefix_len())).unwrap_or(u128::MAX);
                    c.v6 = c.v6.saturating_add(size);
                }
            }
        }
        c
    }

    /// More than a zone may cover without an exception.
    pub fn too_broad(&self) -> bool {
        self.v4 > MAX_ZONE_V4 || self.v6 > MAX_ZONE_V6
    }

    /// "2^31 IPv4 addresses (50% of the IPv4 space)", for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.v4 > 0 {
            parts.push(format!(
                "{} IPv4 addresses ({:.4}% of the IPv4 space)",
                self.v4,
                self.v4 as f64 * 100.0 / (1u64 << 32) as f64
            ));
        }
        if self.v6 > 0 {
            let bits = if self.v6 == u128::MAX { 128 } else { 127 - self.v6.leading_zeros() };
            parts.push(format!("about 2^{bits} IPv6 addresses"));
        }
        parts.join(" and ")
    }
}

impl Zone {
    /// A zone that matches every host: no ranges and no interfaces, or a range of everything.
    pub fn is_any(&self) -> bool {
        (self.ranges.is_empty() && self.interfaces.is_empty()) || self.ranges.iter().any(|r| r.prefix_len() == 0)
    }

    /// All its ranges together cover more than a zone may without an exception (or it is any
    /// host): `0.0.0.0/1 + 128.0.0.0/1` is "any", written in halves.
    pub fn is_broad(&self) -> bool {
        self.is_any() || Coverage::of(&self.ranges).too_broad()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conduit {
    pub name: String,
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    pub purpose: String,
    /// Why this conduit may accept any source or a port range (IEC 62443 asks for the reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
}

/// The vendor's model: what `/etc/airlock/zones.toml` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    #[serde(default, rename = "zone")]
    pub zones: Vec<Zone>,
    #[serde(default, rename = "conduit")]
    pub conduits: Vec<Conduit>,
}

/// Which part of the model a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Zone(usize),
    Conduit(usize),
}

/// Which field (and, for lists, which entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Description,
    SecurityLevel,
    Interface(usize),
    Range(usize),
    Dhcp,
    Address(usize),
    From,
    To,
    Protocol,
    Port(usize),
    Ports,
    Purpose,
    Exception,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub item: Item,
    pub field: Field,
    pub message: String,
}

/// A name that can go into an nftables ruleset as it is: `a-z`, `0-9` and `-`, starting with a
/// letter, at most 31 characters.
pub fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Free text that can go into a ruleset comment and a report: printable ASCII, no quotes or
/// backslashes.
fn safe_text(s: &str) -> bool {
    !s.trim().is_empty()
        && s.len() <= MAX_TEXT
        && s.bytes().all(|c| (b' '..=b'~').contains(&c) && c != b'"' && c != b'\\')
}

fn safe_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_IFNAME
        && s != "."
        && s != ".."
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

impl Model {
    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    pub fn parse(text: &str) -> Result<Model, String> {
        let m: Model = toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
        m.check().map_err(|p| p.iter().map(|p| p.message.clone()).collect::<Vec<_>>().join("; "))?;
        Ok(m)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# Airlock: the IEC 62443 zones and conduits of this image (the site profile adds the site's addresses).\n{body}"
        )
    }

    /// The model as a table for people: zones with their level and where they are, conduits
    /// with direction, protocol, ports and purpose.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec!["zones (IEC 62443):".to_string()];
        let w = self.zones.iter().map(|z| z.name.len()).chain([APPLIANCE.len()]).max().unwrap_or(0);
        for z in &self.zones {
            let mut at: Vec<String> = z.ranges.iter().map(|r| r.to_string()).collect();
            at.extend(z.interfaces.iter().map(|i| format!("dev {i}")));
            if at.is_empty() {
                at.push("any host".into());
            }
            out.push(format!("  {:w$}  {}  {:34}  {}", z.name, z.security_level, at.join(", "), z.description));
        }
        out.push(format!("  {APPLIANCE:w$}  --   {:34}  the appliance itself", "this box"));
        out.push("conduits (everything else is dropped and counted):".to_string());
        let cw = self.conduits.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.conduits {
            let ports: Vec<String> = c.ports.iter().map(Port::to_string).collect();
            let what = format!("{} {}", c.protocol.as_str(), ports.join(","));
            let dir = format!("{} -> {}", c.from, c.to);
            out.push(format!("  {:cw$}  {dir:36}  {:12}  {}", c.name, what.trim(), c.purpose));
            if let Some(e) = &c.exception {
                out.push(format!("  {:cw$}  exception: {e}", ""));
            }
        }
        out
    }

    /// Every problem of the model, each with the item and field it is about.
    pub fn check(&self) -> Result<(), Vec<Problem>> {
        let mut out = Vec::new();
        let mut bad = |item, field, message: String| out.push(Problem { item, field, message });
        if self.zones.len() > MAX_ITEMS || self.conduits.len() > MAX_ITEMS {
            bad(Item::Zone(0), Field::Name, format!("at most {MAX_ITEMS} zones and {MAX_ITEMS} conduits"));
        }
        for (i, z) in self.zones.iter().enumerate() {
            let it = Item::Zone(i);
            if !safe_name(&z.name) {
                bad(
                    it,
                    Field::Name,
                    format!(
                        "zone name `{}` must be a-z 0-9 -, starting with a letter, at most {MAX_NAME} characters (it goes into the firewall's rules)",
                        z.name.escape_debug()
                    ),
                );
            } else if z.name == APPLIANCE {
                bad(it, Field::Name, "zone name `appliance` is the appliance itself: choose another".into());
            } else if self.zones[..i].iter().any(|o| o.name == z.name) {
                bad(it, Field::Name, format!("zone `{}` is declared twice", z.name));
            }
            if !safe_text(&z.description) {
                bad(
                    it,
                    Field::Description,
                    format!(
                        "zone `{}`: description must be 1 to {MAX_TEXT} printable characters, without quotes or backslashes",
                        z.name.escape_debug()
                    ),
                );
            }
            for (k, ifname) in z.interfaces.iter().enumerate() {
                if !safe_ifname(ifname) {
                    bad(
                        it,
                        Field::Interface(k),
                        format!(
                            "interface `{}` must be 1 to {MAX_IFNAME} characters of A-Z a-z 0-9 _ . - (the kernel's limit)",
                            ifname.escape_debug()
                        ),
                    );
                }
            }
            if !z.dhcp.is_no() && z.interfaces.is_empty() {
                bad(
                    it,
                    Field::Dhcp,
                    format!(
                        "zone `{}`: dhcp needs `interfaces`: the box takes its address by DHCP only on the interfaces named",
                        z.name.escape_debug()
                    ),
                );
            }
            for (k, a) in z.addresses.iter().enumerate() {
                if z.interfaces.is_empty() {
                    bad(
                        it,
                        Field::Address(k),
                        format!(
                            "zone `{}`: address {a} needs `interfaces`: the box's own addresses go on the interfaces named",
                            z.name.escape_debug()
                        ),
                    );
                } else if !z.ranges.iter().any(|r| r.contains(&a.addr())) {
                    bad(
                        it,
                        Field::Address(k),
                        format!(
                            "zone `{}`: the box's address {a} is in none of the zone's ranges",
                            z.name.escape_debug()
                        ),
                    );
                }
            }
            for (k, r) in z.ranges.iter().enumerate() {
                if is_link_local(r) && z.interfaces.is_empty() {
                    bad(
                        it,
                        Field::Range(k),
                        format!(
                            "zone `{}`: range {r} is link-local, which every directly attached link has: it counts only on the zone's own interfaces, so list `interfaces` (in the recipe or the site profile) or leave it out",
                            z.name.escape_debug()
                        ),
                    );
                }
                if r.trunc() != *r {
                    bad(it, Field::Range(k), format!("range {r} has host bits set: did you mean {}?", r.trunc()));
                }
                if z.ranges[..k].contains(r) {
                    bad(it, Field::Range(k), format!("range {r} is listed twice"));
                }
            }
        }
        // Ranges of different zones never overlap: a host is in one zone.
        for (i, z) in self.zones.iter().enumerate() {
            for (k, r) in z.ranges.iter().enumerate() {
                for o in &self.zones[..i] {
                    if let Some(or) = o.ranges.iter().find(|or| overlaps(r, or)) {
                        bad(
                            Item::Zone(i),
                            Field::Range(k),
                            format!(
                                "range {r} of zone `{}` overlaps range {or} of zone `{}`: a host is in one zone",
                                z.name, o.name
                            ),
                        );
                    }
                }
            }
        }
        for (i, c) in self.conduits.iter().enumerate() {
            let it = Item::Conduit(i);
            if !safe_name(&c.name) {
                bad(
                    it,
                    Field::Name,
                    format!(
                        "conduit name `{}` must be a-z 0-9 -, starting with a letter, at most {MAX_NAME} characters (it names a chain and a log prefix)",
                        c.name.escape_debug()
                    ),
                );
            } else if self.conduits[..i].iter().any(|o| o.name == c.name) {
                bad(it, Field::Name, format!("conduit `{}` is declared twice", c.name));
            }
            let known = |z: &str| z == APPLIANCE || self.zone(z).is_some();
            for (z, field, which) in [(&c.from, Field::From, "from"), (&c.to, Field::To, "to")] {
                if !known(z) {
                    let names: Vec<String> = std::iter::once(APPLIANCE)
                        .chain(self.zones.iter().map(|z| z.name.as_str()))
                        .map(|n| n.escape_debug().to_string())
                        .collect();
                    bad(
                        it,
                        field,
                        format!(
                            "conduit `{}`: {which} = `{}` is not a declared zone (zones: {})",
                            c.name,
                            z.escape_debug(),
                            names.join(", ")
                        ),
                    );
                }
            }
            if c.from == c.to {
                bad(it, Field::To, format!("conduit `{}` goes from `{}` to itself", c.name, c.from));
            }
            if !safe_text(&c.purpose) {
                bad(
                    it,
                    Field::Purpose,
                    format!(
                        "conduit `{}`: purpose must be 1 to {MAX_TEXT} printable characters, without quotes or backslashes",
                        c.name.escape_debug()
                    ),
                );
            }
            let excepted = match &c.exception {
                Some(e) if safe_text(e) => true,
                Some(_) => {
                    bad(
                        it,
                        Field::Exception,
                        format!(
                            "conduit `{}`: the exception's reason must be 1 to {MAX_TEXT} printable characters, without quotes or backslashes",
                            c.name.escape_debug()
                        ),
                    );
                    true
                }
                None => false,
            };
            match c.protocol {
                Protocol::Icmp if !c.ports.is_empty() => {
                    bad(it, Field::Ports, format!("conduit `{}`: ICMP has no ports", c.name));
                }
                Protocol::Icmp => {}
                _ if c.ports.is_empty() && !excepted => {
                    bad(
                        it,
                        Field::Ports,
                        format!(
                            "conduit `{}`: no ports means every port: list them, or mark the conduit with `exception = \"why\"`",
                            c.name
                        ),
                    );
                }
                _ => {}
            }
            for (k, p) in c.ports.iter().enumerate() {
                match p.bounds() {
                    Some((a, b)) if a == 0 || b < a => {
                        bad(
                            it,
                            Field::Port(k),
                            format!(
                                "conduit `{}`: port {p:?} is not a port or a range low-high of ports 1-65535",
                                c.name
                            ),
                        );
                    }
                    Some((a, b)) if a != b && !excepted => {
                        bad(
                            it,
                            Field::Port(k),
                            format!("conduit `{}`: the port range {a}-{b} needs `exception = \"why\"`", c.name),
                        );
                    }
                    Some(_) => {}
                    None => bad(
                        it,
                        Field::Port(k),
                        format!("conduit `{}`: port {p:?} is not a port or a range like \"8000-8100\"", c.name),
                    ),
                }
            }
            for (z, field) in [(&c.from, Field::From), (&c.to, Field::To)] {
                let Some(zone) = self.zone(z).filter(|_| !excepted) else { continue };
                if zone.is_any() {
                    bad(
                        it,
                        field,
                        format!(
                            "conduit `{}`: zone `{z}` matches any host (no ranges or interfaces, or a /0): mark the conduit with `exception = \"why\"`",
                            c.name
                        ),
                    );
                } else if zone.is_broad() {
                    bad(
                        it,
                        field,
                        format!(
                            "conduit `{}`: zone `{z}` covers {}, all its ranges together: more than a /8 of IPv4 or a /32 of IPv6 is any host in all but name: narrow the ranges, or mark the conduit with `exception = \"why\"`",
                            c.name,
                            Coverage::of(&zone.ranges).describe()
                        ),
                    );
                }
            }
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }
}

/// Two networks overlap when one holds the other's first address.
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

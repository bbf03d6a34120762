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
}

impl Zone {
    /// A zone that matches every host: no ranges and no interfaces, or a range of everything.
    pub fn is_any(&self) -> bool {
        (self.ranges.is_empty() && self.interfaces.is_empty()) || self.ranges.iter().any(|r| r.prefix_len() == 0)
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
            for (k, r) in z.ranges.iter().enumerate() {
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
                if let Some(zone) = self.zone(z)
                    && zone.is_any()
                    && !excepted
                {
                    bad(
                        it,
                        field,
                        format!(
                            "conduit `{}`: zone `{z}` matches any host (no ranges or interfaces, or a /0): mark the conduit with `exception = \"why\"`",
                            c.name
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

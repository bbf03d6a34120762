//! The site profile: the facts that belong to the operator's site, not to the vendor's image —
//! each zone's address ranges and interfaces, the NTP servers, the hostname. Signed by the
//! asset owner (role `approval`), sideloaded like a bundle, applied on top of the image's model.
//! It can say where a zone is; it cannot add a zone or a conduit.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{APPLIANCE, Dhcp, MAX_IFNAME, Model, Protocol, safe_name};

pub const SITE_FORMAT: u32 = 1;
/// Largest profile accepted, in bytes (a few pages of TOML, a thousand field devices).
pub const MAX_PROFILE: usize = 256 << 10;
/// Most field devices one profile lists.
pub const MAX_DEVICES: usize = 2000;
const MAX_LIST: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteProfile {
    pub format: u32,
    /// The product this profile is for (the image's `image.product`).
    pub product: String,
    /// The site's name, for the audit log and the report.
    pub site: String,
    /// Grows with every new profile of the site: an older profile is never applied again.
    pub serial: u64,
    /// A box knows its site once its first profile is in force, and refuses a profile of
    /// another site — unless the owner signs a re-siting: this names the site the box leaves
    /// (it must be the one in force), and the profile's `site` is where it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resite_from: Option<String>,
    pub hostname: String,
    #[serde(default)]
    pub ntp: Vec<IpAddr>,
    #[serde(default, rename = "zone")]
    pub zones: BTreeMap<String, SiteZone>,
    /// The parking field's devices and their broker credentials (mosquitto password hashes:
    /// the password itself never leaves the asset owner).
    #[serde(default, rename = "device", skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<FieldDevice>,
    /// The site's operators: who may write through the operator API (the car count). Their
    /// password hashes are argon2id PHC strings (`argon2 SALT -id -e` makes one); the
    /// password itself never leaves the asset owner.
    #[serde(default, rename = "operator", skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<Operator>,
}

/// One operator of the site's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub name: String,
    pub password_hash: String,
}

/// Most operators one profile lists.
pub const MAX_OPERATORS: usize = 64;

/// An argon2id PHC string within the controller's bounds: `$argon2id$v=19$m=M,t=T,p=P$SALT$HASH`
/// with m ≤ 256 MiB (in KiB), t ≤ 16, p ≤ 8, base64 salt and hash of sane lengths.
pub fn valid_operator_hash(s: &str) -> bool {
    let b64 = |p: &str, min: usize| {
        p.len() >= min && p.len() <= 128 && p.bytes().all(|c| c.is_ascii_alphanumeric() || b"+/".contains(&c))
    };
    let ["", "argon2id", "v=19", params, salt, hash] = s.split('$').collect::<Vec<_>>()[..] else { return false };
    let mut seen = Vec::new();
    for kv in params.split(',') {
        let Some((k, v)) = kv.split_once('=') else { return false };
        let Ok(n) = v.parse::<u32>() else { return false };
        let max = match k {
            "m" => 256 * 1024,
            "t" => 16,
            "p" => 8,
            _ => return false,
        };
        if n == 0 || n > max || seen.contains(&k) {
            return false;
        }
        seen.push(k);
    }
    seen.len() == 3 && b64(salt, 11) && b64(hash, 16)
}

/// One bay sensor, barrier controller or ANPR camera: its MQTT user name, its kind (which
/// decides the one topic it may publish), and its password hash as `mosquitto_passwd` writes
/// it (`$7$…` PBKDF2-SHA512, or `$6$…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDevice {
    pub name: String,
    pub kind: DeviceKind,
    pub password_hash: String,
}

/// What a field device is, and so the only topic the broker lets it write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A bay sensor: `parking/bays/NAME/state`.
    Bay,
    /// A barrier controller: `parking/barriers/NAME/event` (entries and exits: the car count).
    Barrier,
    /// An ANPR camera: `parking/cameras/NAME/read`.
    Camera,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 3] = [DeviceKind::Bay, DeviceKind::Barrier, DeviceKind::Camera];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Bay => "bay",
            DeviceKind::Barrier => "barrier",
            DeviceKind::Camera => "camera",
        }
    }

    /// The one topic a device of this kind named `name` may publish.
    pub fn topic(self, name: &str) -> String {
        match self {
            DeviceKind::Bay => format!("parking/bays/{name}/state"),
            DeviceKind::Barrier => format!("parking/barriers/{name}/event"),
            DeviceKind::Camera => format!("parking/cameras/{name}/read"),
        }
    }
}

/// The field listener's ACL for `devices` (see [`SiteProfile::mosquitto_acl`]); with no
/// devices, nobody may write or read anything.
pub fn field_acl(devices: &[FieldDevice], from: &str) -> String {
    let mut s =
        format!("# Airlock: the field listener's ACL, from {from}. One user per device, the one topic of its kind.\n");
    for d in devices {
        s.push_str(&format!("\nuser {}\ntopic write {}\n", d.name, d.kind.topic(&d.name)));
    }
    s
}

/// A field device's user name: a-z 0-9 -, starting with a letter or digit, at most 64 (it
/// becomes an MQTT topic level).
pub fn valid_device_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && s != "controller"
}

/// A mosquitto password hash: `$6$SALT$HASH` or `$7$ITERATIONS$SALT$HASH`, base64 parts.
pub fn valid_password_hash(s: &str) -> bool {
    let b64 = |p: &str| {
        !p.is_empty() && p.len() <= 128 && p.bytes().all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
    };
    match s.split('$').collect::<Vec<_>>().as_slice() {
        ["", "6", salt, hash] => b64(salt) && b64(hash),
        ["", "7", iter, salt, hash] => {
            !iter.is_empty() && iter.len() <= 9 && iter.bytes().all(|c| c.is_ascii_digit()) && b64(salt) && b64(hash)
        }
        _ => false,
    }
}

/// Where a zone is at this site. A list given here replaces the image's default for that zone;
/// a list left out keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteZone {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<IpNet>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
    /// Whether the box takes its address by DHCP on the zone's interfaces here (`"no"`,
    /// `"ipv4"`, `"ipv6"`, `"both"`); left out keeps the image's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<Dhcp>,
    /// The box's own static addresses on the zone's interfaces here (`10.20.0.1/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<IpNet>>,
}

/// The longest host name the kernel takes (`sethostname(2)`: HOST_NAME_MAX, 64 bytes).
pub const MAX_HOSTNAME: usize = 64;
/// The longest site name: it goes into the audit log, the ruleset's header, chrony's sources
/// and the controller's health answer.
pub const MAX_SITE: usize = 64;

/// A site's name: 1 to 64 of A-Z a-z 0-9 . _ -.
pub fn valid_site(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SITE && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// A host name the box can take: RFC 1123 labels of a-z 0-9 and inner `-`, at most 63 each,
/// and at most 64 bytes in all (what `sethostname(2)` takes, not RFC 1123's 253).
pub fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HOSTNAME
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        })
}

impl SiteProfile {
    /// Parses a profile (its signatures already verified) and checks it on its own.
    pub fn parse(bytes: &[u8]) -> Result<SiteProfile, String> {
        if bytes.len() > MAX_PROFILE {
            return Err(format!("site profile is {} bytes, more than the {MAX_PROFILE} accepted", bytes.len()));
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| format!("site profile is not UTF-8 (byte {})", e.valid_up_to()))?;
        let p: SiteProfile = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| format!(" (byte {})", s.start)).unwrap_or_default();
            format!("site profile{at}: {}", e.message().trim())
        })?;
        p.check()?;
        Ok(p)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The broker's password file lines for the field devices (`NAME:HASH`), in order.
    pub fn mosquitto_passwd(&self) -> String {
        self.devices.iter().map(|d| format!("{}:{}\n", d.name, d.password_hash)).collect()
    }

    /// The operators file the controller reads (`NAME:HASH` lines, in order).
    pub fn operators_file(&self) -> String {
        self.operators.iter().map(|o| format!("{}:{}\n", o.name, o.password_hash)).collect()
    }

    /// The field listener's ACL: each device may write the one topic of its kind and name, and
    /// read nothing (no pattern: a bay sensor's user name never opens a barrier's topic).
    pub fn mosquitto_acl(&self) -> String {
        field_acl(&self.devices, &format!("site {} (site profile serial {})", self.site, self.serial))
    }

    /// chrony sources for the site's NTP servers.
    pub fn chrony_sources(&self) -> String {
        let mut s = format!("# Airlock: NTP servers of site {} (site profile serial {}).\n", self.site, self.serial);
        for n in &self.ntp {
            s.push_str(&format!("server {n} iburst\n"));
        }
        s
    }

    fn check(&self) -> Result<(), String> {
        if self.format != SITE_FORMAT {
            return Err(format!(
                "site profile format {} is not known (this agent reads format {SITE_FORMAT})",
                self.format
            ));
        }
        if !valid_site(&self.site) {
            return Err(format!("site: 1 to {MAX_SITE} characters of A-Z a-z 0-9 . _ -"));
        }
        if let Some(from) = &self.resite_from {
            if !valid_site(from) {
                return Err(format!(
                    "resite_from: 1 to {MAX_SITE} characters of A-Z a-z 0-9 . _ - (the site the box leaves)"
                ));
            }
            if *from == self.site {
                return Err(format!(
                    "resite_from = `{from}` is the profile's own site: a re-siting names the site the box leaves"
                ));
            }
        }
        if self.serial == 0 {
            return Err("serial: starts at 1 and grows with every profile of the site".into());
        }
        if !valid_hostname(&self.hostname) {
            return Err(format!(
                "hostname `{}`: lowercase labels of a-z 0-9 - (RFC 1123), at most 63 characters each and {MAX_HOSTNAME} in all (the kernel's limit)",
                self.hostname.escape_debug()
            ));
        }
        if self.ntp.len() > 8 {
            return Err(format!("ntp: {} servers, at most 8", self.ntp.len()));
        }
        if self.zones.len() > crate::model::MAX_ITEMS {
            return Err("too many zones".into());
        }
        if self.devices.len() > MAX_DEVICES {
            return Err(format!("device: {} devices, at most {MAX_DEVICES}", self.devices.len()));
        }
        for (i, d) in self.devices.iter().enumerate() {
            if !valid_device_name(&d.name) {
                return Err(format!(
                    "device[{i}].name `{}`: a-z 0-9 -, at most 64 characters, not `controller`",
                    d.name.escape_debug()
                ));
            }
            if !valid_password_hash(&d.password_hash) {
                return Err(format!(
                    "device[{i}] ({}): password_hash is not a mosquitto_passwd hash ($7$… or $6$…)",
                    d.name
                ));
            }
            if self.devices[..i].iter().any(|o| o.name == d.name) {
                return Err(format!("device[{i}]: `{}` is listed twice", d.name));
            }
        }
        if self.operators.len() > MAX_OPERATORS {
            return Err(format!("operator: {} operators, at most {MAX_OPERATORS}", self.operators.len()));
        }
        for (i, o) in self.operators.iter().enumerate() {
            if !valid_device_name(&o.name) {
                return Err(format!(
                    "operator[{i}].name `{}`: a-z 0-9 -, at most 64 characters",
                    o.name.escape_debug()
                ));
            }
            if !valid_operator_hash(&o.password_hash) {
                return Err(format!(
                    "operator[{i}] ({}): password_hash is not an argon2id hash within bounds ($argon2id$v=19$m=…,t=…,p=…$SALT$HASH, m ≤ 262144, t ≤ 16, p ≤ 8: `argon2 SALT -id -e` makes one)",
                    o.name
                ));
            }
            if self.operators[..i].iter().any(|x| x.name == o.name) {
                return Err(format!("operator[{i}]: `{}` is listed twice", o.name));
            }
        }
        for (name, z) in &self.zones {
            if !safe_name(name) {
                return Err(format!("zone `{}`: not a zone name", name.escape_debug()));
            }
            if z.ranges.as_ref().is_some_and(|r| r.len() > MAX_LIST)
                || z.interfaces.as_ref().is_some_and(|r| r.len() > MAX_LIST)
                || z.addresses.as_ref().is_some_and(|r| r.len() > MAX_LIST)
            {
                return Err(format!(
                    "zone.{name}: at most {MAX_LIST} ranges, {MAX_LIST} interfaces and {MAX_LIST} addresses"
                ));
            }
            if let Some(i) = z.interfaces.iter().flatten().find(|i| i.len() > MAX_IFNAME) {
                return Err(format!(
                    "zone.{name}.interfaces: `{}` is longer than {MAX_IFNAME} bytes (the kernel's limit)",
                    i.escape_debug()
                ));
            }
        }
        Ok(())
    }

    /// The image's model with this site's facts: every problem as `field: message`.
    pub fn apply(&self, model: &Model, product: &str) -> Result<Model, Vec<String>> {
        let mut problems = Vec::new();
        if self.product != product {
            problems.push(format!(
                "product: the profile is for `{}`, this image is `{product}`",
                self.product.escape_debug()
            ));
        }
        let mut m = model.clone();
        for (name, sz) in &self.zones {
            if name == APPLIANCE {
                problems.push("zone.appliance: the appliance is not given ranges: it is the box itself".into());
                continue;
            }
            let Some(z) = m.zones.iter_mut().find(|z| &z.name == name) else {
                let names: Vec<&str> = model.zones.iter().map(|z| z.name.as_str()).collect();
                problems.push(format!(
                    "zone.{name}: this image has no such zone (its zones: {}); a site profile places zones, it does not add them",
                    names.join(", ")
                ));
                continue;
            };
            if let Some(r) = &sz.ranges {
                z.ranges = r.clone();
            }
            if let Some(i) = &sz.interfaces {
                z.interfaces = i.clone();
            }
            if let Some(d) = sz.dhcp {
                z.dhcp = d;
            }
            if let Some(a) = &sz.addresses {
                z.addresses = a.clone();
            }
        }
        if let Err(ps) = m.check() {
            for p in ps {
                let at = match p.item {
                    crate::model::Item::Zone(i) => {
                        format!("zone.{}", m.zones.get(i).map(|z| z.name.as_str()).unwrap_or("?"))
                    }
                    crate::model::Item::Conduit(i) => {
                        format!("conduit {}", m.conduits.get(i).map(|c| c.name.as_str()).unwrap_or("?"))
                    }
                };
                problems.push(format!("{at}: {}", p.message));
            }
        }
        // Every NTP server must be reachable through a declared conduit, or time never comes.
        for s in &self.ntp {
            let reachable = m.conduits.iter().any(|c| {
                c.from == APPLIANCE
                    && c.protocol == Protocol::Udp
                    && c.ports.iter().any(|p| p.bounds().is_some_and(|(a, b)| a <= 123 && 123 <= b))
                    && m.zone(&c.to).is_some_and(|z| z.is_any() || z.ranges.iter().any(|r| r.contains(s)))
            });
            if !reachable {
                problems.push(format!(
                    "ntp: server {s} is in no zone the appliance may reach on udp 123 (add it to the zone of the time conduit's `to`)"
                ));
            }
        }
        if problems.is_empty() { Ok(m) } else { Err(problems) }
    }
}

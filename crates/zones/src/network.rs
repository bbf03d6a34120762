//! The box's own interface configuration, from the same model as the firewall: one
//! systemd-networkd `.network` file per zone bound to interfaces, saying whether the box
//! takes its address there by DHCP (the only DHCP the ruleset lets through) and whether IPv6
//! link-local addressing runs there. An interface in no zone is left unconfigured; nothing
//! matches `en*` wholesale. Pure text, deterministic.

use ipnet::IpNet;

use crate::model::{Model, Zone};

/// The prefix of every generated file's name (the agent removes stale ones by it).
pub const NETWORK_PREFIX: &str = "50-airlock-";

fn uses_v6(z: &Zone) -> bool {
    z.dhcp.v6() || z.ranges.iter().chain(&z.addresses).any(|r| matches!(r, IpNet::V6(_)))
}

/// `(file name, contents)` for each zone with interfaces, in the model's order.
pub fn networkd(m: &Model, origin: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for z in m.zones.iter().filter(|z| !z.interfaces.is_empty()) {
        let dhcp = match (z.dhcp.v4(), z.dhcp.v6()) {
            (true, true) => "yes",
            (true, false) => "ipv4",
            (false, true) => "ipv6",
            (false, false) => "no",
        };
        let v6 = uses_v6(z);
        let mut text = format!(
            "# Airlock: zone {} ({}), generated from {origin}. Do not edit: change the recipe or the site profile.\n[Match]\nName={}\n\n[Network]\nDHCP={dhcp}\nLinkLocalAddressing={}\nIPv6AcceptRA={}\n",
            z.name,
            z.security_level,
            z.interfaces.join(" "),
            if v6 { "ipv6" } else { "no" },
            if z.dhcp.v6() { "yes" } else { "no" },
        );
        for a in &z.addresses {
            text.push_str(&format!("Address={a}\n"));
        }
        out.push((format!("{NETWORK_PREFIX}{}.network", z.name), text));
    }
    out
}

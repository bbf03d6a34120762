//! IEC 62443 zones and conduits: the vendor's model (in the recipe, baked into the image as
//! `/etc/airlock/zones.toml`), the site's facts (a site profile, signed by the asset owner:
//! per-zone address ranges and interfaces, NTP servers, hostname), and the one nftables
//! ruleset both compile to — `inet` (IPv4 and IPv6 alike), default drop on input, forward and
//! output, established and loopback allowed, one chain per conduit with a counter and a log
//! prefix naming it. Pure: no I/O, so the builder and the on-device agent link the same code.
//!
//! Validation returns every problem with the item and field it is about, so that the recipe
//! can point at `file:line:col`.

mod model;
mod network;
mod nft;
mod site;

pub use model::{
    APPLIANCE, Conduit, Coverage, Dhcp, Field, Item, LINK_LOCAL_V4, LINK_LOCAL_V6, MAX_ZONE_V4, MAX_ZONE_V6, Model,
    Port, Problem, Protocol, SecurityLevel, Zone, is_link_local, safe_name, touches_link_local,
};
pub use network::{NETWORK_PREFIX, networkd};
pub use nft::{Origin, RULESET_TABLE, ruleset};
pub use site::{
    DeviceKind, FieldDevice, MAX_DEVICES, MAX_HOSTNAME, MAX_OPERATORS, MAX_PROFILE, MAX_SITE, Operator, SITE_FORMAT,
    SiteProfile, SiteZone, field_acl, valid_device_name, valid_hostname, valid_operator_hash, valid_password_hash,
    valid_site,
};

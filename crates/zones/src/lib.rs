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
mod nft;
mod site;

pub use model::{APPLIANCE, Conduit, Field, Item, Model, Port, Problem, Protocol, SecurityLevel, Zone, safe_name};
pub use nft::{Origin, RULESET_TABLE, ruleset};
pub use site::{
    FieldDevice, MAX_DEVICES, MAX_PROFILE, SITE_FORMAT, SiteProfile, SiteZone, valid_device_name, valid_hostname,
    valid_password_hash,
};

//! The recipe's `[[zone]]` and `[[conduit]]` tables: read with spans, turned into a
//! [`zones::Model`], and every problem the model's check finds pointed at its file:line:col.

use std::ops::Range;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use zones::{Conduit, Dhcp, Field, Item, Model, Port, Protocol, SecurityLevel, Zone};

use crate::error::Error;

type S<T> = Option<Spanned<T>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawZone {
    name: Spanned<String>,
    description: Spanned<String>,
    security_level: Spanned<String>,
    interfaces: S<Vec<Spanned<String>>>,
    ranges: S<Vec<Spanned<String>>>,
    dhcp: S<String>,
    addresses: S<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConduit {
    name: Spanned<String>,
    from: Spanned<String>,
    to: Spanned<String>,
    protocol: Spanned<String>,
    ports: S<Vec<Spanned<toml::Value>>>,
    purpose: Spanned<String>,
    exception: S<String>,
}

/// Reports an invalid value at a span of the layer the tables came from.
pub(crate) type Invalid<'a> = &'a dyn Fn(Range<usize>, String) -> Error;

/// Builds the model from the (nearest layer's) tables, then checks it as a whole.
pub(crate) fn model(
    zs: &[Spanned<RawZone>],
    cs: &[Spanned<RawConduit>],
    invalid_z: Invalid,
    invalid_c: Invalid,
) -> Result<Model, Error> {
    let invalid = invalid_z;
    let mut m = Model::default();
    for z in zs {
        let r = z.get_ref();
        let security_level = match r.security_level.get_ref().as_str() {
            "SL1" => SecurityLevel::SL1,
            "SL2" => SecurityLevel::SL2,
            "SL3" => SecurityLevel::SL3,
            "SL4" => SecurityLevel::SL4,
            other => {
                return Err(invalid(
                    r.security_level.span(),
                    format!("zone security_level `{}`: use SL1, SL2, SL3 or SL4 (IEC 62443-3-3)", other.escape_debug()),
                ));
            }
        };
        let mut ranges = Vec::new();
        for s in r.ranges.iter().flat_map(|v| v.get_ref()) {
            let net: IpNet = s
                .get_ref()
                .parse()
                .or_else(|_| s.get_ref().parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        s.span(),
                        format!(
                            "zone `{}`: range `{}` is not an address or a network like 10.20.0.0/24 or fd00:20::/64",
                            r.name.get_ref().escape_debug(),
                            s.get_ref().escape_debug()
                        ),
                    )
                })?;
            ranges.push(net);
        }
        let dhcp = match r.dhcp.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
            None | Some(("no", _)) => Dhcp::No,
            Some(("ipv4", _)) => Dhcp::Ipv4,
            Some(("ipv6", _)) => Dhcp::Ipv6,
            Some(("both", _)) => Dhcp::Both,
            Some((other, span)) => {
                return Err(invalid(
                    span,
                    format!(
                        "zone `{}`: dhcp `{}`: use \"ipv4\", \"ipv6\", \"both\" or \"no\" (the default: no DHCP on the zone's interfaces)",
                        r.name.get_ref().escape_debug(),
                        other.escape_debug()
                    ),
                ));
            }
        };
        let mut addresses = Vec::new();
        for a in r.addresses.iter().flat_map(|v| v.get_ref()) {
            addresses.push(a.get_ref().parse::<IpNet>().map_err(|_| {
                invalid(
                    a.span(),
                    format!(
                        "zone `{}`: address `{}` is not an address with its prefix length, like 10.20.0.1/24",
                        r.name.get_ref().escape_debug(),
                        a.get_ref().escape_debug()
                    ),
                )
            })?);
        }
        m.zones.push(Zone {
            dhcp,
            addresses,
            name: r.name.get_ref().clone(),
            description: r.description.get_ref().clone(),
            security_level,
            interfaces: r.interfaces.iter().flat_map(|v| v.get_ref()).map(|s| s.get_ref().clone()).collect(),
            ranges,
        });
    }
    let invalid = invalid_c;
    for c in cs {
        let r = c.get_ref();
        let protocol = match r.protocol.get_ref().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            other => {
                return Err(invalid(
                    r.protocol.span(),
                    format!("conduit protocol `{}`: use \"tcp\", \"udp\" or \"icmp\"", other.escape_debug()),
                ));
            }
        };
        let mut ports = Vec::new();
        for p in r.ports.iter().flat_map(|v| v.get_ref()) {
            ports.push(match p.get_ref() {
                toml::Value::Integer(n) => Port::One(u16::try_from(*n).map_err(|_| {
                    invalid(
                        p.span(),
                        format!("conduit `{}`: port {n} is not 1 to 65535", r.name.get_ref().escape_debug()),
                    )
                })?),
                toml::Value::String(s) => Port::Range(s.clone()),
                other => {
                    return Err(invalid(
                        p.span(),
                        format!(
                            "conduit `{}`: port `{other}`: a number, or a range like \"8000-8100\"",
                            r.name.get_ref().escape_debug()
                        ),
                    ));
                }
            });
        }
        m.conduits.push(Conduit {
            name: r.name.get_ref().clone(),
            from: r.from.get_ref().clone(),
            to: r.to.get_ref().clone(),
            protocol,
            ports,
            purpose: r.purpose.get_ref().clone(),
            exception: r.exception.as_ref().map(|e| e.get_ref().clone()),
        });
    }
    if let Err(problems) = m.check() {
        let at = |p: &zones::Problem| -> Error {
            let (f, span): (Invalid, Range<usize>) = match p.item {
                Item::Zone(i) => {
                    let Some(z) = zs.get(i) else { return invalid_z(0..0, p.message.clone()) };
                    let r = z.get_ref();
                    (
                        invalid_z,
                        match p.field {
                            Field::Name => r.name.span(),
                            Field::Description => r.description.span(),
                            Field::SecurityLevel => r.security_level.span(),
                            Field::Interface(k) => {
                                r.interfaces.as_ref().and_then(|v| v.get_ref().get(k)).map_or(z.span(), |s| s.span())
                            }
                            Field::Range(k) => {
                                r.ranges.as_ref().and_then(|v| v.get_ref().get(k)).map_or(z.span(), |s| s.span())
                            }
                            Field::Dhcp => r.dhcp.as_ref().map_or(z.span(), |d| d.span()),
                            Field::Address(k) => {
                                r.addresses.as_ref().and_then(|v| v.get_ref().get(k)).map_or(z.span(), |s| s.span())
                            }
                            _ => z.span(),
                        },
                    )
                }
                Item::Conduit(i) => {
                    let Some(c) = cs.get(i) else { return invalid_c(0..0, p.message.clone()) };
                    let r = c.get_ref();
                    (
                        invalid_c,
                        match p.field {
                            Field::Name => r.name.span(),
                            Field::From => r.from.span(),
                            Field::To => r.to.span(),
                            Field::Protocol => r.protocol.span(),
                            Field::Purpose => r.purpose.span(),
                            Field::Exception => r.exception.as_ref().map_or(c.span(), |e| e.span()),
                            Field::Port(k) => {
                                r.ports.as_ref().and_then(|v| v.get_ref().get(k)).map_or(c.span(), |s| s.span())
                            }
                            Field::Ports => r.ports.as_ref().map_or(c.span(), |v| v.span()),
                            _ => c.span(),
                        },
                    )
                }
            };
            f(span, p.message.clone())
        };
        // The first problem carries the location; the others follow, each with its own.
        let mut first = at(&problems[0]);
        if let Error::Invalid { message, .. } = &mut first {
            for p in &problems[1..] {
                if let Error::Invalid { at, message: m } = at(p) {
                    message.push_str(&format!("\n  also {at}: {m}"));
                }
            }
        }
        return Err(first);
    }
    Ok(m)
}

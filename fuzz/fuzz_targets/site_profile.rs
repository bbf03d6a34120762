//! Fuzz target: a site profile from a stick (its signature already checked in real life, but
//! parsed here as if it were anything) never panics the parser, the fitting to the model or the
//! ruleset compiler; an accepted profile gives a ruleset whose every line is printable ASCII
//! and whose zones' names all passed the model's checks (nothing from the profile becomes nft
//! syntax of its own).
#![no_main]

const MODEL: &str = r#"
[[zone]]
name = "parking-field"
description = "Field devices"
security_level = "SL2"
ranges = ["10.20.0.0/24"]

[[zone]]
name = "management"
description = "OT management"
security_level = "SL3"
ranges = ["169.254.0.0/16", "fe80::/10"]

[[zone]]
name = "plant-dmz"
description = "Time servers"
security_level = "SL3"
ranges = ["10.99.0.0/24"]

[[conduit]]
name = "field-mqtt"
from = "parking-field"
to = "appliance"
protocol = "tcp"
ports = [1883]
purpose = "Sensors publish"

[[conduit]]
name = "time"
from = "appliance"
to = "plant-dmz"
protocol = "udp"
ports = [123]
purpose = "NTP"
"#;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(p) = zones::SiteProfile::parse(data) else { return };
    let model = zones::Model::parse(MODEL).expect("the fuzz model is valid");
    let Ok(m) = p.apply(&model, &p.product) else { return };
    assert!(m.check().is_ok());
    let rules = zones::ruleset(&m, &zones::Origin { image: "fuzz 1".into(), site: format!("site {}", p.site) });
    for line in rules.lines() {
        assert!(line.bytes().all(|c| c == b'\t' || (b' '..=b'~').contains(&c)), "{line:?}");
    }
    for z in &m.zones {
        assert!(zones::safe_name(&z.name));
        for i in &z.interfaces {
            assert!(!i.contains('"'), "{i:?}");
        }
    }
    let _ = p.mosquitto_passwd();
    let _ = p.chrony_sources();
});

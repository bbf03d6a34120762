//! The sandbox of every unit that parses network or stick input, checked at build time with
//! the image's own `systemd-analyze security --offline` (chrooted into the tree, as the firewall
//! is checked with the image's own nft). A unit whose exposure is above its bound fails the
//! build, naming the unit, its score and the bound; a unit the image does not carry is not
//! checked. The bounds (systemd's scale: 0 safest, 10 most exposed) are the product's promise,
//! documented in README.md ("Sandboxes"):
//!
//! | unit | parses | bound |
//! | --- | --- | --- |
//! | `mosquitto.service` | every field device's MQTT | 2.0 |
//! | `parking-controller.service` | the operator API's HTTP | 2.0 |
//! | `chrony.service` | the site's NTP answers (it must set the clock: CAP_SYS_TIME) | 3.5 |
//! | `airlock-sideload@.service` | every file on a USB stick (it must mount it and write a slot and the ESP) | 3.0 |
//! | `systemd-networkd.service` | DHCP and router advertisements (systemd's own sandbox) | 3.0 |

use std::path::Path;

use xshell::{Shell, cmd};

use crate::error::{Error, Result, tool_err};

/// (unit, highest exposure allowed, what it parses).
pub const BOUNDS: &[(&str, f64, &str)] = &[
    ("mosquitto.service", 2.0, "every field device's MQTT"),
    ("parking-controller.service", 2.0, "the operator API's HTTP"),
    ("chrony.service", 3.5, "the site's NTP answers"),
    ("airlock-sideload@.service", 3.0, "every file on a USB stick"),
    ("systemd-networkd.service", 3.0, "DHCP and router advertisements"),
];

/// `Overall exposure level for UNIT: 1.2 OK 🙂` → 1.2.
pub fn exposure(report: &str) -> Option<f64> {
    let line = report.lines().rev().find(|l| l.contains("Overall exposure level for "))?;
    line.rsplit_once(": ")?.1.split_whitespace().next()?.parse().ok()
}

fn unit_present(root: &Path, unit: &str) -> bool {
    ["etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"]
        .iter()
        .any(|d| std::fs::symlink_metadata(root.join(d).join(unit)).is_ok())
}

/// Every bounded unit the image carries, scored; Err names each one above its bound.
pub fn check(sh: &Shell, root: &Path) -> Result<Vec<(String, f64)>> {
    if !root.join("usr/bin/systemd-analyze").exists() {
        return Err(Error::Invalid(
            "the image has no /usr/bin/systemd-analyze (package systemd): the units' sandboxes cannot be checked"
                .into(),
        ));
    }
    let mut scores = Vec::new();
    let mut over = Vec::new();
    for (unit, bound, parses) in BOUNDS {
        if !unit_present(root, unit) {
            continue;
        }
        let out = cmd!(sh, "chroot {root} /usr/bin/systemd-analyze security --offline=yes --no-pager {unit}")
            .quiet()
            .ignore_status()
            .output()
            .map_err(tool_err("chroot systemd-analyze security (checking the units' sandboxes)"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let score = exposure(&text).ok_or_else(|| {
            Error::Invalid(format!("systemd-analyze security {unit} gave no exposure level: {}", text.trim()))
        })?;
        if score > *bound {
            over.push(format!(
                "{unit} (it parses {parses}) scores {score:.1}, above its bound {bound:.1}: tighten its sandbox (the ✗ lines of `systemd-analyze security --offline=yes --root=ROOT {unit}`)"
            ));
        }
        scores.push((unit.to_string(), score));
    }
    if !over.is_empty() {
        return Err(Error::Invalid(format!("units exposed beyond their bounds: {}", over.join("; "))));
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overall_exposure_is_read_from_the_last_line() {
        let report = "✗ UMask= Files created by service are world-readable by default 0.1\n\n→ Overall exposure level for mosquitto.service: 9.6 UNSAFE 😨\n";
        assert_eq!(exposure(report), Some(9.6));
        assert_eq!(exposure("→ Overall exposure level for airlock-sideload@i.service: 2.7 OK 🙂"), Some(2.7));
        assert_eq!(exposure("nothing"), None);
    }
}

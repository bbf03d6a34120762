//! The evidence report: one self-contained HTML file (inline CSS and SVG, no script, nothing
//! fetched) and the same facts as JSON. What was built, the signatures against the trust
//! policy, reproducibility, the SBOM in numbers, the zones and conduits with a diagram and the
//! ruleset, and the IEC 62443 requirements each piece supports — with what is not covered said
//! plainly.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::json;

use crate::sbom::{OutputFile, SbomSummary, pretty};

#[derive(Debug, Clone, Serialize)]
pub struct Signer {
    pub file: String,
    pub line: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub file: String,
    pub accepted: bool,
    pub summary: String,
    pub signers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyRole {
    pub role: String,
    pub threshold: usize,
    /// `name (KEYID)`.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    pub path: String,
    pub version: u64,
    pub channel: String,
    pub roles: Vec<PolicyRole>,
    pub revoked: usize,
    /// The rotation history: `trust-vN.toml` files and whether each link verified.
    pub chain: Vec<String>,
    pub insecure_dev_key: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Input<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub product: &'a str,
    pub channel: &'a str,
    pub build_key: &'a str,
    pub recipe: &'a str,
    pub outputs: &'a [OutputFile],
    pub rounds: &'a [Round],
    pub policy: &'a PolicySummary,
    /// What `repro` found, when it ran for this build.
    pub reproducibility: Option<&'a str>,
    pub sbom: &'a SbomSummary,
    pub zones: &'a zones::Model,
    pub ruleset: &'a str,
}

/// (requirement, title, status, how Airlock supports it or why not)
pub const IEC_62443: &[(&str, &str, &str, &str)] = &[
    (
        "SR 1.2 / CR 1.2",
        "Software process and device identification and authentication",
        "partly",
        "Each parking-field device has its own broker user and password (site profile); the controller its own, made on the device. No certificates: the field protocol is MQTT over plain TCP.",
    ),
    (
        "SR 1.5",
        "Authenticator management",
        "partly",
        "Device passwords are handed over as mosquitto hashes in the signed site profile; the controller's secret is generated on first boot and passed as a systemd credential.",
    ),
    (
        "SR 2.8",
        "Auditable events",
        "covered",
        "Every update-agent decision (install, refusal, boot, bless, fallback, site profile) is a hash-chained audit record; dropped packets are counted per chain and logged (rate-limited).",
    ),
    (
        "SR 2.9",
        "Audit storage capacity",
        "not covered",
        "The audit log grows without rotation on the data partition; no alert when it fills.",
    ),
    (
        "SR 3.1",
        "Communication integrity",
        "not covered",
        "MQTT and the operator API are not encrypted or authenticated beyond passwords; the zones confine who can reach them.",
    ),
    (
        "SR 3.4",
        "Software and information integrity",
        "covered",
        "Build and bundle manifests signed by m-of-n keys (minisign/ed25519), every payload chunk hashed and checked before it is written, read back before a trial boot; SBOM and provenance bound to the signed build manifest; the bundle carries the provenance statement and its DSSE signatures, which the appliance checks against its own policy before writing a slot and keeps for that slot (`sideload status --provenance`).",
    ),
    (
        "SR 3.5",
        "Input validation",
        "covered",
        "Bundles, manifests, signatures, keys, policies, recipes and site profiles are parsed strictly with every length bounded first; parsers are fuzzed.",
    ),
    (
        "SR 5.1",
        "Network segmentation",
        "covered",
        "Zones with target security levels are declared in the recipe and compiled into the image's nftables firewall; a host is in one zone.",
    ),
    (
        "SR 5.2",
        "Zone boundary protection",
        "covered",
        "Default drop on input, forward and output; only declared conduits pass, each with its own counter and log prefix; no network before the firewall loads.",
    ),
    (
        "SR 7.6",
        "Network and security configuration settings",
        "covered",
        "Site addresses, NTP and device credentials come in a site profile signed by the asset owner's approval role; refused profiles change nothing.",
    ),
    (
        "SR 7.8",
        "Control system component inventory",
        "covered",
        "SPDX 2.3 and CycloneDX 1.6 SBOMs of every package, crate, artifact and output, also inside the image.",
    ),
    (
        "CR 3.10",
        "Support for updates",
        "covered",
        "Signed offline bundles by USB, A/B slots, trial boot with health check and automatic fallback; anti-rollback floor.",
    ),
    (
        "CR 3.12",
        "Provisioning product supplier roots of trust",
        "covered",
        "The vendor's release keys and thresholds are baked into the image's trust policy; rotation N→N+1 signed by N's keys.",
    ),
    (
        "CR 3.13",
        "Provisioning asset owner roots of trust",
        "covered",
        "The asset owner's approval role in the same policy; site profiles count only under it.",
    ),
    (
        "CR 3.14",
        "Integrity of the boot process",
        "partly",
        "Every slot is opened by the initrd through dm-verity: each block is checked against the root hash signed in the build and bundle manifests before the slot starts, and read through dm-verity after (a mismatch panics, never a silent read); a slot that does not match never runs, and the box falls back to the other slot and audits why. Not yet: signed kernels (UKIs) and UEFI Secure Boot with the asset owner's keys — the kernel, initrd and boot entry on the ESP are unsigned, checked only by the agent against its own records.",
    ),
    ("SR 4.1", "Information confidentiality", "not covered", "No disk encryption; no secrets are in the image."),
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The zones and conduits as an SVG: the appliance in the middle, zones around it, one arrow per
/// conduit labelled with its name, protocol and ports.
pub fn diagram(m: &zones::Model) -> String {
    let (w, h) = (900.0f64, 560.0f64);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let n = m.zones.len().max(1) as f64;
    let mut pos: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    pos.insert(zones::APPLIANCE, (cx, cy));
    for (i, z) in m.zones.iter().enumerate() {
        let a = -std::f64::consts::FRAC_PI_2 + 2.0 * std::f64::consts::PI * i as f64 / n;
        pos.insert(z.name.as_str(), (cx + 330.0 * a.cos(), cy + 200.0 * a.sin()));
    }
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" id="zone-diagram" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="Zones and conduits"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#1f4e79"/></marker></defs>"##
    );
    for c in &m.conduits {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(c.from.as_str()), pos.get(c.to.as_str())) else { continue };
        // Stop short of the boxes.
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1.0);
        let (ux, uy) = (dx / len, dy / len);
        let (ax, ay, bx, by) = (x1 + ux * 80.0, y1 + uy * 40.0, x2 - ux * 80.0, y2 - uy * 40.0);
        let ports: Vec<String> = c.ports.iter().map(zones::Port::to_string).collect();
        let _ = write!(
            s,
            r##"<line x1="{ax:.1}" y1="{ay:.1}" x2="{bx:.1}" y2="{by:.1}" stroke="#1f4e79" stroke-width="2" marker-end="url(#arrow)"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#1f4e79">{} ({} {})</text>"##,
            (ax + bx) / 2.0,
            (ay + by) / 2.0 - 6.0,
            esc(&c.name),
            c.protocol.as_str(),
            esc(&ports.join(","))
        );
    }
    let mut boxes: Vec<(&str, String, &str)> = vec![(zones::APPLIANCE, "the appliance".to_string(), "#fce4d6")];
    for z in &m.zones {
        let mut at: Vec<String> = z.ranges.iter().map(|r| r.to_string()).collect();
        at.extend(z.interfaces.iter().cloned());
        boxes.push((z.name.as_str(), format!("{} · {}", z.security_level, at.join(", ")), "#ddebf7"));
    }
    for (name, sub, fill) in boxes {
        let Some(&(x, y)) = pos.get(name) else { continue };
        let _ = write!(
            s,
            r##"<g class="zone"><rect x="{:.1}" y="{:.1}" width="180" height="60" rx="8" fill="{fill}" stroke="#404040"/><text x="{x:.1}" y="{:.1}" font-size="15" font-weight="bold" text-anchor="middle">{}</text><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text></g>"##,
            x - 90.0,
            y - 30.0,
            y - 4.0,
            esc(name),
            y + 15.0,
            esc(&sub.chars().take(34).collect::<String>())
        );
    }
    s.push_str("</svg>");
    s
}

/// The report as JSON.
pub fn json(input: &Input<'_>) -> String {
    let mut v = serde_json::to_value(input).unwrap_or_default();
    // Bound by no signed manifest: marked as such wherever it is read.
    v["reproducibility"] = match input.reproducibility {
        Some(claim) => json!({"claim": claim, "signed": false, "source": "reproducibility.json"}),
        None => serde_json::Value::Null,
    };
    v["iec_62443"] = json!(
        IEC_62443
            .iter()
            .map(|(id, title, status, how)| json!({"requirement": id, "title": title, "status": status, "how": how}))
            .collect::<Vec<_>>()
    );
    pretty(&v)
}

/// The report as one self-contained HTML file.
pub fn html(input: &Input<'_>) -> String {
    let (lic, unknown) = (&input.sbom.licenses, input.sbom.license_not_stated);
    let mut h = String::new();
    let title = format!("Evidence: {} {}", input.name, input.version);
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{}</title>
<style>
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}}
h1{{border-bottom:3px solid #1f4e79}} h2{{color:#1f4e79;margin-top:2em}}
table{{border-collapse:collapse;width:100%;margin:0.5em 0}} td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}}
th{{background:#eef3f8}} code,pre{{font-family:monospace;font-size:12px}} pre{{background:#f6f6f6;padding:8px;overflow-x:auto;max-height:40em}}
.covered{{color:#1e7b34;font-weight:bold}} .partly{{color:#9c6500;font-weight:bold}} .not{{color:#b00020;font-weight:bold}}
.warn{{background:#fff3cd;border:1px solid #e0c36a;padding:8px}}
</style></head><body>
<h1>{}</h1>
<p>Product <code>{}</code>, channel <code>{}</code>, recipe <code>{}</code>, build key <code>{}</code>.
Everything here can be checked offline with the files beside this report (see the last section).</p>
"#,
        esc(&title),
        esc(&title),
        esc(input.product),
        esc(input.channel),
        esc(input.recipe),
        esc(input.build_key)
    );
    if input.policy.insecure_dev_key {
        h.push_str(r#"<p class="warn">This is a <b>dev</b> build: it is signed with the INSECURE dev keys, whose secret halves are public. Its signatures prove nothing about who built it.</p>"#);
    }
    h.push_str("<h2>What was built</h2><table><tr><th>Output</th><th>Size</th><th>sha256</th></tr>");
    for o in input.outputs {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&o.name),
            o.size,
            esc(&o.sha256)
        );
    }
    h.push_str(
        "</table><h2>Signatures and trust policy</h2><table><tr><th>File</th><th>Verdict</th><th>Signers</th></tr>",
    );
    for r in input.rounds {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&r.file),
            if r.accepted { "covered" } else { "not" },
            esc(&r.summary),
            r.signers.iter().map(|s| esc(s)).collect::<Vec<_>>().join("<br>")
        );
    }
    let _ = write!(
        h,
        "</table><p>Policy <code>{}</code>: version {}, channel {}, {} revoked key(s).</p><table><tr><th>Role</th><th>Threshold</th><th>Keys</th></tr>",
        esc(&input.policy.path),
        input.policy.version,
        esc(&input.policy.channel),
        input.policy.revoked
    );
    for r in &input.policy.roles {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.role),
            r.threshold,
            r.keys.iter().map(|k| esc(k)).collect::<Vec<_>>().join("<br>")
        );
    }
    h.push_str("</table>");
    if !input.policy.chain.is_empty() {
        let _ = write!(
            h,
            "<p>Rotation chain: {}</p>",
            input.policy.chain.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" → ")
        );
    }
    match input.reproducibility {
        // Not bound by any signed manifest: shown as what it is, a claim of the build machine.
        Some(claim) => {
            let _ = write!(
                h,
                "<h2>Reproducibility</h2><p class=\"warn\"><strong>Unsigned claim</strong>: <code>reproducibility.json</code> beside this build is bound by no signed manifest (it was written by <code>cargo xtask repro</code> after the build was signed), so this report cannot vouch for it; check it yourself with <code>cargo xtask repro</code>. It says: {}</p>",
                esc(claim)
            );
        }
        None => {
            let _ = write!(
                h,
                "<h2>Reproducibility</h2><p>`cargo xtask repro` has not been run for this build (it builds twice under varied conditions and compares every byte).</p>"
            );
        }
    }
    let _ = write!(
        h,
        "<h2>Software bill of materials</h2><p>{} Debian packages, {} Rust crates compiled into the image's binaries, {} pinned vendor artifact(s). Full lists: <code>sbom.spdx.json</code> (SPDX 2.3), <code>sbom.cdx.json</code> (CycloneDX 1.6); the image carries its own copy in <code>/usr/share/airlock/sbom.spdx.json</code>.</p><table><tr><th>License (SPDX)</th><th>Packages and crates</th></tr>",
        input.sbom.debian_packages, input.sbom.crates, input.sbom.artifacts
    );
    for (l, n) in lic {
        let _ = write!(h, "<tr><td><code>{}</code></td><td>{n}</td></tr>", esc(l));
    }
    let _ = write!(h, "<tr><td>not stated in machine-readable form</td><td>{unknown}</td></tr></table>");
    h.push_str("<h2>Zones and conduits</h2>");
    h.push_str(&diagram(input.zones));
    h.push_str("<table><tr><th>Zone</th><th>Level</th><th>Where</th><th>Description</th></tr>");
    for z in &input.zones.zones {
        let mut at: Vec<String> = z.ranges.iter().map(|r| r.to_string()).collect();
        at.extend(z.interfaces.iter().map(|i| format!("dev {i}")));
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&z.name),
            z.security_level,
            esc(&at.join(", ")),
            esc(&z.description)
        );
    }
    h.push_str("</table><table><tr><th>Conduit</th><th>From → to</th><th>Protocol, ports</th><th>Purpose</th></tr>");
    for c in &input.zones.conduits {
        let ports: Vec<String> = c.ports.iter().map(zones::Port::to_string).collect();
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{} → {}</td><td>{} {}</td><td>{}{}</td></tr>",
            esc(&c.name),
            esc(&c.from),
            esc(&c.to),
            c.protocol.as_str(),
            esc(&ports.join(", ")),
            esc(&c.purpose),
            c.exception.as_ref().map(|e| format!(" <b>Exception:</b> {}", esc(e))).unwrap_or_default()
        );
    }
    let _ = write!(
        h,
        "</table><p>Everything else is dropped and counted. The image's default ruleset (the site profile replaces the zones' addresses on the device):</p><pre>{}</pre>",
        esc(input.ruleset)
    );
    h.push_str(
        "<h2>IEC 62443 requirements</h2><table><tr><th>Requirement</th><th>Title</th><th>Status</th><th>How</th></tr>",
    );
    for (id, t, status, how) in IEC_62443 {
        let class = match *status {
            "covered" => "covered",
            "partly" => "partly",
            _ => "not",
        };
        let _ = write!(
            h,
            "<tr><td>{id}</td><td>{}</td><td class=\"{class}\">{status}</td><td>{}</td></tr>",
            esc(t),
            esc(how)
        );
    }
    h.push_str("</table><h2>Checking this offline</h2><pre>cargo xtask verify build-manifest.toml --trust keys/trust.toml   # signatures, each output's digest\ncargo xtask verify provenance.intoto.json --trust keys/trust.toml  # the DSSE envelope, its subjects\nminisign -Vm build-manifest.toml -x build-manifest.toml.KEYID.minisig -p KEY.pub\nsha256sum root.img disk.img sbom.spdx.json   # against build-manifest.toml</pre></body></html>\n");
    h
}

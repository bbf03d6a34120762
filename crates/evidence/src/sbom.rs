//! The software bill of materials of an image, from one model, in two formats: SPDX 2.3 JSON
//! and CycloneDX 1.6 JSON. Every Debian package (with its .deb digest from the lock, its source
//! package and its license where the copyright file states it in machine-readable form), every
//! crate compiled into the stack's binaries (with its Cargo.lock checksum), the pinned vendor
//! artifacts, and — in the document beside the outputs — the image's outputs with their
//! digests. Deterministic: sorted, no clock (the time is the recipe's `source_date_epoch`),
//! identifiers derived from the content.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::license;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deb {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// sha256 of the .deb (the lock's pin).
    pub sha256: String,
    /// Source package and its version, when they differ from the binary's.
    pub source: Option<(String, String)>,
    /// The `License:` of the copyright file's `Files: *` paragraph (Debian's names).
    pub license: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// sha256 of the .crate (Cargo.lock), absent for workspace crates.
    pub checksum: Option<String>,
    /// `crates.io`, or `workspace`.
    pub source: String,
    /// The crate's own license expression (Cargo.toml).
    pub license: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub dest: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutputFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sbom {
    pub name: String,
    pub version: String,
    pub product: String,
    pub channel: String,
    pub source_date_epoch: u64,
    /// e.g. `airlock 0.1.0`.
    pub tool: String,
    /// Debian release the packages come from (`bookworm`).
    pub suite: String,
    pub debs: Vec<Deb>,
    pub crates: Vec<Crate>,
    pub artifacts: Vec<Artifact>,
    /// Empty in the copy inside the image (it cannot list the image that holds it).
    pub outputs: Vec<OutputFile>,
}

/// RFC 3339 UTC time of a Unix timestamp (no clock read, no time crate).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// An SPDX identifier part: letters, digits, `.` and `-` only.
fn idpart(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

fn purl_deb(d: &Deb, suite: &str) -> String {
    let enc = |s: &str| s.replace('%', "%25").replace(':', "%3A").replace('+', "%2B");
    let mut p = format!("pkg:deb/debian/{}@{}?arch={}&distro=debian-{suite}", d.name, enc(&d.version), d.arch);
    if let Some((src, _)) = &d.source {
        p.push_str(&format!("&upstream={src}"));
    }
    p
}

fn purl_crate(c: &Crate) -> String {
    format!("pkg:cargo/{}@{}", c.name, c.version)
}

impl Sbom {
    /// A stable identity of the content, for document namespaces and serial numbers.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("{} {} {}\n", self.product, self.name, self.version));
        for d in &self.debs {
            h.update(format!("deb {} {} {} {}\n", d.name, d.version, d.arch, d.sha256));
        }
        for c in &self.crates {
            h.update(format!("crate {} {} {:?}\n", c.name, c.version, c.checksum));
        }
        for a in &self.artifacts {
            h.update(format!("artifact {} {}\n", a.dest, a.sha256));
        }
        for o in &self.outputs {
            h.update(format!("output {} {}\n", o.name, o.sha256));
        }
        hex::encode(h.finalize())
    }

    fn licenses(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        // package key → expression; LicenseRef → text
        let mut exprs = BTreeMap::new();
        let mut refs = BTreeMap::new();
        for d in &self.debs {
            if let Some(l) = &d.license {
                let e = license::expression(l);
                if !e.expression.is_empty() {
                    exprs.insert(format!("deb:{}", d.name), e.expression);
                    refs.extend(e.refs);
                }
            }
        }
        for c in &self.crates {
            if let Some(l) = &c.license {
                let e = license::expression(l);
                if !e.expression.is_empty() {
                    exprs.insert(format!("crate:{}@{}", c.name, c.version), e.expression);
                    refs.extend(e.refs);
                }
            }
        }
        (exprs, refs)
    }

    /// SPDX 2.3 JSON.
    pub fn spdx(&self) -> String {
        let (exprs, refs) = self.licenses();
        let root = "SPDXRef-image".to_string();
        let mut packages = vec![json!({
            "SPDXID": root,
            "name": self.name,
            "versionInfo": self.version,
            "supplier": "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "comment": format!("Airlock appliance image {} (channel {}), product {}", self.name, self.channel, self.product),
        })];
        let mut rels = vec![
            json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": root}),
        ];
        let lic = |key: String| exprs.get(&key).cloned().unwrap_or_else(|| "NOASSERTION".into());
        for d in &self.debs {
            let id = format!("SPDXRef-deb-{}-{}", idpart(&d.name), idpart(&d.arch));
            let mut p = json!({
                "SPDXID": id,
                "name": d.name,
                "versionInfo": d.version,
                "supplier": "Organization: Debian",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": d.sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": lic(format!("deb:{}", d.name)),
                "copyrightText": "NOASSERTION",
                "primaryPackagePurpose": "LIBRARY",
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl_deb(d, &self.suite)}],
            });
            if let Some((src, ver)) = &d.source {
                p["sourceInfo"] = json!(format!("built from the Debian source package {src} {ver}"));
            }
            packages.push(p);
            rels.push(json!({"spdxElementId": root, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        }
        for c in &self.crates {
            let id = format!("SPDXRef-crate-{}-{}", idpart(&c.name), idpart(&c.version));
            let mut p = json!({
                "SPDXID": id,
                "name": c.name,
                "versionInfo": c.version,
                "supplier": "NOASSERTION",
                "downloadLocation": if c.source == "crates.io" { format!("https://crates.io/api/v1/crates/{}/{}/download", c.name, c.version) } else { "NOASSERTION".into() },
                "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": lic(format!("crate:{}@{}", c.name, c.version)),
                "copyrightText": "NOASSERTION",
                "primaryPackagePurpose": if c.source == "workspace" { "APPLICATION" } else { "LIBRARY" },
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl_crate(c)}],
                "comment": format!("Rust crate from {}, compiled into the image's binaries", c.source),
            });
            if let Some(sum) = &c.checksum {
                p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sum}]);
            }
            packages.push(p);
            rels.push(json!({"spdxElementId": root, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        }
        for a in &self.artifacts {
            let id = format!("SPDXRef-artifact-{}", idpart(&a.name));
            packages.push(json!({
                "SPDXID": id,
                "name": a.name,
                "supplier": "NOASSERTION",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": a.sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "primaryPackagePurpose": "FILE",
                "comment": format!("pinned vendor artifact, installed as {}", a.dest),
            }));
            rels.push(json!({"spdxElementId": root, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        }
        for o in &self.outputs {
            let id = format!("SPDXRef-output-{}", idpart(&o.name));
            packages.push(json!({
                "SPDXID": id,
                "name": o.name,
                "versionInfo": self.version,
                "supplier": "NOASSERTION",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "checksums": [{"algorithm": "SHA256", "checksumValue": o.sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "primaryPackagePurpose": if o.name.ends_with(".img") || o.name.ends_with(".qcow2") { "OPERATING-SYSTEM" } else { "FILE" },
                "comment": format!("build output, {} bytes", o.size),
            }));
            rels.push(json!({"spdxElementId": id, "relationshipType": "GENERATED_FROM", "relatedSpdxElement": root}));
        }
        let extracted: Vec<Value> = refs
            .iter()
            .map(|(id, text)| json!({"licenseId": id, "name": text, "extractedText": format!("The Debian copyright file names this license `{text}`; its text is in /usr/share/doc/*/copyright of the image.")}))
            .collect();
        let mut doc = json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("{}-{}", self.name, self.version),
            "documentNamespace": format!("https://airlock.invalid/spdx/{}/{}/{}", idpart(&self.name), idpart(&self.version), self.digest()),
            "creationInfo": {
                "created": rfc3339(self.source_date_epoch),
                "creators": [format!("Tool: {}", self.tool.replace(' ', "-"))],
            },
            "packages": packages,
            "relationships": rels,
        });
        if !extracted.is_empty() {
            doc["hasExtractedLicensingInfos"] = json!(extracted);
        }
        pretty(&doc)
    }

    /// CycloneDX 1.6 JSON.
    pub fn cyclonedx(&self) -> String {
        let (exprs, _) = self.licenses();
        let lic = |key: String| -> Value {
            match exprs.get(&key) {
                Some(e) => json!([{"expression": e}]),
                None => json!([]),
            }
        };
        let digest = self.digest();
        let uuid = format!(
            "{}-{}-5{}-8{}-{}",
            &digest[0..8],
            &digest[8..12],
            &digest[13..16],
            &digest[17..20],
            &digest[20..32]
        );
        let mut components = Vec::new();
        for d in &self.debs {
            let mut c = json!({
                "type": "library",
                "bom-ref": format!("deb:{}:{}", d.name, d.arch),
                "name": d.name,
                "version": d.version,
                "supplier": {"name": "Debian"},
                "hashes": [{"alg": "SHA-256", "content": d.sha256}],
                "purl": purl_deb(d, &self.suite),
            });
            let l = lic(format!("deb:{}", d.name));
            if l.as_array().is_some_and(|a| !a.is_empty()) {
                c["licenses"] = l;
            }
            components.push(c);
        }
        for k in &self.crates {
            let mut c = json!({
                "type": if k.source == "workspace" { "application" } else { "library" },
                "bom-ref": format!("crate:{}@{}", k.name, k.version),
                "name": k.name,
                "version": k.version,
                "purl": purl_crate(k),
            });
            if let Some(sum) = &k.checksum {
                c["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
            }
            let l = lic(format!("crate:{}@{}", k.name, k.version));
            if l.as_array().is_some_and(|a| !a.is_empty()) {
                c["licenses"] = l;
            }
            components.push(c);
        }
        for a in &self.artifacts {
            components.push(json!({
                "type": "file",
                "bom-ref": format!("artifact:{}", a.name),
                "name": a.name,
                "hashes": [{"alg": "SHA-256", "content": a.sha256}],
                "description": format!("pinned vendor artifact, installed as {}", a.dest),
            }));
        }
        for o in &self.outputs {
            components.push(json!({
                "type": "file",
                "bom-ref": format!("output:{}", o.name),
                "name": o.name,
                "version": self.version,
                "hashes": [{"alg": "SHA-256", "content": o.sha256}],
                "description": format!("build output, {} bytes", o.size),
            }));
        }
        let doc = json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.6",
            "serialNumber": format!("urn:uuid:{uuid}"),
            "version": 1,
            "metadata": {
                "timestamp": rfc3339(self.source_date_epoch),
                "tools": {"components": [{"type": "application", "name": self.tool.split(' ').next().unwrap_or("airlock"), "version": self.tool.split(' ').nth(1).unwrap_or("0")}]},
                "component": {"type": "operating-system", "bom-ref": "image", "name": self.name, "version": self.version, "description": format!("Airlock appliance image, product {}, channel {}", self.product, self.channel)},
            },
            "components": components,
        });
        pretty(&doc)
    }
}

/// The SBOM in numbers, read back from its SPDX document (the report is made from the files
/// that are shipped, not from the builder's memory).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct SbomSummary {
    pub debian_packages: usize,
    pub crates: usize,
    pub artifacts: usize,
    pub outputs: usize,
    /// SPDX expression → packages and crates declaring it.
    pub licenses: BTreeMap<String, usize>,
    pub license_not_stated: usize,
}

pub fn summarize_spdx(text: &[u8]) -> Result<SbomSummary, String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("not SPDX JSON: {e}"))?;
    if v["spdxVersion"] != "SPDX-2.3" {
        return Err("not an SPDX 2.3 document".into());
    }
    let mut s = SbomSummary::default();
    for p in v["packages"].as_array().into_iter().flatten() {
        let id = p["SPDXID"].as_str().unwrap_or("");
        let counted = if id.starts_with("SPDXRef-deb-") {
            s.debian_packages += 1;
            true
        } else if id.starts_with("SPDXRef-crate-") {
            s.crates += 1;
            true
        } else {
            if id.starts_with("SPDXRef-artifact-") {
                s.artifacts += 1;
            } else if id.starts_with("SPDXRef-output-") {
                s.outputs += 1;
            }
            false
        };
        if counted {
            match p["licenseDeclared"].as_str() {
                Some(l) if l != "NOASSERTION" => *s.licenses.entry(l.to_string()).or_default() += 1,
                _ => s.license_not_stated += 1,
            }
        }
    }
    Ok(s)
}

/// Pretty JSON with a final newline (serde_json's maps are sorted: the bytes are stable).
pub fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// One package of a dpkg status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpkgEntry {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// `Source:` as written (`name` or `name (version)`).
    pub source: Option<String>,
    pub installed: bool,
}

/// Parses `/var/lib/dpkg/status` (the installed packages of the image).
pub fn parse_dpkg_status(text: &str) -> Vec<DpkgEntry> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let field = |k: &str| {
            para.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_string()))
        };
        let (Some(name), Some(version), Some(arch)) = (field("Package"), field("Version"), field("Architecture"))
        else {
            continue;
        };
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        out.push(DpkgEntry { name, version, arch, source: field("Source"), installed });
    }
    out.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    out
}

/// (source package, source version) from a `Source:` field and the binary's version.
pub fn source_of(source: &str, binary_version: &str) -> (String, String) {
    match source.split_once(' ') {
        Some((n, v)) => (n.to_string(), v.trim_matches(|c| c == '(' || c == ')').to_string()),
        None => (source.to_string(), binary_version.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_028_800), "2025-11-25T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn dpkg_status_paragraphs_are_read() {
        let t = "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.17-1~deb12u2\n\nPackage: x\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1\n";
        let v = parse_dpkg_status(t);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].source.as_deref(), Some("openssl"));
        assert!(v[0].installed && !v[1].installed);
        assert_eq!(source_of("openssl (3.0.17-1)", "3.0.17-1+b1"), ("openssl".into(), "3.0.17-1".into()));
    }
}

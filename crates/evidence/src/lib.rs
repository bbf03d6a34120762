//! Evidence for the security officer, verifiable without Airlock and without a network: the
//! image's SBOM (`sbom.rs`: SPDX 2.3 and CycloneDX 1.6 from one model; `license.rs`: Debian and
//! Cargo license names as SPDX expressions), provenance (`provenance.rs`: an in-toto Statement
//! v1 with a SLSA Provenance v1 predicate, in a DSSE envelope), and the report (`report.rs`:
//! one self-contained HTML file with an SVG zone diagram, and JSON, with the IEC 62443
//! requirements each piece supports). Pure: the builder gathers the facts, this crate writes
//! the documents, byte for byte the same for the same facts.

pub mod license;
pub mod provenance;
pub mod report;
pub mod sbom;

pub use provenance::Provenance;
pub use sbom::{Artifact, Crate, Deb, OutputFile, Sbom};

/// Output file names in an image directory.
pub const SPDX_NAME: &str = "sbom.spdx.json";
pub const CYCLONEDX_NAME: &str = "sbom.cdx.json";
pub const STATEMENT_NAME: &str = "provenance.json";
pub const ENVELOPE_NAME: &str = "provenance.intoto.json";
pub const REPORT_HTML: &str = "report.html";
pub const REPORT_JSON: &str = "report.json";
/// Where the image carries its own SBOM.
pub const IMAGE_SBOM: &str = "/usr/share/airlock/sbom.spdx.json";

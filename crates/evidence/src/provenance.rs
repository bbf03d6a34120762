//! Provenance: an in-toto Statement v1 whose predicate is SLSA Provenance v1 — what was built
//! (the outputs, by digest), from what (the recipe, the lock, every resolved input with its
//! digest), how (the build parameters, the tools' versions), by which builder — wrapped in a
//! DSSE envelope signed with the same keys and policy as the build manifest.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::sbom::pretty;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
pub const BUILD_TYPE: &str = "https://airlock.invalid/build-types/image/v1";
pub const BUILDER_ID: &str = "https://airlock.invalid/builders/cargo-xtask-build";

/// One resolved input: a name (a purl, a path) and its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub uri: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provenance {
    pub recipe_path: String,
    pub name: String,
    pub version: String,
    pub product: String,
    pub channel: String,
    pub build_key: String,
    pub builder_version: String,
    pub settings: BTreeMap<String, String>,
    pub tools: BTreeMap<String, String>,
    pub inputs: Vec<Input>,
    /// Output name → sha256.
    pub subjects: BTreeMap<String, String>,
}

fn hex_of(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

impl Provenance {
    /// The statement, as signed (its exact bytes are the DSSE payload).
    pub fn statement(&self) -> String {
        let subject: Vec<Value> =
            self.subjects.iter().map(|(n, d)| json!({"name": n, "digest": {"sha256": hex_of(d)}})).collect();
        let deps: Vec<Value> =
            self.inputs.iter().map(|i| json!({"uri": i.uri, "digest": {"sha256": hex_of(&i.sha256)}})).collect();
        let v = json!({
            "_type": STATEMENT_TYPE,
            "subject": subject,
            "predicateType": SLSA_PROVENANCE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": {
                        "recipe": self.recipe_path,
                        "image": {"name": self.name, "version": self.version, "product": self.product, "channel": self.channel},
                    },
                    "internalParameters": {"settings": self.settings, "tools": self.tools},
                    "resolvedDependencies": deps,
                },
                "runDetails": {
                    "builder": {"id": BUILDER_ID, "version": {"airlock": self.builder_version}},
                    "metadata": {"invocationId": self.build_key},
                },
            },
        });
        pretty(&v)
    }
}

/// A DSSE envelope around `payload`, with these signatures, as JSON.
pub fn envelope(payload: &[u8], signatures: &[trust::dsse::Signature]) -> String {
    let sigs: Vec<Value> = signatures.iter().map(|s| json!({"keyid": s.keyid, "sig": s.sig})).collect();
    pretty(&json!({
        "payloadType": trust::dsse::IN_TOTO,
        "payload": B64.encode(payload),
        "signatures": sigs,
    }))
}

//! `build-manifest.toml`: what went into an image and what came out, every digest listed. A
//! machine output type, apart from the recipe a person writes; signed as its exact bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildManifest {
    pub format: u32,
    /// Digest of every input and setting: equal keys mean equal outputs (the stage cache).
    pub build_key: String,
    pub image: ImageInfo,
    pub inputs: Inputs,
    pub tools: BTreeMap<String, String>,
    pub settings: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, Output>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    pub name: String,
    pub version: String,
    pub product: String,
    pub channel: String,
    pub security_version: u64,
    pub source_date_epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    pub recipe: String,
    pub lock: String,
    /// The trust policy baked in as /etc/airlock/trust.toml.
    pub trust_root: String,
    pub base_stage: String,
    pub overlays: BTreeMap<String, String>,
    /// Image path → sha256 of each stack file.
    pub stack: BTreeMap<String, String>,
    pub artifacts: BTreeMap<String, String>,
    /// `name=version (arch)` → sha256 of each .deb.
    pub packages: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub sha256: String,
    pub size: u64,
}

impl BuildManifest {
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("a build manifest always serialises");
        format!("# Airlock build manifest: every input and output of this image, by digest.\n{body}")
    }

    pub fn parse(text: &str) -> Result<BuildManifest, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

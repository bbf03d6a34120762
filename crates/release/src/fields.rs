//! What a file to sign or verify says about itself: the product, version and channel of a
//! build manifest (`[image]`), a bundle manifest (top level) or a trust policy. Read with a
//! bound (manifests are at most `bundle::MAX_MANIFEST` bytes); anything else has no fields.
//! Used to fill a signature's trusted comment and to check it — never to choose a policy.

use std::path::Path;

use product::Channel;

use crate::Result;
use crate::files::read_bounded;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    BuildManifest,
    BundleManifest,
    TrustPolicy,
    SiteProfile,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BuildManifest => "build manifest",
            Kind::BundleManifest => "bundle manifest",
            Kind::TrustPolicy => "trust policy",
            Kind::SiteProfile => "site profile",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub kind: Kind,
    pub product: Option<String>,
    pub version: Option<String>,
    pub channel: Option<Channel>,
}

fn s(t: &toml::Table, k: &str) -> Option<String> {
    t.get(k)?.as_str().map(str::to_string)
}

fn channel(t: &toml::Table) -> Option<Channel> {
    t.get("channel")?.as_str()?.parse().ok()
}

/// Parses the fields out of a manifest or policy text.
pub fn parse(text: &str) -> Option<Fields> {
    let t: toml::Table = toml::from_str(text).ok()?;
    if let Some(img) = t.get("image").and_then(|v| v.as_table()) {
        return Some(Fields {
            kind: Kind::BuildManifest,
            product: s(img, "product"),
            version: s(img, "version"),
            channel: channel(img),
        });
    }
    if t.contains_key("payload") && t.contains_key("product") {
        return Some(Fields {
            kind: Kind::BundleManifest,
            product: s(&t, "product"),
            version: s(&t, "version"),
            channel: channel(&t),
        });
    }
    if t.contains_key("site") && t.contains_key("product") && t.get("serial").is_some_and(|v| v.is_integer()) {
        return Some(Fields {
            kind: Kind::SiteProfile,
            product: s(&t, "product"),
            // A profile has no version: its serial stands in, in the trusted comment.
            version: t.get("serial").and_then(|v| v.as_integer()).map(|v| format!("serial-{v}")),
            channel: None,
        });
    }
    if t.contains_key("release") && t.get("version").is_some_and(|v| v.is_integer()) {
        return Some(Fields {
            kind: Kind::TrustPolicy,
            product: None,
            version: t.get("version").and_then(|v| v.as_integer()).map(|v| v.to_string()),
            channel: channel(&t),
        });
    }
    None
}

/// The fields of the file at `path`, if it is a manifest or a policy.
pub fn read(path: &Path) -> Result<Option<Fields>> {
    let Some(bytes) = read_bounded(path, bundle::MAX_MANIFEST)? else { return Ok(None) };
    Ok(std::str::from_utf8(&bytes).ok().and_then(parse))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_manifest_kinds_and_policies_give_their_fields() {
        let build = parse("[image]\nproduct = \"p\"\nversion = \"1.0.0\"\nchannel = \"release\"\n").unwrap();
        assert_eq!(
            (build.kind, build.product.as_deref(), build.channel),
            (Kind::BuildManifest, Some("p"), Some(Channel::Release))
        );
        let bundle = parse(
            "format = 1\nproduct = \"p\"\nversion = \"2.0.0\"\nchannel = \"dev\"\n[[payload]]\nname = \"root.img\"\n",
        )
        .unwrap();
        assert_eq!(
            (bundle.kind, bundle.version.as_deref(), bundle.channel),
            (Kind::BundleManifest, Some("2.0.0"), Some(Channel::Dev))
        );
        let policy = parse("version = 2\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = []\n").unwrap();
        assert_eq!((policy.kind, policy.version.as_deref()), (Kind::TrustPolicy, Some("2")));
        assert_eq!(parse("just text"), None);
    }
}

//! `build-manifest.toml`: what went into an image and what came out, every digest listed. A
//! machine output type, apart from the recipe a person writes; signed as its exact bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MANIFEST_FORMAT: u32 = 1;
/// The build manifest's file name in a build directory.
pub const MANIFEST_NAME: &str = "build-manifest.toml";
/// Declares the `[settings]` keys once: the enum, its key strings and `Setting::ALL` come from
/// one list, and the build fills them with an exhaustive `match`, so a new setting cannot be
/// declared without a value nor written without being declared.
macro_rules! settings {
    ($($(#[$doc:meta])* $variant:ident => $key:literal,)+) => {
        /// A key of the build manifest's `[settings]` table: a build choice that changes the
        /// output bytes without being an input file.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Setting {
            $($(#[$doc])* $variant,)+
        }

        impl Setting {
            /// Every setting, in declaration order.
            pub const ALL: &'static [Setting] = &[$(Setting::$variant,)+];

            /// The key as written in `[settings]`.
            pub const fn key(self) -> &'static str {
                match self {
                    $(Setting::$variant => $key,)+
                }
            }
        }
    };
}

settings! {
    /// zstd level of the root archive.
    RootfsZstdLevel => "rootfs.zstd_level",
    /// zstd worker threads (the frame layout depends on it).
    RootfsZstdWorkers => "rootfs.zstd_workers",
    /// The slot filesystem, squashfs or erofs.
    SlotFs => "slot.fs",
    /// The slot filesystem's compression level.
    SlotLevel => "slot.level",
    /// The image's hostname.
    Hostname => "hostname",
    /// Units enabled at boot, space separated.
    Services => "services",
    /// Partition sizes.
    Disk => "disk",
    /// Slot a's kernel command line (`root=PARTLABEL=root-a …`).
    CmdlineA => "cmdline.a",
}

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
    /// The slot's dm-verity parameters (`root.img` with `root.verity` at `hash_offset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<Verity>,
}

/// A slot's dm-verity hash tree, as `veritysetup format` made it: the root hash the initrd opens
/// the slot with, and where on the slot the tree starts (right after the filesystem). The build
/// manifest and the bundle manifest both carry this table, signed; the `bundle` crate checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verity {
    /// The tree's root hash (64 lowercase hex digits): what the slot is opened with.
    pub root_hash: String,
    /// Byte offset of the tree (its superblock) on the slot: the filesystem's size.
    pub hash_offset: u64,
    /// The hash algorithm (`sha256`).
    pub hash: String,
    /// Data and hash block size (4096).
    pub block_size: u64,
    /// The salt (64 lowercase hex digits), derived from the recipe.
    pub salt: String,
    /// The superblock's UUID, derived from the recipe.
    pub uuid: String,
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
        // Every field is a string, a number or a map of them: serialising cannot fail.
        let body = toml::to_string(self).unwrap_or_default();
        format!("# Airlock build manifest: every input and output of this image, by digest.\n{body}")
    }

    pub fn parse(text: &str) -> Result<BuildManifest, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// What the release tools read of a build manifest: the image's identity, every output's
/// digest, the settings, the build key. Lenient about the rest (a manifest of an older or
/// newer builder still gives these), strict about these.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BuildFacts {
    pub image: ImageFacts,
    #[serde(default)]
    pub build_key: Option<String>,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputFacts>,
    /// The slot's dm-verity tree, when the build made one.
    #[serde(default)]
    pub verity: Option<Verity>,
}

/// An output's digest (and its size, when listed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OutputFacts {
    pub sha256: String,
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageFacts {
    pub name: String,
    pub version: String,
    pub product: String,
    pub channel: String,
    pub security_version: u64,
}

impl BuildFacts {
    /// Parses `text`; the error is the TOML parser's, with its position.
    pub fn parse(text: &str) -> Result<BuildFacts, String> {
        toml::from_str(text).map_err(|e| e.message().trim().to_string())
    }

    /// The sha256 the manifest lists for output `name`.
    pub fn output_sha256(&self, name: &str) -> Option<&str> {
        self.outputs.get(name).map(|o| o.sha256.as_str())
    }

    /// Slot a's kernel command line as the build recorded it.
    pub fn cmdline_a(&self) -> Option<&str> {
        self.settings.get(Setting::CmdlineA.key()).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_tools_read_a_manifests_facts_whatever_else_it_holds() {
        let text = "format = 1\nbuild_key = \"sha256:k\"\nsurprise = 1\n[image]\nname = \"pc\"\nversion = \"1.0.0\"\nproduct = \"p\"\nchannel = \"dev\"\nsecurity_version = 2\nsource_date_epoch = 0\n[settings]\n\"cmdline.a\" = \"root=PARTLABEL=root-a ro\"\n[outputs.\"root.img\"]\nsha256 = \"ab\"\nsize = 1\n";
        let f = BuildFacts::parse(text).unwrap();
        assert_eq!(
            (f.image.name.as_str(), f.image.security_version, f.build_key.as_deref()),
            ("pc", 2, Some("sha256:k"))
        );
        assert_eq!((f.output_sha256("root.img"), f.output_sha256("x")), (Some("ab"), None));
        assert_eq!(f.cmdline_a(), Some("root=PARTLABEL=root-a ro"));
        assert!(BuildFacts::parse("[image]\nname = \"pc\"\n").unwrap_err().contains("missing field"));
        assert!(BuildManifest::parse(text).is_err(), "the full type is strict");
    }

    #[test]
    fn setting_keys_are_distinct_dotted_names() {
        let keys: std::collections::BTreeSet<_> = Setting::ALL.iter().map(|s| s.key()).collect();
        assert_eq!(keys.len(), Setting::ALL.len(), "two settings share a key");
        for k in keys {
            assert!(k.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'), "{k}");
        }
    }
}

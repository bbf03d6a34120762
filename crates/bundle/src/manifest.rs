//! The bundle manifest: what a bundle holds and why it may be installed. Signed as its exact
//! bytes; parsed only after its signatures are verified, and checked field by field.

use product::{Channel, Version};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::name::EntryName;

/// The format this writer makes. Format 2 added the provenance payload and its DSSE
/// signature entries; format 3 the slot's kernel command line (`cmdline`), from which the
/// agent writes the slot's whole boot entry; format 4 the slot's dm-verity tree (payload
/// `root.verity`) and its signed `[verity]` table. A reader reads every older format too (an
/// older agent refuses a newer bundle by its number: "format 4 is not known").
pub const FORMAT: u32 = 4;
/// Longest kernel command line accepted (the kernel's own COMMAND_LINE_SIZE on x86 is 2048).
pub const MAX_CMDLINE: usize = 2048;
/// The oldest format still read.
pub const MIN_FORMAT: u32 = 1;
/// The name of the provenance payload (the in-toto statement, `provenance.json` in the build
/// directory), and so the stem of its DSSE signature entries `provenance.json.KEYID.dsse`.
pub const PROVENANCE: &str = "provenance.json";
/// Largest manifest accepted, in bytes (a 16 GiB payload's chunk list is about 1 MiB).
pub const MAX_MANIFEST: u64 = 2 << 20;
pub const MAX_PAYLOADS: usize = 8;
/// Largest payload accepted (uncompressed), in bytes.
pub const MAX_PAYLOAD_SIZE: u64 = 64 << 30;
pub const MIN_CHUNK: u64 = 64 << 10;
pub const MAX_CHUNK: u64 = 16 << 20;
pub const DEFAULT_CHUNK: u64 = 1 << 20;

/// Where a payload goes on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The inactive root slot (the first payload, after the provenance statement if any).
    Root,
    /// The slot's kernel, on the ESP beside the slot's boot entry.
    Kernel,
    /// The slot's initrd, on the ESP.
    Initrd,
    /// The build's provenance statement (an in-toto Statement), checked against the DSSE
    /// signatures the bundle carries and kept on the data partition beside the slot
    /// (format 2; the first payload when present).
    Provenance,
    /// The root slot's dm-verity hash tree, written into the slot at `[verity] hash_offset`
    /// (format 4; right after the root payload).
    Verity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub product: String,
    pub version: Version,
    pub security_version: u64,
    pub channel: Channel,
    /// `sha256:…` of the previous release's bundle manifest, empty for the first release.
    pub previous_manifest: String,
    /// `sha256:…` of the build manifest this bundle was made from (provenance).
    pub build_manifest: String,
    pub hash: String,
    pub chunk_size: u64,
    /// The kernel command line of the slot this bundle installs, without the `root=` that
    /// names the slot (the agent adds it): format 3. The agent writes the slot's boot entry
    /// from it, never from what the ESP holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// The root slot's dm-verity table (format 4): its root hash goes into the slot's boot
    /// entry; the agent checks the written slot against it before arming a trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<crate::Verity>,
    #[serde(rename = "payload")]
    pub payloads: Vec<Payload>,
}

/// A kernel command line the agent may write into a boot entry: words of printable ASCII
/// separated by single spaces, at most [`MAX_CMDLINE`] bytes, and no `root=` (the agent names
/// the slot itself).
pub fn valid_cmdline(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_CMDLINE {
        return Err(format!("cmdline: 1 to {MAX_CMDLINE} bytes"));
    }
    if !s.split(' ').all(|w| !w.is_empty() && w.bytes().all(|c| (0x21..=0x7e).contains(&c))) {
        return Err("cmdline: words of printable ASCII separated by single spaces".into());
    }
    if s.split(' ').any(|w| w.starts_with("root=")) {
        return Err("cmdline: no `root=` (the agent names the slot it writes)".into());
    }
    if s.split(' ').any(crate::is_verity_word) {
        return Err(
            "cmdline: no `airlock.roothash=` or `airlock.hashoffset=` (they come from the signed [verity] table)"
                .into(),
        );
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub name: String,
    pub target: Target,
    pub compression: String,
    /// Uncompressed size.
    pub size: u64,
    /// Size of the compressed tar entry.
    pub compressed_size: u64,
    /// sha256 of the uncompressed payload.
    pub sha256: String,
    /// sha256 of each `chunk_size` piece of the uncompressed payload, in order.
    pub chunks: Vec<String>,
}

impl Payload {
    /// The tar entry that carries this payload.
    pub fn entry_name(&self) -> String {
        format!("{}.zst", self.name)
    }
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn is_tagged_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_digest)
}

fn plain(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._+~-".contains(&c))
}

impl Manifest {
    /// Parses and checks a manifest whose signatures have already been verified.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, Error> {
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(Error::TooLarge { what: "manifest".into(), size: bytes.len() as u64, max: MAX_MANIFEST });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| Error::Manifest("not UTF-8".into()))?;
        let m: Manifest = toml::from_str(text).map_err(|e| Error::Manifest(crate::escape(e.message().trim())))?;
        m.check()?;
        Ok(m)
    }

    pub fn check(&self) -> Result<(), Error> {
        let bad = |s: &str| Err(Error::Manifest(s.to_string()));
        if !(MIN_FORMAT..=FORMAT).contains(&self.format) {
            return Err(Error::Manifest(format!(
                "format {} is not known (this agent reads formats {MIN_FORMAT} to {FORMAT})",
                self.format
            )));
        }
        if let Some(c) = &self.cmdline {
            if self.format < 3 {
                return bad("a cmdline needs format 3");
            }
            valid_cmdline(c).map_err(|e| Error::Manifest(crate::escape(&e)))?;
        }
        if self.hash != "sha256" {
            return Err(Error::Manifest(format!(
                "hash algorithm `{}` is not known (sha256 is)",
                self.hash.escape_debug()
            )));
        }
        if !plain(&self.product, 128) {
            return bad("product has characters outside A-Z a-z 0-9 . _ + ~ -");
        }
        if !(self.previous_manifest.is_empty() || is_tagged_digest(&self.previous_manifest))
            || !is_tagged_digest(&self.build_manifest)
        {
            return bad("previous_manifest and build_manifest must be `sha256:` and 64 lowercase hex digits");
        }
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(Error::Manifest(format!(
                "chunk_size {} is outside {MIN_CHUNK}..={MAX_CHUNK}",
                self.chunk_size
            )));
        }
        if self.payloads.is_empty() || self.payloads.len() > MAX_PAYLOADS {
            return Err(Error::Manifest(format!("{} payloads: a bundle has 1 to {MAX_PAYLOADS}", self.payloads.len())));
        }
        // The provenance statement, when there is one, comes first: its signatures are
        // checked before a byte of the root slot is written.
        let lead = usize::from(self.payloads[0].target == Target::Provenance);
        if self.payloads.get(lead).map(|p| p.target) != Some(Target::Root) {
            return bad(
                "the first payload must be the root slot (target = \"root\"), after the provenance statement if any",
            );
        }
        for (i, p) in self.payloads.iter().enumerate() {
            EntryName::new(&p.entry_name()).map_err(|e| Error::Manifest(format!("payload {i}: {e}")))?;
            if self.payloads[..i].iter().any(|q| q.target == p.target) {
                return Err(Error::Manifest(format!("two payloads for target {:?}", p.target)));
            }
            if self.payloads[..i].iter().any(|q| q.name == p.name) {
                return Err(Error::Manifest(format!("payload `{}` is listed twice", p.name)));
            }
            if p.target == Target::Provenance {
                if i > 0 {
                    return bad("the provenance statement is the first payload");
                }
                if self.format < 2 {
                    return bad("a provenance payload needs format 2");
                }
                if p.name != PROVENANCE {
                    return Err(Error::Manifest(format!(
                        "the provenance payload is named `{}`, not `{PROVENANCE}`",
                        crate::escape(&p.name)
                    )));
                }
                if p.size > trust::dsse::MAX_PAYLOAD as u64 {
                    return Err(Error::TooLarge {
                        what: format!("payload `{PROVENANCE}`"),
                        size: p.size,
                        max: trust::dsse::MAX_PAYLOAD as u64,
                    });
                }
            }
            if p.target == Target::Verity
                && self.payloads.get(i.wrapping_sub(1)).map(|q| q.target) != Some(Target::Root)
            {
                return bad("the verity tree comes right after the root payload");
            }
            if p.compression != "zstd" {
                return Err(Error::Manifest(format!(
                    "payload `{}`: compression `{}` is not known (zstd is)",
                    p.name,
                    p.compression.escape_debug()
                )));
            }
            if p.size > MAX_PAYLOAD_SIZE || p.compressed_size > MAX_PAYLOAD_SIZE + (MAX_PAYLOAD_SIZE >> 7) {
                return Err(Error::TooLarge {
                    what: format!("payload `{}`", p.name),
                    size: p.size,
                    max: MAX_PAYLOAD_SIZE,
                });
            }
            if !is_digest(&p.sha256) || !p.chunks.iter().all(|c| is_digest(c)) {
                return Err(Error::Manifest(format!("payload `{}`: digests must be 64 lowercase hex digits", p.name)));
            }
            if p.size == 0 {
                return Err(Error::EmptyPayload(p.name.clone()));
            }
            let want = p.size.div_ceil(self.chunk_size);
            if p.chunks.len() as u64 != want {
                return Err(Error::Manifest(format!(
                    "payload `{}`: {} chunk hashes for {} bytes in chunks of {} (expected {want})",
                    p.name,
                    p.chunks.len(),
                    p.size,
                    self.chunk_size
                )));
            }
        }
        self.check_verity()
    }

    /// A `[verity]` table and a verity payload come together (format 4), the table fitting the
    /// root payload and the tree.
    fn check_verity(&self) -> Result<(), Error> {
        let size_of = |t: Target| self.payloads.iter().find(|p| p.target == t).map(|p| p.size);
        match (&self.verity, size_of(Target::Verity)) {
            (None, None) => Ok(()),
            (Some(_), _) | (_, Some(_)) if self.format < 4 => {
                Err(Error::Manifest("a verity table and tree need format 4".into()))
            }
            (Some(v), Some(tree)) => crate::verity::check(v, size_of(Target::Root).unwrap_or(0), tree)
                .map_err(|e| Error::Manifest(crate::escape(&e))),
            (Some(_), None) => Err(Error::Manifest("a [verity] table without its tree (payload root.verity)".into())),
            (None, Some(_)) => Err(Error::Manifest("a verity tree without its [verity] table".into())),
        }
    }

    pub fn to_toml(&self) -> Result<String, Error> {
        self.check()?;
        toml::to_string(self).map_err(|e| Error::Manifest(e.to_string()))
    }
}

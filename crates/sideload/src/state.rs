//! The agent's own record of the device, in the data partition (`state.toml`): each slot's
//! status and what was verified into it, the security floor, and the head of the audit chain.
//! Written only whole and atomically, by a command holding the device lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::boot::Slot;
use crate::fsutil::write_atomic;
use crate::{Error, audit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// Nothing installed, or its contents are unknown.
    Empty,
    /// Being written: never bootable.
    Writing,
    /// Written and read back: armed, or about to be armed, for a trial boot.
    Written,
    /// Booted and passed its health check.
    Good,
    /// Failed its trial boot, or an operator rolled back from it.
    Failed,
}

impl SlotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Empty => "empty",
            SlotStatus::Writing => "writing",
            SlotStatus::Written => "written",
            SlotStatus::Good => "good",
            SlotStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRecord {
    pub status: SlotStatus,
    pub version: String,
    pub security_version: u64,
    /// `sha256:…` of the bundle manifest installed here (verified).
    pub manifest: String,
    /// sha256 and size of the root payload as verified while it was written.
    pub sha256: String,
    pub size: u64,
    /// The boot entry and boot files the agent wrote for this slot (a device that boots each
    /// slot's own kernel): checked at every run of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootRecord>,
}

/// What a slot's boot entry must say and what its kernel and initrd are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootRecord {
    /// The kernel command line without `root=` (from the signed bundle, or the image's own).
    pub cmdline: String,
    /// sha256 of the slot's kernel and initrd as verified while they were written.
    pub kernel: String,
    pub initrd: String,
}

impl SlotRecord {
    pub fn empty() -> SlotRecord {
        SlotRecord {
            status: SlotStatus::Empty,
            version: String::new(),
            security_version: 0,
            manifest: String::new(),
            sha256: String::new(),
            size: 0,
            boot: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// Lowest security_version this device accepts; rises only after a slot is blessed.
    pub security_floor: u64,
    pub slots: BTreeMap<Slot, SlotRecord>,
    /// The last audit record this state knows of: a log that ends elsewhere was cut or edited.
    pub audit: audit::Head,
    /// The site profile in force (verified when installed, and again at every boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteRecord>,
    /// The highest profile serial this box ever had, per site: a site's old profile (an old
    /// re-siting among them) is never applied again, even after the box left and came back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub site_serials: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRecord {
    pub site: String,
    pub serial: u64,
    /// `sha256:…` of the profile's bytes; its files are `site/HEX.toml` and
    /// `site/HEX.KEYID.minisig` in the data directory.
    pub digest: String,
}

impl AgentState {
    pub fn slot(&self, s: Slot) -> SlotRecord {
        self.slots.get(&s).cloned().unwrap_or_else(SlotRecord::empty)
    }

    pub fn set(&mut self, s: Slot, r: SlotRecord) {
        self.slots.insert(s, r);
    }

    pub fn set_status(&mut self, s: Slot, status: SlotStatus) {
        let mut r = self.slot(s);
        r.status = status;
        self.slots.insert(s, r);
    }
}

pub fn path(data: &Path) -> PathBuf {
    data.join("state.toml")
}

pub fn save(data: &Path, s: &AgentState) -> Result<(), Error> {
    let text = toml::to_string(s).map_err(|e| Error::State(e.to_string()))?;
    write_atomic(&path(data), text.as_bytes())
}

/// The stored state, or `None` on a device that never ran the agent.
pub fn load(data: &Path) -> Result<Option<AgentState>, Error> {
    let p = path(data);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    toml::from_str(&text).map(Some).map_err(|e| Error::State(format!("{}: {}", p.display(), e.message().trim())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_state_that_cannot_be_read_is_an_error_never_a_fresh_device() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        assert_eq!(load(data).unwrap(), None, "no state.toml: a device that never ran the agent");
        let mut st = AgentState {
            security_floor: 3,
            site_serials: BTreeMap::new(),
            slots: BTreeMap::new(),
            audit: audit::Head::default(),
            site: None,
        };
        st.set(Slot::A, SlotRecord { status: SlotStatus::Good, version: "1.2.0".into(), ..SlotRecord::empty() });
        st.set_status(Slot::B, SlotStatus::Writing);
        save(data, &st).unwrap();
        assert_eq!(load(data).unwrap(), Some(st.clone()));
        assert_eq!(st.slot(Slot::B).status.as_str(), "writing");
        // Bytes that are not UTF-8, and a directory in its place: errors that name the file.
        std::fs::write(path(data), b"security_floor = \xff\n").unwrap();
        let e = load(data).unwrap_err().to_string();
        assert!(e.contains("state.toml"), "{e}");
        std::fs::remove_file(path(data)).unwrap();
        std::fs::create_dir(path(data)).unwrap();
        assert!(load(data).unwrap_err().to_string().contains("state.toml"));
        std::fs::remove_dir(path(data)).unwrap();
        std::fs::write(path(data), "security_floor = \"high\"\n").unwrap();
        let e = load(data).unwrap_err().to_string();
        assert!(e.contains("state.toml") && e.contains("expected u64"), "{e}");
    }

    #[test]
    fn every_status_has_its_lowercase_name() {
        for (s, n) in [
            (SlotStatus::Empty, "empty"),
            (SlotStatus::Writing, "writing"),
            (SlotStatus::Written, "written"),
            (SlotStatus::Good, "good"),
            (SlotStatus::Failed, "failed"),
        ] {
            assert_eq!(s.as_str(), n);
            assert_eq!(toml::Value::try_from(s).unwrap().as_str(), Some(n), "serialised as its name");
        }
    }
}

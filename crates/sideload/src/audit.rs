//! The agent's side of the audit log (the log itself is the `audit` crate): the events it
//! records, each declared once with its name, and the log's place on the device, its fsyncs
//! witnessed by the power-loss simulation.

use serde_json::Value;

pub use ::audit::{Checked, GENESIS, Head, MAX_LINE, Record, check};

bundle::stable_codes! {
    /// Every event the audit log records, declared once with its name (README's "Audit
    /// events" table is checked against this list).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Event {
        /// A device's first record: a simulated device set up, or an appliance's first boot
        /// adopting the running slot as good (`first_boot`).
        Initialised => "initialised",
        /// A boot, and which slot it came from.
        Booted => "booted",
        /// A bundle passed every check: its slot leaves the rotation and is written.
        Accepted => "accepted",
        /// The slot was written, fsynced and read back.
        Installed => "installed",
        /// The slot's trial boot was armed.
        TrialArmed => "trial-armed",
        /// A slot passed its health check on trial: the default now, the floor raised.
        Blessed => "blessed",
        /// A slot on trial failed its health check.
        HealthFailed => "health-failed",
        /// A trial ran out of tries: the boot loader went back to the good slot.
        FellBack => "fell-back",
        /// An install cut short (a power cut, a pulled stick): the slot is empty again.
        Interrupted => "interrupted",
        /// An operator's rollback to the other slot.
        RolledBack => "rolled-back",
        /// A refusal: what, of which file, with its reason code.
        Refused => "refused",
        /// A site profile put in force.
        SiteProfileInstalled => "site-profile-installed",
        /// A site profile recorded whose ruleset then did not load.
        SiteProfileNotLoaded => "site-profile-not-loaded",
        /// A slot's boot entry found edited or missing on the ESP, and written again.
        BootEntryRestored => "boot-entry-restored",
        /// The booted slot's kernel or initrd found swapped, and put back from its image.
        BootFilesRestored => "boot-files-restored",
        /// A slot's kernel or initrd found swapped: that slot is out of the rotation.
        BootFilesTampered => "boot-files-tampered",
        /// The initrd refused a slot whose blocks did not match its signed dm-verity root hash
        /// (its note on the ESP, read at the next boot): the slot is failed, out of the rotation.
        IntegrityFailed => "integrity-failed",
        /// The log's tail was cut or edited: what was found, recorded before going on.
        AuditTampered => "audit-tampered",
        /// A torn last line (a power cut mid-append) was dropped.
        AuditRepaired => "audit-repaired",
    }
}

impl Event {
    /// The event's record with `fields`.
    pub fn record(self, fields: Value) -> Record {
        ::audit::record(self.as_str(), fields)
    }
}

/// A record of `event` with `fields`.
pub fn record(event: Event, fields: Value) -> Record {
    event.record(fields)
}

/// The power-loss simulation hears the log's fsyncs, as every other write's.
struct Simfs;

impl durable::Witness for Simfs {
    fn file_synced(&self, path: &std::path::Path) {
        crate::simfs::synced_file(path);
    }
    fn dir_synced(&self, dir: &std::path::Path) {
        crate::simfs::synced_dir(dir);
    }
}

/// The device's log at `path`.
pub fn log(path: std::path::PathBuf) -> ::audit::Audit {
    ::audit::Audit { path, witness: &Simfs }
}

impl From<::audit::Error> for crate::Error {
    fn from(e: ::audit::Error) -> crate::Error {
        match e {
            ::audit::Error::Io { path, source } => crate::Error::io(&path, source),
            ::audit::Error::Encode(m) => crate::Error::State(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logs_own_events_are_the_agents_names_for_them() {
        assert_eq!(Event::AuditTampered.as_str(), ::audit::TAMPERED);
        assert_eq!(Event::AuditRepaired.as_str(), ::audit::REPAIRED);
    }
}

//! The on-device update agent. A device is two root slots, a boot loader (`boot.rs`) and a
//! data directory holding the agent's state and audit log. The decisions are pure functions
//! (`decide.rs`); `agent.rs` carries them out under the device lock, one commit at a time.
//!
//! Modules: `config` (device.toml, the device's identity), `device` (where things are, the
//! lock), `state` (state.toml), `audit` (the hash-chained log), `decide` (pure decisions),
//! `agent` (effects), `slotio` (writing and reading back a slot), `boot` (simulated boot loader
//! and systemd-boot entries), `evidence` (the provenance a bundle brought, per slot), `fsutil`
//! (atomic writes, fsync, opening untrusted paths once),
//! `simfs` (power loss for the simulated device), `console` (what an operator reads).

pub mod agent;
pub mod audit;
pub mod boot;
pub mod bootentry;
pub mod config;
pub mod console;
pub mod decide;
pub mod device;
pub mod evidence;
pub mod fsutil;
pub mod integrity;
pub mod reason;
pub mod simfs;
pub mod site;
pub mod slotio;
pub mod state;
pub mod stick;

use std::path::{Path, PathBuf};

pub use agent::{Accepted, Agent, NoProgress, Progress, View};
pub use boot::{Bls, BootControl, BootState, SimBoot, Slot, Trial};
pub use config::DeviceConfig;
pub use decide::InstallOptions;
pub use device::{Device, Simulated};
pub use fsutil::write_atomic;
pub use reason::Reason;
pub use slotio::hash_prefix;
pub use state::{AgentState, SlotRecord, SlotStatus};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused: (reason, message). Exit code 1.
    #[error("refused ({0}): {1}")]
    Refused(Reason, String),
    #[error("{}: {message}", bundle::escape(&path.to_string_lossy()))]
    Io { path: PathBuf, message: String },
    #[error("device state: {0}")]
    State(String),
}

impl Error {
    pub fn io(path: &Path, e: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), message: e.to_string() }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Refused(..) => 1,
            _ => 2,
        }
    }

    /// The stable reason code (`io` and `state` for errors that are not refusals).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Refused(r, _) => r.as_str(),
            Error::Io { .. } => "io",
            Error::State(_) => "state",
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::Refused(r, _) => Some(*r),
            _ => None,
        }
    }
}

impl From<bundle::Error> for Error {
    fn from(e: bundle::Error) -> Error {
        Error::Refused(Reason::Bundle(e.code()), e.to_string())
    }
}

/// Simulates a power cut at a named phase: `AIRLOCK_FAILPOINT=mid-write` aborts the process
/// there, with no cleanup (the power-cut matrix). `AIRLOCK_FAILPOINT=mid-write:stop` stops it
/// instead (SIGSTOP), so a test can look at the device while an install is paused.
pub fn failpoint(name: &str) {
    let Ok(f) = std::env::var("AIRLOCK_FAILPOINT") else { return };
    let (point, how) = f.split_once(':').unwrap_or((&f, "abort"));
    if point != name {
        return;
    }
    if how == "stop" {
        eprintln!("sideload: failpoint {name}: stopped (pid {})", std::process::id());
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
    } else {
        eprintln!("sideload: failpoint {name}: simulated power cut");
        std::process::abort();
    }
}

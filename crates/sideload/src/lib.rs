//! The on-device update agent. A device is two root slots, a boot loader (see `boot.rs`) and
//! a data directory holding the agent's state and audit log. Every command loads the state,
//! reconciles it with what the boot loader did (a trial that ran out of tries fell back; a
//! bless that was cut short is completed), acts, and writes state atomically.
//!
//! Install order (each step's effect survives a power cut before the next starts): verify the
//! bundle (signatures first, then product, channel, security floor, version) → take the
//! inactive slot out of the boot loader's rotation and record it as being written → stream the
//! payload, chunk by verified chunk, into that slot → fsync → read back and compare → record it
//! written → arm a trial boot. `mark-good` blesses the slot and only then raises the floor.

pub mod audit;
pub mod boot;
mod fsutil;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

pub use boot::{Bls, BootControl, BootState, SimBoot, Slot, Trial};
pub use fsutil::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle is refused: (reason code, message). Exit code 1.
    #[error("refused ({0}): {1}")]
    Refused(&'static str, String),
    #[error("{}: {message}", path.display())]
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
}

impl From<bundle::Error> for Error {
    fn from(e: bundle::Error) -> Error {
        Error::Refused(e.code(), e.to_string())
    }
}

/// Simulates a power cut at a named phase: `AIRLOCK_FAILPOINT=mid-write` aborts the process
/// there, with no cleanup (tests of the power-cut matrix).
pub fn failpoint(name: &str) {
    if std::env::var("AIRLOCK_FAILPOINT").is_ok_and(|f| f == name) {
        eprintln!("sideload: failpoint {name}: simulated power cut");
        std::process::abort();
    }
}

/// The device's identity and trust root.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub product: String,
    pub channel: String,
    /// Boot attempts a new slot gets before the boot loader falls back.
    #[serde(default = "default_tries")]
    pub tries: u32,
    /// The version of the image this file belongs to (each slot carries its own): adopted as
    /// the running slot's record on a device's first boot.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub security_version: Option<u64>,
}

fn default_tries() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// Nothing installed, or its contents are unknown.
    Empty,
    /// Being written: never bootable.
    Writing,
    /// Written and read back; armed or about to be armed for a trial boot.
    Written,
    /// Booted and passed its health check.
    Good,
    /// Failed its trial boot.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRecord {
    pub status: SlotStatus,
    pub version: String,
    pub security_version: u64,
    /// `sha256:…` of the bundle manifest installed here.
    pub manifest: String,
    /// sha256 and size of the root payload, to check the slot against.
    pub sha256: String,
    pub size: u64,
}

impl SlotRecord {
    fn empty() -> SlotRecord {
        SlotRecord {
            status: SlotStatus::Empty,
            version: String::new(),
            security_version: 0,
            manifest: String::new(),
            sha256: String::new(),
            size: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// Lowest security_version this device accepts; rises only after `mark-good`.
    pub security_floor: u64,
    pub slots: BTreeMap<Slot, SlotRecord>,
}

/// Where a device keeps things.
pub struct Device {
    pub config: DeviceConfig,
    pub policy: trust::Policy,
    pub slots: BTreeMap<Slot, PathBuf>,
    pub boot: Box<dyn BootControl>,
    pub data: PathBuf,
}

impl Device {
    /// A simulated device in a folder (`--root DIR`): `device.toml`, `trust.toml`,
    /// `slots/root-a`, `slots/root-b`, `boot/state.toml`, `data/`.
    pub fn simulated(root: &Path) -> Result<Device, Error> {
        let cfg_path = root.join("device.toml");
        let text = fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let config: DeviceConfig =
            toml::from_str(&text).map_err(|e| Error::State(format!("{}: {e}", cfg_path.display())))?;
        let policy_path = root.join("trust.toml");
        let ptext = fs::read_to_string(&policy_path).map_err(|e| Error::io(&policy_path, e))?;
        let policy =
            trust::Policy::parse(&ptext).map_err(|e| Error::State(format!("{}: {e}", policy_path.display())))?;
        let slots = [(Slot::A, root.join("slots/root-a")), (Slot::B, root.join("slots/root-b"))].into_iter().collect();
        Ok(Device {
            config,
            policy,
            slots,
            boot: Box::new(SimBoot { path: root.join("boot/state.toml") }),
            data: root.join("data"),
        })
    }

    /// Sets up a simulated device whose slot A holds `image` (version, security version),
    /// blessed and booted; slots are `slot_size` bytes.
    pub fn init_simulated(
        root: &Path,
        config: &DeviceConfig,
        policy_text: &str,
        slot_size: u64,
        image: &Path,
        version: &str,
        security_version: u64,
    ) -> Result<(), Error> {
        trust::Policy::parse(policy_text).map_err(|e| Error::State(format!("trust policy: {e}")))?;
        for d in ["slots", "boot", "data"] {
            fs::create_dir_all(root.join(d)).map_err(|e| Error::io(&root.join(d), e))?;
        }
        write_atomic(
            &root.join("device.toml"),
            toml::to_string(config).map_err(|e| Error::State(e.to_string()))?.as_bytes(),
        )?;
        write_atomic(&root.join("trust.toml"), policy_text.as_bytes())?;
        let (sha256, size) = hash_prefix(image, u64::MAX)?;
        if size > slot_size {
            return Err(Error::State(format!("image is {size} bytes, slots are {slot_size}")));
        }
        for (slot, name) in [(Slot::A, "root-a"), (Slot::B, "root-b")] {
            let p = root.join("slots").join(name);
            let f = File::create(&p).map_err(|e| Error::io(&p, e))?;
            f.set_len(slot_size).map_err(|e| Error::io(&p, e))?;
            if slot == Slot::A {
                let mut f = OpenOptions::new().write(true).open(&p).map_err(|e| Error::io(&p, e))?;
                std::io::copy(&mut File::open(image).map_err(|e| Error::io(image, e))?, &mut f)
                    .map_err(|e| Error::io(&p, e))?;
                f.sync_all().map_err(|e| Error::io(&p, e))?;
            }
        }
        SimBoot::init(&root.join("boot/state.toml"), Slot::A)?;
        let mut slots = BTreeMap::new();
        slots.insert(
            Slot::A,
            SlotRecord {
                status: SlotStatus::Good,
                version: version.into(),
                security_version,
                manifest: String::new(),
                sha256,
                size,
            },
        );
        slots.insert(Slot::B, SlotRecord::empty());
        let state = AgentState { security_floor: security_version, slots };
        save_state(&root.join("data"), &state)?;
        let audit = audit::Audit { path: root.join("data/audit.jsonl") };
        audit.record("initialised", json!({"slot": "a", "version": version, "security_version": security_version}))
    }

    /// The installed device: `/etc/airlock/{device,trust}.toml`, slots by GPT label, the ESP's
    /// Boot Loader Specification entries, `/var/lib/airlock`.
    pub fn real() -> Result<Device, Error> {
        let cfg_path = Path::new("/etc/airlock/device.toml");
        let text = fs::read_to_string(cfg_path).map_err(|e| Error::io(cfg_path, e))?;
        let config: DeviceConfig =
            toml::from_str(&text).map_err(|e| Error::State(format!("{}: {e}", cfg_path.display())))?;
        let policy_path = Path::new("/etc/airlock/trust.toml");
        let ptext = fs::read_to_string(policy_path).map_err(|e| Error::io(policy_path, e))?;
        let policy =
            trust::Policy::parse(&ptext).map_err(|e| Error::State(format!("{}: {e}", policy_path.display())))?;
        let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let booted = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("root=PARTLABEL=root-").and_then(Slot::parse))
            .ok_or_else(|| {
                Error::State(
                    "cannot tell the booted slot: no root=PARTLABEL=root-a|b on the kernel command line".into(),
                )
            })?;
        let slots = [
            (Slot::A, PathBuf::from("/dev/disk/by-partlabel/root-a")),
            (Slot::B, PathBuf::from("/dev/disk/by-partlabel/root-b")),
        ]
        .into_iter()
        .collect();
        let boot = Bls { entries: PathBuf::from("/boot/efi/loader/entries"), booted };
        Ok(Device { config, policy, slots, boot: Box::new(boot), data: PathBuf::from("/var/lib/airlock") })
    }

    fn audit(&self) -> audit::Audit {
        audit::Audit { path: self.data.join("audit.jsonl") }
    }
}

fn state_path(data: &Path) -> PathBuf {
    data.join("state.toml")
}

fn save_state(data: &Path, s: &AgentState) -> Result<(), Error> {
    let text = toml::to_string(s).map_err(|e| Error::State(e.to_string()))?;
    write_atomic(&state_path(data), text.as_bytes())
}

fn load_state(data: &Path) -> Result<AgentState, Error> {
    let p = state_path(data);
    let text = fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    toml::from_str(&text).map_err(|e| Error::State(format!("{}: {e}", p.display())))
}

/// Compares versions: numeric dot-separated parts numerically, the rest as text.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| s.split(['.', '-', '+', '~']).map(str::to_string).collect::<Vec<_>>();
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            _ => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// What `verify` and `install` found acceptable.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub bundle: String,
    pub version: String,
    pub security_version: u64,
    pub manifest: String,
    pub signers: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    pub reinstall: bool,
    pub downgrade: bool,
}

pub struct Agent {
    pub dev: Device,
    pub state: AgentState,
}

/// Opens a bundle path: a regular file only (not a symlink, FIFO, device or directory).
fn open_bundle(path: &Path) -> Result<File, Error> {
    let m = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if !m.file_type().is_file() {
        return Err(Error::Refused(
            "not-a-file",
            format!("{}: not a regular file (symlinks, FIFOs, devices and directories are refused)", path.display()),
        ));
    }
    File::open(path).map_err(|e| Error::io(path, e))
}

impl Agent {
    /// Loads the state and reconciles it with the boot loader. On a device's first boot
    /// (no state yet) the running slot is adopted as good, with the version its image declares.
    pub fn load(dev: Device) -> Result<Agent, Error> {
        if !state_path(&dev.data).exists()
            && let (Some(v), Some(sv)) = (dev.config.version.clone(), dev.config.security_version)
        {
            let booted = dev.boot.state()?.booted;
            fs::create_dir_all(&dev.data).map_err(|e| Error::io(&dev.data, e))?;
            let mut slots = BTreeMap::new();
            slots.insert(
                booted,
                SlotRecord {
                    status: SlotStatus::Good,
                    version: v.clone(),
                    security_version: sv,
                    manifest: String::new(),
                    sha256: String::new(),
                    size: 0,
                },
            );
            slots.insert(booted.other(), SlotRecord::empty());
            save_state(&dev.data, &AgentState { security_floor: sv, slots })?;
            dev.audit().record(
                "initialised",
                json!({"slot": booted.letter(), "version": v, "security_version": sv, "first_boot": true}),
            )?;
        }
        let state = load_state(&dev.data)?;
        let mut a = Agent { dev, state };
        a.reconcile()?;
        Ok(a)
    }

    fn save(&self) -> Result<(), Error> {
        save_state(&self.dev.data, &self.state)
    }

    fn slot(&self, s: Slot) -> &SlotRecord {
        static EMPTY: std::sync::OnceLock<SlotRecord> = std::sync::OnceLock::new();
        self.state.slots.get(&s).unwrap_or_else(|| EMPTY.get_or_init(SlotRecord::empty))
    }

    /// Brings the agent's state in line with what the boot loader did while it was not running.
    fn reconcile(&mut self) -> Result<(), Error> {
        let boot = self.dev.boot.state()?;
        let audit = self.dev.audit();
        for s in [Slot::A, Slot::B] {
            let rec = self.slot(s).clone();
            match rec.status {
                // A write cut short: the slot's contents are garbage.
                SlotStatus::Writing if boot.booted != s => {
                    self.dev.boot.cancel_trial(s)?;
                    self.state.slots.insert(s, SlotRecord::empty());
                    self.save()?;
                    audit.record("interrupted", json!({"slot": s.letter(), "version": rec.version, "reason": "install cut short; slot discarded"}))?;
                }
                SlotStatus::Written if boot.default == s && boot.trial.is_none() => {
                    // The boot loader blessed it but the agent was cut off before it recorded so.
                    self.bless_record(s)?;
                    audit.record("blessed", json!({"slot": s.letter(), "version": rec.version, "recovered": true}))?;
                }
                SlotStatus::Written
                    if boot.booted != s && boot.trial.is_some_and(|t| t.slot == s && t.tries_left == 0) =>
                {
                    self.dev.boot.cancel_trial(s)?;
                    if let Some(r) = self.state.slots.get_mut(&s) {
                        r.status = SlotStatus::Failed;
                    }
                    self.save()?;
                    audit.record("fell-back", json!({"slot": s.letter(), "version": rec.version, "booted": boot.booted.letter(), "reason": "trial boot did not pass its health check"}))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn bless_record(&mut self, s: Slot) -> Result<(), Error> {
        let sv = self.slot(s).security_version;
        if let Some(r) = self.state.slots.get_mut(&s) {
            r.status = SlotStatus::Good;
        }
        self.state.security_floor = self.state.security_floor.max(sv);
        self.save()
    }

    /// Checks a bundle's signatures and what it is for, without writing anything. With
    /// `full`, every payload byte is read and checked too.
    pub fn check(&self, path: &Path, opts: InstallOptions, full: bool) -> Result<Accepted, Error> {
        let f = open_bundle(path)?;
        let mut vb = bundle::open(
            std::io::BufReader::new(f),
            &self.dev.policy,
            trust::Expect { product: Some(&self.dev.config.product), version: None },
        )?;
        self.acceptable(&vb.manifest, opts)?;
        let accepted = self.accepted(path, &vb);
        if full {
            let mut buf = Vec::new();
            while let Some(mut p) = vb.next_payload()? {
                while p.next_chunk(&mut buf)? {}
            }
            vb.finish()?;
        }
        Ok(accepted)
    }

    fn accepted<R: Read>(&self, path: &Path, vb: &bundle::VerifiedBundle<R>) -> Accepted {
        Accepted {
            bundle: bundle::escape(&path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
            version: vb.manifest.version.clone(),
            security_version: vb.manifest.security_version,
            manifest: vb.digest.clone(),
            signers: vb
                .report
                .signers
                .iter()
                .filter(|s| s.verified)
                .filter_map(|s| s.key_id.map(|k| k.to_string()))
                .collect(),
        }
    }

    fn acceptable(&self, m: &bundle::Manifest, opts: InstallOptions) -> Result<(), Error> {
        let booted = self.dev.boot.state()?.booted;
        let running = self.slot(booted);
        if m.channel != self.dev.config.channel {
            return Err(Error::Refused(
                "wrong-channel",
                format!(
                    "bundle is for channel `{}`, this device follows `{}`",
                    bundle::escape(&m.channel),
                    self.dev.config.channel
                ),
            ));
        }
        if m.security_version < self.state.security_floor {
            return Err(Error::Refused(
                "rollback",
                format!(
                    "security_version {} is below this device's floor {}",
                    m.security_version, self.state.security_floor
                ),
            ));
        }
        match version_cmp(&m.version, &running.version) {
            std::cmp::Ordering::Equal if !opts.reinstall => {
                return Err(Error::Refused(
                    "same-version",
                    format!("version {} is already running (use --reinstall)", m.version),
                ));
            }
            std::cmp::Ordering::Less if !opts.downgrade => {
                return Err(Error::Refused(
                    "older-version",
                    format!(
                        "version {} is older than the running {} (use --downgrade; the security floor still applies)",
                        m.version, running.version
                    ),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// Verifies and installs a bundle into the inactive slot, then arms a trial boot.
    pub fn install(&mut self, path: &Path, opts: InstallOptions) -> Result<Accepted, Error> {
        let audit = self.dev.audit();
        let name = bundle::escape(&path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let r = self.install_inner(path, opts);
        if r.is_err() {
            // A slot left half-written by a refused payload holds nothing usable.
            let half: Vec<Slot> =
                self.state.slots.iter().filter(|(_, r)| r.status == SlotStatus::Writing).map(|(s, _)| *s).collect();
            for s in half {
                self.state.slots.insert(s, SlotRecord::empty());
                self.save()?;
            }
        }
        if let Err(e) = &r {
            let code = match e {
                Error::Refused(code, _) => *code,
                Error::Io { .. } => "io",
                Error::State(_) => "state",
            };
            audit.record("refused", json!({"bundle": name, "reason": code, "message": e.to_string()}))?;
        }
        r
    }

    fn install_inner(&mut self, path: &Path, opts: InstallOptions) -> Result<Accepted, Error> {
        let audit = self.dev.audit();
        failpoint("verify");
        let boot = self.dev.boot.state()?;
        if boot.booted != boot.default {
            return Err(Error::Refused(
                "trial-in-progress",
                format!(
                    "slot {} is on a trial boot: run `sideload mark-good` once it is healthy, or reboot",
                    boot.booted.letter()
                ),
            ));
        }
        let f = open_bundle(path)?;
        let mut vb = bundle::open(
            std::io::BufReader::with_capacity(1 << 20, f),
            &self.dev.policy,
            trust::Expect { product: Some(&self.dev.config.product), version: None },
        )?;
        self.acceptable(&vb.manifest, opts)?;
        let accepted = self.accepted(path, &vb);
        let target = boot.booted.other();
        let slot_path = self.dev.slots.get(&target).cloned().ok_or_else(|| Error::State("no such slot".into()))?;
        let chunk_size = vb.manifest.chunk_size;
        let payload =
            vb.manifest.payloads.first().cloned().ok_or_else(|| Error::Refused("bad-manifest", "no payload".into()))?;
        let slot_size = slot_len(&slot_path)?;
        if payload.size > slot_size {
            return Err(Error::Refused(
                "too-large-for-slot",
                format!(
                    "payload {} is {} bytes, slot {} holds {slot_size}",
                    payload.name,
                    payload.size,
                    target.letter()
                ),
            ));
        }
        audit.record("accepted", json!({"bundle": accepted.bundle, "version": accepted.version, "security_version": accepted.security_version, "manifest": accepted.manifest, "signers": accepted.signers, "slot": target.letter()}))?;
        failpoint("accepted");

        // The slot leaves the boot rotation before a byte of it changes.
        self.dev.boot.cancel_trial(target)?;
        self.state.slots.insert(
            target,
            SlotRecord {
                status: SlotStatus::Writing,
                version: accepted.version.clone(),
                security_version: accepted.security_version,
                manifest: accepted.manifest.clone(),
                sha256: payload.sha256.clone(),
                size: payload.size,
            },
        );
        self.save()?;
        failpoint("write-start");
        {
            let out = OpenOptions::new().write(true).open(&slot_path).map_err(|e| Error::io(&slot_path, e))?;
            let mut p = vb.next_payload()?.ok_or_else(|| Error::Refused("bad-manifest", "payload missing".into()))?;
            stream_to_slot(&mut p, out, &slot_path, chunk_size as usize)?;
            drop(p);
            if vb.next_payload()?.is_some() {
                return Err(Error::Refused(
                    "bad-manifest",
                    "more than one payload: this agent installs the root slot only".into(),
                ));
            }
            vb.finish()?;
        }
        failpoint("after-sync");
        if !read_back_matches(&slot_path, &payload.chunks, chunk_size, payload.size)? {
            return Err(Error::Refused(
                "readback-mismatch",
                format!("slot {} reads back differently from what was written", target.letter()),
            ));
        }
        if let Some(r) = self.state.slots.get_mut(&target) {
            r.status = SlotStatus::Written;
        }
        self.save()?;
        audit.record(
            "installed",
            json!({"slot": target.letter(), "version": accepted.version, "sha256": payload.sha256}),
        )?;
        failpoint("before-arm");
        self.dev.boot.arm_trial(target, self.dev.config.tries)?;
        audit.record("trial-armed", json!({"slot": target.letter(), "tries": self.dev.config.tries}))?;
        failpoint("after-arm");
        Ok(accepted)
    }

    /// Called once the health check passed on a trial boot: blesses the slot, then raises
    /// the security floor.
    pub fn mark_good(&mut self) -> Result<String, Error> {
        let boot = self.dev.boot.state()?;
        let s = boot.booted;
        let rec = self.slot(s).clone();
        if rec.status == SlotStatus::Good && boot.default == s {
            return Ok(format!("slot {} ({}) is already good", s.letter(), rec.version));
        }
        if rec.status != SlotStatus::Written {
            return Err(Error::State(format!("slot {} is {:?}, not a written slot on trial", s.letter(), rec.status)));
        }
        self.dev.boot.bless(s)?;
        failpoint("mid-bless");
        self.bless_record(s)?;
        self.dev.audit().record(
            "blessed",
            json!({"slot": s.letter(), "version": rec.version, "security_floor": self.state.security_floor}),
        )?;
        Ok(format!("slot {} ({}) blessed; security floor {}", s.letter(), rec.version, self.state.security_floor))
    }

    /// Makes the other slot the default again, if it is good and not below the floor.
    pub fn rollback(&mut self) -> Result<String, Error> {
        let boot = self.dev.boot.state()?;
        let other = boot.booted.other();
        let rec = self.slot(other).clone();
        if rec.status != SlotStatus::Good {
            return Err(Error::Refused(
                "no-good-slot",
                format!("slot {} is {:?}: nothing good to roll back to", other.letter(), rec.status),
            ));
        }
        if rec.security_version < self.state.security_floor {
            return Err(Error::Refused(
                "rollback",
                format!(
                    "slot {} has security_version {}, below the floor {}",
                    other.letter(),
                    rec.security_version,
                    self.state.security_floor
                ),
            ));
        }
        self.dev.boot.bless(other)?;
        self.dev.audit().record("rolled-back", json!({"slot": other.letter(), "version": rec.version}))?;
        Ok(format!("slot {} ({}) is the default from the next boot", other.letter(), rec.version))
    }

    /// Installs the newest acceptable bundle found in `dir` (a USB stick); bad ones are
    /// recorded and skipped, never blocking a good one.
    pub fn install_dir(&mut self, dir: &Path, opts: InstallOptions) -> Result<Accepted, Error> {
        let mut candidates = Vec::new();
        let rd = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "airlock"))
            .collect();
        names.sort();
        for p in names {
            match self.check(&p, opts, false) {
                Ok(a) => candidates.push((p, a)),
                Err(e) => {
                    let code = if let Error::Refused(c, _) = &e { *c } else { "io" };
                    self.dev.audit().record("refused", json!({"bundle": bundle::escape(&p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()), "reason": code, "message": e.to_string()}))?;
                    eprintln!("sideload: skipping {}: {e}", p.display());
                }
            }
        }
        candidates.sort_by(|a, b| version_cmp(&a.1.version, &b.1.version));
        while let Some((p, _)) = candidates.pop() {
            match self.install(&p, opts) {
                Ok(a) => return Ok(a),
                Err(e) => eprintln!("sideload: {} failed: {e}", p.display()),
            }
        }
        Err(Error::Refused("no-acceptable-bundle", format!("no acceptable bundle in {}", dir.display())))
    }

    pub fn status(&self) -> Result<serde_json::Value, Error> {
        let boot = self.dev.boot.state()?;
        Ok(json!({
            "product": self.dev.config.product,
            "channel": self.dev.config.channel,
            "booted": boot.booted.letter(),
            "default": boot.default.letter(),
            "trial": boot.trial.map(|t| json!({"slot": t.slot.letter(), "tries_left": t.tries_left})),
            "security_floor": self.state.security_floor,
            "slots": self.state.slots.iter().map(|(s, r)| (s.letter().to_string(), json!({
                "status": r.status, "version": r.version, "security_version": r.security_version, "manifest": r.manifest, "sha256": r.sha256, "size": r.size,
            }))).collect::<serde_json::Map<_, _>>(),
        }))
    }
}

/// Writes verified chunks into the slot on a second thread, so decompressing and hashing
/// overlap with the write; at most 4 chunks are in flight (memory stays constant). Then fsync.
fn stream_to_slot<R: Read>(
    p: &mut bundle::PayloadReader<'_, R>,
    mut out: File,
    path: &Path,
    chunk: usize,
) -> Result<(), Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<(), Error> {
            for buf in rx {
                out.write_all(&buf).map_err(|e| Error::io(path, e))?;
                let _ = back_tx.send(buf);
            }
            failpoint("before-sync");
            out.sync_all().map_err(|e| Error::io(path, e))
        });
        let mut first = true;
        let produced = (|| -> Result<(), Error> {
            loop {
                let mut buf = back_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(chunk));
                if !p.next_chunk(&mut buf)? {
                    return Ok(());
                }
                if tx.send(buf).is_err() {
                    return Ok(()); // the writer failed: its error is reported below
                }
                if first {
                    failpoint("mid-write");
                    first = false;
                }
            }
        })();
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| Err(Error::State("slot writer panicked".into())));
        produced.and(written)
    })
}

/// Reads the slot back and checks every chunk against its signed hash, on two threads.
fn read_back_matches(path: &Path, chunks: &[String], chunk: u64, size: u64) -> Result<bool, Error> {
    let check = |first: usize, step: usize| -> Result<bool, Error> {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut buf = vec![0u8; chunk as usize];
        for (i, want) in chunks.iter().enumerate().skip(first).step_by(step) {
            let start = i as u64 * chunk;
            let len = chunk.min(size - start) as usize;
            f.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, e))?;
            f.read_exact(&mut buf[..len]).map_err(|e| Error::io(path, e))?;
            if hex::encode(Sha256::digest(&buf[..len])) != *want {
                return Ok(false);
            }
        }
        Ok(true)
    };
    std::thread::scope(|s| {
        let other = s.spawn(|| check(1, 2));
        let mine = check(0, 2)?;
        let theirs = other.join().unwrap_or_else(|_| Err(Error::State("read-back thread panicked".into())))?;
        Ok(mine && theirs)
    })
}

/// Size of a slot: a file's length or a block device's size.
fn slot_len(p: &Path) -> Result<u64, Error> {
    let mut f = File::open(p).map_err(|e| Error::io(p, e))?;
    f.seek(SeekFrom::End(0)).map_err(|e| Error::io(p, e))
}

/// sha256 of the first `n` bytes of a slot (read-back check).
pub fn hash_prefix(p: &Path, n: u64) -> Result<(String, u64), Error> {
    let mut r = File::open(p).map_err(|e| Error::io(p, e))?.take(n);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(|e| Error::io(p, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        got += k as u64;
    }
    Ok((hex::encode(h.finalize()), got))
}

//! The agent: decisions from `decide.rs`, carried out. A mutating command holds the device
//! lock from start to end; it reconciles first, then acts. Each step's effects are ordered so
//! that a power cut between any two leaves a device that boots a verified slot: the boot
//! loader first (a slot leaves the rotation before a byte of it changes), then one commit of
//! the audit records and the state. Read-only commands (`status`, `verify`, `audit`) take no
//! lock and write nothing.
//!
//! Install order: verify the bundle (signatures first, then product, channel, security floor,
//! version) → take the inactive slot out of the rotation, record it as being written → stream
//! the payload, chunk by verified chunk, into that slot → fsync → whole-payload digest checked
//! → read back every chunk → record it written → arm a trial boot. `mark-good` blesses the slot
//! on trial that is booted, and only then raises the floor.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use bundle::escape;
use serde::Serialize;
use serde_json::{Value, json};

use crate::audit::{Event, Record, record};
use crate::boot::{BootState, Slot};
use crate::decide::{self, Candidate, InstallOptions, MarkGood, Refusal};
use crate::device::{Device, DeviceLock};
use crate::reason::Reason;
use crate::state::{self, AgentState, SlotRecord, SlotStatus};
use crate::{Error, failpoint, fsutil, slotio};

/// Most bundles on one stick that are kept open as candidates.
pub const MAX_CANDIDATES: usize = 64;

/// What an install (or a check) found acceptable. Every field was verified.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub bundle: String,
    pub version: String,
    pub security_version: u64,
    pub manifest: String,
    pub signers: Vec<String>,
    /// The slot it was (or would be) installed into.
    pub slot: String,
}

/// Reports the phases and bytes of an install (a progress bar on a terminal, one line per
/// phase in the journal).
pub trait Progress {
    fn phase(&mut self, what: &str);
    fn bytes(&mut self, done: u64, total: u64);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&mut self, _: &str) {}
    fn bytes(&mut self, _: u64, _: u64) {}
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        Error::Refused(r.0, r.1)
    }
}

/// The name of an untrusted path, escaped for messages.
pub fn shown(path: &Path) -> String {
    escape(&path.file_name().map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy()))
}

pub(crate) fn candidate<'a>(m: &'a bundle::Manifest, digest: &'a str) -> Candidate<'a> {
    let size_of = |t: bundle::Target| m.payloads.iter().find(|p| p.target == t).map(|p| p.size);
    // What the slot holds: the root filesystem, and the verity tree after it.
    let root_size = match (&m.verity, size_of(bundle::Target::Verity)) {
        (Some(v), Some(tree)) => v.hash_offset.saturating_add(tree),
        _ => size_of(bundle::Target::Root).unwrap_or(0),
    };
    Candidate {
        channel: m.channel,
        version: &m.version,
        security_version: m.security_version,
        root_size,
        manifest: digest,
        boot_files: decide::carries_boot_files(&m.payloads),
    }
}

/// Runs a host tool: `Ok(Err(stderr))` when it ran and failed, `Err` when it could not run.
pub(crate) fn run_tool(argv: &[&str]) -> Result<Result<(), String>, Error> {
    let o = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| Error::State(format!("{}: {e}", argv.join(" "))))?;
    if !o.status.success() {
        return Ok(Err(String::from_utf8_lossy(&o.stderr).trim().to_string()));
    }
    Ok(Ok(()))
}

/// What the slot an install would write (the one not booted) can take.
pub(crate) fn inactive_room(dev: &Device, boot: &BootState) -> Result<decide::Room, Error> {
    let p = dev.slots.get(&boot.booted.other()).ok_or_else(|| Error::State("no inactive slot".into()))?;
    Ok(decide::Room { size: slotio::slot_len(p)?, kernels: dev.slot_kernels })
}

/// What an install writes, decided from the verified manifest before anything changes.
struct Plan {
    target: Slot,
    slot_path: std::path::PathBuf,
    chunk_size: u64,
    root: bundle::Payload,
    /// The boot entry's command line (the bundle's, else the running image's).
    cmdline: Option<String>,
    /// The kernel's and initrd's signed digests, when the bundle carries them.
    kernel: Option<String>,
    initrd: Option<String>,
    /// The slot's signed dm-verity table, when the bundle carries a tree.
    verity: Option<bundle::Verity>,
}

/// The provenance statement comes first and is checked (its DSSE signatures against the
/// device's policy, its subject against the image) before anything changes: the envelope to
/// keep, when the bundle carries one.
fn read_provenance<R: Read>(
    vb: &mut bundle::VerifiedBundle<R>,
    progress: &mut dyn Progress,
) -> Result<Option<String>, Error> {
    if vb.manifest().payloads.first().map(|p| p.target) != Some(bundle::Target::Provenance) {
        return Ok(None);
    }
    progress.phase("checking the provenance statement");
    let mut buf = Vec::new();
    if let Some(mut p) = vb.next_payload()? {
        while p.next_chunk(&mut buf)? {}
    }
    let (env, _) = vb.provenance().ok_or_else(|| {
        Error::Refused(Reason::Bundle(bundle::Code::BadManifest), "the provenance was not read".into())
    })?;
    let mut text = serde_json::to_string_pretty(&env).map_err(|e| Error::State(e.to_string()))?;
    text.push('\n');
    Ok(Some(text))
}

fn accepted<R: Read>(name: &str, vb: &bundle::VerifiedBundle<R>, slot: Slot) -> Accepted {
    Accepted {
        bundle: name.to_string(),
        version: vb.manifest().version.to_string(),
        security_version: vb.manifest().security_version,
        manifest: vb.digest().to_string(),
        signers: vb
            .report()
            .signers()
            .iter()
            .filter(|s| s.verified())
            .filter_map(|s| s.key_id.map(|k| k.to_string()))
            .collect(),
        slot: slot.letter().to_string(),
    }
}

/// Opens an untrusted bundle path once; a path that is not a regular file is a refusal.
pub(crate) fn open_bundle(path: &Path) -> Result<File, Error> {
    match fsutil::open_regular(path)? {
        Ok(f) => Ok(f),
        Err(kind) => Err(Error::Refused(Reason::NotAFile, format!("{}: {kind}", shown(path)))),
    }
}

pub(crate) fn refusal_record(name: &str, e: &Error, action: &str) -> Record {
    let message: String = e.to_string().chars().take(1000).collect();
    record(Event::Refused, json!({"action": action, "bundle": name, "reason": e.code(), "message": escape(&message)}))
}

/// The agent holding the device: its state changes only through [`Agent::commit`] (the audit
/// records, then the state, each written whole), from the decisions of `decide.rs`.
pub struct Agent {
    dev: Device,
    state: AgentState,
    _lock: DeviceLock,
}

impl Agent {
    /// The device this agent holds.
    pub fn dev(&self) -> &Device {
        &self.dev
    }

    /// The device's state as last committed.
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// Takes the device (waiting up to `wait` for another agent), adopts the running slot on
    /// a first boot, and reconciles with the boot loader.
    pub fn open(dev: Device, wait: Duration) -> Result<Agent, Error> {
        let lock = dev.lock(wait)?;
        let stored = state::load(&dev.data)?;
        let state = match stored {
            Some(s) => s,
            None => {
                let booted = dev.boot.state()?.booted;
                let (mut s, rec) = decide::first_boot(&dev.config, booted).ok_or_else(|| {
                    Error::State(format!(
                        "{}: no agent state and the device config declares no version: initialise the device",
                        state::path(&dev.data).display()
                    ))
                })?;
                // The factory slot's boot entry and files are what the image itself says: its
                // command line and its own /boot (checked from now on, like every install's).
                if let (Some((kernel, initrd)), Some(cmdline)) = (&dev.own_boot, &dev.config.cmdline)
                    && let (Some(kernel), Some(initrd)) =
                        (crate::bootentry::digest(kernel)?, crate::bootentry::digest(initrd)?)
                    && let Some(r) = s.slots.get_mut(&booted)
                {
                    let cmdline = match &dev.own_verity {
                        Some(words) => format!("{words} {cmdline}"),
                        None => cmdline.clone(),
                    };
                    r.boot = Some(state::BootRecord { cmdline, kernel, initrd });
                }
                s.audit = dev.audit().append(&s.audit, &[rec])?;
                state::save(&dev.data, &s)?;
                s
            }
        };
        let mut agent = Agent { dev, state, _lock: lock };
        let plan = decide::reconcile(&agent.state, &agent.dev.boot.state()?);
        for s in &plan.cancel_trials {
            agent.dev.boot.cancel_trial(*s)?;
        }
        if let Some(next) = plan.state {
            agent.commit(next, &plan.records)?;
        }
        agent.check_integrity_notes()?;
        agent.check_boot()?;
        Ok(agent)
    }

    /// Records what the initrd left on the ESP when it refused a slot at boot (its blocks did
    /// not match the signed root hash), fails that slot, then clears the notes.
    fn check_integrity_notes(&mut self) -> Result<(), Error> {
        let Some(esp) = self.dev.esp.clone() else { return Ok(()) };
        let notes = crate::integrity::notes(&esp)?;
        if notes.is_empty() {
            return Ok(());
        }
        let plan = decide::integrity_failed(&self.state, &self.dev.boot.state()?, &notes);
        for s in &plan.cancel_trials {
            self.dev.boot.cancel_trial(*s)?;
        }
        self.commit(plan.state.unwrap_or_else(|| self.state.clone()), &plan.records)?;
        for (slot, _) in &notes {
            crate::integrity::clear(&esp, *slot)?;
        }
        Ok(())
    }

    /// Checks every installed slot's boot entry and boot files on the ESP against what was
    /// recorded when they were written (an ESP anyone with the disk can edit): an edited or
    /// missing entry is written again whole; a kernel or initrd that is not the one installed
    /// is put back from the running image for the booted slot, and takes the other slot out
    /// of the rotation (it cannot be put back: nothing else holds it). Each finding is audited.
    fn check_boot(&mut self) -> Result<(), Error> {
        use crate::bootentry::{self, Finding};
        let Some(esp) = self.dev.esp.clone() else { return Ok(()) };
        let booted = self.dev.boot.state()?.booted;
        let mut next = self.state.clone();
        let mut records = Vec::new();
        for slot in Slot::ALL {
            let rec = self.state.slot(slot);
            let Some(b) = rec.boot.clone().filter(|_| matches!(rec.status, SlotStatus::Good | SlotStatus::Written))
            else {
                continue;
            };
            match bootentry::check(&esp, slot, &b)? {
                Finding::Intact => {}
                Finding::Missing => {
                    bootentry::write(&esp, slot, &b.cmdline)?;
                    records.push(record(Event::BootEntryRestored, json!({"slot": slot.letter(), "missing": true})));
                }
                Finding::Edited(found) => {
                    bootentry::write(&esp, slot, &b.cmdline)?;
                    let shown: Vec<String> =
                        found.iter().take(8).map(|l| escape(&l.chars().take(200).collect::<String>())).collect();
                    records.push(record(Event::BootEntryRestored, json!({"slot": slot.letter(), "found": shown})));
                }
                Finding::FileDiffers(file) => {
                    let restored = slot == booted && self.restore_own_boot_files(&esp, slot, &b)?;
                    if restored {
                        records.push(record(Event::BootFilesRestored, json!({"slot": slot.letter(), "file": file})));
                    } else if slot != booted {
                        self.dev.boot.cancel_trial(slot)?;
                        next.set_status(slot, SlotStatus::Failed);
                        records.push(record(
                            Event::BootFilesTampered,
                            json!({"slot": slot.letter(), "file": file, "action": "taken out of the rotation"}),
                        ));
                    } else {
                        records.push(record(
                            Event::BootFilesTampered,
                            json!({"slot": slot.letter(), "file": file, "action": "none: the running image has no copy"}),
                        ));
                    }
                }
            }
        }
        if !records.is_empty() {
            self.commit(next, &records)?;
        }
        Ok(())
    }

    /// Puts the booted slot's kernel and initrd back on the ESP from the running image's own
    /// `/boot`, when those are the ones recorded.
    fn restore_own_boot_files(&self, esp: &Path, slot: Slot, b: &state::BootRecord) -> Result<bool, Error> {
        let Some((kernel, initrd)) = self.dev.own_boot.clone() else { return Ok(false) };
        let dir = esp.join(slot.letter());
        for (src, name, want) in
            [(&kernel, crate::bootentry::KERNEL, &b.kernel), (&initrd, crate::bootentry::INITRD, &b.initrd)]
        {
            if crate::bootentry::digest(src)?.as_ref() != Some(want) {
                return Ok(false);
            }
            let bytes = fs::read(src).map_err(|e| Error::io(src, e))?;
            fsutil::write_atomic(&dir.join(name), &bytes)?;
        }
        Ok(true)
    }

    /// Writes the audit records, then the state (with the new audit head), atomically each.
    pub(crate) fn commit(&mut self, mut next: AgentState, records: &[Record]) -> Result<(), Error> {
        if !records.is_empty() {
            next.audit = self.dev.audit().append(&self.state.audit, records)?;
        }
        if next != self.state {
            state::save(&self.dev.data, &next)?;
            self.state = next;
        }
        Ok(())
    }

    /// Records a refusal; a slot left half-written is recorded empty in the same commit.
    pub(crate) fn refused(&mut self, name: &str, e: &Error, action: &str) -> Result<(), Error> {
        let mut next = self.state.clone();
        for s in Slot::ALL {
            if next.slot(s).status == SlotStatus::Writing {
                next.set(s, SlotRecord::empty());
            }
        }
        self.commit(next, &[refusal_record(name, e, action)])
    }

    fn slot_path(&self, s: Slot) -> Result<std::path::PathBuf, Error> {
        self.dev.slots.get(&s).cloned().ok_or_else(|| Error::State(format!("no slot {}", s.letter())))
    }

    /// Verifies and installs the bundle at `path` into the inactive slot, then arms a trial.
    pub fn install(
        &mut self,
        path: &Path,
        opts: InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<Accepted, Error> {
        let name = shown(path);
        let r = open_bundle(path).and_then(|f| self.install_file(&f, &name, opts, progress));
        if let Err(e) = &r {
            self.refused(&name, e, "install")?;
        }
        r
    }

    /// An install, as its named steps: each one's effects ordered so that a power cut
    /// between any two leaves a device that boots a verified slot.
    pub(crate) fn install_file(
        &mut self,
        file: &File,
        name: &str,
        opts: InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<Accepted, Error> {
        failpoint("verify");
        progress.phase(&format!("verifying {name}"));
        let (mut vb, target) = self.open_acceptable(file, opts)?;
        let acc = accepted(name, &vb, target);
        let plan = self.plan(&vb, target)?;
        let evidence = read_provenance(&mut vb, progress)?;
        self.begin_writing(&acc, &plan)?;
        failpoint("accepted");
        progress.phase(&format!("writing {} into slot {}", acc.version, target.letter()));
        let boot_files = self.write_payloads(&mut vb, &plan, progress)?;
        // The end marker, then nothing: the bundle read whole and checked.
        vb.finish()?;
        let boot_record = self.write_boot_entry(&plan, boot_files, progress)?;
        if let Some(text) = &evidence {
            crate::evidence::keep(&self.dev, target, text)?;
        }
        failpoint("after-sync");
        progress.phase("reading the slot back");
        if !slotio::read_back_matches(&plan.slot_path, &plan.root.chunks, plan.chunk_size, plan.root.size)? {
            return Err(Error::Refused(
                Reason::ReadbackMismatch,
                format!("slot {} reads back differently from what was written", target.letter()),
            ));
        }
        self.check_verity(&plan, progress)?;
        self.record_installed(&acc, &plan, boot_files, boot_record, evidence.is_some())?;
        failpoint("before-arm");
        self.arm(target, progress)?;
        Ok(acc)
    }

    /// Verifies the bundle (signatures first) and decides whether this device takes it, and
    /// into which slot. Writes nothing.
    fn open_acceptable<'f>(
        &self,
        file: &'f File,
        opts: InstallOptions,
    ) -> Result<(bundle::VerifiedBundle<BufReader<&'f File>>, Slot), Error> {
        let boot = self.dev.boot.state()?;
        let expect = trust::Expect { product: Some(&self.dev.config.product), version: None };
        let vb = bundle::open(BufReader::with_capacity(1 << 20, file), &self.dev.policy, expect)?;
        let room = inactive_room(&self.dev, &boot)?;
        let target = decide::acceptable(
            &self.state,
            &boot,
            &self.dev.config,
            &candidate(vb.manifest(), vb.digest()),
            room,
            opts,
        )?;
        Ok((vb, target))
    }

    /// What the install will write, from the verified manifest: the root payload, the slot,
    /// and the boot entry's command line and files. Writes nothing.
    fn plan<R: Read>(&self, vb: &bundle::VerifiedBundle<R>, target: Slot) -> Result<Plan, Error> {
        let m = vb.manifest();
        // The slot's boot entry is written whole from the signed bundle's command line (or,
        // for a bundle of an older format, the running image's own): a device whose boot
        // entries the agent writes needs one of them before anything changes.
        if self.dev.config.verity && m.verity.is_none() {
            return Err(Error::Refused(
                Reason::UnverifiedSlot,
                format!(
                    "this device boots only dm-verity slots, and this bundle (format {}) carries no verity tree: install a bundle made by a builder of bundle format 4 or later",
                    m.format
                ),
            ));
        }
        // The slot's root hash goes into its boot entry from the signed table, never from a
        // command line (a bundle's cannot hold it).
        let cmdline = m
            .cmdline
            .clone()
            .or_else(|| self.dev.config.cmdline.clone())
            .map(|c| bundle::slot_cmdline(m.verity.as_ref(), &c));
        if self.dev.slot_kernels && self.dev.sim_root.is_none() && cmdline.is_none() {
            return Err(Error::Refused(
                Reason::Bundle(bundle::Code::BadManifest),
                "no kernel command line for the slot's boot entry: the bundle (format 3) and this image's device.toml carry none".into(),
            ));
        }
        let digest_of = |t: bundle::Target| m.payloads.iter().find(|p| p.target == t).map(|p| p.sha256.clone());
        let root = m
            .payloads
            .iter()
            .find(|p| p.target == bundle::Target::Root)
            .cloned()
            .ok_or_else(|| Error::Refused(Reason::Bundle(bundle::Code::BadManifest), "no root payload".into()))?;
        Ok(Plan {
            target,
            slot_path: self.slot_path(target)?,
            chunk_size: m.chunk_size,
            root,
            cmdline,
            kernel: digest_of(bundle::Target::Kernel),
            initrd: digest_of(bundle::Target::Initrd),
            verity: m.verity.clone(),
        })
    }

    /// The slot leaves the boot rotation before a byte of it changes, its evidence goes with
    /// the image it described, and it is recorded as being written (with the `accepted` record).
    fn begin_writing(&mut self, acc: &Accepted, plan: &Plan) -> Result<(), Error> {
        self.dev.boot.cancel_trial(plan.target)?;
        crate::evidence::forget(&self.dev, plan.target)?;
        if let Some(esp) = &self.dev.esp {
            // What the initrd said of the slot's old contents no longer holds.
            crate::integrity::clear(esp, plan.target)?;
        }
        let mut next = self.state.clone();
        next.set(
            plan.target,
            SlotRecord {
                status: SlotStatus::Writing,
                version: acc.version.clone(),
                security_version: acc.security_version,
                manifest: acc.manifest.clone(),
                sha256: plan.root.sha256.clone(),
                size: plan.root.size,
                boot: None,
            },
        );
        let fields = json!({"bundle": acc.bundle, "version": acc.version, "security_version": acc.security_version, "manifest": acc.manifest, "signers": acc.signers, "slot": plan.target.letter()});
        self.commit(next, &[record(Event::Accepted, fields)])
    }

    /// Streams the root payload into the slot, chunk by verified chunk, then each boot file
    /// to the ESP (replaced atomically once every byte of it matched). Returns how many boot
    /// files were written.
    fn write_payloads<R: Read>(
        &self,
        vb: &mut bundle::VerifiedBundle<R>,
        plan: &Plan,
        progress: &mut dyn Progress,
    ) -> Result<u32, Error> {
        let out = OpenOptions::new().write(true).open(&plan.slot_path).map_err(|e| Error::io(&plan.slot_path, e))?;
        failpoint("write-start");
        let mut p = vb.next_payload()?.ok_or_else(|| {
            Error::Refused(Reason::Bundle(bundle::Code::BadManifest), "the root payload is missing".into())
        })?;
        let total = p.payload.size;
        slotio::stream_to_slot(&mut p, out, &plan.slot_path, plan.chunk_size as usize, &mut |done| {
            progress.bytes(done, total)
        })?;
        let mut boot_files = 0u32;
        while let Some(mut other) = vb.next_payload()? {
            let name = match (bundle::kind(other.payload.target).placement, &plan.verity) {
                (bundle::Placement::Esp(name), _) => name,
                (bundle::Placement::SlotTree, Some(v)) => {
                    progress.phase(&format!("writing slot {}'s dm-verity tree", plan.target.letter()));
                    let mut out = OpenOptions::new()
                        .write(true)
                        .open(&plan.slot_path)
                        .map_err(|e| Error::io(&plan.slot_path, e))?;
                    out.seek(SeekFrom::Start(v.hash_offset)).map_err(|e| Error::io(&plan.slot_path, e))?;
                    slotio::stream_to_slot(&mut other, out, &plan.slot_path, plan.chunk_size as usize, &mut |_| {})?;
                    continue;
                }
                _ => {
                    return Err(Error::Refused(
                        Reason::Bundle(bundle::Code::BadManifest),
                        format!("a second {:?} payload", other.payload.target),
                    ));
                }
            };
            match &self.dev.esp {
                Some(esp) => {
                    progress.phase(&format!("writing slot {}'s {name}", plan.target.letter()));
                    slotio::write_boot_file(&mut other, &esp.join(plan.target.letter()), name)?;
                    boot_files += 1;
                }
                None => {
                    let mut buf = Vec::new();
                    while other.next_chunk(&mut buf)? {}
                }
            }
        }
        Ok(boot_files)
    }

    /// Both boot files written: the slot's whole entry, from the plan's command line, and the
    /// record of it with the files' digests.
    fn write_boot_entry(
        &self,
        plan: &Plan,
        boot_files: u32,
        progress: &mut dyn Progress,
    ) -> Result<Option<state::BootRecord>, Error> {
        let (Some(esp), Some(cmdline), Some(kernel), Some(initrd)) =
            (&self.dev.esp, plan.cmdline.clone(), plan.kernel.clone(), plan.initrd.clone())
        else {
            return Ok(None);
        };
        if boot_files != 2 {
            return Ok(None);
        }
        progress.phase(&format!("writing slot {}'s boot entry", plan.target.letter()));
        crate::bootentry::write(esp, plan.target, &cmdline)?;
        Ok(Some(state::BootRecord { cmdline, kernel, initrd }))
    }

    /// The slot as written, every block of it and its tree, against the signed root hash:
    /// what the initrd will open it with. A slot that does not match is never armed.
    fn check_verity(&self, plan: &Plan, progress: &mut dyn Progress) -> Result<(), Error> {
        let Some(v) = &plan.verity else { return Ok(()) };
        progress.phase(&format!("checking slot {} against its dm-verity root hash", plan.target.letter()));
        crate::integrity::verify_slot(&plan.slot_path, v)?.map_err(|why| {
            Error::Refused(
                Reason::VerityMismatch,
                format!(
                    "slot {} does not match the signed dm-verity root hash {}: {}",
                    plan.target.letter(),
                    v.root_hash,
                    escape(&why)
                ),
            )
        })
    }

    /// The slot written and read back: recorded with its boot entry (the `installed` record).
    fn record_installed(
        &mut self,
        acc: &Accepted,
        plan: &Plan,
        boot_files: u32,
        boot_record: Option<state::BootRecord>,
        provenance: bool,
    ) -> Result<(), Error> {
        let mut next = self.state.clone();
        next.set_status(plan.target, SlotStatus::Written);
        let entry_written = boot_record.is_some();
        if let Some(r) = next.slots.get_mut(&plan.target) {
            r.boot = boot_record;
        }
        let fields = json!({"slot": plan.target.letter(), "version": acc.version, "sha256": plan.root.sha256, "size": plan.root.size, "boot_files": boot_files, "boot_entry": entry_written, "provenance": provenance});
        self.commit(next, &[record(Event::Installed, fields)])
    }

    /// Arms the slot's trial boot (the `trial-armed` record).
    fn arm(&mut self, target: Slot, progress: &mut dyn Progress) -> Result<(), Error> {
        let tries = self.dev.config.tries;
        self.dev.boot.arm_trial(target, tries)?;
        self.commit(
            self.state.clone(),
            &[record(Event::TrialArmed, json!({"slot": target.letter(), "tries": tries}))],
        )?;
        failpoint("after-arm");
        progress.phase(&format!("trial boot of slot {} armed ({tries} tries)", target.letter()));
        Ok(())
    }

    /// Records this boot (run once per boot, early, by `airlock-boot.service`): which slot the
    /// boot loader started and whether it is on trial. Opening the agent has already
    /// reconciled (an interrupted install, a fallback, a bless cut short are recorded first).
    pub fn booted(&mut self) -> Result<String, Error> {
        let boot = self.dev.boot.state()?;
        let s = boot.booted;
        let rec = self.state.slot(s);
        // `on_trial` already means the trial is the booted slot's.
        let trial = boot.trial.filter(|_| boot.on_trial());
        let fields = json!({"slot": s.letter(), "version": rec.version, "status": rec.status, "trial": trial.is_some(), "tries_left": trial.map(|t| t.tries_left)});
        self.commit(self.state.clone(), &[record(Event::Booted, fields)])?;
        Ok(match trial {
            Some(t) => format!("booted slot {} ({}) on trial, {} tries left", s.letter(), rec.version, t.tries_left),
            None => format!("booted slot {} ({}, {})", s.letter(), rec.version, rec.status.as_str()),
        })
    }

    /// The health check failed (`airlock-health`, after its timeout): recorded. `true` when the
    /// booted slot is on its trial boot: then a reboot counts the try down, and the boot loader
    /// falls back once the tries run out.
    pub fn health_failed(&mut self) -> Result<bool, Error> {
        let boot = self.dev.boot.state()?;
        let s = boot.booted;
        let on_trial = boot.on_trial();
        let rec = self.state.slot(s);
        let tries_left = boot.trial.filter(|t| t.slot == s).map(|t| t.tries_left);
        let fields =
            json!({"slot": s.letter(), "version": rec.version, "on_trial": on_trial, "tries_left": tries_left});
        self.commit(self.state.clone(), &[record(Event::HealthFailed, fields)])?;
        Ok(on_trial)
    }

    /// The health check passed on a trial boot: blesses the booted slot, then raises the floor.
    pub fn mark_good(&mut self) -> Result<String, Error> {
        let boot = self.dev.boot.state()?;
        match decide::mark_good(&self.state, &boot) {
            Ok(MarkGood::AlreadyGood(s)) => {
                Ok(format!("slot {} ({}) is already good", s.letter(), self.state.slot(s).version))
            }
            Ok(MarkGood::Bless(s)) => {
                self.dev.boot.bless(s)?;
                failpoint("mid-bless");
                let next = decide::blessed(&self.state, s);
                let floor = next.security_floor;
                let version = next.slot(s).version;
                self.commit(
                    next,
                    &[record(Event::Blessed, json!({"slot": s.letter(), "version": version, "security_floor": floor}))],
                )?;
                Ok(format!("slot {} ({version}) blessed; security floor {floor}", s.letter()))
            }
            Err(r) => {
                let e = Error::from(r);
                self.refused("", &e, "mark-good")?;
                Err(e)
            }
        }
    }

    /// Makes the other slot the default again (good, not below the floor); a trial of the
    /// booted slot is cancelled and recorded as failed, so a later `mark-good` cannot undo it.
    pub fn rollback(&mut self) -> Result<String, Error> {
        let boot = self.dev.boot.state()?;
        let r = match decide::rollback(&self.state, &boot) {
            Ok(r) => r,
            Err(r) => {
                let e = Error::from(r);
                self.refused("", &e, "rollback")?;
                return Err(e);
            }
        };
        self.dev.boot.bless(r.to)?;
        let mut next = self.state.clone();
        if let Some(s) = r.cancels_trial_of {
            self.dev.boot.cancel_trial(s)?;
            next.set_status(s, SlotStatus::Failed);
        }
        let version = self.state.slot(r.to).version;
        let fields =
            json!({"slot": r.to.letter(), "version": version, "cancelled_trial": r.cancels_trial_of.map(Slot::letter)});
        self.commit(next, &[record(Event::RolledBack, fields)])?;
        Ok(format!("slot {} ({version}) is the default from the next boot", r.to.letter()))
    }
}

/// What a read-only command sees: nothing is written and no lock is taken.
pub struct View {
    pub boot: BootState,
    /// The state as it will be once reconciled (or as stored, while another agent works).
    pub state: Option<AgentState>,
    /// The pid of an agent working right now.
    pub busy: Option<String>,
    /// What the next mutating command will record when it reconciles.
    pub pending: Vec<String>,
    /// The root hash the booted slot was opened with through dm-verity (none: not verified).
    pub verity: Option<String>,
}

pub fn view(dev: &Device) -> Result<View, Error> {
    let boot = dev.boot.state()?;
    let busy = dev.busy();
    let stored = state::load(&dev.data)?;
    let mut pending = Vec::new();
    let state = match stored {
        Some(s) if busy.is_some() => Some(s),
        Some(s) => {
            let plan = decide::reconcile(&s, &boot);
            pending.extend(plan.records.iter().map(|r| r.0.clone()));
            Some(plan.state.unwrap_or(s))
        }
        None => decide::first_boot(&dev.config, boot.booted).map(|(s, r)| {
            pending.push(r.0);
            s
        }),
    };
    let verity = dev
        .own_verity
        .as_deref()
        .and_then(|w| w.split(' ').find_map(|w| w.strip_prefix(bundle::ROOTHASH_WORD)).map(escape));
    Ok(View { boot, state, busy, pending, verity })
}

/// `verify`: the whole bundle (signatures, every payload chunk, the end), then whether this
/// device would accept it now. Read-only.
pub fn verify(
    dev: &Device,
    path: &Path,
    policy_label: &str,
    opts: InstallOptions,
) -> Result<bundle::VerifyReport, Error> {
    let name = shown(path);
    let file = match open_bundle(path) {
        Ok(f) => f,
        Err(Error::Refused(r, m)) => {
            let mut report = bundle::VerifyReport::new(&name, policy_label, &dev.policy);
            report.refuse(r.as_str(), &m);
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let expect = trust::Expect { product: Some(&dev.config.product), version: None };
    let (mut report, manifest) =
        bundle::verify_stream(BufReader::with_capacity(1 << 20, &file), &name, policy_label, &dev.policy, expect);
    if let Some(m) = manifest {
        let digest = report.bundle.as_ref().map(|b| b.manifest.clone()).unwrap_or_default();
        let v = view(dev)?;
        if let Some(state) = &v.state
            && let Err(r) = decide::acceptable(
                state,
                &v.boot,
                &dev.config,
                &candidate(&m, &digest),
                inactive_room(dev, &v.boot)?,
                opts,
            )
        {
            report.refuse(r.0.as_str(), &r.1);
        }
    }
    Ok(report)
}

/// The last audit records, newest last (for `status`).
pub fn recent(dev: &Device, n: usize) -> Vec<Value> {
    dev.audit().last(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::run_tool;

    #[test]
    fn a_host_tool_that_fails_is_told_from_one_that_succeeds_and_one_that_cannot_run() {
        assert_eq!(run_tool(&["true"]).unwrap(), Ok(()));
        assert_eq!(run_tool(&["sh", "-c", "echo 'no such unit' >&2; exit 5"]).unwrap(), Err("no such unit".into()));
        let e = run_tool(&["/nonexistent/systemctl", "reload"]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/systemctl reload"), "{e}");
    }
}

//! The agent's decisions as pure functions of (state, boot state, device config, manifest):
//! none of them reads or writes anything. Each returns what to do; `agent.rs` does it, as
//! one ordered set of effects (boot loader, then state and audit in one commit). Table-tested
//! in this file without a disk, in the manner of Bottlerocket's signpost.

use product::Version;
use serde_json::json;

use crate::audit::{Event, Record, record};
use crate::boot::{BootState, Slot};
use crate::config::DeviceConfig;
use crate::reason::Reason;
use crate::state::{AgentState, SlotRecord, SlotStatus};

/// A refusal: its reason and the message an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub Reason, pub String);

/// What reconciling the state with the boot loader decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Slots to take out of the boot loader's rotation first.
    pub cancel_trials: Vec<Slot>,
    /// The state to write, if it changes.
    pub state: Option<AgentState>,
    pub records: Vec<Record>,
}

/// Brings the state in line with what the boot loader did while the agent was not running:
/// a write cut short is discarded; a bless the boot loader made but the agent did not record
/// is completed (and the floor raised); a trial that ran out is recorded as fallen back.
/// Does not write to the disk.
pub fn reconcile(state: &AgentState, boot: &BootState) -> Plan {
    let mut s = state.clone();
    let mut plan = Plan::default();
    for slot in Slot::ALL {
        let rec = state.slot(slot);
        let l = slot.letter();
        match rec.status {
            SlotStatus::Writing if boot.booted != slot => {
                plan.cancel_trials.push(slot);
                s.set(slot, SlotRecord::empty());
                plan.records.push(record(
                    Event::Interrupted,
                    json!({"slot": l, "version": rec.version, "reason": "install cut short; slot discarded"}),
                ));
            }
            SlotStatus::Written if boot.default == slot && boot.trial.is_none() => {
                s.set_status(slot, SlotStatus::Good);
                s.security_floor = s.security_floor.max(rec.security_version);
                plan.records.push(record(
                    Event::Blessed,
                    json!({"slot": l, "version": rec.version, "security_floor": s.security_floor, "recovered": true}),
                ));
            }
            SlotStatus::Written if boot.booted != slot && boot.trial.is_some_and(|t| t.slot == slot && t.ran_out()) => {
                plan.cancel_trials.push(slot);
                s.set_status(slot, SlotStatus::Failed);
                plan.records.push(record(
                    Event::FellBack,
                    json!({"slot": l, "version": rec.version, "booted": boot.booted.letter(), "reason": "the trial boot never passed its health check: the boot loader went back to the blessed slot"}),
                ));
            }
            _ => {}
        }
    }
    if s != *state {
        plan.state = Some(s);
    }
    plan
}

/// The initrd refused these slots at boot (their blocks did not match the signed dm-verity
/// root hash; `notes` is what it said of each): each one not booted now is failed and out of
/// the rotation, recorded with the initrd's reason. A note of the slot that is booted (it
/// was refused once, then booted verified) is recorded and changes nothing.
pub fn integrity_failed(state: &AgentState, boot: &BootState, notes: &[(Slot, String)]) -> Plan {
    let mut s = state.clone();
    let mut plan = Plan::default();
    for (slot, said) in notes {
        let rec = state.slot(*slot);
        let refused = *slot != boot.booted;
        if refused {
            plan.cancel_trials.push(*slot);
            if rec.status != SlotStatus::Empty {
                s.set_status(*slot, SlotStatus::Failed);
            }
        }
        let action = if refused {
            "the slot failed its dm-verity check at boot: out of the rotation, the other slot booted"
        } else {
            "none: the slot booted verified since"
        };
        plan.records.push(record(
            Event::IntegrityFailed,
            json!({"slot": slot.letter(), "version": rec.version, "reason": said, "booted": boot.booted.letter(), "action": action}),
        ));
    }
    if s != *state {
        plan.state = Some(s);
    }
    plan
}

/// A device's first start: no state yet. The running slot is adopted as good, with the
/// version its image declares. `None` when the image declares no version.
pub fn first_boot(config: &DeviceConfig, booted: Slot) -> Option<(AgentState, Record)> {
    let version = config.version.as_ref()?;
    let sv = config.security_version?;
    let mut state = AgentState {
        security_floor: sv,
        slots: Default::default(),
        audit: Default::default(),
        site: None,
        site_serials: Default::default(),
    };
    state.set(
        booted,
        SlotRecord {
            status: SlotStatus::Good,
            version: version.to_string(),
            security_version: sv,
            manifest: String::new(),
            sha256: String::new(),
            size: 0,
            boot: None,
        },
    );
    state.set(booted.other(), SlotRecord::empty());
    let rec = record(
        Event::Initialised,
        json!({"slot": booted.letter(), "version": version.to_string(), "security_version": sv, "first_boot": true}),
    );
    Some((state, rec))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    pub reinstall: bool,
    pub downgrade: bool,
}

/// What a verified manifest asks for, as far as acceptance goes.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub channel: product::Channel,
    pub version: &'a Version,
    pub security_version: u64,
    /// Uncompressed size of the root payload.
    pub root_size: u64,
    /// `sha256:…` of the signed manifest.
    pub manifest: &'a str,
    /// Carries both a kernel and an initrd ([`carries_boot_files`]).
    pub boot_files: bool,
}

/// What the slot an install would write can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Its size in bytes.
    pub size: u64,
    /// It boots its own kernel and initrd (always on the appliance): a bundle must carry both.
    pub kernels: bool,
}

/// Whether a verified bundle may be installed now, and into which slot. Does not write.
pub fn acceptable(
    state: &AgentState,
    boot: &BootState,
    config: &DeviceConfig,
    m: &Candidate<'_>,
    room: Room,
    opts: InstallOptions,
) -> Result<Slot, Refusal> {
    if boot.booted != boot.default || boot.on_trial() {
        return Err(Refusal(
            Reason::TrialInProgress,
            format!(
                "slot {} is on a trial boot: it is blessed once its health check passes (`sideload mark-good`), or a reboot falls back",
                boot.booted.letter()
            ),
        ));
    }
    if m.channel != config.channel {
        return Err(Refusal(
            Reason::WrongChannel,
            format!("bundle is for channel `{}`, this device follows `{}`", m.channel, config.channel),
        ));
    }
    if m.security_version < state.security_floor {
        return Err(Refusal(
            Reason::Rollback,
            format!("security_version {} is below this device's floor {}", m.security_version, state.security_floor),
        ));
    }
    if !opts.reinstall
        && let Some(s) = Slot::ALL.iter().find(|s| {
            let r = state.slot(**s);
            r.status == SlotStatus::Failed && !r.manifest.is_empty() && r.manifest == m.manifest
        })
    {
        return Err(Refusal(
            Reason::FailedBefore,
            format!(
                "version {} already failed its trial boot on this device (slot {}): not installed again (use --reinstall to try it once more)",
                m.version,
                s.letter()
            ),
        ));
    }
    let running = state.slot(boot.booted);
    // A running slot with no recorded version (never happens after first boot) orders first.
    if let Ok(current) = Version::parse(&running.version) {
        match m.version.cmp(&current) {
            std::cmp::Ordering::Equal if !opts.reinstall => {
                return Err(Refusal(
                    Reason::SameVersion,
                    format!("version {} is already running (use --reinstall)", m.version),
                ));
            }
            std::cmp::Ordering::Less if !opts.downgrade => {
                return Err(Refusal(
                    Reason::OlderVersion,
                    format!(
                        "version {} is older than the running {} (use --downgrade; the security floor still applies)",
                        m.version, current
                    ),
                ));
            }
            _ => {}
        }
    }
    let target = boot.booted.other();
    if m.root_size > room.size {
        return Err(Refusal(
            Reason::TooLargeForSlot,
            format!("payload root.img is {} bytes, slot {} holds {}", m.root_size, target.letter(), room.size),
        ));
    }
    // With the root alone, the new root would come up on the kernel of the image it replaced.
    if room.kernels && !m.boot_files {
        return Err(Refusal(
            Reason::Bundle(bundle::Code::BadManifest),
            "this appliance boots each slot's own kernel and initrd: the bundle must carry both (vmlinuz and initrd.img)"
                .into(),
        ));
    }
    Ok(target)
}

/// Whether a bundle's payloads include both boot files (a kernel and an initrd), which a slot
/// that boots its own kernel needs ([`Room::kernels`]).
pub fn carries_boot_files(payloads: &[bundle::Payload]) -> bool {
    bundle::boot_files().all(|k| payloads.iter().any(|p| p.target == k.target))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkGood {
    /// Nothing to do: the booted slot is already the blessed default.
    AlreadyGood(Slot),
    /// Bless the booted slot (on its trial), then raise the floor.
    Bless(Slot),
}

/// `mark-good`: only the slot on trial that is actually booted is blessed, so an operator's
/// rollback during a trial stands. Does not write.
pub fn mark_good(state: &AgentState, boot: &BootState) -> Result<MarkGood, Refusal> {
    let s = boot.booted;
    let rec = state.slot(s);
    if rec.status == SlotStatus::Good && boot.default == s {
        return Ok(MarkGood::AlreadyGood(s));
    }
    if !boot.on_trial() || rec.status != SlotStatus::Written {
        return Err(Refusal(
            Reason::NotOnTrial,
            format!(
                "slot {} ({}) is not on a trial boot: an operator rolled back from it, or it was never armed; nothing to bless",
                s.letter(),
                rec.status.as_str()
            ),
        ));
    }
    Ok(MarkGood::Bless(s))
}

/// The state after a bless of `s`: good, and the floor raised to its security version.
pub fn blessed(state: &AgentState, s: Slot) -> AgentState {
    let mut next = state.clone();
    let sv = state.slot(s).security_version;
    next.set_status(s, SlotStatus::Good);
    next.security_floor = next.security_floor.max(sv);
    next
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollback {
    /// The slot that becomes the default.
    pub to: Slot,
    /// The booted slot's trial, cancelled by the rollback (it is recorded as failed).
    pub cancels_trial_of: Option<Slot>,
}

/// `rollback`: the other slot becomes the default again, if it is good and not below the
/// floor. During a trial, the trial is cancelled. Does not write.
pub fn rollback(state: &AgentState, boot: &BootState) -> Result<Rollback, Refusal> {
    let other = boot.booted.other();
    let rec = state.slot(other);
    if rec.status != SlotStatus::Good {
        return Err(Refusal(
            Reason::NoGoodSlot,
            format!("slot {} is {}: nothing good to roll back to", other.letter(), rec.status.as_str()),
        ));
    }
    if rec.security_version < state.security_floor {
        return Err(Refusal(
            Reason::Rollback,
            format!(
                "slot {} has security_version {}, below the floor {}",
                other.letter(),
                rec.security_version,
                state.security_floor
            ),
        ));
    }
    let cancels = (boot.on_trial() && state.slot(boot.booted).status == SlotStatus::Written).then_some(boot.booted);
    Ok(Rollback { to: other, cancels_trial_of: cancels })
}

/// What installing a verified site profile means for this box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteChange {
    /// The same bytes are in force already: nothing to do.
    AlreadyInForce,
    /// A newer profile of the box's own site, or its first profile.
    Install,
    /// An explicit re-siting signed by the owner: the box leaves `from` for the profile's site.
    Resite { from: String },
}

/// `install-site`: may this verified profile (`site`, `serial`, `resite_from`, bytes digest)
/// replace the one in force? A box knows its site once its first profile is in force: a
/// profile of another site is refused unless it names the site the box leaves; the serial
/// grows per site, and a site's serial never repeats, even after the box left it and came
/// back (an old re-siting replayed is refused). Does not write.
pub fn site_change(
    state: &AgentState,
    site: &str,
    serial: u64,
    resite_from: Option<&str>,
    digest: &str,
) -> Result<SiteChange, Refusal> {
    let Some(cur) = &state.site else { return Ok(SiteChange::Install) };
    if cur.digest == digest {
        return Ok(SiteChange::AlreadyInForce);
    }
    let change = match resite_from {
        None if site == cur.site => SiteChange::Install,
        None => {
            return Err(Refusal(
                Reason::WrongSite,
                format!(
                    "site profile is for site `{site}`, and this box is at site `{}` (its profile in force, serial {}): a profile of another site is refused, unless the asset owner signs a re-siting (`resite_from = \"{}\"` in the profile)",
                    cur.site, cur.serial, cur.site
                ),
            ));
        }
        Some(from) if from == cur.site => SiteChange::Resite { from: from.to_string() },
        Some(from) => {
            return Err(Refusal(
                Reason::WrongSite,
                format!(
                    "site profile re-sites a box from `{from}` to `{site}`, and this box is at site `{}`: it is not the box that profile moves",
                    cur.site
                ),
            ));
        }
    };
    let seen = state.site_serials.get(site).copied().unwrap_or(0).max(if site == cur.site { cur.serial } else { 0 });
    if serial <= seen {
        return Err(Refusal(
            Reason::SiteRollback,
            format!(
                "site profile serial {serial} is not newer than serial {seen} this box already had for site {site}: a profile is replaced only by a newer one"
            ),
        ));
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::type_complexity)]
    use product::Channel;

    use super::*;
    use crate::boot::Trial;

    fn rec(status: SlotStatus, version: &str, sv: u64) -> SlotRecord {
        SlotRecord {
            status,
            version: version.into(),
            security_version: sv,
            manifest: String::new(),
            sha256: "ab".into(),
            size: 1,
            boot: None,
        }
    }

    fn state(a: SlotRecord, b: SlotRecord, floor: u64) -> AgentState {
        let mut s = AgentState {
            security_floor: floor,
            site_serials: Default::default(),
            slots: Default::default(),
            audit: Default::default(),
            site: None,
        };
        s.set(Slot::A, a);
        s.set(Slot::B, b);
        s
    }

    fn boot(booted: Slot, default: Slot, trial: Option<(Slot, u32, u32)>) -> BootState {
        BootState {
            booted,
            default,
            trial: trial.map(|(slot, tries_left, tries_done)| Trial { slot, tries_left, tries_done }),
        }
    }

    fn config() -> DeviceConfig {
        DeviceConfig {
            product: "p".into(),
            channel: Channel::Release,
            tries: 3,
            version: None,
            security_version: None,
            cmdline: None,
            verity: false,
        }
    }

    use SlotStatus::*;

    /// A slot of 1000 bytes that boots with the kernel of the image it holds (no boot files
    /// needed): the acceptance table's other rows.
    const ROOM: Room = Room { size: 1000, kernels: false };

    /// A release-channel candidate of security version 2 (manifest `sha256:m`).
    fn release_2(version: &Version, root_size: u64, boot_files: bool) -> Candidate<'_> {
        Candidate {
            channel: Channel::Release,
            version,
            security_version: 2,
            root_size,
            manifest: "sha256:m",
            boot_files,
        }
    }

    #[test]
    fn reconcile_table() {
        let good_a = rec(Good, "1.0.0", 1);
        // (state of b, boot state) -> (b afterwards, floor afterwards, cancelled, event)
        let cases: Vec<(SlotRecord, BootState, SlotStatus, u64, Vec<Slot>, Option<&str>)> = vec![
            // A write cut short: discarded, out of the rotation.
            (rec(Writing, "2.0.0", 2), boot(Slot::A, Slot::A, None), Empty, 1, vec![Slot::B], Some("interrupted")),
            // Written and armed, not yet booted: nothing to do.
            (rec(Written, "2.0.0", 2), boot(Slot::A, Slot::A, Some((Slot::B, 3, 0))), Written, 1, vec![], None),
            // Written, booted on trial: waits for mark-good.
            (rec(Written, "2.0.0", 2), boot(Slot::B, Slot::A, Some((Slot::B, 2, 1))), Written, 1, vec![], None),
            // The boot loader blessed it, the agent was cut off: completed, floor raised.
            (rec(Written, "2.0.0", 2), boot(Slot::B, Slot::B, None), Good, 2, vec![], Some("blessed")),
            // Out of tries, back on a: fell back, floor unchanged.
            (
                rec(Written, "2.0.0", 2),
                boot(Slot::A, Slot::A, Some((Slot::B, 0, 3))),
                Failed,
                1,
                vec![Slot::B],
                Some("fell-back"),
            ),
            // Written but never armed (cut before arming): left for a retry.
            (rec(Written, "2.0.0", 2), boot(Slot::A, Slot::A, None), Written, 1, vec![], None),
            // A slot recorded as being written is never discarded while it is the one running.
            (rec(Writing, "2.0.0", 2), boot(Slot::B, Slot::A, None), Writing, 1, vec![], None),
            // Good, failed, empty slots: nothing.
            (rec(Good, "2.0.0", 2), boot(Slot::A, Slot::A, None), Good, 1, vec![], None),
            (rec(Failed, "2.0.0", 2), boot(Slot::A, Slot::A, None), Failed, 1, vec![], None),
            (SlotRecord::empty(), boot(Slot::A, Slot::A, None), Empty, 1, vec![], None),
        ];
        for (i, (b, bs, want_b, want_floor, want_cancel, want_event)) in cases.into_iter().enumerate() {
            let before = state(good_a.clone(), b, 1);
            let plan = reconcile(&before, &bs);
            let after = plan.state.clone().unwrap_or_else(|| before.clone());
            assert_eq!(after.slot(Slot::B).status, want_b, "case {i}");
            assert_eq!(after.security_floor, want_floor, "case {i}");
            assert_eq!(after.slot(Slot::A), good_a, "case {i}: the running slot never changes");
            assert_eq!(plan.cancel_trials, want_cancel, "case {i}");
            assert_eq!(plan.records.first().map(|r| r.0.as_str()), want_event, "case {i}");
            assert_eq!(plan.state.is_some(), want_event.is_some(), "case {i}: a state write only with a record");
        }
    }

    #[test]
    fn an_appliance_takes_only_a_bundle_with_both_boot_files() {
        use bundle::Target::{Initrd, Kernel, Provenance, Root};
        let of = |targets: &[bundle::Target]| -> Vec<bundle::Payload> {
            targets
                .iter()
                .map(|t| bundle::Payload {
                    name: format!("{t:?}"),
                    target: *t,
                    compression: "zstd".into(),
                    size: 1,
                    compressed_size: 1,
                    sha256: String::new(),
                    chunks: vec![],
                })
                .collect()
        };
        let (s, idle, o) = (
            state(rec(Good, "1.0.0", 1), SlotRecord::empty(), 1),
            boot(Slot::A, Slot::A, None),
            InstallOptions::default(),
        );
        let ver = Version::parse("2.0.0").unwrap();
        for (targets, needs, ok) in [
            (&[Root, Kernel, Initrd][..], true, true),
            (&[Provenance, Root, Kernel, Initrd][..], true, true),
            (&[Root, Initrd, Kernel][..], true, true),
            (&[Root][..], true, false),
            (&[Root, Kernel][..], true, false),
            (&[Root, Initrd][..], true, false),
            (&[Provenance, Root][..], true, false),
            (&[][..], true, false),
            (&[Root][..], false, true),
            (&[Root, Kernel][..], false, true),
            (&[Root, Kernel, Initrd][..], false, true),
        ] {
            let both = carries_boot_files(&of(targets));
            assert_eq!(both, targets.contains(&Kernel) && targets.contains(&Initrd), "{targets:?}");
            let c = release_2(&ver, 100, both);
            let r = acceptable(&s, &idle, &config(), &c, Room { size: 1000, kernels: needs }, o);
            assert_eq!(r.is_ok(), ok, "{targets:?} on a device that needs boot files: {needs}: {r:?}");
            if let Err(Refusal(reason, msg)) = r {
                assert_eq!(reason, Reason::Bundle(bundle::Code::BadManifest));
                assert!(msg.contains("vmlinuz and initrd.img"), "{msg}");
            }
        }
        // Every other refusal comes first: a bundle too large for the slot says so.
        let big = release_2(&ver, 1001, false);
        let r = acceptable(&s, &idle, &config(), &big, Room { size: 1000, kernels: true }, o);
        assert_eq!(r.unwrap_err().0, Reason::TooLargeForSlot);
    }

    #[test]
    fn acceptance_table() {
        let s = state(rec(Good, "1.0.0", 1), SlotRecord::empty(), 1);
        let v = |x: &str| Version::parse(x).unwrap();
        let idle = boot(Slot::A, Slot::A, None);
        let o = InstallOptions::default();
        let reinstall = InstallOptions { reinstall: true, downgrade: false };
        let downgrade = InstallOptions { reinstall: false, downgrade: true };
        let cases: Vec<(&str, u64, Channel, BootState, InstallOptions, Result<Slot, Reason>)> = vec![
            ("2.0.0", 2, Channel::Release, idle.clone(), o, Ok(Slot::B)),
            ("1.0.1", 1, Channel::Release, idle.clone(), o, Ok(Slot::B)),
            ("2.0.0", 2, Channel::Dev, idle.clone(), o, Err(Reason::WrongChannel)),
            ("2.0.0", 0, Channel::Release, idle.clone(), o, Err(Reason::Rollback)),
            ("0.9.0", 0, Channel::Release, idle.clone(), downgrade, Err(Reason::Rollback)),
            ("1.0.0", 1, Channel::Release, idle.clone(), o, Err(Reason::SameVersion)),
            ("1.0.0", 1, Channel::Release, idle.clone(), reinstall, Ok(Slot::B)),
            ("0.9.0", 1, Channel::Release, idle.clone(), o, Err(Reason::OlderVersion)),
            ("0.9.0", 1, Channel::Release, idle.clone(), downgrade, Ok(Slot::B)),
            // Pre-releases of the running version are older, in either spelling.
            ("1.0.0~rc1", 1, Channel::Release, idle.clone(), o, Err(Reason::OlderVersion)),
            ("1.0.0-rc1", 1, Channel::Release, idle.clone(), o, Err(Reason::OlderVersion)),
            ("1.1.0~rc1", 1, Channel::Release, idle.clone(), o, Ok(Slot::B)),
            // A trial boot in progress refuses everything.
            (
                "2.0.0",
                2,
                Channel::Release,
                boot(Slot::B, Slot::A, Some((Slot::B, 2, 1))),
                o,
                Err(Reason::TrialInProgress),
            ),
            // So does a running slot that is not the blessed default, trial or no trial (picked
            // by hand from the boot menu): the slot to write would be the blessed one.
            ("2.0.0", 2, Channel::Release, boot(Slot::B, Slot::A, None), o, Err(Reason::TrialInProgress)),
            // A trial armed but not yet booted: the running blessed slot may still take another.
            ("2.0.0", 2, Channel::Release, boot(Slot::A, Slot::A, Some((Slot::B, 3, 0))), o, Ok(Slot::B)),
        ];
        let ver = v("2.0.0");
        let big = release_2(&ver, 1001, true);
        assert_eq!(acceptable(&s, &idle, &config(), &big, ROOM, o).unwrap_err().0, Reason::TooLargeForSlot);
        // The bundle that already failed its trial here is not installed again, unless asked.
        let mut failed = s.clone();
        failed.set(Slot::B, SlotRecord { status: Failed, manifest: "sha256:m".into(), ..rec(Failed, "2.0.0", 2) });
        let again = release_2(&ver, 100, true);
        assert_eq!(acceptable(&failed, &idle, &config(), &again, ROOM, o).unwrap_err().0, Reason::FailedBefore);
        assert_eq!(acceptable(&failed, &idle, &config(), &again, ROOM, reinstall), Ok(Slot::B));
        let other = Candidate { manifest: "sha256:other", ..again };
        assert_eq!(acceptable(&failed, &idle, &config(), &other, ROOM, o), Ok(Slot::B));
        for (version, sv, channel, bs, opts, want) in cases {
            let ver = v(version);
            let c = Candidate {
                channel,
                version: &ver,
                security_version: sv,
                root_size: 100,
                manifest: "sha256:m",
                boot_files: true,
            };
            let got = acceptable(&s, &bs, &config(), &c, ROOM, opts).map_err(|r| r.0);
            assert_eq!(got, want, "{version} sv {sv} {channel} {bs:?}");
        }
    }

    #[test]
    fn mark_good_blesses_only_the_booted_slot_on_trial() {
        let s = state(rec(Good, "1.0.0", 1), rec(Written, "2.0.0", 2), 1);
        assert_eq!(mark_good(&s, &boot(Slot::B, Slot::A, Some((Slot::B, 2, 1)))), Ok(MarkGood::Bless(Slot::B)));
        // Armed but booted from a: not b's health check.
        assert_eq!(mark_good(&s, &boot(Slot::A, Slot::A, Some((Slot::B, 3, 0)))), Ok(MarkGood::AlreadyGood(Slot::A)));
        // An operator rolled back during the trial: the trial is gone; b is not blessed.
        assert_eq!(mark_good(&s, &boot(Slot::B, Slot::A, None)).unwrap_err().0, Reason::NotOnTrial);
        // Good and the default: nothing to do.
        let good = state(rec(Good, "1.0.0", 1), rec(Good, "2.0.0", 2), 2);
        assert_eq!(mark_good(&good, &boot(Slot::B, Slot::B, None)), Ok(MarkGood::AlreadyGood(Slot::B)));
        // Good but rolled away from: refused.
        assert_eq!(mark_good(&good, &boot(Slot::B, Slot::A, None)).unwrap_err().0, Reason::NotOnTrial);
        let after = blessed(&s, Slot::B);
        assert_eq!((after.slot(Slot::B).status, after.security_floor), (Good, 2));
    }

    #[test]
    fn rollback_table() {
        let trial = boot(Slot::B, Slot::A, Some((Slot::B, 2, 1)));
        let s = state(rec(Good, "1.0.0", 1), rec(Written, "2.0.0", 2), 1);
        assert_eq!(rollback(&s, &trial), Ok(Rollback { to: Slot::A, cancels_trial_of: Some(Slot::B) }));
        let both = state(rec(Good, "1.0.0", 1), rec(Good, "2.0.0", 2), 1);
        assert_eq!(
            rollback(&both, &boot(Slot::B, Slot::B, None)),
            Ok(Rollback { to: Slot::A, cancels_trial_of: None })
        );
        let floor = state(rec(Good, "1.0.0", 1), rec(Good, "2.0.0", 2), 2);
        assert_eq!(rollback(&floor, &boot(Slot::B, Slot::B, None)).unwrap_err().0, Reason::Rollback);
        let empty = state(rec(Good, "1.0.0", 1), SlotRecord::empty(), 1);
        assert_eq!(rollback(&empty, &boot(Slot::A, Slot::A, None)).unwrap_err().0, Reason::NoGoodSlot);
        // Only a trial of a slot still being tried is cancelled (and so recorded as failed):
        // not a written slot started by hand with no trial, not a good slot on a trial.
        assert_eq!(rollback(&s, &boot(Slot::B, Slot::A, None)), Ok(Rollback { to: Slot::A, cancels_trial_of: None }));
        assert_eq!(rollback(&both, &trial), Ok(Rollback { to: Slot::A, cancels_trial_of: None }));
    }
}

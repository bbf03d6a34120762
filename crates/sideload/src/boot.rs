//! The boot loader's view of the slots, behind one interface with two implementations: a
//! boot-state file for the simulated device (`--root DIR`), and systemd-boot Boot Loader
//! Specification entries with boot counting (`slot-b+3.conf`) on a real ESP.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::fsutil::write_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }
}

/// A slot armed for a trial boot: boots it has left, and boots it already used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub slot: Slot,
    pub tries_left: u32,
    #[serde(default)]
    pub tries_done: u32,
}

impl Trial {
    /// Tried and out of tries: the boot loader fell back.
    pub fn ran_out(&self) -> bool {
        self.tries_left == 0 && self.tries_done > 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootState {
    /// The slot this boot came from.
    pub booted: Slot,
    /// The blessed slot the boot loader falls back to.
    pub default: Slot,
    /// A trial that is armed, running, or ran out (never one that was cancelled).
    pub trial: Option<Trial>,
}

impl BootState {
    /// The slot the next boot starts: a trial with tries left, else the default.
    pub fn next(&self) -> Slot {
        match self.trial {
            Some(t) if t.tries_left > 0 => t.slot,
            _ => self.default,
        }
    }

    /// The booted slot is on its trial boot.
    pub fn on_trial(&self) -> bool {
        self.trial.is_some_and(|t| t.slot == self.booted) && self.default != self.booted
    }
}

pub trait BootControl {
    fn state(&self) -> Result<BootState, Error>;
    /// Makes `slot` the next boot, `tries` times at most, then back to the default.
    fn arm_trial(&mut self, slot: Slot, tries: u32) -> Result<(), Error>;
    /// Makes `slot` the default (ahead of every other blessed slot) and ends any trial.
    fn bless(&mut self, slot: Slot) -> Result<(), Error>;
    /// Takes `slot` out of the rotation (before its contents are overwritten, or when an
    /// operator rolls back from it).
    fn cancel_trial(&mut self, slot: Slot) -> Result<(), Error>;
}

/// The simulated boot loader: one TOML file, written atomically.
pub struct SimBoot {
    pub path: PathBuf,
}

impl SimBoot {
    fn write(&self, s: &BootState) -> Result<(), Error> {
        let text = toml::to_string(s).map_err(|e| Error::State(e.to_string()))?;
        write_atomic(&self.path, text.as_bytes())
    }

    pub fn init(path: &Path, slot: Slot) -> Result<SimBoot, Error> {
        let b = SimBoot { path: path.to_path_buf() };
        b.write(&BootState { booted: slot, default: slot, trial: None })?;
        Ok(b)
    }

    /// What the firmware and boot loader do at power-on: a trial slot with tries left boots
    /// (and loses a try); otherwise the default boots.
    pub fn power_on(&mut self) -> Result<BootState, Error> {
        let mut s = self.state()?;
        match &mut s.trial {
            Some(t) if t.tries_left > 0 => {
                t.tries_left -= 1;
                t.tries_done += 1;
                s.booted = t.slot;
            }
            _ => s.booted = s.default,
        }
        self.write(&s)?;
        Ok(s)
    }
}

impl BootControl for SimBoot {
    fn state(&self) -> Result<BootState, Error> {
        let text = fs::read_to_string(&self.path).map_err(|e| Error::io(&self.path, e))?;
        toml::from_str(&text).map_err(|e| Error::State(format!("{}: {}", self.path.display(), e.message().trim())))
    }
    fn arm_trial(&mut self, slot: Slot, tries: u32) -> Result<(), Error> {
        let mut s = self.state()?;
        s.trial = Some(Trial { slot, tries_left: tries, tries_done: 0 });
        self.write(&s)
    }
    fn bless(&mut self, slot: Slot) -> Result<(), Error> {
        let mut s = self.state()?;
        s.default = slot;
        s.trial = None;
        self.write(&s)
    }
    fn cancel_trial(&mut self, slot: Slot) -> Result<(), Error> {
        let mut s = self.state()?;
        if s.trial.is_some_and(|t| t.slot == slot) {
            s.trial = None;
            self.write(&s)?;
        }
        Ok(())
    }
}

/// systemd-boot on a real ESP: one Boot Loader Specification entry per slot,
/// `loader/entries/slot-a.conf` (blessed) or `slot-b+LEFT[-DONE].conf` (counting), all with the
/// same `sort-key` so that systemd-boot orders them by `version`, newest first, after moving
/// entries with no tries left to the end (FIELD-NOTES.md: no `default` line, which would stop
/// the fallback). Arming or blessing a slot gives its entry the highest version.
pub struct Bls {
    pub entries: PathBuf,
    /// The booted slot, from the kernel command line (`root=PARTLABEL=root-X`).
    pub booted: Slot,
}

struct Entry {
    slot: Slot,
    file: PathBuf,
    counter: Option<(u32, u32)>,
    text: String,
}

/// Largest boot entry read.
const MAX_ENTRY: u64 = 16 * 1024;

impl Bls {
    fn entries(&self) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.entries).map_err(|e| Error::io(&self.entries, e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io(&self.entries, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_prefix("slot-").and_then(|n| n.strip_suffix(".conf")) else { continue };
            let (letter, counter) = match stem.split_once('+') {
                None => (stem, None),
                Some((l, c)) => {
                    let (left, done) = c.split_once('-').unwrap_or((c, "0"));
                    let parse = |s: &str| {
                        s.parse::<u32>()
                            .map_err(|_| Error::State(format!("boot entry {}: bad counter", bundle::escape(&name))))
                    };
                    (l, Some((parse(left)?, parse(done)?)))
                }
            };
            let Some(slot) = Slot::parse(letter) else { continue };
            if out.iter().any(|o: &Entry| o.slot == slot) {
                return Err(Error::State(format!(
                    "two boot entries for slot {} in {}: remove the stale one",
                    slot.letter(),
                    self.entries.display()
                )));
            }
            let path = e.path();
            if fs::metadata(&path).map_err(|err| Error::io(&path, err))?.len() > MAX_ENTRY {
                return Err(Error::State(format!("boot entry {} is larger than 16 KiB", path.display())));
            }
            let text = fs::read_to_string(&path).map_err(|err| Error::io(&path, err))?;
            out.push(Entry { slot, file: path, counter, text });
        }
        out.sort_by_key(|e| e.slot);
        Ok(out)
    }

    fn entry(&self, slot: Slot) -> Result<Entry, Error> {
        self.entries()?.into_iter().find(|e| e.slot == slot).ok_or_else(|| {
            Error::State(format!("no boot entry for slot {} in {}", slot.letter(), self.entries.display()))
        })
    }

    fn version_of(text: &str) -> u64 {
        text.lines().find_map(|l| l.strip_prefix("version ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    /// The entry text with `version V` and `sort-key airlock` (every other line kept).
    fn with_version(text: &str, v: u64) -> String {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("version ") && !l.starts_with("sort-key "))
            .map(str::to_string)
            .collect();
        let at = 1.min(lines.len());
        lines.insert(at, format!("version {v}"));
        lines.insert(at, "sort-key airlock".to_string());
        lines.join("\n") + "\n"
    }

    /// The highest version among the other slots' entries.
    fn top_other(&self, slot: Slot) -> Result<u64, Error> {
        Ok(self.entries()?.iter().filter(|e| e.slot != slot).map(|e| Self::version_of(&e.text)).max().unwrap_or(0))
    }

    fn rewrite(&self, e: &Entry, counter: Option<(u32, u32)>, version: u64) -> Result<(), Error> {
        let name = match counter {
            None => format!("slot-{}.conf", e.slot.letter()),
            Some((left, 0)) => format!("slot-{}+{left}.conf", e.slot.letter()),
            Some((left, done)) => format!("slot-{}+{left}-{done}.conf", e.slot.letter()),
        };
        let dest = self.entries.join(name);
        write_atomic(&dest, Self::with_version(&e.text, version).as_bytes())?;
        if dest != e.file {
            fs::remove_file(&e.file).map_err(|err| Error::io(&e.file, err))?;
            crate::fsutil::fsync_dir(&self.entries)?;
        }
        Ok(())
    }
}

impl BootControl for Bls {
    fn state(&self) -> Result<BootState, Error> {
        let entries = self.entries()?;
        // `+0` with no try done is an entry taken out of the rotation, not a trial.
        let trial = entries.iter().find_map(|e| match e.counter {
            Some((left, done)) if left > 0 || done > 0 => {
                Some(Trial { slot: e.slot, tries_left: left, tries_done: done })
            }
            _ => None,
        });
        let default = entries
            .iter()
            .filter(|e| e.counter.is_none())
            .max_by_key(|e| Self::version_of(&e.text))
            .map_or(self.booted, |e| e.slot);
        Ok(BootState { booted: self.booted, default, trial })
    }
    fn arm_trial(&mut self, slot: Slot, tries: u32) -> Result<(), Error> {
        let top = self.top_other(slot)?;
        let e = self.entry(slot)?;
        self.rewrite(&e, Some((tries, 0)), top + 1)
    }
    fn bless(&mut self, slot: Slot) -> Result<(), Error> {
        let top = self.top_other(slot)?;
        let e = self.entry(slot)?;
        self.rewrite(&e, None, top.max(Self::version_of(&e.text).saturating_sub(1)) + 1)?;
        // Any other slot still counting tries leaves the rotation: the blessed one boots next.
        for other in self.entries()?.into_iter().filter(|o| o.slot != slot && o.counter.is_some_and(|(l, _)| l > 0)) {
            let v = Self::version_of(&other.text);
            self.rewrite(&other, Some((0, 0)), v)?;
        }
        Ok(())
    }
    fn cancel_trial(&mut self, slot: Slot) -> Result<(), Error> {
        // Zero tries left: systemd-boot sorts it last and never picks it while a slot with
        // tries (or a blessed one) exists.
        let e = self.entry(slot)?;
        let v = Self::version_of(&e.text);
        self.rewrite(&e, Some((0, 0)), v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    fn esp() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("slot-a.conf"),
            "title Airlock slot a\nsort-key airlock\nversion 1\nlinux /a/vmlinuz\noptions root=PARTLABEL=root-a ro\n",
        )
        .unwrap();
        fs::write(
            d.path().join("slot-b+0.conf"),
            "title Airlock slot b\nsort-key airlock\nversion 0\nlinux /b/vmlinuz\noptions root=PARTLABEL=root-b ro\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn bls_entries_follow_boot_counting() {
        let d = esp();
        let e = d.path();
        let mut bls = Bls { entries: e.to_path_buf(), booted: Slot::A };
        assert_eq!(bls.state().unwrap(), BootState { booted: Slot::A, default: Slot::A, trial: None });

        // Armed with 3 tries and a version above every other entry: systemd-boot tries it first.
        bls.cancel_trial(Slot::B).unwrap();
        assert_eq!(names(e), ["slot-a.conf", "slot-b+0.conf"]);
        bls.arm_trial(Slot::B, 3).unwrap();
        assert_eq!(names(e), ["slot-a.conf", "slot-b+3.conf"]);
        let b = fs::read_to_string(e.join("slot-b+3.conf")).unwrap();
        assert!(b.contains("sort-key airlock\nversion 2\n"), "{b}");
        assert_eq!(bls.state().unwrap().trial, Some(Trial { slot: Slot::B, tries_left: 3, tries_done: 0 }));

        // systemd-boot counts one try down when it boots the entry.
        fs::rename(e.join("slot-b+3.conf"), e.join("slot-b+2-1.conf")).unwrap();
        let mut bls = Bls { entries: e.to_path_buf(), booted: Slot::B };
        assert!(bls.state().unwrap().on_trial());

        // Blessed: the counter goes, and the newer blessed entry is the default.
        bls.bless(Slot::B).unwrap();
        assert_eq!(names(e), ["slot-a.conf", "slot-b.conf"]);
        assert_eq!(bls.state().unwrap(), BootState { booted: Slot::B, default: Slot::B, trial: None });

        // Rolling back blesses A above B.
        bls.bless(Slot::A).unwrap();
        assert_eq!(bls.state().unwrap().default, Slot::A);
        assert!(fs::read_to_string(e.join("slot-a.conf")).unwrap().contains("version 3\n"));
    }

    #[test]
    fn a_trial_that_ran_out_is_told_from_one_that_was_cancelled() {
        let d = esp();
        let e = d.path();
        fs::rename(e.join("slot-b+0.conf"), e.join("slot-b+0-3.conf")).unwrap();
        let bls = Bls { entries: e.to_path_buf(), booted: Slot::A };
        let t = bls.state().unwrap().trial.unwrap();
        assert!(t.ran_out());
        fs::rename(e.join("slot-b+0-3.conf"), e.join("slot-b+0.conf")).unwrap();
        assert_eq!(bls.state().unwrap().trial, None);
    }

    #[test]
    fn blessing_one_slot_ends_the_other_slots_trial() {
        let d = esp();
        let e = d.path();
        let mut bls = Bls { entries: e.to_path_buf(), booted: Slot::A };
        bls.arm_trial(Slot::B, 3).unwrap();
        fs::rename(e.join("slot-b+3.conf"), e.join("slot-b+2-1.conf")).unwrap();
        let mut bls = Bls { entries: e.to_path_buf(), booted: Slot::B };
        bls.bless(Slot::A).unwrap();
        assert_eq!(names(e), ["slot-a.conf", "slot-b+0.conf"]);
        assert_eq!(bls.state().unwrap().next(), Slot::A);
    }

    #[test]
    fn boot_entries_are_read_strictly_and_bounded() {
        let d = esp();
        let e = d.path();
        let bls = Bls { entries: e.to_path_buf(), booted: Slot::A };
        // Not slot entries: ignored.
        for n in ["loader.conf", "slot-c.conf", "slot-a.conf.bak", "other-a.conf"] {
            fs::write(e.join(n), "title x\n").unwrap();
        }
        assert_eq!(bls.state().unwrap(), BootState { booted: Slot::A, default: Slot::A, trial: None });
        // A second entry for one slot.
        fs::write(e.join("slot-a+1.conf"), "title a\n").unwrap();
        let err = bls.state().unwrap_err().to_string();
        assert!(err.contains("two boot entries for slot a"), "{err}");
        fs::remove_file(e.join("slot-a+1.conf")).unwrap();
        // Counters that are not numbers.
        for bad in ["slot-b+x.conf", "slot-b+1-y.conf", "slot-b+-1.conf"] {
            fs::rename(
                fs::read_dir(e)
                    .unwrap()
                    .map(|x| x.unwrap().path())
                    .find(|p| p.to_string_lossy().contains("slot-b"))
                    .unwrap(),
                e.join(bad),
            )
            .unwrap();
            let err = bls.state().unwrap_err().to_string();
            assert!(err.contains("bad counter"), "{bad}: {err}");
        }
        fs::rename(e.join("slot-b+-1.conf"), e.join("slot-b+0.conf")).unwrap();
        // An entry of 16 KiB is read; one byte more is refused.
        let a = fs::read_to_string(e.join("slot-a.conf")).unwrap();
        let padded = |n: usize| format!("{a}#{}\n", "x".repeat(n - a.len() - 2));
        fs::write(e.join("slot-a.conf"), padded(16 * 1024)).unwrap();
        assert_eq!(bls.state().unwrap().default, Slot::A);
        fs::write(e.join("slot-a.conf"), padded(16 * 1024 + 1)).unwrap();
        let err = bls.state().unwrap_err().to_string();
        assert!(err.contains("larger than 16 KiB"), "{err}");
        // A slot with no entry at all.
        fs::write(e.join("slot-a.conf"), &a).unwrap();
        fs::remove_file(e.join("slot-b+0.conf")).unwrap();
        let mut bls = bls;
        let err = bls.arm_trial(Slot::B, 3).unwrap_err().to_string();
        assert!(err.contains("no boot entry for slot b"), "{err}");
    }

    #[test]
    fn an_entry_is_rewritten_with_its_counter_in_its_name_and_its_version_after_its_title() {
        assert_eq!(
            Bls::with_version("title T\nlinux /a/vmlinuz\n", 7),
            "title T\nsort-key airlock\nversion 7\nlinux /a/vmlinuz\n"
        );
        assert_eq!(
            Bls::with_version("title T\nversion 3\nsort-key other\noptions ro\n", 9),
            "title T\nsort-key airlock\nversion 9\noptions ro\n"
        );
        assert_eq!(Bls::with_version("", 1), "sort-key airlock\nversion 1\n");
        assert_eq!((Bls::version_of("title\nversion 12\n"), Bls::version_of("title\n")), (12, 0));

        let d = esp();
        let e = d.path();
        let mut bls = Bls { entries: e.to_path_buf(), booted: Slot::A };
        bls.arm_trial(Slot::B, 2).unwrap();
        fs::rename(e.join("slot-b+2.conf"), e.join("slot-b+1-1.conf")).unwrap();
        assert_eq!(bls.state().unwrap().trial, Some(Trial { slot: Slot::B, tries_left: 1, tries_done: 1 }));
        // Taken out of the rotation: zero tries, none done, its version kept.
        bls.cancel_trial(Slot::B).unwrap();
        assert_eq!(names(e), ["slot-a.conf", "slot-b+0.conf"]);
        assert!(fs::read_to_string(e.join("slot-b+0.conf")).unwrap().contains("version 2\n"));
        assert_eq!(bls.state().unwrap().trial, None);
        // A trial that ran out stays as it is when the other slot is blessed.
        fs::rename(e.join("slot-b+0.conf"), e.join("slot-b+0-2.conf")).unwrap();
        bls.bless(Slot::A).unwrap();
        assert_eq!(names(e), ["slot-a.conf", "slot-b+0-2.conf"]);
        assert!(fs::read_to_string(e.join("slot-a.conf")).unwrap().contains("version 3\n"));
        // With no blessed entry left, the default is the booted slot.
        fs::rename(e.join("slot-a.conf"), e.join("slot-a+0.conf")).unwrap();
        let bls = Bls { entries: e.to_path_buf(), booted: Slot::B };
        assert_eq!(bls.state().unwrap().default, Slot::B);
    }

    #[test]
    fn a_trial_has_run_out_only_when_it_was_tried_and_has_no_try_left() {
        for (left, done, out) in [(0, 3, true), (0, 1, true), (0, 0, false), (2, 1, false), (3, 0, false)] {
            assert_eq!(Trial { slot: Slot::B, tries_left: left, tries_done: done }.ran_out(), out, "{left}-{done}");
        }
    }

    #[test]
    fn the_next_boot_is_a_trial_with_tries_left_else_the_default() {
        let trial = |left, done| Some(Trial { slot: Slot::B, tries_left: left, tries_done: done });
        for (t, next) in [(None, Slot::A), (trial(3, 0), Slot::B), (trial(1, 2), Slot::B), (trial(0, 3), Slot::A)] {
            let s = BootState { booted: Slot::A, default: Slot::A, trial: t };
            assert_eq!(s.next(), next, "{t:?}");
        }
        // On trial: booted from the trial's slot, which is not (yet) the default.
        for (booted, default, t, on) in [
            (Slot::B, Slot::A, trial(2, 1), true),
            (Slot::B, Slot::A, trial(0, 3), true),
            (Slot::A, Slot::A, trial(2, 1), false),
            (Slot::B, Slot::B, trial(2, 1), false),
            (Slot::B, Slot::A, None, false),
        ] {
            assert_eq!(BootState { booted, default, trial: t }.on_trial(), on, "{booted:?} {default:?} {t:?}");
        }
    }

    #[test]
    fn the_simulated_boot_loader_falls_back_when_tries_run_out() {
        let d = tempfile::tempdir().unwrap();
        let mut b = SimBoot::init(&d.path().join("state.toml"), Slot::A).unwrap();
        b.arm_trial(Slot::B, 2).unwrap();
        assert_eq!(b.power_on().unwrap().booted, Slot::B);
        assert_eq!(b.power_on().unwrap().booted, Slot::B);
        let s = b.power_on().unwrap();
        assert_eq!((s.booted, s.trial), (Slot::A, Some(Trial { slot: Slot::B, tries_left: 0, tries_done: 2 })));
        assert!(s.trial.unwrap().ran_out());
    }
}

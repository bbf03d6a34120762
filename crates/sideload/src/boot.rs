//! The boot loader's view of the slots, behind one interface with two implementations: a
//! boot-state file for the simulated device (`--root DIR`), and systemd-boot Boot Loader
//! Specification entries with boot counting (`slot-b+3.conf`) on a real ESP.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::fsutil::write_atomic;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
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

/// A slot armed for a trial boot, and how many boots it has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub slot: Slot,
    pub tries_left: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootState {
    /// The slot this boot came from.
    pub booted: Slot,
    /// The blessed slot the boot loader falls back to.
    pub default: Slot,
    pub trial: Option<Trial>,
}

pub trait BootControl {
    fn state(&self) -> Result<BootState, Error>;
    /// Makes `slot` the next boot, `tries` times at most, then back to the default.
    fn arm_trial(&mut self, slot: Slot, tries: u32) -> Result<(), Error>;
    /// Makes `slot` the default and ends its trial.
    fn bless(&mut self, slot: Slot) -> Result<(), Error>;
    /// Takes `slot` out of any trial (before its contents are overwritten).
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

    /// What the boot loader does at power-on: a trial slot with tries left boots (and loses a
    /// try); otherwise the default boots.
    pub fn power_on(&mut self) -> Result<BootState, Error> {
        let mut s = self.state()?;
        match &mut s.trial {
            Some(t) if t.tries_left > 0 => {
                t.tries_left -= 1;
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
        toml::from_str(&text).map_err(|e| Error::State(format!("{}: {e}", self.path.display())))
    }
    fn arm_trial(&mut self, slot: Slot, tries: u32) -> Result<(), Error> {
        let mut s = self.state()?;
        s.trial = Some(Trial { slot, tries_left: tries });
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

/// systemd-boot on a real ESP: `loader/entries/slot-a.conf` (blessed) and
/// `slot-b+TRIES.conf` / `slot-b+LEFT-DONE.conf` (counting). No `default` line: systemd-boot
/// prefers entries with tries left and sorts by version, so the trial entry gets a higher
/// version; when its tries run out it sorts last and the blessed entry boots (FIELD-NOTES.md).
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
                    let parse =
                        |s: &str| s.parse::<u32>().map_err(|_| Error::State(format!("boot entry {name}: bad counter")));
                    (l, Some((parse(left)?, parse(done)?)))
                }
            };
            let Some(slot) = Slot::parse(letter) else { continue };
            let text = fs::read_to_string(e.path()).map_err(|err| Error::io(&e.path(), err))?;
            out.push(Entry { slot, file: e.path(), counter, text });
        }
        out.sort_by_key(|e| e.slot);
        Ok(out)
    }

    fn entry(&self, slot: Slot) -> Result<Entry, Error> {
        self.entries()?
            .into_iter()
            .find(|e| e.slot == slot)
            .ok_or_else(|| Error::State(format!("no boot entry for slot {}", slot.letter())))
    }

    fn version_of(text: &str) -> u64 {
        text.lines().find_map(|l| l.strip_prefix("version ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    fn with_version(text: &str, v: u64) -> String {
        let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with("version ")).map(str::to_string).collect();
        lines.insert(1.min(lines.len()), format!("version {v}"));
        lines.join("\n") + "\n"
    }

    fn rewrite(&self, e: &Entry, counter: Option<(u32, u32)>, version: Option<u64>) -> Result<(), Error> {
        let name = match counter {
            None => format!("slot-{}.conf", e.slot.letter()),
            Some((left, 0)) => format!("slot-{}+{left}.conf", e.slot.letter()),
            Some((left, done)) => format!("slot-{}+{left}-{done}.conf", e.slot.letter()),
        };
        let dest = self.entries.join(name);
        let text = version.map_or_else(|| e.text.clone(), |v| Self::with_version(&e.text, v));
        write_atomic(&dest, text.as_bytes())?;
        if dest != e.file {
            fs::remove_file(&e.file).map_err(|err| Error::io(&e.file, err))?;
        }
        Ok(())
    }
}

impl BootControl for Bls {
    fn state(&self) -> Result<BootState, Error> {
        let entries = self.entries()?;
        let trial = entries.iter().find_map(|e| e.counter.map(|(left, _)| Trial { slot: e.slot, tries_left: left }));
        let default = entries
            .iter()
            .filter(|e| e.counter.is_none())
            .max_by_key(|e| Self::version_of(&e.text))
            .map_or(self.booted, |e| e.slot);
        Ok(BootState { booted: self.booted, default, trial })
    }
    fn arm_trial(&mut self, slot: Slot, tries: u32) -> Result<(), Error> {
        let top = self.entries()?.iter().map(|e| Self::version_of(&e.text)).max().unwrap_or(0);
        let e = self.entry(slot)?;
        self.rewrite(&e, Some((tries, 0)), Some(top + 1))
    }
    fn bless(&mut self, slot: Slot) -> Result<(), Error> {
        let e = self.entry(slot)?;
        self.rewrite(&e, None, None)
    }
    fn cancel_trial(&mut self, slot: Slot) -> Result<(), Error> {
        // Zero tries left: systemd-boot never picks it while its slot is rewritten.
        let e = self.entry(slot)?;
        self.rewrite(&e, Some((0, 0)), Some(0))
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

    #[test]
    fn bls_entries_follow_boot_counting() {
        let d = tempfile::tempdir().unwrap();
        let e = d.path();
        fs::write(
            e.join("slot-a.conf"),
            "title Airlock slot a\nversion 1\nlinux /a/vmlinuz\noptions root=PARTLABEL=root-a ro\n",
        )
        .unwrap();
        fs::write(
            e.join("slot-b.conf"),
            "title Airlock slot b\nversion 0\nlinux /b/vmlinuz\noptions root=PARTLABEL=root-b ro\n",
        )
        .unwrap();
        let mut bls = Bls { entries: e.to_path_buf(), booted: Slot::A };
        assert_eq!(bls.state().unwrap(), BootState { booted: Slot::A, default: Slot::A, trial: None });

        // Before slot b is rewritten it leaves the rotation; then it is armed with 3 tries and
        // a version above every other entry, so systemd-boot tries it first.
        bls.cancel_trial(Slot::B).unwrap();
        assert_eq!(names(e), ["slot-a.conf", "slot-b+0.conf"]);
        bls.arm_trial(Slot::B, 3).unwrap();
        assert_eq!(names(e), ["slot-a.conf", "slot-b+3.conf"]);
        assert!(fs::read_to_string(e.join("slot-b+3.conf")).unwrap().contains("version 2\n"));
        assert_eq!(bls.state().unwrap().trial, Some(Trial { slot: Slot::B, tries_left: 3 }));

        // systemd-boot counts one try down when it boots the entry.
        fs::rename(e.join("slot-b+3.conf"), e.join("slot-b+2-1.conf")).unwrap();
        let mut bls = Bls { entries: e.to_path_buf(), booted: Slot::B };
        assert_eq!(bls.state().unwrap().trial, Some(Trial { slot: Slot::B, tries_left: 2 }));

        // Blessed: the counter goes, and the newer blessed entry is the default.
        bls.bless(Slot::B).unwrap();
        assert_eq!(names(e), ["slot-a.conf", "slot-b.conf"]);
        assert_eq!(bls.state().unwrap(), BootState { booted: Slot::B, default: Slot::B, trial: None });
    }

    #[test]
    fn the_simulated_boot_loader_falls_back_when_tries_run_out() {
        let d = tempfile::tempdir().unwrap();
        let mut b = SimBoot::init(&d.path().join("state.toml"), Slot::A).unwrap();
        b.arm_trial(Slot::B, 2).unwrap();
        assert_eq!(b.power_on().unwrap().booted, Slot::B);
        assert_eq!(b.power_on().unwrap().booted, Slot::B);
        let s = b.power_on().unwrap();
        assert_eq!((s.booted, s.trial), (Slot::A, Some(Trial { slot: Slot::B, tries_left: 0 })));
    }
}

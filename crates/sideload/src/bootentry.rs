//! Each slot's boot entry on the ESP, written whole by the agent and checked against what it
//! recorded. The ESP is an unsigned FAT partition anyone with the disk can edit: an entry given
//! `init=/bin/sh`, or pointed at the other slot's kernel, must not survive the agent. So an
//! install writes the slot's entry from scratch — `linux`, `initrd` and `options` from the
//! signed bundle (its kernel command line, format 3) — never from what the ESP holds, and
//! records it with the kernel's and initrd's digests; every run of the agent then checks both
//! slots' entries and files against that record (see `Agent::check_boot`).
//!
//! Only the lines that decide what boots are compared: `title`, `sort-key` and `version` are
//! the boot loader's business (the agent rewrites `version` and the counter in the name).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Error;
use crate::boot::Slot;
use crate::fsutil::{fsync_dir, write_atomic};
use crate::state::BootRecord;

/// Largest boot entry read.
const MAX_ENTRY: u64 = 16 * 1024;
/// Largest kernel or initrd hashed (the image's are a few MiB).
const MAX_BOOT_FILE: u64 = 512 << 20;
/// The slot's kernel and initrd on the ESP, as the payload table names them.
pub const KERNEL: &str = bundle::KERNEL_FILE;
pub const INITRD: &str = bundle::INITRD_FILE;

/// Where the Boot Loader Specification entries are on an ESP.
pub const ENTRIES: &str = "loader/entries";
/// Where the appliance mounts its ESP.
pub const ESP_MOUNT: &str = "/boot/efi";

pub fn entries_dir(esp: &Path) -> PathBuf {
    esp.join(ENTRIES)
}

/// The lines of `slot`'s entry that decide what boots.
pub fn expected(slot: Slot, cmdline: &str) -> Vec<String> {
    let x = slot.letter();
    vec![
        format!("linux /{x}/{KERNEL}"),
        format!("initrd /{x}/{INITRD}"),
        format!("options root=PARTLABEL=root-{x} {cmdline}"),
    ]
}

fn text(slot: Slot, cmdline: &str, version: u64) -> String {
    let mut t = format!("title Airlock (slot {})\nsort-key airlock\nversion {version}\n", slot.letter());
    for l in expected(slot, cmdline) {
        t.push_str(&l);
        t.push('\n');
    }
    t
}

/// `slot-X.conf`, `slot-X+LEFT.conf` or `slot-X+LEFT-DONE.conf`.
fn is_entry_of(name: &str, slot: Slot) -> bool {
    let Some(rest) = name.strip_prefix(&format!("slot-{}", slot.letter())) else { return false };
    let Some(counter) = rest.strip_suffix(".conf") else { return false };
    counter.is_empty()
        || counter.strip_prefix('+').is_some_and(|c| {
            !c.is_empty()
                && c.split('-').count() <= 2
                && c.split('-').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The entry files of `slot`, sorted.
fn files_of(dir: &Path, slot: Slot) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e.map_err(|e| Error::io(dir, e))?;
                if is_entry_of(&e.file_name().to_string_lossy(), slot) {
                    out.push(e.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dir, e)),
    }
    out.sort();
    Ok(out)
}

fn read_entry(path: &Path) -> Result<String, Error> {
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut s = String::new();
    f.take(MAX_ENTRY + 1).read_to_string(&mut s).map_err(|e| Error::io(path, e))?;
    if s.len() as u64 > MAX_ENTRY {
        return Err(Error::State(format!("boot entry {} is larger than 16 KiB", path.display())));
    }
    Ok(s)
}

fn version_of(text: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix("version ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Writes `slot`'s whole entry for `cmdline`, keeping the name (and so the boot counter) and
/// `version` of the entry it replaces (a new one is out of the rotation: `+0`); any second
/// entry file for the slot goes.
pub fn write(esp: &Path, slot: Slot, cmdline: &str) -> Result<(), Error> {
    let dir = entries_dir(esp);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let files = files_of(&dir, slot)?;
    let (dest, version) = match files.first() {
        Some(p) => (p.clone(), read_entry(p).map(|t| version_of(&t)).unwrap_or(0)),
        None => (dir.join(format!("slot-{}+0.conf", slot.letter())), 0),
    };
    write_atomic(&dest, text(slot, cmdline, version).as_bytes())?;
    for extra in files.iter().skip(1) {
        fs::remove_file(extra).map_err(|e| Error::io(extra, e))?;
    }
    fsync_dir(&dir)
}

/// The sha256 of a boot file, `None` when it is not there.
pub fn digest(path: &Path) -> Result<Option<String>, Error> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut h = Sha256::new();
    let mut r = f.take(MAX_BOOT_FILE);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Some(hex::encode(h.finalize())))
}

/// What the ESP holds for a slot, next to what was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Intact,
    /// No entry file for the slot.
    Missing,
    /// The lines that decide what boots differ: what was found there.
    Edited(Vec<String>),
    /// The kernel or the initrd is not what was installed (the name of the file).
    FileDiffers(&'static str),
}

/// Checks `slot`'s entry and boot files on `esp` against `rec`.
pub fn check(esp: &Path, slot: Slot, rec: &BootRecord) -> Result<Finding, Error> {
    for (name, want) in [(KERNEL, &rec.kernel), (INITRD, &rec.initrd)] {
        if digest(&esp.join(slot.letter()).join(name))?.as_ref() != Some(want) {
            return Ok(Finding::FileDiffers(name));
        }
    }
    let files = files_of(&entries_dir(esp), slot)?;
    let Some(path) = files.first() else { return Ok(Finding::Missing) };
    let found: Vec<String> = read_entry(path)?
        .lines()
        .map(str::trim_end)
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with('#')
                && !["title ", "sort-key ", "version "].iter().any(|k| l.starts_with(k))
        })
        .map(str::to_string)
        .collect();
    if files.len() > 1 || found != expected(slot, &rec.cmdline) {
        return Ok(Finding::Edited(found));
    }
    Ok(Finding::Intact)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rec(esp: &Path, slot: Slot) -> BootRecord {
        let d = esp.join(slot.letter());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(KERNEL), b"kernel").unwrap();
        fs::write(d.join(INITRD), b"initrd").unwrap();
        BootRecord {
            cmdline: "ro quiet".into(),
            kernel: digest(&d.join(KERNEL)).unwrap().unwrap(),
            initrd: digest(&d.join(INITRD)).unwrap().unwrap(),
        }
    }

    #[test]
    fn an_entry_is_written_whole_keeping_its_counter_and_version_and_every_edit_is_found() {
        let esp = tempfile::tempdir().unwrap();
        let e = esp.path();
        let r = rec(e, Slot::B);
        assert_eq!(check(e, Slot::B, &r).unwrap(), Finding::Missing);
        let dir = entries_dir(e);
        fs::create_dir_all(&dir).unwrap();
        // An edited entry, armed for its trial, with a stale second file for the slot.
        fs::write(dir.join("slot-b+2-1.conf"), "title x\nversion 7\nlinux /a/vmlinuz\ninitrd /b/initrd.img\noptions root=PARTLABEL=root-b ro quiet init=/bin/sh\n").unwrap();
        fs::write(dir.join("slot-b.conf"), "linux /b/vmlinuz\n").unwrap();
        fs::write(dir.join("slot-a.conf"), "left alone\n").unwrap();
        assert!(matches!(check(e, Slot::B, &r).unwrap(), Finding::Edited(l) if l[0] == "linux /a/vmlinuz"));
        write(e, Slot::B, &r.cmdline).unwrap();
        let mut names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|x| x.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["slot-a.conf", "slot-b+2-1.conf"]);
        assert_eq!(
            fs::read_to_string(dir.join("slot-b+2-1.conf")).unwrap(),
            "title Airlock (slot b)\nsort-key airlock\nversion 7\nlinux /b/vmlinuz\ninitrd /b/initrd.img\noptions root=PARTLABEL=root-b ro quiet\n"
        );
        assert_eq!(fs::read_to_string(dir.join("slot-a.conf")).unwrap(), "left alone\n");
        assert_eq!(check(e, Slot::B, &r).unwrap(), Finding::Intact);
        // Each line that decides what boots, changed or added, is an edit; title is not.
        for (from, to) in [
            ("options root=PARTLABEL=root-b ro quiet", "options root=PARTLABEL=root-b ro quiet init=/bin/sh"),
            ("linux /b/vmlinuz", "linux /a/vmlinuz"),
            ("initrd /b/initrd.img", "initrd /b/initrd.img\ninitrd /b/evil.img"),
            ("version 7", "version 7\ndevicetree /b/evil.dtb"),
            ("version 7", "version 7\noptions init=/bin/sh"),
        ] {
            let t = text(Slot::B, "ro quiet", 7).replace(from, to);
            fs::write(dir.join("slot-b+2-1.conf"), &t).unwrap();
            assert!(matches!(check(e, Slot::B, &r).unwrap(), Finding::Edited(_)), "{to}");
        }
        let t = text(Slot::B, "ro quiet", 7).replace("title Airlock (slot b)", "title Whatever");
        fs::write(dir.join("slot-b+2-1.conf"), &t).unwrap();
        assert_eq!(check(e, Slot::B, &r).unwrap(), Finding::Intact);
        // The kernel or initrd replaced, or gone.
        fs::write(e.join("b").join(INITRD), b"evil").unwrap();
        assert_eq!(check(e, Slot::B, &r).unwrap(), Finding::FileDiffers(INITRD));
        fs::remove_file(e.join("b").join(KERNEL)).unwrap();
        assert_eq!(check(e, Slot::B, &r).unwrap(), Finding::FileDiffers(KERNEL));
    }

    #[test]
    fn only_the_slots_own_entry_names_count() {
        for (n, b) in [
            ("slot-b.conf", true),
            ("slot-b+3.conf", true),
            ("slot-b+0-3.conf", true),
            ("slot-b+.conf", false),
            ("slot-b+1-2-3.conf", false),
            ("slot-bb.conf", false),
            ("slot-b+x.conf", false),
            ("slot-a.conf", false),
            ("slot-b.conf~", false),
        ] {
            assert_eq!(is_entry_of(n, Slot::B), b, "{n}");
        }
    }
}

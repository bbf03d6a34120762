//! dm-verity on the device: the check of a written slot against its signed root hash (before
//! its trial is armed), and the notes the initrd leaves on the ESP when it refuses a slot at
//! boot (`ESP/airlock/integrity-a`, `-b`: written by the image's `local-top/airlock-verity`,
//! read and cleared by the agent at the next boot, which records them and fails the slot).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::boot::Slot;

/// Where the initrd's notes are, on the ESP.
pub const NOTES_DIR: &str = "airlock";
/// Largest note read (the initrd writes one line).
const MAX_NOTE: u64 = 4096;

fn note_path(esp: &Path, slot: Slot) -> PathBuf {
    esp.join(NOTES_DIR).join(format!("integrity-{}", slot.letter()))
}

/// The initrd's notes, per slot: what it said (escaped, at most 4 KiB of it).
pub fn notes(esp: &Path) -> Result<Vec<(Slot, String)>, Error> {
    let mut out = Vec::new();
    for slot in Slot::ALL {
        let p = note_path(esp, slot);
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&p, e)),
            Ok(_) => {}
        }
        let said = match crate::fsutil::open_regular(&p)? {
            Ok(f) => {
                let mut bytes = Vec::new();
                f.take(MAX_NOTE).read_to_end(&mut bytes).map_err(|e| Error::io(&p, e))?;
                String::from_utf8_lossy(&bytes).trim().to_string()
            }
            Err(kind) => format!("an unreadable note: {kind}"),
        };
        out.push((slot, bundle::escape(&said)));
    }
    Ok(out)
}

/// Removes `slot`'s note (recorded, or superseded by a new install into the slot).
pub fn clear(esp: &Path, slot: Slot) -> Result<(), Error> {
    let p = note_path(esp, slot);
    let removed = match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
        _ => fs::remove_file(&p),
    };
    match removed {
        Ok(()) => crate::fsutil::fsync_dir(&esp.join(NOTES_DIR)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&p, e)),
    }
}

/// Checks every block of the slot at `slot` (filesystem and tree) against the signed root
/// hash, with `veritysetup verify` (userspace: no device-mapper needed): `Ok(Err(why))` when
/// they do not match.
pub fn verify_slot(slot: &Path, v: &bundle::Verity) -> Result<Result<(), String>, Error> {
    let dev = slot.to_string_lossy();
    let offset = format!("--hash-offset={}", v.hash_offset);
    crate::agent::run_tool(&["veritysetup", "verify", &dev, &dev, &v.root_hash, &offset])
}

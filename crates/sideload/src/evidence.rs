//! The evidence a bundle brought for the slot it was installed into: its provenance envelope
//! (the in-toto statement with the DSSE signatures that met this device's policy), kept on
//! the data partition as `evidence/SLOT/provenance.intoto.json`, the same file in-toto tools
//! read from the build directory. The SBOM needs no copy: it is inside the slot's image
//! (`/usr/share/airlock/sbom.spdx.json`).

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use crate::Error;
use crate::boot::Slot;
use crate::device::Device;
use crate::fsutil::{fsync_dir, write_atomic};

pub const ENVELOPE: &str = "provenance.intoto.json";
/// Largest envelope read back (a statement is at most `dsse::MAX_PAYLOAD`, base64 adds a third).
const MAX_ENVELOPE: u64 = 2 * trust::dsse::MAX_PAYLOAD as u64;

fn path(dev: &Device, slot: Slot) -> PathBuf {
    dev.data.join("evidence").join(slot.letter()).join(ENVELOPE)
}

/// Keeps `text` as the provenance of the image in `slot` (atomically, durably).
pub fn keep(dev: &Device, slot: Slot, text: &str) -> Result<(), Error> {
    let p = path(dev, slot);
    let dir = p.parent().unwrap_or(&dev.data).to_path_buf();
    if !dir.is_dir() {
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        fsync_dir(&dev.data)?;
        fsync_dir(&dev.data.join("evidence"))?;
    }
    write_atomic(&p, text.as_bytes())
}

/// Forgets the provenance of `slot` (its image is about to be overwritten).
pub fn forget(dev: &Device, slot: Slot) -> Result<(), Error> {
    let p = path(dev, slot);
    match fs::remove_file(&p) {
        Ok(()) => fsync_dir(p.parent().unwrap_or(&dev.data)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&p, e)),
    }
}

/// The provenance envelope of the image in `slot`, as it was kept; `None` when its bundle
/// carried none (a format-1 bundle, or the factory image).
pub fn read(dev: &Device, slot: Slot) -> Result<Option<String>, Error> {
    let p = path(dev, slot);
    let f = match fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    let mut text = String::new();
    use std::io::Read;
    f.take(MAX_ENVELOPE + 1).read_to_string(&mut text).map_err(|e| Error::io(&p, e))?;
    if text.len() as u64 > MAX_ENVELOPE {
        return Err(Error::State(format!("{}: larger than {MAX_ENVELOPE} bytes", p.display())));
    }
    Ok(Some(text))
}

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
use crate::reason::Reason;

pub const ENVELOPE: &str = "provenance.intoto.json";
/// Largest envelope read back (DSSE's own bound).
const MAX_ENVELOPE: u64 = trust::dsse::MAX_ENVELOPE as u64;

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

fn refused(code: bundle::Code, m: String) -> Error {
    Error::Refused(Reason::Bundle(code), m)
}

/// Checks a provenance envelope (`text`, as kept or as a bundle brought it) for the image
/// whose root payload has `root_sha256`: its DSSE signatures meet this device's policy now,
/// and its statement names that image among its subjects. What is shown as verified is
/// verified when it is shown: an envelope edited on the data partition, or one of another
/// build put in its place, is refused.
pub fn check(dev: &Device, text: &str, root_sha256: &str) -> Result<(), Error> {
    let (env, payload) = trust::dsse::Envelope::parse(text.as_bytes())
        .map_err(|e| refused(bundle::Code::BadManifest, format!("the kept provenance envelope: {e}")))?;
    if env.payload_type != trust::dsse::IN_TOTO {
        return Err(refused(
            bundle::Code::BadSignature,
            format!("the provenance's payload type is {}, not an in-toto statement", bundle::escape(&env.payload_type)),
        ));
    }
    if let Err(r) = dev.policy.require_dsse(&env.payload_type, &payload, &env.signatures) {
        return Err(refused(
            bundle::Code::BadSignature,
            format!("the provenance's signatures do not meet this device's policy ({})", r.report().summary()),
        ));
    }
    if !bundle::statement_names(&payload, root_sha256) {
        return Err(refused(
            bundle::Code::HashMismatch,
            format!("the provenance statement does not describe this image (no subject has sha256 {root_sha256})"),
        ));
    }
    Ok(())
}

/// The provenance of the image in `slot`, checked now ([`check`]) against the slot's record.
pub fn read_verified(dev: &Device, slot: Slot, root_sha256: &str) -> Result<Option<String>, Error> {
    let Some(text) = read(dev, slot)? else { return Ok(None) };
    check(dev, &text, root_sha256).map_err(|e| match e {
        Error::Refused(r, m) => Error::Refused(r, format!("slot {}'s kept provenance: {m}", slot.letter())),
        other => other,
    })?;
    Ok(Some(text))
}

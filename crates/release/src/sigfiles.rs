//! Detached signatures beside a file: `FILE.minisig` (stock minisign's name) and
//! `FILE.<KEYID>.minisig` (one per signer, as Airlock writes them). Each is read once, through
//! a descriptor that is a regular file, and at most `trust::MAX_SIG_FILE + 1` bytes of it: a
//! larger one is refused by the parser, by size, with its name.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::files::open_regular;
use crate::{Error, Result};

/// True for `BASE.minisig` and `BASE.<16 hex>.minisig`.
fn is_signature_of(name: &str, base: &str) -> bool {
    let Some(rest) = name.strip_prefix(base).and_then(|r| r.strip_prefix('.')) else { return false };
    rest == "minisig"
        || rest.strip_suffix(".minisig").is_some_and(|id| id.len() == 16 && id.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// The signature files of `file`, sorted.
pub fn signature_paths(file: &Path) -> Result<Vec<PathBuf>> {
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = file
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file path", file.display())))?
        .to_string_lossy()
        .into_owned();
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|e| e.ok())
        .filter(|e| is_signature_of(&e.file_name().to_string_lossy(), &base))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// The signatures of `file`, as (file name, bytes). A signature path that is not a regular
/// file is kept with empty bytes, so the report names it as malformed.
pub fn read_signatures(file: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut sigs = Vec::new();
    for p in signature_paths(file)? {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut bytes = Vec::new();
        if let Ok(f) = open_regular(&p) {
            f.take(trust::MAX_SIG_FILE as u64 + 1).read_to_end(&mut bytes).map_err(Error::io(&p))?;
        }
        sigs.push((name, bytes));
    }
    Ok(sigs)
}

#[cfg(test)]
mod tests {
    use super::is_signature_of;

    #[test]
    fn signature_names() {
        assert!(is_signature_of("m.toml.minisig", "m.toml"));
        assert!(is_signature_of("m.toml.F9F371B35127730A.minisig", "m.toml"));
        assert!(!is_signature_of("m.toml.x.minisig", "m.toml"));
        assert!(!is_signature_of("m.tomlx.minisig", "m.toml"));
        assert!(!is_signature_of("m.toml.F9F371B35127730A.minisig.part", "m.toml"));
        // Sixteen characters that are not hex, and hex that is not sixteen long.
        assert!(!is_signature_of("m.toml.GGGGGGGGGGGGGGGG.minisig", "m.toml"));
        assert!(!is_signature_of("m.toml.F9F3.minisig", "m.toml"));
    }
}

//! A power cut for the simulated device (`sideload --root DIR init --simulate-power-loss`):
//! what survives is only what was fsynced. A file's bytes become durable when the file is
//! fsynced (they belong to its inode), a name when its directory is fsynced. `power_cut`
//! rolls the device folder back to exactly that: files never synced come back empty, renames
//! never synced are undone, names never synced disappear.
//!
//! The live files are what the running agent sees (the page cache, so to speak); this module
//! keeps the durable copy beside them in `DIR/.power-loss/`. Real devices have no such
//! folder, and then every hook here returns at once.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// The folder whose presence turns the simulation on for the device folder holding it.
pub const MARKER: &str = ".power-loss";
const MAX_DEPTH: usize = 4;

/// The simulated device folder above `path`, when power-loss simulation is on for it.
fn root_of(path: &Path) -> Option<PathBuf> {
    let mut p = path.parent();
    for _ in 0..MAX_DEPTH {
        let dir = p?;
        if dir.join(MARKER).is_dir() {
            return Some(dir.to_path_buf());
        }
        p = dir.parent();
    }
    None
}

/// A file's identity: its inode number and creation time (an inode number can be reused).
fn inode_key(m: &fs::Metadata) -> String {
    let born = m.created().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    format!("{}-{born}", m.ino())
}

fn dir_record(root: &Path, dir: &Path) -> Option<PathBuf> {
    let rel = dir.strip_prefix(root).ok()?;
    let name = if rel.as_os_str().is_empty() { "%".to_string() } else { rel.to_string_lossy().replace('/', "%") };
    Some(root.join(MARKER).join("dirs").join(name))
}

/// Called after a file was fsynced: its current bytes are durable.
pub fn synced_file(path: &Path) {
    let Some(root) = root_of(path) else { return };
    let Ok(m) = fs::metadata(path) else { return };
    if !m.is_file() {
        return;
    }
    let inodes = root.join(MARKER).join("inodes");
    let _ = fs::create_dir_all(&inodes);
    let _ = fs::copy(path, inodes.join(inode_key(&m)));
}

/// Called after a directory was fsynced: the names of its regular files are durable.
pub fn synced_dir(dir: &Path) {
    let Some(root) = root_of(&dir.join("x")) else { return };
    let Some(record) = dir_record(&root, dir) else { return };
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for e in rd.flatten() {
        if let Ok(m) = fs::symlink_metadata(e.path())
            && m.is_file()
        {
            names.insert(e.file_name().to_string_lossy().into_owned(), inode_key(&m));
        }
    }
    let text: String = names.iter().map(|(n, k)| format!("{k}\t{n}\n")).collect();
    if let Some(p) = record.parent() {
        let _ = fs::create_dir_all(p);
    }
    let _ = fs::write(record, text);
}

/// Power comes back after a cut: every file of every synced directory is rolled back to its
/// durable bytes (empty when its data was never synced), names never synced disappear, and
/// the result is recorded as durable.
pub fn power_cut(root: &Path) -> Result<(), Error> {
    let model = root.join(MARKER);
    if !model.is_dir() {
        return Ok(());
    }
    let dirs = model.join("dirs");
    let inodes = model.join("inodes");
    let mut records: Vec<PathBuf> = match fs::read_dir(&dirs) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    records.sort();
    let mut synced = Vec::new();
    for rec in records {
        let rel = rec.file_name().map(|n| n.to_string_lossy().replace('%', "/")).unwrap_or_default();
        let dir = if rel == "/" { root.to_path_buf() } else { root.join(rel.trim_start_matches('/')) };
        let text = fs::read_to_string(&rec).map_err(|e| Error::io(&rec, e))?;
        let durable: BTreeMap<&str, &str> =
            text.lines().filter_map(|l| l.split_once('\t')).map(|(k, n)| (n, k)).collect();
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let is_file = fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_file());
                if is_file && !durable.contains_key(name.as_str()) {
                    fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), err))?;
                }
            }
        }
        for (name, key) in durable {
            let live = dir.join(name);
            let bytes = fs::read(inodes.join(key)).unwrap_or_default();
            let _ = fs::remove_file(&live);
            fs::write(&live, bytes).map_err(|e| Error::io(&live, e))?;
        }
        synced.push(dir);
    }
    // What is on disk now is, by definition, durable.
    let _ = fs::remove_dir_all(&inodes);
    for dir in &synced {
        durable_now(dir);
    }
    Ok(())
}

/// Everything in `dir` (its files' bytes and its names) is durable now.
fn durable_now(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            synced_file(&e.path());
        }
    }
    synced_dir(dir);
}

/// A freshly set-up device folder is durable as it stands: every directory (to `MAX_DEPTH`)
/// and file, recorded here and not through the agent's own fsyncs, so that an agent which
/// failed to fsync a directory loses its new names at the next cut.
pub fn baseline(root: &Path) {
    if !root.join(MARKER).is_dir() {
        return;
    }
    let mut todo = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = todo.pop() {
        durable_now(&dir);
        if depth + 1 >= MAX_DEPTH {
            continue;
        }
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let is_dir = fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir());
            if is_dir && e.file_name() != MARKER {
                todo.push((e.path(), depth + 1));
            }
        }
    }
}

//! The audit log on the data partition: one JSON line per decision, each holding the sha256 of
//! the line before it, so a removed or edited line breaks the chain.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::Error;

pub struct Audit {
    pub path: PathBuf,
}

pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn line_digest(line: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(line.as_bytes())))
}

impl Audit {
    /// The digest of the last line (what the next line must name), and the line count.
    fn tail(&self) -> Result<(String, u64), Error> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((GENESIS.into(), 0)),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        // A line cut short by a power cut has no newline: it is dropped from the chain.
        let complete: Vec<&str> = text.split_inclusive('\n').filter(|l| l.ends_with('\n')).collect();
        Ok(complete
            .last()
            .map_or((GENESIS.into(), 0), |l| (line_digest(l.trim_end_matches('\n')), complete.len() as u64)))
    }

    /// Appends one record: `event`, then the given fields. Strings are JSON-escaped, so a bundle
    /// name with a newline or an escape sequence cannot forge a line.
    pub fn record(&self, event: &str, fields: Value) -> Result<(), Error> {
        let (prev, n) = self.tail()?;
        let mut m = Map::new();
        m.insert("seq".into(), json!(n + 1));
        m.insert("event".into(), json!(event));
        if let Value::Object(f) = fields {
            m.extend(f);
        }
        m.insert("prev".into(), json!(prev));
        let line = serde_json::to_string(&Value::Object(m)).map_err(|e| Error::State(e.to_string()))?;
        let mut text = fs::read(&self.path).unwrap_or_default();
        if !text.is_empty() && !text.ends_with(b"\n") {
            // Drop a torn last line before appending.
            let cut = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            text.truncate(cut);
            crate::fsutil::write_atomic(&self.path, &text)?;
        }
        let mut f =
            OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        f.write_all(format!("{line}\n").as_bytes()).map_err(|e| Error::io(&self.path, e))?;
        f.sync_all().map_err(|e| Error::io(&self.path, e))
    }
}

/// Checks the chain of an audit log; returns its records.
pub fn verify_chain(path: &Path) -> Result<Vec<Value>, Error> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut prev = GENESIS.to_string();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).map_err(|e| Error::State(format!("audit line {}: {e}", i + 1)))?;
        if v["prev"] != prev.as_str() {
            return Err(Error::State(format!("audit line {}: chain broken (prev does not match line {})", i + 1, i)));
        }
        prev = line_digest(line);
        out.push(v);
    }
    Ok(out)
}

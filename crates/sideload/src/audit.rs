//! The audit log on the data partition: one JSON line per decision, each holding the sha256 of
//! the line before it. Appending never reads the log: the head of the chain (last sequence
//! number, digest and length) lives in the device state, so a cut, edited or torn tail is
//! found by looking at the end only, and is itself recorded. Checking the whole chain streams
//! it line by line, in constant memory.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::fsutil::fsync_file;

pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
/// Longest record line accepted when reading (records are written far smaller).
pub const MAX_LINE: usize = 64 * 1024;
/// Most unexpected bytes after the recorded head that are examined (beyond: tampering).
const MAX_TAIL: u64 = 256 * 1024;

/// Where the chain ends: the last record's sequence number and digest, and the log's length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub seq: u64,
    pub digest: String,
    pub bytes: u64,
}

impl Default for Head {
    fn default() -> Head {
        Head { seq: 0, digest: GENESIS.to_string(), bytes: 0 }
    }
}

fn line_digest(line: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(line)))
}

/// True when `line` is the record that follows `head`.
fn follows(line: &[u8], head: &Head) -> bool {
    serde_json::from_slice::<Value>(line)
        .is_ok_and(|v| v["seq"].as_u64() == Some(head.seq + 1) && v["prev"].as_str() == Some(head.digest.as_str()))
}

/// One decision to record: the event name and its fields (strings are JSON-escaped when
/// written, so a bundle name with a newline or an escape sequence cannot forge a line).
pub type Record = (String, Value);

pub fn record(event: &str, fields: Value) -> Record {
    (event.to_string(), fields)
}

pub struct Audit {
    pub path: PathBuf,
}

impl Audit {
    /// Appends `records` after `head` with one write and one fsync; returns the new head.
    /// A tail that does not end at `head` is examined first: records appended just before a
    /// power cut are kept, a torn last line is dropped, anything else is recorded as tampering.
    pub fn append(&self, head: &Head, records: &[Record]) -> Result<Head, Error> {
        let io = |e| Error::io(&self.path, e);
        let mut f =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut head = head.clone();
        let mut notes: Vec<Record> = Vec::new();
        if len > head.bytes && len - head.bytes <= MAX_TAIL {
            let mut extra = Vec::new();
            f.seek(SeekFrom::Start(head.bytes)).map_err(io)?;
            (&mut f).take(len - head.bytes).read_to_end(&mut extra).map_err(io)?;
            let mut pos = 0;
            while let Some(nl) = extra[pos..].iter().position(|&b| b == b'\n') {
                let line = &extra[pos..pos + nl];
                if !follows(line, &head) {
                    break;
                }
                head = Head { seq: head.seq + 1, digest: line_digest(line), bytes: head.bytes + nl as u64 + 1 };
                pos += nl + 1;
            }
            let rest = &extra[pos..];
            if rest.is_empty() {
            } else if !rest.contains(&b'\n') {
                // A line cut short by a power cut: it was never acknowledged.
                f.set_len(head.bytes).map_err(io)?;
                notes.push(record("audit-repaired", json!({"dropped_bytes": rest.len(), "after_seq": head.seq})));
            } else {
                notes.push(record(
                    "audit-tampered",
                    json!({"why": "lines after the recorded last record do not chain to it", "after_seq": head.seq, "bytes": rest.len()}),
                ));
                head.bytes = len;
            }
        } else if len > head.bytes {
            notes.push(record(
                "audit-tampered",
                json!({"why": "unexpected bytes after the recorded last record", "after_seq": head.seq, "bytes": len - head.bytes}),
            ));
            head.bytes = len;
        } else if len < head.bytes {
            notes.push(record(
                "audit-tampered",
                json!({"why": "the log is shorter than recorded: its tail was cut", "expected_seq": head.seq, "expected_bytes": head.bytes, "found_bytes": len}),
            ));
            head.bytes = len;
        } else if head.seq > 0 {
            let last = last_line(&mut f, len).map_err(io)?;
            if line_digest(&last) != head.digest {
                notes.push(record("audit-tampered", json!({"why": "the last record was edited", "seq": head.seq})));
            }
        }
        let mut out = Vec::new();
        for (event, fields) in notes.iter().chain(records) {
            let mut m = Map::new();
            m.insert("seq".into(), json!(head.seq + 1));
            m.insert("event".into(), json!(event));
            if let Value::Object(fields) = fields {
                for (k, v) in fields {
                    m.insert(k.clone(), v.clone());
                }
            }
            m.insert("prev".into(), json!(head.digest));
            let line = serde_json::to_vec(&Value::Object(m)).map_err(|e| Error::State(e.to_string()))?;
            head = Head { seq: head.seq + 1, digest: line_digest(&line), bytes: head.bytes + line.len() as u64 + 1 };
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        f.seek(SeekFrom::End(0)).map_err(io)?;
        f.write_all(&out).map_err(io)?;
        fsync_file(&f, &self.path)?;
        Ok(head)
    }

    /// The last `n` records (for `status`), read from the end of the log only.
    pub fn last(&self, n: usize) -> Vec<Value> {
        let Ok(mut f) = File::open(&self.path) else { return Vec::new() };
        let Ok(len) = f.metadata().map(|m| m.len()) else { return Vec::new() };
        let start = len.saturating_sub(MAX_TAIL.min(64 * 1024));
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(start)).is_err() || f.take(len - start).read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // probably a partial line
        }
        let from = lines.len().saturating_sub(n);
        lines[from..].iter().filter_map(|l| serde_json::from_slice(l).ok()).collect()
    }
}

/// The last complete line of a file of `len` bytes, without its newline.
fn last_line(f: &mut File, len: u64) -> std::io::Result<Vec<u8>> {
    let start = len.saturating_sub(MAX_LINE as u64 + 1);
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(start))?;
    f.take(len - start).read_to_end(&mut buf)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    let from = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Ok(buf[from..].to_vec())
}

/// What checking a whole log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub records: u64,
    pub head: Head,
    /// The first break: (line number, why).
    pub broken: Option<(u64, String)>,
}

/// Checks the chain of the log at `path`, streaming it; `each` sees every record line as
/// read (JSON text, parsed value). Against `expected` (the state's head), a log that ends
/// elsewhere is reported as broken too.
pub fn check(path: &Path, expected: Option<&Head>, mut each: impl FnMut(&str, &Value)) -> Result<Checked, Error> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let head = Head::default();
            let broken = expected
                .filter(|h| h.seq > 0)
                .map(|h| (0, format!("the log is missing; the state records {} records", h.seq)));
            return Ok(Checked { records: 0, head, broken });
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut r = BufReader::with_capacity(64 * 1024, f);
    let mut head = Head::default();
    let mut broken = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        let lineno = head.seq + 1;
        if line.last() != Some(&b'\n') {
            broken.get_or_insert((
                lineno,
                if n > MAX_LINE {
                    "a line longer than 64 KiB".into()
                } else {
                    "a torn last line (no newline)".to_string()
                },
            ));
            break;
        }
        line.pop();
        let text = String::from_utf8_lossy(&line);
        match serde_json::from_slice::<Value>(&line) {
            Ok(v) => {
                if broken.is_none() && !follows(&line, &head) {
                    broken = Some((lineno, format!("record {lineno} does not chain to record {}", head.seq)));
                }
                each(&text, &v);
            }
            Err(e) => {
                broken.get_or_insert((lineno, format!("line {lineno} is not JSON: {e}")));
            }
        }
        head = Head { seq: head.seq + 1, digest: line_digest(&line), bytes: head.bytes + line.len() as u64 + 1 };
    }
    if broken.is_none()
        && let Some(h) = expected
        && (h.seq != head.seq || h.digest != head.digest)
    {
        broken = Some((
            head.seq,
            format!(
                "the state records the chain ending at record {} ({}), the log ends at record {}: its tail was cut or edited",
                h.seq, h.digest, head.seq
            ),
        ));
    }
    Ok(Checked { records: head.seq, head, broken })
}

//! The audit log, shared by the agent and its tests (and, to come, rotation and forwarding): one JSON line per decision, each holding the sha256 of
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

/// The log's own events: what it found at its tail before an append.
pub const TAMPERED: &str = "audit-tampered";
pub const REPAIRED: &str = "audit-repaired";

/// A record of `event` with `fields`.
pub fn record(event: &str, fields: Value) -> Record {
    (event.to_string(), fields)
}

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("audit record: {0}")]
    Encode(String),
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// The log at `path`; `witness` hears its fsyncs (the agent's power-loss simulation).
pub struct Audit {
    pub path: PathBuf,
    pub witness: &'static (dyn durable::Witness + Sync),
}

impl Audit {
    /// The log at `path`, fsyncs unwitnessed.
    pub fn at(path: PathBuf) -> Audit {
        Audit { path, witness: &durable::Unwitnessed }
    }
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
                notes.push(record(REPAIRED, json!({"dropped_bytes": rest.len(), "after_seq": head.seq})));
            } else {
                notes.push(record(
                    TAMPERED,
                    json!({"why": "lines after the recorded last record do not chain to it", "after_seq": head.seq, "bytes": rest.len()}),
                ));
                head.bytes = len;
            }
        } else if len > head.bytes {
            notes.push(record(
                TAMPERED,
                json!({"why": "unexpected bytes after the recorded last record", "after_seq": head.seq, "bytes": len - head.bytes}),
            ));
            head.bytes = len;
        } else if len < head.bytes {
            notes.push(record(
                TAMPERED,
                json!({"why": "the log is shorter than recorded: its tail was cut", "expected_seq": head.seq, "expected_bytes": head.bytes, "found_bytes": len}),
            ));
            head.bytes = len;
        } else if head.seq > 0 {
            let last = last_line(&mut f, len).map_err(io)?;
            if line_digest(&last) != head.digest {
                notes.push(record(TAMPERED, json!({"why": "the last record was edited", "seq": head.seq})));
            }
        }
        let mut out = Vec::new();
        // After tampering the log may end mid-line: the next record starts a line of its own.
        if !notes.is_empty() && head.bytes == len && len > 0 {
            let mut last = [0u8];
            f.seek(SeekFrom::Start(len - 1)).map_err(io)?;
            f.read_exact(&mut last).map_err(io)?;
            if last[0] != b'\n' {
                out.push(b'\n');
                head.bytes += 1;
            }
        }
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
            let line = serde_json::to_vec(&Value::Object(m)).map_err(|e| Error::Encode(e.to_string()))?;
            head = Head { seq: head.seq + 1, digest: line_digest(&line), bytes: head.bytes + line.len() as u64 + 1 };
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        f.seek(SeekFrom::End(0)).map_err(io)?;
        f.write_all(&out).map_err(io)?;
        durable::sync_file(&f, &self.path, self.witness).map_err(|e| Error::Io { path: e.path, source: e.source })?;
        Ok(head)
    }

    /// The last `n` records (for `status`), read from the end of the log only.
    pub fn last(&self, n: usize) -> Vec<Value> {
        let Ok(mut f) = File::open(&self.path) else { return Vec::new() };
        let Ok(len) = f.metadata().map(|m| m.len()) else { return Vec::new() };
        let start = len.saturating_sub(MAX_TAIL.min(64 * 1024));
        // One byte before the window too: whether its first line is whole.
        let before = start.saturating_sub(1);
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(before)).is_err() || f.take(len - before).read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        let (first_cut, window) =
            if start > 0 { (buf.first() != Some(&b'\n'), &buf[1.min(buf.len())..]) } else { (false, &buf[..]) };
        let mut lines: Vec<&[u8]> = window.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        if first_cut && !lines.is_empty() {
            lines.remove(0); // the end of a line that began before the window
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

#[cfg(test)]
fn test_record(fields: Value) -> Record {
    ("e".to_string(), fields)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn log() -> (tempfile::TempDir, Audit) {
        let d = tempfile::tempdir().unwrap();
        let a = Audit::at(d.path().join("audit.jsonl"));
        (d, a)
    }

    fn recs(from: u64, n: u64) -> Vec<Record> {
        (from..from + n).map(|i| test_record(json!({"i": i}))).collect()
    }

    /// The log's records; `lossy` skips lines that are not JSON (torn, junk), else one fails the test.
    fn records(a: &Audit, lossy: bool) -> Vec<Value> {
        let text = std::fs::read(&a.path).unwrap();
        let parsed = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(serde_json::from_slice::<Value>);
        if lossy { parsed.filter_map(Result::ok).collect() } else { parsed.map(Result::unwrap).collect() }
    }

    fn events(a: &Audit) -> Vec<String> {
        records(a, false).iter().map(|v| v["event"].as_str().unwrap().to_string()).collect()
    }

    fn len(a: &Audit) -> u64 {
        std::fs::metadata(&a.path).unwrap().len()
    }

    fn append_raw(a: &Audit, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(&a.path).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn each_record_chains_to_the_one_before_and_the_head_is_where_the_log_ends() {
        let (_d, a) = log();
        let h = a.append(&Head::default(), &recs(0, 3)).unwrap();
        assert_eq!((h.seq, h.bytes), (3, len(&a)));
        let raw = std::fs::read(&a.path).unwrap();
        let raw: Vec<&[u8]> = raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(h.digest, line_digest(raw[2]));
        let v = records(&a, false);
        assert_eq!(v[0]["prev"], GENESIS);
        for (i, r) in v.iter().enumerate() {
            assert_eq!(r["seq"], i as u64 + 1);
            assert_eq!(r["i"], i as u64);
        }
        assert_eq!(v.len(), 3);
        assert_eq!(v[1]["prev"].as_str().unwrap(), line_digest(raw[0]));
        assert_eq!(v[2]["prev"].as_str().unwrap(), line_digest(raw[1]));
        let mut seen = 0;
        let c = check(&a.path, Some(&h), |_, _| seen += 1).unwrap();
        assert_eq!((c.records, &c.head, c.broken, seen), (3, &h, None, 3));
    }

    #[test]
    fn records_appended_just_before_a_cut_are_kept_and_a_torn_line_is_dropped() {
        let (_d, a) = log();
        let h1 = a.append(&Head::default(), &recs(0, 1)).unwrap();
        let h2 = a.append(&h1, &recs(1, 2)).unwrap();
        // The state still says h1 (the cut came before it was saved): the two records stay.
        let h3 = a.append(&h1, &recs(3, 1)).unwrap();
        assert_eq!(events(&a), ["e", "e", "e", "e"]);
        assert_eq!((h3.seq, h3.bytes), (h2.seq + 1, len(&a)));
        append_raw(&a, b"{\"seq\":5,\"ev");
        let h4 = a.append(&h3, &recs(4, 1)).unwrap();
        let v = records(&a, false);
        assert_eq!(v[4]["event"], "audit-repaired");
        assert_eq!((v[4]["dropped_bytes"].as_u64(), v[4]["after_seq"].as_u64()), (Some(12), Some(4)));
        assert_eq!((h4.seq, h4.bytes), (6, len(&a)));
        assert_eq!(check(&a.path, Some(&h4), |_, _| {}).unwrap().broken, None);
    }

    #[test]
    fn bytes_after_the_head_that_do_not_chain_are_tampering_examined_up_to_their_bound() {
        for (extra, why) in [
            (2000, "lines after the recorded last record do not chain to it"),
            (MAX_TAIL, "lines after the recorded last record do not chain to it"),
            (MAX_TAIL + 1, "unexpected bytes after the recorded last record"),
        ] {
            let (_d, a) = log();
            let h = a.append(&Head::default(), &recs(0, 2)).unwrap();
            let mut junk = vec![b'x'; extra as usize - 1];
            junk.push(b'\n');
            append_raw(&a, &junk);
            let h2 = a.append(&h, &recs(2, 1)).unwrap();
            let v = records(&a, true);
            let t = v.iter().find(|r| r["event"] == "audit-tampered").unwrap();
            assert_eq!(t["why"], why, "{extra}");
            assert_eq!((t["bytes"].as_u64(), t["after_seq"].as_u64()), (Some(extra), Some(2)), "{extra}");
            assert_eq!((h2.seq, h2.bytes), (4, len(&a)), "{extra}");
            assert!(!std::fs::read(&a.path).unwrap().windows(2).any(|w| w == b"\n\n"), "an empty line");
        }
        // Junk beyond the bound that does not end a line: the record of it starts its own.
        let (_d, a) = log();
        let h = a.append(&Head::default(), &recs(0, 2)).unwrap();
        append_raw(&a, &vec![b'x'; MAX_TAIL as usize + 1]);
        let h2 = a.append(&h, &recs(2, 1)).unwrap();
        let v = records(&a, true);
        assert_eq!(
            v.iter().map(|r| r["event"].as_str().unwrap()).collect::<Vec<_>>(),
            ["e", "e", "audit-tampered", "e"]
        );
        assert_eq!(v[2]["bytes"].as_u64(), Some(MAX_TAIL + 1));
        assert_eq!((h2.seq, h2.bytes), (4, len(&a)));
    }

    /// The records that parse (junk lines left out).
    #[test]
    fn a_cut_tail_and_an_edited_last_record_are_recorded() {
        let (_d, a) = log();
        let h = a.append(&Head::default(), &recs(0, 2)).unwrap();
        let f = OpenOptions::new().write(true).open(&a.path).unwrap();
        f.set_len(h.bytes - 5).unwrap();
        a.append(&h, &[]).unwrap();
        let t = records(&a, true).into_iter().find(|r| r["event"] == "audit-tampered").unwrap();
        assert_eq!(t["why"], "the log is shorter than recorded: its tail was cut");
        assert_eq!((t["expected_bytes"].as_u64(), t["found_bytes"].as_u64()), (Some(h.bytes), Some(h.bytes - 5)));
        // Cut mid-line: the record of it starts a line of its own, and the rest chains to it.
        let raw = std::fs::read(&a.path).unwrap();
        assert_eq!(raw[h.bytes as usize - 5], b'\n');

        // Cut to nothing.
        let (_d, a) = log();
        let h = a.append(&Head::default(), &recs(0, 2)).unwrap();
        OpenOptions::new().write(true).open(&a.path).unwrap().set_len(0).unwrap();
        let h2 = a.append(&h, &recs(2, 1)).unwrap();
        let v = records(&a, false);
        assert_eq!((v[0]["event"].as_str(), v[0]["found_bytes"].as_u64()), (Some("audit-tampered"), Some(0)));
        assert_eq!((h2.seq, h2.bytes), (4, len(&a)));

        let (_d, a) = log();
        let h = a.append(&Head::default(), &recs(0, 2)).unwrap();
        // Intact: nothing to say.
        let h = a.append(&h, &recs(2, 1)).unwrap();
        assert_eq!(events(&a), ["e", "e", "e"]);
        let text = std::fs::read_to_string(&a.path).unwrap().replace("\"i\":2", "\"i\":7");
        std::fs::write(&a.path, text).unwrap();
        a.append(&h, &[]).unwrap();
        let v = records(&a, false);
        assert_eq!(
            (v[3]["event"].as_str(), v[3]["why"].as_str()),
            (Some("audit-tampered"), Some("the last record was edited"))
        );
        assert_eq!(v[3]["seq"], 3);
    }

    #[test]
    fn the_last_records_are_read_from_the_end() {
        let (_d, a) = log();
        assert!(a.last(3).is_empty(), "no log yet");
        let mut h = Head::default();
        // Far more than the 64 KiB read from the end.
        for i in 0..40 {
            h = a.append(&h, &recs(i * 100, 100)).unwrap();
        }
        assert!(len(&a) > 128 * 1024);
        let last = a.last(3);
        let got: Vec<u64> = last.iter().map(|v| v["i"].as_u64().unwrap()).collect();
        assert_eq!(got, [3997, 3998, 3999]);
        assert!(a.last(0).is_empty());
        let all = a.last(usize::MAX);
        assert!(all.len() < 4000 && all.len() > 100, "{}", all.len());
        let seqs: Vec<u64> = all.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(*seqs.last().unwrap(), 4000);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "a gap or a partial record");
        assert_eq!(seqs[0], 4001 - seqs.len() as u64);

        // Lines of exactly 128 bytes: the 64 KiB window starts on a line, which is whole.
        let (_d, a) = log();
        let mut h = Head::default();
        for seq in 1..=600u64 {
            let base = json!({"event": "e", "pad": "", "prev": GENESIS, "seq": seq}).to_string().len();
            h = a.append(&h, &[test_record(json!({"pad": "x".repeat(127 - base)}))]).unwrap();
        }
        assert_eq!(len(&a), 600 * 128);
        let all = a.last(usize::MAX);
        assert_eq!(all.len(), 512, "the window's first line is whole and belongs in");
        assert_eq!((all[0]["seq"].as_u64(), all[511]["seq"].as_u64()), (Some(89), Some(600)));
        // One byte more: the window now starts one byte into a line, which is left out.
        let mut f = OpenOptions::new().append(true).open(&a.path).unwrap();
        f.write_all(b"\n").unwrap();
        let all = a.last(usize::MAX);
        assert_eq!((all.len(), all[0]["seq"].as_u64()), (511, Some(90)));

        let (_d, small) = log();
        small.append(&Head::default(), &recs(0, 5)).unwrap();
        let got: Vec<u64> = small.last(10).iter().map(|v| v["i"].as_u64().unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3, 4], "a log smaller than the window is read whole, its first record too");
    }

    #[test]
    fn checking_a_log_names_its_first_break() {
        // Missing.
        let (_d, a) = log();
        let c = check(&a.path, None, |_, _| {}).unwrap();
        assert_eq!((c.records, c.broken), (0, None));
        assert_eq!(check(&a.path, Some(&Head::default()), |_, _| {}).unwrap().broken, None);
        let h2 = Head { seq: 2, digest: GENESIS.into(), bytes: 9 };
        assert_eq!(
            check(&a.path, Some(&h2), |_, _| {}).unwrap().broken,
            Some((0, "the log is missing; the state records 2 records".into()))
        );

        // Only "not there" means "no log": a path that cannot be opened is an error.
        let (d, _) = log();
        std::fs::write(d.path().join("file"), b"").unwrap();
        let e = check(&d.path().join("file/audit.jsonl"), None, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("file/audit.jsonl"), "{e}");
        // A torn last line of exactly 64 KiB is torn, not too long.
        let (_d, a) = log();
        a.append(&Head::default(), &recs(0, 1)).unwrap();
        append_raw(&a, &vec![b'x'; MAX_LINE]);
        assert_eq!(check(&a.path, None, |_, _| {}).unwrap().broken, Some((2, "a torn last line (no newline)".into())));

        // Torn, not JSON, not chained.
        let (_d, a) = log();
        a.append(&Head::default(), &recs(0, 2)).unwrap();
        append_raw(&a, b"{\"seq\":3");
        assert_eq!(check(&a.path, None, |_, _| {}).unwrap().broken, Some((3, "a torn last line (no newline)".into())));
        let (_d, a) = log();
        a.append(&Head::default(), &recs(0, 1)).unwrap();
        append_raw(&a, b"not json\n");
        let c = check(&a.path, None, |_, _| {}).unwrap();
        assert!(c.broken.as_ref().unwrap().1.starts_with("line 2 is not JSON"), "{c:?}");
        assert_eq!((c.records, c.broken.unwrap().0), (2, 2));
        let (_d, a) = log();
        let h1 = a.append(&Head::default(), &recs(0, 1)).unwrap();
        a.append(&Head::default(), &[]).unwrap();
        append_raw(&a, format!("{{\"seq\":2,\"prev\":\"{GENESIS}\"}}\n").as_bytes());
        assert_eq!(
            check(&a.path, None, |_, _| {}).unwrap().broken,
            Some((2, "record 2 does not chain to record 1".into()))
        );
        let _ = h1;

        // The state's head against the log's end: another length, or the same length and
        // another digest.
        let (_d, a) = log();
        let h = a.append(&Head::default(), &recs(0, 2)).unwrap();
        let c = check(&a.path, Some(&h), |_, _| {}).unwrap();
        assert_eq!(c.broken, None);
        for other in [Head { seq: 3, ..h.clone() }, Head { digest: GENESIS.into(), ..h.clone() }] {
            let b = check(&a.path, Some(&other), |_, _| {}).unwrap().broken.unwrap();
            assert_eq!(b.0, 2);
            assert!(b.1.contains("its tail was cut or edited"), "{b:?}");
        }
        let _ = h;
    }

    #[test]
    fn a_record_line_of_64_kib_is_read_and_one_byte_more_is_refused() {
        let line_len = |pad: usize| {
            let (_d, a) = log();
            a.append(&Head::default(), &[test_record(json!({"pad": "x".repeat(pad)}))]).unwrap();
            len(&a) as usize - 1
        };
        let base = line_len(0);
        for (extra, broken) in [(0, None), (1, Some((1, "a line longer than 64 KiB".to_string())))] {
            let (_d, a) = log();
            let h = a
                .append(&Head::default(), &[test_record(json!({"pad": "x".repeat(MAX_LINE - base + extra)}))])
                .unwrap();
            assert_eq!(len(&a) as usize, MAX_LINE + extra + 1);
            let c = check(&a.path, Some(&h), |_, _| {}).unwrap();
            assert_eq!(c.broken, broken, "{extra}");
            // The tail check reads the same longest line.
            if extra == 0 {
                a.append(&h, &recs(0, 1)).unwrap();
                assert_eq!(events(&a), ["e", "e"], "the last record was taken as edited");
            }
        }
    }
}

//! What an operator reads: `status` as text (slots, versions, next boot, trial tries, floor,
//! the last audit records) or JSON, audit records in one line each, and install progress — a
//! bar with bytes, rate and phase on a terminal, one plain line per phase in the journal.
//! Everything that came from outside (a stick, a manifest) is escaped before it is printed.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use bundle::escape;
use serde_json::{Value, json};

use crate::agent::{Progress, View};
use crate::boot::Slot;
use crate::config::DeviceConfig;
use crate::state::SlotRecord;

fn short(digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    if hex.len() > 12 { format!("{}…", &hex[..12]) } else { hex.to_string() }
}

/// One audit record on one line: `#12 installed slot=b version=2.0.0`.
pub fn record_line(v: &Value) -> String {
    let mut out = format!("#{} {}", v["seq"].as_u64().unwrap_or(0), escape(v["event"].as_str().unwrap_or("?")));
    if let Value::Object(m) = v {
        for (k, val) in m {
            if matches!(k.as_str(), "seq" | "event" | "prev") || val.is_null() {
                continue;
            }
            let text = match val {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!(" {}={}", escape(k), escape(&text)));
        }
    }
    out
}

fn slot_json(r: &SlotRecord) -> Value {
    json!({"status": r.status, "version": r.version, "security_version": r.security_version, "manifest": r.manifest, "sha256": r.sha256, "size": r.size})
}

/// `status --json`.
pub fn status_json(config: &DeviceConfig, v: &View, recent: &[Value]) -> Value {
    let b = &v.boot;
    json!({
        "product": config.product,
        "channel": config.channel,
        "booted": b.booted.letter(),
        "default": b.default.letter(),
        "next_boot": b.next().letter(),
        "on_trial": b.on_trial(),
        "trial": b.trial.map(|t| json!({"slot": t.slot.letter(), "tries_left": t.tries_left, "tries_done": t.tries_done})),
        "security_floor": v.state.as_ref().map(|s| s.security_floor),
        "slots": v.state.as_ref().map(|s| Slot::ALL.iter().map(|x| (x.letter().to_string(), slot_json(&s.slot(*x)))).collect::<serde_json::Map<_, _>>()),
        "busy": v.busy,
        "pending": v.pending,
        "verity": v.verity.as_ref().map(|h| json!({"root_hash": h})),
        "recent": recent,
    })
}

/// `status` for a person.
pub fn status_text(config: &DeviceConfig, v: &View, recent: &[Value]) -> String {
    let b = &v.boot;
    let mut out = format!("Airlock appliance {} — channel {}\n", escape(&config.product), config.channel);
    if let Some(pid) = &v.busy {
        out.push_str(&format!("another sideload is working right now (pid {pid}): this is the last recorded state\n"));
    }
    let Some(state) = &v.state else {
        out.push_str("no agent state yet, and the device config declares no version: not initialised\n");
        return out;
    };
    for s in Slot::ALL {
        let r = state.slot(s);
        let mut notes = Vec::new();
        if b.booted == s {
            notes.push("booted".to_string());
        }
        if b.default == s {
            notes.push("default".to_string());
        }
        if let Some(t) = b.trial.filter(|t| t.slot == s) {
            notes.push(if t.ran_out() {
                format!("trial: out of tries after {}", t.tries_done)
            } else {
                format!("trial: {} tries left", t.tries_left)
            });
        }
        let version = if r.version.is_empty() { "-".to_string() } else { escape(&r.version) };
        let sha = if r.sha256.is_empty() { String::new() } else { format!("  sha256 {}", short(&r.sha256)) };
        out.push_str(&format!(
            "slot {}  {:<12} security {:<3} {:<8}{sha}{}\n",
            s.letter(),
            version,
            r.security_version,
            r.status.as_str(),
            if notes.is_empty() { String::new() } else { format!("  ({})", notes.join(", ")) }
        ));
    }
    out.push_str(&format!("next boot       slot {}\n", b.next().letter()));
    out.push_str(&format!("security floor  {}\n", state.security_floor));
    match (&v.verity, config.verity) {
        (Some(h), _) => out.push_str(&format!(
            "dm-verity       on: slot {} opened with root hash {}\n",
            b.booted.letter(),
            short(h)
        )),
        (None, true) => out.push_str("dm-verity       required, but the booted slot was not opened through it\n"),
        (None, false) => {}
    }
    if !v.pending.is_empty() {
        out.push_str(&format!("to be recorded by the next sideload command: {}\n", v.pending.join(", ")));
    }
    if !recent.is_empty() {
        out.push_str("recent audit records:\n");
        for r in recent {
            out.push_str(&format!("  {}\n", record_line(r)));
        }
    }
    out
}

/// Install progress: a bar on a terminal, one line per phase otherwise (the journal).
pub struct ConsoleProgress {
    bar: Option<indicatif::ProgressBar>,
    phase: String,
    started: Instant,
    bytes: u64,
}

impl ConsoleProgress {
    /// Quiet when `quiet` (JSON output); a bar when stderr is a terminal.
    pub fn new(quiet: bool) -> ConsoleProgress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(0);
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        let phase = if quiet { "\u{0}quiet".to_string() } else { String::new() };
        ConsoleProgress { bar, phase, started: Instant::now(), bytes: 0 }
    }

    fn quiet(&self) -> bool {
        self.phase.starts_with('\u{0}')
    }

    fn end_phase(&mut self) {
        if self.bytes > 0 && self.bar.is_none() && !self.quiet() {
            let secs = self.started.elapsed().as_secs_f64().max(1e-6);
            eprintln!(
                "sideload: {} MiB verified and written in {secs:.1} s ({:.0} MB/s)",
                self.bytes >> 20,
                self.bytes as f64 / secs / 1e6
            );
        }
        self.bytes = 0;
    }

    pub fn finish(&mut self) {
        self.end_phase();
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Progress for ConsoleProgress {
    fn phase(&mut self, what: &str) {
        self.end_phase();
        if self.quiet() {
            return;
        }
        self.phase = what.to_string();
        self.started = Instant::now();
        match &self.bar {
            Some(b) => {
                b.println(format!("sideload: {what}"));
                b.set_message(what.to_string());
            }
            None => eprintln!("sideload: {what}"),
        }
    }

    fn bytes(&mut self, done: u64, total: u64) {
        self.bytes = done;
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        }
    }
}

impl Drop for ConsoleProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

//! The parking controller: occupancy of one site's car park, fed by the parking field over MQTT
//! (bay sensors publish `parking/bays/BAY/state`, barrier controllers `parking/barriers/ID/event`
//! to the appliance's broker) and served over a small HTTP API to the management zone, with a
//! health endpoint (version, boot slot, broker link) that the update agent uses as its health
//! check.

pub mod http;
pub mod mqtt;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where `parking-controller health` asks by default: the health listener, on loopback.
pub const DEFAULT_HEALTH: &str = "127.0.0.1:8081";

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub site: String,
    pub capacity: u32,
    pub state_dir: PathBuf,
    /// Overrides the boot slot read from the kernel command line (tests, development).
    #[serde(default)]
    pub slot: Option<String>,
    /// The health check's own listener (loopback): API clients cannot starve it.
    #[serde(default)]
    pub health_listen: Option<String>,
    /// The operators of the site profile in force (`NAME:$argon2id$…` lines, from the update
    /// agent). Writes need one of them; without the file nobody may write.
    #[serde(default)]
    pub operators_file: Option<PathBuf>,
    /// The field side: the broker the sensors and barriers publish to.
    #[serde(default)]
    pub mqtt: Option<mqtt::MqttConfig>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if c.capacity == 0 || c.capacity > 100_000 {
            return Err(format!("{}: capacity must be 1 to 100000", path.display()));
        }
        Ok(c)
    }
}

/// The A/B slot this system booted from: `root=PARTLABEL=root-a` on the kernel command line.
pub fn slot_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|w| {
        let v = w.strip_prefix("root=PARTLABEL=root-").or_else(|| w.strip_prefix("airlock.slot="))?;
        Some(v.to_string()).filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
    })
}

/// Most bays tracked; a sensor name beyond this is ignored (and said so), never allocated.
pub const MAX_BAYS: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Occupancy {
    /// Cars inside, from barrier events (and the API's entry/exit).
    pub occupied: u32,
    /// Each bay sensor's last report: true when occupied.
    #[serde(default)]
    pub bays: std::collections::BTreeMap<String, bool>,
}

/// What a field message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldChange {
    Bay { bay: String, occupied: bool },
    Entry,
    Exit,
}

#[derive(Debug, Serialize)]
pub struct Health<'a> {
    pub status: &'a str,
    /// The image's version (`IMAGE_VERSION` of os-release), else the controller's own.
    pub version: &'a str,
    /// The controller's own version.
    pub controller: &'a str,
    pub slot: &'a str,
    pub site: &'a str,
    /// `connected`, `disconnected`, or `off` when no broker is configured.
    pub mqtt: &'a str,
}

/// `IMAGE_VERSION` from an os-release text (the build writes it into every image).
pub fn image_version(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("IMAGE_VERSION=")?.trim_matches('"');
        Some(v.to_string()).filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c))
        })
    })
}

pub struct Controller {
    config: Config,
    slot: String,
    version: String,
    occupancy: Occupancy,
    /// The broker link, when one is configured: Some(true) while connected.
    pub mqtt_connected: Option<bool>,
}

impl Controller {
    pub fn new(config: Config, slot: String) -> Controller {
        let version = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| image_version(&t))
            .unwrap_or_else(|| VERSION.to_string());
        Controller::with_version(config, slot, version)
    }

    pub fn with_version(config: Config, slot: String, version: String) -> Controller {
        let occupancy = std::fs::read_to_string(config.state_dir.join("occupancy.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Occupancy>(&s).ok())
            .filter(|o| o.occupied <= config.capacity && o.bays.len() <= MAX_BAYS)
            .unwrap_or_default();
        let mqtt_connected = config.mqtt.as_ref().map(|_| false);
        Controller { config, slot, version, occupancy, mqtt_connected }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies one message from the field. Topics and payloads are untrusted: anything else
    /// than the documented forms is refused with the reason, and changes nothing.
    pub fn on_field_message(&mut self, topic: &str, payload: &[u8]) -> Result<FieldChange, String> {
        let change = mqtt::parse(topic, payload)?;
        match &change {
            FieldChange::Bay { bay, occupied } => {
                if !self.occupancy.bays.contains_key(bay) && self.occupancy.bays.len() >= MAX_BAYS {
                    return Err(format!("bay {bay}: more than {MAX_BAYS} bays reported; ignored"));
                }
                self.occupancy.bays.insert(bay.clone(), *occupied);
            }
            FieldChange::Entry => {
                if self.occupancy.occupied >= self.config.capacity {
                    return Err("entry while the car park is full (count kept at capacity)".into());
                }
                self.occupancy.occupied += 1;
            }
            FieldChange::Exit => {
                if self.occupancy.occupied == 0 {
                    return Err("exit while the car park is empty (count kept at 0)".into());
                }
                self.occupancy.occupied -= 1;
            }
        }
        Ok(change)
    }

    /// Handles one request: (status, JSON body).
    pub fn handle(&mut self, method: &str, path: &str) -> (u16, String) {
        let c = &self.config;
        match (method, path) {
            ("GET", "/health") => {
                let mqtt = match self.mqtt_connected {
                    None => "off",
                    Some(true) => "connected",
                    Some(false) => "disconnected",
                };
                // Without its field side the controller is not doing its job: an image whose
                // broker link does not come up is not healthy (and the agent falls back).
                let ok = self.mqtt_connected != Some(false);
                let h = Health {
                    status: if ok { "ok" } else { "degraded" },
                    version: &self.version,
                    controller: VERSION,
                    slot: &self.slot,
                    site: &c.site,
                    mqtt,
                };
                (if ok { 200 } else { 503 }, json(&h))
            }
            ("GET", "/api/v1/bays") => (200, json(&self.occupancy.bays)),
            ("GET", "/api/v1/occupancy") => (200, self.occupancy_json()),
            ("POST", "/api/v1/entry") => {
                if self.occupancy.occupied >= c.capacity {
                    return (409, r#"{"error":"car park full"}"#.to_string());
                }
                self.occupancy.occupied += 1;
                (200, self.occupancy_json())
            }
            ("POST", "/api/v1/exit") => {
                if self.occupancy.occupied == 0 {
                    return (409, r#"{"error":"car park already empty"}"#.to_string());
                }
                self.occupancy.occupied -= 1;
                (200, self.occupancy_json())
            }
            (_, "/health" | "/api/v1/occupancy" | "/api/v1/bays" | "/api/v1/entry" | "/api/v1/exit") => {
                (405, r#"{"error":"method not allowed"}"#.to_string())
            }
            _ => (404, r#"{"error":"not found"}"#.to_string()),
        }
    }

    fn occupancy_json(&self) -> String {
        let o = self.occupancy.occupied;
        let cap = self.config.capacity;
        let reported = self.occupancy.bays.len();
        let taken = self.occupancy.bays.values().filter(|&&b| b).count();
        format!(
            r#"{{"site":{},"capacity":{cap},"occupied":{o},"free":{},"bays_reported":{reported},"bays_occupied":{taken}}}"#,
            json(&self.config.site),
            cap - o
        )
    }

    /// Writes occupancy to the state directory: temp file, fsync, rename.
    pub fn save(&self) -> std::io::Result<()> {
        let dir = &self.config.state_dir;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(".occupancy.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(json(&self.occupancy).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join("occupancy.json"))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// The controller, even if a thread panicked while holding it (its state is still whole: every
/// change is one assignment).
pub fn lock(c: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// `parking-controller health`: asks a running controller's health endpoint; true when it
/// answers 200 with status "ok". Used as the post-update health check.
pub fn check_health(addr: &str, timeout: Duration) -> Result<String, String> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut resp = Vec::new();
    s.take(64 * 1024).read_to_end(&mut resp).map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("health endpoint answered {}", head.lines().next().unwrap_or("")));
    }
    let v: serde_json::Value = serde_json::from_str(body.trim()).map_err(|e| format!("health body: {e}"))?;
    if v["status"] != "ok" {
        return Err(format!("health status is {}", v["status"]));
    }
    Ok(body.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(cap: u32) -> Controller {
        let dir = std::env::temp_dir().join(format!("pc-test-{}-{cap}", std::process::id()));
        let cfg = Config {
            listen: "127.0.0.1:0".into(),
            site: "s".into(),
            capacity: cap,
            state_dir: dir,
            slot: None,
            health_listen: None,
            operators_file: None,
            mqtt: None,
        };
        Controller::new(cfg, "a".into())
    }

    #[test]
    fn the_image_version_comes_from_os_release() {
        assert_eq!(image_version("ID=debian\nIMAGE_ID=pc\nIMAGE_VERSION=2.0.0\n"), Some("2.0.0".into()));
        assert_eq!(image_version("IMAGE_VERSION=\"1.1.0~rc1\"\n"), Some("1.1.0~rc1".into()));
        assert_eq!(image_version("IMAGE_VERSION=$(reboot)\n"), None);
        assert_eq!(image_version("ID=debian\n"), None);
    }

    #[test]
    fn slot_is_read_from_the_root_partition_label() {
        assert_eq!(slot_from_cmdline("quiet root=PARTLABEL=root-b ro"), Some("b".into()));
        assert_eq!(slot_from_cmdline("airlock.slot=a"), Some("a".into()));
        assert_eq!(slot_from_cmdline("root=/dev/vda2"), None);
        assert_eq!(slot_from_cmdline("root=PARTLABEL=root-$(x)"), None);
    }

    #[test]
    fn occupancy_never_goes_below_zero_or_above_capacity() {
        let mut c = controller(1);
        assert_eq!(c.handle("POST", "/api/v1/exit").0, 409);
        assert_eq!(c.handle("POST", "/api/v1/entry").0, 200);
        assert_eq!(c.handle("POST", "/api/v1/entry").0, 409);
        let (s, body) = c.handle("GET", "/api/v1/occupancy");
        assert_eq!(s, 200);
        assert_eq!(body, r#"{"site":"s","capacity":1,"occupied":1,"free":0,"bays_reported":0,"bays_occupied":0}"#);
        assert_eq!(c.handle("DELETE", "/health").0, 405);
        assert_eq!(c.handle("GET", "/nope").0, 404);
    }

    #[test]
    fn field_messages_move_occupancy_and_bays_and_hostile_ones_change_nothing() {
        let mut c = controller(2);
        assert_eq!(c.on_field_message("parking/barriers/gate-1/event", b"entry"), Ok(FieldChange::Entry));
        assert_eq!(
            c.on_field_message("parking/bays/bay-017/state", b"occupied"),
            Ok(FieldChange::Bay { bay: "bay-017".into(), occupied: true })
        );
        c.on_field_message("parking/bays/bay-018/state", b"free\n").unwrap();
        let before = c.handle("GET", "/api/v1/occupancy").1;
        assert_eq!(before, r#"{"site":"s","capacity":2,"occupied":1,"free":1,"bays_reported":2,"bays_occupied":1}"#);
        for (topic, payload) in [
            ("parking/bays/bay-017/state", &b"maybe"[..]),
            ("parking/bays/../state", b"free"),
            ("parking/bays/BAY/state", b"free"),
            ("parking/bays/a/b/state", b"free"),
            ("parking/barriers/gate-1/event", b"open"),
            ("parking/elsewhere", b"entry"),
            ("parking/bays/bay-017/state", &[b'x'; 100][..]),
        ] {
            assert!(c.on_field_message(topic, payload).is_err(), "{topic}");
        }
        assert_eq!(c.handle("GET", "/api/v1/occupancy").1, before);
        c.on_field_message("parking/barriers/gate-1/event", b"exit").unwrap();
        assert!(c.on_field_message("parking/barriers/gate-1/event", b"exit").is_err(), "never below zero");
        assert_eq!(c.handle("GET", "/api/v1/bays").1, r#"{"bay-017":true,"bay-018":false}"#);
    }

    #[test]
    fn health_is_degraded_while_a_configured_broker_is_unreachable() {
        let mut c = controller(1);
        assert_eq!(c.handle("GET", "/health").0, 200, "no broker configured");
        c.mqtt_connected = Some(false);
        let (s, body) = c.handle("GET", "/health");
        assert_eq!(s, 503);
        assert!(body.contains(r#""status":"degraded""#) && body.contains(r#""mqtt":"disconnected""#), "{body}");
        c.mqtt_connected = Some(true);
        assert_eq!(c.handle("GET", "/health").0, 200);
    }
}

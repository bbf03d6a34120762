//! The field side over MQTT: the topics and payloads bay sensors and barrier controllers
//! publish, the controller's subscriber (rumqttc, plain TCP to the appliance's own broker on
//! loopback), and the simulator tests and commissioning use to play a sensor or a barrier.
//!
//! Topics (the broker's ACL lets each device write only its own, by user name):
//! - `parking/bays/BAY/state`, payload `occupied` or `free`
//! - `parking/barriers/ID/event`, payload `entry` or `exit`

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;

use crate::{Controller, FieldChange, lock};

/// Longest payload read; the documented ones are a few bytes.
pub const MAX_PAYLOAD: usize = 32;
const MAX_DEVICE: usize = 64;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `HOST:PORT` of the broker (on the appliance: its loopback listener).
    pub broker: String,
    pub user: String,
    /// The password: a file, or (`credential`) a systemd credential name read from
    /// `$CREDENTIALS_DIRECTORY`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub credential: Option<String>,
}

impl MqttConfig {
    pub fn password(&self) -> Result<String, String> {
        let path = match (&self.credential, &self.password_file) {
            (Some(name), _) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!("mqtt.credential = {name:?} but no $CREDENTIALS_DIRECTORY (LoadCredential= in the unit)")
                })?;
                Path::new(&dir).join(name)
            }
            (None, Some(p)) => p.clone(),
            (None, None) => return Err("mqtt: set password_file or credential".into()),
        };
        read_secret(&path)
    }
}

fn read_secret(path: &Path) -> Result<String, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() || s.len() > 256 {
        return Err(format!("{}: a password of 1 to 256 bytes", path.display()));
    }
    Ok(s)
}

fn device_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DEVICE
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// One field message, checked.
pub fn parse(topic: &str, payload: &[u8]) -> Result<FieldChange, String> {
    if payload.len() > MAX_PAYLOAD {
        return Err(format!("{}: payload of {} bytes (at most {MAX_PAYLOAD})", topic.escape_debug(), payload.len()));
    }
    let text =
        std::str::from_utf8(payload).map_err(|_| format!("{}: payload is not UTF-8", topic.escape_debug()))?.trim();
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        ["parking", "bays", bay, "state"] if device_name(bay) => match text {
            "occupied" => Ok(FieldChange::Bay { bay: bay.to_string(), occupied: true }),
            "free" => Ok(FieldChange::Bay { bay: bay.to_string(), occupied: false }),
            other => Err(format!("{topic}: state {:?}: `occupied` or `free`", other.escape_debug().to_string())),
        },
        ["parking", "barriers", id, "event"] if device_name(id) => match text {
            "entry" => Ok(FieldChange::Entry),
            "exit" => Ok(FieldChange::Exit),
            other => Err(format!("{topic}: event {:?}: `entry` or `exit`", other.escape_debug().to_string())),
        },
        _ => Err(format!("topic {:?} is not a parking field topic", topic.escape_debug().to_string())),
    }
}

fn options(client_id: &str, broker: &str, user: &str, password: String) -> Result<MqttOptions, String> {
    let (host, port) = broker.rsplit_once(':').ok_or_else(|| format!("broker {broker:?}: HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("broker {broker:?}: bad port"))?;
    let mut o = MqttOptions::new(client_id, host.trim_start_matches('[').trim_end_matches(']'), port);
    o.set_credentials(user, password);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_clean_session(true);
    o.set_max_packet_size(4096, 4096);
    Ok(o)
}

/// Subscribes to the field topics and applies each message until `stop`; reconnects after a
/// pause whenever the link drops, and keeps `mqtt_connected` true only while it is up.
pub fn run(shared: Arc<Mutex<Controller>>, cfg: MqttConfig, stop: Arc<AtomicBool>) {
    let password = match cfg.password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("parking-controller: mqtt: {e}; the field side stays down");
            return;
        }
    };
    // The broker replaces the client id with the user name (use_username_as_clientid); ask
    // for the same, so that nothing depends on it.
    let opts = match options(&cfg.user, &cfg.broker, &cfg.user, password) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("parking-controller: mqtt: {e}");
            return;
        }
    };
    let (client, mut connection) = Client::new(opts, 64);
    let set = |up: bool| lock(&shared).mqtt_connected = Some(up);
    let mut last_error = String::new();
    for event in connection.iter() {
        if stop.load(Ordering::Relaxed) {
            let _ = client.disconnect();
            break;
        }
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code == ConnectReturnCode::Success {
                    for t in ["parking/bays/+/state", "parking/barriers/+/event"] {
                        if let Err(e) = client.try_subscribe(t, QoS::AtLeastOnce) {
                            eprintln!("parking-controller: mqtt: subscribe {t}: {e}");
                        }
                    }
                    eprintln!("parking-controller: mqtt: connected to {}", cfg.broker);
                    last_error.clear();
                    set(true);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let mut c = lock(&shared);
                match c.on_field_message(&p.topic, &p.payload) {
                    Ok(_) => {
                        if let Err(e) = c.save() {
                            eprintln!("parking-controller: saving state: {e}");
                        }
                    }
                    Err(e) => eprintln!("parking-controller: mqtt: ignored: {e}"),
                }
            }
            Ok(_) => {}
            Err(e) => {
                set(false);
                let msg = e.to_string();
                if msg != last_error {
                    eprintln!("parking-controller: mqtt: {msg} (retrying every 2 s)");
                    last_error = msg;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

/// What the simulator plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Bay,
    Barrier,
}

/// Publishes one message as a field device would (QoS 1) and waits for the broker's answer:
/// Ok when the broker accepted the connection and acknowledged the message, Err with the
/// broker's reason otherwise (a bad password, a refused connection, a timeout).
#[allow(clippy::too_many_arguments)]
pub fn simulate(
    broker: &str,
    user: &str,
    password: &str,
    client_id: Option<&str>,
    device: Device,
    name: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), String> {
    if !device_name(name) {
        return Err(format!("device name {name:?}: a-z 0-9 -, at most {MAX_DEVICE}"));
    }
    let topic = match device {
        Device::Bay => format!("parking/bays/{name}/state"),
        Device::Barrier => format!("parking/barriers/{name}/event"),
    };
    parse(&topic, value.as_bytes())?;
    let id = client_id.map_or_else(|| format!("sim-{user}-{name}"), str::to_string);
    let opts = options(&id, broker, user, password.to_string())?;
    let (client, mut connection) = Client::new(opts, 8);
    client.try_publish(topic.clone(), QoS::AtLeastOnce, false, value.as_bytes().to_vec()).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("{broker}: no answer within {} s", timeout.as_secs()));
        }
        match connection.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) if a.code != ConnectReturnCode::Success => {
                return Err(format!("{broker}: connection refused: {:?}", a.code));
            }
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                let _ = client.disconnect();
                // Let the DISCONNECT go out before the connection is dropped.
                let _ = connection.recv_timeout(Duration::from_millis(200));
                return Ok(());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("{broker}: {e}")),
            Err(_) => return Err(format!("{broker}: no answer within {} s", timeout.as_secs())),
        }
    }
}

/// Reads a password file for the simulator.
pub fn password_from(path: &Path) -> Result<String, String> {
    read_secret(path)
}

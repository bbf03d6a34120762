//! `parking-controller`: runs the service, checks a running one (`health ADDR`), or plays a
//! field device (`simulate …`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use std::sync::Mutex;

use parking_controller::mqtt::{self, Device};
use parking_controller::{Config, Controller, check_health, slot_from_cmdline};

const USAGE: &str = "usage: parking-controller [--config FILE]
       parking-controller health [ADDR]   (default ADDR 127.0.0.1:8081, the health listener; exit 0 when healthy)
       parking-controller simulate --broker HOST:PORT --user NAME --password-file FILE [--client-id ID] bay BAY occupied|free
       parking-controller simulate --broker HOST:PORT --user NAME --password-file FILE [--client-id ID] barrier ID entry|exit
           (publishes one message as a field device, QoS 1; exit 0 when the broker acknowledged it;
            --client-id asks for that MQTT client id, as a device trying to take another's session would)
       parking-controller --version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["--version"] => {
            println!("parking-controller {}", parking_controller::VERSION);
            ExitCode::SUCCESS
        }
        ["health"] | ["health", _] => {
            let addr = args.get(1).map_or(parking_controller::DEFAULT_HEALTH, String::as_str);
            match check_health(addr, Duration::from_secs(5)) {
                Ok(body) => {
                    println!("{body}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("parking-controller: unhealthy: {e}");
                    ExitCode::from(1)
                }
            }
        }
        ["simulate", "--broker", broker, "--user", user, "--password-file", pw, rest @ ..] => {
            let (client_id, rest) = match rest {
                ["--client-id", id, r @ ..] => (Some(*id), r),
                r => (None, r),
            };
            let [kind, name, value] = rest else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let device = match *kind {
                "bay" => Device::Bay,
                "barrier" => Device::Barrier,
                _ => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            };
            let r = mqtt::password_from(std::path::Path::new(pw)).and_then(|p| {
                mqtt::simulate(broker, user, &p, client_id, device, name, value, Duration::from_secs(10))
            });
            match r {
                Ok(()) => {
                    println!("published {kind} {name} {value}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("parking-controller simulate: {e}");
                    ExitCode::from(1)
                }
            }
        }
        [] => run(PathBuf::from("/etc/parking-controller/config.toml")),
        ["--config", path] => run(PathBuf::from(path)),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(config_path: PathBuf) -> ExitCode {
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("parking-controller: {e}");
            return ExitCode::from(2);
        }
    };
    let slot = config.slot.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/cmdline")
            .ok()
            .and_then(|c| slot_from_cmdline(&c))
            .unwrap_or_else(|| "unknown".into())
    });
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("parking-controller: cannot handle signal {sig}: {e}");
            return ExitCode::from(2);
        }
    }
    let bind = |addr: &str| {
        std::net::TcpListener::bind(addr).map_err(|e| eprintln!("parking-controller: cannot listen on {addr}: {e}"))
    };
    let Ok(api) = bind(&config.listen) else { return ExitCode::from(2) };
    let health = match config.health_listen.as_deref().map(bind) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(())) => return ExitCode::from(2),
    };
    let shown = |l: &std::net::TcpListener| l.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    eprintln!(
        "parking-controller {} listening on {} (health on {}; site {}, slot {slot})",
        parking_controller::VERSION,
        shown(&api),
        health.as_ref().map_or_else(|| "the API listener alone".to_string(), shown),
        config.site
    );
    let mqtt_cfg = config.mqtt.clone();
    let operators = parking_controller::http::Operators { file: config.operators_file.clone() };
    let shared = Arc::new(Mutex::new(Controller::new(config, slot)));
    if let Some(cfg) = mqtt_cfg {
        let (c, s) = (Arc::clone(&shared), Arc::clone(&stop));
        std::thread::spawn(move || mqtt::run(c, cfg, s));
    }
    let served = parking_controller::http::serve(
        Arc::clone(&shared),
        api,
        health,
        operators,
        parking_controller::http::LIMITS,
        Arc::clone(&stop),
    );
    let saved = parking_controller::lock(&shared).save();
    match served.and(saved) {
        Ok(()) => {
            eprintln!("parking-controller: stopped, state saved");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("parking-controller: {e}");
            ExitCode::from(1)
        }
    }
}

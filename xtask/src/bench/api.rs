//! `bench api`: the parking controller's operator API under the floods that once stalled it —
//! idle connections, bodies declared and never sent, 16 MiB heads — with wrk (the reference
//! HTTP load tool) as the honest client: its requests per second at rest and during each flood
//! (the ratio says what a flood costs), the controller's RSS and threads, and how long the
//! health check takes. `--controller BIN` measures another build of the controller (an older
//! one, say) the same way, with the configuration every version reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::out;

struct Controller {
    child: Child,
    api: SocketAddr,
    /// The health check's own listener, when this controller has one.
    health: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `exe` with the health check on a listener of its own; a controller that does not
/// know that setting (an older one) is started again without it, its health on the API.
fn start(exe: &Path, port: u16) -> Result<Controller> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("config.toml");
    let base = format!(
        "listen = \"127.0.0.1:{port}\"\nsite = \"bench\"\ncapacity = 100\nstate_dir = \"{}\"\nslot = \"a\"\n",
        dir.path().join("state").display()
    );
    let api: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let own: SocketAddr = format!("127.0.0.1:{}", port + 1).parse()?;
    let mut child = None;
    for (text, health) in [(format!("{base}health_listen = \"{own}\"\n"), own), (base.clone(), api)] {
        std::fs::write(&cfg, text)?;
        let mut c = Command::new(exe)
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| exe.display().to_string())?;
        std::thread::sleep(Duration::from_millis(500));
        if c.try_wait()?.is_none() {
            child = Some((c, health));
            break;
        }
    }
    let Some((child, health)) = child else { bail!("{} does not start", exe.display()) };
    let t = Instant::now();
    while TcpStream::connect_timeout(&api, Duration::from_millis(200)).is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("{} does not listen on {api}", exe.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Controller { child, api, health, _dir: dir })
}

impl Controller {
    fn status(&self, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    }
}

/// A connection from a loopback address of its own (so that per-client bounds apply to the
/// flood, not to the honest client).
fn connect_from(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    s.bind(&format!("{from}:0").parse::<SocketAddr>().ok()?.into()).ok()?;
    s.connect_timeout(&to.into(), Duration::from_secs(1)).ok()?;
    Some(s.into())
}

/// wrk's answered-with-200 requests per second for `GET /api/v1/occupancy`, 4 connections,
/// 2 threads (a 503 "too many connections" is counted out).
fn wrk(api: SocketAddr, secs: u32) -> Result<f64> {
    let o = Command::new("wrk")
        .args(["-t2", "-c4", &format!("-d{secs}s"), "--timeout", "2s"])
        .arg(format!("http://{api}/api/v1/occupancy"))
        .output()
        .context("wrk (apt-get install -y wrk)")?;
    let text = String::from_utf8_lossy(&o.stdout);
    let num = |key: &str| -> f64 {
        text.lines().find_map(|l| l.trim().strip_prefix(key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    };
    let total = text
        .lines()
        .find_map(|l| l.split_once(" requests in ").map(|(n, _)| n.trim().parse::<f64>().unwrap_or(0.0)))
        .unwrap_or(0.0);
    let rps = num("Requests/sec:");
    let bad = num("Non-2xx or 3xx responses:");
    Ok(if total > 0.0 { rps * (total - bad) / total } else { 0.0 })
}

/// Seconds `GET /health` took (10 s or more: no answer).
fn health_latency(api: SocketAddr) -> f64 {
    let t = Instant::now();
    let ok = (|| -> Option<()> {
        let mut s = TcpStream::connect_timeout(&api, Duration::from_secs(10)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").ok()?;
        let mut b = [0u8; 12];
        s.read_exact(&mut b).ok()?;
        (&b == b"HTTP/1.1 200").then_some(())
    })();
    if ok.is_some() { t.elapsed().as_secs_f64() } else { 10.0 }
}

/// One flood: what it holds open while the honest client is measured.
type Flood = fn(SocketAddr) -> Vec<TcpStream>;

fn idle(api: SocketAddr) -> Vec<TcpStream> {
    (0..600).filter_map(|i| connect_from(&format!("127.0.0.{}", 2 + i % 50), api)).collect()
}

fn stalled_bodies(api: SocketAddr) -> Vec<TcpStream> {
    (0..8)
        .filter_map(|i| {
            let mut s = connect_from(&format!("127.0.1.{}", 2 + i), api)?;
            s.write_all(b"GET /api/v1/bays HTTP/1.1\r\nHost: a\r\nContent-Length: 4000\r\n\r\nx").ok()?;
            Some(s)
        })
        .collect()
}

fn huge_heads(api: SocketAddr) -> Vec<TcpStream> {
    (0..4)
        .filter_map(|i| {
            let mut s = connect_from(&format!("127.0.2.{}", 2 + i), api)?;
            s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n");
            let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
            for _ in 0..(16 << 10) {
                if s.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
            Some(s)
        })
        .collect()
}

pub fn run(controller: Option<PathBuf>, secs: u32) -> Result<()> {
    let exe = match controller {
        Some(p) => p,
        None => {
            let sh = xshell::Shell::new()?;
            xshell::cmd!(sh, "cargo build --locked --release -p parking-controller").quiet().run()?;
            PathBuf::from("target/release/parking-controller")
        }
    };
    let port = 18080;
    out!("api: {} under floods, wrk (-t2 -c4, {secs} s) as the honest client, GET /api/v1/occupancy:", exe.display());
    let floods: [(&str, Flood); 3] = [
        ("600 idle connections", idle),
        ("8 bodies declared, 1 byte sent", stalled_bodies),
        ("4 × 16 MiB heads", huge_heads),
    ];
    let c = start(&exe, port)?;
    let rest = wrk(c.api, secs)?;
    out!(
        "  at rest                             {rest:>9.0} req/s   health {:.3} s   RSS {:>6} KiB   threads {:>3}",
        health_latency(c.health),
        c.status("VmRSS:"),
        c.status("Threads:")
    );
    drop(c);
    for (what, flood) in floods {
        let c = start(&exe, port)?;
        let held = flood(c.api);
        std::thread::sleep(Duration::from_millis(300));
        let health = health_latency(c.health);
        let rps = wrk(c.api, secs)?;
        let (rss, peak, threads) = (c.status("VmRSS:"), c.status("VmHWM:"), c.status("Threads:"));
        out!(
            "  {what:<35} {rps:>9.0} req/s   health {health:.3} s   RSS {rss:>6} KiB (peak {peak})   threads {threads:>3}   ratio to rest {:.2}",
            if rest > 0.0 { rps / rest } else { f64::NAN }
        );
        drop(held);
    }
    Ok(())
}

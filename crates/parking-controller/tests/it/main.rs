//! The real controller binary on loopback, attacked the way a field-side or management-side
//! client would: floods of idle connections, stalled bodies, huge heads and declared bodies,
//! anonymous and wrong-password writes. Each flood runs from an address of its own
//! (127.0.0.2…) while the health check and an honest client (127.0.0.1) keep being answered,
//! and the controller's memory and threads stay bounded (figures printed for the record).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running {
    child: Child,
    api: SocketAddr,
    health: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_parking-controller")
}

/// An argon2id hash of `password`, made by Debian's `argon2` (the tool an owner uses).
fn argon2_hash(password: &str) -> String {
    let mut c = Command::new("argon2")
        .args(["airlocktestsalt", "-id", "-m", "12", "-t", "2", "-p", "1", "-e"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("argon2 (Debian's argon2: `cargo xtask test` installs it)");
    c.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn start(operators: Option<&str>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let ops = dir.path().join("operators");
    if let Some(text) = operators {
        std::fs::write(&ops, text).unwrap();
    }
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nhealth_listen = \"127.0.0.1:0\"\noperators_file = \"{}\"\nsite = \"t\"\ncapacity = 100\nstate_dir = \"{}\"\nslot = \"a\"\n",
            ops.display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(exe()).arg("--config").arg(&cfg).stderr(Stdio::piped()).spawn().unwrap();
    // "… listening on ADDR (health on ADDR; …)"
    let mut err = child.stderr.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        assert_eq!(err.read(&mut b).unwrap(), 1, "the controller ended: {}", String::from_utf8_lossy(&line));
        line.push(b[0]);
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let line = String::from_utf8(line).unwrap();
    let word_after = |k: &str| line.split(k).nth(1).unwrap().split([' ', ';', ')']).next().unwrap().parse().unwrap();
    Running { child, api: word_after("listening on "), health: word_after("health on "), dir }
}

impl Running {
    /// (VmRSS KiB, threads) of the controller.
    fn rss_threads(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |k: &str| {
            s.lines().find_map(|l| l.strip_prefix(k)).unwrap().split_whitespace().next().unwrap().parse().unwrap()
        };
        (field("VmRSS:"), field("Threads:"))
    }
    fn peak_rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    }
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// A TCP connection from `from` (a loopback address of the test's choosing) to `to`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(2)).unwrap();
    s.into()
}

/// Sends `request` and reads the answer's status (and the whole answer), within `timeout`.
fn ask(from: &str, to: SocketAddr, request: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = connect_from(from, to);
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status =
        text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("no answer: {text:?}"))?;
    Ok((status, text))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
}

/// The honest client and the health check, each answered within a second.
fn still_answered(c: &Running, what: &str) {
    let t = Instant::now();
    let (s, _) = ask("127.0.0.1", c.health, &get("/health"), Duration::from_secs(3)).unwrap();
    assert_eq!(s, 200, "{what}: the health listener");
    let o = Command::new(exe()).arg("health").arg(c.health.to_string()).output().unwrap();
    assert!(o.status.success(), "{what}: `parking-controller health`: {}", String::from_utf8_lossy(&o.stderr));
    let (s, _) = ask("127.0.0.1", c.api, &get("/api/v1/occupancy"), Duration::from_secs(3)).unwrap();
    assert_eq!(s, 200, "{what}: an honest API client");
    assert!(t.elapsed() < Duration::from_secs(3), "{what}: answered only after {:?}", t.elapsed());
}

#[test]
fn floods_neither_starve_the_health_check_nor_grow_the_controller() {
    let c = start(None);
    still_answered(&c, "at rest");
    let (rss0, threads0) = c.rss_threads();
    let limits = parking_controller::http::LIMITS;

    // 600 idle connections from one client: it holds its own share at most; the rest get a
    // 503 at once; nobody else notices.
    let idle: Vec<TcpStream> = (0..600).map(|_| connect_from("127.0.0.2", c.api)).collect();
    std::thread::sleep(Duration::from_millis(500));
    still_answered(&c, "600 idle connections");
    let (rss, threads) = c.rss_threads();
    eprintln!("600 idle connections: RSS {rss} KiB (at rest {rss0}), threads {threads} (at rest {threads0})");
    assert!(threads <= threads0 + 1, "threads grew with connections: {threads0} -> {threads}");
    let mut refused = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 12];
        if s.read(&mut b).is_ok_and(|n| n >= 12 && &b[..12] == b"HTTP/1.1 503") {
            refused += 1;
        }
    }
    assert_eq!(refused, 600 - limits.max_per_client, "each connection over the client's share is refused at once");

    // Many clients each with a body declared and one byte sent: each is cut off after the
    // body timeout; meanwhile everyone else is answered.
    let slow: Vec<TcpStream> = (0..limits.max_per_client)
        .flat_map(|_| (3..8).map(|i| format!("127.0.0.{i}")))
        .map(|from| {
            let mut s = connect_from(&from, c.api);
            s.write_all(b"POST /api/v1/entry HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nx").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    still_answered(&c, "stalled bodies");
    let t = Instant::now();
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(limits.body_secs + limits.header_secs + 5))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        // Anonymous: refused at the door (401) before its body matters; the connection closes.
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 401") || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(t.elapsed() < Duration::from_secs(limits.body_secs + 3), "stalled bodies held on for {:?}", t.elapsed());

    // A stalled body from an operator-less write is no better; a GET with a stalled body is
    // cut after the body timeout with 408.
    let mut s = connect_from("127.0.0.9", c.api);
    s.write_all(b"GET /api/v1/bays HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nx").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(limits.body_secs + 5))).unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&out));
    assert!(
        t.elapsed() >= Duration::from_secs(limits.body_secs - 1)
            && t.elapsed() < Duration::from_secs(limits.body_secs + 3)
    );

    // A head that never ends: 16 MiB of header lines is refused at the bound (431), not kept.
    let mut s = connect_from("127.0.0.10", c.api);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n").unwrap();
    let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
    let mut sent = 0usize;
    while sent < 16 << 20 {
        if s.write_all(line.as_bytes()).is_err() {
            break;
        }
        sent += line.len();
    }
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
    assert!(sent < 16 << 20, "16 MiB of header lines were all taken in");
    still_answered(&c, "a 16 MiB head");

    // A declared body over the bound: 413 before a byte of it is sent.
    let (status, _) = ask(
        "127.0.0.11",
        c.api,
        "POST /api/v1/entry HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n",
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(status, 413);
    let (status, _) = ask(
        "127.0.0.11",
        c.api,
        "GET /api/v1/bays HTTP/1.1\r\nHost: a\r\nContent-Length: 4097\r\n\r\n",
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(status, 413, "one byte over the bound");

    let (rss, threads) = c.rss_threads();
    let peak = c.peak_rss();
    eprintln!("after every flood: RSS {rss} KiB, peak {peak} KiB (at rest {rss0}), threads {threads}");
    assert!(peak < rss0 + 48 * 1024, "the controller grew by {} KiB under the floods", peak - rss0);
    assert!(threads <= threads0 + 2, "threads {threads0} -> {threads}");
}

fn post(path: &str, auth: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut r = format!("POST {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n");
    if let Some(a) = auth {
        let _ = write!(r, "Authorization: Basic {a}\r\n");
    }
    r + "\r\n"
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn occupied(c: &Running) -> u64 {
    let (_, text) = ask("127.0.0.1", c.api, &get("/api/v1/occupancy"), Duration::from_secs(3)).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str::<serde_json::Value>(body.trim()).unwrap()["occupied"].as_u64().unwrap()
}

#[test]
fn only_an_operator_of_the_site_profile_moves_the_car_count() {
    // No operators file (no site profile yet): nobody writes.
    let c = start(None);
    let (s, text) = ask("127.0.0.1", c.api, &post("/api/v1/entry", None), Duration::from_secs(3)).unwrap();
    assert_eq!(s, 401, "{text}");
    assert!(
        text.contains("WWW-Authenticate: Basic realm=\"airlock operator API\"")
            || text.to_lowercase().contains("www-authenticate: basic"),
        "{text}"
    );
    let (s, _) =
        ask("127.0.0.1", c.api, &post("/api/v1/entry", Some(&basic("alice", "x"))), Duration::from_secs(3)).unwrap();
    assert_eq!(s, 401);
    assert_eq!(occupied(&c), 0);
    drop(c);

    let hash = argon2_hash("correct horse");
    let c = start(Some(&format!("alice:{hash}\n")));
    for (what, auth) in [
        ("anonymous", None),
        ("wrong password", Some(basic("alice", "battery staple"))),
        ("unknown operator", Some(basic("mallory", "correct horse"))),
        ("malformed", Some("not-base64!".to_string())),
        ("no colon", Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice"))),
    ] {
        let (s, text) =
            ask("127.0.0.1", c.api, &post("/api/v1/entry", auth.as_deref()), Duration::from_secs(5)).unwrap();
        assert_eq!(s, 401, "{what}: {text}");
        assert_eq!(occupied(&c), 0, "{what} moved the count");
    }
    let ok = basic("alice", "correct horse");
    let (s, text) = ask("127.0.0.1", c.api, &post("/api/v1/entry", Some(&ok)), Duration::from_secs(5)).unwrap();
    assert_eq!(s, 200, "{text}");
    assert_eq!(occupied(&c), 1);
    let (s, _) = ask("127.0.0.1", c.api, &post("/api/v1/exit", Some(&ok)), Duration::from_secs(5)).unwrap();
    assert_eq!(s, 200);
    assert_eq!(occupied(&c), 0);
    // Reads stay open to the management zone (the firewall decides who reaches them).
    assert_eq!(ask("127.0.0.1", c.api, &get("/api/v1/bays"), Duration::from_secs(3)).unwrap().0, 200);
    // The health listener serves the health check alone.
    assert_eq!(ask("127.0.0.1", c.health, &post("/api/v1/entry", Some(&ok)), Duration::from_secs(3)).unwrap().0, 404);
    assert!(Path::new(&c.state_dir()).join("occupancy.json").exists());
}

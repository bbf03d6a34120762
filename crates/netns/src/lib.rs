//! Network namespaces for tests and benchmarks: `ip netns` namespaces joined by veth pairs, and
//! probes that run inside a namespace. A probe runs on a thread of its own that joined the
//! namespace with `setns(2)` (a thread's network namespace is its own), so a test talks TCP,
//! HTTP and UDP from "the parking field" or "the management zone" without helper programs.
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A named network namespace, deleted when dropped (kill what runs in it first).
pub struct Ns {
    pub name: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e} (apt-get install -y iproute2)"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
    }
}

impl Ns {
    /// Creates the namespace (replacing a stale one of the same name) with loopback up.
    pub fn new(name: &str) -> Result<Ns, String> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let ns = Ns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        ip(&v)
    }

    /// A command that runs PROGRAM inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let path = format!("/run/netns/{}", self.name);
        let h = std::thread::spawn(move || -> Result<T, String> {
            enter(&path)?;
            Ok(f())
        });
        h.join().map_err(|_| "probe thread panicked".to_string())?
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, kv: &str) -> Result<(), String> {
        let o = self.exec("sysctl").args(["-qw", kv]).output().map_err(|e| e.to_string())?;
        if o.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&o.stderr).trim().to_string()) }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn enter(path: &str) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| format!("setns {path}: {e}"))
}

/// A veth pair: `a_if` in `a`, `b_if` in `b`, both up.
pub fn veth(a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> Result<(), String> {
    ip(&["link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns", &b.name])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])
}

/// Whether a TCP connection to `to` opens from inside `ns` within `timeout`.
pub fn tcp_open(ns: &Ns, to: SocketAddr, timeout: Duration) -> bool {
    ns.run(move || TcpStream::connect_timeout(&to, timeout).is_ok()).unwrap_or(false)
}

/// Whether a TCP connection from `from` (a local address of `ns`, port 0 for any) to `to`
/// opens within `timeout`: a spoofing test gives the sender the address it pretends to have.
pub fn tcp_open_from(ns: &Ns, from: SocketAddr, to: SocketAddr, timeout: Duration) -> bool {
    ns.run(move || -> std::io::Result<()> {
        let s = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
        s.bind(&from.into())?;
        s.connect_timeout(&to.into(), timeout)
    })
    .is_ok_and(|r| r.is_ok())
}

/// Sends `payload` over UDP from `from` (a local address and port of `ns`: DHCP's 67 or 68,
/// say) to `to`, and waits for one answer.
pub fn udp_ask_from(ns: &Ns, from: SocketAddr, to: SocketAddr, payload: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let payload = payload.to_vec();
    ns.run(move || {
        let s = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::DGRAM, None).ok()?;
        s.set_reuse_address(true).ok()?;
        s.set_broadcast(true).ok()?;
        s.bind(&from.into()).ok()?;
        let s: UdpSocket = s.into();
        s.set_read_timeout(Some(timeout)).ok()?;
        s.send_to(&payload, to).ok()?;
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    })
    .ok()
    .flatten()
}

/// Whether `to` answers one ICMP (or ICMPv6) echo from inside `ns` within a second, sent
/// from `from` when given (iputils' `ping`; a `%IFNAME` scope for IPv6 link-local).
pub fn ping(ns: &Ns, to: &str, from: Option<&str>) -> bool {
    let mut c = ns.exec("ping");
    c.args(["-c", "1", "-W", "1", "-q"]);
    if let Some(f) = from {
        c.args(["-I", f]);
    }
    c.arg(to).output().is_ok_and(|o| o.status.success())
}

/// `GET path` over HTTP/1.1 from inside `ns`: (status, body).
pub fn http_get(ns: &Ns, to: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let path = path.to_string();
    ns.run(move || -> Result<(u16, String), String> {
        let mut s = TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("{to}: {e}"))?;
        s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: appliance\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        s.take(1 << 20).read_to_end(&mut resp).map_err(|e| format!("{to}: {e}"))?;
        let text = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("no status")?;
        Ok((status, body.trim().to_string()))
    })?
}

/// Sends `payload` over UDP from inside `ns` and waits for one answer.
pub fn udp_ask(ns: &Ns, to: SocketAddr, payload: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let any: std::net::IpAddr = if to.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    udp_ask_from(ns, SocketAddr::new(any, 0), to, payload, timeout)
}

/// A UDP server inside a namespace that answers every datagram with `reply` (an NTP server's
/// stand-in: the test is about the path, not the protocol). Stops when dropped.
pub struct UdpResponder {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pub served: Arc<std::sync::atomic::AtomicU64>,
}

impl UdpResponder {
    pub fn start(ns: &Ns, bind: SocketAddr, reply: &'static [u8]) -> Result<UdpResponder, String> {
        let path = format!("/run/netns/{}", ns.name);
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (st, sv) = (Arc::clone(&stop), Arc::clone(&served));
        let handle = std::thread::spawn(move || {
            let sock = enter(&path).and_then(|()| UdpSocket::bind(bind).map_err(|e| format!("{bind}: {e}")));
            let sock = match sock {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    sv.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(reply, from);
                }
            }
        });
        rx.recv().map_err(|e| e.to_string())??;
        Ok(UdpResponder { stop, handle: Some(handle), served })
    }
}

impl Drop for UdpResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The index of interface `ifname` inside `ns` (for IPv6 link-local scope ids).
pub fn ifindex(ns: &Ns, ifname: &str) -> Result<u32, String> {
    let o = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", "dev", ifname])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&o.stdout);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no interface {ifname} in {}", ns.name))
}

//! The operator API over HTTP/1.1: hyper on a tokio runtime of one thread, with every limit a
//! hostile client meets before it costs the controller anything.
//!
//! - Connections are bounded (in all, and per client address), and one over the bound gets a
//!   `503` and is closed at once; every connection lives at most [`Limits::connection_secs`].
//! - Headers: at most [`Limits::max_header_bytes`] and [`Limits::max_headers`] lines, read
//!   within [`Limits::header_secs`] (hyper answers `431` to too large a head).
//! - Bodies: a declared `Content-Length` over [`Limits::max_body`] is answered `413` before a
//!   byte of it is read; any other body is read up to the bound within
//!   [`Limits::body_secs`] (`413` past the bound, `408` when it stalls).
//! - Writes (`POST /api/v1/entry`, `/exit`) need an operator of the site profile in force
//!   (HTTP Basic, argon2id hashes); the hash is checked on a small bounded blocking pool, so a
//!   guessing client never holds the runtime.
//! - The health check has a listener of its own, on loopback, with its own connection bound:
//!   API clients can fill theirs and `parking-controller health` still gets an answer.
//!
//! The runtime has one worker thread plus at most [`Limits::blocking_threads`] for password
//! checks: threads do not grow with connections.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::{Controller, lock};

/// The bounds of the API server. [`LIMITS`] is what the appliance runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open API connections at once, from every client together.
    pub max_connections: usize,
    /// Open API connections at once from one client address.
    pub max_per_client: usize,
    /// Open connections at once on the health listener.
    pub max_health_connections: usize,
    /// The request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Header lines per request.
    pub max_headers: usize,
    /// Seconds a client has to send a request's head.
    pub header_secs: u64,
    /// A request body, in bytes (an event is a few dozen).
    pub max_body: u64,
    /// Seconds a client has to send a request's body.
    pub body_secs: u64,
    /// Seconds a connection lives, however busy (keep-alive included).
    pub connection_secs: u64,
    /// Threads that check operator passwords (argon2id: memory- and CPU-hard on purpose).
    pub blocking_threads: usize,
}

pub const LIMITS: Limits = Limits {
    max_connections: 1024,
    max_per_client: 16,
    max_health_connections: 8,
    max_header_bytes: 16 * 1024,
    max_headers: 64,
    header_secs: 5,
    max_body: 4096,
    body_secs: 5,
    connection_secs: 60,
    blocking_threads: 2,
};

/// Largest operators file read (a few dozen operators).
const MAX_OPERATORS_FILE: u64 = 64 * 1024;
/// The most memory an operator's argon2 hash may ask for (KiB), and passes: a hash from the
/// signed profile is trusted, but bounded all the same.
const MAX_ARGON2_M_KIB: u32 = 256 * 1024;
const MAX_ARGON2_T: u32 = 16;

/// Where the operators of the site profile in force are (`NAME:$argon2id$…` lines, written
/// by the update agent; absent before any profile: then nobody may write).
#[derive(Debug, Clone)]
pub struct Operators {
    pub file: Option<PathBuf>,
}

struct Ctx {
    controller: Arc<Mutex<Controller>>,
    operators: Operators,
    limits: Limits,
    per_client: Mutex<BTreeMap<IpAddr, usize>>,
    /// At most this many password checks run (or wait to run) at once.
    checks: Semaphore,
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn closing(mut r: Resp) -> Resp {
    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Api,
    /// Loopback only: `GET /health` and nothing else.
    Health,
}

/// Serves `api` (and `health`, when given) until `stop` is set, then returns. The listeners
/// are bound by the caller (so that a bad address is its error, said before anything runs).
pub fn serve(
    controller: Arc<Mutex<Controller>>,
    api: std::net::TcpListener,
    health: Option<std::net::TcpListener>,
    operators: Operators,
    limits: Limits,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(limits.blocking_threads.max(1))
        .build()?;
    let ctx = Arc::new(Ctx {
        controller,
        operators,
        limits,
        per_client: Mutex::new(BTreeMap::new()),
        checks: Semaphore::new(limits.blocking_threads.max(1) * 4),
    });
    rt.block_on(async move {
        api.set_nonblocking(true)?;
        let api = TcpListener::from_std(api)?;
        let api_slots = Arc::new(Semaphore::new(limits.max_connections));
        let mut tasks = vec![tokio::spawn(accept_loop(api, Role::Api, api_slots, Arc::clone(&ctx)))];
        if let Some(h) = health {
            h.set_nonblocking(true)?;
            let h = TcpListener::from_std(h)?;
            let slots = Arc::new(Semaphore::new(limits.max_health_connections));
            tasks.push(tokio::spawn(accept_loop(h, Role::Health, slots, Arc::clone(&ctx))));
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for t in tasks {
            t.abort();
        }
        Ok(())
    })
}

/// A client slot: counted per address while the connection lives.
struct Slot {
    ctx: Arc<Ctx>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.ctx.per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

fn take_slot(ctx: &Arc<Ctx>, slots: &Arc<Semaphore>, ip: IpAddr, role: Role) -> Option<Slot> {
    let permit = Arc::clone(slots).try_acquire_owned().ok()?;
    let mut m = ctx.per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = m.entry(ip).or_insert(0);
    // The health listener is loopback's alone: its own bound is the one that counts.
    if role == Role::Api && *n >= ctx.limits.max_per_client {
        return None;
    }
    *n += 1;
    Some(Slot { ctx: Arc::clone(ctx), ip, _permit: permit })
}

async fn accept_loop(listener: TcpListener, role: Role, slots: Arc<Semaphore>, ctx: Arc<Ctx>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            // Out of file descriptors or a connection reset before accept: go on.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match take_slot(&ctx, &slots, peer.ip(), role) {
            Some(slot) => {
                tokio::spawn(connection(stream, role, slot));
            }
            None => {
                tokio::spawn(busy(stream));
            }
        }
    }
}

/// Over a bound: a short `503` and the connection closed (nothing of the request is read).
async fn busy(mut stream: TcpStream) {
    let body = "{\"error\":\"too many connections: try again\"}\n";
    let text = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(text.as_bytes())).await;
}

async fn connection(stream: TcpStream, role: Role, slot: Slot) {
    let ctx = Arc::clone(&slot.ctx);
    let limits = ctx.limits;
    let svc = hyper::service::service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handle(req, role, &ctx).await) }
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_secs))
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192) * 2);
    let conn = b.serve_connection(TokioIo::new(stream), svc);
    let _ = tokio::time::timeout(Duration::from_secs(limits.connection_secs), conn).await;
    drop(slot);
}

async fn handle(req: Request<Incoming>, role: Role, ctx: &Ctx) -> Resp {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    if role == Role::Health && !(method == "GET" && path == "/health") {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"the health listener serves GET /health alone"}"#);
    }
    // A declared body over the bound is refused before a byte of it is read.
    let declared = req.headers().get(CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()));
    match declared {
        Some(None) => return closing(reply(StatusCode::BAD_REQUEST, r#"{"error":"bad Content-Length"}"#)),
        Some(Some(n)) if n > ctx.limits.max_body => {
            return closing(reply(StatusCode::PAYLOAD_TOO_LARGE, r#"{"error":"request body too large"}"#));
        }
        _ => {}
    }
    let is_write = method == "POST";
    let operator = if is_write {
        match authorize(req.headers().get(hyper::header::AUTHORIZATION), ctx).await {
            Ok(name) => Some(name),
            Err(resp) => return closing(resp),
        }
    } else {
        None
    };
    let body = Limited::new(req.into_body(), ctx.limits.max_body as usize);
    match tokio::time::timeout(Duration::from_secs(ctx.limits.body_secs), body.collect()).await {
        Err(_) => return closing(reply(StatusCode::REQUEST_TIMEOUT, r#"{"error":"request body not sent in time"}"#)),
        Ok(Err(_)) => return closing(reply(StatusCode::PAYLOAD_TOO_LARGE, r#"{"error":"request body too large"}"#)),
        Ok(Ok(_)) => {}
    }
    let mut c = lock(&ctx.controller);
    let (status, body) = c.handle(&method, &path);
    if is_write && status == 200 {
        if let Err(e) = c.save() {
            eprintln!("parking-controller: saving state: {e}");
        }
        eprintln!("parking-controller: operator {} {path}", operator.unwrap_or_default());
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply(status, &body)
}

fn unauthorized(why: &str) -> Resp {
    let mut r = reply(StatusCode::UNAUTHORIZED, &format!("{{\"error\":\"{why}\"}}"));
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"airlock operator API\", charset=\"UTF-8\""));
    r
}

/// The operator a write comes from: HTTP Basic, checked against the site profile's argon2id
/// hashes on the blocking pool.
async fn authorize(header: Option<&HeaderValue>, ctx: &Ctx) -> Result<String, Resp> {
    use base64::Engine as _;
    let Some(h) = header else {
        return Err(unauthorized("writes need an operator of the site profile (HTTP Basic)"));
    };
    let creds = h
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Basic "))
        .filter(|b| b.len() <= 1024)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let Some((user, password)) = creds else { return Err(unauthorized("malformed Basic credentials")) };
    let Some(file) = ctx.operators.file.clone() else {
        return Err(unauthorized("this controller has no operators: writes are refused"));
    };
    let Ok(_permit) = ctx.checks.try_acquire() else {
        return Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"too many password checks at once: try again"}"#,
        ));
    };
    let u = user.clone();
    let ok = tokio::task::spawn_blocking(move || check_operator(&file, &u, &password)).await.unwrap_or(Ok(false));
    match ok {
        Ok(true) => Ok(user),
        Ok(false) => Err(unauthorized("unknown operator or wrong password")),
        Err(e) => {
            eprintln!("parking-controller: operators: {e}");
            Err(unauthorized("no operators in force"))
        }
    }
}

/// Whether `user` with `password` is an operator in `file`. A hash whose parameters exceed the
/// bounds is never computed.
pub fn check_operator(file: &std::path::Path, user: &str, password: &str) -> Result<bool, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut text = String::new();
    f.take(MAX_OPERATORS_FILE + 1).read_to_string(&mut text).map_err(|e| format!("{}: {e}", file.display()))?;
    if text.len() as u64 > MAX_OPERATORS_FILE {
        return Err(format!("{}: larger than {MAX_OPERATORS_FILE} bytes", file.display()));
    }
    let Some(hash) = text.lines().find_map(|l| l.split_once(':').filter(|(n, _)| *n == user).map(|(_, h)| h)) else {
        // Spend the same work on an unknown name as on a known one: names are not probed.
        let _ = verify(DUMMY_HASH, password);
        return Ok(false);
    };
    verify(hash, password)
}

/// A valid argon2id hash (m=16 MiB, t=2) of nothing anyone types, made with Debian's `argon2`.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=16384,t=2,p=1$YWlybG9ja2R1bW15c2FsdA$fSLz7oFT9QwFp7c0ip1iZ+7zWjkd5HwRX9jBf2/3Ccc";

fn verify(hash: &str, password: &str) -> Result<bool, String> {
    use argon2::password_hash::PasswordVerifier as _;
    let parsed = argon2::password_hash::phc::PasswordHash::new(hash).map_err(|e| format!("operator hash: {e}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!("operator hash: {} (argon2id only)", parsed.algorithm));
    }
    let param = |k: &str| parsed.params.get_decimal(k).unwrap_or(u32::MAX);
    if param("m") > MAX_ARGON2_M_KIB || param("t") > MAX_ARGON2_T || param("p") > 8 {
        return Err("operator hash: parameters above the controller's bounds (m ≤ 256 MiB, t ≤ 16, p ≤ 8)".into());
    }
    Ok(argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

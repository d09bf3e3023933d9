//! A small HTTP/1.1 reverse proxy in front of a test registry, so pull tests can inject
//! faults (corrupt or cut blobs, altered manifests, CDN redirects) and a bearer-token
//! auth flow that docker-registry alone does not offer. Blocking std::net, one thread
//! per client connection, one upstream connection per request; bodies are buffered
//! whole (test images are small). Also a minimal HTTP client, `request`.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a connection may sit idle (or an upstream answer take) before its thread
/// gives up. Drop does not wait for it: it shuts the client sockets down.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub type Headers = Vec<(String, String)>;

/// What the proxy does to the traffic it forwards.
pub enum Fault {
    None,
    /// Flip one byte in the middle of the body of GET .../blobs/<digest>.
    CorruptBlob(String),
    /// GET/HEAD .../manifests/<reference>: a "\n" appended to the body (Content-Length
    /// fixed, upstream Docker-Content-Digest kept), for this reference only ("*" = all).
    AlterManifest(String),
    /// The first GET of .../blobs/<digest> gets the headers (full Content-Length), half
    /// of the body, then a closed socket. Later requests pass through.
    CutBlobOnce(String),
    /// The first GET of .../blobs/<digest> gets the headers and half of the body, then
    /// nothing until the proxy is dropped (a client killed mid-download). Later requests
    /// pass through.
    StallBlobOnce(String),
    /// GET .../blobs/* answers 307 to the same path on the proxy's "cdn" listener, which
    /// serves the blob and records whether the request carried Authorization.
    RedirectBlobs,
}

/// The token endpoint of `Proxy::start_with_bearer` requires these as basic credentials.
pub struct BearerAuth {
    pub user: String,
    pub password: String,
}

/// A running proxy; its listeners and connection threads end on drop.
pub struct Proxy {
    addr: SocketAddr,
    cdn_addr: SocketAddr,
    shared: Arc<Shared>,
    accept_threads: Vec<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    fault: Fault,
    auth: Option<BearerAuth>,
    host: String,
    cdn_host: String,
    stop: AtomicBool,
    requests: Mutex<Vec<String>>,
    cdn_requests: Mutex<Vec<(String, bool)>>,
    tokens: Mutex<HashSet<String>>,
    token_requests: AtomicUsize,
    cut_done: AtomicBool,
    /// Every accepted client socket (a clone, to shut it down) and its thread.
    conns: Mutex<Vec<(TcpStream, JoinHandle<()>)>>,
}

/// What a handler wants sent back.
enum Reply {
    Full(Response),
    /// Half the body, then the socket is shut.
    Cut(Response),
    /// Half the body, then silence until the proxy stops.
    Stall(Response),
}

impl Proxy {
    pub fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        Proxy::launch(upstream, fault, None)
    }

    /// Every /v2 request needs `Authorization: Bearer <token>` from GET /token, which
    /// needs `auth` as basic credentials. Authorized requests go upstream without the
    /// Authorization header.
    pub fn start_with_bearer(upstream: SocketAddr, fault: Fault, auth: BearerAuth) -> Proxy {
        Proxy::launch(upstream, fault, Some(auth))
    }

    fn launch(upstream: SocketAddr, fault: Fault, auth: Option<BearerAuth>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let cdn = TcpListener::bind("127.0.0.1:0").expect("bind proxy cdn");
        let addr = listener.local_addr().expect("proxy addr");
        let cdn_addr = cdn.local_addr().expect("proxy cdn addr");
        let shared = Arc::new(Shared {
            upstream,
            fault,
            auth,
            host: addr.to_string(),
            cdn_host: cdn_addr.to_string(),
            stop: AtomicBool::new(false),
            requests: Mutex::default(),
            cdn_requests: Mutex::default(),
            tokens: Mutex::default(),
            token_requests: AtomicUsize::new(0),
            cut_done: AtomicBool::new(false),
            conns: Mutex::default(),
        });
        let accept_threads = vec![
            spawn_accept(listener, shared.clone(), false),
            spawn_accept(cdn, shared.clone(), true),
        ];
        Proxy {
            addr,
            cdn_addr,
            shared,
            accept_threads,
        }
    }

    /// "127.0.0.1:PORT"
    pub fn host(&self) -> String {
        self.shared.host.clone()
    }

    /// How many GET /token were answered 200.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// "METHOD TARGET" (TARGET: path and query) of every request on the main listener,
    /// in order, with " range=<Range header>" appended when the request had one.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// (target, had Authorization) of every request on the cdn listener.
    pub fn cdn_requests(&self) -> Vec<(String, bool)> {
        lock(&self.shared.cdn_requests).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for addr in [self.addr, self.cdn_addr] {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        for thread in self.accept_threads.drain(..) {
            let _ = thread.join();
        }
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for (stream, _) in &conns {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, thread) in conns {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spawn_accept(listener: TcpListener, shared: Arc<Shared>, cdn: bool) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let Ok(stream) = stream else { continue };
            let Ok(clone) = stream.try_clone() else { continue };
            let state = shared.clone();
            let thread = std::thread::spawn(move || serve_connection(&state, stream, cdn));
            let mut conns = lock(&shared.conns);
            conns.retain(|(_, thread)| !thread.is_finished());
            conns.push((clone, thread));
        }
    })
}

/// Answers requests on one client connection until it closes, asks to close, or is cut;
/// then shuts the socket (Shared::conns holds another handle to it).
fn serve_connection(shared: &Shared, stream: TcpStream, cdn: bool) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    if let Ok(read_half) = stream.try_clone() {
        answer_requests(shared, &mut BufReader::new(read_half), &stream, cdn);
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn answer_requests(shared: &Shared, reader: &mut impl BufRead, mut writer: &TcpStream, cdn: bool) {
    while let Ok(Some(req)) = read_request(reader) {
        let close = req
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = if cdn {
            handle_cdn(shared, &req)
        } else {
            handle(shared, &req)
        };
        let sent = match reply {
            Reply::Full(resp) => write_response(&mut writer, &resp, &resp.body, close),
            Reply::Cut(resp) => {
                let half = &resp.body[..resp.body.len() / 2];
                let _ = write_response(&mut writer, &resp, half, true);
                return;
            }
            Reply::Stall(resp) => {
                let half = &resp.body[..resp.body.len() / 2];
                let _ = write_response(&mut writer, &resp, half, true);
                while !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        };
        if sent.is_err() || close {
            return;
        }
    }
}

/// The main listener: record, authorize, redirect, forward, then apply the fault.
fn handle(shared: &Shared, req: &Request) -> Reply {
    let mut line = format!("{} {}", req.method, req.target);
    if let Some(range) = req.header("Range") {
        line += &format!(" range={range}");
    }
    lock(&shared.requests).push(line);
    if let Some(auth) = &shared.auth {
        if req.path() == "/token" {
            return Reply::Full(token(shared, auth, req));
        }
        if req.path().starts_with("/v2") && !has_valid_token(shared, req) {
            return Reply::Full(unauthorized(shared, req.path()));
        }
    }
    let blob = blob_digest(req.path());
    if matches!(shared.fault, Fault::RedirectBlobs) && req.method == "GET" && blob.is_some() {
        let location = format!("http://{}{}", shared.cdn_host, req.target);
        return Reply::Full(Response::new(307, vec![("Location".into(), location)], ""));
    }
    let resp = forward(shared, req, shared.auth.is_some());
    apply_fault(shared, req, resp)
}

/// The cdn listener: record, then serve from upstream (no credentials needed).
fn handle_cdn(shared: &Shared, req: &Request) -> Reply {
    let authorized = req.header("Authorization").is_some();
    lock(&shared.cdn_requests).push((req.target.clone(), authorized));
    Reply::Full(forward(shared, req, true))
}

fn apply_fault(shared: &Shared, req: &Request, mut resp: Response) -> Reply {
    let ok = resp.status == 200 || resp.status == 206;
    let get = req.method == "GET";
    let path = req.path();
    match &shared.fault {
        Fault::CorruptBlob(digest) if get && ok && blob_digest(path) == Some(digest.as_str()) => {
            let middle = resp.body.len() / 2;
            if let Some(byte) = resp.body.get_mut(middle) {
                *byte ^= 0xff;
            }
        }
        Fault::AlterManifest(reference)
            if ok && manifest_reference(path).is_some_and(|r| reference == "*" || r == reference) =>
        {
            if get {
                resp.body.push(b'\n');
            }
            resp.content_length += 1;
        }
        Fault::CutBlobOnce(digest)
            if get && blob_digest(path) == Some(digest.as_str()) && !shared.cut_done.swap(true, Ordering::SeqCst) =>
        {
            return Reply::Cut(resp);
        }
        Fault::StallBlobOnce(digest)
            if get && blob_digest(path) == Some(digest.as_str()) && !shared.cut_done.swap(true, Ordering::SeqCst) =>
        {
            return Reply::Stall(resp);
        }
        _ => {}
    }
    Reply::Full(resp)
}

/// Sends `req` upstream (Host, Location and hop-by-hop headers adjusted); 502 on failure.
fn forward(shared: &Shared, req: &Request, strip_auth: bool) -> Response {
    let headers: Headers = req
        .headers
        .iter()
        .filter(|(k, _)| !(strip_auth && k.eq_ignore_ascii_case("Authorization")))
        .cloned()
        .collect();
    let upstream = Request {
        method: req.method.clone(),
        target: req.target.clone(),
        headers,
        body: req.body.clone(),
    };
    let mut resp = match send(shared.upstream, &upstream) {
        Ok(resp) => resp,
        Err(e) => return Response::new(502, Vec::new(), &format!("upstream: {e}\n")),
    };
    let from = format!("http://{}", shared.upstream);
    for (name, value) in resp.headers.iter_mut() {
        if name.eq_ignore_ascii_case("Location") && value.starts_with(&from) {
            *value = format!("http://{}{}", shared.host, &value[from.len()..]);
        }
    }
    resp
}

/// GET /token: basic credentials checked, then a fresh token.
fn token(shared: &Shared, auth: &BearerAuth, req: &Request) -> Response {
    let expected = basic_auth(&auth.user, &auth.password);
    if req.header("Authorization") != Some(expected.as_str()) {
        let challenge = ("WWW-Authenticate".into(), "Basic realm=\"petri-test\"".into());
        return Response::new(401, vec![challenge], "bad credentials\n");
    }
    let mut tokens = lock(&shared.tokens);
    let token = format!("tok-{}", tokens.len() + 1);
    tokens.insert(token.clone());
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format time");
    let body = serde_json::json!({
        "token": token, "access_token": token, "expires_in": 300, "issued_at": now,
    });
    let json = ("Content-Type".into(), "application/json".into());
    Response::new(200, vec![json], &body.to_string())
}

fn has_valid_token(shared: &Shared, req: &Request) -> bool {
    req.header("Authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| lock(&shared.tokens).contains(token.trim()))
}

/// 401 with a Bearer challenge naming the token endpoint and, but for /v2/, the scope.
fn unauthorized(shared: &Shared, path: &str) -> Response {
    let mut challenge = format!("Bearer realm=\"http://{}/token\",service=\"petri-test\"", shared.host);
    if let Some(repo) = repository(path) {
        challenge += &format!(",scope=\"repository:{repo}:pull\"");
    }
    let headers = vec![
        ("WWW-Authenticate".into(), challenge),
        ("Content-Type".into(), "application/json".into()),
        ("Docker-Distribution-API-Version".into(), "registry/2.0".into()),
    ];
    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
    Response::new(401, headers, body)
}

/// The repository and the rest of a /v2/<repo>/(manifests|blobs|tags)/<rest> path.
fn split_v2(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|kind| {
            let (repo, tail) = rest.rsplit_once(kind)?;
            Some((repo, &kind[1..kind.len() - 1], tail))
        })
        .max_by_key(|(repo, _, _)| repo.len())
}

fn repository(path: &str) -> Option<&str> {
    split_v2(path).map(|(repo, _, _)| repo)
}

fn blob_digest(path: &str) -> Option<&str> {
    split_v2(path).and_then(|(_, kind, rest)| (kind == "blobs").then_some(rest))
}

fn manifest_reference(path: &str) -> Option<&str> {
    split_v2(path).and_then(|(_, kind, rest)| (kind == "manifests").then_some(rest))
}

/// "Basic base64(user:password)"
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | ((b as u32) << (16 - 8 * i)));
        for i in 0..4 {
            let c = if i <= chunk.len() {
                ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            };
            out.push(c);
        }
    }
    out
}

// ---- HTTP/1.1 messages ----

pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// The Content-Length to announce: body.len(), except for a HEAD answer.
    pub content_length: usize,
}

impl Response {
    fn new(status: u16, headers: Headers, body: &str) -> Response {
        let reason = match status {
            200 => "OK",
            307 => "Temporary Redirect",
            401 => "Unauthorized",
            502 => "Bad Gateway",
            _ => "",
        };
        Response {
            status,
            reason: reason.to_string(),
            headers,
            body: body.as_bytes().to_vec(),
            content_length: body.len(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Headers a proxy does not pass on; Content-Length and Host are set anew.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Transfer-Encoding",
        "TE",
        "Trailer",
        "Upgrade",
        "Content-Length",
        "Host",
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(name))
}

/// One request from a client, answered with Connection: close; HEAD answers keep the
/// announced Content-Length in `content_length`.
pub fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    let req = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: Vec::new(),
    };
    send(addr, &req)
}

/// Sends `req` on a fresh connection (Host set to `addr`, Connection: close).
fn send(addr: SocketAddr, req: &Request) -> io::Result<Response> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut head = format!("{} {} HTTP/1.1\r\nHost: {addr}\r\n", req.method, req.target);
    for (name, value) in req.headers.iter().filter(|(k, _)| !is_hop_by_hop(k)) {
        head += &format!("{name}: {value}\r\n");
    }
    if !req.body.is_empty() {
        head += &format!("Content-Length: {}\r\n", req.body.len());
    }
    head += "Connection: close\r\n\r\n";
    (&stream).write_all(head.as_bytes())?;
    (&stream).write_all(&req.body)?;
    read_response(&mut BufReader::new(stream), &req.method)
}

/// The next request on a client connection; None when the client closed it. Anything
/// that does not start like HTTP (a client trying TLS first, as skopeo does) is an
/// error at once, so the connection closes instead of waiting for a line.
fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    match r.fill_buf()?.first() {
        None => return Ok(None),
        Some(b) if !b.is_ascii_uppercase() => return Err(invalid("not HTTP".into())),
        Some(_) => {}
    }
    let Some((line, headers)) = read_head(r)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("request line {line:?}")));
    };
    let body = read_body(r, &headers, false)?;
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body,
    }))
}

fn read_response(r: &mut impl BufRead, method: &str) -> io::Result<Response> {
    let (line, headers) = read_head(r)?.ok_or_else(|| invalid("no response".into()))?;
    let mut parts = line.splitn(3, ' ');
    let status: u16 = parts
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("status line {line:?}")))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let bodiless = method == "HEAD" || status == 204 || status == 304 || status < 200;
    let body = if bodiless {
        Vec::new()
    } else {
        read_body(r, &headers, true)?
    };
    let content_length = match header(&headers, "Content-Length") {
        Some(n) if method == "HEAD" => n.parse().unwrap_or(0),
        _ => body.len(),
    };
    Ok(Response {
        status,
        reason,
        headers,
        body,
        content_length,
    })
}

/// The start line and headers; None at a clean end of stream.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<(String, Headers)>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let start = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let text = line.trim_end();
        if text.is_empty() {
            return Ok(Some((start, headers)));
        }
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| invalid(format!("header {text:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
}

/// A chunked or Content-Length body; without either, nothing, or (`to_eof`) the rest.
fn read_body(r: &mut impl BufRead, headers: &[(String, String)], to_eof: bool) -> io::Result<Vec<u8>> {
    let chunked = header(headers, "Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(r);
    }
    let mut body = Vec::new();
    match header(headers, "Content-Length") {
        Some(n) => {
            let n: usize = n.parse().map_err(|_| invalid(format!("Content-Length {n:?}")))?;
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None if to_eof => {
            r.read_to_end(&mut body)?;
        }
        None => {}
    }
    Ok(body)
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| invalid(format!("chunk size {line:?}")))?;
        if size == 0 {
            break;
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        line.clear();
        r.read_line(&mut line)?;
    }
    // Trailers, up to the empty line.
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(body);
        }
    }
}

/// Status, headers (hop-by-hop dropped, Content-Length set), then `body`.
fn write_response(w: &mut impl Write, resp: &Response, body: &[u8], close: bool) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
    for (name, value) in resp.headers.iter().filter(|(k, _)| !is_hop_by_hop(k)) {
        head += &format!("{name}: {value}\r\n");
    }
    head += &format!("Content-Length: {}\r\n", resp.content_length);
    if close {
        head += "Connection: close\r\n";
    }
    head += "\r\n";
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

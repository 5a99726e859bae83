//! A programmable HTTP/1.1 front for the lab registry (test-only).
//!
//! Listens on 127.0.0.1:<free port>, forwards every request to the real registry (streaming both
//! ways, headers including Authorization kept), records what it saw, and on request lies
//! (per-client manifest overrides, canned blobs) or misbehaves (oversized, endless or stalled
//! bodies, hostile signature manifests, arbitrary canned responses) under a path prefix.
//!
//! Moving-tag recipe (what the tests should do): push the evil image to the *real* registry under
//! another tag (`lab.push_image("x/y:evil", "evil")`), read its manifest bytes with
//! [`manifest`]`(&lab.registry, "x/y", "evil")`, then
//! `front.override_manifest("x/y", "1", bytes, &media_type, Client::Containerd)`. The evil config
//! and layers already exist upstream, so containerd can finish its pull; `override_blob` is only
//! for blobs that exist nowhere. containerd talks plain HTTP only to hosts under the lab's
//! certs.d, so call [`Front::trust_in`] before it pulls through the front.
//!
//! Precedence per request: hostile prefix (newest first), manifest override (newest first, GET/HEAD
//! only), blob override (GET/HEAD only), else forward. Every request is recorded first.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// All manifest types; distribution 2.x answers 404 for an OCI manifest unless asked for it.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";
/// Size of one chunk of junk in hostile bodies.
const CHUNK: usize = 64 * 1024;
static FILL: [u8; CHUNK] = [b'a'; CHUNK];

/// One request as the front received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub user_agent: String,
}

impl Seen {
    pub fn is_containerd(&self) -> bool {
        self.user_agent.starts_with("containerd")
    }

    pub fn is_read(&self) -> bool {
        self.method == "GET" || self.method == "HEAD"
    }

    /// GET/HEAD of `/v2/<repo>/manifests/<ref>` or `/v2/<repo>/blobs/<digest>` (uploads excluded).
    pub fn reads_repo(&self, repo: &str) -> bool {
        self.is_read() && split(&self.path).is_some_and(|(r, _, _)| r == repo)
    }
}

/// Which clients an override applies to, by User-Agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// User-Agent starts with "containerd".
    Containerd,
    /// Everyone else (pullgate sends "pullgate/…").
    Others,
    Any,
}

impl Client {
    fn matches(self, user_agent: &str) -> bool {
        let containerd = user_agent.starts_with("containerd");
        match self {
            Client::Containerd => containerd,
            Client::Others => !containerd,
            Client::Any => true,
        }
    }
}

/// Misbehaviour for every request (any method, any client) under a path prefix.
#[derive(Clone, Debug)]
pub enum Hostile {
    /// 200, OCI manifest Content-Type, correct Content-Length and Docker-Content-Digest, and a body
    /// of exactly n bytes of JSON-shaped junk.
    OversizedManifest(usize),
    /// 200, chunked, never ends.
    EndlessBody,
    /// 200 with Content-Length 4096, then nothing; the connection stays open. (A HEAD request
    /// is complete after the headers, so it does not stall.)
    StallAfterHeaders,
    /// A well-formed OCI signature manifest with n simplesigning layers (blobs exist nowhere).
    SignatureLayers(usize),
    /// A canned response: status, Content-Type, body (correct Content-Length).
    Body(u16, String, Bytes),
    /// 200 whose head carries n headers of 1 KiB each before an empty body.
    HugeHead(usize),
}

struct ManifestOverride {
    repo: String,
    reference: String,
    bytes: Bytes,
    media_type: String,
    when: Client,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    manifests: Vec<ManifestOverride>,
    blobs: Vec<(String, String, Bytes)>,
    hostile: Vec<(String, Hostile)>,
    held: Vec<(String, tokio::sync::watch::Receiver<bool>)>,
    /// Every request must carry exactly this Authorization; others get a Basic challenge.
    authorization: Option<String>,
    delays: Vec<(String, Duration)>,
}

pub struct Front {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the front's records from the others.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Front {
    /// Starts the front on the current tokio runtime (panics outside one).
    pub fn start(upstream: &str) -> Front {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("front: bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("front: set_nonblocking");
        let listener = TcpListener::from_std(listener).expect("front: Front::start must run inside a tokio runtime");
        let addr = listener.local_addr().expect("front: local_addr");
        let state = Arc::new(Mutex::new(State::default()));
        let accept = tokio::spawn(accept_loop(listener, state.clone(), Arc::from(upstream)));
        Front { addr, state, accept }
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }

    pub fn count(&self, pred: impl Fn(&Seen) -> bool) -> usize {
        lock(&self.state).seen.iter().filter(|s| pred(s)).count()
    }

    /// GET/HEAD of `repo`'s manifests and blobs by anything but containerd (i.e. pullgate).
    pub fn reads_by_others(&self, repo: &str) -> usize {
        self.count(|s| s.reads_repo(repo) && !s.is_containerd())
    }

    pub fn clear_requests(&self) {
        lock(&self.state).seen.clear();
    }

    /// Drops all overrides and hostile behaviours (records stay).
    pub fn clear_rules(&self) {
        let mut state = lock(&self.state);
        state.manifests.clear();
        state.blobs.clear();
        state.hostile.clear();
    }

    /// Serve `bytes` for GET/HEAD `/v2/<repo>/manifests/<reference>` to clients matching `when`.
    pub fn override_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: impl Into<Bytes>,
        media_type: &str,
        when: Client,
    ) {
        HeaderValue::from_str(media_type).expect("front: media type must be a valid header value");
        let entry = ManifestOverride {
            repo: repo.into(),
            reference: reference.into(),
            bytes: bytes.into(),
            media_type: media_type.into(),
            when,
        };
        lock(&self.state).manifests.push(entry);
    }

    /// Serve `bytes` for GET/HEAD `/v2/<repo>/blobs/<digest>` to every client.
    pub fn override_blob(&self, repo: &str, digest: &str, bytes: impl Into<Bytes>) {
        lock(&self.state).blobs.push((repo.into(), digest.into(), bytes.into()));
    }

    /// Requests whose path starts with `path_prefix` wait, unanswered, until the returned
    /// `Hold` is released (or dropped); then they are served as usual.
    pub fn hold(&self, path_prefix: &str) -> Hold {
        let (release, held) = tokio::sync::watch::channel(false);
        lock(&self.state).held.push((path_prefix.into(), held));
        Hold(release)
    }

    /// From now on, answers 401 with `WWW-Authenticate: Basic` to any request whose
    /// Authorization is not `value`: a mirror with credentials of its own.
    pub fn require_authorization(&self, value: &str) {
        lock(&self.state).authorization = Some(value.to_owned());
    }

    /// Requests whose path starts with `path_prefix` are answered `delay` late (the longest
    /// delay of those matching): a registry a fixed round trip away.
    pub fn delay(&self, path_prefix: &str, delay: Duration) {
        lock(&self.state).delays.push((path_prefix.into(), delay));
    }

    pub fn hostile(&self, path_prefix: &str, behaviour: Hostile) {
        if let Hostile::Body(status, content_type, _) = &behaviour {
            StatusCode::from_u16(*status).expect("front: Hostile::Body status must be 100..=999");
            HeaderValue::from_str(content_type)
                .expect("front: Hostile::Body content type must be a valid header value");
        }
        if let Hostile::OversizedManifest(n) = &behaviour {
            // Hashed here, on the caller's thread, so serving it does not stall the runtime.
            junk_digest(*n);
        }
        lock(&self.state).hostile.push((path_prefix.into(), behaviour));
    }

    /// Lets the lab's containerd pull from this front over plain HTTP (writes its certs.d entry).
    pub fn trust_in(&self, lab: &super::lab::Lab) {
        let dir = lab.dir.path().join("certs.d").join(self.addr());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("front: mkdir {}: {e}", dir.display()));
        let host = self.addr();
        let toml = format!(
            "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        std::fs::write(dir.join("hosts.toml"), toml).unwrap_or_else(|e| panic!("front: write hosts.toml: {e}"));
    }
}

/// Keeps the requests of `Front::hold` waiting until `release`.
pub struct Hold(tokio::sync::watch::Sender<bool>);

impl Hold {
    pub fn release(&self) {
        self.0.send_replace(true);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        // The accept task owns the connection JoinSet: aborting it also ends open connections.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, upstream: Arc<str>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let (state, upstream) = (state.clone(), upstream.clone());
        let service = hyper::service::service_fn(move |req| handle(state.clone(), upstream.clone(), req));
        connections.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// `/v2/<repo>/(manifests|blobs)/<reference>` → (repo, kind, reference); None for uploads etc.
fn split(path: &str) -> Option<(&str, &'static str, &str)> {
    let rest = path.strip_prefix("/v2/")?;
    ["manifests", "blobs"].into_iter().find_map(|kind| {
        let (repo, reference) = rest.rsplit_once(&format!("/{kind}/"))?;
        (!repo.is_empty() && !reference.is_empty() && !reference.contains('/')).then_some((repo, kind, reference))
    })
}

enum Plan {
    Hostile(Hostile),
    Serve(Bytes, String),
}

fn plan(state: &State, path: &str, user_agent: &str, read: bool) -> Option<Plan> {
    if let Some((_, h)) = state.hostile.iter().rev().find(|(prefix, _)| path.starts_with(prefix.as_str())) {
        return Some(Plan::Hostile(h.clone()));
    }
    let (repo, kind, reference) = split(path).filter(|_| read)?;
    if kind == "manifests" {
        let hit = state
            .manifests
            .iter()
            .rev()
            .find(|o| o.repo == repo && o.reference == reference && o.when.matches(user_agent));
        return hit.map(|o| Plan::Serve(o.bytes.clone(), o.media_type.clone()));
    }
    let hit = state.blobs.iter().rev().find(|(r, d, _)| r == repo && d == reference);
    hit.map(|(_, _, bytes)| Plan::Serve(bytes.clone(), "application/octet-stream".into()))
}

async fn handle(
    state: Arc<Mutex<State>>,
    upstream: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let path = req.uri().path().to_owned();
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    let (held, delay): (Vec<_>, _) = {
        let mut state = lock(&state);
        state.seen.push(Seen { method: req.method().to_string(), path: path.clone(), user_agent: user_agent.clone() });
        let held =
            state.held.iter().filter(|(prefix, _)| path.starts_with(prefix.as_str())).map(|(_, h)| h.clone()).collect();
        let delay = state.delays.iter().filter(|(prefix, _)| path.starts_with(prefix.as_str())).map(|(_, d)| *d).max();
        (held, delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    for mut hold in held {
        // A dropped `Hold` releases too (the wait then ends with an error).
        let _ = hold.wait_for(|released| *released).await;
    }
    let required = lock(&state).authorization.clone();
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if required.is_some_and(|required| given != Some(required.as_str())) {
        let challenge = Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"front\"")
            .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed_unsync());
        return Ok(challenge.expect("a 401 response"));
    }
    let planned = plan(&lock(&state), &path, &user_agent, read);
    Ok(match planned {
        Some(Plan::Hostile(h)) => hostile_response(h),
        Some(Plan::Serve(bytes, media_type)) => serve(StatusCode::OK, &media_type, bytes),
        None => match forward(&upstream, req).await {
            Ok(response) => response,
            Err(e) => serve(StatusCode::BAD_GATEWAY, "text/plain", format!("front: upstream {upstream}: {e}").into()),
        },
    })
}

/// A complete response; HEAD gets the same headers (hyper drops the body).
fn serve(status: StatusCode, content_type: &str, bytes: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .header("docker-content-digest", sha256(&bytes))
        .body(Full::new(bytes).map_err(|e| match e {}).boxed_unsync())
        .expect("front: response head (values were checked when the rule was added)")
}

fn streaming<S>(status: StatusCode, headers: &[(&str, String)], chunks: S) -> Response<Body>
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    let mut builder = Response::builder().status(status).header(header::CONTENT_TYPE, OCI_MANIFEST);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let body = StreamBody::new(futures_util::StreamExt::map(chunks, |b| Ok::<_, BoxError>(Frame::data(b))));
    builder.body(body.boxed_unsync()).expect("front: streaming response head")
}

fn hostile_response(behaviour: Hostile) -> Response<Body> {
    match behaviour {
        Hostile::OversizedManifest(n) => {
            let headers = [("content-length", n.to_string()), ("docker-content-digest", junk_digest(n))];
            streaming(StatusCode::OK, &headers, stream::iter(junk(n)))
        }
        Hostile::EndlessBody => streaming(StatusCode::OK, &[], stream::repeat_with(|| Bytes::from_static(&FILL))),
        Hostile::StallAfterHeaders => {
            streaming(StatusCode::OK, &[("content-length", "4096".into())], stream::pending())
        }
        Hostile::SignatureLayers(n) => serve(StatusCode::OK, OCI_MANIFEST, signature_manifest(n)),
        Hostile::HugeHead(n) => {
            let value = String::from_utf8_lossy(&FILL[..1024]).into_owned();
            let headers: Vec<(String, String)> = (0..n).map(|i| (format!("x-junk-{i}"), value.clone())).collect();
            let headers: Vec<(&str, String)> =
                headers.iter().map(|(name, value)| (name.as_str(), value.clone())).collect();
            streaming(StatusCode::OK, &headers, stream::empty())
        }
        Hostile::Body(status, content_type, bytes) => {
            serve(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &content_type, bytes)
        }
    }
}

/// The digest of `junk(n)`, computed once per n per process: hashing 100 MiB takes seconds.
fn junk_digest(n: usize) -> String {
    static DIGESTS: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let mut digests = DIGESTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, digest)) = digests.iter().find(|(size, _)| *size == n) {
        return digest.clone();
    }
    let mut hasher = Sha256::new();
    junk(n).for_each(|chunk| hasher.update(&chunk));
    let digest = format!("sha256:{:x}", hasher.finalize());
    digests.push((n, digest.clone()));
    digest
}

/// Exactly n bytes: `{"schemaVersion":2,"junk":"aaaa…"}` (just `a`s when n is too small for that).
fn junk(n: usize) -> impl Iterator<Item = Bytes> + Send + 'static {
    const HEAD: &[u8] = br#"{"schemaVersion":2,"junk":""#;
    let (head, tail): (&'static [u8], &'static [u8]) = if n >= HEAD.len() + 2 { (HEAD, b"\"}") } else { (b"", b"") };
    let mut fill = n - head.len() - tail.len();
    let middle = std::iter::from_fn(move || {
        let k = fill.min(CHUNK);
        fill -= k;
        (k > 0).then(|| Bytes::from_static(&FILL[..k]))
    });
    std::iter::once(Bytes::from_static(head))
        .chain(middle)
        .chain(std::iter::once(Bytes::from_static(tail)))
        .filter(|b| !b.is_empty())
}

fn signature_manifest(n: usize) -> Bytes {
    let layers: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "mediaType": SIMPLESIGNING,
                "digest": sha256(format!("pullgate-front-layer-{i}").as_bytes()),
                "size": 250,
                "annotations": { "dev.cosignproject.cosign/signature": "MEUCIQDfakefakefakefakefakefakefakefakefakefakefakefakeAiAfakefakefakefakefakefakefakefakefakefakefakefak=" },
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(b"{}"), "size": 2 },
        "layers": layers,
    });
    serde_json::to_vec(&manifest).expect("front: serialise signature manifest").into()
}

const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

async fn forward(upstream: &str, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Ends on its own once the response body is finished or dropped.
    tokio::spawn(connection);
    let (mut parts, body) = req.into_parts();
    // Host stays the front's, so absolute URLs the registry builds (upload Locations) lead back here.
    HOP_BY_HOP.iter().for_each(|h| drop(parts.headers.remove(*h)));
    parts.uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).parse()?;
    let response = sender.send_request(Request::from_parts(parts, body)).await?;
    let (mut parts, body) = response.into_parts();
    HOP_BY_HOP.iter().for_each(|h| drop(parts.headers.remove(*h)));
    Ok(Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync()))
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

// ---- a plain client, for self-tests and for reading manifests straight from the registry ----

/// One request on a fresh connection, with `Accept: ACCEPT_MANIFESTS`; the body is left streaming.
pub async fn send(addr: &str, method: &str, path: &str, user_agent: &str, body: Bytes) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| panic!("http1 handshake with {addr}: {e}"));
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr)
        .header(header::USER_AGENT, user_agent)
        .header(header::ACCEPT, ACCEPT_MANIFESTS)
        .body(Full::new(body))
        .unwrap_or_else(|e| panic!("building {method} {path}: {e}"));
    sender.send_request(request).await.unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    /// A header as text, "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

pub async fn fetch(addr: &str, method: &str, path: &str, user_agent: &str) -> Fetched {
    fetch_with_body(addr, method, path, user_agent, Bytes::new()).await
}

pub async fn fetch_with_body(addr: &str, method: &str, path: &str, user_agent: &str, body: Bytes) -> Fetched {
    let (parts, body) = send(addr, method, path, user_agent, body).await.into_parts();
    let body = body.collect().await.unwrap_or_else(|e| panic!("reading {method} http://{addr}{path}: {e}")).to_bytes();
    Fetched { status: parts.status, headers: parts.headers, body }
}

/// Manifest bytes and media type of `repo:reference` from `registry` (use the real one, so no front counts it).
pub async fn manifest(registry: &str, repo: &str, reference: &str) -> (Bytes, String) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let got = fetch(registry, "GET", &path, "pullgate-tests").await;
    assert_eq!(got.status, StatusCode::OK, "GET http://{registry}{path}: {}", String::from_utf8_lossy(&got.body));
    let media_type = got.header("content-type").to_owned();
    (got.body, media_type)
}

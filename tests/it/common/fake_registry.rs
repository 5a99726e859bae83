//! A tiny HTTP/1.1 server on 127.0.0.1:0 with hand-written responses, so registry tests can
//! make a registry misbehave in ways a real one never would (endless bodies, stalls, lies).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bounds the endless body so a broken client cannot keep a test running forever.
const ENDLESS_BODY_MAX: usize = 64 * 1024 * 1024;
const MAX_HEAD: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// Query parameters, or form fields for a urlencoded POST body.
    pub fn params(&self) -> HashMap<String, String> {
        let raw = match self.method.as_str() {
            "POST" => String::from_utf8_lossy(&self.body).into_owned(),
            _ => self.target.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default(),
        };
        raw.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
    }
}

/// Enough percent-decoding for the ASCII values the tests send.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// 200 with no length, then bytes until the client hangs up.
    Endless,
    /// Headers (with this Content-Length) and then silence.
    StallAfterHeaders {
        content_length: usize,
    },
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Full { status, headers: Vec::new(), body: Vec::new() }
    }

    pub fn ok(content_type: &str, body: &[u8]) -> Reply {
        Reply::status(200).header("Content-Type", content_type).body(body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    pub fn body(mut self, bytes: &[u8]) -> Reply {
        if let Reply::Full { body, .. } = &mut self {
            *body = bytes.to_vec();
        }
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

pub struct FakeRegistry {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
    accept_task: JoinHandle<()>,
}

impl FakeRegistry {
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (log2, conns2) = (log.clone(), connections.clone());
        let accept_task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns2.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, handler.clone(), log2.clone()));
            }
        });
        FakeRegistry { addr, log, connections, accept_task }
    }

    /// "127.0.0.1:<port>", the registry part of image references.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, path_prefix: &str) -> usize {
        self.requests().iter().filter(|r| r.path().starts_with(path_prefix)).count()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn serve(mut stream: TcpStream, handler: Arc<Handler>, log: Arc<Mutex<Vec<Request>>>) {
    let mut buffered = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffered).await {
        log.lock().unwrap().push(request.clone());
        let keep_going = match handler(&request) {
            Reply::Full { status, headers, body } => write_full(&mut stream, status, &headers, &body).await,
            Reply::Endless => write_endless(&mut stream).await,
            Reply::StallAfterHeaders { content_length } => stall(&mut stream, content_length).await,
        };
        if !keep_going {
            return;
        }
    }
}

async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD || read_more(stream, buf).await == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < len {
        if read_more(stream, buf).await == 0 {
            return None;
        }
    }
    let body = buf.drain(..len).collect();
    Some(Request { method, target, headers, body })
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await.unwrap_or(0);
    buf.extend_from_slice(&chunk[..n]);
    n
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

async fn write_full(stream: &mut TcpStream, status: u16, headers: &[(String, String)], body: &[u8]) -> bool {
    let mut out = format!("HTTP/1.1 {status} {}\r\nContent-Length: {}\r\n", reason(status), body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await.is_ok()
}

async fn write_endless(stream: &mut TcpStream) -> bool {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < ENDLESS_BODY_MAX && stream.write_all(&chunk).await.is_ok() {
        sent += chunk.len();
    }
    false
}

async fn stall(stream: &mut TcpStream, content_length: usize) -> bool {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {content_length}\r\n\r\n{{"
    );
    let _ = stream.write_all(head.as_bytes()).await;
    // Longer than any test's timeout; the test runtime drops this task when it ends.
    tokio::time::sleep(Duration::from_secs(120)).await;
    false
}

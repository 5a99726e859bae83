//! Hostile clients of pullgate's own socket, against a real containerd: containerd's native
//! API (what `ctr` speaks) is refused, and clients that never read, open too many connections
//! or use up every file descriptor leave pullgate's memory, CPU and log bounded while a
//! kubelet-like client keeps being served.
//!
//! | attack                                            | what must hold                                |
//! |---------------------------------------------------|-----------------------------------------------|
//! | `ctr -a <pullgate.sock>` pull/import/tag/ls/run   | PermissionDenied naming the service; no image |
//! | HEADERS flood on one connection, never reading    | RSS < 64 MiB; ImageStatus within 1 s          |
//! | more connections than the cap, partial PullImages | RSS < 64 MiB; extra ones closed; ImageStatus  |
//! | a header block that never ends, on every conn.    | GOAWAY past 64 KiB; RSS < 64 MiB              |
//! | idle connections past RLIMIT_NOFILE               | CPU settles; few log lines; served after      |
//! | grpc C-core's `:authority` (a percent-encoded path) | same answers as any client, containerd or not |

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::cri;
use common::lab::Lab;
use common::policy;
use common::process::{Daemon, Serve};
use pullgate::cri::frame;
use pullgate::cri::proto::{ImageStatusRequest, ListImagesRequest};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

/// The issue's bound on pullgate's resident memory while under attack.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// The issue's bound on how long a kubelet-like call may take while pullgate is attacked.
const SERVED_WITHIN: Duration = Duration::from_secs(1);
/// pullgate's default `max_connections`.
const MAX_CONNECTIONS: usize = 64;

/// The attacks measure pullgate's memory and latency: one at a time on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// === the pullgate binary, watched ===

/// pullgate with every pull refused, its memory watched; `wrapper` runs it (e.g. `prlimit`),
/// `extra` is more of the config's top level.
fn start(upstream: &Path, wrapper: &[&str], extra: &str) -> Daemon {
    let serve = Serve::new(upstream).files(&[("p.toml", &policy::reject("*"))]).wrapper(wrapper);
    serve.config(&format!("{extra}\n[log]\nlevel = \"warn\"")).watch_memory().spawn()
}

/// One ImageStatus on `client`'s connection; panics unless it is answered within `SERVED_WITHIN`.
async fn assert_served(
    client: &mut pullgate::cri::proto::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    when: &str,
) -> Duration {
    let started = Instant::now();
    let request = ImageStatusRequest { image: cri::spec("example.com/any:v1"), verbose: false };
    let answered = tokio::time::timeout(SERVED_WITHIN, client.image_status(request)).await;
    let elapsed = started.elapsed();
    let Ok(answer) = answered else { panic!("ImageStatus {when} not answered within {SERVED_WITHIN:?}") };
    if let Err(status) = answer {
        panic!("ImageStatus {when} failed: {status:?}");
    }
    elapsed
}

// === raw HTTP/2 ===

/// An HPACK integer with a 7-bit prefix (lengths of literals without Huffman coding).
fn put_length(out: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A literal field that the receiver adds to its dynamic table (RFC 7541 §6.2.1, new name).
fn put_indexed_literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x40);
    put_length(block, name.len());
    block.extend_from_slice(name.as_bytes());
    put_length(block, value.len());
    block.extend_from_slice(value.as_bytes());
}

/// The client preface, an empty SETTINGS, and on stream 1 a request for `path` whose fields
/// all enter the server's table, so every later request can be `repeat_request`.
fn first_request(path: &str, end_stream: bool) -> BytesMut {
    request_with_authority(path, "x", end_stream)
}

fn request_with_authority(path: &str, authority: &str, end_stream: bool) -> BytesMut {
    let mut out = BytesMut::from(frame::PREFACE);
    frame::put_head(&mut out, 0, frame::kind::SETTINGS, 0, 0);
    // POST and http are in the static table (indices 3 and 6).
    let mut block = vec![0x83, 0x86];
    for (name, value) in
        [(":path", path), (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")]
    {
        put_indexed_literal(&mut block, name, value);
    }
    frame::put_header_block(&mut out, 1, &block, end_stream);
    out
}

/// The same request again on `stream`: six bytes of header block, the fields by their index
/// in the dynamic table (the last added, `te`, is 62).
fn repeat_request(out: &mut BytesMut, stream: u32, end_stream: bool) {
    frame::put_header_block(out, stream, &[0x83, 0x86, 0x80 | 65, 0x80 | 64, 0x80 | 63, 0x80 | 62], end_stream);
}

// === the cases ===

fn ctr<S: AsRef<std::ffi::OsStr>>(socket: &Path, args: &[S]) -> Output {
    Command::new("ctr")
        .arg("-a")
        .arg(socket)
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr is needed (apt package containerd)")
}

/// `ctr`, pointed at pullgate's socket, gets nowhere: containerd's own API is not served there.
#[tokio::test(flavor = "multi_thread")]
async fn ctr_through_pullgate_cannot_pull_import_tag_list_or_run() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start();
    lab.push_image("team/app:evil", "ctr-evil");
    let evil = format!("{}/team/app:evil", lab.registry);
    let archive = lab.dir.path().join("evil.tar");
    let copied = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", &format!("docker://{evil}")])
        .arg(format!("docker-archive:{}:{evil}", archive.display()))
        .output()
        .expect("skopeo");
    assert!(copied.status.success(), "skopeo: {}", String::from_utf8_lossy(&copied.stderr));
    let daemon = start(&lab.containerd_sock, &[], "");
    let archive = archive.to_str().expect("utf-8 path");
    let good = format!("{}/team/app:good", lab.registry);

    let attempts: Vec<Vec<String>> = [
        vec!["images", "pull", "--plain-http", &evil],
        vec!["images", "import", archive],
        vec!["images", "tag", "--force", &evil, &good],
        vec!["images", "ls"],
        vec!["run", "--rm", &evil, "pullgate-ctr-test", "true"],
        vec!["version"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_owned).collect())
    .collect();
    let socket = daemon.socket.clone();
    let outputs = tokio::task::spawn_blocking(move || {
        attempts.into_iter().map(|args| (args.join(" "), ctr(&socket, &args))).collect::<Vec<_>>()
    })
    .await
    .expect("ctr runs");
    for (args, output) in outputs {
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("ctr {args}: {}", stderr.trim());
        assert!(!output.status.success(), "ctr {args} succeeded through pullgate");
        // ctr prints the message only: its error mapping knows no PermissionDenied.
        assert!(
            stderr.contains("service containerd.services.") && stderr.contains("not served on this socket"),
            "ctr {args}: {stderr}"
        );
    }
    let path = "/containerd.services.images.v1.Images/List";
    let answer = common::raw::call(&daemon.socket, path, common::raw::frame(b""), &[]).await;
    assert_eq!(answer.grpc_status(), Some("7"), "{path}: {answer:?}");
    assert!(answer.grpc_message().contains("containerd.services.images.v1.Images"), "{}", answer.grpc_message());

    // containerd itself holds no trace of the image, and would have pulled it for ctr.
    let direct = ctr(&lab.containerd_sock, &["images", "ls", "-q"]);
    assert!(direct.status.success(), "{}", String::from_utf8_lossy(&direct.stderr));
    let held = String::from_utf8_lossy(&direct.stdout);
    assert!(!held.contains("team/app"), "the refused image reached containerd: {held}");
    let pulled = ctr(&lab.containerd_sock, &["images", "pull", "--plain-http", &evil]);
    assert!(pulled.status.success(), "ctr cannot pull even directly: {}", String::from_utf8_lossy(&pulled.stderr));
}

/// A client that floods tiny requests and never reads the answers is no longer read itself
/// once its answers pile up; others are served all along.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_not_read_either() {
    const FLOOD: Duration = Duration::from_secs(5);
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start();
    let daemon = start(&lab.containerd_sock, &[], "");
    let mut kubelet = cri::images(&daemon.socket);
    assert_served(&mut kubelet, "before the flood").await;

    // A refused service with a long name: each answer names it, so it is ~3 KiB.
    let path = format!("/flood.{}/Call", "s".repeat(3000));
    // On a thread of its own, as an attacker is a process of its own: its writes block once
    // pullgate stops reading, and nothing else here waits behind them.
    let stream = std::os::unix::net::UnixStream::connect(&daemon.socket).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let flood = std::thread::spawn(move || {
        std::io::Write::write_all(&mut writer, &first_request(&path, true)).expect("first request");
        let mut next = 3u32;
        loop {
            let mut batch = BytesMut::new();
            for _ in 0..1000 {
                repeat_request(&mut batch, next, true);
                next += 2;
            }
            // Fails once the test shuts the socket down.
            if std::io::Write::write_all(&mut writer, &batch).is_err() {
                return;
            }
            counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
    });
    let (started, mut slowest) = (Instant::now(), Duration::ZERO);
    while started.elapsed() < FLOOD {
        slowest = slowest.max(assert_served(&mut kubelet, "during the flood").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let flooded = sent.load(Ordering::Relaxed);
    assert!(!flood.is_finished(), "pullgate closed the flooding connection");
    stream.shutdown(std::net::Shutdown::Write).expect("end the flood");
    flood.join().expect("flood thread");
    eprintln!("flooded {} KiB of requests; slowest ImageStatus {slowest:?}", flooded >> 10);
    assert_served(&mut kubelet, "after the flood").await;
    daemon.assert_memory_below(RSS_LIMIT_KIB);
    drop(stream);
}

/// A PullImage that claims a 1 MiB message and sends all of it but the last byte, on `stream`.
fn partial_pull(out: &mut BytesMut, stream: u32) {
    let mut data = vec![0u8; 5 + (1 << 20) - 1];
    data[1..5].copy_from_slice(&(1u32 << 20).to_be_bytes());
    frame::put_data(out, stream, &data, false);
}

/// More connections than the cap, each holding partial PullImage requests: the extra ones are
/// closed, the requests held are bounded all connections together, and the kubelet's
/// connection, open before the attack, is served throughout.
#[tokio::test(flavor = "multi_thread")]
async fn many_connections_holding_partial_requests_stay_bounded() {
    const CONNECTIONS: usize = MAX_CONNECTIONS + 16;
    const PULLS_EACH: u32 = 4;
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start();
    let daemon = start(&lab.containerd_sock, &[], "");
    let mut kubelet = cri::images(&daemon.socket);
    assert_served(&mut kubelet, "before the attack").await;

    let mut held = Vec::new();
    let mut closed = 0;
    for _ in 0..CONNECTIONS {
        let mut stream = UnixStream::connect(&daemon.socket).await.expect("connect");
        let mut out = first_request("/runtime.v1.ImageService/PullImage", false);
        partial_pull(&mut out, 1);
        for n in 1..PULLS_EACH {
            repeat_request(&mut out, 1 + 2 * n, false);
            partial_pull(&mut out, 1 + 2 * n);
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out)).await {
            Ok(Ok(())) => held.push(stream),
            // The connections past the cap are closed as they come.
            Ok(Err(_)) => closed += 1,
            Err(_) => panic!("pullgate stopped reading a connection under the cap"),
        }
        assert_served(&mut kubelet, "during the attack").await;
    }
    // Writes to a closed connection can still land in its buffer; reading tells for sure.
    let mut open = 0;
    for stream in &held {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), stream.readable()).await {
            Ok(_) if matches!(stream.try_read(&mut byte), Ok(0) | Err(_)) => closed += 1,
            _ => open += 1,
        }
    }
    eprintln!("{open} attacking connections held, {closed} closed");
    // The kubelet's connection is one of the cap too.
    assert!(closed > CONNECTIONS - MAX_CONNECTIONS, "only {closed} of {CONNECTIONS} connections were closed");
    assert_served(&mut kubelet, "after the attack").await;
    daemon.assert_memory_below(RSS_LIMIT_KIB);
    let refusals = daemon.log_text().lines().filter(|line| line.contains("connections refused")).count();
    assert!((1..=3).contains(&refusals), "{refusals} lines about refused connections:\n{}", daemon.log_text());
}

/// Idle connections use up pullgate's file descriptors: accept fails, and pullgate pauses
/// instead of spinning on it, logs it a few times, and lets a client in once they close.
#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_descriptors_neither_spins_nor_floods_the_log() {
    const IDLE: usize = 100;
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start();
    let daemon = start(&lab.containerd_sock, &["prlimit", "--nofile=48:48", "--"], "");
    cri::images(&daemon.socket).list_images(ListImagesRequest::default()).await.expect("served before the attack");
    let lines_before = daemon.log_text().lines().count();

    let mut idle = Vec::new();
    for _ in 0..IDLE {
        // The kernel queues connections pullgate does not accept; past its backlog they fail.
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), UnixStream::connect(&daemon.socket)).await
        {
            idle.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ticks_before = daemon.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = daemon.cpu_ticks() - ticks_before;
    let log = daemon.log_text();
    let lines = log.lines().count() - lines_before;
    eprintln!("{} idle connections; pullgate used {ticks} ticks in 2 s and logged {lines} lines", idle.len());
    assert!(log.contains("accept failed"), "descriptors never ran out:\n{log}");
    // A spinning accept loop uses the whole 2 s (200 ticks at the usual 100 Hz).
    assert!(ticks <= 10, "pullgate used {ticks} ticks of CPU in 2 s with nothing to do");
    // One line at once, then at most one a second.
    assert!(lines <= 5, "{lines} log lines in 2.5 s:\n{log}");

    drop(idle);
    let started = Instant::now();
    let mut client = cri::images(&daemon.socket);
    let served = tokio::time::timeout(SERVED_WITHIN, client.list_images(ListImagesRequest::default())).await;
    assert!(
        matches!(served, Ok(Ok(_))),
        "not served within {SERVED_WITHIN:?} after the idle connections closed: {served:?}\n{}",
        daemon.log_text()
    );
    eprintln!("served {:?} after the idle connections closed", started.elapsed());
}

/// What grpc C-core (grpcio, the C++ and Ruby clients) sends as `:authority` for
/// `unix:///tmp/pglab/pullgate.sock`: the path, percent-encoded, which is no valid host.
const C_CORE_AUTHORITY: &str = "tmp%2Fpglab%2Fpullgate.sock";

/// The grpc-status and grpc-message of the answer on stream 1, or why there is none.
async fn answer_on_stream_1(stream: &mut UnixStream) -> Result<(String, String), String> {
    use tokio::io::AsyncReadExt;
    let mut decoder = pullgate::cri::hpack::Decoder::default();
    let (mut received, mut block) = (BytesMut::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while let Some(frame) = frame::next(&mut received, 1 << 20).map_err(|e| e.to_string())? {
            if frame.stream != 1 {
                continue;
            }
            match frame.kind {
                frame::kind::RST_STREAM => return Err(format!("RST_STREAM {:?}", frame.payload())),
                frame::kind::HEADERS | frame::kind::CONTINUATION => {
                    block.extend_from_slice(frame.fragment().map_err(|e| e.to_string())?);
                    if !frame.has(frame::flag::END_HEADERS) {
                        continue;
                    }
                    let (mut code, mut message) = (None, String::new());
                    decoder
                        .decode(&block, |name, value| match name {
                            b"grpc-status" => code = Some(String::from_utf8_lossy(value).into_owned()),
                            b"grpc-message" => message = String::from_utf8_lossy(value).into_owned(),
                            _ => {}
                        })
                        .map_err(|e| e.to_string())?;
                    block.clear();
                    if let Some(code) = code {
                        return Ok((code, message));
                    }
                }
                _ => {}
            }
        }
        let read = tokio::time::timeout_at(deadline.into(), stream.read_buf(&mut received)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            other => return Err(format!("no answer on stream 1: {other:?}")),
        }
    }
}

/// While containerd is down, a call with C-core's authority is answered UNAVAILABLE naming
/// containerd's socket, as every other client's is, not reset as malformed.
#[tokio::test(flavor = "multi_thread")]
async fn c_core_authority_gets_unavailable_while_containerd_is_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-containerd.sock");
    let pullgate = common::pullgate::start(&missing).await;
    let mut stream = UnixStream::connect(&pullgate.socket).await.expect("connect");
    let mut out = request_with_authority("/runtime.v1.ImageService/ListImages", C_CORE_AUTHORITY, false);
    frame::put_data(&mut out, 1, &common::raw::frame(b""), true);
    stream.write_all(&out).await.expect("write");
    let (code, message) = answer_on_stream_1(&mut stream).await.expect("an answer");
    assert_eq!(code, "14", "{message}");
    assert!(message.contains("no-containerd.sock"), "{message}");
    drop(stream);
    pullgate.stop().await;
}

/// A real grpc C-core client (Python's grpcio), one call per line it reads on stdin, each
/// reported on stdout as `<code name> <seconds> <details>`.
const GRPCIO_CLIENT: &str = r#"
import sys, time, grpc
channel = grpc.insecure_channel("unix://" + sys.argv[1])
list_images = channel.unary_unary("/runtime.v1.ImageService/ListImages")
for _ in sys.stdin:
    started = time.monotonic()
    try:
        list_images(b"", timeout=5)
        code, details = "OK", ""
    except grpc.RpcError as error:
        code, details = error.code().name, error.details()
    print(code, round(time.monotonic() - started, 3), details, flush=True)
"#;

struct Grpcio {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Grpcio {
    fn start(socket: &Path) -> Grpcio {
        // The python3 on PATH, with grpcio from PyPI (tests/lab/lab.sh installs it).
        let python = std::env::var("PULLGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .args(["-c", GRPCIO_CLIENT])
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with grpcio");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().expect("stdout")));
        Grpcio { child, stdin, stdout }
    }

    /// (code name, seconds, details) of one ListImages.
    fn list_images(&mut self) -> (String, f64, String) {
        std::io::Write::write_all(&mut self.stdin, b"call\n").expect("to grpcio");
        let line = self.stdout.next().expect("an answer from grpcio").expect("grpcio's output");
        let mut parts = line.splitn(3, ' ');
        let code = parts.next().unwrap_or_default().to_owned();
        let seconds = parts.next().and_then(|s| s.parse().ok()).expect("seconds");
        (code, seconds, parts.next().unwrap_or_default().to_owned())
    }
}

impl Drop for Grpcio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// grpcio connects while containerd is down: UNAVAILABLE naming the socket, within 2 s;
/// once containerd is back, its very next call succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_grpcio_client_gets_unavailable_then_succeeds_once_containerd_is_back() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start();
    let pullgate = common::pullgate::start(&lab.containerd_sock).await;
    lab.stop_containerd();
    let socket = pullgate.socket.clone();
    let (mut grpcio, (code, seconds, details)) = tokio::task::spawn_blocking(move || {
        let mut grpcio = Grpcio::start(&socket);
        let answer = grpcio.list_images();
        (grpcio, answer)
    })
    .await
    .expect("grpcio");
    assert_eq!(code, "UNAVAILABLE", "{details}");
    assert!(details.contains(&lab.containerd_sock.display().to_string()), "{details}");
    assert!(seconds < 2.0, "UNAVAILABLE took {seconds} s");

    lab.start_containerd();
    let (code, _, details) = tokio::task::spawn_blocking(move || grpcio.list_images()).await.expect("grpcio");
    assert_eq!(code, "OK", "first call after containerd is back: {details}");
    pullgate.stop().await;
}

/// Every connection the cap allows sends a header block that never ends, a megabyte of it:
/// each is closed with a GOAWAY once its block is past what any header list pullgate accepts
/// can take, so together they hold little.
#[tokio::test(flavor = "multi_thread")]
async fn header_blocks_that_never_end_are_cut_short() {
    const BLOCK: usize = 1 << 20;
    let _turn = ONE_AT_A_TIME.lock().await;
    // No containerd: connections start without it, and collect header blocks all the same.
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = start(&dir.path().join("no-containerd.sock"), &[], "");
    let mut out = BytesMut::from(frame::PREFACE);
    frame::put_head(&mut out, 0, frame::kind::SETTINGS, 0, 0);
    let fragment = vec![0u8; frame::DEFAULT_MAX_FRAME];
    for n in 0..BLOCK / fragment.len() {
        let kind = if n == 0 { frame::kind::HEADERS } else { frame::kind::CONTINUATION };
        frame::put_head(&mut out, fragment.len(), kind, 0, 1);
        out.extend_from_slice(&fragment);
    }
    let mut connections = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut stream = UnixStream::connect(&daemon.socket).await.expect("connect");
        // Fails part way once pullgate has closed the connection.
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out)).await;
        connections.push(stream);
    }
    for mut stream in connections {
        use tokio::io::AsyncReadExt;
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
        // Closed with part of the block unread, which the kernel reports as a reset once
        // everything pullgate wrote before has been read.
        let closed = |error: &std::io::Error| error.kind() == std::io::ErrorKind::ConnectionReset;
        assert!(matches!(&read, Ok(Ok(_))) || matches!(&read, Ok(Err(e)) if closed(e)), "not closed: {read:?}");
        assert!(has_goaway(&received), "no GOAWAY(PROTOCOL_ERROR) before the close");
    }
    daemon.assert_memory_below(RSS_LIMIT_KIB);
}

/// Whether `bytes` (a server's frames, no preface) hold a GOAWAY with PROTOCOL_ERROR.
fn has_goaway(mut bytes: &[u8]) -> bool {
    while bytes.len() >= frame::HEAD_LEN {
        let len = (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let Some(payload) = bytes.get(frame::HEAD_LEN..frame::HEAD_LEN + len) else { return false };
        if bytes[3] == frame::kind::GOAWAY && payload.get(4..8) == Some(&[0, 0, 0, 1][..]) {
            return true;
        }
        bytes = &bytes[frame::HEAD_LEN + len..];
    }
    false
}

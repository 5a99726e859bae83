//! Latency pullgate adds to CRI calls, measured against a real containerd in the same run.
//!
//! `cargo bench --bench proxy` starts the lab (containerd + registry on loopback), the release
//! pullgate binary in front of it, and times ImageStatus directly and through pullgate.
//! Prints a Markdown table; figures go to docs/performance.md.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cri::{self, spec};
use common::lab::Lab;
use pullgate::cri::proto::ImageStatusRequest;

const CALLS: usize = 10_000;
const CONCURRENCY: [usize; 2] = [1, 64];

/// Runs `CALLS` ImageStatus calls split over `concurrency` clients; returns sorted latencies.
async fn measure(socket: &Path, image: &str, concurrency: usize) -> Vec<Duration> {
    let client = cri::images(socket);
    let request = ImageStatusRequest { image: spec(image), verbose: false };
    for _ in 0..200 {
        client.clone().image_status(request.clone()).await.expect("warm-up call");
    }
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (mut client, request) = (client.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(CALLS / concurrency);
            for _ in 0..CALLS / concurrency {
                let started = Instant::now();
                client.image_status(request.clone()).await.expect("ImageStatus");
                samples.push(started.elapsed());
            }
            samples
        }));
    }
    let mut all = Vec::with_capacity(CALLS);
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let lab = Lab::start();
    lab.push_image("bench/app:v1", "bench");
    let image = format!("{}/bench/app:v1", lab.registry);
    cri::images(&lab.containerd_sock).pull_image(cri::pull_request(&image, None)).await.expect("pull bench image");
    let dir = tempfile::tempdir().expect("temp dir");
    let pullgate = common::process::Serve::in_dir(dir.path(), &lab.containerd_sock)
        .files(&[("policy.toml", common::pullgate::ACCEPT_ALL)])
        .config("[log]\nlevel = \"warn\"")
        .spawn();

    println!("ImageStatus, {CALLS} calls per row, pullgate {}", env!("CARGO_PKG_VERSION"));
    println!("| path, clients | direct p50 | direct p99 | through p50 | through p99 | added p50 | added p99 |");
    println!("|---|---|---|---|---|---|---|");
    let relay = byte_relay(dir.path(), &lab.containerd_sock);
    for concurrency in CONCURRENCY {
        let direct = measure(&lab.containerd_sock, &image, concurrency).await;
        let via = measure(&pullgate.socket, &image, concurrency).await;
        row(&format!("pullgate, {concurrency}"), &direct, &via);
        if let Some(relay) = &relay {
            let relayed = measure(&relay.socket, &image, concurrency).await;
            row(&format!("socat byte relay (reference), {concurrency}"), &direct, &relayed);
        }
    }
}

fn row(name: &str, direct: &[Duration], via: &[Duration]) {
    let (d50, d99) = (percentile(direct, 0.50), percentile(direct, 0.99));
    let (v50, v99) = (percentile(via, 0.50), percentile(via, 0.99));
    println!(
        "| {name} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:+.0} µs | {:+.0} µs |",
        micros(d50),
        micros(d99),
        micros(v50),
        micros(v99),
        micros(v50) - micros(d50),
        micros(v99) - micros(d99)
    );
}

struct Relay {
    child: std::process::Child,
    socket: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A relay that copies bytes without understanding them: the cost of any extra hop between
/// two processes on this machine, the floor for what pullgate can add. Skipped without socat.
fn byte_relay(dir: &Path, upstream: &Path) -> Option<Relay> {
    let socket = dir.join("relay.sock");
    let child = std::process::Command::new("socat")
        .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
        .arg(format!("UNIX-CONNECT:{}", upstream.display()))
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(Relay { child, socket })
}

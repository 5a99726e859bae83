//! Latency pullgate adds to CRI calls, measured against a real containerd in the same run.
//!
//! `cargo bench --bench proxy` starts the lab (containerd + registry on loopback), the release
//! pullgate binary in front of it, and times ImageStatus directly and through pullgate.
//! Prints a Markdown table; figures go to docs/performance.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cri::{self, spec};
use common::lab::Lab;
use pullgate::cri::proto::ImageStatusRequest;

const CALLS: usize = 10_000;
const CONCURRENCY: [usize; 2] = [1, 64];

struct Pullgate {
    child: Child,
    socket: PathBuf,
}

impl Drop for Pullgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pullgate(dir: &Path, upstream: &Path) -> Pullgate {
    let socket = dir.join("pullgate.sock");
    let policy_dir = dir.join("policy.d");
    std::fs::create_dir_all(&policy_dir).expect("policy dir");
    std::fs::write(policy_dir.join("all.toml"), common::pullgate::ACCEPT_ALL).expect("policy");
    let child = Command::new(env!("CARGO_BIN_EXE_pullgate"))
        .args(["serve", "--listen"])
        .arg(&socket)
        .arg("--upstream")
        .arg(upstream)
        .env("PULLGATE_LOG__LEVEL", "warn")
        .env("PULLGATE_POLICY_DIR", &policy_dir)
        .stderr(Stdio::null())
        .spawn()
        .expect("start pullgate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "pullgate did not bind its socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    Pullgate { child, socket }
}

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
    let pullgate = start_pullgate(dir.path(), &lab.containerd_sock);

    println!("ImageStatus, {CALLS} calls per row, pullgate {}", env!("CARGO_PKG_VERSION"));
    println!("| clients | direct p50 | direct p99 | pullgate p50 | pullgate p99 | added p50 | added p99 |");
    println!("|---|---|---|---|---|---|---|");
    for concurrency in CONCURRENCY {
        let direct = measure(&lab.containerd_sock, &image, concurrency).await;
        let via = measure(&pullgate.socket, &image, concurrency).await;
        let (d50, d99) = (percentile(&direct, 0.50), percentile(&direct, 0.99));
        let (v50, v99) = (percentile(&via, 0.50), percentile(&via, 0.99));
        println!(
            "| {concurrency} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:+.0} µs | {:+.0} µs |",
            micros(d50),
            micros(d99),
            micros(v50),
            micros(v99),
            micros(v50) - micros(d50),
            micros(v99) - micros(d99)
        );
    }
}

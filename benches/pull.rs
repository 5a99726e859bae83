//! Verified PullImage latency through pullgate against a direct containerd pull, in one run.
//!
//! `cargo bench --bench pull` starts the lab (containerd + registry on loopback), signs test
//! images with the real cosign and a key it generated, runs the release pullgate binary with a policy that requires that
//! key, and prints a Markdown table: cold and warm pulls, 200 concurrent pulls of one uncached
//! image, ImageStatus latency while verifications are in flight, and pullgate's RSS.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cosign::{self, CosignKey};
use common::cri::{self, spec};
use common::lab::Lab;
use common::process::Daemon;
use pullgate::cri::proto::ImageStatusRequest;

const COLD: usize = 15;
const WARM: usize = 200;
const CONCURRENT: usize = 200;
/// Connections the concurrent pulls share: 25 calls each, under the 64 that pullgate answers at
/// once on one connection.
const CONNECTIONS: usize = 8;

fn start_pullgate(dir: &Path, lab: &Lab, key: &CosignKey) -> Daemon {
    let rule = format!("[[rule]]\nscope = \"{}/bench\"\nrequire = \"signed\"\nkeys = [\"bench.pub\"]\n", lab.registry);
    let pem = key.public_pem();
    common::process::Serve::in_dir(dir, &lab.containerd_sock)
        .files(&[("policy.toml", &rule), ("bench.pub", &pem)])
        .insecure(&[&lab.registry])
        .config("[log]\nlevel = \"warn\"")
        .spawn()
}

/// Pushes and signs `bench/<name>:v1`; returns the image name to pull.
fn signed_image(lab: &Lab, key: &CosignKey, name: &str) -> String {
    let repo = format!("bench/{name}");
    cosign::push_signed(lab, key, &lab.registry, &format!("{repo}:v1"), name);
    format!("{}/{repo}:v1", lab.registry)
}

async fn pull_once(socket: &Path, image: &str) -> Duration {
    let started = Instant::now();
    cri::images(socket).pull_image(cri::pull_request(image, Some("bench"))).await.expect("pull");
    started.elapsed()
}

async fn pulls(socket: &Path, images: &[String]) -> Vec<Duration> {
    let mut samples = Vec::new();
    for image in images {
        samples.push(pull_once(socket, image).await);
    }
    samples.sort();
    samples
}

/// `CONCURRENT` pulls at once over `CONNECTIONS` connections, as a few kubelet-like clients
/// would make them (pullgate caps connections, and the calls it answers itself per connection).
async fn concurrent_pulls(socket: &Path, image: &str) -> Duration {
    let clients: Vec<_> = (0..CONNECTIONS).map(|_| cri::images(socket)).collect();
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|n| {
            let (mut client, image) = (clients[n % CONNECTIONS].clone(), image.to_owned());
            tokio::spawn(async move {
                let started = Instant::now();
                client.pull_image(cri::pull_request(&image, Some("bench"))).await.expect("pull");
                started.elapsed()
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("pull task");
    }
    started.elapsed()
}

/// ImageStatus latencies through pullgate while cold verified pulls run alongside.
async fn status_under_load(socket: &Path, status_image: &str, pulls: Vec<String>) -> Vec<Duration> {
    let background = {
        let socket = socket.to_owned();
        tokio::spawn(async move {
            for image in pulls {
                pull_once(&socket, &image).await;
            }
        })
    };
    let mut client = cri::images(socket);
    let request = ImageStatusRequest { image: spec(status_image), verbose: false };
    let mut samples = Vec::new();
    while !background.is_finished() {
        let started = Instant::now();
        client.image_status(request.clone()).await.expect("ImageStatus");
        samples.push(started.elapsed());
    }
    samples.sort();
    samples
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

fn row(name: &str, direct: &[Duration], via: &[Duration]) {
    println!(
        "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:+.2} ms |",
        pct(direct, 0.5),
        pct(direct, 0.99),
        pct(via, 0.5),
        pct(via, 0.99),
        pct(via, 0.5) - pct(direct, 0.5)
    );
}

#[tokio::main]
async fn main() {
    let lab = Lab::start();
    let key = CosignKey::generate();
    let names = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
    let cold_direct: Vec<_> = names("cold-direct-", COLD).iter().map(|n| signed_image(&lab, &key, n)).collect();
    let cold_via: Vec<_> = names("cold-via-", COLD).iter().map(|n| signed_image(&lab, &key, n)).collect();
    let busy: Vec<_> = names("busy-", COLD).iter().map(|n| signed_image(&lab, &key, n)).collect();
    let (crowd_direct, crowd_via) = (signed_image(&lab, &key, "crowd-direct"), signed_image(&lab, &key, "crowd-via"));
    let dir = tempfile::tempdir().expect("temp dir");
    let pullgate = start_pullgate(dir.path(), &lab, &key);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = pullgate.status_kib("VmRSS:");
    let direct = &lab.containerd_sock;

    println!("| pull | direct p50 | direct p99 | pullgate p50 | pullgate p99 | added p50 |");
    println!("|---|---|---|---|---|---|");
    row(&format!("cold, {COLD} images"), &pulls(direct, &cold_direct).await, &pulls(&pullgate.socket, &cold_via).await);
    let warm_image = vec![cold_via[0].clone(); WARM];
    row(
        &format!("warm, {WARM} repeats"),
        &pulls(direct, &warm_image).await,
        &pulls(&pullgate.socket, &warm_image).await,
    );
    let crowd_d = concurrent_pulls(direct, &crowd_direct).await;
    let crowd_v = concurrent_pulls(&pullgate.socket, &crowd_via).await;
    println!(
        "| {CONCURRENT} concurrent, one uncached image (wall) | {:.1} ms | | {:.1} ms | | {:+.1} ms |",
        crowd_d.as_secs_f64() * 1e3,
        crowd_v.as_secs_f64() * 1e3,
        (crowd_v.as_secs_f64() - crowd_d.as_secs_f64()) * 1e3
    );
    let status = status_under_load(&pullgate.socket, &cold_via[0], busy).await;
    println!();
    println!(
        "ImageStatus through pullgate during {COLD} cold verified pulls: {} calls, p50 {:.3} ms, p99 {:.3} ms",
        status.len(),
        pct(&status, 0.5),
        pct(&status, 0.99)
    );
    println!("pullgate RSS: idle {} KiB, peak {} KiB", idle_rss, pullgate.status_kib("VmHWM:"));
}

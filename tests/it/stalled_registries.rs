//! Registries that stall must not hold up pulls from registries that answer (issue 17): 16 of
//! them, 6 pulls each, against the default slot bounds, while a signed image from the lab
//! registry is pulled through pullgate into the real containerd.

use crate::common;
use common::policy;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cosign::CosignKey;
use common::cri;
use common::lab::Lab;
use pullgate::config::Config;
use pullgate::registry::limits::MANIFEST_MAX_BYTES;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

const STALLED_REGISTRIES: usize = 16;
const PULLS_EACH: usize = 6;

#[derive(Clone, Copy, Debug)]
enum Stall {
    /// Accepts the connection and never sends a byte.
    Mute,
    /// Reads the request, answers with the head of the largest manifest allowed (4 MiB) and one
    /// byte of it, then nothing more.
    AfterHead,
}

/// A registry that stalls every request as `Stall` says; counts the connections it accepted.
struct Silent {
    authority: String,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    /// `notify` hears of every connection accepted.
    async fn start(stall: Stall, notify: Arc<Notify>) -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut open = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.spawn(hold(stream, stall));
                counter.fetch_add(1, Ordering::SeqCst);
                notify.notify_one();
            }
        });
        Silent { authority, accepted, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn hold(mut stream: TcpStream, stall: Stall) {
    if let Stall::AfterHead = stall {
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n{{",
            MANIFEST_MAX_BYTES
        );
        let _ = stream.write_all(head.as_bytes()).await;
    }
    std::future::pending::<()>().await;
}

impl Drop for Silent {
    fn drop(&mut self) {
        // Closes every connection it held, so the checks waiting on it end at once.
        self.task.abort();
    }
}

/// The case: an ordinary signed image, which keeps a few KiB of registry answers.
#[tokio::test(flavor = "multi_thread")]
async fn registries_that_never_answer_do_not_delay_a_pull_from_one_that_does() {
    stalled_registries_and_one_healthy_pull(Stall::Mute, 1).await;
}

/// Here the healthy image carries two signatures of 40 KiB each, so its check keeps more than
/// `SMALL_CHECK_BYTES` and needs a total slot: checks that only got a head must hold none.
#[tokio::test(flavor = "multi_thread")]
async fn registries_that_stall_after_a_head_do_not_delay_a_pull_from_one_that_does() {
    stalled_registries_and_one_healthy_pull(Stall::AfterHead, 2).await;
}

/// `signatures` > 1 pads each signature's payload with 40 KiB.
async fn stalled_registries_and_one_healthy_pull(stall: Stall, signatures: usize) {
    let lab = Lab::start();
    let key = CosignKey::generate();
    let digest = lab.push_image("team/app:v1", "healthy");
    if signatures == 1 {
        key.sign(&lab.registry, "team/app", &digest);
    } else {
        // Each signature's payload carries 40 KiB in its free-form `optional` section.
        let padding = "a".repeat(40 * 1024);
        for n in 0..signatures {
            let signing = key.signing(&lab.registry, "team/app", &digest);
            signing.annotate("n", &n.to_string()).annotate("padding", &padding).run();
        }
    }

    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    // Plain HTTP to every port of 127.0.0.1: the lab registry and the stalling ones.
    config.registry.insecure = vec!["127.0.0.1".into()];
    // One connection per pull here (96 stalled, then the healthy one): the test is about
    // verification slots, not the connection cap.
    config.max_connections = 2 * STALLED_REGISTRIES * PULLS_EACH;
    assert_eq!((config.registry.checks_per_registry.get(), config.registry.checks_total.get()), (4, 16));
    let policy = &policy::signed("*", &["a.pub"]);
    let pem = key.public_pem();
    let pullgate = common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", policy)]).await;

    let notify = Arc::new(Notify::new());
    let mut silent = Vec::new();
    for _ in 0..STALLED_REGISTRIES {
        silent.push(Silent::start(stall, Arc::clone(&notify)).await);
    }
    let accepted = || silent.iter().map(Silent::accepted).sum::<usize>();
    let mut stalled_pulls = JoinSet::new();
    for registry in &silent {
        for n in 0..PULLS_EACH {
            // A tag each, so no two pulls share one verification.
            let request = cri::pull_request(&format!("{}/stalled/app:v{n}", registry.authority), None);
            let mut images = cri::images(&pullgate.socket);
            stalled_pulls.spawn(async move { images.pull_image(request).await });
        }
    }
    // Every silent registry is to hold its 4 checks (checks_per_registry), each on a
    // connection. Should fewer start (queued for a total slot, were it taken up front), the
    // healthy pull goes ahead anyway and shows what that costs.
    let all_started = async {
        while accepted() < STALLED_REGISTRIES * 4 {
            notify.notified().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), all_started).await;

    let image = format!("{}/team/app:v1", lab.registry);
    let started = Instant::now();
    let pulled = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, None)).await;
    let elapsed = started.elapsed();
    let pulled = pulled.unwrap_or_else(|status| panic!("{image}: {}", status.message()));
    assert!(pulled.into_inner().image_ref.starts_with("sha256:"));
    // Ordered, not timed: the healthy pull is done while every stalled one still waits (until
    // the registry timeout, 10 s, or the silent registries hang up below). Had it queued for a
    // slot a stalled check holds, it could not be done before those ended.
    eprintln!("the healthy pull took {elapsed:?}");
    let per_registry: Vec<usize> = silent.iter().map(Silent::accepted).collect();
    assert_eq!(per_registry, vec![4; STALLED_REGISTRIES], "checks that reached each silent registry");
    assert_eq!(stalled_pulls.len(), STALLED_REGISTRIES * PULLS_EACH);
    assert!(stalled_pulls.try_join_next().is_none(), "a stalled pull ended before its registry went away");

    // The silent registries hang up: every stalled pull fails as unavailable.
    drop(silent);
    while let Some(result) = stalled_pulls.join_next().await {
        let status = result.expect("pull task").expect_err("a pull from a silent registry succeeded");
        assert!(status.message().starts_with("RegistryUnavailable: "), "{}", status.message());
    }
    pullgate.stop().await;
}

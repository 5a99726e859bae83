//! `grpc.health.v1.Health` on pullgate's socket follows whether containerd answers.

use crate::common;

use std::time::{Duration, Instant};

use common::cri;
use common::lab::Lab;
use pullgate::config::Config;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The answer is cached for a second; a change shows within a few.
const LIMIT: Duration = Duration::from_secs(5);

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.to_owned() }
}

fn status(response: HealthCheckResponse) -> ServingStatus {
    ServingStatus::try_from(response.status).expect("a known serving status")
}

async fn check(client: &mut HealthClient<tonic::transport::Channel>, service: &str) -> ServingStatus {
    status(client.check(request(service)).await.expect("Check answered").into_inner())
}

async fn until(client: &mut HealthClient<tonic::transport::Channel>, wanted: ServingStatus) {
    let started = Instant::now();
    loop {
        let now = check(client, "").await;
        if now == wanted {
            return;
        }
        assert!(started.elapsed() < LIMIT, "still {now:?} after {LIMIT:?}, expected {wanted:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serving_while_containerd_answers() {
    let lab = Lab::start();
    let config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    let pullgate = common::pullgate::start_with(config, &[("policy.toml", common::pullgate::ACCEPT_ALL)]).await;
    let mut client = HealthClient::new(cri::channel(&pullgate.socket));

    assert_eq!(check(&mut client, "").await, ServingStatus::Serving);
    assert_eq!(check(&mut client, "runtime.v1.ImageService").await, ServingStatus::Serving);
    let unknown = client.check(request("no.such.Service")).await.expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let mut watch = client.watch(request("")).await.expect("Watch answered").into_inner();
    let first = watch.message().await.unwrap().expect("first Watch message");
    assert_eq!(status(first), ServingStatus::Serving);

    lab.stop_containerd();
    until(&mut client, ServingStatus::NotServing).await;
    let next = tokio::time::timeout(LIMIT, watch.message()).await.expect("Watch saw the change").unwrap();
    assert_eq!(next.map(status), Some(ServingStatus::NotServing));

    lab.start_containerd();
    until(&mut client, ServingStatus::Serving).await;
    let serving = tokio::time::timeout(LIMIT, watch.message()).await.expect("Watch saw containerd back").unwrap();
    assert_eq!(serving.map(status), Some(ServingStatus::Serving));

    // Shutdown: an open Watch hears NOT_SERVING and ends, so it does not hold up the drain.
    let stopped = tokio::spawn(pullgate.stop());
    let last = tokio::time::timeout(LIMIT, watch.message()).await.expect("Watch told of shutdown").unwrap();
    assert_eq!(last.map(status), Some(ServingStatus::NotServing));
    assert_eq!(watch.message().await.unwrap(), None, "Watch ended");
    stopped.await.unwrap();
}

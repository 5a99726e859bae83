//! The Prometheus endpoint, scraped before and after real pulls and relayed calls.

use crate::common;

use common::cosign::{self, CosignKey};
use common::lab::Lab;
use common::metrics::{self, Scraped};
use common::{cri, raw};
use pullgate::config::Config;
use pullgate::cri::proto::ListImagesRequest;

const PULL: &str = "/runtime.v1.ImageService/PullImage";

fn config(lab: &Lab) -> Config {
    let mut config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    config.registry.insecure = vec![lab.registry.clone()];
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

fn decisions(scraped: &Scraped, verdict: &str, rule: &str) -> f64 {
    scraped.counter(&format!(r#"pullgate_decisions_total{{verdict="{verdict}",mode="enforce",rule="{rule}"}}"#))
}

fn calls(scraped: &Scraped, method: &str, code: &str) -> f64 {
    scraped.counter(&format!(r#"pullgate_cri_calls_total{{method="{method}",code="{code}"}}"#))
}

fn registry(scraped: &Scraped, status: &str) -> f64 {
    scraped.counter(&format!(r#"pullgate_registry_requests_total{{status="{status}"}}"#))
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_latency_and_registry_requests_follow_pulls() {
    let lab = Lab::start();
    let key = CosignKey::generate();
    cosign::push_signed(&lab, &key, &lab.registry, "team/signed:v1", "metrics-signed");
    lab.push_image("team/unsigned:v1", "metrics-unsigned");
    let (team, closed) = (format!("{}/team", lab.registry), format!("{}/closed", lab.registry));
    let policy = format!(
        "[[rule]]\nscope = \"{team}\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n\n\
         [[rule]]\nscope = \"{closed}\"\nrequire = \"reject\"\n"
    );
    let pem = key.public_pem();
    let pullgate = common::pullgate::start_with(config(&lab), &[("a.pub", &pem), ("policy.toml", &policy)]).await;
    let address = pullgate.metrics.expect("metrics listener");

    let before = metrics::scrape(address).await;
    assert!(before.content_type.starts_with("text/plain; version=0.0.4"), "{}", before.content_type);
    let mut images = cri::images(&pullgate.socket);
    for (image, accepted) in [("team/signed:v1", true), ("team/unsigned:v1", false), ("closed/any:v1", false)] {
        let image = format!("{}/{image}", lab.registry);
        let result = images.pull_image(cri::pull_request(&image, Some("default"))).await;
        assert_eq!(result.is_ok(), accepted, "{image}: {result:?}");
    }
    let after = metrics::scrape(address).await;

    let delta = |f: &dyn Fn(&Scraped) -> f64| f(&after) - f(&before);
    assert_eq!(delta(&|s| decisions(s, "accepted", &team)), 1.0, "{}", after.body);
    assert_eq!(delta(&|s| decisions(s, "rejected", &team)), 1.0, "{}", after.body);
    assert_eq!(delta(&|s| decisions(s, "rejected", &closed)), 1.0, "{}", after.body);
    assert_eq!(delta(&|s| s.value("pullgate_verification_duration_seconds_count")), 3.0);
    // signed: manifest, signature manifest, payload blob; unsigned: manifest. Both read the
    // referrers tag, which docker-registry 2.8 answers 404, and ask the referrers API (404:
    // docker-registry has none; remembered per repository, and these are two); the unsigned
    // image's `.sig` tag is a 404 as well.
    assert!(delta(&|s| registry(s, "200")) >= 4.0, "{}", after.body);
    assert_eq!(delta(&|s| registry(s, "404")), 5.0, "{}", after.body);
    assert_eq!(delta(&|s| calls(s, PULL, "Ok")), 1.0, "{}", after.body);
    assert_eq!(delta(&|s| calls(s, PULL, "Unknown")), 2.0, "{}", after.body);
    pullgate.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relayed_calls_are_counted_by_method_and_code() {
    let lab = Lab::start();
    let pullgate = common::pullgate::start_with(config(&lab), &[("policy.toml", common::pullgate::ACCEPT_ALL)]).await;
    let address = pullgate.metrics.expect("metrics listener");
    let list = "/runtime.v1.ImageService/ListImages";
    let nope = "/runtime.v1.ImageService/NoSuchMethod";

    let before = metrics::scrape(address).await;
    let mut images = cri::images(&pullgate.socket);
    for _ in 0..3 {
        images.list_images(ListImagesRequest::default()).await.expect("ListImages through pullgate");
    }
    let response = raw::call(&pullgate.socket, nope, raw::frame(b""), &[]).await;
    assert_eq!(response.grpc_status(), Some("12"), "containerd answers UNIMPLEMENTED: {response:?}");
    let after = metrics::scrape(address).await;

    assert_eq!(calls(&after, list, "Ok") - calls(&before, list, "Ok"), 3.0, "{}", after.body);
    assert_eq!(calls(&after, nope, "Unimplemented") - calls(&before, nope, "Unimplemented"), 1.0, "{}", after.body);
    assert!(after.value("pullgate_policy_age_seconds") > before.value("pullgate_policy_age_seconds"));
    assert_eq!(after.value("pullgate_policy_last_reload_success"), 1.0);

    assert_eq!(metrics::get(address, "/other").await.status, 404);
    pullgate.stop().await;
}

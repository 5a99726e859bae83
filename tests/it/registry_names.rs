//! One registry falls under one rule however an image name spells its host, against the real
//! containerd and registry (issue 11 point 3, issue 17 point 6).
//!
//! The lab registry is reached through a plain TCP relay on 127.0.0.1:PORT, PORT below 10000.
//! containerd reaches it as `localhost:PORT` and as `127.0.0.1:0PORT` too (Go reads the port as
//! a number), so a rule naming `127.0.0.1:PORT` must cover those spellings, or a pod could pull
//! around it. The relay keeps `0PORT` at five digits: a longer port would be refused anyway.

use crate::common;

use common::cosign::unused_public_pem;
use common::cri;
use common::lab::Lab;
use pullgate::config::Config;
use pullgate::cri::proto::ImageStatusRequest;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Ports tried for the relay; below 10000 so that a leading zero still makes five digits.
const RELAY_PORTS: std::ops::Range<u16> = 2000..10000;

/// A TCP relay to `upstream` on a free port in `RELAY_PORTS`; returns "127.0.0.1:PORT".
async fn relay(upstream: String) -> (String, JoinHandle<()>) {
    let span = u32::from(RELAY_PORTS.end - RELAY_PORTS.start);
    let start = std::process::id() % span;
    for step in 0..span {
        let port = RELAY_PORTS.start + ((start + step * 7919) % span) as u16;
        let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await else { continue };
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        return (format!("127.0.0.1:{port}"), task);
    }
    panic!("no free port in {RELAY_PORTS:?} for the relay");
}

/// `*` must be signed, kube-system is exempt, and the lab registry is rejected outright: a more
/// specific scope than the exemption, so it holds in kube-system too.
fn policy(registry: &str) -> String {
    format!(
        "[[rule]]\nscope = \"*\"\nrequire = \"signed\"\nkeys = [\"a.pub\"]\n\n\
         [[rule]]\nscope = \"*\"\nnamespaces = [\"kube-system\"]\nrequire = \"accept\"\n\n\
         [[rule]]\nscope = \"{registry}\"\nrequire = \"reject\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_spelling_of_a_rejected_registry_is_rejected() {
    let lab = Lab::start();
    lab.push_image("other/x:v1", "registry-names");
    let (registry, relay) = relay(lab.registry.clone()).await;
    let port = registry.rsplit_once(':').expect("host:port").1;
    let pem = unused_public_pem();
    let config = Config { upstream: lab.containerd_sock.clone(), ..Config::default() };
    let pullgate = common::pullgate::start_with(config, &[("a.pub", &pem), ("policy.toml", &policy(&registry))]).await;

    let reachable = [registry.clone(), format!("localhost:{port}"), format!("127.0.0.1:0{port}")];
    // Not served (the relay listens on IPv4 only), but the same registry by name.
    let spellings = reachable.iter().cloned().chain([format!("[::1]:{port}"), format!("[0::1]:{port}")]);
    let mut direct = cri::images(&lab.containerd_sock);
    for spelling in spellings {
        let image = format!("{spelling}/other/x:v1");
        let result = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, Some("kube-system"))).await;
        let status = match result {
            Ok(pulled) => panic!("{image} pulled ({:?}) in spite of the rule rejecting {registry}", pulled.get_ref()),
            Err(status) => status,
        };
        let rule = format!("by rule \"{registry}\"");
        assert!(status.message().contains(&rule), "{image}: refused, but not {rule}: {}", status.message());
        let stored = direct.image_status(ImageStatusRequest { image: cri::spec(&image), verbose: false }).await;
        assert!(stored.expect("image status").into_inner().image.is_none(), "{image} reached containerd");
    }

    // Capitals in a host: containerd keeps them (host "Localhost:PORT", where Docker Hub's
    // "Docker.io/nginx" would be host "Docker.io", repository "nginx"), pullgate used to fold
    // them into another name. Refused as a name pullgate would read differently.
    for spelling in [format!("Localhost:{port}"), format!("LOCALHOST:{port}")] {
        let image = format!("{spelling}/other/x:v1");
        let result = cri::images(&pullgate.socket).pull_image(cri::pull_request(&image, Some("kube-system"))).await;
        let status = result.expect_err("a capitalised host was pulled");
        assert!(status.message().contains("not a valid image reference"), "{image}: {}", status.message());
        let stored = direct.image_status(ImageStatusRequest { image: cri::spec(&image), verbose: false }).await;
        assert!(stored.expect("image status").into_inner().image.is_none(), "{image} reached containerd");
    }
    // Control: each refused spelling is a real way to the registry for containerd.
    for spelling in &reachable {
        let image = format!("{spelling}/other/x:v1");
        let pulled = direct.pull_image(cri::pull_request(&image, Some("kube-system"))).await;
        assert!(pulled.is_ok(), "containerd itself could not pull {image}: {pulled:?}\n{}", lab.logs());
    }
    pullgate.stop().await;
    relay.abort();
}

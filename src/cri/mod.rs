//! The CRI edge: the socket the kubelet talks to, the relays to containerd (the splice relay,
//! and the h2 relay behind it), and PullImage interception.

pub mod body;
pub mod frame;
pub mod health;
pub mod hpack;
pub mod observe;
pub mod proxy;
pub mod pull;
pub mod relay;
pub mod respond;
pub mod server;
pub mod socket;
pub mod splice;
pub mod status;
pub mod store;
pub mod tagger;
pub mod upstream;
pub mod wire;

/// Types generated from `proto/runtime/v1/api.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("runtime.v1");
}

/// Types generated from `proto/containerd/services/images/v1/images.proto`.
pub mod images_proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("containerd.services.images.v1");
}

/// Types generated from `proto/containerd/services/content/v1/content.proto`.
pub mod content_proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("containerd.services.content.v1");
}

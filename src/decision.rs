//! The interception point: what pullgate decides for each PullImage before containerd sees it.

use std::future::Future;

/// What the CRI edge hands over about one pull. Credentials stay out of `Debug`.
pub struct PullRequest {
    /// The image exactly as the kubelet asked for it.
    pub image: String,
    /// The pod's Kubernetes namespace, when the kubelet sent a sandbox config.
    pub namespace: Option<String>,
}

/// What the gate lets containerd do.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Forward the request unchanged.
    Forward,
}

/// Why a pull was refused; the CRI edge turns it into the kubelet-facing status.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {}

pub trait PullGate: Send + Sync + 'static {
    fn admit(&self, pull: &PullRequest) -> impl Future<Output = Result<Admission, Rejection>> + Send;
}

/// Forwards every pull as asked: the transparent proxy before a policy is wired in.
pub struct ForwardAll;

impl PullGate for ForwardAll {
    async fn admit(&self, _pull: &PullRequest) -> Result<Admission, Rejection> {
        Ok(Admission::Forward)
    }
}

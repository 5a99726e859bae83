//! The interception point: for each PullImage, find the rule, check the image against it, and
//! turn the result into an admission (forward, or forward pinned to the verified digest) or a
//! rejection.

mod cache;
mod check;
mod flight;
pub(crate) mod limits;
mod reason;
mod report;
mod slots;
mod verifier;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::policy::SharedPolicy;
use crate::reference::ImageRef;
use crate::registry::{Credentials, Registry, RegistryConfig};

pub use reason::ReasonCode;
pub use report::{Decision, Verdict};

/// What the CRI edge hands over about one pull. Credentials never appear in `Debug`.
#[derive(Debug, Default)]
pub struct PullRequest {
    /// The image exactly as the kubelet asked for it.
    pub image: String,
    /// The pod's Kubernetes namespace, when the kubelet sent a sandbox config.
    pub namespace: Option<String>,
    /// Registry credentials from the request, used for the signature fetch.
    pub credentials: Credentials,
}

/// What the gate lets containerd do.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Forward the request unchanged.
    Forward,
    /// Pull exactly `pinned` (`registry/repo@digest`), then point `tag` (`registry/repo:tag`)
    /// at it when the request named a tag.
    Pinned { pinned: String, tag: Option<String> },
}

/// Why a pull was refused; the CRI edge turns it into the kubelet-facing status.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The policy says no, or the signatures do not satisfy it.
    #[error("{0}")]
    Denied(String),
    /// The registry could not be asked, so nothing could be verified.
    #[error("{0}")]
    RegistryUnavailable(String),
    /// The registry has no such image: nothing to verify, and nothing containerd could pull.
    #[error("{0}")]
    NotFound(String),
}

pub trait PullGate: Send + Sync + 'static {
    fn admit(&self, pull: &PullRequest) -> impl Future<Output = Result<Admission, Rejection>> + Send;
}

/// The policy-enforcing gate.
pub struct Gate<R> {
    policy: SharedPolicy,
    verifier: Arc<verifier::Verifier<R>>,
    metrics: Option<Arc<Metrics>>,
}

impl<R: Registry + 'static> Gate<R> {
    /// `budget` bounds each verification, however many registry requests it takes.
    pub fn new(policy: SharedPolicy, registry: Arc<R>, budget: Duration) -> Gate<R> {
        let limits = RegistryConfig { timeout: budget, ..RegistryConfig::default() };
        Gate::configured(policy, registry, &limits, &CacheConfig::default())
    }

    /// A gate whose checks keep to `limits` (time budget, slots) and whose results are cached
    /// as `cache` says.
    pub fn configured(policy: SharedPolicy, registry: Arc<R>, limits: &RegistryConfig, cache: &CacheConfig) -> Gate<R> {
        let slots = slots::Slots::new(limits.checks_per_registry, limits.checks_total);
        let verifier = verifier::Verifier::new(registry, cache, slots, limits.timeout);
        Gate { policy, verifier: Arc::new(verifier), metrics: None }
    }

    /// Counts every decision `admit` acts on in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Gate<R> {
        self.metrics = Some(metrics);
        self
    }

    /// Decides without acting: the daemon forwards or rejects on it, `pullgate verify` prints it.
    /// A decision is only made under the policy in force when it ends: one that a reload
    /// overtook is made again under the new policy (cheaply: what the registry said is
    /// cached), and refused as retryable if the policy keeps changing under it.
    pub async fn decide(&self, pull: &PullRequest) -> Decision {
        let started = Instant::now();
        let image = match ImageRef::parse_for_pull(&pull.image) {
            Ok(image) => image,
            Err(error) => return Decision::unparsable(&pull.image, &error, started),
        };
        for _ in 0..limits::DECISION_ATTEMPTS {
            let policy = self.policy.current();
            let generation = policy.generation();
            let pull = verifier::Pull {
                image: &image,
                policy,
                namespace: pull.namespace.as_deref(),
                credentials: &pull.credentials,
            };
            let settled = self.verifier.decide(pull).await;
            if self.policy.current().generation() == generation {
                return Decision::new(image, settled, started);
            }
            tracing::info!(image = %image, "the policy was reloaded while deciding; deciding again under the new one");
        }
        Decision::superseded(image, started)
    }
}

impl<R: Registry + 'static> PullGate for Gate<R> {
    async fn admit(&self, pull: &PullRequest) -> Result<Admission, Rejection> {
        let decision = self.decide(pull).await;
        decision.log();
        if let Some(metrics) = &self.metrics {
            metrics.decision(&decision);
        }
        decision.action()
    }
}

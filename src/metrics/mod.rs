//! What pullgate counts, for Prometheus: decisions, verification latency, registry requests,
//! relayed CRI calls and policy reloads. [`endpoint`] serves them.
//!
//! Every CRI call passes through here, so the per-call path only hashes labels that already
//! exist: method names are interned once, status codes are a closed enum.

pub mod endpoint;
mod labels;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::decision::{Decision, Verdict};
use crate::policy::Mode;

use labels::{CallLabels, DecisionLabels, Methods, ReloadLabels, StatusLabels};
pub use labels::{CallOutcome, Method};

/// The Content-Type of what [`Metrics::encode`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    verification: Histogram,
    registry_requests: Family<StatusLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    methods: Methods,
    reloads: Family<ReloadLabels, Counter>,
    last_reload_success: Gauge,
    policy_age: Gauge<f64, AtomicU64>,
    /// When the policy in force was loaded; the age gauge is computed from it at scrape time.
    policy_loaded: Mutex<Instant>,
}

// === impl Metrics ===

impl Metrics {
    /// A fresh set; the policy in force counts as loaded now.
    pub fn new() -> Arc<Metrics> {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("pullgate"),
            decisions: Family::default(),
            // 5 ms (a cached accept) to 20 s (a slow registry near the request timeout).
            verification: Histogram::new(exponential_buckets(0.005, 2.0, 13)),
            registry_requests: Family::default(),
            calls: Family::default(),
            methods: Methods::default(),
            reloads: Family::default(),
            last_reload_success: Gauge::default(),
            policy_age: Gauge::default(),
            policy_loaded: Mutex::new(Instant::now()),
        };
        metrics.last_reload_success.set(1);
        // Both results are exposed from the start, so "no failed reload" reads as an explicit 0.
        for result in ["success", "failure"] {
            drop(metrics.reloads.get_or_create(&ReloadLabels { result }));
        }
        metrics.register();
        Arc::new(metrics)
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register("decisions", "Pull decisions by verdict, mode and rule scope", self.decisions.clone());
        r.register(
            "verification_duration_seconds",
            "Time from a PullImage request to its decision",
            self.verification.clone(),
        );
        r.register(
            "registry_requests",
            "Manifest and blob requests to registries by HTTP status (\"error\": no response)",
            self.registry_requests.clone(),
        );
        r.register("cri_calls", "CRI calls served, by method and gRPC code", self.calls.clone());
        r.register("policy_reloads", "Policy reload attempts by result", self.reloads.clone());
        r.register(
            "policy_last_reload_success",
            "1 if the last policy reload succeeded, 0 if the previous policy stayed in force",
            self.last_reload_success.clone(),
        );
        r.register("policy_age_seconds", "Seconds since the policy in force was loaded", self.policy_age.clone());
    }

    pub fn decision(&self, decision: &Decision) {
        let verdict = match decision.verdict {
            Verdict::Accepted => "accepted",
            Verdict::Rejected => "rejected",
            Verdict::Unavailable => "unavailable",
        };
        // A pull no rule matches is refused, which is what enforce means.
        let mode = match decision.mode() {
            Some(Mode::Audit) => "audit",
            Some(Mode::Enforce) | None => "enforce",
        };
        let rule = decision.rule.as_ref().map(|rule| rule.scope.to_string()).unwrap_or_default();
        self.decisions.get_or_create(&DecisionLabels { verdict, mode, rule }).inc();
        self.verification.observe(decision.elapsed.as_secs_f64());
    }

    /// One registry request: its HTTP status, or None when no response came.
    pub fn registry_response(&self, status: Option<u16>) {
        self.registry_requests.get_or_create(&StatusLabels { status: status.into() }).inc();
    }

    /// The label for a call's path; look it up once per call, when the call starts.
    pub fn method(&self, path: &str) -> Method {
        self.methods.intern(path)
    }

    pub fn call(&self, method: &Method, outcome: CallOutcome) {
        self.calls.get_or_create(&CallLabels { method: method.label(), code: outcome }).inc();
    }

    pub fn reload_succeeded(&self) {
        *self.policy_loaded.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.reloads.get_or_create(&ReloadLabels { result: "success" }).inc();
        self.last_reload_success.set(1);
    }

    pub fn reload_failed(&self) {
        self.reloads.get_or_create(&ReloadLabels { result: "failure" }).inc();
        self.last_reload_success.set(0);
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let loaded = *self.policy_loaded.lock().unwrap_or_else(PoisonError::into_inner);
        self.policy_age.set(loaded.elapsed().as_secs_f64());
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would only mean a bug in a label.
        if let Err(error) = prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|line| line.starts_with(series))
    }

    #[test]
    fn calls_are_counted_by_method_and_code() {
        let metrics = Metrics::new();
        let method = metrics.method("/runtime.v1.ImageService/ListImages");
        metrics.call(&method, CallOutcome::Code(tonic::Code::Ok));
        metrics.call(&method, CallOutcome::Code(tonic::Code::Ok));
        metrics.call(&method, CallOutcome::Aborted);
        let text = metrics.encode();
        let ok = r#"pullgate_cri_calls_total{method="/runtime.v1.ImageService/ListImages",code="Ok"} 2"#;
        assert!(line(&text, ok).is_some(), "{text}");
        assert!(text.contains(r#"code="Aborted"} 1"#), "{text}");
    }

    #[test]
    fn reloads_and_policy_age() {
        let metrics = Metrics::new();
        metrics.reload_failed();
        let text = metrics.encode();
        assert!(text.contains("pullgate_policy_reloads_total{result=\"failure\"} 1"), "{text}");
        assert!(text.contains("pullgate_policy_last_reload_success 0"), "{text}");
        assert!(line(&text, "pullgate_policy_age_seconds ").is_some(), "{text}");
        metrics.reload_succeeded();
        assert!(metrics.encode().contains("pullgate_policy_last_reload_success 1"));
    }

    #[test]
    fn registry_statuses() {
        let metrics = Metrics::new();
        metrics.registry_response(Some(404));
        metrics.registry_response(None);
        let text = metrics.encode();
        assert!(text.contains("pullgate_registry_requests_total{status=\"404\"} 1"), "{text}");
        assert!(text.contains("pullgate_registry_requests_total{status=\"error\"} 1"), "{text}");
    }
}

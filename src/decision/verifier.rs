//! Checking images against `signed` rules in as few registry round trips as a correct answer
//! allows: a tag is resolved on every pull (it can move), the signature check runs once per
//! digest and rule while its result is cached, and concurrent pulls of one image share one
//! check.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::policy::Rule;
use crate::reference::{Digest, ImageRef};
use crate::registry::buffering;
use crate::registry::{Credentials, Registry};

use super::cache::{self, VerdictCache};
use super::check::{self, Outcome};
use super::flight::Flights;
use super::slots::Slots;

/// The rule an image falls under, and which one it is: its position in the policy of
/// `generation`.
pub struct RuleInForce<'a> {
    pub generation: u64,
    pub index: usize,
    pub rule: &'a Rule,
}

pub struct Verifier<R> {
    registry: Arc<R>,
    cache: VerdictCache,
    flights: Flights<FlightKey, Outcome>,
    slots: Slots,
    /// One time budget for a check, however many requests it takes and however long it
    /// waits for a slot.
    budget: Duration,
}

/// Pulls that can share one check: the same image under the same rule, asked with the same
/// credentials (the check's requests are made with them, so their failures are theirs).
#[derive(Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    generation: u64,
    rule: usize,
    image: String,
    credentials: String,
}

/// One check, owning what it needs to run as a task of its own.
struct Job {
    image: ImageRef,
    rule: Rule,
    generation: u64,
    rule_index: usize,
    credentials: Credentials,
}

// === impl Verifier ===

impl<R: Registry + 'static> Verifier<R> {
    pub fn new(registry: Arc<R>, cache: &CacheConfig, slots: Slots, budget: Duration) -> Verifier<R> {
        Verifier { registry, cache: VerdictCache::new(cache), flights: Flights::new(), slots, budget }
    }

    /// Joins the check already running for this pull's image and rule, or starts one.
    pub async fn check(
        self: &Arc<Self>,
        image: &ImageRef,
        rule: RuleInForce<'_>,
        credentials: &Credentials,
    ) -> Outcome {
        let key = FlightKey {
            generation: rule.generation,
            rule: rule.index,
            image: image.to_string(),
            credentials: credentials.fingerprint(),
        };
        let flight = self.flights.join(key, || {
            let verifier = Arc::clone(self);
            let job = Job {
                image: image.clone(),
                rule: rule.rule.clone(),
                generation: rule.generation,
                rule_index: rule.index,
                credentials: credentials.clone(),
            };
            async move { verifier.run(job).await }
        });
        flight.await.unwrap_or_else(|lost| Outcome::unavailable(lost.to_string()))
    }

    /// The budget covers the whole check, so every pull sharing it fails at the same moment.
    async fn run(&self, job: Job) -> Outcome {
        let deadline = Instant::now() + self.budget;
        // A digest checked recently needs no registry request, so it needs no slot either.
        if let Some(outcome) = job.image.digest().and_then(|digest| self.cached(&job, digest)) {
            return outcome;
        }
        let slot = match self.slots.acquire(job.image.registry(), deadline).await {
            Ok(slot) => Arc::new(slot),
            Err(busy) => {
                return Outcome::unavailable(format!("verification did not start within {:?}: {busy}", self.budget));
            }
        };
        let checking = buffering::scope(Arc::clone(&slot) as _, self.resolve_and_verify(&job));
        match tokio::time::timeout_at(deadline, checking).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::unavailable(match slot.waiting_for() {
                Some(busy) => format!("verification did not finish within {:?}: {busy}", self.budget),
                None => format!("verification did not finish within {:?}", self.budget),
            }),
        }
    }

    fn cache_key(job: &Job, digest: &Digest) -> cache::Key {
        cache::Key {
            generation: job.generation,
            rule: job.rule_index,
            image: job.image.to_string(),
            digest: digest.clone(),
        }
    }

    fn cached(&self, job: &Job, digest: &Digest) -> Option<Outcome> {
        let outcome = self.cache.get(&Self::cache_key(job, digest))?;
        tracing::debug!(image = %job.image, %digest, "signature check result reused from the cache");
        Some(outcome)
    }

    async fn resolve_and_verify(&self, job: &Job) -> Outcome {
        let digest = match check::resolve(&*self.registry, &job.image, &job.credentials).await {
            Ok(digest) => digest,
            Err(outcome) => return outcome,
        };
        if let Some(outcome) = self.cached(job, &digest) {
            return outcome;
        }
        let key = Self::cache_key(job, &digest);
        let outcome = check::signatures(&*self.registry, &job.image, digest, &job.rule, &job.credentials).await;
        self.cache.insert(key, &outcome);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::decision::slots::SMALL_CHECK_BYTES;
    use crate::decision::{Gate, PullRequest, Verdict};
    use crate::policy::{IdentityRule, Mode, Policy, Requirement, SharedPolicy};
    use crate::reference::Digest;
    use crate::registry::{Manifest, RegistryConfig, RegistryError};

    const IMAGE: &str = "registry.test/team/app";

    /// Serves one image manifest for every tag and no signatures, recording each request; with
    /// `stall`, never answers at all. Registries named `stalled…` never answer either; those
    /// named `large…` answer with more than a check keeps without a total slot, then stall.
    #[derive(Default)]
    struct Canned {
        requests: Mutex<Vec<String>>,
        stall: bool,
    }

    impl Canned {
        fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }

        fn take(&self) -> usize {
            std::mem::take(&mut *self.requests.lock().unwrap()).len()
        }
    }

    impl Registry for Canned {
        async fn manifest(
            &self,
            image: &ImageRef,
            reference: &str,
            _: &Credentials,
        ) -> Result<Option<Manifest>, RegistryError> {
            self.requests.lock().unwrap().push(format!("manifest {reference}"));
            if self.stall || image.registry().starts_with("stalled") {
                std::future::pending::<()>().await;
            }
            if image.registry().starts_with("large") {
                buffering::reserve(SMALL_CHECK_BYTES + 1).await;
                std::future::pending::<()>().await;
            }
            if reference.ends_with(".sig") {
                return Ok(None);
            }
            let bytes = Bytes::from_static(br#"{"schemaVersion":2}"#);
            buffering::reserve(bytes.len()).await;
            Ok(Some(Manifest { digest: Digest::sha256_of(&bytes), media_type: "application/json".into(), bytes }))
        }

        async fn blob(&self, _: &ImageRef, digest: &Digest, _: usize, _: &Credentials) -> Result<Bytes, RegistryError> {
            self.requests.lock().unwrap().push(format!("blob {digest}"));
            Err(RegistryError::Protocol("no blobs here".into()))
        }
    }

    fn policy() -> Policy {
        policy_for("registry.test/team")
    }

    fn policy_for(scope: &str) -> Policy {
        Policy::from_rules(vec![Rule {
            scope: scope.parse().unwrap(),
            namespaces: None,
            require: Requirement::Signed,
            keys: Vec::new(),
            threshold: 1,
            identity: IdentityRule::MatchRepository,
            mode: Mode::Enforce,
            source: PathBuf::from("test.toml"),
        }])
    }

    fn gate(registry: &Arc<Canned>, shared: &SharedPolicy, budget: Duration) -> Gate<Canned> {
        let limits = RegistryConfig { timeout: budget, ..RegistryConfig::default() };
        Gate::configured(shared.clone(), Arc::clone(registry), &limits, &CacheConfig::default())
    }

    fn pull(image: &str) -> PullRequest {
        PullRequest { image: image.to_owned(), ..PullRequest::default() }
    }

    fn digest_ref() -> String {
        format!("{IMAGE}@{}", Digest::sha256_of(b"image"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_digest_checked_recently_needs_no_request() {
        let registry = Arc::new(Canned::default());
        let gate = gate(&registry, &SharedPolicy::new(policy()), Duration::from_secs(5));
        let first = gate.decide(&pull(&digest_ref())).await;
        assert_eq!(first.verdict, Verdict::Rejected, "{}", first.reason);
        assert_eq!(
            registry.requests(),
            vec![format!("manifest {}", check::signature_tag(&Digest::sha256_of(b"image")))]
        );
        registry.take();
        let second = gate.decide(&pull(&digest_ref())).await;
        assert_eq!((second.verdict, second.reason), (Verdict::Rejected, first.reason));
        assert_eq!(registry.take(), 0, "a cached result still asked the registry");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tag_is_resolved_on_every_pull_even_when_the_result_is_cached() {
        let registry = Arc::new(Canned::default());
        let gate = gate(&registry, &SharedPolicy::new(policy()), Duration::from_secs(5));
        gate.decide(&pull(&format!("{IMAGE}:v1"))).await;
        assert_eq!(registry.take(), 2, "resolve and signature manifest");
        gate.decide(&pull(&format!("{IMAGE}:v1"))).await;
        assert_eq!(registry.requests(), vec!["manifest v1".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn replacing_the_policy_invalidates_cached_results() {
        let registry = Arc::new(Canned::default());
        let shared = SharedPolicy::new(policy());
        let gate = gate(&registry, &shared, Duration::from_secs(5));
        gate.decide(&pull(&digest_ref())).await;
        gate.decide(&pull(&digest_ref())).await;
        assert_eq!(registry.take(), 1);
        shared.replace(policy());
        gate.decide(&pull(&digest_ref())).await;
        assert_eq!(registry.take(), 1, "a result of the old policy was reused");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_is_checked_again_after_a_few_seconds() {
        let registry = Arc::new(Canned::default());
        let gate = gate(&registry, &SharedPolicy::new(policy()), Duration::from_secs(5));
        gate.decide(&pull(&digest_ref())).await;
        tokio::time::advance(cache::REJECTION_TTL).await;
        gate.decide(&pull(&digest_ref())).await;
        assert_eq!(registry.take(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_pulls_share_one_check_and_its_timeout() {
        let registry = Arc::new(Canned { stall: true, ..Canned::default() });
        let gate = gate(&registry, &SharedPolicy::new(policy()), Duration::from_secs(3));
        let image = format!("{IMAGE}:v1");
        let request = pull(&image);
        let decisions = futures_util::future::join_all((0..50).map(|_| gate.decide(&request))).await;
        for decision in &decisions {
            assert_eq!(decision.verdict, Verdict::Unavailable);
            assert!(decision.reason.contains("did not finish within 3s"), "{}", decision.reason);
        }
        assert_eq!(registry.requests(), vec!["manifest v1".to_owned()]);
        // Nothing of the failed check lingers: the next pull starts afresh.
        gate.decide(&request).await;
        assert_eq!(registry.take(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_waits_for_its_registrys_slot_within_the_same_budget() {
        let registry = Arc::new(Canned::default());
        let limits = RegistryConfig {
            timeout: Duration::from_secs(3),
            checks_per_registry: std::num::NonZeroUsize::new(1).unwrap(),
            ..RegistryConfig::default()
        };
        let gate =
            Gate::configured(SharedPolicy::new(policy()), Arc::clone(&registry), &limits, &CacheConfig::default());
        // The registry's one slot is taken, as by a check that never ends.
        let hog = gate.verifier.slots.acquire("registry.test", tokio::time::Instant::now()).await.expect("free slot");
        let started = tokio::time::Instant::now();
        let decision = gate.decide(&pull(&format!("{IMAGE}:v1"))).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(decision.verdict, Verdict::Unavailable);
        assert_eq!(
            decision.reason,
            "verification did not start within 3s: 1 verifications against registry.test were already in progress \
             (registry.checks_per_registry)"
        );
        assert_eq!(registry.take(), 0, "a check without a slot asked the registry");
        // A slot freed in time is taken: the wait is part of the budget, not in place of it.
        let second = pull(&format!("{IMAGE}:v2"));
        let waiting = gate.decide(&second);
        let freeing = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(hog);
        };
        let (decision, ()) = futures_util::future::join(waiting, freeing).await;
        assert_eq!(decision.verdict, Verdict::Rejected, "{}", decision.reason);
        assert_eq!(registry.take(), 2, "resolve and signature manifest");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_digest_needs_no_slot() {
        let registry = Arc::new(Canned::default());
        let limits = RegistryConfig {
            checks_per_registry: std::num::NonZeroUsize::new(1).unwrap(),
            ..RegistryConfig::default()
        };
        let gate =
            Gate::configured(SharedPolicy::new(policy()), Arc::clone(&registry), &limits, &CacheConfig::default());
        let first = gate.decide(&pull(&digest_ref())).await;
        // The registry's one slot is taken, as by a check that never ends.
        let hog = gate.verifier.slots.acquire("registry.test", tokio::time::Instant::now()).await.expect("free slot");
        let again = gate.decide(&pull(&digest_ref())).await;
        assert_eq!((again.verdict, again.reason), (first.verdict, first.reason));
        drop(hog);
    }

    #[tokio::test(start_paused = true)]
    async fn different_credentials_do_not_share_a_check() {
        let registry = Arc::new(Canned { stall: true, ..Canned::default() });
        let gate = gate(&registry, &SharedPolicy::new(policy()), Duration::from_secs(1));
        let anonymous = pull(&format!("{IMAGE}:v1"));
        let mut with_login = pull(&format!("{IMAGE}:v1"));
        with_login.credentials.username = "someone".into();
        futures_util::future::join(gate.decide(&anonymous), gate.decide(&with_login)).await;
        assert_eq!(registry.take(), 2);
    }

    /// Issue 17: 16 registries that never answer, 6 pulls of each, hold no slot that a check
    /// against a registry that answers needs.
    #[tokio::test(start_paused = true)]
    async fn registries_that_never_answer_do_not_hold_up_the_others() {
        let registry = Arc::new(Canned::default());
        let gate = Arc::new(gate(&registry, &SharedPolicy::new(policy_for("*")), Duration::from_secs(10)));
        let stalled: Vec<_> = (0..16)
            .flat_map(|r| (0..6).map(move |n| format!("stalled-{r}.test/app:v{n}")))
            .map(|image| {
                let gate = Arc::clone(&gate);
                tokio::spawn(async move { gate.decide(&pull(&image)).await })
            })
            .collect();
        for _ in 0..1000 {
            if registry.requests().len() >= 16 * 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let stalled_requests = registry.take();
        let started = Instant::now();
        let decision = gate.decide(&pull(&format!("{IMAGE}:v1"))).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "{}", decision.reason);
        assert_eq!(decision.verdict, Verdict::Rejected, "{}", decision.reason);
        assert_eq!(stalled_requests, 16 * 4, "each stalled registry's 4 checks were waiting for it");
        for check in stalled {
            let decision = check.await.unwrap();
            assert_eq!(decision.verdict, Verdict::Unavailable, "{}", decision.reason);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_check_waiting_for_the_total_says_so_and_small_ones_go_on() {
        let registry = Arc::new(Canned::default());
        let limits = RegistryConfig {
            timeout: Duration::from_secs(3),
            checks_total: std::num::NonZeroUsize::new(1).unwrap(),
            ..RegistryConfig::default()
        };
        let shared = SharedPolicy::new(policy_for("*"));
        let gate = Gate::configured(shared, Arc::clone(&registry), &limits, &CacheConfig::default());
        // The one total slot is taken, as by a large check that never ends.
        let hog = gate.verifier.slots.acquire("large-1.test", Instant::now()).await.expect("free slot");
        buffering::Buffering::reserve(&hog, SMALL_CHECK_BYTES + 1).await;
        let started = Instant::now();
        let (large, small) = futures_util::future::join(gate.decide(&pull("large-2.test/app:v1")), async {
            let decision = gate.decide(&pull(&format!("{IMAGE}:v1"))).await;
            (started.elapsed(), decision)
        })
        .await;
        assert_eq!(small.0, Duration::ZERO, "a small check waited for a total slot: {}", small.1.reason);
        assert_eq!(small.1.verdict, Verdict::Rejected, "{}", small.1.reason);
        assert_eq!(large.verdict, Verdict::Unavailable);
        assert_eq!(
            large.reason,
            "verification did not finish within 3s: 1 verifications were already holding large registry answers \
             (registry.checks_total)"
        );
        drop(hog);
    }
}

//! Deciding pulls in as few registry round trips as a correct answer allows: a tag is resolved
//! on every pull that needs its digest (it can move), the rule is chosen only once the digest
//! containerd will fetch is known, the signature check runs once per digest and rule while its
//! result is cached, and concurrent pulls of one image share one decision.
//!
//! Why the rule comes after the resolve: a rule about a digest (a revoked build) must apply
//! however the image is asked for, and a rule about a tag must not apply to a digest the tag
//! does not point at. Deciding on the name alone let `repo:tag@digest` borrow the tag's rule
//! for any digest, and let `repo:tag` dodge a rule about the digest it resolves to.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::policy::{Mode, Policy, Requirement, Rule};
use crate::reference::{Digest, ImageRef};
use crate::registry::buffering;
use crate::registry::{Credentials, Registry};

use super::cache::{self, VerdictCache};
use super::check::{self, Outcome};
use super::flight::Flights;
use super::reason::ReasonCode;
use super::slots::Slots;

/// One pull as the verifier decides it.
pub struct Pull<'a> {
    pub image: &'a ImageRef,
    /// The policy in force when the pull arrived; the whole decision is made under it.
    pub policy: Arc<Policy>,
    pub namespace: Option<&'a str>,
    pub credentials: &'a Credentials,
}

/// The rule that decided a pull and what checking the image against it found.
#[derive(Clone, Debug)]
pub struct Settled {
    /// None when no rule matches, or when the facts a rule depends on could not be learnt.
    pub rule: Option<Rule>,
    /// The image as the rule was chosen for: with the digest containerd will fetch once it is
    /// known, and with a tag only while that tag points at that digest.
    pub matched: ImageRef,
    pub outcome: Outcome,
}

pub struct Verifier<R> {
    registry: Arc<R>,
    cache: VerdictCache,
    flights: Flights<FlightKey, Settled>,
    slots: Slots,
    /// One time budget for a check, however many requests it takes and however long it
    /// waits for a slot.
    budget: Duration,
}

/// Pulls that can share one decision: the same image in the same namespace under the same
/// policy, asked with the same credentials and the same spelling of the registry host (the
/// requests are made with them, so their failures are theirs).
#[derive(Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    generation: u64,
    namespace: Option<String>,
    image: String,
    credentials: String,
}

/// One decision, owning what it needs to run as a task of its own.
struct Job {
    image: ImageRef,
    policy: Arc<Policy>,
    namespace: Option<String>,
    credentials: Credentials,
}

// === impl Verifier ===

impl<R: Registry + 'static> Verifier<R> {
    pub fn new(registry: Arc<R>, cache: &CacheConfig, slots: Slots, budget: Duration) -> Verifier<R> {
        Verifier { registry, cache: VerdictCache::new(cache), flights: Flights::new(), slots, budget }
    }

    /// Joins the decision already running for this pull's image, or starts one.
    pub async fn decide(self: &Arc<Self>, pull: Pull<'_>) -> Settled {
        let key = FlightKey {
            generation: pull.policy.generation(),
            namespace: pull.namespace.map(str::to_owned),
            image: pull.image.to_string(),
            credentials: pull.credentials.fingerprint(),
        };
        let flight = self.flights.join(key, || {
            let verifier = Arc::clone(self);
            let job = Job {
                image: pull.image.clone(),
                policy: Arc::clone(&pull.policy),
                namespace: pull.namespace.map(str::to_owned),
                credentials: pull.credentials.clone(),
            };
            async move { verifier.run(job).await }
        });
        let fallback = || Settled {
            rule: None,
            matched: pull.image.clone(),
            outcome: Outcome::unavailable(ReasonCode::Internal, String::new()),
        };
        flight.await.unwrap_or_else(|lost| Settled {
            outcome: Outcome::unavailable(ReasonCode::Internal, lost.to_string()),
            ..fallback()
        })
    }

    /// The budget covers the whole decision, so every pull sharing it fails at the same moment.
    async fn run(&self, job: Job) -> Settled {
        let deadline = Instant::now() + self.budget;
        // What needs no registry request needs no slot either.
        if let Some(settled) = self.settle_locally(&job) {
            return settled;
        }
        let slot = match self.slots.acquire(job.image.registry().canonical(), deadline).await {
            Ok(slot) => Arc::new(slot),
            Err(busy) => {
                let reason = format!("verification did not start within {:?}: {busy}", self.budget);
                return job.unsettled(Outcome::unavailable(ReasonCode::Timeout, reason));
            }
        };
        let settling = buffering::scope(Arc::clone(&slot) as _, self.settle(&job));
        match tokio::time::timeout_at(deadline, settling).await {
            Ok(settled) => settled,
            Err(_) => {
                let reason = match slot.waiting_for() {
                    Some(busy) => format!("verification did not finish within {:?}: {busy}", self.budget),
                    None => format!("verification did not finish within {:?}", self.budget),
                };
                job.unsettled(Outcome::unavailable(ReasonCode::Timeout, reason))
            }
        }
    }

    /// The decision, when the policy and the cache give it without asking the registry.
    fn settle_locally(&self, job: &Job) -> Option<Settled> {
        let matched = job.known_without_registry()?;
        let Some((index, rule)) = job.policy.find_indexed(&matched, job.namespace()) else {
            return Some(job.no_rule(matched));
        };
        let outcome = match (rule.require, matched.digest()) {
            (Requirement::Signed, Some(digest)) => self.cached(job, index, digest)?,
            (Requirement::Signed, None) => return None,
            _ => unverified(rule, matched.digest()),
        };
        Some(Settled { rule: Some(rule.clone()), matched, outcome })
    }

    /// The decision with the registry's help: learn the digest, choose the rule, check.
    async fn settle(&self, job: &Job) -> Settled {
        let (matched, resolved_by) = match self.facts(job).await {
            Ok(facts) => facts,
            Err(outcome) => return job.unsettled(outcome),
        };
        let Some((index, rule)) = job.policy.find_indexed(&matched, job.namespace()) else {
            return job.no_rule(matched);
        };
        let mut outcome = match (rule.require, matched.digest()) {
            (Requirement::Signed, Some(digest)) => self.signatures(job, index, rule, digest.clone()).await,
            (Requirement::Signed, None) => Outcome::reject(ReasonCode::NoDigest, "no digest to verify"),
            _ => unverified(rule, matched.digest()),
        };
        outcome.answered.splice(0..0, resolved_by);
        Settled { rule: Some(rule.clone()), matched, outcome }
    }

    /// The image as rules are matched against it: the digest containerd will fetch, and the
    /// tag only when it points at that digest; and which host resolved the tag, if one did.
    async fn facts(&self, job: &Job) -> Result<(ImageRef, Option<String>), Outcome> {
        let image = &job.image;
        let resolved_by = |tag: &str, resolved: &check::Resolved| format!("tag {tag} resolved by {}", resolved.host);
        match (image.tag(), image.digest()) {
            (Some(tag), Some(digest)) if job.policy.names_the_tag_of(image, job.namespace()) => {
                // containerd ignores the tag of "repo:tag@digest"; a rule about the tag counts
                // only while the tag names that very digest. A tag that cannot be resolved
                // names nothing, so its rule does not apply.
                let resolved = check::resolve_tag(&*self.registry, image, tag, &job.credentials).await.ok();
                let answered = resolved.as_ref().map(|r| resolved_by(tag, r));
                let names_it = resolved.is_some_and(|r| r.digest == *digest);
                Ok((if names_it { image.clone() } else { image.without_tag() }, answered))
            }
            (_, Some(_)) => Ok((image.without_tag(), None)),
            (Some(tag), None) => {
                let resolved = check::resolve_tag(&*self.registry, image, tag, &job.credentials).await?;
                let answered = resolved_by(tag, &resolved);
                Ok((image.with_digest(resolved.digest), Some(answered)))
            }
            (None, None) => {
                Err(Outcome::reject(ReasonCode::NoDigest, "the reference names neither a tag nor a digest"))
            }
        }
    }

    async fn signatures(&self, job: &Job, index: usize, rule: &Rule, digest: Digest) -> Outcome {
        if let Some(outcome) = self.cached(job, index, &digest) {
            return outcome;
        }
        let key = cache_key(job, index, &digest);
        let outcome = check::signatures(&*self.registry, &job.image, digest, rule, &job.credentials).await;
        self.cache.insert(key, &outcome);
        outcome
    }

    fn cached(&self, job: &Job, index: usize, digest: &Digest) -> Option<Outcome> {
        let outcome = self.cache.get(&cache_key(job, index, digest))?;
        tracing::debug!(image = %job.image, %digest, "signature check result reused from the cache");
        Some(outcome)
    }
}

fn cache_key(job: &Job, index: usize, digest: &Digest) -> cache::Key {
    cache::Key {
        generation: job.policy.generation(),
        rule: index,
        image: job.image.canonical(),
        digest: digest.clone(),
    }
}

/// The outcome of a rule that checks no signature, with the digest it was chosen for.
fn unverified(rule: &Rule, digest: Option<&Digest>) -> Outcome {
    let outcome = match rule.require {
        Requirement::Reject => Outcome::reject(ReasonCode::RejectedScope, "the rule rejects every image in its scope"),
        _ => Outcome::accept(ReasonCode::AcceptRule, "the rule accepts images without verification"),
    };
    Outcome { digest: digest.cloned(), ..outcome }
}

// === impl Job ===

impl Job {
    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The image as rules are matched against it, when that needs no registry request: a
    /// digest whose tag no rule names, or a tag whose digest no rule cares about (its rule
    /// neither checks signatures nor audits, which pins the digest, and no rule names a
    /// digest of the repository).
    fn known_without_registry(&self) -> Option<ImageRef> {
        let (image, namespace) = (&self.image, self.namespace());
        match (image.tag(), image.digest()) {
            (_, Some(_)) if self.policy.names_the_tag_of(image, namespace) => None,
            (_, Some(_)) => Some(image.without_tag()),
            (Some(_), None) => {
                let needs_digest = self.policy.names_a_digest_of(image, namespace)
                    || self
                        .policy
                        .find(image, namespace)
                        .is_some_and(|rule| rule.require == Requirement::Signed || rule.mode == Mode::Audit);
                (!needs_digest).then(|| image.clone())
            }
            (None, None) => None,
        }
    }

    fn no_rule(&self, matched: ImageRef) -> Settled {
        let outcome = Outcome {
            digest: matched.digest().cloned(),
            ..Outcome::reject(ReasonCode::NoRule, "no policy rule matches the image")
        };
        Settled { rule: None, matched, outcome }
    }

    /// A decision cut short by the registry or the budget. A digest in the reference is known,
    /// and so is the rule for it (a rule about its tag is not: it does not apply). For a tag,
    /// the rule by name is named unless a rule about one of the repository's digests might
    /// have been the one: then none is, so an audit-mode rule cannot wave through what that
    /// rule would refuse.
    fn unsettled(&self, outcome: Outcome) -> Settled {
        let (image, namespace) = (&self.image, self.namespace());
        let matched = if image.digest().is_some() { image.without_tag() } else { image.clone() };
        let rule = if image.digest().is_none() && self.policy.names_a_digest_of(image, namespace) {
            None
        } else {
            self.policy.find(&matched, namespace).cloned()
        };
        let outcome = Outcome { digest: matched.digest().cloned(), ..outcome };
        Settled { rule, matched, outcome }
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
    /// What `Canned` serves for every tag.
    const TAG_MANIFEST: &[u8] = br#"{"schemaVersion":2}"#;

    /// Serves one image manifest for every tag and no signatures (no `.sig` or referrers tag), recording each request; with
    /// `stall`, never answers at all. Registries named `stalled…` never answer either; those
    /// named `large…` answer with more than a check keeps without a total slot, then stall.
    #[derive(Default)]
    struct Canned {
        requests: Mutex<Vec<String>>,
        stall: bool,
        /// Serves tags as a Docker schema1 manifest.
        schema1: bool,
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
            if self.stall || image.registry().as_str().starts_with("stalled") {
                std::future::pending::<()>().await;
            }
            if image.registry().as_str().starts_with("large") {
                buffering::reserve(SMALL_CHECK_BYTES + 1).await;
                std::future::pending::<()>().await;
            }
            if reference.ends_with(".sig") || reference.starts_with("sha256-") {
                return Ok(None);
            }
            if self.schema1 {
                let bytes = Bytes::from_static(br#"{"schemaVersion":1,"name":"team/app","fsLayers":[]}"#);
                let media_type = "application/vnd.docker.distribution.manifest.v1+prettyjws".into();
                return Ok(Some(Manifest {
                    digest: Digest::sha256_of(&bytes),
                    media_type,
                    bytes,
                    host: String::new(),
                }));
            }
            let bytes = Bytes::from_static(TAG_MANIFEST);
            buffering::reserve(bytes.len()).await;
            let media_type = "application/vnd.oci.image.manifest.v1+json".into();
            Ok(Some(Manifest { digest: Digest::sha256_of(&bytes), media_type, bytes, host: String::new() }))
        }

        async fn blob(&self, _: &ImageRef, digest: &Digest, _: usize, _: &Credentials) -> Result<Bytes, RegistryError> {
            self.requests.lock().unwrap().push(format!("blob {digest}"));
            Err(RegistryError::Protocol("no blobs here".into()))
        }
    }

    fn rule(scope: &str, require: Requirement) -> Rule {
        Rule {
            scope: scope.parse().unwrap(),
            namespaces: None,
            require,
            keys: Vec::new(),
            identities: Vec::new(),
            threshold: 1,
            identity: IdentityRule::MatchRepository,
            mode: Mode::Enforce,
            source: PathBuf::from("test.toml"),
            message: None,
            signatures_from: None,
            line: None,
        }
    }

    fn policy() -> Policy {
        policy_for("registry.test/team")
    }

    fn policy_for(scope: &str) -> Policy {
        Policy::from_rules(vec![rule(scope, Requirement::Signed)])
    }

    /// `policy()` plus `extra`.
    fn policy_with(extra: Rule) -> Policy {
        Policy::from_rules(vec![rule("registry.test/team", Requirement::Signed), extra])
    }

    fn tag_digest() -> Digest {
        Digest::sha256_of(TAG_MANIFEST)
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
        let image_digest = Digest::sha256_of(b"image");
        assert_eq!(
            registry.requests(),
            [check::signature_tag(&image_digest), check::referrers_tag(&image_digest)]
                .map(|tag| format!("manifest {tag}"))
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
        assert_eq!(registry.take(), 3, "resolve, signature manifest and referrers tag");
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
        assert_eq!(registry.take(), 2);
        shared.replace(policy());
        gate.decide(&pull(&digest_ref())).await;
        assert_eq!(registry.take(), 2, "a result of the old policy was reused");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_is_checked_again_after_a_few_seconds() {
        let registry = Arc::new(Canned::default());
        let gate = gate(&registry, &SharedPolicy::new(policy()), Duration::from_secs(5));
        gate.decide(&pull(&digest_ref())).await;
        tokio::time::advance(cache::REJECTION_TTL).await;
        gate.decide(&pull(&digest_ref())).await;
        assert_eq!(registry.take(), 4);
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
        assert_eq!(registry.take(), 3, "resolve, signature manifest and referrers tag");
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

    // === the rule is chosen on what containerd will fetch ===

    #[tokio::test(start_paused = true)]
    async fn a_tag_rule_does_not_lend_itself_to_a_digest_the_tag_does_not_name() {
        let registry = Arc::new(Canned::default());
        let shared = SharedPolicy::new(policy_with(rule(&format!("{IMAGE}:debug"), Requirement::Accept)));
        let gate = gate(&registry, &shared, Duration::from_secs(5));
        let unsigned = Digest::sha256_of(b"unsigned");
        let decision = gate.decide(&pull(&format!("{IMAGE}:debug@{unsigned}"))).await;
        assert_eq!(decision.verdict, Verdict::Rejected, "{}", decision.reason);
        assert_eq!(decision.rule.map(|r| r.scope.to_string()).as_deref(), Some("registry.test/team"));
        assert_eq!(decision.digest, Some(unsigned));
        // When the tag does name the digest, its rule is the one.
        let named = gate.decide(&pull(&format!("{IMAGE}:debug@{}", tag_digest()))).await;
        assert_eq!(named.verdict, Verdict::Accepted, "{}", named.reason);
        assert_eq!(
            named.action().expect("admitted"),
            crate::decision::Admission::Pinned { pinned: format!("{IMAGE}@{}", tag_digest()), tag: None }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_digest_rule_applies_to_a_pull_by_a_tag_that_resolves_to_it() {
        let registry = Arc::new(Canned::default());
        let revoked = rule(&format!("{IMAGE}@{}", tag_digest()), Requirement::Reject);
        let shared =
            SharedPolicy::new(Policy::from_rules(vec![rule("registry.test/team", Requirement::Accept), revoked]));
        let gate = gate(&registry, &shared, Duration::from_secs(5));
        let decision = gate.decide(&pull(&format!("{IMAGE}:good"))).await;
        assert_eq!(decision.verdict, Verdict::Rejected, "{}", decision.reason);
        assert_eq!(decision.digest, Some(tag_digest()));
        assert!(decision.message().contains(&format!("@{}", tag_digest())), "{}", decision.message());
        // Another repository under the accept rule is decided on its name alone.
        registry.take();
        let other = gate.decide(&pull("registry.test/team/other:v1")).await;
        assert_eq!(other.verdict, Verdict::Accepted);
        assert_eq!(other.action().expect("admitted"), crate::decision::Admission::Forward);
        assert_eq!(registry.take(), 0, "an accept rule with no digest rule beside it asked the registry");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tag_resolving_to_schema1_is_refused() {
        let registry = Arc::new(Canned { schema1: true, ..Canned::default() });
        let gate = gate(&registry, &SharedPolicy::new(policy()), Duration::from_secs(5));
        let decision = gate.decide(&pull(&format!("{IMAGE}:v1"))).await;
        assert_eq!(decision.verdict, Verdict::Rejected);
        assert!(decision.reason.contains("Docker schema1 manifest"), "{}", decision.reason);
        assert_eq!(registry.requests(), vec!["manifest v1".to_owned()], "schema1 was checked for signatures");
    }

    #[tokio::test(start_paused = true)]
    async fn an_audit_rule_resolves_the_tag_so_the_pull_is_pinned() {
        let registry = Arc::new(Canned::default());
        let audit = Rule { mode: Mode::Audit, ..rule("registry.test/team", Requirement::Reject) };
        let gate = gate(&registry, &SharedPolicy::new(Policy::from_rules(vec![audit])), Duration::from_secs(5));
        let decision = gate.decide(&pull(&format!("{IMAGE}:v1"))).await;
        assert_eq!(decision.verdict, Verdict::Rejected);
        assert_eq!(
            decision.action().expect("audit"),
            crate::decision::Admission::Pinned {
                pinned: format!("{IMAGE}@{}", tag_digest()),
                tag: Some(format!("{IMAGE}:v1")),
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_unavailable_registry_does_not_let_an_audit_rule_overrule_a_digest_rule() {
        let registry = Arc::new(Canned { stall: true, ..Canned::default() });
        let audit = Rule { mode: Mode::Audit, ..rule("registry.test/team", Requirement::Reject) };
        let revoked = rule(&format!("{IMAGE}@{}", tag_digest()), Requirement::Reject);
        let gate =
            gate(&registry, &SharedPolicy::new(Policy::from_rules(vec![audit, revoked])), Duration::from_secs(1));
        let decision = gate.decide(&pull(&format!("{IMAGE}:v1"))).await;
        assert_eq!(decision.verdict, Verdict::Unavailable);
        assert!(decision.action().is_err(), "forwarded although the tag may name the revoked digest");
    }

    #[tokio::test(start_paused = true)]
    async fn a_decision_overtaken_by_a_reload_is_made_again_under_the_new_policy() {
        let registry = Arc::new(Canned { stall: true, ..Canned::default() });
        let shared = SharedPolicy::new(Policy::from_rules(vec![rule("registry.test/team", Requirement::Signed)]));
        let gate = gate(&registry, &shared, Duration::from_secs(3));
        let request = pull(&format!("{IMAGE}:v1"));
        let deciding = gate.decide(&request);
        let reloading = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shared.replace(Policy::from_rules(vec![rule("registry.test/team", Requirement::Reject)]));
        };
        let (decision, ()) = futures_util::future::join(deciding, reloading).await;
        // The first attempt (stalled, under the old policy) is dropped; the reject rule of the
        // new one decides.
        assert_eq!(decision.verdict, Verdict::Rejected, "{}", decision.reason);
        assert_eq!(decision.reason, "the rule rejects every image in its scope");
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_reloaded_under_every_attempt_refuses_the_pull_retryably() {
        let registry = Arc::new(Canned { stall: true, ..Canned::default() });
        let shared = SharedPolicy::new(policy());
        let gate = gate(&registry, &shared, Duration::from_secs(3));
        let request = pull(&format!("{IMAGE}:v1"));
        let deciding = gate.decide(&request);
        let reloading = async {
            for _ in 0..crate::decision::limits::DECISION_ATTEMPTS {
                tokio::time::sleep(Duration::from_secs(1)).await;
                shared.replace(policy());
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        };
        let (decision, ()) = futures_util::future::join(deciding, reloading).await;
        assert_eq!(decision.verdict, Verdict::Unavailable);
        assert!(decision.reason.contains("policy was reloaded"), "{}", decision.reason);
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

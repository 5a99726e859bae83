//! Recent verification results, so a node starting many pods of one image verifies it once.
//!
//! A result is keyed by everything it depends on: the policy generation and the rule within
//! it, the image as requested (identity rules look at its repository and tag) and the digest
//! that was checked. Accepted results live for the configured TTL; rejections only briefly, so
//! an image signed just after a refused pull is accepted on the kubelet's next retry. Failures
//! to reach the registry are never kept: they say nothing about the image.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::CacheConfig;
use crate::reference::Digest;

use super::Verdict;
use super::check::Outcome;

/// Long enough to absorb the burst of pulls when many pods of one image start together, short
/// enough that a newly signed image is accepted on the kubelet's first back-off retry (10 s).
pub const REJECTION_TTL: Duration = Duration::from_secs(5);

/// A configured TTL above this is cut to it: a day outlasts any rollout, and the cap keeps
/// `now + ttl` from overflowing on an absurd value.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub generation: u64,
    /// The rule's position in the policy of that generation.
    pub rule: usize,
    /// The image as requested, in canonical form (`ImageRef::canonical`): every spelling of it.
    pub image: String,
    pub digest: Digest,
}

pub struct VerdictCache {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// The newest policy generation seen; entries of older ones are gone.
    generation: u64,
    map: HashMap<Key, Entry>,
}

struct Entry {
    outcome: Outcome,
    expires: Instant,
}

// === impl VerdictCache ===

impl VerdictCache {
    pub fn new(config: &CacheConfig) -> VerdictCache {
        VerdictCache { ttl: config.ttl.min(MAX_TTL), max_entries: config.max_entries, entries: Mutex::default() }
    }

    pub fn get(&self, key: &Key) -> Option<Outcome> {
        let now = Instant::now();
        let entries = self.lock();
        entries.map.get(key).filter(|entry| entry.expires > now).map(|entry| entry.outcome.clone())
    }

    /// Keeps `outcome` if it is a verdict on the signatures; anything else is dropped.
    pub fn insert(&self, key: Key, outcome: &Outcome) {
        let Some(ttl) = self.ttl_for(outcome).filter(|ttl| !ttl.is_zero()) else { return };
        if self.max_entries == 0 {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        if key.generation < entries.generation {
            // Checked under a policy that has been replaced since: no pull will ask for it.
            return;
        }
        if key.generation > entries.generation {
            entries.map.clear();
            entries.generation = key.generation;
        }
        if entries.map.len() >= self.max_entries && !entries.map.contains_key(&key) {
            entries.make_room(now, self.max_entries);
        }
        entries.map.insert(key, Entry { outcome: outcome.clone(), expires: now + ttl });
    }

    /// Only outcomes with an evaluation are verdicts on signatures; an error before it (the
    /// registry unreachable, a broken signature manifest) may not recur on the next try.
    fn ttl_for(&self, outcome: &Outcome) -> Option<Duration> {
        outcome.evaluation.as_ref()?;
        match outcome.verdict {
            Verdict::Accepted => Some(self.ttl),
            Verdict::Rejected => Some(self.ttl.min(REJECTION_TTL)),
            Verdict::Unavailable => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Entries {
    /// Drops what has expired and, if that frees nothing, the entry closest to expiry: it
    /// would have been gone soonest anyway. Linear, but only when full, over a bounded map.
    fn make_room(&mut self, now: Instant, max_entries: usize) {
        self.map.retain(|_, entry| entry.expires > now);
        if self.map.len() < max_entries {
            return;
        }
        let soonest = self.map.iter().min_by_key(|(_, entry)| entry.expires).map(|(key, _)| key.clone());
        if let Some(key) = soonest {
            self.map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::ReasonCode;
    use crate::verify::Evaluation;
    use tokio::time::advance;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn cache(ttl: Duration, max_entries: usize) -> VerdictCache {
        VerdictCache::new(&CacheConfig { ttl, max_entries })
    }

    fn key(generation: u64, image: &str) -> Key {
        Key { generation, rule: 0, image: image.to_owned(), digest: DIGEST.parse().unwrap() }
    }

    fn verdict(verdict: Verdict) -> Outcome {
        let accepted = verdict == Verdict::Accepted;
        let evaluation = Evaluation {
            accepted,
            satisfied_keys: usize::from(accepted),
            required: 1,
            signatures: Vec::new(),
            reason: format!("{verdict:?}"),
            shortfall: (!accepted).then_some(crate::verify::Shortfall::NoSignatures),
            missing_keys: Vec::new(),
        };
        Outcome {
            verdict,
            digest: Some(DIGEST.parse().unwrap()),
            evaluation: Some(evaluation),
            reason: format!("{verdict:?}"),
            code: if accepted { ReasonCode::Verified } else { ReasonCode::NoSignatures },
            answered: Vec::new(),
        }
    }

    fn len(cache: &VerdictCache) -> usize {
        cache.lock().map.len()
    }

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[tokio::test(start_paused = true)]
    async fn an_acceptance_lives_for_the_ttl() {
        let cache = cache(FIVE_MINUTES, 8);
        cache.insert(key(0, "r/a:1"), &verdict(Verdict::Accepted));
        advance(FIVE_MINUTES - Duration::from_millis(1)).await;
        let hit = cache.get(&key(0, "r/a:1")).expect("accepted result within its TTL");
        assert_eq!(hit.verdict, Verdict::Accepted);
        assert!(cache.get(&key(0, "r/b:1")).is_none(), "another image must not hit");
        advance(Duration::from_millis(1)).await;
        assert!(cache.get(&key(0, "r/a:1")).is_none(), "expired result served");
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_ttl_is_capped() {
        let cache = cache(Duration::MAX, 8);
        cache.insert(key(0, "r/a:1"), &verdict(Verdict::Accepted));
        advance(MAX_TTL).await;
        assert!(cache.get(&key(0, "r/a:1")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_lives_only_briefly() {
        let cache = cache(FIVE_MINUTES, 8);
        cache.insert(key(0, "r/a:1"), &verdict(Verdict::Rejected));
        advance(REJECTION_TTL - Duration::from_millis(1)).await;
        assert_eq!(cache.get(&key(0, "r/a:1")).map(|o| o.verdict), Some(Verdict::Rejected));
        advance(Duration::from_millis(1)).await;
        assert!(cache.get(&key(0, "r/a:1")).is_none(), "rejection kept past {REJECTION_TTL:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ttl_below_the_rejection_ttl_bounds_rejections_too() {
        let cache = cache(Duration::from_secs(1), 8);
        cache.insert(key(0, "r/a:1"), &verdict(Verdict::Rejected));
        advance(Duration::from_secs(1)).await;
        assert!(cache.get(&key(0, "r/a:1")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_before_an_evaluation_are_not_kept() {
        let cache = cache(FIVE_MINUTES, 8);
        cache.insert(
            key(0, "r/a:1"),
            &Outcome::unavailable(ReasonCode::RegistryUnavailable, "registry unreachable".to_owned()),
        );
        cache.insert(key(0, "r/b:1"), &Outcome::reject(ReasonCode::UnusableSignature, "unusable signature manifest"));
        assert_eq!(len(&cache), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_ttl_or_size_disables_the_cache() {
        for cache in [cache(Duration::ZERO, 8), cache(FIVE_MINUTES, 0)] {
            cache.insert(key(0, "r/a:1"), &verdict(Verdict::Accepted));
            assert!(cache.get(&key(0, "r/a:1")).is_none());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_policy_generation_invalidates_everything_before_it() {
        let cache = cache(FIVE_MINUTES, 8);
        cache.insert(key(0, "r/a:1"), &verdict(Verdict::Accepted));
        assert!(cache.get(&key(1, "r/a:1")).is_none(), "result of generation 0 served for 1");
        cache.insert(key(1, "r/b:1"), &verdict(Verdict::Accepted));
        assert_eq!(len(&cache), 1, "generation 0 entries outlived generation 1's first insert");
        // A check that started under generation 0 and finishes late must not come back.
        cache.insert(key(0, "r/c:1"), &verdict(Verdict::Accepted));
        assert!(cache.get(&key(0, "r/c:1")).is_none());
        assert!(cache.get(&key(1, "r/b:1")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_size_is_bounded_and_the_soonest_to_expire_goes_first() {
        let cache = cache(FIVE_MINUTES, 3);
        for image in ["r/a:1", "r/b:1", "r/c:1"] {
            cache.insert(key(0, image), &verdict(Verdict::Accepted));
            advance(Duration::from_secs(1)).await;
        }
        cache.insert(key(0, "r/d:1"), &verdict(Verdict::Accepted));
        assert_eq!(len(&cache), 3);
        assert!(cache.get(&key(0, "r/a:1")).is_none(), "the oldest acceptance should have gone");
        for image in ["r/b:1", "r/c:1", "r/d:1"] {
            assert!(cache.get(&key(0, image)).is_some(), "{image} evicted");
        }
        // Replacing an existing key needs no room.
        cache.insert(key(0, "r/b:1"), &verdict(Verdict::Accepted));
        assert!(cache.get(&key(0, "r/c:1")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_make_room_before_live_ones() {
        let cache = cache(FIVE_MINUTES, 2);
        cache.insert(key(0, "r/a:1"), &verdict(Verdict::Accepted));
        cache.insert(key(0, "r/b:1"), &verdict(Verdict::Rejected));
        advance(REJECTION_TTL).await;
        cache.insert(key(0, "r/c:1"), &verdict(Verdict::Accepted));
        assert!(cache.get(&key(0, "r/a:1")).is_some(), "a live entry went while an expired one stayed");
        assert!(cache.get(&key(0, "r/c:1")).is_some());
        assert_eq!(len(&cache), 2);
    }
}

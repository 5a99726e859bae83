//! Which repositories' seen said lately that they have no referrers API, so a cold check does
//! not ask them again on every image.
//!
//! A registry with the API (OCI distribution 1.1) must never answer 404 to
//! `GET /v2/<name>/referrers/<digest>`; one without it answers 404 to every such request
//! (docker-registry 2.8, GHCR). So one 404 says the host has no API, and for
//! [`REFERRERS_API_ABSENT_TTL`] the API is not asked again for that repository: the check reads
//! the referrers tag (`sha256-<hex>`) only, which it reads anyway, concurrently with the API.
//! Remembered per repository, not per host: a registry with the API may answer 404 for a
//! repository it hides from the caller, and that must not hide its neighbours' signatures.
//!
//! Why a lie costs nothing: remembering a 404 only ever chooses the referrers tag schema, and
//! the tag is still read, its referrers fetched and digest-checked, and their signatures
//! verified. A host (or a mirror in front of it) that answers 404 falsely hides the signatures
//! it lists through the API, which it could do anyway by answering 404 every time; a missing
//! signature makes the pull fail (rejected), never pass. The one honest case it delays is a
//! registry upgraded to the API meanwhile, for images signed only through the API: refused
//! until the entry expires, as the kubelet backs off and retries.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::limits::{MAX_REFERRERS_API_ABSENT_REPOSITORIES, REFERRERS_API_ABSENT_TTL};

#[derive(Default)]
pub struct ReferrersApiAbsent {
    /// When each repository (under its host's API root, and the namespace asked for on a
    /// mirror) said 404.
    repositories: Mutex<HashMap<String, Instant>>,
}

impl ReferrersApiAbsent {
    /// True while `repository` said 404 less than `REFERRERS_API_ABSENT_TTL` ago.
    pub fn remembers(&self, repository: &str, now: Instant) -> bool {
        let seen = self.repositories.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(repository).is_some_and(|said| now.saturating_duration_since(*said) < REFERRERS_API_ABSENT_TTL)
    }

    pub fn remember(&self, repository: &str, now: Instant) {
        let mut seen = self.repositories.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_REFERRERS_API_ABSENT_REPOSITORIES && !seen.contains_key(repository) {
            // Forgetting only costs the API request again; image names the kubelet is given
            // can name any number of repositories, so the map must not grow with them.
            seen.retain(|_, said| now.saturating_duration_since(*said) < REFERRERS_API_ABSENT_TTL);
            if seen.len() >= MAX_REFERRERS_API_ABSENT_REPOSITORIES {
                seen.clear();
            }
        }
        seen.insert(repository.to_owned(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_is_remembered_for_the_ttl_and_per_repository() {
        let absent = ReferrersApiAbsent::default();
        let now = Instant::now();
        assert!(!absent.remembers("http://r:5000/v2/a", now));
        absent.remember("http://r:5000/v2/a", now);
        assert!(absent.remembers("http://r:5000/v2/a", now + REFERRERS_API_ABSENT_TTL / 2));
        assert!(!absent.remembers("http://r:5000/v2/a", now + REFERRERS_API_ABSENT_TTL), "kept past its TTL");
        assert!(!absent.remembers("http://other:5000/v2/a", now), "one host's 404 applied to another");
    }

    #[test]
    fn the_map_stays_bounded() {
        let absent = ReferrersApiAbsent::default();
        let now = Instant::now();
        for n in 0..MAX_REFERRERS_API_ABSENT_REPOSITORIES * 3 {
            absent.remember(&format!("http://r{n}/v2"), now);
        }
        assert!(absent.repositories.lock().unwrap().len() <= MAX_REFERRERS_API_ABSENT_REPOSITORIES);
        assert!(absent.remembers(&format!("http://r{}/v2", MAX_REFERRERS_API_ABSENT_REPOSITORIES * 3 - 1), now));
    }
}

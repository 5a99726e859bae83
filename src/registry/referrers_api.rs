//! Which hosts said lately that they have no referrers API, so a cold check does not ask them
//! again on every image.
//!
//! A registry with the API (OCI distribution 1.1) must never answer 404 to
//! `GET /v2/<name>/referrers/<digest>`; one without it answers 404 to every such request
//! (docker-registry 2.8, GHCR). So one 404 says the host has no API, and for
//! [`REFERRERS_API_ABSENT_TTL`] the API is not asked again: the check reads the referrers tag
//! (`sha256-<hex>`) only, which it reads anyway, concurrently with the API.
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

use super::limits::{MAX_REFERRERS_API_ABSENT_HOSTS, REFERRERS_API_ABSENT_TTL};

#[derive(Default)]
pub struct ReferrersApiAbsent {
    /// When each host (its API root, and the namespace asked for on a mirror) said 404.
    hosts: Mutex<HashMap<String, Instant>>,
}

impl ReferrersApiAbsent {
    /// True while `host` said 404 less than `REFERRERS_API_ABSENT_TTL` ago.
    pub fn remembers(&self, host: &str, now: Instant) -> bool {
        let hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.get(host).is_some_and(|said| now.saturating_duration_since(*said) < REFERRERS_API_ABSENT_TTL)
    }

    pub fn remember(&self, host: &str, now: Instant) {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if hosts.len() >= MAX_REFERRERS_API_ABSENT_HOSTS && !hosts.contains_key(host) {
            // Forgetting only costs the API request again; image names the kubelet is given
            // can name any number of registries, so the map must not grow with them.
            hosts.retain(|_, said| now.saturating_duration_since(*said) < REFERRERS_API_ABSENT_TTL);
            if hosts.len() >= MAX_REFERRERS_API_ABSENT_HOSTS {
                hosts.clear();
            }
        }
        hosts.insert(host.to_owned(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_is_remembered_for_the_ttl_and_per_host() {
        let absent = ReferrersApiAbsent::default();
        let now = Instant::now();
        assert!(!absent.remembers("http://r:5000/v2", now));
        absent.remember("http://r:5000/v2", now);
        assert!(absent.remembers("http://r:5000/v2", now + REFERRERS_API_ABSENT_TTL / 2));
        assert!(!absent.remembers("http://r:5000/v2", now + REFERRERS_API_ABSENT_TTL), "kept past its TTL");
        assert!(!absent.remembers("http://other:5000/v2", now), "one host's 404 applied to another");
    }

    #[test]
    fn the_map_stays_bounded() {
        let absent = ReferrersApiAbsent::default();
        let now = Instant::now();
        for n in 0..MAX_REFERRERS_API_ABSENT_HOSTS * 3 {
            absent.remember(&format!("http://r{n}/v2"), now);
        }
        assert!(absent.hosts.lock().unwrap().len() <= MAX_REFERRERS_API_ABSENT_HOSTS);
        assert!(absent.remembers(&format!("http://r{}/v2", MAX_REFERRERS_API_ABSENT_HOSTS * 3 - 1), now));
    }
}
